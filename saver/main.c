/* saver - stores mapped chunks and confirms them after COMMIT.
 *
 * Mapped chunks arrive by request/reply on P.save (queue group "savers").
 * They queue on the loop thread; one batch at a time is committed on a
 * thread-pool thread (group commit: whatever arrived while the previous
 * commit ran goes into the next transaction). Only after COMMIT does the
 * saver reply to the mapper and publish an Ack to the fetcher. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/daemon.h"
#include "app9.h"
#include "cm/lease.h"
#include "cm/log.h"
#include "cm/reject.h"
#include "sink.h"
#include "store_health.h"

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
  natsSubscription *save_sub;
  const char *lease_key_file;
  cm_lease_key_t *lease_key; /* NULL: leases not authenticated */
  cm_reject_t *rej;

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
  bool sub_drained; /* no more save requests will arrive */
  bool exited; /* cm_daemon_exit called */
  /* Rate-limited logging of failed commits (both backends); readiness
   * comes from the sink (cm_sink_health). */
  cm_store_health_t health;

  cm_counter_t *m_chunks, *m_records, *m_dups, *m_dead, *m_errors, *m_commits, *m_replaced;
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
  if (s->shutting_down && s->sub_drained && !s->busy && s->qlen == 0) {
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

/* Body of a "not saved now, send it again" reply: the mapper keeps its
 * result and retries with backoff, without using up a delivery. */
static void saver_retry_body(char *body, size_t len, const char *why) {
  cm_buf_t b;
  cm_buf_init(&b, 400);
  if (cm_buf_append_json_str(&b, why, strlen(why)) != 0) cm_buf_reset(&b);
  snprintf(body, len, "{\"ok\":false,\"retry\":true,\"temporary\":true,\"error\":%s}",
           b.len > 0 ? b.data : "\"?\"");
  cm_buf_free(&b);
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
      /* Not written now (the store's condition, not the chunk's; a batch
       * that did not commit gives every chunk that was fine the batch's
       * error): the mapper keeps its result and retries; no delivery is
       * used up. */
      cm_counter_inc(s->m_errors);
      saver_retry_body(body, sizeof(body), it->err[0] ? it->err : "commit failed");
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
      /* What is stored now (for a duplicate, possibly a later redo). */
      ack.version = it->version;
      ack.redo = it->redo;
      char mac[CM_LEASE_TOKEN_HEX + 1];
      if (s->lease_key != NULL) {
        cm_lease_ack_mac(s->lease_key, ack.job, ack.index, ack.attempt, ack.redo, ack.records,
                         ack.dead_records, ack.duplicate, ack.version, mac);
        ack.mac = mac;
      }
      if (it->status == 1) {
        cm_counter_inc(s->m_dups);
      } else {
        cm_counter_inc(s->m_chunks);
        if (it->replaced) cm_counter_inc(s->m_replaced);
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
  if (s->nbatch > 0)
    cm_store_health_note(&s->health, s->batch_rc, cm_sink_batch_error(s->items, s->nbatch),
                         "the mappers retry", cm_daemon_now_ms(s->d));
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
  if (sm->peek_rc == 0) {
    /* JSON is UTF-8: a mapper turns records that are not into dead letters,
     * so bytes that are not UTF-8 here come from a broken or hostile
     * client. The results table only ever holds valid JSON text. */
    size_t len = (size_t)natsMsg_GetDataLength(m);
    size_t bad = cm_utf8_check(natsMsg_GetData(m), len);
    if (bad != len) {
      char body[200];
      cm_reject(s->rej, cm_daemon_now_ms(s->d), "not_utf8",
                "mapped chunk %llu of job %.64s is not valid UTF-8 (byte %zu)",
                (unsigned long long)sm->v.hdr.index, sm->v.hdr.job, bad);
      cm_counter_inc(s->m_errors);
      snprintf(body, sizeof(body),
               "{\"ok\":false,\"retry\":false,\"error\":\"chunk is not valid UTF-8 (byte %zu)\"}",
               bad);
      saver_reply(s, m, body);
      saver_msg_free(sm);
      return;
    }
  }
  if (s->lease_key != NULL && sm->peek_rc == 0 &&
      !cm_lease_verify(s->lease_key, sm->v.hdr.job, sm->v.hdr.index, sm->v.hdr.attempt,
                       sm->v.hdr.redo, sm->v.hdr.mapper, sm->v.hdr.lease)) {
    /* Not the answer to a lease the fetcher issued (forged, or the fetcher
     * and this saver hold different keys): store nothing. */
    cm_reject(s->rej, cm_daemon_now_ms(s->d), sm->v.hdr.lease[0] ? "lease_forged" : "lease_missing",
              "mapped chunk %llu attempt %u of job %.64s (mapper %.64s) %s",
              (unsigned long long)sm->v.hdr.index, sm->v.hdr.attempt, sm->v.hdr.job,
              sm->v.hdr.mapper,
              sm->v.hdr.lease[0] ? "has a lease token that does not verify (a forgery, or a "
                                   "fetcher with another --lease-key-file)"
                                 : "carries no lease token (a forgery, or a fetcher without "
                                   "--lease-key-file)");
    cm_counter_inc(s->m_errors);
    saver_reply(s, m, "{\"ok\":false,\"retry\":false,\"error\":\"lease not authentic: the "
                      "saver stores only chunks leased by the fetcher (same --lease-key-file)\"}");
    saver_msg_free(sm);
    return;
  }
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

/* Loop thread: the save subscription delivered its last message. */
static void saver_sub_drained(void *ud) {
  saver_t *s = ud;
  if (s->sub_drained) return; /* a forced stop got there first */
  s->sub_drained = true;
  saver_maybe_finish(s);
}

static void saver_shutdown(void *ud, bool forced) {
  saver_t *s = ud;
  bool first = !s->shutting_down;
  s->shutting_down = true;
  /* Take no new chunks, but every request nats.c already received for us
   * is still delivered, committed and answered (a dropped one would leave
   * its mapper waiting --save-timeout): drain, not unsubscribe. */
  if (first && !forced &&
      cm_nats_drain_sub(cm_daemon_nats(s->d), s->save_sub, cm_daemon_cfg(s->d)->drain_timeout_ms,
                        saver_sub_drained, s) == 0)
    return;
  cm_nats_unsubscribe_all(cm_daemon_nats(s->d));
  (void)uv_timer_stop(&s->check_timer);
  s->sub_drained = true;
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
#ifdef M_TRIM_THRESHOLD
  /* The saver holds a batch of ~55 KB chunks until it is committed, then
   * frees it: with glibc's default (dynamic) thresholds the freed top of
   * the heap went back to the kernel after each batch and was faulted in
   * again for the next one. Keeping up to 64 MB of it cut the saver's CPU
   * per record by ~10% (1M identity, 5 interleaved runs each) for 1-3 MB
   * more peak RSS: it no longer shrinks between batches. */
  (void)mallopt(M_TRIM_THRESHOLD, 64 << 20);
  (void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
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
      {"lease-key-file", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "file holding the key shared with the fetcher: only chunks with a lease token it issued "
       "are stored, acks are signed (unset: leases are not authenticated)",
       &s.lease_key_file},
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
                             "stores mapped chunks in SQLite or PostgreSQL, acks after commit",
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
      /* SQLite's err names the file ("cannot open results database X:
       * ..."); PostgreSQL's names the reason only, so add the database
       * (password redacted). */
      if (cm_sink_is_postgres(s.db_path)) {
        cm_sink_redact(s.db_path, shown, sizeof(shown));
        fprintf(stderr, "saver: cannot open results database --db %s: %s\n", shown, err);
        cm_log_error("cannot open results database %s: %s", shown, err);
      } else {
        fprintf(stderr, "saver: --db: %s\n", err);
        cm_log_error("--db: %s", err);
      }
      return 1;
    }
    if (!cm_sink_health(s.store, err, sizeof(err)))
      cm_log_warn("results database %s not writable yet (retrying): %s", cm_sink_name(s.store),
                  err);
  }
  cm_store_health_init(&s.health, cm_sink_name(s.store));
  if (strcmp(s.cfg.protocol, "app9") == 0) { /* the original example's protocol */
    cm_log_warn("--protocol app9: leases are not authenticated (the app9 wire format has no "
                "room for a lease token)");
    rc = cm_saver_app9_run(&s.cfg, s.store, cm_sink_name(s.store));
    cm_sink_close(s.store);
    return rc;
  }
  if (cm_lease_key_option(&s.lease_key, s.lease_key_file, err, sizeof(err)) != 0) {
    fprintf(stderr, "saver: invalid value for --lease-key-file: %s\n", err);
    cm_log_error("%s", err);
    cm_sink_close(s.store);
    return 2;
  }
  if (cm_daemon_create(&s.d, "saver", &s.cfg, &hooks, &s) != 0) {
    cm_sink_close(s.store);
    cm_lease_key_free(s.lease_key);
    return 1;
  }
  m = cm_daemon_metrics(s.d);
  if (cm_reject_create(&s.rej, m) != 0) {
    cm_daemon_destroy(s.d);
    cm_sink_close(s.store);
    cm_lease_key_free(s.lease_key);
    return 1;
  }
  (void)uv_timer_init(cm_daemon_loop(s.d), &s.check_timer);
  s.check_timer.data = &s;
  (void)uv_timer_start(&s.check_timer, saver_check_tick, 1000, 1000);
  s.m_chunks = cm_metrics_counter(m, "chunkmill_saver_chunks_saved_total",
                                  "Chunks committed for the first time.", NULL);
  s.m_records = cm_metrics_counter(m, "chunkmill_saver_records_saved_total",
                                   "Records committed.", NULL);
  s.m_dups = cm_metrics_counter(m, "chunkmill_saver_duplicate_chunks_total",
                                "Chunks received again after being saved (acknowledged, not rewritten).",
                                NULL);
  s.m_replaced = cm_metrics_counter(
      m, "chunkmill_saver_chunks_replaced_total",
      "Chunks saved by a redo (a higher redo generation): their earlier rows were replaced.", NULL);
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
    if (cm_nats_subscribe(cm_daemon_nats(s.d), subj, "savers", saver_on_save, &s, &s.save_sub) !=
        0) {
      cm_log_error("cannot subscribe to %s", subj);
      cm_daemon_exit(s.d, 1);
    }
  }
  cm_log_info("saver ready to store into %s", cm_sink_name(s.store));
  rc = cm_daemon_run(s.d);
  cm_daemon_destroy(s.d);
  cm_sink_close(s.store);
  cm_reject_destroy(s.rej);
  cm_lease_key_free(s.lease_key);
  return rc;
}
