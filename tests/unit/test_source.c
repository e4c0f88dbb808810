/* test_source.c - gen:users and file: sources (fetcher/source.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka after the headers it needs */
#include <cmocka.h>

#include "fixture.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source.h"
#include "tmpdir.h"

#define BUFMAX ((size_t)64 << 20)

static char g_dir[CM_TEST_PATH_MAX];

static int setup_dir(void **state) {
  (void)state;
  cm_test_mkdtemp(g_dir, sizeof g_dir, "cm-test-source");
  return 0;
}

static int teardown_dir(void **state) {
  (void)state;
  return cm_test_rmtree(g_dir) == 0 ? 0 : -1;
}

static void path_in_dir(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", g_dir, name);
}

static void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static cm_source_t *open_src(const char *spec, uint64_t records, uint64_t seed, uint32_t chunk) {
  cm_source_t *s = NULL;
  char err[512];
  cm_source_opts_t o = {.spec = spec, .records = records, .seed = seed, .chunk_size = chunk};
  int rc = cm_source_open(&s, &o, err, sizeof err);
  if (rc != 0) fail_msg("cm_source_open(%s): %d %s", spec, rc, err);
  return s;
}

static cm_source_t *open_file(const char *path, uint32_t chunk) {
  char spec[600];
  snprintf(spec, sizeof spec, "file:%s", path);
  return open_src(spec, 0, 0, chunk);
}

/* Parses "[" + records + "]" (the chunk's data array). Caller deletes. */
static cJSON *parse_array(const cm_buf_t *b) {
  size_t n = b->len + 3;
  char *t = malloc(n);
  assert_non_null(t);
  snprintf(t, n, "[%s]", b->len ? b->data : "");
  cJSON *j = cJSON_Parse(t);
  free(t);
  assert_non_null(j);
  assert_true(cJSON_IsArray(j));
  return j;
}

/* 8-4-4-4-12 lowercase hex, version 4, variant 10xx. */
static bool is_uuid_v4(const char *u) {
  if (!u || strlen(u) != 36) return false;
  for (int i = 0; i < 36; i++) {
    char c = u[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return u[14] == '4' && strchr("89ab", u[19]) != NULL;
}

/* ---- gen:users ---------------------------------------------------------- */

static void gen_chunk(cm_source_t *s, uint64_t idx, cm_buf_t *b, uint32_t *n) {
  cm_buf_reset(b);
  assert_int_equal(cm_source_chunk(s, idx, b, n), 0);
}

static void test_gen_shape_like_fixture(void **state) {
  (void)state;
  const uint64_t N = 1000;
  cm_source_t *s = open_src("gen:users", N, 42, 100);
  cm_buf_t b;
  uint32_t n;
  char **uuids = calloc(N, sizeof *uuids);
  assert_non_null(uuids);
  cm_buf_init(&b, BUFMAX);
  assert_true(cm_source_random_access(s));
  assert_int_equal(cm_source_total_chunks(s), 10);

  /* The fixture's first record gives the keys and their order. */
  size_t fl;
  char *fx = cm_test_fixture(&fl);
  cJSON *fixture = cJSON_Parse(fx);
  free(fx);
  assert_non_null(fixture);
  cJSON *frec = cJSON_GetArrayItem(cJSON_GetObjectItem(fixture, "data"), 0);
  assert_non_null(frec);

  for (uint64_t c = 0; c < 10; c++) {
    gen_chunk(s, c, &b, &n);
    assert_int_equal(n, 100);
    assert_int_equal(strlen(b.data), b.len); /* no NUL inside, terminated */
    cJSON *arr = parse_array(&b);
    assert_int_equal(cJSON_GetArraySize(arr), 100);
    int k = 0;
    for (cJSON *rec = arr->child; rec; rec = rec->next, k++) {
      assert_true(cJSON_IsObject(rec));
      cJSON *fk = frec->child, *rk = rec->child;
      for (; fk && rk; fk = fk->next, rk = rk->next) assert_string_equal(fk->string, rk->string);
      assert_null(fk);
      assert_null(rk);
      const char *u = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "uuid"));
      assert_true(is_uuid_v4(u));
      uuids[c * 100 + (uint64_t)k] = strdup(u);
      const char *fn = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "fn"));
      const char *ln = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "ln"));
      assert_true(fn && *fn && ln && *ln);
      cJSON *fr = cJSON_GetObjectItem(rec, "friends");
      assert_true(cJSON_IsArray(fr));
      int nf = cJSON_GetArraySize(fr);
      assert_in_range(nf, 10, 14);
    }
    cJSON_Delete(arr);
  }
  /* Compact, exactly as specified: the first record starts this way. */
  gen_chunk(s, 0, &b, &n);
  assert_memory_equal(b.data, "{\"uuid\":\"", 9);
  assert_non_null(strstr(b.data, "\",\"fn\":\""));
  assert_non_null(strstr(b.data, "\",\"friends\":[\""));
  assert_null(strchr(b.data, ' '));

  /* uuids are unique, and every friend is a member of the data set */
  for (uint64_t i = 0; i < N; i++)
    for (uint64_t j = i + 1; j < N; j++) assert_string_not_equal(uuids[i], uuids[j]);
  for (uint64_t c = 0; c < 10; c++) {
    gen_chunk(s, c, &b, &n);
    cJSON *arr = parse_array(&b);
    for (cJSON *rec = arr->child; rec; rec = rec->next) {
      cJSON *fr;
      cJSON_ArrayForEach(fr, cJSON_GetObjectItem(rec, "friends")) {
        assert_true(is_uuid_v4(fr->valuestring));
        bool found = false;
        for (uint64_t i = 0; i < N && !found; i++) found = strcmp(uuids[i], fr->valuestring) == 0;
        assert_true(found);
      }
    }
    cJSON_Delete(arr);
  }
  for (uint64_t i = 0; i < N; i++) free(uuids[i]);
  free(uuids);
  cJSON_Delete(fixture);
  cm_buf_free(&b);
  cm_source_close(s);
}

