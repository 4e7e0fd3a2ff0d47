/*
 * proto: the replica wire protocol between an engine and the replicas it drives.
 *
 * One TCP connection carries one volume (chosen by HELLO). Requests are pipelined: the
 * client sends as many as it likes, each tagged with a handle; replies come back in any
 * order with the same handle. Every frame is a fixed header (64 bytes for a request, 48 for a
 * reply), little-endian, followed by payload_len bytes of payload whose XXH3-64 is in the header;
 * the receiver verifies it and answers -EBADMSG (or closes) on mismatch. A header whose magic,
 * version, op or payload_len is out of bounds closes the connection: nothing after it can be
 * framed.
 *
 * Every request but HELLO carries the sender's epoch. A replica answers -ESTALE to a
 * request whose epoch is lower than the one it has accepted (OPEN), which fences a stale
 * engine for good.
 *
 * HELLO may carry a session (arg, non-zero) and an engine id (offset). An engine uses a strictly
 * increasing session for each new connection to a replica. Once a HELLO with a higher session
 * of the same engine id binds a volume, the replica closes that engine's older connections to
 * it, dropping their unread requests: writes still queued in a connection the engine gave up
 * on are never applied after the engine has moved on (resync). A HELLO with a lower session
 * than the highest seen for that engine gets -ESTALE. Session 0 (or none): no fencing.
 *
 * HELLO's payload is the volume name, optionally followed by NUL and a label naming the engine's
 * host. The connection whose OPEN succeeded last makes its engine (id + label) the volume's
 * *holder*, reported by INFO as {"label","epoch"} until that engine's last connection to the
 * volume closes or a newer OPEN replaces it: who else would be fenced by opening it.
 *
 * Data ops carry raw bytes; control ops carry small JSON documents (see docs/ARCHITECTURE.md
 * for each op's payload).
 */
#ifndef BLOCKD_PROTO_H
#define BLOCKD_PROTO_H

#include <stdint.h>
#include <stddef.h>

#define PROTO_REQ_MAGIC 0x31515242u /* "BRQ1" */
#define PROTO_REP_MAGIC 0x31505242u /* "BRP1" */
#define PROTO_VERSION 1
#define PROTO_REQ_SIZE 64
#define PROTO_REP_SIZE 48
#define PROTO_MAX_PAYLOAD (32u << 20)
#define PROTO_MAX_IO (8u << 20) /* largest READ/WRITE length */

enum proto_op {
	PROTO_HELLO =
	    1, /* payload: volume [NUL label]; arg: session, offset: engine id. reply: INFO */
	PROTO_READ = 2,		/* offset, length. reply payload: data */
	PROTO_WRITE = 3,	/* offset, payload: data; flags may have FUA */
	PROTO_FLUSH = 4,	/* durable on disk before the reply */
	PROTO_TRIM = 5,		/* offset, length */
	PROTO_ZERO = 6,		/* like TRIM but guaranteed zeros */
	PROTO_INFO = 7,		/* reply: JSON info (size, epoch, members, snapshots...) */
	PROTO_OPEN = 8,		/* bump epoch to hdr.epoch; -ESTALE if not greater */
	PROTO_CLOSE = 9,	/* engine detaches cleanly: flush, mark clean */
	PROTO_MEMBERS = 10,	/* payload: JSON {gen, members:[{node,in_sync}]} */
	PROTO_DIRTY_PUT = 11,	/* payload: JSON {member, grain} + NUL + bitmap bytes */
	PROTO_DIRTY_GET = 12,	/* payload: member name. reply: grain(u32) + bitmap bytes */
	PROTO_DIRTY_DROP = 13,	/* payload: member name */
	PROTO_SNAP_CREATE = 14, /* payload: snapshot name [NUL identity] */
	PROTO_SNAP_DELETE = 15, /* payload: snapshot name */
	PROTO_SNAP_REVERT = 16, /* payload: snapshot name; none and arg 1: to an empty chain */
	PROTO_SNAP_LIST = 17,	/* reply: JSON array */
	PROTO_HASH = 18,	/* offset, length, arg=extent. reply: little-endian u64 hashes */
	PROTO_RESIZE = 19,	/* arg: new size */
	PROTO_CLONE = 20,	/* payload: JSON {snapshot, name}: clone on this node */
	/* Snapshot catch-up: the view as of snapshot payload (its identity, see SNAP_LIST). */
	PROTO_SNAP_READ = 21, /* offset, length (<= PROTO_MAX_IO), payload: id. reply: data */
	PROTO_SNAP_HASH = 22, /* like HASH, payload: id */
	PROTO_OP_MAX = 23,
};

#define PROTO_FLAG_FUA 1u
/* HELLO's optional label (who runs the engine, e.g. "node2" or "nfsgw gw1 10.0.0.5"):
 * printable ASCII, at most PROTO_LABEL_MAX - 1 bytes. */
#define PROTO_LABEL_MAX 64

/* Request header, as decoded. On the wire: little-endian, fields in this order, 64 bytes. */
struct proto_req {
	uint32_t magic;
	uint16_t version;
	uint16_t op;
	uint64_t handle;
	uint64_t epoch;
	uint64_t offset;
	uint64_t length; /* READ/WRITE: at most PROTO_MAX_IO; TRIM/ZERO/HASH: any */
	uint32_t flags;
	uint32_t payload_len;
	uint64_t arg; /* HASH: extent size; RESIZE: new size */
	uint64_t payload_hash;
	/* 0 on the wire: the header is 64 bytes with these 8 bytes reserved */
};

/* Reply header: little-endian, 48 bytes. */
struct proto_rep {
	uint32_t magic;
	uint16_t version;
	uint16_t op;
	uint64_t handle;
	int32_t status; /* 0 or -errno */
	uint32_t payload_len;
	uint64_t epoch; /* the replica's accepted epoch */
	uint64_t payload_hash;
	/* 8 reserved bytes */
};

uint64_t proto_hash(const void *buf, size_t len);

void proto_req_encode(const struct proto_req *r, uint8_t out[PROTO_REQ_SIZE]);
/* Bound-checks: -EPROTO for bad magic/version/op, -EMSGSIZE for oversize payload or I/O. */
int proto_req_decode(const uint8_t in[PROTO_REQ_SIZE], struct proto_req *r);
void proto_rep_encode(const struct proto_rep *r, uint8_t out[PROTO_REP_SIZE]);
int proto_rep_decode(const uint8_t in[PROTO_REP_SIZE], struct proto_rep *r);

const char *proto_op_name(uint16_t op);

/* Little-endian u64 at p: how HASH replies and other u64 payloads are laid out. */
uint64_t proto_get_le64(const uint8_t *p);
void proto_put_le64(uint8_t *p, uint64_t v);

#endif
