/* app9.c - the mapper in the original example's protocol (see app9.h).
 *
 * States: idle = subscribed to mapper_data (queue group mapper.workers),
 * nothing in hand; busy = a chunk being mapped or waiting in the queue.
 * The mapper_data subscription is made per idle period with nats.c directly
 * (cm_nats keeps a fixed table of long-lived subscriptions): subscribe, then
 * publish "im_listening" - the server sees our SUB before the PUB, so a
 * fetcher answering it finds us subscribed. On the first chunk the
 * subscription is drained (UNSUB, then every message the server had already
 * routed to us is still delivered) rather than unsubscribed (which would
 * drop them inside nats.c, as the original does). What the drain delivers is
 * queued and mapped in turn.
 *
 * Threads: nats.c delivers mapper_data messages and the drain-complete
 * notice on its threads; they go to the loop thread through the
 * connection's handoff (cm_nats_post), which stays allocated until nats.c's
 * threads have stopped: a drain-complete notice that nats.c fires while the
 * connection closes at shutdown (the server gone at the same moment) finds
 * it still there and is refused (the item freed here) instead of posting
 * into freed memory. The transform runs on the libuv thread pool. */
#include "cm/app9wire.h"
#include "app9.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/chunk.h"
#include "cm/daemon.h"
#include "cm/log.h"

#define APP9_MAX_SUBS 64    /* the current subscription + those still draining */
#define APP9_QUEUE_MAX 64   /* chunks that arrived while busy */
#define APP9_MAX_CHUNK (64u * 1024 * 1024)
#define APP9_DRAIN_MS 10000
#define APP9_RETRY_MS 100

typedef struct app9_mapper_s app9_mapper_t;

typedef enum { SUB_FREE = 0, SUB_ACTIVE, SUB_DRAINING } sub_state_t;

typedef struct a9_sub_s {
  app9_mapper_t *a;
  natsSubscription *sub;
  sub_state_t state;
} a9_sub_t;

typedef struct a9_item_s {
  app9_mapper_t *a;
  natsMsg *msg;     /* a chunk, or NULL */
  a9_sub_t *closed; /* a subscription whose last callback returned, or NULL */
} a9_item_t;

struct app9_mapper_s {
  cm_daemon_t *d;
  const cm_transform_t *t;
  cm_nats_t *nats; /* the daemon's connection; outlives nats.c's threads */
  a9_sub_t subs[APP9_MAX_SUBS];
  a9_sub_t *active; /* subscribed to mapper_data (idle) */
  uv_timer_t retry; /* re-try becoming idle (no subscription slot free) */

  natsMsg *queue[APP9_QUEUE_MAX];
  size_t qhead, qlen;

  /* The chunk being mapped (owned by the worker while working). */
  natsMsg *cur;
  bool working, abandon;
  uv_work_t work;
  cm_buf_t out, body;
  cm_transform_stats_t st;
  uint64_t cur_index;
  int trc;
  char err[256];
  double t_start;

  bool stopping, forced, closed;
  int64_t chunk_timeout_ms; /* 0: none */
  uv_timer_t deadline;      /* the chunk being mapped passes --chunk-timeout */
  bool stuck;               /* ... and has: dropped, the worker not alive */

  cm_counter_t *m_ok, *m_err, *m_records, *m_dead, *m_late, *m_handbacks, *m_listening,
      *m_answers;
  cm_gauge_t *m_busy, *m_stuck;
  cm_counter_t *m_timeouts;
  cm_histogram_t *m_map_s;
};

static bool a9m_idle(const app9_mapper_t *a) {
  return a->active != NULL && a->cur == NULL && a->qlen == 0 && !a->stopping;
}

/* ---- nats.c threads -> loop ---- */

static void a9m_deliver(void *arg, int cancelled);

static void a9m_post(app9_mapper_t *a, natsMsg *msg, a9_sub_t *closed) {
  a9_item_t *it = malloc(sizeof(*it));
  if (it == NULL) {
    natsMsg_Destroy(msg);
    return;
  }
  it->a = a;
  it->msg = msg;
  it->closed = closed;
  if (cm_nats_post(a->nats, a9m_deliver, it) != 0) {
    natsMsg_Destroy(msg);
    free(it);
  }
}

