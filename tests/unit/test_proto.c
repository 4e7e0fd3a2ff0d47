/* test_proto: header codec round trips and every bound proto_req_decode enforces. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "replica/proto.h"

static struct proto_req sample_req(void)
{
	struct proto_req r = {
	    .op = PROTO_WRITE,
	    .handle = 0x0102030405060708ull,
	    .epoch = 0x1122334455667788ull,
	    .offset = 0xdeadbeef000ull,
	    .length = 4096,
	    .flags = PROTO_FLAG_FUA,
	    .payload_len = 4096,
	    .arg = 0xa5a5a5a5a5a5a5a5ull,
	    .payload_hash = 0xfedcba9876543210ull,
	};
	return r;
}

static void test_req_roundtrip(void **state)
{
	(void)state;
	struct proto_req in = sample_req(), out;
	uint8_t buf[PROTO_REQ_SIZE];
	proto_req_encode(&in, buf);
	/* Fixed wire positions: little-endian magic first, reserved tail zero. */
	assert_memory_equal(buf, "BRQ1", 4);
	assert_int_equal(buf[4], 1);
	assert_int_equal(buf[6], PROTO_WRITE);
	assert_int_equal(buf[8], 0x08);
	for (int i = 56; i < 64; i++)
		assert_int_equal(buf[i], (uint8_t)(in.payload_hash >> (8 * (i - 56))));
	assert_int_equal(proto_req_decode(buf, &out), 0);
	assert_int_equal(out.magic, PROTO_REQ_MAGIC);
	assert_int_equal(out.version, PROTO_VERSION);
	assert_int_equal(out.op, in.op);
	assert_true(out.handle == in.handle);
	assert_true(out.epoch == in.epoch);
	assert_true(out.offset == in.offset);
	assert_true(out.length == in.length);
	assert_int_equal(out.flags, in.flags);
	assert_int_equal(out.payload_len, in.payload_len);
	assert_true(out.arg == in.arg);
	assert_true(out.payload_hash == in.payload_hash);
}

static void test_rep_roundtrip(void **state)
{
	(void)state;
	struct proto_rep in =
			     {
				 .op = PROTO_READ,
				 .handle = 0x8877665544332211ull,
				 .status = -ESTALE,
				 .payload_len = 12345,
				 .epoch = 77,
				 .payload_hash = 0x0123456789abcdefull,
			     },
			 out;
	uint8_t buf[PROTO_REP_SIZE];
	proto_rep_encode(&in, buf);
	assert_memory_equal(buf, "BRP1", 4);
	assert_int_equal(proto_rep_decode(buf, &out), 0);
	assert_int_equal(out.op, in.op);
	assert_true(out.handle == in.handle);
	assert_int_equal(out.status, -ESTALE);
	assert_int_equal(out.payload_len, in.payload_len);
	assert_true(out.epoch == in.epoch);
	assert_true(out.payload_hash == in.payload_hash);
}

static int decode_modified(void (*mod)(struct proto_req *r, uint8_t *buf))
{
	struct proto_req r = sample_req(), out;
	uint8_t buf[PROTO_REQ_SIZE];
	mod(&r, NULL);
	proto_req_encode(&r, buf);
	mod(&r, buf);
	return proto_req_decode(buf, &out);
}

static void bad_magic(struct proto_req *r, uint8_t *buf)
{
	(void)r;
	if (buf)
		buf[0] ^= 0xff;
}

static void bad_version(struct proto_req *r, uint8_t *buf)
{
	(void)r;
	if (buf)
		buf[4] = 2;
}

static void op_zero(struct proto_req *r, uint8_t *buf)
{
	if (!buf)
		r->op = 0;
}

static void op_max(struct proto_req *r, uint8_t *buf)
{
	if (!buf)
		r->op = PROTO_OP_MAX;
}

static void op_huge(struct proto_req *r, uint8_t *buf)
{
	if (!buf)
		r->op = 0xffff;
}

static void payload_oversize(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_MEMBERS;
		r->payload_len = PROTO_MAX_PAYLOAD + 1;
	}
}

static void payload_max(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_MEMBERS;
		r->payload_len = PROTO_MAX_PAYLOAD;
	}
}

static void read_oversize(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_READ;
		r->payload_len = 0;
		r->length = PROTO_MAX_IO + 1;
	}
}

static void read_max(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_READ;
		r->payload_len = 0;
		r->length = PROTO_MAX_IO;
	}
}

static void snap_read_oversize(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_SNAP_READ;
		r->payload_len = 0;
		r->length = PROTO_MAX_IO + 1;
	}
}

static void snap_read_max(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_SNAP_READ;
		r->payload_len = 0;
		r->length = PROTO_MAX_IO;
	}
}

static void snap_hash_huge(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_SNAP_HASH;
		r->payload_len = 0;
		r->length = 1ull << 40;
	}
}

