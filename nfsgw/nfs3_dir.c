/*
 * nfs3_dir: LOOKUP, READDIR, READDIRPLUS.
 *
 * Directory listings: "." (cookie 1) and ".." (cookie 2) first, then meta_readdir's entries
 * after the client's cookie. Entries are encoded until the client's byte budget would be
 * exceeded (count for READDIR; dircount for the name part and maxcount for the whole reply
 * for READDIRPLUS, sized as XDR encodes them); a budget that fits no entry is
 * NFS3ERR_TOOSMALL. The cookie verifier is meta_dir_version(), for clients' caches only: any
 * verifier is accepted, because meta's cookies stay valid while the directory changes (a
 * listing resumes after its cookie even when that entry went), and libnfs does not restart a
 * listing on NFS3ERR_BAD_COOKIE, so refusing changed verifiers only broke listings of big
 * directories that another client was changing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

#define XDR_PAD(n) (((size_t)(n) + 3) & ~(size_t)3)
#define FATTR3_XDR 84
#define POST_OP_ATTR_XDR (4 + FATTR3_XDR)
#define POST_OP_FH_XDR (4 + 4 + NFS3_FH_LEN)
/* Replies are built in memory: bound them whatever the client allows. */
#define DIR_REPLY_MAX (1u << 20)
/* libnfs encodes the entry list recursively (a frame pair per entry): bound its depth. */
#define DIR_ENTRIES_MAX 4096

/* ".." of dir, not above the export root. */
static uint64_t parent_of(struct nfs3_req *r, const struct meta_attr *dir, uint64_t dirid)
{
	uint64_t root = nfs3_export_root(r);
	if (dirid == root || !dir->parent)
		return dirid;
	return dir->parent;
}

void nfs3_proc_lookup(struct nfs3_req *r)
{
	LOOKUP3args *a = &r->args.lookup;
	LOOKUP3resok *ok = &r->res.lookup.LOOKUP3res_u.resok;
	uint64_t dirid;
	struct meta_attr dir;
	nfsstat3 st = nfs3_resolve(r, &a->what.dir, &dirid, &dir);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	nfs3_post_op_from(r->n, &dir, &r->res.lookup.LOOKUP3res_u.resfail.dir_attributes);
	if (dir.type != META_DIR) {
		nfs3_fail(r, NFS3ERR_NOTDIR);
		return;
	}
	const char *name = a->what.name ? a->what.name : "";
	if (strlen(name) > META_NAME_MAX) {
		nfs3_fail(r, NFS3ERR_NAMETOOLONG);
		return;
	}
	if (nfs3_may(&dir, &r->cred, NFS3_MAY_EXEC, false)) {
		nfs3_fail(r, NFS3ERR_ACCES);
		return;
	}
	uint64_t id;
	if (!*name) {
		nfs3_fail(r, NFS3ERR_NOENT);
		return;
	} else if (!strcmp(name, ".")) {
		id = dirid;
	} else if (!strcmp(name, "..")) {
		id = parent_of(r, &dir, dirid);
	} else {
		int rc = nfs3_lookup_name(r, dirid, name, &id);
		if (rc) {
			nfs3_fail_errno(r, rc);
			return;
		}
	}
	struct meta_attr at;
	if (nfs3_getattr(r, id, &at)) {
		nfs3_fail(r, NFS3ERR_NOENT);
		return;
	}
	/* resok's dir_attributes sits elsewhere than resfail's. */
	nfs3_post_op_from(r->n, &dir, &ok->dir_attributes);
	nfs3_make_fh(r, id, at.gen, r->fh);
	ok->object.data.data_len = NFS3_FH_LEN;
	ok->object.data.data_val = (char *)r->fh;
	nfs3_post_op_from(r->n, &at, &ok->obj_attributes);
	nfs3_fail(r, NFS3_OK);
}

/* ---- READDIR / READDIRPLUS ---- */

struct dent {
	uint64_t fileid, cookie;
	char *name;
	uint8_t fh[NFS3_FH_LEN];
	bool have_attr;
};

struct dlist {
	struct nfs3_req *r;
	bool plus;
	size_t used, budget;   /* whole reply */
	size_t dused, dbudget; /* READDIRPLUS dircount */
	uint32_t n, cap;
	struct dent *e;
	entry3 *e3;
	entryplus3 *ep;
	bool full;
};

static void dlist_free(void *p)
{
	struct dlist *d = p;
	if (!d)
		return;
	for (uint32_t i = 0; i < d->n; i++)
		free(d->e[i].name);
	free(d->e);
	free(d->e3);
	free(d->ep);
	free(d);
}

/* Adds one entry if it fits the budgets; returns 1 when full (entry not taken). */
static int dlist_add(struct dlist *d, const char *name, uint64_t fileid, uint64_t cookie)
{
	size_t nl = strlen(name);
	size_t base = 4 + 8 + 4 + XDR_PAD(nl) + 8;
	size_t sz = base + (d->plus ? POST_OP_ATTR_XDR + POST_OP_FH_XDR : 0);
	if (d->used + sz > d->budget || (d->plus && d->dused + base > d->dbudget) ||
	    d->n >= DIR_ENTRIES_MAX) {
		d->full = true;
		return 1;
	}
	if (d->n == d->cap) {
		uint32_t cap = d->cap ? d->cap * 2 : 64;
		struct dent *ne = realloc(d->e, cap * sizeof(*ne));
		if (!ne) {
			d->full = true;
			return 1;
		}
		d->e = ne;
		d->cap = cap;
	}
	struct dent *e = &d->e[d->n];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	if (!e->name) {
		d->full = true;
		return 1;
	}
	e->fileid = fileid;
	e->cookie = cookie;
	d->n++;
	d->used += sz;
	d->dused += base;
	return 0;
}

