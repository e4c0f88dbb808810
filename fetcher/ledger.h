/* ledger.h - the fetcher's durable record of a job: which chunks exist and in
 * which state, in one SQLite file (WAL).
 *
 * Chunk states:  pending -> leased -> done
 *                leased -> pending   (nak, lease expiry, holder gone, handback)
 *                leased -> dead      (after max_deliver leases)
 *                dead -> pending     (replay)
 * A chunk index below `next_index` exists in the ledger; indexes at or above
 * it have not been read from the source yet.
 *
 * The ledger keeps every pending and leased chunk in memory (bounded by the
 * in-flight window plus retries; dead chunks stay on disk until replayed,
 * done ones leave memory at the next flush) and writes changes behind: each
 * call below changes memory and queues a row change (several changes of one
 * chunk are written once); cm_ledger_flush() writes all queued changes and
 * the job's counters in ONE transaction. Losing unflushed changes in a crash is safe:
 * a lease or an ack that was not written only causes a redelivery, and the
 * saver deduplicates.
 *
 * Fencing: every call about a chunk carries its attempt number. A nak or a
 * release for an attempt that is not the current lease is ignored; an ack of
 * any attempt marks the chunk done (the data is saved), unless it carries a
 * redo generation below the chunk's (a save of the version being redone).
 *
 * Several jobs (schema 2, docs/jobs.md): a handle holds ONE job's in-memory
 * state; several handles share one SQLite connection (cm_ledger_share), and
 * cm_ledger_flush() on any of them writes the changes of all of them in one
 * transaction. So the fetcher keeps one handle per job plus the first one
 * (no job open: listing jobs, the flush of ledger_health.h), and a flush per
 * tick stays one commit however many jobs run. The connection closes with
 * its last handle.
 *
 * Single-threaded: call from the loop thread only. */
#ifndef CM_LEDGER_H
#define CM_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "cm/buf.h"

#define CM_LEDGER_SCHEMA_VERSION 3

typedef struct cm_ledger_s cm_ledger_t;

typedef enum {
  CM_CHUNK_PENDING = 0,
  CM_CHUNK_LEASED = 1,
  CM_CHUNK_DONE = 2,
  CM_CHUNK_DEAD = 3,
} cm_chunk_state_t;

typedef struct cm_job_info_s {
  char name[128];
  char source[512];       /* cm_source_describe() */
  uint32_t chunk_size;
  uint64_t next_index;    /* chunks created so far */
  bool source_done;       /* the source is exhausted: total = next_index */
  int64_t source_pos;     /* byte offset to resume a sequential source */
  uint64_t source_line;   /* source records consumed before source_pos */
  uint64_t done_chunks;
  uint64_t dead_chunks;
  uint64_t records_done;  /* sum of records acked */
  uint64_t redeliveries;  /* leases with attempt > 1 */
  double created_at;      /* unix seconds */
  /* Schema 2 (docs/jobs.md): */
  int state;              /* jobs.state, numbered as cm_job_state_t (jobs.h) */
  uint32_t priority;      /* 1..1000 */
  uint32_t max_deliver;   /* 0: the fetcher's --max-deliver */
  double finished_at;     /* unix seconds, 0 while not finished */
  char last_error[256];   /* "" when none */
  uint32_t redo_gen;      /* generation of the latest redo, 0: none */
  uint64_t redo_chunks;   /* chunks the latest redo put back to pending */
  uint64_t redo_done;     /* of those, done again */
} cm_job_info_t;

/* Opens or creates the ledger file (schema created/migrated; a file with a
 * newer schema version is refused: "ledger PATH has schema version 4, this
 * fetcher supports up to 3"). */
