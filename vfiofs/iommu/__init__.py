"""IOMMU groups, domains, the pure-Python IOMMU page table and DMA through it. Knows
nothing of VFIO or FUSE."""
