#!/usr/bin/env bash
# The glibc floor, proved on a real older system:
#   1. `make lib GLIBC_FLOOR=2.28` gives a library whose highest GLIBC_
#      symbol version is <= 2.28 (objdump -T);
#   2. in a Debian bullseye root (glibc 2.31, as APISIX's official Debian
#      images; built once per machine by packaging/bullseye-root.sh) that
#      library is installed with `make install DESTDIR=<root>`, the C
#      example is built there by bullseye's gcc against the installed header
#      (pkg-config), and runs in the chroot against the Consul double;
#   3. the same root refuses the host's own (debug) build when the host's
#      glibc is newer than bullseye's, so the check in 2 is a real one.
# Needs root (chroot, mounts). Run it in `unshare -n`.
#   bullseye.sh [deb]   with "deb": make deb, dpkg -i it into the root and
#                       use it from Debian's paths; dpkg --purge afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-tarball}
fail() { echo "bullseye test: $*" >&2; exit 1; }
floor=2.28

root=$(bash packaging/bullseye-root.sh)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

if [ "$mode" = deb ]; then
    deb=$(make -s deb | tail -n 1)
    [ -f "$deb" ] || fail "make deb gave no package ($deb)"
    contents=$(dpkg-deb -c "$deb")
    for f in ./usr/lib/x86_64-linux-gnu/libckv.so.$version ./usr/lib/x86_64-linux-gnu/libckv.so.1 \
             ./usr/lib/x86_64-linux-gnu/libckv.so ./usr/include/ckv.h \
             ./usr/lib/x86_64-linux-gnu/pkgconfig/ckv.pc ./usr/lib/x86_64-linux-gnu/lua/5.1/libckv.so \
             ./usr/share/lua/5.1/resty/consul_kv.lua ./usr/share/lua/5.1/apisix/discovery/consul_kv/init.lua \
             ./usr/share/doc/ckv/copyright; do
        grep -q " $f\( \|$\)" <<<"$contents" || fail "$f is not in $deb"
    done
    dpkg-deb -f "$deb" Depends | grep "libc6 (>= 2\.2[0-8])" >/dev/null || fail "Depends does not ask for libc6 <= $floor: $(dpkg-deb -f "$deb" Depends)"
else
    make -s lib GLIBC_FLOOR=$floor >/dev/null
fi

lib=target/dist/libckv.so.$version
max=$(objdump -T "$lib" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[ "$(printf '%s\n%s\n' "$max" "$floor" | sort -V | tail -n 1)" = "$floor" ] ||
    fail "$lib needs GLIBC_$max, above the floor $floor"
echo "highest GLIBC_ symbol version: $max (floor $floor)"

# Everything below runs in a private mount namespace: the mounts vanish with it.
work=/tmp/ckv-test-$$
cleanup() {
    if [ "$mode" = deb ]; then chroot "$root" dpkg --purge ckv >/dev/null 2>&1 || true; fi
    rm -rf "${root:?}$work"
}
trap cleanup EXIT
if [ "$mode" = deb ]; then
    chroot "$root" dpkg --purge ckv >/dev/null 2>&1 || true   # left by a killed run
    mkdir -p "$root$work"
    cp "$deb" "$root$work/ckv.deb"
    chroot "$root" dpkg -i "$work/ckv.deb" >"$root$work/dpkg.log" 2>&1 ||
        { cat "$root$work/dpkg.log"; fail "dpkg -i refused the package on bullseye"; }
    chroot "$root" ldconfig -p | grep -E 'libckv.so.1 .*=> (/usr)?/lib/x86_64-linux-gnu/libckv.so.1$' >/dev/null ||
        fail "ldconfig does not know libckv.so.1 after dpkg -i"
    pc_env=()
    ld_env=()
else
    make -s install DESTDIR="$root" PREFIX="$work/prefix" INSTALL_DEBUG=no >/dev/null
    pc_env=(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig")
    ld_env=(LD_LIBRARY_PATH="$work/prefix/lib")
fi
mkdir -p "$root$work"
cp examples/watch.c examples/example.h "$root$work/"
chroot "$root" env "${pc_env[@]}" sh -c "cd $work && gcc -std=c11 -Wall -Werror -o watch watch.c \$(pkg-config --cflags --libs ckv)" ||
    fail "bullseye's gcc could not build the example with pkg-config"
echo "built with bullseye's $(chroot "$root" gcc --version | sed -n 1p), against $(head -n 1 "$root/.ckv-complete")"
unshare -m bash -c '
    set -e
    mount -t proc proc "$1/proc"
    shift
    exec "$@"' _ "$root" bash packaging/tests/example-vs-double.sh chroot "$root" env "${ld_env[@]}" "$work/watch"

if [ "$mode" = deb ]; then
    chroot "$root" dpkg --purge ckv >/dev/null || fail "dpkg --purge ckv failed"
    [ ! -e "$root/usr/lib/x86_64-linux-gnu/libckv.so.1" ] || fail "libckv.so.1 is still there after dpkg --purge"
    echo "deb test: ok (dpkg -i, pkg-config, run, dpkg --purge on bullseye)"
else
    host=$(ldd --version | sed -n 1p | grep -oE '[0-9]+\.[0-9]+$')
    host_lib=target/debug/libckv.so
    needs=$(objdump -T "$host_lib" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    if [ "$(printf '%s\n2.31\n' "$needs" | sort -V | tail -n 1)" != 2.31 ]; then
        mkdir -p "$root$work/host"
        cp "$host_lib" "$root$work/host/libckv.so.1"
        if chroot "$root" env LD_LIBRARY_PATH="$work/host" "$work/watch" --help >/dev/null 2>"$root$work/host.err"; then
            fail "the host build (glibc $host, needs $needs) loaded on bullseye: this test proves nothing"
        fi
        grep -q "version .GLIBC_[0-9.]*' not found" "$root$work/host.err" || { cat "$root$work/host.err"; fail "the host build failed on bullseye for another reason"; }
        echo "control: the host build (needs GLIBC_$needs) does not load on bullseye: $(head -n 1 "$root$work/host.err")"
    fi
    echo "glibc-floor test: ok"
fi