static void test_gen_deterministic(void **state) {
  (void)state;
  cm_source_t *a = open_src("gen:users", 5000, 7, 100);
  cm_source_t *b = open_src("gen:users", 5000, 7, 100);
  cm_source_t *c = open_src("gen:users", 5000, 8, 100);
  cm_buf_t x, y;
  uint32_t n;
  cm_buf_init(&x, BUFMAX);
  cm_buf_init(&y, BUFMAX);

  /* A sequential pass over all chunks into one buffer ... */
  cm_buf_t all;
  cm_buf_init(&all, BUFMAX);
  size_t offs[51];
  for (uint64_t i = 0; i < 50; i++) {
    offs[i] = all.len;
    assert_int_equal(cm_source_chunk(a, i, &all, &n), 0);
    assert_int_equal(n, 100);
  }
  offs[50] = all.len;
  /* ... equals each chunk regenerated alone, in any order, by another
   * source: chunk k depends on (seed, k) only. */
  const uint64_t order[] = {37, 0, 49, 12, 13, 1};
  for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
    uint64_t i = order[k];
    gen_chunk(b, i, &y, &n);
    assert_int_equal(y.len, offs[i + 1] - offs[i]);
    assert_memory_equal(y.data, all.data + offs[i], y.len);
  }
  /* same chunk twice from one source is stable too */
  gen_chunk(a, 5, &x, &n);
  gen_chunk(a, 5, &y, &n);
  assert_int_equal(x.len, y.len);
  assert_memory_equal(x.data, y.data, x.len);
  /* another seed: another data set */
  gen_chunk(c, 5, &y, &n);
  assert_true(x.len != y.len || memcmp(x.data, y.data, x.len) != 0);
  assert_true(memcmp(x.data, y.data, 45) != 0); /* even the first uuid */

  assert_string_equal(cm_source_describe(a), "gen:users records=5000 seed=7 chunk=100");
  assert_string_equal(cm_source_describe(c), "gen:users records=5000 seed=8 chunk=100");
  cm_buf_free(&all);
  cm_buf_free(&x);
  cm_buf_free(&y);
  cm_source_close(a);
  cm_source_close(b);
  cm_source_close(c);
}

