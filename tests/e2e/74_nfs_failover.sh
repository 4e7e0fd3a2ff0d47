#!/bin/bash
# Failover under a verified continuous write load over NFS (tests/tools/nfs_load: every write
# it got a success reply for must read back afterwards, on a new connection):
#  A. the gateway is killed with -9 and restarted with the same config: the client reconnects
#     (it may see the dropped connection) and loses no acknowledged write; the data also
#     survives a second kill -9 with no load; QEMU's nfs:// driver (qemu-io) writing through
#     a kill -9 sees no error and its data verifies; handles stay valid across restarts and
#     a clean restart keeps the write verifier;
#  B. one replica node's blockd is killed with -9 (files have 3 replicas): the gateway keeps
#     serving the same connection (no error, no reconnect) and loses nothing; the node comes
#     back.
NFS_HOST=127.0.0.65
source "$(dirname "$0")/nfslib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
probe() { python3 "$HERE/nfs_hostile.py" --host "$NFS_HOST" "$@"; }
nfs_up --replicas 3
REGION=$((32 << 20))
ops create /verf.dat
fh=$(probe lookup-fh --path "$EXPORT" --name verf.dat) || die "LOOKUP of verf.dat"

# wait_progress LOG: polls until nfs_load has reported progress (5 s of writes).
wait_progress() {
	local start=$SECONDS
	until grep -qs '^nfs_load: [0-9]*s writes=' "$1"; do
		[ $((SECONDS - start)) -lt 60 ] || {
			cat "$1"
			die "the load made no progress in 60 s"
		}
		kill -0 "$2" 2>/dev/null || {
			cat "$1"
			die "the load exited early"
		}
		sleep 0.2
	done
}

# finish PID LOG: the load must exit 0 with no mismatch; prints its summary.
finish() {
	local rc=0
	wait "$1" || rc=$?
	cat "$2"
	[ $rc -eq 0 ] || die "the load saw an unrecovered error or lost an acknowledged write (exit $rc)"
	grep -q ' mismatches=0$' "$2" || die "the load did not verify"
	grep -q 'verified=[1-9]' "$2" || die "the load verified nothing"
}

log "A: kill -9 of the gateway under load"
"$NFS_LOAD" --url "$(nfs_url /load-a.img)" --seconds 30 --region $REGION --timeout 120 \
	--state "$WORK/state-a" >"$WORK/load-a.log" 2>&1 &
load=$!
wait_progress "$WORK/load-a.log" $load
gw_kill9
gw_start
gw_wait
finish $load "$WORK/load-a.log"
grep -q ' reconnects=[1-9]' "$WORK/load-a.log" || die "the load never saw the gateway die"
# One kill, one reconnect: a second one means a call failed on the new connection too (an
# error reply from the restarted gateway, which a guest would see as an I/O error).
grep -q 'reconnects=1 errors=0' "$WORK/load-a.log" || die "more than one reconnect for one kill"

log "A: the acknowledged data survives another kill -9 (no load)"
gw_kill9
gw_start
gw_wait
"$NFS_LOAD" --url "$(nfs_url /load-a.img)" --verify-only --state "$WORK/state-a" \
	>"$WORK/verify-a.log" 2>&1 || {
	cat "$WORK/verify-a.log"

log "A: QEMU's nfs:// driver (qemu-io) writing through a gateway kill -9"
# 1500 pattern writes of 64 KiB, 5 ms apart: the gateway dies a few hundred writes in.
qemu-img create -q -f raw "$NFS_URL_PM/qemu.raw" 1G || die "qemu-img create"
writes=() reads=()
for i in $(seq 0 1499); do
	writes+=(-c "write -P $((i % 250 + 1)) $((i * 64))k 64k" -c "sleep 5")
	reads+=("read -P $((i % 250 + 1)) $((i * 64))k 64k")
done
qemu-io -f raw "${writes[@]}" "$NFS_URL_PM/qemu.raw" >"$WORK/qio.log" 2>&1 &
qio_pid=$!
start=$SECONDS
until [ "$(grep -cs '^wrote' "$WORK/qio.log")" -ge 300 ]; do
	kill -0 $qio_pid 2>/dev/null || die "qemu-io exited early: $(tail -3 "$WORK/qio.log")"
	[ $((SECONDS - start)) -lt 60 ] || die "qemu-io made no progress"
	sleep 0.1
done
gw_kill9
gw_start
gw_wait
wait $qio_pid || die "qemu-io failed across the gateway restart: $(grep -iE 'fail|error' "$WORK/qio.log" | head -3)"
! grep -qiE 'fail|error' "$WORK/qio.log" || die "qemu-io saw: $(grep -iE 'fail|error' "$WORK/qio.log" | head -3)"
[ "$(grep -c '^wrote' "$WORK/qio.log")" = 1500 ] || die "qemu-io did not complete its 1500 writes"
qio "$NFS_URL_PM/qemu.raw" "${reads[@]}"

log "A: handles stay valid across restarts; a clean restart keeps the write verifier"
st=$(probe getattr-status --fh "$fh")
[ "$st" = 0 ] || die "GETATTR with a handle from before two kill -9 restarts: nfsstat3 $st"
v1=$(probe write-verf --fh "$fh") || die "WRITE/COMMIT verifier"
gw_stop
gw_start
gw_wait
v2=$(probe write-verf --fh "$fh") || die "WRITE/COMMIT verifier after the restart"
[ "$v1" = "$v2" ] || die "the write verifier changed across a clean restart ($v1 -> $v2)"
	die "verify after restart failed"
}
cat "$WORK/verify-a.log"

