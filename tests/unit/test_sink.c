/* test_sink.c - the sink contract (saver/sink.h), run against every backend:
 * SQLite always (a file in a temporary folder), PostgreSQL when
 * CM_TEST_PG_DSN names a database (ctest's unit_sink_pg starts a throwaway
 * server through tests/integration/pg.py). Each test starts on an empty
 * database and checks what a user would query: rows, counts, bodies, and
 * the status and class of every chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the four headers above first. */
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/chunk.h"
#include "sink.h"

typedef struct {
  bool pg;
  char dir[64];
  char db[512];
  cm_sink_t *s;
} ctx_t;

static bool g_pg; /* the backend of the group being run */

static cm_sink_t *open_sink(const char *db) {
  cm_sink_t *s = NULL;
  char err[512] = "";
  cm_sink_opts_t so = {.db = db, .sync = "normal"};
  int rc = cm_sink_open(&s, &so, err, sizeof err);
  if (rc != 0) print_error("open %s: %d %s\n", db, rc, err);
  assert_int_equal(rc, 0);
  return s;
}

static void q(ctx_t *c, const char *sql, char *out, size_t outlen) {
  char err[256] = "";
  int rc = cm_sink_query(c->s, sql, out, outlen, err, sizeof err);
  if (rc != 0) print_error("query %s: %s\n", sql, err);
  assert_int_equal(rc, 0);
}

static int64_t qi(ctx_t *c, const char *sql) {
  char out[64];
  q(c, sql, out, sizeof out);
  return strtoll(out, NULL, 10);
}

static char *qt(ctx_t *c, const char *sql) {
  static char out[4096];
  q(c, sql, out, sizeof out);
  return out;
}

static int setup(void **state) {
  ctx_t *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->pg = g_pg;
  if (c->pg) {
    /* Emptied with libpq itself: the sink may refuse what the last test
     * left (a newer schema). */
    PGconn *pc;
    PGresult *r;
    snprintf(c->db, sizeof c->db, "%s", getenv("CM_TEST_PG_DSN"));
    pc = PQconnectdb(c->db);
    assert_int_equal(PQstatus(pc), CONNECTION_OK);
    r = PQexec(pc, "SET client_min_messages = warning;"
                   " DROP TABLE IF EXISTS records, chunks, dead_letters, chunkmill_schema");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(pc);
  } else {
    memcpy(c->dir, "/tmp/cm_sink_XXXXXX", 20);
    assert_non_null(mkdtemp(c->dir));
    snprintf(c->db, sizeof c->db, "%s/results.db", c->dir);
  }
  c->s = open_sink(c->db);
  *state = c;
  return 0;
}

static int teardown(void **state) {
  ctx_t *c = *state;
  cm_sink_close(c->s);
  if (!c->pg) {
    const char *sfx[] = {"", "-wal", "-shm", "-journal"};
    for (int k = 0; k < 4; k++) {
      char p[600];
      snprintf(p, sizeof p, "%s%s", c->db, sfx[k]);
      (void)unlink(p);
    }
    (void)rmdir(c->dir);
  }
  free(c);
  return 0;
}

/* Record k of every test chunk: quotes, a backslash escape and non-ASCII
 * text, so a backend that re-escapes or re-encodes would show. */
static int record(char *out, size_t cap, uint64_t chunk, int k) {
  return snprintf(out, cap, "{\"id\":%d,\"chunk\":%" PRIu64 ",\"name\":\"A \\\"q\\\" b\\\\c é\"}",
                  k, chunk);
}

/* A chunk of n records; slots in nulls[] are null; dead and version (the
 * mapper's label in the header) may be NULL. */
static char *chunk_v(const char *job, uint64_t index, int n, const int *nulls, int nn,
                     const char *dead, const char *version) {
  cm_buf_t b;
  char rec[256];
  cm_chunk_hdr_t h = {.index = index, .attempt = 2};
  snprintf(h.job, sizeof h.job, "%s", job);
  if (version) snprintf(h.version, sizeof h.version, "%s", version);
  cm_buf_init(&b, 1 << 24);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  for (int k = 0; k < n; k++) {
    bool is_null = false;
    for (int j = 0; j < nn; j++) is_null |= nulls[j] == k;
    if (k) assert_int_equal(cm_buf_append(&b, ",", 1), 0);
    if (is_null) {
      assert_int_equal(cm_buf_puts(&b, "null"), 0);
    } else {
      record(rec, sizeof rec, index, k);
      assert_int_equal(cm_buf_puts(&b, rec), 0);
    }
  }
  assert_int_equal(cm_chunk_end(&b, dead, dead ? strlen(dead) : 0), 0);
  return b.data;
}

