/* test_bitmap: the dirty-bitmap helper against a plain bool-array model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "replica/bitmap.h"

static void test_empty(void **state)
{
	(void)state;
	struct bitmap b;
	bitmap_init(&b);
	assert_true(bitmap_empty(&b));
	assert_int_equal(bitmap_count(&b), 0);
	assert_false(bitmap_test(&b, 0));
	assert_false(bitmap_test(&b, 1000000));
	assert_int_equal(bitmap_next_set(&b, 0), -1);
	uint8_t *p;
	size_t n;
	assert_int_equal(bitmap_to_bytes(&b, &p, &n), 0);
	assert_null(p);
	assert_int_equal(n, 0);
	bitmap_clear_range(&b, 0, 100);
	bitmap_free(&b);
}

static void test_ranges(void **state)
{
	(void)state;
	struct bitmap b;
	bitmap_init(&b);
	assert_int_equal(bitmap_set_range(&b, 3, 1), 0);
	assert_int_equal(bitmap_set_range(&b, 60, 200), 0);
	assert_int_equal(bitmap_count(&b), 201);
	assert_true(bitmap_test(&b, 3));
	assert_false(bitmap_test(&b, 4));
	assert_true(bitmap_test(&b, 60));
	assert_true(bitmap_test(&b, 259));
	assert_false(bitmap_test(&b, 260));
	assert_int_equal(bitmap_next_set(&b, 0), 3);
	assert_int_equal(bitmap_next_set(&b, 4), 60);
	assert_int_equal(bitmap_next_set(&b, 128), 128);
	assert_int_equal(bitmap_next_set(&b, 260), -1);
	bitmap_clear_range(&b, 64, 128);
	assert_int_equal(bitmap_count(&b), 201 - 128);
	assert_int_equal(bitmap_next_set(&b, 61), 61);
	assert_int_equal(bitmap_next_set(&b, 64), 192);
	bitmap_clear_all(&b);
	assert_true(bitmap_empty(&b));
	bitmap_free(&b);
}

/* Random set/clear against a model, then a byte round trip and OR. */
static void test_model(void **state)
{
	(void)state;
	enum { N = 5000 };
	static bool model[N];
	struct bitmap b, c;
	memset(model, 0, sizeof(model));
	bitmap_init(&b);
	bitmap_init(&c);
	srand(42);
	for (int i = 0; i < 2000; i++) {
		uint64_t first = (uint64_t)(rand() % N);
		uint64_t count = (uint64_t)(rand() % 300);
		if (first + count > N)
			count = N - first;
		bool set = rand() % 3 != 0;
		if (set)
			assert_int_equal(bitmap_set_range(&b, first, count), 0);
		else
			bitmap_clear_range(&b, first, count);
		for (uint64_t j = first; j < first + count; j++)
			model[j] = set;
	}
	uint64_t cnt = 0;
	for (int i = 0; i < N; i++) {
		assert_int_equal(bitmap_test(&b, (uint64_t)i), model[i]);
		cnt += model[i];
	}
	assert_int_equal(bitmap_count(&b), cnt);
	int64_t pos = -1;
	for (int i = 0; i < N; i++) {
		if (!model[i])
			continue;
		assert_int_equal(bitmap_next_set(&b, (uint64_t)(pos + 1)), i);
		pos = i;
	}
	assert_int_equal(bitmap_next_set(&b, (uint64_t)(pos + 1)), -1);

	uint8_t *p;
	size_t n;
	assert_int_equal(bitmap_to_bytes(&b, &p, &n), 0);
	assert_true(n <= (N + 7) / 8);
	for (int i = 0; i < N; i++)
		assert_int_equal(i / 8 < (int)n && ((p[i / 8] >> (i % 8)) & 1), model[i]);
	assert_int_equal(bitmap_set_range(&c, 9000, 5), 0);
	assert_int_equal(bitmap_from_bytes(&c, p, n), 0);
	free(p);
	for (int i = 0; i < N + 4100; i++)
		assert_int_equal(bitmap_test(&c, (uint64_t)i), i < N && model[i]);

	struct bitmap d;
	bitmap_init(&d);
	assert_int_equal(bitmap_set_range(&d, N + 10, 3), 0);
	assert_int_equal(bitmap_or(&d, &c), 0);
	assert_int_equal(bitmap_count(&d), cnt + 3);
	assert_int_equal(bitmap_copy(&d, &b), 0);
	assert_int_equal(bitmap_count(&d), cnt);
	bitmap_free(&b);
	bitmap_free(&c);
	bitmap_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_ranges),
	    cmocka_unit_test(test_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
