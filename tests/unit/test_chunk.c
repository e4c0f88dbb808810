/* test_chunk.c - the chunk codec: header peek on the real app9 fixture,
 * encoder round trips, every malformed shape rejected with its reason, and
 * no prefix or mutation of a valid chunk crashes the scanner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the four headers above first. */
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/chunk.h"
#include "fixture.h"

static char *fixture(size_t *len) { return cm_test_fixture(len); }

/* Peeks a NUL-terminated literal; returns rc, err in err. */
static int peek_str(const char *s, cm_chunk_view_t *v, char *err, size_t errlen) {
  /* An exact-size heap copy, so ASan sees any read past len. */
  size_t n = strlen(s);
  char *copy = malloc(n ? n : 1);
  assert_non_null(copy);
  memcpy(copy, s, n);
  int rc = cm_chunk_peek(copy, n, v, err, errlen);
  /* The view must not outlive the copy: re-point it into s. */
  if (rc == 0) {
    v->data = s + (v->data - copy);
    if (v->dead) v->dead = s + (v->dead - copy);
  }
  free(copy);
  return rc;
}

static size_t count_elems(const char *arr, size_t len) {
  size_t pos = 0, n = 0, el;
  const char *e;
  int rc;
  while ((rc = cm_json_array_next(arr, len, &pos, &e, &el)) == 1) n++;
  assert_int_equal(rc, 0);
  return n;
}

/* ---- fixture ----------------------------------------------------------- */

static void test_fixture_peek(void **state) {
  (void)state;
  size_t len;
  char *js = fixture(&len);
  cm_chunk_view_t v;
  char err[128];

  assert_int_equal(cm_chunk_peek(js, len, &v, err, sizeof err), 0);
  assert_int_equal(v.hdr.index, 0);
  assert_int_equal(v.hdr.attempt, 0);
  assert_string_equal(v.hdr.job, ""); /* app9 chunks carry no job */
  assert_null(v.dead);
  assert_true(v.data > js && v.data + v.data_len < js + len);
  assert_int_equal(v.data[0], '[');
  assert_int_equal(v.data[v.data_len - 1], ']');
  assert_int_equal(v.data_len,
                   len - strlen("{\"index\":0,\"data\":") - 1 - (js[len - 1] == '\n' ? 1 : 0));
  /* The data span is one JSON value on its own: a 100-record array. (The
   * cJSON parse of the span is checked in test_transform, which links it.) */
  assert_int_equal(cm_json_value_span(v.data, v.data_len), (long)v.data_len);
  assert_int_equal(count_elems(v.data, v.data_len), 100);

  /* Every record is an object starting with its uuid. */
  size_t pos = 0, el;
  const char *e;
  assert_int_equal(cm_json_array_next(v.data, v.data_len, &pos, &e, &el), 1);
  assert_true(el > 60);
  assert_memory_equal(e, "{\"uuid\":\"b778cd3b-7388-4139-b7e1-b5f696bdad5e\"", 46);
  assert_int_equal(e[el - 1], '}');
  free(js);
}

/* ---- encoder ----------------------------------------------------------- */

static void test_round_trip(void **state) {
  (void)state;
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = 17, .attempt = 2};
  cm_chunk_view_t v;
  char err[128];
  const char *recs[] = {"{\"a\":1}", "[1,2]", "\"s\"", "null", "{\"b\":{\"c\":\"]}\"}}"};

  memcpy(h.job, "users", 6);
  cm_buf_init(&b, 1 << 20);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_string_equal(b.data, "{\"job\":\"users\",\"index\":17,\"attempt\":2,\"data\":[");
  for (size_t i = 0; i < 5; i++) {
    if (i) assert_int_equal(cm_buf_append(&b, ",", 1), 0);
    assert_int_equal(cm_buf_puts(&b, recs[i]), 0);
  }
  assert_int_equal(cm_chunk_end(&b, NULL, 0), 0);
  assert_string_equal(b.data, "{\"job\":\"users\",\"index\":17,\"attempt\":2,\"data\":[{\"a\":1},"
                              "[1,2],\"s\",null,{\"b\":{\"c\":\"]}\"}}]}");

  assert_int_equal(cm_chunk_peek(b.data, b.len, &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.job, "users");
  assert_int_equal(v.hdr.index, 17);
  assert_int_equal(v.hdr.attempt, 2);
  assert_null(v.dead);
  assert_int_equal(count_elems(v.data, v.data_len), 5);
  size_t pos = 0, el;
  const char *e;
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(cm_json_array_next(v.data, v.data_len, &pos, &e, &el), 1);
    assert_int_equal(el, strlen(recs[i]));
    assert_memory_equal(e, recs[i], el);
  }
  assert_int_equal(cm_json_array_next(v.data, v.data_len, &pos, &e, &el), 0);
  cm_buf_free(&b);
}

