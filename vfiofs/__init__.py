"""vfiofs: VFIO and iommufd served from FUSE, for testing VFIO programs without hardware."""

__version__ = "0.1.0"
