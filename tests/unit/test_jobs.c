/* test_jobs.c - the job registry (fetcher/job.c, jobs.h) and the job spec
 * (fetcher/jobspec.c), on real ledger files: state changes stored before
 * they return and kept by a restart, what a paused or cancelled job hands
 * out, redo and replay, the job object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka after the headers it needs */
#include <cmocka.h>

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "jobspec.h"
#include "ledger.h"
#include "tmpdir.h"

static char g_dir[CM_TEST_PATH_MAX];
static int g_seq;

static int setup(void **state) {
  (void)state;
  cm_test_mkdtemp(g_dir, sizeof g_dir, "cm-test-jobs");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return cm_test_rmtree(g_dir) == 0 ? 0 : -1;
}

typedef struct {
  char path[300];
  cm_ledger_t *root;
  cm_jobs_t *r;
} env_t;

static void env_open(env_t *e, bool new_file) {
  char err[512];
  if (new_file) snprintf(e->path, sizeof e->path, "%s/l%d.db", g_dir, ++g_seq);
  assert_int_equal(cm_ledger_open(&e->root, e->path, err, sizeof err), 0);
  cm_jobs_cfg_t cfg = {.ledger = e->root, .max_deliver = 2, .serve = true};
  assert_int_equal(cm_jobs_create(&e->r, &cfg), 0);
}

static void env_close(env_t *e) {
  cm_jobs_destroy(e->r);
  cm_ledger_close(e->root);
  e->r = NULL;
  e->root = NULL;
}

static int64_t q_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int64_t v = -999;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static cm_jobspec_t gen_spec(const char *name, uint64_t records) {
  cm_jobspec_t s;
  cm_jobspec_defaults(&s);
  snprintf(s.job, sizeof s.job, "%s", name);
  s.source.spec = "gen:users";
  s.source.records = records;
  return s;
}

static cm_job_t *submit(env_t *e, const char *name, uint64_t records) {
  cm_jobspec_t s = gen_spec(name, records);
  cm_job_t *j = NULL;
  char err[512] = "";
  int rc = cm_jobs_submit(e->r, &s, &j, err, sizeof err);
  if (rc != 0) fail_msg("submit %s: %d %s", name, rc, err);
  return j;
}

/* Leases and acks every chunk the job hands out now, with `version`. */
static int run_all(cm_job_t *j, const char *version) {
  uint64_t idx;
  uint32_t att;
  int n = 0;
  cm_ledger_t *l = cm_job_ledger(j);
  while (cm_job_next_chunk(j, 0, &idx) == 1) {
    assert_int_equal(cm_ledger_lease(l, idx, "m", 1000, &att), 0);
    assert_int_equal(cm_ledger_ack_v(l, idx, att, 100, version, cm_ledger_chunk_redo(l, idx)),
                     1);
    n++;
  }
  return n;
}

static void json_has(cm_job_t *j, const char *want) {
  cm_buf_t b;
  cm_buf_init(&b, 1 << 20);
  assert_int_equal(cm_job_json(j, &b), 0);
  assert_int_equal(cm_buf_append(&b, "", 1), 0);
  if (!strstr(b.data, want)) fail_msg("job object %s has no %s", b.data, want);
  cm_buf_free(&b);
}

