/*
 * util: see util.h. Nothing here knows about blockd; everything is testable on its own.
 */
#include "tools/blockctl/util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	uint64_t ip = 0;
	bool big = false;
	for (; isdigit((unsigned char)*p); p++) {
		if (__builtin_mul_overflow(ip, 10, &ip) ||
		    __builtin_add_overflow(ip, (uint64_t)(*p - '0'), &ip))
			big = true;
	}
	uint64_t frac = 0, fdiv = 1;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		/* Six digits keep frac * 2^40 inside 64 bits. */
		for (int n = 0; isdigit((unsigned char)*p); p++, n++) {
			if (n >= 6)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*p - '0');
			fdiv *= 10;
		}
	}
	uint64_t mult = 1;
	switch (toupper((unsigned char)*p)) {
	case 'K':
		mult = 1ull << 10;
		p++;
		break;
	case 'M':
		mult = 1ull << 20;
		p++;
		break;
	case 'G':
		mult = 1ull << 30;
		p++;
		break;
	case 'T':
		mult = 1ull << 40;
		p++;
		break;
	default:
		break;
	}
	if (mult > 1 && (p[0] == 'i' || p[0] == 'I') && (p[1] == 'B' || p[1] == 'b'))
		p += 2;
	else if (*p == 'B' || *p == 'b')
		p++;
	if (*p)
		return -EINVAL;
	if (big)
		return -ERANGE;
	uint64_t v, fpart = frac * mult;
	if (fpart % fdiv)
		return -EINVAL; /* a fraction of a byte */
	if (__builtin_mul_overflow(ip, mult, &v) || __builtin_add_overflow(v, fpart / fdiv, &v) ||
	    v > (uint64_t)INT64_MAX)
		return -ERANGE;
	*out = v;
	return 0;
}

void format_size(uint64_t v, char *buf, size_t cap)
{
	static const char units[] = "KMGTPE";
	if (v < 1024) {
		snprintf(buf, cap, "%" PRIu64, v);
		return;
	}
	int u = -1;
	double d = (double)v;
	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	if (d >= 100 || d == (double)(uint64_t)d)
		snprintf(buf, cap, "%.0f%c", d, units[u]);
	else
		snprintf(buf, cap, "%.1f%c", d, units[u]);
}

int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end)
		return -EINVAL;
	if (errno || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

static void vmsg(const char *fmt, va_list ap)
{
	/* One write per message so concurrent output does not interleave mid-line. */
	char buf[2048];
	int n = snprintf(buf, sizeof(buf), "blockctl: ");
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	size_t len = strlen(buf);
	if (len + 1 < sizeof(buf) && (len == 0 || buf[len - 1] != '\n'))
		buf[len++] = '\n';
	fflush(stdout);
	fwrite(buf, 1, len, stderr);
}

void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	exit(1);
}

void usage_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	exit(EXIT_USAGE);
}

void warnx_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

int table_init(struct table *t, unsigned ncols, const char *const *headers)
{
	memset(t, 0, sizeof(*t));
	if (ncols == 0 || ncols > TABLE_MAX_COLS)
		return -EINVAL;
	t->ncols = ncols;
	t->cells = calloc(ncols, sizeof(char *));
	if (!t->cells)
		return -ENOMEM;
	for (unsigned i = 0; i < ncols; i++) {
		const char *h = headers[i];
		if (h[0] == '>') {
			t->right[i] = true;
			h++;
		}
		t->cells[i] = strdup(h);
		if (!t->cells[i])
			return -ENOMEM;
	}
	return 0;
}

int table_add(struct table *t, const char *const *cells)
{
	size_t n = (size_t)(t->nrows + 2) * t->ncols;
	char **nc = realloc(t->cells, n * sizeof(char *));
	if (!nc)
		return -ENOMEM;
	t->cells = nc;
	char **row = nc + (size_t)(t->nrows + 1) * t->ncols;
	for (unsigned i = 0; i < t->ncols; i++)
		row[i] = NULL;
	t->nrows++;
	for (unsigned i = 0; i < t->ncols; i++) {
		row[i] = strdup(cells[i] ? cells[i] : "-");
		if (!row[i])
			return -ENOMEM;
	}
	return 0;
}

