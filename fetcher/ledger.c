/* ledger.c - the fetcher's durable chunk ledger (see ledger.h).
 *
 * Storage (schema version 1; later columns in cm__migrations):
 *   jobs(name PK, source, chunk_size, next_index, source_done, source_pos,
 *        source_line, done_chunks, dead_chunks, records_done, redeliveries,
 *        created_at)
 *   chunks(job, idx, state, attempt, base_attempt, deadline_ms, holder,
 *          not_before_ms, reason, records, PRIMARY KEY(job, idx)) WITHOUT ROWID
 *   payloads(job, idx, data BLOB, PRIMARY KEY(job, idx))
 *
 * Why payloads live in their own table instead of a chunks.payload column:
 * SQLite rewrites a whole row, overflow pages included, on every UPDATE. A
 * chunk row changes on every lease, release and ack, so a ~50 KB payload in
 * the same row would be copied several times per chunk. Kept apart, a state
 * change writes a ~60-byte row, and the payload is written once (when the
 * chunk is first read) and deleted once (when the chunk is done, since a
 * saved chunk is never needed again). chunks is WITHOUT ROWID because its
 * rows are small and always looked up by (job, idx); payloads keeps a rowid
 * because its rows are large (WITHOUT ROWID suits small rows only).
 * The partial index chunks_live lets job_open and replay find the few
 * non-done chunks of a job without scanning its done ones.
 *
 * base_attempt: the attempt number at the last replay of a dead chunk.
 * max_deliver counts leases since then (attempt - base_attempt), so a
 * replayed chunk gets a full delivery budget while attempt numbers keep
 * growing (fencing stays unambiguous across the replay).
 *
 * Memory: a hash table (index -> chunk) holds every pending or leased chunk,
 * plus done/dead chunks whose change is not flushed yet (they leave memory
 * at the next flush). Three binary heaps order them:
 *   ready  pending and due, by index       -> next_due is O(log n)
 *   wait   pending with a retry time, by (not_before, index)
 *   lease  leased, by (deadline, index)    -> each_expired visits only hits
 * Done and dead chunks are only in the database, so memory follows the
 * in-flight window (plus retries), never the size of the job. */
#include "ledger.h"
#include "ledger_mem.h"

#include "cm/redact.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


enum {
  CM__S_BEGIN,
  CM__S_COMMIT,
  CM__S_ROLLBACK,
  CM__S_JOB_GET,
  CM__S_JOB_INSERT,
  CM__S_JOB_UPDATE,
  CM__S_RECOVER,
  CM__S_LOAD_LIVE,
  CM__S_LOAD_DEAD,
  CM__S_CHUNK_UPSERT,
  CM__S_CHUNK_GET,
  CM__S_PAYLOAD_PUT,
  CM__S_PAYLOAD_DEL,
  CM__S_PAYLOAD_GET,
  CM__S_JOB_LIST,
  CM__S_LOAD_REDO,
  CM__S_DEAD_LIST,
  CM__S_ORIGIN_GET,
  CM__S_REDO_UNPLACED,
  CM__S_COUNT
};

/* Statements prepared once at open and reused (reset after each use). */
static const char *const cm__sql[CM__S_COUNT] = {
    [CM__S_BEGIN] = "BEGIN IMMEDIATE",
    [CM__S_COMMIT] = "COMMIT",
    [CM__S_ROLLBACK] = "ROLLBACK",
    [CM__S_JOB_GET] = "SELECT source, chunk_size, next_index, source_done, source_pos, "
                      "source_line, done_chunks, dead_chunks, records_done, redeliveries, "
                      "created_at, state, priority, max_deliver, finished_at, last_error, spec, "
                      "redo_version, redo_gen, redo_chunks, redo_done, source_cursor "
                      "FROM jobs WHERE name = ?1",
    [CM__S_JOB_INSERT] = "INSERT INTO jobs(name, source, chunk_size, created_at, spec, priority, "
                         "max_deliver, state) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [CM__S_JOB_UPDATE] = "UPDATE jobs SET next_index = ?2, source_done = ?3, source_pos = ?4, "
                         "source_line = ?5, done_chunks = ?6, dead_chunks = ?7, "
                         "records_done = ?8, redeliveries = ?9, state = ?10, finished_at = ?11, "
                         "last_error = ?12, redo_version = ?13, redo_gen = ?14, "
                         "redo_chunks = ?15, redo_done = ?16, source_cursor = ?17 WHERE name = ?1",
    /* "state <> 2" in the next three lets the planner use chunks_live. */
    [CM__S_RECOVER] = "UPDATE chunks SET state = 0, holder = NULL, deadline_ms = 0, "
                      "not_before_ms = 0 WHERE job = ?1 AND state <> 2 AND state = 1",
    /* The last column: whether the chunk has a stored payload (a redone
     * chunk of a sequential source has none until it is re-read). */
    [CM__S_LOAD_LIVE] = "SELECT idx, attempt, base_attempt, not_before_ms, reason, records, redo, "
                        "EXISTS(SELECT 1 FROM payloads p WHERE p.job = chunks.job AND "
                        "p.idx = chunks.idx) "
                        "FROM chunks WHERE job = ?1 AND state <> 2 AND state = 0",
    [CM__S_LOAD_DEAD] = "SELECT idx, attempt, reason, records, redo, "
                        "EXISTS(SELECT 1 FROM payloads p WHERE p.job = chunks.job AND "
                        "p.idx = chunks.idx) "
                        "FROM chunks WHERE job = ?1 AND state <> 2 AND state = 3",
    [CM__S_CHUNK_UPSERT] =
        "INSERT INTO chunks(job, idx, state, attempt, base_attempt, deadline_ms, holder, "
        "not_before_ms, reason, records, version, redo, src_pos, src_line, src_cursor, digest) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) "
        /* the origin is written once, with the first row */
        "ON CONFLICT(job, idx) DO UPDATE SET state = excluded.state, "
        "attempt = excluded.attempt, base_attempt = excluded.base_attempt, "
        "deadline_ms = excluded.deadline_ms, holder = excluded.holder, "
        "not_before_ms = excluded.not_before_ms, reason = excluded.reason, "
        "records = excluded.records, version = excluded.version, redo = excluded.redo",
    [CM__S_CHUNK_GET] = "SELECT state, attempt, base_attempt, reason, records, redo "
                        "FROM chunks WHERE job = ?1 AND idx = ?2",
    [CM__S_PAYLOAD_PUT] = "INSERT OR REPLACE INTO payloads(job, idx, data) VALUES(?1, ?2, ?3)",
    [CM__S_PAYLOAD_DEL] = "DELETE FROM payloads WHERE job = ?1 AND idx = ?2",
    [CM__S_PAYLOAD_GET] = "SELECT data FROM payloads WHERE job = ?1 AND idx = ?2",
    [CM__S_JOB_LIST] = "SELECT name, source, chunk_size, state, spec, priority, max_deliver, "
                       "created_at FROM jobs ORDER BY created_at, name",
    /* Full scan of the job's done chunks: redo is rare, and an index on
     * version would cost every ack. */
    [CM__S_LOAD_REDO] = "SELECT idx, attempt, base_attempt, records FROM chunks "
                        "WHERE job = ?1 AND state = 2 AND version = ?2",
    [CM__S_DEAD_LIST] = "SELECT idx, attempt, reason FROM chunks "
                        "WHERE job = ?1 AND state <> 2 AND state = 3 ORDER BY idx LIMIT ?2",
    [CM__S_ORIGIN_GET] = "SELECT src_pos, src_line, src_cursor, digest FROM chunks "
                         "WHERE job = ?1 AND idx = ?2",
    [CM__S_REDO_UNPLACED] = "SELECT count(*) FROM chunks "
                            "WHERE job = ?1 AND state = 2 AND version = ?2 AND digest IS NULL",
};

/* Migration i takes a file from user_version i to i+1. Each runs inside the
 * one transaction that also sets user_version, so a crash mid-migration
 * leaves the previous version intact. */
