#!/bin/bash
# Files through the NFS gateway: nfs-ls, nfs-cat, nfs-cp of 1 GiB in and out (compared);
# mkdir, rename, remove, symlink + readlink, hard link (nlink 2), chmod, truncate down then up
# (reads zeros) through a libnfs client; a file written by one client connection is read back
# whole by another.
NFS_HOST=127.0.0.61
source "$(dirname "$0")/nfslib.sh"
nfs_up

log "nfs-ls of the empty export"
nfs-ls "$NFS_URL" >"$WORK/ls.out" || die "nfs-ls of $NFS_URL failed"
ops create /hello
nfs-ls "$NFS_URL" >"$WORK/ls.out" || die "nfs-ls failed"
grep -qw hello "$WORK/ls.out" || {
	cat "$WORK/ls.out"
	die "nfs-ls does not list a created file"
}

log "nfs-cp and nfs-cat of a small file"
echo "hello through nfsgw $$" >"$WORK/small"
nfs-cp "$WORK/small" "$(nfs_url /small.txt)" >/dev/null || die "nfs-cp of a small file failed"
nfs-cat "$(nfs_url /small.txt)" >"$WORK/small.out" || die "nfs-cat failed"
cmp "$WORK/small" "$WORK/small.out" || die "nfs-cat returned other bytes than were copied in"

log "nfs-cp 1 GiB in"
random_file "$WORK/big" $((1 << 30))
start=$SECONDS
nfs-cp "$WORK/big" "$(nfs_url /big.img)" >/dev/null || die "nfs-cp of 1 GiB in failed"
log "in: $((SECONDS - start)) s"
[ "$(stat_field /big.img size)" = $((1 << 30)) ] || die "size of big.img is $(stat_field /big.img size)"
log "nfs-cp 1 GiB out"
start=$SECONDS
nfs-cp "$(nfs_url /big.img)" "$WORK/big.out" >/dev/null || die "nfs-cp of 1 GiB out failed"
log "out: $((SECONDS - start)) s"
cmp "$WORK/big" "$WORK/big.out" || die "1 GiB file read back differs"
used=$(stat_field /big.img used)
[ "$used" -ge $((1 << 30)) ] || die "a fully written 1 GiB file reports used=$used"
rm -f "$WORK/big.out"
ops unlink /big.img
expect_fail "$NFS_OPS" "$NFS_URL" stat /big.img

log "mkdir"
ops mkdir /d 0750
[ "$(stat_field /d type)" = dir ] || die "/d is not a directory"
[ "$(stat_field /d mode)" = 0750 ] || die "/d mode $(stat_field /d mode), want 0750"
expect_fail "$NFS_OPS" "$NFS_URL" mkdir /d
ops mkdir /d/sub

log "rename"
ops write /d/a 0 4096 0x11
ops rename /d/a /d/b
expect_fail "$NFS_OPS" "$NFS_URL" stat /d/a
ops check /d/b 0 4096 0x11
ops write /d/c 0 8192 0x12
ops rename /d/c /d/b # replaces the target
expect_fail "$NFS_OPS" "$NFS_URL" stat /d/c
[ "$(stat_field /d/b size)" = 8192 ] || die "renamed-over file has size $(stat_field /d/b size)"
ops check /d/b 0 8192 0x12
ops rename /d/b /d/sub/moved # across directories
ops check /d/sub/moved 0 8192 0x12

log "remove"
expect_fail "$NFS_OPS" "$NFS_URL" rmdir /d/sub # not empty
ops unlink /d/sub/moved
expect_fail "$NFS_OPS" "$NFS_URL" stat /d/sub/moved
ops rmdir /d/sub
expect_fail "$NFS_OPS" "$NFS_URL" stat /d/sub

log "symlink + readlink"
ops symlink ../some/target /d/s
[ "$("$NFS_OPS" "$NFS_URL" readlink /d/s)" = ../some/target ] || die "readlink /d/s"
"$NFS_OPS" "$NFS_URL" lstat /d/s | grep -q '^type=lnk ' || die "/d/s is not a symlink"

log "hard link"
ops write /d/h 0 8192 0x22
ops link /d/h /d/h2
[ "$(stat_field /d/h nlink)" = 2 ] || die "nlink of /d/h is $(stat_field /d/h nlink), want 2"
[ "$(stat_field /d/h2 nlink)" = 2 ] || die "nlink of /d/h2 is $(stat_field /d/h2 nlink)"
[ "$(stat_field /d/h ino)" = "$(stat_field /d/h2 ino)" ] || die "hard links have different inodes"
ops write /d/h2 0 4096 0x23 # one file: a write through one name shows through the other
ops check /d/h 0 4096 0x23
ops unlink /d/h
[ "$(stat_field /d/h2 nlink)" = 1 ] || die "nlink after unlink is $(stat_field /d/h2 nlink)"
ops check /d/h2 4096 4096 0x22

log "chmod"
ops chmod /d/h2 0600
[ "$(stat_field /d/h2 mode)" = 0600 ] || die "mode after chmod 0600 is $(stat_field /d/h2 mode)"
ops chmod /d/h2 0755
[ "$(stat_field /d/h2 mode)" = 0755 ] || die "mode after chmod 0755 is $(stat_field /d/h2 mode)"

log "truncate down then up"
ops write /d/t 0 $((1 << 20)) 0x33
ops truncate /d/t 4096
[ "$(stat_field /d/t size)" = 4096 ] || die "size after truncate down is $(stat_field /d/t size)"
ops truncate /d/t $((8 << 20))
[ "$(stat_field /d/t size)" = $((8 << 20)) ] || die "size after truncate up is $(stat_field /d/t size)"
ops check /d/t 0 4096 0x33
ops check /d/t 4096 $(((8 << 20) - 4096)) 0
# Growth past 4 GiB by SETATTR: sparse, reads zeros.
ops truncate /d/t $((5 << 30))
ops check /d/t $(((5 << 30) - (1 << 20))) $((1 << 20)) 0

log "directory listing"
"$NFS_OPS" "$NFS_URL" ls /d | sort >"$WORK/d.ls" || die "ls /d failed"
printf '%s\n' . .. h2 s t | sort | cmp - "$WORK/d.ls" || {
	cat "$WORK/d.ls"
	die "ls /d lists other names"
}

log "a directory of 1500 entries lists whole (READDIRPLUS paging)"
ops mkdir /many
ops mkfiles /many 1500
"$NFS_OPS" "$NFS_URL" ls /many | grep -v '^\.\.\?$' | sort >"$WORK/many.ls" || die "ls /many"
seq -f 'f%g' 0 1499 | sort | cmp - "$WORK/many.ls" || {
	wc -l "$WORK/many.ls"
	die "ls of 1500 entries: names missing or repeated"
}
nfs-ls "$(nfs_url /many)" | wc -l | grep -qx 1500 || die "nfs-ls /many does not list 1500 entries"

log "rename of a directory keeps its contents"
ops write /many/f7 0 4096 0x77
ops rename /many /renamed
expect_fail "$NFS_OPS" "$NFS_URL" stat /many/f7
ops check /renamed/f7 0 4096 0x77
expect_fail "$NFS_OPS" "$NFS_URL" rename /renamed /renamed/f8 # into itself: EINVAL

log "a file written by one client is read back whole by another"
ops xclient /x.img $((64 << 20))
gw_alive || die "nfsgw died"
gw_check_log
log "ok"