static void test_gen_sizes_and_range(void **state) {
  (void)state;
  cm_source_t *s = open_src("gen:users", 1050, 1, 100);
  cm_buf_t b;
  uint32_t n = 99;
  cm_buf_init(&b, BUFMAX);
  assert_int_equal(cm_source_total_chunks(s), 11);
  gen_chunk(s, 9, &b, &n);
  assert_int_equal(n, 100);
  gen_chunk(s, 10, &b, &n);
  assert_int_equal(n, 50);
  cJSON *arr = parse_array(&b);
  assert_int_equal(cJSON_GetArraySize(arr), 50);
  cJSON_Delete(arr);
  cm_buf_reset(&b);
  assert_int_equal(cm_source_chunk(s, 11, &b, &n), -ERANGE);
  assert_int_equal(cm_source_chunk(s, UINT64_MAX, &b, &n), -ERANGE);
  assert_int_equal(b.len, 0);
  /* a gen source is not sequential */
  cm_buf_t bad;
  uint32_t nbad;
  int64_t pos;
  char err[256];
  cm_buf_init(&bad, BUFMAX);
  assert_int_equal(cm_source_next(s, &b, &n, &bad, &nbad, &pos, err, sizeof err), -ENOTSUP);
  assert_int_equal(cm_source_seek(s, 0, 0), -ENOTSUP);
  cm_source_close(s);

  s = open_src("gen:users", 0, 1, 100);
  assert_int_equal(cm_source_total_chunks(s), 0);
  assert_int_equal(cm_source_chunk(s, 0, &b, &n), -ERANGE);
  cm_source_close(s);

  s = open_src("gen:users", 7, 1, 3); /* 3 + 3 + 1 */
  assert_int_equal(cm_source_total_chunks(s), 3);
  gen_chunk(s, 2, &b, &n);
  assert_int_equal(n, 1);
  cm_source_close(s);

  /* all-or-nothing: a chunk that does not fit leaves the buffer as it was */
  s = open_src("gen:users", 1000, 1, 100);
  cm_buf_t small;
  cm_buf_init(&small, 4096);
  assert_int_equal(cm_buf_append(&small, "xyz", 3), 0);
  assert_int_equal(cm_source_chunk(s, 0, &small, &n), -E2BIG);
  assert_int_equal(small.len, 3);
  assert_string_equal(small.data, "xyz");
  cm_buf_free(&small);
  cm_source_close(s);
  cm_buf_free(&b);
  cm_buf_free(&bad);
}

static void test_open_errors(void **state) {
  (void)state;
  cm_source_t *s = (cm_source_t *)1;
  char err[512];
  cm_source_opts_t o = {.spec = "file:/nonexistent/chunkmill-x.json", .chunk_size = 10};
  assert_int_equal(cm_source_open(&s, &o, err, sizeof err), -ENOENT);
  assert_null(s);
  assert_string_equal(err, "file:/nonexistent/chunkmill-x.json: No such file or directory");
  o.spec = "foo";
  assert_int_equal(cm_source_open(&s, &o, err, sizeof err), -EINVAL);
  assert_string_equal(err, "unknown source \"foo\": expected gen:users, file:PATH, file:- or "
                           "http(s)://URL");
  o.spec = "gen:cats";
  assert_int_equal(cm_source_open(&s, &o, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "unknown source \"gen:cats\""));
  o.spec = "file:/tmp";
  assert_int_equal(cm_source_open(&s, &o, err, sizeof err), -EISDIR);
  assert_string_equal(err, "file:/tmp: Is a directory");
  o.spec = "gen:users";
  o.chunk_size = 0;
  assert_int_equal(cm_source_open(&s, &o, err, sizeof err), -EINVAL);
  cm_source_close(NULL);
}

/* ---- file: --------------------------------------------------------------- */

typedef struct chunk_s {
  int rc;
  uint32_t nrec, nbad;
  int64_t pos;
  uint64_t line;
  char *out, *bad;
} chunk_t;

static chunk_t next_chunk(cm_source_t *s) {
  chunk_t c = {0};
  cm_buf_t out, bad;
  char err[512] = "";
  cm_buf_init(&out, BUFMAX);
  cm_buf_init(&bad, BUFMAX);
  c.pos = -7;
  c.rc = cm_source_next(s, &out, &c.nrec, &bad, &c.nbad, &c.pos, err, sizeof err);
  if (c.rc < 0) fail_msg("cm_source_next: %d %s", c.rc, err);
  c.line = cm_source_line(s);
  c.out = strdup(out.len ? out.data : "");
  c.bad = strdup(bad.len ? bad.data : "");
  cm_buf_free(&out);
  cm_buf_free(&bad);
  return c;
}

static void chunk_free(chunk_t *c) {
  free(c->out);
  free(c->bad);
}

