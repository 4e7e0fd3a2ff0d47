/* proto: header codecs and payload checksums for the replica protocol. See proto.h. */
#include "proto.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

uint64_t proto_hash(const void *buf, size_t len)
{
	return XXH3_64bits(buf, len);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

void proto_req_encode(const struct proto_req *r, uint8_t out[PROTO_REQ_SIZE])
{
	memset(out, 0, PROTO_REQ_SIZE);
	put32(out + 0, PROTO_REQ_MAGIC);
	put16(out + 4, PROTO_VERSION);
	put16(out + 6, r->op);
	put64(out + 8, r->handle);
	put64(out + 16, r->epoch);
	put64(out + 24, r->offset);
	put64(out + 32, r->length);
	put32(out + 40, r->flags);
	put32(out + 44, r->payload_len);
	put64(out + 48, r->arg);
	put64(out + 56, r->payload_hash);
}

int proto_req_decode(const uint8_t in[PROTO_REQ_SIZE], struct proto_req *r)
{
	memset(r, 0, sizeof(*r));
	r->magic = get32(in + 0);
	r->version = get16(in + 4);
	r->op = get16(in + 6);
	r->handle = get64(in + 8);
	r->epoch = get64(in + 16);
	r->offset = get64(in + 24);
	r->length = get64(in + 32);
	r->flags = get32(in + 40);
	r->payload_len = get32(in + 44);
	r->arg = get64(in + 48);
	r->payload_hash = get64(in + 56);
	if (r->magic != PROTO_REQ_MAGIC || r->version != PROTO_VERSION)
		return -EPROTO;
	if (r->op == 0 || r->op >= PROTO_OP_MAX)
		return -EPROTO;
	if (r->payload_len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if ((r->op == PROTO_READ || r->op == PROTO_WRITE || r->op == PROTO_SNAP_READ) &&
	    r->length > PROTO_MAX_IO)
		return -EMSGSIZE;
	if (r->op == PROTO_WRITE && r->payload_len != r->length)
		return -EPROTO;
	return 0;
}

void proto_rep_encode(const struct proto_rep *r, uint8_t out[PROTO_REP_SIZE])
{
	memset(out, 0, PROTO_REP_SIZE);
	put32(out + 0, PROTO_REP_MAGIC);
	put16(out + 4, PROTO_VERSION);
	put16(out + 6, r->op);
	put64(out + 8, r->handle);
	put32(out + 16, (uint32_t)r->status);
	put32(out + 20, r->payload_len);
	put64(out + 24, r->epoch);
	put64(out + 32, r->payload_hash);
}

int proto_rep_decode(const uint8_t in[PROTO_REP_SIZE], struct proto_rep *r)
{
	memset(r, 0, sizeof(*r));
	r->magic = get32(in + 0);
	r->version = get16(in + 4);
	r->op = get16(in + 6);
	r->handle = get64(in + 8);
	r->status = (int32_t)get32(in + 16);
	r->payload_len = get32(in + 20);
	r->epoch = get64(in + 24);
	r->payload_hash = get64(in + 32);
	if (r->magic != PROTO_REP_MAGIC || r->version != PROTO_VERSION)
		return -EPROTO;
	if (r->op == 0 || r->op >= PROTO_OP_MAX)
		return -EPROTO;
	if (r->payload_len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (r->status > 0 || r->status < -4095)
		return -EPROTO;
	return 0;
}

static const char *const op_names[PROTO_OP_MAX] = {
    [PROTO_HELLO] = "HELLO",
    [PROTO_READ] = "READ",
    [PROTO_WRITE] = "WRITE",
    [PROTO_FLUSH] = "FLUSH",
    [PROTO_TRIM] = "TRIM",
    [PROTO_ZERO] = "ZERO",
    [PROTO_INFO] = "INFO",
    [PROTO_OPEN] = "OPEN",
    [PROTO_CLOSE] = "CLOSE",
    [PROTO_MEMBERS] = "MEMBERS",
    [PROTO_DIRTY_PUT] = "DIRTY_PUT",
    [PROTO_DIRTY_GET] = "DIRTY_GET",
    [PROTO_DIRTY_DROP] = "DIRTY_DROP",
    [PROTO_SNAP_CREATE] = "SNAP_CREATE",
    [PROTO_SNAP_DELETE] = "SNAP_DELETE",
    [PROTO_SNAP_REVERT] = "SNAP_REVERT",
    [PROTO_SNAP_LIST] = "SNAP_LIST",
    [PROTO_HASH] = "HASH",
    [PROTO_RESIZE] = "RESIZE",
    [PROTO_CLONE] = "CLONE",
    [PROTO_SNAP_READ] = "SNAP_READ",
    [PROTO_SNAP_HASH] = "SNAP_HASH",
};

const char *proto_op_name(uint16_t op)
{
	if (op < PROTO_OP_MAX && op_names[op])
		return op_names[op];
	return "UNKNOWN";
}

uint64_t proto_get_le64(const uint8_t *p)
{
	return get64(p);
}

void proto_put_le64(uint8_t *p, uint64_t v)
{
	put64(p, v);
}
