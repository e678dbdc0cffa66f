"""The composition root: a topology becomes devices, IOMMU groups, the vfio core and the
tree. One `Machine` is one daemon's whole object graph; tests build many side by side.

The Python API for tests and tools: `Machine.devices` (the simulated `PciDevice`s by BDF),
`add_device` / `remove_device` for hot-plug while mounted, `mappings(bdf)` for what a
device can reach through its IOMMU.
"""

from __future__ import annotations

import attrs

from .config import ConfigError, DeviceSpec, Options, Topology
from .devices.models import model_class
from .devices.pci import PciDevice
from .fs.devnodes import VfioTree
from .fs.tree import Tree
from .iommu.driver import IommuDriver
from .iommu.group import IommuGroup, IommuGroups
from .iommu.pagetable import Mapping
from .iommufd.iommufd_private import IommufdCtx, IommufdTest
from .iommufd.main import iommufd_fops_open
from .iommufd.selftest import MockIommuDriver
from .uaccess import Caller
from .vfio.pci.vfio_pci_core import VfioPciCoreDevice
from .vfio.vfio import VfioDevice, VfioOptions
from .vfio.vfio_main import VfioCore


def vfio_options(o: Options) -> VfioOptions:
    return VfioOptions(
        device_cdev=o.device_cdev,
        container=o.container,
        noiommu=o.noiommu,
        iommufd=o.iommufd,
        dma_entry_limit=o.dma_entry_limit,
        address_width=o.address_width,
    )


@attrs.define(eq=False)
class Machine:
    """Everything one daemon serves."""

    topology: Topology
    # directories searched first for "module:Class" models, before the topology's own
    model_path: tuple[str, ...] = ()
    # (uid, gid) of the group files, cdevs and /dev/iommu: the daemon's user, as an
    # administrator's chown or udev rule gives them to the user of a real system
    device_owner: tuple[int, int] = (0, 0)
    core: VfioCore = attrs.field(init=False)
    tree: Tree = attrs.field(init=False)
    iommu_groups: IommuGroups = attrs.Factory(IommuGroups)
    devices: dict[str, PciDevice] = attrs.Factory(dict)
    vdevs: dict[str, VfioDevice] = attrs.Factory(dict)
    iommu: IommuDriver = attrs.field(init=False)  # the IOMMU behind every group
    # CONFIG_IOMMUFD_TEST: IOMMU_TEST_CMD's state, shared by every /dev/iommu open
    iommufd_test: IommufdTest | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        opts = self.topology.options
        mock = MockIommuDriver(opts.address_width)
        self.iommu = mock if opts.iommu == "mock" else IommuDriver(opts.address_width)
        if opts.iommufd_test:
            self.iommufd_test = IommufdTest(mock)
        self.core = VfioCore(vfio_options(self.topology.options))
        self.tree = Tree()
        VfioTree(
            self.tree.root,
            self.core,
            iommufd_open=self.iommufd_open if self.core.options.iommufd else None,
            owner=self.device_owner,
        )
        for g in self.topology.groups:
            group = self.iommu_groups.add(
                IommuGroup(g.id, noiommu=g.noiommu, driver=self.iommu)
            )
            for spec in g.devices:
                self.add_device(spec, group)

    def add_device(
        self, spec: DeviceSpec, group: IommuGroup | None = None
    ) -> PciDevice:
        """Create and register a device (hot-plug); a new IOMMU group unless given.
        Raises ConfigError when the model cannot be found."""
        if group is None:
            group = self.iommu_groups.add(
                IommuGroup(
                    self.iommu_groups.alloc_id(),
                    noiommu=spec.noiommu,
                    driver=self.iommu,
                )
            )
        try:
            cls = model_class(spec.model, self.model_path + self.topology.model_path)
        except ValueError as e:
            key = f"{spec.where}.model" if spec.where else "model"
            raise ConfigError(f"{self.topology.source}: {key}: {e}") from None
        pdev = cls(spec)
        pdev.iommu_group = group
        group.devices.append(pdev)
        self.devices[spec.bdf] = pdev
        if spec.driver == "vfio-pci" and (
            not group.noiommu or self.core.options.noiommu
        ):
            vdev = VfioDevice(spec.bdf, VfioPciCoreDevice(pdev), pdev, group)
            self.core.register_device(vdev)
            self.vdevs[spec.bdf] = vdev
        return pdev

    def remove_device(self, bdf: str) -> None:
        """Unregister a device (hot-unplug): users see ENODEV; it goes when they close."""
        vdev = self.vdevs.pop(bdf, None)
        if vdev is not None:
            self.core.unregister_device(vdev)
        pdev = self.devices.pop(bdf)
        if pdev.iommu_group is not None and pdev in pdev.iommu_group.devices:
            pdev.iommu_group.devices.remove(pdev)

    def mappings(self, bdf: str) -> list[Mapping]:
        """What device ``bdf`` can reach through its IOMMU right now."""
        group = self.devices[bdf].iommu_group
        if group is None or group.domain is None:
            return []
        return list(group.domain.walk())

    def iommufd_open(self, caller: Caller, flags: int) -> IommufdCtx:
        """open(/dev/iommu): a new iommufd context."""
        return iommufd_fops_open(
            self.core.options.address_width, test=self.iommufd_test
        )
