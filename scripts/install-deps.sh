#!/usr/bin/env bash
# Installs what building, testing and the demo need, only when it is missing.
# Safe to run again; needs root (or sudo) the first time on a fresh Debian machine.
set -euo pipefail

# luajit2 (the interpreter of the LuaJIT nginx uses): tests/config_docs.rs runs schema.lua.
pkgs=(nginx libnginx-mod-http-lua lua-resty-core lua-cjson luajit2 lua-check
      libtest-base-perl liblist-moreutils-perl libipc-run-perl
      libwww-perl libhttp-message-perl
      make gcc clang libclang-rt-dev pkg-config curl wrk valgrind procps psmisc openssl iproute2 python3)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    # Debian's nginx package starts a system nginx on port 80; we never need it.
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
    pkill -f 'nginx: master process /usr/sbin/nginx' 2>/dev/null || true
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is required (rustup toolchain)" >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

# prometheus_client (PyPI, pinned) in a cached venv: the parser the metrics
# tests read ckv's Prometheus text with (tests/metrics_parse.rs, t/080).
bash "$(dirname "$0")/prom-venv.sh" >/dev/null
