/*
 * exports: the exports(5) parser and writer (see exports.h).
 *
 * The text is cut into logical lines (a trailing backslash joins the next physical line; a
 * '#' starts a comment), each logical line into whitespace-separated tokens. The first token
 * is the path (optionally in double quotes), every other one a client `host(opts)`, a bare
 * `host` (default options), or `-opts` (defaults for the clients after it, as exportfs
 * does). Every error names the physical line the logical line started on.
 */
#include "nfsgw/exports.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define EXPORT_ANON_DEFAULT 65534u

struct eparse {
	unsigned line;
	char *err;
	size_t errlen;
};

static int perr(struct eparse *p, const char *fmt, ...)
{
	if (p->err && p->errlen) {
		int n = snprintf(p->err, p->errlen, "line %u: ", p->line);
		if (n >= 0 && (size_t)n < p->errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

int exports_normalize_path(const char *path, char *out)
{
	if (!path || path[0] != '/')
		return -EINVAL;
	size_t len = 0;
	out[0] = '/';
	len = 1;
	const char *s = path;
	while (*s) {
		while (*s == '/')
			s++;
		if (!*s)
			break;
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 1 && s[0] == '.') {
			/* nothing */
		} else if (n == 2 && s[0] == '.' && s[1] == '.') {
			/* ".." pops so that a client cannot climb out of an export by name. */
			while (len > 1 && out[len - 1] != '/')
				len--;
			if (len > 1)
				len--;
		} else {
			if (len > 1) {
				if (len + 1 >= EXPORT_PATH_MAX)
					return -EINVAL;
				out[len++] = '/';
			}
			if (len + n >= EXPORT_PATH_MAX)
				return -EINVAL;
			memcpy(out + len, s, n);
			len += n;
		}
		s += n;
	}
	out[len] = 0;
	return 0;
}

static void client_defaults(struct export_client *c)
{
	memset(c, 0, sizeof(*c));
	c->rw = false;
	c->secure = false;
	c->squash = EXPORT_ROOT_SQUASH;
	c->anonuid = EXPORT_ANON_DEFAULT;
	c->anongid = EXPORT_ANON_DEFAULT;
}

static int parse_u32(const char *v, uint32_t *out)
{
	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || x > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

/* Applies a comma-separated option list (no parentheses) to c. */
static int parse_opts(struct eparse *p, const char *opts, size_t len, struct export_client *c)
{
	char buf[256];
	if (len >= sizeof(buf))
		return perr(p, "option list too long");
	memcpy(buf, opts, len);
	buf[len] = 0;
	char *save = NULL;
	if (len == 0)
		return 0;
	if (buf[0] == ',' || buf[len - 1] == ',' || strstr(buf, ",,"))
		return perr(p, "empty option in '%s'", buf);
	for (char *o = strtok_r(buf, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "rw"))
			c->rw = true;
		else if (!strcmp(o, "ro"))
			c->rw = false;
		else if (!strcmp(o, "root_squash"))
			c->squash = EXPORT_ROOT_SQUASH;
		else if (!strcmp(o, "no_root_squash"))
			c->squash = EXPORT_NO_ROOT_SQUASH;
		else if (!strcmp(o, "all_squash"))
			c->squash = EXPORT_ALL_SQUASH;
		else if (!strcmp(o, "secure"))
			c->secure = true;
		else if (!strcmp(o, "insecure"))
			c->secure = false;
		else if (!strcmp(o, "sync") || !strcmp(o, "async") || !strcmp(o, "subtree_check") ||
			 !strcmp(o, "no_subtree_check") || !strcmp(o, "wdelay") ||
			 !strcmp(o, "no_wdelay"))
			continue; /* accepted, no effect (see exports.h) */
		else if (!strncmp(o, "anonuid=", 8)) {
			if (parse_u32(o + 8, &c->anonuid))
				return perr(p, "bad anonuid '%s'", o + 8);
		} else if (!strncmp(o, "anongid=", 8)) {
			if (parse_u32(o + 8, &c->anongid))
				return perr(p, "bad anongid '%s'", o + 8);
		} else if (!strncmp(o, "fsid=", 5)) {
			if (!o[5])
				return perr(p, "empty fsid");
		} else {
			return perr(p, "unknown option '%s'", o);
		}
	}
	return 0;
}

static int mask_from_prefix(const char *s, uint32_t *mask)
{
	uint32_t n;
	if (strlen(s) > 2 || parse_u32(s, &n) || n > 32)
		return -EINVAL;
	*mask = n == 0 ? 0 : ~0u << (32 - n);
	return 0;
}

static int mask_from_dotted(const char *s, uint32_t *mask)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		return -EINVAL;
	uint32_t m = ntohl(a.s_addr);
	/* Contiguous: the inverted mask plus one is a power of two. */
	uint32_t inv = ~m;
	if (inv & (inv + 1))
		return -EINVAL;
	*mask = m;
	return 0;
}

static bool numeric_host(const char *s)
{
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || *s == '.'))
			return false;
	return true;
}

