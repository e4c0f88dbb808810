/* mapper - takes leased chunks from the fetcher, maps them on the thread
 * pool, and hands the results to a saver by request/reply.
 *
 * Flow control is credit: the mapper has `slots` = workers + prefetch +
 * save-window places for chunks. A slot is taken when a chunk arrives and
 * given back only when a saver has confirmed the mapped chunk (or it was
 * NAKed / handed back). The credit it announces on P.credit is the smaller
 * of two windows: chunks not mapped yet (at most workers + prefetch, so
 * queues stay short and the tail of a job balances across mappers) and
 * chunks held at all (at most all slots, so a slow saver slows the whole
 * pipeline instead of filling memory). A chunk waiting for its saver's
 * commit no longer blocks the next one from being mapped: the save round
 * trip (an fsync) overlaps with mapping.
 *
 * The loop thread never maps: uv_queue_work runs the transform on the libuv
 * thread pool (UV_THREADPOOL_SIZE = --concurrency), leaving the loop free for
 * NATS, probes and heartbeats. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/chunk.h"
#include "cm/daemon.h"
#include "app9.h"
#include "cm/log.h"
#include "cm/ratelimit.h"
#include "cm/peers.h"
#include "exec.h"
#include "transform.h"

#define MAPPER_MAX_SLOTS 1024
#define MAPPER_MAX_CHUNK (64u * 1024 * 1024)
/* "No responders" for this long after the first one is a failover (a saver
 * reconnecting, its subscription travelling over the cluster's routes):
 * retried quickly and quietly. Longer, it is an outage worth a warning. */
#define MAPPER_NO_RESPONDERS_GRACE_MS 5000

typedef enum { SLOT_FREE, SLOT_QUEUED, SLOT_WORKING, SLOT_SAVING, SLOT_RETRY } slot_state_t;

typedef struct mapper_s mapper_t;

typedef struct slot_s {
  mapper_t *m;
  int idx;
  slot_state_t state;
  natsMsg *in; /* the received chunk, kept until the slot is freed */
  cm_chunk_hdr_t hdr;
  uint64_t arrival; /* FIFO order among queued slots */
  cm_buf_t out;
  cm_transform_stats_t st;
  int trc;
  char err[256];
  uv_work_t work;
  uv_timer_t timer; /* save timeout, then retry backoff */
  uint64_t save_seq;
  int save_tries;
  double t_start;
  double no_resp_since; /* first "no responders" of the current streak, 0: none */
  bool abandon; /* handed back while the transform was still running */
  bool stuck;   /* its transform passed --chunk-timeout and has not returned */
} slot_t;

struct mapper_s {
  uv_idle_t credit_idle; /* mapper_credit_soon */
  cm_common_cfg_t cfg;
  const char *transform_spec;
  int64_t concurrency;
  int64_t prefetch;
  int64_t save_window;
  int64_t save_timeout_ms;
  int64_t chunk_timeout_ms; /* 0: none */
  cm_transform_opts_t topts; /* exec:/plugin: settings */
  cm_transform_t *t;
  cm_daemon_t *d;

  slot_t slots[MAPPER_MAX_SLOTS];
  int nslots;
  int used, working;
  uint64_t arrivals;
  uint64_t received;
  uint64_t save_seq;

  char chunk_subject[256];
  char credit_subject[256];
  char save_subject[256];
  char nak_subject[256];
  char fetcher_id[176]; /* "<id>/<instance>" of the last fetcher heard on P.heartbeat */
  char *inbox; /* "<inbox>" ; replies come to "<inbox>.<slot>.<seq>" */

  bool draining;
  bool forced;
  bool ever_connected;
  cm_peers_t *peers; /* reconnect counts of the savers and fetchers heard */
  int stuck;              /* slots whose transform passed --chunk-timeout */
  int drain_handed_back;  /* draining: chunks no saver confirmed, handed back */

  cm_counter_t *m_no_resp;
  cm_counter_t *m_ok, *m_err, *m_records, *m_dead, *m_retries, *m_handbacks, *m_timeouts;
  cm_gauge_t *m_busy, *m_workers, *m_slots_used, *m_stuck;
  cm_histogram_t *m_process_s, *m_cycle_s;
  Chunkmill__Lease leases[MAPPER_MAX_SLOTS];
  Chunkmill__Lease *lease_ptrs[MAPPER_MAX_SLOTS];
};

/* Chunks we can take now: min(unmapped window, all slots) minus use. */
static int mapper_free(const mapper_t *m) {
  int unmapped = 0, free_all = m->nslots - m->used, free_map;
  for (int i = 0; i < m->nslots; i++)
    unmapped += m->slots[i].state == SLOT_QUEUED || m->slots[i].state == SLOT_WORKING;
  free_map = (int)(m->concurrency + m->prefetch) - unmapped;
  if (free_map < 0) free_map = 0;
  return free_map < free_all ? free_map : free_all;
}

