/* sink_pg.c - the PostgreSQL sink (sink.h): several savers, one database.
 *
 * Schema (version CM_PG_SCHEMA_VERSION, table chunkmill_schema):
 *   records(job text, chunk bigint, idx bigint, body text)  PK(job, chunk, idx)
 *   chunks(job, chunk, records, dead, attempt, version, saved_at, redo)
 *                                                          PK(job, chunk)
 *   dead_letters(job, chunk, idx, reason, record)  PK(job, chunk, idx)
 * body is text, not jsonb: it keeps the record byte for byte as the mapper
 * sent it (SQLite stores the same text), and text is cheaper to load; jsonb
 * would reorder keys, drop duplicate keys and reformat numbers (1.0 -> 1.0
 * but 1e2 -> 100). Query it with body::jsonb.
 * chunks.version is the mapper version that produced the chunk (the mapped
 * chunk's "version", cm/chunk.h), NULL when the chunk has none; a duplicate
 * keeps the first marker, so the first version. chunks.redo (schema 3) is
 * the chunk's redo generation (docs/jobs.md "Redo by version"), 0 if none.
 *
 * One batch = one transaction (READ COMMITTED):
 *   1. the markers of all chunks of the batch, sorted by (job, chunk), in one
 *      INSERT .. ON CONFLICT DO NOTHING RETURNING: a marker another saver has
 *      inserted but not committed makes this statement wait for its commit
 *      (then it is a duplicate) or rollback (then it is ours). Every saver
 *      takes the marker locks in the same order, so two batches cannot
 *      deadlock on them.
 *   2. for chunks whose marker was already there: their stored counts,
 *      version and redo generation. One whose stored generation is lower
 *      than the chunk's is a redo: its marker is updated in place with
 *      UPDATE .. WHERE redo < G (which takes the row lock and, under READ
 *      COMMITTED, re-checks the generation once another saver's redo of the
 *      same chunk has committed: only one saver replaces a generation, the
 *      other sees a duplicate), and its old records and dead letters are
 *      deleted; then it is written as a new chunk in steps 3 and 4, in the
 *      same transaction. Rare, so one statement per chunk;
 *   3. the records of the new chunks in one COPY (binary), which measured
 *      faster than multi-row INSERTs (README "Performance");
 *   4. dead letters, one INSERT .. SELECT FROM json_array_elements per chunk
 *      that has any;
 *   5. COMMIT. Only then are the chunks reported saved.
 * A chunk whose own data the server refuses (class 22 data exception, class
 * 23 constraint) fails the transaction: it is redone with one savepoint per
 * chunk so only that chunk is refused. Serialization failures and deadlocks
 * are retried here (3 times); every other server error is temporary.
 *
 * Connection: libpq, blocking, on the saver's commit thread. A lost or
 * refused connection is retried with backoff (100 ms doubling to 5 s) by
 * cm_sink_check / the next batch; TCP keepalives and tcp_user_timeout bound
 * how long a vanished server can hold a batch. */
#define _GNU_SOURCE /* qsort_r */
#include "sink.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/buf.h"
#include "cm/err.h"
#include "cm/log.h"

#define CM_PG_SCHEMA_VERSION 3
#define PG_BACKOFF_MIN_MS 100
#define PG_BACKOFF_MAX_MS 5000
#define PG_RETRIES 3
#define PG_COPY_FLUSH (1u << 20)
/* Any constant: savers that start at once migrate one after the other. */
#define PG_MIGRATE_LOCK "727001"

#define CM_STR_(x) #x
#define CM_STR(x) CM_STR_(x)

typedef enum { PGE_OK = 0, PGE_PERM, PGE_RETRY, PGE_TEMP, PGE_CONN } pge_t;

typedef struct {
  cm_chunk_view_t v;
  const cm_json_elems_t *elems; /* may be NULL or !ok: split with cm_json_array_next */
  uint32_t nrec, ndead;
  int alias;     /* >= 0: same (job, chunk) as that earlier item of the batch */
  bool valid;    /* passed the checks before the database */
  bool inserted; /* our marker went in (or replaced a lower redo generation's) */
  bool replaced; /* inserted by a redo: the old rows were deleted */
  bool failed;   /* refused by the server (permanent), perr set */
  char perr[160];
  uint32_t have_rec, have_dead; /* a duplicate's stored counts, */
  uint32_t have_redo;           /* redo generation */
  char have_version[CM_VERSION_MAX]; /* and version ("" when NULL) */
} prep_t;

typedef struct {
  char *conninfo;
  char *password; /* from --db-password-file, or NULL */
  char name[512]; /* conninfo, redacted */
  int stmt_timeout_ms;
  bool use_insert; /* CM_PG_LOAD=insert: multi-row INSERTs instead of COPY */
  PGconn *conn;
  int backoff_ms;
  int64_t next_connect_ms;

  pthread_mutex_t mu; /* guards ok/why (health is read from any thread) */
  bool ok;
  char why[320];

  /* last server error of the commit thread */
  char msg[256];

  /* per batch scratch */
  prep_t *prep;
  size_t *order;
  size_t cap;
  cm_buf_t sql, copy;
  const char **params;
  size_t params_cap;
} pg_t;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_health(pg_t *p, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_health(pg_t *p, bool ok, const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&p->mu);
  p->ok = ok;
  p->why[0] = '\0';
  if (!ok && fmt != NULL) {
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof(p->why), fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&p->mu);
}

/* One line: libpq's messages end in newlines and indent hints with tabs. */
static void flatten(char *dst, size_t cap, const char *src) {
  size_t o = 0;
  bool sp = false;
  if (cap == 0) return;
  for (; src && *src && o + 1 < cap; src++) {
    if (*src == '\n' || *src == '\t' || *src == '\r') {
      sp = o > 0;
      continue;
    }
    if (sp && o + 2 < cap) dst[o++] = ' ';
    sp = false;
    dst[o++] = *src;
  }
  dst[o] = '\0';
}

/* Classifies a failed result (or NULL: libpq could not even send/receive)
 * and keeps the server's message in p->msg. */
