#!/usr/bin/env bash
# make bench: builds what the benchmark needs, then runs bench/bench.py, which
# prints the table and writes bench/out/report.json. Bounded (< 15 min on 2
# cores); every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ckv -p ckv-consul-double
cargo build --release --manifest-path bench/rust/Cargo.toml --target-dir target/bench
mkdir -p bench/out
exec python3 bench/bench.py "$@"
