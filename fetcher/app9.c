/* app9.c - the fetcher in the original example's protocol (see app9.h).
 *
 * Flow control: the original fetcher sends one chunk per "im_listening".
 * Here every "im_listening" that arrives (an answer to our
 * "anyone_listening", or an idle mapper announcing itself) lets exactly one
 * chunk go out on mapper_data; an "im_listening" that finds nothing to send
 * is not saved up. "anyone_listening" is published when there is something
 * to send and nothing has gone out for APP9_ASK_MS (start-up, after an
 * outage, when a lease expired): idle mappers answer it, busy ones announce
 * themselves when they finish.
 *
 * Choice of the next chunk: the lowest-index unconfirmed chunk that may be
 * sent (never sent, or sent more than --ack-wait ago), else a new chunk from
 * the source. The original picks at random among all unconfirmed chunks,
 * including ones just sent; that only adds duplicates.
 *
 * No chunk is ever declared dead in this mode: without naks there is no
 * failure signal, only silence, and the original retries until every chunk
 * is confirmed (--max-deliver is ignored). */
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
#include "ledger_health.h"

#define APP9_TICK_MS 100
#define APP9_FLUSH_MS 50
#define APP9_ASK_MS 100
#define APP9_NREC_SLOTS 65536
#define APP9_MAX_CHUNK_BYTES (256u * 1024 * 1024)

typedef struct nrec_slot_s {
  uint64_t index;
  uint32_t nrec;
  bool used;
} nrec_slot_t;

typedef struct app9_fetch_s {
  cm_daemon_t *d;
  cm_fetch_cfg_t cfg;
  cm_ledger_t *ledger;
  cm_source_t *src;
  bool random_access;
  int64_t total_chunks; /* -1 unknown */
  uint32_t chunk_size;

  uv_timer_t tick, flush, progress;
  bool timers_started;
  cm_buf_t buf, bad;
  /* Records per chunk, remembered when it is built: processed_data carries
   * only the index. A miss (chunk sent before a restart) counts chunk_size. */
  nrec_slot_t nrec[APP9_NREC_SLOTS];

  int64_t last_send_ms, last_ask_ms;
  double start_wall;
  uint64_t records_at_start, last_progress_records;
  int64_t last_progress_ms;
  bool complete, stopping, fatal;
  cm_ledger_health_t health; /* failing: nothing is sent, completion waits */
  bool exit_when_flushed;    /* graceful shutdown waits for the ledger */

  cm_counter_t *m_sent, *m_resent, *m_acked, *m_dup_acks, *m_records, *m_expired, *m_listening,
      *m_unused_listening, *m_asks, *m_bad;
  cm_gauge_t *m_complete;
} app9_fetch_t;

static int64_t a9_now(app9_fetch_t *a) { return cm_daemon_now_ms(a->d); }

static int a9_flush_now(app9_fetch_t *a) { return cm_ledger_health_flush(&a->health, a9_now(a)); }

static void a9_fatal(app9_fetch_t *a, const char *what) {
  if (a->fatal) return;
  a->fatal = true;
  a->stopping = true;
  cm_log_error("%s", what);
  fprintf(stderr, "fetcher: %s\n", what);
  if (a9_flush_now(a) != 0) cm_log_error("ledger flush failed: %s", a->health.err);
  cm_daemon_exit(a->d, 1);
}

static void a9_nrec_put(app9_fetch_t *a, uint64_t index, uint32_t n) {
  nrec_slot_t *s = &a->nrec[index % APP9_NREC_SLOTS];
  s->index = index;
  s->nrec = n;
  s->used = true;
}

static uint32_t a9_nrec_get(app9_fetch_t *a, uint64_t index) {
  nrec_slot_t *s = &a->nrec[index % APP9_NREC_SLOTS];
  return (s->used && s->index == index) ? s->nrec : a->chunk_size;
}

/* ---- completion and progress ---- */

