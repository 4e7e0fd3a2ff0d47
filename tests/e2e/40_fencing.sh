#!/bin/bash
# A second engine on the same volume fences the first: after the takeover the first
# engine's writes fail, the second's succeed, and never both.
source "$(dirname "$0")/lib.sh"
cluster_up 3
"$BLOCKCTL" volume create vol --size 16M
url1=$("$BLOCKCTL" volume attach vol --node node1)
qio "$url1" 'write -P 0x11 0 1M'
# A plain attach elsewhere is refused while it is attached on node1.
expect_fail "$BLOCKCTL" volume attach vol --node node2
url2=$("$BLOCKCTL" volume attach vol --node node2 --force)
qio "$url2" 'read -P 0x11 0 1M' 'write -P 0x22 0 1M'
qio_fails "$url1" 'write -P 0x33 0 1M'
qio_fails "$url1" 'read -P 0x22 0 1M'
qio "$url2" 'read -P 0x22 0 1M'
"$BLOCKCTL" replica verify vol
log "ok"
