/* test_store.c - the results database: chunks built from the app9 fixture
 * are stored record for record, null slots skipped, duplicates detected,
 * bad items isolated by savepoints, failed commits reported for every
 * item, schema versions enforced. Prints rows/s for a 50-chunk batch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the four headers above first. */
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cm/chunk.h"
#include "fixture.h"
#include "tmpdir.h"
#include "store.h"

typedef struct {
  char dir[CM_TEST_PATH_MAX];
  char path[CM_TEST_PATH_MAX + 16];
  char *fixture; /* the app9 chunk */
  size_t fixture_len;
  const char *rec[100]; /* its records, raw */
  size_t rec_len[100];
} ctx_t;

static int setup(void **state) {
  ctx_t *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->fixture = cm_test_fixture(&c->fixture_len);
  cm_test_mkdtemp(c->dir, sizeof c->dir, "cm_store");
  (void)snprintf(c->path, sizeof c->path, "%s/results.db", c->dir);

  cm_chunk_view_t v;
  char err[160];
  assert_int_equal(cm_chunk_peek(c->fixture, c->fixture_len, &v, err, sizeof err), 0);
  size_t pos = 0;
  for (int k = 0; k < 100; k++)
    assert_int_equal(cm_json_array_next(v.data, v.data_len, &pos, &c->rec[k], &c->rec_len[k]), 1);
  *state = c;
  return 0;
}

static int teardown(void **state) {
  ctx_t *c = *state;
  int rc = cm_test_rmtree(c->dir);
  free(c->fixture);
  free(c);
  return rc == 0 ? 0 : -1;
}

static cm_store_t *open_store(ctx_t *c, cm_store_sync_t sync) {
  cm_store_t *s = NULL;
  char err[256] = "";
  int rc = cm_store_open(&s, c->path, sync, err, sizeof err);
  if (rc != 0) print_error("open: %d %s\n", rc, err);
  assert_int_equal(rc, 0);
  return s;
}

/* A chunk with records [from, from+n) of the fixture; slots listed in
 * nulls become null. dead may be NULL. Caller frees the returned text. */
static char *make_chunk(ctx_t *c, const char *job, uint64_t index, uint32_t attempt, int from,
                        int n, const int *nulls, int nnulls, const char *dead) {
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = index, .attempt = attempt};
  (void)snprintf(h.job, sizeof h.job, "%s", job);
  cm_buf_init(&b, 1 << 24);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  for (int k = 0; k < n; k++) {
    int is_null = 0;
    for (int j = 0; j < nnulls; j++) is_null |= nulls[j] == k;
    if (k) assert_int_equal(cm_buf_append(&b, ",", 1), 0);
    if (is_null)
      assert_int_equal(cm_buf_puts(&b, "null"), 0);
    else
      assert_int_equal(cm_buf_append(&b, c->rec[from + k], c->rec_len[from + k]), 0);
  }
  assert_int_equal(cm_chunk_end(&b, dead, dead ? strlen(dead) : 0), 0);
  return b.data;
}

