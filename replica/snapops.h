/*
 * snapops: the replica protocol's snapshot control ops (SNAP_CREATE, SNAP_REVERT, SNAP_LIST,
 * SNAP_READ, SNAP_HASH, CLONE) executed on a store, shared by the replica server
 * (server_ops.c) and the engine's local targets (engine_io.c) so both speak the same payloads
 * (docs/ARCHITECTURE.md, "Replica protocol"). Synchronous; loop thread.
 */
#ifndef BLOCKD_SNAPOPS_H
#define BLOCKD_SNAPOPS_H

#include <stdint.h>

#include "proto.h"
#include "store.h"

struct replica_server;

/* Runs op on s. srv is where a clone is created (NULL: -EOPNOTSUPP for CLONE). On success
 * *out is a malloc'd reply payload of *outlen bytes, or NULL. -EOPNOTSUPP for other ops. */
int snapops_exec(struct replica_server *srv, struct store *s, uint16_t op, uint64_t off,
		 uint64_t len, uint64_t arg, const uint8_t *payload, uint32_t plen, uint8_t **out,
		 uint32_t *outlen);

#endif