static const char NDJSON[] = "{\"a\":1}\n"                     /* line 1 */
                             "{\"a\":2}\r\n"                   /* 2: CRLF */
                             "\n"                              /* 3: blank */
                             "{\"a\":oops}\n"                  /* 4: bad */
                             "  [1, 2, 3]  \n"                 /* 5 */
                             "\"str\"\n"                       /* 6 */
                             "1 2\n"                           /* 7: bad (two values) */
                             "{\"q\":\"tab\\there \\\"x\\\"\"}\n" /* 8 */
                             "{\"unterminated\": \"\x01\n"     /* 9: bad, control char */
                             "null";                           /* 10: no final newline */

static void test_file_ndjson(void **state) {
  (void)state;
  char path[300];
  path_in_dir(path, sizeof path, "a.ndjson");
  write_file(path, NDJSON, sizeof NDJSON - 1);
  cm_source_t *s = open_file(path, 3);
  assert_false(cm_source_random_access(s));
  assert_int_equal(cm_source_total_chunks(s), -1);

  chunk_t c1 = next_chunk(s);
  assert_int_equal(c1.rc, 0);
  assert_int_equal(c1.nrec, 2);
  assert_int_equal(c1.nbad, 1);
  assert_string_equal(c1.out, "{\"a\":1},{\"a\":2}");
  assert_string_equal(c1.bad, "{\"line\":4,\"reason\":\"invalid JSON\",\"raw\":\"{\\\"a\\\":oops}\"}");
  /* the resume point is right after line 4 */
  const char *after4 = strstr(NDJSON, "  [1,");
  assert_int_equal(c1.pos, after4 - NDJSON);
  assert_int_equal(c1.line, 4);

  chunk_t c2 = next_chunk(s);
  assert_int_equal(c2.nrec, 2);
  assert_int_equal(c2.nbad, 1);
  assert_string_equal(c2.out, "[1, 2, 3],\"str\"");
  cJSON *bad = cJSON_Parse(c2.bad);
  assert_non_null(bad);
  assert_int_equal(cJSON_GetObjectItem(bad, "line")->valueint, 7);
  assert_string_equal(cJSON_GetObjectItem(bad, "raw")->valuestring, "1 2");
  cJSON_Delete(bad);

  chunk_t c3 = next_chunk(s);
  assert_int_equal(c3.nrec, 2);
  assert_int_equal(c3.nbad, 1);
  assert_string_equal(c3.out, "{\"q\":\"tab\\there \\\"x\\\"\"},null");
  size_t bl = strlen(c3.bad) + 3;
  char *wrapped = malloc(bl);
  snprintf(wrapped, bl, "[%s]", c3.bad);
  bad = cJSON_Parse(wrapped); /* bad output is valid JSON even with a control char */
  free(wrapped);
  assert_non_null(bad);
  assert_int_equal(cJSON_GetObjectItem(bad->child, "line")->valueint, 9);
  assert_string_equal(cJSON_GetObjectItem(bad->child, "raw")->valuestring,
                      "{\"unterminated\": \"\x01");
  cJSON_Delete(bad);
  assert_int_equal(c3.pos, (int64_t)sizeof NDJSON - 1);

  chunk_t end = next_chunk(s);
  assert_int_equal(end.rc, 1);
  assert_int_equal(end.nrec + end.nbad, 0);
  assert_string_equal(end.out, "");
  chunk_t end2 = next_chunk(s);
  assert_int_equal(end2.rc, 1);

  const char *d = cm_source_describe(s);
  assert_memory_equal(d, "file:/", 6);
  assert_non_null(strstr(d, path));
  char want[64];
  snprintf(want, sizeof want, " size=%zu ", sizeof NDJSON - 1);
  assert_non_null(strstr(d, want));
  assert_non_null(strstr(d, " mtime="));
  assert_non_null(strstr(d, " chunk=3"));

  chunk_free(&c1);
  chunk_free(&c2);
  chunk_free(&c3);
  chunk_free(&end);
  chunk_free(&end2);
  cm_source_close(s);
}

