/*
 * filevol internals shared by filevol.c (the loop side: table, state machine, I/O) and
 * filevol_http.c (the helper thread running the blocking control-API calls).
 *
 * A job is handed to the helper thread, which fills its result fields and posts it back to
 * the loop, where job->done runs. Jobs own no loop state; the loop side keeps the volume
 * alive while one of its jobs is out (fvol.jobs).
 */
#ifndef BLOCKD_NFSGW_FILEVOL_INT_H
#define BLOCKD_NFSGW_FILEVOL_INT_H

#include <pthread.h>

#include "nfsgw/filevol.h"
#include "replica/engine.h"

enum fv_state {
	FV_CLOSED,   /* no engine; existence unknown */
	FV_OPENING,  /* engine_open running */
	FV_OPEN,     /* engine serving */
	FV_MISSING,  /* known not to exist */
	FV_CREATING, /* replicas being created */
	FV_CLOSING,  /* engine_close running */
	FV_DELETING, /* replicas being deleted */
	FV_FENCED,   /* a newer engine owns it: everything fails -ESTALE */
};

enum fv_op {
	OP_READ,
	OP_WRITE,
	OP_FLUSH,
	OP_ZERO,
	OP_DELETE,
	OP_OPEN, /* open (create with create_size when missing and it is not 0) */
	OP_SNAP_CREATE,
	OP_SNAP_DELETE,
	OP_SNAP_REVERT,
	OP_SNAP_READ,
};

struct fvol;
struct filevol;

struct fvreq {
	struct fvreq *next;
	struct fvol *v;
	enum fv_op op;
	uint64_t off, len;
	void *buf;
	uint32_t flags;
	int res;
	filevol_cb cb;
	void *arg;
	uint64_t create_size;
	struct bdev *bdev_out; /* OP_OPEN from filevol_open_bdev */
	bool pin;
	char snap[STORE_NAME_MAX];
};

struct fvol {
	struct fvol *hnext;
	struct filevol *fv;
	char name[STORE_NAME_MAX];
	enum fv_state st;
	struct engine *e;
	uint64_t size;
	bool growing;
	bool pinned;
	bool used_pending;
	struct fvreq *qhead, *qtail; /* waiting for a state change, in arrival order */
	uint32_t inflight;	     /* engine calls outstanding */
	uint32_t jobs;		     /* helper jobs outstanding */
	uint64_t last_use;
	uint64_t used, used_at;
	uint64_t used_new; /* the largest allocation the running JOB_USED saw */
	bool used_seen;
	uint64_t create_size; /* of the create running */
};

/* JOB_PROBE: is a volume the engine could not open (some node unreachable) missing? res
 * -ENOENT when no reachable node has it and fewer than `replicas` nodes are unreachable (so
 * a volume of that many members would have shown up), else -EIO. */
/* JOB_USED: every node's replica list (name, allocated), one job for all volumes waiting. */
enum fv_job_kind { JOB_CREATE, JOB_DELETE, JOB_USED, JOB_LIST, JOB_PROBE };

struct fv_job {
	struct fv_job *next;
	enum fv_job_kind kind;
	struct filevol *fv;
	struct fvol *v;
	void (*done)(struct fv_job *j); /* on the loop thread */
	void *ctx;
	char name[STORE_NAME_MAX];
	uint64_t size;	   /* JOB_CREATE */
	unsigned replicas; /* JOB_CREATE, JOB_PROBE */
	unsigned start;	   /* JOB_CREATE: first node tried; JOB_USED: node asked first */
	char prefix[STORE_NAME_MAX];
	/* results */
	int res;
	unsigned failed; /* JOB_DELETE, JOB_USED: nodes that did not answer */
	char **names;	 /* JOB_LIST, JOB_USED: malloc'd array of malloc'd names */
	size_t nnames;
	uint64_t *alloc;   /* JOB_USED: allocated bytes of names[i] on one node */
	char members[256]; /* JOB_CREATE: "a,b,c" for the log */
};

struct filevol {
	struct loop *l;
	struct config cfg;
	unsigned replicas;
	char engine_id[CONFIG_NAME_MAX];
	uint32_t io_timeout_ms;
	uint32_t idle_ms;
	struct engine_replica_addr addrs[CONFIG_MAX_NODES];
	uint32_t naddrs;
	struct fvol **tab;
	size_t tabsz, nvols;
	struct fvreq *free_reqs;
	unsigned rot;
	struct loop_timer *sweep;
	/* helper thread */
	pthread_t th;
	bool th_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct fv_job *jhead, *jtail;
	bool th_stop;
	unsigned jobs_out;
	bool used_job; /* a JOB_USED is out: it refreshes every volume waiting */
	/* close */
	bool closing;
	bool close_queued;
	filevol_cb close_cb;
	void *close_arg;
};

/* filevol_vol.c: the state machine. fvi_dispatch runs q (1) or starts what it waits for and
 * leaves it to be queued (0); fvi_run runs the queue. */
int fvi_dispatch(struct fvol *v, struct fvreq *q);
void fvi_run(struct fvol *v);
void fvi_push_tail(struct fvol *v, struct fvreq *q);
/* Completes q at the end of this loop iteration (never inside the caller's call). */
void fvi_req_defer(struct fvreq *q, int res);
void fvi_fail_all(struct fvol *v, int res);
void fvi_start_close(struct fvol *v);
void fvi_fenced_closed(void *arg, int res);

/* filevol.c */
void fvi_req_finish(struct fvreq *q, int res);
/* No queue, engine call, job or grow outstanding. */
bool fvi_quiet(const struct fvol *v);
/* During filevol_close: closes idle engines and finishes once nothing runs. */
void fvi_check_close(struct filevol *fv);

int fvh_start(struct filevol *fv);
/* Joins the helper thread; only with no job outstanding. */
void fvh_stop(struct filevol *fv);
/* Queues j; j->done(j) runs on the loop thread after the helper thread ran it. */
void fvh_submit(struct filevol *fv, struct fv_job *j);

#endif
