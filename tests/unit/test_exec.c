/* test_exec.c - exec: and plugin: transforms through cm_transform_chunk
 * with real children (sh, sed, python3) and the example plugins: answers in
 * order, dead letters for bad lines and {"error":..}, a crash and a hang
 * failing the chunk and the next chunk getting a new child, command-line
 * parsing, env and cwd, several threads at once, ABI refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the four headers above first. */
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/metrics.h"
#include "cm/chunk.h"
#include "exec.h"
#include "transform.h"

#define OUT_MAX (16u << 20)

static const char *CHUNK =
    "{\"job\":\"j\",\"index\":4,\"attempt\":1,\"data\":[{\"fn\":\"ada\",\"n\":1},null,"
    "{\"fn\":\"bob\",\n \"n\":2},{\"fn\":\"cy\",\"n\":3}]}";

/* Maps CHUNK with spec; returns rc, output parsed into *doc (caller frees). */
static int run(const char *spec, const cm_transform_opts_t *o, cJSON **doc, char *err,
               size_t errlen) {
  cm_transform_t *t = NULL;
  cm_buf_t out;
  int rc = cm_transform_create_ex(&t, spec, o, err, errlen);
  if (rc != 0) return rc;
  cm_buf_init(&out, OUT_MAX);
  rc = cm_transform_chunk(t, CHUNK, strlen(CHUNK), &out, NULL, err, errlen);
  if (rc == 0) {
    *doc = cJSON_Parse(out.data);
    assert_non_null(*doc);
  }
  cm_buf_free(&out);
  cm_transform_destroy(t);
  return rc;
}

static const char *data_str(cJSON *doc, int i, const char *key) {
  cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "data"), i);
  cJSON *f = cJSON_GetObjectItem(r, key);
  return cJSON_IsString(f) ? f->valuestring : NULL;
}

static void test_sed_uppercase(void **st) {
  cJSON *doc = NULL;
  char err[256] = "";
  /* sed -u: line-buffered, as the contract requires */
  assert_int_equal(run("exec:sed -u s/\"fn\":\"\\([a-z]*\\)\"/\"fn\":\"X\\1\"/", NULL, &doc, err,
                       sizeof err),
                   0);
  assert_string_equal(data_str(doc, 0, "fn"), "Xada");
  assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "data"), 1)));
  assert_string_equal(data_str(doc, 2, "fn"), "Xbob");
  assert_string_equal(data_str(doc, 3, "fn"), "Xcy");
  assert_null(cJSON_GetObjectItem(doc, "dead"));
  cJSON_Delete(doc);
}

static void test_errors_are_dead_letters(void **st) {
  cJSON *doc = NULL;
  char err[256] = "";
  const char *py =
      "exec:[\"python3\",\"-u\",\"-c\",\"import sys,json\\nfor l in sys.stdin:\\n r=json.loads(l)"
      "\\n if r['n']==2: print(json.dumps({'error':'no bobs'}))\\n elif r['n']==3: print('not json')"
      "\\n else: print(json.dumps({'n':r['n']*10}))\"]";
  assert_int_equal(run(py, NULL, &doc, err, sizeof err), 0);
  cJSON *data = cJSON_GetObjectItem(doc, "data");
  assert_int_equal(cJSON_GetArraySize(data), 4);
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "n")->valueint, 10);
  assert_true(cJSON_IsNull(cJSON_GetArrayItem(data, 2)));
  assert_true(cJSON_IsNull(cJSON_GetArrayItem(data, 3)));
  cJSON *dead = cJSON_GetObjectItem(doc, "dead");
  assert_int_equal(cJSON_GetArraySize(dead), 2);
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(dead, 0), "idx")->valueint, 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(dead, 0), "reason")->valuestring,
                      "exec: no bobs");
  assert_non_null(strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(dead, 1), "reason")->valuestring,
                         "not valid JSON"));
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(dead, 1), "idx")->valueint, 3);
  cJSON_Delete(doc);
}

