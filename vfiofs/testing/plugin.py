"""The pytest plugin (registered as ``vfiofs``): the ``vfio_testbed`` fixture.

@pytest.mark.vfio_topology(TOML_TEXT)      # optional; default: the built-in topology
def test_thing(vfio_testbed):
    fd = os.open(vfio_testbed.path("dev/vfio/devices/vfio0"), os.O_RDWR)
    vfio_testbed.raise_irq("0000:00:04.0", 0)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testbed import Testbed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vfio_topology(toml): the topology vfio_testbed mounts"
    )


@pytest.fixture
def vfio_testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """A mounted vfiofs for this test (needs /dev/fuse and root)."""
    marker = request.node.get_closest_marker("vfio_topology")
    with Testbed(marker.args[0] if marker else None) as tb:
        yield tb