static pge_t classify(pg_t *p, PGresult *res) {
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  flatten(p->msg, sizeof(p->msg),
          res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
                                              : PQerrorMessage(p->conn));
  if (PQstatus(p->conn) == CONNECTION_BAD || state == NULL) return PGE_CONN;
  if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) return PGE_RETRY;
  /* 22: data exception (bad UTF-8, a bad number in a dead letter),
   * 23: integrity (two dead letters for one idx): the chunk's own data. */
  if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0) return PGE_PERM;
  if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
      strcmp(state, "57P03") == 0)
    return PGE_CONN;
  /* Everything else is the server's condition, not the chunk's: 53100 disk
   * full, 53200 out of memory, 57014 statement timeout, 25006 read-only
   * standby, 55P03 lock timeout, 58030 I/O error, 42P01 a table dropped... */
  return PGE_TEMP;
}

/* Runs sql (no parameters) expecting want; on failure classifies. */
static pge_t exec0(pg_t *p, const char *sql, ExecStatusType want, PGresult **keep) {
  PGresult *res = PQexec(p->conn, sql);
  pge_t e = PGE_OK;
  if (res == NULL || PQresultStatus(res) != want) e = classify(p, res);
  if (keep != NULL && e == PGE_OK)
    *keep = res;
  else
    PQclear(res);
  return e;
}

static void drop_conn(pg_t *p) {
  if (p->conn != NULL) PQfinish(p->conn);
  p->conn = NULL;
}

/* ---- schema ------------------------------------------------------------- */

static const char *const schema_v1[] = {
    "CREATE TABLE IF NOT EXISTS records("
    " job text NOT NULL, chunk bigint NOT NULL, idx bigint NOT NULL,"
    " body text NOT NULL," /* the mapped record as sent: valid JSON text */
    " PRIMARY KEY(job, chunk, idx))",
    "CREATE TABLE IF NOT EXISTS chunks("
    " job text NOT NULL, chunk bigint NOT NULL,"
    " records integer NOT NULL DEFAULT 0, dead integer NOT NULL DEFAULT 0,"
    " attempt integer NOT NULL DEFAULT 0,"
    " saved_at bigint NOT NULL," /* unix time, milliseconds */
    " PRIMARY KEY(job, chunk))",
    "CREATE TABLE IF NOT EXISTS dead_letters("
    " job text NOT NULL, chunk bigint NOT NULL,"
    " idx bigint NOT NULL," /* slot in data, or -line for a source dead letter */
    " reason text, record text, PRIMARY KEY(job, chunk, idx))",
};
static const char *const schema_v2[] = {
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS version text",
};
static const char *const schema_v3[] = {
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS redo bigint NOT NULL DEFAULT 0",
};

/* Creates or migrates the schema in one transaction, under an advisory
 * lock so savers starting together do not race. A newer schema: -ENOTSUP,
 * nothing changed. */
static int migrate(pg_t *p, char *err, size_t errlen) {
  PGresult *res = NULL;
  long v = 0;
  bool exists = false;
  pge_t e = exec0(p, "BEGIN", PGRES_COMMAND_OK, NULL);
  if (e == PGE_OK)
    e = exec0(p, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")", PGRES_TUPLES_OK, NULL);
  if (e == PGE_OK)
    e = exec0(p, "SELECT to_regclass('chunkmill_schema') IS NOT NULL", PGRES_TUPLES_OK, &res);
  if (e == PGE_OK) {
    exists = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    res = NULL;
  }
  if (e == PGE_OK && exists) {
    e = exec0(p, "SELECT coalesce(max(version), 0) FROM chunkmill_schema", PGRES_TUPLES_OK, &res);
    if (e == PGE_OK) {
      v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
      PQclear(res);
      res = NULL;
    }
  }
  if (e != PGE_OK) goto fail;
  if (v > CM_PG_SCHEMA_VERSION) {
    (void)exec0(p, "ROLLBACK", PGRES_COMMAND_OK, NULL);
    cm_set_err(err, errlen,
               "results database %s has schema version %ld; this saver supports up to %d", p->name,
               v, CM_PG_SCHEMA_VERSION);
    return -ENOTSUP;
  }
  if (!exists)
    e = exec0(p, "CREATE TABLE chunkmill_schema(version integer NOT NULL)", PGRES_COMMAND_OK, NULL);
  if (v < 1)
    for (size_t k = 0; e == PGE_OK && k < sizeof(schema_v1) / sizeof(schema_v1[0]); k++)
      e = exec0(p, schema_v1[k], PGRES_COMMAND_OK, NULL);
  if (v < 2)
    for (size_t k = 0; e == PGE_OK && k < sizeof(schema_v2) / sizeof(schema_v2[0]); k++)
      e = exec0(p, schema_v2[k], PGRES_COMMAND_OK, NULL);
  if (v < 3)
    for (size_t k = 0; e == PGE_OK && k < sizeof(schema_v3) / sizeof(schema_v3[0]); k++)
      e = exec0(p, schema_v3[k], PGRES_COMMAND_OK, NULL);
  /* Later versions add their steps here: if (v < 4) { ... }. */
  if (e == PGE_OK && v < CM_PG_SCHEMA_VERSION)
    e = exec0(p,
              "DELETE FROM chunkmill_schema;"
              " INSERT INTO chunkmill_schema(version) VALUES(" CM_STR(CM_PG_SCHEMA_VERSION) ")",
              PGRES_COMMAND_OK, NULL);
  if (e == PGE_OK) e = exec0(p, "COMMIT", PGRES_COMMAND_OK, NULL);
  if (e == PGE_OK) return 0;
fail:
  PQclear(res);
  cm_set_err(err, errlen, "results database %s: creating or migrating the schema: %s", p->name,
             p->msg);
  if (p->conn != NULL && PQstatus(p->conn) == CONNECTION_OK)
    (void)exec0(p, "ROLLBACK", PGRES_COMMAND_OK, NULL);
  return e == PGE_CONN ? -ECONNRESET : -EIO;
}

static bool pg_health(void *impl, char *why, size_t whylen) {
  pg_t *p = impl;
  bool ok;
  pthread_mutex_lock(&p->mu);
  ok = p->ok;
  if (!ok) snprintf(why, whylen, "%s", p->why);
  pthread_mutex_unlock(&p->mu);
  return ok;
}

/* ---- connection --------------------------------------------------------- */

/* Server notices (e.g. "terminating connection due to immediate shutdown")
 * go to the saver's log as JSON lines instead of raw text on stderr. */
static void on_notice(void *arg, const char *message) {
  char line[512];
  (void)arg;
  flatten(line, sizeof(line), message);
  cm_log_warn("PostgreSQL: %s", line);
}

/* Connects (when the backoff allows), sets the session up and migrates.
 * 0, or a negative errno with the health reason set. -ENOTSUP: the schema
 * is newer than this saver. */