static char *chunk(const char *job, uint64_t index, int n, const int *nulls, int nn,
                   const char *dead) {
  return chunk_v(job, index, n, nulls, nn, dead, NULL);
}

static void item(cm_sink_item_t *it, const char *json) {
  memset(it, 0, sizeof *it);
  it->json = json;
  it->len = strlen(json);
}

/* ---- the contract ------------------------------------------------------ */

static void test_save_and_duplicate(void **state) {
  ctx_t *c = *state;
  char *j = chunk("users", 7, 50, NULL, 0, NULL), want[256], sql[256];
  cm_sink_item_t it;

  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 50);
  assert_int_equal(it.dead, 0);
  assert_string_equal(it.hdr.job, "users");
  assert_int_equal(it.hdr.index, 7);
  assert_int_equal(qi(c, "SELECT count(*) FROM records WHERE job = 'users' AND chunk = 7"), 50);
  assert_int_equal(qi(c, "SELECT records FROM chunks WHERE job = 'users' AND chunk = 7"), 50);
  assert_int_equal(qi(c, "SELECT attempt FROM chunks"), 2);
  assert_true(qi(c, "SELECT saved_at FROM chunks") > 1600000000000LL);
  /* Every body is the record as sent, byte for byte. */
  for (int k = 0; k < 50; k += 7) {
    record(want, sizeof want, 7, k);
    snprintf(sql, sizeof sql,
             "SELECT body FROM records WHERE job = 'users' AND chunk = 7 AND idx = %d", k);
    assert_string_equal(qt(c, sql), want);
  }

  /* Again: a duplicate with the stored counts; nothing rewritten. */
  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  assert_int_equal(it.status, 1);
  assert_int_equal(it.records, 50);
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 50);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks"), 1);
  free(j);
}

static void test_nulls_keep_slots(void **state) {
  ctx_t *c = *state;
  int nulls[] = {0, 3, 9};
  char *j = chunk("j", 1, 10, nulls, 3, NULL);
  cm_sink_item_t it;
  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 7);
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 7);
  assert_int_equal(qi(c, "SELECT min(idx) FROM records"), 1);
  assert_int_equal(qi(c, "SELECT max(idx) FROM records"), 8);
  assert_int_equal(qi(c, "SELECT count(*) FROM records WHERE idx IN (0, 3, 9)"), 0);
  free(j);
}

static void test_dead_letters(void **state) {
  ctx_t *c = *state;
  int nulls[] = {2};
  char *j = chunk("j", 4, 5, nulls, 1,
                  "[{\"idx\":2,\"reason\":\"missing field fn\",\"record\":{\"a\": 1}},"
                  "{\"line\":17,\"reason\":\"not JSON\",\"raw\":\"{oops\"}]");
  cm_sink_item_t it;
  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 4);
  assert_int_equal(it.dead, 2);
  assert_int_equal(qi(c, "SELECT count(*) FROM dead_letters"), 2);
  assert_string_equal(qt(c, "SELECT reason FROM dead_letters WHERE idx = 2"), "missing field fn");
  assert_string_equal(qt(c, "SELECT reason FROM dead_letters WHERE idx = -17"), "not JSON");
  assert_string_equal(qt(c, "SELECT record FROM dead_letters WHERE idx = -17"), "\"{oops\"");
  assert_int_equal(qi(c, "SELECT dead FROM chunks WHERE chunk = 4"), 2);
  free(j);
}

/* Many dead letters with big records (a dead array over 1 MB) are stored
 * like any other: no buffer of the sink may refuse them for ever. */
static void test_large_dead_array(void **state) {
  ctx_t *c = *state;
  enum { N = 3000 };
  cm_buf_t dead;
  char pad[501];
  int nulls[N];
  memset(pad, 'x', 500);
  pad[500] = '\0';
  cm_buf_init(&dead, 1 << 26);
  assert_int_equal(cm_buf_puts(&dead, "["), 0);
  for (int k = 0; k < N; k++) {
    nulls[k] = k;
    assert_int_equal(cm_buf_printf(&dead,
                                   "%s{\"idx\":%d,\"reason\":\"bad\",\"record\":{\"p\":\"%s\"}}",
                                   k ? "," : "", k, pad),
                     0);
  }
  assert_int_equal(cm_buf_puts(&dead, "]"), 0);
  assert_true(dead.len > (1u << 20));
  char *j = chunk("big", 1, N, nulls, N, dead.data);
  cm_sink_item_t it;
  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  if (it.status != 0) print_error("%s\n", it.err);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.dead, N);
  assert_int_equal(it.records, 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM dead_letters"), N);
  free(j);
  cm_buf_free(&dead);
}

