/* saver - stores mapped chunks and confirms them after COMMIT.
 *
 * Mapped chunks arrive by request/reply on P.save (queue group "savers").
 * They queue on the loop thread; one batch at a time is committed on a
 * thread-pool thread (group commit: whatever arrived while the previous
 * commit ran goes into the next transaction). Only after COMMIT does the
 * saver reply to the mapper and publish an Ack to the fetcher. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/daemon.h"
#include "app9.h"
#include "cm/log.h"
#include "sink.h"

#define SAVER_MAX_BATCH 128
#define SAVER_MAX_BATCH_BYTES (64u * 1024 * 1024)
#define SAVER_MAX_QUEUE 4096
#define SAVER_ELEMS 1024 /* records per chunk split on arrival */

/* A received chunk, checked on the loop thread as it arrives (in parallel
 * with the commit of the previous batch on the worker), so the commit
 * thread only binds and writes. */
typedef struct saver_msg_s {
  natsMsg *m;
  int peek_rc;
  char perr[128];
  cm_chunk_view_t v;
  cm_json_elems_t elems;
  uint32_t el_start[SAVER_ELEMS], el_end[SAVER_ELEMS];
} saver_msg_t;

typedef struct saver_s {
  cm_common_cfg_t cfg;
  const char *db_path;
  const char *sync;
  const char *db_password_file;
  int64_t db_statement_timeout_ms;
  cm_daemon_t *d;
  cm_sink_t *store;
  /* Sink upkeep (reconnect, health) on the thread pool while idle. */
  uv_timer_t check_timer;
  uv_work_t check_work;
  char ack_subject[256];

  /* FIFO of received messages not yet in a batch (loop thread only). */
  saver_msg_t *queue[SAVER_MAX_QUEUE];
  size_t qhead, qlen;

  /* The batch being committed (owned by the worker while busy). */
  uv_work_t work;
  bool busy;
  saver_msg_t *batch_msgs[SAVER_MAX_BATCH];
  cm_sink_item_t items[SAVER_MAX_BATCH];
  size_t nbatch;
  int batch_rc;
  double batch_seconds;

  bool shutting_down;
  bool exited; /* cm_daemon_exit called */

  cm_counter_t *m_chunks, *m_records, *m_dups, *m_dead, *m_errors, *m_commits;
  cm_histogram_t *m_commit_s, *m_batch_chunks;
  cm_gauge_t *m_queue;
} saver_t;

static void saver_start_batch(saver_t *s);

static void saver_exit(saver_t *s) {
  s->exited = true;
  cm_daemon_exit(s->d, 0);
}

static void saver_msg_free(saver_msg_t *sm) {
  if (sm == NULL) return;
  natsMsg_Destroy(sm->m);
  free(sm);
}

static void saver_maybe_finish(saver_t *s) {
  if (s->shutting_down && !s->busy && s->qlen == 0) {
    cm_log_info("saver drained: every received chunk is committed and acknowledged");
    saver_exit(s);
  }
}

static void saver_reply(saver_t *s, natsMsg *m, const char *body) {
  const char *reply = natsMsg_GetReply(m);
  if (reply != NULL && reply[0] != '\0')
    (void)cm_nats_publish(cm_daemon_nats(s->d), reply, NULL, body, strlen(body));
}

static void saver_commit_work(uv_work_t *w) {
  saver_t *s = w->data;
  double t0 = cm_wall_time();
  s->batch_rc = cm_sink_save_batch(s->store, s->items, s->nbatch);
  s->batch_seconds = cm_wall_time() - t0;
}

