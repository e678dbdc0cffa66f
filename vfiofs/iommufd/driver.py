"""Mirror of drivers/iommu/iommufd/driver.c: what iommufd offers IOMMU drivers (the mock
one of selftest.py here): finding the device behind a vIOMMU's virtual id and reporting
a vIOMMU event. `iommu_report_device_fault` stands in for the iommu core's page request
path (drivers/iommu/io-pgfault.c), which ends in iommufd's fault queue.
"""

from __future__ import annotations

import errno
import logging

from ..errors import KernelError
from .iommufd_private import (
    INT_MAX,
    IommufdDevice,
    IommufdViommu,
    IopfFault,
    IopfGroup,
    Vevent,
    iommufd_fault_iopf_handler,
)

log = logging.getLogger("vfiofs.iommufd")


def iommufd_viommu_find_dev(
    viommu: IommufdViommu, virt_id: int
) -> IommufdDevice | None:
    """The device a vIOMMU calls ``virt_id``, or None."""
    vdev = viommu.vdevs.get(virt_id)
    return None if vdev is None else vdev.idev


def iommufd_viommu_report_event(viommu: IommufdViommu, vtype: int, data: bytes) -> None:
    """A driver reports an event of ``vtype``: EOPNOTSUPP when no vEVENTQ of the
    vIOMMU takes that type. Past the queue's depth the event is lost: the tail becomes
    the LOST_EVENTS header, whose sequence moves on with each lost event."""
    veventq = next((q for q in viommu.veventqs if q.type == vtype), None)
    if veventq is None:
        raise KernelError(errno.EOPNOTSUPP, f"no vEVENTQ of type {vtype:#x}")
    if veventq.num_events == veventq.depth:
        vevent = veventq.lost_events_header
    else:
        vevent = Vevent(data=bytes(data))
        veventq.num_events += 1
    # iommufd_vevent_handler(): the lost-events header moves to the tail
    lost = veventq.lost_events_header
    if veventq.deliver and veventq.deliver[-1] is lost:
        veventq.deliver.pop()
    veventq.deliver.append(vevent)
    vevent.sequence = veventq.sequence
    veventq.sequence = (veventq.sequence + 1) & INT_MAX
    veventq.wake()


def iommu_report_device_fault(
    idev: IommufdDevice, pasid: int, fault: IopfFault
) -> bool:
    """A page request from ``idev``: it goes to the fault queue of the HWPT attached at
    that PASID. Dropped (False) when that HWPT has none."""
    hwpt = idev.attached.get(pasid)
    if hwpt is None or hwpt.fault is None:
        log.info(
            "page fault of device %d pasid %d dropped: no fault queue", idev.id, pasid
        )
        return False
    iommufd_fault_iopf_handler(hwpt, IopfGroup(idev, pasid, [fault]))
    return True