/* A bad chunk in a batch is refused alone, as permanent; the rest commit. */
static void test_bad_items_isolated(void **state) {
  ctx_t *c = *state;
  char *good1 = chunk("j", 1, 20, NULL, 0, NULL), *good2 = chunk("j", 2, 20, NULL, 0, NULL);
  char *bad_dead = chunk("j", 3, 20, NULL, 0, "[42]");
  char *dup_dead =
      chunk("j", 4, 20, NULL, 0, "[{\"idx\":1,\"reason\":\"a\"},{\"idx\":1,\"reason\":\"b\"}]");
  const char *bad_json = "{\"job\":\"j\",\"index\":5,\"data\":[1,";
  cm_sink_item_t it[5];
  item(&it[0], good1);
  item(&it[1], bad_dead);
  item(&it[2], bad_json);
  item(&it[3], dup_dead);
  item(&it[4], good2);
  assert_int_equal(cm_sink_save_batch(c->s, it, 5), 0);
  assert_int_equal(it[0].status, 0);
  assert_int_equal(it[4].status, 0);
  for (int k = 1; k <= 3; k++) {
    if (it[k].status >= 0) print_error("item %d: status %d\n", k, it[k].status);
    assert_true(it[k].status < 0);
    assert_false(it[k].temporary);
    assert_true(it[k].err[0] != '\0');
  }
  assert_non_null(strstr(it[1].err, "dead letter"));
  assert_non_null(strstr(it[3].err, "same idx"));
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 40);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks"), 2);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks WHERE chunk IN (3, 4, 5)"), 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM dead_letters"), 0);
  free(good1);
  free(good2);
  free(bad_dead);
  free(dup_dead);
}

/* The same chunk twice in one batch (a mapper retried while the first copy
 * still queued): written once, both confirmed. */
static void test_same_chunk_twice_in_batch(void **state) {
  ctx_t *c = *state;
  char *a = chunk("j", 9, 30, NULL, 0, NULL), *b = chunk("j", 8, 30, NULL, 0, NULL);
  cm_sink_item_t it[3];
  item(&it[0], a);
  item(&it[1], b);
  item(&it[2], a);
  assert_int_equal(cm_sink_save_batch(c->s, it, 3), 0);
  assert_int_equal(it[0].status + it[2].status, 1); /* one saved (0), one duplicate (1) */
  assert_int_equal(it[0].records, 30);
  assert_int_equal(it[2].records, 30);
  assert_int_equal(it[1].status, 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 60);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks"), 2);
  free(a);
  free(b);
}

static void test_whitespace_compacted(void **state) {
  ctx_t *c = *state;
  const char *j = "{\"job\":\"w\",\"index\":0,\"data\":[ {\"a\" : [1, 2] ,\"b\":\"x y\"} ,\n\t7 ]}";
  cm_sink_item_t it;
  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  assert_int_equal(it.status, 0);
  assert_int_equal(it.records, 2);
  assert_string_equal(qt(c, "SELECT body FROM records WHERE idx = 0"),
                      "{\"a\":[1,2],\"b\":\"x y\"}");
  assert_string_equal(qt(c, "SELECT body FROM records WHERE idx = 1"), "7");
}

static void test_many_chunks_one_batch(void **state) {
  ctx_t *c = *state;
  enum { N = 100 };
  char *js[N];
  cm_sink_item_t it[N];
  /* Out of order, two jobs: the sink sorts for its own reasons, the
   * statuses stay in the caller's order. */
  for (int k = 0; k < N; k++) {
    js[k] = chunk(k % 2 ? "b" : "a", (uint64_t)(N - k), 100, NULL, 0, NULL);
    item(&it[k], js[k]);
  }
  assert_int_equal(cm_sink_save_batch(c->s, it, N), 0);
  for (int k = 0; k < N; k++) {
    assert_int_equal(it[k].status, 0);
    assert_int_equal(it[k].hdr.index, N - k);
    assert_string_equal(it[k].hdr.job, k % 2 ? "b" : "a");
  }
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), N * 100);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks"), N);
  for (int k = 0; k < N; k++) free(js[k]);
}

/* A database whose schema is newer than this saver is refused, named, and
 * left as it is. */
/* chunks.version is the chunk's "version" (the mapper's label), NULL when
 * the chunk has none (an older mapper); a duplicate, in a later batch or in
 * the same one, keeps the first version. */