static void mapper_send_credit(mapper_t *m) {
  Chunkmill__Credit c = CHUNKMILL__CREDIT__INIT;
  (void)uv_idle_stop(&m->credit_idle); /* this one carries the latest state */
  if (!cm_nats_connected(cm_daemon_nats(m->d))) return;
  c.mapper_id = (char *)cm_daemon_id(m->d);
  c.subject = m->chunk_subject;
  c.version = (char *)m->cfg.version;
  c.free = m->draining ? 0 : (uint32_t)mapper_free(m);
  c.received = m->received;
  c.draining = m->draining;
  c.instance = (char *)cm_daemon_instance(m->d);
  c.slots = (uint32_t)m->nslots;
  (void)cm_daemon_publish_proto(m->d, m->credit_subject, &c.base);
}

/* A credit is absolute state (free slots, chunks received), so the changes
 * of one loop iteration (a burst of saver replies, of mapped chunks) can go
 * out as one credit holding the latest state: sent at the start of the next
 * iteration, before the loop polls (an active idle handle keeps the poll
 * from blocking). A third of the messages nats-server moves per chunk were
 * credits, two per chunk. */
static void mapper_credit_idle(uv_idle_t *h) { mapper_send_credit(h->data); }

static void mapper_credit_soon(mapper_t *m) {
  (void)uv_idle_start(&m->credit_idle, mapper_credit_idle);
}

/* Stuck transforms (past --chunk-timeout) were NAKed already and cannot be
 * interrupted: they do not hold up the exit. */
static void mapper_maybe_exit(mapper_t *m) {
  if (m->draining && m->used - m->stuck == 0 && m->working - m->stuck == 0) {
    if (m->forced)
      ; /* mapper_shutdown(forced) said what it handed back */
    else if (m->drain_handed_back > 0)
      cm_log_warn("mapper stopped: %d mapped chunks were handed back to the fetcher because no "
                  "saver confirmed them; no chunk in hand%s",
                  m->drain_handed_back,
                  cm_nats_connected(cm_daemon_nats(m->d))
                      ? ""
                      : " (NATS is not connected: the hand-backs may not arrive, and the "
                        "fetcher then re-dispatches those chunks after --ack-wait)");
    else
      cm_log_info("mapper drained: no chunk in hand");
    if (m->stuck > 0)
      cm_log_warn("%d transforms past --chunk-timeout are still running; their chunks were "
                  "NAKed",
                  m->stuck);
    cm_daemon_exit(m->d, 0);
  }
}

static void slot_free(slot_t *s) {
  mapper_t *m = s->m;
  if (s->stuck) {
    s->stuck = false;
    m->stuck--;
    cm_gauge_set(m->m_stuck, m->stuck);
  }
  natsMsg_Destroy(s->in);
  s->in = NULL;
  cm_buf_free(&s->out);
  (void)uv_timer_stop(&s->timer);
  s->state = SLOT_FREE;
  s->abandon = false;
  m->used--;
  cm_gauge_set(m->m_slots_used, m->used);
  mapper_credit_soon(m);
  mapper_maybe_exit(m);
}

static void mapper_nak(mapper_t *m, slot_t *s, const char *reason, bool handback) {
  Chunkmill__Nak n = CHUNKMILL__NAK__INIT;
  n.job = s->hdr.job;
  n.index = s->hdr.index;
  n.attempt = s->hdr.attempt;
  n.lease = s->hdr.lease;
  n.redo = s->hdr.redo;
  n.mapper_id = (char *)cm_daemon_id(m->d);
  n.reason = (char *)reason;
  n.handback = handback;
  if (handback) cm_counter_inc(m->m_handbacks);
  if (cm_daemon_publish_proto(m->d, m->nak_subject, &n.base) != 0)
    cm_log_warn("could not send nak for chunk %llu: its lease will expire instead",
                (unsigned long long)s->hdr.index);
}

static void mapper_start_work(mapper_t *m);

/* ---- saving ---- */

/* How long a save may wait for its reply: --save-timeout, but at most
 * MAPPER_DRAIN_SAVE_MS while draining (a saver that has not answered by
 * then is most likely gone with the rest of the deployment). */
#define MAPPER_DRAIN_SAVE_MS 2000
static int64_t mapper_save_wait(const mapper_t *m) {
  return m->draining && m->save_timeout_ms > MAPPER_DRAIN_SAVE_MS ? MAPPER_DRAIN_SAVE_MS
                                                                    : m->save_timeout_ms;
}

static void slot_send_save(slot_t *s);

/* Draining, and no saver confirmed a mapped chunk (no responders, a
 * timeout, not connected): waiting for the drain deadline would not help.
 * Hand it back (a saver that did commit it acks the redelivery as a
 * duplicate) and let the mapper stop. */
static void slot_drain_handback(slot_t *s, const char *why) {
  mapper_t *m = s->m;
  if (m->drain_handed_back++ == 0)
    cm_log_warn("draining: no saver confirmed chunk %llu (%s): handing back every chunk no saver "
                "confirms, without waiting for --drain-timeout",
                (unsigned long long)s->hdr.index, why);
  mapper_nak(m, s, "mapper stopping: no saver confirmed the mapped chunk", true);
  slot_free(s);
}

