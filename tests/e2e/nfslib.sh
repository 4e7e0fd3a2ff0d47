# Shared set-up for the NFS gateway end-to-end tests: a real 3-node cluster (lib.sh) plus one
# build/nfsgw on a loopback address of the test's own (NFS_HOST, set before sourcing), with
# its portmapper on 111, MOUNT on 20048 and NFS on 2049 of that address.
#   NFS_HOST=127.0.0.61; source "$(dirname "$0")/nfslib.sh"
#   nfs_up [--replicas N] [--exports TEXT]   cluster + gateway, waits until it serves
#   gw_kill9 / gw_start / gw_wait / gw_alive  the gateway process
#   URL=$NFS_URL (nfs://HOST/vm with explicit ports; NFS_URL_PM: through the portmapper)
# Source it; cleanup (on EXIT) kills the gateway too and shows its log when the test failed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${NFS_HOST:?set NFS_HOST, the loopback address of this test, before sourcing nfslib.sh}"
NFSGW=$BUILD/nfsgw
NFS_OPS=$BUILD/tests/nfs_ops
NFS_LOAD=$BUILD/tests/nfs_load
GW_NAME=gw
# The paths blockctl uses for a cluster's first gateway: `cluster down` stops ours too.
GW_LOG=$CLUSTER/nfsgw.log
GW_PIDFILE=$CLUSTER/nfsgw.pid
GW_PID=
EXPORT=/vm
NFS_PORTS="nfsport=2049&mountport=20048"
# libnfs-utils and nfs_ops accept explicit ports: those tests do not depend on the portmapper.
NFS_URL="nfs://$NFS_HOST$EXPORT?$NFS_PORTS"
# QEMU's driver always asks the portmapper on port 111 of the host in the URL.
NFS_URL_PM="nfs://$NFS_HOST$EXPORT"

# nfs_url PATH [EXTRA_QUERY]: a URL to PATH (below the export) with explicit ports.
nfs_url() { echo "nfs://$NFS_HOST$EXPORT$1?$NFS_PORTS${2:+&$2}"; }

nfs_cleanup() {
	local rc=$?
	if [ -n "$GW_PID" ]; then
		kill -9 "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
	if [ $rc -ne 0 ] && [ -f "$GW_LOG" ]; then
		echo "--- tail of $GW_LOG"
		tail -n 60 "$GW_LOG"
	fi
	# lib.sh's cleanup takes the exit status from $?; under set -e a failing (exit) would end
	# this trap before the nodes are stopped.
	set +e
	(exit $rc)
	cleanup
}
trap nfs_cleanup EXIT

nfs_require() {
	[ -x "$NFSGW" ] || die "$NFSGW not built"
	[ -x "$NFS_OPS" ] || die "$NFS_OPS not built"
	[ -x "$NFS_LOAD" ] || die "$NFS_LOAD not built"
}

gw_alive() { [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; }

# GW_ASAN_OPTIONS: the gateway's own ASAN_OPTIONS (e.g. detect_leaks=1 for a clean-exit check);
# GW_NOFILE: its open-file limit (ulimit -n).
gw_start() {
	log "start nfsgw on $NFS_HOST"
	(
		[ -z "${GW_NOFILE:-}" ] || ulimit -n "$GW_NOFILE"
		ASAN_OPTIONS=${GW_ASAN_OPTIONS:-$ASAN_OPTIONS} exec "$NFSGW" -c "$BLOCKD_CONF" \
			--gateway "$GW_NAME" --pidfile "$GW_PIDFILE" >>"$GW_LOG" 2>&1
	) &
	GW_PID=$!
}

# Polls until the gateway answers a mount and a READDIRPLUS of the export root (nfs-ls), up
# to ${1:-90} seconds (ASan build, replica engines opening).
gw_wait() {
	local limit=${1:-90} start=$SECONDS out
	while :; do
		gw_alive || die "nfsgw (pid $GW_PID) exited before serving"
		if out=$(timeout 20 nfs-ls "$NFS_URL" 2>&1); then
			log "nfsgw serves after $((SECONDS - start)) s"
			return 0
		fi
		[ $((SECONDS - start)) -lt "$limit" ] || die "nfsgw does not serve after $limit s: $out"
		sleep 0.2
	done
}

gw_kill9() {
	log "kill -9 nfsgw (pid $GW_PID)"
	kill -9 "$GW_PID"
	wait "$GW_PID" 2>/dev/null || true
	GW_PID=
}

# gw_stop: SIGTERM, the gateway must exit cleanly (exit status 0) within 30 s.
gw_stop() {
	local pid=$GW_PID rc=0
	kill -TERM "$pid"
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && die "nfsgw did not exit 30 s after SIGTERM"
	wait "$pid" || rc=$?
	GW_PID=
	[ $rc -eq 0 ] || die "nfsgw exited with status $rc after SIGTERM"
}

# gw_check_log: no sanitizer report in the gateway's log (ASan, LeakSanitizer, UBSan).
gw_check_log() {
	if grep -nE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$GW_LOG"; then
		die "sanitizer report in the nfsgw log"
	fi
}

# nfs_up [--replicas N] [--exports TEXT]: a 3-node cluster and one gateway serving TEXT
# (default: $EXPORT to every loopback client, rw, no_root_squash).
nfs_up() {
	local replicas=3 exports="$EXPORT 127.0.0.0/8(rw,sync,no_subtree_check,no_root_squash)"
	while [ $# -gt 0 ]; do
		case $1 in
		--replicas)
			replicas=$2
			shift 2
			;;
		--exports)
			exports=$2
			shift 2
			;;
		*) die "nfs_up: unknown option $1" ;;
		esac
	done
	nfs_require
	local base
	base=$(free_base_port)
	# Our own gateway section instead of the default one: its own address, exports, replicas.
	"$BLOCKCTL" cluster up --nodes 3 --dir "$CLUSTER" --base-port "$base" --no-gateway >/dev/null
	printf '%s\n' "$exports" >"$WORK/exports"
	cat >>"$BLOCKD_CONF" <<EOF

[gateway.$GW_NAME]
host = $NFS_HOST
nfs_port = 2049
mount_port = 20048
portmap_port = 111
http_port = $((base + 1))
exports = $WORK/exports
replicas = $replicas
meta_volume = nfsgw-meta-$GW_NAME
EOF
	gw_start
	gw_wait
}

# A TCP connect to HOST:PORT succeeds.
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# ops ARGS...: nfs_ops on the export with explicit ports; fails the test on error.
ops() {
	"$NFS_OPS" "$NFS_URL" "$@" || die "nfs_ops $* failed (exit $?)"
}

# stat_field PATH FIELD: one field of nfs_ops stat.
stat_field() {
	local out
	out=$("$NFS_OPS" "$NFS_URL" stat "$1") || die "stat $1 failed"
	sed -n "s/.*\<$2=\([^ ]*\).*/\1/p" <<<"$out"
}
