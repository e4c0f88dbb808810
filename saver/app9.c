/* app9.c - the saver in the original example's protocol (see app9.h).
 *
 * Chunks arrive on saver_data (queue group saver.workers) and queue on the
 * loop thread; one batch at a time is rewritten into the wire form the store
 * takes - {"job":"app9","index":N,"attempt":0,"data":[...]} - and committed
 * on a thread-pool thread (group commit, as in native mode). After COMMIT
 * the index of every chunk of the batch, saved now or saved before, is
 * published on processed_data. A chunk that is not valid is logged and not
 * confirmed; a batch that did not commit is not confirmed either: the
 * fetcher sends those chunks again. */
#include "cm/app9wire.h"
#include "app9.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/chunk.h"
#include "cm/daemon.h"
#include "cm/log.h"
#include "store_health.h"

#define APP9_MAX_BATCH 128
#define APP9_MAX_BATCH_BYTES (64u * 1024 * 1024)
#define APP9_MAX_QUEUE 4096
#define APP9_MAX_CHUNK (64u * 1024 * 1024 + 256)

typedef struct app9_saver_s {
  cm_daemon_t *d;
  cm_sink_t *store;
  const char *db_path;

  natsMsg *queue[APP9_MAX_QUEUE];
  size_t qhead, qlen;

  /* The batch being committed (owned by the worker while busy). */
  uv_work_t work;
  bool busy;
  natsMsg *msgs[APP9_MAX_BATCH];
  cm_buf_t wire[APP9_MAX_BATCH];
  cm_sink_item_t items[APP9_MAX_BATCH];
  size_t nbatch;
  int batch_rc;
  double batch_seconds;

  bool shutting_down;
  cm_store_health_t health; /* rate-limited failure logs; readiness is the sink's */

  cm_counter_t *m_chunks, *m_records, *m_dups, *m_errors, *m_commits, *m_dropped;
  cm_histogram_t *m_commit_s;
  cm_gauge_t *m_queue;
} app9_saver_t;

static void a9s_start_batch(app9_saver_t *s);

static void a9s_maybe_finish(app9_saver_t *s) {
  if (s->shutting_down && !s->busy && s->qlen == 0) {
    cm_log_info("saver drained: every received chunk is committed and confirmed");
    cm_daemon_exit(s->d, 0);
  }
}

/* Thread pool: app9 body -> wire form with job "app9". A body that does not
 * parse is handed to the store as it is, which rejects it with a reason. */
static void a9s_rewrite(cm_buf_t *b, cm_sink_item_t *it) {
  cm_chunk_view_t v;
  cm_chunk_hdr_t h;
  char err[160];
  int rc;
  cm_buf_reset(b);
  if (cm_chunk_peek(it->json, it->len, &v, err, sizeof(err)) != 0) return;
  memset(&h, 0, sizeof(h));
  snprintf(h.job, sizeof(h.job), "%s", CM_SAVER_APP9_JOB);
  h.index = v.hdr.index;
  h.attempt = v.hdr.attempt;
  rc = cm_chunk_begin(b, &h);
  /* data is "[...]": its inside continues the "data":[ just written. */
  if (rc == 0) rc = cm_buf_append(b, v.data + 1, v.data_len - 2);
  if (rc == 0) rc = cm_chunk_end(b, v.dead, v.dead_len);
  if (rc == 0) {
    it->json = b->data;
    it->len = b->len;
  }
}

static void a9s_commit_work(uv_work_t *w) {
  app9_saver_t *s = w->data;
  double t0 = cm_wall_time();
  for (size_t i = 0; i < s->nbatch; i++) a9s_rewrite(&s->wire[i], &s->items[i]);
  s->batch_rc = cm_sink_save_batch(s->store, s->items, s->nbatch);
  s->batch_seconds = cm_wall_time() - t0;
}