int table_print(const struct table *t, FILE *f)
{
	size_t w[TABLE_MAX_COLS] = {0}, linecap = 1;
	for (unsigned r = 0; r <= t->nrows; r++)
		for (unsigned c = 0; c < t->ncols; c++) {
			size_t l = strlen(t->cells[r * t->ncols + c]);
			if (l > w[c])
				w[c] = l;
		}
	for (unsigned c = 0; c < t->ncols; c++)
		linecap += w[c] + 2;
	char *line = malloc(linecap);
	if (!line)
		return -ENOMEM;
	for (unsigned r = 0; r <= t->nrows; r++) {
		size_t off = 0;
		for (unsigned c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			int pad = (int)w[c];
			off += (size_t)snprintf(line + off, linecap - off,
						t->right[c] ? "%s%*s" : "%s%-*s", c ? "  " : "",
						pad, s);
		}
		/* Padding after the last non-empty cell is noise (and breaks `cut`). */
		while (off > 0 && line[off - 1] == ' ')
			off--;
		line[off] = 0;
		fprintf(f, "%s\n", line);
	}
	free(line);
	return ferror(f) ? -EIO : 0;
}

void table_free(struct table *t)
{
	if (t->cells) {
		for (size_t i = 0; i < (size_t)(t->nrows + 1) * t->ncols; i++)
			free(t->cells[i]);
		free(t->cells);
	}
	memset(t, 0, sizeof(*t));
}

int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void progress_render(char *buf, size_t cap, const char *label, uint64_t done, uint64_t total,
		     int64_t elapsed_ms)
{
	enum { WIDTH = 30 };
	if (done > total)
		done = total;
	unsigned pct = total ? (unsigned)((double)done * 100.0 / (double)total) : 100;
	unsigned fill = pct * WIDTH / 100;
	char bar[WIDTH + 1];
	for (unsigned i = 0; i < WIDTH; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[WIDTH] = 0;
	char d[16], tt[16], rate[16];
	format_size(done, d, sizeof(d));
	format_size(total, tt, sizeof(tt));
	uint64_t bps = elapsed_ms > 0 ? (uint64_t)((double)done * 1000.0 / (double)elapsed_ms) : 0;
	format_size(bps, rate, sizeof(rate));
	snprintf(buf, cap, "%s [%s] %3u%% %s/%s %s/s", label, bar, pct, d, tt, rate);
}

void progress_start(struct progress *p, const char *label, uint64_t total)
{
	p->tty = isatty(STDERR_FILENO);
	p->label = label;
	p->total = total;
	p->start_ms = mono_ms();
	p->last_ms = 0;
	progress_update(p, 0);
}

void progress_update(struct progress *p, uint64_t done)
{
	if (!p->tty)
		return;
	int64_t now = mono_ms();
	/* Redraw at most 10 times a second; always draw the final state. */
	if (done < p->total && p->last_ms && now - p->last_ms < 100)
		return;
	p->last_ms = now;
	char line[256];
	progress_render(line, sizeof(line), p->label, done, p->total, now - p->start_ms);
	fprintf(stderr, "\r%s\033[K", line);
	fflush(stderr);
}

void progress_end(struct progress *p)
{
	if (!p->tty)
		return;
	fputc('\n', stderr);
	fflush(stderr);
}

static const struct optspec *find_opt(const struct optspec *specs, const char *name, size_t len)
{
	for (const struct optspec *s = specs; s && s->name; s++)
		if (strlen(s->name) == len && strncmp(s->name, name, len) == 0)
			return s;
	return NULL;
}

int opts_parse(int argc, char **argv, const struct optspec *specs, char **pos, int maxpos,
	       char *err, size_t errlen)
{
	int npos = 0;
	bool only_pos = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!only_pos && strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (only_pos || a[0] != '-' || a[1] == 0) {
			if (npos >= maxpos) {
				snprintf(err, errlen, "unexpected argument '%s'", a);
				return -EINVAL;
			}
			pos[npos++] = argv[i];
			continue;
		}
		const char *name = a + 1;
		if (name[0] == '-')
			name++;
		else if (strlen(name) != 1) {
			snprintf(err, errlen, "unknown option '%s'", a);
			return -EINVAL;
		}
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const struct optspec *s = find_opt(specs, name, len);
		if (!s || (a[1] != '-' && strlen(s->name) != 1)) {
			snprintf(err, errlen, "unknown option '%s'", a);
			return -EINVAL;
		}
		if (!s->has_arg) {
			if (eq) {
				snprintf(err, errlen, "option '--%s' takes no value", s->name);
				return -EINVAL;
			}
			*s->val = "";
			continue;
		}
		if (eq) {
			*s->val = eq + 1;
		} else if (i + 1 < argc) {
			*s->val = argv[++i];
		} else {
			snprintf(err, errlen, "option '%s' needs a value", a);
			return -EINVAL;
		}
	}
	return npos;
}
