/* ledger_schema.c - the ledger's SQLite layer: the statements prepared at
 * open, the schema and its migrations, and the helpers that run a
 * statement and map SQLite errors to -errno (see ledger_impl.h).
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
 */
#include "ledger_impl.h"

#include <errno.h>
#include <stdio.h>

/* Statements prepared once at open and reused (reset after each use). */
const char *const cm__sql[CM__S_COUNT] = {
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

/* ---- SQLite helpers --------------------------------------------------- */

int cm__sqlerr(int rc) {
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
int cm__fail(cm_ledger_t *l, int rc) {
  snprintf(l->errmsg, CM__ERRMSG_LEN, "ledger %s: %s", l->path, sqlite3_errmsg(l->db));
  return cm__sqlerr(rc);
}

/* Runs a statement that returns no rows; always resets it. */
int cm__step_done(cm_ledger_t *l, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  int ret = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : cm__fail(l, rc);
  sqlite3_reset(st);
  return ret;
}

void cm__rollback(cm_ledger_t *l) {
  if (!sqlite3_get_autocommit(l->db)) (void)cm__step_done(l, l->st[CM__S_ROLLBACK]);
}

void cm__bind_job(cm_ledger_t *l, sqlite3_stmt *st) {
  sqlite3_bind_text(st, 1, l->job, -1, SQLITE_STATIC);
}

/* ---- schema ----------------------------------------------------------- */

int cm__user_version(sqlite3 *db, int *v) {
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
int cm__migrate(cm_ledger_t *l, char *err, size_t errlen) {
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
