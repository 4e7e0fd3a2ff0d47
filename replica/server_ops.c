/*
 * server_ops: executes one verified replica-protocol request against its volume's store and
 * finishes it with srv_req_done(). Enforces the protocol rules that are not framing: HELLO
 * first (-EPROTO), epoch fencing (-ESTALE), payload syntax (-EINVAL). Payload formats are in
 * docs/ARCHITECTURE.md, "Replica protocol".
 */
#include "server_priv.h"
#include "snapops.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* exec()'s answer when a store callback will finish the request. */
#define ASYNC (1 << 30)

/* A name payload may or may not carry a trailing NUL. */
static int payload_name(const struct srv_req *r, char out[STORE_NAME_MAX])
{
	uint32_t len = r->req.payload_len;
	while (len && r->payload[len - 1] == 0)
		len--;
	if (len == 0 || len >= STORE_NAME_MAX || memchr(r->payload, 0, len))
		return -EINVAL;
	memcpy(out, r->payload, len);
	out[len] = 0;
	return store_name_valid(out) ? 0 : -EINVAL;
}

static int copy_name(const char *s, char out[STORE_NAME_MAX])
{
	if (!s || strlen(s) >= STORE_NAME_MAX || !store_name_valid(s))
		return -EINVAL;
	strcpy(out, s);
	return 0;
}

/* Hands a malloc'd JSON text to the reply. */
static int reply_json(struct srv_req *r, json_t *j)
{
	if (!j)
		return -ENOMEM;
	char *txt = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!txt)
		return -ENOMEM;
	r->rpayload = (uint8_t *)txt;
	r->rlen = (uint32_t)strlen(txt);
	return 0;
}

static int info_reply(struct srv_req *r)
{
	struct store_info in;
	int e = store_get_info(r->vol->st, &in);
	if (e < 0)
		return e;
	json_t *members = json_array();
	for (uint32_t i = 0; i < in.nmembers && i < STORE_MAX_MEMBERS; i++)
		json_array_append_new(members, json_pack("{s:s,s:b}", "node", in.members[i].node,
							 "in_sync", in.members[i].in_sync));
	const struct srv_store *v = r->vol;
	json_t *holder = v->held ? json_pack("{s:s,s:I}", "label", v->hold_label, "epoch",
					     (json_int_t)v->hold_epoch)
				 : json_null();
	return reply_json(
	    r, json_pack("{s:s,s:s,s:I,s:I,s:I,s:o,s:I,s:b,s:I,s:s,s:o}", "name", in.name, "uuid",
			 in.uuid, "size", (json_int_t)in.size, "epoch", (json_int_t)in.epoch,
			 "members_gen", (json_int_t)in.members_gen, "members", members, "allocated",
			 (json_int_t)in.allocated, "clean", in.clean, "snapshots",
			 (json_int_t)in.nsnapshots, "node", r->c->srv->node, "holder", holder));
}

/*
 * Closes the engine's older connections to vol: what they still hold unread (writes the
 * engine abandoned when it ejected this replica) must not land after the engine's resync
 * over the new connection. Requests already in the store finish; their replies are dropped.
 */
static void fence_older(struct srv_conn *c, struct srv_store *vol)
{
	struct srv_conn *x = c->srv->conns;
	while (x) {
		struct srv_conn *next = x->next; /* the kill may free x */
		if (x != c && !x->dead && x->vol == vol && x->session &&
		    x->sess_engine == vol->sess_engine && x->session < vol->sess_max)
			srv_conn_kill(x, "superseded by a newer session of its engine");
		x = next;
	}
}

/*
 * HELLO's payload: volume [NUL label] (trailing NULs allowed; engines before labels send
 * just the volume). The label must be printable: it ends up in operators' error messages.
 */