static void test_version_stored(void **state) {
  ctx_t *c = *state;
  char *a = chunk_v("j", 1, 3, NULL, 0, NULL, "v1"), *b = chunk_v("j", 2, 3, NULL, 0, NULL, NULL);
  char *a2 = chunk_v("j", 1, 3, NULL, 0, NULL, "v2");
  char *d1 = chunk_v("j", 3, 2, NULL, 0, NULL, "v2 \xc3\xa9\"x\""),
       *d2 = chunk_v("j", 3, 2, NULL, 0, NULL, "v1");
  cm_sink_item_t it[2];

  item(&it[0], a);
  item(&it[1], b);
  assert_int_equal(cm_sink_save_batch(c->s, it, 2), 0);
  assert_int_equal(it[0].status, 0);
  assert_int_equal(it[1].status, 0);
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE job = 'j' AND chunk = 1"), "v1");
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks WHERE chunk = 2 AND version IS NULL"), 1);

  item(&it[0], a2);
  assert_int_equal(cm_sink_save_batch(c->s, it, 1), 0);
  assert_int_equal(it[0].status, 1);
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE job = 'j' AND chunk = 1"), "v1");

  item(&it[0], d1);
  item(&it[1], d2);
  assert_int_equal(cm_sink_save_batch(c->s, it, 2), 0);
  assert_int_equal(it[0].status, 0);
  assert_int_equal(it[1].status, 1);
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE job = 'j' AND chunk = 3"),
                      "v2 \xc3\xa9\"x\"");
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks"), 3);
  free(a);
  free(b);
  free(a2);
  free(d1);
  free(d2);
}

static void test_newer_schema_refused(void **state) {
  ctx_t *c = *state;
  cm_sink_t *s2 = NULL;
  char err[512] = "";
  cm_sink_opts_t so = {.db = c->db, .sync = "normal"};
  q(c, c->pg ? "UPDATE chunkmill_schema SET version = 99" : "PRAGMA user_version = 99", NULL, 0);
  assert_int_equal(cm_sink_open(&s2, &so, err, sizeof err), -ENOTSUP);
  assert_null(s2);
  assert_non_null(strstr(err, "schema version 99"));
  assert_int_equal(qi(c, c->pg ? "SELECT version FROM chunkmill_schema" : "PRAGMA user_version"),
                   99);
}

static void test_health_ok(void **state) {
  ctx_t *c = *state;
  char why[256] = "";
  cm_sink_check(c->s);
  assert_true(cm_sink_health(c->s, why, sizeof why));
  assert_string_equal(cm_sink_kind(c->s), c->pg ? "postgres" : "sqlite");
}

/* A database left by a version-1 saver (no chunks.version column) is
 * migrated in place on open: rows kept, the columns added (version, redo
 * = 0), schema version 3. */