static int pg_connect(pg_t *p, char *err, size_t errlen) {
  char timeout[32], why[256];
  const char *kw[16], *val[16];
  int n = 0, rc;
  int64_t t = mono_ms();
  if (p->conn != NULL && PQstatus(p->conn) == CONNECTION_OK) return 0;
  drop_conn(p);
  if (t < p->next_connect_ms) {
    char cur[320];
    (void)pg_health(p, cur, sizeof(cur));
    cm_set_err(err, errlen, "%s", cur);
    return -EAGAIN;
  }
  /* Defaults first: the connection string given (dbname, expanded) may
   * override them; the password file, last, overrides it. */
  kw[n] = "connect_timeout", val[n++] = "5";
  kw[n] = "application_name", val[n++] = "chunkmill-saver";
  kw[n] = "keepalives", val[n++] = "1";
  kw[n] = "keepalives_idle", val[n++] = "10";
  kw[n] = "keepalives_interval", val[n++] = "5";
  kw[n] = "keepalives_count", val[n++] = "3";
  kw[n] = "tcp_user_timeout", val[n++] = "30000";
  kw[n] = "dbname", val[n++] = p->conninfo;
  if (p->password != NULL) kw[n] = "password", val[n++] = p->password;
  kw[n] = NULL, val[n] = NULL;
  p->conn = PQconnectdbParams(kw, val, 1);
  if (p->conn == NULL || PQstatus(p->conn) != CONNECTION_OK) {
    flatten(why, sizeof(why), p->conn ? PQerrorMessage(p->conn) : "out of memory");
    drop_conn(p);
    p->next_connect_ms = mono_ms() + p->backoff_ms;
    set_health(p, false, "PostgreSQL unreachable: %s; next attempt in %d ms", why, p->backoff_ms);
    cm_set_err(err, errlen, "PostgreSQL unreachable: %s", why);
    p->backoff_ms = p->backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : p->backoff_ms * 2;
    return -ECONNREFUSED;
  }
  PQsetNoticeProcessor(p->conn, on_notice, NULL);
  snprintf(timeout, sizeof(timeout), "SET statement_timeout = %d", p->stmt_timeout_ms);
  if (exec0(p, timeout, PGRES_COMMAND_OK, NULL) != PGE_OK ||
      exec0(p, "SET client_min_messages = warning", PGRES_COMMAND_OK, NULL) != PGE_OK) {
    cm_set_err(err, errlen, "PostgreSQL session setup: %s", p->msg);
    set_health(p, false, "PostgreSQL session setup failed: %s", p->msg);
    drop_conn(p);
    p->next_connect_ms = mono_ms() + p->backoff_ms;
    return -EIO;
  }
  rc = migrate(p, err, errlen);
  if (rc != 0) {
    set_health(p, false, "%s", err);
    drop_conn(p);
    p->next_connect_ms = mono_ms() + p->backoff_ms;
    p->backoff_ms = p->backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : p->backoff_ms * 2;
    return rc;
  }
  p->backoff_ms = PG_BACKOFF_MIN_MS;
  set_health(p, true, NULL);
  return 0;
}

/* ---- saving ------------------------------------------------------------- */

static int cmp_order(const void *a, const void *b, void *ctx) {
  const prep_t *prep = ctx;
  size_t i = *(const size_t *)a, j = *(const size_t *)b;
  int c = strcmp(prep[i].v.hdr.job, prep[j].v.hdr.job);
  if (c != 0) return c;
  if (prep[i].v.hdr.index != prep[j].v.hdr.index)
    return prep[i].v.hdr.index < prep[j].v.hdr.index ? -1 : 1;
  /* Of two copies of one chunk, the highest redo generation owns it (the
   * other is its duplicate); then the first. */
  if (prep[i].v.hdr.redo != prep[j].v.hdr.redo)
    return prep[i].v.hdr.redo > prep[j].v.hdr.redo ? -1 : 1;
  return i < j ? -1 : i > j; /* stable: the first of two equal keys owns it */
}

static void put_be(cm_buf_t *b, uint64_t v, int bytes) {
  for (int k = bytes - 1; k >= 0; k--) b->data[b->len++] = (char)(v >> (8 * k));
}

/* The next non-null record of q's data: 1 with rec, el and idx (its
 * slot) set, 0 at the end. k, pos, slot: iteration state, all 0 at first. */
static int next_record(const prep_t *q, size_t *k, size_t *pos, int64_t *slot, const char **rec,
                       size_t *el, int64_t *idx) {
  for (;;) {
    if (q->elems != NULL && q->elems->ok) {
      if (*k == q->elems->n) return 0;
      *rec = q->v.data + q->elems->start[*k];
      *el = q->elems->end[*k] - q->elems->start[*k];
      (*k)++;
    } else if (cm_json_array_next(q->v.data, q->v.data_len, pos, rec, el) != 1) {
      return 0;
    }
    *idx = (*slot)++;
    if (!(*el == 4 && memcmp(*rec, "null", 4) == 0)) return 1;
  }
}

static pge_t copy_flush(pg_t *p) {
  if (p->copy.len > 0 && PQputCopyData(p->conn, p->copy.data, (int)p->copy.len) != 1) {
    flatten(p->msg, sizeof(p->msg), PQerrorMessage(p->conn));
    return PGE_CONN;
  }
  cm_buf_reset(&p->copy);
  return PGE_OK;
}

