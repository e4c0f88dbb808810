/* fetch_status.c - see fetch_status.h. */
#include "fetch_status.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/daemon.h"
#include "cm/log.h"

struct cm_fetch_status_s {
  cm_metrics_t *metrics;
  cm_jobs_t *jobs;
  cm_job_t *primary;
  cm_members_t *mt;
  cm_versions_t *versions;
  cm_histogram_t *latency;
  bool finished;                  /* cm_fetch_status_finished */
  size_t metered;                 /* jobs 0 .. metered-1 have their per-job series */
  uint64_t last_progress_records; /* the primary's, at the last progress line */
  int64_t last_progress_ms;
};

size_t cm_fetch_leased_all(cm_jobs_t *jobs) {
  size_t n = 0;
  for (size_t i = 0; i < cm_jobs_count(jobs); i++)
    n += cm_ledger_leased_count(cm_job_ledger(cm_jobs_at(jobs, i)));
  return n;
}

static bool state_complete(cm_job_state_t st) {
  return st == CM_JOB_COMPLETE || st == CM_JOB_COMPLETE_WITH_DEAD;
}

/* ---- gauges ---- */

/* Chunks of j waiting for a mapper (not done, not leased), read or not. */
static double job_backlog(cm_job_t *j) {
  cm_job_info_t info;
  cm_ledger_t *l = cm_job_ledger(j);
  int64_t total = cm_job_total_chunks(j);
  double unread;
  cm_ledger_info(l, &info);
  if (info.source_done)
    unread = 0;
  else if (total >= 0)
    unread = (double)(total - (int64_t)info.next_index);
  else
    unread = 1; /* unknown size: at least one more */
  return unread + (double)cm_ledger_pending_count(l);
}

/* The jobs that wait for mappers: running ones (a paused or finished
 * job's chunks wait for the operator, not for the pipeline). */
static bool job_counts(cm_job_t *j) { return cm_job_state(j) == CM_JOB_RUNNING; }

static double g_backlog(void *ud) {
  cm_fetch_status_t *s = ud;
  double n = 0;
  for (size_t i = 0; i < cm_jobs_count(s->jobs); i++) {
    cm_job_t *j = cm_jobs_at(s->jobs, i);
    if (job_counts(j)) n += job_backlog(j);
  }
  return n;
}

static double g_oldest(void *ud) {
  cm_fetch_status_t *s = ud;
  int64_t worst = 0;
  if (s->finished) return 0;
  for (size_t i = 0; i < cm_jobs_count(s->jobs); i++) {
    cm_job_t *j = cm_jobs_at(s->jobs, i);
    cm_job_info_t info;
    int64_t total = cm_job_total_chunks(j), age;
    bool unread;
    if (!job_counts(j)) continue;
    cm_ledger_info(cm_job_ledger(j), &info);
    /* Chunks not read yet wait too when the source has more. */
    unread = !info.source_done && (total < 0 || (int64_t)info.next_index < total);
    age = cm_ledger_oldest_pending_ms(cm_job_ledger(j), unread);
    if (age > worst) worst = age;
  }
  return (double)worst / 1000.0;
}

static double g_inflight(void *ud) {
  return (double)cm_fetch_leased_all(((cm_fetch_status_t *)ud)->jobs);
}
static double g_members(void *ud) {
  return (double)cm_members_active(((cm_fetch_status_t *)ud)->mt);
}

/* The job the single-job series describe: --job's, else the first. */
static cm_job_t *status_job(cm_fetch_status_t *s) {
  return s->primary != NULL ? s->primary : cm_jobs_at(s->jobs, 0);
}

static double g_done(void *ud) {
  cm_job_info_t info;
  cm_job_t *j = status_job(ud);
  if (j == NULL) return 0;
  cm_ledger_info(cm_job_ledger(j), &info);
  return (double)info.done_chunks;
}
static double g_total(void *ud) {
  cm_job_t *j = status_job(ud);
  int64_t total = j != NULL ? cm_job_total_chunks(j) : -1;
  return total >= 0 ? (double)total : NAN;
}
static double g_records_done(void *ud) {
  cm_job_info_t info;
  cm_job_t *j = status_job(ud);
  if (j == NULL) return 0;
  cm_ledger_info(cm_job_ledger(j), &info);
  return (double)info.records_done;
}

