/* Unit tests for fetcher/dispatch_times.c: a redelivery keeps the first
 * dispatch time, deleted entries are gone, and the table's size follows the
 * entries held, not the indexes seen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dispatch_times.h"

static int job_a, job_b; /* two jobs' handles (addresses only) */
#define J (&job_a)

static void test_put_get_del(void **state) {
  (void)state;
  cm_dispatch_times_t *d = NULL;
  assert_int_equal(cm_dispatch_times_create(&d), 0);
  assert_null(cm_dispatch_times_get(d, J, 7));
  assert_int_equal(cm_dispatch_times_put(d, J, 7, 1000, 1), 0);
  /* A redelivery to another version keeps the start, takes the version. */
  assert_int_equal(cm_dispatch_times_put(d, J, 7, 5000, 2), 0);
  const cm_dispatch_time_t *e = cm_dispatch_times_get(d, J, 7);
  assert_non_null(e);
  assert_int_equal(e->index, 7);
  assert_int_equal(e->t_ms, 1000);
  assert_int_equal(e->version, 2);
  assert_int_equal(cm_dispatch_times_count(d), 1);
  cm_dispatch_times_del(d, J, 7);
  cm_dispatch_times_del(d, J, 7); /* absent: no-op */
  assert_null(cm_dispatch_times_get(d, J, 7));
  assert_int_equal(cm_dispatch_times_count(d), 0);
  /* After the delete a new dispatch starts anew (a replayed dead chunk). */
  assert_int_equal(cm_dispatch_times_put(d, J, 7, 9000, 3), 0);
  assert_int_equal(cm_dispatch_times_get(d, J, 7)->t_ms, 9000);
  cm_dispatch_times_destroy(d);
  cm_dispatch_times_destroy(NULL);
}

/* Indexes that a table of `index % N` slots would put in the same slot are
 * all kept: nothing is lost to a collision. */
static void test_no_collision_loss(void **state) {
  (void)state;
  cm_dispatch_times_t *d = NULL;
  assert_int_equal(cm_dispatch_times_create(&d), 0);
  for (uint64_t k = 0; k < 64; k++)
    assert_int_equal(cm_dispatch_times_put(d, J, 5 + k * 65536, (int64_t)k, 0), 0);
  for (uint64_t k = 0; k < 64; k++) {
    const cm_dispatch_time_t *e = cm_dispatch_times_get(d, J, 5 + k * 65536);
    assert_non_null(e);
    assert_int_equal(e->t_ms, (int64_t)k);
  }
  cm_dispatch_times_destroy(d);
}

/* Chunk 3 of two jobs: two entries, each with its own start. */
static void test_jobs_apart(void **state) {
  (void)state;
  cm_dispatch_times_t *d = NULL;
  assert_int_equal(cm_dispatch_times_create(&d), 0);
  assert_int_equal(cm_dispatch_times_put(d, &job_a, 3, 100, 1), 0);
  assert_int_equal(cm_dispatch_times_put(d, &job_b, 3, 200, 2), 0);
  assert_int_equal(cm_dispatch_times_get(d, &job_a, 3)->t_ms, 100);
  assert_int_equal(cm_dispatch_times_get(d, &job_b, 3)->t_ms, 200);
  assert_ptr_equal(cm_dispatch_times_get(d, &job_b, 3)->job, &job_b);
  cm_dispatch_times_del(d, &job_a, 3);
  assert_null(cm_dispatch_times_get(d, &job_a, 3));
  assert_int_equal(cm_dispatch_times_get(d, &job_b, 3)->t_ms, 200);
  cm_dispatch_times_destroy(d);
}

/* A job of a million chunks with 256 in flight: the table stays as small as
 * 256 entries need, and a burst of 100k in flight is given back after. */
static void test_memory_follows_entries(void **state) {
  (void)state;
  cm_dispatch_times_t *d = NULL;
  assert_int_equal(cm_dispatch_times_create(&d), 0);
  const uint64_t window = 256, chunks = 1000000;
  for (uint64_t i = 0; i < chunks; i++) {
    assert_int_equal(cm_dispatch_times_put(d, J, i, (int64_t)i, 1), 0);
    if (i >= window) {
      assert_non_null(cm_dispatch_times_get(d, J, i - window));
      cm_dispatch_times_del(d, J, i - window);
    }
  }
  assert_int_equal(cm_dispatch_times_count(d), window);
  assert_true(cm_dispatch_times_capacity(d) <= 4 * window);
  for (uint64_t i = chunks - window; i < chunks; i++)
    assert_int_equal(cm_dispatch_times_get(d, J, i)->t_ms, (int64_t)i);

  for (uint64_t i = chunks; i < chunks + 100000; i++)
    assert_int_equal(cm_dispatch_times_put(d, J, i, 0, 1), 0);
  assert_true(cm_dispatch_times_capacity(d) >= 2 * cm_dispatch_times_count(d));
  for (uint64_t i = chunks - window; i < chunks + 100000; i++) cm_dispatch_times_del(d, J, i);
  assert_int_equal(cm_dispatch_times_count(d), 0);
  assert_true(cm_dispatch_times_capacity(d) <= 1024);
  cm_dispatch_times_destroy(d);
}

/* Deleting from the middle of probe runs leaves every other entry findable
 * (backward-shift deletion). */
static void test_delete_keeps_others(void **state) {
  (void)state;
  cm_dispatch_times_t *d = NULL;
  assert_int_equal(cm_dispatch_times_create(&d), 0);
  for (uint64_t i = 0; i < 5000; i++) assert_int_equal(cm_dispatch_times_put(d, J, i * 7, 1, 0), 0);
  for (uint64_t i = 0; i < 5000; i += 3) cm_dispatch_times_del(d, J, i * 7);
  for (uint64_t i = 0; i < 5000; i++) {
    if (i % 3 == 0)
      assert_null(cm_dispatch_times_get(d, J, i * 7));
    else
      assert_non_null(cm_dispatch_times_get(d, J, i * 7));
  }
  cm_dispatch_times_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_get_del),
      cmocka_unit_test(test_no_collision_loss),
      cmocka_unit_test(test_jobs_apart),
      cmocka_unit_test(test_memory_follows_entries),
      cmocka_unit_test(test_delete_keeps_others),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