static void slot_save_timeout(uv_timer_t *t) {
  slot_t *s = t->data;
  mapper_t *m = s->m;
  if (m->draining && (s->state == SLOT_SAVING || s->state == SLOT_RETRY)) {
    slot_drain_handback(s, s->save_tries > 0 ? "no reply" : "not sent");
    return;
  }
  if (s->state == SLOT_SAVING) {
    /* No reply in time: keep the result and try again after a backoff. */
    int64_t backoff = 100LL << (s->save_tries < 5 ? s->save_tries : 5);
    cm_counter_inc(m->m_retries);
    if (s->save_tries == 1 || s->save_tries % 10 == 0)
      cm_log_warn("chunk %llu not saved yet (try %d): sending it again in %lld ms",
                  (unsigned long long)s->hdr.index, s->save_tries, (long long)backoff);
    s->state = SLOT_RETRY;
    (void)uv_timer_start(&s->timer, slot_save_timeout, (uint64_t)backoff, 0);
  } else if (s->state == SLOT_RETRY) {
    slot_send_save(s);
  }
}

static void slot_send_save(slot_t *s) {
  mapper_t *m = s->m;
  char reply[300];
  int rc;
  s->save_seq = ++m->save_seq;
  s->save_tries++;
  snprintf(reply, sizeof(reply), "%s.%d.%llu", m->inbox, s->idx, (unsigned long long)s->save_seq);
  s->state = SLOT_SAVING;
  rc = cm_nats_publish(cm_daemon_nats(m->d), m->save_subject, reply, s->out.data, s->out.len);
  if (rc == -EMSGSIZE) {
    /* Retrying cannot help: say why and let the fetcher's max-deliver
     * decide, instead of keeping the lease alive forever. */
    char reason[200];
    snprintf(reason, sizeof(reason),
             "mapped chunk of %zu bytes exceeds the NATS server's max_payload", s->out.len);
    cm_counter_inc(m->m_err);
    cm_log_error("chunk %llu: %s", (unsigned long long)s->hdr.index, reason);
    mapper_nak(m, s, reason, false);
    slot_free(s);
    return;
  }
  if (rc != 0) {
    /* Disconnected: retry soon (the timer path does the backoff). */
    (void)uv_timer_start(&s->timer, slot_save_timeout, 0, 0);
    return;
  }
  (void)uv_timer_start(&s->timer, slot_save_timeout, (uint64_t)mapper_save_wait(m), 0);
}

/* A failover (ours or a saver's) may have lost save requests or their
 * replies: send every unconfirmed result again now instead of after
 * --save-timeout. A saver that did commit it answers again (it
 * deduplicates); the reply to the older request is recognised as stale. */
static void mapper_resend_saves(mapper_t *m, const char *why) {
  int n = 0;
  for (int i = 0; i < m->nslots; i++) {
    slot_t *s = &m->slots[i];
    if (s->state != SLOT_SAVING && s->state != SLOT_RETRY) continue;
    (void)uv_timer_stop(&s->timer);
    slot_send_save(s);
    n++;
  }
  if (n > 0) cm_log_info("%s: sent %d unconfirmed results to the savers again", why, n);
}

static void mapper_on_reply(void *ud, natsMsg *msg) {
  mapper_t *m = ud;
  const char *subj = natsMsg_GetSubject(msg);
  size_t ilen = strlen(m->inbox);
  int idx = -1;
  unsigned long long seq = 0;
  slot_t *s;
  if (strncmp(subj, m->inbox, ilen) != 0 || sscanf(subj + ilen, ".%d.%llu", &idx, &seq) != 2 ||
      idx < 0 || idx >= m->nslots)
    goto out;
  s = &m->slots[idx];
  if (s->state != SLOT_SAVING || s->save_seq != seq) goto out; /* stale reply */
  (void)uv_timer_stop(&s->timer);
  if (natsMsg_IsNoResponders(msg)) {
    double now = cm_wall_time();
    cm_counter_inc(m->m_no_resp);
    if (s->no_resp_since == 0) s->no_resp_since = now;
    if ((now - s->no_resp_since) * 1000.0 < MAPPER_NO_RESPONDERS_GRACE_MS) {
      /* No saver subscribed where we are, right now: after a failover the
       * savers' subscription is still on its way over the routes. Not a
       * failure: ask again soon (100-200 ms), without a warning. */
      s->state = SLOT_RETRY;
      (void)uv_timer_start(&s->timer, slot_save_timeout, 100 + (uint64_t)(rand() % 100), 0);
      goto out;
    }
    s->state = SLOT_SAVING; /* let the timeout path schedule the retry now */
    slot_save_timeout(&s->timer);
    goto out;
  }
  s->no_resp_since = 0;
  {
    const char *body = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    if (len > 0 && memmem(body, (size_t)len, "\"ok\":true", 9) != NULL) {
      double dt = cm_wall_time() - s->t_start;
      cm_histogram_observe(m->m_cycle_s, dt);
      cm_counter_inc(m->m_ok);
      cm_counter_add(m->m_records, s->st.records);
      cm_counter_add(m->m_dead, s->st.dead);
      slot_free(s);
    } else if (len > 0 && memmem(body, (size_t)len, "\"retry\":false", 13) != NULL) {
      char reason[300];
      snprintf(reason, sizeof(reason), "saver rejected the chunk: %.*s", len > 200 ? 200 : len,
               body);
      cm_counter_inc(m->m_err);
      mapper_nak(m, s, reason, false);
      slot_free(s);
    } else {
      /* "retry":true: the saver could not store it now (e.g. its disk is
       * full). Keep the result and send it again after a backoff: the
       * chunk is not at fault, so this costs no delivery. One line per 5 s
       * for all chunks: a full disk answers every one of them. */
      static cm_ratelimit_t rl = CM_RATELIMIT_INIT(5000);
      uint64_t more = 0;
      if (cm_ratelimit_allow(&rl, cm_daemon_now_ms(m->d), &more))
        cm_log_warn("saver could not save chunk %llu now (try %d; %llu such replies not logged): "
                    "%.*s",
                    (unsigned long long)s->hdr.index, s->save_tries, (unsigned long long)more,
                    len > 300 ? 300 : len, body);
      s->state = SLOT_SAVING;
      slot_save_timeout(&s->timer);
    }
  }
out:
  natsMsg_Destroy(msg);
}

