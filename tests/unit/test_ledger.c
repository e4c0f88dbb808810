/* test_ledger.c - the fetcher's chunk ledger (fetcher/ledger.c). */
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
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"
#include "tmpdir.h"

#define SRC "gen:users records=1000 seed=1 chunk=100"

static char g_dir[CM_TEST_PATH_MAX];
static int g_seq;

/* ---- commit counting --------------------------------------------------
 * An auto-extension runs for every connection this process opens; when
 * armed it installs a commit hook, so a test can count the transactions a
 * ledger handle commits without any hook in the ledger itself. */
static int g_commits;
static int g_arm_hook;

static int count_commit(void *ud) {
  (void)ud;
  g_commits++;
  return 0; /* let it commit */
}

static int hook_entry(sqlite3 *db, const char **errmsg, const void *api) {
  (void)errmsg;
  (void)api;
  if (g_arm_hook) sqlite3_commit_hook(db, count_commit, NULL);
  return SQLITE_OK;
}

static int setup(void **state) {
  (void)state;
  cm_test_mkdtemp(g_dir, sizeof g_dir, "cm-test-ledger");
  return sqlite3_auto_extension((void (*)(void))hook_entry) == SQLITE_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  sqlite3_reset_auto_extension();
  return cm_test_rmtree(g_dir) == 0 ? 0 : -1;
}

/* A fresh file name per call. */
static void new_path(char *out, size_t n) { snprintf(out, n, "%s/l%d.db", g_dir, ++g_seq); }

static cm_ledger_t *open_ledger(const char *path) {
  cm_ledger_t *l = NULL;
  char err[512];
  g_arm_hook = 1;
  int rc = cm_ledger_open(&l, path, err, sizeof err);
  g_arm_hook = 0;
  if (rc != 0) fail_msg("cm_ledger_open: %d %s", rc, err);
  return l;
}

static cm_ledger_t *open_job(const char *path, const char *job, cm_job_info_t *info) {
  cm_ledger_t *l = open_ledger(path);
  char err[512];
  cm_job_info_t tmp;
  int rc = cm_ledger_job_open(l, job, SRC, 100, info ? info : &tmp, err, sizeof err);
  if (rc != 0) fail_msg("cm_ledger_job_open: %d %s", rc, err);
  return l;
}

/* Reads one integer with an independent connection (what is on disk). */
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

