#!/bin/bash
# Losing the node that serves the volume: every write acknowledged as stable (flushed or
# FUA) before its blockd is killed with -9 reads back from an engine on another node, and
# the replicas verify equal afterwards.
source "$(dirname "$0")/lib.sh"
cluster_up 3
SIZE=$((64 << 20))
REGION=$((32 << 20))
"$BLOCKCTL" volume create vol --size $SIZE --replicas 3
url=$("$BLOCKCTL" volume attach vol --node node1)
# nbd_load flushes at the end of its run and saves what it acknowledged.
"$NBD_LOAD" --url "$url" --seconds 5 --region $REGION --qd 8 --state "$WORK/state" >"$WORK/load.log"
cat "$WORK/load.log"
qio "$url" 'write -f -P 0x77 40M 1M'
# Unflushed writes in flight at the kill may or may not survive; flushed ones must.
qemu-io -f raw -c 'aio_write -P 0x99 48M 4M' "$url" >/dev/null 2>&1 &
log "kill -9 node1 (pid $(node_pid node1))"
kill -9 "$(node_pid node1)"
wait || true

url2=$("$BLOCKCTL" volume attach vol --node node2 --force)
"$NBD_LOAD" --url "$url2" --verify-only --state "$WORK/state" --region $REGION
qio "$url2" 'read -P 0x77 40M 1M'
"$BLOCKCTL" replica ls vol
# node1 is down: verify compares the two replicas that are up.
"$BLOCKCTL" replica verify vol

log "restart node1; it must not take the volume back"
"$BLOCKCTL" cluster up --dir "$CLUSTER"
"$BLOCKCTL" replica wait vol --timeout 120
"$BLOCKCTL" replica verify vol
qio "$url2" 'read -P 0x77 40M 1M' 'write -P 0x78 41M 1M' 'read -P 0x78 41M 1M'
log "ok"