static void a9_check_complete(app9_fetch_t *a) {
  cm_job_info_t info;
  double secs;
  uint64_t run_records;
  if (a->complete || !cm_ledger_job_complete(a->ledger)) return;
  /* Complete only once the ledger holds it (the flush timer retries). */
  if (a9_flush_now(a) != 0) return;
  a->complete = true;
  cm_gauge_set(a->m_complete, 1);
  cm_ledger_info(a->ledger, &info);
  secs = cm_wall_time() - a->start_wall;
  run_records = info.records_done - a->records_at_start;
  printf("job \"%s\" complete: %" PRIu64 " records in %" PRIu64 " chunks, %" PRIu64
         " redeliveries, %.2f s, %.0f records/s (protocol app9)\n",
         a->cfg.job, info.records_done, info.done_chunks, info.redeliveries, secs,
         secs > 0 ? (double)run_records / secs : 0.0);
  fflush(stdout);
  cm_log_info("job %s complete (app9): %" PRIu64 " records, %" PRIu64 " chunks, %" PRIu64
              " redeliveries, %.2f s",
              a->cfg.job, info.records_done, info.done_chunks, info.redeliveries, secs);
  if (a->cfg.once) {
    a->stopping = true;
    cm_daemon_exit(a->d, 0);
  }
}

static void a9_progress(uv_timer_t *t) {
  app9_fetch_t *a = t->data;
  cm_job_info_t info;
  int64_t now = a9_now(a);
  double dt = (double)(now - a->last_progress_ms) / 1000.0;
  double rate;
  if (a->complete) return;
  cm_ledger_info(a->ledger, &info);
  rate = dt > 0 ? (double)(info.records_done - a->last_progress_records) / dt : 0;
  a->last_progress_records = info.records_done;
  a->last_progress_ms = now;
  printf("progress: %" PRIu64 " chunks done, %" PRIu64 " records, %.0f records/s, in flight %zu,"
         " redeliveries %" PRIu64 " (protocol app9)\n",
         info.done_chunks, info.records_done, rate, cm_ledger_leased_count(a->ledger),
         info.redeliveries);
  fflush(stdout);
}

/* ---- choosing and building chunks ---- */

/* Creates chunk next_index from the source. 1 with *index, 0 when the
 * source is exhausted (or on a fatal error). */
static int a9_new_chunk(app9_fetch_t *a, uint64_t *index) {
  cm_job_info_t info;
  cm_ledger_info(a->ledger, &info);
  if (info.source_done) return 0;
  if (a->random_access) {
    uint64_t idx = info.next_index;
    bool last = a->total_chunks >= 0 && (int64_t)idx + 1 >= a->total_chunks;
    if (a->total_chunks == 0) {
      if (cm_ledger_set_source_done(a->ledger) != 0) a9_fatal(a, "ledger write failed");
      return 0;
    }
    if (cm_ledger_add_chunk(a->ledger, idx, NULL, 0, 0, 0, last) != 0) {
      a9_fatal(a, "ledger: cannot add chunk");
      return 0;
    }
    *index = idx;
    return 1;
  } else {
    uint32_t nrec = 0, nbad = 0;
    int64_t pos = 0;
    char err[256] = "";
    int rc;
    cm_buf_reset(&a->buf);
    cm_buf_reset(&a->bad);
    if (cm_buf_puts(&a->buf, "[") != 0) return 0;
    rc = cm_source_next(a->src, &a->buf, &nrec, &a->bad, &nbad, &pos, err, sizeof(err));
    if (rc == 1) {
      if (cm_ledger_set_source_done(a->ledger) != 0) a9_fatal(a, "ledger write failed");
      return 0;
    }
    if (rc < 0) {
      char msg[400];
      snprintf(msg, sizeof(msg), "source error: %s", err);
      a9_fatal(a, msg);
      return 0;
    }
    /* Records that are not JSON cannot travel in the app9 body (it has no
     * place for dead letters the original understands): log them. */
    if (nbad > 0)
      cm_log_warn("chunk %" PRIu64 ": %u source records are not valid JSON and are skipped: %.*s",
                  info.next_index, nbad, (int)(a->bad.len > 300 ? 300 : a->bad.len),
                  a->bad.data);
    if (cm_buf_puts(&a->buf, "]") != 0) {
      a9_fatal(a, "chunk too large");
      return 0;
    }
    if (cm_ledger_add_chunk(a->ledger, info.next_index, a->buf.data, a->buf.len, pos,
                            cm_source_line(a->src), false) != 0) {
      a9_fatal(a, "ledger: cannot store chunk");
      return 0;
    }
    a9_nrec_put(a, info.next_index, nrec);
    /* In the ledger before it is first sent (a sequential source may not
     * give it again); if that fails it waits, pending, for the ledger. */
    if (a9_flush_now(a) != 0) return 0;
    *index = info.next_index;
    return 1;
  }
}