/* Per-job series, labelled job="NAME" (a job name needs no escaping). */
static double gj_done(void *ud) {
  cm_job_info_t info;
  cm_ledger_info(cm_job_ledger(ud), &info);
  return (double)info.done_chunks;
}
static double gj_records(void *ud) {
  cm_job_info_t info;
  cm_ledger_info(cm_job_ledger(ud), &info);
  return (double)info.records_done;
}
static double gj_backlog(void *ud) {
  return cm_job_state(ud) == CM_JOB_RUNNING ? job_backlog(ud) : 0;
}
static double gj_running(void *ud) { return cm_job_state(ud) == CM_JOB_RUNNING ? 1 : 0; }

void cm_fetch_status_meter_jobs(cm_fetch_status_t *s) {
  cm_metrics_t *m = s->metrics;
  for (; s->metered < cm_jobs_count(s->jobs); s->metered++) {
    cm_job_t *j = cm_jobs_at(s->jobs, s->metered);
    char labels[CM_JOB_MAX + 16];
    snprintf(labels, sizeof(labels), "job=\"%s\"", cm_job_name(j));
    (void)cm_metrics_gauge_fn(m, "chunkmill_job_done_chunks", "Chunks done, per job.", labels,
                              gj_done, j);
    (void)cm_metrics_gauge_fn(m, "chunkmill_job_records_saved", "Records saved, per job.",
                              labels, gj_records, j);
    (void)cm_metrics_gauge_fn(m, "chunkmill_job_backlog_chunks",
                              "Chunks of a running job waiting for a mapper.", labels, gj_backlog,
                              j);
    (void)cm_metrics_gauge_fn(m, "chunkmill_job_running", "1 while the job is running.", labels,
                              gj_running, j);
  }
}

/* ---- /status ---- */

int cm_fetch_status_json(cm_fetch_status_t *s, int64_t now, cm_buf_t *out) {
  cm_job_info_t info;
  int rc = 0;
  bool first = true;
  cm_job_t *j = status_job(s);
  if (j != NULL) {
    cm_ledger_t *l = cm_job_ledger(j);
    int64_t total = cm_job_total_chunks(j);
    char tot[32] = "null";
    const char *name = cm_job_name(j);
    cm_ledger_info(l, &info);
    if (total >= 0) snprintf(tot, sizeof(tot), "%" PRId64, total);
    rc |= cm_buf_puts(out, ",\"job\":{\"name\":");
    rc |= cm_buf_append_json_str(out, name, strlen(name));
    rc |= cm_buf_puts(out, ",\"source\":");
    rc |= cm_buf_append_json_str(out, info.source, strlen(info.source));
    rc |= cm_buf_printf(out,
                        ",\"chunk_size\":%u,\"chunks_created\":%" PRIu64 ",\"total_chunks\":%s"
                        ",\"done_chunks\":%" PRIu64 ",\"dead_chunks\":%" PRIu64
                        ",\"records_done\":%" PRIu64 ",\"redeliveries\":%" PRIu64
                        ",\"inflight\":%zu,\"pending\":%zu,\"backlog\":%.0f,\"complete\":%s"
                        ",\"state\":\"%s\"}",
                        info.chunk_size, info.next_index, tot, info.done_chunks,
                        info.dead_chunks, info.records_done, info.redeliveries,
                        cm_ledger_leased_count(l), cm_ledger_pending_count(l), job_backlog(j),
                        state_complete(cm_job_state(j)) ? "true" : "false",
                        cm_job_state_name(cm_job_state(j)));
  }
  rc |= cm_buf_puts(out, ",\"jobs\":[");
  for (size_t i = 0; i < cm_jobs_count(s->jobs); i++) {
    if (i > 0) rc |= cm_buf_puts(out, ",");
    rc |= cm_job_json(cm_jobs_at(s->jobs, i), out);
  }
  rc |= cm_buf_puts(out, "],\"members\":[");
  for (int i = 0; i < cm_members_count(s->mt); i++) {
    cm_member_t *m = cm_members_at(s->mt, i);
    if (!m->active) continue;
    rc |= cm_buf_puts(out, first ? "{\"id\":" : ",{\"id\":");
    first = false;
    rc |= cm_buf_append_json_str(out, m->id, strlen(m->id));
    rc |= cm_buf_puts(out, ",\"role\":\"mapper\",\"version\":");
    /* The member's own version; "versions" may count it as "other". */
    rc |= cm_buf_append_json_str(out, m->version_name, strlen(m->version_name));
    rc |= cm_buf_printf(out,
                        ",\"free\":%u,\"sent\":%" PRIu64 ",\"received\":%" PRIu64
                        ",\"draining\":%s,\"last_seen_ms_ago\":%" PRId64
                        ",\"heard\":%s,\"slots\":%u}",
                        m->free, m->sent, m->received, m->draining ? "true" : "false",
                        now - m->last_seen_ms, m->heard ? "true" : "false", m->slots);
  }
  rc |= cm_buf_puts(out, "],\"versions\":{");
  rc |= cm_versions_json(s->versions, out);
  rc |= cm_buf_puts(out, "}");
  return rc;
}

