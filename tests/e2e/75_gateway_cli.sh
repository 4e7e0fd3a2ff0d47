#!/bin/bash
# The NFS gateway through blockctl: `cluster up` starts it (pid file, nfs:// URL, mount
# line), `gateway status`, `export ls|add|rm` against its control API, libnfs clients on
# the URL it prints, a restart by a second `cluster up`, and `cluster down` stopping it.
source "$(dirname "$0")/lib.sh"
GW_HOST=${GW_HOST:-127.0.0.71}

# A base port in this test's range (27000-27900) whose ports nobody uses.
gw_base_port() {
	local p used
	used=$(ss -Htan | awk '{n=split($4,a,":"); print a[n]}')
	for p in $(seq 27000 100 27900); do
		if ! grep -qxE "$((p / 100))[0-9][0-9]" <<<"$used"; then
			echo $p
			return
		fi
	done
	die "no free port range in 27000-27900"
}

# The process has exited (a zombie not yet reaped by init counts: it serves nothing).
gone() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
	[[ $st == Z* ]]
}

log "cluster up with a gateway on $GW_HOST"
out=$("$BLOCKCTL" cluster up --nodes 3 --dir "$CLUSTER" --base-port "$(gw_base_port)" \
	--gateway-host "$GW_HOST")
echo "$out"
grep -qF "nfs://$GW_HOST/vm-shared" <<<"$out" || die "cluster up printed no nfs:// URL"
grep -qF "mount -t nfs -o vers=3,proto=tcp,nolock $GW_HOST:/vm-shared /var/lib/rancher/vm" \
	<<<"$out" || die "cluster up printed no mount line"
[ -s "$CLUSTER/nfsgw.pid" ] || die "no $CLUSTER/nfsgw.pid"
gw_pid=$(cat "$CLUSTER/nfsgw.pid")
kill -0 "$gw_pid" || die "nfsgw (pid $gw_pid) is not running"
grep -qF '/vm-shared 127.0.0.0/8(' "$CLUSTER/exports" || die "no default export written"

log "cluster status shows the gateway"
"$BLOCKCTL" cluster status
st=$("$BLOCKCTL" cluster status --json)
[ "$(json_get '["gateways"][0]["up"]' <<<"$st")" = True ] || die "cluster status: gateway not up"
[ "$(json_get '["gateways"][0]["pid"]' <<<"$st")" = "$gw_pid" ] || die "cluster status: pid"

log "gateway status"
"$BLOCKCTL" gateway status
st=$("$BLOCKCTL" gateway status --json)
[ "$(json_get '["gateway"]' <<<"$st")" = gw1 ] || die "gateway status: name"
[ "$(json_get '["host"]' <<<"$st")" = "$GW_HOST" ] || die "gateway status: host"
[ "$(json_get '["exports"][0]["path"]' <<<"$st")" = /vm-shared ] || die "gateway status: export"
[ "$(json_get '["epoch"] >= 1' <<<"$st")" = True ] || die "gateway status: epoch"

log "libnfs clients on the printed URL"
random_file "$WORK/f1" 300000
nfs-cp "$WORK/f1" "nfs://$GW_HOST/vm-shared/f1"
nfs-ls "nfs://$GW_HOST/vm-shared" | grep -q 'f1$' || die "nfs-ls does not list f1"
nfs-cat "nfs://$GW_HOST/vm-shared/f1" >"$WORK/f1.back"
cmp "$WORK/f1" "$WORK/f1.back" || die "f1 read back differs"

log "export add / ls / rm"
"$BLOCKCTL" export add '/isos 127.0.0.0/8(ro)'
"$BLOCKCTL" export ls
ls_json=$("$BLOCKCTL" export ls --json)
python3 - "$ls_json" <<'EOF' || die "export ls --json does not show /isos read-only"
import json, sys
d = json.loads(sys.argv[1])
e = {x["path"]: x for x in d["exports"]}
assert "/isos" in e and "/vm-shared" in e, d
c = e["/isos"]["clients"][0]
assert c["spec"] == "127.0.0.0/8" and c["rw"] is False, c
assert e["/vm-shared"]["clients"][0]["rw"] is True
assert "/isos" in d["text"]
EOF
nfs-ls "nfs://$GW_HOST/isos" >/dev/null || die "nfs-ls of the new export"
"$BLOCKCTL" export rm /isos
"$BLOCKCTL" export ls --json | grep -q '"/isos"' && die "/isos still listed after export rm"
if err=$("$BLOCKCTL" export rm /isos 2>&1); then die "export rm of a missing export succeeded"; fi
grep -q "no export /isos" <<<"$err" || die "export rm: unclear message: $err"

