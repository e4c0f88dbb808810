/* test_redirect.c - which redirects of the HTTP source count as the same
 * origin (followed with the custom headers) and which do not (refused
 * unless --http-follow-redirects, and then followed without them). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "source_http.h"

static void test_same_origin(void **state) {
  (void)state;
  assert_true(cm_http_same_origin("http://a.example/x?page=1", "http://a.example/y"));
  assert_true(cm_http_same_origin("http://a.example/x", "http://A.EXAMPLE:80/y"));
  assert_true(cm_http_same_origin("https://a.example/x", "https://a.example:443/z"));
  assert_true(cm_http_same_origin("http://u:p@a.example/x", "http://a.example/y"));
  /* https -> http on the same host is another origin (a downgrade). */
  assert_false(cm_http_same_origin("https://a.example/x", "http://a.example/x"));
  assert_false(cm_http_same_origin("http://a.example/x", "http://b.example/x"));
  assert_false(cm_http_same_origin("http://127.0.0.1:8001/x", "http://127.0.0.1:8002/x"));
  assert_false(cm_http_same_origin("http://a.example/x", "http://a.example.evil/x"));
  assert_false(cm_http_same_origin("http://a.example/x", "not a url"));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_same_origin)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
