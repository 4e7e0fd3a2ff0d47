#!/bin/bash
# QEMU's nfs:// driver on the gateway (it always finds MOUNT and NFS through the portmapper on
# port 111 of the URL's host, the gateway's own): qemu-img create|info|check|resize|convert|
# compare, raw and qcow2; qemu-io pattern writes and reads above 4 GiB.
NFS_HOST=127.0.0.62
source "$(dirname "$0")/nfslib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
nfs_up
U=$NFS_URL_PM

# qiof FMT URL CMD...: qemu-io commands on an image of format FMT; any failure or pattern
# mismatch fails the test.
qiof() {
	local fmt=$1 url=$2 out
	shift 2
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	if ! out=$(qemu-io -f "$fmt" "${args[@]}" "$url" 2>&1); then
		echo "$out"
		die "qemu-io failed on $url: $*"
	fi
	if grep -qiE 'fail|error|mismatch' <<<"$out"; then
		echo "$out"
		die "qemu-io reported an error on $url: $*"
	fi
}

# info_field URL KEY: a key of qemu-img info --output=json.
info_field() {
	qemu-img info --output=json "$1" | json_get "['$2']" || die "qemu-img info $1 failed"
}

log "the portmapper on $NFS_HOST:111 lists portmap, MOUNT and NFS"
python3 "$HERE/nfs_hostile.py" --host "$NFS_HOST" pmap-dump || die "portmapper DUMP"
nfs-ls "$U" >/dev/null || die "nfs-ls through the portmapper failed"

log "raw: create, info, write/read above 4 GiB, resize"
qemu-img create -q -f raw "$U/disk.raw" 6G || die "qemu-img create raw"
[ "$(info_field "$U/disk.raw" virtual-size)" = $((6 << 30)) ] || die "raw virtual size"
[ "$(info_field "$U/disk.raw" format)" = raw ] || die "raw format"
qiof raw "$U/disk.raw" 'write -P 0xab 5G 1M' 'read -P 0xab 5G 1M'
qiof raw "$U/disk.raw" 'write -P 0x5a 4095M 2M' 'read -P 0x5a 4095M 2M' # across 4 GiB
qiof raw "$U/disk.raw" 'write -P 0x01 0 64k'
# A new connection sees the data; the bytes around it are still holes (zeros).
qiof raw "$U/disk.raw" 'read -P 0xab 5G 1M' 'read -P 0x5a 4095M 2M' 'read -P 0 4094M 1M' \
	'read -P 0 5121M 1M' 'read -P 0x01 0 64k' 'read -P 0 64k 64k'
# The check itself can fail: a wrong pattern is reported.
if out=$(qemu-io -f raw -c 'read -P 0xac 5G 4k' "$U/disk.raw" 2>&1) && ! grep -qi 'mismatch' <<<"$out"; then
	die "qemu-io did not notice a wrong pattern: $out"
fi
qemu-img resize -q -f raw "$U/disk.raw" 7G || die "qemu-img resize raw"
[ "$(info_field "$U/disk.raw" virtual-size)" = $((7 << 30)) ] || die "raw size after resize"
qiof raw "$U/disk.raw" 'read -P 0xab 5G 1M' 'read -P 0 6G 1M' 'write -P 0x7e 7167M 1M' \
	'read -P 0x7e 7167M 1M'

