#!/bin/bash
# NFS benchmark: NFS-Ganesha 4.3 (VFS FSAL, in a network namespace of its own, see
# /work/shared/FACTS.md) against nfsgw with 1 and then 3 replicas (each on a fresh 3-node
# cluster), all through QEMU's libnfs-based nfs:// driver in one run:
#   write-4k / read-4k: qemu-img bench -t none, 4 KiB at queue depth 32, stride -S
#   write-1M / read-1M: qemu-img bench -t none, 1 MiB at queue depth 32
#   convert-in / convert-out: qemu-img convert of a 1 GiB random raw image to / from the export
# Prints IOPS, MiB/s and the ratio to Ganesha. The issue's targets (1 replica): 4k >= 1.5x
# Ganesha's IOPS, 1M >= 1.0x its throughput.
# Usage: tools/bench/nfs.sh [BUILD_DIR]. COUNT4K (default 200000), COUNT1M (default 4096),
# TARGETS (default "ganesha nfsgw-1 nfsgw-3").
# Installs nfs-ganesha, nfs-ganesha-vfs and rpcbind with apt-get when missing (no services
# are started by the install: policy-rc.d).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$REPO/build}" && pwd)
COUNT4K=${COUNT4K:-200000}
COUNT1M=${COUNT1M:-4096}
TARGETS=(${TARGETS:-ganesha nfsgw-1 nfsgw-3})
STRIDE=$(((1 << 20) + 4096)) # scatters 4k I/O over the image (qemu-img bench has no random mode)
IMG_SIZE=$((1 << 30))
NFSGW_HOST=127.0.0.66
NFSGW_EXPORT=/vm-shared
NS=nfsbench$$
WORK=$(mktemp -d /var/tmp/blockd-nfsbench.XXXXXX)
export BLOCKD_CONF=$WORK/cluster/cluster.conf
export BLOCKD_BIN=$BUILD/blockd
BLOCKCTL=$BUILD/blockctl
NFSGW=$BUILD/nfsgw
NS_UP=0

log() { echo "[$(date +%T)] $*" >&2; }
die() {
	echo "FAILED: $*" >&2
	exit 1
}