static int64_t q_int(cm_store_t *s, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(cm_store_db(s), sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static char *q_text(cm_store_t *s, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(cm_store_db(s), sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  const unsigned char *t = sqlite3_column_text(st, 0);
  char *r = strdup(t ? (const char *)t : "(null)");
  sqlite3_finalize(st);
  return r;
}

static void save1(cm_store_t *s, const char *json, cm_store_item_t *it) {
  memset(it, 0, sizeof *it);
  it->json = json;
  it->len = strlen(json);
  assert_int_equal(cm_store_save_batch(s, it, 1), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_save_fixture(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  cm_store_item_t it;
  int64_t before = (int64_t)time(NULL) * 1000;

  /* The app9 chunk exactly as the original fetcher sends it. */
  save1(s, c->fixture, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 100);
  assert_int_equal(it.dead, 0);
  assert_int_equal(it.hdr.index, 0);
  assert_string_equal(it.hdr.job, "");
  assert_string_equal(it.err, "");

  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 100);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = '' AND chunk = 0"), 100);
  assert_int_equal(q_int(s, "SELECT records FROM chunks WHERE job = '' AND chunk = 0"), 100);
  assert_int_equal(q_int(s, "SELECT dead FROM chunks"), 0);
  assert_int_equal(q_int(s, "SELECT attempt FROM chunks"), 0);
  int64_t saved_at = q_int(s, "SELECT saved_at FROM chunks");
  assert_true(saved_at >= before && saved_at <= before + 60000);

  /* Each body is the input record: the fixture is minified, so byte for
   * byte; and it parses to the same JSON. */
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(cm_store_db(s),
                         "SELECT idx, body, json_valid(body) FROM records ORDER BY idx", -1, &st,
                         NULL),
      SQLITE_OK);
  for (int k = 0; k < 100; k++) {
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), k);
    assert_int_equal((size_t)sqlite3_column_bytes(st, 1), c->rec_len[k]);
    assert_memory_equal(sqlite3_column_text(st, 1), c->rec[k], c->rec_len[k]);
    assert_int_equal(sqlite3_column_int(st, 2), 1);
  }
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  char *b0 =
      q_text(s, "SELECT body ->> '$.fn' || ' ' || (body ->> '$.ln') FROM records WHERE idx = 0");
  assert_string_equal(b0, "Adelia Marquardt");
  free(b0);
  cm_store_close(s);
}

static void test_bodies_parsed_equal(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  cm_store_item_t it;
  /* Whitespace and escapes inside records: bodies compare equal as JSON. */
  const char *js =
      "{\"job\":\"w\",\"index\":1,\"data\":[ { \"a\" : [ 1 , 2 ] , \"s\" : \"x\\u00e9\\n\" } ,"
      " {\"n\":{\"m\":null}} ]}";
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 2);
  /* Whitespace is gone, escapes are kept as written: compare values. */
  char *b = q_text(s, "SELECT body FROM records WHERE job = 'w' AND idx = 0");
  assert_string_equal(b, "{\"a\":[1,2],\"s\":\"x\\u00e9\\n\"}");
  free(b);
  assert_int_equal(q_int(s,
                         "SELECT body ->> '$.s' = 'x' || char(233, 10) AND body -> '$.a' = '[1,2]'"
                         " FROM records WHERE job = 'w' AND idx = 0"),
                   1);
  assert_int_equal(q_int(s, "SELECT json(body) = json('{\"n\":{\"m\":null}}') FROM records "
                            "WHERE job = 'w' AND idx = 1"),
                   1);
  cm_store_close(s);
}

static void test_null_slots_and_scalars(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  cm_store_item_t it;
  int nulls[] = {1, 3};
  char *js = make_chunk(c, "users", 7, 2, 10, 5, nulls, 2, NULL);
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 3);
  assert_int_equal(it.hdr.attempt, 2);
  /* idx keeps the slot: 0, 2, 4 with records 10, 12, 14. */
  assert_int_equal(q_int(s, "SELECT group_concat(idx) = '0,2,4' FROM (SELECT idx FROM records "
                            "WHERE job = 'users' AND chunk = 7 ORDER BY idx)"),
                   1);
  char *b = q_text(s, "SELECT body FROM records WHERE job = 'users' AND chunk = 7 AND idx = 4");
  assert_int_equal(strlen(b), c->rec_len[14]);
  assert_memory_equal(b, c->rec[14], c->rec_len[14]);
  free(b);
  free(js);

  /* Non-object records stay valid JSON. */
  save1(s, "{\"job\":\"sc\",\"index\":1,\"data\":[\"str\\\"q\",7,-2.5,true,false,[1,{}],null,{}]}",
        &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 7);
  b = q_text(s, "SELECT group_concat(body, '|') FROM (SELECT body FROM records WHERE job = 'sc' "
                "ORDER BY idx)");
  assert_string_equal(b, "\"str\\\"q\"|7|-2.5|true|false|[1,{}]|{}");
  free(b);
  assert_int_equal(
      q_int(s, "SELECT count(*) FROM records WHERE job = 'sc' AND NOT json_valid(body)"), 0);
  cm_store_close(s);
}

