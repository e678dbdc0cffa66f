# PCI functions as the guest sees them: IDs, class, driver, BARs (from sysfs) and the
# capability list as pciutils' lspci decodes it from config space.
#   enumerate.sh [SLOT...]      (0000:00:10.0 ...; default: every function)
. /checks/lib.sh

[ $# -gt 0 ] || set -- $(ls /sys/bus/pci/devices)
devices=""
for slot in "$@"; do
    d=/sys/bus/pci/devices/$slot
    [ -e "$d" ] || fail "no PCI function $slot"
    bars="" i=0
    while read -r start end flags; do
        [ $i -le 5 ] || break  # BAR0-5; the 7th line is the expansion ROM
        if [ $((end)) -ne 0 ]; then
            bars="$bars${bars:+,}{\"index\":$i,\"start\":$((start)),\"size\":$((end - start + 1)),\"flags\":$((flags))}"
        fi
        i=$((i + 1))
    done < "$d/resource"
    caps=""
    # "	Capabilities: [50] MSI: Enable- Count=1/1 Maskable- 64bit+" -> 50 + text
    lspci -vvv -s "$slot" | sed -n 's/^	Capabilities: \[\([0-9a-f]*\)[^]]*\] \(.*\)$/\1 \2/p' > /tmp/caps
    while read -r at text; do
        caps="$caps${caps:+,}{\"at\":$((0x$at)),\"text\":$(json_str "$text")}"
    done < /tmp/caps
    devices="$devices${devices:+,}{\"slot\":\"$slot\""
    for f in vendor device subsystem_vendor subsystem_device class revision irq; do
        devices="$devices,\"$f\":$(($(cat "$d/$f")))"
    done
    devices="$devices,\"driver\":$(json_str "$(driver_of "$slot")")"
    devices="$devices,\"lspci\":$(json_str "$(lspci -nn -s "$slot")")"
    devices="$devices,\"bars\":[$bars],\"caps\":[$caps]}"
done
[ -n "$devices" ] || fail "no PCI devices"
result "\"check\":\"enumerate\",\"devices\":[$devices]"