static const char *const cm__migrations[CM_LEDGER_SCHEMA_VERSION] = {
    "CREATE TABLE jobs("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  source TEXT NOT NULL,"
    "  chunk_size INTEGER NOT NULL,"
    "  next_index INTEGER NOT NULL DEFAULT 0,"
    "  source_done INTEGER NOT NULL DEFAULT 0,"
    "  source_pos INTEGER NOT NULL DEFAULT 0,"
    "  source_line INTEGER NOT NULL DEFAULT 0,"
    "  done_chunks INTEGER NOT NULL DEFAULT 0,"
    "  dead_chunks INTEGER NOT NULL DEFAULT 0,"
    "  records_done INTEGER NOT NULL DEFAULT 0,"
    "  redeliveries INTEGER NOT NULL DEFAULT 0,"
    "  created_at REAL NOT NULL);"
    "CREATE TABLE chunks("
    "  job TEXT NOT NULL,"
    "  idx INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  base_attempt INTEGER NOT NULL DEFAULT 0,"
    "  deadline_ms INTEGER NOT NULL DEFAULT 0,"
    "  holder TEXT,"
    "  not_before_ms INTEGER NOT NULL DEFAULT 0,"
    "  reason TEXT,"
    "  records INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(job, idx)) WITHOUT ROWID;"
    "CREATE INDEX chunks_live ON chunks(job, state) WHERE state <> 2;"
    "CREATE TABLE payloads("
    "  job TEXT NOT NULL,"
    "  idx INTEGER NOT NULL,"
    "  data BLOB NOT NULL,"
    "  PRIMARY KEY(job, idx));",
    /* 1 -> 2: several jobs as a service (docs/jobs.md). A v1 job keeps
     * running (state 1); its spec is unknown until a --source names it. */
    "ALTER TABLE jobs ADD COLUMN state INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE jobs ADD COLUMN spec TEXT;"
    "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE jobs ADD COLUMN max_deliver INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN finished_at REAL;"
    "ALTER TABLE jobs ADD COLUMN last_error TEXT;"
    "ALTER TABLE jobs ADD COLUMN redo_version TEXT;"
    "ALTER TABLE jobs ADD COLUMN redo_gen INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN redo_chunks INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN redo_done INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE chunks ADD COLUMN version TEXT;"
    "ALTER TABLE chunks ADD COLUMN redo INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN source_cursor TEXT;",
    /* 2 -> 3: redo of sequential sources. A chunk's start in its source
     * (byte offset or page, line or records to skip, the page cursor) and
     * the SHA-256 of its payload; NULL for gen: chunks and for chunks
     * created before (those cannot be re-read). */
    "ALTER TABLE chunks ADD COLUMN src_pos INTEGER;"
    "ALTER TABLE chunks ADD COLUMN src_line INTEGER;"
    "ALTER TABLE chunks ADD COLUMN src_cursor TEXT;"
    "ALTER TABLE chunks ADD COLUMN digest BLOB;",
};

/* One SQLite connection, shared by every handle opened from the first one
 * (cm_ledger_share): one transaction per flush for all of them. */
typedef struct cm__conn_s {
  sqlite3 *db;
  sqlite3_stmt *st[CM__S_COUNT];
  char *path;
  char errmsg[256];
  int refs;
  cm_ledger_t *handles; /* linked through cm_ledger_s.next */
} cm__conn_t;

#define CM__ERRMSG_LEN 256

struct cm_ledger_s {
  cm__conn_t *conn;
  cm_ledger_t *next; /* the connection's next handle */
  sqlite3 *db;       /* = conn->db, conn->st, conn->path, conn->errmsg */
  sqlite3_stmt **st;
  char *path;
  char *errmsg;
  char *spec;        /* the job's submission (JSON), may be NULL */
  char *redo_version; /* version of the latest redo, NULL if none */
  char *cursor;       /* the source's resume cursor, NULL if none */
  char *job;    /* open job name, NULL before job_open */
  char *source; /* its full source description */
  cm_job_info_t info;
  bool job_dirty; /* counters changed since the last flush */

  cm__chunkset_t set; /* index -> chunk */

  cm__heap_t ready, wait, lease;
  cm__pendq_t pendq;        /* pending chunks, oldest first */
  int64_t last_add_ms;      /* last add_chunk, or job open: the unread tail waits since */
  int64_t (*clock)(void *); /* ms, monotonic; NULL = CLOCK_MONOTONIC */
  void *clock_ud;

  cm__chunk_t **queue; /* chunks with dirty = true, in change order */
  size_t queue_n, queue_cap;

  /* each_* scratch, both hits_cap long, reused so timers do not allocate */
  struct cm__hit_s { uint64_t idx; uint32_t attempt; } *hits;
  size_t *stack;
  size_t hits_cap;
};

/* ---- small helpers ---------------------------------------------------- */

static int cm__sqlerr(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
    return 0;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return -EBUSY;
  case SQLITE_NOMEM:
    return -ENOMEM;
  case SQLITE_FULL:
    return -ENOSPC;
  case SQLITE_READONLY:
  case SQLITE_PERM:
    return -EROFS;
  case SQLITE_CANTOPEN:
    return -ENOENT;
  case SQLITE_CONSTRAINT:
    return -EEXIST;
  default:
    return -EIO;
  }
}

/* Remembers sqlite's message so the caller can log why a flush failed. */
static int cm__fail(cm_ledger_t *l, int rc) {
  snprintf(l->errmsg, CM__ERRMSG_LEN, "ledger %s: %s", l->path, sqlite3_errmsg(l->db));
  return cm__sqlerr(rc);
}

static char *cm__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* Runs a statement that returns no rows; always resets it. */
static int cm__step_done(cm_ledger_t *l, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  int ret = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : cm__fail(l, rc);
  sqlite3_reset(st);
  return ret;
}

static void cm__rollback(cm_ledger_t *l) {
  if (!sqlite3_get_autocommit(l->db)) (void)cm__step_done(l, l->st[CM__S_ROLLBACK]);
}

static void cm__bind_job(cm_ledger_t *l, sqlite3_stmt *st) {
  sqlite3_bind_text(st, 1, l->job, -1, SQLITE_STATIC);
}

/* ---- which heap holds a chunk ----------------------------------------- */

static cm__heap_t *cm__heap_of(cm_ledger_t *l, const cm__chunk_t *c) {
  switch (c->heap) {
  case CM__H_READY:
    return &l->ready;
  case CM__H_WAIT:
    return &l->wait;
  case CM__H_LEASE:
    return &l->lease;
  default:
    return NULL;
  }
}

static void cm__unheap(cm_ledger_t *l, cm__chunk_t *c) {
  cm__heap_t *h = cm__heap_of(l, c);
  if (h) cm__heap_remove(h, c);
}

/* A pending chunk with no retry time is due whatever `now` is: it goes
 * straight to `ready`; others wait until next_due's clock passes them. */
static cm__heap_t *cm__pending_heap(cm_ledger_t *l, const cm__chunk_t *c) {
  return c->not_before_ms <= 0 ? &l->ready : &l->wait;
}

static int64_t cm__clock_ms(const cm_ledger_t *l) {
  if (l->clock) return l->clock(l->clock_ud);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every entry into the pending state goes through here (the FIFO feeds
 * cm_ledger_oldest_pending_ms). */
static void cm__pend(cm_ledger_t *l, cm__chunk_t *c) {
  cm__heap_push(cm__pending_heap(l, c), c);
  cm__pendq_push(&l->pendq, c, cm__clock_ms(l));
}

/* ---- chunk bookkeeping ------------------------------------------------- */

static void cm__origin_free(cm__origin_t *o) {
  if (!o) return;
  free(o->cursor);
  free(o);
}

static void cm__chunk_free(cm__chunk_t *c) {
  if (!c) return;
  cm__origin_free(c->origin);
  free(c->holder);
  free(c->reason);
  free(c->payload);
  free(c->version);
  free(c);
}

static int cm__queue_reserve(cm_ledger_t *l) {
  if (l->queue_n < l->queue_cap) return 0;
  size_t cap = l->queue_cap ? l->queue_cap * 2 : 64;
  cm__chunk_t **q = realloc(l->queue, cap * sizeof *q);
  if (!q) return -ENOMEM;
  l->queue = q;
  l->queue_cap = cap;
  return 0;
}

/* Coalesces: a chunk changed several times between flushes is written once,
 * with its latest state. Capacity must have been reserved. */
static void cm__queue(cm_ledger_t *l, cm__chunk_t *c) {
  if (c->dirty) return;
  c->dirty = true;
  l->queue[l->queue_n++] = c;
}

static void cm__reset_memory(cm_ledger_t *l) {
  for (size_t i = 0; i < l->set.cap; i++) cm__chunk_free(l->set.tab[i]);
  free(l->set.tab);
  l->set.tab = NULL;
  l->set.cap = l->set.n = 0;
  l->ready.n = l->wait.n = l->lease.n = 0;
  l->pendq.head = l->pendq.tail = NULL;
  l->queue_n = 0;
  l->job_dirty = false;
}

/* Loads chunk `idx` from its row (used for dead chunks, which are kept out
 * of memory). Returns 1 and *out, 0 if there is no row, or -errno. */
static int cm__load_row(cm_ledger_t *l, uint64_t idx, cm__chunk_t **out) {
  sqlite3_stmt *st = l->st[CM__S_CHUNK_GET];
  cm__chunk_t *c = NULL;
  int ret = 0;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)idx);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) goto out;
  if (rc != SQLITE_ROW) {
    ret = cm__fail(l, rc);
    goto out;
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    ret = -ENOMEM;
    goto out;
  }
  c->idx = idx;
  c->state = (uint8_t)sqlite3_column_int(st, 0);
  c->attempt = (uint32_t)sqlite3_column_int64(st, 1);
  c->base_attempt = (uint32_t)sqlite3_column_int64(st, 2);
  const unsigned char *reason = sqlite3_column_text(st, 3);
  c->records = (uint32_t)sqlite3_column_int64(st, 4);
  c->redo = (uint32_t)sqlite3_column_int64(st, 5);
  c->payload_in_db = true;
  if (reason && !(c->reason = cm__strdup((const char *)reason))) {
    ret = -ENOMEM;
    goto out;
  }
  *out = c;
  c = NULL;
  ret = 1;