static void saver_commit_done(uv_work_t *w, int status) {
  saver_t *s = w->data;
  char body[512];
  s->busy = false;
  cm_histogram_observe(s->m_commit_s, s->batch_seconds);
  cm_histogram_observe(s->m_batch_chunks, (double)s->nbatch);
  if (s->batch_rc == 0) cm_counter_inc(s->m_commits);
  for (size_t i = 0; i < s->nbatch; i++) {
    cm_sink_item_t *it = &s->items[i];
    saver_msg_t *sm = s->batch_msgs[i];
    natsMsg *m = sm->m;
    if (it->status < 0 && it->temporary) {
      /* Not written now (the store's condition, not the chunk's): the
       * mapper keeps its result and retries; no delivery is used up. */
      cm_counter_inc(s->m_errors);
      snprintf(body, sizeof(body), "{\"ok\":false,\"retry\":true,\"error\":\"commit failed\"}");
    } else if (it->status < 0) {
      /* This chunk itself is unusable; the mapper NAKs it with our reason. */
      char esc[400];
      cm_buf_t b;
      cm_buf_init(&b, sizeof(esc));
      cm_counter_inc(s->m_errors);
      cm_log_warn("chunk rejected: %s", it->err);
      if (cm_buf_append_json_str(&b, it->err, strlen(it->err)) != 0) cm_buf_reset(&b);
      snprintf(body, sizeof(body), "{\"ok\":false,\"retry\":false,\"error\":%s}",
               b.len > 0 ? b.data : "\"?\"");
      cm_buf_free(&b);
    } else {
      Chunkmill__Ack ack = CHUNKMILL__ACK__INIT;
      char subj[256];
      ack.job = it->hdr.job;
      ack.index = it->hdr.index;
      ack.attempt = it->hdr.attempt;
      ack.records = it->records;
      ack.dead_records = it->dead;
      ack.duplicate = it->status == 1;
      ack.saver_id = (char *)cm_daemon_id(s->d);
      if (it->status == 1) {
        cm_counter_inc(s->m_dups);
      } else {
        cm_counter_inc(s->m_chunks);
        cm_counter_add(s->m_records, it->records);
        cm_counter_add(s->m_dead, it->dead);
      }
      (void)snprintf(subj, sizeof(subj), "%s", s->ack_subject);
      if (cm_daemon_publish_proto(s->d, subj, &ack.base) != 0)
        cm_log_warn("could not publish ack for chunk %llu (the mapper's reply still confirms it)",
                    (unsigned long long)it->hdr.index);
      snprintf(body, sizeof(body), "{\"ok\":true,\"duplicate\":%s,\"records\":%u,\"dead\":%u}",
               it->status == 1 ? "true" : "false", it->records, it->dead);
    }
    saver_reply(s, m, body);
    saver_msg_free(sm);
    s->batch_msgs[i] = NULL;
  }
  if (s->batch_rc != 0)
    cm_log_error("commit of %zu chunks failed: %s", s->nbatch, s->nbatch ? s->items[0].err : "");
  s->nbatch = 0;
  if (status == UV_ECANCELED) return;
  saver_start_batch(s);
  saver_maybe_finish(s);
}

static void saver_start_batch(saver_t *s) {
  size_t bytes = 0;
  if (s->busy || s->qlen == 0) return;
  s->nbatch = 0;
  while (s->qlen > 0 && s->nbatch < SAVER_MAX_BATCH) {
    saver_msg_t *sm = s->queue[s->qhead];
    size_t len = (size_t)natsMsg_GetDataLength(sm->m);
    if (s->nbatch > 0 && bytes + len > SAVER_MAX_BATCH_BYTES) break;
    s->qhead = (s->qhead + 1) % SAVER_MAX_QUEUE;
    s->qlen--;
    bytes += len;
    memset(&s->items[s->nbatch], 0, sizeof(s->items[0]));
    s->items[s->nbatch].json = natsMsg_GetData(sm->m);
    s->items[s->nbatch].len = len;
    if (sm->peek_rc == 0) {
      s->items[s->nbatch].view = &sm->v;
      s->items[s->nbatch].elems = &sm->elems;
    }
    s->batch_msgs[s->nbatch] = sm;
    s->nbatch++;
  }
  cm_gauge_set(s->m_queue, (double)s->qlen);
  s->busy = true;
  s->work.data = s;
  if (uv_queue_work(cm_daemon_loop(s->d), &s->work, saver_commit_work, saver_commit_done) != 0) {
    /* Cannot happen with a valid loop; fall back to committing inline. */
    saver_commit_work(&s->work);
    saver_commit_done(&s->work, 0);
  }
}

static void saver_on_save(void *ud, natsMsg *m) {
  saver_t *s = ud;
  saver_msg_t *sm;
  if (s->exited) {
    /* Already leaving: nothing would acknowledge it. The mapper keeps the
     * result and another saver (or this one, restarted) takes it. */
    natsMsg_Destroy(m);
    return;
  }
  if (s->qlen == SAVER_MAX_QUEUE || (sm = malloc(sizeof(*sm))) == NULL) {
    /* Flow control upstream keeps us far from this; if it happens the
     * mapper retries after its timeout. */
    saver_reply(s, m, "{\"ok\":false,\"retry\":true,\"error\":\"saver queue full\"}");
    natsMsg_Destroy(m);
    return;
  }
  sm->m = m;
  sm->elems = (cm_json_elems_t){sm->el_start, sm->el_end, SAVER_ELEMS, 0, false};
  /* A chunk that fails here is peeked again by the store, which reports
   * the reason in its own words. */
  sm->peek_rc = cm_chunk_peek_elems(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &sm->v,
                                    &sm->elems, sm->perr, sizeof(sm->perr));
  s->queue[(s->qhead + s->qlen) % SAVER_MAX_QUEUE] = sm;
  s->qlen++;
  cm_gauge_set(s->m_queue, (double)s->qlen);
  saver_start_batch(s);
}

