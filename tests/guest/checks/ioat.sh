# An I/OAT DMA engine [VENDOR:DEVICE, default 8086:2021]: load ioatdma, which binds the
# device only if its probe-time self-test passes (a copy through the device, its
# completion write and its interrupt; a failed test refuses the device). Reports the DMA
# channels it registered, their sysfs counters and the driver's interrupt counts.
. /checks/lib.sh

ids=${1:-8086:2021}
slot=$(find_pci "$ids") || fail "no PCI device $ids"
modprobe ioatdma || fail "modprobe ioatdma failed"
driver=$(driver_of "$slot")
[ "$driver" = ioatdma ] || fail "ioatdma did not bind $slot: $(dmesg | grep -i ioat | tail -5)"
in_use=$(lspci -k -s "$slot" | sed -n 's/.*Kernel driver in use: //p')
channels="" bytes=0 copies=0
for c in /sys/class/dma/*; do
    [ "$(readlink -f "$c/device")" = "$(readlink -f "/sys/bus/pci/devices/$slot")" ] || continue
    b=$(cat "$c/bytes_transferred") n=$(cat "$c/memcpy_count")
    bytes=$((bytes + b)) copies=$((copies + n))
    channels="$channels${channels:+,}$(json_str "${c##*/}")"
done
[ -n "$channels" ] || fail "no DMA channel registered for $slot"
irqs=0 lines=""
for irq in $(awk '/ioat/ { sub(":", "", $1); print $1 }' /proc/interrupts); do
    irqs=$((irqs + $(irq_count "$irq")))
    lines="$lines${lines:+,}$(json_str "$irq: $(irq_chip "$irq")")"
done
selftest=$(dmesg | grep -i "self-test\|selftest" | tail -3)
result "\"check\":\"ioat\",\"slot\":\"$slot\",\"driver\":\"$driver\",\"lspci_driver\":$(json_str "$in_use"),\"channels\":[$channels],\"bytes_transferred\":$bytes,\"memcpy_count\":$copies,\"interrupts\":$irqs,\"irq_lines\":[$lines],\"selftest_messages\":$(json_str "$selftest")"