/* The records of the selected new chunks, in one binary COPY. */
static pge_t copy_records(pg_t *p, size_t *sel, size_t nsel) {
  static const char hdr[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
  PGresult *res;
  pge_t e = PGE_OK;
  bool any = false;
  for (size_t s = 0; s < nsel; s++) any |= p->prep[sel[s]].inserted && p->prep[sel[s]].nrec > 0;
  if (!any) return PGE_OK;
  e = exec0(p, "COPY records(job, chunk, idx, body) FROM STDIN (FORMAT binary)", PGRES_COPY_IN,
            NULL);
  if (e != PGE_OK) return e;
  cm_buf_reset(&p->copy);
  if (cm_buf_append(&p->copy, hdr, sizeof(hdr)) != 0) e = PGE_TEMP;
  for (size_t s = 0; e == PGE_OK && s < nsel; s++) {
    const prep_t *q = &p->prep[sel[s]];
    size_t k = 0, pos = 0, el, jl = strlen(q->v.hdr.job);
    int64_t slot = 0, idx;
    const char *rec;
    if (!q->inserted) continue;
    while (e == PGE_OK && next_record(q, &k, &pos, &slot, &rec, &el, &idx) == 1) {
      size_t blen = q->v.data_ws ? cm_json_compact(rec, el, NULL) : el;
      if (cm_buf_reserve(&p->copy, 2 + 4 + jl + 4 + 8 + 4 + 8 + 4 + blen) != 0) {
        cm_set_err(p->msg, sizeof(p->msg), "out of memory for COPY");
        e = PGE_TEMP;
        break;
      }
      put_be(&p->copy, 4, 2);
      put_be(&p->copy, jl, 4);
      memcpy(p->copy.data + p->copy.len, q->v.hdr.job, jl);
      p->copy.len += jl;
      put_be(&p->copy, 8, 4);
      put_be(&p->copy, q->v.hdr.index, 8);
      put_be(&p->copy, 8, 4);
      put_be(&p->copy, (uint64_t)idx, 8);
      put_be(&p->copy, blen, 4);
      if (blen != el)
        (void)cm_json_compact(rec, el, p->copy.data + p->copy.len);
      else
        memcpy(p->copy.data + p->copy.len, rec, el);
      p->copy.len += blen;
      if (p->copy.len >= PG_COPY_FLUSH) e = copy_flush(p);
    }
  }
  if (e == PGE_OK) {
    if (cm_buf_reserve(&p->copy, 2) == 0) {
      put_be(&p->copy, 0xffff, 2);
      e = copy_flush(p);
    } else {
      e = PGE_TEMP;
    }
  }
  cm_buf_reset(&p->copy);
  if (PQputCopyEnd(p->conn, e == PGE_OK ? NULL : "chunkmill: batch abandoned") != 1 &&
      e == PGE_OK) {
    flatten(p->msg, sizeof(p->msg), PQerrorMessage(p->conn));
    e = PGE_CONN;
  }
  while ((res = PQgetResult(p->conn)) != NULL) {
    if (PQresultStatus(res) != PGRES_COMMAND_OK && e == PGE_OK) e = classify(p, res);
    PQclear(res);
  }
  return e;
}

/* The alternative to COPY, kept for the comparison in README "Performance"
 * (CM_PG_LOAD=insert in the environment): multi-row INSERTs of
 * PG_INSERT_ROWS rows, parameters in binary form (no copies, no escaping).
 * Measured slower than COPY, so COPY is the default. */
#define PG_INSERT_ROWS 256
static pge_t insert_records(pg_t *p, size_t *sel, size_t nsel) {
  static __thread char ints[PG_INSERT_ROWS][2][8];
  static __thread const char *vals[PG_INSERT_ROWS * 4];
  static __thread int lens[PG_INSERT_ROWS * 4], fmts[PG_INSERT_ROWS * 4];
  static __thread Oid types[PG_INSERT_ROWS * 4];
  char sqlbuf[64 + PG_INSERT_ROWS * 40];
  int rows = 0;
  pge_t e = PGE_OK;
  size_t need = 0;
  /* Compacted records live in p->copy until the batch's statements ran:
   * reserved once, so no pointer into it moves. */
  cm_buf_reset(&p->copy);
  for (size_t s = 0; s < nsel; s++)
    if (p->prep[sel[s]].inserted && p->prep[sel[s]].v.data_ws) need += p->prep[sel[s]].v.data_len;
  if (need > 0 && cm_buf_reserve(&p->copy, need) != 0) return PGE_TEMP;
  for (size_t s = 0; s <= nsel && e == PGE_OK; s++) {
    const prep_t *q = s < nsel ? &p->prep[sel[s]] : NULL;
    size_t k = 0, pos = 0, el;
    int64_t slot = 0, idx;
    const char *rec;
    int more = q != NULL && q->inserted;
    for (;;) {
      int got = more ? next_record(q, &k, &pos, &slot, &rec, &el, &idx) : 0;
      if (got == 1) {
        size_t blen = q->v.data_ws ? cm_json_compact(rec, el, NULL) : el;
        int r = rows * 4;
        for (int b = 0; b < 8; b++) {
          ints[rows][0][b] = (char)(q->v.hdr.index >> (56 - 8 * b));
          ints[rows][1][b] = (char)((uint64_t)idx >> (56 - 8 * b));
        }
        vals[r] = q->v.hdr.job, lens[r] = (int)strlen(q->v.hdr.job), types[r] = 25;
        vals[r + 1] = ints[rows][0], lens[r + 1] = 8, types[r + 1] = 20;
        vals[r + 2] = ints[rows][1], lens[r + 2] = 8, types[r + 2] = 20;
        if (blen != el) {
          vals[r + 3] = p->copy.data + p->copy.len;
          p->copy.len += cm_json_compact(rec, el, p->copy.data + p->copy.len);
        } else {
          vals[r + 3] = rec;
        }
        lens[r + 3] = (int)blen, types[r + 3] = 25;
        for (int f = 0; f < 4; f++) fmts[r + f] = 1;
        rows++;
      }
      if (rows == PG_INSERT_ROWS || (got != 1 && s == nsel && rows > 0)) {
        size_t o = (size_t)snprintf(sqlbuf, sizeof(sqlbuf),
                                    "INSERT INTO records(job, chunk, idx, body) VALUES");
        PGresult *res;
        for (int r = 0; r < rows; r++)
          o += (size_t)snprintf(sqlbuf + o, sizeof(sqlbuf) - o, "%s($%d,$%d,$%d,$%d)", r ? "," : "",
                                4 * r + 1, 4 * r + 2, 4 * r + 3, 4 * r + 4);
        res = PQexecParams(p->conn, sqlbuf, rows * 4, types, vals, lens, fmts, 0);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) e = classify(p, res);
        PQclear(res);
        rows = 0;
        if (e != PGE_OK) break;
      }
      if (got != 1) break;
    }
  }
  cm_buf_reset(&p->copy);
  return e;
}

/* Grows the parameter array and resets p->sql. */
static int params_need(pg_t *p, size_t n) {
  cm_buf_reset(&p->sql);
  if (n > p->params_cap) {
    const char **np = realloc(p->params, n * sizeof(*np));
    if (np == NULL) return -ENOMEM;
    p->params = np;
    p->params_cap = n;
  }
  return 0;
}

typedef struct {
  char chunk[24], rec[16], dead[16], att[16], redo[16];
} nums_t;