/* More records than one multi-row INSERT group, with whitespace to compact
 * and null slots spread across the groups. */
static void test_groups_compact_nulls(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  cm_store_item_t it;
  char js[8192];
  size_t o = (size_t)snprintf(js, sizeof js, "{\"job\":\"g\",\"index\":3,\"data\":[");
  for (int k = 0; k < 75; k++)
    o += (size_t)snprintf(js + o, sizeof js - o, "%s%s", k ? " , " : "",
                          k % 7 == 3 ? "null" : k % 2 ? "{ \"k\" : [ 1 , \"a b\" ] }" : "{\"k\":2}");
  (void)snprintf(js + o, sizeof js - o, "]}");
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 75 - 11);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = 'g'"), 64);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = 'g' AND idx % 7 = 3"), 0);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = 'g' AND idx % 2 = 1 AND "
                            "body = '{\"k\":[1,\"a b\"]}'"),
                   31);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = 'g' AND idx % 2 = 0 AND "
                            "body = '{\"k\":2}'"),
                   33);
  cm_store_close(s);
}

static void test_duplicate(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  cm_store_item_t it;
  char *first = make_chunk(c, "dup", 3, 1, 0, 20, NULL, 0, "[{\"idx\":99,\"reason\":\"r\"}]");
  char *again = make_chunk(c, "dup", 3, 2, 50, 30, NULL, 0, NULL); /* other content, same key */
  save1(s, first, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 20);
  assert_int_equal(it.dead, 1);

  save1(s, again, &it);
  assert_int_equal(it.status, 1);
  assert_int_equal(it.records, 20); /* as stored before */
  assert_int_equal(it.dead, 1);
  assert_int_equal(it.hdr.attempt, 2);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = 'dup'"), 20);
  assert_int_equal(q_int(s, "SELECT count(*) FROM dead_letters WHERE job = 'dup'"), 1);
  assert_int_equal(q_int(s, "SELECT attempt FROM chunks WHERE job = 'dup'"), 1);

  /* Twice in one batch: the second sees the first. Another job with the
   * same index is a different chunk. */
  char *other = make_chunk(c, "dup2", 3, 0, 0, 2, NULL, 0, NULL);
  cm_store_item_t items[3] = {{.json = other, .len = strlen(other)},
                              {.json = other, .len = strlen(other)},
                              {.json = first, .len = strlen(first)}};
  assert_int_equal(cm_store_save_batch(s, items, 3), 0);
  assert_int_equal(items[0].status, 0);
  assert_int_equal(items[1].status, 1);
  assert_int_equal(items[1].records, 2);
  assert_int_equal(items[2].status, 1);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 22);
  free(first);
  free(again);
  free(other);
  cm_store_close(s);
}

