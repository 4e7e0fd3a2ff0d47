#!/bin/sh
# Installs every Debian package blockd builds, tests or benchmarks with. Idempotent.
set -e
PKGS="build-essential pkg-config liburing-dev libxxhash-dev libjansson-dev libmicrohttpd-dev
libinih-dev libcmocka-dev libsqlite3-dev libnfs-dev libnfs-utils qemu-utils qemu-system-x86
fio libnbd-bin iproute2 procps curl qemu-block-extra"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
