/* fetch.c - the fetcher's dispatcher.
 *
 * Inputs (all on the loop thread, from NATS via the handoff):
 *   P.credit     a mapper can take N more chunks     -> pump()
 *   P.ack        a saver committed a chunk           -> ledger done, pump()
 *   P.nak        a mapper failed / handed back       -> pending (backoff), pump()
 *   P.heartbeat  members are alive                   -> member table
 *   timers       lease expiry, member expiry, ledger flush, progress
 * Output: one chunk per credit on P.chunk.<mapper-id>, within the global
 * window --max-inflight, from the runnable job the scheduler picks
 * (sched.h: stride scheduling on priority; a job with nothing due is
 * skipped). Acks, naks and heartbeat leases name their job and go to its
 * ledger; a holder gone releases its chunks in every job. Per-job state
 * (source, read-ahead, completion, progress) is job.c's; the member table
 * is members.c's.
 *
 * Durability is the ledger's: leases and acks are written behind (flushed
 * every FLUSH_MS in one transaction); a lost unflushed lease or ack only
 * causes a redelivery, which the saver deduplicates. A chunk of a sequential
 * source is in the ledger before it is first sent. While the ledger cannot
 * be written nothing is sent or read (ledger_health.h). */
#include "fetch.h"
#include "job.h"
#include "members.h"
#include "sched.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/chunk.h"
#include "cm/log.h"
#include "versions.h"
#include "dispatch_times.h"
#include "ledger_health.h"
#include "cm/peers.h"
#include "cm/reject.h"

/* A version with no mapper left is dropped from /status after this long
 * without events (its slot is then free for a new version). */
#define FETCH_VERSION_IDLE_MS (10 * 60 * 1000)
#define FETCH_FLUSH_MS 50
#define FETCH_TICK_MS 100
#define FETCH_RECONNECT_GRACE_MS 3000
/* After a failover, how long to let messages already on their way land
 * before a mapper's heartbeat is trusted to list every chunk it holds. */
#define FETCH_FAILOVER_SETTLE_MS 500
#define FETCH_MAX_CHUNK_BYTES (256u * 1024 * 1024)
/* Hard upper bound of what one mapper instance may hold, whatever it
 * declares (the mapper's own MAPPER_MAX_SLOTS). */
#define FETCH_MAX_SLOTS 1024
typedef cm_member_t member_t;

typedef cm_dispatch_time_t lat_t;

struct cm_fetch_s {
  cm_daemon_t *d;
  cm_fetch_cfg_t cfg;
  cm_ledger_t *ledger; /* the root handle: flushes every job (ledger.h) */
  cm_jobs_t *jobs;
  cm_job_t *primary;   /* the --job job (or the first): /status "job", metrics, --once */
  cm_sched_ent_t **sched; /* scratch of the pump, one per job */
  size_t sched_cap;

  cm_members_t *mt;
  cm_versions_t *versions;
  cm_dispatch_times_t *lat; /* chunks dispatched and not yet done or dead */

  uv_timer_t tick, flush, progress, due;
  cm_peers_t *peers;       /* reconnect counts from heartbeats */
  bool ever_connected;
  char chunk_prefix[256];
  char dead_subject[256];
  cm_buf_t buf;

  int64_t start_ms;
  uint64_t last_progress_records;
  int64_t last_progress_ms;
  bool complete; /* --once: the primary job is complete (exiting) */
  bool stopping;
  bool fatal;
  uint64_t dead_this_run;

  /* health.failing: the last ledger flush failed (disk full, I/O, locked):
   * dispatch and source reading pause, readiness is 503, completion waits,
   * until a flush succeeds. */
  cm_ledger_health_t health;
  bool exit_when_flushed; /* graceful shutdown waits for the ledger */

  cm_reject_t *rej;
  cm_counter_t *m_replaced;
  cm_counter_t *m_dispatched, *m_redelivered, *m_acked, *m_dup_acks, *m_records, *m_naks,
      *m_handbacks, *m_expired, *m_dead, *m_departed, *m_fenced, *m_lost;
  cm_histogram_t *m_latency;
  cm_gauge_t *m_complete;
  size_t metered; /* jobs 0 .. metered-1 have their per-job series */
};

static int64_t now_ms(cm_fetch_t *f) { return cm_daemon_now_ms(f->d); }

/* ---- versions and members ---- */

static member_t *member_find(cm_fetch_t *f, const char *id) { return cm_members_find(f->mt, id); }

static void member_set_version(cm_fetch_t *f, member_t *m, const char *v, int64_t now) {
  cm_members_set_version(f->mt, m, v, now);
}

static member_t *member_add(cm_fetch_t *f, const char *id) {
  return cm_members_add(f->mt, id, now_ms(f));
}

static int active_members(const cm_fetch_t *f) { return cm_members_active(f->mt); }

/* ---- helpers ---- */

static int64_t backoff_ms(uint32_t attempt) {
  /* Exponential from 250 ms, capped at 30 s, with +-50% jitter so a burst of
   * failures does not come back as a burst. */
  double base = 250.0 * pow(2.0, attempt > 0 ? (double)(attempt - 1) : 0.0);
  if (base > 30000.0) base = 30000.0;
  return (int64_t)(base * (0.5 + (double)rand() / ((double)RAND_MAX + 1.0)));
}

/* Latency runs from a chunk's first dispatch in this run: a redelivery
 * keeps the start, so the histogram shows how long chunks took to be saved
 * once sent, retries included, and never more than the run has lasted. */
static void lat_put(cm_fetch_t *f, const cm_job_t *j, uint64_t index, int64_t t,
                    cm_version_h version) {
  /* Out of memory: the chunk's time is unknown (not counted), nothing else. */
  (void)cm_dispatch_times_put(f->lat, j, index, t, version);
}

static const lat_t *lat_get(cm_fetch_t *f, const cm_job_t *j, uint64_t index) {
  return cm_dispatch_times_get(f->lat, j, index);
}

static void fetch_publish_dead(cm_fetch_t *f, cm_job_t *j, uint64_t index, uint32_t attempt,
                               const char *reason) {
  cm_buf_t b;
  const char *job = cm_job_name(j);
  cm_buf_init(&b, 4096);
  int rc = cm_buf_puts(&b, "{\"job\":");
  rc |= cm_buf_append_json_str(&b, job, strlen(job));
  rc |= cm_buf_printf(&b, ",\"index\":%" PRIu64 ",\"attempts\":%u,\"reason\":", index, attempt);
  rc |= cm_buf_append_json_str(&b, reason, strlen(reason));
  rc |= cm_buf_puts(&b, "}");
  if (rc == 0) (void)cm_nats_publish(cm_daemon_nats(f->d), f->dead_subject, NULL, b.data, b.len);
  cm_buf_free(&b);
  cm_dispatch_times_del(f->lat, j, index);
  cm_counter_inc(f->m_dead);
  f->dead_this_run++;
  cm_log_error("chunk %" PRIu64 " is dead after %u deliveries: %s (job %s)", index, attempt,
               reason, job);
}