static void test_file_resume_ndjson(void **state) {
  (void)state;
  char path[300];
  path_in_dir(path, sizeof path, "r.ndjson");
  write_file(path, NDJSON, sizeof NDJSON - 1);
  cm_source_t *s = open_file(path, 3);
  chunk_t c[3];
  for (int i = 0; i < 3; i++) c[i] = next_chunk(s);
  cm_source_close(s);

  /* a new run resumes after chunk 1 and reads chunk 2 again, identically,
   * with the same line numbers in its bad records */
  s = open_file(path, 3);
  assert_int_equal(cm_source_seek(s, c[0].pos, c[0].line), 0);
  chunk_t r = next_chunk(s);
  assert_int_equal(r.rc, 0);
  assert_string_equal(r.out, c[1].out);
  assert_string_equal(r.bad, c[1].bad);
  assert_int_equal(r.pos, c[1].pos);
  assert_int_equal(r.line, c[1].line);
  chunk_free(&r);
  r = next_chunk(s);
  assert_string_equal(r.out, c[2].out);
  assert_string_equal(r.bad, c[2].bad);
  chunk_free(&r);
  /* back to the start, and to the very end */
  assert_int_equal(cm_source_seek(s, 0, 0), 0);
  r = next_chunk(s);
  assert_string_equal(r.out, c[0].out);
  chunk_free(&r);
  assert_int_equal(cm_source_seek(s, c[2].pos, c[2].line), 0);
  r = next_chunk(s);
  assert_int_equal(r.rc, 1);
  chunk_free(&r);
  assert_int_equal(cm_source_seek(s, -1, 0), -EINVAL);
  for (int i = 0; i < 3; i++) chunk_free(&c[i]);
  cm_source_close(s);
}

static const char ARRAY[] = "\xEF\xBB\xBF  [\n"
                            "  {\"id\": 1, \"s\": \"a,b]}\\\"\"},\n" /* 1: brackets in a string */
                            "  {\"id\": 2, \"n\": [1, {\"x\": [2]}]},\n" /* 2: nested */
                            "  {\"id\": 3, \"bad\": tru},\n"         /* 3: bad */
                            "  42,\n"                               /* 4 */
                            "  \"x\",\n"                            /* 5 */
                            "  {\"id\": 6} {\"id\": 7},\n"          /* 6: bad, two values */
                            "  []\n"                                /* 7 */
                            "]\n";

static void test_file_array(void **state) {
  (void)state;
  char path[300];
  path_in_dir(path, sizeof path, "a.json");
  write_file(path, ARRAY, sizeof ARRAY - 1);
  cm_source_t *s = open_file(path, 3);
  chunk_t c1 = next_chunk(s);
  assert_int_equal(c1.rc, 0);
  assert_int_equal(c1.nrec, 2);
  assert_int_equal(c1.nbad, 1);
  assert_string_equal(c1.out,
                      "{\"id\": 1, \"s\": \"a,b]}\\\"\"},{\"id\": 2, \"n\": [1, {\"x\": [2]}]}");
  cJSON *bad = cJSON_Parse(c1.bad);
  assert_non_null(bad);
  assert_int_equal(cJSON_GetObjectItem(bad, "line")->valueint, 3); /* 1-based value position */
  assert_string_equal(cJSON_GetObjectItem(bad, "raw")->valuestring, "{\"id\": 3, \"bad\": tru}");
  cJSON_Delete(bad);
  assert_int_equal(c1.line, 3);

  chunk_t c2 = next_chunk(s);
  assert_int_equal(c2.nrec, 2);
  assert_int_equal(c2.nbad, 1);
  assert_string_equal(c2.out, "42,\"x\"");
  bad = cJSON_Parse(c2.bad);
  assert_int_equal(cJSON_GetObjectItem(bad, "line")->valueint, 6);
  cJSON_Delete(bad);

  chunk_t c3 = next_chunk(s);
  assert_int_equal(c3.rc, 0);
  assert_int_equal(c3.nrec, 1);
  assert_string_equal(c3.out, "[]");
  chunk_t end = next_chunk(s);
  assert_int_equal(end.rc, 1);
  cm_source_close(s);

  /* resume after chunk 1: chunk 2 again */
  s = open_file(path, 3);
  assert_int_equal(cm_source_seek(s, c1.pos, c1.line), 0);
  chunk_t r = next_chunk(s);
  assert_string_equal(r.out, c2.out);
  assert_string_equal(r.bad, c2.bad);
  assert_int_equal(r.pos, c2.pos);
  chunk_free(&r);
  cm_source_close(s);

  chunk_free(&c1);
  chunk_free(&c2);
  chunk_free(&c3);
  chunk_free(&end);
}