static void a9s_commit_done(uv_work_t *w, int status) {
  app9_saver_t *s = w->data;
  s->busy = false;
  cm_histogram_observe(s->m_commit_s, s->batch_seconds);
  if (s->batch_rc == 0) cm_counter_inc(s->m_commits);
  for (size_t i = 0; i < s->nbatch; i++) {
    cm_sink_item_t *it = &s->items[i];
    if (it->status < 0 && it->temporary) {
      cm_counter_inc(s->m_errors);
    } else if (it->status < 0) {
      cm_counter_inc(s->m_errors);
      cm_log_warn("chunk rejected (not confirmed): %s", it->err);
    } else {
      char idx[24];
      int n = snprintf(idx, sizeof(idx), "%" PRIu64, it->hdr.index);
      if (it->status == 1) {
        cm_counter_inc(s->m_dups);
      } else {
        cm_counter_inc(s->m_chunks);
        cm_counter_add(s->m_records, it->records);
      }
      if (cm_nats_publish(cm_daemon_nats(s->d), CM_APP9_SUBJ_PROCESSED, NULL, idx, (size_t)n) != 0)
        cm_log_warn("could not confirm chunk %" PRIu64 ": it will be sent again and confirmed "
                    "then",
                    it->hdr.index);
    }
    natsMsg_Destroy(s->msgs[i]);
    s->msgs[i] = NULL;
    cm_buf_reset(&s->wire[i]);
  }
  if (s->nbatch > 0)
    cm_store_health_note(&s->health, s->batch_rc, cm_sink_batch_error(s->items, s->nbatch),
                         "not confirmed: the fetcher sends them again", cm_daemon_now_ms(s->d));
  s->nbatch = 0;
  if (status == UV_ECANCELED) return;
  a9s_start_batch(s);
  a9s_maybe_finish(s);
}

static void a9s_start_batch(app9_saver_t *s) {
  size_t bytes = 0;
  if (s->busy || s->qlen == 0) return;
  s->nbatch = 0;
  while (s->qlen > 0 && s->nbatch < APP9_MAX_BATCH) {
    natsMsg *m = s->queue[s->qhead];
    size_t len = (size_t)natsMsg_GetDataLength(m);
    if (s->nbatch > 0 && bytes + len > APP9_MAX_BATCH_BYTES) break;
    s->qhead = (s->qhead + 1) % APP9_MAX_QUEUE;
    s->qlen--;
    bytes += len;
    memset(&s->items[s->nbatch], 0, sizeof(s->items[0]));
    s->items[s->nbatch].json = natsMsg_GetData(m);
    s->items[s->nbatch].len = len;
    s->msgs[s->nbatch] = m;
    s->nbatch++;
  }
  cm_gauge_set(s->m_queue, (double)s->qlen);
  s->busy = true;
  s->work.data = s;
  if (uv_queue_work(cm_daemon_loop(s->d), &s->work, a9s_commit_work, a9s_commit_done) != 0) {
    a9s_commit_work(&s->work);
    a9s_commit_done(&s->work, 0);
  }
}

static void a9s_on_data(void *ud, natsMsg *m) {
  app9_saver_t *s = ud;
  if (s->qlen == APP9_MAX_QUEUE || s->shutting_down) {
    /* Not confirmed: the fetcher sends it again. */
    cm_counter_inc(s->m_dropped);
    natsMsg_Destroy(m);
    return;
  }
  s->queue[(s->qhead + s->qlen) % APP9_MAX_QUEUE] = m;
  s->qlen++;
  cm_gauge_set(s->m_queue, (double)s->qlen);
  a9s_start_batch(s);
}

/* ---- daemon hooks ---- */

/* The sink's health as of its last commit or connection attempt (a lost
 * PostgreSQL connection is retried with each batch). */
static bool a9s_ready(void *ud, char *why, size_t whylen) {
  app9_saver_t *s = ud;
  return cm_sink_health(s->store, why, whylen);
}

static int a9s_status(void *ud, cm_buf_t *out) {
  app9_saver_t *s = ud;
  int rc = cm_buf_puts(out, ",\"protocol\":\"app9\",\"job\":\"" CM_SAVER_APP9_JOB "\",\"db\":");
  rc |= cm_buf_append_json_str(out, s->db_path, strlen(s->db_path));
  rc |= cm_buf_printf(out,
                      ",\"chunks_saved\":%" PRIu64 ",\"records_saved\":%" PRIu64
                      ",\"duplicates\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"dropped\":%" PRIu64
                      ",\"queue\":%zu,\"committing\":%s",
                      cm_counter_get(s->m_chunks), cm_counter_get(s->m_records),
                      cm_counter_get(s->m_dups), cm_counter_get(s->m_errors),
                      cm_counter_get(s->m_dropped), s->qlen, s->busy ? "true" : "false");
  return rc;
}