static void a9m_on_data_thread(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                               void *closure) {
  a9_sub_t *s = closure;
  a9m_post(s->a, msg, NULL);
}

static void a9m_on_complete_thread(void *closure) {
  a9_sub_t *s = closure;
  a9m_post(s->a, NULL, s);
}

/* ---- publishing ---- */

static void a9m_publish_str(app9_mapper_t *a, const char *subject, const char *s) {
  (void)cm_nats_publish(cm_daemon_nats(a->d), subject, NULL, s, strlen(s));
}

/* Gives a chunk back to the other mappers (shutdown, queue full). If no
 * mapper is subscribed the server drops it and the fetcher sends it again
 * (the chunkmill fetcher after --ack-wait, the original at random). */
static void a9m_handback(app9_mapper_t *a, natsMsg *msg) {
  cm_counter_inc(a->m_handbacks);
  if (cm_nats_publish(cm_daemon_nats(a->d), CM_APP9_SUBJ_MAPPER_DATA, NULL, natsMsg_GetData(msg),
                      (size_t)natsMsg_GetDataLength(msg)) != 0)
    cm_log_warn("could not hand a chunk back on %s: the fetcher will send it again",
                CM_APP9_SUBJ_MAPPER_DATA);
  natsMsg_Destroy(msg);
}

/* ---- subscription ---- */

static void a9m_stop_listening(app9_mapper_t *a) {
  a9_sub_t *s = a->active;
  natsStatus st;
  if (s == NULL) return;
  a->active = NULL;
  s->state = SUB_DRAINING;
  st = natsSubscription_DrainTimeout(s->sub, APP9_DRAIN_MS);
  if (st != NATS_OK) {
    /* Not connected or already closed: nothing more can arrive on it. */
    cm_log_debug("drain of the mapper_data subscription: %s", natsStatus_GetText(st));
    (void)natsSubscription_Unsubscribe(s->sub);
  }
}

static void a9m_retry_cb(uv_timer_t *t);

/* Idle: subscribe to mapper_data, then say so. */
static void a9m_go_idle(app9_mapper_t *a) {
  a9_sub_t *s = NULL;
  natsStatus st;
  if (a->stopping || a->cur != NULL || a->qlen > 0) return;
  if (!cm_nats_connected(cm_daemon_nats(a->d))) return; /* CONNECTED calls us again */
  if (a->active == NULL) {
    for (int i = 0; i < APP9_MAX_SUBS; i++)
      if (a->subs[i].state == SUB_FREE) {
        s = &a->subs[i];
        break;
      }
    if (s == NULL) {
      cm_log_warn("all %d subscription slots are still draining: idle again in %d ms",
                  APP9_MAX_SUBS, APP9_RETRY_MS);
      (void)uv_timer_start(&a->retry, a9m_retry_cb, APP9_RETRY_MS, 0);
      return;
    }
    s->a = a;
    s->sub = NULL;
    st = natsConnection_QueueSubscribe(&s->sub, cm_nats_conn(cm_daemon_nats(a->d)), CM_APP9_SUBJ_MAPPER_DATA,
                                       CM_APP9_QUEUE_MAPPERS, a9m_on_data_thread, s);
    if (st == NATS_OK) st = natsSubscription_SetOnCompleteCB(s->sub, a9m_on_complete_thread, s);
    if (st != NATS_OK) {
      cm_log_warn("cannot subscribe to %s: %s; retrying", CM_APP9_SUBJ_MAPPER_DATA, natsStatus_GetText(st));
      if (s->sub != NULL) {
        (void)natsSubscription_Unsubscribe(s->sub);
        natsSubscription_Destroy(s->sub);
        s->sub = NULL;
      }
      (void)uv_timer_start(&a->retry, a9m_retry_cb, APP9_RETRY_MS, 0);
      return;
    }
    s->state = SUB_ACTIVE;
    a->active = s;
  }
  cm_counter_inc(a->m_listening);
  a9m_publish_str(a, CM_APP9_SUBJ_STATUS, "im_listening");
}

static void a9m_retry_cb(uv_timer_t *t) { a9m_go_idle(t->data); }

/* ---- mapping ---- */