static int dlist_fn(void *arg, const char *name, uint64_t fileid, uint64_t cookie)
{
	return dlist_add(arg, name, fileid, cookie);
}

static void readdir_common(struct nfs3_req *r, bool plus)
{
	const nfs_fh3 *fh = plus ? &r->args.readdirplus.dir : &r->args.readdir.dir;
	uint64_t cookie = plus ? r->args.readdirplus.cookie : r->args.readdir.cookie;
	post_op_attr *dattr = plus ? &r->res.readdirplus.READDIRPLUS3res_u.resok.dir_attributes
				   : &r->res.readdir.READDIR3res_u.resok.dir_attributes;
	uint64_t dirid;
	struct meta_attr dir;
	nfsstat3 st = nfs3_resolve(r, fh, &dirid, &dir);
	if (st != NFS3_OK) {
		nfs3_fail(r, st);
		return;
	}
	/* resok and resfail both start with dir_attributes. */
	nfs3_post_op_from(r->n, &dir, dattr);
	if (dir.type != META_DIR) {
		nfs3_fail(r, NFS3ERR_NOTDIR);
		return;
	}
	if (nfs3_may(&dir, &r->cred, NFS3_MAY_READ, false)) {
		nfs3_fail(r, NFS3ERR_ACCES);
		return;
	}
	uint64_t ver = meta_dir_version(r->n->p.meta, dirid);
	uint8_t cv[NFS3_COOKIEVERFSIZE];
	for (int i = 0; i < 8; i++)
		cv[i] = (uint8_t)(ver >> (56 - 8 * i));
	struct dlist *d = calloc(1, sizeof(*d));
	if (!d) {
		nfs3_fail(r, NFS3ERR_SERVERFAULT);
		return;
	}
	r->scratch = d;
	r->scratch_free = dlist_free;
	d->r = r;
	d->plus = plus;
	uint32_t maxc = plus ? r->args.readdirplus.maxcount : r->args.readdir.count;
	d->budget = maxc > DIR_REPLY_MAX ? DIR_REPLY_MAX : maxc;
	d->dbudget = plus ? r->args.readdirplus.dircount : SIZE_MAX;
	/* Linux clients send a small dircount with a large maxcount: treat dircount as a hint
	 * no smaller than what one maxcount's worth of names would need. */
	if (plus && d->dbudget < d->budget / 4)
		d->dbudget = d->budget / 4;
	/* status, dir attributes, verifier, end of list, eof. */
	d->used = 4 + POST_OP_ATTR_XDR + 8 + 4 + 4;
	if (cookie < 1)
		dlist_add(d, ".", dirid, 1);
	if (cookie < 2 && !d->full)
		dlist_add(d, "..", parent_of(r, &dir, dirid), 2);
	if (!d->full) {
		int rc = nfs3_readdir_entries(r, dirid, cookie, dlist_fn, d);
		if (rc < 0) {
			nfs3_fail_errno(r, rc);
			return;
		}
	}
	if (d->n == 0 && d->full) {
		nfs3_fail(r, NFS3ERR_TOOSMALL);
		return;
	}
	bool eof = !d->full;
	if (plus) {
		READDIRPLUS3resok *ok = &r->res.readdirplus.READDIRPLUS3res_u.resok;
		memcpy(ok->cookieverf, cv, sizeof(cv));
		d->ep = calloc(d->n ? d->n : 1, sizeof(*d->ep));
		if (!d->ep) {
			nfs3_fail(r, NFS3ERR_SERVERFAULT);
			return;
		}
		for (uint32_t i = 0; i < d->n; i++) {
			struct dent *e = &d->e[i];
			entryplus3 *x = &d->ep[i];
			x->fileid = e->fileid;
			x->name = e->name;
			x->cookie = e->cookie;
			struct meta_attr at;
			if (nfs3_getattr(r, e->fileid, &at) == 0) {
				nfs3_post_op_from(r->n, &at, &x->name_attributes);
				nfs3_make_fh(r, e->fileid, at.gen, e->fh);
				x->name_handle.handle_follows = 1;
				x->name_handle.post_op_fh3_u.handle.data.data_len = NFS3_FH_LEN;
				x->name_handle.post_op_fh3_u.handle.data.data_val = (char *)e->fh;
			}
			x->nextentry = i + 1 < d->n ? &d->ep[i + 1] : NULL;
		}
		ok->reply.entries = d->n ? d->ep : NULL;
		ok->reply.eof = eof;
	} else {
		READDIR3resok *ok = &r->res.readdir.READDIR3res_u.resok;
		memcpy(ok->cookieverf, cv, sizeof(cv));
		d->e3 = calloc(d->n ? d->n : 1, sizeof(*d->e3));
		if (!d->e3) {
			nfs3_fail(r, NFS3ERR_SERVERFAULT);
			return;
		}
		for (uint32_t i = 0; i < d->n; i++) {
			d->e3[i].fileid = d->e[i].fileid;
			d->e3[i].name = d->e[i].name;
			d->e3[i].cookie = d->e[i].cookie;
			d->e3[i].nextentry = i + 1 < d->n ? &d->e3[i + 1] : NULL;
		}
		ok->reply.entries = d->n ? d->e3 : NULL;
		ok->reply.eof = eof;
	}
	nfs3_fail(r, NFS3_OK);
}

void nfs3_proc_readdir(struct nfs3_req *r)
{
	readdir_common(r, false);
}

void nfs3_proc_readdirplus(struct nfs3_req *r)
{
	readdir_common(r, true);
}