out:
  sqlite3_reset(st);
  cm__chunk_free(c);
  return ret;
}

/* ---- open / close ------------------------------------------------------ */

static int cm__user_version(sqlite3 *db, int *v) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *v = sqlite3_column_int(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Creates or migrates the schema in one transaction. The version is read
 * again inside it, so two fetchers opening one new file cannot both run a
 * migration. */
static int cm__migrate(cm_ledger_t *l, char *err, size_t errlen) {
  int v = 0, rc;
  char sql[64];
  rc = sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto sqlfail;
  rc = cm__user_version(l->db, &v);
  if (rc != SQLITE_OK) goto sqlfail;
  if (v > CM_LEDGER_SCHEMA_VERSION) {
    snprintf(err, errlen, "ledger %s has schema version %d, this fetcher supports up to %d",
             l->path, v, CM_LEDGER_SCHEMA_VERSION);
    (void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return -EPROTO;
  }
  for (; v < CM_LEDGER_SCHEMA_VERSION; v++) {
    rc = sqlite3_exec(l->db, cm__migrations[v], NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto sqlfail;
  }
  /* PRAGMA takes no bound parameters; the value is our own constant. */
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", CM_LEDGER_SCHEMA_VERSION);
  rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto sqlfail;
  return 0;
sqlfail:
  snprintf(err, errlen, "ledger %s: %s", l->path, sqlite3_errmsg(l->db));
  if (!sqlite3_get_autocommit(l->db)) (void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
  return cm__sqlerr(rc);
}

static cm_ledger_t *cm__handle_new(cm__conn_t *c) {
  cm_ledger_t *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  l->conn = c;
  l->db = c->db;
  l->st = c->st;
  l->path = c->path;
  l->errmsg = c->errmsg;
  l->ready.kind = CM__H_READY;
  l->wait.kind = CM__H_WAIT;
  l->lease.kind = CM__H_LEASE;
  l->next = c->handles;
  c->handles = l;
  c->refs++;
  return l;
}

static void cm__conn_free(cm__conn_t *c) {
  if (!c) return;
  for (int i = 0; i < CM__S_COUNT; i++) sqlite3_finalize(c->st[i]);
  sqlite3_close(c->db);
  free(c->path);
  free(c);
}

int cm_ledger_open(cm_ledger_t **out, const char *path, char *err, size_t errlen) {
  cm_ledger_t *l = NULL;
  cm__conn_t *c = NULL;
  int ret = 0, rc, v = 0;
  *out = NULL;
  if (errlen) err[0] = '\0';
  c = calloc(1, sizeof *c);
  if (!c || !(c->path = cm__strdup(path)) || !(l = cm__handle_new(c))) {
    snprintf(err, errlen, "ledger %s: out of memory", path);
    ret = -ENOMEM;
    goto fail;
  }
  rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  l->db = c->db;
  if (rc != SQLITE_OK) goto sqlfail;
  /* The fetcher is the only writer, but a tool reading the file (or a
   * second fetcher started by mistake) may hold a lock briefly. */
  sqlite3_busy_timeout(l->db, 5000);
  /* Refuse a newer file before changing anything in it (journal mode). */
  rc = cm__user_version(l->db, &v);
  if (rc != SQLITE_OK) goto sqlfail;
  if (v > CM_LEDGER_SCHEMA_VERSION) {
    snprintf(err, errlen, "ledger %s has schema version %d, this fetcher supports up to %d", path,
             v, CM_LEDGER_SCHEMA_VERSION);
    ret = -EPROTO;
    goto fail;
  }
  /* WAL: one fsync per commit at most, readers never block the writer.
   * synchronous=NORMAL: a commit is not fsynced until the next checkpoint,
   * so a power loss may roll back the last few flushes. For the ledger that
   * is the same as a crash before those flushes, which is always safe: an
   * unwritten lease comes back pending, an unwritten ack is redelivered and
   * the saver deduplicates it. The database itself cannot be corrupted in
   * WAL mode with NORMAL. */
  rc = sqlite3_exec(l->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(l->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
  /* A page cache of 512 KiB, not SQLite's default 2 MiB: the pages a job
   * touches are the right edge of the chunk table and the small index of
   * live chunks, whatever the job's size; a larger cache only fills with
   * cold pages as the file grows (2 MiB more RSS for a long job). */
  if (rc == SQLITE_OK) rc = sqlite3_exec(l->db, "PRAGMA cache_size = -512", NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto sqlfail;
  ret = cm__migrate(l, err, errlen);
  if (ret < 0) goto fail;
  for (int i = 0; i < CM__S_COUNT; i++) {
    rc = sqlite3_prepare_v3(l->db, cm__sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
    if (rc != SQLITE_OK) goto sqlfail;
  }
  *out = l;
  return 0;
sqlfail:
  snprintf(err, errlen, "ledger %s: %s", path,
           c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
  ret = cm__sqlerr(rc);
  if (ret == 0) ret = -EIO;
fail:
  free(l);
  cm__conn_free(c);
  return ret;
}

int cm_ledger_share(cm_ledger_t *l, cm_ledger_t **out) {
  *out = cm__handle_new(l->conn);
  return *out ? 0 : -ENOMEM;
}

void cm_ledger_close(cm_ledger_t *l) {
  cm__conn_t *c;
  if (!l) return;
  c = l->conn;
  /* Best effort: a failed final flush only means redeliveries (see the
   * header); the caller that cares flushes first and checks. */
  if (cm_ledger_flush(l) < 0) {
    /* nothing more to do: gcc does not accept (void) for warn_unused_result */
  }
  cm__reset_memory(l);
  for (cm_ledger_t **p = &c->handles; *p; p = &(*p)->next)
    if (*p == l) {
      *p = l->next;
      break;
    }
  free(l->ready.v);
  free(l->wait.v);
  free(l->lease.v);
  free(l->queue);
  free(l->hits);
  free(l->stack);
  free(l->job);
  free(l->source);
  free(l->spec);
  free(l->redo_version);
  free(l->cursor);
  free(l);
  if (--c->refs == 0) cm__conn_free(c);
}

const char *cm_ledger_errmsg(const cm_ledger_t *l) { return l->errmsg; }

void cm_ledger_set_busy_timeout(cm_ledger_t *l, int ms) { (void)sqlite3_busy_timeout(l->db, ms); }

/* ---- jobs -------------------------------------------------------------- */

static double cm__now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads the job row into l->info. Returns 1 found, 0 absent, or -errno. */
static int cm__job_read(cm_ledger_t *l, const char *name, const char **src_out, char **src_copy) {
  sqlite3_stmt *st = l->st[CM__S_JOB_GET];
  int ret = 0;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) goto out;
  if (rc != SQLITE_ROW) {
    ret = cm__fail(l, rc);
    goto out;
  }
  const char *src = (const char *)sqlite3_column_text(st, 0);
  if (!(*src_copy = cm__strdup(src ? src : ""))) {
    ret = -ENOMEM;
    goto out;
  }
  *src_out = *src_copy;
  cm_job_info_t *in = &l->info;
  in->chunk_size = (uint32_t)sqlite3_column_int64(st, 1);
  in->next_index = (uint64_t)sqlite3_column_int64(st, 2);
  in->source_done = sqlite3_column_int(st, 3) != 0;
  in->source_pos = sqlite3_column_int64(st, 4);
  in->source_line = (uint64_t)sqlite3_column_int64(st, 5);
  in->done_chunks = (uint64_t)sqlite3_column_int64(st, 6);
  in->dead_chunks = (uint64_t)sqlite3_column_int64(st, 7);
  in->records_done = (uint64_t)sqlite3_column_int64(st, 8);
  in->redeliveries = (uint64_t)sqlite3_column_int64(st, 9);
  in->created_at = sqlite3_column_double(st, 10);
  in->state = sqlite3_column_int(st, 11);
  in->priority = (uint32_t)sqlite3_column_int64(st, 12);
  in->max_deliver = (uint32_t)sqlite3_column_int64(st, 13);
  in->finished_at = sqlite3_column_double(st, 14);
  const unsigned char *le = sqlite3_column_text(st, 15);
  snprintf(in->last_error, sizeof in->last_error, "%s", le ? (const char *)le : "");
  const unsigned char *spec = sqlite3_column_text(st, 16);
  const unsigned char *rv = sqlite3_column_text(st, 17);
  free(l->spec);
  free(l->redo_version);
  l->spec = spec ? cm__strdup((const char *)spec) : NULL;
  l->redo_version = rv ? cm__strdup((const char *)rv) : NULL;
  if ((spec && !l->spec) || (rv && !l->redo_version)) {
    ret = -ENOMEM;
    goto out;
  }
  in->redo_gen = (uint32_t)sqlite3_column_int64(st, 18);
  in->redo_chunks = (uint64_t)sqlite3_column_int64(st, 19);
  in->redo_done = (uint64_t)sqlite3_column_int64(st, 20);
  const unsigned char *cur = sqlite3_column_text(st, 21);
  free(l->cursor);
  l->cursor = cur ? cm__strdup((const char *)cur) : NULL;
  if (cur && !l->cursor) {
    ret = -ENOMEM;
    goto out;
  }
  ret = 1;
out:
  sqlite3_reset(st);
  return ret;
}

/* A pending chunk rebuilt from its ledger row (its payload, if any, is in
 * the payloads table). NULL on out-of-memory. */
static cm__chunk_t *cm__chunk_from_row(uint64_t idx, uint32_t attempt, uint32_t base_attempt,
                                       int64_t not_before_ms, const unsigned char *reason,
                                       uint32_t records, uint32_t redo, bool payload) {
  cm__chunk_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->idx = idx;
  c->attempt = attempt;
  c->base_attempt = base_attempt;
  c->not_before_ms = not_before_ms;
  c->records = records;
  c->redo = redo;
  c->state = CM_CHUNK_PENDING;
  c->payload_in_db = payload;
  if (reason && !(c->reason = cm__strdup((const char *)reason))) {
    free(c);
    return NULL;
  }
  return c;
}

/* Loads the job's pending chunks (after recovery there are no leased ones).
 * Dead chunks stay on disk; replay_dead or a late ack brings one back. */
static int cm__job_load(cm_ledger_t *l) {
  sqlite3_stmt *st = l->st[CM__S_LOAD_LIVE];
  cm__chunk_t *c = NULL;
  int ret = 0, rc;
  cm__bind_job(l, st);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if ((ret = cm__set_reserve(&l->set)) < 0) goto out;
    if ((ret = cm__heap_reserve(&l->ready)) < 0) goto out;
    if ((ret = cm__heap_reserve(&l->wait)) < 0) goto out;
    c = cm__chunk_from_row((uint64_t)sqlite3_column_int64(st, 0),
                           (uint32_t)sqlite3_column_int64(st, 1),
                           (uint32_t)sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                           sqlite3_column_text(st, 4), (uint32_t)sqlite3_column_int64(st, 5),
                           (uint32_t)sqlite3_column_int64(st, 6), sqlite3_column_int(st, 7) != 0);
    if (!c) {
      ret = -ENOMEM;
      goto out;
    }
    cm__set_insert(&l->set, c);
    cm__pend(l, c); /* waiting since this run could first send it */
    c = NULL;
  }
  if (rc != SQLITE_DONE) ret = cm__fail(l, rc);
out:
  sqlite3_reset(st);
  cm__chunk_free(c);
  return ret;
}

int cm_ledger_job_open(cm_ledger_t *l, const char *name, const char *source, uint32_t chunk_size,
                       cm_job_info_t *info, char *err, size_t errlen) {
  return cm_ledger_job_open_ex(l, name, source, chunk_size, NULL, info, err, errlen);
}

/* Runs one UPDATE jobs SET <col> = ?1 WHERE name = ?2 (inside job_open's
 * transaction). */
static int cm__job_set_text(cm_ledger_t *l, const char *sql, const char *v, const char *name) {
  sqlite3_stmt *up = NULL;
  int ret = 0;
  int rc = sqlite3_prepare_v2(l->db, sql, -1, &up, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(up, 1, v, -1, SQLITE_STATIC);
    sqlite3_bind_text(up, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(up);
  }
  if (rc != SQLITE_OK && rc != SQLITE_DONE) ret = cm__fail(l, rc);
  sqlite3_finalize(up);
  return ret;
}

int cm_ledger_job_open_ex(cm_ledger_t *l, const char *name, const char *source,
                          uint32_t chunk_size, const cm_ledger_new_job_t *nj, cm_job_info_t *info,
                          char *err, size_t errlen) {
  char *stored = NULL;
  const char *old_src = NULL;
  int ret = 0, found;
  if (errlen) err[0] = '\0';
  if (!name || !*name || strlen(name) >= sizeof info->name || chunk_size == 0 || !source) {
    snprintf(err, errlen, "ledger %s: invalid job name or chunk size", l->path);
    return -EINVAL;
  }
  l->errmsg[0] = '\0';
  /* One job per handle at a time: switching jobs writes the old one out
   * (and keeps it open if that fails). */
  if (l->job) {
    if ((ret = cm_ledger_flush(l)) < 0) {
      snprintf(err, errlen, "%s", l->errmsg);
      return ret;
    }
    cm__reset_memory(l);
    free(l->job);
    free(l->source);
    l->job = l->source = NULL;
  }
  free(l->spec);
  free(l->redo_version);
  free(l->cursor);
  l->spec = l->redo_version = l->cursor = NULL;
  memset(&l->info, 0, sizeof l->info);
  if (!(l->job = cm__strdup(name)) || !(l->source = cm__strdup(source))) {
    ret = -ENOMEM;
    goto fail;
  }
  if ((ret = cm__step_done(l, l->st[CM__S_BEGIN])) < 0) goto sqlfail;
  found = cm__job_read(l, name, &old_src, &stored);
  if (found < 0) {
    ret = found;
    goto sqlfail;
  }
  if (found && strcmp(old_src, source) != 0) {
    /* Descriptions show URLs with their credentials as "***"; a ledger
     * written before that holds them in clear: the same source, whose row
     * is rewritten so the secret leaves the file. */
    char shown[1024];
    (void)cm_redact_urls(old_src, shown, sizeof(shown));
    if (strcmp(shown, source) == 0) {
      if ((ret = cm__job_set_text(l, "UPDATE jobs SET source = ?1 WHERE name = ?2", source,
                                  name)) < 0)
        goto sqlfail;
    } else {
      snprintf(err, errlen,
               "job \"%s\" in ledger %s was created with source \"%s\"; refusing to resume it "
               "with \"%s\"; use another --job or ledger",
               name, l->path, shown, source);
      ret = -EEXIST;
      goto fail;
    }
  }
  if (found && nj && nj->must_be_new) {
    snprintf(err, errlen, "job \"%s\" exists in ledger %s", name, l->path);
    ret = -EEXIST;
    goto fail;
  }
  if (found && l->info.chunk_size != chunk_size) {
    snprintf(err, errlen,
             "job \"%s\" in ledger %s was created with chunk size %u; refusing to resume it "
             "with chunk size %u; use another --job or ledger",
             name, l->path, l->info.chunk_size, chunk_size);
    ret = -EEXIST;
    goto fail;
  }
  if (found && nj && nj->spec && !l->spec) {
    /* A job of a schema-1 ledger: its spec is known from now on. */
    if ((ret = cm__job_set_text(l, "UPDATE jobs SET spec = ?1 WHERE name = ?2", nj->spec,
                                name)) < 0)
      goto sqlfail;
    if (!(l->spec = cm__strdup(nj->spec))) {
      ret = -ENOMEM;
      goto sqlfail;
    }
  }
  if (!found) {
    sqlite3_stmt *st = l->st[CM__S_JOB_INSERT];
    l->info.chunk_size = chunk_size;
    l->info.created_at = cm__now_s();
    l->info.priority = nj && nj->priority ? nj->priority : 1;
    l->info.max_deliver = nj ? nj->max_deliver : 0;
    l->info.state = nj ? nj->state : 1;
    if (nj && nj->spec && !(l->spec = cm__strdup(nj->spec))) {
      ret = -ENOMEM;
      goto sqlfail;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, chunk_size);
    sqlite3_bind_double(st, 4, l->info.created_at);
    if (l->spec)
      sqlite3_bind_text(st, 5, l->spec, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null(st, 5);
    sqlite3_bind_int64(st, 6, l->info.priority);
    sqlite3_bind_int64(st, 7, l->info.max_deliver);
    sqlite3_bind_int(st, 8, l->info.state);
    ret = cm__step_done(l, st);
    sqlite3_clear_bindings(st);
    if (ret < 0) goto sqlfail;
  }
  /* Crash recovery: nobody holds a lease from a previous run any more.
   * Attempts continue from the stored ones. A lease that was never flushed
   * is handed out again with the same attempt number, so a mapper from
   * before the crash could nak the new lease: one more redelivery at worst,
   * never a lost chunk (the saver deduplicates). */
  cm__bind_job(l, l->st[CM__S_RECOVER]);
  if ((ret = cm__step_done(l, l->st[CM__S_RECOVER])) < 0) goto sqlfail;
  if ((ret = cm__step_done(l, l->st[CM__S_COMMIT])) < 0) goto sqlfail;
  if ((ret = cm__job_load(l)) < 0) goto sqlfail;
  l->last_add_ms = cm__clock_ms(l);
  snprintf(l->info.name, sizeof l->info.name, "%s", name);
  snprintf(l->info.source, sizeof l->info.source, "%s", source);
  if (info) *info = l->info;
  free(stored);
  return 0;
sqlfail:
  snprintf(err, errlen, "%s", l->errmsg[0] ? l->errmsg : "ledger: out of memory");
fail:
  cm__rollback(l);
  cm__reset_memory(l);
  free(stored);
  free(l->job);
  free(l->source);
  free(l->spec);
  free(l->redo_version);
  free(l->cursor);
  l->job = l->source = l->spec = l->redo_version = l->cursor = NULL;
  memset(&l->info, 0, sizeof l->info);
  return ret;
}

void cm_ledger_info(const cm_ledger_t *l, cm_job_info_t *info) { *info = l->info; }

/* ---- state changes ----------------------------------------------------- */

int cm_ledger_add_chunk(cm_ledger_t *l, uint64_t index, const void *payload, size_t len,
                        int64_t pos, uint64_t line, bool source_done) {
  return cm_ledger_add_chunk_origin(l, index, payload, len, pos, line, source_done, NULL);
}

int cm_ledger_add_chunk_origin(cm_ledger_t *l, uint64_t index, const void *payload, size_t len,
                               int64_t pos, uint64_t line, bool source_done,
                               const cm_ledger_origin_t *origin) {
  cm__chunk_t *c = NULL;
  int ret;
  if (!l->job || index != l->info.next_index || l->info.source_done) return -EINVAL;
  if ((ret = cm__set_reserve(&l->set)) < 0 || (ret = cm__heap_reserve(&l->ready)) < 0 ||
      (ret = cm__queue_reserve(l)) < 0)
    return ret;
  if (!(c = calloc(1, sizeof *c))) return -ENOMEM;
  if (origin) {
    if (!(c->origin = calloc(1, sizeof *c->origin)) ||
        (origin->cursor && !(c->origin->cursor = cm__strdup(origin->cursor)))) {
      cm__chunk_free(c);
      return -ENOMEM;
    }
    c->origin->pos = origin->pos;
    c->origin->line = origin->line;
    memcpy(c->origin->digest, origin->digest, sizeof c->origin->digest);
  }
  if (payload) {
    /* Kept until the flush writes it, so add + flush is one transaction. */
    if (!(c->payload = malloc(len ? len : 1))) {
      cm__chunk_free(c);
      return -ENOMEM;
    }
    memcpy(c->payload, payload, len);
    c->payload_len = len;
  }
  c->idx = index;
  c->state = CM_CHUNK_PENDING;
  cm__set_insert(&l->set, c);
  cm__pend(l, c);
  cm__queue(l, c);
  l->last_add_ms = c->pending_since_ms;
  l->info.next_index = index + 1;
  l->info.source_pos = pos;
  l->info.source_line = line;
  l->info.source_done = source_done;
  l->job_dirty = true;
  return 0;
}

int cm_ledger_set_source_done(cm_ledger_t *l) {
  if (!l->job) return -EINVAL;
  if (!l->info.source_done) {
    l->info.source_done = true;
    l->job_dirty = true;
  }
  return 0;
}

int cm_ledger_next_due(cm_ledger_t *l, int64_t now_ms, uint64_t *index) {
  /* Each chunk moves from wait to ready once per retry: amortised
   * O(log n), and the lowest due index is the top of `ready`. */
  while (l->wait.n && l->wait.v[0]->not_before_ms <= now_ms) {
    cm__chunk_t *c = l->wait.v[0];
    if (cm__heap_reserve(&l->ready) < 0) break; /* serve what is ready */
    cm__heap_remove(&l->wait, c);
    cm__heap_push(&l->ready, c);
  }
  if (!l->ready.n) return 0;
  *index = l->ready.v[0]->idx;
  return 1;
}

int64_t cm_ledger_next_due_at(const cm_ledger_t *l) {
  return l->wait.n ? l->wait.v[0]->not_before_ms : -1;
}

int cm_ledger_lease(cm_ledger_t *l, uint64_t index, const char *holder, int64_t deadline_ms,
                    uint32_t *attempt) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  char *h = NULL;
  int ret;
  if (!c || c->state != CM_CHUNK_PENDING) return -EINVAL;
  if ((ret = cm__heap_reserve(&l->lease)) < 0 || (ret = cm__queue_reserve(l)) < 0) return ret;
  if (!(h = cm__strdup(holder ? holder : ""))) return -ENOMEM;
  cm__unheap(l, c);
  cm__pendq_remove(&l->pendq, c);
  free(c->holder);
  c->holder = h;
  c->attempt++;
  if (c->attempt > 1) l->info.redeliveries++;
  c->state = CM_CHUNK_LEASED;
  c->deadline_ms = deadline_ms;
  c->not_before_ms = 0;
  cm__heap_push(&l->lease, c);
  cm__queue(l, c);
  l->job_dirty = true;
  if (attempt) *attempt = c->attempt;
  return 0;
}

int cm_ledger_extend(cm_ledger_t *l, uint64_t index, uint32_t attempt, int64_t deadline_ms) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  if (!c || c->state != CM_CHUNK_LEASED || c->attempt != attempt) return 0;
  /* Not queued for writing: after a restart every lease becomes pending
   * anyway, so a stored deadline is never used. Heartbeats extend leases
   * often; skipping the write keeps flushes small. */
  c->deadline_ms = deadline_ms;
  cm__heap_fix(&l->lease, c);
  return 1;
}

int cm_ledger_ack(cm_ledger_t *l, uint64_t index, uint32_t attempt, uint32_t records) {
  return cm_ledger_ack_v(l, index, attempt, records, NULL, 0);
}

int cm_ledger_ack_v(cm_ledger_t *l, uint64_t index, uint32_t attempt, uint32_t records,
                    const char *version, uint32_t redo) {
  cm__chunk_t *c;
  char *v = NULL;
  int ret;
  (void)attempt; /* any attempt: the data is saved, whoever saved it */
  if (!l->job || index >= l->info.next_index) return 0;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  c = cm__set_find(&l->set, index);
  if (!c) {
    /* Not in memory: done (nothing to do) or dead (a late ack of a chunk
     * that ran out of deliveries: it is saved after all). */
    if ((ret = cm__set_reserve(&l->set)) < 0) return ret;
    ret = cm__load_row(l, index, &c);
    if (ret <= 0) return ret;
    if (c->state != CM_CHUNK_DEAD || c->redo > redo) {
      cm__chunk_free(c);
      return 0;
    }
    cm__set_insert(&l->set, c);
  }
  if (c->state == CM_CHUNK_DONE) return 0;
  /* Saved by an older generation than the chunk's redo: the saver keeps
   * the newer rows (docs/jobs.md), so this ack proves nothing. */
  if (c->redo > redo) return 0;
  if (version && !(v = cm__strdup(version))) return -ENOMEM;
  free(c->version);
  c->version = v;
  if (c->redo > 0 && c->redo == l->info.redo_gen) l->info.redo_done++;
  cm__unheap(l, c);
  cm__pendq_remove(&l->pendq, c);
  if (c->state == CM_CHUNK_DEAD) l->info.dead_chunks--;
  free(c->holder);
  c->holder = NULL;
  c->state = CM_CHUNK_DONE;
  c->records = records;
  /* A saved chunk is never read again: drop its copy now, its row at the
   * flush. */
  free(c->payload);
  c->payload = NULL;
  c->payload_len = 0;
  l->info.done_chunks++;
  l->info.records_done += records;
  l->job_dirty = true;
  cm__queue(l, c);
  return 1;
}

int cm_ledger_release(cm_ledger_t *l, uint64_t index, uint32_t attempt, int64_t not_before_ms,
                      const char *reason, uint32_t max_deliver) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  char *r = NULL;
  int ret;
  if (!c || c->state != CM_CHUNK_LEASED || c->attempt != attempt) return 0;
  bool dead = max_deliver > 0 && c->attempt - c->base_attempt >= max_deliver;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  if (!dead && (ret = cm__heap_reserve(not_before_ms <= 0 ? &l->ready : &l->wait)) < 0)
    return ret;
  if (reason && !(r = cm__strdup(reason))) return -ENOMEM;
  if (reason) {
    free(c->reason);
    c->reason = r;
  }
  cm__heap_remove(&l->lease, c);
  free(c->holder);
  c->holder = NULL;
  c->deadline_ms = 0;
  cm__queue(l, c);
  l->job_dirty = true;
  if (dead) {
    /* Leaves memory at the next flush; the row keeps reason and attempt. */
    c->state = CM_CHUNK_DEAD;
    c->not_before_ms = 0;
    l->info.dead_chunks++;
    return 2;
  }
  c->state = CM_CHUNK_PENDING;
  c->not_before_ms = not_before_ms;
  cm__pend(l, c);
  return 1;
}

/* Collects (index, attempt) first and calls fn afterwards, re-checking each
 * chunk: fn may release this chunk or others (e.g. every chunk of a holder
 * that stopped heartbeating) without invalidating the walk. */
static int cm__hits_reserve(cm_ledger_t *l, size_t n) {
  if (n <= l->hits_cap) return 0;
  void *p = realloc(l->hits, n * sizeof *l->hits);
  if (!p) return -ENOMEM;
  l->hits = p;
  p = realloc(l->stack, n * sizeof *l->stack);
  if (!p) return -ENOMEM;
  l->stack = p;
  l->hits_cap = n;
  return 0;
}

static int cm__hit_cmp(const void *a, const void *b) {
  uint64_t x = ((const struct cm__hit_s *)a)->idx, y = ((const struct cm__hit_s *)b)->idx;
  return (x > y) - (x < y);
}

int cm_ledger_each_expired(cm_ledger_t *l, int64_t now_ms, cm_ledger_lease_fn fn, void *ud) {
  size_t n = 0, top = 0;
  int found = 0;
  if (cm__hits_reserve(l, l->lease.n + 1) < 0) return -ENOMEM;
  /* Walk the heap from the root, pruning subtrees whose root is not yet
   * expired: O(expired), not O(leased). `stack` holds heap positions still
   * to visit; each position is pushed at most once, so n + 1 is enough. */
  size_t *stack = l->stack;
  if (l->lease.n) stack[top++] = 0;
  while (top) {
    size_t i = stack[--top];
    cm__chunk_t *c = l->lease.v[i];
    if (c->deadline_ms > now_ms) continue;
    l->hits[n].idx = c->idx;
    l->hits[n++].attempt = c->attempt;
    if (2 * i + 1 < l->lease.n) stack[top++] = 2 * i + 1;
    if (2 * i + 2 < l->lease.n) stack[top++] = 2 * i + 2;
  }
  qsort(l->hits, n, sizeof *l->hits, cm__hit_cmp);
  for (size_t k = 0; k < n; k++) {
    cm__chunk_t *c = cm__set_find(&l->set, l->hits[k].idx);
    if (!c || c->state != CM_CHUNK_LEASED || c->attempt != l->hits[k].attempt ||
        c->deadline_ms > now_ms)
      continue;
    found++;
    if (fn) fn(ud, c->idx, c->attempt, c->holder);
  }
  return found;
}

int cm_ledger_each_held(cm_ledger_t *l, const char *holder, cm_ledger_lease_fn fn, void *ud) {
  size_t n = 0;
  int found = 0;
  if (!holder) return 0;
  if (cm__hits_reserve(l, l->lease.n + 1) < 0) return -ENOMEM;
  for (size_t i = 0; i < l->lease.n; i++) {
    cm__chunk_t *c = l->lease.v[i];
    if (strcmp(c->holder, holder) != 0) continue;
    l->hits[n].idx = c->idx;
    l->hits[n++].attempt = c->attempt;
  }
  qsort(l->hits, n, sizeof *l->hits, cm__hit_cmp);
  for (size_t k = 0; k < n; k++) {
    cm__chunk_t *c = cm__set_find(&l->set, l->hits[k].idx);
    if (!c || c->state != CM_CHUNK_LEASED || c->attempt != l->hits[k].attempt ||
        strcmp(c->holder, holder) != 0)
      continue;
    found++;
    if (fn) fn(ud, c->idx, c->attempt, c->holder);
  }
  return found;
}

int cm_ledger_replay_dead(cm_ledger_t *l) {
  sqlite3_stmt *st = l->st[CM__S_LOAD_DEAD];
  cm__chunk_t *c = NULL;
  int ret, rc, n = 0;
  if (!l->job) return -EINVAL;
  /* Dead chunks live on disk only: write out the ones that died since the
   * last flush, then the table is the complete list. */
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  cm__bind_job(l, st);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint64_t idx = (uint64_t)sqlite3_column_int64(st, 0);
    if (cm__set_find(&l->set, idx)) continue; /* cannot happen after the flush */
    if ((ret = cm__set_reserve(&l->set)) < 0 || (ret = cm__heap_reserve(&l->ready)) < 0 ||
        (ret = cm__queue_reserve(l)) < 0)
      goto out;
    uint32_t attempt = (uint32_t)sqlite3_column_int64(st, 1);
    /* base_attempt = attempt: a fresh max_deliver budget. */
    c = cm__chunk_from_row(idx, attempt, attempt, 0, sqlite3_column_text(st, 2),
                           (uint32_t)sqlite3_column_int64(st, 3),
                           (uint32_t)sqlite3_column_int64(st, 4), sqlite3_column_int(st, 5) != 0);
    if (!c) {
      ret = -ENOMEM;
      goto out;
    }
    cm__set_insert(&l->set, c);
    cm__pend(l, c);
    cm__queue(l, c);
    c = NULL;
    l->info.dead_chunks--;
    l->job_dirty = true;
    n++;
  }
  ret = rc == SQLITE_DONE ? n : cm__fail(l, rc);
out:
  /* On an error midway the chunks replayed so far stay replayed (memory and
   * queue agree), the rest stay dead. */
  sqlite3_reset(st);
  cm__chunk_free(c);
  return ret;
}

/* ---- jobs of the service (schema 2) ----------------------------------- */

int cm_ledger_set_state(cm_ledger_t *l, int state, double finished_at, const char *last_error) {
  cm_job_info_t old;
  int ret;
  if (!l->job) return -EINVAL;
  old = l->info;
  l->info.state = state;
  l->info.finished_at = finished_at;
  snprintf(l->info.last_error, sizeof l->info.last_error, "%s", last_error ? last_error : "");
  l->job_dirty = true;
  if ((ret = cm_ledger_flush(l)) < 0) {
    /* Not stored: memory says what the file says. */
    l->info.state = old.state;
    l->info.finished_at = old.finished_at;
    memcpy(l->info.last_error, old.last_error, sizeof old.last_error);
  }
  return ret;
}

const char *cm_ledger_spec(const cm_ledger_t *l) { return l->spec; }
const char *cm_ledger_cursor(const cm_ledger_t *l) { return l->cursor; }

int cm_ledger_set_cursor(cm_ledger_t *l, const char *cursor) {
  char *c = NULL;
  if (!l->job) return -EINVAL;
  if ((cursor == NULL && l->cursor == NULL) ||
      (cursor && l->cursor && strcmp(cursor, l->cursor) == 0))
    return 0;
  if (cursor && !(c = cm__strdup(cursor))) return -ENOMEM;
  free(l->cursor);
  l->cursor = c;
  l->job_dirty = true;
  return 0;
}
const char *cm_ledger_redo_version(const cm_ledger_t *l) { return l->redo_version; }

int cm_ledger_each_job(cm_ledger_t *l, cm_ledger_job_fn fn, void *ud) {
  sqlite3_stmt *st = l->st[CM__S_JOB_LIST];
  int rc, n = 0, ret = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    cm_ledger_job_row_t r;
    memset(&r, 0, sizeof r);
    r.name = (const char *)sqlite3_column_text(st, 0);
    r.source = (const char *)sqlite3_column_text(st, 1);
    r.chunk_size = (uint32_t)sqlite3_column_int64(st, 2);
    r.state = sqlite3_column_int(st, 3);
    r.spec = (const char *)sqlite3_column_text(st, 4);
    r.priority = (uint32_t)sqlite3_column_int64(st, 5);
    r.max_deliver = (uint32_t)sqlite3_column_int64(st, 6);
    r.created_at = sqlite3_column_double(st, 7);
    n++;
    if (fn && (ret = fn(ud, &r)) != 0) break;
  }
  if (ret == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE) ret = cm__fail(l, rc);
  sqlite3_reset(st);
  return ret != 0 ? ret : n;
}

int cm_ledger_each_dead(cm_ledger_t *l, size_t max, cm_ledger_dead_fn fn, void *ud) {
  sqlite3_stmt *st = l->st[CM__S_DEAD_LIST];
  int rc, n = 0, ret;
  if (!l->job) return -EINVAL;
  /* Chunks that died since the last flush are not in the table yet. */
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)(max > INT64_MAX ? INT64_MAX : max));
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *reason = sqlite3_column_text(st, 2);
    if (fn)
      fn(ud, (uint64_t)sqlite3_column_int64(st, 0), (uint32_t)sqlite3_column_int64(st, 1),
         reason ? (const char *)reason : "");
    n++;
  }
  ret = rc == SQLITE_DONE ? n : cm__fail(l, rc);
  sqlite3_reset(st);
  return ret;
}

int cm_ledger_redo(cm_ledger_t *l, const char *version) {
  sqlite3_stmt *st = l->st[CM__S_LOAD_REDO];
  cm__chunk_t *c = NULL;
  char *v = NULL;
  uint32_t gen;
  int ret, rc, n = 0;
  if (!l->job || !version) return -EINVAL;
  /* Done chunks leave memory at the flush: then the table has them all. */
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  if (!(v = cm__strdup(version))) return -ENOMEM;
  gen = l->info.redo_gen + 1;
  cm__bind_job(l, st);
  sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint64_t idx = (uint64_t)sqlite3_column_int64(st, 0);
    if (cm__set_find(&l->set, idx)) continue; /* cannot happen after the flush */
    if ((ret = cm__set_reserve(&l->set)) < 0 || (ret = cm__heap_reserve(&l->ready)) < 0 ||
        (ret = cm__queue_reserve(l)) < 0)
      goto out;
    uint32_t attempt = (uint32_t)sqlite3_column_int64(st, 1);
    uint32_t records = (uint32_t)sqlite3_column_int64(st, 3);
    /* A fresh max_deliver budget, like a replay; records are counted again
     * when the new save is acked. */
    /* Its payload row was deleted when it was done: a sequential source's
     * chunk is re-read (cm_ledger_needs_payload) before it is sent. */
    c = cm__chunk_from_row(idx, attempt, attempt, 0, NULL, 0, gen, false);
    if (!c) {
      ret = -ENOMEM;
      goto out;
    }
    cm__set_insert(&l->set, c);
    cm__pend(l, c);
    cm__queue(l, c);
    c = NULL;
    l->info.done_chunks--;
    l->info.records_done -= records;
    n++;
  }
  ret = rc == SQLITE_DONE ? n : cm__fail(l, rc);
out:
  sqlite3_clear_bindings(st);
  sqlite3_reset(st);
  cm__chunk_free(c);
  if (n > 0) {
    /* Chunks moved so far stay moved (memory and queue agree). */
    free(l->redo_version);
    l->redo_version = v;
    v = NULL;
    l->info.redo_gen = gen;
    l->info.redo_chunks = (uint64_t)n;
    l->info.redo_done = 0;
    l->job_dirty = true;
  }
  free(v);
  return ret;
}

