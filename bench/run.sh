#!/usr/bin/env bash
# make bench: builds what the benchmark needs, then runs bench/bench.py, which
# prints the table and writes bench/out/report.json; part 7 then measures
# propagation against a real Consul agent. Bounded (about 15 min on 2
# cores); every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ckv -p ckv-consul-double
cargo build --release --manifest-path bench/rust/Cargo.toml --target-dir target/bench
mkdir -p bench/out
python3 bench/bench.py "$@"
# Part 7: propagation against a real Consul agent (1k and 10k keys), printed
# next to part 2's figure for the double. Needs Go (scripts/real-consul.sh).
only=${CKV_BENCH_ONLY:-}
if [ -z "$only" ] || [[ ",$only," == *,7,* ]]; then
    python3 bench/real_consul_propagation.py --bench --changes "${CKV_BENCH_REAL_CHANGES:-100}"
fi
