/* test_transform.c - the built-in transforms on the real app9 fixture:
 * exact outputs, dead letters keeping indexes, unusable chunks refused,
 * spec parsing, determinism and thread safety. Prints µs per chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the four headers above first. */
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/chunk.h"
#include "fixture.h"
#include "transform.h"

#define OUT_MAX (16u << 20)

static char *read_fixture(size_t *len) { return cm_test_fixture(len); }

static cm_transform_t *make(const char *spec) {
  cm_transform_t *t = NULL;
  char err[160];
  int rc = cm_transform_create(&t, spec, err, sizeof err);
  if (rc != 0) print_error("%s: %s\n", spec, err);
  assert_int_equal(rc, 0);
  return t;
}

/* Maps a NUL-terminated chunk, returns the output (caller frees). */
static char *map_str(const cm_transform_t *t, const char *in, cm_transform_stats_t *st) {
  cm_buf_t out;
  char err[160] = "";
  cm_buf_init(&out, OUT_MAX);
  int rc = cm_transform_chunk(t, in, strlen(in), &out, st, err, sizeof err);
  if (rc != 0) print_error("map: %d %s\n", rc, err);
  assert_int_equal(rc, 0);
  return out.data; /* ownership to the caller */
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* The mapped chunk carries the transform's version label, not the input's;
 * without one, no "version" key. Labels are bounded and UTF-8. */
static void test_version_label(void **state) {
  (void)state;
  cm_transform_t *t = make("identity");
  cm_chunk_view_t v;
  char err[160], big[CM_VERSION_MAX + 1];
  const char *in = "{\"job\":\"j\",\"index\":2,\"attempt\":1,\"version\":\"forged\","
                   "\"data\":[{\"a\":1}]}";

  char *out = map_str(t, in, NULL);
  assert_int_equal(cm_chunk_peek(out, strlen(out), &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, "");
  assert_null(strstr(out, "version"));
  free(out);

  assert_int_equal(cm_transform_set_version(t, "v2 \xc3\xa9\"", err, sizeof err), 0);
  out = map_str(t, in, NULL);
  assert_string_equal(out, "{\"job\":\"j\",\"index\":2,\"attempt\":1,\"version\":\"v2 \xc3\xa9\\\"\","
                           "\"data\":[{\"a\":1}]}");
  assert_int_equal(cm_chunk_peek(out, strlen(out), &v, err, sizeof err), 0);
  assert_string_equal(v.hdr.version, "v2 \xc3\xa9\"");
  free(out);

  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(cm_transform_set_version(t, big, err, sizeof err), -EINVAL);
  assert_string_equal(err, "longer than 127 bytes");
  big[CM_VERSION_MAX - 1] = '\0';
  assert_int_equal(cm_transform_set_version(t, big, err, sizeof err), 0);
  assert_int_equal(cm_transform_set_version(t, "a\xff", err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "UTF-8"));
  cm_transform_destroy(t);
}

/* ---- specs ------------------------------------------------------------- */

static void test_specs(void **state) {
  (void)state;
  static const struct {
    const char *spec, *name;
  } good[] = {
      {"identity", "identity"},         {"fullname", "fullname"}, {"burn:1", "burn:1"},
      {"burn:1000000", "burn:1000000"}, {"burn:0007", "burn:7"},  {"sleep:0", "sleep:0"},
      {"sleep:600000", "sleep:600000"},
  };
  for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
    cm_transform_t *t = make(good[k].spec);
    assert_string_equal(cm_transform_name(t), good[k].name);
    cm_transform_destroy(t);
  }
  cm_transform_destroy(NULL);

  static const struct {
    const char *spec, *err;
  } bad[] = {
      {"foo", "unknown transform \"foo\": expected identity, fullname, burn:N, sleep:MS, "
                 "exec:COMMAND, plugin:PATH.so"},
      {"", "unknown transform \"\": expected identity, fullname, burn:N, sleep:MS, "
                 "exec:COMMAND, plugin:PATH.so"},
      {"Identity", "unknown transform \"Identity\": expected identity, fullname, burn:N, sleep:MS, "
                 "exec:COMMAND, plugin:PATH.so"},
      {"burn", "unknown transform \"burn\": expected identity, fullname, burn:N, sleep:MS, "
                 "exec:COMMAND, plugin:PATH.so"},
      {"identity ",
       "unknown transform \"identity \": expected identity, fullname, burn:N, sleep:MS, "
                 "exec:COMMAND, plugin:PATH.so"},
      {"burn:", "bad transform \"burn:\": N in burn:N must be an integer 1..1000000"},
      {"burn:0", "bad transform \"burn:0\": N in burn:N must be an integer 1..1000000"},
      {"burn:1000001", "bad transform \"burn:1000001\": N in burn:N must be an integer 1..1000000"},
      {"burn:-5", "bad transform \"burn:-5\": N in burn:N must be an integer 1..1000000"},
      {"burn:+5", "bad transform \"burn:+5\": N in burn:N must be an integer 1..1000000"},
      {"burn:5x", "bad transform \"burn:5x\": N in burn:N must be an integer 1..1000000"},
      {"burn: 5", "bad transform \"burn: 5\": N in burn:N must be an integer 1..1000000"},
      {"burn:1e3", "bad transform \"burn:1e3\": N in burn:N must be an integer 1..1000000"},
      {"burn:99999999999999999999999", "bad transform \"burn:99999999999999999999999\": N in "
                                       "burn:N must be an integer 1..1000000"},
      {"sleep:", "bad transform \"sleep:\": MS in sleep:MS must be an integer 0..600000"},
      {"sleep:600001",
       "bad transform \"sleep:600001\": MS in sleep:MS must be an integer 0..600000"},
      {"sleep:1.5", "bad transform \"sleep:1.5\": MS in sleep:MS must be an integer 0..600000"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    cm_transform_t *t = (cm_transform_t *)&t; /* must be reset to NULL */
    char err[160] = "";
    assert_int_equal(cm_transform_create(&t, bad[k].spec, err, sizeof err), -EINVAL);
    assert_null(t);
    if (strcmp(err, bad[k].err) != 0) {
      print_error("spec \"%s\": got \"%s\"\n", bad[k].spec, err);
      fail();
    }
  }
  cm_transform_t *t = NULL;
  char err[160] = "";
  assert_int_equal(cm_transform_create(&t, NULL, err, sizeof err), -EINVAL);
  assert_string_equal(err, "unknown transform \"\": expected identity, fullname, burn:N, sleep:MS, "
                 "exec:COMMAND, plugin:PATH.so");
}

/* ---- fixture ----------------------------------------------------------- */

/* The data span of the fixture, as found by peek, is the 100-record array
 * cJSON sees (this lives here because test_chunk does not link cJSON). */
static void test_fixture_peek_cjson(void **state) {
  (void)state;
  size_t len;
  char *js = read_fixture(&len);
  cm_chunk_view_t v;
  char err[160];
  assert_int_equal(cm_chunk_peek(js, len, &v, err, sizeof err), 0);
  cJSON *data = cJSON_ParseWithLength(v.data, v.data_len);
  assert_non_null(data);
  assert_true(cJSON_IsArray(data));
  assert_int_equal(cJSON_GetArraySize(data), 100);
  cJSON *whole = cJSON_Parse(js);
  assert_true(cJSON_Compare(data, cJSON_GetObjectItem(whole, "data"), 1));
  cJSON_Delete(whole);
  cJSON_Delete(data);
  free(js);
}

static void test_identity_fixture(void **state) {
  (void)state;
  size_t len;
  char *js = read_fixture(&len);
  cm_transform_t *t = make("identity");
  cm_transform_stats_t st;
  char *out = map_str(t, js, &st);
  assert_int_equal(st.records, 100);
  assert_int_equal(st.dead, 0);

  cm_chunk_view_t vi, vo;
  char err[160];
  assert_int_equal(cm_chunk_peek(js, len, &vi, err, sizeof err), 0);
  assert_int_equal(cm_chunk_peek(out, strlen(out), &vo, err, sizeof err), 0);
  assert_int_equal(vo.hdr.index, 0);
  assert_string_equal(vo.hdr.job, "");
  assert_null(vo.dead);
  /* The fixture has no whitespace between records: the data span is copied
   * byte for byte. */
  assert_int_equal(vo.data_len, vi.data_len);
  assert_memory_equal(vo.data, vi.data, vi.data_len);
  assert_string_equal(out + strlen(out) - 2, "]}");
  assert_memory_equal(out, "{\"job\":\"\",\"index\":0,\"attempt\":0,\"data\":[", 40);
  free(out);
  cm_transform_destroy(t);
  free(js);
}

static void test_fullname_fixture(void **state) {
  (void)state;
  size_t len;
  char *js = read_fixture(&len);
  cm_transform_t *t = make("fullname");
  cm_transform_stats_t st;
  char *out = map_str(t, js, &st);
  assert_int_equal(st.records, 100);
  assert_int_equal(st.dead, 0);

  /* The expected output, computed from the fixture with cJSON. */
  cJSON *in = cJSON_Parse(js);
  assert_non_null(in);
  cJSON *data = cJSON_GetObjectItem(in, "data");
  char *exp = NULL;
  size_t explen = 0;
  FILE *m = open_memstream(&exp, &explen);
  fputs("{\"job\":\"\",\"index\":0,\"attempt\":0,\"data\":[", m);
  const cJSON *rec;
  int i = 0;
  cJSON_ArrayForEach(rec, data) {
    cJSON *o = cJSON_CreateObject();
    char name[256];
    (void)snprintf(name, sizeof name, "%s %s", cJSON_GetObjectItem(rec, "fn")->valuestring,
                   cJSON_GetObjectItem(rec, "ln")->valuestring);
    cJSON_AddStringToObject(o, "id", cJSON_GetObjectItem(rec, "uuid")->valuestring);
    cJSON_AddStringToObject(o, "name", name);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(m, "%s%s", i++ ? "," : "", s);
    cJSON_free(s);
    cJSON_Delete(o);
  }
  fputs("]}", m);
  fclose(m);
  assert_string_equal(out, exp);

  /* Record 0, spelled out. */
  const char *r0 =
      "{\"job\":\"\",\"index\":0,\"attempt\":0,\"data\":[{\"id\":\"b778cd3b-7388-4139-b7e1-"
      "b5f696bdad5e\",\"name\":\"Adelia Marquardt\"},";
  assert_memory_equal(out, r0, strlen(r0));

  free(exp);
  cJSON_Delete(in);
  free(out);
  cm_transform_destroy(t);
  free(js);
}

static void test_peek_fixture_fullname_header(void **state) {
  (void)state;
  /* A native header with job and attempt is carried through unchanged. */
  cm_transform_t *t = make("fullname");
  cm_transform_stats_t st;
  char *out =
      map_str(t,
              "{\"job\":\"us\\\"ers\",\"index\":42,\"attempt\":3,\"x\":1,\"data\":[{\"uuid\":"
              "\"u\",\"fn\":\"Zo\\u00eb \\\"Q\\\"\",\"ln\":\"O\\\\Brien\\n\"}]}",
              &st);
  assert_string_equal(out,
                      "{\"job\":\"us\\\"ers\",\"index\":42,\"attempt\":3,\"data\":[{\"id\":\"u\","
                      "\"name\":\"Zo\xc3\xab \\\"Q\\\" O\\\\Brien\\n\"}]}");
  free(out);
  cm_transform_destroy(t);
}

/* ---- dead letters ------------------------------------------------------ */

static void test_fullname_dead_letters(void **state) {
  (void)state;
  cm_transform_t *t = make("fullname");
  cm_transform_stats_t st;
  const char *in =
      "{\"job\":\"j\",\"index\":5,\"attempt\":1,\"data\":["
      "{\"uuid\":\"a\",\"fn\":\"A\",\"ln\":\"B\"}," /* 0 ok */
      "{\"uuid\":\"b\",\"ln\":\"B\"},"              /* 1 no fn */
      "{\"uuid\":\"c\",\"fn\":7,\"ln\":\"B\"},"     /* 2 fn not a string */
      "42,"                                         /* 3 not an object */
      "null,"                                       /* 4 already dead upstream */
      "[1, 2],"                                     /* 5 not an object */
      "{\"fn\":\"x\",\"ln\":\"y\"},"                /* 6 no uuid */
      "{\"uuid\":\"d\",\"fn\":\"C\",\"ln\":null},"  /* 7 ln null */
      "{ \"uuid\" : \"e\" , \"fn\":\"D\", \"ln\":\"E\", \"more\":{\"k\":[]} }" /* 8 ok */
      "],\"dead\":[{\"line\":3,\"reason\":\"invalid JSON\",\"raw\":\"{oops\"}]}";
  char *out = map_str(t, in, &st);
  assert_int_equal(st.records, 2);
  assert_int_equal(st.dead, 6);
  assert_string_equal(
      out, "{\"job\":\"j\",\"index\":5,\"attempt\":1,\"data\":["
           "{\"id\":\"a\",\"name\":\"A B\"},null,null,null,null,null,null,null,"
           "{\"id\":\"e\",\"name\":\"D E\"}],\"dead\":["
           "{\"line\":3,\"reason\":\"invalid JSON\",\"raw\":\"{oops\"},"
           "{\"idx\":1,\"reason\":\"fullname: missing string field \\\"fn\\\"\",\"record\":"
           "{\"uuid\":\"b\",\"ln\":\"B\"}},"
           "{\"idx\":2,\"reason\":\"fullname: missing string field \\\"fn\\\"\",\"record\":"
           "{\"uuid\":\"c\",\"fn\":7,\"ln\":\"B\"}},"
           "{\"idx\":3,\"reason\":\"fullname: record is not an object\",\"record\":42},"
           "{\"idx\":5,\"reason\":\"fullname: record is not an object\",\"record\":[1, 2]},"
           "{\"idx\":6,\"reason\":\"fullname: missing string field \\\"uuid\\\"\",\"record\":"
           "{\"fn\":\"x\",\"ln\":\"y\"}},"
           "{\"idx\":7,\"reason\":\"fullname: missing string field \\\"ln\\\"\",\"record\":"
           "{\"uuid\":\"d\",\"fn\":\"C\",\"ln\":null}}]}");
  /* The output is itself a valid chunk, with 9 slots. */
  cm_chunk_view_t v;
  char err[160];
  assert_int_equal(cm_chunk_peek(out, strlen(out), &v, err, sizeof err), 0);
  cJSON *d = cJSON_ParseWithLength(v.data, v.data_len);
  assert_int_equal(cJSON_GetArraySize(d), 9);
  cJSON_Delete(d);
  free(out);

  /* Identity passes source dead letters through as well. */
  cm_transform_t *id = make("identity");
  out = map_str(id, "{\"index\":1,\"data\":[1],\"dead\":[{\"line\":2}]}", &st);
  assert_string_equal(
      out, "{\"job\":\"\",\"index\":1,\"attempt\":0,\"data\":[1],\"dead\":[{\"line\":2}]}");
  assert_int_equal(st.records, 1);
  assert_int_equal(st.dead, 0);
  free(out);
  /* An empty dead array is dropped, an empty data array kept. */
  out = map_str(id, "{\"index\":1,\"data\":[],\"dead\":[]}", &st);
  assert_string_equal(out, "{\"job\":\"\",\"index\":1,\"attempt\":0,\"data\":[]}");
  free(out);
  cm_transform_destroy(id);
  cm_transform_destroy(t);
}

/* ---- unusable chunks --------------------------------------------------- */

static void test_invalid_chunks(void **state) {
  (void)state;
  static const struct {
    const char *in, *err;
  } cases[] = {
      {"not json", "bad chunk: chunk is not a JSON object (byte 0)"},
      {"{\"index\":1,\"data\":[{\"uuid\":]}",
       "bad chunk: unexpected character at byte 27 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":[{\"a\":1},{\"b\":2}",
       "bad chunk: unexpected end of input (unbalanced "
       "brackets) at byte 34 (in the value of \"data\")"},
      {"{\"index\":1,\"data\":{}}", "bad chunk: \"data\" is not an array"},
      {"{\"index\":1}", "bad chunk: missing \"data\""},
      {"{\"index\":1,\"data\":[]} trailing",
       "bad chunk: trailing garbage after the chunk object at "
       "byte 22"},
  };
  const char *specs[] = {"identity", "fullname", "burn:3", "sleep:0"};
  for (size_t s = 0; s < 4; s++) {
    cm_transform_t *t = make(specs[s]);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
      cm_buf_t out;
      char err[160] = "";
      cm_transform_stats_t st = {7, 7};
      cm_buf_init(&out, OUT_MAX);
      assert_int_equal(cm_buf_puts(&out, "keep"), 0);
      assert_int_equal(
          cm_transform_chunk(t, cases[k].in, strlen(cases[k].in), &out, &st, err, sizeof err),
          -EINVAL);
      if (strcmp(err, cases[k].err) != 0) {
        print_error("%s case %zu: \"%s\"\n", specs[s], k, err);
        fail();
      }
      assert_string_equal(out.data, "keep"); /* untouched */
      assert_int_equal(st.records, 0);
      cm_buf_free(&out);
    }
    cm_transform_destroy(t);
  }
}

static void test_buffer_limit(void **state) {
  (void)state;
  size_t len;
  char *js = read_fixture(&len);
  cm_transform_t *t = make("identity");
  cm_buf_t out;
  char err[160];
  cm_buf_init(&out, 4096);
  assert_int_equal(cm_buf_puts(&out, "x"), 0);
  assert_int_equal(cm_transform_chunk(t, js, len, &out, NULL, err, sizeof err), -E2BIG);
  assert_string_equal(err, "mapped chunk 0 exceeds the 4096-byte limit");
  assert_int_equal(out.len, 1);
  assert_string_equal(out.data, "x");
  cm_buf_free(&out);
  cm_transform_destroy(t);
  free(js);
}

/* ---- burn and sleep ---------------------------------------------------- */

static void test_burn(void **state) {
  (void)state;
  cm_transform_t *t = make("burn:1000");
  cm_transform_stats_t st;
  const char *in = "{\"index\":2,\"data\":[{\"a\":1},{ },\"s\",{\"b\":[{}]}]}";
  char *o1 = map_str(t, in, &st);
  char *o2 = map_str(t, in, &st);
  assert_string_equal(o1, o2); /* deterministic */
  assert_int_equal(st.records, 3);
  assert_int_equal(st.dead, 1);

  char exp[512];
  (void)snprintf(
      exp, sizeof exp,
      "{\"job\":\"\",\"index\":2,\"attempt\":0,\"data\":[{\"a\":1,\"burn\":\"%016" PRIx64
      "\"},{ \"burn\":\"%016" PRIx64 "\"},null,{\"b\":[{}],\"burn\":\"%016" PRIx64
      "\"}],\"dead\":[{\"idx\":2,\"reason\":\"burn: record is not an object\",\"record\":"
      "\"s\"}]}",
      cm_transform_burn_checksum("{\"a\":1}", 7, 1000), cm_transform_burn_checksum("{ }", 3, 1000),
      cm_transform_burn_checksum("{\"b\":[{}]}", 10, 1000));
  assert_string_equal(o1, exp);

  /* Known value, so a change of the algorithm is noticed. */
  assert_int_not_equal(cm_transform_burn_checksum("{\"a\":1}", 7, 1000),
                       cm_transform_burn_checksum("{\"a\":1}", 7, 1001));
  assert_int_not_equal(cm_transform_burn_checksum("{\"a\":1}", 7, 1),
                       cm_transform_burn_checksum("{\"a\":2}", 7, 1));
  free(o1);
  free(o2);
  cm_transform_destroy(t);

  /* Whole fixture: 100 objects, each gains a "burn" string. */
  size_t len;
  char *js = read_fixture(&len);
  t = make("burn:100");
  char *out = map_str(t, js, &st);
  assert_int_equal(st.records, 100);
  cJSON *o = cJSON_Parse(out);
  assert_non_null(o);
  const cJSON *rec;
  cJSON_ArrayForEach(rec, cJSON_GetObjectItem(o, "data")) {
    const cJSON *b = cJSON_GetObjectItem(rec, "burn");
    assert_true(cJSON_IsString(b));
    assert_int_equal(strlen(b->valuestring), 16);
    assert_non_null(cJSON_GetObjectItem(rec, "friends"));
  }
  cJSON_Delete(o);
  free(out);
  free(js);
  cm_transform_destroy(t);
}

static void test_sleep(void **state) {
  (void)state;
  cm_transform_t *t = make("sleep:50");
  cm_transform_stats_t st;
  double t0 = now_us();
  char *out = map_str(t, "{\"job\":\"s\",\"index\":1,\"data\":[{\"a\":1},2]}", &st);
  double dt = now_us() - t0;
  assert_true(dt >= 50000.0);
  assert_string_equal(out, "{\"job\":\"s\",\"index\":1,\"attempt\":0,\"data\":[{\"a\":1},2]}");
  assert_int_equal(st.records, 2);
  free(out);
  cm_transform_destroy(t);
}

/* ---- threads ----------------------------------------------------------- */

typedef struct {
  const cm_transform_t *t;
  const char *in;
  size_t len;
  const char *expect;
  int mismatches;
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  for (int k = 0; k < 25; k++) {
    cm_buf_t out;
    char err[160];
    cm_buf_init(&out, OUT_MAX);
    if (cm_transform_chunk(w->t, w->in, w->len, &out, NULL, err, sizeof err) != 0 ||
        strcmp(out.data, w->expect) != 0)
      w->mismatches++;
    cm_buf_free(&out);
  }
  return NULL;
}

static void test_concurrency(void **state) {
  (void)state;
  size_t len;
  char *js = read_fixture(&len);
  const char *specs[] = {"identity", "fullname", "burn:200"};
  for (size_t s = 0; s < 3; s++) {
    cm_transform_t *t = make(specs[s]);
    char *expect = map_str(t, js, NULL);
    pthread_t th[4];
    worker_t w[4];
    for (int k = 0; k < 4; k++) {
      w[k] = (worker_t){t, js, len, expect, 0};
      assert_int_equal(pthread_create(&th[k], NULL, worker, &w[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
      assert_int_equal(pthread_join(th[k], NULL), 0);
      assert_int_equal(w[k].mismatches, 0);
    }
    free(expect);
    cm_transform_destroy(t);
  }
  free(js);
}

/* ---- timing (printed, not asserted) ------------------------------------ */

static void test_timing(void **state) {
  (void)state;
  size_t len;
  char *js = read_fixture(&len);
  const char *specs[] = {"identity", "fullname", "burn:100"};
  for (size_t s = 0; s < 3; s++) {
    cm_transform_t *t = make(specs[s]);
    cm_buf_t out;
    char err[160];
    cm_buf_init(&out, OUT_MAX);
    int iters = 300;
    double best = 1e18, total = 0;
    for (int k = 0; k < iters; k++) {
      cm_buf_reset(&out);
      double t0 = now_us();
      assert_int_equal(cm_transform_chunk(t, js, len, &out, NULL, err, sizeof err), 0);
      double dt = now_us() - t0;
      total += dt;
      if (dt < best) best = dt;
    }
    printf("[ TIMING   ] %-9s %zu-byte fixture chunk (100 records): mean %.1f us, best %.1f us\n",
           specs[s], len, total / iters, best);
    cm_buf_free(&out);
    cm_transform_destroy(t);
  }
  /* For scale: the header peek alone (a full syntax check of the chunk). */
  cm_chunk_view_t v;
  char err[160];
  double t0 = now_us();
  for (int k = 0; k < 300; k++) assert_int_equal(cm_chunk_peek(js, len, &v, err, sizeof err), 0);
  printf("[ TIMING   ] cm_chunk_peek alone: %.1f us\n", (now_us() - t0) / 300);
  free(js);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_specs),
      cmocka_unit_test(test_version_label),
      cmocka_unit_test(test_fixture_peek_cjson),
      cmocka_unit_test(test_identity_fixture),
      cmocka_unit_test(test_fullname_fixture),
      cmocka_unit_test(test_peek_fixture_fullname_header),
      cmocka_unit_test(test_fullname_dead_letters),
      cmocka_unit_test(test_invalid_chunks),
      cmocka_unit_test(test_buffer_limit),
      cmocka_unit_test(test_burn),
      cmocka_unit_test(test_sleep),
      cmocka_unit_test(test_concurrency),
      cmocka_unit_test(test_timing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
