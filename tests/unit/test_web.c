/* test_web.c - the dashboard files compiled into the fetcher: each is served
 * byte for byte (compared with fetcher/web/ in the repository) with its
 * content type, "/" is index.html, and any other path is left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

static char *slurp(const char *name, size_t *len) {
  char path[1024];
  FILE *f;
  char *data;
  long n;
  snprintf(path, sizeof path, "%s/%s", CM_WEB_DIR, name);
  f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  data = malloc((size_t)n);
  assert_non_null(data);
  assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return data;
}

static void serves(const char *path, const char *file, const char *ctype) {
  cm_buf_t b;
  const char *ct = "unset";
  size_t len = 0;
  char *want = slurp(file, &len);
  cm_buf_init(&b, 4u << 20);
  assert_int_equal(cm_web_serve(path, &b, &ct), 200);
  assert_string_equal(ct, ctype);
  assert_int_equal(b.len, len);
  assert_memory_equal(b.data, want, len);
  free(want);
  cm_buf_free(&b);
}

static void test_files(void **state) {
  serves("/", "index.html", "text/html; charset=utf-8");
  serves("/index.html", "index.html", "text/html; charset=utf-8");
  serves("/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8");
  serves("/dashboard.css", "dashboard.css", "text/css; charset=utf-8");
}

static void test_other_paths(void **state) {
  static const char *const paths[] = {"/status", "/jobs", "/dashboard", "/dashboard.js/",
                                      "//", "", "/embed.cmake", "/../index.html", "index.html"};
  cm_buf_t b;
  const char *ct = "unset";
  cm_buf_init(&b, 1024);
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    assert_int_equal(cm_web_serve(paths[i], &b, &ct), 0);
    assert_int_equal(b.len, 0);
    assert_string_equal(ct, "unset");
  }
  assert_int_equal(cm_web_serve(NULL, &b, &ct), 0);
  cm_buf_free(&b);
}

/* A body buffer too small for the page: 500, the buffer unchanged. */
static void test_too_small(void **state) {
  cm_buf_t b;
  const char *ct = "unset";
  cm_buf_init(&b, 16);
  assert_int_equal(cm_web_serve("/", &b, &ct), 500);
  assert_int_equal(b.len, 0);
  cm_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_files),
      cmocka_unit_test(test_other_paths),
      cmocka_unit_test(test_too_small),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