static int hello_payload(const struct srv_req *r, char name[STORE_NAME_MAX],
			 char label[PROTO_LABEL_MAX])
{
	uint32_t len = r->req.payload_len;
	while (len && r->payload[len - 1] == 0)
		len--;
	const uint8_t *nul = len ? memchr(r->payload, 0, len) : NULL;
	uint32_t nlen = nul ? (uint32_t)(nul - r->payload) : len;
	uint32_t llen = nul ? len - nlen - 1 : 0;
	if (nlen == 0 || nlen >= STORE_NAME_MAX || llen >= PROTO_LABEL_MAX)
		return -EINVAL;
	memcpy(name, r->payload, nlen);
	name[nlen] = 0;
	for (uint32_t i = 0; i < llen; i++)
		if (nul[1 + i] < 0x20 || nul[1 + i] > 0x7e)
			return -EINVAL;
	if (llen)
		memcpy(label, nul + 1, llen);
	label[llen] = 0;
	return store_name_valid(name) ? 0 : -EINVAL;
}

static bool same_engine(const struct srv_conn *x, const struct srv_conn *c)
{
	return !x->dead && x->vol == c->vol &&
	       (c->sess_engine ? x->sess_engine == c->sess_engine : x == c);
}

void srv_hold_conn_gone(struct srv_conn *c)
{
	struct srv_store *vol = c->vol;
	if (!vol || !vol->held || c->srv->freeing)
		return;
	if (vol->hold_conn ? vol->hold_conn != c
			   : !c->sess_engine || vol->hold_engine != c->sess_engine)
		return;
	for (struct srv_conn *x = c->srv->conns; x; x = x->next)
		if (x != c && same_engine(x, c))
			return;
	vol->held = false;
	vol->hold_conn = NULL;
}

static void hold_set(struct srv_store *vol, struct srv_conn *c, uint64_t epoch)
{
	vol->held = true;
	vol->hold_engine = c->sess_engine;
	vol->hold_conn = c->sess_engine ? NULL : c;
	vol->hold_epoch = epoch;
	snprintf(vol->hold_label, sizeof(vol->hold_label), "%s", c->label);
}

static int op_hello(struct srv_req *r)
{
	char name[STORE_NAME_MAX], label[PROTO_LABEL_MAX];
	struct srv_store *vol;
	int e = hello_payload(r, name, label);
	if (e < 0)
		return e;
	e = srv_store_get(r->c->srv, name, &vol);
	if (e < 0)
		return e;
	uint64_t id = r->req.offset, sess = r->req.arg;
	if (sess && vol->sess_engine == id && sess < vol->sess_max)
		return -ESTALE;
	if (r->c->vol && r->c->vol != vol)
		srv_hold_conn_gone(r->c); /* rebinding: it no longer holds the old volume */
	/* Bound before older connections are fenced, so the engine never looks gone. */
	r->c->vol = vol;
	r->c->sess_engine = id;
	r->c->session = sess;
	snprintf(r->c->label, sizeof(r->c->label), "%s", label);
	r->vol = vol;
	if (sess) {
		vol->sess_engine = id;
		vol->sess_max = sess;
		fence_older(r->c, vol);
	}
	/* Its engine took a replica back that it had let go, and nobody opened it since. */
	if (!vol->held && id && vol->hold_engine == id && vol->hold_epoch == store_epoch(vol->st))
		hold_set(vol, r->c, vol->hold_epoch);
	return info_reply(r);
}

static int op_members(struct srv_req *r)
{
	struct store_member m[STORE_MAX_MEMBERS];
	json_error_t jerr;
	if (!r->req.payload_len)
		return -EINVAL;
	json_t *j = json_loadb((const char *)r->payload, r->req.payload_len, 0, &jerr);
	json_t *gen = json_object_get(j, "gen"), *arr = json_object_get(j, "members");
	int e = -EINVAL;
	if (!json_is_integer(gen) || json_integer_value(gen) < 0 || !json_is_array(arr) ||
	    json_array_size(arr) > STORE_MAX_MEMBERS)
		goto out;
	memset(m, 0, sizeof(m));
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v)
	{
		json_t *in_sync = json_object_get(v, "in_sync");
		if (copy_name(json_string_value(json_object_get(v, "node")), m[i].node) < 0 ||
		    !json_is_boolean(in_sync))
			goto out;
		m[i].in_sync = json_is_true(in_sync);
	}
	e = store_set_members(r->vol->st, m, (uint32_t)json_array_size(arr),
			      (uint64_t)json_integer_value(gen));
