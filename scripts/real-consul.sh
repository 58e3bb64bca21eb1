#!/usr/bin/env bash
# Builds a real `consul` binary from its published Go module and prints its path.
#
#   bash scripts/real-consul.sh            # prints e.g. /root/.cache/ckv/consul-1.14.11/consul
#
# Version: Consul 1.14.11, the newest release that is still MPL-2.0 (1.17 moved to
# the BSL) and that needs neither the `envoyextensions` nor the `troubleshoot`
# sub-module (1.15 does). The script checks the LICENSE inside the module.
#
# Why not `go install github.com/hashicorp/consul@v1.14.11`: Consul's go.mod
# `replace`s its own sub-modules (api, sdk, proto-public) with local folders, and
# `go install pkg@version` refuses any module with replace directives. So the
# module is downloaded, copied to a temporary folder, its three replace lines are
# dropped (the require lines already name the published versions) and it is
# built there with CGO_ENABLED=0 and -trimpath. GOFLAGS/GOPROXY stay as the
# machine has them.
#
# The binary is cached in ${XDG_CACHE_HOME:-~/.cache}/ckv/consul-<version>/ and
# reused while `consul version` reports the expected version.
#
# Measured on the 2-core project machine with an empty GOMODCACHE and GOCACHE
# (load average 11: six other helpers were compiling at the same time):
#   first build 7 min 22 s wall (262 s user CPU), peak RSS 1.9 GiB;
#   download 295 MiB of module zips (2.1 GiB unpacked in GOMODCACHE, plus
#   1.5 GiB of GOCACHE); the binary is 152 MiB.
#   A cached run only asks the binary its version: well under 1 s.
#
# Exit status: 0 with the path on stdout; 2 when Go is missing; 1 on other failures.
set -euo pipefail

version=${CKV_CONSUL_VERSION:-1.14.11}
cache_dir=${CKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ckv}/consul-$version
bin=$cache_dir/consul

say() { printf 'real-consul: %s\n' "$*" >&2; }

first_line() { local out; out=$("$1" version 2>/dev/null) || return 1; echo "${out%%$'\n'*}"; }

if [ -x "$bin" ] && [ "$(first_line "$bin")" = "Consul v$version" ]; then
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    say "Go is not installed: cannot build Consul $version (install Go >= 1.20)"
    exit 2
fi

module=github.com/hashicorp/consul
say "building Consul $version from the Go module proxy (first run only)"
t0=$SECONDS
src=$(go mod download -json "$module@v$version" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))')

# Licence check: the build only goes ahead on an MPL-2.0 tree.
if ! head -n 5 "$src/LICENSE" | grep -q 'Mozilla Public License'; then
    say "$module@v$version is not MPL-2.0 (see $src/LICENSE); refusing to build"
    exit 1
fi
if grep -q -i 'Business Source License' "$src/LICENSE"; then
    say "$module@v$version carries the Business Source License; refusing to build"
    exit 1
fi

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$src/." "$work/consul"
chmod -R u+w "$work/consul"
cd "$work/consul"

for sub in api sdk proto-public; do
    go mod edit -dropreplace "$module/$sub"
done
if grep -qE '^(replace )?[[:space:]]*github.com/hashicorp/consul/(envoyextensions|troubleshoot)' go.mod; then
    say "go.mod of $version needs envoyextensions/troubleshoot; pick an older 1.14.x"
    exit 1
fi

mkdir -p "$cache_dir"
# -mod=mod lets go add the go.sum lines of the published sub-modules.
CGO_ENABLED=0 go build -mod=mod -trimpath -o "$cache_dir/consul.partial" . >&2
mv -f "$cache_dir/consul.partial" "$bin"
first_line "$bin" >&2
say "built in $((SECONDS - t0)) s: $bin"
echo "$bin"