static void q_exec(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

static void add_n(cm_ledger_t *l, uint64_t n) {
  cm_job_info_t in;
  cm_ledger_info(l, &in);
  for (uint64_t i = 0; i < n; i++)
    assert_int_equal(cm_ledger_add_chunk(l, in.next_index + i, NULL, 0, 0, 0, false), 0);
}

static void expect_state(cm_ledger_t *l, uint64_t idx, cm_chunk_state_t want, uint32_t want_att) {
  cm_chunk_state_t st = 99;
  uint32_t att = 99;
  assert_int_equal(cm_ledger_chunk_state(l, idx, &st, &att), 0);
  if (st != want || att != want_att)
    fail_msg("chunk %llu: state %d attempt %u, want %d attempt %u", (unsigned long long)idx, st,
             att, want, want_att);
}

/* ---- schema and jobs ---------------------------------------------------- */

static void test_open_creates_schema(void **state) {
  (void)state;
  char path[300];
  new_path(path, sizeof path);
  cm_ledger_t *l = open_ledger(path);
  assert_int_equal(q_int(path, "PRAGMA user_version"), CM_LEDGER_SCHEMA_VERSION);
  assert_int_equal(q_int(path, "SELECT count(*) FROM sqlite_schema WHERE name IN "
                               "('jobs','chunks','payloads','chunks_live')"),
                   4);
  sqlite3 *db;
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
  cm_ledger_close(l);
  /* reopening an up-to-date file changes nothing */
  l = open_ledger(path);
  cm_ledger_close(l);
  cm_ledger_close(NULL);
}

static void test_newer_schema_refused(void **state) {
  (void)state;
  char path[300], want[600], err[512];
  cm_ledger_t *l = (cm_ledger_t *)1;
  new_path(path, sizeof path);
  q_exec(path, "CREATE TABLE future(x); PRAGMA user_version = 99;");
  assert_int_equal(cm_ledger_open(&l, path, err, sizeof err), -EPROTO);
  assert_null(l);
  snprintf(want, sizeof want, "ledger %s has schema version 99, this fetcher supports up to 3",
           path);
  assert_string_equal(err, want);
  assert_int_equal(q_int(path, "PRAGMA user_version"), 99); /* untouched */
  assert_int_equal(q_int(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'jobs'"), 0);

  /* not a database at all */
  new_path(path, sizeof path);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  for (int i = 0; i < 100; i++) fputs("this is not sqlite ", f);
  fclose(f);
  assert_true(cm_ledger_open(&l, path, err, sizeof err) < 0);
  snprintf(want, sizeof want, "ledger %s: file is not a database", path);
  assert_string_equal(err, want);

  /* a directory that does not exist */
  assert_true(cm_ledger_open(&l, "/nonexistent-dir/x.db", err, sizeof err) < 0);
  assert_non_null(strstr(err, "ledger /nonexistent-dir/x.db: "));
}

static void test_job_mismatch_refused(void **state) {
  (void)state;
  char path[300], want[1024], err[1024];
  cm_job_info_t in;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j1", &in);
  assert_string_equal(in.name, "j1");
  assert_string_equal(in.source, SRC);
  assert_int_equal(in.chunk_size, 100);
  assert_int_equal(in.next_index, 0);
  assert_true(in.created_at > 1.6e9);
  cm_ledger_close(l);

  l = open_ledger(path);
  assert_int_equal(cm_ledger_job_open(l, "j1", "gen:users records=5 seed=1 chunk=100", 100, &in,
                                      err, sizeof err),
                   -EEXIST);
  snprintf(want, sizeof want,
           "job \"j1\" in ledger %s was created with source \"" SRC "\"; refusing to resume it "
           "with \"gen:users records=5 seed=1 chunk=100\"; use another --job or ledger",
           path);
  assert_string_equal(err, want);
  assert_int_equal(cm_ledger_job_open(l, "j1", SRC, 50, &in, err, sizeof err), -EEXIST);
  snprintf(want, sizeof want,
           "job \"j1\" in ledger %s was created with chunk size 100; refusing to resume it with "
           "chunk size 50; use another --job or ledger",
           path);
  assert_string_equal(err, want);
  /* nothing is usable after a refusal */
  assert_int_equal(cm_ledger_add_chunk(l, 0, NULL, 0, 0, 0, false), -EINVAL);
  /* the same parameters resume; another name is another job */
  assert_int_equal(cm_ledger_job_open(l, "j1", SRC, 100, &in, err, sizeof err), 0);
  add_n(l, 2);
  assert_int_equal(cm_ledger_job_open(l, "j2", "other", 10, &in, err, sizeof err), 0);
  assert_int_equal(in.next_index, 0);
  assert_int_equal(cm_ledger_job_open(l, "j1", SRC, 100, &in, err, sizeof err), 0);
  assert_int_equal(in.next_index, 2); /* switching jobs flushed j1 */
  assert_int_equal(cm_ledger_job_open(l, "", SRC, 100, &in, err, sizeof err), -EINVAL);
  cm_ledger_close(l);
  assert_int_equal(q_int(path, "SELECT count(*) FROM jobs"), 2);
}

/* ---- state machine ----------------------------------------------------- */

static void test_lease_ack_fencing(void **state) {
  (void)state;
  char path[300];
  uint64_t idx = 99;
  uint32_t att = 0;
  cm_job_info_t in;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  assert_int_equal(cm_ledger_next_due(l, 0, &idx), 0);
  assert_int_equal(cm_ledger_next_due_at(l), -1);
  add_n(l, 3);
  assert_int_equal(cm_ledger_pending_count(l), 3);
  expect_state(l, 0, CM_CHUNK_PENDING, 0);
  assert_int_equal(cm_ledger_next_due(l, 0, &idx), 1);
  assert_int_equal(idx, 0);

  assert_int_equal(cm_ledger_lease(l, 0, "m1", 1000, &att), 0);
  assert_int_equal(att, 1);
  expect_state(l, 0, CM_CHUNK_LEASED, 1);
  assert_int_equal(cm_ledger_lease(l, 0, "m2", 1000, &att), -EINVAL); /* not pending */
  assert_int_equal(cm_ledger_lease(l, 7, "m2", 1000, &att), -EINVAL); /* unknown */
  assert_int_equal(cm_ledger_leased_count(l), 1);
  assert_int_equal(cm_ledger_pending_count(l), 2);
  assert_int_equal(cm_ledger_next_due(l, 0, &idx), 1);
  assert_int_equal(idx, 1);

  /* fencing: a stale attempt can neither extend nor release */
  assert_int_equal(cm_ledger_extend(l, 0, 2, 5000), 0);
  assert_int_equal(cm_ledger_extend(l, 0, 1, 5000), 1);
  assert_int_equal(cm_ledger_extend(l, 1, 0, 5000), 0); /* not leased */
  assert_int_equal(cm_ledger_release(l, 0, 2, 0, "stale", 5), 0);
  assert_int_equal(cm_ledger_release(l, 1, 0, 0, "not leased", 5), 0);
  expect_state(l, 0, CM_CHUNK_LEASED, 1);
  /* the extension moved the deadline */
  assert_int_equal(cm_ledger_each_expired(l, 1000, NULL, NULL), 0);
  assert_int_equal(cm_ledger_each_expired(l, 5000, NULL, NULL), 1);

  /* release -> pending, lease again -> attempt 2 (a redelivery) */
  assert_int_equal(cm_ledger_release(l, 0, 1, 0, "nak", 5), 1);
  expect_state(l, 0, CM_CHUNK_PENDING, 1);
  assert_int_equal(cm_ledger_lease(l, 0, "m2", 1000, &att), 0);
  assert_int_equal(att, 2);
  cm_ledger_info(l, &in);
  assert_int_equal(in.redeliveries, 1);

  /* an ack of ANY attempt means saved: once 1, then 0 */
  assert_int_equal(cm_ledger_ack(l, 0, 1, 100), 1);
  expect_state(l, 0, CM_CHUNK_DONE, 2);
  assert_int_equal(cm_ledger_ack(l, 0, 2, 100), 0);
  assert_int_equal(cm_ledger_release(l, 0, 2, 0, "late", 5), 0);
  assert_int_equal(cm_ledger_ack(l, 55, 1, 100), 0); /* never created */
  /* an ack of a pending chunk (its slow mapper saved it after all) */
  assert_int_equal(cm_ledger_ack(l, 2, 0, 40), 1);
  cm_ledger_info(l, &in);
  assert_int_equal(in.done_chunks, 2);
  assert_int_equal(in.records_done, 140);
  assert_int_equal(cm_ledger_pending_count(l), 1);
  assert_int_equal(cm_ledger_leased_count(l), 0);
  assert_false(cm_ledger_job_complete(l));
  assert_int_equal(cm_ledger_flush(l), 0);
  /* done chunks are answered from disk once they left memory */
  expect_state(l, 0, CM_CHUNK_DONE, 2);
  assert_int_equal(cm_ledger_ack(l, 0, 9, 100), 0);
  assert_int_equal(cm_ledger_chunk_state(l, 3, NULL, NULL), -ENOENT);

  assert_int_equal(cm_ledger_ack(l, 1, 0, 60), 1);
  assert_false(cm_ledger_job_complete(l)); /* the source may have more */
  assert_int_equal(cm_ledger_set_source_done(l), 0);
  assert_true(cm_ledger_job_complete(l));
  assert_int_equal(cm_ledger_add_chunk(l, 3, NULL, 0, 0, 0, false), -EINVAL);
  cm_ledger_close(l);

  /* counters survived */
  l = open_job(path, "j", &in);
  assert_int_equal(in.done_chunks, 3);
  assert_int_equal(in.records_done, 200);
  assert_int_equal(in.redeliveries, 1);
  assert_true(in.source_done);
  assert_true(cm_ledger_job_complete(l));
  cm_ledger_close(l);
}

typedef struct seen_s {
  cm_ledger_t *l;
  int n;
  uint64_t idx[16];
  uint32_t att[16];
  char holder[16][16];
  int release_all_of_holder; /* from inside the callback */
} seen_t;

static void on_lease(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  seen_t *s = ud;
  assert_true(s->n < 16);
  s->idx[s->n] = index;
  s->att[s->n] = attempt;
  snprintf(s->holder[s->n], sizeof s->holder[0], "%s", holder);
  s->n++;
  if (s->release_all_of_holder) {
    /* what the dispatcher does when a mapper is gone: release every lease
     * it holds, including ones the walk has not reached yet */
    for (uint64_t i = 0; i < 10; i++) {
      cm_chunk_state_t st;
      uint32_t a;
      if (cm_ledger_chunk_state(s->l, i, &st, &a) == 0 && st == CM_CHUNK_LEASED)
        (void)cm_ledger_release(s->l, i, a, 0, "holder gone", 0);
    }
  } else {
    assert_int_equal(cm_ledger_release(s->l, index, attempt, 500, "ack wait", 0), 1);
  }
}

static void test_expiry_and_not_before(void **state) {
  (void)state;
  char path[300];
  uint64_t idx;
  uint32_t att;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  add_n(l, 6);
  /* deadlines: 0->300, 1->100, 2->200, 3->900, 4->100 */
  const int64_t dl[] = {300, 100, 200, 900, 100};
  for (uint64_t i = 0; i < 5; i++) assert_int_equal(cm_ledger_lease(l, i, "m1", dl[i], &att), 0);
  seen_t s = {.l = l};
  assert_int_equal(cm_ledger_each_expired(l, 99, on_lease, &s), 0);
  assert_int_equal(s.n, 0);
  assert_int_equal(cm_ledger_each_expired(l, 200, on_lease, &s), 3);
  assert_int_equal(s.n, 3);
  /* reported in index order, with attempt and holder */
  assert_int_equal(s.idx[0], 1);
  assert_int_equal(s.idx[1], 2);
  assert_int_equal(s.idx[2], 4);
  assert_int_equal(s.att[0], 1);
  assert_string_equal(s.holder[0], "m1");
  assert_int_equal(cm_ledger_leased_count(l), 2);
  assert_int_equal(cm_ledger_pending_count(l), 4);

  /* released with a retry time 500: only 5 is due before that */
  assert_int_equal(cm_ledger_next_due(l, 200, &idx), 1);
  assert_int_equal(idx, 5);
  assert_int_equal(cm_ledger_next_due_at(l), 500);
  assert_int_equal(cm_ledger_lease(l, 5, "m2", 10000, &att), 0);
  assert_int_equal(cm_ledger_next_due(l, 499, &idx), 0);
  assert_int_equal(cm_ledger_next_due(l, 500, &idx), 1);
  assert_int_equal(idx, 1); /* the lowest due index, not the earliest */
  assert_int_equal(cm_ledger_next_due_at(l), -1);

  /* releasing from inside the walk, including chunks not reached yet */
  s = (seen_t){.l = l, .release_all_of_holder = 1};
  assert_int_equal(cm_ledger_each_expired(l, 100000, on_lease, &s), 1);
  assert_int_equal(cm_ledger_leased_count(l), 0);
  assert_int_equal(cm_ledger_pending_count(l), 6);
  cm_ledger_close(l);
}

static void test_each_held(void **state) {
  (void)state;
  char path[300];
  uint32_t att;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  add_n(l, 6);
  const char *who[] = {"m1", "m2", "m1", "m2", "m1"};
  for (uint64_t i = 0; i < 5; i++) assert_int_equal(cm_ledger_lease(l, i, who[i], 1000, &att), 0);
  seen_t s = {.l = l};
  assert_int_equal(cm_ledger_each_held(l, "m1", on_lease, &s), 3);
  assert_int_equal(s.idx[0], 0);
  assert_int_equal(s.idx[1], 2);
  assert_int_equal(s.idx[2], 4);
  assert_int_equal(cm_ledger_each_held(l, "m1", NULL, NULL), 0);
  assert_int_equal(cm_ledger_each_held(l, "m2", NULL, NULL), 2);
  assert_int_equal(cm_ledger_each_held(l, "m3", NULL, NULL), 0);
  assert_int_equal(cm_ledger_leased_count(l), 2);
  cm_ledger_close(l);
}

static void test_max_deliver_dead_replay(void **state) {
  (void)state;
  char path[300], sql[200];
  uint32_t att;
  uint64_t idx;
  cm_job_info_t in;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  add_n(l, 2);
  assert_int_equal(cm_ledger_set_source_done(l), 0);
  /* max_deliver 3: the third failed lease kills the chunk */
  for (uint32_t a = 1; a <= 3; a++) {
    assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), 0);
    assert_int_equal(att, a);
    char why[32];
    snprintf(why, sizeof why, "boom %u", a);
    assert_int_equal(cm_ledger_release(l, 0, a, 0, why, 3), a < 3 ? 1 : 2);
  }
  expect_state(l, 0, CM_CHUNK_DEAD, 3);
  assert_int_equal(cm_ledger_next_due(l, 0, &idx), 1);
  assert_int_equal(idx, 1); /* a dead chunk is never due */
  assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), -EINVAL);
  cm_ledger_info(l, &in);
  assert_int_equal(in.dead_chunks, 1);
  assert_int_equal(in.redeliveries, 2);
  assert_int_equal(cm_ledger_ack(l, 1, 0, 5), 1);
  assert_true(cm_ledger_job_complete(l)); /* done + dead == all */
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(cm_ledger_memory_chunks(l), 0); /* dead ones live on disk only */
  snprintf(sql, sizeof sql, "SELECT state = 3 AND reason = 'boom 3' FROM chunks WHERE idx = 0");
  assert_int_equal(q_int(path, sql), 1);
  expect_state(l, 0, CM_CHUNK_DEAD, 3);

  /* replay: pending again, attempts continue, the budget starts over */
  assert_int_equal(cm_ledger_replay_dead(l), 1);
  assert_int_equal(cm_ledger_replay_dead(l), 0);
  cm_ledger_info(l, &in);
  assert_int_equal(in.dead_chunks, 0);
  assert_false(cm_ledger_job_complete(l));
  expect_state(l, 0, CM_CHUNK_PENDING, 3);
  for (uint32_t a = 4; a <= 6; a++) {
    assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), 0);
    assert_int_equal(att, a);
    assert_int_equal(cm_ledger_release(l, 0, a, 0, "again", 3), a < 6 ? 1 : 2);
  }
  expect_state(l, 0, CM_CHUNK_DEAD, 6);
  /* the budget survives a restart: replay, close, reopen, still 3 leases */
  assert_int_equal(cm_ledger_replay_dead(l), 1);
  cm_ledger_close(l);
  l = open_job(path, "j", &in);
  assert_int_equal(in.dead_chunks, 0);
  for (uint32_t a = 7; a <= 8; a++) {
    assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), 0);
    assert_int_equal(cm_ledger_release(l, 0, a, 0, "again", 3), 1);
  }
  assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), 0);
  assert_int_equal(att, 9);
  assert_int_equal(cm_ledger_release(l, 0, 9, 0, "again", 3), 2);
  /* a late ack of a dead chunk: it was saved after all (before and after
   * the dead state reached the disk) */
  assert_int_equal(cm_ledger_ack(l, 0, 2, 77), 1);
  cm_ledger_info(l, &in);
  assert_int_equal(in.dead_chunks, 0);
  assert_int_equal(in.done_chunks, 2);
  assert_int_equal(in.records_done, 82);
  assert_true(cm_ledger_job_complete(l));
  cm_ledger_close(l);

  new_path(path, sizeof path);
  l = open_job(path, "j", NULL);
  add_n(l, 1);
  assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_release(l, 0, 1, 0, "x", 1), 2);
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(cm_ledger_ack(l, 0, 1, 3), 1);
  expect_state(l, 0, CM_CHUNK_DONE, 1);
  cm_ledger_info(l, &in);
  assert_int_equal(in.dead_chunks, 0);
  /* max_deliver 0: no limit */
  cm_ledger_close(l);
}

