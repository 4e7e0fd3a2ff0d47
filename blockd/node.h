/*
 * node: one blockd node. Owns the loop (and its thread), the replica server, the NBD server
 * and the table of volumes whose engine runs here: attached volumes (exported over NBD,
 * listed in <data>/attachments.json so they come back after a restart) and temporary
 * engines opened for one API call on a volume attached nowhere.
 *
 * Threads: node_start/node_stop run on the main thread; every other node_* function is
 * called from a control thread (an HTTP handler), blocks, and does its loop work through
 * loop_call / loop_call_wait, never on the loop thread itself. Functions return 0 or a
 * negative errno and, on error, fill *e: a one-line message, and the name of the node the
 * volume is attached on when that is why the call was refused (then the errno is -EBUSY).
 */
#ifndef BLOCKD_NODE_H
#define BLOCKD_NODE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockd/config.h"
#include "replica/store.h"

struct node;

struct node_err {
	char msg[256];
	char node[CONFIG_NAME_MAX]; /* "" unless attached elsewhere */
	char holder[64];	    /* "" unless an engine outside this node holds it (409) */
};

/* Starts the loop thread, the replica server and the NBD server of node name. */
int node_start(const struct config *c, const char *name, struct node **out, char *err,
	       size_t errlen);
/* Re-attaches, in the background, the volumes attachments.json lists (retrying until a
 * quorum of their replicas is reachable, giving up on those attached elsewhere meanwhile). */
int node_reattach_start(struct node *n);
/* Stops re-attaching, detaches every volume (keeping attachments.json), frees the servers,
 * stops and joins the loop, frees n. Call after the API is stopped. */
void node_stop(struct node *n);

const struct config_node *node_self(const struct node *n);
struct loop *node_loop(struct node *n);
/* One timestamped line on stderr; n may be NULL. */
void node_log(const struct node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* GET /v1/node, /v1/replicas, /v1/attachments bodies. */
int node_info(struct node *n, json_t **out, struct node_err *e);
int node_replicas(struct node *n, json_t **out, struct node_err *e);
int node_attachments(struct node *n, json_t **out, struct node_err *e);

/* *out: the new replica as listed by node_replicas. */
int node_replica_create(struct node *n, const char *vol, uint64_t size,
			const struct store_member *members, uint32_t nmembers, json_t **out,
			struct node_err *e);
int node_replica_delete(struct node *n, const char *vol, int force, struct node_err *e);

/* *out: {"volume","nbd","epoch"}. Attaching a volume already attached here succeeds. One
 * attached on another node is refused (-EBUSY, e->node) unless force: then that node is asked
 * to detach it (a node that does not answer is fenced by the new engine's epoch). */
int node_attach(struct node *n, const char *vol, bool force, json_t **out, struct node_err *e);
int node_detach(struct node *n, const char *vol, struct node_err *e);
/* GET /v1/volumes/VOL (answers from replicas; opens no engine). */
int node_volume(struct node *n, const char *vol, json_t **out, struct node_err *e);

enum node_op {
	NODE_OP_RESIZE,	      /* size */
	NODE_OP_SNAP_LIST,    /* *out: SNAP_LIST array */
	NODE_OP_SNAP_CREATE,  /* snap */
	NODE_OP_SNAP_DELETE,  /* snap */
	NODE_OP_SNAP_REVERT,  /* snap */
	NODE_OP_CLONE,	      /* snap, name */
	NODE_OP_REPLICAS,     /* *out: engine_replicas as JSON */
	NODE_OP_VERIFY,	      /* *out: engine_verify JSON */
	NODE_OP_WAIT_HEALTHY, /* timeout_ms; -ETIMEDOUT when not healthy in time */
	NODE_OP_REPAIR,	      /* *out: engine_repair JSON */
};

struct node_op_args {
	uint64_t size;
	const char *snap;
	const char *name;
	uint32_t timeout_ms;
};

/* Runs op on the volume's engine here, or on a temporary engine when the volume is attached
 * nowhere; -EBUSY with e->node when it is attached on another node. *out: the op's JSON, or
 * {"volume"} for ops without one. */
int node_volume_op(struct node *n, const char *vol, enum node_op op, const struct node_op_args *a,
		   json_t **out, struct node_err *e);

#endif
