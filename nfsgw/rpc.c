/*
 * rpc: the ONC RPC server (see nfsgw/rpc.h): programs, listeners and accepting connections.
 * Connections live in rpc_conn.c; call headers, replies and argument decoding in rpc_msg.c.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "nfsgw/rpc_int.h"

#define RPC_ACCEPT_BUDGET 64
#define RPC_ACCEPT_PAUSE_MS 100

static void listener_on_event(void *arg, uint32_t events);

static void listener_resume(void *arg)
{
	struct rpc_listener *ln = arg;
	ln->pause = NULL;
	loop_mod_fd(ln->s->l, ln->fd, EPOLLIN, listener_on_event, ln);
}

static void listener_on_event(void *arg, uint32_t events)
{
	(void)events;
	struct rpc_listener *ln = arg;
	for (int i = 0; i < RPC_ACCEPT_BUDGET; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int fd =
		    accept4(ln->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* Out of descriptors or memory: the listener stays readable, so stop
			 * watching it for a while instead of spinning. */
			if (!ln->pause && loop_timer_add(ln->s->l, RPC_ACCEPT_PAUSE_MS,
							 listener_resume, ln, &ln->pause) == 0)
				loop_mod_fd(ln->s->l, ln->fd, 0, listener_on_event, ln);
			return;
		}
		/* Bounded like everything else a client controls: past the limit a new
		 * connection is accepted and closed at once, so the backlog cannot fill. */
		if (ln->s->nconns >= RPC_MAX_CONNS) {
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (rpc_conn_new(ln->s, fd, &peer) < 0)
			close(fd);
	}
}

int rpc_server_new(struct loop *l, struct rpc_server **out)
{
	struct rpc_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->l = l;
	*out = s;
	return 0;
}

void rpc_server_free(struct rpc_server *s)
{
	if (!s)
		return;
	while (s->listeners) {
		struct rpc_listener *ln = s->listeners;
		s->listeners = ln->next;
		if (ln->pause)
			loop_timer_cancel(s->l, ln->pause);
		loop_del_fd(s->l, ln->fd);
		close(ln->fd);
		free(ln);
	}
	while (s->conns)
		rpc_conn_close(s->conns);
	free(s);
}

int rpc_server_add_program(struct rpc_server *s, const struct rpc_program *p)
{
	if (s->nprogs == RPC_MAX_PROGRAMS)
		return -ENOSPC;
	if (!p->dispatch || p->vers_low > p->vers_high)
		return -EINVAL;
	s->progs[s->nprogs++] = *p;
	return 0;
}

int rpc_server_listen(struct rpc_server *s, const char *host, uint16_t port, uint16_t *bound_port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	int r = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 1024) < 0) {
		r = -errno;
		goto fail;
	}
	socklen_t len = sizeof(sin);
	if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
		r = -errno;
		goto fail;
	}
	struct rpc_listener *ln = calloc(1, sizeof(*ln));
	if (!ln) {
		r = -ENOMEM;
		goto fail;
	}
	ln->s = s;
	ln->fd = fd;
	if ((r = loop_add_fd(s->l, fd, EPOLLIN, listener_on_event, ln)) < 0) {
		free(ln);
		goto fail;
	}
	ln->next = s->listeners;
	s->listeners = ln;
	if (bound_port)
		*bound_port = ntohs(sin.sin_port);
	return 0;
fail:
	close(fd);
	return r;
}

uint32_t rpc_server_nconns(struct rpc_server *s)
{
	return s->nconns;
}

void rpc_server_each_peer(struct rpc_server *s,
			  void (*fn)(void *arg, const struct sockaddr_storage *peer), void *arg)
{
	for (struct rpc_conn *c = s->conns; c; c = c->next)
		fn(arg, &c->peer);
}