/* Returns a lease to pending (or dead). */
static void fetch_release(cm_fetch_t *f, cm_job_t *j, uint64_t index, uint32_t attempt,
                          int64_t not_before, const char *reason) {
  int rc = cm_ledger_release(cm_job_ledger(j), index, attempt, not_before, reason,
                             cm_job_max_deliver(j));
  if (rc == 0) cm_counter_inc(f->m_fenced);
  if (rc == 2) fetch_publish_dead(f, j, index, attempt, reason);
}

/* Chunks leased in every job (the global --max-inflight window). */
static size_t fetch_leased(cm_fetch_t *f) {
  size_t n = 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++)
    n += cm_ledger_leased_count(cm_job_ledger(cm_jobs_at(f->jobs, i)));
  return n;
}

/* ---- ledger health ---- */

static int fetch_flush_now(cm_fetch_t *f) { return cm_ledger_health_flush(&f->health, now_ms(f)); }

bool cm_fetch_ready(cm_fetch_t *f, char *why, size_t whylen) {
  return cm_ledger_health_ready(&f->health, why, whylen);
}

/* ---- completion and progress ---- */

static void fetch_summary(cm_fetch_t *f, cm_job_t *j) {
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
         cm_histogram_quantile(f->m_latency, 0.5), cm_histogram_quantile(f->m_latency, 0.99));
  fflush(stdout);
  cm_log_info("job %s complete: %" PRIu64 " records, %" PRIu64 " chunks, %" PRIu64
              " dead, %" PRIu64 " redeliveries, %.2f s",
              job, info.records_done, info.done_chunks, info.dead_chunks, info.redeliveries,
              secs);
}

static bool state_complete(cm_job_state_t s) {
  return s == CM_JOB_COMPLETE || s == CM_JOB_COMPLETE_WITH_DEAD;
}

static void fetch_check_complete(cm_fetch_t *f) {
  bool flushed = false;
  if (f->complete) return;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    cm_job_t *j = cm_jobs_at(f->jobs, i);
    cm_job_state_t st = cm_job_state(j);
    if ((st != CM_JOB_RUNNING && st != CM_JOB_PAUSED) ||
        !cm_ledger_job_complete(cm_job_ledger(j)))
      continue;
    /* Complete only once the ledger says so: with unwritten acks a restart
     * would redo them, so "complete" (and exit 0) waits for the flush timer
     * to get them written. */
    if (!flushed && fetch_flush_now(f) != 0) return;
    flushed = true;
    if (cm_job_settle(j) != 1) continue;
    if (!(f->cfg.once && j == f->primary)) fetch_summary(f, j);
  }
  if (f->primary != NULL)
    cm_gauge_set(f->m_complete, state_complete(cm_job_state(f->primary)) ? 1 : 0);
  if (f->cfg.once && f->primary != NULL && state_complete(cm_job_state(f->primary))) {
    cm_job_info_t info;
    if (!flushed && fetch_flush_now(f) != 0) return;
    f->complete = true;
    fetch_summary(f, f->primary);
    cm_ledger_info(cm_job_ledger(f->primary), &info);
    f->stopping = true;
    cm_daemon_exit(f->d, (info.dead_chunks > 0 && !f->cfg.allow_dead) ? 3 : 0);
  }
}

static void fetch_progress_job(cm_fetch_t *f, cm_job_t *j, double rate) {
  cm_job_info_t info;
  cm_ledger_t *l = cm_job_ledger(j);
  int64_t total = cm_job_total_chunks(j);
  char who[CM_JOB_MAX + 8] = "";
  cm_ledger_info(l, &info);
  if (j != f->primary) snprintf(who, sizeof(who), "job %s: ", cm_job_name(j));
  if (total >= 0)
    printf("progress: %s%" PRIu64 "/%" PRId64 " chunks (%.1f%%), %" PRIu64
           " records, %.0f records/s, in flight %zu, mappers %d, redeliveries %" PRIu64 "\n",
           who, info.done_chunks, total,
           total > 0 ? 100.0 * (double)info.done_chunks / (double)total : 0.0,
           info.records_done, rate, cm_ledger_leased_count(l), active_members(f),
           info.redeliveries);
  else
    printf("progress: %s%" PRIu64 " chunks done (source %s), %" PRIu64
           " records, %.0f records/s, in flight %zu, mappers %d, redeliveries %" PRIu64 "\n",
           who, info.done_chunks, info.source_done ? "read" : "reading", info.records_done, rate,
           cm_ledger_leased_count(l), active_members(f), info.redeliveries);
}

static void fetch_progress(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  int64_t now = now_ms(f);
  double dt = (double)(now - f->last_progress_ms) / 1000.0;
  bool any = false;
  if (f->complete) return;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    cm_job_t *j = cm_jobs_at(f->jobs, i);
    double rate = 0;
    if (cm_job_state(j) != CM_JOB_RUNNING && cm_job_state(j) != CM_JOB_PAUSED) continue;
    if (j == f->primary) {
      cm_job_info_t info;
      cm_ledger_info(cm_job_ledger(j), &info);
      rate = dt > 0 ? (double)(info.records_done - f->last_progress_records) / dt : 0;
      f->last_progress_records = info.records_done;
    }
    fetch_progress_job(f, j, rate);
    any = true;
  }
  f->last_progress_ms = now;
  if (any) fflush(stdout);
}

/* ---- dispatch ---- */

static void fetch_fatal(cm_fetch_t *f, const char *what) {
  if (f->fatal) return;
  f->fatal = true;
  f->stopping = true;
  cm_log_error("%s", what);
  fprintf(stderr, "fetcher: %s\n", what);
  if (fetch_flush_now(f) != 0) cm_log_error("ledger flush failed: %s", f->health.err);
  cm_daemon_exit(f->d, 1);
}

static member_t *fetch_pick(cm_fetch_t *f) {
  member_t *best = NULL;
  int64_t best_av = 0;
  for (int i = 0; i < cm_members_count(f->mt); i++) {
    member_t *m = cm_members_at(f->mt, i);
    int64_t av;
    if (!m->active) continue;
    av = cm_member_available(m);
    if (av > best_av) {
      best = m;
      best_av = av;
    }
  }
  return best;
}

static void fetch_arm_due(cm_fetch_t *f, int64_t now);

typedef struct {
  cm_fetch_t *f;
  int64_t now;
  uint64_t index;
} pump_ctx_t;

static bool pump_due(void *ud, size_t i) {
  pump_ctx_t *c = ud;
  return cm_job_next_chunk(cm_jobs_at(c->f->jobs, i), c->now, &c->index) == 1;
}