static void a9m_maybe_exit(app9_mapper_t *a) {
  if (a->stopping && a->stuck) {
    cm_log_warn("stopping with a transform stuck past --chunk-timeout; its chunk is not saved");
    cm_daemon_exit(a->d, 0);
  } else if (a->stopping && a->cur == NULL && !a->working) {
    cm_log_info("mapper drained: no chunk in hand");
    cm_daemon_exit(a->d, 0);
  }
}

/* Thread pool: transform, then the app9 body {"index":N,"data":[...]}.
 * Dead letters (records the transform rejects) are left out of the body -
 * the original savers expect every element to be a record - and logged. */
static void a9m_work(uv_work_t *w) {
  app9_mapper_t *a = w->data;
  cm_chunk_view_t v;
  size_t pos = 0;
  const char *e;
  size_t elen;
  bool first = true;
  int rc;
  memset(&a->st, 0, sizeof(a->st));
  a->err[0] = '\0';
  cm_buf_reset(&a->out);
  cm_buf_reset(&a->body);
  a->trc = cm_transform_chunk(a->t, natsMsg_GetData(a->cur), (size_t)natsMsg_GetDataLength(a->cur),
                              &a->out, &a->st, a->err, sizeof(a->err));
  if (a->trc != 0) return;
  rc = cm_chunk_peek(a->out.data, a->out.len, &v, a->err, sizeof(a->err));
  if (rc == 0) {
    a->cur_index = v.hdr.index;
    rc = cm_buf_printf(&a->body, "{\"index\":%" PRIu64 ",\"data\":[", v.hdr.index);
  }
  while (rc == 0 && (rc = cm_json_array_next(v.data, v.data_len, &pos, &e, &elen)) == 1) {
    if (elen == 4 && memcmp(e, "null", 4) == 0) continue;
    rc = first ? 0 : cm_buf_puts(&a->body, ",");
    if (rc == 0) rc = cm_buf_append(&a->body, e, elen);
    first = false;
  }
  if (rc == 0) rc = cm_buf_puts(&a->body, "]}");
  if (rc != 0 && a->err[0] == '\0') snprintf(a->err, sizeof(a->err), "%s", strerror(-rc));
  a->trc = rc;
}

static void a9m_start_next(app9_mapper_t *a);

static void a9m_work_done(uv_work_t *w, int status) {
  app9_mapper_t *a = w->data;
  a->working = false;
  if (!a->closed) (void)uv_timer_stop(&a->deadline);
  if (a->stuck) {
    cm_log_warn("the transform returned after %.1f s, past --chunk-timeout: its result is dropped",
                cm_wall_time() - a->t_start);
    a->stuck = false;
    cm_gauge_set(a->m_stuck, 0);
  }
  cm_gauge_set(a->m_busy, 0);
  if (a->closed) {
    natsMsg_Destroy(a->cur);
    a->cur = NULL;
    return;
  }
  cm_histogram_observe(a->m_map_s, cm_wall_time() - a->t_start);
  if (a->abandon || status == UV_ECANCELED) {
    /* Handed back already (forced shutdown). */
  } else if (a->trc != 0) {
    /* No nak in this protocol: the fetcher sends the chunk again (after
     * --ack-wait, or at random). */
    cm_counter_inc(a->m_err);
    cm_log_warn("cannot map a chunk (%d bytes): %s", natsMsg_GetDataLength(a->cur), a->err);
  } else {
    if (a->st.dead > 0)
      cm_log_warn("chunk %" PRIu64 ": %u records rejected by the transform, left out", a->cur_index,
                  a->st.dead);
    if (cm_nats_publish(cm_daemon_nats(a->d), CM_APP9_SUBJ_SAVER_DATA, NULL, a->body.data, a->body.len) !=
        0) {
      cm_counter_inc(a->m_err);
      cm_log_warn("could not publish chunk %" PRIu64 " on %s: the fetcher will send it again",
                  a->cur_index, CM_APP9_SUBJ_SAVER_DATA);
    } else {
      cm_counter_inc(a->m_ok);
      cm_counter_add(a->m_records, a->st.records);
      cm_counter_add(a->m_dead, a->st.dead);
    }
  }
  natsMsg_Destroy(a->cur);
  a->cur = NULL;
  a->abandon = false;
  if (a->stopping) {
    a9m_maybe_exit(a);
    return;
  }
  a9m_start_next(a);
  a9m_go_idle(a);
}

