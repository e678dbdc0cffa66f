"""The topology file: IOMMU groups, PCI devices and the daemon's options (TOML).

``load_topology(path)`` parses and validates everything up front; a bad file raises
`ConfigError` naming the file, the key path (``group[1].device[0].bar[0].size``) and what is
wrong, and nothing is mounted. ``default_topology()`` is the built-in one
(``vfiofs/default_topology.toml``). Every key is described in docs/topology.md; `KEYS`
lists them per table.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from importlib import resources
from typing import Any

import attrs

BDF_RE = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$")


class ConfigError(Exception):
    """A topology file that cannot be used."""


# The keys of each kind of table (docs/topology.md describes every one).
KEYS: dict[str, tuple[str, ...]] = {
    "top level": ("model_path", "options", "group", "noiommu_device"),
    "options": (
        "device_cdev",
        "container",
        "noiommu",
        "iommufd",
        "dma_entry_limit",
        "address_width",
        "iommu",
        "iommufd_test",
    ),
    "group": ("id", "device"),
    "device": (
        "bdf",
        "vendor",
        "device",
        "subsystem_vendor",
        "subsystem_device",
        "class",
        "revision",
        "model",
        "driver",
        "pcie",
        "irqs",
        "bar",
        "pasid",
    ),
    "irqs": ("intx", "msi", "msix"),
    "bar": ("index", "size", "type", "is_64", "prefetch"),
}


@attrs.frozen
class Options:
    """The kernel's Kconfig switches and module parameters, as daemon options."""

    device_cdev: bool = True  # VFIO_DEVICE_CDEV
    container: bool = True  # VFIO_CONTAINER (off: /dev/vfio/vfio is iommufd's compat)
    noiommu: bool = True  # VFIO_NOIOMMU + vfio.enable_unsafe_noiommu_mode
    iommufd: bool = True  # IOMMUFD
    dma_entry_limit: int = 65535  # vfio_iommu_type1.dma_entry_limit
    address_width: int = 48  # IOMMU page-table levels: 39, 48 or 57
    iommu: str = "host"  # "host" (paging only) or "mock" (the kernel's selftest IOMMU)
    iommufd_test: bool = (
        False  # CONFIG_IOMMUFD_TEST: serve IOMMU_TEST_CMD on /dev/iommu
    )


@attrs.frozen
class BarSpec:
    index: int
    size: int
    type: str = "mem"  # "mem" or "io"
    is_64: bool = False
    prefetch: bool = False


@attrs.frozen
class IrqSpec:
    intx: bool = True
    msi: int = 1
    msix: int = 0


@attrs.frozen
class DeviceSpec:
    bdf: str
    vendor: int
    device: int
    subsystem_vendor: int = 0
    subsystem_device: int = 0
    class_code: int = 0xFF0000
    revision: int = 0
    model: str = "generic"
    driver: str = "vfio-pci"
    pcie: bool = False
    irqs: IrqSpec = IrqSpec()
    bars: tuple[BarSpec, ...] = ()
    noiommu: bool = False
    pasid: int = 0  # PASID width in bits (the PCIe PASID capability), 0: none
    # the key path in the topology file (``group[0].device[1]``), for error messages
    where: str = attrs.field(default="", eq=False)


@attrs.frozen
class GroupSpec:
    id: int
    devices: tuple[DeviceSpec, ...]
    noiommu: bool = False


@attrs.frozen
class Topology:
    options: Options
    groups: tuple[GroupSpec, ...]
    # directories searched first for "module:Class" models (absolute paths)
    model_path: tuple[str, ...] = ()
    source: str = "<string>"  # the file, for error messages

    def devices(self) -> list[DeviceSpec]:
        return [d for g in self.groups for d in g.devices]


