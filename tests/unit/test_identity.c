/* test_identity.c - who may take over a mapper id (identity.h): a credit
 * alone never takes over an id that was heard, a heartbeating instance does
 * once the bound one is 1.5 periods late (not before), an unheard or
 * drained-empty bound instance is replaced at once; what the predecessor
 * held is released through the hook, each refusal is counted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cm/reject.h"
#include "identity.h"

#define HB 1000 /* the members' heartbeat period in these tests */

typedef struct {
  cm_metrics_t *metrics;
  cm_reject_t *rej;
  cm_versions_t *versions;
  cm_members_t *mt;
  cm_identity_t *id;
  int held;     /* what the hooks say the member holds */
  int released; /* release_all calls */
} fx_t;

static int hook_release(void *ud, const char *id, int64_t now, const char *reason) {
  fx_t *f = ud;
  int n = f->held;
  (void)id;
  (void)now;
  (void)reason;
  f->released++;
  f->held = 0;
  return n;
}

static int hook_held(void *ud, const char *id) {
  (void)id;
  return ((fx_t *)ud)->held;
}

static int setup(void **state) {
  static fx_t f;
  cm_identity_hooks_t hooks = {&f, hook_release, hook_held};
  memset(&f, 0, sizeof f);
  assert_int_equal(cm_metrics_create(&f.metrics), 0);
  assert_int_equal(cm_reject_create(&f.rej, f.metrics), 0);
  assert_int_equal(cm_versions_create(&f.versions, 16, 60000), 0);
  assert_int_equal(cm_members_create(&f.mt, f.versions), 0);
  assert_int_equal(cm_identity_create(&f.id, f.mt, f.metrics, f.rej, HB, &hooks), 0);
  *state = &f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  cm_identity_destroy(f->id);
  cm_members_destroy(f->mt);
  cm_versions_destroy(f->versions);
  cm_reject_destroy(f->rej);
  cm_metrics_destroy(f->metrics);
  return 0;
}

/* m0 bound to instance "a", heard at t=0, holding 5 chunks. */
static cm_member_t *bound(fx_t *f) {
  bool first;
  cm_member_t *m = cm_members_add(f->mt, "m0", 0);
  assert_non_null(m);
  assert_true(cm_identity_credit(f->id, m, "", false, "v1", 0));
  strcpy(m->instance, "a");
  assert_ptr_equal(cm_identity_heartbeat(f->id, m, "a", false, "v1", HB, 0, &first), m);
  assert_true(first);
  f->held = 5;
  return m;
}

static void credit_alone_never_takes_over(void **state) {
  fx_t *f = *state;
  cm_member_t *m = bound(f);
  /* Late by far more than any threshold, yet short of 3 periods. */
  for (int64_t t = 100; t < 2900; t += 100) {
    assert_false(cm_identity_credit(f->id, m, "b", false, "v1", t));
    cm_identity_tick(f->id, t);
  }
  assert_string_equal(m->instance, "a");
  assert_int_equal(f->released, 0);
  assert_int_equal(cm_reject_count(f->rej, "member_instance"), 28);
}

static void heartbeating_instance_takes_over_when_late(void **state) {
  fx_t *f = *state;
  bool first;
  cm_member_t *m = bound(f);
  /* 1.4 periods after a's last heartbeat: refused, remembered. */
  assert_null(cm_identity_heartbeat(f->id, m, "b", false, "v1", HB, 1400, &first));
  assert_false(cm_identity_credit(f->id, m, "b", false, "v1", 1450));
  cm_identity_tick(f->id, 1490);
  assert_string_equal(m->instance, "a");
  assert_int_equal(f->released, 0);
  /* 1.5 periods: the tick hands the id to b and a's leases are released. */
  cm_identity_tick(f->id, 1510);
  assert_string_equal(m->instance, "b");
  assert_true(m->heard);
  assert_int_equal(f->released, 1);
  assert_int_equal(f->held, 0);
}

static void heartbeat_takes_over_at_once_when_late(void **state) {
  fx_t *f = *state;
  bool first;
  cm_member_t *m = bound(f);
  assert_ptr_equal(cm_identity_heartbeat(f->id, m, "b", false, "v2", HB, 1600, &first), m);
  assert_string_equal(m->instance, "b");
  assert_string_equal(m->version_name, "v2");
  assert_int_equal(f->released, 1);
}

static void unheard_or_drained_is_replaced(void **state) {
  fx_t *f = *state;
  bool first;
  cm_member_t *m = cm_members_add(f->mt, "m1", 0);
  strcpy(m->instance, "a");
  /* Never heartbeated: holds nothing, a credit of another instance binds. */
  assert_true(cm_identity_credit(f->id, m, "b", false, "v1", 10));
  assert_string_equal(m->instance, "b");
  assert_int_equal(f->released, 0);
  /* Heard, drained, nothing held: another heartbeating instance at once;
   * a credit of it alone is still refused. */
  assert_ptr_equal(cm_identity_heartbeat(f->id, m, "b", false, "v1", HB, 20, &first), m);
  m->draining = true;
  assert_false(cm_identity_credit(f->id, m, "c", false, "v1", 30));
  assert_ptr_equal(cm_identity_heartbeat(f->id, m, "c", false, "v1", HB, 40, &first), m);
  assert_string_equal(m->instance, "c");
}

static void silent_member_is_gone(void **state) {
  fx_t *f = *state;
  cm_member_t *m = bound(f);
  cm_identity_tick(f->id, 3000);
  assert_true(m->active);
  cm_identity_tick(f->id, 3001);
  assert_false(m->active);
  assert_int_equal(f->released, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(credit_alone_never_takes_over, setup, teardown),
      cmocka_unit_test_setup_teardown(heartbeating_instance_takes_over_when_late, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(heartbeat_takes_over_at_once_when_late, setup, teardown),
      cmocka_unit_test_setup_teardown(unheard_or_drained_is_replaced, setup, teardown),
      cmocka_unit_test_setup_teardown(silent_member_is_gone, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
