/*
 * node: the node's lifecycle (loop thread, replica and NBD servers), its log, the persisted
 * list of attached volumes (<data>/attachments.json) and the background re-attach of that
 * list after a restart. The volume table itself is in node_vol.c.
 */
#include "blockd/node_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockd/nbd_server.h"
#include "replica/server.h"

#define REATTACH_MIN_MS 1000
#define REATTACH_MAX_MS 10000

void node_log(const struct node *n, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int k = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	k += snprintf(line + k, sizeof(line) - (size_t)k, ".%03ldZ %s: ", ts.tv_nsec / 1000000,
		      n ? n->self->name : "blockd");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + k, sizeof(line) - (size_t)k, fmt, ap);
	va_end(ap);
	/* One write per line so lines of concurrent threads never interleave. */
	size_t len = strnlen(line, sizeof(line) - 2);
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

const struct config_node *node_self(const struct node *n)
{
	return n->self;
}

struct loop *node_loop(struct node *n)
{
	return n->loop;
}

/* ---- attachments.json: small control files, still read and written through io_uring ---- */

struct fileio {
	int fd;
	void *buf;
	size_t len;
	uint64_t off;
};

static void prep_read(struct io_uring_sqe *sqe, void *arg)
{
	struct fileio *f = arg;
	io_uring_prep_read(sqe, f->fd, f->buf, (unsigned)f->len, f->off);
}

static void prep_write(struct io_uring_sqe *sqe, void *arg)
{
	struct fileio *f = arg;
	io_uring_prep_write(sqe, f->fd, f->buf, (unsigned)f->len, f->off);
}

static void prep_fsync(struct io_uring_sqe *sqe, void *arg)
{
	struct fileio *f = arg;
	io_uring_prep_fsync(sqe, f->fd, 0);
}

static int write_file_sync(struct loop *l, const char *path, const char *data, size_t len)
{
	char tmp[CONFIG_PATH_MAX + 48];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	struct fileio f = {.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
	if (f.fd < 0)
		return -errno;
	int r = 0;
	while (f.off < len) {
		f.buf = (void *)(data + f.off);
		f.len = len - f.off;
		int w = loop_io_sync(l, prep_write, &f);
		if (w <= 0) {
			r = w < 0 ? w : -EIO;
			break;
		}
		f.off += (uint64_t)w;
	}
	if (!r)
		r = loop_io_sync(l, prep_fsync, &f);
	close(f.fd);
	if (!r && rename(tmp, path))
		r = -errno;
	if (r) {
		unlink(tmp);
		return r;
	}
	char dir[CONFIG_PATH_MAX + 48];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir)
		*slash = 0;
	struct fileio d = {.fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
	if (d.fd < 0)
		return -errno;
	r = loop_io_sync(l, prep_fsync, &d);
	close(d.fd);
	return r;
}

static int save_wanted(struct node *n)
{
	json_t *a = json_array();
	for (struct want *w = n->wanted; w; w = w->next)
		json_array_append_new(a, json_string(w->name));
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	if (!s)
		return -ENOMEM;
	size_t len = strlen(s);
	s[len] = '\n';
	int r = write_file_sync(n->loop, n->attach_path, s, len + 1);
	free(s);
	if (r)
		node_log(n, "cannot write %s: %s", n->attach_path, strerror(-r));
	return r;
}

static void load_wanted(struct node *n)
{
	struct fileio f = {.fd = open(n->attach_path, O_RDONLY | O_CLOEXEC)};
	if (f.fd < 0) {
		if (errno != ENOENT)
			node_log(n, "cannot open %s: %s", n->attach_path, strerror(errno));
		return;
	}
	struct stat st;
	char *buf = NULL;
	int r = fstat(f.fd, &st) ? -errno : 0;
	if (!r && (st.st_size > (1 << 20) || !(buf = malloc((size_t)st.st_size + 1))))
		r = -EFBIG;
	while (!r && f.off < (uint64_t)st.st_size) {
		f.buf = buf + f.off;
		f.len = (size_t)st.st_size - f.off;
		int got = loop_io_sync(n->loop, prep_read, &f);
		if (got <= 0)
			r = got < 0 ? got : -EIO;
		else
			f.off += (uint64_t)got;
	}
	close(f.fd);
	json_t *a = r ? NULL : json_loadb(buf, f.off, 0, NULL);
	free(buf);
	if (!json_is_array(a)) {
		node_log(n, "ignoring unreadable %s", n->attach_path);
		json_decref(a);
		return;
	}
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		const char *name = json_string_value(v);
		if (name && store_name_valid(name) && !node_wanted(n, name)) {
			struct want *w = calloc(1, sizeof(*w));
			if (!w)
				break;
			strcpy(w->name, name);
			w->next = n->wanted;
			n->wanted = w;
		}
	}
	json_decref(a);
}

