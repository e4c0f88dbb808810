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
 * (source, read-ahead, completion) is job.c's; the member table is
 * members.c's, which instance holds a member id and when a member is gone
 * identity.c's; /status, /members, the gauges and the progress lines
 * fetch_status.c's.
 *
 * Durability is the ledger's: leases and acks are written behind (flushed
 * every FLUSH_MS in one transaction); a lost unflushed lease or ack only
 * causes a redelivery, which the saver deduplicates. A chunk of a sequential
 * source is in the ledger before it is first sent. While the ledger cannot
 * be written nothing is sent or read (ledger_health.h). */
#include "fetch.h"
#include "fetch_status.h"
#include "identity.h"
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
#include "cm/reject.h"

/* A version with no mapper left is dropped from /status after this long
 * without events (its slot is then free for a new version). */
#define FETCH_VERSION_IDLE_MS (10 * 60 * 1000)
#define FETCH_FLUSH_MS 50
#define FETCH_TICK_MS 100
#define FETCH_MAX_CHUNK_BYTES (256u * 1024 * 1024)
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
  cm_identity_t *ids; /* who holds a member id; members gone */
  cm_fetch_status_t *st; /* /status, /members, gauges, progress lines */
  cm_versions_t *versions;
  cm_dispatch_times_t *lat; /* chunks dispatched and not yet done or dead */

  uv_timer_t tick, flush, progress, due;
  bool ever_connected;
  char chunk_prefix[256];
  char dead_subject[256];
  cm_buf_t buf;

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
  cm_counter_t *m_dispatched, *m_redelivered, *m_acked, *m_dup_acks, *m_records, *m_naks,
      *m_handbacks, *m_expired, *m_dead, *m_fenced, *m_lost;
  cm_histogram_t *m_latency;
  cm_gauge_t *m_complete;
};

static int64_t now_ms(cm_fetch_t *f) { return cm_daemon_now_ms(f->d); }

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

/* ---- ledger health ---- */

static int fetch_flush_now(cm_fetch_t *f) { return cm_ledger_health_flush(&f->health, now_ms(f)); }

bool cm_fetch_ready(cm_fetch_t *f, char *why, size_t whylen) {
  return cm_ledger_health_ready(&f->health, why, whylen);
}

/* ---- completion and progress ---- */

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
    if (!(f->cfg.once && j == f->primary)) cm_fetch_status_summary(f->st, j);
  }
  if (f->primary != NULL)
    cm_gauge_set(f->m_complete, state_complete(cm_job_state(f->primary)) ? 1 : 0);
  if (f->cfg.once && f->primary != NULL && state_complete(cm_job_state(f->primary))) {
    cm_job_info_t info;
    if (!flushed && fetch_flush_now(f) != 0) return;
    f->complete = true;
    cm_fetch_status_finished(f->st);
    cm_fetch_status_summary(f->st, f->primary);
    cm_ledger_info(cm_job_ledger(f->primary), &info);
    f->stopping = true;
    cm_daemon_exit(f->d, (info.dead_chunks > 0 && !f->cfg.allow_dead) ? 3 : 0);
  }
}

