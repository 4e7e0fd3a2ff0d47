/*
 * snapops: see snapops.h. Payload syntax errors are -EINVAL.
 */
#include "snapops.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "server_priv.h" /* srv_volume_dir(): where a clone goes */

/* A name, optionally followed by NUL and a snapshot identity; trailing NULs are ignored. */
static int parse_name_id(const uint8_t *p, uint32_t plen, char name[STORE_NAME_MAX],
			 char id[STORE_SNAP_ID_MAX])
{
	while (plen && p[plen - 1] == 0)
		plen--;
	id[0] = 0;
	const uint8_t *nul = plen ? memchr(p, 0, plen) : NULL;
	uint32_t nlen = nul ? (uint32_t)(nul - p) : plen;
	if (nlen == 0 || nlen >= STORE_NAME_MAX)
		return -EINVAL;
	memcpy(name, p, nlen);
	name[nlen] = 0;
	if (!store_name_valid(name))
		return -EINVAL;
	if (nul) {
		uint32_t ilen = plen - nlen - 1;
		if (ilen == 0 || ilen >= STORE_SNAP_ID_MAX || memchr(nul + 1, 0, ilen))
			return -EINVAL;
		memcpy(id, nul + 1, ilen);
		id[ilen] = 0;
		if (!store_snap_id_valid(id))
			return -EINVAL;
	}
	return 0;
}

static int take_json(json_t *j, uint8_t **out, uint32_t *outlen)
{
	char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!txt)
		return -ENOMEM;
	*out = (uint8_t *)txt;
	*outlen = (uint32_t)strlen(txt);
	return 0;
}

static int list(struct store *s, uint8_t **out, uint32_t *outlen)
{
	struct store_snap *sn;
	uint32_t n;
	int r = store_snapshot_list(s, &sn, &n);
	if (r < 0)
		return r;
	json_t *a = json_array();
	for (uint32_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_pack("{s:s,s:s,s:I,s:I,s:b,s:b,s:s,s:s}", "name",
						   sn[i].name, "parent", sn[i].parent, "created",
						   (json_int_t)sn[i].created, "allocated",
						   (json_int_t)sn[i].allocated, "in_head_chain",
						   sn[i].in_head_chain, "deleting", sn[i].deleting,
						   "id", sn[i].id, "parent_id", sn[i].parent_id));
	free(sn);
	return take_json(a, out, outlen);
}

static int view_id(const uint8_t *p, uint32_t plen, char id[STORE_SNAP_ID_MAX])
{
	if (plen == 0 || plen >= STORE_SNAP_ID_MAX || memchr(p, 0, plen))
		return -EINVAL;
	memcpy(id, p, plen);
	id[plen] = 0;
	return store_snap_id_valid(id) ? 0 : -EINVAL;
}

static int view(struct store *s, uint16_t op, uint64_t off, uint64_t len, uint64_t arg,
		const char *id, uint8_t **out, uint32_t *outlen)
{
	if (op == PROTO_SNAP_READ) {
		if (len > PROTO_MAX_IO)
			return -EINVAL;
		uint8_t *buf = malloc(len ? len : 1);
		if (!buf)
			return -ENOMEM;
		int r = store_snap_read(s, id, off, (uint32_t)len, buf);
		if (r < 0) {
			free(buf);
			return r;
		}
		*out = buf;
		*outlen = (uint32_t)len;
		return 0;
	}
	if (arg == 0 || arg > UINT32_MAX)
		return -EINVAL;
	uint64_t n = len / arg + (len % arg != 0);
	if (n > PROTO_MAX_PAYLOAD / 8)
		return -EINVAL;
	uint64_t *h = malloc(n ? n * 8 : 1);
	if (!h)
		return -ENOMEM;
	int r = store_snap_hash(s, id, off, len, (uint32_t)arg, h);
	if (r < 0) {
		free(h);
		return r;
	}
	uint8_t *p = (uint8_t *)h;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = h[i];
		for (int b = 0; b < 8; b++)
			p[i * 8 + b] = (uint8_t)(v >> (8 * b));
	}
	*out = p;
	*outlen = (uint32_t)(n * 8);
	return 0;
}

static int copy_name(const char *s, char out[STORE_NAME_MAX])
{
	if (!s || strlen(s) >= STORE_NAME_MAX || !store_name_valid(s))
		return -EINVAL;
	strcpy(out, s);
	return 0;
}

/* {"snapshot","name"[,"members":[node,...]]}: members lists the nodes the clone is made on,
 * so that the clone's replica set names only nodes that have a replica of it. */
static int clone_op(struct replica_server *srv, struct store *s, const uint8_t *p, uint32_t plen)
{
	json_error_t jerr;
	if (!srv)
		return -EOPNOTSUPP;
	if (!plen)
		return -EINVAL;
	json_t *j = json_loadb((const char *)p, plen, 0, &jerr);
	char snap[STORE_NAME_MAX], name[STORE_NAME_MAX], dir[4096];
	struct store_member m[STORE_MAX_MEMBERS];
	uint32_t nm = 0;
	int e = copy_name(json_string_value(json_object_get(j, "snapshot")), snap);
	if (e == 0)
		e = copy_name(json_string_value(json_object_get(j, "name")), name);
	json_t *ms = json_object_get(j, "members"), *v;
	size_t i;
	if (e == 0 && ms &&
	    (!json_is_array(ms) || json_array_size(ms) == 0 ||
	     json_array_size(ms) > STORE_MAX_MEMBERS))
		e = -EINVAL;
	if (e == 0 && ms) {
		memset(m, 0, sizeof(m));
		json_array_foreach(ms, i, v)
		{
			if ((e = copy_name(json_string_value(v), m[i].node)) < 0)
				break;
			m[i].in_sync = true;
		}
		nm = (uint32_t)json_array_size(ms);
	}
	json_decref(j);
	if (e == 0)
		e = srv_volume_dir(srv, name, dir, sizeof(dir));
	if (e == 0)
		e = store_clone_members(s, snap, dir, name, nm ? m : NULL, nm);
	return e;
}

int snapops_exec(struct replica_server *srv, struct store *s, uint16_t op, uint64_t off,
		 uint64_t len, uint64_t arg, const uint8_t *payload, uint32_t plen, uint8_t **out,
		 uint32_t *outlen)
{
	char name[STORE_NAME_MAX], id[STORE_SNAP_ID_MAX];
	int r;
	*out = NULL;
	*outlen = 0;
	switch (op) {
	case PROTO_SNAP_CREATE:
		r = parse_name_id(payload, plen, name, id);
		return r < 0 ? r : store_snapshot_create_id(s, name, id[0] ? id : NULL);
	case PROTO_SNAP_REVERT:
		if (plen == 0 && arg == 1)
			return store_snapshot_revert_root(s);
		r = parse_name_id(payload, plen, name, id);
		return r < 0 ? r : id[0] ? -EINVAL : store_snapshot_revert(s, name);
	case PROTO_SNAP_LIST:
		return list(s, out, outlen);
	case PROTO_SNAP_READ:
	case PROTO_SNAP_HASH:
		r = view_id(payload, plen, id);
		return r < 0 ? r : view(s, op, off, len, arg, id, out, outlen);
	case PROTO_CLONE:
		return clone_op(srv, s, payload, plen);
	default:
		return -EOPNOTSUPP;
	}
}