out:
	json_decref(j);
	return e;
}

static int op_dirty_put(struct srv_req *r)
{
	const uint8_t *nul = r->req.payload_len ? memchr(r->payload, 0, r->req.payload_len) : NULL;
	if (!nul)
		return -EINVAL;
	size_t jlen = (size_t)(nul - r->payload);
	json_error_t jerr;
	json_t *j = json_loadb((const char *)r->payload, jlen, 0, &jerr);
	json_t *grain = json_object_get(j, "grain");
	char member[STORE_NAME_MAX];
	int e = -EINVAL;
	if (copy_name(json_string_value(json_object_get(j, "member")), member) == 0 &&
	    json_is_integer(grain) && json_integer_value(grain) > 0 &&
	    json_integer_value(grain) <= UINT32_MAX)
		e = store_put_dirty(r->vol->st, member, (uint32_t)json_integer_value(grain),
				    nul + 1, r->req.payload_len - jlen - 1);
	json_decref(j);
	return e;
}

static int op_dirty_get(struct srv_req *r)
{
	char member[STORE_NAME_MAX];
	uint32_t grain;
	uint8_t *bits = NULL;
	size_t n = 0;
	int e = payload_name(r, member);
	if (e < 0)
		return e;
	e = store_get_dirty(r->vol->st, member, &grain, &bits, &n);
	if (e < 0)
		return e;
	if (n > PROTO_MAX_PAYLOAD - 4) {
		free(bits);
		return -EFBIG;
	}
	r->rpayload = malloc(4 + n);
	if (!r->rpayload) {
		free(bits);
		return -ENOMEM;
	}
	for (int i = 0; i < 4; i++)
		r->rpayload[i] = (uint8_t)(grain >> (8 * i));
	if (n)
		memcpy(r->rpayload + 4, bits, n);
	r->rlen = (uint32_t)(4 + n);
	free(bits);
	return 0;
}

static int op_hash(struct srv_req *r)
{
	uint64_t len = r->req.length, ext = r->req.arg;
	if (ext == 0 || ext > UINT32_MAX)
		return -EINVAL;
	uint64_t n = len / ext + (len % ext != 0);
	if (n > PROTO_MAX_PAYLOAD / 8)
		return -EINVAL;
	if (n == 0)
		return 0;
	uint64_t *h = malloc(n * 8);
	if (!h)
		return -ENOMEM;
	int e = store_hash(r->vol->st, r->req.offset, len, (uint32_t)ext, h);
	if (e < 0) {
		free(h);
		return e;
	}
	uint8_t *p = (uint8_t *)h;
	for (uint64_t i = 0; i < n; i++)
		proto_put_le64(p + i * 8,
			       h[i]); /* in place: entry i is read before it is written */
	r->rpayload = p;
	r->rlen = (uint32_t)(n * 8);
	return 0;
}

/* Snapshot control ops shared with the engine's local targets (snapops.c). */
static int op_snapops(struct srv_req *r)
{
	uint8_t *out;
	uint32_t outlen;
	int e = snapops_exec(r->c->srv, r->vol->st, r->req.op, r->req.offset, r->req.length,
			     r->req.arg, r->payload, r->req.payload_len, &out, &outlen);
	if (e == 0) {
		r->rpayload = out;
		r->rlen = outlen;
	}
	return e;
}

static int op_snap_delete(struct srv_req *r)
{
	char name[STORE_NAME_MAX];
	int e = payload_name(r, name);
	if (e < 0)
		return e;
	e = store_snapshot_delete(r->vol->st, name);
	if (e == 0) {
		r->vol->merging = true;
		srv_merge_kick(r->c->srv);
	}
	return e;
}

static void io_cb(void *arg, int res)
{
	srv_req_done(arg, res < 0 ? res : 0);
}

