/*
 * rpc_msg: RPC call header decoding (incl. AUTH_SYS), reply encoding and argument decoding
 * with libnfs's zdr codecs (see nfsgw/rpc.h).
 *
 * What libnfs 4.0.0's zdr does on ZDR_DECODE (found by experiment and by reading its
 * disassembly; Debian's libnfs13 4.0.0):
 * - zdr_bytes: with *bufp == NULL it makes *bufp point INTO the decode buffer (no copy, no
 *   allocation); with *bufp != NULL it memcpy()s *size bytes into it. maxsize is NOT checked,
 *   and the room check is `(int)(pos + size) > size`, so a length >= 2^31 - pos passes and
 *   leaves pos negative: the next field is read from up to 2 GiB before the buffer (crash).
 * - zdr_string: malloc()s size + 1 bytes on a list owned by the ZDR (freed by zdr_destroy);
 *   maxsize is not checked; a length beyond the buffer fails.
 * - zdr_array: allocates count * elsize from the same ZDR-owned list; maxsize is NOT checked
 *   and count * elsize is a 32-bit product, so a huge count allocates a few bytes and then
 *   decodes elements past that allocation (heap overflow).
 * - zdr_free() is a no-op; zdr_destroy() frees everything the decode allocated.
 * So rpc_decode_args keeps the ZDR in the call until rpc_args_free() destroys it, decoded
 * opaque data may point into c->args (valid until the reply), and this file interposes
 * libnfs_zdr_bytes / _string / _array (the dynamic linker binds libnfs's own codecs to these
 * too): on decode they check the length word against the bytes left (and maxsize, except
 * for zdr_bytes pointing into the buffer: libnfs's own opaque_auth decode passes maxsize 0),
 * then call libnfs's original. Encoding goes straight to the original.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/rpc_int.h"

#define RPC_ENC_FIRST (64u << 10)
#define RPC_ENC_MAX (RPC_MAX_RECORD + (64u << 10))
/* Room after the encode limit: libnfs's fixed-size zdr_opaque writes without a room check. */
#define RPC_ENC_SLACK 1024u

typedef bool_t (*zdr_bytes_fn)(ZDR *, char **, uint32_t *, uint32_t);
typedef bool_t (*zdr_string_fn)(ZDR *, char **, uint32_t);
typedef bool_t (*zdr_array_fn)(ZDR *, char **, uint32_t *, uint32_t, uint32_t, zdrproc_t);

/* libnfs's originals, looked up once before main and never written again. */
static zdr_bytes_fn real_bytes;
static zdr_string_fn real_string;
static zdr_array_fn real_array;

__attribute__((constructor)) static void zdr_originals(void)
{
	*(void **)&real_bytes = dlsym(RTLD_NEXT, "libnfs_zdr_bytes");
	*(void **)&real_string = dlsym(RTLD_NEXT, "libnfs_zdr_string");
	*(void **)&real_array = dlsym(RTLD_NEXT, "libnfs_zdr_array");
}

/* The decode length word at the current position, if there is one and it is sane. */
static bool peek_len(ZDR *z, uint32_t *len)
{
	if (z->pos < 0 || z->size < z->pos || z->size - z->pos < 4)
		return false;
	const uint8_t *p = (const uint8_t *)z->buf + z->pos;
	*len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return true;
}

bool_t libnfs_zdr_bytes(ZDR *z, char **bufp, uint32_t *size, uint32_t maxsize)
{
	if (z->x_op == ZDR_DECODE) {
		uint32_t len;
		if (!peek_len(z, &len) || len > (uint32_t)(z->size - z->pos - 4) ||
		    (*bufp && len > maxsize))
			return FALSE;
	}
	return real_bytes && real_bytes(z, bufp, size, maxsize);
}

bool_t libnfs_zdr_string(ZDR *z, char **strp, uint32_t maxsize)
{
	if (z->x_op == ZDR_DECODE) {
		uint32_t len;
		if (!peek_len(z, &len) || len > (uint32_t)(z->size - z->pos - 4) || len > maxsize)
			return FALSE;
	}
	return real_string && real_string(z, strp, maxsize);
}

bool_t libnfs_zdr_array(ZDR *z, char **arrp, uint32_t *size, uint32_t maxsize, uint32_t elsize,
			zdrproc_t proc)
{
	if (z->x_op == ZDR_DECODE) {
		/* Every XDR element takes at least 4 bytes on the wire. */
		uint32_t n;
		if (!peek_len(z, &n) || n > (uint32_t)(z->size - z->pos - 4) / 4 || n > maxsize ||
		    (uint64_t)n * elsize > UINT32_MAX)
			return FALSE;
	}
	return real_array && real_array(z, arrp, size, maxsize, elsize, proc);
}

