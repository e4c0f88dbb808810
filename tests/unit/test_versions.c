/* test_versions.c - the fetcher's per-version table: bounded, never
 * mislabels, departed versions age out. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "versions.h"

static cm_versions_t *mk(size_t max, int64_t idle_ms) {
  cm_versions_t *v = NULL;
  assert_int_equal(cm_versions_create(&v, max, idle_ms), 0);
  return v;
}

static char *json(const cm_versions_t *v) {
  static char text[8192];
  cm_buf_t b;
  cm_buf_init(&b, sizeof text);
  assert_int_equal(cm_versions_json(v, &b), 0);
  snprintf(text, sizeof text, "{%s}", b.data != NULL ? b.data : "");
  cm_buf_free(&b);
  return text;
}

/* 17 live versions in a 16-slot table: the 17th is counted as "other",
 * never under one of the 16 names (that was the bug). */
static void test_seventeenth_is_other(void **state) {
  cm_versions_t *v = mk(CM_VERSIONS_MAX, 600000);
  cm_version_h h[CM_VERSIONS_MAX + 1];
  char name[32];
  for (int i = 0; i <= CM_VERSIONS_MAX; i++) {
    snprintf(name, sizeof name, "v%d", i + 1);
    h[i] = cm_versions_join(v, name, 1000 + i);
    assert_true(h[i] != 0);
  }
  for (int i = 0; i < CM_VERSIONS_MAX; i++) {
    snprintf(name, sizeof name, "v%d", i + 1);
    assert_string_equal(cm_versions_name(v, h[i]), name);
  }
  assert_string_equal(cm_versions_name(v, h[CM_VERSIONS_MAX]), "other");
  /* Its outcomes land under "other" only. */
  cm_versions_count(v, h[CM_VERSIONS_MAX], CM_VERSION_NAK, 2000);
  cm_versions_count(v, h[CM_VERSIONS_MAX - 1], CM_VERSION_ACKED, 2000);
  const char *j = json(v);
  assert_non_null(strstr(j, "\"v16\":{\"dispatched\":0,\"acked\":1,\"naks\":0,"));
  assert_non_null(strstr(j, "\"other\":{\"dispatched\":0,\"acked\":0,\"naks\":1,"));
  assert_null(strstr(j, "\"v17\""));
  assert_int_equal(cm_versions_count_listed(v), CM_VERSIONS_MAX + 1);
  /* Another member of a known version shares its row. */
  assert_int_equal(cm_versions_join(v, "v3", 3000), h[2]);
  cm_versions_destroy(v);
}

/* A version whose members all left ages out after idle_ms; its slot goes
 * to a new version, and a late outcome of the old one is not credited to
 * the new one. */
static void test_departed_versions_age_out(void **state) {
  cm_versions_t *v = mk(2, 1000);
  cm_version_h a = cm_versions_join(v, "a", 0);
  cm_version_h b = cm_versions_join(v, "b", 0);
  cm_versions_count(v, a, CM_VERSION_DISPATCHED, 10);
  cm_versions_leave(v, a, 100);
  cm_versions_sweep(v, 1000); /* idle 900 ms: kept */
  assert_string_equal(cm_versions_name(v, a), "a");
  cm_versions_sweep(v, 1100); /* idle 1000 ms: gone */
  assert_null(cm_versions_name(v, a));
  assert_null(strstr(json(v), "\"a\""));
  assert_int_equal(cm_versions_count_listed(v), 1);

  cm_version_h c = cm_versions_join(v, "c", 1200);
  assert_string_equal(cm_versions_name(v, c), "c");
  assert_true(c != a);
  cm_versions_count(v, a, CM_VERSION_ACKED, 1300); /* late ack of a's chunk */
  assert_non_null(strstr(json(v), "\"c\":{\"dispatched\":0,\"acked\":0,"));
  /* b still has its member: never dropped, however long idle. */
  cm_versions_sweep(v, 1000000);
  assert_string_equal(cm_versions_name(v, b), "b");
  assert_null(strstr(json(v), "\"other\""));
  cm_versions_destroy(v);
}

/* A full table with a departed (not yet idle) version makes room for a new
 * live one instead of sending it to "other". */
static void test_full_table_evicts_departed(void **state) {
  cm_versions_t *v = mk(2, 600000);
  cm_version_h a = cm_versions_join(v, "a", 0);
  cm_version_h b = cm_versions_join(v, "b", 0);
  cm_versions_leave(v, b, 50);
  cm_versions_leave(v, a, 60);
  cm_version_h c = cm_versions_join(v, "c", 100);
  assert_string_equal(cm_versions_name(v, c), "c");
  assert_null(cm_versions_name(v, b)); /* idle longest: evicted */
  assert_string_equal(cm_versions_name(v, a), "a");
  cm_version_h d = cm_versions_join(v, "d", 110);
  assert_string_equal(cm_versions_name(v, d), "d");
  /* Now both slots are live: the next one is "other". */
  cm_version_h e = cm_versions_join(v, "e", 120);
  assert_string_equal(cm_versions_name(v, e), "other");
  cm_versions_destroy(v);
}

static void test_names(void **state) {
  cm_versions_t *v = mk(4, 1000);
  char longname[200];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  assert_string_equal(cm_versions_name(v, cm_versions_join(v, NULL, 0)), "unknown");
  assert_string_equal(cm_versions_name(v, cm_versions_join(v, "", 0)), "unknown");
  assert_int_equal(strlen(cm_versions_name(v, cm_versions_join(v, longname, 0))),
                   CM_VERSIONS_NAME_MAX - 1);
  /* A version named "other" is the overflow row, not a second "other". */
  assert_string_equal(cm_versions_name(v, cm_versions_join(v, "other", 0)), "other");
  assert_int_equal(cm_versions_count_listed(v), 3);
  const char *j = json(v);
  assert_non_null(strstr(j, "\"unknown\":{"));
  assert_non_null(strstr(j, "\"members\":2}")); /* unknown: two members */
  assert_null(cm_versions_name(v, 0));
  cm_versions_destroy(v);
  cm_versions_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seventeenth_is_other),
      cmocka_unit_test(test_departed_versions_age_out),
      cmocka_unit_test(test_full_table_evicts_departed),
      cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
