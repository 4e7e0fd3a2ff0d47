/*
 * gateway_exports: the gateway's export table. The replicated text in the meta is the truth;
 * a configured exports file replaces it at start-up, and export add/rm change both (so a
 * restart that reads the file again keeps the change). Every export's directory exists in
 * the tree (created mode 0755 root:root when missing), so MNT of an export always finds it.
 *
 * A replaced table is kept for GW_OLD_TABLE_MS because MOUNT and NFS handlers may hold
 * pointers into it across asynchronous steps of one call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nfsgw/gateway_int.h"

#define GW_OLD_TABLE_MS 120000
#define GW_EXPORTS_FILE_MAX (1u << 20)

/* One change of the table (start-up load, add, rm) waiting for its meta callbacks. */
struct gw_change {
	struct gateway *g;
	unsigned pending; /* meta callbacks outstanding, +1 while issuing */
	int err;
	gateway_cb cb;
	void *arg;
	void (*load_cb)(struct gateway *g, int res);
};

int gw_read_exports_file(struct gateway *g, char *err, size_t errlen)
{
	if (!g->cfg.exports[0])
		return 0;
	FILE *f = fopen(g->cfg.exports, "re");
	if (!f) {
		int e = -errno;
		snprintf(err, errlen, "exports file %s: %s", g->cfg.exports, strerror(-e));
		return e;
	}
	char *buf = malloc(GW_EXPORTS_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	size_t n = fread(buf, 1, GW_EXPORTS_FILE_MAX + 1, f);
	bool bad = ferror(f);
	fclose(f);
	if (bad || n > GW_EXPORTS_FILE_MAX) {
		free(buf);
		snprintf(err, errlen, "exports file %s: %s", g->cfg.exports,
			 bad ? "read error" : "larger than 1 MiB");
		return -EINVAL;
	}
	buf[n] = 0;
	struct exports *ex = malloc(sizeof(*ex));
	if (!ex) {
		free(buf);
		return -ENOMEM;
	}
	char perr[256];
	int r = exports_parse(buf, ex, perr, sizeof(perr));
	free(ex);
	if (r) {
		snprintf(err, errlen, "exports file %s: %s", g->cfg.exports, perr);
		free(buf);
		return r;
	}
	g->file_text = buf;
	return 0;
}

/* Rewrites the configured exports file (tmp + rename) so a restart keeps API changes. */
static void write_exports_file(struct gateway *g, const char *text)
{
	if (!g->cfg.exports[0])
		return;
	char tmp[CONFIG_PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", g->cfg.exports, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int r = fd < 0 ? -errno : 0;
	static const char head[] = "# exports(5) lines of the NFS gateway (rewritten by "
				   "'blockctl export add|rm')\n";
	if (!r && (write(fd, head, sizeof(head) - 1) != (ssize_t)(sizeof(head) - 1) ||
		   write(fd, text, strlen(text)) != (ssize_t)strlen(text)))
		r = -EIO;
	if (fd >= 0 && close(fd) && !r)
		r = -errno;
	if (!r && rename(tmp, g->cfg.exports))
		r = -errno;
	if (r) {
		unlink(tmp);
		gw_log(g,
		       "cannot rewrite exports file %s: %s (the change is replicated but a "
		       "restart will read the old file)",
		       g->cfg.exports, strerror(-r));
	}
}

static void old_free(void *arg)
{
	struct gw_old_table *o = arg;
	struct gateway *g = o->g;
	for (struct gw_old_table **pp = &g->old; *pp; pp = &(*pp)->next) {
		if (*pp == o) {
			*pp = o->next;
			break;
		}
	}
	free(o->ex);
	free(o);
}

/* Makes ex the current table; the previous one is freed later. */
static void install(struct gateway *g, struct exports *ex)
{
	struct exports *prev = g->ex;
	g->ex = ex;
	if (!prev)
		return;
	struct gw_old_table *o = calloc(1, sizeof(*o));
	if (o) {
		o->ex = prev;
		o->g = g;
		if (loop_timer_add(g->l, GW_OLD_TABLE_MS, old_free, o, &o->t) == 0) {
			o->next = g->old;
			g->old = o;
			return;
		}
		free(o);
	}
	/* Cannot defer: keeping it forever is safer than freeing it under a request. */
}

void gw_exports_free(struct gateway *g)
{
	while (g->old) {
		struct gw_old_table *o = g->old;
		g->old = o->next;
		loop_timer_cancel(g->l, o->t);
		free(o->ex);
		free(o);
	}
	free(g->ex);
	g->ex = NULL;
	free(g->file_text);
	g->file_text = NULL;
}

const struct exports *gw_exports(void *ctx)
{
	struct gateway *g = ctx;
	static const struct exports empty;
	return g->ex ? g->ex : &empty;
}

/* Walks path (normalised, absolute) from the root; *fileid gets the last component's. */
int gw_mount_resolve(void *ctx, const struct export *e, const char *path, uint8_t *fh,
		     uint32_t *fh_len)
{
	struct gateway *g = ctx;
	if (!g->meta || g->state != GW_SERVING)
		return -EIO;
	/* Through the NFS layer's resolver, so that `.snapshots/...` paths mount too. */
	uint64_t id, gen;
	enum meta_type type;
	int r = nfs3_path_resolve(g->meta, e->path, path, &id, &gen, &type);
	if (r)
		return r;
	if (type != META_DIR)
		return -ENOTDIR;
	struct meta_info info;
	meta_info(g->meta, &info);
	nfs3_fh_encode(fh, e->id, info.fsid, id, gen);
	*fh_len = NFS3_FH_LEN;
	return 0;
}

static void change_step(void *arg, int res)
{
	struct gw_change *c = arg;
	if (res && !c->err)
		c->err = res;
	if (--c->pending)
		return;
	if (c->load_cb)
		c->load_cb(c->g, c->err);
	else if (c->cb)
		c->cb(c->arg, c->err);
	free(c);
}

/* Creates the missing directories of path (mode 0755, root). Errors other than "exists
 * but is not a directory" fail the change. */
static void ensure_dir(struct gw_change *c, const char *path)
{
	struct meta *m = c->g->meta;
	uint64_t id = META_ROOT;
	const char *s = path;
	while (*s) {
		while (*s == '/')
			s++;
		if (!*s)
			break;
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		char name[META_NAME_MAX + 1];
		if (n > META_NAME_MAX) {
			gw_log(c->g, "export %s: a component is longer than %d bytes", path,
			       META_NAME_MAX);
			return;
		}
		memcpy(name, s, n);
		name[n] = 0;
		s += n;
		uint64_t next;
		int r = meta_lookup(m, id, name, &next);
		if (r == -ENOENT) {
			const struct meta_create_args a = {.dir = id,
							   .name = name,
							   .type = META_DIR,
							   .mode = 0755,
							   .exclusive = true};
			bool existed = false;
			r = meta_create(m, &a, &next, &existed, change_step, c);
			if (r == 0)
				c->pending++;
		}
		if (r) {
			gw_log(c->g, "export %s: cannot create its directory: %s", path,
			       strerror(-r));
			if (r != -ENOTDIR && !c->err)
				c->err = r;
			return;
		}
		id = next;
	}
	struct meta_attr a;
	if (meta_getattr(m, id, &a) == 0 && a.type != META_DIR)
		gw_log(c->g, "export %s: exists and is not a directory (MNT will fail)", path);
}

static struct gw_change *change_new(struct gateway *g)
{
	struct gw_change *c = calloc(1, sizeof(*c));
	if (c) {
		c->g = g;
		c->pending = 1;
	}
	return c;
}

/* Persists text when it differs from the replicated one. */
static void set_text(struct gw_change *c, const char *text)
{
	const char *cur = meta_exports_text(c->g->meta);
	if (cur && !strcmp(cur, text))
		return;
	if (!cur && !*text)
		return;
	int r = meta_set_exports_text(c->g->meta, text, change_step, c);
	if (r == 0)
		c->pending++;
	else if (!c->err)
		c->err = r;
}

int gw_exports_load(struct gateway *g, void (*cb)(struct gateway *g, int res))
{
	struct exports *ex = calloc(1, sizeof(*ex));
	struct gw_change *c = change_new(g);
	if (!ex || !c) {
		free(ex);
		free(c);
		return -ENOMEM;
	}
	c->load_cb = cb;
	const char *text = g->file_text;
	if (!text)
		text = meta_exports_text(g->meta);
	char perr[256] = "";
	int r = exports_parse(text ? text : "", ex, perr, sizeof(perr));
	if (r) {
		gw_log(g, "the replicated export table does not parse: %s", perr);
		free(ex);
		free(c);
		return r;
	}
	if (g->file_text) {
		/* Stored canonical, so the text the API shows matches what is served. */
		char *canon = malloc(GW_EXPORTS_FILE_MAX);
		if (!canon || exports_format(ex, canon, GW_EXPORTS_FILE_MAX) < 0) {
			free(canon);
			free(ex);
			free(c);
			return -ENOMEM;
		}
		set_text(c, canon);
		free(canon);
	}
	if (ex->n == 0)
		gw_log(g, "no exports configured (add one with 'blockctl export add')");
	for (uint32_t i = 0; i < ex->n; i++)
		ensure_dir(c, ex->e[i].path);
	install(g, ex);
	change_step(c, 0);
	return 0;
}

char *gateway_exports_text(struct gateway *g)
{
	const struct exports *ex = gw_exports(g);
	size_t cap = 4096;
	for (;;) {
		char *buf = malloc(cap);
		if (!buf)
			return NULL;
		int n = exports_format(ex, buf, cap);
		if (n >= 0)
			return buf;
		free(buf);
		if (cap > 64u << 20)
			return NULL;
		cap *= 4;
	}
}

/* Installs ex (the whole new table): text, file, directories, then cb. */
static int apply(struct gateway *g, struct exports *ex, const char *dir_to_create, gateway_cb cb,
		 void *arg)
{
	if (g->state != GW_SERVING || !g->meta) {
		free(ex);
		return -EAGAIN;
	}
	struct gw_change *c = change_new(g);
	char *text = malloc(GW_EXPORTS_FILE_MAX);
	if (!c || !text || exports_format(ex, text, GW_EXPORTS_FILE_MAX) < 0) {
		free(c);
		free(text);
		free(ex);
		return -ENOMEM;
	}
	c->cb = cb;
	c->arg = arg;
	set_text(c, text);
	if (c->err) {
		int r = c->err;
		free(text);
		free(ex);
		if (c->pending == 1) {
			free(c);
			return r;
		}
		change_step(c, 0);
		return 0;
	}
	if (dir_to_create)
		ensure_dir(c, dir_to_create);
	write_exports_file(g, text);
	free(text);
	install(g, ex);
	change_step(c, 0);
	return 0;
}

int gateway_export_add(struct gateway *g, const char *line, char *err, size_t errlen, gateway_cb cb,
		       void *arg)
{
	struct exports *one = calloc(1, sizeof(*one));
	if (!one)
		return -ENOMEM;
	int r = exports_parse(line, one, err, errlen);
	if (!r && one->n != 1) {
		snprintf(err, errlen, "expected exactly one export line, got %u", one->n);
		r = -EINVAL;
	}
	if (r) {
		free(one);
		return r;
	}
	struct exports *ex = malloc(sizeof(*ex));
	if (!ex) {
		free(one);
		return -ENOMEM;
	}
	memcpy(ex, gw_exports(g), sizeof(*ex));
	struct export *slot = (struct export *)exports_find_path(ex, one->e[0].path);
	if (!slot) {
		if (ex->n == EXPORT_MAX) {
			snprintf(err, errlen, "at most %d exports", EXPORT_MAX);
			free(one);
			free(ex);
			return -EINVAL;
		}
		slot = &ex->e[ex->n++];
	}
	*slot = one->e[0];
	char path[EXPORT_PATH_MAX];
	memcpy(path, one->e[0].path, sizeof(path));
	free(one);
	r = apply(g, ex, path, cb, arg);
	if (r == 0)
		gw_log(g, "export %s added", path);
	else
		snprintf(err, errlen, "%s", strerror(-r));
	return r;
}

int gateway_export_rm(struct gateway *g, const char *path, gateway_cb cb, void *arg)
{
	char norm[EXPORT_PATH_MAX];
	if (exports_normalize_path(path, norm))
		return -EINVAL;
	const struct exports *cur = gw_exports(g);
	const struct export *e = exports_find_path(cur, norm);
	if (!e)
		return -ENOENT;
	struct exports *ex = malloc(sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	uint32_t idx = (uint32_t)(e - cur->e);
	memcpy(ex, cur, sizeof(*ex));
	memmove(&ex->e[idx], &ex->e[idx + 1], (ex->n - idx - 1) * sizeof(ex->e[0]));
	ex->n--;
	int r = apply(g, ex, NULL, cb, arg);
	if (r == 0)
		gw_log(g, "export %s removed", norm);
	return r;
}
