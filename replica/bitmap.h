/*
 * bitmap: a growable array of bits, used for the engine's dirty bitmaps (one bit per grain).
 *
 * Bits past the current size read as 0; setting them grows the array. The byte form (for
 * DIRTY_PUT / DIRTY_GET) is bit i in byte i / 8 at position i % 8 (LSB first), trailing zero
 * bytes trimmed. Not thread-safe (loop thread only, like everything it serves).
 */
#ifndef BLOCKD_BITMAP_H
#define BLOCKD_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitmap {
	uint64_t *words;
	size_t nwords;
};

void bitmap_init(struct bitmap *b);
void bitmap_free(struct bitmap *b);
/* Sets bits [first, first+count); grows as needed. */
int bitmap_set_range(struct bitmap *b, uint64_t first, uint64_t count);
void bitmap_clear_range(struct bitmap *b, uint64_t first, uint64_t count);
void bitmap_clear_all(struct bitmap *b);
bool bitmap_test(const struct bitmap *b, uint64_t bit);
/* First set bit >= from, or -1 if none. */
int64_t bitmap_next_set(const struct bitmap *b, uint64_t from);
uint64_t bitmap_count(const struct bitmap *b);
bool bitmap_empty(const struct bitmap *b);
/* dst becomes a copy of src (dst must be initialised). */
int bitmap_copy(struct bitmap *dst, const struct bitmap *src);
/* dst |= src. */
int bitmap_or(struct bitmap *dst, const struct bitmap *src);
/* *out is malloc'd (NULL with *n 0 for an empty bitmap). */
int bitmap_to_bytes(const struct bitmap *b, uint8_t **out, size_t *n);
/* Replaces b's content with the bits in p. */
int bitmap_from_bytes(struct bitmap *b, const uint8_t *p, size_t n);

#endif
