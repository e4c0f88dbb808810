/* fetch_status.h - what the fetcher reports about its jobs and members:
 * the /status JSON, GET /members (docs/jobs.md), the gauges of /metrics,
 * the progress lines and the job summaries on stdout. It reads the job
 * registry, the ledgers and the member table, and changes none of them;
 * the dispatcher (fetch.c) owns it and says when to report.
 * Loop thread only. */
#ifndef CM_FETCH_STATUS_H
#define CM_FETCH_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"
#include "cm/metrics.h"
#include "job.h"
#include "members.h"
#include "versions.h"

typedef struct cm_fetch_status_cfg_s {
  /* All borrowed; they outlive the reporter. */
  cm_metrics_t *metrics;
  cm_jobs_t *jobs;
  cm_job_t *primary; /* the --job job (may be NULL: the first job) */
  cm_members_t *mt;
  cm_versions_t *versions;
  cm_histogram_t *latency; /* dispatch-to-ack latency (the summary's p50/p99) */
} cm_fetch_status_cfg_t;

typedef struct cm_fetch_status_s cm_fetch_status_t;

/* Registers the gauges and the per-job series of the jobs there are. */
int cm_fetch_status_create(cm_fetch_status_t **out, const cm_fetch_status_cfg_t *cfg,
                           int64_t now_ms) __attribute__((warn_unused_result));
void cm_fetch_status_destroy(cm_fetch_status_t *s); /* NULL-safe */

/* Registers the per-job series of jobs added since (the registry only
 * grows; past the metrics registry's limit a job simply has none). */
void cm_fetch_status_meter_jobs(cm_fetch_status_t *s);
/* --once: the primary job is done and the fetcher exits; nothing waits any
 * more (the oldest-pending age reads 0). */
void cm_fetch_status_finished(cm_fetch_status_t *s);

/* /status's fetcher part: ,"job":{...},"jobs":[...],"members":[...],
 * "versions":{...} appended to out. */
int cm_fetch_status_json(cm_fetch_status_t *s, int64_t now_ms, cm_buf_t *out)
    __attribute__((warn_unused_result));
/* {"members":[...]}: a mapper's inflight is the leases the fetcher holds
 * for it in every job; a saver not heard for forget_ms is left out. */
int cm_fetch_status_members_json(cm_fetch_status_t *s, const char *self_id,
                                 const char *self_instance, const char *self_version,
                                 int64_t now_ms, int64_t forget_ms, cm_buf_t *out)
    __attribute__((warn_unused_result));

/* One progress line per running or paused job (the primary's with its
 * rate since the last call), flushed. */
void cm_fetch_status_progress(cm_fetch_status_t *s, int64_t now_ms);
/* The completion summary of j (text and a JSON line) on stdout, and logged. */
void cm_fetch_status_summary(cm_fetch_status_t *s, cm_job_t *j);

/* Chunks leased in every job (the global --max-inflight window). */
size_t cm_fetch_leased_all(cm_jobs_t *jobs);

#endif
