/* loop: epoll for sockets, io_uring for disk, one thread. See loop.h. */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define RING_DEPTH 1024
#define SYNC_RING_DEPTH 8
#define MAX_EVENTS 128
/* Spent timers and deferred calls kept for reuse: the data path arms a 0 ms timer or a
 * deferral per batch, which would otherwise be a calloc/free pair each. */
#define CACHE_MAX 64

struct fd_watch {
	int fd;
	loop_fd_fn fn;
	void *arg;
	struct fd_watch *next;
};

struct loop_timer {
	uint64_t due;
	loop_fn fn;
	void *arg;
	struct loop_timer *next;
};

struct call {
	loop_fn fn;
	void *arg;
	/* loop_call() waits on these; NULL for loop_post(). */
	pthread_mutex_t *mu;
	pthread_cond_t *cv;
	bool *done;
	struct call *next;
};

static void run_calls(struct call *c);

struct loop {
	int epfd;
	int ring_efd; /* io_uring completions */
	int post_efd; /* cross-thread posts */
	struct io_uring ring;
	struct io_uring sync_ring;
	bool stop;
	unsigned pending_sqes;
	struct fd_watch *watches;
	struct loop_timer *timers; /* sorted by due */
	pthread_mutex_t post_mu;
	struct call *posted;
	struct call *deferred;
	struct loop_timer *timer_cache;
	struct call *call_cache;
	unsigned ntimer_cache, ncall_cache;
};

static void timer_put(struct loop *l, struct loop_timer *t)
{
	if (l->ntimer_cache >= CACHE_MAX) {
		free(t);
		return;
	}
	t->next = l->timer_cache;
	l->timer_cache = t;
	l->ntimer_cache++;
}

/* Runs deferred calls, recycling their records. */
static void run_deferred(struct loop *l, struct call *c)
{
	while (c) {
		struct call *next = c->next;
		c->fn(c->arg);
		if (l->ncall_cache < CACHE_MAX) {
			c->next = l->call_cache;
			l->call_cache = c;
			l->ncall_cache++;
		} else {
			free(c);
		}
		c = next;
	}
}

uint64_t loop_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct fd_watch *find_watch(struct loop *l, int fd)
{
	for (struct fd_watch *w = l->watches; w; w = w->next)
		if (w->fd == fd)
			return w;
	return NULL;
}

int loop_new(struct loop **out)
{
	struct loop *l = calloc(1, sizeof(*l));
	int r;
	if (!l)
		return -ENOMEM;
	l->epfd = l->ring_efd = l->post_efd = -1;
	pthread_mutex_init(&l->post_mu, NULL);
	r = io_uring_queue_init(RING_DEPTH, &l->ring, 0);
	if (r < 0)
		goto fail_ring;
	r = io_uring_queue_init(SYNC_RING_DEPTH, &l->sync_ring, 0);
	if (r < 0)
		goto fail_sync;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->ring_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	l->post_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->epfd < 0 || l->ring_efd < 0 || l->post_efd < 0) {
		r = -errno;
		goto fail;
	}
	r = io_uring_register_eventfd(&l->ring, l->ring_efd);
	if (r < 0)
		goto fail;
	/* data.u64 1 and 2 mark the two internal eventfds; watches are pointers. The ring's
	 * eventfd is edge-triggered and never read: every completion signals it, which re-arms
	 * an edge, and the CQ ring itself says what is ready, so a read() per iteration (often
	 * EAGAIN) would be a wasted syscall on the hottest path. */
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 1};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->ring_efd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	ev.data.u64 = 2;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->post_efd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	*out = l;
	return 0;
fail:
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->ring_efd >= 0)
		close(l->ring_efd);
	if (l->post_efd >= 0)
		close(l->post_efd);
	io_uring_queue_exit(&l->sync_ring);
fail_sync:
	io_uring_queue_exit(&l->ring);
