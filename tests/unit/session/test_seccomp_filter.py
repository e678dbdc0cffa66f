"""The seccomp filter of `vfiofs run`, run by a small classic-BPF interpreter: it
notifies exactly on ioctl(2) with the trapped commands on x86-64."""

from __future__ import annotations

import struct

from vfiofs.abi import iommufd as I, iommufd_test as T, vfio as V
from vfiofs.session.seccomp import (
    AUDIT_ARCH_X86_64,
    NR_IOCTL,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_USER_NOTIF,
    bpf_program,
)


def run(nr: int, cmd: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    """Evaluate the filter on seccomp_data {nr, arch, ip, args[6]}."""
    data = struct.pack(
        "<iIQ6Q", nr, arch, 0, 3, cmd | 0xFFFF_FFFF_0000_0000, 0, 0, 0, 0
    )
    prog = bpf_program()
    insns = [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)]
    pc, a = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            a = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if a == k else jf)
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected insn {code:#x}")


def test_traps_the_fd_creating_ioctls_only() -> None:
    for cmd in (
        V.VFIO_GROUP_GET_DEVICE_FD,
        I.IOMMU_FAULT_QUEUE_ALLOC,
        I.IOMMU_VEVENTQ_ALLOC,
        T.IOMMU_TEST_CMD,
    ):
        assert run(NR_IOCTL, cmd) == SECCOMP_RET_USER_NOTIF, hex(cmd)
    for cmd in (I.IOMMU_IOAS_MAP, I.IOMMU_HWPT_ALLOC, V.VFIO_DEVICE_GET_INFO, 0):
        assert run(NR_IOCTL, cmd) == SECCOMP_RET_ALLOW, hex(cmd)
    assert run(0, I.IOMMU_FAULT_QUEUE_ALLOC) == SECCOMP_RET_ALLOW  # read(2)
    assert (
        run(NR_IOCTL, I.IOMMU_FAULT_QUEUE_ALLOC, arch=0x40000003) == SECCOMP_RET_ALLOW
    )
