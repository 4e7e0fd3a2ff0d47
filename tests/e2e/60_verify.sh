#!/bin/bash
# replica verify finds a replica whose bytes were changed behind blockd's back (bit rot, a
# stray write) and names the extent; verify --repair copies it back from the majority (and
# refuses without one); a difference in a snapshot layer is reported, not repaired; volume
# resize grows every replica.
source "$(dirname "$0")/lib.sh"
cluster_up 3
"$BLOCKCTL" volume create vol --size 16M
url=$("$BLOCKCTL" volume attach vol)
qio "$url" 'write -P 0x42 0 16M' 'flush'
"$BLOCKCTL" replica verify vol
"$BLOCKCTL" volume detach vol

data=$(ls "$CLUSTER"/node2/replicas/vol/layer-*.data | head -n 1)
printf 'rot' | dd of="$data" bs=1 seek=$((5 * 1048576 + 123)) conv=notrunc status=none
if out=$("$BLOCKCTL" replica verify vol 2>&1); then
	echo "$out"
	die "verify missed a corrupted replica"
fi
echo "$out"
grep -q 5242880 <<<"$out" || die "verify did not name the extent at offset 5242880"
json=$("$BLOCKCTL" replica verify vol --json) && die "verify --json exited 0 on a difference"
python3 -c '
import json,sys
d=json.load(sys.stdin)
assert [x["offset"] for x in d["differ"]] == [5242880], d' <<<"$json" || die "verify --json"

# --repair copies the extent from the two replicas that agree onto node2; afterwards plain
# verify (read-only) finds nothing and every replica serves the written bytes.
out=$("$BLOCKCTL" replica verify vol --repair) || {
	echo "$out"
	die "verify --repair failed"
}
echo "$out"
grep -qE '^repaired: offset 5242880 length 1048576 from node[13] to node2$' <<<"$out" ||
	die "verify --repair did not name the extent and the node it repaired"
"$BLOCKCTL" replica verify vol || die "replicas still differ after repair"
json=$("$BLOCKCTL" replica verify vol --repair --json) || die "a second repair failed"
python3 -c '
import json,sys
d=json.load(sys.stdin)
assert d["differ"] == [] and d["repaired"] == [] and d["unrepairable"] == [], d' <<<"$json" ||
	die "a second repair found something"
for n in node1 node2 node3; do
	# Reads go to the local replica: attaching on each node reads each replica.
	url=$("$BLOCKCTL" volume attach vol --node "$n")
	qio "$url" 'read -P 0x42 0 16M'
	"$BLOCKCTL" volume detach vol
done

"$BLOCKCTL" volume resize vol --size 32M
expect_fail "$BLOCKCTL" volume resize vol --size 8M
[ "$("$BLOCKCTL" volume info vol --json | json_get '["size"]')" = $((32 << 20)) ] || die "resize"

# A difference inside a snapshot's layer (the head overwrote that extent since) is reported by
# verify and by --repair, which does not repair snapshots and so exits 1.
declare -A old
for n in node1 node2 node3; do
	old[$n]=$(ls "$CLUSTER"/$n/replicas/vol/layer-*.data)
	[ "$(wc -l <<<"${old[$n]}")" = 1 ] || die "expected one layer before the snapshot"
done
"$BLOCKCTL" snapshot create vol s1
url=$("$BLOCKCTL" volume attach vol)
qio "$url" 'write -P 0x44 12M 1M' 'flush'
"$BLOCKCTL" volume detach vol
printf 'rot' | dd of="${old[node3]}" bs=1 seek=$((12 * 1048576 + 77)) conv=notrunc status=none
for flag in "" --repair; do
	if out=$("$BLOCKCTL" replica verify vol $flag 2>&1); then
		echo "$out"
		die "verify $flag missed a snapshot difference"
	fi
	echo "$out"
	grep -qE '^snapshot s1 differs: offset 12582912 length 1048576' <<<"$out" ||
		die "verify $flag did not name the snapshot extent"
	grep -q '^repaired' <<<"$out" && die "verify $flag repaired something in the head"
done

# Three different versions of one head extent (the head layer owns 12M since the write above):
# no majority, so repair copies nothing, names the extent and exits 1.
for n in node2 node3; do
	data=$(ls "$CLUSTER"/$n/replicas/vol/layer-*.data | grep -vxF "${old[$n]}")
	[ "$(wc -l <<<"$data")" = 1 ] || die "expected one head layer on $n"
	printf '%s' "$n" | dd of="$data" bs=1 seek=$((12 * 1048576 + 9)) conv=notrunc status=none
done
if out=$("$BLOCKCTL" replica verify vol --repair 2>&1); then
	echo "$out"
	die "verify --repair exited 0 with no majority"
fi
echo "$out"
grep -qE '^unrepairable: offset 12582912 length 1048576 \(no majority\)' <<<"$out" ||
	die "verify --repair did not name the unrepairable extent"
grep -q '^repaired' <<<"$out" && die "verify --repair copied without a majority"
log "ok"
