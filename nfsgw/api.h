/*
 * nfsgw api: the gateway's control API, HTTP/1.1 + JSON on libmicrohttpd's threads (one per
 * connection). Handlers never touch gateway or loop state: they run gateway_* on the loop
 * thread through loop_call / loop_call_wait and only route, check input and map errors.
 *
 * Errors: 400 (bad input), 404 (no such export or route), 409, 503, 500; body
 * {"error":"one line"}.
 *
 *   GET    /v1/health           {"gateway","ok":true}   (answered from the loop thread, so it
 *                                                         also proves the loop is serving)
 *   GET    /v1/gateway          gateway_status JSON
 *   GET    /v1/exports          {"text":"exports(5) text","exports":[{"path","id","clients":
 *                                [{"spec","rw","squash":"root_squash"|"no_root_squash"|
 *                                "all_squash","anonuid","anongid","secure"}]}]}
 *   POST   /v1/exports          {"line":"/path 1.2.3.0/24(rw)"} -> 201 {"path","added":true}
 *   DELETE /v1/exports?path=/x  -> 200 {"path","removed":true} | 404
 *   POST   /v1/snapshots        {"path":"/export/dir","name":"NAME"} -> 201
 *                                {"name","path","created":true} (gateway_snapshot_create)
 *   GET    /v1/snapshots[?path=/x]  {"snapshots":[gateway_snapshot_list entries]}
 *   DELETE /v1/snapshots/NAME   -> 200 {"name","deleted":true} | 404
 *   POST   /v1/snapshots/NAME/revert -> 200 {"name","reverted":true} | 404
 *
 * nfsgw_api_stop must run before the loop stops: a handler waiting on the loop would
 * otherwise never return and MHD_stop_daemon waits for it.
 */
#ifndef BLOCKD_NFSGW_API_H
#define BLOCKD_NFSGW_API_H

#include <stdint.h>

struct gateway;
struct loop;
struct nfsgw_api;

int nfsgw_api_start(struct gateway *g, struct loop *l, const char *host, uint16_t port,
		    struct nfsgw_api **out);
void nfsgw_api_stop(struct nfsgw_api *a);

#endif
