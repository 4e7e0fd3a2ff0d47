#!/bin/bash
# Snapshots through the NFS export (issue 3): `blockctl snapshot create /vm-shared/dir snap1`
# takes every file under the directory in one cut; after the files are overwritten, removed
# and new ones created, the old state is still readable in the export's read-only .snapshots
# tree (nfs-cat of the old bytes), `snapshot revert` brings every file
# back byte for byte and removes what was created since, `snapshot ls --json` and
# `snapshot rm` work, and a snapshot of a single file too; a restart of the gateway keeps it.
NFS_HOST=${NFS_HOST:-127.0.0.81}
source "$(dirname "$0")/nfslib.sh"
EXPORT=/vm-shared
NFS_URL="nfs://$NFS_HOST$EXPORT?$NFS_PORTS"

# The bytes of PATH (below the export) read through NFS, into FILE.
nfs_get() { nfs-cat "$(nfs_url "$1")" >"$2" || die "nfs-cat $1 failed"; }
nfs_put() { nfs-cp "$1" "$(nfs_url "$2")" >/dev/null || die "nfs-cp to $2 failed"; }
same() { cmp -s "$1" "$2" || die "$3"; }
# refused TEXT CMD...: CMD exits 1 with one line containing TEXT (not a crash).
refused() {
	local want=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	[ $rc -eq 1 ] || die "$* exited $rc, not 1: $out"
	[ "$(wc -l <<<"$out")" -eq 1 ] && grep -qF -- "$want" <<<"$out" || die "$*: unclear: $out"
}

# Snapshots held by the file volumes' replicas, summed over every node (GET /v1/replicas:
# asking a node for one volume's snapshots would open an engine and fence the gateway's);
# vol_count: the file volumes' replicas.
vol_snaps() { replica_sum snapshots; }
vol_count() { replica_sum count; }
replica_sum() {
	python3 -c '
import configparser, json, sys, urllib.request
c = configparser.ConfigParser(strict=False, interpolation=None)
c.read(sys.argv[1])
n = 0
for sec in c.sections():
    if not sec.startswith("node."):
        continue
    url = "http://%s:%s/v1/replicas" % (c[sec]["host"], c[sec]["http_port"])
    for r in json.load(urllib.request.urlopen(url, timeout=10)):
        if r["volume"].startswith("nfs-"):
            n += 1 if sys.argv[2] == "count" else r[sys.argv[2]]
print(n)' "$BLOCKD_CONF" "$1"
}

# api METHOD PATH [BODY]: the gateway's control API; prints "STATUS BODY".
api() {
	python3 -c '
import configparser, sys, urllib.request, urllib.error
c = configparser.ConfigParser(strict=False, interpolation=None)
c.read(sys.argv[1])
g = c["gateway.gw"]
req = urllib.request.Request("http://%s:%s%s" % (g["host"], g["http_port"], sys.argv[3]),
                             method=sys.argv[2], data=sys.argv[4].encode() if len(sys.argv) > 4 else None)
try:
    r = urllib.request.urlopen(req, timeout=60)
    print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())' "$BLOCKD_CONF" "$@"
}

nfs_up
ops mkdir /dir
ops mkdir /dir/sub
random_file "$WORK/a" 3000000
random_file "$WORK/b" 70000
random_file "$WORK/c" 5000
random_file "$WORK/big" 9000000
nfs_put "$WORK/a" /dir/a
nfs_put "$WORK/b" /dir/b
nfs_put "$WORK/c" /dir/sub/c
ops symlink a /dir/link
ops link /dir/a /dir/a-hard
ops chmod /dir/b 0600
ops write /dir/k 0 500000 5

log "snapshot create /vm-shared/dir snap1"
"$BLOCKCTL" snapshot create /vm-shared/dir snap1
refused "snapshot snap1 exists" "$BLOCKCTL" snapshot create /vm-shared/dir snap1
refused "No such file" "$BLOCKCTL" snapshot create /vm-shared/missing snapx
refused "not under any export" "$BLOCKCTL" snapshot create /elsewhere/dir snapx
refused "read-only .snapshots" "$BLOCKCTL" snapshot create /vm-shared/.snapshots/snap1 snapx
refused "bad snapshot name" "$BLOCKCTL" snapshot create /vm-shared/dir "$(printf 'n%.0s' {1..58})"
rc=0
"$BLOCKCTL" snapshot create /vm-shared/dir .hidden 2>/dev/null || rc=$?
[ $rc -eq 2 ] || die "a bad snapshot name is not a usage error (exit $rc)"

