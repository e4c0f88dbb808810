/* job.h - the job registry's dispatcher side (jobs.h is its API side):
 * creating the registry, loading the ledger's jobs, and what the dispatcher
 * (fetch.c) asks of one job: is it runnable, its next chunk, the wire chunk,
 * its completion. Per job the registry owns a ledger handle (sharing the
 * root handle's connection, ledger.h), the source and its read-ahead, and
 * the progress samples behind records_per_s / eta_s. Loop thread only. */
#ifndef CM_JOB_H
#define CM_JOB_H

#include <uv.h>

#include "cm/lease.h"
#include "jobs.h"
#include "ledger.h"
#include "sched.h"

/* Largest chunk read from a sequential source. */
#define CM_JOB_MAX_CHUNK_BYTES (256u * 1024 * 1024)

typedef struct cm_jobs_cfg_s {
  cm_ledger_t *ledger; /* borrowed root handle (no job open); outlives the registry */
  uint32_t max_deliver; /* of jobs that do not set their own */
  /* false (--once, or no --serve): a source error stops the fetcher as it
   * always did (fatal); true: the job becomes `failed` and the rest run. */
  bool serve;
  /* The rest is set by cm_jobs_bind (the dispatcher), before any read: */
  uv_loop_t *loop; /* sequential sources are read on its thread pool */
  void *ud;
  /* A job may have new work (a read landed, resume, replay, redo, submit). */
  void (*wake)(void *ud);
  /* The fetcher cannot go on (a ledger call that must not fail did). */
  void (*fatal)(void *ud, const char *what);
  /* Writes the ledger through the dispatcher's health (ledger_health.h). */
  int (*flush)(void *ud);
  /* cm_jobs_members_json's answer. */
  int (*members_json)(void *ud, cm_buf_t *out);
} cm_jobs_cfg_t;

int cm_jobs_create(cm_jobs_t **out, const cm_jobs_cfg_t *cfg) __attribute__((warn_unused_result));
/* Sets the loop and the hooks (the dispatcher, once it exists). */
void cm_jobs_bind(cm_jobs_t *r, uv_loop_t *loop, void *ud, void (*wake)(void *),
                  void (*fatal)(void *, const char *), int (*flush)(void *),
                  int (*members_json)(void *, cm_buf_t *));
/* After the loop has stopped (no read in flight): closes sources and
 * handles. NULL-safe. */
void cm_jobs_destroy(cm_jobs_t *r);

/* --serve: every job of the ledger. Final ones (complete, cancelled,
 * failed) are listed with their counters and their source opened only when
 * a replay or redo needs it; the others are resumed in their stored state.
 * A job of a schema-1 ledger has no stored spec: listed, not run, unless
 * `cli` (the --source job, may be NULL) names it. Returns the number of
 * jobs loaded, or a negative errno with err. */
int cm_jobs_load(cm_jobs_t *r, const cm_jobspec_t *cli, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The command line's job: resumed if the ledger has it (same source and
 * chunk size, else -EEXIST with err), created running otherwise. A failed
 * job is running again (the operator asked for it). *out gets it. */
int cm_jobs_open(cm_jobs_t *r, const cm_jobspec_t *spec, cm_job_t **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Hands src (owned from now on) to the job named `job` when it is opened
 * (cm_jobs_open / cm_jobs_load), instead of opening its source again: a
 * source such as file:- (stdin) can be opened only once. */
void cm_jobs_give_source(cm_jobs_t *r, const char *job, cm_source_t *src);

/* Running with an open source (not paused, final, failed). */
bool cm_job_runnable(const cm_job_t *j);
cm_sched_ent_t *cm_job_sched(cm_job_t *j);
cm_ledger_t *cm_job_ledger(cm_job_t *j);
uint32_t cm_job_max_deliver(const cm_job_t *j);
/* Chunks of the job (gen: known in advance; sequential: once read to the
 * end), -1 while unknown. */
int64_t cm_job_total_chunks(const cm_job_t *j);
/* 1 with *index: the lowest due retry, else a new chunk from the source
 * (a sequential source's chunk is stored and flushed before it is handed
 * out). 0: nothing now (a sequential read may have been started: wake is
 * called when it lands). */
int cm_job_next_chunk(cm_job_t *j, int64_t now_ms, uint64_t *index);
/* The wire chunk (index, attempt) for `mapper` into out (reset first): the
 * header's redo is the chunk's generation, its lease token made with key
 * (may be NULL). */
int cm_job_build(cm_job_t *j, uint64_t index, uint32_t attempt, const char *mapper,
                 const cm_lease_key_t *key, cm_buf_t *out) __attribute__((warn_unused_result));
/* When every chunk is done (or dead), the job becomes complete (or
 * complete_with_dead), stored: returns 1 the time it does, else 0 (or a
 * negative errno when the ledger cannot be written: retried later). */
int cm_job_settle(cm_job_t *j) __attribute__((warn_unused_result));
/* Progress samples (records_per_s): call every ~100 ms. */
void cm_jobs_sample(cm_jobs_t *r, int64_t now_ms);
/* Wall time this run started the job and its records_done then (summary). */
void cm_job_run_start(const cm_job_t *j, double *wall, uint64_t *records);
/* Any sequential read in flight (a read cannot be interrupted). */
bool cm_jobs_reading(const cm_jobs_t *r);

#endif
