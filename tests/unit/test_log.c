/* test_log.c - one JSON line per call, escaping, truncation, level filter.
 * Lines are captured through a pipe (cm_log_set_fd) and parsed with cJSON. */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/log.h"

typedef struct {
  int rd, wr;
} pipe_t;

static int setup(void **state) {
  pipe_t *p = calloc(1, sizeof *p);
  int fds[2];
  if (p == NULL || pipe(fds) != 0) return -1;
  /* Big enough for every line a test writes; reads never block. */
  if (fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) < (1 << 18)) return -1;
  (void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
  p->rd = fds[0];
  p->wr = fds[1];
  cm_log_init("fetcher", "fetcher-1", CM_LOG_INFO);
  cm_log_set_fd(p->wr);
  *state = p;
  return 0;
}

static int teardown(void **state) {
  pipe_t *p = *state;
  cm_log_set_fd(2);
  cm_log_init("", "", CM_LOG_INFO);
  close(p->rd);
  close(p->wr);
  free(p);
  return 0;
}

/* Everything written so far, NUL-terminated; caller frees. */
static char *drain(pipe_t *p, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *s = malloc(cap + 1);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      s = realloc(s, cap + 1);
    }
    ssize_t r = read(p->rd, s + n, cap - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  s[n] = '\0';
  if (len != NULL) *len = n;
  return s;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s != '\0'; s++) n += *s == '\n';
  return n;
}

static void test_line_shape(void **state) {
  pipe_t *p = *state;
  cm_log_info("hello %s %d", "world", 42);
  size_t len;
  char *s = drain(p, &len);
  assert_int_equal(count_lines(s), 1);
  assert_int_equal(s[len - 1], '\n');

  cJSON *j = cJSON_Parse(s);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "info");
  assert_string_equal(cJSON_GetObjectItem(j, "daemon")->valuestring, "fetcher");
  assert_string_equal(cJSON_GetObjectItem(j, "id")->valuestring, "fetcher-1");
  assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring, "hello world 42");
  assert_null(cJSON_GetObjectItem(j, "truncated"));

  /* RFC 3339 UTC with milliseconds: 2026-11-22T06:01:02.345Z */
  const char *ts = cJSON_GetObjectItem(j, "ts")->valuestring;
  assert_int_equal(strlen(ts), 24);
  assert_int_equal(ts[4], '-');
  assert_int_equal(ts[10], 'T');
  assert_int_equal(ts[19], '.');
  assert_int_equal(ts[23], 'Z');
  cJSON_Delete(j);
  free(s);
}

static void test_escaping(void **state) {
  pipe_t *p = *state;
  cm_log_warn("q\"b\\s\nnl\ttab\x01 \xc3\xa9 bad\xff end");
  char *s = drain(p, NULL);
  /* The newline in msg is escaped: still one physical line. */
  assert_int_equal(count_lines(s), 1);
  cJSON *j = cJSON_Parse(s);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "warn");
  assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring,
                      "q\"b\\s\nnl\ttab\x01 \xc3\xa9 bad\xef\xbf\xbd end");
  cJSON_Delete(j);
  free(s);
}

static void test_levels(void **state) {
  pipe_t *p = *state;
  int evaluated = 0;
  cm_log_debug("not shown %d", ++evaluated);
  /* The macro checks the level before evaluating the arguments. */
  assert_int_equal(evaluated, 0);
  cm_log_info("info shown");
  cm_log_error("error shown");
  char *s = drain(p, NULL);
  assert_int_equal(count_lines(s), 2);
  assert_null(strstr(s, "not shown"));
  assert_non_null(strstr(s, "\"level\":\"error\""));
  free(s);

  cm__log_level = CM_LOG_ERROR;
  cm_log_warn("hidden");
  cm_log_error("kept");
  s = drain(p, NULL);
  assert_int_equal(count_lines(s), 1);
  assert_non_null(strstr(s, "kept"));
  free(s);

  cm__log_level = CM_LOG_DEBUG;
  cm_log_debug("dbg");
  s = drain(p, NULL);
  assert_non_null(strstr(s, "\"level\":\"debug\""));
  free(s);
  cm__log_level = CM_LOG_INFO;
}

static void test_level_parse(void **state) {
  cm_log_level_t l = CM_LOG_INFO;
  assert_int_equal(cm_log_level_parse("debug", &l), 0);
  assert_int_equal(l, CM_LOG_DEBUG);
  assert_int_equal(cm_log_level_parse("warn", &l), 0);
  assert_int_equal(l, CM_LOG_WARN);
  assert_int_equal(cm_log_level_parse("error", &l), 0);
  assert_int_equal(l, CM_LOG_ERROR);
  assert_int_equal(cm_log_level_parse("info", &l), 0);
  assert_int_equal(l, CM_LOG_INFO);
  assert_int_equal(cm_log_level_parse("loud", &l), -EINVAL);
  assert_int_equal(cm_log_level_parse(NULL, &l), -EINVAL);
  assert_int_equal(l, CM_LOG_INFO);
}

static void test_truncation(void **state) {
  pipe_t *p = *state;
  size_t n = 20000;
  char *big = malloc(n + 1);
  memset(big, 'a', n);
  big[n] = '\0';
  big[0] = '\n'; /* escapes count against the limit too */
  cm_log_info("%s", big);
  size_t len;
  char *s = drain(p, &len);
  assert_int_equal(count_lines(s), 1);
  assert_true(len < 10000);
  cJSON *j = cJSON_Parse(s);
  assert_non_null(j);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
  size_t ml = strlen(cJSON_GetObjectItem(j, "msg")->valuestring);
  assert_true(ml > 8000 && ml <= 8192);
  cJSON_Delete(j);
  free(s);
  free(big);
}

static void *logger_thread(void *arg) {
  for (int i = 0; i < 200; i++) cm_log_info("thread %ld line %d %s", (long)(intptr_t)arg, i,
                                            "padding-padding-padding-padding-padding");
  return NULL;
}

static void test_threads_do_not_interleave(void **state) {
  pipe_t *p = *state;
  pthread_t t[4];
  for (intptr_t i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, logger_thread, (void *)i), 0);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  char *s = drain(p, NULL);
  assert_int_equal(count_lines(s), 800);
  /* Every line parses on its own. */
  char *save = NULL;
  for (char *line = strtok_r(s, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    cJSON_Delete(j);
  }
  free(s);
}

static void test_errno_preserved(void **state) {
  pipe_t *p = *state;
  errno = ENOENT;
  cm_log_error("errno survives");
  assert_int_equal(errno, ENOENT);
  free(drain(p, NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_line_shape, setup, teardown),
      cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
      cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
      cmocka_unit_test(test_level_parse),
      cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_do_not_interleave, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errno_preserved, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
