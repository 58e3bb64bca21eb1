#!/usr/bin/env bash
# Runs Test::Nginx .t files under both the compat runner and a real
# Test::Nginx checkout, and compares the results: exit status, plan, number
# of passing/failing assertions and the (sorted) assertion names.
#
#   t/compat/compare.sh /path/to/test-nginx/lib [files...]
#
# Default files: the plain Test::Nginx self-tests t/compat/selftest/0*.t.
# Exit status: 0 when every file gives the same counts under both.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

real_lib=${1:?usage: t/compat/compare.sh /path/to/test-nginx/lib [files...]}
shift
[ $# -gt 0 ] || set -- t/compat/selftest/0*.t

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# own servroot and port, so a concurrent run of the project tests (which
# uses t/servroot and port 1984) cannot interfere
export TEST_NGINX_SERVROOT="$tmp/servroot"
export TEST_NGINX_PORT="${CKV_COMPARE_PORT:-2020}"
unset TEST_NGINX_SERVER_PORT

summary() {   # TAP file -> "plan ok-count not-ok-count"
    local plan ok nok
    plan=$(grep -m1 -E '^1\.\.[0-9]+' "$1" || echo "1..?")
    ok=$(grep -cE '^ok ' "$1")
    nok=$(grep -cE '^not ok ' "$1")
    echo "plan=$plan ok=$ok not_ok=$nok"
}

names() {     # TAP file -> sorted assertion names without numbers
    sed -nE 's/^(not )?ok [0-9]+ - //p' "$1" | sort
}

rc=0
for t in "$@"; do
    s0=$(date +%s.%N)
    perl -I t/lib -I t/compat "$t" >"$tmp/compat.tap" 2>"$tmp/compat.err"
    c_rc=$?
    s1=$(date +%s.%N)
    perl -I t/lib -I "$real_lib" "$t" >"$tmp/real.tap" 2>"$tmp/real.err"
    r_rc=$?
    s2=$(date +%s.%N)
    c=$(summary "$tmp/compat.tap"); r=$(summary "$tmp/real.tap")
    ct=$(echo "$s1 - $s0" | bc); rt=$(echo "$s2 - $s1" | bc)
    if [ "$c" = "$r" ] && [ $c_rc -eq $r_rc ]; then
        printf 'SAME  %-40s %s exit=%d  (compat %.1fs, real %.1fs)\n' \
            "$t" "$c" $c_rc "$ct" "$rt"
    else
        rc=1
        printf 'DIFF  %-40s\n      compat: %s exit=%d\n      real:   %s exit=%d\n' \
            "$t" "$c" $c_rc "$r" $r_rc
    fi
    if ! diff -q <(names "$tmp/compat.tap") <(names "$tmp/real.tap") >/dev/null; then
        echo "      (assertion names differ:)"
        diff <(names "$tmp/compat.tap") <(names "$tmp/real.tap") | sed 's/^/      /' | head -20
    fi
done
exit $rc