/* The app9 body of chunk `index` into a->buf: {"index":N,"data":[...]}. */
static int a9_build(app9_fetch_t *a, uint64_t index) {
  int rc;
  cm_buf_reset(&a->buf);
  if ((rc = cm_buf_printf(&a->buf, "{\"index\":%" PRIu64 ",\"data\":", index)) != 0) return rc;
  if (a->random_access) {
    uint32_t nrec = 0;
    if ((rc = cm_buf_puts(&a->buf, "[")) != 0) return rc;
    if ((rc = cm_source_chunk(a->src, index, &a->buf, &nrec)) != 0) return rc;
    a9_nrec_put(a, index, nrec);
    return cm_buf_puts(&a->buf, "]}");
  }
  /* Stored payload: `[records]` (chunks stored by a native run may go on
   * with `,"dead":[...]`, an extra key app9 readers ignore). */
  {
    size_t mark = a->buf.len;
    if ((rc = cm_ledger_payload(a->ledger, index, &a->buf)) != 0) return rc;
    if (a->buf.len == mark || a->buf.data[mark] != '[') return -EINVAL;
    return cm_buf_puts(&a->buf, "}");
  }
}

/* Whether a chunk could be sent now (without changing anything but the
 * ledger's due queue). */
static bool a9_has_work(app9_fetch_t *a, int64_t now) {
  cm_job_info_t info;
  uint64_t index;
  if ((int64_t)cm_ledger_leased_count(a->ledger) >= a->cfg.max_inflight) return false;
  if (cm_ledger_next_due(a->ledger, now, &index) == 1) return true;
  cm_ledger_info(a->ledger, &info);
  return !info.source_done;
}

/* Sends one chunk. Returns 1 if one went out, 0 if there was nothing to
 * send (or it could not be sent). */
static int a9_send_one(app9_fetch_t *a) {
  int64_t now;
  uint64_t index;
  uint32_t attempt = 0;
  int rc;
  if (a->stopping || a->complete || a->health.failing || !cm_nats_connected(cm_daemon_nats(a->d)))
    return 0;
  if ((int64_t)cm_ledger_leased_count(a->ledger) >= a->cfg.max_inflight) return 0;
  now = a9_now(a);
  if (cm_ledger_next_due(a->ledger, now, &index) != 1 && a9_new_chunk(a, &index) != 1) return 0;
  /* Leased before it is published: the ledger is what makes a chunk that
   * is already out wait --ack-wait before it is sent again. */
  if (cm_ledger_lease(a->ledger, index, cm_daemon_id(a->d), now + a->cfg.ack_wait_ms, &attempt) !=
      0) {
    a9_fatal(a, "ledger: cannot lease a pending chunk");
    return 0;
  }
  rc = a9_build(a, index);
  if (rc == 0)
    rc = cm_nats_publish(cm_daemon_nats(a->d), CM_APP9_SUBJ_MAPPER_DATA, NULL, a->buf.data, a->buf.len);
  if (rc != 0) {
    cm_log_warn("could not send chunk %" PRIu64 " (%s): will retry", index, strerror(-rc));
    (void)cm_ledger_release(a->ledger, index, attempt, now + 100, "dispatch failed", 0);
    return 0;
  }
  a->last_send_ms = now;
  cm_counter_inc(a->m_sent);
  if (attempt > 1) cm_counter_inc(a->m_resent);
  return 1;
}

static void a9_ask(app9_fetch_t *a) {
  static const char q[] = "anyone_listening";
  a->last_ask_ms = a9_now(a);
  if (cm_nats_publish(cm_daemon_nats(a->d), CM_APP9_SUBJ_STATUS, NULL, q, sizeof(q) - 1) == 0)
    cm_counter_inc(a->m_asks);
}

/* ---- NATS handlers ---- */

