/* jobs.h - the fetcher's job registry: every job of the ledger, its state,
 * and the operations of the job API (docs/jobs.md). The API layer (api.c:
 * HTTP routes and NATS request/reply) parses and authorizes requests and
 * calls these; the dispatcher leases chunks of the registry's runnable jobs.
 *
 * Loop thread only. The registry owns its jobs; a cm_job_t pointer is
 * borrowed and valid until the registry is destroyed (jobs are never
 * removed while the fetcher runs). */
#ifndef CM_JOBS_H
#define CM_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"
#include "cm/chunk.h"
#include "source.h"

typedef enum {
  CM_JOB_QUEUED = 0,
  CM_JOB_RUNNING,
  CM_JOB_PAUSED,
  CM_JOB_COMPLETE,
  CM_JOB_COMPLETE_WITH_DEAD,
  CM_JOB_CANCELLED,
  CM_JOB_FAILED,
} cm_job_state_t;

/* "queued", "running", ... as in docs/jobs.md. */
const char *cm_job_state_name(cm_job_state_t s);

/* A job submission (docs/jobs.md "Job submission"). The strings are
 * borrowed by cm_jobs_submit, which copies what it keeps. */
typedef struct cm_jobspec_s {
  char job[CM_JOB_MAX];
  cm_source_opts_t source; /* spec, records, seed, chunk_size, http_* */
  uint32_t priority;       /* 1..1000 */
  uint32_t max_deliver;    /* 1..1000; 0: the fetcher's --max-deliver */
} cm_jobspec_t;

typedef struct cm_jobs_s cm_jobs_t;
typedef struct cm_job_s cm_job_t;

/* Submits a new job: stored in the ledger (state queued, the spec as JSON),
 * then started. -EEXIST if the name exists; -EINVAL with err naming the
 * field (source cannot be opened, ...); -EIO when the ledger cannot be
 * written (err says why). *out (may be NULL) gets the job. */
int cm_jobs_submit(cm_jobs_t *r, const cm_jobspec_t *spec, cm_job_t **out, char *err,
                   size_t errlen) __attribute__((warn_unused_result));

/* NULL if unknown. */
cm_job_t *cm_jobs_find(cm_jobs_t *r, const char *name);
/* Jobs in creation order: i = 0 .. cm_jobs_count()-1. */
size_t cm_jobs_count(const cm_jobs_t *r);
cm_job_t *cm_jobs_at(cm_jobs_t *r, size_t i);

cm_job_state_t cm_job_state(const cm_job_t *j);
const char *cm_job_name(const cm_job_t *j);

/* The job object of docs/jobs.md, appended to out (credentials redacted). */
int cm_job_json(cm_job_t *j, cm_buf_t *out) __attribute__((warn_unused_result));
/* {"dead":[...]} of docs/jobs.md, at most `max` entries. */
int cm_job_dead_json(cm_job_t *j, size_t max, cm_buf_t *out) __attribute__((warn_unused_result));

/* State changes. 0 on success; -EPERM when the state does not allow it
 * (err says why: "job x is cancelled"); -EIO when the ledger cannot be
 * written. Each is stored in the ledger before it returns 0. */
int cm_job_pause(cm_job_t *j, char *err, size_t errlen) __attribute__((warn_unused_result));
int cm_job_resume(cm_job_t *j, char *err, size_t errlen) __attribute__((warn_unused_result));
int cm_job_cancel(cm_job_t *j, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Puts dead chunks back to pending; *n gets how many. */
int cm_job_replay_dead(cm_job_t *j, int *n, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Redo by version (docs/jobs.md): *n gets the chunks put back to pending
 * (0 is not an error: nothing was saved by that version). */
int cm_job_redo(cm_job_t *j, const char *version, int *n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* {"members":[...]} of docs/jobs.md (the dispatcher's member table). */
int cm_jobs_members_json(cm_jobs_t *r, cm_buf_t *out) __attribute__((warn_unused_result));

#endif