fail_ring:
	pthread_mutex_destroy(&l->post_mu);
	free(l);
	return r;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	while (l->watches) {
		struct fd_watch *w = l->watches;
		l->watches = w->next;
		free(w);
	}
	while (l->timers) {
		struct loop_timer *t = l->timers;
		l->timers = t->next;
		free(t);
	}
	while (l->posted) {
		struct call *c = l->posted;
		l->posted = c->next;
		free(c);
	}
	/* Deferred calls are promised work (e.g. freeing a removed watch): run them. */
	while (l->deferred) {
		struct call *c = l->deferred;
		l->deferred = NULL;
		run_deferred(l, c);
	}
	while (l->timer_cache) {
		struct loop_timer *t = l->timer_cache;
		l->timer_cache = t->next;
		free(t);
	}
	while (l->call_cache) {
		struct call *c = l->call_cache;
		l->call_cache = c->next;
		free(c);
	}
	io_uring_queue_exit(&l->ring);
	io_uring_queue_exit(&l->sync_ring);
	close(l->epfd);
	close(l->ring_efd);
	close(l->post_efd);
	pthread_mutex_destroy(&l->post_mu);
	free(l);
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *arg)
{
	struct fd_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->fn = fn;
	w->arg = arg;
	struct epoll_event ev = {.events = events, .data.ptr = w};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;
		free(w);
		return r;
	}
	w->next = l->watches;
	l->watches = w;
	return 0;
}

int loop_mod_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *arg)
{
	struct fd_watch *w = find_watch(l, fd);
	if (!w)
		return -ENOENT;
	w->fn = fn;
	w->arg = arg;
	struct epoll_event ev = {.events = events, .data.ptr = w};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	return 0;
}

int loop_del_fd(struct loop *l, int fd)
{
	struct fd_watch **pp = &l->watches;
	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->next;
	if (!*pp)
		return -ENOENT;
	struct fd_watch *w = *pp;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	/* Events already fetched for this fd in the current batch must not
	 * reach a freed watch: neuter it and free it at the end of the batch. */
	*pp = w->next;
	w->fn = NULL;
	w->next = NULL;
	loop_defer(l, free, w);
	return 0;
}

int loop_timer_add(struct loop *l, uint64_t ms, loop_fn fn, void *arg, struct loop_timer **out)
{
	struct loop_timer *t = l->timer_cache;
	if (t) {
		l->timer_cache = t->next;
		l->ntimer_cache--;
	} else if (!(t = calloc(1, sizeof(*t)))) {
		return -ENOMEM;
	}
	t->due = loop_now_ms() + ms;
	t->fn = fn;
	t->arg = arg;
	struct loop_timer **pp = &l->timers;
	while (*pp && (*pp)->due <= t->due)
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
	if (out)
		*out = t;
	return 0;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	for (struct loop_timer **pp = &l->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			timer_put(l, t);
			return;
		}
	}
}

struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	while (!sqe) {
		io_uring_submit(&l->ring);
		l->pending_sqes = 0;
		sqe = io_uring_get_sqe(&l->ring);
	}
	io_uring_sqe_set_data(sqe, io);
	l->pending_sqes++;
	return sqe;
}

int loop_submit(struct loop *l)
{
	if (!l->pending_sqes)
		return 0;
	l->pending_sqes = 0;
	int r = io_uring_submit(&l->ring);
	return r < 0 ? r : 0;
}

int loop_io_sync(struct loop *l, void (*prep)(struct io_uring_sqe *sqe, void *arg), void *arg)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->sync_ring);
	struct io_uring_cqe *cqe;
	if (!sqe)
		return -EBUSY;
	prep(sqe, arg);
	int r = io_uring_submit(&l->sync_ring);
	if (r < 0)
		return r;
	do
		r = io_uring_wait_cqe(&l->sync_ring, &cqe);
	while (r == -EINTR);
	if (r < 0)
		return r;
	r = cqe->res;
	io_uring_cqe_seen(&l->sync_ring, cqe);
	return r;
}

static int push_call(struct call **list, loop_fn fn, void *arg, struct call *c)
{
	c->fn = fn;
	c->arg = arg;
	/* Keep FIFO order: callers expect posts to run in the order made. */
	while (*list)
		list = &(*list)->next;
	*list = c;
	return 0;
}