bool node_wanted(struct node *n, const char *vol)
{
	for (struct want *w = n->wanted; w; w = w->next)
		if (!strcmp(w->name, vol))
			return true;
	return false;
}

int node_want(struct node *n, const char *vol, bool want)
{
	struct want **pp = &n->wanted;
	while (*pp && strcmp((*pp)->name, vol))
		pp = &(*pp)->next;
	if (want == (*pp != NULL))
		return 0;
	if (want) {
		struct want *w = calloc(1, sizeof(*w));
		if (!w)
			return -ENOMEM;
		snprintf(w->name, sizeof(w->name), "%s", vol);
		*pp = w;
	} else {
		struct want *w = *pp;
		*pp = w->next;
		free(w);
	}
	return save_wanted(n);
}

/* ---- start / stop ---- */

static void *loop_main(void *arg)
{
	struct node *n = arg;
	int r = loop_run(n->loop);
	if (r)
		node_log(n, "event loop failed: %s", strerror(-r));
	return NULL;
}

struct setup {
	struct node *n;
	int res;
	char *err;
	size_t errlen;
};

static void setup_on_loop(void *arg)
{
	struct setup *s = arg;
	struct node *n = s->n;
	const struct config_node *me = n->self;
	int r = replica_server_new(n->loop, me->name, me->data, me->host, me->replica_port, &n->rs);
	if (r) {
		snprintf(s->err, s->errlen, "replica server on %s:%u: %s", me->host,
			 me->replica_port, strerror(-r));
		s->res = r;
		return;
	}
	struct nbd_exports ex = node_nbd_exports;
	ex.arg = n;
	r = nbd_server_new(n->loop, me->host, me->nbd_port, &ex, &n->nbd);
	if (r) {
		snprintf(s->err, s->errlen, "NBD server on %s:%u: %s", me->host, me->nbd_port,
			 strerror(-r));
		replica_server_free(n->rs);
		n->rs = NULL;
		s->res = r;
		return;
	}
	load_wanted(n);
	s->res = 0;
}

static void stop_loop(void *arg)
{
	struct node *n = arg;
	loop_stop(n->loop);
}

static void free_node(struct node *n)
{
	while (n->wanted) {
		struct want *w = n->wanted;
		n->wanted = w->next;
		free(w);
	}
	pthread_mutex_destroy(&n->rmu);
	pthread_cond_destroy(&n->rcv);
	free(n);
}

int node_start(const struct config *c, const char *name, struct node **out, char *err,
	       size_t errlen)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->cfg = *c;
	pthread_mutex_init(&n->rmu, NULL);
	pthread_cond_init(&n->rcv, NULL);
	n->self = config_node(&n->cfg, name);
	if (!n->self) {
		snprintf(err, errlen, "no node '%s' in the cluster file", name);
		free_node(n);
		return -ENOENT;
	}
	snprintf(n->attach_path, sizeof(n->attach_path), "%s/attachments.json",
		 config_node(c, name)->data);
	for (unsigned i = 0; i < n->cfg.nnodes; i++) {
		struct engine_replica_addr *a = &n->addrs[n->naddrs++];
		snprintf(a->node, sizeof(a->node), "%s", c->nodes[i].name);
		snprintf(a->host, sizeof(a->host), "%s", c->nodes[i].host);
		a->port = c->nodes[i].replica_port;
	}
	n->start_ms = loop_now_ms();
	int r = loop_new(&n->loop);
	if (r) {
		snprintf(err, errlen, "event loop: %s", strerror(-r));
		free_node(n);
		return r;
	}
	r = -pthread_create(&n->loop_thread, NULL, loop_main, n);
	if (r) {
		snprintf(err, errlen, "loop thread: %s", strerror(-r));
		loop_free(n->loop);
		free_node(n);
		return r;
	}
	struct setup s = {.n = n, .err = err, .errlen = errlen};
	r = loop_call(n->loop, setup_on_loop, &s);
	if (!r)
		r = s.res;
	if (r) {
		loop_call(n->loop, stop_loop, n);
		pthread_join(n->loop_thread, NULL);
		loop_free(n->loop);
		free_node(n);
		return r;
	}
	*out = n;
	return 0;
}

