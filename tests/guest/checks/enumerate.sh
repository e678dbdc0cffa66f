# Every PCI function the guest sees: IDs, class, driver, BARs (from sysfs) and the
# capability list as pciutils' lspci decodes it from config space.
. /checks/lib.sh

devices=""
for d in /sys/bus/pci/devices/*; do
    slot=${d##*/}
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
