#!/bin/sh
# `make run`: mount the built-in topology, show the tree, run the legacy VFIO flow under
# `vfiofs run`, unmount. Usage: demo.sh PYTHON MOUNTPOINT
set -eu
PY=$1
MNT=$2
HERE=$(dirname "$0")
mkdir -p "$MNT"
"$PY" -m vfiofs umount "$MNT" 2>/dev/null || true
"$PY" -m vfiofs mount "$MNT" &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null || true' EXIT
i=0
until grep -q " $MNT " /proc/self/mountinfo; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "vfiofs did not mount"; exit 1; }; sleep 0.05
done

echo "== vfiofs mounted at $MNT (built-in topology)"
echo "\$ ls -l $MNT/dev/vfio"; ls -l "$MNT/dev/vfio"
D=$MNT/sys/bus/pci/devices/0000:00:04.0
echo "\$ cat $D/{vendor,device,class}"; cat "$D/vendor" "$D/device" "$D/class"
echo "\$ readlink $D/iommu_group"; readlink "$D/iommu_group"
echo "\$ ls $MNT/sys/kernel/iommu_groups/*/devices"; ls "$MNT"/sys/kernel/iommu_groups/*/devices
echo
echo "== the kernel's legacy VFIO flow (vfio.rst), unmodified C, under 'vfiofs run'"
CC=${CC:-gcc}
BIN=$(mktemp -d)
$CC -o "$BIN/legacy_type1" "$HERE/legacy_type1.c"
"$PY" -m vfiofs run -- "$BIN/legacy_type1" 0 0000:00:04.0
rm -rf "$BIN"
echo
echo "== unmounting"
kill $DAEMON; wait $DAEMON || true
trap - EXIT
grep -q " $MNT " /proc/self/mountinfo && echo "still mounted!" && exit 1
echo "done: nothing left mounted"
