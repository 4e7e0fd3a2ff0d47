#!/bin/bash
# Builds the blockd test guest from Debian packages and prints the directory that holds it:
#   vmlinuz             the Debian cloud kernel (linux-image-<version>-cloud-amd64)
#   initramfs.cpio.gz   busybox-static, the virtio modules and tools/guest/init.sh as /init
# Usage: mkguest.sh [DIR]   (default $BLOCKD_GUEST_DIR, else $XDG_CACHE_HOME/blockd-guest, else
# /var/tmp/blockd-guest). Packages are fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`: nothing is installed on the host. A second run with the same init.sh and this
# script is a no-op (a stamp file records what was built); concurrent runs serialise on a lock.
# Exits non-zero with a message naming the cause when a package cannot be downloaded.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -n "${XDG_CACHE_HOME:-}" ]; then
	DEFAULT_DIR=$XDG_CACHE_HOME/blockd-guest
else
	DEFAULT_DIR=/var/tmp/blockd-guest
fi
DIR=${1:-${BLOCKD_GUEST_DIR:-$DEFAULT_DIR}}
# Load order matters: the package ships no modules.dep and busybox insmod resolves nothing.
# Each module's dependencies come before it (virtio_pci needs both *_dev helpers, virtio, ring).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"

die() {
	echo "mkguest: $*" >&2
	exit 1
}

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

stamp=$(cat "$HERE/init.sh" "${BASH_SOURCE[0]}" | md5sum | cut -d' ' -f1)
if [ -s "$DIR/vmlinuz" ] && [ -s "$DIR/initramfs.cpio.gz" ] &&
	[ "$(cat "$DIR/stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "$DIR"
	exit 0
fi

for t in apt-get apt-cache dpkg-deb gzip flock; do
	command -v $t >/dev/null || die "$t not found (a Debian host is needed)"
done

# The kernel version the archive currently offers: linux-image-cloud-amd64 depends on it.
kernel_pkg() {
	echo "${BLOCKD_GUEST_KERNEL:-$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}"
}

# Downloading as root into a directory the _apt user cannot write only warns; keep it quiet.
download() {
	[ -n "$kpkg" ] && (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" \
		busybox-static >"$tmp/apt.log" 2>&1)
}

tmp=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
kpkg=$(kernel_pkg)
if ! download; then
	# Stale package lists name a kernel the mirror has dropped (security updates replace it):
	# refresh them once when we may.
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq >"$tmp/update.log" 2>&1 || true
		kpkg=$(kernel_pkg)
	fi
	if ! download; then
		[ -n "$kpkg" ] || die "apt-cache knows no linux-image-cloud-amd64 (run apt-get update)"
		cat "$tmp/apt.log" >&2
		die "cannot download $kpkg and busybox-static with apt-get (no network or no mirror?)"
	fi
fi
mkdir "$tmp/pkg" "$tmp/root"
for deb in "$tmp"/*.deb; do
	dpkg-deb -x "$deb" "$tmp/pkg"
done

vmlinuz=$(ls "$tmp"/pkg/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $kpkg"
kdir=$(ls -d "$tmp"/pkg/lib/modules/*/ | head -n1)

r=$tmp/root
mkdir -p "$r"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$tmp/pkg/bin/busybox" "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$r/bin/$applet"
done
: >"$r/lib/modules/order"
for m in $MODULES; do
	ko=$(find "$kdir" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
	if [ -z "$ko" ]; then
		# Built into this kernel rather than a module: nothing to load.
		grep -q "/$m.ko" "$kdir/modules.builtin" 2>/dev/null || die "module $m not in $kpkg"
		continue
	fi
	case $ko in
	*.xz) xz -dc "$ko" >"$r/lib/modules/$m.ko" ;;
	*) cp "$ko" "$r/lib/modules/$m.ko" ;;
	esac
	echo "$m" >>"$r/lib/modules/order"
done
install -m 0755 "$HERE/init.sh" "$r/init"

# busybox's own cpio: the host needs no cpio package. Owners are root in the archive (-R).
(cd "$r" && find . | LC_ALL=C sort | "$r/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
	gzip -1 >"$tmp/initramfs.cpio.gz"
cp "$vmlinuz" "$tmp/vmlinuz"
mv -f "$tmp/vmlinuz" "$DIR/vmlinuz"
mv -f "$tmp/initramfs.cpio.gz" "$DIR/initramfs.cpio.gz"
echo "$kpkg" >"$DIR/kernel"
echo "$stamp" >"$DIR/stamp"
echo "$DIR"