static void test_batch_with_bad_items(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  char *g1 = make_chunk(c, "b", 1, 0, 0, 10, NULL, 0, NULL);
  char *g2 = make_chunk(c, "b", 2, 0, 10, 10, NULL, 0, NULL);
  char *g3 = make_chunk(c, "b", 3, 0, 20, 10, NULL, 0, NULL);
  /* Valid data, but a dead entry that is not an object: fails inside its
   * savepoint after its marker and records were written. */
  char *bad_dead = make_chunk(c, "b", 4, 0, 30, 10, NULL, 0, "[{\"idx\":1,\"reason\":\"x\"},42]");
  char *dup_dead = make_chunk(c, "b", 5, 0, 30, 10, NULL, 0, "[{\"idx\":1},{\"idx\":1}]");
  const char *not_json = "{\"job\":\"b\",\"index\":6,\"data\":[{\"a\":1},]}";
  const char *bad_hdr = "{\"job\":\"b\",\"index\":-1,\"data\":[]}";
  const char *huge = "{\"job\":\"b\",\"index\":9223372036854775808,\"data\":[]}";
  const char *jsons[] = {g1, not_json, g2, bad_dead, bad_hdr, dup_dead, huge, g3};
  cm_store_item_t items[8];
  memset(items, 0, sizeof items);
  for (int k = 0; k < 8; k++) {
    items[k].json = jsons[k];
    items[k].len = strlen(jsons[k]);
  }
  assert_int_equal(cm_store_save_batch(s, items, 8), 0);
  assert_int_equal(items[0].status, 0);
  assert_int_equal(items[2].status, 0);
  assert_int_equal(items[7].status, 0);
  assert_int_equal(items[7].records, 10);

  assert_int_equal(items[1].status, -EINVAL);
  assert_string_equal(items[1].err,
                      "bad chunk: unexpected character at byte 37 (in the value of \"data\")");
  assert_int_equal(items[3].status, -EINVAL);
  assert_string_equal(items[3].err,
                      "chunk 4: a dead letter is not an object with \"idx\" or \"line\"");
  assert_int_equal(items[3].records, 0);
  assert_int_equal(items[3].hdr.index, 4);
  assert_int_equal(items[4].status, -EINVAL);
  assert_string_equal(items[4].err, "bad chunk: \"index\" is not a non-negative integer");
  assert_int_equal(items[5].status, -EINVAL);
  assert_string_equal(items[5].err, "chunk 5: two dead letters for the same idx/line");
  assert_int_equal(items[6].status, -ERANGE);
  assert_string_equal(items[6].err,
                      "chunk index 9223372036854775808 exceeds SQLite's integer range");

  /* Only the good ones left rows; the failed ones nothing at all. */
  char *t = q_text(s, "SELECT group_concat(chunk) FROM (SELECT chunk FROM chunks ORDER BY chunk)");
  assert_string_equal(t, "1,2,3");
  free(t);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 30);
  assert_int_equal(q_int(s, "SELECT count(*) FROM dead_letters"), 0);

  /* The failed ones can be saved later, once fixed. */
  char *fixed = make_chunk(c, "b", 4, 1, 30, 10, NULL, 0, "[{\"idx\":1,\"reason\":\"x\"}]");
  cm_store_item_t it;
  save1(s, fixed, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 10);
  assert_int_equal(it.dead, 1);
  free(fixed);
  free(g1);
  free(g2);
  free(g3);
  free(bad_dead);
  free(dup_dead);
  cm_store_close(s);
}

static void test_dead_letters(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  cm_store_item_t it;
  int nulls[] = {1};
  char *js = make_chunk(c, "d", 9, 0, 0, 3, nulls, 1,
                        "[{\"line\":7,\"reason\":\"invalid JSON\",\"raw\":\"{oops\"},"
                        "{\"idx\":1,\"reason\":\"fullname: missing string field \\\"fn\\\"\","
                        "\"record\":{\"uuid\":\"u\",\"ln\":\"L\",\"friends\":[]}},"
                        "{\"idx\":2,\"reason\":\"odd\",\"record\":\"a string\"}]");
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 2);
  assert_int_equal(it.dead, 3);
  assert_int_equal(q_int(s, "SELECT dead FROM chunks WHERE job = 'd'"), 3);
  char *t = q_text(s, "SELECT group_concat(idx || '|' || reason || '|' || record, '\n') FROM "
                      "(SELECT * FROM dead_letters WHERE job = 'd' AND chunk = 9 ORDER BY idx)");
  assert_string_equal(
      t, "-7|invalid JSON|\"{oops\"\n"
         "1|fullname: missing string field \"fn\"|{\"uuid\":\"u\",\"ln\":\"L\",\"friends\":[]}\n"
         "2|odd|\"a string\"");
  free(t);
  free(js);
  cm_store_close(s);
}

static void test_reopen(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_FULL);
  cm_store_item_t it;
  char *js = make_chunk(c, "r", 1, 0, 0, 100, NULL, 0, NULL);
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  cm_store_close(s);

  s = open_store(c, CM_SYNC_NORMAL);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records WHERE job = 'r'"), 100);
  assert_int_equal(q_int(s, "PRAGMA user_version"), CM_STORE_SCHEMA_VERSION);
  save1(s, js, &it);
  assert_int_equal(it.status, 1); /* still known after a restart */
  assert_int_equal(it.records, 100);
  cm_store_close(s);
  free(js);
}

