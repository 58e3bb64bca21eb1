#!/usr/bin/env bash
# Prints the path of a Debian bullseye root (glibc 2.31, the base of APISIX's
# official Debian images) with gcc and pkg-config, building it once per machine
# with debootstrap. The root is cached in ${CKV_CACHE:-~/.cache/ckv}; a build
# that was interrupted is started again, never used half-made.
set -euo pipefail
cache=${CKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ckv}
root=$cache/bullseye-root
mirror=${CKV_BULLSEYE_MIRROR:-http://deb.debian.org/debian}

if [ -f "$root/.ckv-complete" ]; then
    echo "$root"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "bullseye-root: debootstrap and chroot need root" >&2; exit 1; }
if ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-remove --no-install-recommends debootstrap >/dev/null
fi
mkdir -p "$cache"
work=$cache/bullseye-root.partial
rm -rf "$work"
echo "bullseye-root: debootstrap bullseye into $root (once per machine, a few minutes)" >&2
debootstrap --variant=minbase --include=gcc,libc6-dev,pkg-config,ca-certificates \
    bullseye "$work" "$mirror" >"$cache/bullseye-debootstrap.log" 2>&1 || {
    echo "bullseye-root: debootstrap failed, see $cache/bullseye-debootstrap.log" >&2
    tail -n 20 "$cache/bullseye-debootstrap.log" >&2
    exit 1
}
# sed, not head: head would close the pipe early and fail ldd under pipefail.
chroot "$work" ldd --version | sed -n 1p >"$work/.ckv-complete"
rm -rf "$root"
mv "$work" "$root"
echo "$root"