log "A: QEMU's nfs:// driver (qemu-io) writing through a gateway kill -9"
# 1500 pattern writes of 64 KiB, 5 ms apart: the gateway dies a few hundred writes in.
qemu-img create -q -f raw "$NFS_URL_PM/qemu.raw" 1G || die "qemu-img create"
writes=() reads=()
for i in $(seq 0 1499); do
	writes+=(-c "write -P $((i % 250 + 1)) $((i * 64))k 64k" -c "sleep 5")
	reads+=("read -P $((i % 250 + 1)) $((i * 64))k 64k")
done
qemu-io -f raw "${writes[@]}" "$NFS_URL_PM/qemu.raw" >"$WORK/qio.log" 2>&1 &
qio_pid=$!
start=$SECONDS
until [ "$(grep -cs '^wrote' "$WORK/qio.log")" -ge 300 ]; do
	kill -0 $qio_pid 2>/dev/null || die "qemu-io exited early: $(tail -3 "$WORK/qio.log")"
	[ $((SECONDS - start)) -lt 60 ] || die "qemu-io made no progress"
	sleep 0.1
done
gw_kill9
gw_start
gw_wait
wait $qio_pid || die "qemu-io failed across the gateway restart: $(grep -iE 'fail|error' "$WORK/qio.log" | head -3)"
! grep -qiE 'fail|error' "$WORK/qio.log" || die "qemu-io saw: $(grep -iE 'fail|error' "$WORK/qio.log" | head -3)"
[ "$(grep -c '^wrote' "$WORK/qio.log")" = 1500 ] || die "qemu-io did not complete its 1500 writes"
qio "$NFS_URL_PM/qemu.raw" "${reads[@]}"

log "A: handles stay valid across restarts; a clean restart keeps the write verifier"
st=$(probe getattr-status --fh "$fh")
[ "$st" = 0 ] || die "GETATTR with a handle from before two kill -9 restarts: nfsstat3 $st"
v1=$(probe write-verf --fh "$fh") || die "WRITE/COMMIT verifier"
gw_stop
gw_start
gw_wait
v2=$(probe write-verf --fh "$fh") || die "WRITE/COMMIT verifier after the restart"
[ "$v1" = "$v2" ] || die "the write verifier changed across a clean restart ($v1 -> $v2)"

log "B: kill -9 of one replica node under load"
# A file whose volume exists before the node dies. (A NEW file's first write needs a new
# 3-replica volume, which cannot be placed on 2 nodes: NFS3ERR_NOSPC, by filevol's contract.)
ops write /while-down 0 $((1 << 20)) 0x3c
"$NFS_LOAD" --url "$(nfs_url /load-b.img)" --seconds 30 --region $REGION --timeout 120 \
	--state "$WORK/state-b" >"$WORK/load-b.log" 2>&1 &
load=$!
wait_progress "$WORK/load-b.log" $load
log "kill -9 node3 (pid $(node_pid node3))"
kill -9 "$(node_pid node3)"
# While the node is down: the gateway still serves new clients too.
timeout 60 nfs-ls "$NFS_URL" >/dev/null || die "nfs-ls fails with node3 down"
"$NFS_OPS" "$NFS_URL" write /while-down 0 $((1 << 20)) 0x3d || die "a write with node3 down"
"$NFS_OPS" "$NFS_URL" check /while-down 0 $((1 << 20)) 0x3d || die "read back with node3 down"
gw_alive || die "nfsgw died with node3 down"
finish $load "$WORK/load-b.log"
grep -q ' reconnects=0 ' "$WORK/load-b.log" || die "the gateway dropped the client's connection when a replica node died"
"$NFS_LOAD" --url "$(nfs_url /load-a.img)" --verify-only --state "$WORK/state-a" \
	>"$WORK/verify-a2.log" 2>&1 || {
	cat "$WORK/verify-a2.log"
	die "phase A's file does not verify with node3 down"
}

log "restart node3"
"$BLOCKCTL" cluster up --dir "$CLUSTER" >/dev/null
"$NFS_LOAD" --url "$(nfs_url /load-b.img)" --verify-only --state "$WORK/state-b" \
	>"$WORK/verify-b.log" 2>&1 || {
	cat "$WORK/verify-b.log"
	die "verify after node3 came back failed"
}
cat "$WORK/verify-b.log"

log "the operator looks at the file volumes' replicas: the gateway keeps serving them"
"$BLOCKCTL" volume ls
vols=$("$BLOCKCTL" volume ls --json | python3 -c '
import json,sys
print(" ".join(x["name"] for x in json.load(sys.stdin) if x["name"].startswith("nfs-")))')
[ -n "$vols" ] || die "no nfs-* volumes in blockctl volume ls"
for v in $vols; do
	"$BLOCKCTL" replica ls "$v" || die "blockctl replica ls $v failed"
done
"$NFS_LOAD" --url "$(nfs_url /load-b.img)" --verify-only --state "$WORK/state-b" --timeout 30 \
	>"$WORK/verify-b2.log" 2>&1 || {
	cat "$WORK/verify-b2.log"
	die "the gateway no longer serves its files after 'blockctl replica ls' of their volumes"
}
timeout 60 "$NFS_OPS" "$NFS_URL" write /load-b.img 0 4096 0x01 ||
	die "a write after 'blockctl replica ls' of the file volumes failed"
gw_alive || die "nfsgw died"
gw_check_log
log "ok"
