#!/usr/bin/env bash
# Prints the path of a Python with prometheus_client (the reference text
# parser the metrics tests use), making its venv the first time in
# ${CKV_CACHE:-~/.cache/ckv}/prom-venv (pinned version, from PyPI).
set -euo pipefail
cache=${CKV_CACHE:-$HOME/.cache/ckv}
venv=$cache/prom-venv
version=0.21.1
if ! "$venv/bin/python" -c "import prometheus_client, sys; sys.exit(prometheus_client.__version__ != '$version')" 2>/dev/null; then
    mkdir -p "$cache"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "prometheus_client==$version" >&2
fi
echo "$venv/bin/python"
