/*
 * config: strict parser and atomic writer for the cluster file (see config.h).
 *
 * inih does the tokenising; a reader of our own counts lines (so every error names its
 * line) and refuses lines longer than inih's buffer, which inih would otherwise split into
 * two silently different lines. Every key is checked for range and duplicates; required
 * keys are checked after the whole file is read.
 */
#include "blockd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The engine drives at most this many replicas (ENGINE_MAX_REPLICAS). */
#define CONFIG_MAX_REPLICAS 8

enum {
	SEEN_DIR = 1u << 0,
	SEEN_REPLICAS = 1u << 1,
	SEEN_IO_TIMEOUT = 1u << 2,
	SEEN_HOST = 1u << 0,
	SEEN_HTTP = 1u << 1,
	SEEN_REPLICA_PORT = 1u << 2,
	SEEN_NBD = 1u << 3,
	SEEN_DATA = 1u << 4,
	SEEN_NODE_ALL = (1u << 5) - 1,
	SEEN_GW_HOST = 1u << 0,
	SEEN_GW_NFS = 1u << 1,
	SEEN_GW_MOUNT = 1u << 2,
	SEEN_GW_PORTMAP = 1u << 3,
	SEEN_GW_HTTP = 1u << 4,
	SEEN_GW_EXPORTS = 1u << 5,
	SEEN_GW_REPLICAS = 1u << 6,
	SEEN_GW_META = 1u << 7,
};

struct parse {
	FILE *f;
	struct config *c;
	unsigned line;
	int err;   /* first error, 0 if none */
	char *msg; /* first error's text */
	size_t msglen;
	bool cluster_seen;
	unsigned cluster_keys;
	unsigned node_keys[CONFIG_MAX_NODES];
	unsigned gw_keys[CONFIG_MAX_GATEWAYS];
};

static void fail(struct parse *p, int err, const char *fmt, ...)
{
	if (p->err)
		return;
	p->err = err;
	int n = snprintf(p->msg, p->msglen, "line %u: ", p->line);
	if (n < 0 || (size_t)n >= p->msglen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->msg + n, p->msglen - (size_t)n, fmt, ap);
	va_end(ap);
}

