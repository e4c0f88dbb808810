/* store.h - the saver's results database (SQLite, WAL).
 *
 *   records(job, chunk, idx, body)      PRIMARY KEY(job, chunk, idx), WITHOUT
 *                                        ROWID: inserts append in key order
 *   chunks(job, chunk, records, dead, attempt, saved_at, version, redo)
 *                                        the "chunk saved" marker; version
 *                                        (schema 2): the mapper version that
 *                                        produced it (the chunk's
 *                                        "version"), NULL when absent; redo
 *                                        (schema 3): the chunk's redo
 *                                        generation (its "redo", 0 if none)
 *   dead_letters(job, chunk, idx, reason, record)
 *
 * A chunk's records, its dead letters and its marker commit together. A
 * chunk whose marker exists with a redo generation >= the chunk's is a
 * duplicate: nothing is written, and it is reported as saved so the caller
 * acknowledges it again. A marker with a lower generation is a redo
 * (docs/jobs.md "Redo by version"): the chunk's rows and dead letters are
 * deleted and the new ones written with the new marker, in the same
 * transaction, so the old or the new chunk is stored, never a mix.
 *
 * Not thread-safe: one thread at a time (the saver commits on a thread-pool
 * thread, one batch at a time). */
#ifndef CM_STORE_H
#define CM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/chunk.h"

#define CM_STORE_SCHEMA_VERSION 3

typedef struct cm_store_s cm_store_t;

typedef enum { CM_SYNC_NORMAL = 1, CM_SYNC_FULL = 2 } cm_store_sync_t;

/* Opens or creates the database (schema created/migrated in one transaction;
 * a newer schema version is refused with a clear error).
 * Details: journal_mode=WAL, synchronous NORMAL or FULL, busy_timeout 5 s.
 * A newer schema gives -ENOTSUP and "results database PATH has schema
 * version N; this saver supports up to 3", and the file is not modified.
 * Other failures: SQLite's code as a negative errno (-EIO, -EACCES, ...)
 * with err naming the file. */
int cm_store_open(cm_store_t **out, const char *path, cm_store_sync_t sync, char *err,
                  size_t errlen) __attribute__((warn_unused_result));
void cm_store_close(cm_store_t *s); /* NULL-safe */

/* The connection, borrowed: for tests and read-only diagnostics (e.g. a
 * readiness query). Do not change its settings or leave a transaction open
 * on it. */
struct sqlite3;
struct sqlite3 *cm_store_db(cm_store_t *s);

typedef struct cm_store_item_s {
  /* in */
  const char *json; /* a mapped chunk in wire form; borrowed */
  size_t len;
  /* Optional: json already checked by cm_chunk_peek_elems (rc 0) into view
   * and elems, e.g. on another thread while the previous batch committed;
   * then it is not scanned again. NULL: save_batch peeks itself. */
  const cm_chunk_view_t *view;
  const cm_json_elems_t *elems;
  /* out */
  int status;       /* 0 saved now, 1 duplicate (already saved), <0 error */
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
} cm_store_item_t;

/* Saves n chunks in ONE transaction (group commit). An item that is invalid
 * (bad JSON, bad header) gets status <0 and err, and does not affect the
 * others (savepoint per item). Returns 0 when the transaction committed, or
 * a negative code when it did not (then no item is saved: every status is
 * set <0).
 * What is stored: each non-null "data" element as records(idx = its slot,
 * body = its JSON text; strings/numbers/booleans stay valid JSON); null
 * slots are skipped. Each "dead" entry as dead_letters(idx, reason =
 * its "reason", record = its "record" (or "raw") as JSON text). A source
 * dead letter has "line" (1-based) instead of "idx": it is stored with
 * idx = -line. An entry that is not an object with "idx" or "line", or two
 * entries for the same idx, make the item fail (-EINVAL). Item statuses:
 * -EINVAL bad chunk, -ERANGE index > 2^63-1, other negative errno from
 * SQLite. hdr is filled for every item that parsed.
 * Errors that are not caused by an item's data (cm_store_status_temporary:
 * disk full, out of memory, busy, I/O, read-only) abort the whole batch,
 * even when SQLite kept the transaction open: the return value is then that
 * error, and every item not failed by its own data gets it too. */
int cm_store_save_batch(cm_store_t *s, cm_store_item_t *items, size_t n)
    __attribute__((warn_unused_result));

/* true for an item status (or a save_batch result) that says "the store
 * could not write now" rather than "this chunk is unusable": anything below
 * 0 except -EINVAL, -ERANGE and -E2BIG. A saver answers such a chunk
 * "retry later" (the mapper keeps its result and sends it again; it costs
 * no delivery); only a data error is worth a NAK. */
bool cm_store_status_temporary(int status);

#endif