static void test_migrates_v1(void **state) {
  ctx_t *c = *state;
  cm_sink_t *s2;
  char *j = chunk("j", 2, 10, NULL, 0, NULL);
  cm_sink_item_t it;
  const char *v1[] = {
      "DROP TABLE records",
      "DROP TABLE chunks",
      "DROP TABLE dead_letters",
      c->pg ? "DROP TABLE chunkmill_schema" : "PRAGMA user_version = 0",
      c->pg ? "CREATE TABLE chunkmill_schema(version integer NOT NULL)" : "SELECT 1",
      c->pg ? "INSERT INTO chunkmill_schema VALUES(1)" : "PRAGMA user_version = 1",
      "CREATE TABLE records(job text NOT NULL, chunk bigint NOT NULL, idx bigint NOT NULL,"
      " body text NOT NULL, PRIMARY KEY(job, chunk, idx))",
      "CREATE TABLE chunks(job text NOT NULL, chunk bigint NOT NULL,"
      " records integer NOT NULL DEFAULT 0, dead integer NOT NULL DEFAULT 0,"
      " attempt integer NOT NULL DEFAULT 0, saved_at bigint NOT NULL, PRIMARY KEY(job, chunk))",
      "CREATE TABLE dead_letters(job text NOT NULL, chunk bigint NOT NULL, idx bigint NOT NULL,"
      " reason text, record text, PRIMARY KEY(job, chunk, idx))",
      "INSERT INTO chunks VALUES('old', 1, 1, 0, 0, 1)",
      "INSERT INTO records VALUES('old', 1, 0, '{}')",
  };
  for (size_t k = 0; k < sizeof v1 / sizeof v1[0]; k++) q(c, v1[k], NULL, 0);
  s2 = open_sink(c->db);
  cm_sink_close(c->s);
  c->s = s2;
  assert_int_equal(qi(c, c->pg ? "SELECT version FROM chunkmill_schema" : "PRAGMA user_version"),
                   3);
  assert_int_equal(
      qi(c, c->pg ? "SELECT count(*) FROM information_schema.columns"
                    " WHERE table_name = 'chunks' AND column_name IN ('version', 'redo')"
                  : "SELECT count(*) FROM pragma_table_info('chunks')"
                    " WHERE name IN ('version', 'redo')"),
      2);
  assert_int_equal(qi(c, "SELECT redo FROM chunks WHERE job = 'old'"), 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM records WHERE job = 'old'"), 1);
  item(&it, j);
  assert_int_equal(cm_sink_save_batch(c->s, &it, 1), 0);
  assert_int_equal(it.status, 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks WHERE version IS NULL"), 2);
  free(j);
}

/* ---- redo by version (docs/jobs.md) ------------------------------------- */

/* Chunk `index` as mapper `version` produced it for redo generation `redo`:
 * n records {"id":k,"v":version}; slots in nulls[] are null; dead may be
 * NULL. */
static char *chunk_r(uint64_t index, int n, const int *nulls, int nn, const char *dead,
                     const char *version, uint32_t redo) {
  cm_buf_t b;
  cm_chunk_hdr_t h = {.index = index, .attempt = 1, .redo = redo};
  snprintf(h.job, sizeof h.job, "%s", "r");
  snprintf(h.version, sizeof h.version, "%s", version);
  cm_buf_init(&b, 1 << 20);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  for (int k = 0; k < n; k++) {
    bool is_null = false;
    for (int j = 0; j < nn; j++) is_null |= nulls[j] == k;
    if (k) assert_int_equal(cm_buf_append(&b, ",", 1), 0);
    if (is_null)
      assert_int_equal(cm_buf_puts(&b, "null"), 0);
    else
      assert_int_equal(cm_buf_printf(&b, "{\"id\":%d,\"v\":\"%s\"}", k, version), 0);
  }
  assert_int_equal(cm_chunk_end(&b, dead, dead ? strlen(dead) : 0), 0);
  return b.data;
}

static int64_t rows_of(ctx_t *c, uint64_t chunk, const char *version) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM records WHERE job = 'r' AND chunk = %" PRIu64
           " AND body LIKE '%%\"v\":\"%s\"%%'",
           chunk, version);
  return qi(c, sql);
}

static void save1(ctx_t *c, cm_sink_item_t *it, const char *json) {
  item(it, json);
  assert_int_equal(cm_sink_save_batch(c->s, it, 1), 0);
  if (it->status < 0) print_error("save: %s\n", it->err);
}

/* A chunk of a higher redo generation replaces the stored one: old records
 * and dead letters gone, the new ones and the marker (version, redo,
 * counts) in; the item says so. Other chunks are untouched. */
