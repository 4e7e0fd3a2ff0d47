/*
 * http_client: see http_client.h. One deadline covers the whole exchange so a peer that
 * trickles bytes cannot hold the caller longer than timeout_ms.
 */
#include "blockd/http_client.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_LEN 8192

struct conn {
	int fd;
	int64_t deadline;
	size_t pos, len;
	char buf[16384];
};

struct dbuf {
	char *p;
	size_t len, cap;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return 0;
	}
}

static int connect_to(const char *host, uint16_t port, int64_t deadline, int *fd_out)
{
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	if (getaddrinfo(host, service, &hints, &res) != 0 || !res)
		return -EINVAL;
	int err = -ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			*fd_out = fd;
			freeaddrinfo(res);
			return 0;
		}
		if (errno != EINPROGRESS) {
			err = -errno;
			close(fd);
			continue;
		}
		err = wait_fd(fd, POLLOUT, deadline);
		if (err == 0) {
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
				soerr = errno;
			if (soerr == 0) {
				*fd_out = fd;
				freeaddrinfo(res);
				return 0;
			}
			err = -soerr;
		}
		close(fd);
		if (err == -ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	return err;
}

static int send_all(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(c->fd, POLLOUT, c->deadline);
			if (r < 0)
				return r;
			continue;
		}
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads more bytes into c->buf. Returns the number read, 0 at EOF, or a negative errno. */
static int fill(struct conn *c)
{
	if (c->pos > 0) {
		memmove(c->buf, c->buf + c->pos, c->len - c->pos);
		c->len -= c->pos;
		c->pos = 0;
	}
	if (c->len == sizeof(c->buf))
		return -EPROTO;
	for (;;) {
		ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int w = wait_fd(c->fd, POLLIN, c->deadline);
			if (w < 0)
				return w;
			continue;
		}
		if (r < 0)
			return -errno;
		c->len += (size_t)r;
		return (int)r;
	}
}

/* Copies one line (without CR LF) into line. */
static int read_line(struct conn *c, char *line, size_t cap)
{
	for (;;) {
		char *nl = memchr(c->buf + c->pos, '\n', c->len - c->pos);
		if (nl) {
			size_t n = (size_t)(nl - (c->buf + c->pos));
			if (n > 0 && c->buf[c->pos + n - 1] == '\r')
				n--;
			if (n >= cap)
				return -EPROTO;
			memcpy(line, c->buf + c->pos, n);
			line[n] = 0;
			c->pos = (size_t)(nl - c->buf) + 1;
			return 0;
		}
		int r = fill(c);
		if (r < 0)
			return r;
		if (r == 0)
			return -EPROTO;
	}
}

static int dbuf_append(struct dbuf *b, const char *p, size_t n)
{
	if (n > HTTP_MAX_BODY - b->len)
		return -EFBIG;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np)
			return -ENOMEM;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
	return 0;
}

/* Appends n body bytes; until_eof reads until the peer closes instead. */
static int read_body(struct conn *c, struct dbuf *b, uint64_t n, bool until_eof)
{
	while (until_eof || n > 0) {
		if (c->pos == c->len) {
			int r = fill(c);
			if (r < 0)
				return r;
			if (r == 0)
				return until_eof ? 0 : -EPROTO;
		}
		size_t avail = c->len - c->pos;
		size_t take = (!until_eof && avail > n) ? (size_t)n : avail;
		int r = dbuf_append(b, c->buf + c->pos, take);
		if (r < 0)
			return r;
		c->pos += take;
		if (!until_eof)
			n -= take;
	}
	return 0;
}

