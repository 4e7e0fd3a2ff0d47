#!/bin/bash
# Hostile input on raw TCP to the gateway's NFS (2049), MOUNT (20048) and portmapper (111)
# ports (tests/e2e/nfs_hostile.py): oversize record marks, bad XDR lengths, unknown programs,
# versions and procedures (accept_stat checked), bad auth, garbage, many pipelined calls then
# close. After each case the process is alive and a fresh client is served; at the end the
# gateway exits cleanly on SIGTERM with no leak or error report under ASan.
NFS_HOST=127.0.0.64
source "$(dirname "$0")/nfslib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
GW_ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
GW_NOFILE=512 # the many-connections case runs it out of descriptors
nfs_up --replicas 2

ops write /hostile.dat 0 $((4 << 20)) 0x44
failed=()
for c in $(python3 "$HERE/nfs_hostile.py" --host "$NFS_HOST" list); do
	log "case $c"
	if ! timeout 150 python3 "$HERE/nfs_hostile.py" --host "$NFS_HOST" --export "$EXPORT" "$c"; then
		failed+=("$c")
	fi
	gw_alive || die "nfsgw died during case $c"
	timeout 30 nfs-ls "$NFS_URL" >/dev/null || die "nfs-ls fails after case $c"
done
[ ${#failed[@]} -eq 0 ] || die "hostile cases failed: ${failed[*]}"
# The data survived everything above.
ops check /hostile.dat 0 $((4 << 20)) 0x44

log "clean exit under ASan"
gw_stop
gw_check_log
log "ok"