static void test_crash_and_hang_fail_then_recover(void **st) {
  cm_transform_t *t = NULL;
  cm_transform_opts_t o = {.exec_timeout_ms = 1500};
  cm_buf_t out;
  char err[256] = "";
  /* dies on a record with "n":2; sleeps forever on "n":3 */
  const char *sh = "exec:sh -c 'while read -r l; do case \"$l\" in *'\"'\"'\"n\":2'\"'\"'*) exit 7;; "
                   "*'\"'\"'\"n\":3'\"'\"'*) sleep 100;; esac; echo \"$l\"; done'";
  (void)sh;
  /* simpler to read as python */
  const char *py =
      "exec:[\"python3\",\"-u\",\"-c\",\"import sys,json,time\\nfor l in sys.stdin:\\n "
      "r=json.loads(l)\\n if r.get('n')==2: sys.exit(7)\\n if r.get('n')==3: time.sleep(100)"
      "\\n print(l.strip())\"]";
  const char *c2 = "{\"index\":5,\"data\":[{\"n\":2}]}";
  const char *c3 = "{\"index\":6,\"data\":[{\"n\":3}]}";
  const char *c1 = "{\"index\":7,\"data\":[{\"n\":1},{\"n\":4}]}";
  assert_int_equal(cm_transform_create_ex(&t, py, &o, err, sizeof err), 0);
  cm_buf_init(&out, OUT_MAX);
  assert_int_equal(cm_transform_chunk(t, c2, strlen(c2), &out, NULL, err, sizeof err), -ECHILD);
  assert_non_null(strstr(err, "exited with status 7"));
  /* warm the new child up (python starts slowly on a busy machine), then
   * time out on the hanging record */
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), 0);
  cm_buf_reset(&out);
  assert_int_equal(cm_transform_chunk(t, c3, strlen(c3), &out, NULL, err, sizeof err), -ETIMEDOUT);
  assert_non_null(strstr(err, "timed out"));
  assert_int_equal(out.len, 0);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), 0);
  assert_non_null(strstr(out.data, "\"data\":[{\"n\":1},{\"n\":4}]"));
  cm_buf_free(&out);
  cm_transform_destroy(t);
}

static void test_env_cwd_arg_and_counters(void **st) {
  cm_transform_t *t = NULL;
  cm_metrics_t *m = NULL;
  cm_transform_opts_t o = {.arg = "hello", .exec_cwd = "/tmp", .exec_env = "A=1,B=two"};
  cm_buf_t out, prom;
  char err[256] = "";
  const char *c = "{\"index\":1,\"data\":[1]}";
  assert_int_equal(cm_metrics_create(&m), 0);
  assert_int_equal(
      cm_transform_create_ex(&t,
                             "exec:sh -c 'while read -r l; do echo counter:seen,3 >&2; "
                             "echo progress:1 >&2; echo \"[\\\"$CHUNKMILL_TRANSFORM_ARG\\\","
                             "\\\"$A$B\\\",\\\"$(pwd)\\\"]\"; done'",
                             &o, err, sizeof err),
      0);
  cm_transform_set_metrics(t, m);
  cm_buf_init(&out, OUT_MAX);
  assert_int_equal(cm_transform_chunk(t, c, strlen(c), &out, NULL, err, sizeof err), 0);
  assert_non_null(strstr(out.data, "[\"hello\",\"1two\",\"/tmp\"]"));
  cm_buf_init(&prom, 1 << 20);
  /* stderr is read while the answers are awaited: it may trail by a bit */
  assert_int_equal(cm_transform_chunk(t, c, strlen(c), &out, NULL, err, sizeof err), 0);
  assert_int_equal(cm_metrics_render(m, &prom), 0);
  assert_non_null(strstr(prom.data, "chunkmill_exec_counter_total{name=\"seen\"}"));
  assert_non_null(strstr(prom.data, "chunkmill_exec_progress_total"));
  cm_buf_free(&prom);
  cm_buf_free(&out);
  cm_transform_destroy(t);
  cm_metrics_destroy(m);
}