/* ---- mapping on the thread pool ---- */

static void slot_work(uv_work_t *w) {
  slot_t *s = w->data;
  const char *data = natsMsg_GetData(s->in);
  size_t len = (size_t)natsMsg_GetDataLength(s->in);
  memset(&s->st, 0, sizeof(s->st));
  s->err[0] = '\0';
  s->trc = cm_transform_chunk(s->m->t, data, len, &s->out, &s->st, s->err, sizeof(s->err));
}

static void slot_work_done(uv_work_t *w, int status) {
  slot_t *s = w->data;
  mapper_t *m = s->m;
  (void)uv_timer_stop(&s->timer); /* the --chunk-timeout deadline */
  m->working--;
  cm_gauge_set(m->m_busy, m->working);
  cm_histogram_observe(m->m_process_s, cm_wall_time() - s->t_start);
  if (s->stuck)
    cm_log_warn("chunk %llu: the transform returned after %.1f s, past --chunk-timeout: its "
                "result is dropped (the chunk was NAKed)",
                (unsigned long long)s->hdr.index, cm_wall_time() - s->t_start);
  if (s->abandon || status == UV_ECANCELED) {
    /* Already handed back (forced shutdown): drop the result. */
    slot_free(s);
  } else if (s->trc != 0) {
    cm_counter_inc(m->m_err);
    cm_log_warn("transform failed on chunk %llu attempt %u: %s", (unsigned long long)s->hdr.index,
                s->hdr.attempt, s->err);
    mapper_nak(m, s, s->err, false);
    slot_free(s);
  } else {
    slot_send_save(s);
    /* Mapped: its place in the unmapped window is free again. */
    mapper_credit_soon(m);
  }
  mapper_start_work(m);
}

/* --chunk-timeout passed while the transform runs. A thread-pool thread
 * cannot be interrupted, so the chunk is NAKed (it counts against
 * --max-deliver: the input made it hang), no longer reported in flight, and
 * its worker is counted stuck: the slot and the thread stay taken until the
 * transform returns, if ever. /healthz turns 503 once every worker is. */
static void slot_chunk_deadline(uv_timer_t *t) {
  slot_t *s = t->data;
  mapper_t *m = s->m;
  char reason[200];
  if (s->state != SLOT_WORKING || s->abandon || s->stuck) return;
  s->stuck = true;
  s->abandon = true;
  m->stuck++;
  cm_counter_inc(m->m_timeouts);
  cm_gauge_set(m->m_stuck, m->stuck);
  snprintf(reason, sizeof(reason), "transform %s did not finish within --chunk-timeout (%lld ms)",
           m->transform_spec, (long long)m->chunk_timeout_ms);
  cm_log_error("chunk %llu attempt %u: %s; NAKed; %d of %lld workers stuck",
               (unsigned long long)s->hdr.index, s->hdr.attempt, reason, m->stuck,
               (long long)m->concurrency);
  cm_counter_inc(m->m_err);
  mapper_nak(m, s, reason, false);
  mapper_send_credit(m);
}

static void mapper_start_work(mapper_t *m) {
  while (m->working < m->concurrency && !m->forced) {
    slot_t *next = NULL;
    for (int i = 0; i < m->nslots; i++) {
      slot_t *s = &m->slots[i];
      if (s->state == SLOT_QUEUED && (next == NULL || s->arrival < next->arrival)) next = s;
    }
    if (next == NULL) return;
    next->state = SLOT_WORKING;
    next->work.data = next;
    if (uv_queue_work(cm_daemon_loop(m->d), &next->work, slot_work, slot_work_done) != 0) {
      next->state = SLOT_QUEUED;
      return;
    }
    m->working++;
    cm_gauge_set(m->m_busy, m->working);
    if (m->chunk_timeout_ms > 0)
      (void)uv_timer_start(&next->timer, slot_chunk_deadline, (uint64_t)m->chunk_timeout_ms, 0);
  }
}

