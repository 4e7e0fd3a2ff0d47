#!/bin/bash
# A QEMU guest (tools/guest: Debian cloud kernel + busybox, TCG) whose disk is an nfs:// URL on
# the gateway writes checksummed 4 KiB records continuously (O_DIRECT, fsync per batch) while
#  A. the gateway is killed with -9 and restarted, twice: once plainly, once after a SIGSTOP
#     has left the guest's calls unanswered on the connection;
#  B. one replica node's blockd (node3) is killed with -9, and
#  C. node3 is started again and rejoins;
# the guest must see no I/O error (no IOERROR from its writer, no kernel I/O error) and keep
# writing through all of them; then a second boot of the guest in verify mode must read back
# every record it wrote, each with the right sequence number and checksum (and so must the host).
NFS_HOST=127.0.0.91
source "$(dirname "$0")/nfslib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not installed (tools/deps.sh)"
# The guest is part of the test: no guest (e.g. no network for apt-get download) is a failure.
GUEST=$("$HERE/../../tools/guest/mkguest.sh") ||
	die "tools/guest/mkguest.sh could not build the test guest (see its message above)"
DISK=$NFS_URL_PM/guest.raw
CTL=$WORK/ctl.raw
WLOG=$WORK/guest-write.log
QEMU_PID=

# guest MODE LOG: boots the guest on the nfs:// disk (and the control disk) in the background.
# QEMU's nfs:// driver asks the portmapper on port 111 of $NFS_HOST (NFS_URL_PM).
guest() {
	log "boot the guest, blockd.mode=$1"
	: >"$2"
	qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none -no-reboot \
		-serial "file:$2" -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1 blockd.mode=$1 blockd.dirty=8" \
		-drive "file=$DISK,format=raw,if=virtio,cache=none" \
		-drive "file=$CTL,format=raw,if=virtio,cache=none" </dev/null >"$2.qemu" 2>&1 &
	QEMU_PID=$!
}

guest_cleanup() {
	local rc=$?
	# Under set -e the "(exit $rc)" below (and nfs_cleanup's own) would end this trap early and
	# leave the cluster running.
	set +e
	[ -z "$QEMU_PID" ] || kill -9 "$QEMU_PID" 2>/dev/null || true
	if [ $rc -ne 0 ]; then
		for f in "$WORK"/guest-*.log "$WORK"/guest-*.log.qemu; do
			[ -f "$f" ] || continue
			echo "--- tail of $f"
			tail -n 20 "$f" | tr -d '\r'
		done
	fi
	(exit $rc)
	nfs_cleanup
}
trap guest_cleanup EXIT

# The guest's own I/O error reports, and the kernel's (printed even with quiet: KERN_ERR).
io_errors() { grep -saE 'IOERROR|I/O error|blk_update_request|Buffer I/O' "$1" || true; }

# The last "seq N ok" of the write run (0 before the first).
last_seq() { [ -f "$WLOG" ] || { echo 0; return; }; tr -d '\r' <"$WLOG" | awk '/^seq [0-9]+ ok$/ {s = $2} END {print s + 0}'; }

# wait_seq N WHAT: until the guest reports N records durable, within 90 s.
wait_seq() {
	local start=$SECONDS s
	while :; do
		s=$(last_seq)
		[ "$s" -lt "$1" ] || return 0
		[ -z "$(io_errors "$WLOG")" ] || die "the guest saw an I/O error $2: $(io_errors "$WLOG")"
		kill -0 "$QEMU_PID" 2>/dev/null || die "QEMU exited $2: $(tail -n 3 "$WLOG.qemu")"
		[ $((SECONDS - start)) -lt 90 ] || die "the guest is stuck at record $s $2 (wanted $1)"
		sleep 0.2
	done
}

# Every replica of every file volume (nfs-*) is up and in sync, as blockctl sees them.
replicas_in_sync() {
	"$BLOCKCTL" volume ls --json | python3 -c '
import json, sys
vols = [v for v in json.load(sys.stdin) if v["name"].startswith("nfs-")]
sys.exit(0 if vols and all(m["up"] and m["in_sync"] for v in vols for m in v["members"]) else 1)'
}

nfs_up --replicas 3
qemu-img create -q -f raw "$DISK" 256M || die "qemu-img create $DISK"
truncate -s 1M "$CTL"

t0=$SECONDS
guest write "$WLOG"
wait_seq 96 "before the first kill"
log "guest writing after $((SECONDS - t0)) s: $(last_seq) records"

