#!/usr/bin/env bash
# Runs every check and test, then prints one summary line:
#   total: N passed, M failed
# Steps: rustfmt, clippy, luacheck, build, header/cdefs freshness, bench and fuzz
# crates compile, cargo test
# (all crates), the C examples (plain, ASan/UBSan, valgrind) and the C thread
# test (TSan), the Test::Nginx suites, the real-Consul stage, the runner's
# self-tests, the packaging checks.
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
passed=0
failed=0
failed_steps=()

step() {
    local name=$1; shift
    local out="$log_dir/$name.log"
    local t0=$SECONDS
    printf '==> %s\n' "$name"
    if "$@" >"$out" 2>&1; then
        printf '    ok (%ds)\n' $((SECONDS - t0))
        return 0
    fi
    printf '    FAILED (%ds)\n' $((SECONDS - t0))
    # Name what failed first (test names, panics, TAP failures), then the tail.
    grep -E '^test .* FAILED$|panicked at|^not ok |Failed test|^FAIL' "$out" | head -n 40 | sed 's/^/    ! /'
    echo "    last lines:"
    tail -n 40 "$out" | sed 's/^/    | /'
    failed_steps+=("$name")
    return 1
}

# Counts one pass/fail for a check that is not a test suite.
check() {
    if step "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# cargo test: add up "test result: ... N passed; M failed".
cargo_tests() {
    step cargo-test cargo test --workspace --no-fail-fast
    local rc=$?
    local p f
    p=$(grep -oE '[0-9]+ passed' "$log_dir/cargo-test.log" | awk '{s+=$1} END {print s+0}')
    f=$(grep -oE '[0-9]+ failed' "$log_dir/cargo-test.log" | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    printf '    cargo test: %d passed, %d failed\n' "$p" "$f"
}

# prove: "Files=.., Tests=N" and the failed subtest counts.
prove_tests() {
    local name=$1; shift
    step "$name" bash scripts/prove.sh "$@"
    local rc=$?
    local total f
    total=$(grep -oE 'Tests=[0-9]+' "$log_dir/$name.log" | tail -1 | cut -d= -f2)
    total=${total:-0}
    f=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$log_dir/$name.log" | awk '{split($2,a,"/"); s+=a[1]} END {print s+0}')
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + total - f))
    failed=$((failed + f))
    printf '    %s: %d passed, %d failed\n' "$name" $((total - f)) "$f"
}

# The real-Consul stage (scripts/real-consul-stage.sh): its own counts are
# added; its summary (Consul version, skips, figures) is always shown.
real_consul_stage() {
    step real-consul bash scripts/real-consul-stage.sh
    local rc=$?
    local out="$log_dir/real-consul.log" p f
    grep -E '^real-consul: Consul|^    (ok|FAILED|skipped|Test::Nginx|Rust)|^    \| +[0-9]+ .*real Consul|^real-consul: [0-9]+ passed' "$out" | sed 's/^/    /'
    p=$(grep -oE '^real-consul: [0-9]+ passed' "$out" | tail -1 | grep -oE '[0-9]+')
    f=$(grep -oE '^real-consul: [0-9]+ passed, [0-9]+ failed' "$out" | tail -1 | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    p=${p:-0}
    f=${f:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
}

check fmt cargo fmt --all -- --check
check clippy cargo clippy --workspace --all-targets -- -D warnings
check luacheck luacheck --no-color lua t/lib
check build cargo build --workspace
check header bash scripts/check-header.sh
# The bench crate is outside the workspace: keep it compiling with the library.
check bench-build cargo check --quiet --manifest-path bench/rust/Cargo.toml --target-dir target/bench
# So is the fuzz crate (checked only: running the targets needs nightly).
check fuzz-build cargo check --quiet --manifest-path fuzz/Cargo.toml --bins --target-dir target/fuzz
cargo_tests
check c-example bash examples/test.sh
check c-example-asan env SAN=asan bash examples/test.sh
check c-example-valgrind bash scripts/valgrind.sh --examples
check c-threads-tsan bash tests/c/threads.sh
prove_tests test-nginx
real_consul_stage
check reload-stress env RELOADS="${RELOADS:-100}" bash scripts/reload-stress.sh
prove_tests runner-selftest --selftest
# Packaging (README "Installation", "APISIX"): links stay inside the repo;
# make install + pkg-config + SONAME; make install-apisix; the rockspec; the
# glibc-2.28 build in a Debian bullseye chroot; the .deb installed there.
check doc-links python3 scripts/check-links.py
check install bash packaging/tests/install.sh
check install-apisix bash packaging/tests/install-apisix.sh
check rockspec luarocks lint ckv-0.1.0-1.rockspec
check glibc-floor bash packaging/tests/bullseye.sh
check deb bash packaging/tests/bullseye.sh deb

if [ ${#failed_steps[@]} -gt 0 ]; then
    echo "failed steps: ${failed_steps[*]}"
fi
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