static void test_redo_replaces(void **state) {
  ctx_t *c = *state;
  int nulls[] = {3};
  char *v1 = chunk_r(5, 10, nulls, 1, "[{\"idx\":3,\"reason\":\"bad v1\",\"record\":{}}]", "v1", 0);
  char *other = chunk_r(6, 4, NULL, 0, NULL, "v1", 0);
  char *v2 = chunk_r(5, 7, NULL, 0, NULL, "v2", 1);
  cm_sink_item_t it;

  save1(c, &it, v1);
  assert_int_equal(it.status, 0);
  assert_false(it.replaced);
  assert_string_equal(it.version, "v1");
  assert_int_equal(it.redo, 0);
  save1(c, &it, other);
  assert_int_equal(it.status, 0);
  assert_int_equal(rows_of(c, 5, "v1"), 9);
  assert_int_equal(qi(c, "SELECT count(*) FROM dead_letters WHERE chunk = 5"), 1);

  save1(c, &it, v2);
  assert_int_equal(it.status, 0);
  assert_true(it.replaced);
  assert_int_equal(it.records, 7);
  assert_int_equal(it.dead, 0);
  assert_string_equal(it.version, "v2");
  assert_int_equal(it.redo, 1);
  assert_int_equal(qi(c, "SELECT count(*) FROM records WHERE chunk = 5"), 7);
  assert_int_equal(rows_of(c, 5, "v2"), 7);
  assert_int_equal(qi(c, "SELECT count(*) FROM dead_letters WHERE chunk = 5"), 0);
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE chunk = 5"), "v2");
  assert_int_equal(qi(c, "SELECT redo FROM chunks WHERE chunk = 5"), 1);
  assert_int_equal(qi(c, "SELECT records FROM chunks WHERE chunk = 5"), 7);
  assert_int_equal(qi(c, "SELECT dead FROM chunks WHERE chunk = 5"), 0);
  assert_int_equal(qi(c, "SELECT attempt FROM chunks WHERE chunk = 5"), 1);
  /* The neighbour keeps its rows and marker. */
  assert_int_equal(rows_of(c, 6, "v1"), 4);
  assert_int_equal(qi(c, "SELECT redo FROM chunks WHERE chunk = 6"), 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM chunks"), 2);
  free(v1);
  free(other);
  free(v2);
}

/* A late copy of the old version (lower generation), or the redo again
 * (same generation), is a duplicate: nothing rewritten, and it reports
 * what is stored (the redo's version, generation and counts), which is
 * what the Ack carries. */
static void test_redo_not_overwritten_by_late_copy(void **state) {
  ctx_t *c = *state;
  char *v1 = chunk_r(5, 10, NULL, 0, NULL, "v1", 0);
  char *v2 = chunk_r(5, 7, NULL, 0, NULL, "v2", 2);
  char *v1_late = chunk_r(5, 10, NULL, 0, NULL, "v1", 1);
  cm_sink_item_t it;

  save1(c, &it, v1);
  save1(c, &it, v2);
  assert_int_equal(it.status, 0);
  assert_true(it.replaced);

  const char *late[] = {v1, v1_late, v2};
  for (size_t k = 0; k < 3; k++) {
    save1(c, &it, late[k]);
    assert_int_equal(it.status, 1);
    assert_false(it.replaced);
    assert_int_equal(it.records, 7);
    assert_string_equal(it.version, "v2");
    assert_int_equal(it.redo, 2);
  }
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 7);
  assert_int_equal(rows_of(c, 5, "v2"), 7);
  assert_int_equal(qi(c, "SELECT redo FROM chunks WHERE chunk = 5"), 2);
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE chunk = 5"), "v2");
  free(v1);
  free(v2);
  free(v1_late);
}

/* A redo whose new data the store refuses (two dead letters for one idx)
 * is rolled back whole: the delete of the old rows too. The old chunk
 * stays as it was, the rest of the batch commits, and a correct redo
 * later replaces it. */
static void test_redo_failure_keeps_old(void **state) {
  ctx_t *c = *state;
  int nulls[] = {1};
  char *v1 = chunk_r(5, 10, nulls, 1, "[{\"idx\":1,\"reason\":\"v1 dead\"}]", "v1", 0);
  char *bad = chunk_r(5, 6, NULL, 0, "[{\"idx\":1,\"reason\":\"a\"},{\"idx\":1,\"reason\":\"b\"}]",
                      "v2", 1);
  char *good = chunk_r(7, 3, NULL, 0, NULL, "v2", 0);
  char *v2 = chunk_r(5, 6, NULL, 0, NULL, "v2", 1);
  cm_sink_item_t it[2];

  save1(c, &it[0], v1);
  assert_int_equal(it[0].status, 0);
  item(&it[0], bad);
  item(&it[1], good);
  assert_int_equal(cm_sink_save_batch(c->s, it, 2), 0);
  assert_true(it[0].status < 0);
  assert_false(it[0].temporary);
  assert_false(it[0].replaced);
  assert_int_equal(it[1].status, 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM records WHERE chunk = 5"), 9);
  assert_int_equal(rows_of(c, 5, "v1"), 9);
  assert_string_equal(qt(c, "SELECT reason FROM dead_letters WHERE chunk = 5"), "v1 dead");
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE chunk = 5"), "v1");
  assert_int_equal(qi(c, "SELECT redo FROM chunks WHERE chunk = 5"), 0);
  assert_int_equal(qi(c, "SELECT records FROM chunks WHERE chunk = 5"), 9);
  assert_int_equal(rows_of(c, 7, "v2"), 3);

  save1(c, &it[0], v2);
  assert_int_equal(it[0].status, 0);
  assert_true(it[0].replaced);
  assert_int_equal(qi(c, "SELECT count(*) FROM records WHERE chunk = 5"), 6);
  assert_int_equal(rows_of(c, 5, "v2"), 6);
  assert_int_equal(qi(c, "SELECT count(*) FROM dead_letters"), 0);
  free(v1);
  free(bad);
  free(good);
  free(v2);
}

/* Both generations of a chunk in one batch, in either order, over a stored
 * v1 or over nothing: the higher generation is what is stored, exactly
 * once, and the item of the higher generation reports it. */
static void test_redo_both_in_one_batch(void **state) {
  ctx_t *c = *state;
  char *v1 = chunk_r(5, 10, NULL, 0, NULL, "v1", 0);
  char *v2 = chunk_r(5, 7, NULL, 0, NULL, "v2", 1);
  cm_sink_item_t it[2];
  for (int round = 0; round < 4; round++) {
    bool stored = round >= 2, v2_first = round % 2;
    q(c, "DELETE FROM records", NULL, 0);
    q(c, "DELETE FROM chunks", NULL, 0);
    if (stored) save1(c, &it[0], v1);
    item(&it[0], v2_first ? v2 : v1);
    item(&it[1], v2_first ? v1 : v2);
    assert_int_equal(cm_sink_save_batch(c->s, it, 2), 0);
    cm_sink_item_t *hi = &it[v2_first ? 0 : 1], *lo = &it[v2_first ? 1 : 0];
    assert_true(lo->status >= 0);
    assert_int_equal(hi->status, 0);
    assert_string_equal(hi->version, "v2");
    assert_int_equal(hi->redo, 1);
    assert_int_equal(hi->records, 7);
    assert_int_equal(qi(c, "SELECT count(*) FROM records"), 7);
    assert_int_equal(rows_of(c, 5, "v2"), 7);
    assert_int_equal(qi(c, "SELECT redo FROM chunks WHERE chunk = 5"), 1);
  }
  free(v1);
  free(v2);
}

/* ---- PostgreSQL only ---------------------------------------------------- */

/* Bytes PostgreSQL's text refuses (invalid UTF-8) are the chunk's fault:
 * permanent, alone. */
static void test_pg_bad_utf8_permanent(void **state) {
  ctx_t *c = *state;
  char *good = chunk("j", 1, 5, NULL, 0, NULL);
  const char *bad = "{\"job\":\"j\",\"index\":2,\"data\":[\"\xff\xfe\"]}";
  cm_sink_item_t it[2];
  item(&it[0], bad);
  item(&it[1], good);
  assert_int_equal(cm_sink_save_batch(c->s, it, 2), 0);
  assert_true(it[0].status < 0);
  assert_false(it[0].temporary);
  assert_int_equal(it[1].status, 0);
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 5);
  free(good);
}

