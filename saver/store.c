/* store.c - the saver's results database (see store.h).
 *
 * The chunk's data array is split with cm_json_array_next and each record
 * is bound as its own text (no JSON tree anywhere); dead letters, rare,
 * are split by SQLite's json_each. Every
 * statement is prepared once at open. A batch is one BEGIN IMMEDIATE ..
 * COMMIT (one fsync for many chunks); each item runs inside its own
 * SAVEPOINT so a bad item is rolled back alone. */
#include "cm/err.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a writer waits for another connection's lock (e.g. an operator's
 * sqlite3 shell) before the batch fails and is retried by the mapper. */
#define CM_STORE_BUSY_MS 5000
#define CM_STORE_ELEMS 4096 /* records per chunk split during validation */
/* Records per multi-row INSERT: one statement execution per group instead
 * of per record (VDBE setup, step and reset are per statement). */
#define CM_STORE_GROUP 32

#define CM_STR_(x) #x
#define CM_STR(x) CM_STR_(x)

/* Source dead letters (the fetcher's unreadable input lines) have no slot in
 * "data"; they carry a 1-based "line" instead of "idx". They are stored with
 * idx = -line: negative, so never equal to a record slot, and still unique
 * per (job, chunk) because a line belongs to one chunk. */
static const char *const schema_v1[] = {
    "CREATE TABLE IF NOT EXISTS records("
    " job TEXT NOT NULL, chunk INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " body TEXT NOT NULL," /* the mapped record, always valid JSON text */
    " PRIMARY KEY(job, chunk, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS chunks("
    " job TEXT NOT NULL, chunk INTEGER NOT NULL,"
    " records INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0,"
    " attempt INTEGER NOT NULL DEFAULT 0,"
    " saved_at INTEGER NOT NULL," /* unix time, milliseconds */
    " PRIMARY KEY(job, chunk)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS dead_letters("
    " job TEXT NOT NULL, chunk INTEGER NOT NULL,"
    " idx INTEGER NOT NULL," /* slot in data, or -line for a source dead letter */
    " reason TEXT,"
    " record TEXT," /* the record (or the raw source line) as JSON text */
    " PRIMARY KEY(job, chunk, idx)) WITHOUT ROWID",
};

/* Version 2: the mapper version that produced a chunk (as in PostgreSQL). */
static const char *const schema_v2[] = {
    "ALTER TABLE chunks ADD COLUMN version TEXT",
};

/* Version 3: the chunk's redo generation (docs/jobs.md "Redo by version");
 * 0 for every chunk saved before. */
static const char *const schema_v3[] = {
    "ALTER TABLE chunks ADD COLUMN redo INTEGER NOT NULL DEFAULT 0",
};

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SAVEPOINT,
  ST_RELEASE,
  ST_ROLLBACK_TO,
  ST_INS_CHUNK,
  ST_GET_CHUNK,
  ST_INS_RECORD,
  ST_INS_RECORDS_N,
  ST_INS_DEAD,
  ST_UPD_CHUNK,
  ST_DEL_RECORDS,
  ST_DEL_DEAD,
  ST_REDO_CHUNK,
  ST_COUNT
};

