/* bitmap: growable bit array with range and serialisation helpers. See bitmap.h. */
#include "bitmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bitmap_init(struct bitmap *b)
{
	b->words = NULL;
	b->nwords = 0;
}

void bitmap_free(struct bitmap *b)
{
	free(b->words);
	bitmap_init(b);
}

static int grow(struct bitmap *b, size_t nwords)
{
	if (nwords <= b->nwords)
		return 0;
	/* Doubling keeps repeated growth by one grain amortised O(1). */
	size_t n = b->nwords ? b->nwords : 4;
	while (n < nwords)
		n *= 2;
	uint64_t *w = realloc(b->words, n * sizeof(*w));
	if (!w)
		return -ENOMEM;
	memset(w + b->nwords, 0, (n - b->nwords) * sizeof(*w));
	b->words = w;
	b->nwords = n;
	return 0;
}

int bitmap_set_range(struct bitmap *b, uint64_t first, uint64_t count)
{
	if (!count)
		return 0;
	uint64_t last = first + count - 1;
	int r = grow(b, (size_t)(last / 64 + 1));
	if (r)
		return r;
	for (uint64_t i = first; i <= last;) {
		if (i % 64 == 0 && last - i >= 63) {
			b->words[i / 64] = ~0ull;
			i += 64;
		} else {
			b->words[i / 64] |= 1ull << (i % 64);
			i++;
		}
	}
	return 0;
}

void bitmap_clear_range(struct bitmap *b, uint64_t first, uint64_t count)
{
	uint64_t end = first + count;
	if (end > (uint64_t)b->nwords * 64)
		end = (uint64_t)b->nwords * 64;
	for (uint64_t i = first; i < end;) {
		if (i % 64 == 0 && end - i >= 64) {
			b->words[i / 64] = 0;
			i += 64;
		} else {
			b->words[i / 64] &= ~(1ull << (i % 64));
			i++;
		}
	}
}

void bitmap_clear_all(struct bitmap *b)
{
	if (b->words)
		memset(b->words, 0, b->nwords * sizeof(*b->words));
}

bool bitmap_test(const struct bitmap *b, uint64_t bit)
{
	if (bit / 64 >= b->nwords)
		return false;
	return (b->words[bit / 64] >> (bit % 64)) & 1;
}

int64_t bitmap_next_set(const struct bitmap *b, uint64_t from)
{
	size_t w = (size_t)(from / 64);
	if (w >= b->nwords)
		return -1;
	uint64_t v = b->words[w] & (~0ull << (from % 64));
	for (;;) {
		if (v)
			return (int64_t)(w * 64 + (size_t)__builtin_ctzll(v));
		if (++w >= b->nwords)
			return -1;
		v = b->words[w];
	}
}

uint64_t bitmap_count(const struct bitmap *b)
{
	uint64_t n = 0;
	for (size_t i = 0; i < b->nwords; i++)
		n += (uint64_t)__builtin_popcountll(b->words[i]);
	return n;
}

bool bitmap_empty(const struct bitmap *b)
{
	for (size_t i = 0; i < b->nwords; i++)
		if (b->words[i])
			return false;
	return true;
}

int bitmap_copy(struct bitmap *dst, const struct bitmap *src)
{
	if (dst == src)
		return 0;
	bitmap_clear_all(dst);
	return bitmap_or(dst, src);
}

int bitmap_or(struct bitmap *dst, const struct bitmap *src)
{
	int r = grow(dst, src->nwords);
	if (r)
		return r;
	for (size_t i = 0; i < src->nwords; i++)
		dst->words[i] |= src->words[i];
	return 0;
}

int bitmap_to_bytes(const struct bitmap *b, uint8_t **out, size_t *n)
{
	size_t len = b->nwords * 8;
	uint8_t *p;
	*out = NULL;
	*n = 0;
	/* Byte i holds bits 8i..8i+7 whatever the host's endianness. */
	while (len && !((b->words[(len - 1) / 8] >> (8 * ((len - 1) % 8))) & 0xff))
		len--;
	if (!len)
		return 0;
	p = malloc(len);
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(b->words[i / 8] >> (8 * (i % 8)));
	*out = p;
	*n = len;
	return 0;
}

int bitmap_from_bytes(struct bitmap *b, const uint8_t *p, size_t n)
{
	int r = grow(b, (n + 7) / 8);
	if (r)
		return r;
	bitmap_clear_all(b);
	for (size_t i = 0; i < n; i++)
		b->words[i / 8] |= (uint64_t)p[i] << (8 * (i % 8));
	return 0;
}