/* ---- persistence --------------------------------------------------------- */

static void test_write_behind_one_transaction(void **state) {
  (void)state;
  char path[300];
  uint32_t att;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  assert_int_equal(cm_ledger_unflushed(l), 0);
  for (uint64_t i = 0; i < 50; i++) {
    char p[32];
    int n = snprintf(p, sizeof p, "{\"i\":%llu}", (unsigned long long)i);
    assert_int_equal(cm_ledger_add_chunk(l, i, p, (size_t)n, 100 * (int64_t)(i + 1), i + 1, false),
                     0);
  }
  assert_int_equal(cm_ledger_unflushed(l), 51); /* 50 chunks + the job */
  /* nothing on disk yet */
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks"), 0);
  assert_int_equal(q_int(path, "SELECT next_index FROM jobs"), 0);

  int before = g_commits;
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(g_commits - before, 1); /* everything in ONE transaction */
  assert_int_equal(cm_ledger_unflushed(l), 0);
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks WHERE state = 0"), 50);
  assert_int_equal(q_int(path, "SELECT count(*) FROM payloads"), 50);
  assert_int_equal(q_int(path, "SELECT next_index FROM jobs"), 50);
  assert_int_equal(q_int(path, "SELECT source_pos FROM jobs"), 5000);
  assert_int_equal(q_int(path, "SELECT source_line FROM jobs"), 50);

  /* several changes of one chunk are coalesced into one row write */
  assert_int_equal(cm_ledger_lease(l, 3, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_release(l, 3, 1, 0, "nak", 5), 1);
  assert_int_equal(cm_ledger_lease(l, 3, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_unflushed(l), 2);
  assert_int_equal(cm_ledger_ack(l, 4, 0, 10), 1);
  assert_int_equal(cm_ledger_unflushed(l), 3);
  assert_int_equal(q_int(path, "SELECT state FROM chunks WHERE idx = 3"), 0);
  /* a flush with nothing queued writes nothing */
  before = g_commits;
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(g_commits - before, 1);
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(g_commits - before, 1);
  assert_int_equal(q_int(path, "SELECT state * 10 + attempt FROM chunks WHERE idx = 3"), 12);
  assert_int_equal(q_int(path, "SELECT holder = 'm' FROM chunks WHERE idx = 3"), 1);
  /* a done chunk's payload is dropped */
  assert_int_equal(q_int(path, "SELECT count(*) FROM payloads WHERE idx = 4"), 0);
  assert_int_equal(q_int(path, "SELECT count(*) FROM payloads"), 49);
  assert_int_equal(q_int(path, "SELECT done_chunks * 1000 + records_done FROM jobs"), 1010);
  cm_ledger_close(l);
}

static void test_payload(void **state) {
  (void)state;
  char path[300];
  cm_buf_t b;
  uint32_t att;
  cm_buf_init(&b, 1 << 20);
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  static char big[200000];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (char)('a' + i % 26);
  assert_int_equal(cm_ledger_add_chunk(l, 0, "{\"a\":1},{\"a\":2}", 15, 15, 2, false), 0);
  assert_int_equal(cm_ledger_add_chunk(l, 1, NULL, 0, 15, 2, false), 0);
  assert_int_equal(cm_ledger_add_chunk(l, 2, big, sizeof big, 15, 2, true), 0);
  /* from memory before the flush */
  assert_int_equal(cm_ledger_payload(l, 0, &b), 0);
  assert_string_equal(b.data, "{\"a\":1},{\"a\":2}");
  assert_int_equal(cm_ledger_payload(l, 1, &b), -ENOENT);
  assert_int_equal(cm_ledger_flush(l), 0);
  /* from disk after it; appended to what is there */
  assert_int_equal(cm_buf_append(&b, "|", 1), 0);
  assert_int_equal(cm_ledger_payload(l, 0, &b), 0);
  assert_string_equal(b.data, "{\"a\":1},{\"a\":2}|{\"a\":1},{\"a\":2}");
  cm_buf_reset(&b);
  assert_int_equal(cm_ledger_payload(l, 2, &b), 0);
  assert_int_equal(b.len, sizeof big);
  assert_memory_equal(b.data, big, sizeof big);
  assert_int_equal(cm_ledger_payload(l, 1, &b), -ENOENT);
  assert_int_equal(cm_ledger_payload(l, 9, &b), -ENOENT);
  /* a buffer too small is an error, not a truncation */
  cm_buf_t small;
  cm_buf_init(&small, 100);
  assert_int_equal(cm_ledger_payload(l, 2, &small), -E2BIG);
  cm_buf_free(&small);
  /* done: gone */
  assert_int_equal(cm_ledger_lease(l, 0, "m", 1, &att), 0);
  assert_int_equal(cm_ledger_ack(l, 0, att, 2), 1);
  assert_int_equal(cm_ledger_payload(l, 0, &b), -ENOENT);
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(cm_ledger_payload(l, 0, &b), -ENOENT);
  cm_ledger_close(l);
  /* survives a restart */
  l = open_job(path, "j", NULL);
  cm_buf_reset(&b);
  assert_int_equal(cm_ledger_payload(l, 2, &b), 0);
  assert_int_equal(b.len, sizeof big);
  cm_ledger_close(l);
  cm_buf_free(&b);
}

/* A crash: a child process changes the ledger and exits without closing
 * it. What it flushed survives; its leases come back pending; what it did
 * not flush is as if it never happened (a redelivery, never a loss). */
static void test_crash_recovery(void **state) {
  (void)state;
  char path[300];
  new_path(path, sizeof path);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    cm_ledger_t *l = NULL;
    char err[512];
    cm_job_info_t in;
    uint32_t att;
    int ok = cm_ledger_open(&l, path, err, sizeof err) == 0 &&
             cm_ledger_job_open(l, "j", SRC, 100, &in, err, sizeof err) == 0;
    for (uint64_t i = 0; ok && i < 10; i++)
      ok = cm_ledger_add_chunk(l, i, "[1]", 3, (int64_t)(i + 1) * 3, i + 1, false) == 0;
    for (uint64_t i = 0; ok && i < 5; i++) ok = cm_ledger_lease(l, i, "m1", 1000, &att) == 0;
    /* chunk 2 is on its second attempt */
    ok = ok && cm_ledger_release(l, 2, 1, 0, "nak", 5) == 1 &&
         cm_ledger_lease(l, 2, "m1", 1000, &att) == 0 && att == 2;
    ok = ok && cm_ledger_ack(l, 0, 1, 100) == 1 && cm_ledger_flush(l) == 0;
    /* not flushed: */
    ok = ok && cm_ledger_lease(l, 5, "m1", 1000, &att) == 0 && cm_ledger_ack(l, 1, 1, 100) == 1 &&
         cm_ledger_add_chunk(l, 10, "[2]", 3, 33, 11, true) == 0;
    _exit(ok ? 0 : 1); /* no close, no flush: like a kill -9 */
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);

  /* What a second handle sees on disk before any recovery */
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks WHERE state = 1"), 4);

  cm_job_info_t in;
  cm_ledger_t *l = open_job(path, "j", &in);
  assert_int_equal(in.next_index, 10); /* chunk 10 was never written */
  assert_false(in.source_done);
  assert_int_equal(in.source_pos, 30);
  assert_int_equal(in.source_line, 10);
  assert_int_equal(in.done_chunks, 1);
  assert_int_equal(in.records_done, 100);
  assert_int_equal(in.redeliveries, 1);
  expect_state(l, 0, CM_CHUNK_DONE, 1);
  expect_state(l, 1, CM_CHUNK_PENDING, 1); /* its ack was lost: redelivered */
  expect_state(l, 2, CM_CHUNK_PENDING, 2);
  expect_state(l, 4, CM_CHUNK_PENDING, 1);
  expect_state(l, 5, CM_CHUNK_PENDING, 0); /* its lease was lost */
  assert_int_equal(cm_ledger_leased_count(l), 0);
  assert_int_equal(cm_ledger_pending_count(l), 9);
  assert_int_equal(cm_ledger_chunk_state(l, 10, NULL, NULL), -ENOENT);
  /* recovery was written at once */
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks WHERE state = 1"), 0);
  /* recovered chunks are due at once, lowest first; attempts continue */
  uint64_t idx;
  uint32_t att;
  assert_int_equal(cm_ledger_next_due(l, 0, &idx), 1);
  assert_int_equal(idx, 1);
  assert_int_equal(cm_ledger_lease(l, 2, "m9", 5, &att), 0);
  assert_int_equal(att, 3);
  cm_buf_t b;
  cm_buf_init(&b, 1024);
  assert_int_equal(cm_ledger_payload(l, 9, &b), 0);
  assert_string_equal(b.data, "[1]");
  cm_buf_free(&b);
  /* the source resumes where the flushed state says */
  assert_int_equal(cm_ledger_add_chunk(l, 10, "[3]", 3, 33, 11, true), 0);
  cm_ledger_close(l);

  /* a second handle after a clean close: everything is there */
  l = open_job(path, "j", &in);
  assert_int_equal(in.next_index, 11);
  assert_true(in.source_done);
  expect_state(l, 2, CM_CHUNK_PENDING, 3);
  cm_ledger_close(l);
}

/* Memory follows the window, not the job: 20k chunks through the ledger
 * leave nothing in memory once done and flushed. */
static void test_memory_bounded(void **state) {
  (void)state;
  char path[300];
  uint32_t att;
  uint64_t idx;
  cm_job_info_t in;
  const uint64_t N = 20000;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "big", NULL);
  size_t peak = 0;
  for (uint64_t i = 0; i < N; i++) {
    assert_int_equal(cm_ledger_add_chunk(l, i, NULL, 0, 0, 0, i == N - 1), 0);
    assert_int_equal(cm_ledger_next_due(l, 0, &idx), 1);
    assert_int_equal(idx, i);
    assert_int_equal(cm_ledger_lease(l, idx, "m", 10, &att), 0);
    assert_int_equal(cm_ledger_ack(l, idx, att, 100), 1);
    if (i % 500 == 499) assert_int_equal(cm_ledger_flush(l), 0);
    size_t m = cm_ledger_memory_chunks(l);
    if (m > peak) peak = m;
  }
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_true(peak <= 500);
  assert_int_equal(cm_ledger_memory_chunks(l), 0);
  assert_int_equal(cm_ledger_pending_count(l), 0);
  assert_int_equal(cm_ledger_leased_count(l), 0);
  assert_true(cm_ledger_job_complete(l));
  cm_ledger_info(l, &in);
  assert_int_equal(in.done_chunks, N);
  assert_int_equal(in.records_done, N * 100);
  cm_ledger_close(l);
  /* and on reopen only the (zero) live chunks are loaded */
  l = open_job(path, "big", &in);
  assert_int_equal(cm_ledger_memory_chunks(l), 0);
  assert_true(cm_ledger_job_complete(l));
  cm_ledger_close(l);
}