static void fetch_progress(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  if (!f->complete) cm_fetch_status_progress(f->st, now_ms(f));
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
  leased = cm_fetch_leased_all(f->jobs);
  while ((int64_t)leased < f->cfg.max_inflight) {
    member_t *m = cm_members_pick(f->mt);
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
    if (cm_member_dispatched(m, now))
      cm_log_info("mapper %s got its first chunk %.3f s after joining", m->id,
                  (double)(now - m->joined_ms) / 1000.0);
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
  m = cm_members_find(f->mt, c->mapper_id);
  if (m != NULL && !cm_identity_credit(f->ids, m, inst, c->draining, c->version, now)) goto out;
  if (m == NULL) {
    if (c->draining) goto out;
    m = cm_members_add(f->mt, c->mapper_id, now);
    if (m == NULL) {
      cm_reject(f->rej, now, "member_table_full", "member table full: ignoring mapper %.64s",
                c->mapper_id);
      goto out;
    }
    snprintf(m->instance, sizeof(m->instance), "%s", inst);
    cm_members_set_version(f->mt, m, c->version, now);
    cm_log_info("mapper %s (version %s, counted as %s) joined with %u free slots", m->id,
                m->version_name, cm_versions_name(f->versions, m->version), c->free);
  } else if (c->version != NULL && c->version[0]) {
    /* Restarted under the same id with another version (StatefulSet). */
    cm_members_set_version(f->mt, m, c->version, now);
  }
  if (!cm_member_credit(m, c->subject, c->free, c->slots, c->received, c->draining))
    cm_reject(f->rej, now, "credit_over_slots",
              "credit of %u from mapper %.64s, which declared %u slots: capped", c->free, m->id,
              m->slots);
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
  if (hb != NULL && hb->role != NULL && hb->id != NULL && strcmp(hb->role, "fetcher") != 0)
    cm_identity_peer(f->ids, hb->role, hb->id, hb->nats_reconnects, hb->nats_server, now);
  if (hb != NULL && hb->role != NULL && strcmp(hb->role, "saver") == 0 && hb->id != NULL)
    cm_members_saver_seen(f->mt, hb->id, hb->instance, hb->version, hb->n_inflight, now);
  if (hb != NULL && hb->role != NULL && strcmp(hb->role, "mapper") == 0 && hb->id != NULL) {
    bool first;
    /* Members are created by credit (it names the subject); a heartbeat of
     * an unknown id is followed by its credit. */
    member_t *m = cm_identity_heartbeat(f->ids, cm_members_find(f->mt, hb->id),
                                        hb->instance != NULL ? hb->instance : "", hb->draining,
                                        hb->version, hb->period_ms, now, &first);
    if (m != NULL) {
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
  member_t *m = holder != NULL ? cm_members_find(c->f->mt, holder) : NULL;
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

static void fetch_tick(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  int64_t now = now_ms(f);
  release_ctx_t c = {f, NULL, now, "lease expired (ack wait)", false};
  int n = 0;
  if (f->stopping) return;
  cm_versions_sweep(f->versions, now);
  /* The member table only ages while we can hear the members: an outage
   * of our own connection must not look like every mapper dying. */
  if (cm_nats_connected(cm_daemon_nats(f->d))) {
    cm_identity_tick(f->ids, now);
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

/* ---- lifecycle ---- */

int cm_fetch_status(cm_fetch_t *f, cm_buf_t *out) {
  return cm_fetch_status_json(f->st, now_ms(f), out);
}

void cm_fetch_on_nats(cm_fetch_t *f, cm_nats_event_t ev) {
  if (ev == CM_NATS_CONNECTED) {
    /* Chunks sent just before a disconnect may never have arrived: forget
     * in-transit counts and let the mappers' next credit speak. */
    cm_identity_connected(f->ids, now_ms(f));
    /* A reconnect of ours (not the first connect) may have lost chunks we
     * had just sent and acks on their way to us. */
    if (f->ever_connected) cm_identity_failover(f->ids, now_ms(f));
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
  cm_fetch_status_destroy(f->st);
  cm_identity_destroy(f->ids);
  cm_reject_destroy(f->rej);
  cm_members_destroy(f->mt);
  cm_buf_free(&f->buf);
  free(f->sched);
  free(f);
}

/* Registry hooks (job.h). */
static void jobs_wake(void *ud) {
  cm_fetch_t *f = ud;
  cm_fetch_status_meter_jobs(f->st); /* a job submitted */
  fetch_check_complete(f);
  fetch_pump(f);
}
static void jobs_fatal(void *ud, const char *what) { fetch_fatal(ud, what); }
static int jobs_flush(void *ud) { return fetch_flush_now(ud); }
static int jobs_members(void *ud, cm_buf_t *out) {
  cm_fetch_t *f = ud;
  const cm_common_cfg_t *cc = cm_daemon_cfg(f->d);
  /* A saver not heard for three heartbeats is gone. */
  return cm_fetch_status_members_json(f->st, cm_daemon_id(f->d), cm_daemon_instance(f->d),
                                      cc->version, now_ms(f), 3 * cc->heartbeat_ms, out);
}

/* Identity hooks (identity.h): a replaced or departed instance's leases. */
static int ids_release_all(void *ud, const char *id, int64_t now, const char *reason) {
  return release_held(ud, id, now, reason);
}

static void count_held(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  (void)index;
  (void)attempt;
  (void)holder;
  (*(int *)ud)++;
}

static int ids_held(void *ud, const char *id) {
  cm_fetch_t *f = ud;
  int held = 0;
  for (size_t i = 0; i < cm_jobs_count(f->jobs); i++)
    (void)cm_ledger_each_held(cm_job_ledger(cm_jobs_at(f->jobs, i)), id, count_held, &held);
  return held;
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
  if (cm_members_create(&f->mt, f->versions) != 0 || cm_dispatch_times_create(&f->lat) != 0) {
    cm_fetch_destroy(f);
    return -ENOMEM;
  }
  f->d = d;
  f->cfg = *cfg;
  f->ledger = ledger;
  f->jobs = jobs;
  f->primary = primary;
  cm_buf_init(&f->buf, FETCH_MAX_CHUNK_BYTES);
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
  if (cm_reject_create(&f->rej, m) != 0) {
    cm_fetch_destroy(f);
    return -ENOMEM;
  }
  {
    cm_identity_hooks_t hooks = {f, ids_release_all, ids_held};
    if (cm_identity_create(&f->ids, f->mt, m, f->rej, cc->heartbeat_ms, &hooks) != 0) {
      cm_fetch_destroy(f);
      return -ENOMEM;
    }
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
  {
    cm_fetch_status_cfg_t sc = {m, jobs, primary, f->mt, f->versions, f->m_latency};
    if (cm_fetch_status_create(&f->st, &sc, now_ms(f)) != 0) {
      cm_fetch_destroy(f);
      return -ENOMEM;
    }
  }
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