static void test_schema_versions(void **state) {
  ctx_t *c = *state;
  sqlite3 *db = NULL;
  cm_store_t *s = NULL;
  char err[256] = "";

  /* A file from a newer saver: refused, and left as it was. */
  assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(db, "CREATE TABLE future(x); PRAGMA user_version = 4", NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(db);
  assert_int_equal(cm_store_open(&s, c->path, CM_SYNC_NORMAL, err, sizeof err), -ENOTSUP);
  assert_null(s);
  char want[CM_TEST_PATH_MAX + 160];
  (void)snprintf(want, sizeof want,
                 "results database %s has schema version 4; this saver supports up to 3", c->path);
  assert_string_equal(err, want);
  assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "delete"); /* not switched to WAL */
  sqlite3_finalize(st);

  /* A version-0 file (e.g. created empty by hand) is migrated forward. */
  assert_int_equal(sqlite3_exec(db, "DROP TABLE future; PRAGMA user_version = 0", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  s = open_store(c, CM_SYNC_NORMAL);
  assert_int_equal(q_int(s, "PRAGMA user_version"), 3);
  assert_int_equal(q_int(s, "SELECT count(*) FROM sqlite_schema WHERE name IN "
                            "('records','chunks','dead_letters')"),
                   3);
  assert_int_equal(q_int(s, "SELECT count(*) FROM pragma_table_info('records') WHERE pk > 0"), 3);
  cm_store_close(s);

  /* Not a database at all. */
  FILE *f = fopen(c->path, "wb");
  fputs("this is not an SQLite file, just some text that is long enough......................"
        "..................................................................................",
        f);
  fclose(f);
  (void)snprintf(want, sizeof want, "%s-wal", c->path);
  (void)unlink(want);
  (void)snprintf(want, sizeof want, "%s-shm", c->path);
  (void)unlink(want);
  assert_true(cm_store_open(&s, c->path, CM_SYNC_NORMAL, err, sizeof err) < 0);
  assert_null(s);
  assert_non_null(strstr(err, "file is not a database"));
  assert_non_null(strstr(err, c->path));

  /* Bad arguments. */
  assert_int_equal(cm_store_open(&s, c->path, (cm_store_sync_t)7, err, sizeof err), -EINVAL);
  cm_store_close(NULL);
}

static void test_sync_modes(void **state) {
  ctx_t *c = *state;
  const cm_store_sync_t modes[] = {CM_SYNC_NORMAL, CM_SYNC_FULL};
  for (int m = 0; m < 2; m++) {
    cm_store_t *s = open_store(c, modes[m]);
    assert_int_equal(q_int(s, "PRAGMA synchronous"), modes[m] == CM_SYNC_FULL ? 2 : 1);
    char *jm = q_text(s, "PRAGMA journal_mode");
    assert_string_equal(jm, "wal");
    free(jm);
    assert_true(q_int(s, "PRAGMA busy_timeout") > 0);
    cm_store_item_t it;
    char *js = make_chunk(c, "sync", (uint64_t)m, 0, 0, 10, NULL, 0, NULL);
    save1(s, js, &it);
    assert_int_equal(it.status, 0);
    assert_int_equal(it.records, 10);
    free(js);
    cm_store_close(s);
  }
}

/* The write path's settings (see cm_store_open): a new file gets 16 KB
 * pages, sub-journals stay in memory, durability is unchanged; a file made
 * with 4 KB pages keeps them and still saves. */
static void test_write_path_settings(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_FULL);
  cm_store_item_t it;
  assert_int_equal(q_int(s, "PRAGMA page_size"), 16384);
  assert_int_equal(q_int(s, "PRAGMA temp_store"), 2); /* MEMORY */
  assert_int_equal(q_int(s, "PRAGMA synchronous"), 2); /* FULL */
  char *js = make_chunk(c, "pg", 0, 0, 0, 100, NULL, 0, NULL);
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 100);
  free(js);
  cm_store_close(s);
  s = open_store(c, CM_SYNC_FULL);
  assert_int_equal(q_int(s, "PRAGMA page_size"), 16384);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 100);
  cm_store_close(s);

  /* An older results file with 4 KB pages. */
  const char *sfx[] = {"", "-wal", "-shm"};
  for (int k = 0; k < 3; k++) {
    char p[sizeof(c->path) + 8];
    (void)snprintf(p, sizeof p, "%s%s", c->path, sfx[k]);
    (void)unlink(p);
  }
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
                                    " CREATE TABLE other(x)", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  s = open_store(c, CM_SYNC_FULL);
  assert_int_equal(q_int(s, "PRAGMA page_size"), 4096);
  js = make_chunk(c, "pg", 1, 0, 0, 100, NULL, 0, NULL);
  save1(s, js, &it);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 100);
  free(js);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 100);
  cm_store_close(s);
}