uint32_t cm_ledger_chunk_redo(cm_ledger_t *l, uint64_t index) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  return c ? c->redo : 0;
}

int cm_ledger_redo_unplaced(cm_ledger_t *l, const char *version) {
  sqlite3_stmt *st = l->st[CM__S_REDO_UNPLACED];
  int ret, rc;
  if (!l->job || !version) return -EINVAL;
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  cm__bind_job(l, st);
  sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  ret = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : cm__fail(l, rc);
  sqlite3_clear_bindings(st);
  sqlite3_reset(st);
  return ret;
}

int cm_ledger_chunk_origin(cm_ledger_t *l, uint64_t index, cm_ledger_origin_t *o, char *cursor,
                           size_t cursor_len) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  sqlite3_stmt *st = l->st[CM__S_ORIGIN_GET];
  int ret = -ENOENT, rc;
  if (!l->job) return -ENOENT;
  if (cursor_len) cursor[0] = '\0';
  o->cursor = NULL;
  if (c && c->origin) {
    /* not flushed yet */
    o->pos = c->origin->pos;
    o->line = c->origin->line;
    memcpy(o->digest, c->origin->digest, sizeof o->digest);
    if (c->origin->cursor) {
      if (snprintf(cursor, cursor_len, "%s", c->origin->cursor) >= (int)cursor_len) return -E2BIG;
      o->cursor = cursor;
    }
    return 0;
  }
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)index);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const void *d = sqlite3_column_blob(st, 3);
    const unsigned char *cur = sqlite3_column_text(st, 2);
    if (sqlite3_column_type(st, 0) != SQLITE_NULL && d &&
        sqlite3_column_bytes(st, 3) == (int)sizeof o->digest) {
      o->pos = sqlite3_column_int64(st, 0);
      o->line = (uint64_t)sqlite3_column_int64(st, 1);
      memcpy(o->digest, d, sizeof o->digest);
      ret = 0;
      if (cur) {
        if (snprintf(cursor, cursor_len, "%s", (const char *)cur) >= (int)cursor_len)
          ret = -E2BIG;
        else
          o->cursor = cursor;
      }
    }
  } else if (rc != SQLITE_DONE) {
    ret = cm__fail(l, rc);
  }
  sqlite3_reset(st);
  return ret;
}