log "qcow2: create, info, check, write/read above 4 GiB, resize"
qemu-img create -q -f qcow2 "$U/disk.qcow2" 8G || die "qemu-img create qcow2"
[ "$(info_field "$U/disk.qcow2" format)" = qcow2 ] || die "qcow2 format"
[ "$(info_field "$U/disk.qcow2" virtual-size)" = $((8 << 30)) ] || die "qcow2 virtual size"
qemu-img check -q "$U/disk.qcow2" || die "qemu-img check of a new qcow2"
qiof qcow2 "$U/disk.qcow2" 'write -P 0xcd 5G 1M' 'read -P 0xcd 5G 1M' 'write -P 0xce 0 4M'
qiof qcow2 "$U/disk.qcow2" 'read -P 0xcd 5G 1M' 'read -P 0xce 0 4M' 'read -P 0 4M 1M'
qemu-img check -q "$U/disk.qcow2" || die "qemu-img check after writes"
qemu-img resize -q "$U/disk.qcow2" 10G || die "qemu-img resize qcow2"
[ "$(info_field "$U/disk.qcow2" virtual-size)" = $((10 << 30)) ] || die "qcow2 size after resize"
qiof qcow2 "$U/disk.qcow2" 'write -P 0xcf 9G 1M' 'read -P 0xcf 9G 1M' 'read -P 0xcd 5G 1M'
qemu-img check -q "$U/disk.qcow2" || die "qemu-img check after resize"

log "convert and compare"
random_file "$WORK/src.raw" $((64 << 20))
qemu-img convert -f raw -O qcow2 "$WORK/src.raw" "$U/conv.qcow2" || die "convert local raw -> nfs qcow2"
qemu-img compare -q -f raw -F qcow2 "$WORK/src.raw" "$U/conv.qcow2" || die "compare src.raw conv.qcow2"
qemu-img convert -f qcow2 -O raw "$U/conv.qcow2" "$U/conv.raw" || die "convert nfs qcow2 -> nfs raw"
qemu-img compare -q -f raw -F raw "$WORK/src.raw" "$U/conv.raw" || die "compare src.raw conv.raw"
qemu-img convert -f raw -O raw "$U/conv.raw" "$WORK/back.raw" || die "convert nfs raw -> local raw"
cmp "$WORK/src.raw" "$WORK/back.raw" || die "round trip through the export differs"
qemu-img check -q "$U/conv.qcow2" || die "qemu-img check of the converted qcow2"
# compare must also be able to fail: one byte changed on the export.
qiof raw "$U/conv.raw" 'write -P 0x00 12345k 512'
printf '\377' | dd of="$WORK/src.raw" bs=1 seek=$((12345 * 1024)) conv=notrunc status=none
rc=0
qemu-img compare -q -f raw -F raw "$WORK/src.raw" "$U/conv.raw" || rc=$?
[ $rc = 1 ] || die "qemu-img compare of differing images exited $rc, want 1"
qemu-img compare -q -f qcow2 -F raw "$U/disk.qcow2" "$U/disk.raw" && die "different images compare equal"

log "qemu-img bench: 16384 pipelined 4k writes at queue depth 32, then reads"
qemu-img create -q -f raw "$U/bench.raw" 1G || die "qemu-img create bench.raw"
qemu-img bench -q -f raw -t none -w -c 16384 -d 32 -s 4k -S 64k --pattern=0x3c "$U/bench.raw" ||
	die "qemu-img bench -w failed"
qemu-img bench -q -f raw -t none -c 16384 -d 32 -s 4k -S 64k "$U/bench.raw" ||
	die "qemu-img bench (read) failed"
checks=()
for i in $(seq 0 97 16383); do
	checks+=("read -P 0x3c $((i * 64))k 4k" "read -P 0 $((i * 64 + 4))k 60k")
done
qiof raw "$U/bench.raw" "${checks[@]}"

log "the files as the export lists them"
nfs-ls "$U" >"$WORK/ls" || die "nfs-ls failed"
for f in disk.raw disk.qcow2 conv.qcow2 conv.raw; do
	grep -qw "$f" "$WORK/ls" || die "nfs-ls does not list $f"
done
# A sparse 7 GiB raw image with a few MiB written must not use 7 GiB.
used=$("$NFS_OPS" "$NFS_URL" stat /disk.raw | sed -n 's/.* used=\([0-9]*\).*/\1/p')
[ -n "$used" ] && [ "$used" -lt $((1 << 30)) ] || die "disk.raw uses $used bytes: not sparse"
gw_alive || die "nfsgw died"
gw_check_log
log "ok"
