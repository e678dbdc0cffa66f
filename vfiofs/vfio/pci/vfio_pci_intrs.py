"""Mirror of drivers/vfio/pci/vfio_pci_intrs.c: SET_IRQS and interrupt delivery.

Each IRQ index (INTx, MSI, MSI-X, ERR, REQ) has per-vector eventfd triggers; the device's
interrupts signal the eventfd of that vector only. INTx is level-triggered and automasked:
a trigger masks it until userspace unmasks.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import attrs

from ...abi import vfio as V
from ...devices.pci import PciDevice
from ...errors import KernelError
from ...uaccess import Caller, EventFd, ForeignFile

DATA_MASK = V.VFIO_IRQ_SET_DATA_TYPE_MASK
ACTION_MASK = V.VFIO_IRQ_SET_ACTION_TYPE_MASK
INTX, TRIGGER = V.VFIO_PCI_INTX_IRQ_INDEX, V.VFIO_IRQ_SET_ACTION_TRIGGER


@attrs.define(eq=False)
class IrqState:
    """The interrupt state of one open device."""

    triggers: dict[tuple[int, int], EventFd] = attrs.Factory(dict)  # (index, vector)
    enabled: dict[int, int] = attrs.Factory(dict)  # index -> vectors enabled
    intx_masked: bool = False
    intx_pending: bool = False

    def signal(self, index: int, vector: int) -> None:
        """The device raised ``vector`` of ``index``."""
        if index == V.VFIO_PCI_INTX_IRQ_INDEX:
            if self.intx_masked:
                self.intx_pending = True
                return
            ev = self.triggers.get((index, 0))
            if ev is not None:
                self.intx_masked = True  # automasked until UNMASK
                ev.signal()
            return
        ev = self.triggers.get((index, vector))
        if ev is not None:
            ev.signal()

    def disable(self, index: int) -> None:
        for key in [k for k in self.triggers if k[0] == index]:
            self.triggers.pop(key).close()
        self.enabled.pop(index, None)
        if index == V.VFIO_PCI_INTX_IRQ_INDEX:
            self.intx_masked = self.intx_pending = False

    def close(self) -> None:
        for index in list(self.enabled) + [k[0] for k in self.triggers]:
            self.disable(index)


def irq_count(pdev: PciDevice, index: int) -> int:
    """vfio_pci_get_irq_count()."""
    irqs = pdev.spec.irqs
    if index == V.VFIO_PCI_INTX_IRQ_INDEX:
        return 1 if irqs.intx else 0
    if index == V.VFIO_PCI_MSI_IRQ_INDEX:
        return int(irqs.msi)
    if index == V.VFIO_PCI_MSIX_IRQ_INDEX:
        return int(irqs.msix)
    if index == V.VFIO_PCI_ERR_IRQ_INDEX:
        return 1 if pdev.spec.pcie else 0
    if index == V.VFIO_PCI_REQ_IRQ_INDEX:
        return 1
    return 0


DATA_SIZE = {
    V.VFIO_IRQ_SET_DATA_NONE: 0,
    V.VFIO_IRQ_SET_DATA_BOOL: 1,
    V.VFIO_IRQ_SET_DATA_EVENTFD: 4,
}


@attrs.frozen
class IrqSet:
    """One VFIO_DEVICE_SET_IRQS, validated: the header, its data type and its data."""

    pdev: PciDevice
    caller: Caller
    hdr: V.VfioIrqSet
    data_type: int
    data: bytes


IrqHandler = Callable[[IrqState, IrqSet], int]


def vfio_pci_set_irqs(
    state: IrqState, pdev: PciDevice, caller: Caller, arg: int, hdr: V.VfioIrqSet
) -> int:
    """VFIO_DEVICE_SET_IRQS (vfio_pci_ioctl_set_irqs): validate the header, copy the
    data, then run the handler ``vfio_pci_set_irqs_ioctl`` picks by index and action
    (none: ENOTTY)."""
    data_type, size = vfio_set_irqs_validate_and_prepare(pdev, hdr)
    data = caller.copy_from_user(arg + V.VfioIrqSet.SIZE, size) if size else b""
    handler = IRQ_HANDLERS.get((hdr.index, hdr.flags & ACTION_MASK))
    if handler is None:
        raise KernelError(errno.ENOTTY, "no handler for this index and action")
    return handler(state, IrqSet(pdev, caller, hdr, data_type, data))


def vfio_set_irqs_validate_and_prepare(
    pdev: PciDevice, hdr: V.VfioIrqSet
) -> tuple[int, int]:
    """vfio_main.c's checks, in its order (EINVAL): the data type and its size."""
    max_count = irq_count(pdev, hdr.index) if hdr.index < V.VFIO_PCI_NUM_IRQS else 0
    if (
        hdr.argsz < V.VfioIrqSet.SIZE
        or hdr.index >= V.VFIO_PCI_NUM_IRQS
        or hdr.count >= 0xFFFFFFFF - hdr.start
        or hdr.flags & ~(DATA_MASK | ACTION_MASK)
    ):
        raise KernelError(errno.EINVAL, "argsz, index, count or flags")
    if hdr.start >= max_count or hdr.start + hdr.count > max_count:
        raise KernelError(errno.EINVAL, f"start/count outside the {max_count} vectors")
    data_type = hdr.flags & DATA_MASK
    if data_type not in DATA_SIZE:
        raise KernelError(errno.EINVAL, "exactly one DATA flag")
    size = DATA_SIZE[data_type] * hdr.count
    if size and hdr.argsz - V.VfioIrqSet.SIZE < size:
        raise KernelError(errno.EINVAL, "argsz too small for the data")
    return data_type, size


def vfio_pci_set_intx_mask(state: IrqState, req: IrqSet) -> int:
    return _intx_mask(state, req, mask=True)


