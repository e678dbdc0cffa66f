"""vfiofs/abi/iommufd_test.py against drivers/iommu/iommufd/iommufd_test.h.

That header is not uapi: no package installs it (the kernel's selftests include it from
the source tree), so test_uapi_headers.py cannot reach it. examples/iommufd_uapi.h is
its transcription in C, made by hand from the kernel tree (Linux 7.2) and read against
it; the C examples use it. Here gcc compiles that transcription over the uapi headers
of `make headers`, and the Python is checked against what C lays out: every struct,
every member of the ``iommu_test_cmd`` union (offsets and sizes of each field, as
``offsetof(struct iommu_test_cmd, member.field)``) and every constant. Two independent
transcriptions must agree, and C, not our reading, decides padding and alignment.

The header's own rule is checked against the uapi: the selftest's type numbers "should
not be equal to any defined value" of the uapi enums they extend.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.uapi import EXAMPLES, INCLUDE, uapi_cflags
from vfiofs.abi import iommufd_test as T
from vfiofs.abi._cstruct import CStruct

from .test_uapi_headers import IMPLICIT_PADS, Report, constants, field_layout

# The union's members, by the @cstruct class that decodes each (PasidAttach serves
# pasid_attach and pasid_replace alike).
UNION = {
    T.AddReserved: "add_reserved",
    T.MockDomain: "mock_domain",
    T.MockDomainFlags: "mock_domain_flags",
    T.MockDomainReplace: "mock_domain_replace",
    T.CheckMap: "check_map",
    T.CheckRefs: "check_refs",
    T.CreateAccess: "create_access",
    T.DestroyAccessPages: "destroy_access_pages",
    T.AccessPages: "access_pages",
    T.AccessRw: "access_rw",
    T.MemoryLimit: "memory_limit",
    T.AccessReplaceIoas: "access_replace_ioas",
    T.Dirty: "dirty",
    T.CheckIotlb: "check_iotlb",
    T.TriggerIopf: "trigger_iopf",
    T.CheckDevCache: "check_dev_cache",
    T.TriggerVevent: "trigger_vevent",
    T.PasidAttach: "pasid_attach",
    T.PasidDetach: "pasid_detach",
    T.PasidCheck: "pasid_check",
    T.DmabufGet: "dmabuf_get",
    T.DmabufRevoke: "dmabuf_revoke",
}
ALIASES = {"pasid_replace": T.PasidAttach}

# Python class -> C struct, for the structs of their own
STRUCTS = {
    T.IommuTestCmd: "iommu_test_cmd",
    T.IommuTestHwInfo: "iommu_test_hw_info",
    T.IommuHwptSelftest: "iommu_hwpt_selftest",
    T.IommuHwptInvalidateSelftest: "iommu_hwpt_invalidate_selftest",
    T.IommuViommuSelftest: "iommu_viommu_selftest",
    T.IommuViommuInvalidateSelftest: "iommu_viommu_invalidate_selftest",
    T.IommuViommuEventSelftest: "iommu_viommu_event_selftest",
}

# our constants that C spells as an expression
DERIVED = {
    "PAYLOAD_OFFSET": "offsetof(struct iommu_test_cmd, add_reserved)",
    "LAST_OFFSET": "offsetof(struct iommu_test_cmd, last)",
    "PAYLOAD": "offsetof(struct iommu_test_cmd, last) - "
    "offsetof(struct iommu_test_cmd, add_reserved)",
}

# selftest value -> the uapi enum it must stay out of (iommufd_test.h's comments)
OUTSIDE = {
    "IOMMU_HWPT_DATA_SELFTEST": "iommu_hwpt_data_type",
    "IOMMU_HW_INFO_TYPE_SELFTEST": "iommu_hw_info_type",
    "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST": "iommu_hwpt_invalidate_data_type",
    "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST": "iommu_hwpt_invalidate_data_type",
    "IOMMU_VIOMMU_TYPE_SELFTEST": "iommu_viommu_type",
    "IOMMU_VEVENTQ_TYPE_SELFTEST": "iommu_veventq_type",
    "IOMMU_HW_QUEUE_TYPE_SELFTEST": "iommu_hw_queue_type",
}

CMD = "struct iommu_test_cmd"


def _enum_names(header: str, name: str) -> list[str]:
    m = re.search(rf"\benum\s+{name}\s*\{{(.*?)\}}", header, flags=re.DOTALL)
    assert m, f"enum {name} is not in <linux/iommufd.h>"
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.DOTALL)
    return re.findall(r"\b([A-Z][A-Z0-9_]*)\s*(?:=|,|$)", body)


def _fields(cls: type[CStruct]) -> list[tuple[str, int, int]]:
    """The named fields: not the padding C leaves implicit (the struct's size and the
    next field's offset pin that)."""
    return [f for f in field_layout(cls) if f[0] not in {*IMPLICIT_PADS, "tail_pad"}]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    cflags = uapi_cflags()
    iommufd_h = (INCLUDE / "linux" / "iommufd.h").read_text()
    lines = []
    for cls, cname in STRUCTS.items():
        lines.append(f'P("{cname}", sizeof(struct {cname}));')
        for field, _, _ in _fields(cls):
            cf = "__reserved" if field == "reserved" else field
            if cls is T.IommuTestCmd and field == "payload":
                continue
            lines.append(f'P("{cname}.{field}@", offsetof(struct {cname}, {cf}));')
    for member in [*UNION.values(), *ALIASES]:
        cls = ALIASES.get(member) or next(c for c, m in UNION.items() if m == member)
        lines.append(f'P("{member}", sizeof((({CMD} *)0)->{member}));')
        for field, _, _ in _fields(cls):
            lines.append(
                f'P("{member}.{field}@", offsetof({CMD}, {member}.{field}) - 16);'
            )
            lines.append(
                f'P("{member}.{field}#", sizeof((({CMD} *)0)->{member}.{field}));'
            )
    for name, _ in constants(T):
        lines.append(f'P("{name}", {DERIVED.get(name, name)});')
    lines += [
        f'P("{enum}:{name}", {name});'
        for enum in set(OUTSIDE.values())
        for name in _enum_names(iommufd_h, enum)
    ]
    src = tmp_path_factory.mktemp("abi") / "iommufd_test_abi.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <sys/ioctl.h>\n"
        '#include "iommufd_uapi.h"\n'
        '#define P(n, v) printf("%s %lld\\n", n, (long long)(v))\n'
        "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    exe = src.with_suffix("")
    cmd = ["gcc", "-Wall", "-Werror", *cflags, "-I", str(EXAMPLES)]
    gcc = subprocess.run(
        [*cmd, "-o", str(exe), str(src)], capture_output=True, text=True
    )
    assert gcc.returncode == 0, gcc.stderr
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True)
    return Report(out.stdout)