/* ---- a randomized comparison against a trivial model -------------------- */

typedef struct model_s {
  int state;
  uint32_t attempt, base;
  int64_t nb, deadline;
} model_t;

static uint64_t rnd_state = 12345;
static uint64_t rnd(uint64_t n) {
  rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (rnd_state >> 33) % n;
}

static void test_random_against_model(void **state) {
  (void)state;
  char path[300];
  enum { MAXC = 3000, MAXD = 4 };
  model_t *m = calloc(MAXC, sizeof *m);
  uint64_t n = 0, idx;
  int64_t now = 0;
  uint32_t att;
  assert_non_null(m);
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "r", NULL);
  for (int step = 0; step < 25000; step++) {
    uint64_t op = rnd(100);
    now += (int64_t)rnd(3);
    if (op < 12 && n < MAXC) { /* add */
      assert_int_equal(cm_ledger_add_chunk(l, n, NULL, 0, 0, 0, false), 0);
      m[n++] = (model_t){0};
    } else if (op < 40) { /* lease the next due */
      uint64_t want = UINT64_MAX;
      for (uint64_t i = 0; i < n; i++)
        if (m[i].state == CM_CHUNK_PENDING && m[i].nb <= now) {
          want = i;
          break;
        }
      int got = cm_ledger_next_due(l, now, &idx);
      assert_int_equal(got, want != UINT64_MAX);
      if (!got) continue;
      assert_int_equal(idx, want);
      int64_t dl = now + (int64_t)rnd(50);
      assert_int_equal(cm_ledger_lease(l, idx, rnd(2) ? "a" : "b", dl, &att), 0);
      m[idx].attempt++;
      assert_int_equal(att, m[idx].attempt);
      m[idx].state = CM_CHUNK_LEASED;
      m[idx].deadline = dl;
    } else if (op < 55 && n) { /* ack, any attempt */
      uint64_t i = rnd(n);
      int want = m[i].state != CM_CHUNK_DONE;
      assert_int_equal(cm_ledger_ack(l, i, (uint32_t)rnd(5), 1), want);
      m[i].state = CM_CHUNK_DONE;
    } else if (op < 75 && n) { /* release, sometimes with a stale attempt */
      uint64_t i = rnd(n);
      uint32_t a = rnd(4) ? m[i].attempt : m[i].attempt + 1;
      int64_t nb = rnd(2) ? 0 : now + (int64_t)rnd(30);
      int want = 0;
      if (m[i].state == CM_CHUNK_LEASED && a == m[i].attempt) {
        if (m[i].attempt - m[i].base >= MAXD) {
          want = 2;
          m[i].state = CM_CHUNK_DEAD;
        } else {
          want = 1;
          m[i].state = CM_CHUNK_PENDING;
          m[i].nb = nb;
        }
      }
      assert_int_equal(cm_ledger_release(l, i, a, nb, "r", MAXD), want);
    } else if (op < 85) { /* expire */
      int want = 0;
      for (uint64_t i = 0; i < n; i++)
        if (m[i].state == CM_CHUNK_LEASED && m[i].deadline <= now) want++;
      assert_int_equal(cm_ledger_each_expired(l, now, NULL, NULL), want);
    } else if (op < 93) {
      assert_int_equal(cm_ledger_flush(l), 0);
    } else if (op < 94) { /* replay */
      int want = 0;
      for (uint64_t i = 0; i < n; i++)
        if (m[i].state == CM_CHUNK_DEAD) {
          want++;
          m[i] = (model_t){.state = CM_CHUNK_PENDING, .attempt = m[i].attempt,
                           .base = m[i].attempt};
        }
      assert_int_equal(cm_ledger_replay_dead(l), want);
    } else if (op < 95 && rnd(8) == 0) { /* restart (rarer: a close syncs the file) */
      cm_ledger_close(l);
      l = open_job(path, "r", NULL);
      for (uint64_t i = 0; i < n; i++)
        if (m[i].state == CM_CHUNK_LEASED) m[i] = (model_t){.attempt = m[i].attempt,
                                                            .base = m[i].base};
    }
    /* invariants after every step */
    size_t pend = 0, leased = 0;
    for (uint64_t i = 0; i < n; i++) {
      pend += m[i].state == CM_CHUNK_PENDING;
      leased += m[i].state == CM_CHUNK_LEASED;
    }
    assert_int_equal(cm_ledger_pending_count(l), pend);
    assert_int_equal(cm_ledger_leased_count(l), leased);
    if (n) {
      uint64_t i = rnd(n);
      expect_state(l, i, (cm_chunk_state_t)m[i].state, m[i].attempt);
    }
  }
  cm_ledger_close(l);
  free(m);
}