static const char *stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT cm_item",
    [ST_RELEASE] = "RELEASE cm_item",
    [ST_ROLLBACK_TO] = "ROLLBACK TO cm_item",
    /* version: the mapper's label, NULL when the chunk has none; a
     * duplicate is ignored, so the first version stays. */
    [ST_INS_CHUNK] = "INSERT OR IGNORE INTO chunks(job, chunk, records, dead, attempt, saved_at,"
                     " version, redo) VALUES(?1, ?2, 0, 0, ?3, ?4, ?5, ?6)",
    [ST_GET_CHUNK] = "SELECT records, dead, version, redo FROM chunks"
                     " WHERE job = ?1 AND chunk = ?2",
    /* One row per non-null slot of "data", its raw text bound as is: the
     * chunk was syntax-checked by cm_chunk_peek, so every body is valid
     * JSON (whitespace between tokens removed, see save_records). */
    [ST_INS_RECORD] = "INSERT INTO records(job, chunk, idx, body) VALUES(?1, ?2, ?3, ?4)",
    [ST_INS_RECORDS_N] = NULL, /* built at open: CM_STORE_GROUP rows of (?1, ?2, ?, ?) */
    /* A non-object entry, or one with neither idx nor line, yields a NULL
     * idx and fails the NOT NULL constraint: the item is refused, rather
     * than a dead letter being dropped silently. -> gives JSON text. */
    [ST_INS_DEAD] = "INSERT INTO dead_letters(job, chunk, idx, reason, record)"
                    " SELECT ?1, ?2,"
                    "  CASE WHEN type = 'object' THEN"
                    "   coalesce(value ->> '$.idx', -(value ->> '$.line')) END,"
                    "  CASE WHEN type = 'object' THEN value ->> '$.reason' END,"
                    "  CASE WHEN type = 'object' THEN"
                    "   coalesce(value -> '$.record', value -> '$.raw') END"
                    " FROM json_each(?3)",
    [ST_UPD_CHUNK] = "UPDATE chunks SET records = ?3, dead = ?4 WHERE job = ?1 AND chunk = ?2",
    /* A redo (a marker of a lower generation): the old rows go, the marker
     * becomes the new one's; the records, dead letters and counts follow
     * as for a first save, in the same savepoint. */
    [ST_DEL_RECORDS] = "DELETE FROM records WHERE job = ?1 AND chunk = ?2",
    [ST_DEL_DEAD] = "DELETE FROM dead_letters WHERE job = ?1 AND chunk = ?2",
    [ST_REDO_CHUNK] = "UPDATE chunks SET records = 0, dead = 0, attempt = ?3, saved_at = ?4,"
                      " version = ?5, redo = ?6 WHERE job = ?1 AND chunk = ?2",
};

struct cm_store_s {
  sqlite3 *db;
  sqlite3_stmt *st[ST_COUNT];
  char *path;
  char *scratch; /* a compacted record */
  size_t scratch_cap;
  /* Record spans of the chunk being saved, from cm_chunk_peek_elems. */
  uint32_t el_start[CM_STORE_ELEMS], el_end[CM_STORE_ELEMS];
  cm_json_elems_t elems;
};


/* SQLite result code -> negative errno, at the module boundary (STYLE 4). */
static int sqlite_errno(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE: return 0;
  case SQLITE_NOMEM: return -ENOMEM;
  case SQLITE_BUSY:
  case SQLITE_LOCKED: return -EBUSY;
  case SQLITE_FULL: return -ENOSPC;
  case SQLITE_READONLY: return -EROFS;
  case SQLITE_PERM:
  case SQLITE_AUTH: return -EACCES;
  case SQLITE_CANTOPEN: return -ENOENT;
  case SQLITE_TOOBIG: return -E2BIG;
  case SQLITE_ERROR: /* e.g. json_each on malformed JSON */
  case SQLITE_CONSTRAINT:
  case SQLITE_MISMATCH:
  case SQLITE_RANGE: return -EINVAL;
  default: return -EIO; /* IOERR, CORRUPT, NOTADB, ... */
  }
}

/* Runs a prepared statement to completion and resets it (bindings cleared),
 * so every statement is idle between uses. Returns the SQLite code of the
 * step (SQLITE_DONE/ROW on success) and copies the error text to err. */
static int run(sqlite3 *db, sqlite3_stmt *st, char *err, size_t errlen) {
  int rc;
  do {
    rc = sqlite3_step(st);
  } while (rc == SQLITE_ROW);
  if (rc != SQLITE_DONE) cm_set_err(err, errlen, "%s", sqlite3_errmsg(db));
  (void)sqlite3_reset(st);
  (void)sqlite3_clear_bindings(st);
  return rc;
}

/* One-off SQL at open time (pragmas, DDL). Fills *out with the first
 * column of the first row when out != NULL. */