log "a bad line is refused with a clear message"
set +e
err=$("$BLOCKCTL" export add '/bad 127.0.0.1(bogus)' 2>&1)
rc=$?
set -e
echo "$err"
[ $rc -eq 1 ] || die "export add of a bad line: exit $rc, not 1"
[ "$(wc -l <<<"$err")" -eq 1 ] || die "export add: more than one line"
grep -q "bad export line" <<<"$err" || die "export add: unclear message: $err"
expect_fail "$BLOCKCTL" export add 'relative 127.0.0.1(rw)'

log "a second cluster up restarts a gateway that died; API changes survive it"
"$BLOCKCTL" export add '/keep 127.0.0.0/8(ro)'
kill -9 "$gw_pid"
while ! gone "$gw_pid"; do sleep 0.1; done
"$BLOCKCTL" cluster up --dir "$CLUSTER"
new_pid=$(cat "$CLUSTER/nfsgw.pid")
[ "$new_pid" != "$gw_pid" ] && kill -0 "$new_pid" || die "gateway not restarted"
nfs-cat "nfs://$GW_HOST/vm-shared/f1" >"$WORK/f1.back2"
cmp "$WORK/f1" "$WORK/f1.back2" || die "f1 differs after the gateway's restart"
"$BLOCKCTL" export ls --json | grep -q '"/keep"' || die "export /keep lost by the restart"

log "cluster down stops the gateway"
"$BLOCKCTL" cluster down
gone "$new_pid" || die "nfsgw (pid $new_pid) still running after cluster down"
[ -e "$CLUSTER/nfsgw.pid" ] && die "nfsgw.pid left behind"
set +e
err=$("$BLOCKCTL" gateway status 2>&1)
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "does not answer" <<<"$err" || die "gateway status when down: $rc $err"
log "ports taken on the gateway's address: cluster-range ports, and the URL says so"
GW_HOST2=${GW_HOST2:-127.0.0.72}
CLUSTER2=$WORK/cluster2
cleanup2() {
	local rc=$?
	if [ -f "$CLUSTER2/cluster.conf" ]; then
		"$BLOCKCTL" -c "$CLUSTER2/cluster.conf" cluster down >/dev/null 2>&1 || true
	fi
	for p in "$CLUSTER2"/*/blockd.pid "$CLUSTER2"/nfsgw.pid; do
		[ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
	done
	[ -n "${HOLDER:-}" ] && kill "$HOLDER" 2>/dev/null || true
	[ $rc -ne 0 ] && [ -f "$CLUSTER2/nfsgw.log" ] && tail -n 30 "$CLUSTER2/nfsgw.log"
	(exit $rc)
	cleanup
}
trap cleanup2 EXIT
python3 -c "
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$GW_HOST2', 2049))
s.listen()
print('listening', flush=True)
time.sleep(120)" >"$WORK/holder.out" &
HOLDER=$!
for _ in $(seq 50); do grep -q listening "$WORK/holder.out" && break; sleep 0.1; done
out=$("$BLOCKCTL" cluster up --nodes 1 --dir "$CLUSTER2" --base-port "$(gw_base_port)" \
	--gateway-host "$GW_HOST2")
echo "$out"
kill "$HOLDER"
HOLDER=
grep -q "note: port 2049 of $GW_HOST2 already taken" <<<"$out" || die "no note about port 2049"
url=$(grep -o "nfs://$GW_HOST2/vm-shared?nfsport=[0-9]*&mountport=[0-9]*" <<<"$out" | head -n1)
[ -n "$url" ] || die "no nfs:// URL with explicit ports"
grep -qE "mount -t nfs -o vers=3,proto=tcp,nolock,port=[0-9]+,mountport=[0-9]+ $GW_HOST2:/vm-shared" \
	<<<"$out" || die "no mount line with explicit ports"
grep -q '^portmap_port = 0' "$CLUSTER2/cluster.conf" || die "portmap_port not 0"
nfs-cp "$WORK/f1" "${url%%\?*}/f2?${url#*\?}"
nfs-cat "${url%%\?*}/f2?${url#*\?}" >"$WORK/f2.back"
cmp "$WORK/f1" "$WORK/f2.back" || die "f2 read back differs"

log "cluster down kills a gateway that ignores SIGTERM (after 10 s)"
gw2=$(cat "$CLUSTER2/nfsgw.pid")
kill -STOP "$gw2"
err=$("$BLOCKCTL" -c "$CLUSTER2/cluster.conf" cluster down 2>&1)
echo "$err"
grep -q "gw1 (pid $gw2) ignored SIGTERM" <<<"$err" || die "no SIGKILL note for the gateway"
for _ in $(seq 50); do gone "$gw2" && break; sleep 0.1; done
gone "$gw2" || die "stopped gateway $gw2 survived cluster down"
log "PASS"