/* The selected chunk not yet marked inserted whose job and chunk number (as
 * text, nums[s].chunk) are those of a result row, or NULL. */
static prep_t *find_pending(pg_t *p, const size_t *sel, size_t nsel, const nums_t *nums,
                            const char *job, const char *chunk) {
  for (size_t s = 0; s < nsel; s++) {
    prep_t *q = &p->prep[sel[s]];
    if (!q->inserted && strcmp(nums[s].chunk, chunk) == 0 && strcmp(q->v.hdr.job, job) == 0)
      return q;
  }
  return NULL;
}

/* Step 2's redo of q (its stored generation was lower): takes over the
 * marker, or finds that another saver's redo got there first (then q stays
 * a duplicate, with the counts of that redo). */
static pge_t pg_replace(pg_t *p, prep_t *q, const nums_t *n, const char *ts) {
  const char *pv[8] = {q->v.hdr.job, n->chunk, n->rec, n->dead, n->att,
                       q->v.hdr.version[0] ? q->v.hdr.version : NULL, ts, n->redo};
  PGresult *res = PQexecParams(p->conn,
                               "UPDATE chunks SET records = $3, dead = $4, attempt = $5,"
                               " version = $6, saved_at = $7, redo = $8"
                               " WHERE job = $1 AND chunk = $2 AND redo < $8",
                               8, NULL, pv, NULL, NULL, 0);
  pge_t e;
  if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) goto fail;
  if (strcmp(PQcmdTuples(res), "1") != 0) {
    /* Replaced by another saver meanwhile, with this generation or a later
     * one: what it stored is what this saver reports. */
    PQclear(res);
    res = PQexecParams(p->conn,
                       "SELECT records, dead, version, redo FROM chunks"
                       " WHERE job = $1 AND chunk = $2",
                       2, NULL, pv, NULL, NULL, 0);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) goto fail;
    if (PQntuples(res) != 1) {
      PQclear(res);
      cm_set_err(p->msg, sizeof(p->msg), "a chunk marker vanished while saving");
      return PGE_TEMP;
    }
    q->have_rec = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    q->have_dead = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    snprintf(q->have_version, sizeof(q->have_version), "%s", PQgetvalue(res, 0, 2));
    q->have_redo = (uint32_t)strtoul(PQgetvalue(res, 0, 3), NULL, 10);
    PQclear(res);
    return PGE_OK;
  }
  PQclear(res);
  res = PQexecParams(p->conn, "DELETE FROM records WHERE job = $1 AND chunk = $2", 2, NULL, pv,
                     NULL, NULL, 0);
  if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) goto fail;
  PQclear(res);
  res = PQexecParams(p->conn, "DELETE FROM dead_letters WHERE job = $1 AND chunk = $2", 2, NULL,
                     pv, NULL, NULL, 0);
  if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) goto fail;
  PQclear(res);
  q->inserted = true;
  q->replaced = true;
  return PGE_OK;
fail:
  e = classify(p, res);
  PQclear(res);
  return e;
}

/* Steps 1-4 of the header comment for the selected chunks, inside the
 * caller's transaction. */