static void expect_fatal(const char *name, const char *content, const char *needle, int want_rc) {
  char path[300], err[512] = "";
  path_in_dir(path, sizeof path, name);
  write_file(path, content, strlen(content));
  cm_source_t *s = open_file(path, 100);
  cm_buf_t out, bad;
  uint32_t n, nb;
  int64_t pos;
  cm_buf_init(&out, BUFMAX);
  cm_buf_init(&bad, BUFMAX);
  int rc = cm_source_next(s, &out, &n, &bad, &nb, &pos, err, sizeof err);
  assert_int_equal(rc, want_rc);
  if (!strstr(err, needle)) fail_msg("%s: error \"%s\" lacks \"%s\"", name, err, needle);
  assert_non_null(strstr(err, path));
  cm_buf_free(&out);
  cm_buf_free(&bad);
  cm_source_close(s);
}

static void test_file_array_syntax_errors(void **state) {
  (void)state;
  expect_fatal("e1.json", "[1, 2", "syntax error at byte 5: unexpected end of input", -EBADMSG);
  expect_fatal("e2.json", "[1, \"abc", "unexpected end of input", -EBADMSG);
  expect_fatal("e3.json", "[1, 2,]", "at byte 6: expected a value", -EBADMSG);
  expect_fatal("e4.json", "[1,,2]", "at byte 3: expected a value", -EBADMSG);
  expect_fatal("e5.json", "[1] x", "at byte 4: unexpected data after the array", -EBADMSG);
  expect_fatal("e6.json", "[1, 2}, 3]", "at byte 5: unbalanced '}'", -EBADMSG);
}