/* --chunk-timeout passed: the thread cannot be interrupted, and this
 * protocol has no NAK. The result is dropped when (if) it comes (the
 * fetcher sends the chunk again, as it does for any chunk that is not
 * answered), and the mapper - one chunk at a time - reports itself not
 * alive (/healthz 503) so that it gets restarted. */
static void a9m_deadline_cb(uv_timer_t *t) {
  app9_mapper_t *a = t->data;
  if (!a->working || a->abandon) return;
  a->stuck = true;
  a->abandon = true;
  cm_counter_inc(a->m_timeouts);
  cm_counter_inc(a->m_err);
  cm_gauge_set(a->m_stuck, 1);
  cm_log_error("transform %s did not finish a chunk within --chunk-timeout (%lld ms): its result "
               "will be dropped; the mapper is stuck (/healthz 503)",
               cm_transform_name(a->t), (long long)a->chunk_timeout_ms);
}

static bool a9m_alive(void *ud, char *why, size_t whylen) {
  app9_mapper_t *a = ud;
  if (!a->stuck) return true;
  snprintf(why, whylen, "the worker is stuck in a transform past --chunk-timeout");
  return false;
}

static void a9m_start_next(app9_mapper_t *a) {
  if (a->cur != NULL || a->qlen == 0) return;
  a->cur = a->queue[a->qhead];
  a->qhead = (a->qhead + 1) % APP9_QUEUE_MAX;
  a->qlen--;
  a->abandon = false;
  a->t_start = cm_wall_time();
  a->work.data = a;
  if (uv_queue_work(cm_daemon_loop(a->d), &a->work, a9m_work, a9m_work_done) != 0) {
    /* Only with a broken loop: map inline. */
    a9m_work(&a->work);
    a->working = true;
    a9m_work_done(&a->work, 0);
    return;
  }
  a->working = true;
  cm_gauge_set(a->m_busy, 1);
  if (a->chunk_timeout_ms > 0)
    (void)uv_timer_start(&a->deadline, a9m_deadline_cb, (uint64_t)a->chunk_timeout_ms, 0);
}

/* ---- loop-thread handlers ---- */

static void a9m_on_chunk(app9_mapper_t *a, natsMsg *msg) {
  if (a->stopping) {
    a9m_handback(a, msg);
    return;
  }
  /* Busy from now on: stop taking chunks. Anything the server had routed
   * to us already still arrives (drain) and lands here. */
  a9m_stop_listening(a);
  if (a->cur != NULL) cm_counter_inc(a->m_late);
  if (a->qlen == APP9_QUEUE_MAX) {
    a9m_handback(a, msg);
    return;
  }
  a->queue[(a->qhead + a->qlen) % APP9_QUEUE_MAX] = msg;
  a->qlen++;
  a9m_start_next(a);
}

static void a9m_deliver(void *arg, int cancelled) {
  a9_item_t *it = arg;
  app9_mapper_t *a = it->a;
  if (cancelled || a->closed) {
    natsMsg_Destroy(it->msg);
  } else if (it->msg != NULL) {
    a9m_on_chunk(a, it->msg);
  } else if (it->closed != NULL && !a->closed) {
    a9_sub_t *s = it->closed;
    if (a->active == s) a->active = NULL; /* closed under us (connection gone) */
    natsSubscription_Destroy(s->sub);
    s->sub = NULL;
    s->state = SUB_FREE;
    if (!a->stopping && a->active == NULL) a9m_go_idle(a);
  }
  free(it);
}

static void a9m_on_status(void *ud, natsMsg *msg) {
  app9_mapper_t *a = ud;
  if (cm_app9_body_is(msg, "anyone_listening") && a9m_idle(a)) {
    cm_counter_inc(a->m_answers);
    a9m_publish_str(a, CM_APP9_SUBJ_STATUS, "im_listening");
  }
  natsMsg_Destroy(msg);
}

/* ---- daemon hooks ---- */

static void a9m_on_nats(void *ud, cm_nats_event_t ev) {
  app9_mapper_t *a = ud;
  /* After a reconnect nats.c restores the subscription by itself; saying
   * "im_listening" again lets a fetcher that waited on us go on. */
  if (ev == CM_NATS_CONNECTED) a9m_go_idle(a);
}

