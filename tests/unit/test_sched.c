/* test_sched.c - stride scheduling between jobs (fetcher/sched.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka after the headers it needs */
#include <cmocka.h>

#include <string.h>

#include "sched.h"

typedef struct {
  bool due[8];
  int got[8];
} world_t;

static bool due_cb(void *ud, size_t i) { return ((world_t *)ud)->due[i]; }

static int run(cm_sched_ent_t *const *e, size_t n, world_t *w, int picks) {
  int none = 0;
  for (int k = 0; k < picks; k++) {
    int i = cm_sched_pick(e, n, due_cb, w);
    if (i < 0)
      none++;
    else
      w->got[i]++;
  }
  return none;
}

/* Dispatch follows priority: 1:2:3 over 600 leases is 100:200:300. */
static void test_proportional(void **state) {
  (void)state;
  cm_sched_ent_t a = {.priority = 1}, b = {.priority = 2}, c = {.priority = 3};
  cm_sched_ent_t *e[] = {&a, &b, &c};
  world_t w = {.due = {true, true, true}};
  assert_int_equal(run(e, 3, &w, 600), 0);
  assert_in_range(w.got[0], 99, 101);
  assert_in_range(w.got[1], 199, 201);
  assert_in_range(w.got[2], 299, 301);
  /* equal priorities alternate exactly */
  cm_sched_ent_t x = {.priority = 1}, y = {.priority = 1};
  cm_sched_ent_t *e2[] = {&x, &y};
  world_t w2 = {.due = {true, true}};
  for (int k = 0; k < 10; k++) assert_int_equal(cm_sched_pick(e2, 2, due_cb, &w2), k % 2);
}

/* A job with nothing due is skipped; it banks no credit meanwhile, and the
 * others are never held back by it. */
static void test_skip_nothing_due(void **state) {
  (void)state;
  cm_sched_ent_t big = {.priority = 1}, small = {.priority = 1};
  cm_sched_ent_t *e[] = {&big, &small};
  world_t w = {.due = {true, false}};
  assert_int_equal(run(e, 2, &w, 1000), 0);
  assert_int_equal(w.got[0], 1000); /* all of it: the other had nothing */
  assert_int_equal(w.got[1], 0);
  /* small gets work: from now on it shares, it does not take 1000 in a row */
  w.due[1] = true;
  memset(w.got, 0, sizeof w.got);
  assert_int_equal(run(e, 2, &w, 100), 0);
  assert_in_range(w.got[1], 49, 51);
  /* nothing due anywhere: -1, and no pass moves */
  w.due[0] = w.due[1] = false;
  uint64_t pa = big.pass, pb = small.pass;
  assert_int_equal(cm_sched_pick(e, 2, due_cb, &w), -1);
  assert_true(big.pass == pa && small.pass == pb);
  /* NULL entries (not runnable: paused, cancelled) are never asked */
  cm_sched_ent_t *e3[] = {NULL, &small};
  w.due[0] = w.due[1] = true;
  memset(w.got, 0, sizeof w.got);
  assert_int_equal(run(e3, 2, &w, 10), 0);
  assert_int_equal(w.got[1], 10);
}

/* A job submitted behind a long-running one starts at the others' pass:
 * its first lease comes at once and it then gets its share, not all. */
static void test_join(void **state) {
  (void)state;
  cm_sched_ent_t big = {.priority = 1};
  cm_sched_ent_t *one[] = {&big};
  world_t w = {.due = {true, true}};
  assert_int_equal(run(one, 1, &w, 10000), 0);
  cm_sched_ent_t small = {.priority = 1};
  cm_sched_ent_t *e[] = {&big, &small};
  cm_sched_join(&small, e, 2);
  assert_int_equal(small.pass, big.pass);
  memset(w.got, 0, sizeof w.got);
  assert_int_equal(cm_sched_pick(e, 2, due_cb, &w), 0); /* tie: position order */
  assert_int_equal(cm_sched_pick(e, 2, due_cb, &w), 1); /* the small job's first lease */
  assert_int_equal(run(e, 2, &w, 100), 0);
  assert_in_range(w.got[1], 49, 51);
  /* join never moves a pass back */
  small.pass = big.pass + 5 * CM_SCHED_STRIDE;
  uint64_t p = small.pass;
  cm_sched_join(&small, e, 2);
  assert_true(small.pass == p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_proportional),
      cmocka_unit_test(test_skip_nothing_due),
      cmocka_unit_test(test_join),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
