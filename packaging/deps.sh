#!/usr/bin/env bash
# What the packaging tests need, installed once per machine and cached:
# Debian's debootstrap, luajit2 (the LuaJIT branch nginx's Lua module uses;
# Debian's "luajit" package would replace it), binutils and luarocks; zig + cargo-zigbuild (PyPI,
# ~/.cache/ckv/zig-venv); a Debian bullseye root (~/.cache/ckv/bullseye-root).
set -euo pipefail
cd "$(dirname "$0")"
missing=()
for p in debootstrap luajit2 binutils luarocks python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-venv only matters when python3 is Debian's own.
if [ "$(command -v python3)" != /usr/bin/python3 ]; then
    missing=("${missing[@]/python3-venv}")
fi
read -ra missing <<<"${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-remove --no-install-recommends "${missing[@]}" >/dev/null
fi
bash zig-toolchain.sh true
bash bullseye-root.sh >/dev/null