bool cm_ledger_needs_payload(const cm_ledger_t *l, uint64_t index) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  return c && c->state == CM_CHUNK_PENDING && !c->payload && !c->payload_in_db;
}

int cm_ledger_set_payload(cm_ledger_t *l, uint64_t index, const void *payload, size_t len) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  void *p;
  int ret;
  if (!c || c->state != CM_CHUNK_PENDING || !payload) return -EINVAL;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  if (!(p = malloc(len ? len : 1))) return -ENOMEM;
  memcpy(p, payload, len);
  free(c->payload);
  c->payload = p;
  c->payload_len = len;
  cm__queue(l, c);
  return 0;
}

int cm_ledger_kill(cm_ledger_t *l, uint64_t index, const char *reason) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  char *r;
  int ret;
  if (!c || c->state != CM_CHUNK_PENDING || !reason) return -EINVAL;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  if (!(r = cm__strdup(reason))) return -ENOMEM;
  free(c->reason);
  c->reason = r;
  cm__unheap(l, c);
  cm__pendq_remove(&l->pendq, c);
  c->state = CM_CHUNK_DEAD;
  c->not_before_ms = 0;
  l->info.dead_chunks++;
  l->job_dirty = true;
  cm__queue(l, c);
  return 0;
}

/* ---- queries ----------------------------------------------------------- */

