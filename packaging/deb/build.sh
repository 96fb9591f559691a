#!/usr/bin/env bash
# Builds the Debian package of inetboot from the single executable:
#   packaging/deb/build.sh [--binary PATH] [--version V] [--out DIR]
# (npm run build:deb). Defaults: dist/inetboot-linux-x64 (npm run build:sea), the version in
# package.json (an npm pre-release 1.2.0-rc.1 becomes 1.2.0~rc.1, which sorts before 1.2.0),
# dist/. Writes DIR/inetboot_V_ARCH.deb, ARCH from the binary's ELF header (amd64, arm64).
# Needs only dpkg-deb (package dpkg) and coreutils. The package's Maintainer field comes from
# $DEB_MAINTAINER when set; file dates from $SOURCE_DATE_EPOCH (default: the last commit's).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="$root/dist/inetboot-linux-x64"
version=""
out="$root/dist"

usage() {
  echo "usage: $0 [--binary PATH] [--version V] [--out DIR]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
  --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
  --version) version="${2:?--version needs a version}"; shift 2 ;;
  --out) out="${2:?--out needs a folder}"; shift 2 ;;
  -h | --help) usage ;;
  *) echo "$0: unknown argument '$1'" >&2; usage ;;
  esac
done

if [ ! -f "$binary" ]; then
  echo "$0: no executable at $binary (build it with: npm run build:sea)" >&2
  exit 1
fi
if [ -z "$version" ]; then
  version="$(sed -n 's/^  "version": "\([^"]*\)",$/\1/p' "$root/package.json")"
  version="${version/-/\~}"
fi
if ! [[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
  echo "$0: '$version' is not a Debian version (expected e.g. 0.1.0 or 0.2.0~rc.1)" >&2
  exit 1
fi

# The architecture from the ELF header: class 64-bit, little-endian, e_machine at offset 18.
machine="$(od -An -tu2 -j18 -N2 "$binary" | tr -d ' ')"
case "$(head -c4 "$binary" | od -An -c | tr -d ' ')$machine" in
'177ELF62') arch=amd64 suggests="qemu-system-x86, ovmf, shim-signed, grub-efi-amd64-signed" ;;
'177ELF183') arch=arm64 suggests="qemu-system-arm, qemu-efi-aarch64, shim-signed, grub-efi-arm64-signed" ;;
*) echo "$0: $binary is not an x86-64 or arm64 Linux executable" >&2; exit 1 ;;
esac

epoch="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pkg="$work/inetboot"

install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/etc/inetboot" \
  "$pkg/usr/lib/systemd/system" "$pkg/usr/share/doc/inetboot" "$pkg/usr/share/inetboot"
# Not stripped: the program is a resource inside the executable.
install -m 0755 "$binary" "$pkg/usr/bin/inetboot"
# The unit is the one `inetboot init --systemd` installs (src/cli/systemd-unit.ts), printed by
# the checkout's CLI (the binary may be for another architecture).
"$root/node_modules/.bin/node" "$root/bin/inetboot.js" init --print-unit --user inetboot \
  --exec /usr/bin/inetboot --config /etc/inetboot/serve.yaml >"$work/inetboot.service"
install -m 0644 "$work/inetboot.service" "$pkg/usr/lib/systemd/system/inetboot.service"
install -m 0644 "$here/serve.yaml" "$pkg/etc/inetboot/serve.yaml"
# The file as shipped: `inetboot init` replaces an unedited /etc/inetboot/serve.yaml without --force.
install -m 0644 "$here/serve.yaml" "$pkg/usr/share/inetboot/serve.yaml"
install -m 0644 "$here/copyright" "$pkg/usr/share/doc/inetboot/copyright"
for doc in README.md docs/serve.md docs/install.md docs/format.md; do
  if [ -f "$root/$doc" ]; then
    install -m 0644 "$root/$doc" "$pkg/usr/share/doc/inetboot/$(basename "$doc")"
  fi
done
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$pkg/DEBIAN/$script"
done
echo /etc/inetboot/serve.yaml >"$pkg/DEBIAN/conffiles"
chmod 0644 "$pkg/DEBIAN/conffiles"

size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
  -e "s|@SUGGESTS@|$suggests|" \
  -e "s|@MAINTAINER@|${DEB_MAINTAINER:-inetboot maintainers <maintainers@inetboot.invalid>}|" \
  "$here/control.in" >"$pkg/DEBIAN/control"
(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z |
  xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"
find "$pkg" -exec touch --no-dereference --date="@$epoch" {} +

# zstd -9: the ~120 MB executable packs in 2 s into ~37 MB (zstd -3: 1 s, 41 MB; gzip: 14 s,
# 43 MB; xz -6: 35 s, 29 MB) and unpacks in 0.3 s (xz: 1.5 s). dpkg reads zstd from 1.21.18
# (Debian 12, Ubuntu 21.10); DEB_COMPRESSION=xz (or gzip) builds for older systems.
if [ -n "${DEB_COMPRESSION:-}" ]; then
  compression=(-Z"$DEB_COMPRESSION")
else
  compression=(-Zzstd -z9)
fi
mkdir -p "$out"
deb="$out/inetboot_${version}_${arch}.deb"
SOURCE_DATE_EPOCH="$epoch" dpkg-deb --root-owner-group "${compression[@]}" \
  --build "$pkg" "$deb" >/dev/null
echo "$deb"
