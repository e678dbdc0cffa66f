#!/bin/sh
# Fetch Debian unstable's linux-libc-dev and unpack it into BUILD/uapi, for the ABI check
# of tests/unit/abi/test_uapi_headers.py (`make headers`). Debian 12's own headers are
# Linux 6.1: they lack iommufd's newer structs and the vfio cdev ones.
#
# The package is never installed and the system's apt sources are never changed: a private
# apt configuration under BUILD/apt (its own sources list, lists and cache) names the mirror
# the system already uses, with suite sid, and `apt-get download` fetches the .deb.
set -eu

build=$(realpath -m "${1:-build}")
apt="$build/apt"
out="$build/uapi"

# the system's Debian mirror: deb822 .sources first, then one-line .list entries
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v -- '-security' | head -n 1 || true)
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }')
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" \
    "$apt/cache/archives/partial" "$apt/deb"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" \
    >"$apt/etc/sources.list"

set -- \
    -o Dir::Etc::SourceList="$apt/etc/sources.list" \
    -o Dir::Etc::SourceParts="$apt/etc/sources.list.d" \
    -o Dir::Etc::Preferences="$apt/etc/preferences" \
    -o Dir::Etc::PreferencesParts="$apt/etc/preferences.d" \
    -o Dir::State::Lists="$apt/lists" \
    -o Dir::Cache="$apt/cache" \
    -o Acquire::Languages=none \
    -o APT::Sandbox::User=root \
    -o DPkg::Lock::Timeout=600

echo "fetching linux-libc-dev from $mirror sid into $out"
apt-get -qq "$@" update
cd "$apt/deb"
rm -f linux-libc-dev_*.deb
apt-get -qq "$@" download linux-libc-dev
deb=$(ls linux-libc-dev_*.deb)
rm -rf "$out.tmp"
dpkg-deb -x "$deb" "$out.tmp"
dpkg-deb -f "$deb" Version >"$out.tmp/VERSION"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "linux-libc-dev $(cat "$out/VERSION") in $out"
