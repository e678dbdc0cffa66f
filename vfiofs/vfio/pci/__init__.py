"""vfio-pci: the bus driver in front of simulated PCI devices (drivers/vfio/pci/)."""