static pge_t pg_write(pg_t *p, size_t *sel, size_t nsel, nums_t *nums, const char *ts) {
  PGresult *res = NULL;
  size_t np = 0, ndup = 0;
  int rc = 0;
  pge_t e;

  for (size_t s = 0; s < nsel; s++) {
    prep_t *q = &p->prep[sel[s]];
    q->inserted = false;
    snprintf(nums[s].chunk, sizeof(nums[s].chunk), "%" PRIu64, q->v.hdr.index);
    snprintf(nums[s].rec, sizeof(nums[s].rec), "%u", q->nrec);
    snprintf(nums[s].dead, sizeof(nums[s].dead), "%u", q->ndead);
    snprintf(nums[s].att, sizeof(nums[s].att), "%u", q->v.hdr.attempt);
    snprintf(nums[s].redo, sizeof(nums[s].redo), "%u", q->v.hdr.redo);
    q->replaced = false;
  }
  /* 1. markers */
  if (params_need(p, nsel * 8) != 0) goto nomem;
  rc |= cm_buf_puts(&p->sql, "INSERT INTO chunks(job, chunk, records, dead, attempt, version, "
                             "saved_at, redo) VALUES");
  for (size_t s = 0; s < nsel; s++) {
    prep_t *q = &p->prep[sel[s]];
    rc |= cm_buf_printf(&p->sql, "%s($%zu,$%zu,$%zu,$%zu,$%zu,$%zu,$%zu,$%zu)", s ? "," : "",
                        np + 1, np + 2, np + 3, np + 4, np + 5, np + 6, np + 7, np + 8);
    p->params[np++] = q->v.hdr.job;
    p->params[np++] = nums[s].chunk;
    p->params[np++] = nums[s].rec;
    p->params[np++] = nums[s].dead;
    p->params[np++] = nums[s].att;
    p->params[np++] = q->v.hdr.version[0] ? q->v.hdr.version : NULL;
    p->params[np++] = ts;
    p->params[np++] = nums[s].redo;
  }
  rc |= cm_buf_puts(&p->sql, " ON CONFLICT (job, chunk) DO NOTHING RETURNING job, chunk");
  if (rc != 0) goto nomem;
  res = PQexecParams(p->conn, p->sql.data, (int)np, NULL, p->params, NULL, NULL, 0);
  if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) goto fail;
  for (int r = 0; r < PQntuples(res); r++) {
    prep_t *q = find_pending(p, sel, nsel, nums, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
    if (q != NULL) q->inserted = true;
  }
  PQclear(res);
  res = NULL;

  /* 2. the counts of chunks saved before */
  np = 0;
  if (params_need(p, nsel * 2) != 0) goto nomem;
  rc |=
      cm_buf_puts(&p->sql, "SELECT job, chunk, records, dead, version, redo FROM chunks"
                           " WHERE (job, chunk) IN (");
  for (size_t s = 0; s < nsel; s++) {
    prep_t *q = &p->prep[sel[s]];
    if (q->inserted) continue;
    rc |= cm_buf_printf(&p->sql, "%s($%zu,$%zu::bigint)", ndup ? "," : "", np + 1, np + 2);
    p->params[np++] = q->v.hdr.job;
    p->params[np++] = nums[s].chunk;
    ndup++;
  }
  rc |= cm_buf_puts(&p->sql, ")");
  if (rc != 0) goto nomem;
  if (ndup > 0) {
    size_t found = 0;
    res = PQexecParams(p->conn, p->sql.data, (int)np, NULL, p->params, NULL, NULL, 0);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) goto fail;
    for (int r = 0; r < PQntuples(res); r++) {
      prep_t *q = find_pending(p, sel, nsel, nums, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
      if (q != NULL) {
        q->have_rec = (uint32_t)strtoul(PQgetvalue(res, r, 2), NULL, 10);
        q->have_dead = (uint32_t)strtoul(PQgetvalue(res, r, 3), NULL, 10);
        snprintf(q->have_version, sizeof(q->have_version), "%s", PQgetvalue(res, r, 4));
        q->have_redo = (uint32_t)strtoul(PQgetvalue(res, r, 5), NULL, 10);
        found++;
      }
    }
    PQclear(res);
    res = NULL;
    if (found != ndup) {
      cm_set_err(p->msg, sizeof(p->msg), "a chunk marker vanished while saving");
      return PGE_TEMP;
    }
    for (size_t s = 0; s < nsel; s++) {
      prep_t *q = &p->prep[sel[s]];
      if (!q->inserted && q->have_redo < q->v.hdr.redo) {
        e = pg_replace(p, q, &nums[s], ts);
        if (e != PGE_OK) return e;
      }
    }
  }

  /* 3. records */
  e = p->use_insert ? insert_records(p, sel, nsel) : copy_records(p, sel, nsel);
  if (e != PGE_OK) return e;

  /* 4. dead letters */
  for (size_t s = 0; s < nsel; s++) {
    prep_t *q = &p->prep[sel[s]];
    /* The dead array goes as it is, as a binary-format json parameter
     * (json's binary form is its text): no copy, no size limit of ours. */
    static const Oid types[3] = {0, 0, 114 /* json */};
    const int fmts[3] = {0, 0, 1};
    int lens[3] = {0, 0, (int)q->v.dead_len};
    const char *pv[3];
    const char *state;
    if (!q->inserted || q->v.dead == NULL) continue;
    pv[0] = q->v.hdr.job;
    pv[1] = nums[s].chunk;
    pv[2] = q->v.dead;
    /* A non-object entry, or one with neither idx nor line, yields a NULL
     * idx and fails NOT NULL: the chunk is refused rather than a dead
     * letter dropped. -> keeps the JSON text as sent. */
    res = PQexecParams(p->conn,
                       "INSERT INTO dead_letters(job, chunk, idx, reason, record)"
                       " SELECT $1, $2::bigint,"
                       "  CASE WHEN json_typeof(e) = 'object' THEN"
                       "   coalesce((e ->> 'idx')::bigint, -((e ->> 'line')::bigint)) END,"
                       "  CASE WHEN json_typeof(e) = 'object' THEN e ->> 'reason' END,"
                       "  CASE WHEN json_typeof(e) = 'object' THEN"
                       "   coalesce(e -> 'record', e -> 'raw')::text END"
                       " FROM json_array_elements($3) AS e",
                       3, types, pv, lens, fmts, 0);
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
      state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
      e = classify(p, res);
      if (state != NULL && strcmp(state, "23502") == 0)
        cm_set_err(p->msg, sizeof(p->msg),
                   "a dead letter is not an object with \"idx\" or \"line\"");
      else if (state != NULL && strcmp(state, "23505") == 0)
        cm_set_err(p->msg, sizeof(p->msg), "two dead letters for the same idx/line");
      PQclear(res);
      return e;
    }
    PQclear(res);
  }
  return PGE_OK;

nomem:
  cm_set_err(p->msg, sizeof(p->msg), "out of memory building the batch");
  return PGE_TEMP;
fail:
  e = classify(p, res);
  PQclear(res);
  return e;
}

/* One transaction over the selected chunks; per_item: one savepoint each,
 * a chunk the server refuses (PGE_PERM) is rolled back alone and marked
 * failed. */
static pge_t txn(pg_t *p, size_t *sel, size_t nsel, bool per_item, nums_t *nums, const char *ts) {
  PGresult *res = NULL;
  pge_t e;
  for (size_t s = 0; s < nsel; s++) p->prep[sel[s]].failed = false;
  /* Never inherit a transaction (a failure path that could not roll back,
   * e.g. an error that reached libpq late): BEGIN inside an aborted one
   * would fail every batch from here on. */
  if (PQtransactionStatus(p->conn) != PQTRANS_IDLE) {
    cm_log_warn(
        "PostgreSQL: rolling back a transaction an earlier failure left open (state %d, last "
        "error: %s)",
        (int)PQtransactionStatus(p->conn), p->msg);
    (void)exec0(p, "ROLLBACK", PGRES_COMMAND_OK, NULL);
  }
  e = exec0(p, "BEGIN", PGRES_COMMAND_OK, NULL);
  if (e != PGE_OK) goto rollback;
  if (!per_item) {
    e = pg_write(p, sel, nsel, nums, ts);
    if (e != PGE_OK) goto rollback;
  } else {
    for (size_t s = 0; s < nsel; s++) {
      prep_t *q = &p->prep[sel[s]];
      e = exec0(p, "SAVEPOINT cm_item", PGRES_COMMAND_OK, NULL);
      if (e != PGE_OK) goto rollback;
      e = pg_write(p, &sel[s], 1, &nums[s], ts);
      if (e == PGE_PERM) {
        q->failed = true;
        q->inserted = false;
        cm_set_err(q->perr, sizeof(q->perr), "%s", p->msg);
        e = exec0(p, "ROLLBACK TO SAVEPOINT cm_item", PGRES_COMMAND_OK, NULL);
      }
      if (e == PGE_OK) e = exec0(p, "RELEASE SAVEPOINT cm_item", PGRES_COMMAND_OK, NULL);
      if (e != PGE_OK) goto rollback;
    }
  }
  /* A lost connection here leaves the outcome unknown: reported temporary,
   * the mapper sends the chunk again and finds its marker if it committed.
   * COMMIT of a transaction the server had aborted answers "ROLLBACK" with
   * success status: that is a failure, never an acknowledgement. */
  e = exec0(p, "COMMIT", PGRES_COMMAND_OK, &res);
  if (e == PGE_OK) {
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
      cm_set_err(p->msg, sizeof(p->msg), "the server rolled the transaction back (%s)",
                 PQcmdStatus(res));
      e = PGE_TEMP;
    }
    PQclear(res);
  }
  return e;