static void test_bad_specs(void **st) {
  cm_transform_t *t = NULL;
  char err[256] = "";
  assert_int_equal(cm_transform_create_ex(&t, "exec:no-such-program-xyz", NULL, err, sizeof err),
                   -ENOENT);
  assert_non_null(strstr(err, "no-such-program-xyz"));
  assert_int_equal(cm_transform_create_ex(&t, "exec:", NULL, err, sizeof err), -EINVAL);
  assert_int_equal(cm_transform_create_ex(&t, "exec:[1,2]", NULL, err, sizeof err), -EINVAL);
  cm_transform_opts_t o = {.exec_env = "NOEQUALS"};
  assert_int_equal(cm_transform_create_ex(&t, "exec:cat", &o, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "--exec-env"));
  assert_int_equal(cm_transform_create_ex(&t, "plugin:" CM_PLUGIN_BADABI, NULL, err, sizeof err),
                   -EPROTO);
  assert_non_null(strstr(err, "has ABI version 2; this mapper supports 1"));
  assert_int_equal(cm_transform_create_ex(&t, "plugin:/nonexistent.so", NULL, err, sizeof err),
                   -ENOENT);
  assert_non_null(strstr(err, "/nonexistent.so"));
  assert_null(t);
}

static void test_plugin_upper(void **st) {
  cJSON *doc = NULL;
  char err[256] = "";
  cm_transform_opts_t o = {.arg = "fn"};
  const char *big = "{\"index\":2,\"data\":[{\"fn\":\"ada\",\"x\":\"ab\"},\"str\"]}";
  assert_int_equal(run("plugin:" CM_PLUGIN_UPPER, &o, &doc, err, sizeof err), 0);
  assert_string_equal(data_str(doc, 0, "fn"), "ADA");
  assert_string_equal(data_str(doc, 2, "fn"), "BOB");
  cJSON_Delete(doc);
  /* a non-object is rejected by the plugin: a dead letter with its reason */
  cm_transform_t *t = NULL;
  cm_buf_t out;
  assert_int_equal(cm_transform_create_ex(&t, "plugin:" CM_PLUGIN_UPPER, &o, err, sizeof err), 0);
  cm_buf_init(&out, OUT_MAX);
  assert_int_equal(cm_transform_chunk(t, big, strlen(big), &out, NULL, err, sizeof err), 0);
  assert_non_null(strstr(out.data, "{\"fn\":\"ADA\",\"x\":\"ab\"},null]"));
  assert_non_null(strstr(out.data, "\"reason\":\"plugin: upper: record is not an object\""));
  cm_buf_free(&out);
  cm_transform_destroy(t);
}

/* Several threads at once: each gets its own child / plugin state. */
static cm_transform_t *g_t;
static void *hammer(void *arg) {
  cm_buf_t out;
  char err[256];
  long bad = 0;
  cm_buf_init(&out, OUT_MAX);
  for (int i = 0; i < 30; i++) {
    cm_buf_reset(&out);
    if (cm_transform_chunk(g_t, CHUNK, strlen(CHUNK), &out, NULL, err, sizeof err) != 0 ||
        strstr(out.data, "\"index\":4") == NULL)
      bad++;
  }
  cm_buf_free(&out);
  return (void *)bad;
}

static void threads_on(const char *spec) {
  pthread_t th[4];
  char err[256] = "";
  assert_int_equal(cm_transform_create_ex(&g_t, spec, NULL, err, sizeof err), 0);
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
  for (int i = 0; i < 4; i++) {
    void *r;
    assert_int_equal(pthread_join(th[i], &r), 0);
    assert_int_equal((long)r, 0);
  }
  cm_transform_destroy(g_t);
}

static void test_threads(void **st) {
  threads_on("exec:cat");
  threads_on("plugin:" CM_PLUGIN_UPPER);
}