static void fetch_pump(cm_fetch_t *f) {
  int64_t now;
  size_t n = cm_jobs_count(f->jobs), leased;
  pump_ctx_t ctx;
  if (f->stopping || f->complete || f->health.failing || !cm_nats_connected(cm_daemon_nats(f->d)))
    return;
  now = now_ms(f);
  if (n > f->sched_cap) {
    void *p = realloc(f->sched, n * 2 * sizeof(*f->sched));
    if (p == NULL) return; /* the next pump retries */
    f->sched = p;
    f->sched_cap = n * 2;
  }
  /* Only running jobs take part; a paused or finished one is never asked. */
  for (size_t i = 0; i < n; i++) {
    cm_job_t *j = cm_jobs_at(f->jobs, i);
    f->sched[i] = cm_job_runnable(j) ? cm_job_sched(j) : NULL;
  }
  ctx.f = f;
  ctx.now = now;
  leased = fetch_leased(f);
  while ((int64_t)leased < f->cfg.max_inflight) {
    member_t *m = fetch_pick(f);
    uint32_t attempt = 0;
    cm_job_t *j;
    int rc, pick;
    if (m == NULL) break;
    pick = cm_sched_pick(f->sched, n, pump_due, &ctx);
    if (f->stopping) return; /* a ledger failure while reading */
    if (pick < 0) break;
    j = cm_jobs_at(f->jobs, (size_t)pick);
    if (cm_ledger_lease(cm_job_ledger(j), ctx.index, m->id, now + f->cfg.ack_wait_ms, &attempt) !=
        0) {
      fetch_fatal(f, "ledger: cannot lease a pending chunk");
      return;
    }
    leased++;
    rc = cm_job_build(j, ctx.index, attempt, m->id, f->cfg.lease_key, &f->buf);
    if (rc == 0)
      rc = cm_nats_publish(cm_daemon_nats(f->d), m->subject, NULL, f->buf.data, f->buf.len);
    if (rc != 0) {
      /* Not sent: back to pending at once (it did not reach anyone). */
      char reason[160];
      if (rc == -EMSGSIZE)
        snprintf(reason, sizeof(reason),
                 "chunk of %zu bytes exceeds the NATS server's max_payload (use a smaller "
                 "--chunk-size)",
                 f->buf.len);
      else
        snprintf(reason, sizeof(reason), "dispatch failed: %s", strerror(-rc));
      cm_log_warn("could not send chunk %" PRIu64 " of job %s to %s: %s", ctx.index,
                  cm_job_name(j), m->id, reason);
      fetch_release(f, j, ctx.index, attempt, now + 100, reason);
      break;
    }
    m->sent++;
    if (m->first_dispatch_ms < 0) {
      m->first_dispatch_ms = now;
      cm_log_info("mapper %s got its first chunk %.3f s after joining", m->id,
                  (double)(now - m->joined_ms) / 1000.0);
    }
    cm_versions_count(f->versions, m->version, CM_VERSION_DISPATCHED, now);
    lat_put(f, j, ctx.index, now, m->version);
    cm_counter_inc(f->m_dispatched);
    if (attempt > 1) cm_counter_inc(f->m_redelivered);
  }
  fetch_arm_due(f, now);
}

static void fetch_due_cb(uv_timer_t *t) { fetch_pump(t->data); }

static void fetch_arm_due(cm_fetch_t *f, int64_t now) {
  /* Wake up when the next backed-off chunk of a running job becomes due. A
   * chunk that is due already is waiting for credit, and credit wakes the
   * pump: re-arming a 0 ms timer from its own callback would spin libuv's
   * timer loop. */
  int64_t at = -1;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    cm_job_t *j = cm_jobs_at(f->jobs, i);
    int64_t t;
    if (!cm_job_runnable(j)) continue;
    t = cm_ledger_next_due_at(cm_job_ledger(j));
    if (t > now && (at < 0 || t < at)) at = t;
  }
  if (at <= now) return;
  (void)uv_timer_start(&f->due, fetch_due_cb, (uint64_t)(at - now), 0);
}

/* ---- NATS handlers ---- */

/* Leases held by a member are released at once (a departed or replaced
 * instance); returns how many. */
static int member_release_all(cm_fetch_t *f, member_t *m, const char *reason);

static int64_t member_period(cm_fetch_t *f, const member_t *m) {
  int64_t hb = cm_daemon_cfg(f->d)->heartbeat_ms;
  return m->period_ms > 0 ? m->period_ms : hb;
}

static void count_held(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  (void)index;
  (void)attempt;
  (void)holder;
  (*(int *)ud)++;
}

/* A new instance may take over the id when the bound one never heartbeated
 * (it holds nothing), has drained (draining, nothing held), or has missed
 * a heartbeat: its own period and a quarter (at least 250 ms more) without
 * one. While the bound instance keeps beating, a second token under its id
 * is refused (a forgery, or two processes given one --id); it is
 * remembered as the challenger and takes over at the tick where the bound
 * one is late (see fetch_tick), so a restart after kill -9 has its
 * predecessor's leases released about one period after the last
 * heartbeat, instead of after three missed ones or --ack-wait. */
static bool member_may_replace(cm_fetch_t *f, const member_t *m, int64_t now) {
  int64_t period = member_period(f, m);
  int held = 0;
  if (!m->heard) return true;
  /* Drained: it announced it is leaving and holds nothing any more. */
  if (m->draining) {
    for (size_t i = 0; i < cm_jobs_count(f->jobs); i++)
      (void)cm_ledger_each_held(cm_job_ledger(cm_jobs_at(f->jobs, i)), m->id, count_held, &held);
    if (held == 0) return true;
  }
  /* At least 250 ms of slack: a busy host delays short periods by that. */
  return now - m->hb_ms > period + (period / 4 > 250 ? period / 4 : 250);
}

/* Binds m to `instance`, releasing what a predecessor held. */
static void member_rebind(cm_fetch_t *f, member_t *m, const char *instance, bool heard,
                          int64_t now) {
  int held = 0;
  bool had = m->heard;
  char old[sizeof(m->instance)];
  snprintf(old, sizeof(old), "%s", m->instance);
  if (m->heard) held = member_release_all(f, m, "mapper restarted (a new instance of its id)");
  snprintf(m->instance, sizeof(m->instance), "%s", instance);
  m->heard = heard;
  m->hb_ms = now;
  m->last_seen_ms = now;
  m->free = 0;
  m->sent = m->received = 0;
  m->slots = 0;
  m->draining = false;
  /* period_ms is kept: a restarted instance beats like its predecessor
   * until its own heartbeat says otherwise. */
  m->challenger[0] = '\0';
  if (had) {
    cm_counter_inc(f->m_replaced);
    cm_log_warn("mapper %s: new instance %.8s replaces %.8s, which stopped sending heartbeats; "
                "%d chunks it held are pending again",
                m->id, instance, old, held);
  }
}