static int read_chunked(struct conn *c, struct dbuf *b)
{
	char line[LINE_MAX_LEN];
	for (;;) {
		int r = read_line(c, line, sizeof(line));
		if (r < 0)
			return r;
		char *end;
		errno = 0;
		unsigned long long sz = strtoull(line, &end, 16);
		if (end == line || errno || (*end && *end != ';' && *end != ' '))
			return -EPROTO;
		if (sz > HTTP_MAX_BODY)
			return -EFBIG;
		if (sz == 0)
			break;
		r = read_body(c, b, sz, false);
		if (r < 0)
			return r;
		r = read_line(c, line, sizeof(line));
		if (r < 0)
			return r;
		if (line[0])
			return -EPROTO;
	}
	/* Trailers, up to the empty line. */
	for (;;) {
		int r = read_line(c, line, sizeof(line));
		if (r < 0)
			return r;
		if (!line[0])
			return 0;
	}
}

static int parse_status(const char *line, int *status)
{
	if (strncmp(line, "HTTP/1.", 7) != 0 || !line[7] || line[8] != ' ')
		return -EPROTO;
	const char *s = line + 9;
	if (s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9' ||
	    (s[3] && s[3] != ' '))
		return -EPROTO;
	*status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	return 0;
}

static int read_response(struct conn *c, const char *method, struct http_resp *out, struct dbuf *b)
{
	char line[LINE_MAX_LEN];
	int status;
	bool chunked, have_len;
	uint64_t clen;
	do {
		int r = read_line(c, line, sizeof(line));
		if (r < 0)
			return r;
		r = parse_status(line, &status);
		if (r < 0)
			return r;
		chunked = have_len = false;
		clen = 0;
		for (;;) {
			r = read_line(c, line, sizeof(line));
			if (r < 0)
				return r;
			if (!line[0])
				break;
			char *colon = strchr(line, ':');
			if (!colon)
				return -EPROTO;
			*colon = 0;
			const char *v = colon + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			if (strcasecmp(line, "content-length") == 0) {
				char *end;
				errno = 0;
				unsigned long long n = strtoull(v, &end, 10);
				if (end == v || errno || *v == '-')
					return -EPROTO;
				clen = n;
				have_len = true;
			} else if (strcasecmp(line, "transfer-encoding") == 0) {
				chunked = strcasestr(v, "chunked") != NULL;
			}
		}
	} while (status < 200); /* interim 1xx responses carry no body */
	out->status = status;
	if (strcmp(method, "HEAD") == 0 || status == 204 || status == 304)
		return 0;
	if (chunked)
		return read_chunked(c, b);
	if (have_len) {
		if (clen > HTTP_MAX_BODY)
			return -EFBIG;
		return read_body(c, b, clen, false);
	}
	return read_body(c, b, 0, true);
}

int http_request(const char *host, uint16_t port, const char *method, const char *path,
		 const char *body, int timeout_ms, struct http_resp *out)
{
	memset(out, 0, sizeof(*out));
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 1);
	struct dbuf b = {0};
	char *hdr = NULL;
	int r = connect_to(host, port, c->deadline, &c->fd);
	if (r < 0)
		goto out;
	size_t blen = body ? strlen(body) : 0;
	char hostport[300];
	snprintf(hostport, sizeof(hostport), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
	int n;
	if (body)
		n = asprintf(&hdr,
			     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: blockctl\r\n"
			     "Accept: application/json\r\nConnection: close\r\n"
			     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			     method, path, hostport, blen);
	else
		n = asprintf(
		    &hdr,
		    "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: blockctl\r\n"
		    "Accept: application/json\r\nConnection: close\r\n%s\r\n",
		    method, path, hostport,
		    strcmp(method, "GET") && strcmp(method, "HEAD") ? "Content-Length: 0\r\n" : "");
	if (n < 0) {
		hdr = NULL;
		r = -ENOMEM;
		goto out;
	}
	r = send_all(c, hdr, (size_t)n);
	if (r == 0 && blen)
		r = send_all(c, body, blen);
	if (r < 0)
		goto out;
	r = read_response(c, method, out, &b);
	if (r == 0 && !b.p)
		r = dbuf_append(&b, "", 0);
out:
	free(hdr);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
	if (r < 0) {
		free(b.p);
		memset(out, 0, sizeof(*out));
		return r;
	}
	out->body = b.p;
	out->len = b.len;
	return 0;
}

void http_resp_free(struct http_resp *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}
