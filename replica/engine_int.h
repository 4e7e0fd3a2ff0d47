/*
 * engine_int: private state shared by engine.c (open, close, membership, targets),
 * engine_io.c (target ops and the guest data path) and engine_resync.c (resync, rebuild,
 * verify). Loop thread only.
 *
 * A *target* is one member of the replica set. Local targets call the store directly; remote
 * ones go through an rclient. Both take a struct tio (one op to one target) and complete it
 * exactly once, never before tio_submit() returns.
 */
#ifndef BLOCKD_ENGINE_INT_H
#define BLOCKD_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap.h"
#include "client.h"
#include "engine.h"
#include "proto.h"
#include "server.h"
#include "store.h"

#define ENGINE_TICK_MS 100
#define ENGINE_RECONNECT_MS 500
#define ENGINE_RESYNC_PAR 4
#define ENGINE_HASH_BATCH 64	/* grains per HASH request during rebuild / verify */
#define ENGINE_SPLIT (4u << 20) /* guest I/O larger than this is split */

struct engine;
struct target;
struct tio;

typedef void (*tio_fn)(struct tio *io, int res, const uint8_t *payload, uint32_t len);

struct tio {
	struct target *t;
	uint16_t op;
	uint64_t off, len, arg;
	uint32_t flags;
	const void *payload;
	uint32_t plen;
	void *rbuf;
	uint32_t rbuf_len;
	tio_fn fn;
	void *ctx;
	/* remote: deadline for the timeout sweep; list of the target's in-flight requests */
	uint64_t deadline;
	struct tio *prev, *next;
	bool listed;
	/* local: deferred completion */
	int lres;
	uint8_t *lpayload;
	uint32_t lplen;
	bool fua_flushed;
};

/* A remote connection; freed by its closed() callback, so t may outlive it and vice versa. */
struct conn {
	struct target *t;
	struct rclient *rc;
	bool ready; /* HELLO (and OPEN if needed) done */
	uint64_t started;
	struct tio hello;
	struct tio open;
};

enum tstate {
	T_INSYNC,
	T_REBUILDING, /* receives writes and a resync, is not read from */
	T_STALE,      /* receives nothing; its dirty bitmap grows */
};

struct resync;

struct target {
	struct engine *e;
	char node[STORE_NAME_MAX];
	bool has_addr;
	char host[64];
	uint16_t port;
	struct store *store; /* local target */
	struct conn *conn;   /* remote target, NULL when down */
	enum tstate state;
	bool suspect;	  /* in sync but not trusted for reads until its hash check ends */
	bool need_full;	  /* its bitmap is not trustworthy: rebuild by hash */
	bool diverged;	  /* bigger than the volume: never resynced automatically */
	bool ahead;	  /* its epoch is above ours: a newer engine owns it */
	bool auth_insync; /* in sync in the membership found at open */
	struct bitmap dirty;
	bool dirty_changed; /* since last persisted */
	uint64_t epoch;
	char error[128];
	struct tio *ifl_head, *ifl_tail; /* remote in-flight, oldest first */
	uint64_t last_try;
	/* open-time probe */
	bool probed, probe_pending, accepted;
	struct store_info info;
	int probe_err;
	bool held; /* its INFO reported a holder (proto.h) */
	uint64_t hold_epoch;
	char hold_label[PROTO_LABEL_MAX];
	/* snapshot catch-up (engine_snapsync.c), before the resync */
	struct snapsync *ss;
	/* resync */
	struct resync *rs;
	uint64_t resync_copied, resync_total, resync_done;
	bool resync_full;
};

enum eio_kind { EIO_READ, EIO_WRITE, EIO_FLUSH, EIO_TRIM };

struct eio {
	struct engine *e;
	enum eio_kind kind;
	uint64_t off, len;
	uint32_t flags;
	bool zero;
	void *rbuf;
	const void *wbuf;
	bdev_cb cb;
	void *arg;
	int res;
	int pending;
	bool fenced;
	uint32_t ok_insync; /* in-sync targets that acknowledged */
	uint32_t tried;	    /* READ: targets already tried (bit per target index) */
	uint64_t deadline;  /* while queued for quorum / at the membership barrier */
	uint64_t need_gen;  /* membership generation that must be persisted before ack */
	struct eio *prev, *next;
	int where; /* which list: 0 none, 1 queue, 2 active, 3 barrier */
	struct tio tio[ENGINE_MAX_REPLICAS];
	bool in_sync_at[ENGINE_MAX_REPLICAS];
};

struct eio_list {
	struct eio *head, *tail;
	uint32_t n;
};

/* A control operation run once I/O is quiesced. */
struct qop {
	struct engine *e;
	void (*run)(struct qop *q);
	engine_cb cb;
	void *arg;
	struct qop *next;
	/* op data */
	uint16_t op;
	char name[STORE_NAME_MAX];
	char *json;		     /* payload (clone) */
	char sid[STORE_SNAP_ID_MAX]; /* SNAP_CREATE: the new snapshot's identity */
	char pl[STORE_NAME_MAX + STORE_SNAP_ID_MAX + 1];
	uint64_t arg64;
	int pending;
	int res;
	uint32_t nok;
	bool fenced;
	struct tio tio[ENGINE_MAX_REPLICAS];
};

struct waiter {
	engine_cb cb;
	void *arg;
	uint64_t deadline;
	struct waiter *next;
};

struct engine {
	struct loop *l;
	char volume[STORE_NAME_MAX];
	char local_node[STORE_NAME_MAX];
	struct replica_server *local;
	char label[PROTO_LABEL_MAX];
	/* HELLO payload: volume NUL label */
	char hello[STORE_NAME_MAX + PROTO_LABEL_MAX];
	uint32_t hello_len;
	bool local_held; /* the local replica lists us as its holder (replica_server_hold) */
	bool refuse_if_held;
	struct engine_held *held;
	uint32_t naddrs;
	struct engine_replica_addr *addrs;
	uint32_t io_timeout_ms;

