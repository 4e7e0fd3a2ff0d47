/*
 * nfs3_hold: holding the calls that change anything (nfs3_hold/nfs3_release/nfs3_inflight,
 * see nfs3.h), so the gateway can take snapshots of many volumes and the meta in one cut.
 *
 * A changing call is counted in n->changing from its dispatch to its finish. While holds > 0
 * new changing calls are queued (still counted in inflight: they were dispatched and are not
 * answered), and run in arrival order when the last hold is released. A hold's callback runs
 * when changing reaches 0: at once (before nfs3_hold returns) when nothing changing runs.
 */
#include <errno.h>
#include <stdlib.h>

#include "nfsgw/nfs3_priv.h"

struct nfs3_hold_waiter {
	struct nfs3_hold_waiter *next;
	void (*cb)(void *arg, int res);
	void *arg;
};

bool nfs3_proc_changes(uint32_t proc)
{
	switch (proc) {
	case NFS3_SETATTR:
	case NFS3_WRITE:
	case NFS3_CREATE:
	case NFS3_MKDIR:
	case NFS3_SYMLINK:
	case NFS3_MKNOD:
	case NFS3_REMOVE:
	case NFS3_RMDIR:
	case NFS3_RENAME:
	case NFS3_LINK:
	case NFS3_COMMIT:
		return true;
	default:
		return false;
	}
}

/* Runs the waiters registered so far (in registration order); they may hold or release. */
static void fire_waiters(struct nfs3 *n)
{
	struct nfs3_hold_waiter *w = n->waiters, *rev = NULL;
	n->waiters = NULL;
	while (w) {
		struct nfs3_hold_waiter *next = w->next;
		w->next = rev;
		rev = w;
		w = next;
	}
	while (rev) {
		struct nfs3_hold_waiter *next = rev->next;
		rev->cb(rev->arg, 0);
		free(rev);
		rev = next;
	}
}

bool nfs3_hold_admit(struct nfs3_req *r)
{
	struct nfs3 *n = r->n;
	if (!nfs3_proc_changes(r->proc))
		return true;
	if (n->holds || n->held_head) {
		r->held_next = NULL;
		if (n->held_tail)
			n->held_tail->held_next = r;
		else
			n->held_head = r;
		n->held_tail = r;
		return false;
	}
	r->changing = true;
	n->changing++;
	return true;
}

void nfs3_hold_finished(struct nfs3_req *r)
{
	struct nfs3 *n = r->n;
	if (!r->changing)
		return;
	r->changing = false;
	if (--n->changing == 0 && n->waiters)
		fire_waiters(n);
}

int nfs3_hold(struct nfs3 *n, void (*cb)(void *arg, int res), void *arg)
{
	if (!n || !cb)
		return -EINVAL;
	n->holds++;
	if (n->changing == 0) {
		cb(arg, 0);
		return 0;
	}
	struct nfs3_hold_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		n->holds--;
		return -ENOMEM;
	}
	w->cb = cb;
	w->arg = arg;
	w->next = n->waiters;
	n->waiters = w;
	return 0;
}

void nfs3_release(struct nfs3 *n)
{
	if (!n || !n->holds)
		return;
	if (--n->holds)
		return;
	/* A released call may finish at once and a callback may take a new hold: stop then. */
	while (!n->holds && n->held_head) {
		struct nfs3_req *r = n->held_head;
		n->held_head = r->held_next;
		if (!n->held_head)
			n->held_tail = NULL;
		r->held_next = NULL;
		r->changing = true;
		n->changing++;
		nfs3_run(r);
	}
}

uint32_t nfs3_inflight(struct nfs3 *n)
{
	return n ? n->inflight : 0;
}

void nfs3_hold_drop_all(struct nfs3 *n)
{
	while (n->held_head) {
		struct nfs3_req *r = n->held_head;
		n->held_head = r->held_next;
		if (!n->held_head)
			n->held_tail = NULL;
		nfs3_drop(r);
	}
}