/* ---- oldest pending age --------------------------------------------------
 * chunkmill_oldest_pending_age_seconds used to be the fetcher's uptime
 * whenever anything was waiting. It is the age of the chunk that has been
 * pending longest, from the moment it became pending. */
static int64_t g_clock;
static int64_t fake_clock(void *ud) {
  (void)ud;
  return g_clock;
}

static void test_oldest_pending_age(void **state) {
  (void)state;
  char path[300], err[512];
  uint32_t att;
  cm_job_info_t in;
  cm_ledger_t *l = open_ledger((new_path(path, sizeof path), path));
  g_clock = 1000000;
  cm_ledger_set_clock(l, fake_clock, NULL);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, true), 0); /* no job */
  assert_int_equal(cm_ledger_job_open(l, "j", SRC, 100, &in, err, sizeof err), 0);
  g_clock += 4000;
  /* Nothing created yet: the source's first chunk waits since the open. */
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 0);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, true), 4000);

  add_n(l, 1); /* chunk 0 at +4000 */
  g_clock += 1000;
  add_n(l, 1); /* chunk 1 at +5000 */
  g_clock += 500;
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 1500);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, true), 1500);

  /* Dispatched: chunk 1 is now the oldest pending. */
  assert_int_equal(cm_ledger_lease(l, 0, "m1", 999999999, &att), 0);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 500);
  assert_int_equal(cm_ledger_lease(l, 1, "m1", 999999999, &att), 0);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 0);
  /* The unread tail has waited since chunk 1 was created. */
  assert_int_equal(cm_ledger_oldest_pending_ms(l, true), 500);

  /* A nak makes chunk 0 pending again: it waits from now (with backoff). */
  g_clock += 10000;
  assert_int_equal(cm_ledger_release(l, 0, 1, g_clock + 250, "nak", 5), 1);
  g_clock += 300;
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 300);
  /* Acked while pending (a late save): nothing pending any more. */
  assert_int_equal(cm_ledger_ack(l, 0, 1, 100), 1);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 0);
  /* An expired lease: pending from its release. */
  assert_int_equal(cm_ledger_release(l, 1, 1, 0, "expired", 5), 1);
  g_clock += 700;
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 700);
  assert_int_equal(cm_ledger_flush(l), 0);
  cm_ledger_close(l);

  /* Reopened (a restart): recovered chunks wait from this run's open, not
   * from when they were first created. */
  g_clock += 60000;
  l = open_ledger(path);
  cm_ledger_set_clock(l, fake_clock, NULL);
  assert_int_equal(cm_ledger_job_open(l, "j", SRC, 100, &in, err, sizeof err), 0);
  g_clock += 2000;
  assert_int_equal(cm_ledger_pending_count(l), 1);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, false), 2000);

  /* The source done and every chunk leased: nothing waits. */
  assert_int_equal(cm_ledger_set_source_done(l), 0);
  assert_int_equal(cm_ledger_lease(l, 1, "m1", 999999999, &att), 0);
  assert_int_equal(cm_ledger_oldest_pending_ms(l, true), 0);
  cm_ledger_close(l);
}