static int exec1(sqlite3 *db, const char *sql, char *out, size_t outlen, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) goto done;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && out != NULL) {
    const unsigned char *t = sqlite3_column_text(st, 0);
    cm_set_err(out, outlen, "%s", t ? (const char *)t : "");
  }
  while (rc == SQLITE_ROW) rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
done:
  if (rc != SQLITE_OK) cm_set_err(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return rc;
}

static int user_version(sqlite3 *db, long *v, char *err, size_t errlen) {
  char buf[32] = "";
  int rc = exec1(db, "PRAGMA user_version", buf, sizeof buf, err, errlen);
  if (rc == SQLITE_OK) *v = strtol(buf, NULL, 10);
  return rc;
}

static int refuse_newer(const char *path, long v, char *err, size_t errlen) {
  cm_set_err(err, errlen, "results database %s has schema version %ld; this saver supports up to %d",
          path, v, CM_STORE_SCHEMA_VERSION);
  return -ENOTSUP;
}

/* Creates or migrates the schema in one transaction. The version is read
 * again inside it: another process may have migrated in between. */
static int migrate(cm_store_t *s, char *err, size_t errlen) {
  long v = 0;
  int rc = exec1(s->db, "BEGIN IMMEDIATE", NULL, 0, err, errlen);
  if (rc != SQLITE_OK) return sqlite_errno(rc);
  rc = user_version(s->db, &v, err, errlen);
  if (rc != SQLITE_OK) goto rollback;
  if (v > CM_STORE_SCHEMA_VERSION) {
    (void)exec1(s->db, "ROLLBACK", NULL, 0, NULL, 0);
    return refuse_newer(s->path, v, err, errlen);
  }
  if (v < 1) {
    for (size_t k = 0; k < sizeof schema_v1 / sizeof schema_v1[0]; k++) {
      rc = exec1(s->db, schema_v1[k], NULL, 0, err, errlen);
      if (rc != SQLITE_OK) goto rollback;
    }
  }
  if (v < 2) {
    for (size_t k = 0; k < sizeof schema_v2 / sizeof schema_v2[0]; k++) {
      rc = exec1(s->db, schema_v2[k], NULL, 0, err, errlen);
      if (rc != SQLITE_OK) goto rollback;
    }
  }
  if (v < 3) {
    for (size_t k = 0; k < sizeof schema_v3 / sizeof schema_v3[0]; k++) {
      rc = exec1(s->db, schema_v3[k], NULL, 0, err, errlen);
      if (rc != SQLITE_OK) goto rollback;
    }
  }
  /* Later versions add their steps here: if (v < 4) { ... }. */
  if (v < CM_STORE_SCHEMA_VERSION) {
    rc = exec1(s->db, "PRAGMA user_version = " CM_STR(CM_STORE_SCHEMA_VERSION), NULL, 0, err,
               errlen);
    if (rc != SQLITE_OK) goto rollback;
  }
  rc = exec1(s->db, "COMMIT", NULL, 0, err, errlen);
  if (rc != SQLITE_OK) goto rollback;
  return 0;

rollback:
  (void)exec1(s->db, "ROLLBACK", NULL, 0, NULL, 0);
  return sqlite_errno(rc);
}

