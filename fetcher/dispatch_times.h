/* dispatch_times.h - when each chunk in flight was first dispatched in this
 * run, and to which mapper version its latest attempt went (the latency
 * histogram, per-version outcome counts, failover reconcile).
 *
 * A hash table by (job, chunk index) holding only the chunks the caller has put
 * and not yet deleted: its memory follows the chunks in flight, not how far
 * the job has got (a table indexed by `index % N` touches all N slots once
 * the job passes N chunks, so a long job's fetcher grows by N slots).
 * The caller deletes a chunk's entry when the chunk is done or dead.
 * `job` is the caller's handle of the job, compared by address only: it
 * must not be reused for another job while the table holds its entries
 * (the fetcher's job handles live until it exits).
 * Holds at most CM_DISPATCH_TIMES_MAX entries: a put beyond that is dropped
 * (the chunk then counts as "time unknown", as an evicted entry would).
 * Single-threaded (the loop thread). */
#ifndef CM_DISPATCH_TIMES_H
#define CM_DISPATCH_TIMES_H

#include <stddef.h>
#include <stdint.h>

#define CM_DISPATCH_TIMES_MAX (1u << 20)

typedef struct cm_dispatch_times_s cm_dispatch_times_t;

typedef struct cm_dispatch_time_s {
  const void *job;
  uint64_t index;
  int64_t t_ms;     /* first dispatch of the chunk in this run */
  uint32_t version; /* cm_version_h of the mapper that got the latest attempt */
} cm_dispatch_time_t;

/* Returns -ENOMEM. */
int cm_dispatch_times_create(cm_dispatch_times_t **out) __attribute__((warn_unused_result));
void cm_dispatch_times_destroy(cm_dispatch_times_t *d); /* NULL-safe */

/* A dispatch of chunk `index` of `job` at t_ms to a mapper of `version`: a new entry
 * starts at t_ms; an existing one (a redelivery) keeps its start and takes
 * the new version. Returns 0, or -ENOMEM / -ENOSPC (not recorded). */
int cm_dispatch_times_put(cm_dispatch_times_t *d, const void *job, uint64_t index, int64_t t_ms,
                          uint32_t version);
/* The entry of (job, index), or NULL. Valid until the next put or del. */
const cm_dispatch_time_t *cm_dispatch_times_get(const cm_dispatch_times_t *d, const void *job,
                                                uint64_t index);
/* Forgets (job, index) (no-op if absent); gives memory back when the table
 * is mostly empty. */
void cm_dispatch_times_del(cm_dispatch_times_t *d, const void *job, uint64_t index);
size_t cm_dispatch_times_count(const cm_dispatch_times_t *d);
/* Slots allocated (for tests: memory follows the entries). */
size_t cm_dispatch_times_capacity(const cm_dispatch_times_t *d);

#endif
