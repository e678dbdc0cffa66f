# The mtty's scratch register (SCR, I/O BAR + 7) through /dev/port:
#   scratch.sh read [VENDOR:DEVICE]        scratch.sh write VALUE [VENDOR:DEVICE]
# A device reset clears it; the guest's 8250 driver restores what it finds there.
. /checks/lib.sh

op=$1
[ "$op" = write ] && { value=$2; shift; }
ids=${2:-4348:3253}
slot=$(find_pci "$ids") || fail "no PCI device $ids"
scr=$(($(bar_start "$slot" 0) + 7))
if [ "$op" = write ]; then
    printf "\\$(printf %o "$value")" | dd of=/dev/port bs=1 seek=$scr count=1 conv=notrunc 2>/dev/null \
        || fail "cannot write I/O port $scr"
fi
got=$(dd if=/dev/port bs=1 skip=$scr count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
[ -n "$got" ] || fail "cannot read I/O port $scr"
result "\"check\":\"scratch\",\"slot\":\"$slot\",\"port\":$scr,\"value\":$got"
