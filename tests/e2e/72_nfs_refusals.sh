#!/bin/bash
# Refusals: a client outside an export's list is refused at MNT and on NFS calls with a
# handle it got earlier; root squash (root over AUTH_SYS becomes 65534 and is then checked
# against mode bits), all_squash with anonuid/anongid; a read-only export refuses every
# change to an existing file and directory. Phase 1 prepares everything on rw exports; the
# gateway then restarts with the restrictive exports file (the file replaces the table).
NFS_HOST=127.0.0.63
source "$(dirname "$0")/nfslib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
probe() { python3 "$HERE/nfs_hostile.py" --host "$NFS_HOST" "$@"; }
# url EXPORT [QUERY]: a URL to another export of the gateway.
url() { echo "nfs://$NFS_HOST$1?$NFS_PORTS${2:+&$2}"; }

# expect_errno REGEX CMD...: CMD must fail with an error message matching REGEX.
expect_errno() {
	local re=$1 out
	shift
	if out=$("$@" 2>&1); then
		die "expected failure ($re): $*"
	fi
	grep -qE "$re" <<<"$out" || die "$* failed, but not with $re: $out"
}
ROFS='Read-only file system|Permission denied|ACCESS denied'
ACCES='Permission denied|Operation not permitted'

RW='127.0.0.0/8(rw,no_root_squash)'
nfs_up --exports "$EXPORT $RW
/only $RW
/sq $RW
/data $RW
/anon $RW"

log "phase 1: content on rw exports"
"$NFS_OPS" "$(url /sq)" mkdir /pub || die "mkdir /sq/pub"
"$NFS_OPS" "$(url /sq)" chmod /pub 0777 || die "chmod /sq/pub"
"$NFS_OPS" "$(url /sq)" write /secret 0 4096 0x5e || die "write /sq/secret"
"$NFS_OPS" "$(url /sq)" chmod /secret 0600 || die "chmod /sq/secret"
"$NFS_OPS" "$(url /anon)" chmod / 0777 || die "chmod /anon"
"$NFS_OPS" "$(url /data)" write /f 0 65536 0xda || die "write /data/f"
"$NFS_OPS" "$(url /data)" mkdir /dir || die "mkdir /data/dir"
[ "$(probe mnt-status --path /only)" = 0 ] || die "MNT /only refused while it is open to all"
only_fh=$(probe mnt-fh --path /only)
[ "$(probe getattr-status --fh "$only_fh")" = 0 ] || die "GETATTR of /only failed in phase 1"

log "phase 2: restart with the restrictive exports"
gw_stop
cat >"$WORK/exports" <<EOF
$EXPORT $RW
/only 127.0.0.99(rw,no_root_squash)
/sq 127.0.0.0/8(rw)
/data 127.0.0.0/8(ro,no_root_squash)
/anon 127.0.0.0/8(rw,all_squash,anonuid=1234,anongid=4321)
EOF
gw_start
gw_wait

log "a client outside the list"
st=$(probe mnt-status --path /only)
[ "$st" = 13 ] || die "MNT /only from 127.0.0.1: mountstat $st, want 13 (MNT3ERR_ACCES)"
expect_fail nfs-ls "$(url /only)"
rc=0
"$NFS_OPS" "$(url /only)" ls / 2>/dev/null || rc=$?
[ $rc = 3 ] || die "nfs_ops on /only: exit $rc, want 3 (mount refused)"
st=$(probe getattr-status --fh "$only_fh")
case $st in
13 | 1) ;; # NFS3ERR_ACCES, NFS3ERR_PERM
*) die "GETATTR with /only's handle from a refused client: nfsstat3 $st, want 13 (ACCES)" ;;
esac
# A path that is not exported at all, and one that does not exist.
[ "$(probe mnt-status --path /not-exported)" = 13 ] || die "MNT of an unexported path not refused"
st=$(probe mnt-status --path "$EXPORT/missing")
[ "$st" = 2 ] || die "MNT of a missing directory under an export: mountstat $st, want 2 (NOENT)"
nfs-ls "$NFS_URL" >/dev/null || die "the open export is refused"

