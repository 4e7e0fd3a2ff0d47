/*
 * loop: the single-threaded event loop every blockd data path runs on.
 *
 * Contract:
 * - Sockets are non-blocking and watched with epoll (readiness).
 * - All disk I/O goes through the loop's io_uring. The caller embeds a
 *   struct loop_io in its own request, fills an SQE from loop_sqe() and
 *   gets fn(io, res) back on the loop thread; res is the CQE result
 *   (bytes or a negative errno). SQEs are submitted in one batch per
 *   loop iteration, so many requests coalesce into one syscall.
 * - Timers are one-shot, millisecond resolution.
 * - loop_post() is the only call that is safe from another thread (the
 *   HTTP control thread uses it); loop_call() posts and waits.
 * - Nothing here allocates per I/O.
 */
#ifndef BLOCKD_LOOP_H
#define BLOCKD_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_timer;

struct loop_io {
	void (*fn)(struct loop_io *io, int res);
};

typedef void (*loop_fd_fn)(void *arg, uint32_t events);
typedef void (*loop_fn)(void *arg);

int loop_new(struct loop **out);
void loop_free(struct loop *l);

/* Runs until loop_stop(); returns 0 or a negative errno. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

/* events: EPOLLIN / EPOLLOUT (edge- or level-triggered is the caller's choice). */
int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *arg);
int loop_mod_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *arg);
int loop_del_fd(struct loop *l, int fd);

/* One-shot timer; *out may be NULL. The handle dies when the timer fires or is cancelled. */
int loop_timer_add(struct loop *l, uint64_t ms, loop_fn fn, void *arg, struct loop_timer **out);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);
uint64_t loop_now_ms(void);

/*
 * Returns a zeroed SQE whose completion will call io->fn. Never NULL: when
 * the ring is full, pending SQEs are submitted first.
 */
struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_io *io);
/* Submit now rather than at the end of this iteration (rarely needed). */
int loop_submit(struct loop *l);
/*
 * Runs one SQE to completion on the calling (loop) thread and returns its
 * result. For control-path operations (snapshot, open) that may block.
 */
int loop_io_sync(struct loop *l, void (*prep)(struct io_uring_sqe *sqe, void *arg), void *arg);

/* Thread-safe: run fn(arg) on the loop thread soon. */
int loop_post(struct loop *l, loop_fn fn, void *arg);
/* Thread-safe, blocking: run fn(arg) on the loop thread and wait for it. */
int loop_call(struct loop *l, loop_fn fn, void *arg);
/*
 * Thread-safe, blocking: runs start(arg, w) on the loop thread and waits until some
 * loop-thread code calls loop_done(w, res); returns res. Bridges a control thread to
 * asynchronous loop-side work (an engine open, a quiesced snapshot).
 */
struct loop_waiter;
int loop_call_wait(struct loop *l, void (*start)(void *arg, struct loop_waiter *w), void *arg);
void loop_done(struct loop_waiter *w, int res);
/* Run fn(arg) on the loop thread at the end of this iteration (loop thread only). */
int loop_defer(struct loop *l, loop_fn fn, void *arg);

#endif