int cm_ledger_open(cm_ledger_t **out, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cm_ledger_close(cm_ledger_t *l); /* flushes; NULL-safe */

/* Opens job `name`, creating it with (source, chunk_size) if new. An existing
 * job whose source description or chunk size differ is refused with a clear
 * error. Recovery: chunks left `leased` by a previous run become pending
 * (due at once). Loads non-done chunks into memory. Fills *info. */
int cm_ledger_job_open(cm_ledger_t *l, const char *name, const char *source, uint32_t chunk_size,
                       cm_job_info_t *info, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Schema 2: what a new job is created with (cm_ledger_job_open_ex). */
typedef struct cm_ledger_new_job_s {
  const char *spec;     /* the submission as JSON (docs/jobs.md), may be NULL */
  uint32_t priority;    /* 0: 1 */
  uint32_t max_deliver; /* 0: the fetcher's --max-deliver */
  int state;            /* initial jobs.state */
  bool must_be_new;     /* an existing job: -EEXIST ("job \"x\" exists ...") */
} cm_ledger_new_job_t;
/* cm_ledger_job_open, with nj (may be NULL) for a job that does not exist
 * yet. An existing job of a schema-1 ledger (spec NULL) gets nj->spec. */
int cm_ledger_job_open_ex(cm_ledger_t *l, const char *name, const char *source,
                          uint32_t chunk_size, const cm_ledger_new_job_t *nj, cm_job_info_t *info,
                          char *err, size_t errlen) __attribute__((warn_unused_result));
/* Another handle on l's connection, with no job open (cm_ledger_job_open
 * then opens one). Closed with cm_ledger_close. */
int cm_ledger_share(cm_ledger_t *l, cm_ledger_t **out) __attribute__((warn_unused_result));

/* Every job of the file, by creation time: fn gets a row whose strings are
 * valid during the call only; a non-zero return stops the walk and is
 * returned. Returns the number of jobs visited, or a negative errno. */
typedef struct cm_ledger_job_row_s {
  const char *name, *source, *spec; /* spec may be NULL (schema-1 job) */
  uint32_t chunk_size, priority, max_deliver;
  int state;
  double created_at;
} cm_ledger_job_row_t;
typedef int (*cm_ledger_job_fn)(void *ud, const cm_ledger_job_row_t *row);
int cm_ledger_each_job(cm_ledger_t *l, cm_ledger_job_fn fn, void *ud);
/* The open job's spec (NULL if unknown) and latest redo version (NULL if
 * none). Borrowed until the next job_open or close. */
const char *cm_ledger_spec(const cm_ledger_t *l);
const char *cm_ledger_redo_version(const cm_ledger_t *l);
/* Sets jobs.state, finished_at (0: null) and last_error (NULL/"": null) and
 * flushes: 0 once stored; on a failed flush memory keeps the old values. */
int cm_ledger_set_state(cm_ledger_t *l, int state, double finished_at, const char *last_error)
    __attribute__((warn_unused_result));
/* Dead chunks, lowest index first, at most max: fn(index, attempts, reason).
 * Flushes first. Returns how many, or a negative errno. */
typedef void (*cm_ledger_dead_fn)(void *ud, uint64_t index, uint32_t attempt, const char *reason);
int cm_ledger_each_dead(cm_ledger_t *l, size_t max, cm_ledger_dead_fn fn, void *ud)
    __attribute__((warn_unused_result));
/* Redo by version: every done chunk whose ack carried `version` becomes
 * pending with the job's next redo generation (info.redo_gen + 1), a fresh
 * max_deliver budget, and its records no longer counted (done_chunks and
 * records_done go down; the new ack counts them again). redo_chunks and
 * redo_done follow the redo. Returns how many (0: none, nothing changes).
 * Flushes first. A sequential source's chunk has no payload any more (it
 * was deleted when the chunk was done): it comes back pending without one
 * (cm_ledger_needs_payload) and the job re-reads it from its origin. */
int cm_ledger_redo(cm_ledger_t *l, const char *version) __attribute__((warn_unused_result));
/* Redo generation of a chunk in memory (pending or leased), else 0: the
 * chunk header's "redo". */
uint32_t cm_ledger_chunk_redo(cm_ledger_t *l, uint64_t index);

/* Redo of a sequential source (schema 3, docs/jobs.md "Redo by version").
 * Each chunk row keeps where the chunk starts in its source and the SHA-256
 * of its payload (cm_ledger_add_chunk_origin), so a redone chunk, whose
 * payload was deleted when it was first saved, can be read again and
 * checked. */
typedef struct cm_ledger_origin_s {
  int64_t pos;        /* the job's source_pos before the chunk was read */
  uint64_t line;      /* its source_line then */
  const char *cursor; /* its source cursor then (cm_ledger_cursor), may be NULL */
  unsigned char digest[32]; /* SHA-256 of the stored payload */
} cm_ledger_origin_t;
/* cm_ledger_add_chunk with the chunk's origin (NULL: none, as
 * cm_ledger_add_chunk), written with the chunk's first row. */
int cm_ledger_add_chunk_origin(cm_ledger_t *l, uint64_t index, const void *payload, size_t len,
                               int64_t pos, uint64_t line, bool source_done,
                               const cm_ledger_origin_t *origin)
    __attribute__((warn_unused_result));
/* Chunk index's origin into *o (o->cursor points into `cursor`, cursor_len
 * bytes, or is NULL). -ENOENT: no such chunk or no stored origin (a gen:
 * chunk, or one created by a schema-2 fetcher); -E2BIG: cursor too long. */
int cm_ledger_chunk_origin(cm_ledger_t *l, uint64_t index, cm_ledger_origin_t *o, char *cursor,
                           size_t cursor_len) __attribute__((warn_unused_result));
/* Done chunks saved by `version` that have no stored origin (they cannot be
 * re-read). Flushes first. A count or a negative errno. */
int cm_ledger_redo_unplaced(cm_ledger_t *l, const char *version)
    __attribute__((warn_unused_result));
/* true: chunk index is pending with no payload, in memory or stored (a
 * redone sequential chunk): it must be re-read (cm_ledger_set_payload) or
 * killed before it is leased. */
bool cm_ledger_needs_payload(const cm_ledger_t *l, uint64_t index);
/* Gives a pending chunk its payload (copied; written at the next flush,
 * deleted again once the chunk is done). -EINVAL if not pending. */
int cm_ledger_set_payload(cm_ledger_t *l, uint64_t index, const void *payload, size_t len)
    __attribute__((warn_unused_result));
/* A pending chunk becomes dead with `reason` (e.g. its source changed):
 * dead_chunks + 1, replayable like any dead chunk. -EINVAL if not pending. */
int cm_ledger_kill(cm_ledger_t *l, uint64_t index, const char *reason)
    __attribute__((warn_unused_result));

/* Current counters of the open job. */
void cm_ledger_info(const cm_ledger_t *l, cm_job_info_t *info);

/* Records a new chunk read from the source: index must equal next_index.
 * payload (the chunk's records, may be NULL for regenerable sources) is
 * stored; pos/line/source_done update the job's resume point in the same
 * transaction as the chunk row. The chunk starts pending with attempt 0. */
int cm_ledger_add_chunk(cm_ledger_t *l, uint64_t index, const void *payload, size_t len,
                        int64_t pos, uint64_t line, bool source_done)
    __attribute__((warn_unused_result));
/* The source's opaque resume cursor (cm_source_cursor; NULL: none), kept
 * with source_pos/source_line: set it before the cm_ledger_add_chunk whose
 * position it belongs to, and both are written by the same flush.
 * cm_ledger_cursor: the stored one (borrowed). */
int cm_ledger_set_cursor(cm_ledger_t *l, const char *cursor) __attribute__((warn_unused_result));
const char *cm_ledger_cursor(const cm_ledger_t *l);
/* Marks the source exhausted without a new chunk (empty tail). */
int cm_ledger_set_source_done(cm_ledger_t *l) __attribute__((warn_unused_result));

/* The lowest-index pending chunk whose retry time has come (now_ms), or 0 if
 * none: returns 1 and fills *index. */
int cm_ledger_next_due(cm_ledger_t *l, int64_t now_ms, uint64_t *index);
/* Time (ms) at which the earliest pending-but-not-due chunk becomes due, or
 * -1 when there is none. */
int64_t cm_ledger_next_due_at(const cm_ledger_t *l);

/* Leases a pending chunk to `holder` until deadline_ms: attempt = previous
 * attempt + 1, written to *attempt. -EINVAL if the chunk is not pending. */
int cm_ledger_lease(cm_ledger_t *l, uint64_t index, const char *holder, int64_t deadline_ms,
                    uint32_t *attempt) __attribute__((warn_unused_result));
/* Extends the current lease (progress). Ignored (returns 0) when fenced;
 * returns 1 when extended. The new deadline is kept in memory only (after a
 * restart every lease is pending again, so a stored deadline is never used). */
int cm_ledger_extend(cm_ledger_t *l, uint64_t index, uint32_t attempt, int64_t deadline_ms);

/* Ack: returns 1 if the chunk became done now, 0 if it was already done or is
 * unknown. `records` is stored and added to records_done. */
int cm_ledger_ack(cm_ledger_t *l, uint64_t index, uint32_t attempt, uint32_t records);
/* The same with the Ack's version (stored with the done chunk, for redo; may
 * be NULL) and redo generation: below the chunk's generation it is ignored
 * (returns 0). cm_ledger_ack is (NULL, 0). */
int cm_ledger_ack_v(cm_ledger_t *l, uint64_t index, uint32_t attempt, uint32_t records,
                    const char *version, uint32_t redo);
/* Returns a leased chunk to pending, due at not_before_ms, remembering
 * reason. Returns 1 if done, 0 if fenced (attempt is not the current lease or
 * the chunk is not leased). If the chunk has reached max_deliver leases it
 * becomes dead instead and 2 is returned. */
int cm_ledger_release(cm_ledger_t *l, uint64_t index, uint32_t attempt, int64_t not_before_ms,
                      const char *reason, uint32_t max_deliver);
/* Calls fn for each leased chunk whose deadline is <= now_ms (the caller then
 * releases it). Returns the number found. */
typedef void (*cm_ledger_lease_fn)(void *ud, uint64_t index, uint32_t attempt,
                                   const char *holder);
int cm_ledger_each_expired(cm_ledger_t *l, int64_t now_ms, cm_ledger_lease_fn fn, void *ud);
/* Calls fn for each chunk leased to `holder`. */
int cm_ledger_each_held(cm_ledger_t *l, const char *holder, cm_ledger_lease_fn fn, void *ud);
/* Puts every dead chunk of the job back to pending (attempt count kept so
 * the next lease is attempt+1, but the max_deliver budget starts again).
 * Returns how many, or a negative errno. Flushes first: dead chunks are kept
 * on disk only, so the table must be complete before it is read.
 * max_deliver counts leases since the last replay (a stored base_attempt);
 * max_deliver = 0 in cm_ledger_release means no limit.
 * An ack of a dead chunk (a late save) makes it done. */
int cm_ledger_replay_dead(cm_ledger_t *l) __attribute__((warn_unused_result));

/* Stored payload of chunk `index` (sequential sources): appended to out.
 * -ENOENT if none. */
int cm_ledger_payload(cm_ledger_t *l, uint64_t index, cm_buf_t *out)
    __attribute__((warn_unused_result));
/* State and attempt of a chunk (tests, /status). -ENOENT if unknown. */
int cm_ledger_chunk_state(cm_ledger_t *l, uint64_t index, cm_chunk_state_t *state,
                          uint32_t *attempt);

size_t cm_ledger_leased_count(const cm_ledger_t *l);
size_t cm_ledger_pending_count(const cm_ledger_t *l); /* pending in memory */
/* true when the source is done and every created chunk is done or dead. */
bool cm_ledger_job_complete(const cm_ledger_t *l);

/* Writes every queued change of every handle of l's connection in one
 * transaction. */
int cm_ledger_flush(cm_ledger_t *l) __attribute__((warn_unused_result));
size_t cm_ledger_unflushed(const cm_ledger_t *l); /* all handles of the connection */

/* Additions (not used by the dispatcher contract above): */
/* sqlite's message for the last failed operation ("ledger PATH: database is
 * locked"), for logging a failed flush. Borrowed; valid until the next call. */
const char *cm_ledger_errmsg(const cm_ledger_t *l);
/* How long a ledger call waits for another connection's lock before it
 * fails with -EBUSY (the open uses 5 s). The dispatcher sets a few ms: it
 * runs on the loop thread, and a failed flush is simply retried. */
void cm_ledger_set_busy_timeout(cm_ledger_t *l, int ms);
/* Chunks held in memory: pending + leased, plus done/dead ones whose change
 * is not flushed yet. Done chunks leave memory at the flush (tests, metrics). */
size_t cm_ledger_memory_chunks(const cm_ledger_t *l);

/* The clock of pending ages, in ms; it must never go back. Default:
 * CLOCK_MONOTONIC. Set it before cm_ledger_job_open (tests inject one). */
void cm_ledger_set_clock(cm_ledger_t *l, int64_t (*now_ms)(void *ud), void *ud);
/* How long the oldest pending chunk has waited, in ms, since it last became
 * pending: created, released (nak, expiry, holder gone, hand-back: a retry
 * backoff counts as waiting), recovered at job open, or replayed. 0 when none
 * is pending. With `unread`, the source's next chunk (not read yet, while the
 * source is not done) counts too, as pending since the previous chunk was
 * created or the job was opened: a source nobody takes work from ages. */
int64_t cm_ledger_oldest_pending_ms(const cm_ledger_t *l, bool unread);

#endif
