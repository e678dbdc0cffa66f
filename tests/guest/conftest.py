"""Fixtures for the guest tests: the image (built once per session, cached on disk) and
guests that are always shut down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.guest import image
from tests.guest.harness import QEMU, Guest


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The guest image directory (`make guest` builds the same one)."""
    why = None
    if shutil.which(QEMU) is None:
        why = f"no {QEMU}"
    else:
        try:
            return image.build(quiet=True)
        except (OSError, RuntimeError) as e:
            why = f"cannot build the guest image: {e}"
    if os.environ.get("CI"):
        pytest.fail(why)  # CI installs everything: a missing image is a failure there
    pytest.skip(why)


@pytest.fixture
def start_guest(guest_image: Path, tmp_path: Path) -> Iterator[Callable[..., Guest]]:
    """``start_guest(devices, **Guest options) -> Guest``, started; closed (killed if
    still running) when the test ends."""
    guests: list[Guest] = []

    def start(devices: Sequence[str], **kw: Any) -> Guest:
        workdir = tmp_path / f"guest{len(guests)}"
        workdir.mkdir()
        g = Guest(workdir, devices, image=guest_image, **kw)
        guests.append(g)
        g.start()
        return g

    yield start
    for g in guests:
        g.close()