rollback:
  if (PQstatus(p->conn) == CONNECTION_OK && PQtransactionStatus(p->conn) != PQTRANS_IDLE) {
    char keep[256];
    memcpy(keep, p->msg, sizeof(keep));
    (void)exec0(p, "ROLLBACK", PGRES_COMMAND_OK, NULL);
    memcpy(p->msg, keep, sizeof(keep));
  }
  return e;
}

static int prep_grow(pg_t *p, size_t n) {
  if (n <= p->cap) return 0;
  prep_t *np = realloc(p->prep, n * sizeof(*np));
  if (np == NULL) return -ENOMEM;
  p->prep = np;
  size_t *no = realloc(p->order, n * sizeof(*no));
  if (no == NULL) return -ENOMEM;
  p->order = no;
  p->cap = n;
  return 0;
}

static void fail_items(cm_sink_item_t *items, size_t n, const prep_t *prep, int rc,
                       const char *why) {
  for (size_t k = 0; k < n; k++) {
    if (prep != NULL && !prep[k].valid) continue; /* keeps its own error */
    items[k].status = rc;
    items[k].temporary = true;
    items[k].records = items[k].dead = 0;
    items[k].replaced = false;
    cm_set_err(items[k].err, sizeof(items[k].err), "batch not saved: %s", why);
  }
}

static int pg_save_batch(void *impl, cm_sink_item_t *items, size_t n) {
  pg_t *p = impl;
  size_t nsel = 0;
  nums_t *nums = NULL;
  char ts[24], why[320];
  pge_t e = PGE_OK;
  int rc;

  for (size_t k = 0; k < n; k++) {
    items[k].status = 0;
    items[k].temporary = false;
    items[k].records = items[k].dead = 0;
    items[k].version[0] = '\0';
    items[k].redo = 0;
    items[k].replaced = false;
    items[k].err[0] = '\0';
    memset(&items[k].hdr, 0, sizeof(items[k].hdr));
  }
  if (n == 0) return 0;
  if (prep_grow(p, n) != 0 || (nums = calloc(n, sizeof(*nums))) == NULL) {
    fail_items(items, n, NULL, -ENOMEM, "out of memory");
    return -ENOMEM;
  }

  /* Checks that need no database. */
  for (size_t k = 0; k < n; k++) {
    cm_sink_item_t *it = &items[k];
    prep_t *q = &p->prep[k];
    char perr[128];
    size_t pos = 0, el;
    const char *e0;
    memset(q, 0, sizeof(*q));
    q->alias = -1;
    if (it->view != NULL) {
      q->v = *it->view;
      q->elems = it->elems;
    } else if (cm_chunk_peek(it->json, it->len, &q->v, perr, sizeof(perr)) < 0) {
      it->status = -EINVAL;
      cm_set_err(it->err, sizeof(it->err), "bad chunk: %s", perr);
      continue;
    }
    it->hdr = q->v.hdr;
    if (q->v.hdr.index > (uint64_t)INT64_MAX) {
      it->status = -ERANGE;
      cm_set_err(it->err, sizeof(it->err), "chunk index %" PRIu64 " exceeds PostgreSQL's bigint",
                 q->v.hdr.index);
      continue;
    }
    if (q->elems != NULL && q->elems->ok) {
      for (size_t j = 0; j < q->elems->n; j++)
        q->nrec += !(q->elems->end[j] - q->elems->start[j] == 4 &&
                     memcmp(q->v.data + q->elems->start[j], "null", 4) == 0);
    } else {
      while (cm_json_array_next(q->v.data, q->v.data_len, &pos, &e0, &el) == 1)
        q->nrec += !(el == 4 && memcmp(e0, "null", 4) == 0);
    }
    pos = 0;
    if (q->v.dead != NULL)
      while (cm_json_array_next(q->v.dead, q->v.dead_len, &pos, &e0, &el) == 1) q->ndead++;
    q->valid = true;
    p->order[nsel++] = k;
  }
  /* Markers in one global order; a chunk twice in the batch is written once. */
  qsort_r(p->order, nsel, sizeof(p->order[0]), cmp_order, p->prep);
  {
    size_t w = 0;
    for (size_t s = 0; s < nsel; s++) {
      size_t k = p->order[s];
      if (w > 0) {
        prep_t *o = &p->prep[p->order[w - 1]];
        if (strcmp(o->v.hdr.job, p->prep[k].v.hdr.job) == 0 &&
            o->v.hdr.index == p->prep[k].v.hdr.index) {
          p->prep[k].alias = (int)p->order[w - 1];
          continue;
        }
      }
      p->order[w++] = k;
    }
    nsel = w;
  }
  if (nsel == 0) goto done;

  rc = pg_connect(p, why, sizeof(why));
  if (rc != 0) {
    fail_items(items, n, p->prep, rc, why);
    free(nums);
    return rc;
  }
  snprintf(ts, sizeof(ts), "%" PRId64, now_ms());
  for (int attempt = 0;; attempt++) {
    e = txn(p, p->order, nsel, false, nums, ts);
    if (e == PGE_PERM) e = txn(p, p->order, nsel, true, nums, ts);
    if (e == PGE_RETRY && attempt < PG_RETRIES) {
      cm_log_warn("PostgreSQL: %s; retrying the batch (%d of %d)", p->msg, attempt + 1, PG_RETRIES);
      continue;
    }
    break;
  }
  if (e != PGE_OK) {
    if (e == PGE_CONN) {
      /* Reconnect on the next batch or check at once; the backoff grows
       * only while connecting fails. */
      drop_conn(p);
      p->next_connect_ms = 0;
      set_health(p, false, "PostgreSQL connection lost: %s", p->msg);
      rc = -ECONNRESET;
    } else {
      set_health(p, false, "PostgreSQL cannot write: %s", p->msg);
      rc = -EIO;
    }
    fail_items(items, n, p->prep, rc, p->msg);
    free(nums);
    return rc;
  }
  set_health(p, true, NULL);

done:
  for (size_t k = 0; k < n; k++) {
    cm_sink_item_t *it = &items[k];
    const prep_t *q = &p->prep[k];
    if (!q->valid || q->alias >= 0) continue;
    if (q->failed) {
      it->status = -EINVAL;
      cm_set_err(it->err, sizeof(it->err), "chunk %" PRIu64 ": %s", q->v.hdr.index, q->perr);
    } else if (q->inserted) {
      it->status = 0;
      it->records = q->nrec;
      it->dead = q->ndead;
      snprintf(it->version, sizeof(it->version), "%s", q->v.hdr.version);
      it->redo = q->v.hdr.redo;
      it->replaced = q->replaced;
    } else {
      it->status = 1;
      it->records = q->have_rec;
      it->dead = q->have_dead;
      snprintf(it->version, sizeof(it->version), "%s", q->have_version);
      it->redo = q->have_redo;
    }
  }
  for (size_t k = 0; k < n; k++) {
    const prep_t *q = &p->prep[k];
    if (!q->valid || q->alias < 0) continue;
    const cm_sink_item_t *o = &items[q->alias];
    items[k].status = o->status == 0 ? 1 : o->status;
    items[k].records = o->records;
    items[k].dead = o->dead;
    memcpy(items[k].version, o->version, sizeof(items[k].version));
    items[k].redo = o->redo;
    memcpy(items[k].err, o->err, sizeof(items[k].err));
  }
  free(nums);
  return 0;
}

