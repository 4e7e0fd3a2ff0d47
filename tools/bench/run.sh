#!/bin/bash
# Benchmarks: fio 4k random write/read at QD32 and 1M sequential write/read, against a local
# file (io_uring, buffered: the replicas' caching mode) and against volumes with 1, 2 and 3
# replicas over NBD (fio's nbd engine), all in one run. Prints IOPS, MiB/s and ratio to local.
# Usage: tools/bench/run.sh [BUILD_DIR]; RUNTIME (seconds per job, default 15), SIZE (default 1G),
# REPLICAS (default "1 2 3"), JOBS (default all four, e.g. "randwrite-4k-32").
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
RUNTIME=${RUNTIME:-15}
SIZE=${SIZE:-1G}
WORK=$(mktemp -d /var/tmp/blockd-bench.XXXXXX)
export BLOCKD_CONF=$WORK/cluster/cluster.conf
export BLOCKD_BIN=$BUILD/blockd
BLOCKCTL=$BUILD/blockctl
trap '"$BLOCKCTL" cluster down >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

"$BLOCKCTL" cluster up --nodes 3 --dir "$WORK/cluster" --base-port 27400 >/dev/null
declare -A URL
REPLICAS=(${REPLICAS:-1 2 3})
for r in "${REPLICAS[@]}"; do
	nodes=$(seq -s, -f 'node%g' 1 "$r") # node1 first: every volume has a local replica
	"$BLOCKCTL" volume create "bench$r" --size "$SIZE" --nodes "$nodes" >/dev/null
	URL[$r]=$("$BLOCKCTL" volume attach "bench$r" --node node1)
done

JOBS=(${JOBS:-randwrite-4k-32 randread-4k-32 write-1M-16 read-1M-16})
run_fio() { # target-args... -> prints "iops mibps"
	# Start every job with no dirty page-cache backlog from the previous one: writeback
	# throttling would otherwise charge one target for another's writes.
	sync
	# ...and with the same page-cache state for every target. fio invalidates the local file's
	# cache before a job (invalidate=1) but cannot reach the replicas' files, which would keep
	# the large folios of the sequential prefill; on ext4 a 4k buffered write into a large
	# folio walks all of its buffer heads (~30 us per write measured on kernel 6.18), so the
	# replicas would pay a cost the local file never sees. Needs root; skipped otherwise.
	echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true
	fio --name=b --output-format=json --time_based --runtime="$RUNTIME" --ramp_time=2 \
		--size="$SIZE" --rw="$1" --bs="$2" --iodepth="$3" "${@:4}" |
		python3 -c 'import json,sys
text=sys.stdin.read()  # fio engines may print notes before the JSON document
j=json.loads(text[text.index("{"):])["jobs"][0]
d=j["write"] if j["write"]["io_bytes"] else j["read"]
print("%.0f %.1f" % (d["iops"], d["bw_bytes"]/1048576))'
}
prefill() { # fill the target so reads hit written data, not holes
	fio --name=fill --rw=write --bs=1M --iodepth=16 --size="$SIZE" "$@" >/dev/null
}

prefill --ioengine=io_uring --filename="$WORK/local.img"
for r in "${REPLICAS[@]}"; do prefill --ioengine=nbd --uri="${URL[$r]}"; done

printf "%-12s %-10s %12s %10s %8s\n" job target IOPS MiB/s ratio
for job in "${JOBS[@]}"; do
	read -r rw bs qd <<<"${job//-/ }"
	# fadvise_hint=0: fio would otherwise tell the kernel that random jobs are random
	# (no readahead), a hint the replicas' files never get.
	read -r liops lmib < <(run_fio "$rw" "$bs" "$qd" --ioengine=io_uring --direct=0 \
		--fadvise_hint=0 --filename="$WORK/local.img")
	printf "%-12s %-10s %12s %10s %8s\n" "$rw-$bs" local "$liops" "$lmib" "1.00"
	for r in "${REPLICAS[@]}"; do
		read -r iops mib < <(run_fio "$rw" "$bs" "$qd" --ioengine=nbd --uri="${URL[$r]}")
		ratio=$(python3 -c "print('%.2f' % ($iops / max($liops, 1)))")
		printf "%-12s %-10s %12s %10s %8s\n" "$rw-$bs" "nbd-${r}rep" "$iops" "$mib" "$ratio"
	done
done