struct rd {
	const uint8_t *p;
	uint32_t len, pos;
};

static bool rd32(struct rd *r, uint32_t *v)
{
	if (r->len - r->pos < 4)
		return false;
	const uint8_t *p = r->p + r->pos;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	r->pos += 4;
	return true;
}

/* Skips len bytes plus XDR padding. */
static bool rdskip(struct rd *r, uint32_t len)
{
	uint64_t padded = ((uint64_t)len + 3) & ~3ull;
	if (padded > r->len - r->pos)
		return false;
	r->pos += (uint32_t)padded;
	return true;
}

static bool parse_auth_sys(const uint8_t *p, uint32_t len, struct rpc_cred *cr)
{
	struct rd r = {.p = p, .len = len};
	uint32_t stamp, mlen;
	if (!rd32(&r, &stamp) || !rd32(&r, &mlen) || mlen > RPC_MAX_MACHINE)
		return false;
	const uint8_t *m = p + r.pos;
	if (!rdskip(&r, mlen))
		return false;
	memcpy(cr->machine, m, mlen);
	cr->machine[mlen] = 0;
	if (!rd32(&r, &cr->uid) || !rd32(&r, &cr->gid) || !rd32(&r, &cr->ngids) ||
	    cr->ngids > RPC_MAX_GIDS)
		return false;
	for (uint32_t i = 0; i < cr->ngids; i++)
		if (!rd32(&r, &cr->gids[i]))
			return false;
	return true;
}

