"""Simulated PCI hardware: config space, BARs, interrupts, reset and DMA through the
IOMMU. Knows nothing of VFIO. Subclass `PciDevice` to write a device in Python."""

from .pci import PciDevice as PciDevice

__all__ = ["PciDevice"]