# gw_outage HOW: kills the gateway with -9 while the guest writes, checks that the outage held
# the guest's I/O up (with no gateway it cannot complete a batch; one answered just before the
# kill may still be reported) with no error, restarts the gateway and waits for 96 more records.
#   idle:     a plain kill -9 (the guest is most likely between writes: its next call meets a
#             dead connection);
#   inflight: SIGSTOP first and wait until the guest is blocked, so that its WRITE/COMMIT calls
#             are sent and never answered when the gateway dies: libnfs must send them again.
gw_outage() {
	local s d
	s=$(last_seq)
	if [ "$1" = inflight ]; then
		kill -STOP "$GW_PID"
		sleep 2
		log "gateway stopped at record $s; the guest is at $(last_seq)"
	fi
	gw_kill9
	sleep 2
	d=$(last_seq)
	[ "$d" -le $((s + 16)) ] || die "the guest went on from record $s to $d with no gateway"
	[ -z "$(io_errors "$WLOG")" ] ||
		die "the guest saw an I/O error with the gateway down: $(io_errors "$WLOG")"
	log "the guest waits at record $d for the gateway"
	gw_start
	gw_wait
	s=$(last_seq)
	log "gateway back; the guest is at record $s"
	wait_seq $((s + 96)) "after the gateway restart ($1)"
	log "A: the guest writes on: $(last_seq) records"
}

log "A: kill -9 the gateway under the guest's writes"
gw_outage idle
log "A: kill -9 the gateway with the guest's calls in flight"
gw_outage inflight

log "B: kill -9 node3 (pid $(node_pid node3)) under the guest's writes"
s=$(last_seq)
kill -9 "$(node_pid node3)"
! replicas_in_sync || die "blockctl still shows every replica up and in sync with node3 killed"
wait_seq $((s + 96)) "with node3 down"
gw_alive || die "nfsgw died with node3 down"
log "B: the guest writes on: $(last_seq) records"

log "C: node3 comes back under the guest's writes"
s=$(last_seq)
"$BLOCKCTL" cluster up --dir "$CLUSTER" >/dev/null
wait_seq $((s + 96)) "while node3 rejoins"
log "C: the guest writes on: $(last_seq) records"

log "stop the writer through the control disk"
printf STOP | dd of="$CTL" conv=notrunc,fsync status=none
for _ in $(seq 600); do
	kill -0 "$QEMU_PID" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$QEMU_PID" 2>/dev/null && die "the guest did not stop 60 s after STOP"
wait "$QEMU_PID" || die "QEMU exited with status $?: $(tail -n 3 "$WLOG.qemu")"
QEMU_PID=
[ -z "$(io_errors "$WLOG")" ] || die "the guest saw an I/O error: $(io_errors "$WLOG")"
written=$(grep -ao '^WRITE DONE [0-9]*' "$WLOG" | awk '{print $3}')
[ -n "$written" ] || die "the writer did not finish: $(tail -n 3 "$WLOG" | tr -d '\r')"
log "the guest wrote $written records in $((SECONDS - t0)) s with no I/O error"

# The file volumes' replicas on node3 catch up (what the guest wrote while node3 was down).
log "wait until node3's replicas of the file volumes are in sync"
start=$SECONDS
until replicas_in_sync; do
	[ $((SECONDS - start)) -lt 60 ] || {
		"$BLOCKCTL" volume ls
		die "node3's replicas are not in sync 60 s after it came back"
	}
	sleep 0.5
done
log "in sync after $((SECONDS - start)) s"

VLOG=$WORK/guest-verify.log
guest verify "$VLOG"
for _ in $(seq 1200); do
	kill -0 "$QEMU_PID" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$QEMU_PID" 2>/dev/null && die "the verify boot did not finish in 120 s"
wait "$QEMU_PID" || die "QEMU (verify) exited with status $?"
QEMU_PID=
grep -aq "^VERIFY OK $written\b" "$VLOG" ||
	die "the guest's records do not verify: $(grep -a 'VERIFY' "$VLOG" | tr -d '\r') (wrote $written)"
[ -z "$(io_errors "$VLOG")" ] || die "I/O error while verifying: $(io_errors "$VLOG")"
log "VERIFY OK $written"

log "the host checks the records too (nfs-cat, another client)"
# Independent of the guest's verifier: the same layout checked in Python (tools/guest/README.md).
nfs-cat "$(nfs_url /guest.raw)" | python3 -c '
import hashlib, sys
n = int(sys.argv[1])
f = sys.stdin.buffer
for i in range(n + 1):
    r = f.read(4096)
    if i == n:
        if len(r) != 4096 or r.startswith(b"BLOCKDREC "):
            sys.exit("a record after the last one written")
        # Read to the end: nfs-cat must not die of SIGPIPE (pipefail), and must exit 0.
        while f.read(1 << 20):
            pass
        sys.exit(0)
    if len(r) != 4096 or r[63:64] != b"\n":
        sys.exit("record %d: short or malformed" % i)
    h = r[:63].split()
    if h[:2] != [b"BLOCKDREC", str(i).encode()] or h[2].decode() != hashlib.md5(r[64:]).hexdigest():
        sys.exit("record %d: bad header or checksum" % i)
' "$written" || die "the records read through nfs-cat do not verify"
gw_alive || die "nfsgw died"
gw_check_log
log "ok ($((SECONDS - t0)) s with the guest)"