static bool saver_ready(void *ud, char *why, size_t whylen) {
  saver_t *s = ud;
  return cm_sink_health(s->store, why, whylen);
}

static void saver_check_work(uv_work_t *w) { cm_sink_check(((saver_t *)w->data)->store); }

static void saver_check_done(uv_work_t *w, int status) {
  saver_t *s = w->data;
  s->busy = false;
  if (status == UV_ECANCELED) return;
  saver_start_batch(s);
  saver_maybe_finish(s);
}

/* About once a second while no batch runs: the sink reconnects and
 * refreshes its health, so /readyz follows the database even when no
 * chunks arrive. Shares `busy` with the batches: the sink is used by one
 * thread at a time. */
static void saver_check_tick(uv_timer_t *t) {
  saver_t *s = t->data;
  if (s->busy || s->qlen > 0 || s->exited || s->shutting_down) return;
  s->busy = true;
  s->check_work.data = s;
  if (uv_queue_work(cm_daemon_loop(s->d), &s->check_work, saver_check_work, saver_check_done) != 0)
    s->busy = false;
}

static int saver_status(void *ud, cm_buf_t *out) {
  saver_t *s = ud;
  const char *db = cm_sink_name(s->store);
  int rc = cm_buf_puts(out, ",\"db\":");
  rc |= cm_buf_append_json_str(out, db, strlen(db));
  rc |= cm_buf_printf(out,
                      ",\"chunks_saved\":%llu,\"records_saved\":%llu,\"duplicates\":%llu,"
                      "\"dead_letters\":%llu,\"queue\":%zu,\"committing\":%s",
                      (unsigned long long)cm_counter_get(s->m_chunks),
                      (unsigned long long)cm_counter_get(s->m_records),
                      (unsigned long long)cm_counter_get(s->m_dups),
                      (unsigned long long)cm_counter_get(s->m_dead), s->qlen,
                      s->busy ? "true" : "false");
  return rc;
}

static void saver_shutdown(void *ud, bool forced) {
  saver_t *s = ud;
  s->shutting_down = true;
  /* Take no new chunks; what is queued or committing still completes. */
  cm_nats_unsubscribe_all(cm_daemon_nats(s->d));
  (void)uv_timer_stop(&s->check_timer);
  if (forced) {
    /* Whatever is not committed was never acknowledged: the mappers keep
     * their results and retry elsewhere. Drop the queue. */
    while (s->qlen > 0) {
      saver_msg_free(s->queue[s->qhead]);
      s->qhead = (s->qhead + 1) % SAVER_MAX_QUEUE;
      s->qlen--;
    }
    if (!s->busy) saver_exit(s);
    return;
  }
  saver_maybe_finish(s);
}

static void saver_close(void *ud) {
  saver_t *s = ud;
  uv_close((uv_handle_t *)&s->check_timer, NULL);
  while (s->qlen > 0) {
    saver_msg_free(s->queue[s->qhead]);
    s->qhead = (s->qhead + 1) % SAVER_MAX_QUEUE;
    s->qlen--;
  }
}

static void saver_heartbeat(void *ud, Chunkmill__Heartbeat *hb) {
  saver_t *s = ud;
  hb->processed = cm_counter_get(s->m_chunks);
  hb->records = cm_counter_get(s->m_records);
  hb->errors = cm_counter_get(s->m_errors);
}

