/*
 * peer: blocking HTTP requests (without body) from one blockd to the control APIs of the
 * others, all in parallel under one deadline, for control-thread questions such as "who has
 * VOL attached".
 * A peer that is down, slow or answers garbage just has no reply (dead nodes must not stop
 * the living from acting). Never called on the loop thread.
 */
#ifndef BLOCKD_PEER_H
#define BLOCKD_PEER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct peer_get {
	const char *host;
	uint16_t port;
	const char *method; /* NULL: GET */
	const char *path;
	/* Results: err 0 and status the HTTP status, reply the parsed JSON body (NULL if it
	 * is not JSON; caller json_decref's it); or err a negative errno. */
	int err;
	int status;
	json_t *reply;
};

/* Requests each p[i].path from p[i]; returns when all answered or timeout_ms passed. */
void peer_get_all(struct peer_get *p, unsigned n, int timeout_ms);

#endif
