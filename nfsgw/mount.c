/*
 * mount: the MOUNT program (100005) v1-v3 (see mount.h). v2 is served like v1 (its
 * procedures 0-5 are v1's), so a client probing versions never gets a mismatch in between.
 *
 * Every call is answered synchronously: the file system lookups behind resolve never block.
 * Paths are normalised (so "/vm-shared/../etc" cannot escape an export) and checked against
 * MNTPATHLEN ourselves, because libnfs's string codec ignores its maximum.
 */
#include "nfsgw/mount.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <nfsc/libnfs-raw-mount.h>

struct mount_entry {
	struct mount_entry *prev, *next; /* oldest first */
	char client[INET6_ADDRSTRLEN];
	char *path;
};

struct mount_prog {
	struct mount_fs fs;
	struct mount_entry *head, *tail;
	uint32_t nentries;
};

static void peer_text(const struct sockaddr_storage *peer, char *out, size_t len)
{
	out[0] = 0;
	if (peer->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, out,
			  (socklen_t)len);
	} else if (peer->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
		/* A v4-mapped peer is listed as the IPv4 address the exports name. */
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, a->s6_addr + 12, out, (socklen_t)len);
		else
			inet_ntop(AF_INET6, a, out, (socklen_t)len);
	}
}

static void entry_unlink(struct mount_prog *m, struct mount_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		m->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		m->tail = e->prev;
	m->nentries--;
	free(e->path);
	free(e);
}

static void entry_add(struct mount_prog *m, const char *client, const char *path)
{
	for (struct mount_entry *e = m->head; e; e = e->next)
		if (!strcmp(e->client, client) && !strcmp(e->path, path))
			return;
	struct mount_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->path = strdup(path);
	if (!e->path) {
		free(e);
		return;
	}
	snprintf(e->client, sizeof(e->client), "%s", client);
	if (m->nentries == MOUNT_MAX_ENTRIES)
		entry_unlink(m, m->head);
	e->prev = m->tail;
	if (m->tail)
		m->tail->next = e;
	else
		m->head = e;
	m->tail = e;
	m->nentries++;
}

/* Removes client's entries for path (every entry of client when path is NULL). */
static void entry_remove(struct mount_prog *m, const char *client, const char *path)
{
	struct mount_entry *next;
	for (struct mount_entry *e = m->head; e; e = next) {
		next = e->next;
		if (!strcmp(e->client, client) && (!path || !strcmp(e->path, path)))
			entry_unlink(m, e);
	}
}

/* Decodes a dirpath argument and normalises it into out. Returns 0, -EBADMSG (garbage),
 * -ENAMETOOLONG, or -EINVAL (not an absolute path). */
