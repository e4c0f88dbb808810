/* fixture.h - the unit tests' access to tests/fixtures/app9-chunk.json
 * (a real chunk of the original example, committed with the project).
 * Include after <cmocka.h>. */
#ifndef CM_TEST_FIXTURE_H
#define CM_TEST_FIXTURE_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

/* The whole file, NUL-terminated; caller frees. A missing or unreadable
 * file fails the test with its path and the reason. */
static inline char *cm_test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  long n;
  char *p;
  if (f == NULL) fail_msg("cannot open test fixture %s: %s", path, strerror(errno));
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  p = malloc((size_t)n + 1);
  assert_non_null(p);
  assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
  p[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return p;
}

static inline char *cm_test_fixture(size_t *len) {
  return cm_test_read_file(CM_FIXTURES_DIR "/app9-chunk.json", len);
}

#endif
