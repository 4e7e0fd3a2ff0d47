#!/usr/bin/env python3
"""Raw ONC RPC over TCP against the NFS gateway: hostile input and protocol checks.

  nfs_hostile.py --host H [--export /vm] CASE      run one case; exit 0 when it passed
  nfs_hostile.py --host H list                     the case names
  nfs_hostile.py --host H mnt-status|mnt-fh --path P | getattr-status --fh HEX |
                 lookup-fh --path P --name N | write-verf --fh HEX   (probes: print a value)

Every hostile case opens a well-behaved "bystander" connection first and makes a NULL call on
it after the hostile action: other connections must be unaffected. A case passes when the
gateway answered as RFC 5531/1813 say or closed only the offending connection (which of the
two each case accepts is written in the case). The caller checks after each case that the
process is alive and a fresh client (nfs-ls) is served.
"""
import argparse
import socket
import struct
import sys
import time

PMAP, MOUNT, NFS = 100000, 100005, 100003
PORTS = {PMAP: 111, MOUNT: 20048, NFS: 2049}
RPC_MAX_RECORD = (1 << 20) + (64 << 10)
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS = 0, 1, 2, 3, 4
TIMEOUT = 20.0


class Closed(Exception):
    pass


def fail(msg):
    print("nfs_hostile: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def p32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def p64(v):
    return struct.pack(">Q", v)


def opaque(b):
    return p32(len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def auth_sys(uid=0, gid=0):
    body = p32(int(time.time())) + opaque(b"hostile") + p32(uid) + p32(gid) + p32(0)
    return p32(1) + opaque(body)


def call_msg(xid, prog, vers, proc, args=b"", cred=None, rpcvers=2):
    cred = auth_sys() if cred is None else cred
    return (p32(xid) + p32(0) + p32(rpcvers) + p32(prog) + p32(vers) + p32(proc) + cred +
            p32(0) + p32(0) + args)


def record(msg):
    return p32(0x80000000 | len(msg)) + msg


class Conn:
    def __init__(self, host, prog):
        self.s = socket.create_connection((host, PORTS[prog]), timeout=TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.xid = 0x1000 * prog % 0x7FFFFFFF + 1

    def send(self, data):
        self.s.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed()
            buf += chunk
        return bytes(buf)

    def recv_record(self):
        out = bytearray()
        while True:
            (mark,) = struct.unpack(">I", self.recv_exact(4))
            out += self.recv_exact(mark & 0x7FFFFFFF)
            if mark & 0x80000000:
                return bytes(out)

    def call(self, prog, vers, proc, args=b"", cred=None):
        self.xid += 1
        self.send(record(call_msg(self.xid, prog, vers, proc, args, cred)))
        return parse_reply(self.recv_record(), self.xid)

    def closed_within(self, seconds=TIMEOUT):
        """True when the peer closes (EOF or reset) within the time; replies are skipped."""
        self.s.settimeout(seconds)
        try:
            while self.s.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


class Reply:
    def __init__(self, xid, stat, accept=None, body=b"", low=None, high=None, denied=None):
        self.xid, self.stat, self.accept, self.body = xid, stat, accept, body
        self.low, self.high, self.denied = low, high, denied

    def __repr__(self):
        return "Reply(stat=%s accept=%s denied=%s low=%s high=%s)" % (
            self.stat, self.accept, self.denied, self.low, self.high)


def parse_reply(rec, want_xid=None):
    if len(rec) < 12:
        fail("reply of %d bytes" % len(rec))
    xid, mtype, stat = struct.unpack(">III", rec[:12])
    if want_xid is not None and xid != want_xid:
        fail("reply xid %#x, want %#x" % (xid, want_xid))
    if mtype != 1:
        fail("reply msg_type %d" % mtype)
    if stat == 1:  # MSG_DENIED
        (rstat,) = struct.unpack(">I", rec[12:16])
        if rstat == 0:
            low, high = struct.unpack(">II", rec[16:24])
            return Reply(xid, stat, denied=("RPC_MISMATCH", low, high), low=low, high=high)
        (astat,) = struct.unpack(">I", rec[16:20])
        return Reply(xid, stat, denied=("AUTH_ERROR", astat))
    _flavor, vlen = struct.unpack(">II", rec[12:20])
    off = 20 + vlen + (4 - vlen % 4) % 4
    (accept,) = struct.unpack(">I", rec[off:off + 4])
    body = rec[off + 4:]
    if accept == PROG_MISMATCH:
        low, high = struct.unpack(">II", body[:8])
        return Reply(xid, stat, accept, body, low, high)
    return Reply(xid, stat, accept, body)


def expect_accept(r, want, what):
    if r.stat != 0 or r.accept != want:
        fail("%s: got %r, want MSG_ACCEPTED accept_stat %d" % (what, r, want))


# ---- helpers speaking MOUNT and NFS

def mnt(host, path):
    c = Conn(host, MOUNT)
    r = c.call(MOUNT, 3, 1, opaque(path.encode()))
    c.close()
    expect_accept(r, SUCCESS, "MNT " + path)
    (status,) = struct.unpack(">I", r.body[:4])
    if status != 0:
        fail("MNT %s: mountstat %d" % (path, status))
    (n,) = struct.unpack(">I", r.body[4:8])
    if not 0 < n <= 64:
        fail("MNT handle length %d" % n)
    return r.body[8:8 + n]


def lookup(c, dirfh, name):
    r = c.call(NFS, 3, 3, opaque(dirfh) + opaque(name.encode()))
    expect_accept(r, SUCCESS, "LOOKUP " + name)
    (status,) = struct.unpack(">I", r.body[:4])
    if status != 0:
        fail("LOOKUP %s: nfsstat3 %d" % (name, status))
    (n,) = struct.unpack(">I", r.body[4:8])
    return r.body[8:8 + n]


def bystander(host):
    c = Conn(host, NFS)
    expect_accept(c.call(NFS, 3, 0), SUCCESS, "bystander NULL before")
    return c


def bystander_ok(c):
    try:
        expect_accept(c.call(NFS, 3, 0), SUCCESS, "bystander NULL after")
    except Closed:
        fail("the gateway closed a well-behaved connection (bystander)")
    c.close()


def answered_or_closed(c, what, ok_accepts=(GARBAGE_ARGS,), nfs_error_ok=False):
    """After a malformed call: a reply with an accepted stat in ok_accepts (or, with
    nfs_error_ok, a SUCCESS reply carrying a non-zero NFS status), or the connection closed."""
    try:
        r = parse_reply(c.recv_record())
    except Closed:
        print("  %s: connection closed" % what)
        return
    except socket.timeout:
        fail("%s: neither a reply nor a close in %.0f s" % (what, TIMEOUT))
    if r.stat == 0 and r.accept in ok_accepts:
        print("  %s: accept_stat %d" % (what, r.accept))
        return
    if nfs_error_ok and r.stat == 0 and r.accept == SUCCESS:
        (status,) = struct.unpack(">I", r.body[:4])
        if status != 0:
            print("  %s: nfsstat3 %d" % (what, status))
            return
    fail("%s: unexpected reply %r" % (what, r))


# ---- cases

def case_pmap_dump(a):
    """PMAP2 DUMP lists portmap, MOUNT and NFS over TCP; GETPORT finds MOUNT and NFS v3;
    rpcbind v3/v4 GETADDR and DUMP agree."""
    c = Conn(a.host, PMAP)
    r = c.call(PMAP, 2, 4)
    expect_accept(r, SUCCESS, "PMAP2 DUMP")
    b, progs = r.body, set()
    while True:
        (more,) = struct.unpack(">I", b[:4])
        if not more:
            break
        prog, vers, prot, port = struct.unpack(">IIII", b[4:20])
        progs.add((prog, vers, prot, port))
        b = b[20:]
    print("  DUMP: " + " ".join("%d/%d/%d/%d" % m for m in sorted(progs)))
    for prog in (PMAP, MOUNT, NFS):
        if not any(m[0] == prog and m[2] == 6 for m in progs):
            fail("PMAP DUMP does not list program %d over TCP" % prog)
    for prog, vers, port in ((NFS, 3, 2049), (MOUNT, 3, 20048), (MOUNT, 1, 20048)):
        r = c.call(PMAP, 2, 3, p32(prog) + p32(vers) + p32(6) + p32(0))
        expect_accept(r, SUCCESS, "GETPORT %d v%d" % (prog, vers))
        (got,) = struct.unpack(">I", r.body[:4])
        if got != port:
            fail("GETPORT %d v%d tcp = %d, want %d" % (prog, vers, got, port))
    # rpcbind v3 and v4 GETADDR: universal addresses "h1.h2.h3.h4.p1.p2" on the gateway's host.
    for vers in (3, 4):
        for prog, pvers, port in ((NFS, 3, 2049), (MOUNT, 3, 20048)):
            r = c.call(PMAP, vers, 3, p32(prog) + p32(pvers) + opaque(b"tcp") + opaque(b"") + opaque(b""))
            expect_accept(r, SUCCESS, "RPCB%d GETADDR %d" % (vers, prog))
            (n,) = struct.unpack(">I", r.body[:4])
            uaddr = r.body[4:4 + n].decode()
            want = "%s.%d.%d" % (a.host, port >> 8, port & 255)
            if uaddr != want:
                fail("RPCB%d GETADDR %d v%d tcp = %r, want %r" % (vers, prog, pvers, uaddr, want))
        r = c.call(PMAP, vers, 4)  # DUMP: rpcb entries (prog, vers, netid, addr, owner)
        expect_accept(r, SUCCESS, "RPCB%d DUMP" % vers)
        b, progs = r.body, set()
        while struct.unpack(">I", b[:4])[0]:
            prog, pv = struct.unpack(">II", b[4:12])
            b = b[12:]
            for _ in range(3):
                (n,) = struct.unpack(">I", b[:4])
                b = b[4 + n + (4 - n % 4) % 4:]
            progs.add(prog)
        if not {PMAP, MOUNT, NFS} <= progs:
            fail("RPCB%d DUMP lists %s" % (vers, sorted(progs)))
    r = c.call(PMAP, 2, 3, p32(100099) + p32(1) + p32(6) + p32(0))
    expect_accept(r, SUCCESS, "GETPORT of an unregistered program")
    if struct.unpack(">I", r.body[:4])[0] != 0:
        fail("GETPORT of an unregistered program is not 0")
    c.close()


def case_oversize_mark(a):
    """A record mark announcing 2 GiB: the connection is closed."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    c.send(p32(0xFFFFFFFF) + b"\0" * 64)
    if not c.closed_within():
        fail("a 2 GiB record mark did not close the connection")
    c.close()
    bystander_ok(by)


def case_oversize_fragments(a):
    """Non-last fragments adding up past RPC_MAX_RECORD: the connection is closed."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    frag = 256 << 10
    sent = 0
    try:
        while sent <= RPC_MAX_RECORD + frag:
            c.send(p32(frag) + b"\0" * frag)
            sent += frag
    except (BrokenPipeError, ConnectionResetError):
        pass
    if not c.closed_within():
        fail("%d bytes of fragments without a last one did not close the connection" % sent)
    c.close()
    bystander_ok(by)


def case_zero_fragment(a):
    """A zero-length fragment without the last bit: the connection is closed."""
    by = bystander(a.host)
    c = Conn(a.host, MOUNT)
    c.send(p32(0) * 4)
    if not c.closed_within():
        fail("a zero-length non-last fragment did not close the connection")
    c.close()
    bystander_ok(by)


def case_short_header(a):
    """A record too short to hold a call header: the connection is closed or the call
    ignored; the gateway keeps serving (a later good call on a new connection works)."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    c.send(record(p32(1) + p32(0) + p32(2)))
    c.closed_within(2.0)
    c.close()
    bystander_ok(by)


def case_truncated_record_close(a):
    """Half a record, then close."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    msg = call_msg(7, NFS, 3, 0)
    c.send(p32(0x80000000 | (len(msg) + 1000)) + msg)
    c.close()
    bystander_ok(by)


def case_unknown_program(a):
    """Unknown program: PROG_UNAVAIL, on each of the three ports."""
    by = bystander(a.host)
    for prog in (PMAP, MOUNT, NFS):
        c = Conn(a.host, prog)
        expect_accept(c.call(100099, 1, 0), PROG_UNAVAIL, "program 100099 on port %d" % PORTS[prog])
        c.close()
    bystander_ok(by)


def case_bad_version(a):
    """Known program, unsupported version: PROG_MISMATCH with the supported range."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    for vers in (2, 4):
        r = c.call(NFS, vers, 0)
        expect_accept(r, PROG_MISMATCH, "NFS v%d" % vers)
        if not (r.low <= 3 <= r.high):
            fail("NFS PROG_MISMATCH range %d..%d does not contain 3" % (r.low, r.high))
    c.close()
    c = Conn(a.host, MOUNT)
    r = c.call(MOUNT, 9, 0)
    expect_accept(r, PROG_MISMATCH, "MOUNT v9")
    if not (r.low <= 1 and r.high >= 3):
        fail("MOUNT PROG_MISMATCH range %d..%d" % (r.low, r.high))
    c.close()
    bystander_ok(by)


def case_unknown_procedure(a):
    """Unknown procedure: PROC_UNAVAIL for NFS, MOUNT and the portmapper."""
    by = bystander(a.host)
    for prog, vers, proc in ((NFS, 3, 22), (NFS, 3, 0x7FFFFFFF), (MOUNT, 3, 6), (MOUNT, 1, 99),
                             (PMAP, 2, 99)):
        c = Conn(a.host, prog)
        expect_accept(c.call(prog, vers, proc), PROC_UNAVAIL, "prog %d v%d proc %d" % (prog, vers, proc))
        # The connection stays usable.
        expect_accept(c.call(prog, vers, 0), SUCCESS, "NULL after PROC_UNAVAIL")
        c.close()
    bystander_ok(by)


def case_bad_rpcvers(a):
    """rpcvers 3: MSG_DENIED RPC_MISMATCH (2..2)."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    c.send(record(call_msg(77, NFS, 3, 0, rpcvers=3)))
    try:
        r = parse_reply(c.recv_record(), 77)
    except Closed:
        fail("rpcvers 3 closed the connection instead of RPC_MISMATCH")
    if r.stat != 1 or not r.denied or r.denied[0] != "RPC_MISMATCH" or r.low != 2 or r.high != 2:
        fail("rpcvers 3: got %r, want MSG_DENIED RPC_MISMATCH 2..2" % r)
    c.close()
    bystander_ok(by)


def case_bad_auth(a):
    """An unknown flavour (RPCSEC_GSS) and a malformed AUTH_SYS body: MSG_DENIED AUTH_ERROR."""
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    for what, cred in (("flavour 6", p32(6) + opaque(b"x" * 8)),
                       ("AUTH_SYS body with a 1000-byte machine name",
                        p32(1) + opaque(p32(0) + p32(1000) + b"a" * 8))):
        c.xid += 1
        c.send(record(call_msg(c.xid, NFS, 3, 0, cred=cred)))
        try:
            r = parse_reply(c.recv_record(), c.xid)
        except Closed:
            print("  %s: connection closed" % what)
            c = Conn(a.host, NFS)
            continue
        if r.stat != 1 or not r.denied or r.denied[0] != "AUTH_ERROR":
            fail("%s: got %r, want MSG_DENIED AUTH_ERROR" % (what, r))
        print("  %s: AUTH_ERROR %d" % (what, r.denied[1]))
    c.close()
    bystander_ok(by)


def case_bad_write_length(a):
    """A WRITE whose data length exceeds its record; a handle longer than 64 bytes; a LOOKUP
    name length of 2^32-1: GARBAGE_ARGS (or an NFS error status, or closing the connection),
    never a write."""
    root = mnt(a.host, a.export)
    by = bystander(a.host)
    c = Conn(a.host, NFS)
    f = lookup(c, root, "hostile.dat")
    # WRITE3: fh, offset, count, stable, data<> (announces 1 MB, carries 100 bytes).
    args = opaque(f) + p64(0) + p32(1000000) + p32(2) + p32(1000000) + b"\xee" * 100
    c.xid += 1
    c.send(record(call_msg(c.xid, NFS, 3, 7, args)))
    answered_or_closed(c, "WRITE with a data length past the record", nfs_error_ok=True)
    c.close()

    c = Conn(a.host, NFS)
    args = p32(1000) + b"\1" * 1000 + p64(0) + p32(4) + p32(2) + opaque(b"\xee" * 4)
    c.xid += 1
    c.send(record(call_msg(c.xid, NFS, 3, 7, args)))
    answered_or_closed(c, "WRITE with a 1000-byte handle", nfs_error_ok=True)
    c.close()

    c = Conn(a.host, NFS)
    c.xid += 1
    c.send(record(call_msg(c.xid, NFS, 3, 3, opaque(root) + p32(0xFFFFFFFF) + b"abcd")))
    answered_or_closed(c, "LOOKUP with a 4 GiB name length", nfs_error_ok=True)
    c.close()

    c = Conn(a.host, MOUNT)
    c.xid += 1
    c.send(record(call_msg(c.xid, MOUNT, 3, 1, p32(0x7FFFFFF0) + b"/vm")))
    answered_or_closed(c, "MNT with a 2 GiB path length", nfs_error_ok=True)
    c.close()

    # Nothing was written: the file still holds what the test put there (0x44).
    c = Conn(a.host, NFS)
    r = c.call(NFS, 3, 6, opaque(f) + p64(0) + p32(4096))  # READ3
    expect_accept(r, SUCCESS, "READ after the hostile WRITEs")
    (status,) = struct.unpack(">I", r.body[:4])
    if status != 0:
        fail("READ after the hostile WRITEs: nfsstat3 %d" % status)
    if b"\xee" * 16 in r.body:
        fail("a malformed WRITE reached the file")
    c.close()
    bystander_ok(by)


def case_pipelined_close(a):
    """Thousands of pipelined calls (NULL, GETATTR and 1 MiB READs whose replies queue up),
    then close without reading: the gateway drops the replies."""
    root = mnt(a.host, a.export)
    by = bystander(a.host)
    c0 = Conn(a.host, NFS)
    f = lookup(c0, root, "hostile.dat")
    c0.close()
    for rst in (False, True):
        c = Conn(a.host, NFS)
        batch = bytearray()
        for i in range(3000):
            if i % 3 == 0:
                batch += record(call_msg(i + 1, NFS, 3, 0))
            elif i % 3 == 1:
                batch += record(call_msg(i + 1, NFS, 3, 1, opaque(root)))
            else:
                batch += record(call_msg(i + 1, NFS, 3, 6, opaque(f) + p64((i % 4) << 20) + p32(1 << 20)))
        c.s.settimeout(5)
        try:
            c.send(bytes(batch))
        except (socket.timeout, BrokenPipeError, ConnectionResetError):
            pass  # the gateway stopped reading (in-flight limit): fine, we close anyway
        if rst:  # an abortive close (RST) with replies in flight
            c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    bystander_ok(by)


def case_pipelined_replies(a):
    """200 pipelined calls on one connection are all answered, each xid exactly once."""
    root = mnt(a.host, a.export)
    c = Conn(a.host, NFS)
    xids = set(range(5000, 5200))
    batch = bytearray()
    for x in sorted(xids):
        if x % 2:
            batch += record(call_msg(x, NFS, 3, 0))
        else:
            batch += record(call_msg(x, NFS, 3, 1, opaque(root)))
    c.send(bytes(batch))
    seen = set()
    for _ in xids:
        try:
            r = parse_reply(c.recv_record())
        except Closed:
            fail("closed after %d of %d pipelined replies" % (len(seen), len(xids)))
        if r.xid not in xids or r.xid in seen:
            fail("unexpected or repeated xid %#x" % r.xid)
        expect_accept(r, SUCCESS, "pipelined call %#x" % r.xid)
        seen.add(r.xid)
    c.close()


def case_garbage(a):
    """Random bytes in a well-formed record: answered (GARBAGE_ARGS/any reject) or closed."""
    by = bystander(a.host)
    import random
    rnd = random.Random(1234)
    for i in range(50):
        c = Conn(a.host, [PMAP, MOUNT, NFS][i % 3])
        n = rnd.randrange(1, 600)
        body = bytes(rnd.randrange(256) for _ in range(n))
        if i % 2:  # a valid header, garbage arguments
            body = call_msg(i + 1, [PMAP, MOUNT, NFS][i % 3], [2, 3, 3][i % 3], rnd.randrange(1, 6)) + body
        c.send(record(body))
        c.closed_within(0.3)
        c.close()
    bystander_ok(by)


# ---- probes for the refusal test (not hostile cases): print one value, exit 0

def probe_mnt_status(a):
    """MNT of --path: prints the mountstat3 (0 ok, 13 ACCES, 2 NOENT...)."""
    c = Conn(a.host, MOUNT)
    r = c.call(MOUNT, 3, 1, opaque(a.path.encode()))
    expect_accept(r, SUCCESS, "MNT " + a.path)
    print(struct.unpack(">I", r.body[:4])[0])


def probe_mnt_fh(a):
    """MNT of --path: prints the handle in hex."""
    print(mnt(a.host, a.path).hex())


def probe_getattr_status(a):
    """GETATTR of the handle --fh (hex): prints the nfsstat3."""
    c = Conn(a.host, NFS)
    r = c.call(NFS, 3, 1, opaque(bytes.fromhex(a.fh)))
    expect_accept(r, SUCCESS, "GETATTR")
    print(struct.unpack(">I", r.body[:4])[0])



def case_many_connections(a):
    """More connections than the gateway has file descriptors (73 runs it with ulimit -n 512):
    connections already open keep working, and once the flood closes new ones are served."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    by = bystander(a.host)
    flood = []
    for _ in range(800):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((a.host, PORTS[NFS]))
        except (socket.timeout, ConnectionRefusedError, OSError):
            s.close()
            break
        flood.append(s)
    print("  %d flood connections open" % len(flood))
    expect_accept(by.call(NFS, 3, 0), SUCCESS, "bystander NULL during the flood")
    # One call on the first flood connection: it was accepted before any limit.
    flood[0].sendall(record(call_msg(99, NFS, 3, 0)))
    for s in flood:
        s.close()
    deadline = time.time() + TIMEOUT
    while True:
        try:
            c = Conn(a.host, NFS)
            expect_accept(c.call(NFS, 3, 0), SUCCESS, "NULL after the flood")
            c.close()
            break
        except (Closed, socket.timeout, ConnectionRefusedError):
            if time.time() > deadline:
                fail("no new connection served %.0f s after the flood closed" % TIMEOUT)
            time.sleep(0.2)
    bystander_ok(by)


def probe_lookup_fh(a):
    """MNT of --path, then LOOKUP of --name in it: prints the handle in hex."""
    root = mnt(a.host, a.path)
    c = Conn(a.host, NFS)
    print(lookup(c, root, a.name).hex())
    c.close()


def probe_write_verf(a):
    """WRITE UNSTABLE of 4 KiB at offset 0 and COMMIT on handle --fh: prints both verifiers."""
    f = bytes.fromhex(a.fh)
    c = Conn(a.host, NFS)
    r = c.call(NFS, 3, 7, opaque(f) + p64(0) + p32(4096) + p32(0) + opaque(b"\x5a" * 4096))
    expect_accept(r, SUCCESS, "WRITE")
    b = r.body
    if struct.unpack(">I", b[:4])[0] != 0:
        fail("WRITE: nfsstat3 %d" % struct.unpack(">I", b[:4])[0])
    # wcc_data: pre_op_attr (bool + 24 bytes), post_op_attr (bool + 84 bytes); count, committed.
    off = 4
    off += 4 + (24 if struct.unpack(">I", b[off:off + 4])[0] else 0)
    off += 4 + (84 if struct.unpack(">I", b[off:off + 4])[0] else 0)
    count, committed = struct.unpack(">II", b[off:off + 8])
    wverf = b[off + 8:off + 16]
    if count != 4096:
        fail("WRITE count %d" % count)
    r = c.call(NFS, 3, 21, opaque(f) + p64(0) + p32(0))
    expect_accept(r, SUCCESS, "COMMIT")
    b = r.body
    if struct.unpack(">I", b[:4])[0] != 0:
        fail("COMMIT: nfsstat3 %d" % struct.unpack(">I", b[:4])[0])
    off = 4
    off += 4 + (24 if struct.unpack(">I", b[off:off + 4])[0] else 0)
    off += 4 + (84 if struct.unpack(">I", b[off:off + 4])[0] else 0)
    cverf = b[off:off + 8]
    if cverf != wverf:
        fail("COMMIT verifier %s differs from WRITE's %s" % (cverf.hex(), wverf.hex()))
    print(wverf.hex())
    c.close()


PROBES = {"mnt-status": probe_mnt_status, "mnt-fh": probe_mnt_fh,
          "getattr-status": probe_getattr_status, "lookup-fh": probe_lookup_fh,
          "write-verf": probe_write_verf}

CASES = {name[5:].replace("_", "-"): fn for name, fn in globals().items()
         if name.startswith("case_")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--export", default="/vm")
    ap.add_argument("--path")
    ap.add_argument("--fh")
    ap.add_argument("--name")
    ap.add_argument("case")
    a = ap.parse_args()
    if a.case in PROBES:
        PROBES[a.case](a)
        return
    if a.case == "list":
        print("\n".join(n for n in CASES if n != "pmap-dump"))
        return
    if a.case not in CASES:
        fail("unknown case " + a.case)
    print("case %s: %s" % (a.case, CASES[a.case].__doc__.split("\n")[0]))
    try:
        CASES[a.case](a)
    except Closed:
        fail("connection closed unexpectedly")
    except (ConnectionRefusedError, socket.timeout) as e:
        fail("%s: %s" % (type(e).__name__, e))
    print("case %s: ok" % a.case)


if __name__ == "__main__":
    main()