int cm_store_open(cm_store_t **out, const char *path, cm_store_sync_t sync, char *err,
                  size_t errlen) {
  cm_store_t *s = NULL;
  char mode[32] = "";
  long v = 0;
  int rc = 0, src;

  *out = NULL;
  if (path == NULL || (sync != CM_SYNC_NORMAL && sync != CM_SYNC_FULL)) {
    cm_set_err(err, errlen, "cm_store_open: bad arguments");
    return -EINVAL;
  }
  s = calloc(1, sizeof *s);
  if (s == NULL || (s->path = strdup(path)) == NULL) {
    cm_set_err(err, errlen, "out of memory");
    rc = -ENOMEM;
    goto fail;
  }
  /* NOMUTEX: the store is used by one thread at a time (store.h), so
   * SQLite's per-connection mutex would be pure overhead. */
  src = sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (src != SQLITE_OK) {
    cm_set_err(err, errlen, "cannot open results database %s: %s", path,
            s->db ? sqlite3_errmsg(s->db) : "out of memory");
    rc = sqlite_errno(src);
    goto fail;
  }
  (void)sqlite3_extended_result_codes(s->db, 1);
  (void)sqlite3_busy_timeout(s->db, CM_STORE_BUSY_MS);

  /* Refuse a newer file before changing anything in it (journal mode
   * included): an older saver after a rollback must leave it untouched. */
  src = user_version(s->db, &v, err, errlen);
  if (src != SQLITE_OK) goto sqlfail;
  if (v > CM_STORE_SCHEMA_VERSION) {
    rc = refuse_newer(path, v, err, errlen);
    goto fail;
  }
  /* Write path (measured with cmbench store, 1M identity rows of ~550 bytes,
   * synchronous=FULL both ways): 16 KB pages cut the saver's CPU per record
   * by about a third against 4 KB (a quarter as many WAL frames and
   * pwrite calls, and at checkpoint; fewer B-tree splits for rows this
   * size). It only applies to a new file, so it comes before anything
   * writes one; an existing database keeps its page size. */
  src = exec1(s->db, "PRAGMA page_size = 16384", NULL, 0, err, errlen);
  if (src != SQLITE_OK) goto sqlfail;
  src = exec1(s->db, "PRAGMA journal_mode = WAL", mode, sizeof mode, err, errlen);
  if (src != SQLITE_OK) goto sqlfail;
  /* An in-memory database reports "memory" and cannot use WAL; fine. */
  if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
    cm_set_err(err, errlen, "results database %s: cannot use WAL (journal_mode is %s)", path, mode);
    rc = -EIO;
    goto fail;
  }
  src = exec1(s->db,
              sync == CM_SYNC_FULL ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
              NULL, 0, err, errlen);
  if (src != SQLITE_OK) goto sqlfail;
  /* Each item's SAVEPOINT and each multi-row INSERT keep the pages they
   * change in a sub-journal; on disk (a deleted file under /var/tmp or
   * /tmp) it was written 2.6x the bytes of the records (145 MB for 100k
   * identity rows), read only to roll an item back. Only a rollback in the open
   * transaction uses it, never crash recovery (the WAL is synced as
   * before), so memory keeps durability. Its size is bounded by the pages
   * one item touches. */
  src = exec1(s->db, "PRAGMA temp_store = MEMORY", NULL, 0, err, errlen);
  if (src != SQLITE_OK) goto sqlfail;

  rc = migrate(s, err, errlen);
  if (rc < 0) goto fail;

  for (int k = 0; k < ST_COUNT; k++) {
    char multi[64 + CM_STORE_GROUP * 32];
    const char *sql = stmt_sql[k];
    if (k == ST_INS_RECORDS_N) {
      size_t o = (size_t)snprintf(multi, sizeof multi,
                                  "INSERT INTO records(job, chunk, idx, body) VALUES");
      for (int r = 0; r < CM_STORE_GROUP; r++)
        o += (size_t)snprintf(multi + o, sizeof multi - o, "%s(?1, ?2, ?%d, ?%d)", r ? "," : "",
                              3 + 2 * r, 4 + 2 * r);
      sql = multi;
    }
    src = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st[k], NULL);
    if (src != SQLITE_OK) {
      cm_set_err(err, errlen, "preparing \"%.80s\": %s", sql, sqlite3_errmsg(s->db));
      rc = sqlite_errno(src);
      goto fail;
    }
  }
  *out = s;
  return 0;

sqlfail : {
  /* err holds SQLite's text; prefix the file so the log line says which. */
  char msg[256];
  cm_set_err(msg, sizeof msg, "%s", err ? err : "");
  cm_set_err(err, errlen, "results database %s: %s", path, msg);
  rc = sqlite_errno(src);
}
fail:
  cm_store_close(s);
  return rc;
}

void cm_store_close(cm_store_t *s) {
  if (s == NULL) return;
  for (int k = 0; k < ST_COUNT; k++) sqlite3_finalize(s->st[k]);
  /* close_v2: never leaves the handle half-open, even if something above
   * missed a statement. */
  if (s->db) (void)sqlite3_close_v2(s->db);
  free(s->path);
  free(s->scratch);
  free(s);
}