static void test_round_trip_empty_and_escaped_job(void **state) {
  (void)state;
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = UINT64_MAX, .attempt = UINT32_MAX};
  cm_chunk_view_t v;
  char err[128];
  const char job[] = "we\"ird\\job\n\xc3\xa9\x01";

  memcpy(h.job, job, sizeof job);
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_int_equal(cm_chunk_end(&b, NULL, 0), 0);
  assert_string_equal(b.data, "{\"job\":\"we\\\"ird\\\\job\\n\xc3\xa9\\u0001\",\"index\":"
                              "18446744073709551615,\"attempt\":4294967295,\"data\":[]}");
  assert_int_equal(cm_chunk_peek(b.data, b.len, &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.job, job);
  assert_int_equal(v.hdr.index, UINT64_MAX);
  assert_int_equal(v.hdr.attempt, UINT32_MAX);
  assert_int_equal(v.data_len, 2);
  assert_int_equal(count_elems(v.data, v.data_len), 0);
  cm_buf_free(&b);
}

static void test_dead_span(void **state) {
  (void)state;
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = 3};
  cm_chunk_view_t v;
  char err[128];
  const char dead[] =
      "[{\"idx\":1,\"reason\":\"x\",\"record\":{\"a\":[]}},{\"line\":7,\"raw\":\"{\"}]";

  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_int_equal(cm_buf_puts(&b, "{\"a\":0},null"), 0);
  assert_int_equal(cm_chunk_end(&b, dead, strlen(dead)), 0);
  assert_string_equal(b.data, "{\"job\":\"\",\"index\":3,\"attempt\":0,\"data\":[{\"a\":0},null],"
                              "\"dead\":[{\"idx\":1,\"reason\":\"x\",\"record\":{\"a\":[]}},"
                              "{\"line\":7,\"raw\":\"{\"}]}");
  assert_int_equal(cm_chunk_peek(b.data, b.len, &v, err, sizeof err), 0);
  assert_non_null(v.dead);
  assert_int_equal(v.dead_len, strlen(dead));
  assert_memory_equal(v.dead, dead, v.dead_len);
  assert_int_equal(count_elems(v.dead, v.dead_len), 2);
  assert_int_equal(count_elems(v.data, v.data_len), 2);

  /* "dead": null is the same as no dead letters. */
  assert_int_equal(peek_str("{\"index\":1,\"data\":[],\"dead\":null}", &v, err, sizeof err), 0);
  assert_null(v.dead);
  cm_buf_free(&b);
}

static void test_encoder_limit(void **state) {
  (void)state;
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = 1};
  memcpy(h.job, "job", 4);
  cm_buf_init(&b, 20);
  /* Too small for the header: -E2BIG and the buffer is left as it was. */
  assert_int_equal(cm_chunk_begin(&b, &h), -E2BIG);
  assert_int_equal(b.len, 0);
  cm_buf_free(&b);
  cm_buf_init(&b, 60);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  size_t len = b.len;
  assert_int_equal(cm_chunk_end(&b, "[{\"idx\":0,\"reason\":\"long enough\"}]", 34), -E2BIG);
  assert_int_equal(b.len, len);
  assert_int_equal(cm_chunk_end(&b, NULL, 0), 0);
  cm_buf_free(&b);
}

/* ---- decoder details --------------------------------------------------- */