static void a9_on_status(void *ud, natsMsg *msg) {
  app9_fetch_t *a = ud;
  if (cm_app9_body_is(msg, "im_listening")) {
    cm_counter_inc(a->m_listening);
    if (a9_send_one(a) == 0) cm_counter_inc(a->m_unused_listening);
  }
  /* "anyone_listening" is our own question (or another fetcher's). */
  natsMsg_Destroy(msg);
}

/* Strict decimal index (optionally quoted, surrounding whitespace allowed).
 * 0 or -EINVAL. */
static int a9_parse_index(const char *p, int len, uint64_t *out) {
  uint64_t v = 0;
  int digits = 0;
  while (len > 0 && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++, len--;
  while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\n' || p[len - 1] == '\r' ||
                     p[len - 1] == '\t'))
    len--;
  if (len >= 2 && p[0] == '"' && p[len - 1] == '"') p++, len -= 2;
  for (; len > 0; p++, len--) {
    if (*p < '0' || *p > '9' || digits >= 19) return -EINVAL;
    v = v * 10 + (uint64_t)(*p - '0');
    digits++;
  }
  if (digits == 0) return -EINVAL;
  *out = v;
  return 0;
}

static void a9_on_processed(void *ud, natsMsg *msg) {
  app9_fetch_t *a = ud;
  uint64_t index;
  int rc;
  if (a9_parse_index(natsMsg_GetData(msg), natsMsg_GetDataLength(msg), &index) != 0) {
    cm_counter_inc(a->m_bad);
    cm_log_warn("processed_data: ignoring a body that is not a decimal index (%d bytes)",
                natsMsg_GetDataLength(msg));
    goto out;
  }
  rc = cm_ledger_ack(a->ledger, index, 0, a9_nrec_get(a, index));
  if (rc == 1) {
    cm_counter_inc(a->m_acked);
    cm_counter_add(a->m_records, a9_nrec_get(a, index));
    a9_check_complete(a);
  } else if (rc == 0) {
    cm_counter_inc(a->m_dup_acks);
  } else {
    a9_fatal(a, "ledger: cannot record a confirmation");
  }
out:
  natsMsg_Destroy(msg);
}

/* ---- timers ---- */

static void a9_release_expired(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  app9_fetch_t *a = ud;
  /* --ack-wait has passed already: due at once, never dead. */
  (void)cm_ledger_release(a->ledger, index, attempt, a9_now(a), "no confirmation within --ack-wait",
                          0);
}

static void a9_tick(uv_timer_t *t) {
  app9_fetch_t *a = t->data;
  int64_t now = a9_now(a);
  int n;
  if (a->stopping) return;
  if (cm_nats_connected(cm_daemon_nats(a->d))) {
    n = cm_ledger_each_expired(a->ledger, now, a9_release_expired, a);
    if (n > 0) {
      cm_counter_add(a->m_expired, (uint64_t)n);
      cm_log_info("%d chunks not confirmed within --ack-wait: sending them again", n);
    }
    a9_check_complete(a);
    if (!a->complete && now - a->last_send_ms >= APP9_ASK_MS &&
        now - a->last_ask_ms >= APP9_ASK_MS && a9_has_work(a, now))
      a9_ask(a);
  }
}

static void a9_flush(uv_timer_t *t) {
  app9_fetch_t *a = t->data;
  bool was_failing = a->health.failing;
  if (a9_flush_now(a) != 0) return;
  if (a->exit_when_flushed) {
    a->exit_when_flushed = false;
    cm_log_info("ledger written: stopping");
    cm_daemon_exit(a->d, 0);
    return;
  }
  if (was_failing && !a->stopping) {
    a9_check_complete(a);
    if (!a->complete) a9_ask(a);
  }
}

static bool a9_ready(void *ud, char *why, size_t whylen) {
  app9_fetch_t *a = ud;
  return cm_ledger_health_ready(&a->health, why, whylen);
}

/* ---- daemon hooks ---- */

static void a9_on_nats(void *ud, cm_nats_event_t ev) {
  app9_fetch_t *a = ud;
  if (ev == CM_NATS_CONNECTED && !a->stopping && !a->complete) a9_ask(a);
}