log "the control API's answers"
[[ $(api POST /v1/snapshots '{"path":"/vm-shared/dir"}') == 400* ]] || die "POST without a name"
[[ $(api POST /v1/snapshots 'not json') == 400* ]] || die "POST of a bad body"
[[ $(api DELETE /v1/snapshots/nosuch) == 404*"no snapshot nosuch"* ]] || die "DELETE of nothing"
[[ $(api POST /v1/snapshots/nosuch/revert) == 404* ]] || die "revert of nothing"
[[ $(api GET /v1/snapshots/snap1/bogus) == 404* ]] || die "an unknown route"
out=$(api GET "/v1/snapshots?path=/vm-shared/dir")
[[ $out == 200*'"name":"snap1"'* ]] || die "GET /v1/snapshots?path=: $out"

log "snapshot ls --json"
ls_json=$("$BLOCKCTL" snapshot ls /vm-shared --json)
echo "$ls_json"
python3 - "$ls_json" <<'EOF' || die "snapshot ls --json does not show snap1 of /vm-shared/dir"
import json, sys
d = json.loads(sys.argv[1])
assert len(d) == 1, d
s = d[0]
assert s["name"] == "snap1" and s["path"] == "/vm-shared/dir", s
assert s["files"] == 4, s  # a (twice named), b, k, sub/c
assert s["created"].endswith("Z"), s
EOF
"$BLOCKCTL" snapshot ls /vm-shared/dir
# a, b, k and sub/c, on 3 replicas each
[ "$(vol_snaps)" -eq 12 ] || die "not 12 volume snapshot replicas: $(vol_snaps)"
[ "$("$BLOCKCTL" snapshot ls /vm-shared/dir/sub --json)" = "[]" ] ||
	die "snapshot ls of a path under the snapshot lists it"

log "change everything: overwrite, truncate, remove, create, rename"
ops write /dir/a 0 1000000 9
ops truncate /dir/a 1000000
ops write /dir/k 0 500000 6
ops write /dir/b 0 4096 7
ops unlink /dir/sub/c
ops rmdir /dir/sub
nfs_put "$WORK/big" /dir/new
ops mkdir /dir/newdir
ops create /dir/newdir/x
ops chmod /dir/b 0644
ops unlink /dir/link
ops check /dir/a 0 1000000 9
[ "$(stat_field /dir/a size)" = 1000000 ] || die "truncate of /dir/a did not take"

log "the old state through the export's .snapshots tree"
ops check /dir/k 0 500000 6
ops check /.snapshots/snap1/dir/k 0 500000 5
[ "$(stat_field /.snapshots/snap1/dir/a size)" = 3000000 ] || die ".snapshots/snap1/dir/a size"
[ "$(stat_field /.snapshots/snap1/dir/sub/c size)" = 5000 ] || die ".snapshots/snap1/dir/sub/c"
[ "$(ops readlink /.snapshots/snap1/dir/link)" = a ] || die ".snapshots/snap1/dir/link target"
snapls=$(ops ls /.snapshots/snap1/dir | grep -vxE "\.|\.\." | sort | tr "\n" " ")
[ "$snapls" = "a a-hard b k link sub " ] || die ".snapshots/snap1/dir lists: $snapls"
"$NFS_OPS" "$NFS_URL" write /.snapshots/snap1/dir/k 0 10 1 2>/dev/null &&
	die "a write into .snapshots succeeded"
# nfs-cat mounts the file's directory: MNT of a path inside .snapshots.
nfs_get /.snapshots/snap1/dir/a "$WORK/a.snap"
same "$WORK/a" "$WORK/a.snap" ".snapshots/snap1/dir/a differs from the original"
nfs_get /.snapshots/snap1/dir/a-hard "$WORK/ah.snap"
same "$WORK/a" "$WORK/ah.snap" ".snapshots/snap1/dir/a-hard differs from the original"
nfs_get /.snapshots/snap1/dir/b "$WORK/b.snap"
same "$WORK/b" "$WORK/b.snap" ".snapshots/snap1/dir/b differs from the original"
nfs_get /.snapshots/snap1/dir/sub/c "$WORK/c.snap"
same "$WORK/c" "$WORK/c.snap" ".snapshots/snap1/dir/sub/c differs from the original"
nfs-cat "$(nfs_url /.snapshots/snap1/dir/new)" >/dev/null 2>&1 && die ".snapshots/snap1/dir/new exists"

