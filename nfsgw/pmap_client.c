/*
 * pmap_client: blocking PMAP v2 SET / UNSET against a portmapper over TCP (see
 * nfsgw/portmap.h). Control path only: its own socket, one call per connection, 2 s bound on
 * connect, send and receive. AUTH_SYS as root, which is what rpcbind wants from loopback.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nfsc/libnfs-raw-portmap.h>

#include "nfsgw/portmap.h"

#define PMC_TIMEOUT_MS 2000
#define PMC_MAX_REPLY 1024

/* Not in the header: the same call at another port, for tests against our own portmapper. */
int pmap_client_call_port(const char *host, uint16_t port, uint32_t proc, uint32_t prog,
			  uint32_t vers, uint32_t prot, uint16_t pport);

static int connect_timeout(const char *host, uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
		struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
		if (getaddrinfo(host, NULL, &hints, &ai) != 0)
			return -EHOSTUNREACH;
		sin.sin_addr = ((struct sockaddr_in *)ai->ai_addr)->sin_addr;
		freeaddrinfo(ai);
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS) {
		int r = -errno;
		close(fd);
		return r;
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t elen = sizeof(err);
	int n;
	while ((n = poll(&p, 1, PMC_TIMEOUT_MS)) < 0 && errno == EINTR)
		;
	if (n == 0)
		err = ETIMEDOUT;
	else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		err = errno;
	if (err) {
		close(fd);
		return -err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	struct timeval tv = {.tv_sec = PMC_TIMEOUT_MS / 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static int io_all(int fd, void *buf, size_t n, bool wr)
{
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t r = wr ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		if (r == 0)
			return -ECONNRESET;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Encodes the whole record (mark included) into buf; its length, or -EINVAL. */
static int build_call(uint8_t *buf, uint32_t cap, uint32_t xid, uint32_t proc, pmap2_mapping *m)
{
	ZDR z;
	libnfs_zdrmem_create(&z, (caddr_t)buf, cap, ZDR_ENCODE);
	char mach[] = "nfsgw";
	uint32_t mlen = sizeof(mach) - 1;
	uint32_t hdr[] = {0, xid, 0, 2, PMAP_PROG, 2, proc, 1, 4 * 5 + 8};
	for (size_t i = 0; i < sizeof(hdr) / sizeof(hdr[0]); i++)
		if (!zdr_u_int(&z, &hdr[i]))
			return -EINVAL;
	uint32_t stamp = (uint32_t)time(NULL), zero = 0;
	char *mp = mach;
	/* AUTH_SYS body: stamp, machine, uid 0, gid 0, no gids; then an AUTH_NONE verifier. */
	if (!zdr_u_int(&z, &stamp) || !zdr_bytes(&z, &mp, &mlen, 255) || !zdr_u_int(&z, &zero) ||
	    !zdr_u_int(&z, &zero) || !zdr_u_int(&z, &zero) || !zdr_u_int(&z, &zero) ||
	    !zdr_u_int(&z, &zero) || !zdr_pmap2_mapping(&z, m) || z.pos < 4)
		return -EINVAL;
	uint32_t len = (uint32_t)z.pos;
	uint32_t mark = htonl(0x80000000u | (len - 4));
	memcpy(buf, &mark, 4);
	return (int)len;
}

int pmap_client_call_port(const char *host, uint16_t port, uint32_t proc, uint32_t prog,
			  uint32_t vers, uint32_t prot, uint16_t pport)
{
	pmap2_mapping m = {.prog = prog, .vers = vers, .prot = prot, .port = pport};
	uint8_t buf[PMC_MAX_REPLY];
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint32_t xid = (uint32_t)(ts.tv_nsec ^ (ts.tv_sec << 20) ^ getpid());
	int len = build_call(buf, sizeof(buf), xid, proc, &m);
	if (len < 0)
		return len;
	int fd = connect_timeout(host, port);
	if (fd < 0)
		return fd;
	int r = io_all(fd, buf, (size_t)len, true);
	uint32_t rlen = 0;
	/* A reply to PMAP SET/UNSET is one small record: anything else is not a portmapper. */
	while (r == 0) {
		uint8_t mark[4];
		if ((r = io_all(fd, mark, 4, false)) < 0)
			break;
		uint32_t n = get32(mark) & 0x7fffffffu;
		if (n > sizeof(buf) - rlen) {
			r = -EPROTO;
			break;
		}
		if ((r = io_all(fd, buf + rlen, n, false)) < 0)
			break;
		rlen += n;
		if (get32(mark) >> 31)
			break;
	}
	close(fd);
	if (r < 0)
		return r;
	/* xid, REPLY, MSG_ACCEPTED, verf flavor, verf len, verf body, SUCCESS, bool */
	if (rlen < 24 || get32(buf) != xid || get32(buf + 4) != 1 || get32(buf + 8) != 0)
		return -EPROTO;
	uint32_t vlen = get32(buf + 16);
	if (vlen > 400 || rlen < 28 + ((vlen + 3) & ~3u))
		return -EPROTO;
	const uint8_t *p = buf + 20 + ((vlen + 3) & ~3u);
	if (get32(p) != 0)
		return -EPROTO;
	return get32(p + 4) ? 0 : -EEXIST;
}

int pmap_client_set(const char *host, uint32_t prog, uint32_t vers, uint32_t prot, uint16_t port)
{
	return pmap_client_call_port(host, PMAP_PORT, 1, prog, vers, prot, port);
}

int pmap_client_unset(const char *host, uint32_t prog, uint32_t vers)
{
	return pmap_client_call_port(host, PMAP_PORT, 2, prog, vers, 0, 0);
}