/* ---- upkeep, queries, lifecycle ---------------------------------------- */

static void pg_check(void *impl) {
  pg_t *p = impl;
  char err[320];
  PGresult *res = NULL;
  if (p->conn == NULL || PQstatus(p->conn) != CONNECTION_OK) {
    (void)pg_connect(p, err, sizeof(err));
    return;
  }
  if (PQtransactionStatus(p->conn) != PQTRANS_IDLE)
    (void)exec0(p, "ROLLBACK", PGRES_COMMAND_OK, NULL);
  if (exec0(p, "SELECT pg_is_in_recovery()", PGRES_TUPLES_OK, &res) != PGE_OK) {
    if (PQstatus(p->conn) != CONNECTION_OK) {
      drop_conn(p);
      p->next_connect_ms = 0;
      set_health(p, false, "PostgreSQL connection lost: %s", p->msg);
    }
    return;
  }
  if (PQgetvalue(res, 0, 0)[0] == 't') {
    set_health(p, false, "PostgreSQL server %s is a read-only standby", p->name);
  } else {
    char why[320];
    /* A failed write (disk full, timeout) clears with the next commit;
     * the connection being fine says nothing about it. */
    if (!pg_health(p, why, sizeof(why)) &&
        (strncmp(why, "PostgreSQL connection", 21) == 0 ||
         strncmp(why, "PostgreSQL unreachable", 22) == 0 || strstr(why, "standby") != NULL))
      set_health(p, true, NULL);
  }
  PQclear(res);
}

static int pg_query(void *impl, const char *sql, char *out, size_t outlen, char *err,
                    size_t errlen) {
  pg_t *p = impl;
  PGresult *res;
  ExecStatusType st;
  int rc;
  if (out != NULL && outlen > 0) out[0] = '\0';
  if ((rc = pg_connect(p, err, errlen)) != 0) return rc;
  res = PQexec(p->conn, sql);
  st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    (void)classify(p, res);
    cm_set_err(err, errlen, "%s", p->msg);
    PQclear(res);
    return -EIO;
  }
  if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && out != NULL && outlen > 0)
    snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  return 0;
}

static void pg_close(void *impl) {
  pg_t *p = impl;
  if (p == NULL) return;
  drop_conn(p);
  if (p->password != NULL) {
    memset(p->password, 0, strlen(p->password));
    free(p->password);
  }
  free(p->conninfo);
  free(p->prep);
  free(p->order);
  free(p->params);
  cm_buf_free(&p->sql);
  cm_buf_free(&p->copy);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static const cm_sink_ops_t pg_ops = {
    .save_batch = pg_save_batch,
    .check = pg_check,
    .health = pg_health,
    .query = pg_query,
    .close = pg_close,
};

static int read_password(const char *path, char **out, char *err, size_t errlen) {
  char line[1024];
  FILE *f = fopen(path, "r");
  int e;
  if (f == NULL) {
    e = errno;
    cm_set_err(err, errlen, "cannot read --db-password-file %s: %s", path, strerror(e));
    return -e;
  }
  if (fgets(line, sizeof(line), f) == NULL) line[0] = '\0';
  fclose(f);
  line[strcspn(line, "\r\n")] = '\0';
  if (line[0] == '\0') {
    cm_set_err(err, errlen, "--db-password-file %s is empty", path);
    return -EINVAL;
  }
  *out = strdup(line);
  memset(line, 0, sizeof(line));
  return *out ? 0 : -ENOMEM;
}

int cm_sink_pg_open(void **impl, const cm_sink_ops_t **ops, const cm_sink_opts_t *opts, char *err,
                    size_t errlen) {
  char *perr = NULL;
  PQconninfoOption *parsed;
  pg_t *p;
  int rc;

  parsed = PQconninfoParse(opts->db, &perr);
  if (parsed == NULL) {
    char msg[256];
    flatten(msg, sizeof(msg), perr ? perr : "out of memory");
    PQfreemem(perr);
    cm_set_err(err, errlen, "bad PostgreSQL connection string (--db): %s", msg);
    return -EINVAL;
  }
  PQconninfoFree(parsed);
  p = calloc(1, sizeof(*p));
  if (p == NULL || (p->conninfo = strdup(opts->db)) == NULL) {
    free(p);
    cm_set_err(err, errlen, "out of memory");
    return -ENOMEM;
  }
  pthread_mutex_init(&p->mu, NULL);
  cm_sink_redact(opts->db, p->name, sizeof(p->name));
  cm_buf_init(&p->sql, 1u << 20);
  cm_buf_init(&p->copy, 64u << 20);
  p->stmt_timeout_ms = opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 30000;
  p->backoff_ms = PG_BACKOFF_MIN_MS;
  p->use_insert = getenv("CM_PG_LOAD") != NULL && strcmp(getenv("CM_PG_LOAD"), "insert") == 0;
  p->ok = false;
  snprintf(p->why, sizeof(p->why), "not connected to PostgreSQL yet");
  if (opts->password_file != NULL && opts->password_file[0] != '\0') {
    rc = read_password(opts->password_file, &p->password, err, errlen);
    if (rc != 0) {
      pg_close(p);
      return rc;
    }
  }
  rc = pg_connect(p, err, errlen);
  if (rc == -ENOTSUP) {
    pg_close(p);
    return rc;
  }
  /* Unreachable now is not fatal: health says why, check reconnects. */
  *impl = p;
  *ops = &pg_ops;
  return 0;
}