static int refuse_commit(void *arg) {
  (void)arg;
  return 1; /* turns the COMMIT into a ROLLBACK */
}

static void test_commit_and_begin_failures(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  char *g = make_chunk(c, "cf", 1, 0, 0, 5, NULL, 0, NULL);
  const char *bad = "{\"index\":2,\"data\":[}";
  cm_store_item_t items[3] = {{.json = g, .len = strlen(g)},
                              {.json = bad, .len = strlen(bad)},
                              {.json = g, .len = strlen(g)}};

  (void)sqlite3_commit_hook(cm_store_db(s), refuse_commit, NULL);
  int rc = cm_store_save_batch(s, items, 3);
  assert_true(rc < 0);
  for (int k = 0; k < 3; k++) assert_true(items[k].status < 0);
  assert_int_equal(items[0].status, rc);
  assert_int_equal(items[0].records, 0);
  assert_non_null(strstr(items[0].err, "batch not saved"));
  assert_int_equal(items[1].status, -EINVAL); /* keeps its own error */
  assert_non_null(strstr(items[1].err, "bad chunk"));
  (void)sqlite3_commit_hook(cm_store_db(s), NULL, NULL);
  assert_int_equal(q_int(s, "SELECT count(*) FROM chunks"), 0);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 0);

  /* Another writer holds the lock: BEGIN IMMEDIATE times out -> -EBUSY. */
  sqlite3 *other = NULL;
  assert_int_equal(sqlite3_open(c->path, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  (void)sqlite3_busy_timeout(cm_store_db(s), 50);
  assert_int_equal(cm_store_save_batch(s, items, 1), -EBUSY);
  assert_int_equal(items[0].status, -EBUSY);
  assert_non_null(strstr(items[0].err, "batch not saved: BEGIN"));
  assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);

  /* And afterwards everything works again. */
  assert_int_equal(cm_store_save_batch(s, items, 3), 0);
  assert_int_equal(items[0].status, 0);
  assert_int_equal(items[1].status, -EINVAL);
  assert_int_equal(items[2].status, 1);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 5);
  assert_int_equal(cm_store_save_batch(s, NULL, 0), 0);
  free(g);
  cm_store_close(s);
}

/* A store error inside one chunk's save that SQLite does not turn into a
 * rollback of the whole transaction (here: the file may not grow,
 * max_page_count; the same as a full disk for that statement). It is not
 * the chunk's fault: the whole batch fails with -ENOSPC, every item is
 * "temporary" (retried, not NAKed), nothing is half-saved; a data error in
 * the same batch keeps its own status. */
