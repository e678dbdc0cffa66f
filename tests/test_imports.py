"""Every module of vfiofs imports on its own, in a fresh interpreter: no module depends
on another having been imported first (the private headers make the order free)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import vfiofs

PACKAGE = Path(vfiofs.__file__).parent


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


MODULES = _modules()


def test_the_module_list_is_the_package() -> None:
    assert "vfiofs.vfio.vfio" in MODULES
    assert "vfiofs.iommufd.iommufd_private" in MODULES
    assert len(MODULES) > 60


@pytest.mark.slow  # one interpreter per module: about 70 of them
@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    if module == "vfiofs.__main__":  # importing it runs the command
        cmd = [sys.executable, "-m", "vfiofs", "--help"]
    else:
        cmd = [sys.executable, "-c", f"import {module}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