enum rpc_parse rpc_parse_call(struct rpc_callx *x)
{
	struct rpc_call *c = &x->call;
	struct rd r = {.p = x->rec, .len = x->rec_len};
	uint32_t mtype, rpcvers, flavor, alen, vflavor, vlen;
	if (!rd32(&r, &c->xid) || !rd32(&r, &mtype) || mtype != 0 || !rd32(&r, &rpcvers))
		return RPC_PARSE_CLOSE;
	if (rpcvers != 2)
		return RPC_PARSE_RPCVERS;
	if (!rd32(&r, &c->prog) || !rd32(&r, &c->vers) || !rd32(&r, &c->proc) ||
	    !rd32(&r, &flavor) || !rd32(&r, &alen))
		return RPC_PARSE_CLOSE;
	if (alen > RPC_MAX_AUTH)
		return RPC_PARSE_BADCRED;
	const uint8_t *cred = x->rec + r.pos;
	if (!rdskip(&r, alen) || !rd32(&r, &vflavor) || !rd32(&r, &vlen))
		return RPC_PARSE_CLOSE;
	if (vlen > RPC_MAX_AUTH)
		return RPC_PARSE_BADCRED;
	if (!rdskip(&r, vlen))
		return RPC_PARSE_CLOSE;
	c->cred.flavor = flavor;
	if (flavor == 1) {
		if (!parse_auth_sys(cred, alen, &c->cred))
			return RPC_PARSE_BADCRED;
	} else if (flavor != 0) {
		return RPC_PARSE_BADCRED;
	}
	c->args = x->rec + r.pos;
	c->args_len = x->rec_len - r.pos;
	return RPC_PARSE_OK;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * Builds record mark + xid + REPLY + words[] + codec(res). extra = bytes that follow the
 * header on the wire (data and its pad), counted in the record mark. NULL when the body does
 * not fit in RPC_ENC_MAX or memory is short.
 */
static struct rpc_out *encode(uint32_t xid, const uint32_t *words, uint32_t nwords, zdrproc_t codec,
			      void *res, uint64_t extra)
{
	uint32_t head = 4 * (3 + nwords);
	for (uint32_t cap = RPC_ENC_FIRST;; cap *= 2) {
		if (cap > RPC_ENC_MAX)
			cap = RPC_ENC_MAX;
		struct rpc_out *o = malloc(sizeof(*o) + cap + RPC_ENC_SLACK);
		if (!o)
			return NULL;
		memset(o, 0, sizeof(*o));
		put32(o->hdr + 4, xid);
		put32(o->hdr + 8, 1);
		for (uint32_t i = 0; i < nwords; i++)
			put32(o->hdr + 12 + 4 * i, words[i]);
		uint32_t len = head;
		bool ok = true;
		if (codec) {
			ZDR z;
			libnfs_zdrmem_create(&z, (caddr_t)(o->hdr + head), cap - head, ZDR_ENCODE);
			ok = codec(&z, res) && z.pos >= 0 && (uint32_t)z.pos <= cap - head;
			if (ok)
				len += (uint32_t)z.pos;
			libnfs_zdr_destroy(&z);
		}
		if (ok) {
			uint64_t rec = (uint64_t)len - 4 + extra;
			if (rec > 0x7fffffffu) {
				free(o);
				return NULL;
			}
			put32(o->hdr, 0x80000000u | (uint32_t)rec);
			o->hdr_len = len;
			struct rpc_out *shrunk = realloc(o, sizeof(*o) + len);
			return shrunk ? shrunk : o;
		}
		free(o);
		if (cap == RPC_ENC_MAX)
			return NULL;
	}
}

static struct rpc_callx *callx(struct rpc_call *c)
{
	return c->priv;
}

static void send_accept(struct rpc_call *c, enum rpc_accept stat)
{
	struct rpc_callx *x = callx(c);
	if (rpc_conn_dead(x->conn)) {
		rpc_finish(x, NULL);
		return;
	}
	uint32_t w[6] = {0, 0, 0, stat, x->low, x->high};
	rpc_finish(x, encode(c->xid, w, stat == RPC_PROG_MISMATCH ? 6 : 4, NULL, NULL, 0));
}

void rpc_reply_accept(struct rpc_call *c, enum rpc_accept stat)
{
	send_accept(c, stat);
}

void rpc_reply_data(struct rpc_call *c, zdrproc_t codec, void *res, const void *data, uint32_t len,
		    void (*release)(void *arg), void *release_arg)
{
	struct rpc_callx *x = callx(c);
	if (rpc_conn_dead(x->conn)) {
		if (release)
			release(release_arg);
		rpc_finish(x, NULL);
		return;
	}
	uint32_t pad = (4 - (len & 3)) & 3;
	uint32_t w[4] = {0, 0, 0, RPC_SUCCESS};
	struct rpc_out *o = encode(c->xid, w, 4, codec, res, (uint64_t)len + pad);
	if (!o) {
		if (release)
			release(release_arg);
		send_accept(c, RPC_SYSTEM_ERR);
		return;
	}
	o->data = data;
	o->data_len = len;
	o->pad = pad;
	o->release = release;
	o->release_arg = release_arg;
	rpc_finish(x, o);
}

void rpc_reply(struct rpc_call *c, zdrproc_t codec, void *res)
{
	struct rpc_callx *x = callx(c);
	if (rpc_conn_dead(x->conn)) {
		rpc_finish(x, NULL);
		return;
	}
	uint32_t w[4] = {0, 0, 0, RPC_SUCCESS};
	struct rpc_out *o = encode(c->xid, w, 4, codec, res, 0);
	if (!o) {
		send_accept(c, RPC_SYSTEM_ERR);
		return;
	}
	rpc_finish(x, o);
}

void rpc_reply_auth_error(struct rpc_call *c, enum rpc_auth_stat stat)
{
	struct rpc_callx *x = callx(c);
	if (rpc_conn_dead(x->conn)) {
		rpc_finish(x, NULL);
		return;
	}
	uint32_t w[3] = {1, 1, stat};
	rpc_finish(x, encode(c->xid, w, 3, NULL, NULL, 0));
}

void rpc_reply_rpcvers(struct rpc_call *c)
{
	struct rpc_callx *x = callx(c);
	if (rpc_conn_dead(x->conn)) {
		rpc_finish(x, NULL);
		return;
	}
	uint32_t w[4] = {1, 0, 2, 2};
	rpc_finish(x, encode(c->xid, w, 4, NULL, NULL, 0));
}

void rpc_drop(struct rpc_call *c)
{
	rpc_finish(callx(c), NULL);
}

int rpc_decode_args(struct rpc_call *c, zdrproc_t codec, void *args, size_t args_size)
{
	struct rpc_callx *x = callx(c);
	memset(args, 0, args_size);
	if (x->zdr_live)
		libnfs_zdr_destroy(&x->zdr);
	/* The record has RPC_REC_SLACK zeroed bytes after it, so codecs that read a fixed-size
	 * opaque without a room check stay inside our buffer; the position check rejects it. */
	libnfs_zdrmem_create(&x->zdr, (caddr_t)c->args, c->args_len, ZDR_DECODE);
	x->zdr_live = true;
	if (!codec(&x->zdr, args) || x->zdr.pos < 0 || (uint32_t)x->zdr.pos > c->args_len) {
		libnfs_zdr_destroy(&x->zdr);
		x->zdr_live = false;
		memset(args, 0, args_size);
		return -EBADMSG;
	}
	return 0;
}

void rpc_args_free(struct rpc_call *c, zdrproc_t codec, void *args)
{
	(void)codec;
	(void)args;
	struct rpc_callx *x = callx(c);
	if (x->zdr_live)
		libnfs_zdr_destroy(&x->zdr);
	x->zdr_live = false;
}