static void test_submit_and_states(void **state) {
  (void)state;
  env_t e;
  char err[512];
  uint64_t idx;
  env_open(&e, true);
  cm_job_t *a = submit(&e, "a", 1000), *b = submit(&e, "b", 500);
  assert_int_equal(cm_jobs_count(e.r), 2);
  assert_ptr_equal(cm_jobs_find(e.r, "b"), b);
  assert_ptr_equal(cm_jobs_at(e.r, 0), a);
  assert_int_equal(cm_job_state(a), CM_JOB_RUNNING);
  assert_true(cm_job_runnable(a));
  json_has(a, "\"job\":\"a\",\"state\":\"running\",\"priority\":1,");
  json_has(a, "\"chunks\":{\"total\":10,\"done\":0,\"leased\":0,\"pending\":10,\"dead\":0}");
  json_has(a, "\"finished_at\":null,\"last_error\":null,\"redo\":null}");
  /* the name exists; a bad spec names its field; an unknown source says why */
  cm_jobspec_t s = gen_spec("a", 10);
  assert_int_equal(cm_jobs_submit(e.r, &s, NULL, err, sizeof err), -EEXIST);
  s = gen_spec("c", 10);
  s.source.chunk_size = 0;
  assert_int_equal(cm_jobs_submit(e.r, &s, NULL, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "chunk_size"));
  s = gen_spec("c", 10);
  s.source.spec = "ftp://x";
  assert_int_equal(cm_jobs_submit(e.r, &s, NULL, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "ftp://x"));
  s = gen_spec("bad name!", 10);
  assert_int_equal(cm_jobs_submit(e.r, &s, NULL, err, sizeof err), -EINVAL);
  assert_int_equal(cm_jobs_count(e.r), 2);

  /* pause: stored at once, nothing handed out */
  assert_int_equal(cm_job_pause(b, err, sizeof err), 0);
  assert_int_equal(q_int(e.path, "SELECT state FROM jobs WHERE name = 'b'"), CM_JOB_PAUSED);
  assert_false(cm_job_runnable(b));
  assert_int_equal(cm_job_next_chunk(b, 0, &idx), 0);
  assert_int_equal(cm_job_next_chunk(a, 0, &idx), 1);
  /* resume, cancel, and what a cancelled job refuses */
  assert_int_equal(cm_job_resume(b, err, sizeof err), 0);
  assert_int_equal(cm_job_next_chunk(b, 0, &idx), 1);
  assert_int_equal(idx, 0);
  assert_int_equal(cm_job_cancel(b, err, sizeof err), 0);
  assert_int_equal(q_int(e.path, "SELECT state FROM jobs WHERE name = 'b'"), CM_JOB_CANCELLED);
  assert_true(q_int(e.path, "SELECT finished_at > 0 FROM jobs WHERE name = 'b'") == 1);
  assert_int_equal(cm_job_next_chunk(b, 0, &idx), 0);
  assert_int_equal(cm_job_resume(b, err, sizeof err), -EPERM);
  assert_string_equal(err, "job b is cancelled");
  assert_int_equal(cm_job_pause(b, err, sizeof err), -EPERM);
  int n = -1;
  assert_int_equal(cm_job_replay_dead(b, &n, err, sizeof err), -EPERM);
  assert_int_equal(cm_job_pause(a, err, sizeof err), 0);
  env_close(&e);

  /* a restart keeps each state: paused stays paused, cancelled is not run */
  env_open(&e, false);
  assert_int_equal(cm_jobs_load(e.r, NULL, err, sizeof err), 2);
  a = cm_jobs_find(e.r, "a");
  b = cm_jobs_find(e.r, "b");
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(cm_job_state(a), CM_JOB_PAUSED);
  assert_int_equal(cm_job_state(b), CM_JOB_CANCELLED);
  assert_false(cm_job_runnable(a) || cm_job_runnable(b));
  assert_int_equal(cm_job_next_chunk(a, 0, &idx), 0);
  /* the chunk a created before the restart is handed out after resume */
  assert_int_equal(cm_job_resume(a, err, sizeof err), 0);
  assert_int_equal(cm_job_next_chunk(a, 0, &idx), 1);
  assert_int_equal(idx, 0);
  env_close(&e);
}