static void test_file_empty(void **state) {
  (void)state;
  const char *cases[][2] = {{"empty.ndjson", ""}, {"blank.ndjson", " \n\n  \n"},
                            {"empty.json", "[]"}, {"empty2.json", "  [ \n ]  \n"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char path[300];
    path_in_dir(path, sizeof path, cases[i][0]);
    write_file(path, cases[i][1], strlen(cases[i][1]));
    cm_source_t *s = open_file(path, 10);
    chunk_t c = next_chunk(s);
    assert_int_equal(c.rc, 1);
    assert_int_equal(c.nrec + c.nbad, 0);
    chunk_free(&c);
    cm_source_close(s);
  }
}

/* Several MB, much more than the 64 KiB read buffer: records straddle
 * buffer boundaries; output must equal the input record for record, and
 * memory must not depend on the file (the record buffer is capped). */
static void big_file(bool array) {
  const uint64_t N = 12000; /* ~6.7 MB */
  cm_source_t *g = open_src("gen:users", N, 3, 1000);
  cm_buf_t all, out, bad;
  uint32_t n, nb;
  char path[300], err[512];
  cm_buf_init(&all, BUFMAX);
  cm_buf_init(&out, BUFMAX);
  cm_buf_init(&bad, BUFMAX);
  for (uint64_t i = 0; i < 12; i++) {
    if (i) assert_int_equal(cm_buf_append(&all, ",", 1), 0);
    assert_int_equal(cm_source_chunk(g, i, &all, &n), 0);
  }
  cm_source_close(g);
  /* file text: the records one per line, or as a pretty-ish array */
  path_in_dir(path, sizeof path, array ? "big.json" : "big.ndjson");
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (array) fputs("[\n", f);
  int depth = 0;
  for (size_t i = 0; i < all.len; i++) {
    char ch = all.data[i];
    if (ch == '{') depth++;
    if (ch == '}') depth--;
    if (ch == ',' && depth == 0) fputs(array ? ",\n  " : "\n", f);
    else fputc(ch, f);
  }
  fputs(array ? "\n]\n" : "\n", f);
  assert_int_equal(fclose(f), 0);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_true(sb.st_size > 5 * 1000 * 1000);

  cm_source_t *s = open_file(path, 100);
  uint64_t total = 0, chunks = 0;
  int64_t pos = 0, prev = 0;
  for (;;) {
    int rc = cm_source_next(s, &out, &n, &bad, &nb, &pos, err, sizeof err);
    if (rc < 0) fail_msg("%s", err);
    if (rc == 1) break;
    assert_int_equal(n, 100);
    assert_int_equal(nb, 0);
    assert_true(pos > prev);
    prev = pos;
    total += n;
    chunks++;
    if (chunks < N / 100) assert_int_equal(cm_buf_append(&out, ",", 1), 0);
  }
  assert_int_equal(total, N);
  assert_int_equal(chunks, N / 100);
  assert_int_equal(out.len, all.len);
  assert_memory_equal(out.data, all.data, all.len);
  cm_source_close(s);

  /* a limit below the record size stops with the line named */
  s = open_file(path, 100);
  assert_int_equal(cm_source_set_max_record(s, 300), 0);
  cm_buf_reset(&out);
  assert_int_equal(cm_source_next(s, &out, &n, &bad, &nb, &pos, err, sizeof err), -E2BIG);
  assert_non_null(strstr(err, array ? "array value 1 is longer than the maximum record size (300"
                                    : "line 1 is longer than the maximum record size (300"));
  cm_source_close(s);
  cm_buf_free(&all);
  cm_buf_free(&out);
  cm_buf_free(&bad);
}

static void test_file_big_ndjson(void **state) {
  (void)state;
  big_file(false);
}

static void test_file_big_array(void **state) {
  (void)state;
  big_file(true);
}

static void test_file_bad_raw_truncated(void **state) {
  (void)state;
  char path[300];
  size_t n = 3000;
  char *text = malloc(n + 32);
  /* 1022 ASCII bytes, then a 3-byte character across the 1 KiB cut */
  memset(text, 'x', n);
  memcpy(text + 1022, "\xE2\x82\xAC", 3);
  memcpy(text + n, "\n{\"ok\":true}\n", 14);
  path_in_dir(path, sizeof path, "long.ndjson");
  write_file(path, text, n + 13);
  free(text);
  cm_source_t *s = open_file(path, 10);
  chunk_t c = next_chunk(s);
  assert_int_equal(c.nrec, 1);
  assert_int_equal(c.nbad, 1);
  assert_string_equal(c.out, "{\"ok\":true}");
  cJSON *bad = cJSON_Parse(c.bad);
  assert_non_null(bad);
  const char *raw = cJSON_GetObjectItem(bad, "raw")->valuestring;
  assert_int_equal(strlen(raw), 1022); /* the euro sign is not cut in two */
  assert_int_equal(cJSON_GetObjectItem(bad, "line")->valueint, 1);
  cJSON_Delete(bad);
  chunk_free(&c);
  cm_source_close(s);
}

static void test_file_stdin(void **state) {
  (void)state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  const char data[] = "\n{\"a\":1}\n{\"a\":2}\n";
  assert_int_equal(write(p[1], data, sizeof data - 1), (ssize_t)(sizeof data - 1));
  close(p[1]);
  int saved = dup(0);
  assert_int_equal(dup2(p[0], 0), 0);
  close(p[0]);
  cm_source_t *s = open_src("file:-", 0, 0, 1);
  assert_string_equal(cm_source_describe(s), "file:- chunk=1");
  chunk_t c = next_chunk(s);
  assert_string_equal(c.out, "{\"a\":1}");
  assert_int_equal(c.line, 2); /* the blank first line counts */
  assert_int_equal(cm_source_seek(s, 0, 0), -ESPIPE);
  assert_int_equal(cm_source_seek(s, c.pos, c.line), 0);
  chunk_free(&c);
  c = next_chunk(s);
  assert_string_equal(c.out, "{\"a\":2}");
  chunk_free(&c);
  c = next_chunk(s);
  assert_int_equal(c.rc, 1);
  chunk_free(&c);
  cm_source_close(s);
  assert_int_equal(dup2(saved, 0), 0);
  close(saved);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gen_shape_like_fixture),
      cmocka_unit_test(test_gen_deterministic),
      cmocka_unit_test(test_gen_sizes_and_range),
      cmocka_unit_test(test_open_errors),
      cmocka_unit_test(test_file_ndjson),
      cmocka_unit_test(test_file_resume_ndjson),
      cmocka_unit_test(test_file_array),
      cmocka_unit_test(test_file_array_syntax_errors),
      cmocka_unit_test(test_file_empty),
      cmocka_unit_test(test_file_big_ndjson),
      cmocka_unit_test(test_file_big_array),
      cmocka_unit_test(test_file_bad_raw_truncated),
      cmocka_unit_test(test_file_stdin),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
