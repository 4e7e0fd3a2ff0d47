#!/bin/bash
# kill -9 of one replica node under a continuous, verified write load over NBD: the client
# sees no error and loses no acknowledged write; the node comes back and is resynced by
# copying only the regions written while it was away; then every replica verifies equal.
source "$(dirname "$0")/lib.sh"
cluster_up 3
SIZE=$((256 << 20))
REGION=$((64 << 20))
"$BLOCKCTL" volume create vol --size $SIZE --replicas 3
url=$("$BLOCKCTL" volume attach vol --node node1)

"$NBD_LOAD" --url "$url" --seconds 20 --region $REGION --qd 8 --state "$WORK/state" \
	>"$WORK/load.log" 2>&1 &
load=$!
sleep 4
log "kill -9 node3 (pid $(node_pid node3))"
kill -9 "$(node_pid node3)"
sleep 4
"$BLOCKCTL" replica ls vol
state=$("$BLOCKCTL" replica ls vol --json | python3 -c '
import json,sys
print([r["state"] for r in json.load(sys.stdin) if r["node"]=="node3"][0])')
[ "$state" != healthy ] || die "node3 still healthy after kill -9"

log "restart node3"
"$BLOCKCTL" cluster up --dir "$CLUSTER"
if ! wait $load; then
	cat "$WORK/load.log"
	die "the write load saw an error or lost an acknowledged write"
fi
cat "$WORK/load.log"
grep -q 'mismatches=0' "$WORK/load.log" || die "load did not verify"

"$BLOCKCTL" replica wait vol --timeout 120
"$BLOCKCTL" replica ls vol
copied=$("$BLOCKCTL" replica ls vol --json | python3 -c '
import json,sys
print([r["resync_copied"] for r in json.load(sys.stdin) if r["node"]=="node3"][0])')
log "node3 resync copied $copied bytes of a $SIZE-byte volume"
[ "$copied" -gt 0 ] || die "resync copied nothing"
# Only the regions written while node3 was away: at most the load's region, far from all.
[ "$copied" -le "$REGION" ] || die "resync copied $copied bytes, more than the dirty region"

"$BLOCKCTL" replica verify vol
"$NBD_LOAD" --url "$url" --verify-only --state "$WORK/state" --region $REGION
log "ok"