static void test_complete_redo_replay(void **state) {
  (void)state;
  env_t e;
  char err[512];
  int n = -1;
  uint64_t idx;
  uint32_t att;
  env_open(&e, true);
  cm_job_t *j = submit(&e, "r", 400);
  cm_ledger_t *l = cm_job_ledger(j);
  assert_int_equal(cm_job_next_chunk(j, 0, &idx), 1);
  assert_int_equal(cm_ledger_lease(l, idx, "m", 1000, &att), 0);
  assert_int_equal(cm_ledger_ack_v(l, idx, att, 100, "v1", 0), 1);
  /* chunk 1 dies (max_deliver 2 from the registry's default) */
  assert_int_equal(cm_job_next_chunk(j, 0, &idx), 1);
  assert_int_equal(idx, 1);
  for (int a = 0; a < 2; a++) {
    assert_int_equal(cm_ledger_lease(l, 1, "m", 1000, &att), 0);
    assert_int_equal(cm_ledger_release(l, 1, att, 0, "boom", cm_job_max_deliver(j)), a ? 2 : 1);
  }
  assert_int_equal(run_all(j, "v2"), 2);
  assert_int_equal(cm_job_settle(j), 1);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE_WITH_DEAD);
  assert_int_equal(cm_job_settle(j), 0);
  cm_buf_t b;
  cm_buf_init(&b, 1 << 20);
  assert_int_equal(cm_job_dead_json(j, 1000, &b), 0);
  assert_int_equal(cm_buf_append(&b, "", 1), 0);
  assert_string_equal(b.data, "{\"dead\":[{\"index\":1,\"attempts\":2,\"reason\":\"boom\"}]}");
  cm_buf_free(&b);
  json_has(j, "\"state\":\"complete_with_dead\"");

  /* redo by version: v1's chunk only; the job runs again, then completes */
  assert_int_equal(cm_job_redo(j, "", &n, err, sizeof err), -EINVAL);
  assert_int_equal(cm_job_redo(j, "nope", &n, err, sizeof err), 0);
  assert_int_equal(n, 0);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE_WITH_DEAD);
  assert_int_equal(cm_job_redo(j, "v1", &n, err, sizeof err), 0);
  assert_int_equal(n, 1);
  assert_int_equal(cm_job_state(j), CM_JOB_RUNNING);
  assert_int_equal(q_int(e.path, "SELECT state FROM jobs WHERE name = 'r'"), CM_JOB_RUNNING);
  json_has(j, "\"redo\":{\"version\":\"v1\",\"generation\":1,\"chunks\":1,\"done\":0}");
  assert_int_equal(cm_job_next_chunk(j, 0, &idx), 1);
  assert_int_equal(idx, 0);
  assert_int_equal(cm_ledger_chunk_redo(l, 0), 1);
  /* the wire chunk carries the generation */
  cm_buf_init(&b, 1 << 20);
  assert_int_equal(cm_ledger_lease(l, 0, "m", 1000, &att), 0);
  assert_int_equal(cm_job_build(j, 0, att, "m", NULL, &b), 0);
  assert_int_equal(cm_buf_append(&b, "", 1), 0);
  assert_non_null(strstr(b.data, "\"redo\":1"));
  cm_buf_free(&b);
  assert_int_equal(cm_ledger_ack_v(l, 0, att, 100, "v1", 0), 0); /* the old save: fenced */
  assert_int_equal(cm_ledger_ack_v(l, 0, att, 100, "v3", 1), 1);
  assert_int_equal(cm_job_settle(j), 1);
  json_has(j, "\"redo\":{\"version\":\"v1\",\"generation\":1,\"chunks\":1,\"done\":1}");

  /* replay-dead: the dead chunk is pending again, the job running */
  assert_int_equal(cm_job_replay_dead(j, &n, err, sizeof err), 0);
  assert_int_equal(n, 1);
  assert_int_equal(cm_job_state(j), CM_JOB_RUNNING);
  assert_int_equal(run_all(j, "v3"), 1);
  assert_int_equal(cm_job_settle(j), 1);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE);
  json_has(j, "\"records_saved\":400");
  env_close(&e);
}

static void no_wake(void *ud) { (void)ud; }
static void on_fatal(void *ud, const char *what) {
  (void)ud;
  fail_msg("fatal: %s", what);
}

/* cm_job_next_chunk, running the loop while a sequential read (or a
 * re-read) is in flight. */
static int seq_next(env_t *e, uv_loop_t *loop, cm_job_t *j, uint64_t *idx) {
  for (int spins = 0; spins < 10000; spins++) {
    if (cm_job_next_chunk(j, 0, idx) == 1) return 1;
    if (!cm_jobs_reading(e->r)) {
      /* a landed read is taken by the next call */
      if (cm_job_next_chunk(j, 0, idx) == 1) return 1;
      if (!cm_jobs_reading(e->r)) return 0;
    }
    uv_run(loop, UV_RUN_ONCE);
  }
  fail_msg("a read never landed");
  return 0;
}

/* Leases, builds (into *wire when given: chunk `show`) and acks every
 * chunk the job hands out, with `version`. */
