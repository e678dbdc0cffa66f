"""Our ABI transcriptions against the Linux uapi headers, compiled once by a C helper.

Every struct of vfiofs/abi (``@cstruct`` and `CTuple` classes of fuse_kernel.py, vfio.py
and iommufd.py) is checked for its size and for each field's offset and size, and every
integer constant (ioctl numbers, flags, enum values) for its value. The headers are Debian
unstable's linux-libc-dev, unpacked into build/uapi by `make headers` (the system's are
too old for iommufd). Without them or gcc the test skips, except in CI where it fails.
"""

from __future__ import annotations

import enum
import re
import subprocess
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.uapi import INCLUDE, uapi_cflags
from vfiofs.abi import fuse_kernel, iommufd, pci_regs, poll, vfio
from vfiofs.abi._cstruct import CStruct, CTuple

HEADERS = {
    fuse_kernel: "linux/fuse.h",
    vfio: "linux/vfio.h",
    iommufd: "linux/iommufd.h",
    pci_regs: "linux/pci_regs.h",
    poll: "asm-generic/poll.h",
}

# Python class -> C struct, where the CamelCase name is not the C name. A "head" is the
# fixed part of a C struct that we pack separately from its tail (fuse_entry_out without
# its fuse_attr): its size is the offset of the field named here.
HEADS = {
    fuse_kernel.FuseEntryOutHead: ("fuse_entry_out", "attr"),
    fuse_kernel.FuseAttrOutHead: ("fuse_attr_out", "attr"),
    fuse_kernel.FuseInitInCompat: ("fuse_init_in", "flags2"),  # before 7.36
}

# constants of ours that no header defines, and why
NOT_IN_HEADERS = {
    "FUSE_MIN_MINOR": "the oldest minor vfiofs accepts",
    "FUSE_COMPAT_INIT_IN_SIZE": "fuse_init_in before flags2 (7.36), as fuse_i.h uses",
    "VFIO_TYPE1_NESTING_IOMMU": "now __VFIO_RESERVED_TYPE1_NESTING_IOMMU, checked below",
    "VFIO_PCI_OFFSET_SHIFT": "vfio-pci's region offsets (drivers/vfio/pci/vfio_pci_priv.h)",
    "VFIO_PCI_OFFSET_MASK": "vfio-pci's region offsets (drivers/vfio/pci/vfio_pci_priv.h)",
}

# our constants that C spells as an expression, checked as that expression
DERIVED = {
    "FUSE_URING_REQ_HEADER_SIZE": "sizeof(struct fuse_uring_req_header)",
    "FUSE_URING_ENT_IN_OUT_OFFSET": "offsetof(struct fuse_uring_req_header, ring_ent_in_out)",
}


# our names for padding that C leaves implicit
IMPLICIT_PADS = {"pad", "padding"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def structs() -> Iterator[tuple[ModuleType, type[Any]]]:
    for mod in (fuse_kernel, vfio, iommufd):
        for obj in vars(mod).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == mod.__name__
                and issubclass(obj, (CStruct, CTuple))
            ):
                yield mod, obj


def c_name(cls: type[Any]) -> str:
    head = HEADS.get(cls)
    return head[0] if head else _snake(cls.__name__)


def field_layout(cls: type[Any]) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each field, from the class's own struct format."""
    out = []
    start = 0
    for name in cls.FIELDS:
        end = cls.offsetofend(name)
        out.append((name, start, end - start))
        start = end
    return out


def constants(mod: ModuleType) -> Iterator[tuple[str, int]]:
    for name, value in vars(mod).items():
        if isinstance(value, type) and issubclass(value, enum.Enum):
            if value.__module__ == mod.__name__:
                for member in value:
                    yield member.name, int(member.value)
        elif (
            re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Za-z0-9]", name)
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            yield name, int(value)


def struct_members(header: str, cname: str) -> dict[str, str | None]:
    """The members of ``struct cname`` (anonymous unions included), from the header text:
    name -> the struct type of an embedded struct member, else None."""
    m = re.search(rf"\bstruct\s+{cname}\s*\{{", header)
    assert m, f"struct {cname} is not in the headers"
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(header[i], 0)
        i += 1
    body = re.sub(r"/\*.*?\*/", "", header[m.end() : i - 1], flags=re.DOTALL)
    members: dict[str, str | None] = dict.fromkeys(
        re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*;", body)
    )
    members.update(
        {name: st for st, name in re.findall(r"\bstruct\s+(\w+)\s+(\w+)\s*;", body)}
    )
    return members


def c_member(header: str, cname: str, field: str) -> str | None:
    """The C member for our field: the same name, the name with the ``__`` we drop
    (``__reserved``), or a field of an embedded struct we flatten (``header.id``). None
    for a pad we spell out where C pads implicitly (the next field's offset and the
    struct's size then pin it)."""
    members = struct_members(header, cname)
    for cand in (field, "__" + field):
        if cand in members:
            return cand
    for name, stype in members.items():
        if stype is not None and field in struct_members(header, stype):
            return f"{name}.{field}"
    if field in IMPLICIT_PADS:
        return None
    raise AssertionError(f"struct {cname} has no member {field}: {sorted(members)}")