int cm_ledger_payload(cm_ledger_t *l, uint64_t index, cm_buf_t *out) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  sqlite3_stmt *st = l->st[CM__S_PAYLOAD_GET];
  int ret, rc;
  if (!l->job) return -ENOENT;
  /* done: saved, and its row goes at the next flush */
  if (c && c->state == CM_CHUNK_DONE) return -ENOENT;
  if (c && c->payload) return cm_buf_append(out, c->payload, c->payload_len);
  if (c && !c->payload_in_db) return -ENOENT;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)index);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const void *p = sqlite3_column_blob(st, 0);
    int n = sqlite3_column_bytes(st, 0);
    ret = cm_buf_append(out, p ? p : "", (size_t)n);
  } else {
    ret = rc == SQLITE_DONE ? -ENOENT : cm__fail(l, rc);
  }
  sqlite3_reset(st);
  return ret;
}

int cm_ledger_chunk_state(cm_ledger_t *l, uint64_t index, cm_chunk_state_t *state,
                          uint32_t *attempt) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  int ret = 0;
  if (!l->job) return -ENOENT;
  if (!c) {
    ret = cm__load_row(l, index, &c);
    if (ret < 0) return ret;
    if (ret == 0) return -ENOENT;
  }
  if (state) *state = (cm_chunk_state_t)c->state;
  if (attempt) *attempt = c->attempt;
  if (ret == 1) cm__chunk_free(c); /* loaded for the question only */
  return 0;
}