static void mapper_on_chunk(void *ud, natsMsg *msg) {
  mapper_t *m = ud;
  cm_chunk_view_t v;
  char err[200];
  slot_t *s = NULL;
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);

  m->received++;
  /* Header only: the worker's transform checks the whole chunk (and NAKs a
   * malformed one), so the loop thread does not scan ~55 KB twice. */
  if (cm_chunk_peek_header(data, (size_t)len, &v, err, sizeof(err)) != 0) {
    /* Without a header there is no lease to NAK; the lease expires. */
    cm_log_error("dropping a malformed chunk message (%d bytes): %s", len, err);
    natsMsg_Destroy(msg);
    return;
  }
  for (int i = 0; i < m->nslots; i++)
    if (m->slots[i].state == SLOT_FREE) {
      s = &m->slots[i];
      break;
    }
  if (s == NULL || m->draining) {
    /* Over-delivery (should not happen with credit) or draining: give it
     * straight back so the fetcher re-dispatches it at once. */
    slot_t tmp = {.hdr = v.hdr};
    mapper_nak(m, &tmp, m->draining ? "mapper draining" : "mapper has no free slot", true);
    natsMsg_Destroy(msg);
    return;
  }
  s->in = msg;
  s->hdr = v.hdr;
  s->state = SLOT_QUEUED;
  s->arrival = ++m->arrivals;
  s->save_tries = 0;
  s->no_resp_since = 0;
  s->abandon = false;
  s->t_start = cm_wall_time();
  cm_buf_init(&s->out, MAPPER_MAX_CHUNK);
  m->used++;
  cm_gauge_set(m->m_slots_used, m->used);
  mapper_start_work(m);
}

/* A fetcher we have not heard before (first start, or a restart), or one
 * that has just reconnected to NATS, may have missed our last credit: send
 * it now rather than at our next heartbeat. A saver that has just
 * reconnected may have lost our requests or its replies: resend them. */
static void mapper_on_heartbeat(void *ud, natsMsg *msg) {
  mapper_t *m = ud;
  Chunkmill__Heartbeat *hb = chunkmill__heartbeat__unpack(
      NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));
  bool reconnected = false;
  char who[sizeof(m->fetcher_id)];
  if (hb != NULL && hb->role != NULL && hb->id != NULL && strcmp(hb->role, "mapper") != 0)
    reconnected = cm_peers_saw(m->peers, hb->id, hb->nats_reconnects,
                               (int64_t)(cm_wall_time() * 1000.0));
  if (hb != NULL && hb->role != NULL && strcmp(hb->role, "fetcher") == 0 && hb->id != NULL &&
      /* id and instance: a fetcher restarted under the same --id is new too */
      snprintf(who, sizeof(who), "%s/%s", hb->id, hb->instance ? hb->instance : "") > 0 &&
      (reconnected || strcmp(who, m->fetcher_id) != 0)) {
    snprintf(m->fetcher_id, sizeof(m->fetcher_id), "%s", who);
    mapper_send_credit(m);
    /* The fetcher gives work only to members it has heard a heartbeat
     * from: announce ourselves now, not a period later. */
    cm_daemon_heartbeat_now(m->d);
  }
  if (reconnected && strcmp(hb->role, "saver") == 0) mapper_resend_saves(m, "a saver reconnected");
  chunkmill__heartbeat__free_unpacked(hb, NULL);
  natsMsg_Destroy(msg);
}

/* ---- daemon hooks ---- */

static void mapper_on_nats(void *ud, cm_nats_event_t ev) {
  mapper_t *m = ud;
  if (ev != CM_NATS_CONNECTED) return;
  mapper_send_credit(m);
  /* Our subscriptions went out first on the new connection, so the replies
   * to these requests find their way back. */
  if (m->ever_connected) mapper_resend_saves(m, "reconnected to NATS");
  else
    cm_log_info("mapper ready: connected to NATS, taking chunks on %s", m->chunk_subject);
  m->ever_connected = true;
}

static void mapper_heartbeat(void *ud, Chunkmill__Heartbeat *hb) {
  mapper_t *m = ud;
  size_t n = 0;
  for (int i = 0; i < m->nslots; i++) {
    slot_t *s = &m->slots[i];
    /* Abandoned (past --chunk-timeout, or handed back): not ours to keep. */
    if (s->state == SLOT_FREE || s->abandon) continue;
    chunkmill__lease__init(&m->leases[n]);
    m->leases[n].job = s->hdr.job;
    m->leases[n].index = s->hdr.index;
    m->leases[n].attempt = s->hdr.attempt;
    m->leases[n].lease = s->hdr.lease;
    m->leases[n].redo = s->hdr.redo;
    m->lease_ptrs[n] = &m->leases[n];
    n++;
  }
  hb->n_inflight = n;
  hb->inflight = m->lease_ptrs;
  hb->processed = cm_counter_get(m->m_ok);
  hb->records = cm_counter_get(m->m_records);
  hb->errors = cm_counter_get(m->m_err);
  /* The periodic credit heals a lost credit message. */
  mapper_send_credit(m);
}

