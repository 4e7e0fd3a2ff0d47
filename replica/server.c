/*
 * server: the replica server's listening socket, its registry of open stores (each opened
 * once, shared by every connection and by a local engine) and background snapshot merges.
 * Connections are in server_conn.c, op execution in server_ops.c. See server.h.
 *
 * Merges run from a timer: one store_merge_step per store per loop iteration while any has
 * work, so I/O is never starved; an idle poll every second also picks up deletes made by a
 * local engine directly on the store.
 */
#include "server_priv.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MERGE_BUSY_MS 1
#define MERGE_IDLE_MS 1000
#define ACCEPTS_PER_EVENT 64
#define ACCEPT_PAUSE_MS 100

int srv_volume_dir(struct replica_server *s, const char *name, char *buf, size_t len)
{
	if (!name || strlen(name) >= STORE_NAME_MAX || !store_name_valid(name))
		return -EINVAL;
	int n = snprintf(buf, len, "%s/replicas/%s", s->data_dir, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int ensure_replicas_dir(struct replica_server *s)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/replicas", s->data_dir);
	if (mkdir(s->data_dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static struct srv_store *find_store(struct replica_server *s, const char *name)
{
	for (struct srv_store *v = s->stores; v; v = v->next)
		if (strcmp(v->name, name) == 0)
			return v;
	return NULL;
}

static int add_store(struct replica_server *s, const char *name, struct store *st,
		     struct srv_store **out)
{
	struct srv_store *v = calloc(1, sizeof(*v));
	if (!v) {
		store_close(st);
		return -ENOMEM;
	}
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->st = st;
	/* A delete may have been interrupted by a restart. */
	v->merging = true;
	v->next = s->stores;
	s->stores = v;
	srv_merge_kick(s);
	if (out)
		*out = v;
	return 0;
}

int srv_store_get(struct replica_server *s, const char *name, struct srv_store **out)
{
	char dir[4096], meta[4400];
	struct stat stt;
	int e = srv_volume_dir(s, name, dir, sizeof(dir));
	if (e < 0)
		return e;
	struct srv_store *v = find_store(s, name);
	if (v) {
		*out = v;
		return 0;
	}
	snprintf(meta, sizeof(meta), "%s/volume.meta", dir);
	if (stat(meta, &stt) < 0)
		return -ENOENT;
	struct store *st;
	e = store_open(s->l, dir, &st);
	if (e < 0)
		return e;
	return add_store(s, name, st, out);
}

static void merge_tick(void *arg)
{
	struct replica_server *s = arg;
	bool more = false;
	s->merge_timer = NULL;
	for (struct srv_store *v = s->stores; v; v = v->next) {
		if (!v->merging)
			continue;
		int r = store_merge_step(v->st);
		if (r > 0) {
			more = true;
			continue;
		}
		v->merging = false;
		if (r < 0)
			fprintf(stderr, "replica server: merge of %s: %s\n", v->name, strerror(-r));
	}
	if (!more)
		for (struct srv_store *v = s->stores; v; v = v->next)
			v->merging = true;
	if (s->stores)
		loop_timer_add(s->l, more ? MERGE_BUSY_MS : MERGE_IDLE_MS, merge_tick, s,
			       &s->merge_timer);
}

void srv_merge_kick(struct replica_server *s)
{
	if (s->freeing)
		return;
	if (s->merge_timer)
		loop_timer_cancel(s->l, s->merge_timer);
	s->merge_timer = NULL;
	loop_timer_add(s->l, MERGE_BUSY_MS, merge_tick, s, &s->merge_timer);
}

static void on_accept(void *arg, uint32_t events);

static void accept_resume(void *arg)
{
	struct replica_server *s = arg;
	s->accept_timer = NULL;
	loop_mod_fd(s->l, s->lfd, EPOLLIN, on_accept, s);
}

static void on_accept(void *arg, uint32_t events)
{
	struct replica_server *s = arg;
	(void)events;
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			/* Out of fds or memory: the pending connection stays readable, so
			 * pause rather than spin (and log) every iteration. */
			fprintf(stderr, "replica server: accept: %s\n", strerror(errno));
			if (!s->accept_timer && loop_mod_fd(s->l, s->lfd, 0, on_accept, s) == 0 &&
			    loop_timer_add(s->l, ACCEPT_PAUSE_MS, accept_resume, s,
					   &s->accept_timer) < 0)
				accept_resume(s);
			return;
		}
		int e = srv_conn_new(s, fd);
		if (e < 0) {
			fprintf(stderr, "replica server: new connection: %s\n", strerror(-e));
			close(fd);
		}
	}
}

static int listen_on(const char *host, uint16_t port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
			*res, *ai;
	char ports[8];
	snprintf(ports, sizeof(ports), "%u", port);
	int e = getaddrinfo(host && *host ? host : NULL, ports, &hints, &res);
	if (e)
		return e == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	int fd = -1;
	e = -EADDRNOTAVAIL;
	/* IPv4 addresses first (pass 0), as the client prefers them. */
	for (int pass = 0; pass < 2 && fd < 0; pass++)
		for (ai = res; ai; ai = ai->ai_next) {
			if ((ai->ai_family == AF_INET) != (pass == 0))
				continue;
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				    0);
			if (fd < 0) {
				e = -errno;
				continue;
			}
			int one = 1;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
				break;
			e = -errno;
			close(fd);
			fd = -1;
		}
	freeaddrinfo(res);
	return fd >= 0 ? fd : e;
}

int replica_server_new(struct loop *l, const char *node, const char *data_dir, const char *host,
		       uint16_t port, struct replica_server **out)
{
	if (!node || !data_dir)
		return -EINVAL;
	struct replica_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->l = l;
	s->lfd = -1;
	s->node = strdup(node);
	s->data_dir = strdup(data_dir);
	int e = -ENOMEM;
	if (!s->node || !s->data_dir)
		goto fail;
	e = ensure_replicas_dir(s);
	if (e < 0)
		goto fail;
	s->lfd = listen_on(host, port);
	if (s->lfd < 0) {
		e = s->lfd;
		goto fail;
	}
	e = loop_add_fd(l, s->lfd, EPOLLIN, on_accept, s);
	if (e < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	if (s->lfd >= 0)
		close(s->lfd);
	free(s->node);
	free(s->data_dir);
	free(s);
	return e;
}

/* Kills the connections that use vol (every connection when vol is NULL). */
static void kill_conns(struct replica_server *s, struct srv_store *vol)
{
	for (struct srv_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		bool uses = !vol || c->vol == vol;
		for (struct srv_req *r = c->all; r && !uses; r = r->all_next)
			uses = r->vol == vol;
		if (uses)
			srv_conn_kill(c, NULL);
	}
}

void replica_server_free(struct replica_server *s)
{
	if (!s)
		return;
	s->freeing = true;
	if (s->merge_timer)
		loop_timer_cancel(s->l, s->merge_timer);
	s->merge_timer = NULL;
	if (s->accept_timer)
		loop_timer_cancel(s->l, s->accept_timer);
	loop_del_fd(s->l, s->lfd);
	close(s->lfd);
	srv_conn_orphan_all(s);
	/* A store with I/O in flight finishes closing when it completes; the orphaned
	 * requests are called back then and free themselves and their connections. */
	while (s->stores) {
		struct srv_store *v = s->stores;
		s->stores = v->next;
		store_close(v->st);
		free(v);
	}
	free(s->node);
	free(s->data_dir);
	free(s);
}

int replica_server_create(struct replica_server *s, const char *name, uint64_t size,
			  const struct store_member *members, uint32_t nmembers)
{
	char dir[4096];
	int e = srv_volume_dir(s, name, dir, sizeof(dir));
	if (e < 0)
		return e;
	if (nmembers > STORE_MAX_MEMBERS)
		return -EINVAL;
	if (find_store(s, name))
		return -EEXIST;
	e = ensure_replicas_dir(s);
	if (e < 0)
		return e;
	struct store *st;
	e = store_create(s->l, dir, name, size, &st);
	if (e < 0)
		return e;
	if (nmembers) {
		e = store_set_members(st, members, nmembers, 1);
		if (e < 0) {
			store_close(st);
			store_destroy(dir);
			return e;
		}
	}
	return add_store(s, name, st, NULL);
}

int replica_server_destroy(struct replica_server *s, const char *name, int force)
{
	char dir[4096];
	int e = srv_volume_dir(s, name, dir, sizeof(dir));
	if (e < 0)
		return e;
	struct srv_store **pp = &s->stores;
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	if (*pp) {
		struct srv_store *v = *pp;
		struct store_info in;
		if (!force && store_get_info(v->st, &in) == 0 && !in.clean)
			return -EBUSY;
		kill_conns(s, v);
		*pp = v->next;
		store_close(v->st);
		free(v);
	}
	struct stat st;
	if (stat(dir, &st) < 0)
		return -ENOENT;
	return store_destroy(dir);
}

int replica_server_store(struct replica_server *s, const char *name, struct store **out)
{
	struct srv_store *v;
	int e = srv_store_get(s, name, &v);
	if (e == 0)
		*out = v->st;
	return e;
}

int replica_server_hold(struct replica_server *s, const char *name, uint64_t engine,
			const char *label, uint64_t epoch)
{
	struct srv_store *v;
	int e = srv_store_get(s, name, &v);
	if (e < 0)
		return e;
	v->held = true;
	v->hold_engine = engine;
	v->hold_conn = NULL;
	v->hold_epoch = epoch;
	snprintf(v->hold_label, sizeof(v->hold_label), "%s", label ? label : "");
	return 0;
}

void replica_server_release(struct replica_server *s, const char *name, uint64_t engine)
{
	struct srv_store *v = find_store(s, name);
	if (v && v->held && !v->hold_conn && v->hold_engine == engine)
		v->held = false;
}

int replica_server_holder(struct replica_server *s, const char *name, char *label, uint64_t *epoch)
{
	struct srv_store *v = find_store(s, name);
	if (!v || !v->held)
		return 0;
	snprintf(label, PROTO_LABEL_MAX, "%s", v->hold_label);
	*epoch = v->hold_epoch;
	return 1;
}

int replica_server_list(struct replica_server *s, char ***names, uint32_t *n)
{
	char dir[4096], meta[4400];
	snprintf(dir, sizeof(dir), "%s/replicas", s->data_dir);
	*names = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	char **v = NULL;
	uint32_t cnt = 0, cap = 0;
	int e = 0;
	struct dirent *de;
	struct stat st;
	while ((de = readdir(d))) {
		if (strlen(de->d_name) >= STORE_NAME_MAX || !store_name_valid(de->d_name))
			continue;
		snprintf(meta, sizeof(meta), "%s/%s/volume.meta", dir, de->d_name);
		if (stat(meta, &st) < 0)
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 8;
			char **nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				e = -ENOMEM;
				break;
			}
			v = nv;
		}
		if (!(v[cnt] = strdup(de->d_name))) {
			e = -ENOMEM;
			break;
		}
		cnt++;
	}
	closedir(d);
	if (e < 0) {
		for (uint32_t i = 0; i < cnt; i++)
			free(v[i]);
		free(v);
		return e;
	}
	*names = v;
	*n = cnt;
	return 0;
}

uint32_t replica_server_nconns(struct replica_server *s)
{
	return s->nconns;
}