static bool hostname_ok(const char *s)
{
	if (!*s || strlen(s) > 253)
		return false;
	for (; *s; s++) {
		char ch = *s;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

/* Parses the host part of a client (no options) into addr/mask. */
static int parse_host(struct eparse *p, const char *h, struct export_client *c)
{
	if (!strcmp(h, "*")) {
		c->addr = 0;
		c->mask = 0;
		return 0;
	}
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", h);
	char *slash = strchr(buf, '/');
	uint32_t mask = ~0u;
	if (slash) {
		*slash = 0;
		const char *m = slash + 1;
		int r = strchr(m, '.') ? mask_from_dotted(m, &mask) : mask_from_prefix(m, &mask);
		if (r)
			return perr(p, "bad netmask '%s' in '%s'", m, h);
	}
	struct in_addr a;
	if (inet_pton(AF_INET, buf, &a) == 1) {
		c->addr = ntohl(a.s_addr) & mask;
		c->mask = mask;
		return 0;
	}
	if (slash || numeric_host(buf))
		return perr(p, "bad address '%s'", h);
	if (strchr(buf, '*') || strchr(buf, '?') || buf[0] == '@')
		return perr(p, "wildcard host names and netgroups are not supported: '%s'", h);
	if (!hostname_ok(buf))
		return perr(p, "bad host name '%s'", h);
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int g = getaddrinfo(buf, NULL, &hints, &res);
	if (g || !res) {
		if (res)
			freeaddrinfo(res);
		return perr(p, "host '%s' does not resolve: %s", h, g ? gai_strerror(g) : "none");
	}
	const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
	c->addr = ntohl(sin->sin_addr.s_addr);
	c->mask = ~0u;
	freeaddrinfo(res);
	return 0;
}

static int parse_client(struct eparse *p, const char *tok, const struct export_client *defaults,
			struct export_client *c)
{
	*c = *defaults;
	if (strlen(tok) >= sizeof(c->spec))
		return perr(p, "client '%.32s...' too long", tok);
	snprintf(c->spec, sizeof(c->spec), "%s", tok);
	const char *open = strchr(tok, '(');
	char host[256];
	if (open) {
		size_t tl = strlen(tok);
		if (tok[tl - 1] != ')')
			return perr(p, "missing ')' in '%s'", tok);
		if (open == tok)
			return perr(p, "options without a client in '%s' (a space before '('?)",
				    tok);
		size_t hl = (size_t)(open - tok);
		memcpy(host, tok, hl);
		host[hl] = 0;
		const char *opts = open + 1;
		size_t ol = tl - 1 - (size_t)(opts - tok);
		if (memchr(opts, '(', ol) || memchr(opts, ')', ol))
			return perr(p, "bad parentheses in '%s'", tok);
		int r = parse_opts(p, opts, ol, c);
		if (r)
			return r;
	} else {
		if (strchr(tok, ')'))
			return perr(p, "bad parentheses in '%s'", tok);
		snprintf(host, sizeof(host), "%s", tok);
	}
	/* The spec keeps only the host part; exports_format re-renders the options. */
	snprintf(c->spec, sizeof(c->spec), "%s", host);
	return parse_host(p, host, c);
}

/* Splits line (modified in place) into tokens; a token starting with '"' runs to the next
 * '"'. Returns the count or -EINVAL. */
static int tokenize(struct eparse *p, char *line, char **tok, int max)
{
	int n = 0;
	char *s = line;
	for (;;) {
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
		if (!*s)
			return n;
		if (n == max)
			return perr(p, "too many clients (at most %d)", EXPORT_MAX_CLIENTS);
		if (*s == '"') {
			char *q = strchr(s + 1, '"');
			if (!q)
				return perr(p, "unterminated quote");
			tok[n++] = s;
			s = q + 1;
			if (*s && *s != ' ' && *s != '\t' && *s != '\r')
				return perr(p, "text after a closing quote");
			if (*s)
				*s++ = 0;
			continue;
		}
		tok[n++] = s;
		while (*s && *s != ' ' && *s != '\t' && *s != '\r')
			s++;
		if (*s)
			*s++ = 0;
	}
}

static int parse_line(struct eparse *p, char *line, struct exports *out)
{
	char *tok[EXPORT_MAX_CLIENTS + 8];
	int n = tokenize(p, line, tok, (int)(sizeof(tok) / sizeof(tok[0])));
	if (n <= 0)
		return n;
	char *path = tok[0];
	if (path[0] == '"') {
		path++;
		path[strlen(path) - 1] = 0;
	}
	if (out->n == EXPORT_MAX)
		return perr(p, "more than %d exports", EXPORT_MAX);
	struct export *e = &out->e[out->n];
	memset(e, 0, sizeof(*e));
	if (exports_normalize_path(path, e->path))
		return perr(p, "bad export path '%s' (absolute, < %d bytes)", path,
			    EXPORT_PATH_MAX);
	if (exports_find_path(out, e->path))
		return perr(p, "duplicate export %s", e->path);
	e->id = (uint32_t)XXH3_64bits(e->path, strlen(e->path));
	if (exports_find_id(out, e->id))
		return perr(p, "export id of %s collides with another export", e->path);
	struct export_client defaults;
	client_defaults(&defaults);
	for (int i = 1; i < n; i++) {
		if (tok[i][0] == '-') {
			int r = parse_opts(p, tok[i] + 1, strlen(tok[i] + 1), &defaults);
			if (r)
				return r;
			continue;
		}
		if (e->nclients == EXPORT_MAX_CLIENTS)
			return perr(p, "too many clients (at most %d)", EXPORT_MAX_CLIENTS);
		int r = parse_client(p, tok[i], &defaults, &e->clients[e->nclients]);
		if (r)
			return r;
		e->nclients++;
	}
	if (e->nclients == 0)
		return perr(p, "export %s lists no client", e->path);
	out->n++;
	return 0;
}

int exports_parse(const char *text, struct exports *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = 0;
	struct eparse p = {.line = 0, .err = err, .errlen = errlen};
	if (!text)
		return 0;
	size_t cap = strlen(text) + 1;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	const char *s = text;
	unsigned physical = 0;
	int r = 0;
	while (*s && !r) {
		/* One logical line: physical lines joined while they end in a backslash. */
		size_t len = 0;
		bool comment = false;
		p.line = physical + 1;
		for (;;) {
			const char *nl = strchr(s, '\n');
			size_t n = nl ? (size_t)(nl - s) : strlen(s);
			physical++;
			for (size_t i = 0; i < n; i++) {
				if (s[i] == '#')
					comment = true;
				if (!comment)
					buf[len++] = s[i];
			}
			/* A backslash inside a comment does not continue the line. */
			bool cont = !comment && n > 0 && s[n - 1] == '\\';
			if (cont)
				len--;
			s = nl ? nl + 1 : s + n;
			if (!cont || !*s)
				break;
			buf[len++] = ' ';
		}
		buf[len] = 0;
		if (strlen(buf) != len) {
			r = perr(&p, "NUL byte");
			break;
		}
		r = parse_line(&p, buf, out);
	}
	free(buf);
	if (r)
		memset(out, 0, sizeof(*out));
	return r;
}

static const char *squash_name(enum export_squash s)
{
	switch (s) {
	case EXPORT_NO_ROOT_SQUASH:
		return "no_root_squash";
	case EXPORT_ALL_SQUASH:
		return "all_squash";
	default:
		return "root_squash";
	}
}

int exports_format(const struct exports *ex, char *buf, size_t len)
{
	size_t off = 0;
#define OUT(...)                                                                                   \
	do {                                                                                       \
		int n_ = snprintf(buf + off, off < len ? len - off : 0, __VA_ARGS__);              \
		if (n_ < 0)                                                                        \
			return -ENOSPC;                                                            \
		off += (size_t)n_;                                                                 \
	} while (0)
	if (len)
		buf[0] = 0;
	for (uint32_t i = 0; i < ex->n; i++) {
		const struct export *e = &ex->e[i];
		if (strpbrk(e->path, " \t"))
			OUT("\"%s\"", e->path);
		else
			OUT("%s", e->path);
		for (uint32_t j = 0; j < e->nclients; j++) {
			const struct export_client *c = &e->clients[j];
			OUT(" %s(%s,%s,%s", c->spec, c->rw ? "rw" : "ro", squash_name(c->squash),
			    c->secure ? "secure" : "insecure");
			if (c->anonuid != EXPORT_ANON_DEFAULT)
				OUT(",anonuid=%u", c->anonuid);
			if (c->anongid != EXPORT_ANON_DEFAULT)
				OUT(",anongid=%u", c->anongid);
			OUT(")");
		}
		OUT("\n");
	}
#undef OUT
	if (off >= len)
		return -ENOSPC;
	return (int)off;
}