static int mapper_status(void *ud, cm_buf_t *out) {
  mapper_t *m = ud;
  int rc = cm_buf_puts(out, ",\"transform\":");
  rc |= cm_buf_append_json_str(out, m->transform_spec, strlen(m->transform_spec));
  rc |= cm_buf_printf(out,
                      ",\"workers\":%lld,\"slots\":%d,\"slots_used\":%d,\"busy_workers\":%d,"
                      "\"received\":%llu,\"chunks_ok\":%llu,\"chunks_failed\":%llu,"
                      "\"records\":%llu,\"dead_records\":%llu,\"stuck_workers\":%d",
                      (long long)m->concurrency, m->nslots, m->used, m->working,
                      (unsigned long long)m->received, (unsigned long long)cm_counter_get(m->m_ok),
                      (unsigned long long)cm_counter_get(m->m_err),
                      (unsigned long long)cm_counter_get(m->m_records),
                      (unsigned long long)cm_counter_get(m->m_dead), m->stuck);
  return rc;
}

/* /healthz: 503 once every worker is stuck past --chunk-timeout (nothing
 * can be mapped any more; a restart is the only cure). */
static bool mapper_alive(void *ud, char *why, size_t whylen) {
  mapper_t *m = ud;
  if (m->stuck < m->concurrency) return true;
  snprintf(why, whylen, "all %lld workers stuck in a transform past --chunk-timeout",
           (long long)m->concurrency);
  return false;
}

static void mapper_shutdown(void *ud, bool forced) {
  mapper_t *m = ud;
  if (!m->draining) {
    m->draining = true;
    mapper_send_credit(m); /* free = 0, draining: the fetcher stops sending */
    /* Chunks not started yet go straight back so another mapper takes them
     * now instead of after our drain. */
    for (int i = 0; i < m->nslots; i++) {
      slot_t *s = &m->slots[i];
      if (s->state == SLOT_QUEUED) {
        mapper_nak(m, s, "mapper draining", true);
        slot_free(s);
      } else if (s->state == SLOT_RETRY) {
        /* A saver failed it already: do not wait for another try. */
        slot_drain_handback(s, "its save had failed");
      } else if (s->state == SLOT_SAVING) {
        /* Still waiting for a reply: from now on at most the drain's
         * save wait. */
        (void)uv_timer_start(&s->timer, slot_save_timeout, (uint64_t)mapper_save_wait(m), 0);
      }
    }
  }
  if (forced) {
    int back = 0;
    m->forced = true;
    for (int i = 0; i < m->nslots; i++) {
      slot_t *s = &m->slots[i];
      if (s->state == SLOT_FREE || s->abandon) continue;
      back++;
      mapper_nak(m, s, "mapper stopped before finishing", true);
      if (s->state == SLOT_WORKING)
        s->abandon = true; /* freed when the thread-pool work returns */
      else
        slot_free(s);
    }
    /* Everything is handed back: do not wait for running transforms. */
    if (back > 0)
      cm_log_warn("stopping now: %d unfinished chunks handed back to the fetcher", back);
    else
      cm_log_info("stopping now: no chunk in hand");
    cm_daemon_exit(m->d, 0);
    return;
  }
  mapper_maybe_exit(m);
}

static void mapper_close(void *ud) {
  mapper_t *m = ud;
  if (m->working > 0) {
    /* Forced stop (second signal or drain deadline): every chunk was handed
     * back and NATS is drained, but thread-pool work cannot be interrupted
     * and the loop would wait for it. Nothing is left to lose: leave now. */
    cm_log_warn("stopping with %d transforms still running; their chunks were handed back",
                m->working);
    _exit(cm_daemon_exit_code(m->d));
  }
  for (int i = 0; i < m->nslots; i++) {
    slot_t *s = &m->slots[i];
    if (s->state != SLOT_FREE && s->state != SLOT_WORKING) {
      natsMsg_Destroy(s->in);
      s->in = NULL;
      cm_buf_free(&s->out);
    }
    uv_close((uv_handle_t *)&s->timer, NULL);
  }
  uv_close((uv_handle_t *)&m->credit_idle, NULL);
}

static void sanitize_token(char *s) {
  /* The id becomes a subject token: no dots, wildcards or spaces. */
  for (; *s; s++)
    if (*s == '.' || *s == '*' || *s == '>' || *s == ' ' || *s == '\t') *s = '-';
}