def vfio_pci_set_intx_unmask(state: IrqState, req: IrqSet) -> int:
    if req.data_type == V.VFIO_IRQ_SET_DATA_EVENTFD:
        raise KernelError(errno.EINVAL, "unmask via eventfd (irqfd) is not emulated")
    return _intx_mask(state, req, mask=False)


def vfio_pci_set_msi_trigger(state: IrqState, req: IrqSet) -> int:
    """MSI or MSI-X, whichever ``hdr.index`` says; never with INTx or the other kind."""
    index, count = req.hdr.index, req.hdr.count
    if V.VFIO_PCI_INTX_IRQ_INDEX in state.enabled and count:
        raise KernelError(errno.EINVAL, "INTx is enabled")
    other = (
        V.VFIO_PCI_MSIX_IRQ_INDEX
        if index == V.VFIO_PCI_MSI_IRQ_INDEX
        else V.VFIO_PCI_MSI_IRQ_INDEX
    )
    if other in state.enabled and count:
        raise KernelError(errno.EINVAL, "the other MSI kind is enabled")
    return vfio_pci_set_trigger(state, req)


def vfio_pci_set_trigger(state: IrqState, req: IrqSet) -> int:
    """ACTION_TRIGGER of any index (INTx, ERR and REQ come here directly): count 0 with
    DATA_NONE disables the index; eventfds become the vectors' triggers; NONE and BOOL
    fire the vectors (loopback)."""
    index, start, count = req.hdr.index, req.hdr.start, req.hdr.count
    data_type, pdev = req.data_type, req.pdev
    # every eventfd is fetched before any state changes (the fget rule, uaccess.py)
    fds: list[int] = []
    refs: list[ForeignFile] = []
    if data_type == V.VFIO_IRQ_SET_DATA_EVENTFD:
        fds = list(struct.unpack(f"<{count}i", req.data))
        for ref in req.caller.fget_many([fd for fd in fds if fd >= 0]):
            if not isinstance(ref, ForeignFile) or ref.kind != "eventfd":
                raise KernelError(errno.EINVAL, "not an eventfd")
            refs.append(ref)
    if count == 0 and data_type == V.VFIO_IRQ_SET_DATA_NONE:
        state.disable(index)
        if index in (V.VFIO_PCI_MSI_IRQ_INDEX, V.VFIO_PCI_MSIX_IRQ_INDEX):
            pdev.set_msi_mode(index, 0)
        return 0
    if index == V.VFIO_PCI_INTX_IRQ_INDEX and (
        V.VFIO_PCI_MSI_IRQ_INDEX in state.enabled
        or V.VFIO_PCI_MSIX_IRQ_INDEX in state.enabled
    ):
        raise KernelError(errno.EINVAL, "MSI is enabled")
    if data_type == V.VFIO_IRQ_SET_DATA_EVENTFD:
        _set_eventfds(state, pdev, index, start, fds, refs)
        return 0
    for i in range(count):
        if data_type == V.VFIO_IRQ_SET_DATA_NONE or req.data[i]:
            state.signal(index, start + i)
    return 0


def _set_eventfds(
    state: IrqState,
    pdev: PciDevice,
    index: int,
    start: int,
    fds: list[int],
    refs: list[ForeignFile],
) -> None:
    """Install (fd >= 0) or drop (fd -1) the trigger of each vector from ``start``."""
    it = iter(refs)
    for i, fd in enumerate(fds):
        key = (index, start + i)
        old = state.triggers.pop(key, None)
        if old is not None:
            old.close()
        if fd >= 0:
            state.triggers[key] = next(it).take_eventfd()
    state.enabled[index] = max(state.enabled.get(index, 0), start + len(fds))
    if index in (V.VFIO_PCI_MSI_IRQ_INDEX, V.VFIO_PCI_MSIX_IRQ_INDEX):
        pdev.set_msi_mode(index, state.enabled[index])


def _intx_mask(state: IrqState, req: IrqSet, *, mask: bool) -> int:
    data_type, count = req.data_type, req.hdr.count
    if count != 1 and not (count == 0 and data_type == V.VFIO_IRQ_SET_DATA_NONE):
        raise KernelError(errno.EINVAL, "INTx has one vector")
    if data_type == V.VFIO_IRQ_SET_DATA_BOOL and not req.data[0]:
        return 0
    if data_type == V.VFIO_IRQ_SET_DATA_EVENTFD:
        raise KernelError(errno.EINVAL, "INTx mask via eventfd")
    if mask:
        state.intx_masked = True
    else:
        state.intx_masked = False
        if state.intx_pending:
            state.intx_pending = False
            state.signal(V.VFIO_PCI_INTX_IRQ_INDEX, 0)
    return 0


# vfio_pci_set_irqs_ioctl(): the handler of each (index, action); MSI and MSI-X cannot
# be masked (the kernel's "XXX Need masking support exported"), ERR and REQ only trigger
IRQ_HANDLERS: dict[tuple[int, int], IrqHandler] = {
    (INTX, V.VFIO_IRQ_SET_ACTION_MASK): vfio_pci_set_intx_mask,
    (INTX, V.VFIO_IRQ_SET_ACTION_UNMASK): vfio_pci_set_intx_unmask,
    (INTX, TRIGGER): vfio_pci_set_trigger,
    (V.VFIO_PCI_MSI_IRQ_INDEX, TRIGGER): vfio_pci_set_msi_trigger,
    (V.VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER): vfio_pci_set_msi_trigger,
    (V.VFIO_PCI_ERR_IRQ_INDEX, TRIGGER): vfio_pci_set_trigger,
    (V.VFIO_PCI_REQ_IRQ_INDEX, TRIGGER): vfio_pci_set_trigger,
}
