#!/bin/bash
# Snapshot, overwrite, revert, clone and delete (merge), each checked byte for byte
# through real NBD clients (qemu-io).
source "$(dirname "$0")/lib.sh"
cluster_up 3
"$BLOCKCTL" volume create vol --size 32M
url=$("$BLOCKCTL" volume attach vol)
qio "$url" 'write -P 0xa1 0 4M' 'write -P 0xa2 8M 1M' 'write -P 0xa3 4095 2'
"$BLOCKCTL" snapshot create vol s1
qio "$url" 'write -P 0xb1 0 1M' 'write -P 0xb2 20M 1M' 'write -P 0xb3 4096 512'
qio "$url" 'read -P 0xb1 0 4096' 'read -P 0xb3 4096 512' 'read -P 0xb1 4608 1043968' \
	'read -P 0xa1 1M 3M' 'read -P 0xa2 8M 1M' 'read -P 0xb2 20M 1M'
"$BLOCKCTL" snapshot ls vol
[ "$("$BLOCKCTL" snapshot ls vol --json | json_get '[0]["name"]')" = s1 ] || die "snapshot ls"
expect_fail "$BLOCKCTL" snapshot create vol s1
expect_fail "$BLOCKCTL" snapshot revert vol nosuch

# Revert: everything written after s1 is gone.
"$BLOCKCTL" volume detach vol
"$BLOCKCTL" snapshot revert vol s1
url=$("$BLOCKCTL" volume attach vol)
qio "$url" 'read -P 0xa1 0 4095' 'read -P 0xa3 4095 2' 'read -P 0xa1 4097 4190207' \
	'read -P 0xa2 8M 1M' 'read -P 0 20M 1M'

# Clone: a new volume with s1's content; the two evolve independently.
"$BLOCKCTL" snapshot clone vol s1 vol2
url2=$("$BLOCKCTL" volume attach vol2)
qio "$url2" 'read -P 0xa1 0 4095' 'read -P 0xa2 8M 1M' 'read -P 0 20M 1M'
qio "$url2" 'write -P 0xc1 0 1M'
qio "$url" 'read -P 0xa1 0 4095' 'read -P 0xa3 4095 2'
qio "$url" 'write -P 0xd1 8M 1M'
qio "$url2" 'read -P 0xc1 0 1M' 'read -P 0xa2 8M 1M'

# Delete merges s1 into its child: the volume's content must not change.
qio "$url" 'write -P 0xe1 2M 1M'
"$BLOCKCTL" snapshot create vol s2
"$BLOCKCTL" snapshot rm vol s1
qio "$url" 'read -P 0xa1 0 4095' 'read -P 0xa3 4095 2' 'read -P 0xa1 4097 2093055' 'read -P 0xe1 2M 1M' 'read -P 0xa1 3M 1M' 'read -P 0xd1 8M 1M'
# The merge runs in the background; the snapshot disappears when it is done.
for _ in $(seq 100); do
	"$BLOCKCTL" snapshot ls vol --json | grep -q '"s1"' || break
	sleep 0.2
done
"$BLOCKCTL" snapshot ls vol --json | grep -q '"s1"' && die "s1 still listed after its merge"
qio "$url" 'read -P 0xa1 0 4095' 'read -P 0xa3 4095 2' 'read -P 0xa1 4097 2093055' 'read -P 0xe1 2M 1M'
"$BLOCKCTL" replica verify vol
"$BLOCKCTL" replica verify vol2
log "ok"