/* ---- GET /members ---- */

typedef struct {
  const char *id;
  int slot;
} id_slot_t;

static int id_slot_cmp(const void *a, const void *b) {
  return strcmp(((const id_slot_t *)a)->id, ((const id_slot_t *)b)->id);
}

typedef struct {
  id_slot_t *ids; /* the active mappers, sorted by id */
  int n;
  uint32_t *held; /* per member slot */
} held_ctx_t;

static void count_lease(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  held_ctx_t *c = ud;
  id_slot_t key = {holder, 0}, *hit;
  (void)index;
  (void)attempt;
  if (holder == NULL || c->n == 0) return;
  hit = bsearch(&key, c->ids, (size_t)c->n, sizeof(*c->ids), id_slot_cmp);
  if (hit != NULL) c->held[hit->slot]++;
}

int cm_fetch_status_members_json(cm_fetch_status_t *s, const char *self_id,
                                 const char *self_instance, const char *self_version,
                                 int64_t now, int64_t forget_ms, cm_buf_t *out) {
  int slots = cm_members_count(s->mt), rc = 0;
  held_ctx_t c = {NULL, 0, NULL};
  /* The ledgers know what is leased to whom: one walk over every job's
   * leases (at most --max-inflight in all), each holder found by binary
   * search among the active mappers. (A mapper's credit is no measure: its
   * free slots are capped at workers + prefetch, so slots - free counts
   * its whole --save-window.) */
  c.ids = calloc((size_t)slots + 1, sizeof(*c.ids));
  c.held = calloc((size_t)slots + 1, sizeof(*c.held));
  if (c.ids == NULL || c.held == NULL) {
    free(c.ids);
    free(c.held);
    return -ENOMEM;
  }
  for (int i = 0; i < slots; i++) {
    const cm_member_t *m = cm_members_at(s->mt, i);
    if (!m->active) continue;
    c.ids[c.n].id = m->id;
    c.ids[c.n++].slot = i;
  }
  qsort(c.ids, (size_t)c.n, sizeof(*c.ids), id_slot_cmp);
  for (size_t i = 0; i < cm_jobs_count(s->jobs) && rc == 0; i++)
    /* Every lease: none has its deadline at the end of time. */
    if (cm_ledger_each_expired(cm_job_ledger(cm_jobs_at(s->jobs, i)), INT64_MAX, count_lease,
                               &c) < 0)
      rc = -ENOMEM;
  if (rc == 0)
    rc = cm_members_json(s->mt, self_id, self_instance, self_version, now, forget_ms, c.held,
                         out);
  free(c.ids);
  free(c.held);
  return rc;
}

/* ---- progress lines and summaries ---- */

void cm_fetch_status_summary(cm_fetch_status_t *s, cm_job_t *j) {
  cm_job_info_t info;
  double secs, start_wall;
  uint64_t run_records, records_at_start;
  const char *job = cm_job_name(j);
  cm_ledger_info(cm_job_ledger(j), &info);
  cm_job_run_start(j, &start_wall, &records_at_start);
  secs = cm_wall_time() - start_wall;
  run_records = info.records_done - records_at_start;
  printf("job \"%s\" complete%s: %" PRIu64 " records in %" PRIu64 " chunks, %" PRIu64
         " dead chunks, %" PRIu64 " redeliveries, %.2f s, %.0f records/s\n",
         job, info.dead_chunks > 0 ? " with dead chunks" : "", info.records_done,
         info.done_chunks, info.dead_chunks, info.redeliveries, secs,
         secs > 0 ? (double)run_records / secs : 0.0);
  printf("{\"summary\":{\"job\":\"%s\",\"records\":%" PRIu64 ",\"chunks\":%" PRIu64
         ",\"dead_chunks\":%" PRIu64 ",\"redeliveries\":%" PRIu64
         ",\"seconds\":%.3f,\"records_per_s\":%.1f,\"records_this_run\":%" PRIu64
         ",\"latency_p50_s\":%.4f,\"latency_p99_s\":%.4f}}\n",
         job, info.records_done, info.done_chunks, info.dead_chunks, info.redeliveries, secs,
         secs > 0 ? (double)run_records / secs : 0.0, run_records,
         cm_histogram_quantile(s->latency, 0.5), cm_histogram_quantile(s->latency, 0.99));
  fflush(stdout);
  cm_log_info("job %s complete: %" PRIu64 " records, %" PRIu64 " chunks, %" PRIu64
              " dead, %" PRIu64 " redeliveries, %.2f s",
              job, info.records_done, info.done_chunks, info.dead_chunks, info.redeliveries,
              secs);
}

