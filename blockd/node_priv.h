/*
 * node_priv: the node's internal state, shared by node.c (lifecycle, log, attachments.json,
 * background re-attach), node_vol.c (the volume table: engines, attach/detach, temporary
 * engines, NBD exports) and node_query.c (status and replica calls). Not a public contract.
 *
 * Everything below the "loop state" mark belongs to the loop thread.
 */
#ifndef BLOCKD_NODE_PRIV_H
#define BLOCKD_NODE_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockd/node.h"
#include "replica/engine.h"
#include "replica/loop.h"

/* How long a control call waits for the other nodes' answers. */
#define NODE_PEER_TIMEOUT_MS 1000
/* How long a control call waits for a volume being opened or closed here to settle. */
#define NODE_BUSY_WAIT_MS 30000
#define NODE_BUSY_POLL_MS 20
/* How long a forced attach waits for the node it takes the volume from to detach it. */
#define NODE_TAKEOVER_TIMEOUT_MS 5000

enum vol_state { VOL_OPENING, VOL_OPEN, VOL_CLOSING };

/* A volume whose engine runs on this node. */
struct vol {
	struct node *n;
	char name[STORE_NAME_MAX];
	enum vol_state st;
	bool attached; /* exported over NBD and wanted after a restart; else temporary */
	uint32_t refs; /* API calls and NBD connections using the engine */
	struct engine *e;
	struct loop_waiter *open_w;  /* woken when the open finishes */
	struct loop_waiter *close_w; /* woken when the close finishes */
	struct vol *next;
};

/* A volume listed in attachments.json. */
struct want {
	char name[STORE_NAME_MAX];
	struct want *next;
};

struct node {
	struct config cfg;
	const struct config_node *self; /* in cfg */
	struct loop *loop;
	pthread_t loop_thread;
	uint64_t start_ms;
	char attach_path[CONFIG_PATH_MAX + 32];
	uint32_t naddrs;
	struct engine_replica_addr addrs[CONFIG_MAX_NODES];

	/* Background re-attach thread. */
	pthread_mutex_t rmu;
	pthread_cond_t rcv;
	bool rstop;
	bool rthread_on;
	pthread_t rthread;

	/* ---- loop state ---- */
	struct replica_server *rs;
	struct nbd_server *nbd;
	struct vol *vols;
	struct want *wanted;
	bool stopping;
	uint32_t nclosing; /* engines shutdown still waits for */
	struct loop_waiter *shutdown_w;
};

/* node.c: attachments.json (loop thread). */
bool node_wanted(struct node *n, const char *vol);
int node_want(struct node *n, const char *vol, bool want);

/* node_vol.c */
extern const struct nbd_exports node_nbd_exports;
struct vol *node_vol_find(struct node *n, const char *name);
/* Control thread: attaches vol; reattach: only while attachments.json lists it. */
int node_attach_impl(struct node *n, const char *vol, bool reattach, bool force, json_t **out,
		     struct node_err *e);
/* Loop thread: if v's engine found out it is fenced, stops exporting v, forgets it in
 * attachments.json, closes it (logged) and returns true. */
bool node_vol_drop_fenced(struct vol *v);
/* Loop thread: closes every engine, then calls node_shutdown_done(). */
void node_vol_shutdown(struct node *n);
void node_shutdown_done(struct node *n);

/* node_query.c */
/* Control thread: the node that has vol attached, per the other nodes; "" if none. */
void node_find_attached(struct node *n, const char *vol, char out[CONFIG_NAME_MAX]);
/* Control thread: POSTs path (no body) to node's API; 0 on a 2xx answer. */
int node_peer_post(struct node *n, const char *node, const char *path, int timeout_ms);
void node_set_err(struct node_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* node_vol.c: "volume VOL is in use by LABEL" (409 with "holder"). */
void node_set_held(struct node_err *e, const char *vol, const char *label);
json_t *node_replica_json(const struct store_info *i);

#endif
