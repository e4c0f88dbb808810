/* ledger_impl.h - private to the ledger's files (ledger.c, ledger_schema.c,
 * ledger_jobs.c, ledger_flush.c): the handle's layout and the helpers they
 * share. Nothing outside those files includes it; the API is ledger.h. */
#ifndef CM_LEDGER_IMPL_H
#define CM_LEDGER_IMPL_H

#include "ledger.h"
#include "ledger_mem.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The prepared statements, by index into cm__sql and cm__conn_t.st. */
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

/* Their SQL (ledger_schema.c). */
extern const char *const cm__sql[CM__S_COUNT];

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

/* ---- ledger_schema.c: SQLite helpers and the schema -------------------- */

/* SQLite result code -> -errno. */
int cm__sqlerr(int rc);
/* Remembers sqlite's message so the caller can log why a flush failed. */
int cm__fail(cm_ledger_t *l, int rc);
/* Runs a statement that returns no rows; always resets it. */
int cm__step_done(cm_ledger_t *l, sqlite3_stmt *st);
/* Rolls back the open transaction, if any. */
void cm__rollback(cm_ledger_t *l);
/* Binds the open job's name as parameter 1. */
void cm__bind_job(cm_ledger_t *l, sqlite3_stmt *st);
/* Reads PRAGMA user_version; returns a SQLite result code. */
int cm__user_version(sqlite3 *db, int *v);
/* Creates or migrates the schema in one transaction; -errno and err. */
int cm__migrate(cm_ledger_t *l, char *err, size_t errlen);

/* ---- ledger.c: memory bookkeeping --------------------------------------- */

/* strdup (malloc'd, NULL on out-of-memory). */
char *cm__strdup(const char *s);
/* The handle's clock (cm_ledger_set_clock), ms, monotonic. */
int64_t cm__clock_ms(const cm_ledger_t *l);
/* Makes c pending: its heap, and the FIFO of pending chunks. Heap capacity
 * must have been reserved. */
void cm__pend(cm_ledger_t *l, cm__chunk_t *c);
void cm__origin_free(cm__origin_t *o);
void cm__chunk_free(cm__chunk_t *c);
/* Reserves room for one more cm__queue. */
int cm__queue_reserve(cm_ledger_t *l);
/* Queues c for the next flush (once, however often it changes). */
void cm__queue(cm_ledger_t *l, cm__chunk_t *c);
/* Drops every chunk of the open job from memory, and the unflushed queue. */
void cm__reset_memory(cm_ledger_t *l);

#endif