int main(int argc, char **argv) {
  static saver_t s;
  static const char *const sync_choices[] = {"normal", "full", NULL};
  cm_opt_t own[] = {
      {"db", CM_OPT_STRING, "chunkmill-results.db", 0, 0, NULL, NULL,
       "results database: a SQLite file (created if missing), or PostgreSQL as "
       "postgresql://user@host/db or a libpq keyword string (host=... dbname=...)",
       &s.db_path},
      {"db-password-file", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "PostgreSQL: file holding the password (else from the URL, PGPASSWORD or a libpq "
       "passfile/service)",
       &s.db_password_file},
      {"db-statement-timeout", CM_OPT_DURATION, "30s", 100, 3600000, NULL, NULL,
       "PostgreSQL: statement_timeout of the saver's session (a stuck statement fails the "
       "batch, which is retried)",
       &s.db_statement_timeout_ms},
      {"sync", CM_OPT_STRING, "full", 0, 0, sync_choices, NULL,
       "SQLite synchronous mode: full (an acknowledged chunk survives power loss) or normal",
       &s.sync},
  };
  cm_daemon_hooks_t hooks = {.ready = saver_ready,
                             .status = saver_status,
                             .shutdown = saver_shutdown,
                             .close = saver_close,
                             .heartbeat = saver_heartbeat};
  static const double commit_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                         0.05,   0.1,   0.25,  0.5,   1,    2.5};
  static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128};
  char err[512];
  int probe = 0, rc;
  cm_metrics_t *m;

  rc = cm_daemon_main_config("saver",
                             "saver: stores mapped chunks in SQLite or PostgreSQL, acks after commit",
                             &s.cfg, own, sizeof(own) / sizeof(own[0]), argc, argv, &probe);
  if (rc == 1) return 0;
  if (rc == 2) return probe;
  if (rc != 0) return 2;

  {
    cm_sink_opts_t so = {.db = s.db_path,
                         .sync = s.sync,
                         .password_file = s.db_password_file,
                         .statement_timeout_ms = (int)s.db_statement_timeout_ms};
    char shown[512];
    rc = cm_sink_open(&s.store, &so, err, sizeof(err));
    if (rc != 0) {
      cm_sink_redact(s.db_path, shown, sizeof(shown));
      fprintf(stderr, "saver: cannot open results database --db %s: %s\n", shown, err);
      cm_log_error("cannot open results database %s: %s", shown, err);
      return 1;
    }
    if (!cm_sink_health(s.store, err, sizeof(err)))
      cm_log_warn("results database %s not writable yet (retrying): %s", cm_sink_name(s.store),
                  err);
  }
  if (strcmp(s.cfg.protocol, "app9") == 0) { /* the original example's protocol */
    rc = cm_saver_app9_run(&s.cfg, s.store, cm_sink_name(s.store));
    cm_sink_close(s.store);
    return rc;
  }
  if (cm_daemon_create(&s.d, "saver", &s.cfg, &hooks, &s) != 0) {
    cm_sink_close(s.store);
    return 1;
  }
  (void)uv_timer_init(cm_daemon_loop(s.d), &s.check_timer);
  s.check_timer.data = &s;
  (void)uv_timer_start(&s.check_timer, saver_check_tick, 1000, 1000);
  m = cm_daemon_metrics(s.d);
  s.m_chunks = cm_metrics_counter(m, "chunkmill_saver_chunks_saved_total",
                                  "Chunks committed for the first time.", NULL);
  s.m_records = cm_metrics_counter(m, "chunkmill_saver_records_saved_total",
                                   "Records committed.", NULL);
  s.m_dups = cm_metrics_counter(m, "chunkmill_saver_duplicate_chunks_total",
                                "Chunks received again after being saved (acknowledged, not rewritten).",
                                NULL);
  s.m_dead = cm_metrics_counter(m, "chunkmill_saver_dead_letters_total",
                                "Records stored as dead letters.", NULL);
  s.m_errors = cm_metrics_counter(m, "chunkmill_saver_errors_total",
                                  "Chunks rejected or not committed.", NULL);
  s.m_commits = cm_metrics_counter(m, "chunkmill_saver_commits_total", "Transactions committed.",
                                   NULL);
  s.m_commit_s = cm_metrics_histogram(m, "chunkmill_saver_commit_seconds",
                                      "Time to write and commit one batch.", NULL, commit_bounds,
                                      sizeof(commit_bounds) / sizeof(commit_bounds[0]));
  s.m_batch_chunks = cm_metrics_histogram(m, "chunkmill_saver_batch_chunks",
                                          "Chunks per committed batch (group commit).", NULL,
                                          batch_bounds,
                                          sizeof(batch_bounds) / sizeof(batch_bounds[0]));
  s.m_queue = cm_metrics_gauge(m, "chunkmill_saver_queue_chunks",
                               "Chunks received and waiting for the next commit.", NULL);
  (void)cm_subject(s.ack_subject, sizeof(s.ack_subject), s.cfg.prefix, "ack");
  {
    char subj[256];
    (void)cm_subject(subj, sizeof(subj), s.cfg.prefix, "save");
    if (cm_nats_subscribe(cm_daemon_nats(s.d), subj, "savers", saver_on_save, &s, NULL) != 0) {
      cm_log_error("cannot subscribe to %s", subj);
      cm_daemon_exit(s.d, 1);
    }
  }
  cm_log_info("saver ready to store into %s", cm_sink_name(s.store));
  rc = cm_daemon_run(s.d);
  cm_daemon_destroy(s.d);
  cm_sink_close(s.store);
  return rc;
}