static int decode_path(struct rpc_call *c, char *out)
{
	/* libnfs's string codec does not enforce MNTPATHLEN the same way on every version:
	 * an over-long but well-formed path is answered NAMETOOLONG here, not GARBAGE_ARGS. */
	if (c->args_len >= 4) {
		const uint8_t *a = c->args;
		uint32_t len =
		    (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
		if (len > MNTPATHLEN && len <= c->args_len - 4)
			return -ENAMETOOLONG;
	}
	dirpath p = NULL;
	if (rpc_decode_args(c, (zdrproc_t)zdr_dirpath, &p, sizeof(p)))
		return -EBADMSG;
	int r = 0;
	if (!p)
		r = -EINVAL;
	else if (strlen(p) > MNTPATHLEN)
		r = -ENAMETOOLONG;
	else if (exports_normalize_path(p, out))
		r = -EINVAL;
	rpc_args_free(c, (zdrproc_t)zdr_dirpath, &p);
	return r;
}

static mountstat3 mnt_status(int err)
{
	switch (err) {
	case 0:
		return MNT3_OK;
	case -ENOENT:
		return MNT3ERR_NOENT;
	case -ENOTDIR:
		return MNT3ERR_NOTDIR;
	case -EACCES:
	case -EPERM:
		return MNT3ERR_ACCES;
	case -ENAMETOOLONG:
		return MNT3ERR_NAMETOOLONG;
	case -EINVAL:
		return MNT3ERR_INVAL;
	default:
		return MNT3ERR_IO;
	}
}

/* The access and lookup part of MNT: 0 with the handle, or a negative errno. */
static int mnt_resolve(struct mount_prog *m, struct rpc_call *c, const char *path, uint8_t *fh,
		       uint32_t *fh_len)
{
	const struct exports *ex = m->fs.exports(m->fs.ctx);
	const char *rest;
	const struct export *e = exports_find_prefix(ex, path, &rest);
	if (!e || !export_match(e, &c->peer))
		return -EACCES;
	*fh_len = 0;
	int r = m->fs.resolve(m->fs.ctx, e, path, fh, fh_len);
	if (r)
		return r;
	if (*fh_len == 0 || *fh_len > FHSIZE3)
		return -EIO;
	return 0;
}

static void do_mnt(struct mount_prog *m, struct rpc_call *c)
{
	char path[EXPORT_PATH_MAX];
	int r = decode_path(c, path);
	if (r == -EBADMSG) {
		rpc_reply_accept(c, RPC_GARBAGE_ARGS);
		return;
	}
	/* A relative path is under no export. */
	if (r == -EINVAL)
		r = -EACCES;
	uint8_t fh[FHSIZE3];
	uint32_t fh_len = 0;
	if (!r)
		r = mnt_resolve(m, c, path, fh, &fh_len);
	if (!r && c->vers < 3 && fh_len > FHSIZE)
		r = -EIO;
	if (!r) {
		char client[INET6_ADDRSTRLEN];
		peer_text(&c->peer, client, sizeof(client));
		entry_add(m, client, path);
	}
	if (c->vers == 3) {
		mountres3 res;
		int flavors[2] = {1 /* AUTH_SYS */, 0 /* AUTH_NONE */};
		memset(&res, 0, sizeof(res));
		res.fhs_status = mnt_status(r);
		if (!r) {
			mountres3_ok *ok = &res.mountres3_u.mountinfo;
			ok->fhandle.fhandle3_len = fh_len;
			ok->fhandle.fhandle3_val = (char *)fh;
			ok->auth_flavors.auth_flavors_len = 2;
			ok->auth_flavors.auth_flavors_val = flavors;
		}
		rpc_reply(c, (zdrproc_t)zdr_mountres3, &res);
		return;
	}
	mountres1 res;
	memset(&res, 0, sizeof(res));
	res.fhs_status = (mountstat1)mnt_status(r); /* the same numbers in v1 */
	if (!r)
		memcpy(res.mountres1_u.mountinfo.fhandle, fh, fh_len);
	rpc_reply(c, (zdrproc_t)zdr_mountres1, &res);
}

static void do_dump(struct mount_prog *m, struct rpc_call *c)
{
	mountbody *nodes = NULL;
	if (m->nentries) {
		nodes = calloc(m->nentries, sizeof(*nodes));
		if (!nodes) {
			rpc_reply_accept(c, RPC_SYSTEM_ERR);
			return;
		}
	}
	uint32_t i = 0;
	for (struct mount_entry *e = m->head; e; e = e->next, i++) {
		nodes[i].ml_hostname = e->client;
		nodes[i].ml_directory = e->path;
		nodes[i].ml_next = e->next ? &nodes[i + 1] : NULL;
	}
	mountlist list = nodes;
	rpc_reply(c, (zdrproc_t)zdr_mountlist, &list);
	free(nodes);
}

static void do_export(struct mount_prog *m, struct rpc_call *c)
{
	const struct exports *ex = m->fs.exports(m->fs.ctx);
	uint32_t ngroups = 0;
	for (uint32_t i = 0; i < ex->n; i++)
		ngroups += ex->e[i].nclients;
	exportnode *nodes = calloc(ex->n ? ex->n : 1, sizeof(*nodes));
	groupnode *groups = calloc(ngroups ? ngroups : 1, sizeof(*groups));
	if (!nodes || !groups) {
		free(nodes);
		free(groups);
		rpc_reply_accept(c, RPC_SYSTEM_ERR);
		return;
	}
	uint32_t g = 0;
	for (uint32_t i = 0; i < ex->n; i++) {
		const struct export *e = &ex->e[i];
		nodes[i].ex_dir = (char *)e->path;
		nodes[i].ex_next = i + 1 < ex->n ? &nodes[i + 1] : NULL;
		nodes[i].ex_groups = e->nclients ? &groups[g] : NULL;
		for (uint32_t j = 0; j < e->nclients; j++, g++) {
			groups[g].gr_name = (char *)e->clients[j].spec;
			groups[g].gr_next = j + 1 < e->nclients ? &groups[g + 1] : NULL;
		}
	}
	exports list = ex->n ? nodes : NULL;
	rpc_reply(c, (zdrproc_t)zdr_exports, &list);
	free(nodes);
	free(groups);
}

static void do_umnt(struct mount_prog *m, struct rpc_call *c, bool all)
{
	char client[INET6_ADDRSTRLEN];
	peer_text(&c->peer, client, sizeof(client));
	if (all) {
		entry_remove(m, client, NULL);
		rpc_reply(c, NULL, NULL);
		return;
	}
	char path[EXPORT_PATH_MAX];
	int r = decode_path(c, path);
	if (r == -EBADMSG) {
		rpc_reply_accept(c, RPC_GARBAGE_ARGS);
		return;
	}
	/* UMNT has no status: an unknown or malformed path is simply not in the list. */
	if (!r)
		entry_remove(m, client, path);
	rpc_reply(c, NULL, NULL);
}

static void dispatch(void *ctx, struct rpc_call *c)
{
	struct mount_prog *m = ctx;
	switch (c->proc) {
	case 0: /* NULL */
		rpc_reply(c, NULL, NULL);
		return;
	case 1:
		do_mnt(m, c);
		return;
	case 2:
		do_dump(m, c);
		return;
	case 3:
		do_umnt(m, c, false);
		return;
	case 4:
		do_umnt(m, c, true);
		return;
	case 5:
		do_export(m, c);
		return;
	default:
		rpc_reply_accept(c, RPC_PROC_UNAVAIL);
		return;
	}
}

int mount_prog_new(struct rpc_server *s, const struct mount_fs *fs, struct mount_prog **out)
{
	if (!fs || !fs->resolve || !fs->exports)
		return -EINVAL;
	struct mount_prog *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->fs = *fs;
	const struct rpc_program p = {
	    .prog = MOUNT_PROG, .vers_low = 1, .vers_high = 3, .dispatch = dispatch, .ctx = m};
	int r = rpc_server_add_program(s, &p);
	if (r) {
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void mount_prog_free(struct mount_prog *m)
{
	if (!m)
		return;
	while (m->head)
		entry_unlink(m, m->head);
	free(m);
}

void mount_prog_each(struct mount_prog *m,
		     void (*fn)(void *arg, const char *client, const char *path), void *arg)
{
	for (struct mount_entry *e = m->head; e; e = e->next)
		fn(arg, e->client, e->path);
}