static char *reader(char *str, int num, void *stream)
{
	struct parse *p = stream;
	if (p->err || !fgets(str, num, p->f))
		return NULL;
	p->line++;
	size_t len = strlen(str);
	if (len == (size_t)num - 1 && str[len - 1] != '\n') {
		int ch = getc(p->f);
		if (ch != EOF) {
			fail(p, -EINVAL, "line longer than %d characters", num - 2);
			return NULL;
		}
	}
	return str;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= CONFIG_NAME_MAX)
		return false;
	for (; *s; s++) {
		char ch = *s;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static int parse_uint(const char *v, unsigned long min, unsigned long max, unsigned long *out)
{
	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long x = strtoul(v, &end, 10);
	if (errno || *end || x < min || x > max)
		return -ERANGE;
	*out = x;
	return 0;
}

static int copy_str(struct parse *p, const char *key, const char *v, char *dst, size_t cap)
{
	if (!*v) {
		fail(p, -EINVAL, "%s: empty value", key);
		return 0;
	}
	if (strlen(v) >= cap) {
		fail(p, -EINVAL, "%s: value too long", key);
		return 0;
	}
	strcpy(dst, v);
	return 1;
}

static int set_path(struct parse *p, const char *key, const char *v, char *dst)
{
	if (*v != '/') {
		fail(p, -EINVAL, "%s: must be an absolute path", key);
		return 0;
	}
	return copy_str(p, key, v, dst, CONFIG_PATH_MAX);
}

static bool once(struct parse *p, unsigned *seen, unsigned bit, const char *key)
{
	if (*seen & bit) {
		fail(p, -EINVAL, "duplicate key %s", key);
		return false;
	}
	*seen |= bit;
	return true;
}

static int cluster_key(struct parse *p, const char *key, const char *v)
{
	struct config *c = p->c;
	unsigned long x;
	p->cluster_seen = true;
	if (!strcmp(key, "dir")) {
		if (!once(p, &p->cluster_keys, SEEN_DIR, key))
			return 0;
		return set_path(p, key, v, c->dir);
	}
	if (!strcmp(key, "replicas")) {
		if (!once(p, &p->cluster_keys, SEEN_REPLICAS, key))
			return 0;
		if (parse_uint(v, 1, CONFIG_MAX_REPLICAS, &x)) {
			fail(p, -EINVAL, "replicas: '%s' is not a number in 1..%d", v,
			     CONFIG_MAX_REPLICAS);
			return 0;
		}
		c->replicas = (unsigned)x;
		return 1;
	}
	if (!strcmp(key, "io_timeout_ms")) {
		if (!once(p, &p->cluster_keys, SEEN_IO_TIMEOUT, key))
			return 0;
		if (parse_uint(v, 1, 3600 * 1000, &x)) {
			fail(p, -EINVAL, "io_timeout_ms: '%s' is not a number in 1..3600000", v);
			return 0;
		}
		c->io_timeout_ms = (unsigned)x;
		return 1;
	}
	fail(p, -EINVAL, "unknown key '%s' in [cluster]", key);
	return 0;
}

static struct config_node *node_for(struct parse *p, const char *name, unsigned **seen)
{
	struct config *c = p->c;
	for (unsigned i = 0; i < c->nnodes; i++) {
		if (!strcmp(c->nodes[i].name, name)) {
			*seen = &p->node_keys[i];
			return &c->nodes[i];
		}
	}
	if (!name_ok(name)) {
		fail(p, -EINVAL, "bad node name '%s' (use [A-Za-z0-9._-], 1..%d chars)", name,
		     CONFIG_NAME_MAX - 1);
		return NULL;
	}
	if (c->nnodes == CONFIG_MAX_NODES) {
		fail(p, -E2BIG, "more than %d nodes", CONFIG_MAX_NODES);
		return NULL;
	}
	struct config_node *n = &c->nodes[c->nnodes];
	memset(n, 0, sizeof(*n));
	strcpy(n->name, name);
	*seen = &p->node_keys[c->nnodes];
	**seen = 0;
	c->nnodes++;
	return n;
}

static int set_port_min(struct parse *p, const char *key, const char *v, unsigned long min,
			uint16_t *dst)
{
	unsigned long x;
	if (parse_uint(v, min, 65535, &x)) {
		fail(p, -EINVAL, "%s: '%s' is not a port in %lu..65535", key, v, min);
		return 0;
	}
	*dst = (uint16_t)x;
	return 1;
}

static int set_port(struct parse *p, const char *key, const char *v, uint16_t *dst)
{
	return set_port_min(p, key, v, 1, dst);
}

static int node_key(struct parse *p, const char *name, const char *key, const char *v)
{
	unsigned *seen;
	struct config_node *n = node_for(p, name, &seen);
	if (!n)
		return 0;
	if (!strcmp(key, "host"))
		return once(p, seen, SEEN_HOST, key) &&
		       copy_str(p, key, v, n->host, sizeof(n->host));
	if (!strcmp(key, "http_port"))
		return once(p, seen, SEEN_HTTP, key) && set_port(p, key, v, &n->http_port);
	if (!strcmp(key, "replica_port"))
		return once(p, seen, SEEN_REPLICA_PORT, key) &&
		       set_port(p, key, v, &n->replica_port);
	if (!strcmp(key, "nbd_port"))
		return once(p, seen, SEEN_NBD, key) && set_port(p, key, v, &n->nbd_port);
	if (!strcmp(key, "data"))
		return once(p, seen, SEEN_DATA, key) && set_path(p, key, v, n->data);
	fail(p, -EINVAL, "unknown key '%s' in [node.%s]", key, name);
	return 0;
}

static struct config_gateway *gateway_for(struct parse *p, const char *name, unsigned **seen)
{
	struct config *c = p->c;
	for (unsigned i = 0; i < c->ngateways; i++) {
		if (!strcmp(c->gateways[i].name, name)) {
			*seen = &p->gw_keys[i];
			return &c->gateways[i];
		}
	}
	if (!name_ok(name)) {
		fail(p, -EINVAL, "bad gateway name '%s' (use [A-Za-z0-9._-], 1..%d chars)", name,
		     CONFIG_NAME_MAX - 1);
		return NULL;
	}
	if (c->ngateways == CONFIG_MAX_GATEWAYS) {
		fail(p, -E2BIG, "more than %d gateways", CONFIG_MAX_GATEWAYS);
		return NULL;
	}
	struct config_gateway *g = &c->gateways[c->ngateways];
	memset(g, 0, sizeof(*g));
	strcpy(g->name, name);
	strcpy(g->host, "127.0.0.1");
	g->nfs_port = 2049;
	g->mount_port = 20048;
	g->portmap_port = 111;
	strcpy(g->meta_volume, "nfsgw-meta");
	*seen = &p->gw_keys[c->ngateways];
	**seen = 0;
	c->ngateways++;
	return g;
}

static int gateway_key(struct parse *p, const char *name, const char *key, const char *v)
{
	unsigned *seen;
	struct config_gateway *g = gateway_for(p, name, &seen);
	unsigned long x;
	if (!g)
		return 0;
	/* Fields with defaults are cleared before the copy so that equal configs are equal
	 * bytes (the round trip compares memory). */
	if (!strcmp(key, "host"))
		return once(p, seen, SEEN_GW_HOST, key) && memset(g->host, 0, sizeof(g->host)) &&
		       copy_str(p, key, v, g->host, sizeof(g->host));
	if (!strcmp(key, "nfs_port"))
		return once(p, seen, SEEN_GW_NFS, key) && set_port(p, key, v, &g->nfs_port);
	if (!strcmp(key, "mount_port"))
		return once(p, seen, SEEN_GW_MOUNT, key) && set_port(p, key, v, &g->mount_port);
	/* 0 means "none": no own portmapper, no control API. */
	if (!strcmp(key, "portmap_port"))
		return once(p, seen, SEEN_GW_PORTMAP, key) &&
		       set_port_min(p, key, v, 0, &g->portmap_port);
	if (!strcmp(key, "http_port"))
		return once(p, seen, SEEN_GW_HTTP, key) &&
		       set_port_min(p, key, v, 0, &g->http_port);
	if (!strcmp(key, "exports"))
		return once(p, seen, SEEN_GW_EXPORTS, key) && set_path(p, key, v, g->exports);
	if (!strcmp(key, "replicas")) {
		if (!once(p, seen, SEEN_GW_REPLICAS, key))
			return 0;
		if (parse_uint(v, 0, CONFIG_MAX_REPLICAS, &x)) {
			fail(p, -EINVAL, "replicas: '%s' is not a number in 0..%d", v,
			     CONFIG_MAX_REPLICAS);
			return 0;
		}
		g->replicas = (unsigned)x;
		return 1;
	}
	if (!strcmp(key, "meta_volume")) {
		if (!once(p, seen, SEEN_GW_META, key))
			return 0;
		if (!name_ok(v)) {
			fail(p, -EINVAL, "meta_volume: bad volume name '%s'", v);
			return 0;
		}
		memset(g->meta_volume, 0, sizeof(g->meta_volume));
		strcpy(g->meta_volume, v);
		return 1;
	}
	fail(p, -EINVAL, "unknown key '%s' in [gateway.%s]", key, name);
	return 0;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse *p = user;
	if (p->err)
		return 0;
	if (!strcmp(section, "cluster"))
		return cluster_key(p, key, value);
	if (!strncmp(section, "node.", 5))
		return node_key(p, section + 5, key, value);
	if (!strncmp(section, "gateway.", 8))
		return gateway_key(p, section + 8, key, value);
	if (!*section)
		fail(p, -EINVAL, "key '%s' outside any section", key);
	else
		fail(p, -EINVAL, "unknown section [%s]", section);
	return 0;
}

static int check_ports(const struct config *c, char *err, size_t errlen)
{
	/* Two services on one host:port would make the second blockd fail at bind time, far
	 * from the cause. */
	for (unsigned i = 0; i < c->nnodes; i++) {
		const struct config_node *a = &c->nodes[i];
		const uint16_t pa[3] = {a->http_port, a->replica_port, a->nbd_port};
		for (unsigned j = i; j < c->nnodes; j++) {
			const struct config_node *b = &c->nodes[j];
			const uint16_t pb[3] = {b->http_port, b->replica_port, b->nbd_port};
			if (strcmp(a->host, b->host))
				continue;
			for (int x = 0; x < 3; x++) {
				for (int y = (i == j ? x + 1 : 0); y < 3; y++) {
					if (pa[x] != pb[y])
						continue;
					snprintf(err, errlen, "port %u on %s used twice (%s, %s)",
						 pa[x], a->host, a->name, b->name);
					return -EINVAL;
				}
			}
			if (i != j && !strcmp(a->data, b->data)) {
				snprintf(err, errlen, "nodes %s and %s share data dir %s", a->name,
					 b->name, a->data);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* The non-zero ports a gateway listens on. */
static unsigned gateway_ports(const struct config_gateway *g, uint16_t out[4])
{
	const uint16_t all[4] = {g->nfs_port, g->mount_port, g->portmap_port, g->http_port};
	unsigned n = 0;
	for (int i = 0; i < 4; i++)
		if (all[i])
			out[n++] = all[i];
	return n;
}

static int check_gateway_ports(const struct config *c, char *err, size_t errlen)
{
	for (unsigned i = 0; i < c->ngateways; i++) {
		const struct config_gateway *a = &c->gateways[i];
		uint16_t pa[4];
		unsigned na = gateway_ports(a, pa);
		for (unsigned j = i; j < c->ngateways; j++) {
			const struct config_gateway *b = &c->gateways[j];
			uint16_t pb[4];
			unsigned nb = gateway_ports(b, pb);
			if (strcmp(a->host, b->host))
				continue;
			for (unsigned x = 0; x < na; x++) {
				for (unsigned y = (i == j ? x + 1 : 0); y < nb; y++) {
					if (pa[x] != pb[y])
						continue;
					snprintf(err, errlen, "port %u on %s used twice (%s, %s)",
						 pa[x], a->host, a->name, b->name);
					return -EINVAL;
				}
			}
		}
		for (unsigned j = 0; j < c->nnodes; j++) {
			const struct config_node *n = &c->nodes[j];
			const uint16_t pn[3] = {n->http_port, n->replica_port, n->nbd_port};
			if (strcmp(a->host, n->host))
				continue;
			for (unsigned x = 0; x < na; x++) {
				for (unsigned y = 0; y < 3; y++) {
					if (pa[x] != pn[y])
						continue;
					snprintf(err, errlen, "port %u on %s used twice (%s, %s)",
						 pa[x], a->host, a->name, n->name);
					return -EINVAL;
				}
			}
		}
	}
	return 0;
}

int config_load(const char *path, struct config *c, char *err, size_t errlen)
{
	char dummy[1];
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = 0;
	memset(c, 0, sizeof(*c));
	c->replicas = 3;
	c->io_timeout_ms = 1000;
	struct parse p = {.c = c, .msg = err, .msglen = errlen};
	p.f = fopen(path, "re");
	if (!p.f) {
		int e = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-e));
		return e;
	}
	int r = ini_parse_stream(reader, &p, handler, &p);
	bool ioerr = ferror(p.f);
	fclose(p.f);
	if (p.err)
		return p.err;
	if (r > 0) {
		/* A syntax error inih found itself (no '=', unterminated section). */
		p.line = (unsigned)r;
		fail(&p, -EINVAL, "syntax error");
		return p.err;
	}
	if (r < 0 || ioerr) {
		snprintf(err, errlen, "%s: read error", path);
		return -EIO;
	}
	if (!p.cluster_seen || !(p.cluster_keys & SEEN_DIR)) {
		snprintf(err, errlen, "missing section [cluster] with key dir");
		return -EINVAL;
	}
	if (c->nnodes == 0) {
		snprintf(err, errlen, "no [node.NAME] section");
		return -EINVAL;
	}
	static const char *const keys[] = {"host", "http_port", "replica_port", "nbd_port", "data"};
	for (unsigned i = 0; i < c->nnodes; i++) {
		if (p.node_keys[i] == SEEN_NODE_ALL)
			continue;
		for (unsigned k = 0; k < 5; k++) {
			if (!(p.node_keys[i] & (1u << k))) {
				snprintf(err, errlen, "[node.%s]: missing key %s", c->nodes[i].name,
					 keys[k]);
				return -EINVAL;
			}
		}
	}
	int r2 = check_ports(c, err, errlen);
	return r2 ? r2 : check_gateway_ports(c, err, errlen);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = write(fd, buf, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char dir[CONFIG_PATH_MAX + 8];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) ? -errno : 0;
	close(fd);
	return r;
}

int config_save(const char *path, const struct config *c)
{
	size_t cap = 512 + (size_t)c->nnodes * (CONFIG_PATH_MAX + 512) +
		     (size_t)c->ngateways * (CONFIG_PATH_MAX + 512) + CONFIG_PATH_MAX;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	size_t len =
	    (size_t)snprintf(buf, cap, "[cluster]\ndir = %s\nreplicas = %u\nio_timeout_ms = %u\n",
			     c->dir, c->replicas, c->io_timeout_ms);
	for (unsigned i = 0; i < c->nnodes && len < cap; i++) {
		const struct config_node *n = &c->nodes[i];
		len += (size_t)snprintf(buf + len, cap - len,
					"\n[node.%s]\nhost = %s\nhttp_port = %u\nreplica_port = "
					"%u\nnbd_port = %u\ndata = %s\n",
					n->name, n->host, n->http_port, n->replica_port,
					n->nbd_port, n->data);
	}
	for (unsigned i = 0; i < c->ngateways && len < cap; i++) {
		const struct config_gateway *g = &c->gateways[i];
		len += (size_t)snprintf(buf + len, cap - len,
					"\n[gateway.%s]\nhost = %s\nnfs_port = %u\nmount_port = "
					"%u\nportmap_port = %u\nhttp_port = %u\nreplicas = %u\n"
					"meta_volume = %s\n",
					g->name, g->host, g->nfs_port, g->mount_port,
					g->portmap_port, g->http_port, g->replicas, g->meta_volume);
		if (g->exports[0] && len < cap)
			len += (size_t)snprintf(buf + len, cap - len, "exports = %s\n", g->exports);
	}
	if (len >= cap) {
		free(buf);
		return -ENAMETOOLONG;
	}
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
		free(buf);
		return -ENAMETOOLONG;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = -errno;
		free(buf);
		return e;
	}
	int r = write_all(fd, buf, len);
	free(buf);
	if (!r && fsync(fd))
		r = -errno;
	if (close(fd) && !r)
		r = -errno;
	if (!r && rename(tmp, path))
		r = -errno;
	if (r) {
		unlink(tmp);
		return r;
	}
	return fsync_dir_of(path);
}

const struct config_node *config_node(const struct config *c, const char *name)
{
	for (unsigned i = 0; i < c->nnodes; i++)
		if (!strcmp(c->nodes[i].name, name))
			return &c->nodes[i];
	return NULL;
}

const struct config_gateway *config_gateway(const struct config *c, const char *name)
{
	for (unsigned i = 0; i < c->ngateways; i++)
		if (!strcmp(c->gateways[i].name, name))
			return &c->gateways[i];
	return NULL;
}
