#!/bin/bash
# Import/export round trip of random (partly sparse) data on a 3-node cluster, plus the
# CLI's refusals of bad input.
source "$(dirname "$0")/lib.sh"
cluster_up 3
"$BLOCKCTL" node ls
"$BLOCKCTL" node ls --json | json_get '[0]["node"]' | grep -q node

"$BLOCKCTL" volume create vol1 --size 64M --replicas 3
# 24 MiB random, 8 MiB hole, 8 MiB random: the hole must come back as zeros.
random_file "$WORK/a" 24M
random_file "$WORK/b" 8M
cat "$WORK/a" <(head -c 8M /dev/zero) "$WORK/b" >"$WORK/in.img"
"$BLOCKCTL" volume import vol1 "$WORK/in.img"
"$BLOCKCTL" volume export vol1 "$WORK/out.img"
[ "$(stat -c %s "$WORK/out.img")" -eq $((64 << 20)) ] || die "export size"
cmp -n $((40 << 20)) "$WORK/in.img" "$WORK/out.img" || die "exported data differs"
cmp -i $((40 << 20)) -n $((24 << 20)) "$WORK/out.img" /dev/zero || die "tail not zero"

"$BLOCKCTL" volume ls
[ "$("$BLOCKCTL" volume ls --json | json_get '[0]["name"]')" = vol1 ] || die "volume ls --json"
"$BLOCKCTL" volume info vol1
"$BLOCKCTL" replica ls vol1
"$BLOCKCTL" replica verify vol1

# Refusals: one clear line and a non-zero exit each.
expect_fail "$BLOCKCTL" volume create 'bad/name' --size 1M
expect_fail "$BLOCKCTL" volume create vol2 --size 12Q
expect_fail "$BLOCKCTL" volume create vol1 --size 1M
expect_fail "$BLOCKCTL" volume create vol3 --size 1M --replicas 9
expect_fail "$BLOCKCTL" volume info nosuch
random_file "$WORK/big" 65M
expect_fail "$BLOCKCTL" volume import vol1 "$WORK/big"
expect_fail "$BLOCKCTL" volume import vol1 "$WORK/does-not-exist"

# Placement chosen by the operator.
"$BLOCKCTL" volume create placed --size 4M --nodes node3,node2
"$BLOCKCTL" volume info placed --json | python3 -c '
import json,sys
assert sorted(m["node"] for m in json.load(sys.stdin)["members"]) == ["node2", "node3"]' ||
	die "--nodes placement"
expect_fail "$BLOCKCTL" volume create p2 --size 4M --nodes node1,node9
expect_fail "$BLOCKCTL" volume create p2 --size 4M --nodes node1,node1
expect_fail "$BLOCKCTL" volume create p2 --size 4M --nodes node1 --replicas 2
"$BLOCKCTL" volume rm placed

"$BLOCKCTL" volume rm vol1
[ "$("$BLOCKCTL" volume ls --json)" = "[]" ] || die "volume rm left something"
log "ok"
