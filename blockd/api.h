/*
 * api: the node's control API, HTTP/1.1 + JSON on libmicrohttpd's own thread. Handlers run
 * node work on the loop thread (loop_call / loop_call_wait) and never touch loop state.
 *
 * Errors: HTTP 400 (bad input), 404 (no such thing), 409 (conflict: exists, busy, attached
 * elsewhere: body has "node"), 503 (no quorum, node not ready), 500; body {"error":"one line"}.
 *
 *   GET    /v1/health                         {"node","ok":true}
 *   GET    /v1/node                           {"node","host","http_port","replica_port",
 *                                              "nbd_port","replicas":N,"attached":N,"uptime_s"}
 *   GET    /v1/replicas                       [{"volume","size","epoch","members_gen",
 *                                              "members":[{"node","in_sync"}],"allocated",
 *                                              "clean","snapshots"}]     (replicas on this node)
 *   POST   /v1/replicas                       {"volume","size","members":["node1",..]} -> 201
 *   DELETE /v1/replicas/VOL[?force=1]
 *   GET    /v1/attachments                    [{"volume","nbd","epoch","clients"}]
 *   POST   /v1/volumes/VOL/attach[?force=1]   {"volume","nbd":"nbd://host:port/VOL","epoch"}
 *          (force, or body {"force":true}: even when attached on another node, which is asked
 *          to detach and is fenced by the new epoch if it does not)
 *   POST   /v1/volumes/VOL/detach
 *   GET    /v1/volumes/VOL                    {"volume","size","epoch","attached":"node"|null,
 *                                              "members":[..],"allocated","snapshots"}
 *   POST   /v1/volumes/VOL/resize             {"size"}
 *   GET    /v1/volumes/VOL/snapshots          SNAP_LIST JSON
 *   POST   /v1/volumes/VOL/snapshots          {"name"}
 *   DELETE /v1/volumes/VOL/snapshots/SNAP
 *   POST   /v1/volumes/VOL/snapshots/SNAP/revert
 *   POST   /v1/volumes/VOL/snapshots/SNAP/clone   {"name"}
 *   GET    /v1/volumes/VOL/replicas           [{"node","state","epoch","resync_copied",
 *                                              "resync_total","resync_done","error"}]
 *   POST   /v1/volumes/VOL/verify             engine_verify JSON (read-only)
 *   POST   /v1/volumes/VOL/repair             engine_repair JSON: verify's plus "repaired",
 *                                              "unrepairable" (extents differing, no majority)
 *   POST   /v1/volumes/VOL/wait-healthy       {"timeout_ms"} -> 200 or 503
 *
 * Volume routes use the engine attached on this node; when the volume is attached on another
 * node they answer 409 with "node"; when it is attached nowhere they open a temporary engine
 * (no NBD export) for the call.
 */
#ifndef BLOCKD_API_H
#define BLOCKD_API_H

#include <stdint.h>

struct node;
struct api;

int api_start(struct node *n, const char *host, uint16_t port, struct api **out);
void api_stop(struct api *a);

#endif
