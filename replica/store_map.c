/*
 * store_map: a layer's allocation bitmap (pages of 4096 bytes, one per 128 MiB, allocated
 * only when a bit is set; the map file is sparse and only existing pages are read) and the
 * merged owner index of the head chain (leaves of SMAP_BLOCKS bytes, allocated only where
 * some layer has data). Opening a large, mostly empty volume therefore touches only the
 * pages that exist.
 */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t npages_for(uint64_t nblocks)
{
	return (nblocks + SMAP_BLOCKS - 1) >> SMAP_SHIFT;
}

int smap_init(struct smap *m, uint64_t nblocks)
{
	memset(m, 0, sizeof(*m));
	return smap_grow(m, nblocks);
}

int smap_grow(struct smap *m, uint64_t nblocks)
{
	uint64_t n = npages_for(nblocks);
	if (n <= m->npages && m->pages)
		return 0;
	if (n == 0)
		n = 1;
	uint8_t **p = realloc(m->pages, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	m->pages = p;
	uint32_t *g = realloc(m->gen, n * sizeof(*g));
	if (!g)
		return -ENOMEM;
	m->gen = g;
	uint32_t *sv = realloc(m->saved, n * sizeof(*sv));
	if (!sv)
		return -ENOMEM;
	m->saved = sv;
	for (uint64_t i = m->npages; i < n; i++) {
		m->pages[i] = NULL;
		m->gen[i] = m->saved[i] = 0;
	}
	m->npages = n;
	return 0;
}

void smap_free(struct smap *m)
{
	for (uint64_t i = 0; i < m->npages && m->pages; i++)
		free(m->pages[i]);
	free(m->pages);
	free(m->gen);
	free(m->saved);
	memset(m, 0, sizeof(*m));
}

bool smap_test(const struct smap *m, uint64_t b)
{
	uint64_t p = b >> SMAP_SHIFT;
	if (p >= m->npages || !m->pages[p])
		return false;
	uint32_t i = b & SMAP_MASK;
	return m->pages[p][i >> 3] & (1u << (i & 7));
}

int smap_set_range(struct smap *m, uint64_t b, uint64_t n)
{
	while (n) {
		uint64_t p = b >> SMAP_SHIFT;
		if (p >= m->npages)
			return -EINVAL;
		uint32_t i = b & SMAP_MASK;
		uint64_t cnt = SMAP_BLOCKS - i;
		if (cnt > n)
			cnt = n;
		if (!m->pages[p]) {
			m->pages[p] = calloc(1, SMAP_PAGE);
			if (!m->pages[p])
				return -ENOMEM;
		}
		uint8_t *pg = m->pages[p], changed = 0;
		uint32_t j = i, end = i + (uint32_t)cnt;
		for (; j < end && (j & 7); j++) {
			changed |= (uint8_t)~pg[j >> 3] & (1u << (j & 7));
			pg[j >> 3] |= 1u << (j & 7);
		}
		for (; end - j >= 8; j += 8) {
			changed |= (uint8_t)~pg[j >> 3];
			pg[j >> 3] = 0xff;
		}
		for (; j < end; j++) {
			changed |= (uint8_t)~pg[j >> 3] & (1u << (j & 7));
			pg[j >> 3] |= 1u << (j & 7);
		}
		/* Rewrites of allocated blocks leave the page clean: no map write at flush. */
		if (changed)
			m->gen[p]++;
		b += cnt;
		n -= cnt;
	}
	return 0;
}

void smap_clear(struct smap *m, uint64_t b)
{
	uint64_t p = b >> SMAP_SHIFT;
	if (p >= m->npages || !m->pages[p])
		return;
	uint32_t i = b & SMAP_MASK;
	uint8_t bit = 1u << (i & 7);
	if (m->pages[p][i >> 3] & bit) {
		m->pages[p][i >> 3] &= ~bit;
		m->gen[p]++;
	}
}

uint64_t smap_count(const struct smap *m)
{
	uint64_t n = 0;
	for (uint64_t p = 0; p < m->npages; p++) {
		if (!m->pages[p])
			continue;
		const uint64_t *w = (const uint64_t *)(void *)m->pages[p];
		for (uint32_t i = 0; i < SMAP_PAGE / 8; i++)
			n += (uint64_t)__builtin_popcountll(w[i]);
	}
	return n;
}

bool smap_dirty(const struct smap *m)
{
	for (uint64_t p = 0; p < m->npages; p++)
		if (m->gen[p] != m->saved[p])
			return true;
	return false;
}

static bool page_zero(const uint8_t *pg)
{
	const uint64_t *w = (const uint64_t *)(const void *)pg;
	for (uint32_t i = 0; i < SMAP_PAGE / 8; i++)
		if (w[i])
			return false;
	return true;
}

int smap_load(struct loop *l, int fd, struct smap *m)
{
	off_t pos = 0;
	for (;;) {
		off_t start = lseek(fd, pos, SEEK_DATA);
		if (start < 0)
			return errno == ENXIO ? 0 : -errno;
		off_t end = lseek(fd, start, SEEK_HOLE);
		if (end < 0)
			return -errno;
		for (uint64_t p = (uint64_t)start / SMAP_PAGE;
		     p < ((uint64_t)end + SMAP_PAGE - 1) / SMAP_PAGE && p < m->npages; p++) {
			uint8_t *pg = m->pages[p] ? m->pages[p] : malloc(SMAP_PAGE);
			if (!pg)
				return -ENOMEM;
			int r = sio_pread(l, fd, pg, SMAP_PAGE, p * SMAP_PAGE);
			if (r < 0) {
				if (!m->pages[p])
					free(pg);
				return r;
			}
			if (page_zero(pg)) {
				free(pg);
				m->pages[p] = NULL;
			} else {
				m->pages[p] = pg;
			}
		}
		if ((uint64_t)end >= m->npages * SMAP_PAGE)
			return 0;
		pos = end;
	}
}

static int save_page(struct loop *l, int fd, struct smap *m, uint64_t p)
{
	static const uint8_t zero[SMAP_PAGE];
	/* A cleared page is written as zeros rather than punched: a hole costs a syscall
	 * outside the ring and zeros read back as an empty page anyway. */
	int r = sio_pwrite(l, fd, m->pages[p] ? m->pages[p] : zero, SMAP_PAGE, p * SMAP_PAGE);
	if (r < 0)
		return r;
	m->saved[p] = m->gen[p];
	return 0;
}

int smap_save_dirty(struct loop *l, int fd, struct smap *m)
{
	for (uint64_t p = 0; p < m->npages; p++) {
		if (m->gen[p] == m->saved[p])
			continue;
		int r = save_page(l, fd, m, p);
		if (r < 0)
			return r;
	}
	return 0;
}

int smap_save_all(struct loop *l, int fd, struct smap *m)
{
	for (uint64_t p = 0; p < m->npages; p++) {
		if (!m->pages[p]) {
			m->saved[p] = m->gen[p];
			continue;
		}
		int r = save_page(l, fd, m, p);
		if (r < 0)
			return r;
	}
	return 0;
}

int sidx_grow(struct sidx *x, uint64_t nblocks)
{
	uint64_t n = npages_for(nblocks);
	if (n == 0)
		n = 1;
	if (n <= x->nleaves && x->leaves)
		return 0;
	uint8_t **lv = realloc(x->leaves, n * sizeof(*lv));
	if (!lv)
		return -ENOMEM;
	for (uint64_t i = x->nleaves; i < n; i++)
		lv[i] = NULL;
	x->leaves = lv;
	x->nleaves = n;
	return 0;
}

void sidx_free(struct sidx *x)
{
	for (uint64_t i = 0; i < x->nleaves && x->leaves; i++)
		free(x->leaves[i]);
	free(x->leaves);
	x->leaves = NULL;
	x->nleaves = 0;
}

static uint8_t *leaf_get(struct sidx *x, uint64_t p)
{
	if (!x->leaves[p])
		x->leaves[p] = calloc(1, SMAP_BLOCKS);
	return x->leaves[p];
}

int sidx_set(struct sidx *x, uint64_t b, uint8_t v)
{
	uint64_t p = b >> SMAP_SHIFT;
	if (p >= x->nleaves)
		return -EINVAL;
	if (!v && !x->leaves[p])
		return 0;
	uint8_t *leaf = leaf_get(x, p);
	if (!leaf)
		return -ENOMEM;
	leaf[b & SMAP_MASK] = v;
	return 0;
}

int sidx_set_range(struct sidx *x, uint64_t b, uint64_t n, uint8_t v)
{
	while (n) {
		uint64_t p = b >> SMAP_SHIFT;
		if (p >= x->nleaves)
			return -EINVAL;
		uint32_t i = b & SMAP_MASK;
		uint64_t cnt = SMAP_BLOCKS - i;
		if (cnt > n)
			cnt = n;
		if (v || x->leaves[p]) {
			uint8_t *leaf = leaf_get(x, p);
			if (!leaf)
				return -ENOMEM;
			memset(leaf + i, v, cnt);
		}
		b += cnt;
		n -= cnt;
	}
	return 0;
}

int sidx_build(struct sidx *x, struct layer *const *chain, uint32_t nchain, uint64_t nblocks)
{
	sidx_free(x);
	int r = sidx_grow(x, nblocks);
	if (r < 0)
		return r;
	for (uint32_t c = 1; c <= nchain; c++) {
		const struct smap *m = &chain[c]->map;
		for (uint64_t p = 0; p < m->npages && p < x->nleaves; p++) {
			const uint8_t *pg = m->pages[p];
			if (!pg)
				continue;
			uint8_t *leaf = leaf_get(x, p);
			if (!leaf)
				return -ENOMEM;
			const uint64_t *w = (const uint64_t *)(const void *)pg;
			for (uint32_t i = 0; i < SMAP_PAGE / 8; i++) {
				uint64_t v = w[i];
				if (v == ~0ull) {
					memset(leaf + i * 64, (int)c, 64);
					continue;
				}
				while (v) {
					int bit = __builtin_ctzll(v);
					leaf[i * 64 + (uint32_t)bit] = (uint8_t)c;
					v &= v - 1;
				}
			}
		}
	}
	return 0;
}