class _Reader:
    """Reads one table, tracking the key path for error messages."""

    def __init__(self, source: str, table: dict[str, Any], path: str) -> None:
        self.source, self.table, self.path = source, table, path
        self.used: set[str] = set()

    def known(self, kind: str) -> None:
        """Refuse a key that tables of this ``kind`` do not have, pointing at a typo:
        checked first, so that ``vendr`` is reported as itself, not as a missing
        ``vendor``."""
        keys = KEYS[kind]
        for key in self.table:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = (
                    f" (did you mean {close[0]}?)"
                    if close
                    else f" (a {kind} table has: {', '.join(keys)})"
                )
                raise self.fail(key, f"unknown key {key}{hint}")

    def fail(self, key: str | None, why: str) -> ConfigError:
        where = (
            f"{self.path}.{key}"
            if key and self.path
            else (key or self.path or "top level")
        )
        return ConfigError(f"{self.source}: {where}: {why}")

    def get(
        self, key: str, typ: type | tuple[type, ...], default: Any = attrs.NOTHING
    ) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is attrs.NOTHING:
                raise self.fail(key, "missing")
            return default
        value = self.table[key]
        if (isinstance(value, bool) and typ in (int, (int,))) or not isinstance(
            value, typ
        ):
            names = (
                typ.__name__
                if isinstance(typ, type)
                else " or ".join(t.__name__ for t in typ)
            )
            raise self.fail(
                key, f"must be {names}, not {type(value).__name__} {value!r}"
            )
        return value

    def sub(self, key: str) -> list[_Reader]:
        self.used.add(key)
        items = self.table.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise self.fail(key, "must be an array of tables ([[...]])")
        return [
            _Reader(self.source, t, f"{self.path + '.' if self.path else ''}{key}[{i}]")
            for i, t in enumerate(items)
        ]

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _u(r: _Reader, key: str, bits: int, default: Any = attrs.NOTHING) -> int:
    v = r.get(key, int, default)
    if not 0 <= v < 1 << bits:
        raise r.fail(key, f"{v:#x} does not fit in {bits} bits")
    return int(v)


def _bar(r: _Reader) -> BarSpec:
    r.known("bar")
    index = _u(r, "index", 8)
    if index > 5:
        raise r.fail("index", f"{index}: BARs are 0-5")
    typ = r.get("type", str, "mem")
    if typ not in ("mem", "io"):
        raise r.fail("type", f"{typ!r}: must be 'mem' or 'io'")
    size = r.get("size", int)
    is_64 = r.get("is_64", bool, False)
    prefetch = r.get("prefetch", bool, False)
    minimum = 4 if typ == "io" else 16
    if size < minimum or size & (size - 1):
        raise r.fail("size", f"{size}: must be a power of two >= {minimum}")
    if typ == "io" and (is_64 or prefetch or size > 256):
        raise r.fail("type", "I/O BARs are 32-bit, not prefetchable, at most 256 bytes")
    if typ == "mem" and not is_64 and size > 1 << 31:
        raise r.fail("size", "a 32-bit BAR is at most 2 GiB (set is_64)")
    if is_64 and index == 5:
        raise r.fail("index", "a 64-bit BAR takes two slots: 5 cannot hold one")
    r.done()
    return BarSpec(index, size, typ, is_64, prefetch)


def _device(r: _Reader, noiommu: bool) -> DeviceSpec:
    r.known("device")
    bdf = r.get("bdf", str).lower()
    if not BDF_RE.match(bdf) or int(bdf[8:10], 16) > 0x1F:
        raise r.fail(
            "bdf", f"{bdf!r}: expected domain:bus:slot.function like 0000:00:04.0"
        )
    irq = r.table.get("irqs", {})
    if not isinstance(irq, dict):
        raise r.fail("irqs", "must be a table like { intx = true, msi = 1, msix = 4 }")
    ir = _Reader(r.source, irq, f"{r.path}.irqs")
    ir.known("irqs")
    irqs = IrqSpec(
        ir.get("intx", bool, True), _u(ir, "msi", 8, 1), _u(ir, "msix", 12, 0)
    )
    if irqs.msi not in (0, 1, 2, 4, 8, 16, 32):
        raise ir.fail(
            "msi", f"{irqs.msi}: MSI vectors are 0 or a power of two up to 32"
        )
    if irqs.msix > 2048:
        raise ir.fail("msix", f"{irqs.msix}: at most 2048 MSI-X vectors")
    ir.done()
    r.used.add("irqs")
    bars = tuple(_bar(b) for b in r.sub("bar"))
    slots: dict[int, int] = {}
    for i, b in enumerate(bars):
        for slot in (b.index, b.index + 1) if b.is_64 else (b.index,):
            if slot in slots:
                raise ConfigError(
                    f"{r.source}: {r.path}.bar[{i}].index: slot {slot} already used by bar[{slots[slot]}]"
                )
            slots[slot] = i
    spec = DeviceSpec(
        bdf=bdf,
        vendor=_u(r, "vendor", 16),
        device=_u(r, "device", 16),
        subsystem_vendor=_u(r, "subsystem_vendor", 16, 0),
        subsystem_device=_u(r, "subsystem_device", 16, 0),
        class_code=_u(r, "class", 24, 0xFF0000),
        revision=_u(r, "revision", 8, 0),
        model=r.get("model", str, "generic"),
        driver=r.get("driver", str, "vfio-pci"),
        pcie=r.get("pcie", bool, False),
        irqs=irqs,
        bars=bars,
        noiommu=noiommu,
        pasid=_u(r, "pasid", 8, 0),
        where=r.path,
    )
    if spec.pasid > 20:
        raise r.fail("pasid", f"{spec.pasid}: PCIe PASIDs have at most 20 bits")
    if spec.irqs.msix and not any(b.type == "mem" for b in bars):
        raise r.fail("irqs", "MSI-X needs a memory BAR to hold its table")
    r.done()
    return spec


