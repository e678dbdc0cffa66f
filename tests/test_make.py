"""The Makefile and .ci/run: `make test` reports pytest (both transports), ruff, mypy and
the import contracts even when one of them fails; .ci/run sets CI; `make fuzz N=...` makes that many ioctl calls and prints
how each ended, however long it runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, cannot_run

KEEP = ("-o", "deps", "-o", "venv", "-o", "headers", "-o", "guest")


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        cannot_run("no make")
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))
    }
    return subprocess.run(
        # -o deps -o venv -o headers -o guest: take the Debian packages, .venv, build/uapi and
        # build/guest as they are
        ["make", "-s", "--no-print-directory", *KEEP, *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**clean, **env},
    )


def test_make_test_runs_and_reports_every_tool() -> None:
    r = make(
        "test",
        "PYTEST_CMD=sh -c 'echo pytest-ran; exit 1'",
        "URING_CMD=echo uring-ran",
        "RUFF_CMD=echo ruff-ran",
        "MYPY_CMD=sh -c 'echo mypy-ran; exit 3'",
        "IMPORTS_CMD=echo imports-ran",
    )
    assert r.returncode != 0
    assert r.stdout.splitlines() == [
        "pytest-ran",
        "uring-ran",
        "ruff-ran",
        "mypy-ran",
        "imports-ran",
        "make test:",
        "  pytest: FAILED (exit status 1)",
        "  pytest, mount tests over io_uring: ok",
        "  ruff: ok",
        "  mypy: FAILED (exit status 3)",
        "  lint-imports: ok",
    ]
    tools = ("PYTEST_CMD", "URING_CMD", "RUFF_CMD", "MYPY_CMD", "IMPORTS_CMD")
    r = make("test", *(f"{t}=true" for t in tools))
    assert r.returncode == 0
    assert r.stdout.splitlines()[-5:] == [
        "  pytest: ok",
        "  pytest, mount tests over io_uring: ok",
        "  ruff: ok",
        "  mypy: ok",
        "  lint-imports: ok",
    ]


def test_ci_entry_point_sets_ci(tmp_path: Path) -> None:
    """.ci/run runs `make test` with CI set: a fake make on PATH says what it got."""
    fake = tmp_path / "make"
    fake.write_text('#!/bin/sh\necho "make $* CI=$CI"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    r = subprocess.run(
        [str(ROOT / ".ci/run")], capture_output=True, text=True, env=env, timeout=60
    )
    assert (r.returncode, r.stdout) == (0, "make test CI=1\n"), r.stderr


@pytest.mark.mount
@pytest.mark.slow
def test_make_fuzz_counts_calls_prints_errnos_and_outlives_faulthandler() -> None:
    """A campaign longer than pytest's faulthandler_timeout (1 s here) runs to its end
    without a thread dump, and reports its calls and their results."""
    if not (ROOT / ".venv/bin/python").exists():
        cannot_run("make fuzz runs in .venv (make venv creates it)")
    r = make("fuzz", "N=600", PYTEST_ADDOPTS="-o faulthandler_timeout=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Timeout (0:00:01)!" not in r.stdout + r.stderr
    m = re.search(
        r"^fuzz: (\d+) ioctl calls in (\d+) sequences$", r.stdout, re.MULTILINE
    )
    assert m is not None, r.stdout
    calls = int(m.group(1))
    assert calls >= 600
    histogram = r.stdout[m.end() :].split("fuzz: results (errno histogram):\n")[1]
    counts = {}
    for line in histogram.splitlines():
        found = re.fullmatch(r"  (ok|E[A-Z0-9]+) +(\d+)", line)
        if found is None:
            break
        counts[found.group(1)] = int(found.group(2))
    assert sum(counts.values()) == calls
    assert "EINVAL" in counts and "ENOTTY" in counts