/* The FIFO under a random mix of operations: the reported age is always
 * that of the longest-waiting pending chunk, checked against a model. */
static void test_oldest_pending_model(void **state) {
  (void)state;
  enum { N = 200 };
  char path[300];
  int64_t since[N];
  int st[N]; /* 0 pending, 1 leased, 2 done */
  uint32_t attn[N];
  new_path(path, sizeof path);
  cm_ledger_t *l = open_ledger(path);
  g_clock = 5;
  cm_ledger_set_clock(l, fake_clock, NULL);
  char err[512];
  cm_job_info_t in;
  assert_int_equal(cm_ledger_job_open(l, "j", SRC, 100, &in, err, sizeof err), 0);
  for (int i = 0; i < N; i++) {
    add_n(l, 1);
    since[i] = g_clock;
    st[i] = 0;
    attn[i] = 0;
    g_clock += 1 + i % 3;
  }
  srand(7);
  for (int step = 0; step < 5000; step++) {
    int i = rand() % N, op = rand() % 3;
    g_clock += rand() % 5;
    if (op == 0 && st[i] == 0) {
      assert_int_equal(cm_ledger_lease(l, (uint64_t)i, "m", 999999999, &attn[i]), 0);
      st[i] = 1;
    } else if (op == 1 && st[i] == 1) {
      assert_int_equal(cm_ledger_release(l, (uint64_t)i, attn[i], g_clock, "r", 0), 1);
      st[i] = 0;
      since[i] = g_clock;
    } else if (op == 2 && st[i] != 2 && rand() % 10 == 0) {
      assert_int_equal(cm_ledger_ack(l, (uint64_t)i, attn[i], 1), 1);
      st[i] = 2;
    }
    int64_t oldest = -1;
    for (int k = 0; k < N; k++)
      if (st[k] == 0 && (oldest < 0 || since[k] < oldest)) oldest = since[k];
    assert_int_equal(cm_ledger_oldest_pending_ms(l, false), oldest < 0 ? 0 : g_clock - oldest);
  }
  cm_ledger_close(l);
}

/* ---- schema 2: several jobs (docs/jobs.md) -------------------------------- */

/* The schema-1 file exactly as a previous fetcher wrote it. */
static const char *const V1_SCHEMA =
    "CREATE TABLE jobs(name TEXT PRIMARY KEY NOT NULL, source TEXT NOT NULL,"
    " chunk_size INTEGER NOT NULL, next_index INTEGER NOT NULL DEFAULT 0,"
    " source_done INTEGER NOT NULL DEFAULT 0, source_pos INTEGER NOT NULL DEFAULT 0,"
    " source_line INTEGER NOT NULL DEFAULT 0, done_chunks INTEGER NOT NULL DEFAULT 0,"
    " dead_chunks INTEGER NOT NULL DEFAULT 0, records_done INTEGER NOT NULL DEFAULT 0,"
    " redeliveries INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);"
    "CREATE TABLE chunks(job TEXT NOT NULL, idx INTEGER NOT NULL, state INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL DEFAULT 0, base_attempt INTEGER NOT NULL DEFAULT 0,"
    " deadline_ms INTEGER NOT NULL DEFAULT 0, holder TEXT,"
    " not_before_ms INTEGER NOT NULL DEFAULT 0, reason TEXT,"
    " records INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(job, idx)) WITHOUT ROWID;"
    "CREATE INDEX chunks_live ON chunks(job, state) WHERE state <> 2;"
    "CREATE TABLE payloads(job TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY(job, idx));"
    "INSERT INTO jobs VALUES('old', '" SRC "', 100, 3, 1, 0, 0, 2, 0, 200, 1, 1700000000.5);"
    "INSERT INTO chunks VALUES('old', 0, 2, 1, 0, 0, NULL, 0, NULL, 100);"
    "INSERT INTO chunks VALUES('old', 1, 2, 2, 0, 0, NULL, 0, NULL, 100);"
    "INSERT INTO chunks VALUES('old', 2, 1, 1, 0, 99, 'm1', 0, NULL, 0);"
    "PRAGMA user_version = 1;";

static int list_cb(void *ud, const cm_ledger_job_row_t *r) {
  char *out = ud;
  size_t n = strlen(out);
  snprintf(out + n, 1024 - n, "%s:%d:%u:%u:%s;", r->name, r->state, r->priority, r->max_deliver,
           r->spec ? r->spec : "null");
  return 0;
}

static void test_v1_ledger_migrates(void **state) {
  (void)state;
  char path[300], list[1024] = "";
  cm_job_info_t in;
  cm_chunk_state_t st;
  new_path(path, sizeof path);
  q_exec(path, V1_SCHEMA);
  cm_ledger_t *l = open_ledger(path);
  assert_int_equal(q_int(path, "PRAGMA user_version"), CM_LEDGER_SCHEMA_VERSION);
  assert_int_equal(cm_ledger_each_job(l, list_cb, list), 1);
  assert_string_equal(list, "old:1:1:0:null;"); /* running, priority 1, spec unknown */
  /* its job opens as before, counters and chunks intact */
  cm_ledger_new_job_t nj = {.spec = "{\"job\":\"old\"}", .priority = 5};
  char err[512];
  assert_int_equal(cm_ledger_job_open_ex(l, "old", SRC, 100, &nj, &in, err, sizeof err), 0);
  assert_int_equal(in.next_index, 3);
  assert_int_equal(in.done_chunks, 2);
  assert_int_equal(in.records_done, 200);
  assert_int_equal(in.state, 1);
  assert_int_equal(in.priority, 1); /* an existing job keeps its row */
  assert_true(in.created_at > 1700000000.0 && in.created_at < 1700000001.0);
  assert_int_equal(cm_ledger_chunk_state(l, 2, &st, NULL), 0);
  assert_int_equal(st, CM_CHUNK_PENDING); /* recovered lease */
  assert_int_equal(cm_ledger_ack_v(l, 2, 2, 50, "v1", 0), 1);
  assert_true(cm_ledger_job_complete(l));
  cm_ledger_close(l);
  /* the spec given at the first v2 open is stored; the version too */
  assert_int_equal(q_int(path, "SELECT spec = '{\"job\":\"old\"}' FROM jobs"), 1);
  assert_int_equal(q_int(path, "SELECT version = 'v1' FROM chunks WHERE idx = 2"), 1);
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks WHERE version IS NULL"), 2);
  /* schema 3's columns exist, empty for the old chunks: a redo of them is
   * refused by the job (cm_ledger_redo_unplaced counts them) */
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks WHERE digest IS NULL AND "
                               "src_pos IS NULL"),
                   3);
  l = open_ledger(path);
  assert_int_equal(cm_ledger_job_open(l, "old", SRC, 100, &in, err, sizeof err), 0);
  assert_int_equal(cm_ledger_redo_unplaced(l, "v1"), 1);
  assert_int_equal(cm_ledger_redo_unplaced(l, "v9"), 0);
  cm_ledger_origin_t o;
  char cur[64];
  assert_int_equal(cm_ledger_chunk_origin(l, 2, &o, cur, sizeof cur), -ENOENT);
  cm_ledger_close(l);
}

