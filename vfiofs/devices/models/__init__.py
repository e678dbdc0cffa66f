"""Built-in device models, by the name a topology uses, and user models by
``"package.module:Class"``."""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence

from ..pci import PciDevice
from .memcpy import MemcpyDevice
from .mtty import MttyDevice

BUILTIN: dict[str, type[PciDevice]] = {
    "generic": PciDevice,
    "memcpy": MemcpyDevice,
    "mtty": MttyDevice,
}


def model_class(name: str, model_path: Sequence[str] = ()) -> type[PciDevice]:
    """The device class for a topology's ``model``: a built-in name or
    ``"package.module:Class"``, imported from ``model_path`` (directories searched
    before ``sys.path``) or anywhere Python finds it.

    Raises:
        ValueError: one line saying what is wrong and how to fix it.
    """
    if name in BUILTIN:
        return BUILTIN[name]
    mod, sep, attr = name.partition(":")
    if not sep:
        close = difflib.get_close_matches(name, BUILTIN, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown model {name!r} ({hint}built-ins: {', '.join(BUILTIN)}; "
            "or a Python class as 'package.module:Class')"
        )
    try:
        module = _import(mod, model_path)
    except ImportError as e:
        where = (
            f"not in the model path {', '.join(model_path)} nor on sys.path"
            if model_path
            else "not on sys.path"
        )
        raise ValueError(
            f"model {name!r}: {e} ({where}: name the directory that holds it "
            "with --model-path DIR or model_path in the topology)"
        ) from None
    except SyntaxError as e:
        raise ValueError(f"model {name!r}: {e.filename}:{e.lineno}: {e.msg}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"model {name!r}: module {mod!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, PciDevice)):
        raise ValueError(f"model {name!r} is not a vfiofs.devices.PciDevice subclass")
    return cls


def _import(module: str, model_path: Sequence[str]) -> object:
    """``importlib.import_module`` with ``model_path`` searched first, for this import
    only (the module stays in sys.modules, as every import does)."""
    if not model_path:
        return importlib.import_module(module)
    saved = list(sys.path)
    sys.path[:0] = [str(p) for p in model_path]
    try:
        return importlib.import_module(module)
    finally:
        sys.path[:] = saved
