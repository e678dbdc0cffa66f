"""The simulated vfio core, split as the kernel's drivers/vfio/ is."""
