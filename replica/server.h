/*
 * server: serves the replicas stored on this node over the replica protocol (proto.h).
 *
 * Replicas live in <data>/replicas/<volume>/ (one store each). The server opens a store on
 * the first HELLO for it and keeps it open until replica_server_free() or destroy. Every
 * connection is hostile until framed: a bad header closes that connection only; a bad
 * payload checksum gets -EBADMSG; an unknown volume -ENOENT. Requests on one connection are
 * executed concurrently and answered as they complete (out of order).
 *
 * All calls on the loop thread. Functions return 0 or a negative errno.
 */
#ifndef BLOCKD_SERVER_H
#define BLOCKD_SERVER_H

#include <stdint.h>

#include "loop.h"
#include "store.h"

struct replica_server;

/* Listens on host:port. node is this node's name (reported in INFO). */
int replica_server_new(struct loop *l, const char *node, const char *data_dir, const char *host,
		       uint16_t port, struct replica_server **out);
/* Closes every connection and store (cleanly). */
void replica_server_free(struct replica_server *s);

/* Creates a replica of volume name (size bytes) with the given members (node names). */
int replica_server_create(struct replica_server *s, const char *name, uint64_t size,
			  const struct store_member *members, uint32_t nmembers);
/* Closes and removes a replica; -EBUSY while an engine has it open (not clean). */
int replica_server_destroy(struct replica_server *s, const char *name, int force);
/* The open store for name (opening it if needed), for an engine on this node. */
int replica_server_store(struct replica_server *s, const char *name, struct store **out);
/* The holder (proto.h) of volume name for an engine on this node that uses its store without a
 * socket: set when its OPEN succeeded, until replica_server_release() with the same engine id
 * or a newer OPEN. label: at most PROTO_LABEL_MAX - 1 bytes. */
int replica_server_hold(struct replica_server *s, const char *name, uint64_t engine,
			const char *label, uint64_t epoch);
void replica_server_release(struct replica_server *s, const char *name, uint64_t engine);
/* 1 and the holder's label (PROTO_LABEL_MAX bytes) and epoch if name is held, 0 if not. */
int replica_server_holder(struct replica_server *s, const char *name, char *label, uint64_t *epoch);
/* Names of local replicas; *names is malloc'd array of malloc'd strings. */
int replica_server_list(struct replica_server *s, char ***names, uint32_t *n);
/* Live connections, for tests and status. */
uint32_t replica_server_nconns(struct replica_server *s);

#endif
