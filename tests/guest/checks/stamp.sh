# The example device written in Python (examples/python_device.py), driven by hand from
# the guest through its BAR0 registers with busybox devmem (no driver binds it):
#   stamp.sh VENDOR:DEVICE ADDR VALUE
# writes VALUE and reads it back, then has the device DMA-write VALUE to guest-physical
# ADDR (through QEMU's mappings of guest RAM) and reads its STAMPS counter, which only a
# DMA that the IOMMU let through increments.
. /checks/lib.sh

ids=$1 addr=$2 value=$3
slot=$(find_pci "$ids") || fail "no PCI device $ids"
setpci -s "${slot#0000:}" COMMAND=0006 || fail "setpci failed"  # memory space + bus master
bar=$(bar_start "$slot" 0)
[ "$bar" -ne 0 ] || fail "BAR0 of $slot is not assigned"
devmem $((bar + 0x8)) 32 "$value"  # VALUE
readback=$(($(devmem $((bar + 0x8)) 32)))
before=$(($(devmem $((bar + 0x10)) 32)))  # STAMPS
devmem $((bar + 0x0)) 32 "$addr"  # ADDR_LO
devmem $((bar + 0x4)) 32 0  # ADDR_HI
devmem $((bar + 0xc)) 32 1  # GO
after=$(($(devmem $((bar + 0x10)) 32)))
result "\"check\":\"stamp\",\"slot\":\"$slot\",\"bar0\":$bar,\"value\":$((value)),\"readback\":$readback,\"stamps_before\":$before,\"stamps_after\":$after"