log "snapshot revert /vm-shared/dir snap1"
"$BLOCKCTL" snapshot revert /vm-shared/dir snap1
nfs_get /dir/a "$WORK/a.back"
same "$WORK/a" "$WORK/a.back" "/dir/a not back byte for byte"
nfs_get /dir/a-hard "$WORK/ah.back"
same "$WORK/a" "$WORK/ah.back" "/dir/a-hard not back byte for byte"
nfs_get /dir/b "$WORK/b.back"
same "$WORK/b" "$WORK/b.back" "/dir/b not back byte for byte"
nfs_get /dir/sub/c "$WORK/c.back"
same "$WORK/c" "$WORK/c.back" "/dir/sub/c not back byte for byte"
[ "$(ops readlink /dir/link)" = a ] || die "symlink /dir/link not back"
[ "$(stat_field /dir/b mode)" = 0600 ] || die "/dir/b mode not back: $(stat_field /dir/b mode)"
[ "$(stat_field /dir/a nlink)" = 2 ] || die "/dir/a nlink not 2"
[ "$(stat_field /dir/a size)" = 3000000 ] || die "/dir/a size not back"
listing=$(ops ls /dir | grep -vxE "\.|\.\." | sort | tr "\n" " ")
[ "$listing" = "a a-hard b k link sub " ] || die "/dir after revert lists: $listing"
ops check /dir/k 0 500000 5

log "a snapshot of one file"
"$BLOCKCTL" snapshot create /vm-shared/dir/b fsnap
ops write /dir/b 0 20000 3
ops truncate /dir/b 20000
"$BLOCKCTL" snapshot revert /vm-shared/dir/b fsnap
nfs_get /dir/b "$WORK/b.back2"
same "$WORK/b" "$WORK/b.back2" "/dir/b not back after the file snapshot's revert"
refused "is of /vm-shared/dir/b, not of /vm-shared/dir/a" \
	"$BLOCKCTL" snapshot revert /vm-shared/dir/a fsnap

log "snapshots survive a gateway restart (kill -9)"
ops unlink /dir/a
gw_kill9
gw_start
gw_wait
ls_json=$("$BLOCKCTL" snapshot ls /vm-shared --json)
python3 - "$ls_json" <<'EOF' || die "snapshot ls after the restart: $ls_json"
import json, sys
d = json.loads(sys.argv[1])
assert sorted(s["name"] for s in d) == ["fsnap", "snap1"], d
EOF
ops check /.snapshots/snap1/dir/k 0 500000 5
nfs_get /.snapshots/fsnap/b "$WORK/b.fsnap"
same "$WORK/b" "$WORK/b.fsnap" ".snapshots/fsnap/b differs after the restart"
"$BLOCKCTL" snapshot revert /vm-shared/dir snap1
nfs_get /dir/a "$WORK/a.back3"
same "$WORK/a" "$WORK/a.back3" "/dir/a not back after the restart and revert"

log "snapshot rm; a file only a snapshot holds loses its volume with the snapshot"
vols=$(vol_count)
ops unlink /dir/sub/c
[ "$(vol_count)" -eq "$vols" ] || die "the volume of /dir/sub/c went while snap1 holds it"
"$BLOCKCTL" snapshot rm /vm-shared/dir/b fsnap
[ "$(vol_count)" -eq "$vols" ] || die "snapshot rm fsnap deleted a volume"
"$BLOCKCTL" snapshot rm /vm-shared/dir snap1
[ "$(vol_count)" -eq $((vols - 3)) ] || die "snapshot rm snap1: $(vol_count) volume replicas, not $((vols - 3))"
refused "no snapshot snap1" "$BLOCKCTL" snapshot rm /vm-shared/dir snap1
[ "$("$BLOCKCTL" snapshot ls /vm-shared --json)" = "[]" ] || die "snapshots left after rm"
[ "$(vol_snaps)" -eq 0 ] || die "volume snapshots left after rm: $(vol_snaps)"
left=$(ops ls /.snapshots | grep -vxE "\.|\.\." || true)
[ -z "$left" ] || die ".snapshots still lists: $left"
nfs_get /dir/a "$WORK/a.final"
same "$WORK/a" "$WORK/a.final" "/dir/a changed by snapshot rm"
ops unlink /dir/a
ops unlink /dir/a-hard
nfs-cat "$(nfs_url /dir/a)" >/dev/null 2>&1 && die "/dir/a still readable after unlink"
gw_alive || die "nfsgw died"
gw_check_log
grep -n "could not be" "$GW_LOG" && die "the gateway left volumes or volume snapshots behind"
log "ok"
