#!/usr/bin/env bash
# Runs the project's Test::Nginx tests (t/**/*.t) with prove.
#
#   scripts/prove.sh                 all project tests (everything under t/
#                                    except the runner's own t/compat/)
#   scripts/prove.sh [prove args]    e.g. -v t/010-basic.t   (passed as is)
#   scripts/prove.sh --selftest [prove args]
#                                    the compat runner's self-tests
#                                    (default: t/compat/selftest/)
#
# Test runner choice: the real Test::Nginx::Socket::Lua (openresty's
# test-nginx) whenever perl can load it; otherwise the small compatible
# runner in t/compat/.  Force one with CKV_TEST_RUNNER=real|compat.
# t/lib is always on @INC (project test helpers).  prove's exit code is
# passed through.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2

selftest=0
if [ "${1:-}" = "--selftest" ]; then
    selftest=1
    shift
fi

# Debian keeps nginx in /usr/sbin, which is not on every user's PATH.
for d in /usr/local/openresty/nginx/sbin /usr/sbin; do
    case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$PATH:$d" ;; esac
done
export PATH

runner="${CKV_TEST_RUNNER:-auto}"
if [ "$runner" = auto ]; then
    if perl -MTest::Nginx::Socket::Lua -e1 >/dev/null 2>&1; then
        runner=real
    else
        runner=compat
    fi
fi

inc=(-I t/lib)
case "$runner" in
    real)
        where=$(perl -MTest::Nginx::Socket::Lua \
                     -e 'print $INC{"Test/Nginx/Socket/Lua.pm"}' 2>/dev/null)
        if [ -z "$where" ]; then
            echo "prove.sh: CKV_TEST_RUNNER=real but perl cannot load" \
                 "Test::Nginx::Socket::Lua (set PERL5LIB?)" >&2
            exit 2
        fi
        echo "prove.sh: using the real Test::Nginx::Socket::Lua ($where)"
        ;;
    compat)
        inc+=(-I t/compat)
        echo "prove.sh: using the compat runner (t/compat/Test/Nginx/Socket/Lua.pm)"
        ;;
    *)
        echo "prove.sh: CKV_TEST_RUNNER must be real, compat or auto" >&2
        exit 2
        ;;
esac

if [ $# -eq 0 ]; then
    if [ $selftest -eq 1 ]; then
        set -- t/compat/selftest
    else
        mapfile -t tests < <(find t -name '*.t' -not -path 't/compat/*' | sort)
        if [ ${#tests[@]} -eq 0 ]; then
            echo "prove.sh: no tests found under t/"
            exit 0
        fi
        set -- "${tests[@]}"
    fi
fi

# the self-tests that drive prove themselves need to know the runner
export CKV_TEST_RUNNER="$runner"

exec prove "${inc[@]}" -r "$@"