static void fetch_on_credit(void *ud, natsMsg *msg) {
  cm_fetch_t *f = ud;
  Chunkmill__Credit *c = chunkmill__credit__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                   (const uint8_t *)natsMsg_GetData(msg));
  member_t *m;
  char want[512];
  const char *inst;
  int64_t now = now_ms(f);
  if (c == NULL || c->mapper_id == NULL || c->mapper_id[0] == '\0' || c->subject == NULL ||
      c->subject[0] == '\0') {
    cm_reject(f->rej, now, "invalid_message", "an invalid Credit message");
    goto out;
  }
  inst = c->instance != NULL ? c->instance : "";
  /* A mapper receives on <prefix>.chunk.<its id>, and nowhere else: a
   * credit naming another subject is a misconfigured or hostile client
   * (it would take the id's chunks to where it listens). */
  if (snprintf(want, sizeof(want), "%s.%s", f->chunk_prefix, c->mapper_id) >= (int)sizeof(want) ||
      strlen(c->mapper_id) >= sizeof(((member_t *)0)->id) || strcmp(c->subject, want) != 0) {
    cm_reject(f->rej, now, "credit_subject",
              "credit for mapper %.64s names subject %.128s; chunks for it only go to %.128s",
              c->mapper_id, c->subject, want);
    goto out;
  }
  m = member_find(f, c->mapper_id);
  if (m != NULL && strcmp(m->instance, inst) != 0) {
    if (!member_may_replace(f, m, now)) {
      cm_reject(f->rej, now, "member_instance",
                "credit for mapper %.64s from instance %.8s while instance %.8s of that id is "
                "alive",
                c->mapper_id, inst, m->instance);
      if (!c->draining) cm_member_challenge(m, inst, false, now);
      goto out;
    }
    if (c->draining) goto out;
    member_rebind(f, m, inst, false, now);
    member_set_version(f, m, c->version, now);
  }
  if (m == NULL) {
    if (c->draining) goto out;
    m = member_add(f, c->mapper_id);
    if (m == NULL) {
      cm_reject(f->rej, now, "member_table_full", "member table full: ignoring mapper %.64s",
                c->mapper_id);
      goto out;
    }
    snprintf(m->instance, sizeof(m->instance), "%s", inst);
    member_set_version(f, m, c->version, now);
    cm_log_info("mapper %s (version %s, counted as %s) joined with %u free slots", m->id,
                m->version_name, cm_versions_name(f->versions, m->version), c->free);
  } else if (c->version != NULL && c->version[0]) {
    /* Restarted under the same id with another version (StatefulSet). */
    member_set_version(f, m, c->version, now);
  }
  snprintf(m->subject, sizeof(m->subject), "%s", c->subject);
  if (m->slots == 0) {
    /* Bound once per instance: a later credit cannot raise it. 0 (a mapper
     * that does not say) means the hard bound. */
    m->slots = c->slots > 0 && c->slots < FETCH_MAX_SLOTS ? c->slots : FETCH_MAX_SLOTS;
  }
  if (c->free > m->slots)
    cm_reject(f->rej, now, "credit_over_slots",
              "credit of %u from mapper %.64s, which declared %u slots: capped", c->free, m->id,
              m->slots);
  m->free = c->free > m->slots ? m->slots : c->free;
  if (m->sent == 0 || c->received < m->received) {
    /* First credit from this instance, or its counter went back: align
     * our count of chunks sent with its count of chunks received, so
     * sent - received is what is in transit. */
    m->received = c->received;
    m->sent = c->received;
  } else {
    m->received = c->received;
  }
  m->draining = c->draining;
  fetch_pump(f);
out:
  chunkmill__credit__free_unpacked(c, NULL);
  natsMsg_Destroy(msg);
}

static void fetch_on_ack(void *ud, natsMsg *msg) {
  cm_fetch_t *f = ud;
  Chunkmill__Ack *a = chunkmill__ack__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                             (const uint8_t *)natsMsg_GetData(msg));
  cm_job_t *j = NULL;
  if (a == NULL) {
    cm_reject(f->rej, now_ms(f), "invalid_message", "an invalid Ack message");
    goto out;
  }
  if (a->job == NULL || (j = cm_jobs_find(f->jobs, a->job)) == NULL) goto out;
  if (f->cfg.lease_key != NULL &&
      !cm_lease_ack_verify(f->cfg.lease_key, a->job, a->index, a->attempt, a->redo, a->records,
                           a->dead_records, a->duplicate, a->version, a->mac)) {
    /* Only a saver holding the lease key makes this MAC, and only after
     * committing the chunk: anything else would mark unsaved work done. */
    cm_reject(f->rej, now_ms(f), "ack_forged",
              "Ack for chunk %" PRIu64 " attempt %u (saver %.64s) without a valid MAC: a forgery, "
              "or a saver without this --lease-key-file",
              a->index, a->attempt, a->saver_id ? a->saver_id : "?");
    goto out;
  }
  /* The saver's version and redo generation: an ack of a generation older
   * than the chunk's (a late save of a redone version) is ignored. */
  if (cm_ledger_ack_v(cm_job_ledger(j), a->index, a->attempt, a->records, a->version, a->redo) ==
      1) {
    const lat_t *l = lat_get(f, j, a->index);
    cm_counter_inc(f->m_acked);
    cm_counter_add(f->m_records, a->records);
    if (l != NULL) {
      cm_histogram_observe(f->m_latency, (double)(now_ms(f) - l->t_ms) / 1000.0);
      cm_versions_count(f->versions, l->version, CM_VERSION_ACKED, now_ms(f));
      cm_dispatch_times_del(f->lat, j, a->index);
    }
    fetch_check_complete(f);
    fetch_pump(f);
  } else {
    cm_counter_inc(f->m_dup_acks);
  }
out:
  chunkmill__ack__free_unpacked(a, NULL);
  natsMsg_Destroy(msg);
}