static int a9m_status(void *ud, cm_buf_t *out) {
  app9_mapper_t *a = ud;
  int draining = 0;
  for (int i = 0; i < APP9_MAX_SUBS; i++) draining += a->subs[i].state == SUB_DRAINING;
  return cm_buf_printf(out,
                       ",\"protocol\":\"app9\",\"transform\":\"%s\",\"state\":\"%s\",\"queue\":%zu,"
                       "\"subscriptions_draining\":%d,\"chunks_ok\":%" PRIu64
                       ",\"chunks_failed\":%" PRIu64 ",\"records\":%" PRIu64
                       ",\"dead_records\":%" PRIu64 ",\"late_chunks\":%" PRIu64
                       ",\"handed_back\":%" PRIu64 ",\"im_listening\":%" PRIu64
                       ",\"answers\":%" PRIu64,
                       cm_transform_name(a->t), a9m_idle(a) ? "idle" : "busy", a->qlen, draining,
                       cm_counter_get(a->m_ok), cm_counter_get(a->m_err),
                       cm_counter_get(a->m_records), cm_counter_get(a->m_dead),
                       cm_counter_get(a->m_late), cm_counter_get(a->m_handbacks),
                       cm_counter_get(a->m_listening), cm_counter_get(a->m_answers));
}

static void a9m_shutdown(void *ud, bool forced) {
  app9_mapper_t *a = ud;
  if (!a->stopping) {
    a->stopping = true;
    a9m_stop_listening(a);
    /* Chunks not started go to another mapper now. */
    while (a->qlen > 0) {
      a9m_handback(a, a->queue[a->qhead]);
      a->qhead = (a->qhead + 1) % APP9_QUEUE_MAX;
      a->qlen--;
    }
  }
  if (forced && !a->forced) {
    a->forced = true;
    if (a->cur != NULL && a->working && !a->abandon) {
      /* Hand back a copy of the input; the worker's result is dropped. */
      cm_counter_inc(a->m_handbacks);
      (void)cm_nats_publish(cm_daemon_nats(a->d), CM_APP9_SUBJ_MAPPER_DATA, NULL, natsMsg_GetData(a->cur),
                            (size_t)natsMsg_GetDataLength(a->cur));
      a->abandon = true; /* the input is freed in a9m_work_done */
      cm_daemon_exit(a->d, 0);
      return;
    }
  }
  a9m_maybe_exit(a);
}

static void a9m_close(void *ud) {
  app9_mapper_t *a = ud;
  a->closed = true; /* deliveries still queued are cancelled from now on */
  for (int i = 0; i < APP9_MAX_SUBS; i++)
    if (a->subs[i].sub != NULL) {
      natsSubscription_Destroy(a->subs[i].sub);
      a->subs[i].sub = NULL;
      a->subs[i].state = SUB_FREE;
    }
  a->active = NULL;
  while (a->qlen > 0) {
    natsMsg_Destroy(a->queue[a->qhead]);
    a->qhead = (a->qhead + 1) % APP9_QUEUE_MAX;
    a->qlen--;
  }
  if (!a->working) {
    natsMsg_Destroy(a->cur);
    a->cur = NULL;
  }
  uv_close((uv_handle_t *)&a->retry, NULL);
  uv_close((uv_handle_t *)&a->deadline, NULL);
  if (a->working && a->stuck) {
    /* The loop would wait for the stuck thread forever: nothing is left
     * to lose (nothing of it is saved). */
    cm_log_warn("stopping with a stuck transform still running");
    _exit(cm_daemon_exit_code(a->d));
  }
}

static void a9m_heartbeat(void *ud, Chunkmill__Heartbeat *hb) {
  app9_mapper_t *a = ud;
  hb->processed = cm_counter_get(a->m_ok);
  hb->records = cm_counter_get(a->m_records);
  hb->errors = cm_counter_get(a->m_err);
}

