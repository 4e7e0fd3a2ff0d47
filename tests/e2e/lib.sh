# Shared set-up for end-to-end tests: a real local cluster of real blockd processes.
# Source it; it defines die/check helpers, starts nothing by itself.
set -euo pipefail
: "${BUILD:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build-san}"
BLOCKCTL=$BUILD/blockctl
NBD_LOAD=$BUILD/tests/nbd_load
export BLOCKD_BIN=$BUILD/blockd
export NFSGW_BIN=$BUILD/nfsgw
# Leak reports from a daemon killed with -9 are meaningless; clean exits are checked by unit tests.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
WORK=$(mktemp -d /tmp/blockd-e2e.XXXXXX)
CLUSTER=$WORK/cluster
export BLOCKD_CONF=$CLUSTER/cluster.conf

log() { echo "[$(date +%T)] $*"; }
die() {
	echo "FAILED: $*" >&2
	exit 1
}

cleanup() {
	local rc=$?
	if [ -f "$BLOCKD_CONF" ]; then
		"$BLOCKCTL" cluster down >/dev/null 2>&1 || true
	fi
	# Anything of ours still alive (a test that failed half-way) must not outlive it.
	for p in "$CLUSTER"/*/blockd.pid "$CLUSTER"/nfsgw*.pid; do
		[ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
	done
	if [ $rc -ne 0 ]; then
		for f in "$CLUSTER"/*/blockd.log "$CLUSTER"/nfsgw*.log; do
			[ -f "$f" ] || continue
			echo "--- tail of $f"
			tail -n 30 "$f"
		done
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT

# A base port whose 40 ports nobody uses; below the kernel's ephemeral range (32768+) so
# that no outgoing connection can take one between this check and the daemons' bind.
free_base_port() {
	local p used
	used=$(ss -Htan | awk '{n=split($4,a,":"); print a[n]}')
	for _ in $(seq 50); do
		p=$((10000 + (RANDOM % 220) * 100))
		if ! grep -qxE "$p|$((p / 10 + 1))[0-9]|$((p / 10 + 2))[0-9]|$((p / 10 + 3))[0-9]|$((p / 10 + 4))[0-9]" <<<"$used"; then
			echo $p
			return
		fi
	done
	die "no free port range"
}

# Without the NFS gateway: tests run in parallel and the gateway wants port 111 of its
# address; tests of the gateway start it themselves (see 75_gateway_cli.sh).
cluster_up() {
	local n=${1:-3}
	"$BLOCKCTL" cluster up --nodes "$n" --dir "$CLUSTER" --base-port "$(free_base_port)" \
		--no-gateway
}

node_pid() { cat "$CLUSTER/$1/blockd.pid"; }

# Expect a command to fail (non-zero exit).
expect_fail() {
	if "$@"; then
		die "expected failure: $*"
	fi
}

random_file() { head -c "$2" /dev/urandom >"$1"; }

# qio URL CMD...: run qemu-io commands against an NBD URL; fail on any error or
# pattern mismatch (qemu-io's exit status alone does not cover every command).
qio() {
	local url=$1 out
	shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	if ! out=$(qemu-io -f raw "${args[@]}" "$url" 2>&1); then
		echo "$out"
		die "qemu-io failed: $*"
	fi
	if grep -qiE 'fail|error' <<<"$out"; then
		echo "$out"
		die "qemu-io reported an error: $*"
	fi
}

# qio_fails URL CMD...: the commands must fail.
qio_fails() {
	local url=$1 out
	shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	if out=$(qemu-io -f raw "${args[@]}" "$url" 2>&1) && ! grep -qiE 'fail|error' <<<"$out"; then
		echo "$out"
		die "qemu-io should have failed: $*"
	fi
}

json_get() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