static void progress_job(cm_fetch_status_t *s, cm_job_t *j, double rate) {
  cm_job_info_t info;
  cm_ledger_t *l = cm_job_ledger(j);
  int64_t total = cm_job_total_chunks(j);
  char who[CM_JOB_MAX + 8] = "";
  cm_ledger_info(l, &info);
  if (j != s->primary) snprintf(who, sizeof(who), "job %s: ", cm_job_name(j));
  if (total >= 0)
    printf("progress: %s%" PRIu64 "/%" PRId64 " chunks (%.1f%%), %" PRIu64
           " records, %.0f records/s, in flight %zu, mappers %d, redeliveries %" PRIu64 "\n",
           who, info.done_chunks, total,
           total > 0 ? 100.0 * (double)info.done_chunks / (double)total : 0.0,
           info.records_done, rate, cm_ledger_leased_count(l), cm_members_active(s->mt),
           info.redeliveries);
  else
    printf("progress: %s%" PRIu64 " chunks done (source %s), %" PRIu64
           " records, %.0f records/s, in flight %zu, mappers %d, redeliveries %" PRIu64 "\n",
           who, info.done_chunks, info.source_done ? "read" : "reading", info.records_done, rate,
           cm_ledger_leased_count(l), cm_members_active(s->mt), info.redeliveries);
}

void cm_fetch_status_progress(cm_fetch_status_t *s, int64_t now) {
  double dt = (double)(now - s->last_progress_ms) / 1000.0;
  bool any = false;
  for (size_t i = 0; i < cm_jobs_count(s->jobs); i++) {
    cm_job_t *j = cm_jobs_at(s->jobs, i);
    double rate = 0;
    if (cm_job_state(j) != CM_JOB_RUNNING && cm_job_state(j) != CM_JOB_PAUSED) continue;
    if (j == s->primary) {
      cm_job_info_t info;
      cm_ledger_info(cm_job_ledger(j), &info);
      rate = dt > 0 ? (double)(info.records_done - s->last_progress_records) / dt : 0;
      s->last_progress_records = info.records_done;
    }
    progress_job(s, j, rate);
    any = true;
  }
  s->last_progress_ms = now;
  if (any) fflush(stdout);
}

/* ---- lifecycle ---- */

int cm_fetch_status_create(cm_fetch_status_t **out, const cm_fetch_status_cfg_t *cfg,
                           int64_t now) {
  cm_fetch_status_t *s = calloc(1, sizeof(*s));
  cm_metrics_t *m = cfg->metrics;
  *out = s;
  if (s == NULL) return -ENOMEM;
  s->metrics = cfg->metrics;
  s->jobs = cfg->jobs;
  s->primary = cfg->primary;
  s->mt = cfg->mt;
  s->versions = cfg->versions;
  s->latency = cfg->latency;
  s->last_progress_ms = now;
  if (s->primary != NULL) {
    cm_job_info_t info;
    cm_ledger_info(cm_job_ledger(s->primary), &info);
    s->last_progress_records = info.records_done;
  }
  (void)cm_metrics_gauge_fn(m, "chunkmill_backlog_chunks",
                            "Chunks waiting for a mapper (not done, not leased).", NULL, g_backlog,
                            s);
  (void)cm_metrics_gauge_fn(
      m, "chunkmill_oldest_pending_age_seconds",
      "Seconds the oldest pending chunk has waited since it became pending (0 when none).",
      NULL, g_oldest, s);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_inflight_chunks", "Chunks leased right now.",
                            NULL, g_inflight, s);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_mappers", "Mappers known alive.", NULL,
                            g_members, s);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_done_chunks", "Chunks done in this job.", NULL,
                            g_done, s);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_total_chunks",
                            "Chunks in this job (NaN while unknown).", NULL, g_total, s);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_records_done",
                            "Records confirmed saved in this job (all runs).", NULL,
                            g_records_done, s);
  cm_fetch_status_meter_jobs(s);
  return 0;
}

void cm_fetch_status_destroy(cm_fetch_status_t *s) { free(s); }

void cm_fetch_status_finished(cm_fetch_status_t *s) { s->finished = true; }
