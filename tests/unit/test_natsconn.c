/* test_natsconn.c - the parts of natsconn that need no server: URL
 * redaction (every URL of a list) and the --nats-url list check. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "cm/natsconn.h"

static void check_redact(const char *in, const char *want) {
  char out[512];
  cm_nats_redact_url(in, out, sizeof(out));
  assert_string_equal(out, want);
}

static void test_redact(void **state) {
  (void)state;
  check_redact("nats://127.0.0.1:4222", "nats://127.0.0.1:4222");
  check_redact("nats://user:s3cret@h:4222", "nats://user:***@h:4222");
  check_redact("nats://tok3n@h:4222", "nats://***@h:4222");
  check_redact("tls://u:p@w@h:4222", "tls://u:***@h:4222"); /* '@' inside the password */
  check_redact("u:pw@h:4222", "u:***@h:4222");             /* no scheme: still redacted */
  check_redact("nats://a:1,nats://u:pw@b:2,tls://tok@c:3,nats://d:4",
               "nats://a:1,nats://u:***@b:2,tls://***@c:3,nats://d:4");
  check_redact("", "");
}

static void test_redact_truncates_safely(void **state) {
  char out[12];
  (void)state;
  cm_nats_redact_url("nats://user:secretpassword@host:4222", out, sizeof(out));
  assert_int_equal(strlen(out), sizeof(out) - 1);
  assert_null(strstr(out, "secret"));
}

static void on_event(void *ud, cm_nats_event_t ev) {
  (void)ud;
  (void)ev;
}

static void test_empty_item_in_list_is_refused(void **state) {
  static const char *const bad[] = {"nats://a:1,,nats://b:2", "nats://a:1,", ",nats://a:1", " , "};
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    cm_common_cfg_t cfg;
    cm_nats_t *n = (cm_nats_t *)1;
    char err[512] = "";
    uv_loop_t loop;
    memset(&cfg, 0, sizeof(cfg));
    cfg.nats_url = bad[i];
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(cm_nats_create(&n, &loop, &cfg, "t", on_event, NULL, err, sizeof(err)),
                     -EINVAL);
    assert_null(n);
    assert_non_null(strstr(err, "--nats-url"));
    assert_non_null(strstr(err, "empty server URL"));
    assert_int_equal(uv_loop_close(&loop), 0); /* nothing was left open */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_redact),
      cmocka_unit_test(test_redact_truncates_safely),
      cmocka_unit_test(test_empty_item_in_list_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