/* Renders m and returns the value of the sample `name` (-1 when absent). */
static double metric(cm_metrics_t *m, const char *name) {
  cm_buf_t prom;
  double v = -1;
  cm_buf_init(&prom, 1 << 20);
  assert_int_equal(cm_metrics_render(m, &prom), 0);
  for (const char *p = prom.data; p && *p;) {
    size_t nl = strlen(name);
    if (strncmp(p, name, nl) == 0 && p[nl] == ' ') v = strtod(p + nl + 1, NULL);
    p = strchr(p, '\n');
    if (p) p++;
  }
  cm_buf_free(&prom);
  return v;
}

/* A child that writes one extra line 150 ms after each batch of answers.
 * With no settle time the first chunk is committed (its answers are right);
 * the late line arrives while no chunk is outstanding, and the next chunk
 * must not take it as an answer: it goes to a new child instead. */
static void test_stray_output_between_chunks(void **st) {
  cm_transform_t *t = NULL;
  cm_metrics_t *m = NULL;
  cm_buf_t out;
  char err[256] = "";
  const char *py =
      "exec:[\"python3\",\"-u\",\"-c\",\"import sys,threading\\ntm=None\\n"
      "def late():\\n print('late line',flush=True)\\n"
      "for l in sys.stdin:\\n if tm: tm.cancel()\\n print(l.strip(),flush=True)\\n"
      " tm=threading.Timer(0.15,late)\\n tm.start()\"]";
  const char *c1 = "{\"index\":7,\"data\":[{\"n\":1},{\"n\":2}]}";
  const char *c2 = "{\"index\":8,\"data\":[{\"n\":3},{\"n\":4}]}";
  struct timespec ts = {0, 400 * 1000000L};
  cm_transform_opts_t o = {.exec_framing = "lines"};
  assert_int_equal(cm_metrics_create(&m), 0);
  assert_int_equal(cm_transform_create_ex(&t, py, &o, err, sizeof err), 0);
  cm_transform_set_metrics(t, m);
  cm_buf_init(&out, OUT_MAX);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), 0);
  assert_non_null(strstr(out.data, "\"data\":[{\"n\":1},{\"n\":2}]"));
  nanosleep(&ts, NULL);
  cm_buf_reset(&out);
  assert_int_equal(cm_transform_chunk(t, c2, strlen(c2), &out, NULL, err, sizeof err), 0);
  assert_non_null(strstr(out.data, "\"data\":[{\"n\":3},{\"n\":4}]"));
  assert_null(strstr(out.data, "dead"));
  assert_true(metric(m, "chunkmill_exec_protocol_errors_total") == 1);
  assert_true(metric(m, "chunkmill_exec_restarts_total") == 1);
  cm_buf_free(&out);
  cm_transform_destroy(t);
  cm_metrics_destroy(m);
}

/* A banner: N+1 lines; the settle time sees the last one. */
static void test_settle_catches_banner(void **st) {
  cm_transform_t *t = NULL;
  cm_buf_t out;
  char err[256] = "";
  cm_transform_opts_t o = {.exec_framing = "lines", .exec_settle_ms = 100};
  const char *c1 = "{\"index\":7,\"data\":[{\"n\":1},{\"n\":2}]}";
  assert_int_equal(
      cm_transform_create_ex(&t, "exec:sh -c 'echo hello banner; exec cat'", &o, err, sizeof err),
      0);
  cm_buf_init(&out, OUT_MAX);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), -EPROTO);
  assert_non_null(strstr(err, "is out of step"));
  assert_non_null(strstr(err, "first line \"hello banner\""));
  assert_int_equal(out.len, 0);
  cm_buf_free(&out);
  cm_transform_destroy(t);
}

/* --exec-framing chunk (the default): a child per chunk, read to EOF: a
 * line written 300 ms after the answers (longer than any settle) still
 * fails it. */