size_t cm_ledger_leased_count(const cm_ledger_t *l) { return l->lease.n; }
size_t cm_ledger_pending_count(const cm_ledger_t *l) { return l->ready.n + l->wait.n; }
size_t cm_ledger_memory_chunks(const cm_ledger_t *l) { return l->set.n; }

void cm_ledger_set_clock(cm_ledger_t *l, int64_t (*now_ms)(void *ud), void *ud) {
  l->clock = now_ms;
  l->clock_ud = ud;
}

int64_t cm_ledger_oldest_pending_ms(const cm_ledger_t *l, bool unread) {
  int64_t now, since = INT64_MAX;
  if (!l->job) return 0;
  if (l->pendq.head) since = l->pendq.head->pending_since_ms;
  if (unread && !l->info.source_done && l->last_add_ms < since) since = l->last_add_ms;
  if (since == INT64_MAX) return 0;
  now = cm__clock_ms(l);
  return now > since ? now - since : 0;
}

bool cm_ledger_job_complete(const cm_ledger_t *l) {
  return l->job && l->info.source_done &&
         l->info.done_chunks + l->info.dead_chunks == l->info.next_index;
}

/* ---- flush ------------------------------------------------------------- */

static int cm__write_chunk(cm_ledger_t *l, const cm__chunk_t *c) {
  sqlite3_stmt *st = l->st[CM__S_CHUNK_UPSERT];
  int ret;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)c->idx);
  sqlite3_bind_int(st, 3, c->state);
  sqlite3_bind_int64(st, 4, c->attempt);
  sqlite3_bind_int64(st, 5, c->base_attempt);
  sqlite3_bind_int64(st, 6, c->deadline_ms);
  if (c->holder)
    sqlite3_bind_text(st, 7, c->holder, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 7);
  sqlite3_bind_int64(st, 8, c->not_before_ms);
  if (c->reason)
    sqlite3_bind_text(st, 9, c->reason, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 9);
  sqlite3_bind_int64(st, 10, c->records);
  if (c->version)
    sqlite3_bind_text(st, 11, c->version, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 11);
  sqlite3_bind_int64(st, 12, c->redo);
  if (c->origin) {
    sqlite3_bind_int64(st, 13, c->origin->pos);
    sqlite3_bind_int64(st, 14, (sqlite3_int64)c->origin->line);
    if (c->origin->cursor)
      sqlite3_bind_text(st, 15, c->origin->cursor, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null(st, 15);
    sqlite3_bind_blob(st, 16, c->origin->digest, (int)sizeof c->origin->digest, SQLITE_STATIC);
  } else {
    for (int i = 13; i <= 16; i++) sqlite3_bind_null(st, i);
  }
  ret = cm__step_done(l, st);
  sqlite3_clear_bindings(st);
  if (ret < 0) return ret;
  if (c->state == CM_CHUNK_DONE) {
    if (!c->payload_in_db) return 0;
    st = l->st[CM__S_PAYLOAD_DEL];
    cm__bind_job(l, st);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c->idx);
    return cm__step_done(l, st);
  }
  if (!c->payload) return 0;
  st = l->st[CM__S_PAYLOAD_PUT];
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)c->idx);
  sqlite3_bind_blob64(st, 3, c->payload, c->payload_len, SQLITE_STATIC);
  ret = cm__step_done(l, st);
  sqlite3_clear_bindings(st);
  return ret;
}