static void write_oversize(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->length = PROTO_MAX_IO + 1;
		r->payload_len = PROTO_MAX_IO + 1;
	}
}

static void write_max(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->length = PROTO_MAX_IO;
		r->payload_len = PROTO_MAX_IO;
	}
}

static void write_len_mismatch(struct proto_req *r, uint8_t *buf)
{
	if (!buf)
		r->payload_len = (uint32_t)r->length - 1;
}

static void trim_huge(struct proto_req *r, uint8_t *buf)
{
	if (!buf) {
		r->op = PROTO_TRIM;
		r->payload_len = 0;
		r->length = 1ull << 40;
	}
}

static void test_req_bounds(void **state)
{
	(void)state;
	assert_int_equal(decode_modified(bad_magic), -EPROTO);
	assert_int_equal(decode_modified(bad_version), -EPROTO);
	assert_int_equal(decode_modified(op_zero), -EPROTO);
	assert_int_equal(decode_modified(op_max), -EPROTO);
	assert_int_equal(decode_modified(op_huge), -EPROTO);
	assert_int_equal(decode_modified(payload_oversize), -EMSGSIZE);
	assert_int_equal(decode_modified(payload_max), 0);
	assert_int_equal(decode_modified(read_oversize), -EMSGSIZE);
	assert_int_equal(decode_modified(read_max), 0);
	assert_int_equal(decode_modified(snap_read_oversize), -EMSGSIZE);
	assert_int_equal(decode_modified(snap_read_max), 0);
	assert_int_equal(decode_modified(snap_hash_huge), 0);
	assert_int_equal(decode_modified(write_oversize), -EMSGSIZE);
	assert_int_equal(decode_modified(write_max), 0);
	assert_int_equal(decode_modified(write_len_mismatch), -EPROTO);
	/* TRIM/ZERO/HASH lengths are not bounded by the I/O limit. */
	assert_int_equal(decode_modified(trim_huge), 0);
}

static void test_rep_bounds(void **state)
{
	(void)state;
	struct proto_rep r = {.op = PROTO_INFO, .handle = 1}, out;
	uint8_t buf[PROTO_REP_SIZE];

	proto_rep_encode(&r, buf);
	buf[1] ^= 1;
	assert_int_equal(proto_rep_decode(buf, &out), -EPROTO);

	proto_rep_encode(&r, buf);
	buf[4] = 9;
	assert_int_equal(proto_rep_decode(buf, &out), -EPROTO);

	r.op = PROTO_OP_MAX;
	proto_rep_encode(&r, buf);
	assert_int_equal(proto_rep_decode(buf, &out), -EPROTO);

	r.op = PROTO_READ;
	r.payload_len = PROTO_MAX_PAYLOAD + 1;
	proto_rep_encode(&r, buf);
	assert_int_equal(proto_rep_decode(buf, &out), -EMSGSIZE);

	r.payload_len = 0;
	r.status = 5; /* positive statuses are not errnos */
	proto_rep_encode(&r, buf);
	assert_int_equal(proto_rep_decode(buf, &out), -EPROTO);

	r.status = -5000;
	proto_rep_encode(&r, buf);
	assert_int_equal(proto_rep_decode(buf, &out), -EPROTO);

	r.status = -4095;
	proto_rep_encode(&r, buf);
	assert_int_equal(proto_rep_decode(buf, &out), 0);
}

static void test_hash(void **state)
{
	(void)state;
	uint8_t a[100], b[100];
	for (int i = 0; i < 100; i++)
		a[i] = b[i] = (uint8_t)i;
	assert_true(proto_hash(a, sizeof(a)) == proto_hash(b, sizeof(b)));
	b[99] ^= 1;
	assert_true(proto_hash(a, sizeof(a)) != proto_hash(b, sizeof(b)));
	assert_true(proto_hash(a, 0) == proto_hash(b, 0));
}

static void test_op_names(void **state)
{
	(void)state;
	assert_string_equal(proto_op_name(PROTO_HELLO), "HELLO");
	assert_string_equal(proto_op_name(PROTO_CLONE), "CLONE");
	assert_string_equal(proto_op_name(PROTO_SNAP_READ), "SNAP_READ");
	assert_string_equal(proto_op_name(PROTO_SNAP_HASH), "SNAP_HASH");
	assert_string_equal(proto_op_name(0), "UNKNOWN");
	assert_string_equal(proto_op_name(PROTO_OP_MAX), "UNKNOWN");
	for (uint16_t op = 1; op < PROTO_OP_MAX; op++)
		assert_string_not_equal(proto_op_name(op), "UNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_req_roundtrip), cmocka_unit_test(test_rep_roundtrip),
	    cmocka_unit_test(test_req_bounds),	  cmocka_unit_test(test_rep_bounds),
	    cmocka_unit_test(test_hash),	  cmocka_unit_test(test_op_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