static void a9m_metrics(app9_mapper_t *a, const cm_common_cfg_t *cfg) {
  cm_metrics_t *mt = cm_daemon_metrics(a->d);
  static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                  0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};
  char labels[200];
  snprintf(labels, sizeof(labels), "version=\"%s\",result=\"ok\"", cfg->version);
  a->m_ok = cm_metrics_counter(mt, "chunkmill_mapper_chunks_total",
                               "Chunks mapped and passed on (ok) or failed (error).", labels);
  snprintf(labels, sizeof(labels), "version=\"%s\",result=\"error\"", cfg->version);
  a->m_err = cm_metrics_counter(mt, "chunkmill_mapper_chunks_total",
                                "Chunks mapped and passed on (ok) or failed (error).", labels);
  snprintf(labels, sizeof(labels), "version=\"%s\"", cfg->version);
  a->m_records = cm_metrics_counter(mt, "chunkmill_mapper_records_total", "Records mapped.", labels);
  a->m_dead = cm_metrics_counter(mt, "chunkmill_mapper_dead_records_total",
                                 "Records the transform rejected (dead letters).", labels);
  a->m_late = cm_metrics_counter(mt, "chunkmill_mapper_app9_late_chunks_total",
                                 "app9: chunks that arrived while busy (queued, not lost).", NULL);
  a->m_handbacks = cm_metrics_counter(mt, "chunkmill_mapper_handbacks_total",
                                      "Chunks handed back unprocessed.", NULL);
  a->m_listening = cm_metrics_counter(mt, "chunkmill_mapper_app9_im_listening_total",
                                      "app9: im_listening published on becoming idle.", NULL);
  a->m_answers = cm_metrics_counter(mt, "chunkmill_mapper_app9_answers_total",
                                    "app9: anyone_listening answered.", NULL);
  a->m_busy = cm_metrics_gauge(mt, "chunkmill_mapper_busy_workers", "Workers mapping right now.",
                               NULL);
  a->m_timeouts = cm_metrics_counter(mt, "chunkmill_mapper_chunk_timeouts_total",
                                     "Chunks whose transform passed --chunk-timeout (dropped).",
                                     NULL);
  a->m_stuck = cm_metrics_gauge(mt, "chunkmill_mapper_stuck_workers",
                                "Workers still running a transform past --chunk-timeout.", NULL);
  a->m_map_s = cm_metrics_histogram(mt, "chunkmill_mapper_map_seconds",
                                    "Time from a chunk's arrival until it is mapped.", NULL, bounds,
                                    sizeof(bounds) / sizeof(bounds[0]));
}

int cm_mapper_app9_run(const cm_common_cfg_t *cfg, const cm_transform_t *t,
                       int64_t chunk_timeout_ms) {
  cm_daemon_hooks_t hooks = {.alive = a9m_alive,
                             .on_nats = a9m_on_nats,
                             .status = a9m_status,
                             .shutdown = a9m_shutdown,
                             .close = a9m_close,
                             .heartbeat = a9m_heartbeat};
  app9_mapper_t *a = calloc(1, sizeof(*a));
  int rc;
  if (a == NULL) return 1;
  a->t = t;
  a->chunk_timeout_ms = chunk_timeout_ms;
  cm_buf_init(&a->out, APP9_MAX_CHUNK);
  cm_buf_init(&a->body, APP9_MAX_CHUNK);
  if (strcmp(cm_transform_name(t), "fullname") != 0)
    cm_log_warn("--transform %s with --protocol app9: the original savers expect fullname's "
                "{\"id\",\"name\"} records",
                cm_transform_name(t));
  if (cm_daemon_create(&a->d, "mapper", cfg, &hooks, a) != 0) {
    rc = 1;
    goto out;
  }
  (void)uv_timer_init(cm_daemon_loop(a->d), &a->retry);
  a->retry.data = a;
  (void)uv_timer_init(cm_daemon_loop(a->d), &a->deadline);
  a->deadline.data = a;
  a9m_metrics(a, cfg);
  a->nats = cm_daemon_nats(a->d);
  if (cm_nats_subscribe(cm_daemon_nats(a->d), CM_APP9_SUBJ_STATUS, NULL, a9m_on_status, a, NULL) != 0) {
    cm_log_error("cannot set up the app9 subscriptions");
    cm_daemon_exit(a->d, 1);
  } else {
    cm_log_info("mapper in app9 mode: transform %s, chunks on %s (queue group %s), results on %s",
                cm_transform_name(t), CM_APP9_SUBJ_MAPPER_DATA, CM_APP9_QUEUE_MAPPERS, CM_APP9_SUBJ_SAVER_DATA);
  }
  rc = cm_daemon_run(a->d);
  cm_daemon_destroy(a->d);
out:
  cm_buf_free(&a->out);
  cm_buf_free(&a->body);
  free(a);
  return rc;
}