static void fetch_on_nak(void *ud, natsMsg *msg) {
  cm_fetch_t *f = ud;
  Chunkmill__Nak *n = chunkmill__nak__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                             (const uint8_t *)natsMsg_GetData(msg));
  cm_job_t *j = NULL;
  int64_t now;
  now = now_ms(f);
  if (n == NULL) {
    cm_reject(f->rej, now, "invalid_message", "an invalid Nak message");
    goto out;
  }
  if (n->job == NULL || (j = cm_jobs_find(f->jobs, n->job)) == NULL) goto out;
  if (f->cfg.lease_key != NULL &&
      !cm_lease_verify(f->cfg.lease_key, n->job, n->index, n->attempt, n->redo,
                       n->mapper_id ? n->mapper_id : "", n->lease)) {
    /* Only the mapper the chunk was leased to has its token. */
    cm_reject(f->rej, now, "nak_forged",
              "Nak for chunk %" PRIu64 " attempt %u (mapper %.64s) without its lease token",
              n->index, n->attempt, n->mapper_id ? n->mapper_id : "?");
    goto out;
  }
  if (n->handback) {
    cm_counter_inc(f->m_handbacks);
    /* A hand-back is not a failure: due at once, and it never makes the
     * chunk dead (max_deliver 0 = no limit for this release). */
    if (cm_ledger_release(cm_job_ledger(j), n->index, n->attempt, now,
                          n->reason ? n->reason : "handed back", 0) == 0)
      cm_counter_inc(f->m_fenced);
  } else {
    const lat_t *l = lat_get(f, j, n->index);
    int64_t wait = n->retry_after_ms > 0 ? (int64_t)n->retry_after_ms : backoff_ms(n->attempt);
    cm_counter_inc(f->m_naks);
    if (l != NULL) cm_versions_count(f->versions, l->version, CM_VERSION_NAK, now);
    cm_log_warn("chunk %" PRIu64 " attempt %u failed on %s: %s (job %s)", n->index, n->attempt,
                n->mapper_id ? n->mapper_id : "?", n->reason ? n->reason : "", n->job);
    fetch_release(f, j, n->index, n->attempt, now + wait, n->reason ? n->reason : "nak");
  }
  fetch_check_complete(f);
  fetch_pump(f);
out:
  chunkmill__nak__free_unpacked(n, NULL);
  natsMsg_Destroy(msg);
}

/* A NATS failover somewhere (ours, or a peer's reconnect seen in its
 * heartbeat): messages to or from the node that died may be lost. Every
 * mapper's leases are checked against its heartbeat once things settled
 * (fetch_reconcile), and mappers silent right now get the reconnect grace:
 * they are probably failing over too, not dead. */
static void fetch_failover_seen(cm_fetch_t *f, int64_t now) {
  int64_t hb = cm_daemon_cfg(f->d)->heartbeat_ms;
  for (int i = 0; i < cm_members_count(f->mt); i++) {
    member_t *m = cm_members_at(f->mt, i);
    int64_t period = m->period_ms > hb ? m->period_ms : hb;
    if (!m->active) continue;
    m->reconcile_at = now + (period > FETCH_FAILOVER_SETTLE_MS ? period : FETCH_FAILOVER_SETTLE_MS);
    m->reconcile_cutoff = now;
    if (now - m->last_seen_ms > period && m->last_seen_ms < now + FETCH_RECONNECT_GRACE_MS)
      m->last_seen_ms = now + FETCH_RECONNECT_GRACE_MS;
  }
}

typedef struct {
  cm_fetch_t *f;
  cm_job_t *j;
  member_t *m;
  const Chunkmill__Heartbeat *hb;
  int64_t now;
  int n;
} reconcile_ctx_t;

static void reconcile_one(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  reconcile_ctx_t *c = ud;
  const lat_t *l = lat_get(c->f, c->j, index);
  /* Dispatched after the failover (or unknown): it may still be on its way. */
  if (l == NULL || l->t_ms >= c->m->reconcile_cutoff) return;
  for (size_t i = 0; i < c->hb->n_inflight; i++) {
    const Chunkmill__Lease *h = c->hb->inflight[i];
    if (h->index == index && h->job != NULL && strcmp(h->job, cm_job_name(c->j)) == 0) return;
  }
  /* Never arrived, or done and its ack lost: out again at once (the saver
   * deduplicates). Not the chunk's fault: no --max-deliver budget spent. */
  if (cm_ledger_release(cm_job_ledger(c->j), index, attempt, c->now, "lost in a NATS failover",
                        0) == 1) {
    if (c->m->sent > c->m->received) c->m->sent--;
    c->n++;
  }
}

static void fetch_reconcile(cm_fetch_t *f, member_t *m, const Chunkmill__Heartbeat *hb,
                            int64_t now) {
  reconcile_ctx_t c = {f, NULL, m, hb, now, 0};
  m->reconcile_at = 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    c.j = cm_jobs_at(f->jobs, i);
    (void)cm_ledger_each_held(cm_job_ledger(c.j), m->id, reconcile_one, &c);
  }
  if (c.n > 0) {
    cm_counter_add(f->m_lost, (uint64_t)c.n);
    cm_log_warn("%d chunks leased to mapper %s were lost in a NATS failover: re-dispatching", c.n,
                m->id);
    fetch_pump(f);
  }
}

static void fetch_on_heartbeat(void *ud, natsMsg *msg) {
  cm_fetch_t *f = ud;
  Chunkmill__Heartbeat *hb = chunkmill__heartbeat__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                         (const uint8_t *)natsMsg_GetData(msg));
  int64_t now = now_ms(f);
  if (hb != NULL && hb->role != NULL && hb->id != NULL && strcmp(hb->role, "fetcher") != 0 &&
      cm_peers_saw(f->peers, hb->id, hb->nats_reconnects, now)) {
    cm_log_info("%s %s reconnected to NATS (now on %s): checking the mappers' leases", hb->role,
                hb->id, hb->nats_server != NULL && hb->nats_server[0] ? hb->nats_server : "?");
    fetch_failover_seen(f, now);
  }
  if (hb != NULL && hb->role != NULL && strcmp(hb->role, "saver") == 0 && hb->id != NULL)
    cm_members_saver_seen(f->mt, hb->id, hb->instance, hb->version, hb->n_inflight, now);
  if (hb != NULL && hb->role != NULL && strcmp(hb->role, "mapper") == 0 && hb->id != NULL) {
    member_t *m = member_find(f, hb->id);
    const char *inst = hb->instance != NULL ? hb->instance : "";
    /* Members are created by credit (it names the subject); a heartbeat of
     * an unknown id is followed by its credit. */
    if (m != NULL && strcmp(m->instance, inst) != 0) {
      if (!member_may_replace(f, m, now)) {
        cm_reject(f->rej, now, "member_instance",
                  "heartbeat of mapper %.64s from instance %.8s while instance %.8s of that id "
                  "is alive",
                  hb->id, inst, m->instance);
        if (!hb->draining) cm_member_challenge(m, inst, true, now);
        m = NULL;
      } else {
        /* A restart (kill -9, container restart under the same name): the
         * predecessor's leases are pending again now, not after
         * --ack-wait. The new instance's next credit names its room. */
        member_rebind(f, m, inst, true, now);
        member_set_version(f, m, hb->version, now);
      }
    }
    if (m != NULL) {
      bool first = !m->heard;
      m->heard = true;
      m->hb_ms = now;
      m->last_seen_ms = now;
      m->period_ms = hb->period_ms;
      /* Leases the mapper reports as in hand are alive: keep them. */
      cm_job_t *lj = NULL;
      for (size_t i = 0; i < hb->n_inflight; i++) {
        Chunkmill__Lease *l = hb->inflight[i];
        if (l->job == NULL) continue;
        /* Leases of one mapper mostly belong to one job: look it up again
         * only when the name changes. */
        if (lj == NULL || strcmp(l->job, cm_job_name(lj)) != 0) lj = cm_jobs_find(f->jobs, l->job);
        if (lj == NULL) continue;
        if (f->cfg.lease_key != NULL &&
            !cm_lease_verify(f->cfg.lease_key, l->job, l->index, l->attempt, l->redo, m->id,
                             l->lease)) {
          cm_reject(f->rej, now, "lease_forged",
                    "heartbeat of mapper %.64s claims chunk %" PRIu64
                    " attempt %u without its lease token",
                    m->id, l->index, l->attempt);
          continue;
        }
        (void)cm_ledger_extend(cm_job_ledger(lj), l->index, l->attempt,
                               now + f->cfg.ack_wait_ms);
      }
      if (m->reconcile_at != 0 && now >= m->reconcile_at && !f->stopping)
        fetch_reconcile(f, m, hb, now);
      if (first) fetch_pump(f);
    }
  }
  chunkmill__heartbeat__free_unpacked(hb, NULL);
  natsMsg_Destroy(msg);
}