static int a9_status(void *ud, cm_buf_t *out) {
  app9_fetch_t *a = ud;
  cm_job_info_t info;
  int rc;
  cm_ledger_info(a->ledger, &info);
  rc = cm_buf_puts(out, ",\"protocol\":\"app9\",\"job\":{\"name\":");
  rc |= cm_buf_append_json_str(out, a->cfg.job, strlen(a->cfg.job));
  rc |= cm_buf_printf(out,
                      ",\"chunks_created\":%" PRIu64 ",\"done_chunks\":%" PRIu64
                      ",\"records_done\":%" PRIu64 ",\"redeliveries\":%" PRIu64
                      ",\"inflight\":%zu,\"pending\":%zu,\"complete\":%s}"
                      ",\"app9\":{\"sent\":%" PRIu64 ",\"resent\":%" PRIu64
                      ",\"im_listening\":%" PRIu64 ",\"im_listening_unused\":%" PRIu64
                      ",\"anyone_listening\":%" PRIu64 ",\"confirmations\":%" PRIu64
                      ",\"duplicate_confirmations\":%" PRIu64 ",\"expired\":%" PRIu64 "}",
                      info.next_index, info.done_chunks, info.records_done, info.redeliveries,
                      cm_ledger_leased_count(a->ledger), cm_ledger_pending_count(a->ledger),
                      a->complete ? "true" : "false", cm_counter_get(a->m_sent),
                      cm_counter_get(a->m_resent), cm_counter_get(a->m_listening),
                      cm_counter_get(a->m_unused_listening), cm_counter_get(a->m_asks),
                      cm_counter_get(a->m_acked), cm_counter_get(a->m_dup_acks),
                      cm_counter_get(a->m_expired));
  return rc;
}

static void a9_shutdown(void *ud, bool forced) {
  app9_fetch_t *a = ud;
  /* Stop sending; persist. Chunks out stay leased in the file and are
   * pending again at the next start. */
  a->stopping = true;
  if (a9_flush_now(a) == 0) {
    a->exit_when_flushed = false;
    cm_daemon_exit(a->d, 0);
    return;
  }
  if (!forced) {
    a->exit_when_flushed = true; /* the flush timer keeps trying */
    cm_log_warn("stopping: waiting for the ledger to become writable: %s", a->health.err);
    return;
  }
  a->exit_when_flushed = false;
  cm_log_error("stopping with ledger changes not written (they are redone at the next start): %s",
               a->health.err);
  fprintf(stderr, "fetcher: ledger cannot be written: %s\n", a->health.err);
  cm_daemon_exit(a->d, 1);
}

static void a9_close(void *ud) {
  app9_fetch_t *a = ud;
  if (a9_flush_now(a) != 0) cm_log_error("ledger flush failed at close: %s", a->health.err);
  if (!a->timers_started) return;
  uv_close((uv_handle_t *)&a->tick, NULL);
  uv_close((uv_handle_t *)&a->flush, NULL);
  uv_close((uv_handle_t *)&a->progress, NULL);
}

static void a9_heartbeat(void *ud, Chunkmill__Heartbeat *hb) {
  app9_fetch_t *a = ud;
  cm_job_info_t info;
  cm_ledger_info(a->ledger, &info);
  hb->processed = info.done_chunks;
  hb->records = info.records_done;
}

static void a9_metrics(app9_fetch_t *a) {
  cm_metrics_t *m = cm_daemon_metrics(a->d);
  a->m_sent = cm_metrics_counter(m, "chunkmill_fetcher_chunks_dispatched_total",
                                 "Chunks sent to mappers (every attempt).", NULL);
  a->m_resent = cm_metrics_counter(m, "chunkmill_fetcher_redeliveries_total",
                                   "Dispatches of a chunk after its first attempt.", NULL);
  a->m_acked = cm_metrics_counter(m, "chunkmill_fetcher_chunks_acked_total",
                                  "Chunks confirmed saved (first ack).", NULL);
  a->m_dup_acks = cm_metrics_counter(m, "chunkmill_fetcher_duplicate_acks_total",
                                     "Acks for chunks already done.", NULL);
  a->m_records = cm_metrics_counter(m, "chunkmill_fetcher_records_acked_total",
                                    "Records confirmed saved.", NULL);
  a->m_expired = cm_metrics_counter(m, "chunkmill_fetcher_lease_expired_total",
                                    "Leases that reached --ack-wait.", NULL);
  a->m_listening = cm_metrics_counter(m, "chunkmill_fetcher_app9_im_listening_total",
                                      "app9: im_listening messages received.", NULL);
  a->m_unused_listening =
      cm_metrics_counter(m, "chunkmill_fetcher_app9_im_listening_unused_total",
                         "app9: im_listening messages that found nothing to send.", NULL);
  a->m_asks = cm_metrics_counter(m, "chunkmill_fetcher_app9_anyone_listening_total",
                                 "app9: anyone_listening messages published.", NULL);
  a->m_bad = cm_metrics_counter(m, "chunkmill_fetcher_app9_invalid_confirmations_total",
                                "app9: processed_data bodies that were not an index.", NULL);
  a->m_complete = cm_metrics_gauge(m, "chunkmill_fetcher_job_complete", "1 once the job is done.",
                                   NULL);
}