int main(int argc, char **argv) {
  static mapper_t m;
  static char idbuf[128];
  static const char *const transforms[] = {"identity", "fullname", "burn:", "sleep:", "fail:",
                                           "exec:",    "plugin:",  NULL};
  static const char *const framings[] = {"chunk", "tagged", "lines", NULL};
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  char defconc[24];
  char threads[24];
  cm_opt_t own[] = {
      {"transform", CM_OPT_STRING, "fullname", 0, 0, transforms, NULL,
       "identity | fullname | burn:N | sleep:MS | exec:COMMAND | plugin:PATH.so | fail:I,J "
       "(chunks I and J fail, for tests)", &m.transform_spec},
      {"transform-arg", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "setting for exec:/plugin: transforms: exec children get it in their environment under "
       "the same name, a plugin's init as its argument", &m.topts.arg},
      {"exec-timeout", CM_OPT_DURATION, "30s", 100, 86400000, NULL, NULL,
       "exec: time a child may take for one chunk before it is killed and the chunk NAKed",
       &m.topts.exec_timeout_ms},
      {"exec-framing", CM_OPT_STRING, "chunk", 0, 0, framings, NULL,
       "exec: chunk = a child per chunk, answers read until EOF; tagged = one long-lived child "
       "per worker, every line both ways starts with the record's sequence number and a TAB; "
       "lines = long-lived, answers checked by count and --exec-settle only",
       &m.topts.exec_framing},
      {"exec-settle", CM_OPT_DURATION, "20ms", 0, 60000, NULL, NULL,
       "exec (lines): quiet time on the child's stdout after a chunk's last answer before the "
       "chunk counts; output in it fails the chunk as out of step",
       &m.topts.exec_settle_ms},
      {"exec-cwd", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "exec: working directory of the children (default: the mapper's)", &m.topts.exec_cwd},
      {"exec-env", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "exec: extra environment of the children, KEY=VAL[,KEY=VAL...]", &m.topts.exec_env},
      {"concurrency", CM_OPT_INT, defconc, 1, 512, NULL, NULL,
       "worker threads mapping chunks in parallel (default: CPU cores)", &m.concurrency},
      {"prefetch", CM_OPT_INT, "-1", -1, 512, NULL, NULL,
       "extra chunks held ready besides those being mapped (-1: as many as workers)",
       &m.prefetch},
      {"save-window", CM_OPT_INT, "64", 0, 1000, NULL, NULL,
       "mapped chunks that may wait for a saver's confirmation while more are mapped",
       &m.save_window},
      {"chunk-timeout", CM_OPT_DURATION, "5m", 0, 86400000, NULL, NULL,
       "time a transform may take for one chunk; past it the chunk is NAKed and the worker "
       "counted stuck (/healthz 503 once all are); 0: no limit",
       &m.chunk_timeout_ms},
      {"save-timeout", CM_OPT_DURATION, "10s", 100, 600000, NULL, NULL,
       "time to wait for a saver's confirmation before sending the result again",
       &m.save_timeout_ms},
  };
  cm_daemon_hooks_t hooks = {.on_nats = mapper_on_nats,
                             .status = mapper_status,
                             .shutdown = mapper_shutdown,
                             .close = mapper_close,
                             .heartbeat = mapper_heartbeat,
                             .alive = mapper_alive};
  static const double proc_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                       0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};
  char err[256], labels[200], subj[256];
  int probe = 0, rc;
  cm_metrics_t *mt;

  snprintf(defconc, sizeof(defconc), "%ld", cores > 0 ? cores : 1);
  rc = cm_daemon_main_config("mapper", "maps leased chunks on a thread pool", &m.cfg, own,
                             sizeof(own) / sizeof(own[0]), argc, argv, &probe);
  if (rc == 1) return 0;
  if (rc == 2) return probe;
  if (rc != 0) return 2;
  snprintf(idbuf, sizeof(idbuf), "%s", m.cfg.id);
  sanitize_token(idbuf);
  m.cfg.id = idbuf;

  /* User code (exec children, plugins) gets no NATS credentials: they were
   * read into m.cfg above and are not needed in the environment any more. */
  cm_exec_scrub_environ();
  if (cm_transform_create_ex(&m.t, m.transform_spec, &m.topts, err, sizeof(err)) != 0) {
    fprintf(stderr, "mapper: invalid value \"%s\" for --transform: %s\n", m.transform_spec, err);
    return 2;
  }
  if (m.prefetch < 0) m.prefetch = m.concurrency;
  m.nslots = (int)(m.concurrency + m.prefetch + m.save_window);
  if (m.nslots > MAPPER_MAX_SLOTS) m.nslots = MAPPER_MAX_SLOTS;
  /* The thread pool is sized on first use: set it before anything queues. */
  snprintf(threads, sizeof(threads), "%lld", (long long)m.concurrency);
  setenv("UV_THREADPOOL_SIZE", threads, 1);

  if (strcmp(m.cfg.protocol, "app9") == 0) { /* the original example's protocol */
    rc = cm_mapper_app9_run(&m.cfg, m.t, m.chunk_timeout_ms);
    cm_transform_destroy(m.t);
    return rc;
  }
  /* Only the native protocol's mapped chunk has a header to carry it. */
  if (cm_transform_set_version(m.t, m.cfg.version, err, sizeof(err)) != 0) {
    fprintf(stderr, "mapper: invalid value for --version-label: %s\n", err);
    cm_transform_destroy(m.t);
    return 2;
  }
  if (cm_peers_create(&m.peers) != 0 || cm_daemon_create(&m.d, "mapper", &m.cfg, &hooks, &m) != 0) {
    cm_peers_destroy(m.peers);
    cm_transform_destroy(m.t);
    return 1;
  }
  mt = cm_daemon_metrics(m.d);
  snprintf(labels, sizeof(labels), "version=\"%s\",result=\"ok\"", m.cfg.version);
  m.m_ok = cm_metrics_counter(mt, "chunkmill_mapper_chunks_total",
                              "Chunks mapped and confirmed by a saver (ok) or failed (error).",
                              labels);
  snprintf(labels, sizeof(labels), "version=\"%s\",result=\"error\"", m.cfg.version);
  m.m_err = cm_metrics_counter(mt, "chunkmill_mapper_chunks_total",
                               "Chunks mapped and confirmed by a saver (ok) or failed (error).",
                               labels);
  snprintf(labels, sizeof(labels), "version=\"%s\"", m.cfg.version);
  m.m_records = cm_metrics_counter(mt, "chunkmill_mapper_records_total", "Records mapped.", labels);
  m.m_dead = cm_metrics_counter(mt, "chunkmill_mapper_dead_records_total",
                                "Records the transform rejected (dead letters).", labels);
  m.m_retries = cm_metrics_counter(mt, "chunkmill_mapper_save_retries_total",
                                   "Mapped chunks sent to the savers again (no reply in time).",
                                   NULL);
  m.m_no_resp = cm_metrics_counter(mt, "chunkmill_mapper_save_no_responders_total",
                                   "Save requests answered \"no responders\" (no saver "
                                   "subscribed where this mapper is connected), retried.",
                                   NULL);
  m.m_handbacks = cm_metrics_counter(mt, "chunkmill_mapper_handbacks_total",
                                     "Chunks handed back to the fetcher unprocessed.", NULL);
  m.m_busy = cm_metrics_gauge(mt, "chunkmill_mapper_busy_workers", "Workers mapping right now.",
                              NULL);
  m.m_timeouts = cm_metrics_counter(mt, "chunkmill_mapper_chunk_timeouts_total",
                                    "Chunks whose transform passed --chunk-timeout (NAKed).",
                                    NULL);
  m.m_stuck = cm_metrics_gauge(mt, "chunkmill_mapper_stuck_workers",
                               "Workers still running a transform past --chunk-timeout.", NULL);
  m.m_workers = cm_metrics_gauge(mt, "chunkmill_mapper_workers", "Worker threads.", NULL);
  m.m_slots_used = cm_metrics_gauge(mt, "chunkmill_mapper_slots_used",
                                    "Chunks held (queued, mapping or saving).", NULL);
  m.m_process_s = cm_metrics_histogram(mt, "chunkmill_mapper_map_seconds",
                                       "Time from a chunk's arrival until it is mapped.", NULL,
                                       proc_bounds, sizeof(proc_bounds) / sizeof(proc_bounds[0]));
  m.m_cycle_s = cm_metrics_histogram(mt, "chunkmill_mapper_chunk_seconds",
                                     "Time from a chunk's arrival until a saver confirmed it.",
                                     NULL, proc_bounds, sizeof(proc_bounds) / sizeof(proc_bounds[0]));
  cm_gauge_set(m.m_workers, (double)m.concurrency);
  cm_transform_set_metrics(m.t, mt); /* exec children's counter:NAME,N lines */

  (void)uv_idle_init(cm_daemon_loop(m.d), &m.credit_idle);
  m.credit_idle.data = &m;
  for (int i = 0; i < m.nslots; i++) {
    m.slots[i].m = &m;
    m.slots[i].idx = i;
    (void)uv_timer_init(cm_daemon_loop(m.d), &m.slots[i].timer);
    m.slots[i].timer.data = &m.slots[i];
  }
  (void)snprintf(subj, sizeof(subj), "chunk.%s", m.cfg.id);
  (void)cm_subject(m.chunk_subject, sizeof(m.chunk_subject), m.cfg.prefix, subj);
  (void)cm_subject(m.credit_subject, sizeof(m.credit_subject), m.cfg.prefix, "credit");
  (void)cm_subject(m.save_subject, sizeof(m.save_subject), m.cfg.prefix, "save");
  (void)cm_subject(m.nak_subject, sizeof(m.nak_subject), m.cfg.prefix, "nak");
  m.inbox = cm_nats_new_inbox(cm_daemon_nats(m.d));
  snprintf(subj, sizeof(subj), "%s.>", m.inbox ? m.inbox : "_INBOX.x");
  if (m.inbox == NULL ||
      cm_nats_subscribe(cm_daemon_nats(m.d), m.chunk_subject, NULL, mapper_on_chunk, &m, NULL) != 0 ||
      cm_nats_subscribe(cm_daemon_nats(m.d), subj, NULL, mapper_on_reply, &m, NULL) != 0 ||
      cm_subject(subj, sizeof(subj), m.cfg.prefix, "heartbeat") != 0 ||
      cm_nats_subscribe(cm_daemon_nats(m.d), subj, NULL, mapper_on_heartbeat, &m, NULL) != 0) {
    cm_log_error("cannot subscribe");
    cm_daemon_exit(m.d, 1);
  }
  /* Not "ready" yet: that is logged once NATS is connected (mapper_on_nats),
   * when /readyz turns 200. */
  cm_log_info("mapper started: transform %s, %lld workers, %d slots (%lld workers + %lld "
              "--prefetch + %lld --save-window%s), chunks on %s",
              m.transform_spec, (long long)m.concurrency, m.nslots, (long long)m.concurrency,
              (long long)m.prefetch, (long long)m.save_window,
              m.concurrency + m.prefetch + m.save_window > MAPPER_MAX_SLOTS ? ", capped" : "",
              m.chunk_subject);
  rc = cm_daemon_run(m.d);
  cm_daemon_destroy(m.d);
  cm_transform_destroy(m.t);
  cm_peers_destroy(m.peers);
  free(m.inbox);
  return rc;
}