	uint64_t size, epoch;
	/* HELLO session (proto.h): a random id for this engine and the last session used; each
	 * new connection takes the next, so a replica drops what an older one still holds. */
	uint64_t sess_id, sess_last;
	uint32_t ntargets;
	struct target *t[ENGINE_MAX_REPLICAS];
	/* open-time probes of addresses that may not be members */
	uint32_t nprobes;
	struct target **probes;

	bool opening, open, closing, dying, fenced;
	engine_cb open_cb;
	void *open_arg;
	int open_pending;
	struct loop_timer *open_timer;
	struct target *ref; /* reference replica chosen at open */
	bool auth_clean;

	struct loop_timer *tick;
	uint64_t prev_tick; /* when the previous tick ran (ms) */
	uint64_t last_reconnect;

	struct eio_list queue, active, barrier;
	uint32_t nsplit; /* split parents in flight */

	/* grains written since the flush in flight / since the last flush started */
	struct bitmap wr_cur, wr_prev;
	uint32_t flushes;

	/* membership persistence */
	uint64_t members_gen, members_persisted;
	bool members_busy, members_dirty;
	uint64_t members_deadline;

	/* bitmaps persistence (after flush) */
	bool bitmaps_busy;

	/* quiesce */
	struct qop *qops;
	bool quiesced;
	struct qop *running;

	struct waiter *waiters;
	uint32_t copies; /* resync copies in flight (they count as I/O for quiesce) */
	int submitting;	 /* inside a bdev call: completions must be deferred */
	uint64_t tios_pending;
	engine_cb close_cb;
	void *close_arg;
	int close_res;
	bool freeing;
	struct verify *verify;
	int hold_writes;	/* verify: no writes or copies start while > 0 */
	uint64_t open_gen;	/* membership generation that must be persisted to open */
	struct store_info auth; /* INFO of the authoritative replica at open */
	struct target *auth_t;
	uint64_t snap_gen;     /* bumped when a snapshot op starts and ends (catch-up re-checks) */
	struct repair *repair; /* engine_repair.c, while one runs */
	/* engine_snapread.c: the identity of the snapshot read last, valid while snap_gen is
	 * sr_gen (no snapshot op since it was listed). */
	bool sr_cached;
	uint64_t sr_gen;
	char sr_name[STORE_NAME_MAX];
	char sr_id[STORE_SNAP_ID_MAX];
};

/* engine.c */
/* A local OPEN succeeded: the local replica server lists this engine as the holder. */
void eng_local_hold(struct engine *e);
uint32_t eng_quorum(const struct engine *e);
uint32_t eng_ninsync(const struct engine *e);
bool eng_takes_writes(const struct target *t);
bool eng_readable(const struct target *t);
int eng_tindex(const struct engine *e, const struct target *t);
void eng_eject(struct target *t, int err, const char *why);
void eng_fence(struct engine *e);
void eng_persist_members(struct engine *e);
void eng_members_bump(struct engine *e);
void eng_set_insync(struct target *t);
void eng_kick(struct engine *e);
uint64_t eng_long_timeout(const struct engine *e);
void eng_try_free(struct engine *e);
/* A returned replica whose snapshots match: resync its head (bitmap or hash). */
void eng_target_rejoin(struct target *t);

/* engine_io.c */
void tio_submit(struct tio *io);
void tio_prep(struct tio *io, struct target *t, uint16_t op, tio_fn fn, void *ctx);
uint64_t tio_timeout(const struct engine *e, uint16_t op);
void eng_mark_dirty(struct target *t, uint64_t off, uint64_t len);
void eio_dispatch_queue(struct engine *e);
void eio_expire(struct engine *e, uint64_t now);
void eio_release_barrier(struct engine *e);
void eio_list_add(struct eio_list *l, struct eio *io, int where);
void eio_list_del(struct eio_list *l, struct eio *io);
void eng_mark_written(struct engine *e, uint64_t off, uint64_t len);
bool eng_write_overlaps(struct engine *e, uint64_t off, uint64_t len);
bool eng_grain_locked(struct engine *e, uint64_t off, uint64_t len);
extern const struct bdev_ops engine_bdev_ops;

/* engine_snapsync.c */
void snapsync_start(struct target *t);
void snapsync_cancel(struct target *t);
int eng_snap_id(char out[STORE_SNAP_ID_MAX]);

/* engine_resync.c */
void resync_start(struct target *t);
void resync_pump(struct target *t);
void resync_cancel(struct target *t);
bool resync_range_busy(struct target *t, uint64_t off, uint64_t len);
void resync_persist_bitmaps(struct engine *e, engine_cb cb, void *arg);
/* engine_verify with fn (may be NULL) called for each chunk of n extents from pos, once its
 * hashes are in: h[k][i] is extent i's hash on ts[k] when got[k]. */
typedef void (*verify_chunk_fn)(void *arg, uint64_t pos, uint32_t n, uint32_t nts,
				struct target *const *ts, const bool *got, uint64_t *const *h);
int eng_verify_scan(struct engine *e, char **json, verify_chunk_fn fn, void *fn_arg, engine_cb cb,
		    void *arg);

/* engine_snapverify.c: adds "snapshots_checked", "snapshots_differ" and "snapshots_unchecked"
 * (see engine_verify) to out; cb(arg, res) may run before it returns. */
struct json_t;
int eng_snap_verify(struct engine *e, struct json_t *out, engine_cb cb, void *arg);

/* engine_repair.c */
bool repair_range_busy(struct engine *e, uint64_t off, uint64_t len);

#endif