sqlite3 *cm_store_db(cm_store_t *s) { return s->db; }

bool cm_store_status_temporary(int status) {
  return status < 0 && status != -EINVAL && status != -ERANGE && status != -E2BIG;
}

/* ---- saving ------------------------------------------------------------ */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void bind_key(sqlite3_stmt *st, const cm_chunk_hdr_t *h) {
  /* Binding errors can only be SQLITE_RANGE/NOMEM; a NOMEM shows up again
   * as the step's error, so they need no separate check. */
  (void)sqlite3_bind_text(st, 1, h->job, -1, SQLITE_STATIC);
  (void)sqlite3_bind_int64(st, 2, (sqlite3_int64)h->index);
}

/* ?3 attempt, ?4 saved_at, ?5 version (NULL when the chunk has none), ?6
 * redo: the marker columns of ST_INS_CHUNK and ST_REDO_CHUNK. */
static void bind_marker(sqlite3_stmt *st, const cm_chunk_hdr_t *h, int64_t ts) {
  bind_key(st, h);
  (void)sqlite3_bind_int64(st, 3, h->attempt);
  (void)sqlite3_bind_int64(st, 4, ts);
  if (h->version[0] != '\0')
    (void)sqlite3_bind_text(st, 5, h->version, -1, SQLITE_STATIC);
  else
    (void)sqlite3_bind_null(st, 5);
  (void)sqlite3_bind_int64(st, 6, h->redo);
}

/* Inserts the non-null elements of the view's data array, one prepared
 * INSERT per record binding the record's own span (measured against one
 * INSERT .. SELECT FROM json_each(data) per chunk, which parses the chunk
 * into a tree and prints every record again: 2-3x slower on 550-byte
 * records). A record with whitespace between tokens is stored compacted, as
 * json_each stored it. Returns the SQLite code of the last step. */
/* Inserts rows [0, n) of the pending group g: one multi-row INSERT for a
 * full group, single-row INSERTs for a partial one. */
typedef struct {
  int64_t idx[CM_STORE_GROUP];
  const char *body[CM_STORE_GROUP];
  int len[CM_STORE_GROUP];
  int n;
} group_t;

static int flush_group(cm_store_t *s, const cm_chunk_hdr_t *h, group_t *g, char *msg,
                       size_t msglen) {
  int rc = SQLITE_DONE;
  if (g->n == CM_STORE_GROUP) {
    sqlite3_stmt *st = s->st[ST_INS_RECORDS_N];
    bind_key(st, h);
    for (int r = 0; r < g->n; r++) {
      (void)sqlite3_bind_int64(st, 3 + 2 * r, g->idx[r]);
      (void)sqlite3_bind_text(st, 4 + 2 * r, g->body[r], g->len[r], SQLITE_STATIC);
    }
    rc = sqlite3_step(st);
    (void)sqlite3_reset(st);
  } else {
    sqlite3_stmt *st = s->st[ST_INS_RECORD];
    bind_key(st, h);
    for (int r = 0; r < g->n && rc == SQLITE_DONE; r++) {
      (void)sqlite3_bind_int64(st, 3, g->idx[r]);
      (void)sqlite3_bind_text(st, 4, g->body[r], g->len[r], SQLITE_STATIC);
      rc = sqlite3_step(st);
      (void)sqlite3_reset(st);
    }
  }
  if (rc != SQLITE_DONE) cm_set_err(msg, msglen, "%s", sqlite3_errmsg(s->db));
  g->n = 0;
  return rc;
}

/* Inserts the non-null elements of the view's data array, each bound as its
 * own raw span (measured against one INSERT .. SELECT FROM json_each(data)
 * per chunk, which parses the chunk into a tree and prints every record
 * again), CM_STORE_GROUP rows per statement. A record with whitespace
 * between tokens is stored compacted, as json_each stored it. Returns the
 * SQLite code of the last step. */