log "root squash"
U0=$(url /sq uid=0\&gid=0)
"$NFS_OPS" "$U0" create /pub/by-root || die "create as squashed root in a 0777 directory"
out=$("$NFS_OPS" "$U0" stat /pub/by-root) || die "stat /sq/pub/by-root"
grep -q ' uid=65534 gid=65534 ' <<<"$out" || die "a file root created on a root_squash export: $out"
U1000=$(url /sq uid=1000\&gid=1000)
"$NFS_OPS" "$U1000" create /pub/by-1000 || die "create as uid 1000"
out=$("$NFS_OPS" "$U0" stat /pub/by-1000) || die "stat /sq/pub/by-1000"
grep -q ' uid=1000 gid=1000 ' <<<"$out" || die "a file uid 1000 created: $out"
# Squashed root is not root: a root-owned 0600 file is closed to it, so is a 0755 root dir.
expect_errno "$ACCES" "$NFS_OPS" "$U0" check /secret 0 4096 0x5e
expect_errno "$ACCES" "$NFS_OPS" "$U0" create /rootdir-file
expect_errno "$ACCES" "$NFS_OPS" "$U0" chmod /secret 0666
# The same user on the no_root_squash export stays root.
"$NFS_OPS" "$(nfs_url "" uid=0\&gid=0)" create /by-root || die "create on $EXPORT as root"
out=$("$NFS_OPS" "$NFS_URL" stat /by-root) || die "stat $EXPORT/by-root"
grep -q ' uid=0 gid=0 ' <<<"$out" || die "no_root_squash: root's file is owned by: $out"
# AUTH_SYS is checked against mode bits for non-root users too.
expect_errno "$ACCES" "$NFS_OPS" "$(nfs_url "" uid=1000\&gid=1000)" write /by-root 0 10 1

log "all_squash with anonuid/anongid"
"$NFS_OPS" "$(url /anon uid=1000\&gid=1000)" create /by-1000 || die "create on /anon"
out=$("$NFS_OPS" "$(url /anon)" stat /by-1000) || die "stat /anon/by-1000"
grep -q ' uid=1234 gid=4321 ' <<<"$out" || die "all_squash anonuid=1234 anongid=4321: $out"

log "a read-only export"
D=$(url /data)
nfs-ls "$D" >/dev/null || die "nfs-ls of the ro export failed"
"$NFS_OPS" "$D" check /f 0 65536 0xda || die "read on the ro export failed"
expect_errno "$ROFS" "$NFS_OPS" "$D" write /f 0 4096 0x01
expect_errno "$ROFS" "$NFS_OPS" "$D" create /new
expect_errno "$ROFS" "$NFS_OPS" "$D" mkdir /newdir
expect_errno "$ROFS" "$NFS_OPS" "$D" truncate /f 0
expect_errno "$ROFS" "$NFS_OPS" "$D" chmod /f 0600
expect_errno "$ROFS" "$NFS_OPS" "$D" rename /f /g
expect_errno "$ROFS" "$NFS_OPS" "$D" link /f /g
expect_errno "$ROFS" "$NFS_OPS" "$D" symlink f /s
expect_errno "$ROFS" "$NFS_OPS" "$D" unlink /f
expect_errno "$ROFS" "$NFS_OPS" "$D" rmdir /dir
expect_errno "$ROFS" qemu-io -f raw -c 'write -P 1 0 4k' "nfs://$NFS_HOST/data/f"
out=$(qemu-io -r -f raw -c 'read -P 0xda 0 64k' "nfs://$NFS_HOST/data/f" 2>&1) &&
	! grep -qiE 'fail|error|mismatch' <<<"$out" || die "qemu-io read-only on the ro export: $out"
"$NFS_OPS" "$D" check /f 0 65536 0xda || die "the ro export's file changed"
out=$("$NFS_OPS" "$D" stat /f) || die "stat /data/f"
grep -q 'mode=0644 .* size=65536 ' <<<"$out" || die "the ro export's file attributes changed: $out"
"$NFS_OPS" "$D" ls / | grep -qx dir || die "the ro export's directory is gone"

gw_alive || die "nfsgw died"
gw_check_log
log "ok"
