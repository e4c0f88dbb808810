/* test_peers.c - reconnect detection from heartbeat reconnect counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "cm/peers.h"

static void test_reconnect_detected_once(void **state) {
  cm_peers_t *p;
  (void)state;
  assert_int_equal(cm_peers_create(&p), 0);
  assert_false(cm_peers_saw(p, "m1", 0, 1)); /* new */
  assert_false(cm_peers_saw(p, "m1", 0, 2)); /* unchanged */
  assert_true(cm_peers_saw(p, "m1", 1, 3));  /* reconnected */
  assert_false(cm_peers_saw(p, "m1", 1, 4)); /* reported once */
  assert_false(cm_peers_saw(p, "m2", 5, 5)); /* another peer, first heard with 5 */
  assert_true(cm_peers_saw(p, "m2", 7, 6));
  assert_false(cm_peers_saw(p, "m1", 0, 7)); /* restarted process: lower count */
  assert_true(cm_peers_saw(p, "m1", 1, 8));
  cm_peers_destroy(p);
}

static void test_table_full_forgets_the_least_recent(void **state) {
  cm_peers_t *p;
  char id[32];
  (void)state;
  assert_int_equal(cm_peers_create(&p), 0);
  for (int i = 0; i < CM_PEERS_MAX; i++) {
    snprintf(id, sizeof(id), "p%d", i);
    assert_false(cm_peers_saw(p, id, 0, 100 + i));
  }
  assert_false(cm_peers_saw(p, "late", 0, 1000)); /* evicts p0 */
  assert_true(cm_peers_saw(p, "p1", 1, 1001));    /* still known */
  assert_false(cm_peers_saw(p, "p0", 1, 1002));   /* forgotten: new again */
  assert_true(cm_peers_saw(p, "late", 2, 1003));
  cm_peers_destroy(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reconnect_detected_once),
      cmocka_unit_test(test_table_full_forgets_the_least_recent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
