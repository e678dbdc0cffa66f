"""The filesystem tree: directories, sysfs attributes, symlinks and device files."""