int cm_fetch_app9_run(const cm_common_cfg_t *cfg, const cm_fetch_cfg_t *fc, cm_ledger_t *ledger,
                      cm_source_t *src) {
  cm_daemon_hooks_t hooks = {.on_nats = a9_on_nats,
                             .ready = a9_ready,
                             .status = a9_status,
                             .shutdown = a9_shutdown,
                             .close = a9_close,
                             .heartbeat = a9_heartbeat};
  app9_fetch_t *a = calloc(1, sizeof(*a));
  cm_job_info_t info;
  uv_loop_t *loop;
  cm_nats_t *n;
  int rc;
  if (a == NULL) return 1;
  a->cfg = *fc;
  a->ledger = ledger;
  a->src = src;
  a->random_access = cm_source_random_access(src);
  a->total_chunks = cm_source_total_chunks(src);
  cm_buf_init(&a->buf, APP9_MAX_CHUNK_BYTES);
  cm_buf_init(&a->bad, APP9_MAX_CHUNK_BYTES / 2);
  cm_ledger_info(ledger, &info);
  a->chunk_size = info.chunk_size;
  a->records_at_start = a->last_progress_records = info.records_done;
  a->start_wall = cm_wall_time();
  cm_ledger_health_init(&a->health, ledger);
  if (cm_daemon_create(&a->d, "fetcher", cfg, &hooks, a) != 0) {
    rc = 1;
    goto out;
  }
  loop = cm_daemon_loop(a->d);
  n = cm_daemon_nats(a->d);
  a9_metrics(a);
  a->last_progress_ms = a9_now(a);
  if (cm_nats_subscribe(n, CM_APP9_SUBJ_STATUS, NULL, a9_on_status, a, NULL) != 0 ||
      cm_nats_subscribe(n, CM_APP9_SUBJ_PROCESSED, NULL, a9_on_processed, a, NULL) != 0) {
    cm_log_error("cannot subscribe to %s / %s", CM_APP9_SUBJ_STATUS, CM_APP9_SUBJ_PROCESSED);
    cm_daemon_exit(a->d, 1);
  } else {
    (void)uv_timer_init(loop, &a->tick);
    (void)uv_timer_init(loop, &a->flush);
    (void)uv_timer_init(loop, &a->progress);
    a->tick.data = a->flush.data = a->progress.data = a;
    a->timers_started = true;
    (void)uv_timer_start(&a->tick, a9_tick, APP9_TICK_MS, APP9_TICK_MS);
    (void)uv_timer_start(&a->flush, a9_flush, APP9_FLUSH_MS, APP9_FLUSH_MS);
    if (fc->progress_ms > 0)
      (void)uv_timer_start(&a->progress, a9_progress, (uint64_t)fc->progress_ms,
                           (uint64_t)fc->progress_ms);
    cm_log_info("fetcher in app9 mode: job %s, chunks on %s, confirmations on %s, ack wait %lld ms",
                fc->job, CM_APP9_SUBJ_MAPPER_DATA, CM_APP9_SUBJ_PROCESSED, (long long)fc->ack_wait_ms);
    /* A resumed job may be complete already. */
    a9_check_complete(a);
  }
  rc = cm_daemon_run(a->d);
  cm_daemon_destroy(a->d);
out:
  cm_buf_free(&a->buf);
  cm_buf_free(&a->bad);
  free(a);
  return rc;
}