typedef struct {
  cm_sink_t *s;
  cm_sink_item_t *it;
  volatile int done;
  int rc;
} save_thread_t;

static void *save_thread(void *arg) {
  save_thread_t *a = arg;
  a->rc = cm_sink_save_batch(a->s, a->it, 1);
  a->done = 1;
  return NULL;
}

static void pg_ok(PGconn *pc, const char *sql) {
  PGresult *r = PQexec(pc, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) print_error("%s: %s\n", sql, PQerrorMessage(pc));
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
}

/* Two savers redo the same chunk at once, both having read generation 0:
 * while the other's redo holds the marker (not committed yet), ours waits
 * for it, and once it commits ours finds generation 1 and is a duplicate
 * reporting that redo; the other's rows stay, ours are not written on
 * top. */
static void test_pg_concurrent_redo(void **state) {
  ctx_t *c = *state;
  char *v1 = chunk_r(5, 10, NULL, 0, NULL, "v1", 0);
  char *v2 = chunk_r(5, 7, NULL, 0, NULL, "v2", 1);
  cm_sink_item_t it;
  save_thread_t a = {.s = c->s, .it = &it};
  pthread_t th;
  PGconn *pc;

  save1(c, &it, v1);
  assert_int_equal(it.status, 0);
  pc = PQconnectdb(c->db);
  assert_int_equal(PQstatus(pc), CONNECTION_OK);
  /* The other saver has read the marker (generation 0) and locked it for
   * its redo; ours reads generation 0 too and waits for the lock. */
  pg_ok(pc, "BEGIN");
  {
    PGresult *r = PQexec(pc, "SELECT redo FROM chunks WHERE job = 'r' AND chunk = 5 FOR UPDATE");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
  }
  item(&it, v2);
  assert_int_equal(pthread_create(&th, NULL, save_thread, &a), 0);
  usleep(500 * 1000);
  assert_false(a.done); /* waiting for the other saver's marker */
  pg_ok(pc, "UPDATE chunks SET redo = 1, version = 'other', records = 1, dead = 0"
            " WHERE job = 'r' AND chunk = 5");
  pg_ok(pc, "DELETE FROM records WHERE job = 'r' AND chunk = 5");
  pg_ok(pc, "INSERT INTO records VALUES('r', 5, 0, '{\"v\":\"other\"}')");
  pg_ok(pc, "COMMIT");
  assert_int_equal(pthread_join(th, NULL), 0);
  PQfinish(pc);

  assert_int_equal(a.rc, 0);
  assert_int_equal(it.status, 1);
  assert_false(it.replaced);
  assert_string_equal(it.version, "other");
  assert_int_equal(it.redo, 1);
  assert_int_equal(it.records, 1);
  assert_int_equal(qi(c, "SELECT count(*) FROM records"), 1);
  assert_int_equal(rows_of(c, 5, "other"), 1);
  assert_string_equal(qt(c, "SELECT version FROM chunks WHERE chunk = 5"), "other");
  free(v1);
  free(v2);
}