static int save_records(cm_store_t *s, const cm_chunk_view_t *v, uint32_t *count, char *msg,
                        size_t msglen) {
  size_t pos = 0, el = 0, k = 0, used = 0;
  const char *rec = NULL;
  int64_t idx = 0;
  int more, rc = SQLITE_DONE;
  group_t g;

  g.n = 0;
  *count = 0;
  if (v->data_ws && v->data_len > s->scratch_cap) {
    /* Compacted records of one chunk all fit in data_len bytes. */
    char *p = realloc(s->scratch, v->data_len);
    if (p == NULL) {
      cm_set_err(msg, msglen, "out of memory");
      return SQLITE_NOMEM;
    }
    s->scratch = p;
    s->scratch_cap = v->data_len;
  }
  for (;;) {
    const char *body;
    size_t blen;
    if (s->elems.ok) {
      if (k == s->elems.n) {
        more = 0;
        break;
      }
      rec = v->data + s->elems.start[k];
      el = s->elems.end[k] - s->elems.start[k];
      k++;
    } else if ((more = cm_json_array_next(v->data, v->data_len, &pos, &rec, &el)) != 1) {
      break;
    }
    if (el == 4 && memcmp(rec, "null", 4) == 0) {
      idx++; /* a dead record's slot: skipped, the others keep theirs */
      continue;
    }
    body = rec;
    blen = el;
    if (v->data_ws && cm_json_compact(rec, el, NULL) != el) {
      /* Each compacted record gets its own part of scratch: the group
       * binds them all before it runs. */
      blen = cm_json_compact(rec, el, s->scratch + used);
      body = s->scratch + used;
      used += blen;
    }
    g.idx[g.n] = idx;
    g.body[g.n] = body;
    g.len[g.n] = (int)blen;
    g.n++;
    (*count)++;
    idx++;
    if (g.n == CM_STORE_GROUP) {
      rc = flush_group(s, &v->hdr, &g, msg, msglen);
      if (rc != SQLITE_DONE) break;
    }
  }
  if (rc == SQLITE_DONE && g.n > 0) rc = flush_group(s, &v->hdr, &g, msg, msglen);
  if (more < 0 && rc == SQLITE_DONE) {
    cm_set_err(msg, msglen, "malformed \"data\" array");
    rc = SQLITE_ERROR;
  }
  (void)sqlite3_clear_bindings(s->st[ST_INS_RECORD]);
  (void)sqlite3_clear_bindings(s->st[ST_INS_RECORDS_N]);
  return rc;
}

/* Saves one peeked item inside its savepoint. Returns 0 or 1 (duplicate)
 * with counts set, or a negative errno with it->err set. */
