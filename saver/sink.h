/* sink.h - where the saver puts mapped chunks: one interface, two backends.
 *
 *   --db PATH                        SQLite file (store.c; one saver)
 *   --db postgresql://... / postgres://...
 *   --db "host=... dbname=..."       PostgreSQL (sink_pg.c; any number of
 *                                    savers on one database)
 *
 * Both keep the same data model (docs/design.md "Results database"):
 *   records(job, chunk, idx, body)   PRIMARY KEY(job, chunk, idx)
 *   chunks(job, chunk, records, dead, attempt, version, saved_at, redo)
 *                                    the "chunk saved" marker
 *   dead_letters(job, chunk, idx, reason, record)
 * A chunk's records, dead letters and marker commit in one transaction; a
 * chunk whose marker exists (saved before, or by another saver) with a redo
 * generation >= the chunk's "redo" is a duplicate: nothing is written and
 * it is reported saved, so the caller acknowledges it again. A marker with
 * a lower generation (docs/jobs.md "Redo by version") is replaced: the
 * chunk's old rows and dead letters are deleted and the new ones and the
 * marker written in the same transaction (never a mix of both); status 0,
 * replaced. Nothing is reported saved before COMMIT.
 *
 * Threads: save_batch and check run on one thread at a time (the saver's
 * commit thread); cm_sink_health and cm_sink_name may be called from any
 * thread at any time and never wait on the database. */
#ifndef CM_SINK_H
#define CM_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/chunk.h"

typedef struct cm_sink_s cm_sink_t;

typedef struct cm_sink_opts_s {
  const char *db;            /* --db: a path, a postgres URL or a libpq keyword string */
  const char *sync;          /* SQLite: "full" (default) or "normal"; ignored by PostgreSQL */
  const char *password_file; /* PostgreSQL: file whose first line is the password; may be NULL */
  int statement_timeout_ms;  /* PostgreSQL: statement_timeout; 0 = 30 s */
} cm_sink_opts_t;

typedef struct cm_sink_item_s {
  /* in */
  const char *json; /* a mapped chunk in wire form; borrowed */
  size_t len;
  /* Optional: json already checked by cm_chunk_peek_elems (rc 0); NULL:
   * save_batch peeks itself. */
  const cm_chunk_view_t *view;
  const cm_json_elems_t *elems;
  /* out */
  int status;     /* 0 saved now, 1 duplicate (already saved), <0 error */
  bool temporary; /* status <0 only: the store could not write now (connection
                     lost, disk full, lock or statement timeout, serialization
                     failure; SQLite: cm_store_status_temporary): retry later,
                     the chunk itself is fine. false: the chunk's own data is
                     bad and will never be saved. */
  cm_chunk_hdr_t hdr;
  uint32_t records; /* records stored (for a duplicate: as stored before) */
  uint32_t dead;    /* dead letters stored */
  /* status >= 0: the marker now stored (for a duplicate: as stored before,
   * which may be a later redo than this chunk's): the mapper version of the
   * rows ("" when none) and the redo generation. */
  char version[CM_VERSION_MAX];
  uint32_t redo;
  bool replaced; /* status 0 only: the chunk's earlier rows were replaced (a redo) */
  char err[160];
} cm_sink_item_t;

/* True when db names a PostgreSQL database (a postgresql:// or postgres://
 * URL, or a libpq keyword string: it starts with "keyword="); false: a
 * SQLite path. */
bool cm_sink_is_postgres(const char *db);

/* Opens the sink. SQLite: the file is created/migrated (store.h); any
 * failure is returned. PostgreSQL: a malformed connection string, an
 * unreadable password file or a database whose schema is newer than this
 * saver are returned as errors (-EINVAL, -EACCES/-ENOENT, -ENOTSUP); a
 * server that cannot be reached is not: the sink opens unhealthy with the
 * reason and reconnects with backoff in check/save_batch. err never holds
 * the password. */
int cm_sink_open(cm_sink_t **out, const cm_sink_opts_t *opts, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cm_sink_close(cm_sink_t *s); /* NULL-safe */

/* The database for logs and /status: the path, or the connection string
 * with any password replaced by ***. Owned by the sink. */
const char *cm_sink_name(const cm_sink_t *s);
const char *cm_sink_kind(const cm_sink_t *s); /* "sqlite" or "postgres" */

/* Saves n chunks in ONE transaction (group commit). Every item gets a
 * status: saved, duplicate, or an error with err and its class
 * (temporary). An item whose own data is bad does not affect the others.
 * Returns 0 when the transaction committed, or a negative errno when it did
 * not: then no item is saved and every item's status is <0 (temporary
 * unless the item was bad on its own). */
int cm_sink_save_batch(cm_sink_t *s, cm_sink_item_t *items, size_t n)
    __attribute__((warn_unused_result));

/* Why a batch of n items did not commit, for the store's health: the err of
 * the first item with a temporary error (the database's reason), else
 * "commit failed". Borrowed from items (or static). */
const char *cm_sink_batch_error(const cm_sink_item_t *items, size_t n);

/* Background upkeep on the commit thread while no batch runs (the saver
 * calls it about once a second when idle): reconnects a lost PostgreSQL
 * connection when its backoff has passed and refreshes health. Bounded by
 * the connect timeout (5 s unless the connection string sets one). */
void cm_sink_check(cm_sink_t *s);

/* Can the sink write now? false with a reason (e.g. "PostgreSQL
 * unreachable: connection refused; next attempt in 800 ms") while it
 * cannot: the last attempt to connect or commit failed with a temporary
 * error. Any thread; never blocks on the database. */
bool cm_sink_health(cm_sink_t *s, char *why, size_t whylen);

/* For tests and diagnostics, on the commit thread: runs one SQL statement
 * and copies the first column of the first row as text to out (""
 * when there is no row or it is NULL). Returns 0 or a negative errno with
 * err. */
int cm_sink_query(cm_sink_t *s, const char *sql, char *out, size_t outlen, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- backends (sink_sqlite.c, sink_pg.c) --------------------------------- */

typedef struct cm_sink_ops_s {
  int (*save_batch)(void *impl, cm_sink_item_t *items, size_t n);
  void (*check)(void *impl);
  bool (*health)(void *impl, char *why, size_t whylen);
  int (*query)(void *impl, const char *sql, char *out, size_t outlen, char *err, size_t errlen);
  void (*close)(void *impl);
} cm_sink_ops_t;

int cm_sink_sqlite_open(void **impl, const cm_sink_ops_t **ops, const cm_sink_opts_t *opts,
                        char *err, size_t errlen);
int cm_sink_pg_open(void **impl, const cm_sink_ops_t **ops, const cm_sink_opts_t *opts, char *err,
                    size_t errlen);

/* The connection string with its password (URL userinfo, password= in a URL
 * query or a keyword string) replaced by ***. */
void cm_sink_redact(const char *db, char *out, size_t outlen);

#endif