/* A server that is not there: the sink opens, unhealthy with the reason;
 * a batch fails temporary (the mapper keeps it), nothing is lost. */
static void test_pg_unreachable(void **state) {
  (void)state;
  cm_sink_t *s = NULL;
  char err[512] = "", why[512] = "";
  cm_sink_item_t it;
  char *j = chunk("j", 1, 5, NULL, 0, NULL);
  /* Port 1 on loopback: nothing listens there (privileged, unused). */
  cm_sink_opts_t so = {.db = "postgresql://u:topsecret@127.0.0.1:1/x?connect_timeout=2"};
  assert_int_equal(cm_sink_open(&s, &so, err, sizeof err), 0);
  assert_false(cm_sink_health(s, why, sizeof why));
  assert_non_null(strstr(why, "PostgreSQL unreachable"));
  assert_null(strstr(why, "topsecret"));
  assert_null(strstr(cm_sink_name(s), "topsecret"));
  assert_non_null(strstr(cm_sink_name(s), "***"));
  item(&it, j);
  usleep(250 * 1000); /* past the first backoff: this batch tries again */
  assert_true(cm_sink_save_batch(s, &it, 1) < 0);
  assert_true(it.status < 0);
  assert_true(it.temporary);
  cm_sink_close(s);
  free(j);
}

static void test_redact(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"},
      {"postgres://u@h/db?password=s3cret&sslmode=require",
       "postgres://u@h/db?password=***&sslmode=require"},
      {"postgresql://h/db", "postgresql://h/db"},
      {"host=h password=s3cret dbname=d", "host=h password=*** dbname=d"},
      {"host=h password = 'se cr\\'et' dbname=d", "host=h password=*** dbname=d"},
      {"/var/lib/results.db", "/var/lib/results.db"},
  };
  char out[256];
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    cm_sink_redact(cases[k][0], out, sizeof out);
    assert_string_equal(out, cases[k][1]);
  }
  assert_true(cm_sink_is_postgres("postgresql://x"));
  assert_true(cm_sink_is_postgres("dbname=x"));
  assert_false(cm_sink_is_postgres("results.db"));
  assert_true(cm_sink_is_postgres(" host = h dbname=x"));
  assert_false(cm_sink_is_postgres("/data/a=b.db"));
  assert_false(cm_sink_is_postgres(":memory:"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
  const struct CMUnitTest contract[] = {
      T(test_save_and_duplicate),
      T(test_nulls_keep_slots),
      T(test_dead_letters),
      T(test_large_dead_array),
      T(test_bad_items_isolated),
      T(test_same_chunk_twice_in_batch),
      T(test_whitespace_compacted),
      T(test_many_chunks_one_batch),
      T(test_version_stored),
      T(test_newer_schema_refused),
      T(test_migrates_v1),
      T(test_health_ok),
      T(test_redo_replaces),
      T(test_redo_not_overwritten_by_late_copy),
      T(test_redo_failure_keeps_old),
      T(test_redo_both_in_one_batch),
  };
  const struct CMUnitTest pg_only[] = {
      T(test_pg_bad_utf8_permanent),
      T(test_pg_concurrent_redo),
      cmocka_unit_test(test_pg_unreachable),
  };
  const struct CMUnitTest plain[] = {cmocka_unit_test(test_redact)};
  const char *dsn = getenv("CM_TEST_PG_DSN");
  int failed = cmocka_run_group_tests_name("sink", plain, NULL, NULL);
  g_pg = false;
  failed += cmocka_run_group_tests_name("contract/sqlite", contract, NULL, NULL);
  if (dsn != NULL && dsn[0] != '\0') {
    g_pg = true;
    failed += cmocka_run_group_tests_name("contract/postgres", contract, NULL, NULL);
    failed += cmocka_run_group_tests_name("postgres", pg_only, NULL, NULL);
  } else {
    printf("contract/postgres: not run (CM_TEST_PG_DSN unset; ctest runs it as unit_sink_pg)\n");
  }
  return failed;
}
