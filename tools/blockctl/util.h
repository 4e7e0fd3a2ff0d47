/*
 * util: blockctl's small helpers with no knowledge of the cluster: sizes, tables, a
 * progress bar, option parsing, and the one-line error convention
 * ("blockctl: <what>: <why>", exit 1; usage errors exit 2).
 */
#ifndef BLOCKCTL_UTIL_H
#define BLOCKCTL_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_USAGE 2

/* "1234", "512K", "10M", "1.5G", "2T", also with "B"/"iB" ("10MiB"); powers of 1024.
 * Returns -EINVAL for anything else (empty, negative, junk, fraction of a byte) and
 * -ERANGE when the value does not fit in 63 bits. */
int parse_size(const char *s, uint64_t *out);
/* "0", "512", "4.0K", "1.5G": a short human form. */
void format_size(uint64_t v, char *buf, size_t cap);
/* Parses a non-negative decimal integer <= max. */
int parse_uint(const char *s, uint64_t max, uint64_t *out);

/* Prints "blockctl: <fmt...>" to stderr and exits 1. */
__attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...);
/* Prints "blockctl: <fmt...>" (one line, like die) and exits 2. */
__attribute__((noreturn, format(printf, 1, 2))) void usage_die(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void warnx_(const char *fmt, ...);

/* A text table: columns are padded to the widest cell, the last one is not padded. */
#define TABLE_MAX_COLS 12
struct table {
	unsigned ncols;
	unsigned nrows; /* data rows, not counting the header */
	char **cells;	/* (nrows + 1) * ncols, row-major, header first */
	bool right[TABLE_MAX_COLS];
};

/* Header names; a name starting with '>' is right-aligned (the '>' is not printed). */
int table_init(struct table *t, unsigned ncols, const char *const *headers);
/* Adds a row of ncols cells (NULL prints "-"). */
int table_add(struct table *t, const char *const *cells);
int table_print(const struct table *t, FILE *f);
void table_free(struct table *t);

/* Progress on stderr, only when stderr is a terminal; otherwise every call is a no-op. */
struct progress {
	bool tty;
	const char *label;
	uint64_t total;
	int64_t start_ms;
	int64_t last_ms;
};
void progress_start(struct progress *p, const char *label, uint64_t total);
void progress_update(struct progress *p, uint64_t done);
void progress_end(struct progress *p);
/* Renders the bar line (without '\r') into buf; exposed for tests. */
void progress_render(char *buf, size_t cap, const char *label, uint64_t done, uint64_t total,
		     int64_t elapsed_ms);

int64_t mono_ms(void);

/* Command options: "--name VALUE", "--name=VALUE", or flags ("--name", has_arg false). */
struct optspec {
	const char *name; /* without the leading "--"; a one-letter name also matches "-x" */
	bool has_arg;
	const char **val; /* set to the value, or to "" for a present flag */
};
/* Fills specs' vals and collects positional args into pos (at most maxpos). Returns the
 * number of positional args, or -EINVAL after printing a usage error into err. */
int opts_parse(int argc, char **argv, const struct optspec *specs, char **pos, int maxpos,
	       char *err, size_t errlen);

#endif