def parse_topology(
    text: str, source: str = "<string>", base_dir: str | None = None
) -> Topology:
    """Parse and validate a topology. Relative ``model_path`` entries are taken from
    ``base_dir`` (default: the current directory). Raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: {e}") from None
    top = _Reader(source, data, "")
    top.known("top level")
    model_path = _model_path(top, base_dir or os.getcwd())
    opt = data.get("options", {})
    if not isinstance(opt, dict):
        raise top.fail("options", "must be a table")
    top.used.add("options")
    o = _Reader(source, opt, "options")
    o.known("options")
    width = o.get("address_width", int, 48)
    if width not in (39, 48, 57):
        raise o.fail("address_width", f"{width}: must be 39, 48 or 57")
    limit = o.get("dma_entry_limit", int, 65535)
    if not 0 <= limit < 1 << 32:
        raise o.fail("dma_entry_limit", f"{limit}: must be a u32")
    options = Options(
        device_cdev=o.get("device_cdev", bool, True),
        container=o.get("container", bool, True),
        noiommu=o.get("noiommu", bool, True),
        iommufd=o.get("iommufd", bool, True),
        dma_entry_limit=limit,
        address_width=width,
        iommu=o.get("iommu", str, "host"),
        iommufd_test=o.get("iommufd_test", bool, False),
    )
    if options.iommu not in ("host", "mock"):
        raise o.fail("iommu", f"{options.iommu!r}: must be 'host' or 'mock'")
    o.done()
    groups: list[GroupSpec] = []
    used_ids: set[int] = set()
    explicit = [g.table.get("id") for g in top.sub("group")]
    for g in top.sub("group"):
        g.known("group")
        gid = g.get("id", int, None)
        if gid is None:
            gid = next(
                i for i in range(1 << 20) if i not in used_ids and i not in explicit
            )
        elif gid < 0 or gid in used_ids:
            raise g.fail("id", f"{gid}: must be unique and >= 0")
        used_ids.add(gid)
        devs = tuple(_device(d, False) for d in g.sub("device"))
        if not devs:
            raise g.fail("device", "a group needs at least one device")
        g.done()
        groups.append(GroupSpec(gid, devs))
    for d in top.sub("noiommu_device"):
        gid = next(i for i in range(1 << 20) if i not in used_ids and i not in explicit)
        used_ids.add(gid)
        groups.append(GroupSpec(gid, (_device(d, True),), noiommu=True))
    top.done()
    seen: dict[str, str] = {}
    for gi, grp in enumerate(groups):
        for di, dev in enumerate(grp.devices):
            where = f"group {grp.id} device {di}"
            if dev.bdf in seen:
                raise ConfigError(
                    f"{source}: {where}: bdf {dev.bdf} already used by {seen[dev.bdf]}"
                )
            seen[dev.bdf] = where
        del gi
    if not groups:
        raise ConfigError(
            f"{source}: no devices: add [[group]] with [[group.device]] tables"
        )
    return Topology(options, tuple(groups), model_path, source)


def _model_path(top: _Reader, base_dir: str) -> tuple[str, ...]:
    value = top.get("model_path", (str, list), [])
    entries = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) for v in entries):
        raise top.fail("model_path", "must be a directory or a list of directories")
    out = []
    for entry in entries:
        path = os.path.join(base_dir, os.path.expanduser(entry))
        if not os.path.isdir(path):
            raise top.fail("model_path", f"{entry!r}: {path} is not a directory")
        out.append(os.path.normpath(path))
    return tuple(out)


def load_topology(path: str) -> Topology:
    """Read and validate a topology file; its ``model_path`` is relative to the file's
    directory. Raises ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    return parse_topology(text, path, os.path.dirname(os.path.abspath(path)))


def default_topology() -> Topology:
    """The built-in topology (vfiofs/default_topology.toml)."""
    text = resources.files("vfiofs").joinpath("default_topology.toml").read_text()
    return parse_topology(text, "<built-in topology>")
