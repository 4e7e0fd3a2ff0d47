/* Unit tests for the event loop: io_uring completions, timers, fds, cross-thread calls. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "replica/loop.h"

struct io_req {
	struct loop_io io;
	struct loop *l;
	int res;
	int *left;
};

static void io_done(struct loop_io *io, int res)
{
	struct io_req *r = (struct io_req *)io;
	r->res = res;
	if (--*r->left == 0)
		loop_stop(r->l);
}

static void test_uring_write_read(void **state)
{
	(void)state;
	struct loop *l;
	assert_int_equal(loop_new(&l), 0);
	char path[] = "/tmp/loop-test.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	enum { N = 64 };
	static char out[N][4096], in[N][4096];
	struct io_req reqs[N];
	int left = N;
	for (int i = 0; i < N; i++) {
		memset(out[i], i + 1, sizeof(out[i]));
		reqs[i] = (struct io_req){.io.fn = io_done, .l = l, .left = &left};
		io_uring_prep_write(loop_sqe(l, &reqs[i].io), fd, out[i], 4096, (uint64_t)i * 4096);
	}
	assert_int_equal(loop_run(l), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(reqs[i].res, 4096);
	left = N;
	for (int i = 0; i < N; i++) {
		reqs[i] = (struct io_req){.io.fn = io_done, .l = l, .left = &left};
		io_uring_prep_read(loop_sqe(l, &reqs[i].io), fd, in[i], 4096, (uint64_t)i * 4096);
	}
	assert_int_equal(loop_run(l), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(reqs[i].res, 4096);
		assert_memory_equal(in[i], out[i], 4096);
	}
	close(fd);
	loop_free(l);
}

static void prep_fsync(struct io_uring_sqe *sqe, void *arg)
{
	io_uring_prep_fsync(sqe, *(int *)arg, IORING_FSYNC_DATASYNC);
}

static void test_io_sync(void **state)
{
	(void)state;
	struct loop *l;
	assert_int_equal(loop_new(&l), 0);
	int fd = open("/tmp", O_RDONLY | O_DIRECTORY);
	assert_int_equal(loop_io_sync(l, prep_fsync, &fd), 0);
	int bad = -1;
	assert_int_equal(loop_io_sync(l, prep_fsync, &bad), -EBADF);
	close(fd);
	loop_free(l);
}

struct order {
	struct loop *l;
	int seq[4];
	int n;
};

static void record(struct order *o, int v)
{
	o->seq[o->n++] = v;
	if (o->n == 3)
		loop_stop(o->l);
}
static void t30(void *a)
{
	record(a, 30);
}
static void t10(void *a)
{
	record(a, 10);
}
static void t20(void *a)
{
	record(a, 20);
}
static void never(void *a)
{
	(void)a;
	fail_msg("cancelled timer fired");
}

static void test_timers_in_order(void **state)
{
	(void)state;
	struct loop *l;
	struct loop_timer *t;
	struct order o = {0};
	assert_int_equal(loop_new(&l), 0);
	o.l = l;
	loop_timer_add(l, 30, t30, &o, NULL);
	loop_timer_add(l, 10, t10, &o, NULL);
	loop_timer_add(l, 20, never, &o, &t);
	loop_timer_cancel(l, t);
	loop_timer_add(l, 20, t20, &o, NULL);
	uint64_t start = loop_now_ms();
	assert_int_equal(loop_run(l), 0);
	assert_true(loop_now_ms() - start >= 30);
	assert_int_equal(o.seq[0], 10);
	assert_int_equal(o.seq[1], 20);
	assert_int_equal(o.seq[2], 30);
	loop_free(l);
}

struct pipe_ctx {
	struct loop *l;
	int fd;
	char got[16];
};

static void on_readable(void *arg, uint32_t events)
{
	struct pipe_ctx *p = arg;
	assert_true(events & EPOLLIN);
	assert_true(read(p->fd, p->got, sizeof(p->got)) > 0);
	loop_del_fd(p->l, p->fd);
	loop_stop(p->l);
}

static void test_fd_watch(void **state)
{
	(void)state;
	struct loop *l;
	int fds[2];
	assert_int_equal(loop_new(&l), 0);
	assert_int_equal(pipe(fds), 0);
	struct pipe_ctx p = {.l = l, .fd = fds[0]};
	assert_int_equal(loop_add_fd(l, fds[0], EPOLLIN, on_readable, &p), 0);
	assert_int_equal(write(fds[1], "hello", 6), 6);
	assert_int_equal(loop_run(l), 0);
	assert_string_equal(p.got, "hello");
	assert_int_equal(loop_del_fd(l, fds[0]), -ENOENT);
	close(fds[0]);
	close(fds[1]);
	loop_free(l);
}

struct xthread {
	struct loop *l;
	int calls;
	int waited;
};

static void bump(void *arg)
{
	((struct xthread *)arg)->calls++;
}

static void start_async(void *arg, struct loop_waiter *w)
{
	struct xthread *x = arg;
	x->waited++;
	loop_done(w, 42);
}

static void stop_loop(void *arg)
{
	loop_stop(((struct xthread *)arg)->l);
}

static void *control_thread(void *arg)
{
	struct xthread *x = arg;
	for (int i = 0; i < 100; i++)
		loop_call(x->l, bump, x);
	int r = loop_call_wait(x->l, start_async, x);
	assert_int_equal(r, 42);
	loop_post(x->l, stop_loop, x);
	return NULL;
}

static void test_cross_thread(void **state)
{
	(void)state;
	struct xthread x = {0};
	pthread_t th;
	assert_int_equal(loop_new(&x.l), 0);
	pthread_create(&th, NULL, control_thread, &x);
	assert_int_equal(loop_run(x.l), 0);
	pthread_join(th, NULL);
	assert_int_equal(x.calls, 100);
	assert_int_equal(x.waited, 1);
	loop_free(x.l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uring_write_read), cmocka_unit_test(test_io_sync),
		cmocka_unit_test(test_timers_in_order),	 cmocka_unit_test(test_fd_watch),
		cmocka_unit_test(test_cross_thread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
