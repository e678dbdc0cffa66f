# Helpers for the guest checks (busybox sh). A check prints exactly one line
#   @@vfiofs-result {JSON}
# and exits 0, or says what is wrong on stderr and exits non-zero.

fail() {
    echo "check failed: $*" >&2
    exit 1
}

# json_str TEXT: TEXT as a JSON string
json_str() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g; s/	/\\t/g' | tr -d '\r\n')"
}

# result JSON-OBJECT-BODY: print the result line
result() {
    echo "@@vfiofs-result {$1}"
}

# find_pci VENDOR:DEVICE: the slot of the first PCI function with these IDs
find_pci() {
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x${1%:*}:0x${1#*:}" ]; then
            echo "${d##*/}"
            return 0
        fi
    done
    return 1
}

# driver_of SLOT: the bound driver's name, or nothing
driver_of() {
    l=$(readlink "/sys/bus/pci/devices/$1/driver") && echo "${l##*/}"
}

# bar_start SLOT INDEX: a BAR's address in decimal (from sysfs "resource")
bar_start() {
    sed -n "$(($2 + 1))p" "/sys/bus/pci/devices/$1/resource" | { read -r start _; echo $((start)); }
}

# irq_count IRQ: the interrupt's count summed over CPUs, from /proc/interrupts
irq_count() {
    awk -v irq="$1:" '$1 == irq { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }' /proc/interrupts
}

# irq_chip IRQ: the rest of the interrupt's /proc/interrupts line (chip, hwirq-type, names)
irq_chip() {
    awk -v irq="$1:" '$1 == irq { s = ""; for (i = 2; i <= NF; i++) if ($i !~ /^[0-9]+$/ || s != "") s = s (s == "" ? "" : " ") $i; print s }' /proc/interrupts
}