cleanup() {
	[ -f "$BLOCKD_CONF" ] && "$BLOCKCTL" cluster down >/dev/null 2>&1 || true
	for f in "$WORK/ganesha/ganesha.pid" "$WORK/ganesha/rpcbind.pid"; do
		[ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
	done
	[ "$NS_UP" = 1 ] && ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

install_ganesha() {
	command -v ganesha.nfsd >/dev/null && command -v rpcbind >/dev/null &&
		[ -n "$(ls /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs* 2>/dev/null)" ] && return
	log "installing nfs-ganesha nfs-ganesha-vfs rpcbind"
	local policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		# The packages' services would listen on 0.0.0.0:111/2049 and take those ports
		# from every test gateway on this machine.
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		policy=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q nfs-ganesha nfs-ganesha-vfs rpcbind \
		>"$WORK/apt.log" 2>&1 || {
		tail "$WORK/apt.log"
		die "apt-get install failed"
	}
	[ $policy = 1 ] && rm -f /usr/sbin/policy-rc.d
	return 0
}

# Polls until a TCP connect to host:port succeeds (optionally inside the namespace).
wait_port() { # host port what [netns]
	local i
	for i in $(seq 300); do
		if ${4:+ip netns exec "$4"} timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	die "$3 did not listen on $1:$2"
}

start_ganesha() {
	local d=$WORK/ganesha
	mkdir -p "$d/export" "$d/recov"
	cat >"$d/ganesha.conf" <<EOF
NFS_CORE_PARAM { Protocols = 3, 4; NFS_Port = 2049; MNT_Port = 20048; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }
NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = $d/recov; Only_Numeric_Owners = true; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT { Export_Id = 1; Path = $d/export; Pseudo = $d/export; Access_Type = RW; Squash = No_Root_Squash;
         Protocols = 3, 4; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
EOF
	ip netns add "$NS"
	NS_UP=1
	ip -n "$NS" link set lo up
	ip netns exec "$NS" unshare -m --propagation private sh -c "
		mount -t tmpfs tmpfs /run && mkdir /run/rpcbind || exit 1
		rpcbind -f & echo \$! >'$d/rpcbind.pid'
		ganesha.nfsd -F -f '$d/ganesha.conf' -L '$d/ganesha.log' -p '$d/ganesha.pid' &
		echo \$! >'$d/ganesha.pid.sh'
		wait" >"$d/ns.log" 2>&1 &
	wait_port 127.0.0.1 111 rpcbind "$NS"
	wait_port 127.0.0.1 2049 ganesha "$NS"
	# Ganesha starts in a grace period during which it refuses some operations; a mount
	# that lists the export and a create that succeeds show it is really serving.
	local i
	for i in $(seq 120); do
		if ip netns exec "$NS" qemu-img create -q -f raw "nfs://127.0.0.1$d/export/probe" 1M \
			>/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$d/ganesha.log" >&2
	die "ganesha does not serve"
}

# A fresh 3-node cluster whose gateway (the one `cluster up` configures, on its own address)
# gives each file $1 replicas (the cluster's default replica count).
start_nfsgw() {
	local replicas=$1
	[ -f "$BLOCKD_CONF" ] && "$BLOCKCTL" cluster down >/dev/null 2>&1 || true
	rm -rf "$WORK/cluster"
	NFSGW_BIN=$NFSGW "$BLOCKCTL" cluster up --nodes 3 --dir "$WORK/cluster" --base-port 27400 \
		--replicas "$replicas" --gateway-host $NFSGW_HOST >"$WORK/up.log" 2>&1 || {
		cat "$WORK/up.log" >&2
		die "cluster up failed"
	}
	grep -q '^portmap_port = 111' "$BLOCKD_CONF" || die "the gateway has no portmapper on 111"
	local i
	for i in $(seq 600); do
		nfs-ls "nfs://$NFSGW_HOST$NFSGW_EXPORT" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "nfsgw does not serve"
}

stop_nfsgw() {
	"$BLOCKCTL" cluster down >/dev/null 2>&1 || true
}

quiesce() {
	sync
	echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

# bench_one RUN URL COUNT SIZE STRIDE WRITE -> prints "iops mibps"
bench_one() {
	local run=$1 url=$2 count=$3 size=$4 stride=$5 w=$6 out t
	quiesce
	out=$($run qemu-img bench -f raw -t none -c "$count" -d 32 -s "$size" -S "$stride" $w "$url" 2>&1) ||
		die "qemu-img bench failed on $url: $out"
	t=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
	[ -n "$t" ] || die "no timing in qemu-img bench output: $out"
	python3 -c "t=$t; print('%.0f %.1f' % ($count/t, $count*$size/t/1048576))"
}

# convert_one RUN SRC DST -> prints "iops mibps" (iops: 1 MiB units)
convert_one() {
	local run=$1 src=$2 dst=$3 s e
	quiesce
	s=$(date +%s.%N)
	$run qemu-img convert -t none -T none -f raw -O raw "$src" "$dst" ||
		die "qemu-img convert $src -> $dst failed"
	e=$(date +%s.%N)
	python3 -c "t=$e-$s; print('%.0f %.1f' % ($IMG_SIZE/1048576/t, $IMG_SIZE/1048576/t))"
}

declare -A IOPS MIB
put() { # target job command... : runs the command, stores its "iops mibps"
	local target=$1 job=$2 out
	shift 2
	out=$("$@") || exit 1
	read -r IOPS[$target/$job] MIB[$target/$job] <<<"$out"
	log "$target $job: $out"
}
measure() { # target run base-url
	local target=$1 run=$2 base=$3
	local img=$base/bench.raw
	log "$target: prefill $img"
	$run qemu-img create -q -f raw "$img" $IMG_SIZE || die "qemu-img create $img failed"
	$run qemu-img convert -n -t none -f raw -O raw "$WORK/src.raw" "$img" ||
		die "prefill of $img failed"
	log "$target: benchmarks"
	put "$target" write-4k bench_one "$run" "$img" "$COUNT4K" 4096 "$STRIDE" -w
	put "$target" read-4k bench_one "$run" "$img" "$COUNT4K" 4096 "$STRIDE" ""
	put "$target" write-1M bench_one "$run" "$img" "$COUNT1M" $((1 << 20)) $((1 << 20)) -w
	put "$target" read-1M bench_one "$run" "$img" "$COUNT1M" $((1 << 20)) $((1 << 20)) ""
	put "$target" convert-in convert_one "$run" "$WORK/src.raw" "$base/conv.raw"
	put "$target" convert-out convert_one "$run" "$base/conv.raw" "$WORK/out.raw"
	cmp "$WORK/src.raw" "$WORK/out.raw" || die "$target: convert round trip differs"
	rm -f "$WORK/out.raw"
}

[[ " ${TARGETS[*]}" != *" nfsgw-"* ]] || [ -x "$NFSGW" ] || die "$NFSGW not built"
head -c $IMG_SIZE /dev/urandom >"$WORK/src.raw"
for t in "${TARGETS[@]}"; do
	case $t in
	ganesha)
		install_ganesha
		start_ganesha
		measure ganesha "ip netns exec $NS" "nfs://127.0.0.1$WORK/ganesha/export"
		;;
	nfsgw-*)
		start_nfsgw "${t#nfsgw-}"
		measure "$t" "" "nfs://$NFSGW_HOST$NFSGW_EXPORT"
		stop_nfsgw
		;;
	*) die "unknown target $t" ;;
	esac
done

printf "%-12s %-10s %10s %10s %8s\n" job target IOPS MiB/s ratio
for job in write-4k read-4k write-1M read-1M convert-in convert-out; do
	base=${IOPS[ganesha/$job]:-}
	for t in "${TARGETS[@]}"; do
		ratio=-
		[ -n "$base" ] && ratio=$(python3 -c "print('%.2f' % (${IOPS[$t/$job]} / max($base, 1)))")
		printf "%-12s %-10s %10s %10s %8s\n" "$job" "$t" "${IOPS[$t/$job]}" "${MIB[$t/$job]}" "$ratio"
	done
done
