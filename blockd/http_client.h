/*
 * http_client: one blocking HTTP/1.1 request per TCP connection (Connection: close).
 *
 * Sends method + path with an optional JSON body, reads the status line, headers and the
 * body (Content-Length, chunked, or until the peer closes). The whole exchange, connect
 * included, must finish within timeout_ms or it fails with -ETIMEDOUT. The body is always
 * NUL-terminated so it can be handed to a JSON parser directly.
 *
 * Returns 0 (any HTTP status, including 4xx/5xx) or a negative errno: -ECONNREFUSED etc.
 * from the socket, -ETIMEDOUT, -EPROTO for a malformed response, -EFBIG for a body over
 * HTTP_MAX_BODY, -EINVAL for a bad host.
 */
#ifndef BLOCKD_HTTP_CLIENT_H
#define BLOCKD_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_BODY (64u << 20)

struct http_resp {
	int status;
	char *body; /* malloc'd, NUL-terminated; never NULL after a successful call */
	size_t len; /* body length without the terminating NUL */
};

/* body may be NULL (no body is sent). */
int http_request(const char *host, uint16_t port, const char *method, const char *path,
		 const char *body, int timeout_ms, struct http_resp *out);
void http_resp_free(struct http_resp *r);

#endif
