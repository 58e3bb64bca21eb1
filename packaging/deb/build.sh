#!/usr/bin/env bash
# make deb: packs what `make lib GLIBC_FLOOR=2.28` left in target/dist into
# target/dist/ckv_<version>-1_amd64.deb, laid out in Debian's paths, with
# dpkg-deb (no debhelper needed). The debug file is not packed.
#   packaging/deb/build.sh <version>
set -euo pipefail
cd "$(dirname "$0")/../.."
version=${1:?version}
deb_version=$version-1
multiarch=x86_64-linux-gnu
stage=target/dist/deb-root
out=target/dist/ckv_${deb_version}_amd64.deb

rm -rf "$stage"
make -s install DESTDIR="$PWD/$stage" PREFIX=/usr LIBDIR=/usr/lib/$multiarch \
    LUA_LIB_DIR=/usr/share/lua/5.1 LUA_CDIR=/usr/lib/$multiarch/lua/5.1 INSTALL_DEBUG=no
install -d "$stage/usr/share/doc/ckv" "$stage/DEBIAN"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: ckv"
    echo
    echo "Files: *"
    echo "License: Apache-2.0"
    echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
} >"$stage/usr/share/doc/ckv/copyright"

# The libc version the library needs is its highest GLIBC_ symbol version.
glibc=$(objdump -T "$stage/usr/lib/$multiarch/libckv.so.$version" | grep -o 'GLIBC_[0-9.]*' \
        | sed 's/GLIBC_//' | sort -uV | tail -n 1)
depends="libc6 (>= $glibc)"
if readelf -d "$stage/usr/lib/$multiarch/libckv.so.$version" | grep 'Shared library: \[libgcc_s.so.1\]' >/dev/null; then
    depends="$depends, libgcc-s1 | libgcc1"
fi
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$deb_version/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
    packaging/deb/control.in >"$stage/DEBIAN/control"
# Runs ldconfig after install/remove (what dh_makeshlibs would add).
echo "activate-noawait ldconfig" >"$stage/DEBIAN/triggers"
echo "libckv 1 ckv (>= $deb_version)" >"$stage/DEBIAN/shlibs"
chmod 644 "$stage/DEBIAN/"*
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"
