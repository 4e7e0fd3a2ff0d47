#!/bin/bash
# replica verify finds a replica whose bytes were changed behind blockd's back (bit rot, a
# stray write) and names the extent; volume resize grows every replica.
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

"$BLOCKCTL" volume resize vol --size 32M
expect_fail "$BLOCKCTL" volume resize vol --size 8M
[ "$("$BLOCKCTL" volume info vol --json | json_get '["size"]')" = $((32 << 20)) ] || die "resize"
log "ok"