static int cm__write_job(cm_ledger_t *l) {
  sqlite3_stmt *st = l->st[CM__S_JOB_UPDATE];
  const cm_job_info_t *in = &l->info;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)in->next_index);
  sqlite3_bind_int(st, 3, in->source_done);
  sqlite3_bind_int64(st, 4, in->source_pos);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)in->source_line);
  sqlite3_bind_int64(st, 6, (sqlite3_int64)in->done_chunks);
  sqlite3_bind_int64(st, 7, (sqlite3_int64)in->dead_chunks);
  sqlite3_bind_int64(st, 8, (sqlite3_int64)in->records_done);
  sqlite3_bind_int64(st, 9, (sqlite3_int64)in->redeliveries);
  sqlite3_bind_int(st, 10, in->state);
  if (in->finished_at > 0)
    sqlite3_bind_double(st, 11, in->finished_at);
  else
    sqlite3_bind_null(st, 11);
  if (in->last_error[0])
    sqlite3_bind_text(st, 12, in->last_error, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 12);
  if (l->redo_version)
    sqlite3_bind_text(st, 13, l->redo_version, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 13);
  sqlite3_bind_int64(st, 14, in->redo_gen);
  sqlite3_bind_int64(st, 15, (sqlite3_int64)in->redo_chunks);
  sqlite3_bind_int64(st, 16, (sqlite3_int64)in->redo_done);
  if (l->cursor)
    sqlite3_bind_text(st, 17, l->cursor, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 17);
  int ret = cm__step_done(l, st);
  sqlite3_clear_bindings(st);
  return ret;
}

static bool cm__has_changes(const cm_ledger_t *h) {
  return h->job && (h->queue_n > 0 || h->job_dirty);
}

/* After the commit: forget payload copies, and done/dead chunks leave
 * memory. */
static void cm__committed(cm_ledger_t *l) {
  for (size_t i = 0; i < l->queue_n; i++) {
    cm__chunk_t *c = l->queue[i];
    c->dirty = false;
    cm__origin_free(c->origin);
    c->origin = NULL;
    if (c->payload) {
      free(c->payload);
      c->payload = NULL;
      c->payload_len = 0;
      c->payload_in_db = true;
    }
    if (c->state == CM_CHUNK_DONE || c->state == CM_CHUNK_DEAD) {
      cm__set_delete(&l->set, c);
      cm__chunk_free(c);
    }
  }
  l->queue_n = 0;
  l->job_dirty = false;
  /* Give back memory after a burst (e.g. a large replay) has drained. */
  cm__set_shrink(&l->set);
  if (l->queue_cap > 1024) {
    free(l->queue);
    l->queue = NULL;
    l->queue_cap = 0;
  }
}

int cm_ledger_flush(cm_ledger_t *l) {
  int ret = 0;
  bool any = false;
  cm_ledger_t *h;
  for (h = l->conn->handles; h; h = h->next) any = any || cm__has_changes(h);
  if (!any) return 0;
  /* IMMEDIATE: take the write lock up front, so the busy timeout applies
   * here and not as a deadlock-prone lock upgrade in the middle. */
  if ((ret = cm__step_done(l, l->st[CM__S_BEGIN])) < 0) goto fail;
  for (h = l->conn->handles; h; h = h->next) {
    if (!cm__has_changes(h)) continue;
    for (size_t i = 0; i < h->queue_n; i++)
      if ((ret = cm__write_chunk(h, h->queue[i])) < 0) goto fail;
    if ((ret = cm__write_job(h)) < 0) goto fail;
  }
  if ((ret = cm__step_done(l, l->st[CM__S_COMMIT])) < 0) goto fail;
  for (h = l->conn->handles; h; h = h->next)
    if (cm__has_changes(h)) cm__committed(h);
  return 0;
fail:
  /* Nothing was committed; the queues are intact and the next flush retries. */
  cm__rollback(l);
  return ret;
}

size_t cm_ledger_unflushed(const cm_ledger_t *l) {
  size_t n = 0;
  for (const cm_ledger_t *h = l->conn->handles; h; h = h->next)
    if (h->job) n += h->queue_n + (h->job_dirty ? 1 : 0);
  return n;
}