/* ---- timers ---- */

typedef struct {
  cm_fetch_t *f;
  cm_job_t *j;
  int64_t now;
  const char *reason;
  bool at_once;
} release_ctx_t;

static void release_one(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  release_ctx_t *c = ud;
  const lat_t *l = lat_get(c->f, c->j, index);
  member_t *m = holder != NULL ? member_find(c->f, holder) : NULL;
  /* A lease that ends without an ack or nak may never have reached its
   * mapper (lost in a reconnect): stop counting it as in transit. */
  if (m != NULL && m->sent > m->received) m->sent--;
  if (l != NULL) cm_versions_count(c->f->versions, l->version, CM_VERSION_EXPIRED, c->now);
  fetch_release(c->f, c->j, index, attempt, c->at_once ? c->now : c->now + backoff_ms(attempt),
                c->reason);
}

/* A holder gone releases its chunks in every job. */
static int release_held(cm_fetch_t *f, const char *holder, int64_t now, const char *reason) {
  release_ctx_t g = {f, NULL, now, reason, true};
  int n = 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    g.j = cm_jobs_at(f->jobs, i);
    int k = cm_ledger_each_held(cm_job_ledger(g.j), holder, release_one, &g);
    if (k > 0) n += k;
  }
  return n;
}

static int member_release_all(cm_fetch_t *f, member_t *m, const char *reason) {
  return release_held(f, m->id, now_ms(f), reason);
}

static void fetch_tick(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  int64_t now = now_ms(f);
  int64_t hb = cm_daemon_cfg(f->d)->heartbeat_ms;
  release_ctx_t c = {f, NULL, now, "lease expired (ack wait)", false};
  int n = 0;
  if (f->stopping) return;
  cm_versions_sweep(f->versions, now);
  /* The member table only ages while we can hear the members: an outage
   * of our own connection must not look like every mapper dying. */
  if (cm_nats_connected(cm_daemon_nats(f->d))) {
    for (int i = 0; i < cm_members_count(f->mt); i++) {
      member_t *m = cm_members_at(f->mt, i);
      if (m->active && m->challenger[0] != '\0') {
        /* A challenger heard within the last two periods takes over once
         * the bound instance is late. */
        int64_t period = member_period(f, m);
        if (now - m->challenger_ms > 2 * period)
          m->challenger[0] = '\0';
        else if (member_may_replace(f, m, now)) {
          char inst[sizeof(m->challenger)];
          bool heard = m->challenger_heard;
          snprintf(inst, sizeof(inst), "%s", m->challenger);
          member_rebind(f, m, inst, heard, now);
          /* Its subject is <prefix>.chunk.<id>; its room comes with its
           * next credit. */
          continue;
        }
      }
      /* Three of the mapper's own periods (it may beat slower than us). */
      if (!m->active || now - m->last_seen_ms <= 3 * (m->period_ms > hb ? m->period_ms : hb))
        continue;
      if (!m->heard) {
        /* Credit without a heartbeat: never got work, nothing to release. */
        cm_log_debug("mapper %s sent credit but no heartbeat: forgotten", m->id);
        cm_members_forget(f->mt, m, now);
        continue;
      }
      int held = release_held(f, m->id, now, "mapper stopped sending heartbeats");
      cm_counter_inc(f->m_departed);
      cm_log_warn("mapper %s missed 3 heartbeats: gone; %d chunks it held are pending again",
                  m->id, held);
      cm_members_forget(f->mt, m, now);
    }
    for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
      c.j = cm_jobs_at(f->jobs, i);
      int k = cm_ledger_each_expired(cm_job_ledger(c.j), now, release_one, &c);
      if (k > 0) n += k;
    }
    if (n > 0) {
      cm_counter_add(f->m_expired, (uint64_t)n);
      cm_log_warn("%d leases expired after --ack-wait; re-dispatching", n);
    }
  }
  cm_jobs_sample(f->jobs, now);
  fetch_check_complete(f);
  fetch_pump(f);
}

static void fetch_flush(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  bool was_failing = f->health.failing;
  if (fetch_flush_now(f) != 0) return;
  if (f->exit_when_flushed) {
    f->exit_when_flushed = false;
    cm_log_info("ledger written: stopping");
    cm_daemon_exit(f->d, 0);
    return;
  }
  if (was_failing) {
    fetch_check_complete(f);
    fetch_pump(f);
  }
}

/* ---- status, metrics ---- */

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
  cm_fetch_t *f = ud;
  double n = 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    cm_job_t *j = cm_jobs_at(f->jobs, i);
    if (job_counts(j)) n += job_backlog(j);
  }
  return n;
}