static int save_item(cm_store_t *s, cm_store_item_t *it, const cm_chunk_view_t *v, int64_t ts) {
  sqlite3_stmt **st = s->st;
  char msg[128] = "";
  int rc;

  snprintf(it->version, sizeof it->version, "%s", v->hdr.version);
  it->redo = v->hdr.redo;
  bind_marker(st[ST_INS_CHUNK], &v->hdr, ts);
  rc = run(s->db, st[ST_INS_CHUNK], msg, sizeof msg);
  if (rc != SQLITE_DONE) goto sqlfail;

  if (sqlite3_changes(s->db) == 0) {
    /* Saved before: an earlier delivery of this chunk, or of an earlier or
     * later redo generation of it. */
    uint32_t have_redo = 0;
    bind_key(st[ST_GET_CHUNK], &v->hdr);
    rc = sqlite3_step(st[ST_GET_CHUNK]);
    if (rc == SQLITE_ROW) {
      const unsigned char *ver = sqlite3_column_text(st[ST_GET_CHUNK], 2);
      it->records = (uint32_t)sqlite3_column_int64(st[ST_GET_CHUNK], 0);
      it->dead = (uint32_t)sqlite3_column_int64(st[ST_GET_CHUNK], 1);
      snprintf(it->version, sizeof it->version, "%s", ver ? (const char *)ver : "");
      have_redo = (uint32_t)sqlite3_column_int64(st[ST_GET_CHUNK], 3);
    } else {
      cm_set_err(msg, sizeof msg, "%s",
              rc == SQLITE_DONE ? "chunk marker vanished" : sqlite3_errmsg(s->db));
    }
    (void)sqlite3_reset(st[ST_GET_CHUNK]);
    (void)sqlite3_clear_bindings(st[ST_GET_CHUNK]);
    if (rc != SQLITE_ROW) goto sqlfail;
    if (have_redo >= v->hdr.redo) {
      /* The same generation or a later one is stored: report what is
       * stored; nothing is written (a late copy of the old version cannot
       * overwrite a redo). */
      it->redo = have_redo;
      return 1;
    }
    /* A redo: replace the chunk. Inside this item's savepoint and the
     * batch's transaction, so a failure below (or a crash before COMMIT)
     * leaves the old rows, dead letters and marker as they were. */
    snprintf(it->version, sizeof it->version, "%s", v->hdr.version);
    it->records = it->dead = 0;
    it->replaced = true;
    bind_key(st[ST_DEL_RECORDS], &v->hdr);
    rc = run(s->db, st[ST_DEL_RECORDS], msg, sizeof msg);
    if (rc != SQLITE_DONE) goto sqlfail;
    bind_key(st[ST_DEL_DEAD], &v->hdr);
    rc = run(s->db, st[ST_DEL_DEAD], msg, sizeof msg);
    if (rc != SQLITE_DONE) goto sqlfail;
    bind_marker(st[ST_REDO_CHUNK], &v->hdr, ts);
    rc = run(s->db, st[ST_REDO_CHUNK], msg, sizeof msg);
    if (rc != SQLITE_DONE) goto sqlfail;
  }

  rc = save_records(s, v, &it->records, msg, sizeof msg);
  if (rc != SQLITE_DONE) goto sqlfail;

  if (v->dead) {
    bind_key(st[ST_INS_DEAD], &v->hdr);
    (void)sqlite3_bind_text(st[ST_INS_DEAD], 3, v->dead, (int)v->dead_len, SQLITE_STATIC);
    rc = run(s->db, st[ST_INS_DEAD], msg, sizeof msg);
    /* The two ways a well-formed chunk's dead array can be wrong, said in
     * the saver's terms rather than as a constraint name. */
    if (rc == SQLITE_CONSTRAINT_NOTNULL)
      cm_set_err(msg, sizeof msg, "a dead letter is not an object with \"idx\" or \"line\"");
    else if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      cm_set_err(msg, sizeof msg, "two dead letters for the same idx/line");
    if (rc != SQLITE_DONE) goto sqlfail;
    it->dead = (uint32_t)sqlite3_changes(s->db);
  }

  bind_key(st[ST_UPD_CHUNK], &v->hdr);
  (void)sqlite3_bind_int64(st[ST_UPD_CHUNK], 3, it->records);
  (void)sqlite3_bind_int64(st[ST_UPD_CHUNK], 4, it->dead);
  rc = run(s->db, st[ST_UPD_CHUNK], msg, sizeof msg);
  if (rc != SQLITE_DONE) goto sqlfail;
  return 0;

sqlfail:
  cm_set_err(it->err, sizeof it->err, "chunk %" PRIu64 ": %s", v->hdr.index, msg);
  return sqlite_errno(rc);
}

/* The transaction did not commit: nothing in it is saved. Items that were
 * fine get the batch's error; items with their own error keep it. */
static void fail_all(cm_store_item_t *items, size_t n, int rc, const char *why) {
  for (size_t k = 0; k < n; k++) {
    if (items[k].status >= 0) {
      items[k].status = rc;
      items[k].records = items[k].dead = 0;
      items[k].replaced = false;
      cm_set_err(items[k].err, sizeof items[k].err, "%s", why);
    }
  }
}

