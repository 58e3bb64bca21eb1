#!/usr/bin/env bash
# make install DESTDIR=... puts the ecosystem's layout in place (SONAME links,
# pkg-config file, Lua modules, a link for lua_package_cpath, separate debug
# info) without cargo on PATH; a C program built with
# `pkg-config --cflags --libs ckv` against that tree runs against the Consul
# double; make uninstall removes every file again. Run it in `unshare -n`.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "install test: $*" >&2; exit 1; }

# The glibc-2.28 build: the one the bullseye and .deb tests use too, so CI
# links one release library, not two (`make lib` differs only in the cargo
# command).
make -s lib GLIBC_FLOOR=2.28 >/dev/null
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

# As under sudo: no cargo, no rustup on PATH.
env PATH=/usr/sbin:/usr/bin:/sbin:/bin make -s install DESTDIR="$dest" >/dev/null ||
    fail "make install without cargo on PATH failed"
root=$dest/usr/local
lib=$root/lib/libckv.so.$version
[ -f "$lib" ] && [ ! -L "$lib" ] || fail "$lib is not a regular file"
[ "$(readlink "$root/lib/libckv.so.1")" = "libckv.so.$version" ] || fail "libckv.so.1 does not link to libckv.so.$version"
[ "$(readlink "$root/lib/libckv.so")" = "libckv.so.1" ] || fail "libckv.so does not link to libckv.so.1"
[ "$(readlink -f "$root/lib/lua/5.1/libckv.so")" = "$(readlink -f "$lib")" ] ||
    fail "lib/lua/5.1/libckv.so does not lead to the installed library"
readelf -d "$lib" | grep 'Library soname: \[libckv.so.1\]' >/dev/null || fail "SONAME is not libckv.so.1"
readelf -S "$lib" | grep '\.debug_info' >/dev/null && fail "the installed library is not stripped"
readelf -S "$lib" | grep '\.gnu_debuglink' >/dev/null || fail "no .gnu_debuglink in the installed library"
dbg=$dest/usr/lib/debug/usr/local/lib/libckv.so.$version.debug
readelf -S "$dbg" | grep '\.debug_info' >/dev/null || fail "$dbg has no debug info"
for f in include/ckv.h lib/pkgconfig/ckv.pc \
         $(cd lua && find resty apisix -name '*.lua' | LC_ALL=C sort | sed 's|^|share/lua/5.1/|'); do
    [ -f "$root/$f" ] || fail "$f was not installed"
done
cmp -s include/ckv.h "$root/include/ckv.h" || fail "installed header differs from include/ckv.h"

# A program built the way a user would, through pkg-config.
export PKG_CONFIG_PATH=$root/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
[ "$(pkg-config --modversion ckv)" = "$version" ] || fail "pkg-config --modversion ckv is not $version"
flags=$(pkg-config --cflags --libs ckv)
# shellcheck disable=SC2086
cc -std=c11 -Wall -Werror -o "$dest/watch" examples/watch.c $flags || fail "cc $flags failed"
readelf -d "$dest/watch" | grep 'Shared library: \[libckv.so.1\]' >/dev/null || fail "the program does not need libckv.so.1"
LD_LIBRARY_PATH=$root/lib bash packaging/tests/example-vs-double.sh "$dest/watch"

# LuaJIT finds the library through $(LUA_CDIR)/libckv.so on package.cpath.
lua_out=$(luajit -e "
    package.path = '$root/share/lua/5.1/?.lua;' .. package.path
    package.cpath = '$root/lib/lua/5.1/?.so;' .. package.cpath
    local clib = require('resty.consul_kv.clib')
    print(clib.path, clib.version)") || fail "luajit could not load the binding and library: $lua_out"
[ "$lua_out" = "$root/lib/lua/5.1/libckv.so	ckv/$version" ] || fail "luajit loaded an unexpected library: $lua_out"

env PATH=/usr/sbin:/usr/bin:/sbin:/bin make -s uninstall DESTDIR="$dest" >/dev/null || fail "make uninstall failed"
rm -f "$dest/watch"
left=$(find "$dest" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "install test: ok (prefix /usr/local, SONAME libckv.so.1, pkg-config $version, uninstall clean)"