static void test_unknown_keys_any_order(void **state) {
  (void)state;
  cm_chunk_view_t v;
  char err[128];
  const char *js =
      " \n\t{ \"x\" : {\"a\":[1,{\"b\":\"]\"}],\"c\":{}} , \"data\" : [ {\"q\":1} , 2 ] ,"
      "\"y\":[],\"z\":\"}\\\"{\",\"w\":-1.5e+3,\"t\":true,\"f\":false,\"n\":null,"
      "\"attempt\":4,\"job\":\"j\",\"index\" : 9 , \"d\\u0065ad\":{} }\r\n";
  assert_int_equal(peek_str(js, &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.job, "j");
  assert_int_equal(v.hdr.index, 9);
  assert_int_equal(v.hdr.attempt, 4);
  assert_int_equal(v.data_len, strlen("[ {\"q\":1} , 2 ]"));
  assert_memory_equal(v.data, "[ {\"q\":1} , 2 ]", v.data_len);
  assert_int_equal(count_elems(v.data, v.data_len), 2);
  /* An escaped spelling of a key is a different (unknown) key. */
  assert_null(v.dead);

  /* Minimal app9 form. */
  assert_int_equal(peek_str("{\"data\":[],\"index\":0}", &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.job, "");
  assert_int_equal(v.hdr.attempt, 0);
}

static void test_escaped_job(void **state) {
  (void)state;
  cm_chunk_view_t v;
  char err[128];
  assert_int_equal(
      peek_str("{\"job\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\","
               "\"index\":1,\"data\":[]}",
               &v, err, sizeof err),
      0);
  assert_string_equal(v.hdr.job, "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");

  assert_int_equal(peek_str("{\"job\":\"a\\u0000b\",\"index\":1,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "job name has a NUL or a lone surrogate escape");
  assert_int_equal(peek_str("{\"job\":\"\\ud83d\",\"index\":1,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "job name has a NUL or a lone surrogate escape");
}

static void test_job_length(void **state) {
  (void)state;
  cm_chunk_view_t v;
  char err[128], js[512];
  char name[200];

  memset(name, 'n', sizeof name);
  /* 127 bytes fit (plus the NUL), 128 do not. */
  (void)snprintf(js, sizeof js, "{\"job\":\"%.*s\",\"index\":1,\"data\":[]}", 127, name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), 0);
  assert_int_equal(strlen(v.hdr.job), 127);
  (void)snprintf(js, sizeof js, "{\"job\":\"%.*s\",\"index\":1,\"data\":[]}", 128, name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "job name longer than 127 bytes");
  /* Counted after unescaping: 125 + a 3-byte euro = 128. */
  (void)snprintf(js, sizeof js, "{\"job\":\"%.*s\\u20ac\",\"index\":1,\"data\":[]}", 125, name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "job name longer than 127 bytes");
  (void)snprintf(js, sizeof js, "{\"job\":\"%.*s\\u20ac\",\"index\":1,\"data\":[]}", 124, name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), 0);
  assert_int_equal(strlen(v.hdr.job), 127);
}

static void test_huge_numbers(void **state) {
  (void)state;
  cm_chunk_view_t v;
  char err[128];
  assert_int_equal(peek_str("{\"index\":18446744073709551615,\"attempt\":4294967295,\"data\":[]}",
                            &v, err, sizeof err),
                   0);
  assert_int_equal(v.hdr.index, UINT64_MAX);
  assert_int_equal(v.hdr.attempt, UINT32_MAX);
  assert_int_equal(peek_str("{\"index\":18446744073709551616,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "\"index\" is larger than 2^64-1");
  assert_int_equal(peek_str("{\"index\":99999999999999999999999,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "\"index\" is larger than 2^64-1");
  assert_int_equal(
      peek_str("{\"index\":1,\"attempt\":4294967296,\"data\":[]}", &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "\"attempt\" is larger than 2^32-1");
}

typedef struct {
  const char *in;
  const char *err;
} bad_case_t;

static void test_malformed(void **state) {
  (void)state;
  static const bad_case_t cases[] = {
      {"", "empty chunk"},
      {"  \n", "empty chunk"},
      {"[]", "chunk is not a JSON object (byte 0)"},
      {"null", "chunk is not a JSON object (byte 0)"},
      {"{", "unexpected end of input at byte 1"},
      {"{}", "missing \"index\""},
      {"{\"index\":1}", "missing \"data\""},
      {"{\"data\":[]}", "missing \"index\""},
      {"{\"index\":-1,\"data\":[]}", "\"index\" is not a non-negative integer"},
      {"{\"index\":1.5,\"data\":[]}", "\"index\" is not a non-negative integer"},
      {"{\"index\":1e3,\"data\":[]}", "\"index\" is not a non-negative integer"},
      {"{\"index\":\"1\",\"data\":[]}", "\"index\" is not a non-negative integer"},
      {"{\"index\":null,\"data\":[]}", "\"index\" is not a non-negative integer"},
      {"{\"index\":1,\"attempt\":-2,\"data\":[]}", "\"attempt\" is not a non-negative integer"},
      {"{\"index\":1,\"attempt\":true,\"data\":[]}", "\"attempt\" is not a non-negative integer"},
      {"{\"job\":1,\"index\":1,\"data\":[]}", "\"job\" is not a string"},
      {"{\"job\":null,\"index\":1,\"data\":[]}", "\"job\" is not a string"},
      {"{\"index\":1,\"data\":{}}", "\"data\" is not an array"},
      {"{\"index\":1,\"data\":\"[]\"}", "\"data\" is not an array"},
      {"{\"index\":1,\"data\":null}", "\"data\" is not an array"},
      {"{\"index\":1,\"data\":[],\"dead\":{}}", "\"dead\" is not an array"},
      {"{\"index\":1,\"data\":[],\"dead\":3}", "\"dead\" is not an array"},
      {"{\"index\":1,\"index\":2,\"data\":[]}", "duplicate key \"index\" at byte 11"},
      {"{\"index\":1,\"data\":[],\"data\":[]}", "duplicate key \"data\" at byte 21"},
      /* unterminated strings */
      {"{\"index\":1,\"data\":[\"abc]}",
       "unterminated string at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[\"abc\\\"]}",
       "unterminated string at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[],\"job\":\"x",
       "unterminated string at byte 27 (in the value of \"job\")"},
      {"{\"index\":1,\"data\":[],\"jo", "unterminated string at byte 21"},
      {"{\"index\":1,\"data\":[\"a\\u12\"]}",
       "bad \\u escape in string at byte 21 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[\"a\\x\"]}",
       "bad escape in string at byte 21 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[\"a\tb\"]}",
       "control character in string at byte 21 (in the value of \"data\")"},
      /* unbalanced brackets */
      {"{\"index\":1,\"data\":[[1,2]}",
       "expected ',' or ']' in array at byte 24 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[{\"a\":1]]}",
       "expected ',' or '}' in object at byte 25 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[1,2]", "unexpected end of input at byte 23 (missing '}')"},
      {"{\"index\":1,\"data\":[1,2",
       "unexpected end of input (unbalanced brackets) at byte 22 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[{\"a\":",
       "unexpected end of input at byte 24 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":]}", "unexpected character at byte 18 (in the value of \"data\")"},
      /* trailing garbage */
      {"{\"index\":1,\"data\":[]} x", "trailing garbage after the chunk object at byte 22"},
      {"{\"index\":1,\"data\":[]}}", "trailing garbage after the chunk object at byte 21"},
      {"{\"index\":1,\"data\":[]}{}", "trailing garbage after the chunk object at byte 21"},
      /* structure */
      {"{index:1,\"data\":[]}", "expected a string key at byte 1"},
      {"{\"index\" 1,\"data\":[]}", "expected ':' after key at byte 9"},
      {"{\"index\":1 \"data\":[]}", "expected ',' or '}' at byte 11"},
      {"{\"index\":1,,\"data\":[]}", "expected a string key at byte 11"},
      {"{\"index\":1,\"data\":[],}", "expected a string key at byte 21"},
      {"{\"index\":,\"data\":[]}", "unexpected character at byte 9 (in the value of \"index\")"},
      {"{\"index\":1,\"data\":[1,]}", "unexpected character at byte 21 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[,1]}", "unexpected character at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[{1:2}]}",
       "expected a string key in object at byte 20 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[{\"a\" 2}]}",
       "expected ':' after object key at byte 24 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[tru]}",
       "unexpected character at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[nul", "unexpected character at byte 19 (in the value of \"data\")"},
      {"{\"index\":01,\"data\":[]}", "expected ',' or '}' at byte 10"},
      {"{\"index\":1,\"data\":[-]}", "malformed number at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[1.]}", "malformed number at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[1e+]}", "malformed number at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[+1]}", "unexpected character at byte 19 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[01]}",
       "expected ',' or ']' in array at byte 20 (in the value of \"data\")"},
      {"{\"x\":{\"a\":1,\"data\":[]}", "unexpected end of input at byte 22 (missing '}')"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    cm_chunk_view_t v;
    char err[160] = "";
    int rc = peek_str(cases[k].in, &v, err, sizeof err);
    if (rc != -EINVAL || strcmp(err, cases[k].err) != 0) {
      print_error("case %zu: %s\n  rc=%d err=\"%s\"\n  want \"%s\"\n", k, cases[k].in, rc, err,
                  cases[k].err);
      fail();
    }
  }
}

static void test_deep_nesting(void **state) {
  (void)state;
  char js[2048];
  cm_chunk_view_t v;
  char err[160];
  size_t n = 0;
  n += (size_t)snprintf(js, sizeof js, "{\"index\":1,\"data\":");
  for (int k = 0; k < 600; k++) js[n++] = '[';
  for (int k = 0; k < 600; k++) js[n++] = ']';
  js[n++] = '}';
  js[n] = '\0';
  assert_int_equal(peek_str(js, &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "nesting too deep at byte 530 (in the value of \"data\")");
  /* 512 levels are fine. */
  n = (size_t)snprintf(js, sizeof js, "{\"index\":1,\"data\":");
  for (int k = 0; k < 512; k++) js[n++] = '[';
  for (int k = 0; k < 512; k++) js[n++] = ']';
  js[n++] = '}';
  js[n] = '\0';
  assert_int_equal(peek_str(js, &v, err, sizeof err), 0);
}

static void test_value_span(void **state) {
  (void)state;
  static const struct {
    const char *s;
    long span;
  } cases[] = {
      {"\"a\\\"b\" rest", 6},
      {"\"\"", 2},
      {"123,", 3},
      {"-0.5e+7]", 7},
      {"0", 1},
      {"true ", 4},
      {"false}", 5},
      {"null", 4},
      {"{\"a\":[1,2,{}],\"b\":\"}\"} x", 22},
      {"[ ]", 3},
      {"{ }", 3},
      {"[\"\\u00e9\\ud83d\\ude00\"]", 22},
      {"\"abc", -EINVAL},
      {"[1,2", -EINVAL},
      {"{\"a\"}", -EINVAL},
      {"", -EINVAL},
      {" 1", -EINVAL}, /* the caller skips leading whitespace */
      {"]", -EINVAL},
      {"nul", -EINVAL},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    size_t n = strlen(cases[k].s);
    char *copy = malloc(n + 1);
    memcpy(copy, cases[k].s, n);
    long got = cm_json_value_span(copy, n);
    free(copy);
    if (got != cases[k].span) {
      print_error("case %zu: %s -> %ld, want %ld\n", k, cases[k].s, got, cases[k].span);
      fail();
    }
  }
  /* Bounded by len, not by a NUL. */
  assert_int_equal(cm_json_value_span("\"abc\"", 4), -EINVAL);
  assert_int_equal(cm_json_value_span("[1,2]", 4), -EINVAL);
  assert_int_equal(cm_json_value_span("1234", 2), 2);

  /* The trusting skip agrees with the checking span on valid input. */
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    if (cases[k].span < 0) continue;
    size_t n = strlen(cases[k].s);
    char *copy = malloc(n);
    memcpy(copy, cases[k].s, n);
    long got = cm_json_value_skip(copy, n);
    free(copy);
    if (got != cases[k].span) {
      print_error("skip case %zu: %s -> %ld, want %ld\n", k, cases[k].s, got, cases[k].span);
      fail();
    }
  }
  assert_int_equal(cm_json_value_skip("\"ab\\\"", 6), -EINVAL); /* cut inside */
  assert_int_equal(cm_json_value_skip("[[1]", 4), -EINVAL);
  assert_int_equal(cm_json_value_skip("", 0), -EINVAL);

  size_t at = 0;
  const char *why = NULL;
  assert_int_equal(cm_json_value_span_why("[1, \"x\\q\"]", 10, &at, &why), -EINVAL);
  assert_int_equal(at, 6);
  assert_string_equal(why, "bad escape in string");
}

static void test_array_next(void **state) {
  (void)state;
  const char *a = "[ 1 ,\n{\"a\":[2]} ,\"x,y\" ]";
  size_t pos = 0, el;
  const char *e;
  assert_int_equal(cm_json_array_next(a, strlen(a), &pos, &e, &el), 1);
  assert_memory_equal(e, "1", el);
  assert_int_equal(cm_json_array_next(a, strlen(a), &pos, &e, &el), 1);
  assert_int_equal(el, 9);
  assert_memory_equal(e, "{\"a\":[2]}", 9);
  assert_int_equal(cm_json_array_next(a, strlen(a), &pos, &e, &el), 1);
  assert_int_equal(el, 5);
  assert_int_equal(cm_json_array_next(a, strlen(a), &pos, &e, &el), 0);
  assert_int_equal(cm_json_array_next(a, strlen(a), &pos, &e, &el), 0);

  pos = 0;
  assert_int_equal(cm_json_array_next("[1 2]", 5, &pos, &e, &el), 1);
  assert_int_equal(cm_json_array_next("[1 2]", 5, &pos, &e, &el), -EINVAL);
  pos = 0;
  assert_int_equal(cm_json_array_next("{}", 2, &pos, &e, &el), -EINVAL);
  pos = 0;
  assert_int_equal(cm_json_array_next("[1,", 3, &pos, &e, &el), 1);
  assert_int_equal(cm_json_array_next("[1,", 3, &pos, &e, &el), -EINVAL);
}

/* ---- robustness -------------------------------------------------------- */

/* Every proper prefix of a valid chunk must be rejected: the chunk ends in
 * '}', so no prefix is a complete object. Exact-size heap copies let ASan
 * catch any read past len. */
static void check_prefixes(const char *js, size_t len, size_t stride) {
  cm_chunk_view_t v;
  char err[160];
  for (size_t n = 0; n < len; n += (n + 300 >= len ? 1 : stride)) {
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, js, n);
    err[0] = '\0';
    int rc = cm_chunk_peek(p, n, &v, err, sizeof err);
    free(p);
    if (rc != -EINVAL || err[0] == '\0') {
      print_error("prefix of %zu bytes: rc=%d err=\"%s\"\n", n, rc, err);
      fail();
    }
  }
}

static void test_truncations(void **state) {
  (void)state;
  const char *small =
      "{\"job\":\"j\\u00e9\\\"b\",\"index\":12,\"x\":{\"k\":[true,false,null,-1.5e-3]},"
      "\"attempt\":3,\"data\":[{\"uuid\":\"u\",\"s\":\"\\\\]\\\"}\"},null,[[]],{}],"
      "\"dead\":[{\"idx\":1,\"reason\":\"r\",\"record\":{}}]}";
  cm_chunk_view_t v;
  char err[160];
  assert_int_equal(peek_str(small, &v, err, sizeof err), 0);
  check_prefixes(small, strlen(small), 1);

  size_t len;
  char *js = fixture(&len);
  while (len > 0 && js[len - 1] == '\n') len--;
  assert_int_equal(cm_chunk_peek(js, len, &v, err, sizeof err), 0);
  /* Every byte would be ~1.5 G byte-steps: take every 37th prefix plus the
   * last 300 (the interesting end). */
  check_prefixes(js, len, 37);
  free(js);
}

/* Single-byte mutations of a valid chunk: any result is fine, as long as
 * it is 0 or -EINVAL with a reason, and nothing is read out of bounds. */
static void test_mutations(void **state) {
  (void)state;
  const char *small =
      "{\"job\":\"a\\nb\",\"index\":12,\"attempt\":3,\"data\":[{\"u\":\"v\\\"w\",\"n\":"
      "[1,-2.5e3,true]},null],\"dead\":[{\"idx\":0}],\"z\":{}}";
  static const char subst[] = "{}[]\",:\\ 0-e.nt\x01\xff";
  size_t len = strlen(small);
  for (size_t i = 0; i < len; i++) {
    for (size_t k = 0; k < sizeof subst - 1; k++) {
      char *p = malloc(len);
      assert_non_null(p);
      memcpy(p, small, len);
      p[i] = subst[k];
      cm_chunk_view_t v;
      char err[160] = "";
      int rc = cm_chunk_peek(p, len, &v, err, sizeof err);
      if (rc == 0) {
        assert_true(v.data >= p && v.data + v.data_len <= p + len);
        assert_int_equal(cm_json_value_span(v.data, v.data_len), (long)v.data_len);
        size_t pos = 0, el;
        const char *e;
        int more;
        /* The validating scan's element spans are array_next's. */
        uint32_t st[8], en[8];
        cm_json_elems_t es = {st, en, 8, 0, false};
        cm_chunk_view_t v2;
        assert_int_equal(cm_chunk_peek_elems(p, len, &v2, &es, err, sizeof err), 0);
        assert_true(es.ok);
        size_t ne = 0;
        while ((more = cm_json_array_next(v.data, v.data_len, &pos, &e, &el)) == 1) {
          assert_true(e >= v.data && e + el <= v.data + v.data_len);
          assert_true(ne < es.n);
          assert_int_equal(st[ne], (uint32_t)(e - v.data));
          assert_int_equal(en[ne], (uint32_t)(e - v.data + el));
          ne++;
        }
        assert_int_equal(more, 0);
        assert_int_equal(ne, es.n);
        /* Too small an array: ok is false, nothing else changes. */
        cm_json_elems_t tiny = {st, en, 1, 0, false};
        assert_int_equal(cm_chunk_peek_elems(p, len, &v2, &tiny, err, sizeof err), 0);
        assert_true(tiny.ok == (ne <= 1));
      } else {
        assert_int_equal(rc, -EINVAL);
        assert_true(err[0] != '\0');
      }
      /* The header-only scan: never out of bounds (malloc'd to len, so
       * ASan/valgrind see any overrun), and agrees on the header. */
      cm_chunk_view_t h;
      int hrc = cm_chunk_peek_header(p, len, &h, err, sizeof err);
      if (hrc == 0) {
        assert_true(h.data == NULL || (h.data >= p && h.data + h.data_len <= p + len));
        if (rc == 0) {
          assert_int_equal(h.hdr.index, v.hdr.index);
          assert_int_equal(h.hdr.attempt, v.hdr.attempt);
          assert_string_equal(h.hdr.job, v.hdr.job);
        }
      }
      free(p);
    }
  }
}

/* cm_chunk_peek_header checks the header only; cm_chunk_compact removes
 * whitespace between tokens and nothing else; peek reports data_ws. */
/* "version": the producing mapper's label, written after the lease,
 * escaped, parsed back; bounded and UTF-8 like the job name; optional. */
static void test_version(void **state) {
  (void)state;
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = 5, .attempt = 1};
  cm_chunk_view_t v;
  char err[160], js[512], name[200];
  const char label[] = "v2\"-\xc3\xa9\\";

  memcpy(h.job, "j", 2);
  memcpy(h.mapper, "m1", 3);
  memcpy(h.lease, "00ff", 5);
  memcpy(h.version, label, sizeof label);
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_int_equal(cm_chunk_end(&b, NULL, 0), 0);
  assert_string_equal(b.data, "{\"job\":\"j\",\"index\":5,\"attempt\":1,\"mapper\":\"m1\","
                              "\"lease\":\"00ff\",\"version\":\"v2\\\"-\xc3\xa9\\\\\",\"data\":[]}");
  assert_int_equal(cm_chunk_peek(b.data, b.len, &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, label);
  assert_string_equal(v.hdr.lease, "00ff");
  /* The header-only peek reads it too. */
  memset(&v, 0, sizeof v);
  assert_int_equal(cm_chunk_peek_header(b.data, b.len, &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, label);
  cm_buf_free(&b);

  /* Without a lease, and absent (an older mapper): "". */
  assert_int_equal(peek_str("{\"index\":1,\"version\":\"v1\",\"data\":[]}", &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, "v1");
  assert_int_equal(peek_str("{\"index\":1,\"data\":[]}", &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, "");
  const char *old = "{\"index\":1,\"data\":[]}";
  assert_int_equal(cm_chunk_peek_header(old, strlen(old), &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, "");
  /* "" in the header encodes no key. */
  h.version[0] = '\0';
  h.lease[0] = '\0';
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_null(strstr(b.data, "version"));
  cm_buf_free(&b);

  /* 127 bytes fit, 128 do not (counted after unescaping). */
  memset(name, 'v', sizeof name);
  (void)snprintf(js, sizeof js, "{\"index\":1,\"version\":\"%.*s\",\"data\":[]}", 127, name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), 0);
  assert_int_equal(strlen(v.hdr.version), 127);
  (void)snprintf(js, sizeof js, "{\"index\":1,\"version\":\"%.*s\",\"data\":[]}", 128, name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "mapper version longer than 127 bytes");
  (void)snprintf(js, sizeof js, "{\"index\":1,\"version\":\"%.*s\\u20ac\",\"data\":[]}", 125,
                 name);
  assert_int_equal(peek_str(js, &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "mapper version longer than 127 bytes");

  /* Invalid: not a string, bad UTF-8, an escaped NUL, a lone surrogate,
   * given twice. */
  assert_int_equal(peek_str("{\"index\":1,\"version\":2,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "\"version\" is not a string");
  assert_int_equal(
      peek_str("{\"index\":1,\"version\":\"a\xff\",\"data\":[]}", &v, err, sizeof err), -EINVAL);
  assert_int_equal(peek_str("{\"index\":1,\"version\":\"a\\u0000\",\"data\":[]}", &v, err,
                            sizeof err),
                   -EINVAL);
  assert_string_equal(err, "mapper version has a NUL or a lone surrogate escape");
  assert_int_equal(peek_str("{\"index\":1,\"version\":\"\\ud800\",\"data\":[]}", &v, err,
                            sizeof err),
                   -EINVAL);
  assert_string_equal(err, "mapper version has a NUL or a lone surrogate escape");
  assert_int_equal(peek_str("{\"index\":1,\"version\":\"a\",\"version\":\"b\",\"data\":[]}", &v,
                            err, sizeof err),
                   -EINVAL);
  /* The header-only peek checks it as well. */
  const char *badv = "{\"index\":1,\"version\":7,\"data\":[]}";
  assert_int_equal(cm_chunk_peek_header(badv, strlen(badv), &v, err, sizeof err), -EINVAL);
}

/* "redo": the chunk's redo generation (docs/jobs.md "Redo by version"),
 * written after "attempt" only when > 0, parsed back by both peeks, a
 * non-negative integer below 2^32. */
static void test_redo(void **state) {
  (void)state;
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = 5, .attempt = 1, .redo = 3};
  cm_chunk_view_t v;
  char err[160];

  memcpy(h.job, "j", 2);
  memcpy(h.mapper, "m1", 3);
  memcpy(h.lease, "00ff", 5);
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_int_equal(cm_chunk_end(&b, NULL, 0), 0);
  assert_string_equal(b.data, "{\"job\":\"j\",\"index\":5,\"attempt\":1,\"redo\":3,\"mapper\":\"m1\","
                              "\"lease\":\"00ff\",\"data\":[]}");
  assert_int_equal(cm_chunk_peek(b.data, b.len, &v, err, sizeof err), 0);
  assert_int_equal(v.hdr.redo, 3);
  assert_string_equal(v.hdr.lease, "00ff");
  memset(&v, 0, sizeof v);
  assert_int_equal(cm_chunk_peek_header(b.data, b.len, &v, err, sizeof err), 0);
  assert_int_equal(v.hdr.redo, 3);
  assert_string_equal(v.hdr.lease, "00ff");
  cm_buf_free(&b);

  /* 0 encodes no key; absent is 0. */
  h.redo = 0;
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_null(strstr(b.data, "redo"));
  cm_buf_free(&b);
  assert_int_equal(peek_str("{\"index\":1,\"data\":[]}", &v, err, sizeof err), 0);
  assert_int_equal(v.hdr.redo, 0);
  assert_int_equal(peek_str("{\"index\":1,\"redo\":4294967295,\"data\":[]}", &v, err, sizeof err),
                   0);
  assert_int_equal(v.hdr.redo, 4294967295u);

  assert_int_equal(peek_str("{\"index\":1,\"redo\":4294967296,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "\"redo\" is larger than 2^32-1");
  assert_int_equal(peek_str("{\"index\":1,\"redo\":-1,\"data\":[]}", &v, err, sizeof err), -EINVAL);
  assert_string_equal(err, "\"redo\" is not a non-negative integer");
  assert_int_equal(peek_str("{\"index\":1,\"redo\":\"1\",\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  assert_int_equal(peek_str("{\"index\":1,\"redo\":1,\"redo\":2,\"data\":[]}", &v, err, sizeof err),
                   -EINVAL);
  const char *bad = "{\"index\":1,\"redo\":1.5,\"data\":[]}";
  assert_int_equal(cm_chunk_peek_header(bad, strlen(bad), &v, err, sizeof err), -EINVAL);
}

static void test_header_only_and_compact(void **state) {
  (void)state;
  cm_chunk_view_t v;
  char err[160];
  const char *bad = "{\"job\":\"j\",\"index\":4,\"attempt\":2,\"data\":[{\"a\":tru}]}";
  assert_int_equal(cm_chunk_peek_header(bad, strlen(bad), &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.job, "j");
  assert_int_equal(v.hdr.index, 4);
  assert_int_equal(v.hdr.attempt, 2);
  assert_int_equal(cm_chunk_peek(bad, strlen(bad), &v, err, sizeof err), -EINVAL);
  const char *badhdr = "{\"index\":-4,\"data\":[]}";
  assert_int_equal(cm_chunk_peek_header(badhdr, strlen(badhdr), &v, err, sizeof err), -EINVAL);
  const char *cut = "{\"job\":\"j\",\"index\":4,\"data\":[\"abc";
  assert_int_equal(cm_chunk_peek_header(cut, strlen(cut), &v, err, sizeof err), -EINVAL);

  const char *tight = "{\"index\":1,\"data\":[{\"a\":\"x y\"},2]}";
  assert_int_equal(cm_chunk_peek(tight, strlen(tight), &v, err, sizeof err), 0);
  assert_false(v.data_ws);
  const char *loose = "{\"index\":1,\"data\":[ {\"a\" : \"x y\\\" \" ,\n\"b\":[1, 2]} ]}";
  assert_int_equal(cm_chunk_peek(loose, strlen(loose), &v, err, sizeof err), 0);
  assert_true(v.data_ws);
  char out[128];
  size_t n = cm_json_compact(v.data, v.data_len, NULL);
  assert_int_equal(cm_json_compact(v.data, v.data_len, out), n);
  assert_int_equal(n, strlen("[{\"a\":\"x y\\\" \",\"b\":[1,2]}]"));
  assert_memory_equal(out, "[{\"a\":\"x y\\\" \",\"b\":[1,2]}]", n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixture_peek),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_round_trip_empty_and_escaped_job),
      cmocka_unit_test(test_dead_span),
      cmocka_unit_test(test_encoder_limit),
      cmocka_unit_test(test_unknown_keys_any_order),
      cmocka_unit_test(test_escaped_job),
      cmocka_unit_test(test_job_length),
      cmocka_unit_test(test_huge_numbers),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_deep_nesting),
      cmocka_unit_test(test_value_span),
      cmocka_unit_test(test_array_next),
      cmocka_unit_test(test_truncations),
      cmocka_unit_test(test_mutations),
      cmocka_unit_test(test_header_only_and_compact),
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_redo),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
