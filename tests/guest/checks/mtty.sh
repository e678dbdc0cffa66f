# The mtty UART [VENDOR:DEVICE, default 4348:3253]: the 8250 serial driver has bound it,
# its ttyS sits at the I/O BAR with an interrupt (irq 0 would mean the driver polls), and
# bytes written to the port come back through the device's loopback while the interrupt
# count grows. Reports the interrupt's /proc/interrupts line, which names the path
# (IO-APIC ... fasteoi: INTx; PCI-MSI: MSI).
. /checks/lib.sh

ids=${1:-4348:3253}
slot=$(find_pci "$ids") || fail "no PCI device $ids"
d=/sys/bus/pci/devices/$slot
driver=$(driver_of "$slot")
[ "$driver" = serial ] || fail "$slot is bound to '$driver', not serial"
in_use=$(lspci -k -s "$slot" | sed -n 's/.*Kernel driver in use: //p')
tty=$(ls "$d/tty" 2>/dev/null)
[ -n "$tty" ] || fail "no tty under $d"
port=$(($(cat "/sys/class/tty/$tty/port")))
bar0=$(bar_start "$slot" 0)
[ "$port" -eq "$bar0" ] || fail "$tty at I/O $port, BAR0 at $bar0"
irq=$(cat "/sys/class/tty/$tty/irq")
[ "$irq" -ne 0 ] || fail "$tty has no IRQ: the 8250 driver would poll"
uart_type=$(dmesg | sed -n "s/.*$tty at I\/O .* is a //p" | tail -1)

exec 3<> "/dev/$tty"  # opening the port requests the IRQ and enables it in the UART
stty -F "/dev/$tty" raw -echo
before=$(irq_count "$irq")
# One line at a time, each read back before the next is written: a line can only come
# back through the receive interrupt, as the reader sleeps until the driver's interrupt
# handler hands it the bytes.
: > /tmp/tx
: > /tmp/rx
i=1
while [ $i -le 20 ]; do
    line=$(printf 'vfiofs mtty loopback, line %02d' $i)
    echo "$line" >> /tmp/tx
    echo "$line" >&3
    timeout 10 head -c $((${#line} + 1)) <&3 >> /tmp/rx || break
    i=$((i + 1))
done
sent=$(wc -c < /tmp/tx)
back=$(wc -c < /tmp/rx)
after=$(irq_count "$irq")
chip=$(irq_chip "$irq")
exec 3>&-
[ "$back" -eq "$sent" ] || fail "$back of $sent bytes came back"
cmp -s /tmp/tx /tmp/rx || fail "the bytes that came back differ from those sent"
[ "$after" -gt "$before" ] || fail "no interrupt counted on irq $irq ($chip)"
case $chip in
    *MSI*) path=MSI ;;
    *IO-APIC*|*XT-PIC*) path=INTx ;;
    *) path=unknown ;;
esac
result "\"check\":\"mtty\",\"slot\":\"$slot\",\"driver\":\"$driver\",\"lspci_driver\":$(json_str "$in_use"),\"tty\":\"$tty\",\"uart\":$(json_str "$uart_type"),\"port\":$port,\"bar0\":$bar0,\"irq\":$irq,\"irq_line\":$(json_str "$chip"),\"path\":\"$path\",\"bytes_sent\":$sent,\"bytes_back\":$back,\"interrupts\":$((after - before))"
