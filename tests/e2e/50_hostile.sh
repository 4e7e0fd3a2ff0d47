#!/bin/bash
# Malformed replica-protocol and NBD frames get an error or a closed connection; the daemon
# keeps serving everyone else.
source "$(dirname "$0")/lib.sh"
cluster_up 1
"$BLOCKCTL" volume create vol --size 16M --replicas 1
url=$("$BLOCKCTL" volume attach vol)
qio "$url" 'write -P 0x5a 0 1M'
pid=$(node_pid node1)
read -r host rport nport < <(python3 - "$BLOCKD_CONF" <<'PY'
import configparser, sys
c = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
c.read(sys.argv[1])
n = c["node.node1"]
print(n["host"], n["replica_port"], n["nbd_port"])
PY
)
python3 "$(dirname "$0")/hostile.py" "$host" "$rport" "$nport"
kill -0 "$pid" || die "blockd died"
qio "$url" 'read -P 0x5a 0 1M' 'write -P 0x5b 1M 1M' 'read -P 0x5b 1M 1M'
log "ok"