/*
 * A dead connection's requests take no further store steps: its volume may already be
 * closed (server freed, replica destroyed) and nobody waits for the reply.
 */
static void close_cb(void *arg, int res)
{
	struct srv_req *r = arg;
	if (res >= 0 && !r->c->dead)
		res = store_set_clean(r->vol->st, true);
	srv_req_done(r, res < 0 ? res : 0);
}

static void write_cb(void *arg, int res)
{
	struct srv_req *r = arg;
	if (res >= 0 && (r->req.flags & PROTO_FLAG_FUA) && !r->c->dead) {
		res = store_flush(r->vol->st, io_cb, r);
		if (res >= 0)
			return;
	}
	srv_req_done(r, res < 0 ? res : 0);
}

/* Starts an asynchronous op; ASYNC when the store's callback will finish r. */
static int start_io(struct srv_req *r)
{
	struct store *st = r->vol->st;
	const struct proto_req *h = &r->req;
	int e;
	switch (h->op) {
	case PROTO_READ:
		if (h->length == 0)
			return 0;
		r->rpayload = malloc(h->length);
		if (!r->rpayload)
			return -ENOMEM;
		r->rlen = (uint32_t)h->length;
		e = store_read(st, h->offset, (uint32_t)h->length, r->rpayload, io_cb, r);
		break;
	case PROTO_WRITE:
		e = store_write(st, h->offset, (uint32_t)h->length, r->payload, write_cb, r);
		break;
	case PROTO_FLUSH:
		e = store_flush(st, io_cb, r);
		break;
	case PROTO_TRIM:
	case PROTO_ZERO:
		e = store_trim(st, h->offset, h->length, h->op == PROTO_ZERO, io_cb, r);
		break;
	case PROTO_CLOSE:
		e = store_flush(st, close_cb, r);
		break;
	default:
		return -EOPNOTSUPP;
	}
	return e < 0 ? e : ASYNC;
}

static int exec(struct srv_req *r)
{
	const struct proto_req *h = &r->req;
	if (h->op == PROTO_HELLO)
		return op_hello(r);
	if (!r->c->vol)
		return -EPROTO;
	r->vol = r->c->vol;
	if (r->c->session && r->c->sess_engine == r->vol->sess_engine &&
	    r->c->session < r->vol->sess_max)
		return -ESTALE; /* superseded (fence_older closes such a connection) */
	struct store *st = r->vol->st;
	if (h->op != PROTO_INFO && h->op != PROTO_OPEN && h->epoch != store_epoch(st))
		return -ESTALE;
	int e;
	switch (h->op) {
	case PROTO_INFO:
		return info_reply(r);
	case PROTO_OPEN:
		e = store_bump_epoch(st, h->epoch);
		if (e == 0)
			e = store_set_clean(st, false);
		if (e == 0)
			hold_set(r->vol, r->c, h->epoch);
		return e;
	case PROTO_MEMBERS:
		return op_members(r);
	case PROTO_DIRTY_PUT:
		return op_dirty_put(r);
	case PROTO_DIRTY_GET:
		return op_dirty_get(r);
	case PROTO_DIRTY_DROP: {
		char member[STORE_NAME_MAX];
		e = payload_name(r, member);
		return e < 0 ? e : store_drop_dirty(st, member);
	}
	case PROTO_SNAP_DELETE:
		return op_snap_delete(r);
	case PROTO_SNAP_CREATE:
	case PROTO_SNAP_REVERT:
	case PROTO_SNAP_LIST:
	case PROTO_SNAP_READ:
	case PROTO_SNAP_HASH:
	case PROTO_CLONE:
		return op_snapops(r);
	case PROTO_HASH:
		return op_hash(r);
	case PROTO_RESIZE:
		return store_resize(st, h->arg);
	default:
		return start_io(r);
	}
}

void srv_exec(struct srv_req *r)
{
	int e = exec(r);
	if (e != ASYNC)
		srv_req_done(r, e < 0 ? e : 0);
}
