#!/bin/sh
# /init of the blockd test guest (busybox-static, run by the kernel from the initramfs that
# tools/guest/mkguest.sh builds). Loads the virtio modules listed in /lib/modules/order, then runs
# the workload named on the kernel command line against /dev/vda and powers the guest off:
#   blockd.mode=write   writes 4 KiB records 0,1,2,... sequentially to /dev/vda, in batches of
#                       blockd.batch (16) records with O_DIRECT and an fsync per batch, printing
#                       "seq N ok" (N records are durable) after each batch, until blockd.count
#                       (default unlimited) records or until the first 4 bytes of /dev/vdb (an
#                       optional control disk) read "STOP"; then "WRITE DONE N". Any failed or
#                       short write prints "IOERROR ..." and stops at once.
#   blockd.mode=verify  reads records from 0 up to the first block without the magic and prints
#                       "VERIFY OK N" (N good records) or "VERIFY BAD at N: why".
#   blockd.mode=idle    only keeps memory dirty (for migration tests) until powered off.
# Record layout (checkable from the host): bytes 0..63 are the text header
# "BLOCKDREC <seq, decimal> <md5 of bytes 64..4095>", space padded, '\n' at byte 63; bytes
# 64..4095 are random. A background loop keeps blockd.dirty (16) MiB of tmpfs memory dirty,
# rewriting it every blockd.dirty_pause (0.2) s; blockd.dirty=0 turns it off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

# Nothing else runs here: if /init returned the kernel would panic, so every path ends here.
halt_guest() {
	sync
	echo "GUEST POWEROFF"
	poweroff -f
	sleep 60
}

for m in $(cat /lib/modules/order); do
	insmod "/lib/modules/$m.ko" || echo "GUEST insmod $m failed"
done

mode=idle count=0 batch=16 dirty=16 dirty_pause=0.2
for w in $(cat /proc/cmdline); do
	case $w in
	blockd.mode=*) mode=${w#*=} ;;
	blockd.count=*) count=${w#*=} ;;
	blockd.batch=*) batch=${w#*=} ;;
	blockd.dirty=*) dirty=${w#*=} ;;
	blockd.dirty_pause=*) dirty_pause=${w#*=} ;;
	esac
done

# The disk shows up asynchronously after virtio_blk loads; an idle guest may have none.
i=0
[ "$mode" != idle ] || i=100
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
if [ ! -b /dev/vda ] && [ "$mode" != idle ]; then
	echo "GUEST NODISK: no /dev/vda"
	halt_guest
fi
echo "GUEST READY mode=$mode"

if [ "$dirty" -gt 0 ]; then
	dd if=/dev/urandom of=/tmp/dirty.src bs=1M count="$dirty" 2>/dev/null
	(
		while :; do
			dd if=/tmp/dirty.src of=/tmp/dirty bs=1M conv=notrunc 2>/dev/null
			sleep "$dirty_pause"
		done
	) &
fi

# mkrec SEQ: one record on stdout.
mkrec() {
	head -c 4032 /dev/urandom >/tmp/payload
	set -- "$1" $(md5sum </tmp/payload)
	printf 'BLOCKDREC %-53s\n' "$1 $2"
	cat /tmp/payload
}

stop_requested() {
	[ -b /dev/vdb ] || return 1
	[ "$(dd if=/dev/vdb bs=512 count=1 iflag=direct 2>/dev/null | head -c 4)" = STOP ]
}

do_write() {
	seq=0
	while [ "$count" -eq 0 ] || [ $seq -lt "$count" ]; do
		stop_requested && break
		n=$batch
		[ "$count" -eq 0 ] || [ $((seq + n)) -le "$count" ] || n=$((count - seq))
		: >/tmp/batch
		j=0
		while [ $j -lt $n ]; do
			mkrec $((seq + j)) >>/tmp/batch
			j=$((j + 1))
		done
		# O_DIRECT: an error of this write comes back to dd, not to a later writeback.
		if ! dd if=/tmp/batch of=/dev/vda bs=4096 seek=$seq oflag=direct conv=notrunc,fsync \
			2>/tmp/dd.err; then
			echo "IOERROR writing records $seq..$((seq + n - 1)): $(cat /tmp/dd.err)"
			halt_guest
		fi
		if ! grep -q "^$n+0 records out" /tmp/dd.err; then
			echo "IOERROR short write at record $seq: $(cat /tmp/dd.err)"
			halt_guest
		fi
		seq=$((seq + n))
		echo "seq $seq ok"
	done
	echo "WRITE DONE $seq"
}

# check_rec FILE SEQ: FILE holds record SEQ. Return 2 at the end of the records. Forks as
# little as it can (read is a builtin): a TCG guest forks slowly.
check_rec() {
	magic='' rseq='' rsum=''
	read -r magic rseq rsum <"$1" 2>/dev/null || true
	[ "$magic" = BLOCKDREC ] || return 2
	if [ "$rseq" != "$2" ]; then
		why="header says record $rseq"
		return 1
	fi
	sum=$(tail -c 4032 "$1" | md5sum)
	if [ "${sum%% *}" != "$rsum" ]; then
		why="checksum mismatch"
		return 1
	fi
	return 0
}

do_verify() {
	n=0 chunk=64
	while :; do
		if ! dd if=/dev/vda of=/tmp/chunk bs=4096 skip=$n count=$chunk iflag=direct \
			2>/tmp/dd.err; then
			echo "IOERROR reading records from $n: $(cat /tmp/dd.err)"
			echo "VERIFY BAD at $n: read error"
			return
		fi
		j=0
		while [ $j -lt $chunk ]; do
			dd if=/tmp/chunk of=/tmp/rec bs=4096 skip=$j count=1 2>/dev/null
			rc=0
			check_rec /tmp/rec $n || rc=$?
			if [ $rc -eq 2 ]; then
				echo "VERIFY OK $n"
				return
			fi
			if [ $rc -ne 0 ]; then
				echo "VERIFY BAD at $n: $why"
				return
			fi
			n=$((n + 1))
			j=$((j + 1))
		done
		echo "verified $n"
	done
}

case $mode in
write) do_write ;;
verify) do_verify ;;
idle)
	echo "GUEST IDLE"
	while :; do sleep 3600; done
	;;
*) echo "GUEST unknown blockd.mode=$mode" ;;
esac
halt_guest