int cm_store_save_batch(cm_store_t *s, cm_store_item_t *items, size_t n) {
  char msg[160] = "", why[160];
  int64_t ts = now_ms();
  int rc, src;

  for (size_t k = 0; k < n; k++) {
    items[k].status = 0;
    items[k].records = items[k].dead = 0;
    items[k].version[0] = '\0';
    items[k].redo = 0;
    items[k].replaced = false;
    items[k].err[0] = '\0';
    memset(&items[k].hdr, 0, sizeof items[k].hdr);
  }
  if (n == 0) return 0;

  src = run(s->db, s->st[ST_BEGIN], msg, sizeof msg);
  if (src != SQLITE_DONE) {
    rc = sqlite_errno(src);
    /* Never the data's fault: the batch is retried whole. */
    if (!cm_store_status_temporary(rc)) rc = -EIO;
    cm_set_err(why, sizeof why, "batch not saved: BEGIN: %s", msg);
    fail_all(items, n, rc, why);
    return rc;
  }

  for (size_t k = 0; k < n; k++) {
    cm_store_item_t *it = &items[k];
    cm_chunk_view_t v;
    char perr[128];

    s->elems = (cm_json_elems_t){s->el_start, s->el_end, CM_STORE_ELEMS, 0, false};
    if (it->view != NULL) {
      v = *it->view;
      if (it->elems != NULL && it->elems->ok) s->elems = *it->elems;
    } else if (cm_chunk_peek_elems(it->json, it->len, &v, &s->elems, perr, sizeof perr) < 0) {
      it->status = -EINVAL;
      cm_set_err(it->err, sizeof it->err, "bad chunk: %s", perr);
      continue;
    }
    it->hdr = v.hdr;
    if (v.hdr.index > (uint64_t)INT64_MAX) {
      it->status = -ERANGE;
      cm_set_err(it->err, sizeof it->err, "chunk index %" PRIu64 " exceeds SQLite's integer range",
              v.hdr.index);
      continue;
    }
    if (v.data_len > (size_t)INT32_MAX || (v.dead && v.dead_len > (size_t)INT32_MAX)) {
      it->status = -E2BIG;
      cm_set_err(it->err, sizeof it->err, "chunk %" PRIu64 " is too large for SQLite", v.hdr.index);
      continue;
    }

    src = run(s->db, s->st[ST_SAVEPOINT], msg, sizeof msg);
    if (src != SQLITE_DONE) goto abort;
    it->status = save_item(s, it, &v, ts);
    if (it->status < 0) {
      it->records = it->dead = 0;
      it->replaced = false;
      /* Some errors (disk full, I/O) make SQLite roll the whole
       * transaction back by itself: then the batch is lost. */
      if (sqlite3_get_autocommit(s->db)) {
        src = SQLITE_ABORT;
        cm_set_err(msg, sizeof msg, "transaction rolled back after: %s", it->err);
        goto abort;
      }
      /* Not the chunk's fault (disk full, out of memory, locked, I/O): the
       * store is in trouble, not the data. Nothing of the batch is kept, so
       * every chunk in it is retried whole once the store recovers. */
      if (cm_store_status_temporary(it->status)) {
        rc = it->status;
        cm_set_err(why, sizeof why, "batch not saved: %s", it->err);
        goto abort_rc;
      }
      src = run(s->db, s->st[ST_ROLLBACK_TO], msg, sizeof msg);
      if (src != SQLITE_DONE) goto abort;
    }
    src = run(s->db, s->st[ST_RELEASE], msg, sizeof msg);
    if (src != SQLITE_DONE) goto abort;
  }

  src = run(s->db, s->st[ST_COMMIT], msg, sizeof msg);
  if (src != SQLITE_DONE) goto abort;
  return 0;

abort:
  rc = sqlite_errno(src);
  /* A data error here (e.g. the savepoint after a constraint) is still the
   * batch not committing: report it as the store's, to be retried. */
  if (rc == 0 || !cm_store_status_temporary(rc)) rc = -EIO;
  cm_set_err(why, sizeof why, "batch not saved: %s", msg);
abort_rc:
  if (!sqlite3_get_autocommit(s->db)) (void)run(s->db, s->st[ST_ROLLBACK], NULL, 0);
  fail_all(items, n, rc, why);
  return rc;
}