/* Schema 3: a sequential chunk's origin is stored with its first row and
 * kept once it is done (its payload is not); a redo brings it back pending
 * without a payload until one is set; or it is killed. */
static void test_chunk_origin(void **state) {
  (void)state;
  char path[300], cur[64];
  cm_ledger_origin_t o = {.pos = 40, .line = 3, .cursor = "http://api/p?page=2"}, got;
  cm_job_info_t in;
  uint32_t att;
  cm_buf_t b;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  for (int i = 0; i < 32; i++) o.digest[i] = (unsigned char)(i * 7);
  assert_int_equal(cm_ledger_add_chunk_origin(l, 0, "[1]", 3, 55, 5, false, &o), 0);
  assert_int_equal(cm_ledger_add_chunk(l, 1, "[2]", 3, 60, 6, true), 0);
  /* before the flush, from memory */
  assert_int_equal(cm_ledger_chunk_origin(l, 0, &got, cur, sizeof cur), 0);
  assert_int_equal(got.pos, 40);
  assert_string_equal(got.cursor, "http://api/p?page=2");
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(q_int(path, "SELECT src_pos = 40 AND src_line = 3 AND length(digest) = 32 "
                               "AND src_cursor = 'http://api/p?page=2' FROM chunks WHERE idx = 0"),
                   1);
  assert_false(cm_ledger_needs_payload(l, 0));
  assert_int_equal(cm_ledger_lease(l, 0, "m", 1000, &att), 0);
  assert_int_equal(cm_ledger_ack_v(l, 0, att, 1, "v1", 0), 1);
  assert_int_equal(cm_ledger_lease(l, 1, "m", 1000, &att), 0);
  assert_int_equal(cm_ledger_ack_v(l, 1, att, 1, "v1", 0), 1);
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(q_int(path, "SELECT count(*) FROM payloads"), 0);
  /* a later state change keeps the origin */
  assert_int_equal(q_int(path, "SELECT src_line FROM chunks WHERE idx = 0"), 3);
  assert_int_equal(cm_ledger_redo_unplaced(l, "v1"), 1); /* chunk 1 had none */
  assert_int_equal(cm_ledger_redo(l, "v1"), 2);
  assert_true(cm_ledger_needs_payload(l, 0));
  memset(&got, 0, sizeof got);
  assert_int_equal(cm_ledger_chunk_origin(l, 0, &got, cur, sizeof cur), 0);
  assert_int_equal(got.pos, 40);
  assert_int_equal(got.line, 3);
  assert_string_equal(got.cursor, "http://api/p?page=2");
  assert_memory_equal(got.digest, o.digest, 32);
  assert_int_equal(cm_ledger_chunk_origin(l, 1, &got, cur, sizeof cur), -ENOENT);
  assert_int_equal(cm_ledger_chunk_origin(l, 0, &got, cur, 8), -E2BIG);
  cm_buf_init(&b, 1024);
  assert_int_equal(cm_ledger_payload(l, 0, &b), -ENOENT);
  assert_int_equal(cm_ledger_set_payload(l, 0, "[1]", 3), 0);
  assert_false(cm_ledger_needs_payload(l, 0));
  assert_int_equal(cm_ledger_kill(l, 1, "changed"), 0);
  assert_int_equal(cm_ledger_kill(l, 1, "changed"), -EINVAL); /* not pending any more */
  assert_int_equal(cm_ledger_flush(l), 0);
  cm_ledger_close(l);
  /* after a restart: chunk 0 has its payload again, chunk 1 is dead */
  l = open_job(path, "j", &in);
  assert_int_equal(in.dead_chunks, 1);
  assert_false(cm_ledger_needs_payload(l, 0));
  assert_int_equal(cm_ledger_payload(l, 0, &b), 0);
  assert_int_equal(b.len, 3);
  assert_int_equal(q_int(path, "SELECT reason = 'changed' FROM chunks WHERE idx = 1"), 1);
  /* replayed, the dead chunk has no payload: it needs one */
  assert_int_equal(cm_ledger_replay_dead(l), 1);
  assert_true(cm_ledger_needs_payload(l, 1));
  cm_buf_free(&b);
  cm_ledger_close(l);
}