static int seq_run(env_t *e, uv_loop_t *loop, cm_job_t *j, const char *version, uint64_t show,
                   cm_buf_t *wire) {
  uint64_t idx;
  uint32_t att;
  int n = 0;
  cm_ledger_t *l = cm_job_ledger(j);
  cm_buf_t b;
  cm_buf_init(&b, 1 << 20);
  while (seq_next(e, loop, j, &idx) == 1) {
    assert_int_equal(cm_ledger_lease(l, idx, "m", 1000, &att), 0);
    assert_int_equal(cm_job_build(j, idx, att, "m", NULL, &b), 0);
    if (wire && idx == show) {
      cm_buf_reset(wire);
      assert_int_equal(cm_buf_append(wire, b.data, b.len), 0);
      assert_int_equal(cm_buf_append(wire, "", 1), 0);
    }
    assert_int_equal(cm_ledger_ack_v(l, idx, att, 2, version, cm_ledger_chunk_redo(l, idx)), 1);
    n++;
  }
  cm_buf_free(&b);
  return n;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static cm_job_t *submit_file(env_t *e, const char *name, const char *path, uint32_t chunk) {
  char spec[420];
  snprintf(spec, sizeof spec, "file:%s", path);
  cm_jobspec_t s = gen_spec(name, 0);
  s.source.spec = spec;
  s.source.chunk_size = chunk;
  cm_job_t *j = NULL;
  char err[512] = "";
  if (cm_jobs_submit(e->r, &s, &j, err, sizeof err) != 0) fail_msg("submit %s: %s", name, err);
  return j;
}

/* Redo of a file: job: every chunk re-read from its stored position and
 * sent again (same records, the new generation); once the file changed,
 * the changed chunk dies with the reason and the others are redone. */
static void test_sequential_redo(void **state) {
  (void)state;
  env_t e;
  uv_loop_t loop;
  char err[512], src[400];
  int n = -1;
  cm_buf_t wire, dead;
  assert_int_equal(uv_loop_init(&loop), 0);
  env_open(&e, true);
  cm_jobs_bind(e.r, &loop, NULL, no_wake, on_fatal, NULL, NULL);
  snprintf(src, sizeof src, "%s/redo.ndjson", g_dir);
  write_file(src, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\nnot json\n{\"a\":5}\n");
  cm_job_t *j = submit_file(&e, "f", src, 2);
  cm_buf_init(&wire, 1 << 20);
  assert_int_equal(seq_run(&e, &loop, j, "v1", 1, &wire), 3);
  assert_non_null(strstr(wire.data, "\"data\":[{\"a\":3}],\"dead\":[{\"line\":4"));
  assert_int_equal(cm_job_settle(j), 1);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE);
  /* every chunk row has its origin and digest; no payload is kept */
  assert_int_equal(q_int(e.path, "SELECT count(*) FROM chunks WHERE job = 'f' AND "
                                 "length(digest) = 32 AND src_pos IS NOT NULL"),
                   3);
  assert_int_equal(q_int(e.path, "SELECT src_pos FROM chunks WHERE job = 'f' AND idx = 1"), 16);
  assert_int_equal(q_int(e.path, "SELECT src_line FROM chunks WHERE job = 'f' AND idx = 2"), 4);
  assert_int_equal(q_int(e.path, "SELECT count(*) FROM payloads"), 0);

  assert_int_equal(cm_job_redo(j, "v1", &n, err, sizeof err), 0);
  assert_int_equal(n, 3);
  assert_int_equal(cm_job_state(j), CM_JOB_RUNNING);
  /* a restart before anything is re-read: the redone chunks have no
   * payload in the ledger, and are re-read after the restart too */
  env_close(&e);
  env_open(&e, false);
  cm_jobs_bind(e.r, &loop, NULL, no_wake, on_fatal, NULL, NULL);
  assert_int_equal(cm_jobs_load(e.r, NULL, err, sizeof err), 1);
  j = cm_jobs_find(e.r, "f");
  assert_non_null(j);
  assert_int_equal(cm_job_state(j), CM_JOB_RUNNING);
  cm_buf_reset(&wire);
  assert_int_equal(seq_run(&e, &loop, j, "v2", 1, &wire), 3);
  /* the same records (and dead letter) as the first time, generation 1 */
  assert_non_null(strstr(wire.data, "\"redo\":1"));
  assert_non_null(strstr(wire.data, "\"data\":[{\"a\":3}],\"dead\":[{\"line\":4"));
  assert_int_equal(cm_job_settle(j), 1);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE);
  assert_int_equal(q_int(e.path, "SELECT count(*) FROM chunks WHERE version = 'v2'"), 3);
  json_has(j, "\"redo\":{\"version\":\"v1\",\"generation\":1,\"chunks\":3,\"done\":3}");

  /* chunk 1's bytes change (same length, so the offsets stay) */
  write_file(src, "{\"a\":1}\n{\"a\":2}\n{\"a\":9}\nnot json\n{\"a\":5}\n");
  assert_int_equal(cm_job_redo(j, "v2", &n, err, sizeof err), 0);
  assert_int_equal(n, 3);
  assert_int_equal(seq_run(&e, &loop, j, "v3", 0, NULL), 2);
  assert_int_equal(cm_job_settle(j), 1);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE_WITH_DEAD);
  cm_buf_init(&dead, 1 << 16);
  assert_int_equal(cm_job_dead_json(j, 1000, &dead), 0);
  assert_int_equal(cm_buf_append(&dead, "", 1), 0);
  assert_string_equal(dead.data, "{\"dead\":[{\"index\":1,\"attempts\":2,\"reason\":\"source "
                                 "changed since the chunk was first read (digest mismatch)\"}]}");
  assert_int_equal(q_int(e.path, "SELECT count(*) FROM chunks WHERE version = 'v3'"), 2);
  assert_int_equal(q_int(e.path, "SELECT count(*) FROM chunks WHERE job = 'f' AND state = 3"), 1);
  /* the file restored: replay-dead re-reads it and it is sent */
  write_file(src, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\nnot json\n{\"a\":5}\n");
  assert_int_equal(cm_job_replay_dead(j, &n, err, sizeof err), 0);
  assert_int_equal(n, 1);
  assert_int_equal(seq_run(&e, &loop, j, "v3", 0, NULL), 1);
  assert_int_equal(cm_job_settle(j), 1);
  assert_int_equal(cm_job_state(j), CM_JOB_COMPLETE);

  /* chunks written by an older fetcher (no origin): redo refused, naming
   * how many */
  cm_job_t *o = submit_file(&e, "old", src, 2);
  assert_int_equal(seq_run(&e, &loop, o, "v1", 0, NULL), 3);
  assert_int_equal(cm_ledger_flush(cm_job_ledger(o)), 0);
  {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(e.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE chunks SET digest = NULL, src_pos = NULL "
                                  "WHERE job = 'old' AND idx < 2",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
  }
  assert_int_equal(cm_job_settle(o), 1);
  assert_int_equal(cm_job_redo(o, "v1", &n, err, sizeof err), -EPERM);
  assert_non_null(strstr(err, "2 chunks saved by version v1"));
  assert_int_equal(cm_job_state(o), CM_JOB_COMPLETE);
  json_has(o, "\"chunks\":{\"total\":3,");
  cm_buf_free(&wire);
  cm_buf_free(&dead);
  env_close(&e);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_jobspec_json(void **state) {
  (void)state;
  cm_jobspec_store_t st;
  char err[256];
  const char *body = "{\"job\":\"x\",\"source\":\"https://api/x?token=abc\",\"chunk_size\":7,"
                     "\"priority\":9,\"http\":{\"next_field\":\"links.next\",\"pages\":3,"
                     "\"header\":\"Authorization: Bearer s3cret\",\"follow_redirects\":true}}";
  assert_int_equal(cm_jobspec_parse(&st, body, strlen(body), err, sizeof err), 0);
  assert_string_equal(st.spec.job, "x");
  assert_int_equal(st.spec.source.chunk_size, 7);
  assert_int_equal(st.spec.priority, 9);
  assert_int_equal(st.spec.source.records, 100000); /* default */
  assert_string_equal(st.spec.source.http_page_param, "page");
  assert_string_equal(st.spec.source.http_next_field, "links.next");
  assert_true(st.spec.source.http_follow_redirects);
  cm_buf_t b;
  cm_buf_init(&b, 1 << 16);
  assert_int_equal(cm_jobspec_to_json(&st.spec, &b), 0);
  assert_int_equal(cm_buf_append(&b, "", 1), 0);
  /* an inline header value is a secret: never stored */
  assert_null(strstr(b.data, "s3cret"));
  cm_jobspec_store_t back;
  assert_int_equal(cm_jobspec_parse(&back, b.data, b.len - 1, err, sizeof err), 0);
  assert_int_equal(back.spec.source.http_pages, 3);
  assert_string_equal(back.spec.source.http_next_field, "links.next");
  assert_null(back.spec.source.http_header);
  cm_jobspec_free(&back);
  cm_buf_free(&b);
  cm_jobspec_free(&st);
  /* an @FILE header is kept */
  const char *h = "{\"job\":\"y\",\"source\":\"gen:users\",\"http\":{\"header\":\"@/run/h\"}}";
  assert_int_equal(cm_jobspec_parse(&st, h, strlen(h), err, sizeof err), 0);
  cm_buf_init(&b, 1 << 16);
  assert_int_equal(cm_jobspec_to_json(&st.spec, &b), 0);
  assert_int_equal(cm_buf_append(&b, "", 1), 0);
  assert_non_null(strstr(b.data, "\"header\":\"@/run/h\""));
  cm_buf_free(&b);
  cm_jobspec_free(&st);
  /* credentials in the source URL are never stored: the stored spec says
   * it was redacted, so a restart does not try the URL without them */
  const char *u = "{\"job\":\"z\",\"source\":\"https://al:PW1@api.example/x?api_key=K2&page=1\"}";
  assert_int_equal(cm_jobspec_parse(&st, u, strlen(u), err, sizeof err), 0);
  assert_true(cm_jobspec_source_redacted(&st.spec));
  cm_buf_init(&b, 1 << 16);
  assert_int_equal(cm_jobspec_to_json(&st.spec, &b), 0);
  assert_int_equal(cm_buf_append(&b, "", 1), 0);
  assert_null(strstr(b.data, "PW1"));
  assert_null(strstr(b.data, "K2"));
  cm_jobspec_free(&st);
  assert_int_equal(cm_jobspec_parse(&st, b.data, b.len - 1, err, sizeof err), 0);
  assert_true(cm_jobspec_source_redacted(&st.spec));
  cm_buf_free(&b);
  cm_jobspec_free(&st);
  const char *clean = "{\"job\":\"z\",\"source\":\"https://api.example/x?page=1\"}";
  assert_int_equal(cm_jobspec_parse(&st, clean, strlen(clean), err, sizeof err), 0);
  assert_false(cm_jobspec_source_redacted(&st.spec));
  cm_jobspec_free(&st);
  /* refusals name the key */
  static const struct {
    const char *body, *err;
  } bad[] = {
      {"{\"job\":\"x\",\"source\":\"gen:users\",\"recrods\":5}", "unknown key \"recrods\""},
      {"{\"source\":\"gen:users\"}", "\"job\" is required"},
      {"{\"job\":\"x\"}", "\"source\" is required"},
      {"{\"job\":\"x\",\"source\":\"gen:users\",\"records\":-1}", "\"records\""},
      {"{\"job\":\"x\",\"source\":\"gen:users\",\"priority\":0}", "\"priority\" must be 1..1000"},
      {"{\"job\":\"x\",\"source\":\"gen:users\",\"http\":{\"pagez\":1}}", "\"http.pagez\""},
      {"{\"job\":\"x\",\"source\":\"gen:users\",\"http\":{\"retries\":\"5\"}}", "\"http.retries\""},
      {"[1]", "JSON object"},
      {"{\"job\":", "JSON object"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    assert_int_equal(cm_jobspec_parse(&st, bad[i].body, strlen(bad[i].body), err, sizeof err),
                     -EINVAL);
    if (!strstr(err, bad[i].err)) fail_msg("%s: error %s, want %s", bad[i].body, err, bad[i].err);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_submit_and_states),
      cmocka_unit_test(test_complete_redo_replay),
      cmocka_unit_test(test_sequential_redo),
      cmocka_unit_test(test_jobspec_json),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