int loop_defer(struct loop *l, loop_fn fn, void *arg)
{
	struct call *c = l->call_cache;
	if (c) {
		l->call_cache = c->next;
		l->ncall_cache--;
		memset(c, 0, sizeof(*c));
	} else if (!(c = calloc(1, sizeof(*c)))) {
		return -ENOMEM;
	}
	return push_call(&l->deferred, fn, arg, c);
}

int loop_post(struct loop *l, loop_fn fn, void *arg)
{
	struct call *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&l->post_mu);
	push_call(&l->posted, fn, arg, c);
	pthread_mutex_unlock(&l->post_mu);
	uint64_t one = 1;
	if (write(l->post_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int loop_call(struct loop *l, loop_fn fn, void *arg)
{
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	bool done = false;
	struct call *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->mu = &mu;
	c->cv = &cv;
	c->done = &done;
	pthread_mutex_lock(&l->post_mu);
	push_call(&l->posted, fn, arg, c);
	pthread_mutex_unlock(&l->post_mu);
	uint64_t one = 1;
	if (write(l->post_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	pthread_mutex_lock(&mu);
	while (!done)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	pthread_cond_destroy(&cv);
	pthread_mutex_destroy(&mu);
	return 0;
}

static void run_calls(struct call *c)
{
	while (c) {
		struct call *next = c->next;
		c->fn(c->arg);
		if (c->mu) {
			pthread_mutex_lock(c->mu);
			*c->done = true;
			pthread_cond_signal(c->cv);
			pthread_mutex_unlock(c->mu);
		}
		free(c);
		c = next;
	}
}

static void reap_completions(struct loop *l)
{
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&l->ring, &cqe) == 0) {
		struct loop_io *io = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&l->ring, cqe);
		if (io && io->fn)
			io->fn(io, res);
	}
}

static void run_posted(struct loop *l)
{
	uint64_t v;
	if (read(l->post_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&l->post_mu);
	struct call *c = l->posted;
	l->posted = NULL;
	pthread_mutex_unlock(&l->post_mu);
	run_calls(c);
}

static void run_timers(struct loop *l)
{
	uint64_t now = loop_now_ms();
	while (l->timers && l->timers->due <= now) {
		struct loop_timer *t = l->timers;
		l->timers = t->next;
		loop_fn fn = t->fn;
		void *arg = t->arg;
		timer_put(l, t);
		fn(arg);
	}
}

static int next_timeout(struct loop *l)
{
	if (l->deferred || l->pending_sqes)
		return 0;
	if (!l->timers)
		return 1000;
	uint64_t now = loop_now_ms();
	if (l->timers->due <= now)
		return 0;
	uint64_t d = l->timers->due - now;
	return d > 1000 ? 1000 : (int)d;
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[MAX_EVENTS];
	l->stop = false;
	while (!l->stop) {
		loop_submit(l);
		int n = epoll_wait(l->epfd, evs, MAX_EVENTS, next_timeout(l));
		if (n < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == 1) {
				reap_completions(l);
			} else if (evs[i].data.u64 == 2) {
				run_posted(l);
			} else {
				struct fd_watch *w = evs[i].data.ptr;
				if (w->fn)
					w->fn(w->arg, evs[i].events);
			}
		}
		/* Completions can arrive without the eventfd being seen yet in
		 * this batch; reaping here keeps latency to one iteration. */
		reap_completions(l);
		run_timers(l);
		while (l->deferred) {
			struct call *c = l->deferred;
			l->deferred = NULL;
			run_deferred(l, c);
		}
	}
	return 0;
}

struct loop_waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int res;
	void (*start)(void *arg, struct loop_waiter *w);
	void *arg;
};

static void start_waiter(void *p)
{
	struct loop_waiter *w = p;
	w->start(w->arg, w);
}

void loop_done(struct loop_waiter *w, int res)
{
	pthread_mutex_lock(&w->mu);
	w->res = res;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int loop_call_wait(struct loop *l, void (*start)(void *arg, struct loop_waiter *w), void *arg)
{
	struct loop_waiter w = {.start = start, .arg = arg};
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	int r = loop_post(l, start_waiter, &w);
	if (r == 0) {
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
		r = w.res;
	}
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return r;
}