static double g_oldest(void *ud) {
  cm_fetch_t *f = ud;
  int64_t worst = 0;
  if (f->complete) return 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    cm_job_t *j = cm_jobs_at(f->jobs, i);
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

static double g_inflight(void *ud) { return (double)fetch_leased(ud); }
static double g_members(void *ud) { return (double)active_members(ud); }

/* The job the single-job series describe: --job's, else the first. */
static cm_job_t *status_job(cm_fetch_t *f) {
  return f->primary != NULL ? f->primary : cm_jobs_at(f->jobs, 0);
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

/* Registers the series of jobs added since the last call (the registry
 * only grows). Past the metrics registry's limit a job simply has none. */
static void fetch_meter_jobs(cm_fetch_t *f) {
  cm_metrics_t *m = cm_daemon_metrics(f->d);
  for (; f->metered < cm_jobs_count(f->jobs); f->metered++) {
    cm_job_t *j = cm_jobs_at(f->jobs, f->metered);
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

int cm_fetch_status(cm_fetch_t *f, cm_buf_t *out) {
  cm_job_info_t info;
  int64_t now = now_ms(f);
  int rc = 0;
  bool first = true;
  cm_job_t *j = status_job(f);
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
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    if (i > 0) rc |= cm_buf_puts(out, ",");
    rc |= cm_job_json(cm_jobs_at(f->jobs, i), out);
  }
  rc |= cm_buf_puts(out, "],\"members\":[");
  for (int i = 0; i < cm_members_count(f->mt); i++) {
    member_t *m = cm_members_at(f->mt, i);
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
  rc |= cm_versions_json(f->versions, out);
  rc |= cm_buf_puts(out, "}");
  return rc;
}

/* ---- lifecycle ---- */

void cm_fetch_on_nats(cm_fetch_t *f, cm_nats_event_t ev) {
  if (ev == CM_NATS_CONNECTED) {
    /* Chunks sent just before a disconnect may never have arrived: forget
     * in-transit counts and let the mappers' next credit speak. */
    for (int i = 0; i < cm_members_count(f->mt); i++) {
      member_t *m = cm_members_at(f->mt, i);
      if (!m->active) continue;
      /* `sent` is kept: chunks buffered across the outage are delivered
       * now and still count against the mapper's room. A chunk that was
       * really lost is healed when its lease expires (release_one). */
      m->free = 0;
      /* The mappers are reconnecting too (nats.c reconnect wait plus
       * jitter): give them that long before counting missed heartbeats. */
      m->last_seen_ms = now_ms(f) + FETCH_RECONNECT_GRACE_MS;
    }
    /* A reconnect of ours (not the first connect) may have lost chunks we
     * had just sent and acks on their way to us. */
    if (f->ever_connected) fetch_failover_seen(f, now_ms(f));
    f->ever_connected = true;
    fetch_check_complete(f);
    fetch_pump(f);
  }
}

void cm_fetch_heartbeat(cm_fetch_t *f, Chunkmill__Heartbeat *hb) {
  hb->processed = hb->records = hb->errors = 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++) {
    cm_job_info_t info;
    cm_ledger_info(cm_job_ledger(cm_jobs_at(f->jobs, i)), &info);
    hb->processed += info.done_chunks;
    hb->records += info.records_done;
    hb->errors += info.dead_chunks;
  }
}

void cm_fetch_shutdown(cm_fetch_t *f, bool forced) {
  /* Stop dispatching; persist the ledger. Leases in flight stay leased in
   * the file and become pending at the next start; the saver acks what the
   * mappers still deliver and the redelivery is deduplicated. */
  f->stopping = true;
  if (fetch_flush_now(f) == 0) {
    f->exit_when_flushed = false;
    cm_daemon_exit(f->d, 0);
    return;
  }
  if (!forced) {
    /* Keep trying (the flush timer) until the drain deadline. */
    f->exit_when_flushed = true;
    cm_log_warn("stopping: waiting for the ledger to become writable (%zu changes held): %s",
                cm_ledger_unflushed(f->ledger), f->health.err);
    return;
  }
  f->exit_when_flushed = false;
  cm_log_error("stopping with %zu ledger changes not written (they are redone at the next "
               "start): %s",
               cm_ledger_unflushed(f->ledger), f->health.err);
  fprintf(stderr, "fetcher: ledger cannot be written: %s\n", f->health.err);
  cm_daemon_exit(f->d, 1);
}

void cm_fetch_close(cm_fetch_t *f) {
  int unwritten = fetch_flush_now(f) != 0;
  if (unwritten) cm_log_error("ledger flush failed at close: %s", f->health.err);
  if (cm_jobs_reading(f->jobs)) {
    /* A source read (e.g. an HTTP page with retries) cannot be interrupted
     * and the loop would wait for it. The ledger is flushed and a read that
     * was not stored is simply read again at the next start: leave now. */
    cm_log_warn("stopping while a source read is in flight (it is redone at the next start)");
    /* Never 0 with state the ledger does not hold. */
    _exit(unwritten && cm_daemon_exit_code(f->d) == 0 ? 1 : cm_daemon_exit_code(f->d));
  }
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_close((uv_handle_t *)&f->flush, NULL);
  uv_close((uv_handle_t *)&f->progress, NULL);
  uv_close((uv_handle_t *)&f->due, NULL);
}

void cm_fetch_destroy(cm_fetch_t *f) {
  if (f == NULL) return;
  cm_versions_destroy(f->versions);
  cm_dispatch_times_destroy(f->lat);
  cm_peers_destroy(f->peers);
  cm_reject_destroy(f->rej);
  cm_members_destroy(f->mt);
  cm_buf_free(&f->buf);
  free(f->sched);
  free(f);
}

/* Registry hooks (job.h). */
static void jobs_wake(void *ud) {
  cm_fetch_t *f = ud;
  fetch_meter_jobs(f); /* a job submitted */
  fetch_check_complete(f);
  fetch_pump(f);
}
static void jobs_fatal(void *ud, const char *what) { fetch_fatal(ud, what); }
static int jobs_flush(void *ud) { return fetch_flush_now(ud); }
static int jobs_members(void *ud, cm_buf_t *out) {
  cm_fetch_t *f = ud;
  const cm_common_cfg_t *cc = cm_daemon_cfg(f->d);
  /* A saver not heard for three heartbeats is gone. */
  return cm_members_json(f->mt, cm_daemon_id(f->d), cm_daemon_instance(f->d), cc->version,
                         now_ms(f), 3 * cc->heartbeat_ms, out);
}

int cm_fetch_create(cm_fetch_t **out, cm_daemon_t *d, const cm_fetch_cfg_t *cfg,
                    cm_ledger_t *ledger, cm_jobs_t *jobs, cm_job_t *primary) {
  cm_fetch_t *f = calloc(1, sizeof(*f));
  const cm_common_cfg_t *cc = cm_daemon_cfg(d);
  cm_metrics_t *m = cm_daemon_metrics(d);
  cm_nats_t *n = cm_daemon_nats(d);
  uv_loop_t *loop = cm_daemon_loop(d);
  char subj[256];
  static const double lat_bounds[] = {0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01,
                                      0.015,  0.02,  0.03,  0.05,  0.075, 0.1,    0.15,
                                      0.2,    0.3,   0.5,   0.75,  1,     2.5,    5,
                                      10,     15,    20,    30,    60,    120,    300};
  int rc = 0;
  *out = NULL;
  if (f == NULL) return -ENOMEM;
  if (cm_versions_create(&f->versions, CM_VERSIONS_MAX, FETCH_VERSION_IDLE_MS) != 0) {
    free(f);
    return -ENOMEM;
  }
  if (cm_peers_create(&f->peers) != 0 || cm_members_create(&f->mt, f->versions) != 0) {
    cm_peers_destroy(f->peers);
    cm_versions_destroy(f->versions);
    free(f);
    return -ENOMEM;
  }
  if (cm_dispatch_times_create(&f->lat) != 0) {
    cm_peers_destroy(f->peers);
    cm_versions_destroy(f->versions);
    free(f);
    return -ENOMEM;
  }
  f->d = d;
  f->cfg = *cfg;
  f->ledger = ledger;
  f->jobs = jobs;
  f->primary = primary;
  cm_buf_init(&f->buf, FETCH_MAX_CHUNK_BYTES);
  f->start_ms = now_ms(f);
  f->last_progress_ms = f->start_ms;
  if (primary != NULL) {
    cm_job_info_t info;
    cm_ledger_info(cm_job_ledger(primary), &info);
    f->last_progress_records = info.records_done;
  }
  cm_ledger_health_init(&f->health, ledger);
  cm_jobs_bind(jobs, loop, f, jobs_wake, jobs_fatal, jobs_flush, jobs_members);
  /* Jitter only needs variety between runs; keep the conversion in range. */
  srand((unsigned)((uint64_t)(cm_wall_time() * 1000.0) & 0xffffffffu));

  f->m_dispatched = cm_metrics_counter(m, "chunkmill_fetcher_chunks_dispatched_total",
                                       "Chunks sent to mappers (every attempt).", NULL);
  f->m_redelivered = cm_metrics_counter(m, "chunkmill_fetcher_redeliveries_total",
                                        "Dispatches of a chunk after its first attempt.", NULL);
  f->m_acked = cm_metrics_counter(m, "chunkmill_fetcher_chunks_acked_total",
                                  "Chunks confirmed saved (first ack).", NULL);
  f->m_dup_acks = cm_metrics_counter(m, "chunkmill_fetcher_duplicate_acks_total",
                                     "Acks for chunks already done.", NULL);
  f->m_records = cm_metrics_counter(m, "chunkmill_fetcher_records_acked_total",
                                    "Records confirmed saved.", NULL);
  f->m_naks = cm_metrics_counter(m, "chunkmill_fetcher_naks_total",
                                 "Chunks a mapper failed to process.", NULL);
  f->m_handbacks = cm_metrics_counter(m, "chunkmill_fetcher_handbacks_total",
                                      "Chunks handed back unprocessed by draining mappers.", NULL);
  f->m_expired = cm_metrics_counter(m, "chunkmill_fetcher_lease_expired_total",
                                    "Leases that reached --ack-wait.", NULL);
  f->m_dead = cm_metrics_counter(m, "chunkmill_fetcher_dead_chunks_total",
                                 "Chunks that reached --max-deliver.", NULL);
  f->m_departed = cm_metrics_counter(m, "chunkmill_fetcher_mapper_departures_total",
                                     "Mappers declared gone after 3 missed heartbeats.", NULL);
  f->m_replaced = cm_metrics_counter(m, "chunkmill_fetcher_mapper_restarts_total",
                                     "Mapper ids taken over by a new instance (a restart); the "
                                     "predecessor's leases were released at once.",
                                     NULL);
  if (cm_reject_create(&f->rej, m) != 0) {
    free(f);
    return -ENOMEM;
  }
  f->m_fenced = cm_metrics_counter(m, "chunkmill_fetcher_fenced_total",
                                   "Naks or releases ignored because the lease had moved on.",
                                   NULL);
  f->m_lost = cm_metrics_counter(m, "chunkmill_fetcher_failover_redispatches_total",
                                 "Leases re-dispatched at once after a NATS failover because "
                                 "their mapper did not hold them (lost with the node).",
                                 NULL);
  f->m_latency = cm_metrics_histogram(
      m, "chunkmill_fetcher_chunk_latency_seconds",
      "Time from a chunk's first dispatch (this run) to its ack.", NULL, lat_bounds,
      sizeof(lat_bounds) / sizeof(lat_bounds[0]));
  f->m_complete = cm_metrics_gauge(m, "chunkmill_fetcher_job_complete", "1 once the job is done.",
                                   NULL);
  (void)cm_metrics_gauge_fn(m, "chunkmill_backlog_chunks",
                            "Chunks waiting for a mapper (not done, not leased).", NULL, g_backlog,
                            f);
  (void)cm_metrics_gauge_fn(
      m, "chunkmill_oldest_pending_age_seconds",
      "Seconds the oldest pending chunk has waited since it became pending (0 when none).",
      NULL, g_oldest, f);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_inflight_chunks", "Chunks leased right now.",
                            NULL, g_inflight, f);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_mappers", "Mappers known alive.", NULL,
                            g_members, f);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_done_chunks", "Chunks done in this job.", NULL,
                            g_done, f);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_total_chunks",
                            "Chunks in this job (NaN while unknown).", NULL, g_total, f);
  (void)cm_metrics_gauge_fn(m, "chunkmill_fetcher_records_done",
                            "Records confirmed saved in this job (all runs).", NULL,
                            g_records_done, f);

  fetch_meter_jobs(f);
  (void)cm_subject(f->chunk_prefix, sizeof(f->chunk_prefix), cc->prefix, "chunk");
  (void)cm_subject(f->dead_subject, sizeof(f->dead_subject), cc->prefix, "dead");
  (void)uv_timer_init(loop, &f->tick);
  (void)uv_timer_init(loop, &f->flush);
  (void)uv_timer_init(loop, &f->progress);
  (void)uv_timer_init(loop, &f->due);
  f->tick.data = f->flush.data = f->progress.data = f->due.data = f;
  (void)cm_subject(subj, sizeof(subj), cc->prefix, "credit");
  rc |= cm_nats_subscribe(n, subj, NULL, fetch_on_credit, f, NULL);
  (void)cm_subject(subj, sizeof(subj), cc->prefix, "ack");
  rc |= cm_nats_subscribe(n, subj, NULL, fetch_on_ack, f, NULL);
  (void)cm_subject(subj, sizeof(subj), cc->prefix, "nak");
  rc |= cm_nats_subscribe(n, subj, NULL, fetch_on_nak, f, NULL);
  (void)cm_subject(subj, sizeof(subj), cc->prefix, "heartbeat");
  rc |= cm_nats_subscribe(n, subj, NULL, fetch_on_heartbeat, f, NULL);
  if (rc != 0) {
    /* Subscriptions made so far still point at f, and messages may be on
     * their way: hand f out anyway (stopped) so it lives until the daemon
     * has closed NATS; the caller exits. */
    f->stopping = true;
    *out = f;
    return -EIO;
  }
  (void)uv_timer_start(&f->tick, fetch_tick, FETCH_TICK_MS, FETCH_TICK_MS);
  (void)uv_timer_start(&f->flush, fetch_flush, FETCH_FLUSH_MS, FETCH_FLUSH_MS);
  if (cfg->progress_ms > 0)
    (void)uv_timer_start(&f->progress, fetch_progress, (uint64_t)cfg->progress_ms,
                         (uint64_t)cfg->progress_ms);
  *out = f;
  /* A resumed job may already be complete. */
  fetch_check_complete(f);
  return 0;
}
