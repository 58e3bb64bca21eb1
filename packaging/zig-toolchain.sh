#!/usr/bin/env bash
# Runs a command with zig and cargo-zigbuild on PATH, installing both from
# PyPI into ${CKV_CACHE:-~/.cache/ckv}/zig-venv the first time (pinned, so
# every machine links the same way). Used for the glibc-floor build:
#   packaging/zig-toolchain.sh cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.28
set -euo pipefail
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
cache=${CKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ckv}
venv=$cache/zig-venv
stamp=$venv/.ckv-ziglang-$ZIGLANG_VERSION-zigbuild-$ZIGBUILD_VERSION

if [ ! -f "$stamp" ]; then
    echo "zig-toolchain: installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION into $venv" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    touch "$stamp"
fi
# cargo-zigbuild finds zig through `python3 -m ziglang` of the venv.
export PATH=$venv/bin:$PATH
exec "$@"
