"""/dev/iommu: the iommufd object model (mirror of drivers/iommu/iommufd/)."""