static void test_jobs_share_one_connection(void **state) {
  (void)state;
  char path[300], err[512], list[1024] = "";
  cm_job_info_t in;
  uint32_t att;
  new_path(path, sizeof path);
  cm_ledger_t *root = open_ledger(path), *a = NULL, *b = NULL;
  assert_int_equal(cm_ledger_share(root, &a), 0);
  assert_int_equal(cm_ledger_share(root, &b), 0);
  cm_ledger_new_job_t na = {.spec = "{\"job\":\"a\"}", .priority = 3, .max_deliver = 7,
                            .state = 1, .must_be_new = true};
  cm_ledger_new_job_t nb = {.spec = "{\"job\":\"b\"}", .state = 0, .must_be_new = true};
  assert_int_equal(cm_ledger_job_open_ex(a, "a", SRC, 100, &na, &in, err, sizeof err), 0);
  assert_int_equal(cm_ledger_job_open_ex(b, "b", SRC, 100, &nb, &in, err, sizeof err), 0);
  /* a second submission of a name is refused */
  cm_ledger_t *c = NULL;
  assert_int_equal(cm_ledger_share(root, &c), 0);
  assert_int_equal(cm_ledger_job_open_ex(c, "a", SRC, 100, &na, &in, err, sizeof err), -EEXIST);
  assert_non_null(strstr(err, "job \"a\" exists"));
  cm_ledger_close(c);
  add_n(a, 2);
  add_n(b, 3);
  assert_int_equal(cm_ledger_lease(a, 0, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_lease(b, 0, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_ack(b, 0, 1, 9), 1);
  assert_true(cm_ledger_unflushed(root) >= 4);
  /* one flush through any handle writes both jobs in ONE transaction */
  g_commits = 0;
  assert_int_equal(cm_ledger_flush(root), 0);
  assert_int_equal(cm_ledger_unflushed(a), 0);
  assert_int_equal(cm_ledger_unflushed(b), 0);
  assert_int_equal(q_int(path, "SELECT next_index FROM jobs WHERE name = 'a'"), 2);
  assert_int_equal(q_int(path, "SELECT records_done FROM jobs WHERE name = 'b'"), 9);
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks"), 5);
  /* state changes are stored before they return */
  assert_int_equal(cm_ledger_set_state(b, 2, 1234.5, "paused by test"), 0);
  assert_int_equal(q_int(path, "SELECT state = 2 AND finished_at = 1234.5 AND last_error = "
                               "'paused by test' FROM jobs WHERE name = 'b'"),
                   1);
  assert_int_equal(cm_ledger_each_job(root, list_cb, list), 2);
  assert_string_equal(list, "a:1:3:7:{\"job\":\"a\"};b:2:1:0:{\"job\":\"b\"};");
  cm_ledger_close(a);
  cm_ledger_close(root); /* the connection lives while b does */
  assert_int_equal(cm_ledger_ack(b, 1, 0, 4), 1);
  assert_int_equal(cm_ledger_flush(b), 0);
  cm_ledger_close(b);
  cm_ledger_t *l = open_ledger(path);
  assert_int_equal(cm_ledger_job_open(l, "b", SRC, 100, &in, err, sizeof err), 0);
  assert_int_equal(in.state, 2);
  assert_int_equal(in.done_chunks, 2);
  assert_string_equal(in.last_error, "paused by test");
  assert_string_equal(cm_ledger_spec(l), "{\"job\":\"b\"}");
  assert_int_equal(cm_ledger_job_open(l, "a", SRC, 100, &in, err, sizeof err), 0);
  assert_int_equal(in.max_deliver, 7);
  assert_int_equal(cm_ledger_pending_count(l), 2); /* its lease came back */
  cm_ledger_close(l);
}

static void dead_cb(void *ud, uint64_t index, uint32_t attempt, const char *reason) {
  char *out = ud;
  size_t n = strlen(out);
  snprintf(out + n, 256 - n, "%llu/%u/%s;", (unsigned long long)index, attempt, reason);
}

static void test_dead_list(void **state) {
  (void)state;
  char path[300], got[256] = "";
  uint32_t att;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  add_n(l, 4);
  assert_int_equal(cm_ledger_lease(l, 3, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_release(l, 3, 1, 0, "bad json", 1), 2);
  assert_int_equal(cm_ledger_lease(l, 1, "m", 10, &att), 0);
  assert_int_equal(cm_ledger_release(l, 1, 1, 0, "timeout", 1), 2);
  assert_int_equal(cm_ledger_each_dead(l, 10, dead_cb, got), 2); /* flushes first */
  assert_string_equal(got, "1/1/timeout;3/1/bad json;");
  got[0] = '\0';
  assert_int_equal(cm_ledger_each_dead(l, 1, dead_cb, got), 1);
  assert_string_equal(got, "1/1/timeout;");
  cm_ledger_close(l);
}

static void test_redo_by_version(void **state) {
  (void)state;
  char path[300], err[512];
  uint32_t att;
  uint64_t idx;
  cm_job_info_t in;
  cm_chunk_state_t st;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  add_n(l, 4);
  assert_int_equal(cm_ledger_set_source_done(l), 0);
  for (uint64_t i = 0; i < 4; i++) {
    assert_int_equal(cm_ledger_lease(l, i, "m", 10, &att), 0);
    assert_int_equal(cm_ledger_ack_v(l, i, 1, 10 + (uint32_t)i, i % 2 ? "v2" : "v1", 0), 1);
  }
  assert_true(cm_ledger_job_complete(l));
  assert_int_equal(cm_ledger_redo(l, "nope"), 0); /* nothing saved by it: no change */
  cm_ledger_info(l, &in);
  assert_int_equal(in.redo_gen, 0);
  assert_int_equal(cm_ledger_redo(l, "v1"), 2); /* chunks 0 and 2 */
  cm_ledger_info(l, &in);
  assert_int_equal(in.done_chunks, 2);
  assert_int_equal(in.records_done, 11 + 13);
  assert_int_equal(in.redo_gen, 1);
  assert_int_equal(in.redo_chunks, 2);
  assert_int_equal(in.redo_done, 0);
  assert_string_equal(cm_ledger_redo_version(l), "v1");
  assert_false(cm_ledger_job_complete(l));
  assert_int_equal(cm_ledger_chunk_redo(l, 0), 1);
  assert_int_equal(cm_ledger_next_due(l, 0, &idx), 1);
  assert_int_equal(idx, 0);
  /* a late ack of the old save (generation 0) does not mark it done */
  assert_int_equal(cm_ledger_ack_v(l, 0, 1, 10, "v1", 0), 0);
  expect_state(l, 0, CM_CHUNK_PENDING, 1);
  /* the restart keeps the generation of the pending chunks */
  cm_ledger_close(l);
  l = open_ledger(path);
  assert_int_equal(cm_ledger_job_open(l, "j", SRC, 100, &in, err, sizeof err), 0);
  assert_int_equal(in.redo_gen, 1);
  assert_int_equal(in.redo_chunks, 2);
  assert_string_equal(cm_ledger_redo_version(l), "v1");
  assert_int_equal(cm_ledger_chunk_redo(l, 2), 1);
  assert_int_equal(cm_ledger_ack_v(l, 2, 1, 10, "v1", 0), 0); /* still fenced */
  assert_int_equal(cm_ledger_lease(l, 0, "m", 10, &att), 0);
  assert_int_equal(att, 2); /* attempts continue */
  assert_int_equal(cm_ledger_ack_v(l, 0, 2, 20, "v3", 1), 1);
  assert_int_equal(cm_ledger_ack_v(l, 2, 0, 22, "v3", 1), 1);
  cm_ledger_info(l, &in);
  assert_int_equal(in.redo_done, 2);
  assert_int_equal(in.done_chunks, 4);
  assert_int_equal(in.records_done, 11 + 13 + 20 + 22);
  assert_true(cm_ledger_job_complete(l));
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(q_int(path, "SELECT count(*) FROM chunks WHERE version = 'v3' AND redo = 1"),
                   2);
  assert_int_equal(cm_ledger_chunk_state(l, 0, &st, NULL), 0);
  assert_int_equal(st, CM_CHUNK_DONE);
  /* a second redo gets the next generation */
  assert_int_equal(cm_ledger_redo(l, "v3"), 2);
  cm_ledger_info(l, &in);
  assert_int_equal(in.redo_gen, 2);
  assert_int_equal(cm_ledger_chunk_redo(l, 2), 2);
  assert_int_equal(cm_ledger_ack_v(l, 2, 0, 22, "v3", 1), 0);
  cm_ledger_close(l);
}

static void test_source_cursor(void **state) {
  (void)state;
  char path[300], err[512];
  cm_job_info_t in;
  new_path(path, sizeof path);
  cm_ledger_t *l = open_job(path, "j", NULL);
  assert_null(cm_ledger_cursor(l));
  assert_int_equal(cm_ledger_set_cursor(l, "http://api/p?after=abc"), 0);
  assert_int_equal(cm_ledger_add_chunk(l, 0, "[1]", 3, 7, 1, false), 0);
  assert_int_equal(cm_ledger_flush(l), 0); /* chunk, position and cursor together */
  assert_int_equal(q_int(path, "SELECT source_pos = 7 AND source_cursor = "
                               "'http://api/p?after=abc' FROM jobs"),
                   1);
  cm_ledger_close(l);
  l = open_ledger(path);
  assert_int_equal(cm_ledger_job_open(l, "j", SRC, 100, &in, err, sizeof err), 0);
  assert_string_equal(cm_ledger_cursor(l), "http://api/p?after=abc");
  assert_int_equal(in.source_pos, 7);
  assert_int_equal(cm_ledger_set_cursor(l, NULL), 0);
  assert_int_equal(cm_ledger_flush(l), 0);
  assert_int_equal(q_int(path, "SELECT source_cursor IS NULL FROM jobs"), 1);
  cm_ledger_close(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_creates_schema),
      cmocka_unit_test(test_newer_schema_refused),
      cmocka_unit_test(test_job_mismatch_refused),
      cmocka_unit_test(test_lease_ack_fencing),
      cmocka_unit_test(test_expiry_and_not_before),
      cmocka_unit_test(test_each_held),
      cmocka_unit_test(test_max_deliver_dead_replay),
      cmocka_unit_test(test_write_behind_one_transaction),
      cmocka_unit_test(test_payload),
      cmocka_unit_test(test_crash_recovery),
      cmocka_unit_test(test_memory_bounded),
      cmocka_unit_test(test_random_against_model),
      cmocka_unit_test(test_oldest_pending_age),
      cmocka_unit_test(test_oldest_pending_model),
      cmocka_unit_test(test_v1_ledger_migrates),
      cmocka_unit_test(test_chunk_origin),
      cmocka_unit_test(test_jobs_share_one_connection),
      cmocka_unit_test(test_dead_list),
      cmocka_unit_test(test_redo_by_version),
      cmocka_unit_test(test_source_cursor),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
