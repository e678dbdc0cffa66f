"""Test helpers for C built against the Linux uapi headers of `make headers` (Debian
unstable's linux-libc-dev, unpacked into build/uapi): the system's are too old for
iommufd's newer structs. Without them (or gcc) a test cannot run (`cannot_run`: it skips,
or fails in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support import ROOT, cannot_run

EXAMPLES = ROOT / "examples"
UAPI = Path(os.environ.get("VFIOFS_UAPI", ROOT / "build" / "uapi"))
INCLUDE = UAPI / "usr" / "include"


def uapi_cflags() -> list[str]:
    """gcc flags that put the uapi headers of `make headers` before the system's."""
    missing = []
    if shutil.which("gcc") is None:
        missing.append("gcc")
    if not (INCLUDE / "linux" / "iommufd.h").exists():
        missing.append(f"{INCLUDE} (make headers)")
    if missing:
        cannot_run(f"needs {', '.join(missing)}")
    return ["-I", str(INCLUDE), "-I", str(INCLUDE / "x86_64-linux-gnu")]


def build_example(name: str, out_dir: Path) -> Path:
    """Compile examples/<name>.c as a user would (`-I build/uapi/usr/include`, warnings
    as errors) into ``out_dir``; the binary."""
    exe = out_dir / name
    subprocess.run(
        [
            "gcc",
            "-Wall",
            "-Werror",
            *uapi_cflags(),
            "-o",
            str(exe),
            str(EXAMPLES / f"{name}.c"),
        ],
        check=True,
    )
    return exe
