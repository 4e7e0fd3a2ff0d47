/*
 * loop_wait: drive a test's event loop until a condition holds, with a bound, so tests wait
 * for what they need instead of sleeping a guessed time. Header-only, for cmocka tests.
 */
#ifndef TESTS_LOOP_WAIT_H
#define TESTS_LOOP_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#include "replica/loop.h"

struct waiter {
	struct loop *l;
	bool (*pred)(void *);
	void *arg;
	uint64_t deadline;
	bool ok;
};

static void wait_tick(void *p)
{
	struct waiter *w = p;
	if (w->pred(w->arg)) {
		w->ok = true;
		loop_stop(w->l);
		return;
	}
	if (loop_now_ms() > w->deadline) {
		loop_stop(w->l);
		return;
	}
	loop_timer_add(w->l, 1, wait_tick, w, NULL);
}

/* Runs the loop until pred(arg) holds; false after ms without it. */
static inline bool run_until(struct loop *l, bool (*pred)(void *), void *arg, uint64_t ms)
{
	struct waiter w = {.l = l, .pred = pred, .arg = arg, .deadline = loop_now_ms() + ms};
	loop_timer_add(l, 0, wait_tick, &w, NULL);
	assert_int_equal(loop_run(l), 0);
	return w.ok;
}

static inline bool always(void *arg)
{
	(void)arg;
	return true;
}

#endif