class Report:
    """What the C helper printed: ``name value`` lines."""

    def __init__(self, text: str) -> None:
        self.values: dict[str, int] = {}
        for line in text.splitlines():
            key, value = line.rsplit(" ", 1)
            self.values[key] = int(value)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    cflags = uapi_cflags()
    text = {mod: (INCLUDE / h).read_text() for mod, h in HEADERS.items()}
    alltext = "\n".join(text.values())
    lines = []
    for mod, cls in structs():
        cname = c_name(cls)
        lines.append(f"S({cname});")
        if cls in HEADS:
            lines.append(f"O({cname}, {HEADS[cls][1]});")
        for field, _, _ in field_layout(cls):
            cf = c_member(text[mod], cname, field)
            if cf is not None:
                lines.append(f"F({cname}, {cf});")
    for mod in HEADERS:
        for name, _ in constants(mod):
            if re.search(rf"#define\s+{name}\b|\b{name}\s*[=,}}]", alltext):
                lines.append(f"C({name});")
    lines.append("C(__VFIO_RESERVED_TYPE1_NESTING_IOMMU);")
    lines += [f'printf("{n} %lld\\n", (long long)({e}));' for n, e in DERIVED.items()]
    src = tmp_path_factory.mktemp("abi") / "abi_check.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n"
        + "".join(f"#include <{h}>\n" for h in HEADERS.values())
        + '#define S(s) printf("%s %zu\\n", #s, sizeof(struct s))\n'
        + '#define O(s, m) printf("%s.%s@ %zu\\n", #s, #m, offsetof(struct s, m))\n'
        + "#define F(s, m) do { "
        + 'printf("%s.%s@ %zu\\n", #s, #m, offsetof(struct s, m)); '
        + 'printf("%s.%s# %zu\\n", #s, #m, sizeof(((struct s *)0)->m)); } while (0)\n'
        + '#define C(n) printf("%s %lld\\n", #n, (long long)(n))\n'
        + "int main(void) {\n"
        + "\n".join(lines)
        + "\nreturn 0;\n}\n"
    )
    exe = src.with_suffix("")
    subprocess.run(
        ["gcc", "-Wall", "-Werror", *cflags, "-o", str(exe), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True)
    return Report(out.stdout)


@pytest.mark.parametrize(
    "cls", [cls for _, cls in structs()], ids=lambda cls: cls.__name__
)
def test_struct_layout_matches_uapi_header(report: Report, cls: type[Any]) -> None:
    cname = c_name(cls)
    text = (INCLUDE / HEADERS[next(m for m, c in structs() if c is cls)]).read_text()
    want_size = (
        report.values[f"{cname}.{HEADS[cls][1]}@"]
        if cls in HEADS
        else report.values[cname]
    )
    if cls.FIELDS[0] in ("argsz", "size") and cls not in HEADS:
        # An extensible struct (led by its size) only grows at its end, and the kernel
        # takes every older size: a newer header may be longer than our transcription,
        # never shorter (the fields we have are pinned one by one below).
        assert want_size >= cls.SIZE, f"sizeof(struct {cname})"
    else:
        assert want_size == cls.SIZE, f"sizeof(struct {cname})"
    for field, offset, size in field_layout(cls):
        cf = c_member(text, cname, field)
        if cf is None:
            continue
        assert (offset, size) == (
            report.values[f"{cname}.{cf}@"],
            report.values[f"{cname}.{cf}#"],
        ), f"{cname}.{cf}: (offset, size)"


@pytest.mark.parametrize("mod", list(HEADERS), ids=lambda m: m.__name__)
def test_constants_match_uapi_header(report: Report, mod: ModuleType) -> None:
    checked = absent = 0
    for name, value in constants(mod):
        if name in report.values:
            c = report.values[name]
            # C's (1 << 31) is a negative int; our flags are unsigned
            bits = 32 if value < 1 << 32 else 64
            assert value % (1 << bits) == c % (1 << bits), (
                f"{name}: {value:#x} != {c:#x}"
            )
            checked += 1
        else:
            assert name in NOT_IN_HEADERS, f"{name} is in no uapi header"
            absent += 1
    assert checked > absent


def test_ioctl_numbers_match_uapi_header(report: Report) -> None:
    """Spelled out for the ioctls, so a dropped constant cannot go unnoticed."""
    ioctls = {
        name: value
        for mod in (vfio, iommufd)
        for name, value in constants(mod)
        if (value >> 8) & 0xFF == ord(";") and value >= 0x3B00
    }
    assert len(ioctls) >= 40
    for name, value in ioctls.items():
        assert report.values[name] == value, name
    assert report.values["__VFIO_RESERVED_TYPE1_NESTING_IOMMU"] == (
        vfio.VFIO_TYPE1_NESTING_IOMMU
    )


def test_not_in_headers_list_is_exact(report: Report) -> None:
    ours = {name for mod in HEADERS for name, _ in constants(mod)}
    assert set(NOT_IN_HEADERS) == {n for n in ours if n not in report.values}
