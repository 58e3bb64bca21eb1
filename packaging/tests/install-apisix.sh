#!/usr/bin/env bash
# make install-apisix (README "APISIX", route 2b) on a stand-in APISIX tree:
# APISIX's two consul_kv files are kept as *.apisix and replaced by ours, the
# binding and the library land in deps/; a second install keeps APISIX's
# originals; make uninstall-apisix restores them byte for byte and leaves
# nothing of ours.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "install-apisix test: $*" >&2; exit 1; }
[ -f target/dist/BUILD-INFO ] || make -s lib GLIBC_FLOOR=2.28 >/dev/null
home=$(mktemp -d)
trap 'rm -rf "$home" "$home.before" "$home.after"' EXIT
mod=$home/apisix/discovery/consul_kv
mkdir -p "$mod" "$home/deps/share/lua/5.1/resty" "$home/deps/lib/lua/5.1"
echo '-- APISIX init.lua' >"$mod/init.lua"
echo '-- APISIX schema.lua' >"$mod/schema.lua"
echo 'other dependency' >"$home/deps/share/lua/5.1/resty/other.lua"
find "$home" -type f | sort | xargs sha256sum >"$home.before"

for _ in 1 2; do
    env PATH=/usr/sbin:/usr/bin:/sbin:/bin make -s install-apisix APISIX_HOME="$home" >/dev/null ||
        fail "make install-apisix failed"
done
grep -q 'APISIX init.lua' "$mod/init.lua.apisix" || fail "APISIX's init.lua was not kept (or was overwritten by a second install)"
grep -q 'APISIX schema.lua' "$mod/schema.lua.apisix" || fail "APISIX's schema.lua was not kept"
cmp -s lua/apisix/discovery/consul_kv/init.lua "$mod/init.lua" || fail "init.lua is not ckv's"
cmp -s lua/apisix/discovery/consul_kv/schema.lua "$mod/schema.lua" || fail "schema.lua is not ckv's"
# Every module of the binding, as the tree has them (a new file must ship too).
for f in $(cd lua && find resty -name '*.lua' | LC_ALL=C sort); do
    cmp -s "lua/$f" "$home/deps/share/lua/5.1/$f" || fail "$f is not in deps/share/lua/5.1"
done
lib=$home/deps/lib/lua/5.1/libckv.so
[ -f "$lib" ] && [ ! -L "$lib" ] || fail "deps/lib/lua/5.1/libckv.so is not a file"
readelf -d "$lib" | grep 'Library soname: \[libckv.so.1\]' >/dev/null || fail "deps/lib/lua/5.1/libckv.so has no SONAME libckv.so.1"

env PATH=/usr/sbin:/usr/bin:/sbin:/bin make -s uninstall-apisix APISIX_HOME="$home" >/dev/null ||
    fail "make uninstall-apisix failed"
find "$home" -type f | sort | xargs sha256sum >"$home.after"
diff "$home.before" "$home.after" || fail "uninstall-apisix did not give back the tree as it was"

echo "install-apisix test: ok (APISIX's files kept and restored, binding and library in deps/)"
