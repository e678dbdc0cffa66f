"""Built-in device models, by the name a topology uses."""

from __future__ import annotations

import importlib

from ..pci import PciDevice
from .memcpy import MemcpyDevice
from .mtty import MttyDevice

BUILTIN: dict[str, type[PciDevice]] = {
    "generic": PciDevice,
    "memcpy": MemcpyDevice,
    "mtty": MttyDevice,
}


def model_class(name: str) -> type[PciDevice]:
    """The device class for a topology's ``model``: a built-in name or
    ``"package.module:Class"``. Raises ValueError with a clear message."""
    if name in BUILTIN:
        return BUILTIN[name]
    mod, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(
            f"unknown model {name!r}: built-ins are {', '.join(BUILTIN)}, or use 'package.module:Class'"
        )
    try:
        cls = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model {name!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, PciDevice)):
        raise ValueError(f"model {name!r} is not a vfiofs.devices.PciDevice subclass")
    return cls