@pytest.mark.parametrize("cls", list(STRUCTS), ids=lambda c: c.__name__)
def test_struct_layout(report: Report, cls: type[Any]) -> None:
    cname = STRUCTS[cls]
    assert report.values[cname] == cls.SIZE, f"sizeof(struct {cname})"
    for field, offset, _ in _fields(cls):
        if cls is T.IommuTestCmd and field == "payload":
            assert offset == report.values["PAYLOAD_OFFSET"]
            continue
        assert offset == report.values[f"{cname}.{field}@"], f"{cname}.{field}"


@pytest.mark.parametrize("member", [*UNION.values(), *ALIASES], ids=lambda m: str(m))
def test_union_member_layout(report: Report, member: str) -> None:
    """Each field where C puts it inside the union; our class never longer than the
    member (C pads the member's tail to its alignment, we stop at the last field), and
    every member inside the union's bytes."""
    cls = ALIASES.get(member) or next(c for c, m in UNION.items() if m == member)
    for field, offset, size in _fields(cls):
        assert (offset, size) == (
            report.values[f"{member}.{field}@"],
            report.values[f"{member}.{field}#"],
        ), f"{member}.{field}: (offset, size)"
    assert cls.SIZE <= report.values[member] <= T.PAYLOAD


def test_every_union_member_has_a_class() -> None:
    """The union as the transcription has it: no member without a decoder here."""
    text = (EXAMPLES / "iommufd_uapi.h").read_text()
    body = text[text.index("struct iommu_test_cmd {") :]
    body = body[: body.index("__u32 last;")]
    members = set(re.findall(r"\}\s*(\w+)\s*;", body))
    assert members == set(UNION.values()) | set(ALIASES)


def test_constants(report: Report) -> None:
    ours = dict(constants(T))
    assert len(ours) > 50
    for name, value in ours.items():
        assert value == report.values[name] % (
            1 << 32 if value < 1 << 32 else 1 << 64
        ), name


@pytest.mark.parametrize("name", list(OUTSIDE))
def test_selftest_types_stay_out_of_the_uapi_enums(report: Report, name: str) -> None:
    enum = OUTSIDE[name]
    values = {v for k, v in report.values.items() if k.startswith(f"{enum}:")}
    assert values, f"enum {enum} has no values"
    assert getattr(T, name) not in values


def test_examples_header_is_only_what_no_uapi_header_has() -> None:
    """examples/iommufd_uapi.h keeps no copy of <linux/iommufd.h> or <linux/vfio.h>:
    no struct or ioctl of theirs is declared again there."""
    text = (EXAMPLES / "iommufd_uapi.h").read_text()
    declared = set(re.findall(r"\bstruct\s+(\w+)\s*\{", text))
    uapi = "".join((INCLUDE / "linux" / h).read_text() for h in ("iommufd.h", "vfio.h"))
    assert declared, "no structs in examples/iommufd_uapi.h"
    assert not {s for s in declared if re.search(rf"\bstruct\s+{s}\s*\{{", uapi)}
    assert Path(EXAMPLES / "iommufd_uapi.h").exists()