/* ---- background re-attach ---- */

struct names {
	struct node *n;
	char (*v)[STORE_NAME_MAX];
	uint32_t count;
};

static void pending_on_loop(void *arg)
{
	struct names *p = arg;
	uint32_t cap = 0;
	for (struct want *w = p->n->wanted; w; w = w->next)
		cap++;
	p->v = calloc(cap ? cap : 1, sizeof(*p->v));
	if (!p->v)
		return;
	for (struct want *w = p->n->wanted; w; w = w->next) {
		struct vol *v = node_vol_find(p->n, w->name);
		if (v && v->attached)
			continue;
		memcpy(p->v[p->count++], w->name, STORE_NAME_MAX);
	}
}

struct unwant {
	struct node *n;
	const char *vol;
};

static void unwant_on_loop(void *arg)
{
	struct unwant *u = arg;
	struct vol *v = node_vol_find(u->n, u->vol);
	if (!v || !v->attached)
		node_want(u->n, u->vol, false);
}

/* Sleeps ms unless stopped; returns whether to go on. */
static bool reattach_sleep(struct node *n, unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&n->rmu);
	while (!n->rstop && pthread_cond_timedwait(&n->rcv, &n->rmu, &ts) != ETIMEDOUT)
		;
	bool go = !n->rstop;
	pthread_mutex_unlock(&n->rmu);
	return go;
}

static void *reattach_main(void *arg)
{
	struct node *n = arg;
	unsigned delay = REATTACH_MIN_MS;
	for (;;) {
		struct names p = {.n = n};
		if (loop_call(n->loop, pending_on_loop, &p) || !p.v) {
			free(p.v);
			if (!reattach_sleep(n, delay))
				break;
			continue;
		}
		bool go = true;
		for (uint32_t i = 0; i < p.count && go; i++) {
			struct node_err e = {{0}, {0}, {0}};
			int r = node_attach_impl(n, p.v[i], true, false, NULL, &e);
			if (r == 0 || r == -ECANCELED) {
				/* Attached (logged there) or detached meanwhile. */
			} else if (e.node[0]) {
				node_log(n, "not re-attaching %s: attached on %s now", p.v[i],
					 e.node);
				struct unwant u = {n, p.v[i]};
				loop_call(n->loop, unwant_on_loop, &u);
			} else {
				node_log(n, "re-attach %s failed (retrying in %u ms): %s", p.v[i],
					 delay, e.msg);
			}
			pthread_mutex_lock(&n->rmu);
			go = !n->rstop;
			pthread_mutex_unlock(&n->rmu);
		}
		uint32_t count = p.count;
		free(p.v);
		if (!go || count == 0)
			break;
		if (!reattach_sleep(n, delay))
			break;
		delay = delay * 2 > REATTACH_MAX_MS ? REATTACH_MAX_MS : delay * 2;
	}
	return NULL;
}

int node_reattach_start(struct node *n)
{
	int r = -pthread_create(&n->rthread, NULL, reattach_main, n);
	if (!r)
		n->rthread_on = true;
	return r;
}

static void shutdown_start(void *arg, struct loop_waiter *w)
{
	struct node *n = arg;
	n->shutdown_w = w;
	node_vol_shutdown(n);
}

void node_shutdown_done(struct node *n)
{
	nbd_server_free(n->nbd);
	n->nbd = NULL;
	replica_server_free(n->rs);
	n->rs = NULL;
	struct loop_waiter *w = n->shutdown_w;
	n->shutdown_w = NULL;
	loop_stop(n->loop);
	loop_done(w, 0);
}

void node_stop(struct node *n)
{
	if (n->rthread_on) {
		pthread_mutex_lock(&n->rmu);
		n->rstop = true;
		pthread_cond_broadcast(&n->rcv);
		pthread_mutex_unlock(&n->rmu);
		pthread_join(n->rthread, NULL);
	}
	loop_call_wait(n->loop, shutdown_start, n);
	pthread_join(n->loop_thread, NULL);
	loop_free(n->loop);
	free_node(n);
}
