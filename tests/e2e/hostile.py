#!/usr/bin/env python3
"""Hostile clients for blockd's replica and NBD ports (used by 50_hostile.sh).

Each case opens its own connection, sends something malformed, and expects an error reply
or a closed connection within a few seconds; a well-behaved connection opened first must
still work after every case. Exits non-zero on the first surprise."""
import ctypes
import os
import socket
import struct
import sys

xxh = ctypes.CDLL("libxxhash.so.0")
xxh.XXH3_64bits.restype = ctypes.c_uint64
xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def h(b):
    return xxh.XXH3_64bits(b, len(b))


REQ, REP = 0x31515242, 0x31505242
HELLO, READ, WRITE = 1, 2, 3


def req(op, handle=1, epoch=0, off=0, length=0, flags=0, payload=b"", plen=None, phash=None, magic=REQ, ver=1, arg=0):
    plen = len(payload) if plen is None else plen
    phash = h(payload) if phash is None else phash
    return struct.pack("<IHHQQQQIIQQ", magic, ver, op, handle, epoch, off, length, flags, plen, arg, phash) + payload


def conn(host, port):
    s = socket.create_connection((host, port), timeout=5)
    return s


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return b
        b += c
    return b


def expect_closed(s, what):
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return
    except socket.timeout:
        sys.exit(f"FAIL: {what}: connection neither answered nor closed")
    except ConnectionResetError:
        return


def rep(s):
    hdr = recv_exact(s, 48)
    if len(hdr) < 48:
        return None
    magic, ver, op, handle, status, plen, epoch, phash = struct.unpack("<IHHQiIQQ", hdr[:40])
    payload = recv_exact(s, plen)
    return status, payload


def replica_cases(host, port):
    good = conn(host, port)
    good.sendall(req(HELLO, payload=b"vol"))
    r = rep(good)
    assert r and r[0] == 0, f"good HELLO failed: {r}"

    def check_good():
        good.sendall(req(HELLO, handle=7, payload=b"vol"))
        r = rep(good)
        assert r and r[0] == 0, f"good connection broke: {r}"

    cases = [
        ("random bytes", os.urandom(64)),
        ("bad magic", req(HELLO, magic=0xDEADBEEF, payload=b"vol")),
        ("bad version", req(HELLO, ver=9, payload=b"vol")),
        ("oversize payload", req(WRITE, plen=0xFFFFFFFF)),
        ("unknown op", req(999)),
        ("huge read", req(READ, length=1 << 40)),
        ("truncated header", req(HELLO, payload=b"vol")[:30]),
    ]
    for what, data in cases:
        s = conn(host, port)
        s.sendall(data)
        if what == "truncated header":
            s.close()
        else:
            expect_closed(s, what)
        check_good()
        print("replica:", what, "-> closed")

    s = conn(host, port)
    s.sendall(req(HELLO, payload=b"vol", phash=12345))
    r = rep(s)
    assert r and r[0] == -74, f"bad checksum: expected -EBADMSG, got {r}"
    s.sendall(req(WRITE, length=4, payload=b"abcd"))
    r = rep(s)
    assert r and r[0] == -71, f"write before HELLO: expected -EPROTO, got {r}"
    s.sendall(req(HELLO, payload=b"../etc"))
    r = rep(s)
    assert r and r[0] == -22, f"bad volume name: expected -EINVAL, got {r}"
    s.sendall(req(HELLO, payload=b"nosuch"))
    r = rep(s)
    assert r and r[0] == -2, f"missing volume: expected -ENOENT, got {r}"
    s.close()
    print("replica: bad checksum, request before HELLO, bad and missing volume -> errors")

    s = conn(host, port)
    s.sendall(req(HELLO, payload=b"vol") + b"".join(req(READ, handle=i, length=65536, off=i * 65536) for i in range(200)))
    s.close()
    check_good()
    print("replica: 200 pipelined reads then close -> survived")
    good.close()


NBDMAGIC, IHAVEOPT = 0x4E42444D41474943, 0x49484156454F5054
REQ_MAGIC, REPLY_MAGIC = 0x25609513, 0x67446698


def nbd_connect(host, port, export=b"vol"):
    s = conn(host, port)
    hdr = recv_exact(s, 18)
    assert len(hdr) == 18, "no NBD greeting"
    magic, opt, flags = struct.unpack(">QQH", hdr)
    assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack(">QII", IHAVEOPT, 1, len(export)) + export)  # EXPORT_NAME
    info = recv_exact(s, 10)
    assert len(info) == 10, "export refused"
    size, tflags = struct.unpack(">QH", info)
    return s, size


def nbd_req(typ, handle, off, length, flags=0, magic=REQ_MAGIC):
    return struct.pack(">IHHQQI", magic, flags, typ, handle, off, length)


def nbd_reply(s):
    r = recv_exact(s, 16)
    if len(r) < 16:
        return None
    magic, err, handle = struct.unpack(">IIQ", r)
    assert magic == REPLY_MAGIC, "bad reply magic"
    return err, handle


def nbd_cases(host, port):
    good, size = nbd_connect(host, port)

    def check_good():
        good.sendall(nbd_req(0, 42, 0, 4096))
        r = nbd_reply(good)
        assert r == (0, 42), f"good NBD connection broke: {r}"
        data = recv_exact(good, 4096)
        assert data == b"\x5a" * 4096, "good NBD read returned wrong data"

    s = conn(host, port)
    recv_exact(s, 18)
    s.sendall(b"\xff\xff\xff\xff" + os.urandom(60))
    expect_closed(s, "bad client flags")
    check_good()
    print("nbd: bad client flags -> closed")

    s = conn(host, port)
    recv_exact(s, 18)
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 1, 0xFFFFFFF0))
    expect_closed(s, "oversize option")
    check_good()
    print("nbd: oversize option -> closed")

    s, _ = nbd_connect(host, port)
    s.sendall(nbd_req(0, 1, size, 4096))
    r = nbd_reply(s)
    assert r and r[0] != 0, f"read past end: expected an error, got {r}"
    s.sendall(nbd_req(0, 2, 0, 0))
    r = nbd_reply(s)
    assert r and r[0] != 0, f"zero-length read: expected an error, got {r}"
    s.sendall(nbd_req(77, 3, 0, 4096))
    r = nbd_reply(s)
    assert r and r[0] != 0, f"unknown command: expected an error, got {r}"
    s.sendall(nbd_req(0, 4, 0, 4096))
    r = nbd_reply(s)
    assert r == (0, 4), f"connection unusable after errors: {r}"
    recv_exact(s, 4096)
    s.sendall(nbd_req(0, 5, 0, 4096, magic=0x12345678))
    expect_closed(s, "bad request magic")
    check_good()
    print("nbd: past end, zero length, unknown command -> errors; bad magic -> closed")

    s, _ = nbd_connect(host, port)
    s.sendall(b"".join(nbd_req(1, i, 2 << 20, 65536) + b"\x00" * 65536 for i in range(64)))
    s.close()
    check_good()
    print("nbd: 64 pipelined writes then close -> survived")
    good.close()


if __name__ == "__main__":
    host, rport, nport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    replica_cases(host, rport)
    nbd_cases(host, nport)
    print("hostile: all cases handled")