static void a9s_shutdown(void *ud, bool forced) {
  app9_saver_t *s = ud;
  s->shutting_down = true;
  cm_nats_unsubscribe_all(cm_daemon_nats(s->d));
  if (forced) {
    /* Not committed = not confirmed: the fetcher sends them again. */
    while (s->qlen > 0) {
      natsMsg_Destroy(s->queue[s->qhead]);
      s->qhead = (s->qhead + 1) % APP9_MAX_QUEUE;
      s->qlen--;
    }
    if (!s->busy) cm_daemon_exit(s->d, 0);
    return;
  }
  a9s_maybe_finish(s);
}

static void a9s_close(void *ud) {
  app9_saver_t *s = ud;
  while (s->qlen > 0) {
    natsMsg_Destroy(s->queue[s->qhead]);
    s->qhead = (s->qhead + 1) % APP9_MAX_QUEUE;
    s->qlen--;
  }
}

static void a9s_heartbeat(void *ud, Chunkmill__Heartbeat *hb) {
  app9_saver_t *s = ud;
  hb->processed = cm_counter_get(s->m_chunks);
  hb->records = cm_counter_get(s->m_records);
  hb->errors = cm_counter_get(s->m_errors);
}

static void a9s_metrics(app9_saver_t *s) {
  cm_metrics_t *m = cm_daemon_metrics(s->d);
  static const double bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                  0.05,   0.1,   0.25,  0.5,   1,    2.5};
  s->m_chunks = cm_metrics_counter(m, "chunkmill_saver_chunks_saved_total",
                                   "Chunks committed for the first time.", NULL);
  s->m_records = cm_metrics_counter(m, "chunkmill_saver_records_saved_total", "Records committed.",
                                    NULL);
  s->m_dups = cm_metrics_counter(m, "chunkmill_saver_duplicate_chunks_total",
                                 "Chunks received again after being saved (confirmed, not rewritten).",
                                 NULL);
  s->m_errors = cm_metrics_counter(m, "chunkmill_saver_errors_total",
                                   "Chunks rejected or not committed.", NULL);
  s->m_commits = cm_metrics_counter(m, "chunkmill_saver_commits_total", "Transactions committed.",
                                    NULL);
  s->m_dropped = cm_metrics_counter(m, "chunkmill_saver_app9_dropped_total",
                                    "app9: chunks not taken (queue full or shutting down).", NULL);
  s->m_commit_s = cm_metrics_histogram(m, "chunkmill_saver_commit_seconds",
                                       "Time to write and commit one batch.", NULL, bounds,
                                       sizeof(bounds) / sizeof(bounds[0]));
  s->m_queue = cm_metrics_gauge(m, "chunkmill_saver_queue_chunks",
                                "Chunks received and waiting for the next commit.", NULL);
}

int cm_saver_app9_run(const cm_common_cfg_t *cfg, cm_sink_t *store, const char *db_path) {
  cm_daemon_hooks_t hooks = {.ready = a9s_ready,
                             .status = a9s_status,
                             .shutdown = a9s_shutdown,
                             .close = a9s_close,
                             .heartbeat = a9s_heartbeat};
  app9_saver_t *s = calloc(1, sizeof(*s));
  int rc;
  if (s == NULL) return 1;
  s->store = store;
  s->db_path = db_path;
  cm_store_health_init(&s->health, db_path);
  for (size_t i = 0; i < APP9_MAX_BATCH; i++) cm_buf_init(&s->wire[i], APP9_MAX_CHUNK);
  if (cm_daemon_create(&s->d, "saver", cfg, &hooks, s) != 0) {
    rc = 1;
    goto out;
  }
  a9s_metrics(s);
  if (cm_nats_subscribe(cm_daemon_nats(s->d), CM_APP9_SUBJ_SAVER_DATA, CM_APP9_QUEUE_SAVERS, a9s_on_data, s,
                        NULL) != 0) {
    cm_log_error("cannot subscribe to %s", CM_APP9_SUBJ_SAVER_DATA);
    cm_daemon_exit(s->d, 1);
  } else {
    cm_log_info("saver in app9 mode: %s (queue group %s) into %s as job \"%s\", confirmations on %s",
                CM_APP9_SUBJ_SAVER_DATA, CM_APP9_QUEUE_SAVERS, db_path, CM_SAVER_APP9_JOB, CM_APP9_SUBJ_PROCESSED);
  }
  rc = cm_daemon_run(s->d);
  cm_daemon_destroy(s->d);
out:
  for (size_t i = 0; i < APP9_MAX_BATCH; i++) cm_buf_free(&s->wire[i]);
  free(s);
  return rc;
}