static void test_chunk_framing(void **st) {
  cm_transform_t *t = NULL;
  cm_metrics_t *m = NULL;
  cm_buf_t out;
  char err[256] = "";
  cm_transform_opts_t o = {.exec_framing = "chunk"};
  const char *c1 = "{\"index\":7,\"data\":[{\"n\":1},{\"n\":2}]}";
  assert_int_equal(cm_metrics_create(&m), 0);
  assert_int_equal(cm_transform_create_ex(&t, "exec:cat", NULL, err, sizeof err), 0); /* default */
  cm_transform_set_metrics(t, m);
  cm_buf_init(&out, OUT_MAX);
  for (int i = 0; i < 3; i++) {
    cm_buf_reset(&out);
    assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), 0);
    assert_non_null(strstr(out.data, "\"data\":[{\"n\":1},{\"n\":2}]"));
  }
  assert_true(metric(m, "chunkmill_exec_restarts_total") == 0); /* a new child is no restart */
  cm_transform_destroy(t);
  assert_int_equal(
      cm_transform_create_ex(&t, "exec:sh -c 'cat; sleep 0.3; echo extra'", &o, err, sizeof err),
      0);
  cm_buf_reset(&out);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), -EPROTO);
  assert_non_null(strstr(err, "extra line \"extra\""));
  cm_transform_destroy(t);
  o.exec_framing = "bogus";
  assert_int_equal(cm_transform_create_ex(&t, "exec:cat", &o, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "--exec-framing"));
  cm_buf_free(&out);
  cm_metrics_destroy(m);
}

/* stdout closed before the last answer, the child alive: out of step now,
 * not after --exec-timeout. */
static void test_stdout_closed_early(void **st) {
  cm_transform_t *t = NULL;
  cm_buf_t out;
  char err[256] = "";
  cm_transform_opts_t o = {.exec_framing = "lines", .exec_timeout_ms = 20000};
  const char *c1 = "{\"index\":7,\"data\":[{\"n\":1},{\"n\":2}]}";
  assert_int_equal(cm_transform_create_ex(&t, "exec:sh -c 'read -r l; echo $l; exec >&-; sleep 30'",
                                          &o, err, sizeof err),
                   0);
  cm_buf_init(&out, OUT_MAX);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), -EPROTO);
  assert_non_null(strstr(err, "closed its stdout after 1 of 2 answer lines"));
  cm_buf_free(&out);
  cm_transform_destroy(t);
}

/* --exec-framing tagged: "<seq>\t" both ways, seq running over the child's
 * life; `cat` answers every record with itself and its tag. */
static void test_tagged_framing(void **st) {
  cm_transform_t *t = NULL;
  cm_buf_t out;
  char err[256] = "";
  cm_transform_opts_t o = {.exec_framing = "tagged"};
  const char *c1 = "{\"index\":7,\"data\":[{\"n\":1},{\"n\":2}]}";
  assert_int_equal(cm_transform_create_ex(&t, "exec:cat", &o, err, sizeof err), 0);
  cm_buf_init(&out, OUT_MAX);
  for (int i = 0; i < 3; i++) { /* tags 1,2 then 3,4 then 5,6 on one child */
    cm_buf_reset(&out);
    assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), 0);
    assert_non_null(strstr(out.data, "\"data\":[{\"n\":1},{\"n\":2}]"));
  }
  cm_transform_destroy(t);
  /* untagged output (a banner) and an answer with a stale tag fail */
  assert_int_equal(
      cm_transform_create_ex(&t, "exec:sh -c 'echo hello; exec cat'", &o, err, sizeof err), 0);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), -EPROTO);
  assert_non_null(strstr(err, "answer line 1 should start with \"1<TAB>\": \"hello\""));
  cm_transform_destroy(t);
  assert_int_equal(cm_transform_create_ex(&t,
                                          "exec:sh -c 'read -r l; echo \"$l\"; echo \"$l\"; "
                                          "exec cat'",
                                          &o, err, sizeof err),
                   0);
  assert_int_equal(cm_transform_chunk(t, c1, strlen(c1), &out, NULL, err, sizeof err), -EPROTO);
  assert_non_null(strstr(err, "answer line 2 should start with \"2<TAB>\""));
  cm_buf_free(&out);
  cm_transform_destroy(t);
}