static void test_item_store_error_is_temporary(void **state) {
  ctx_t *c = *state;
  cm_store_t *s = open_store(c, CM_SYNC_NORMAL);
  char *small = make_chunk(c, "full", 1, 1, 0, 2, NULL, 0, NULL);
  char *big = make_chunk(c, "full", 2, 1, 0, 100, NULL, 0, NULL);
  const char *bad = "{\"index\":3,\"data\":[}";
  cm_store_item_t it[3] = {{.json = small, .len = strlen(small)},
                           {.json = bad, .len = strlen(bad)},
                           {.json = big, .len = strlen(big)}};
  char sql[64];

  (void)snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
                 (long long)q_int(s, "PRAGMA page_count"));
  assert_int_equal(sqlite3_exec(cm_store_db(s), sql, NULL, NULL, NULL), SQLITE_OK);
  int rc = cm_store_save_batch(s, it, 3);
  assert_int_equal(rc, -ENOSPC);
  assert_true(cm_store_status_temporary(rc));
  assert_true(it[0].status < 0 && cm_store_status_temporary(it[0].status));
  assert_int_equal(it[1].status, -EINVAL);
  assert_false(cm_store_status_temporary(it[1].status));
  assert_int_equal(it[2].status, -ENOSPC);
  assert_non_null(strstr(it[2].err, "full"));
  assert_non_null(strstr(it[0].err, "batch not saved"));
  assert_int_equal(q_int(s, "SELECT count(*) FROM chunks"), 0);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 0);

  /* Room again: the same batch saves both good chunks. */
  assert_int_equal(sqlite3_exec(cm_store_db(s), "PRAGMA max_page_count = 1073741823", NULL, NULL,
                                NULL),
                   SQLITE_OK);
  assert_int_equal(cm_store_save_batch(s, it, 3), 0);
  assert_int_equal(it[0].status, 0);
  assert_int_equal(it[1].status, -EINVAL);
  assert_int_equal(it[2].status, 0);
  assert_int_equal(q_int(s, "SELECT count(*) FROM records"), 102);
  assert_false(cm_store_status_temporary(0));
  assert_false(cm_store_status_temporary(-ERANGE));
  assert_false(cm_store_status_temporary(-E2BIG));
  assert_true(cm_store_status_temporary(-EBUSY));
  assert_true(cm_store_status_temporary(-ENOMEM));
  assert_true(cm_store_status_temporary(-EIO));
  free(small);
  free(big);
  cm_store_close(s);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_throughput(void **state) {
  ctx_t *c = *state;
  const cm_store_sync_t modes[] = {CM_SYNC_NORMAL, CM_SYNC_FULL};
  for (int m = 0; m < 2; m++) {
    cm_store_t *s = open_store(c, modes[m]);
    enum { NCHUNK = 50, ROUNDS = 4 };
    char *js[NCHUNK];
    cm_store_item_t items[NCHUNK];
    double total = 0;
    for (int r = 0; r < ROUNDS; r++) {
      for (int k = 0; k < NCHUNK; k++) {
        js[k] = make_chunk(c, m ? "tp-full" : "tp-normal", (uint64_t)(r * NCHUNK + k), 0, 0, 100,
                           NULL, 0, NULL);
        items[k] = (cm_store_item_t){.json = js[k], .len = strlen(js[k])};
      }
      double t0 = now_s();
      assert_int_equal(cm_store_save_batch(s, items, NCHUNK), 0);
      total += now_s() - t0;
      for (int k = 0; k < NCHUNK; k++) {
        assert_int_equal(items[k].status, 0);
        assert_int_equal(items[k].records, 100);
        free(js[k]);
      }
    }
    double per = total / ROUNDS;
    printf("[ TIMING   ] batch of %d fixture chunks (%d rows, %.1f MB), synchronous=%s: "
           "%.1f ms, %.0f rows/s\n",
           NCHUNK, NCHUNK * 100, NCHUNK * (double)c->fixture_len / 1e6,
           modes[m] == CM_SYNC_FULL ? "FULL" : "NORMAL", per * 1e3, NCHUNK * 100 / per);
    cm_store_close(s);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_save_fixture, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bodies_parsed_equal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_null_slots_and_scalars, setup, teardown),
      cmocka_unit_test_setup_teardown(test_groups_compact_nulls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_duplicate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_batch_with_bad_items, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_schema_versions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_modes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_path_settings, setup, teardown),
      cmocka_unit_test_setup_teardown(test_commit_and_begin_failures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_item_store_error_is_temporary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
