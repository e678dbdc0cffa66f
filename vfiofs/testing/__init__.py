"""Test support: `Testbed` serves a topology from a thread of the test process, so a test
can use the mounted files and also reach the simulated devices directly."""

from .testbed import Testbed as Testbed

__all__ = ["Testbed"]