static void test_secret_env_names(void **st) {
  assert_true(cm_exec_env_is_secret("CHUNKMILL_NATS_PASSWORD=x"));
  assert_true(cm_exec_env_is_secret("CHUNKMILL_NATS_TOKEN=x"));
  assert_true(cm_exec_env_is_secret("CHUNKMILL_NATS_USER=alice"));
  assert_true(cm_exec_env_is_secret("CHUNKMILL_NATS_URL=nats://h:4222"));
  assert_true(cm_exec_env_is_secret("CHUNKMILL_LEASE_KEY_FILE=/k"));
  assert_true(cm_exec_env_is_secret("NATS_PASSWORD=x"));
  assert_true(cm_exec_env_is_secret("NATS_CREDS=/c"));
  assert_true(cm_exec_env_is_secret("NATS_URL=nats://alice:pw@h:4222"));
  assert_true(cm_exec_env_is_secret("NATS_URL=nats://tok@h:4222"));
  assert_false(cm_exec_env_is_secret("NATS_URL=nats://h:4222"));
  assert_false(cm_exec_env_is_secret("CHUNKMILL_TRANSFORM_ARG=x"));
  assert_false(cm_exec_env_is_secret("PATH=/bin"));
  assert_false(cm_exec_env_is_secret("MY_TOKEN=x")); /* not ours: the user's business */
}

/* Every kind of transform (built-in, exec:, plugin:) writes the received
 * chunk's header into the mapped chunk: the redo generation (docs/jobs.md
 * "Redo by version") and the lease unchanged, its own version label. */
static void test_header_redo_copied(void **st) {
  static const char plugin[] = "plugin:" CM_PLUGIN_UPPER;
  const char *const specs[] = {"identity", "fullname", "burn:2", "sleep:1", "exec:cat", plugin};
  const char *in = "{\"job\":\"j\",\"index\":9,\"attempt\":4,\"redo\":3,\"mapper\":\"m1\","
                   "\"lease\":\"00ff00ff00ff00ff00ff00ff00ff00ff\",\"version\":\"v1\","
                   "\"data\":[{\"uuid\":\"u\",\"fn\":\"ada\",\"ln\":\"x\"},{\"fn\":\"b\"}]}";
  cm_transform_opts_t o = {.arg = "fn"};
  (void)st;
  for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
    cm_transform_t *t = NULL;
    cm_buf_t out;
    cm_chunk_view_t v;
    char err[256] = "";
    assert_int_equal(cm_transform_create_ex(&t, specs[k], &o, err, sizeof err), 0);
    assert_int_equal(cm_transform_set_version(t, "v2", err, sizeof err), 0);
    cm_buf_init(&out, OUT_MAX);
    int rc = cm_transform_chunk(t, in, strlen(in), &out, NULL, err, sizeof err);
    if (rc != 0) print_error("%s: %s\n", specs[k], err);
    assert_int_equal(rc, 0);
    assert_int_equal(cm_chunk_peek(out.data, out.len, &v, err, sizeof err), 0);
    if (v.hdr.redo != 3) print_error("%s: %s\n", specs[k], out.data);
    assert_int_equal(v.hdr.redo, 3);
    assert_int_equal(v.hdr.index, 9);
    assert_int_equal(v.hdr.attempt, 4);
    assert_string_equal(v.hdr.mapper, "m1");
    assert_string_equal(v.hdr.lease, "00ff00ff00ff00ff00ff00ff00ff00ff");
    assert_string_equal(v.hdr.version, "v2");
    cm_buf_free(&out);
    cm_transform_destroy(t);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sed_uppercase),
      cmocka_unit_test(test_errors_are_dead_letters),
      cmocka_unit_test(test_crash_and_hang_fail_then_recover),
      cmocka_unit_test(test_env_cwd_arg_and_counters),
      cmocka_unit_test(test_bad_specs),
      cmocka_unit_test(test_plugin_upper),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_stray_output_between_chunks),
      cmocka_unit_test(test_settle_catches_banner),
      cmocka_unit_test(test_chunk_framing),
      cmocka_unit_test(test_stdout_closed_early),
      cmocka_unit_test(test_tagged_framing),
      cmocka_unit_test(test_secret_env_names),
      cmocka_unit_test(test_header_redo_copied),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
