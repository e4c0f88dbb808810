/* fetch.c - the fetcher's dispatcher.
 *
 * Inputs (all on the loop thread, from NATS via the handoff):
 *   P.credit     a mapper can take N more chunks     -> pump()
 *   P.ack        a saver committed a chunk           -> ledger done, pump()
 *   P.nak        a mapper failed / handed back       -> pending (backoff), pump()
 *   P.heartbeat  members are alive                   -> member table
 *   timers       lease expiry, member expiry, ledger flush, progress
 * Output: one chunk per credit on P.chunk.<mapper-id>, within the global
 * window --max-inflight.
 *
 * Durability is the ledger's: leases and acks are written behind (flushed
 * every FLUSH_MS in one transaction); a lost unflushed lease or ack only
 * causes a redelivery, which the saver deduplicates. A chunk of a sequential
 * source is in the ledger before it is first sent. While the ledger cannot
 * be written nothing is sent or read (ledger_health.h). */
#include "fetch.h"

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

#define FETCH_MAX_MEMBERS 1024
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
/* Members that have sent credit but no heartbeat yet: at most this many
 * (the oldest is dropped first), so a flood of made-up ids cannot fill the
 * member table. */
#define FETCH_MAX_UNHEARD 64

/* A mapper id is bound to one running instance (its random token) until it
 * leaves, drains or is declared gone; its chunks go only to
 * <prefix>.chunk.<id>. It gets work only once that instance has sent a
 * heartbeat (heard). */
typedef struct member_s {
  bool active;
  bool heard;
  char id[128];
  char instance[40];
  uint32_t slots; /* what the instance declared it can hold (capped) */
  int64_t hb_ms;  /* last heartbeat of the bound instance */
  /* Another instance under this id, seen while the bound one was alive:
   * it takes over as soon as the bound one misses its heartbeat. */
  char challenger[40];
  int64_t challenger_ms;
  bool challenger_heard;
  char subject[256];
  cm_version_h version;
  char version_name[CM_VERSIONS_NAME_MAX]; /* as the mapper reports it */
  uint32_t free;
  uint64_t received;
  uint64_t sent;
  int64_t last_seen_ms;
  int64_t joined_ms;
  int64_t first_dispatch_ms; /* -1 until it got work */
  int64_t period_ms;         /* its heartbeat period (0 until heard) */
  bool draining;
  uint64_t acked;
  /* Set by a NATS failover (ours, this mapper's or a saver's): at its first
   * heartbeat from reconcile_at on, leases dispatched to it before
   * reconcile_cutoff that it does not hold were lost and go out again. */
  int64_t reconcile_at;
  int64_t reconcile_cutoff;
} member_t;

typedef cm_dispatch_time_t lat_t;

/* The read-ahead of a sequential source (see fetch_read_work). */
typedef struct sread_s {
  uv_work_t work;
  bool busy, ready;
  int rc;
  cm_buf_t buf, bad;
  uint32_t nrec, nbad;
  int64_t pos;
  uint64_t line;
  char err[256];
} sread_t;

struct cm_fetch_s {
  cm_daemon_t *d;
  sread_t rd;
  cm_fetch_cfg_t cfg;
  cm_ledger_t *ledger;
  cm_source_t *src;
  bool random_access;
  int64_t total_chunks; /* -1 unknown */
  char job[CM_JOB_MAX];

  member_t members[FETCH_MAX_MEMBERS];
  int nmembers;
  cm_versions_t *versions;
  cm_dispatch_times_t *lat; /* chunks dispatched and not yet done or dead */

  uv_timer_t tick, flush, progress, due;
  cm_peers_t *peers;       /* reconnect counts from heartbeats */
  bool ever_connected;
  char chunk_prefix[256];
  char dead_subject[256];
  cm_buf_t buf;

  int64_t start_ms;
  double start_wall;
  uint64_t records_at_start;
  uint64_t last_progress_records;
  int64_t last_progress_ms;
  bool complete;
  bool reported;
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
};

static int64_t now_ms(cm_fetch_t *f) { return cm_daemon_now_ms(f->d); }

/* ---- versions and members ---- */

static member_t *member_find(cm_fetch_t *f, const char *id) {
  for (int i = 0; i < f->nmembers; i++)
    if (f->members[i].active && strcmp(f->members[i].id, id) == 0) return &f->members[i];
  return NULL;
}

/* The version m reports (NULL or "" = "unknown"): m leaves its previous
 * version's entry, if any, and joins the new one. */
static void member_set_version(cm_fetch_t *f, member_t *m, const char *v, int64_t now) {
  const char *name = v != NULL && v[0] ? v : "unknown";
  if (m->version_name[0] != '\0') {
    if (strncmp(name, m->version_name, sizeof(m->version_name) - 1) == 0) return;
    cm_versions_leave(f->versions, m->version, now);
  }
  snprintf(m->version_name, sizeof(m->version_name), "%s", name);
  m->version = cm_versions_join(f->versions, m->version_name, now);
}

static member_t *member_add(cm_fetch_t *f, const char *id) {
  member_t *m = NULL, *oldest = NULL;
  int unheard = 0;
  for (int i = 0; i < f->nmembers; i++) {
    member_t *u = &f->members[i];
    if (!u->active || u->heard) continue;
    unheard++;
    if (oldest == NULL || u->joined_ms < oldest->joined_ms) oldest = u;
  }
  /* An unheard member holds no work: dropping it loses nothing. */
  if (unheard >= FETCH_MAX_UNHEARD && oldest != NULL) {
    oldest->active = false;
    if (oldest->version_name[0] != '\0') cm_versions_leave(f->versions, oldest->version, now_ms(f));
  }
  for (int i = 0; i < f->nmembers; i++)
    if (!f->members[i].active) {
      m = &f->members[i];
      break;
    }
  if (m == NULL) {
    if (f->nmembers == FETCH_MAX_MEMBERS) return NULL;
    m = &f->members[f->nmembers++];
  }
  memset(m, 0, sizeof(*m));
  m->active = true;
  snprintf(m->id, sizeof(m->id), "%s", id);
  m->joined_ms = now_ms(f);
  m->last_seen_ms = m->joined_ms;
  m->first_dispatch_ms = -1;
  return m;
}

static int64_t member_available(const member_t *m) {
  /* Chunks sent that the mapper had not seen when it reported `free` are
   * still on their way: subtract them, so a stale credit never overfills. */
  int64_t in_transit = (int64_t)m->sent - (int64_t)m->received;
  if (in_transit < 0) in_transit = 0;
  if (m->draining || !m->heard) return 0;
  return (int64_t)(m->free < m->slots ? m->free : m->slots) - in_transit;
}

static int active_members(const cm_fetch_t *f) {
  int n = 0;
  for (int i = 0; i < f->nmembers; i++) n += f->members[i].active;
  return n;
}

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
static void lat_put(cm_fetch_t *f, uint64_t index, int64_t t, cm_version_h version) {
  /* Out of memory: the chunk's time is unknown (not counted), nothing else. */
  (void)cm_dispatch_times_put(f->lat, index, t, version);
}

static const lat_t *lat_get(cm_fetch_t *f, uint64_t index) {
  return cm_dispatch_times_get(f->lat, index);
}

static void fetch_publish_dead(cm_fetch_t *f, uint64_t index, uint32_t attempt, const char *reason) {
  cm_buf_t b;
  cm_buf_init(&b, 4096);
  int rc = cm_buf_puts(&b, "{\"job\":");
  rc |= cm_buf_append_json_str(&b, f->job, strlen(f->job));
  rc |= cm_buf_printf(&b, ",\"index\":%" PRIu64 ",\"attempts\":%u,\"reason\":", index, attempt);
  rc |= cm_buf_append_json_str(&b, reason, strlen(reason));
  rc |= cm_buf_puts(&b, "}");
  if (rc == 0) (void)cm_nats_publish(cm_daemon_nats(f->d), f->dead_subject, NULL, b.data, b.len);
  cm_buf_free(&b);
  cm_dispatch_times_del(f->lat, index);
  cm_counter_inc(f->m_dead);
  f->dead_this_run++;
  cm_log_error("chunk %" PRIu64 " is dead after %u deliveries: %s", index, attempt, reason);
}

/* Returns a lease to pending (or dead). */
static void fetch_release(cm_fetch_t *f, uint64_t index, uint32_t attempt, int64_t not_before,
                          const char *reason) {
  int rc = cm_ledger_release(f->ledger, index, attempt, not_before, reason,
                             (uint32_t)f->cfg.max_deliver);
  if (rc == 0) cm_counter_inc(f->m_fenced);
  if (rc == 2) fetch_publish_dead(f, index, attempt, reason);
}

/* ---- ledger health ---- */

static int fetch_flush_now(cm_fetch_t *f) { return cm_ledger_health_flush(&f->health, now_ms(f)); }

bool cm_fetch_ready(cm_fetch_t *f, char *why, size_t whylen) {
  return cm_ledger_health_ready(&f->health, why, whylen);
}

/* ---- completion and progress ---- */

static void fetch_check_complete(cm_fetch_t *f) {
  cm_job_info_t info;
  double secs;
  uint64_t run_records;
  int code;
  if (f->complete || !cm_ledger_job_complete(f->ledger)) return;
  /* Complete only once the ledger says so: with unwritten acks a restart
   * would redo them, so "complete" (and exit 0) waits for the flush timer
   * to get them written. */
  if (fetch_flush_now(f) != 0) return;
  f->complete = true;
  cm_gauge_set(f->m_complete, 1);
  cm_ledger_info(f->ledger, &info);
  secs = cm_wall_time() - f->start_wall;
  run_records = info.records_done - f->records_at_start;
  printf("job \"%s\" complete%s: %" PRIu64 " records in %" PRIu64 " chunks, %" PRIu64
         " dead chunks, %" PRIu64 " redeliveries, %.2f s, %.0f records/s\n",
         f->job, info.dead_chunks > 0 ? " with dead chunks" : "", info.records_done,
         info.done_chunks, info.dead_chunks, info.redeliveries, secs,
         secs > 0 ? (double)run_records / secs : 0.0);
  printf("{\"summary\":{\"job\":\"%s\",\"records\":%" PRIu64 ",\"chunks\":%" PRIu64
         ",\"dead_chunks\":%" PRIu64 ",\"redeliveries\":%" PRIu64
         ",\"seconds\":%.3f,\"records_per_s\":%.1f,\"records_this_run\":%" PRIu64
         ",\"latency_p50_s\":%.4f,\"latency_p99_s\":%.4f}}\n",
         f->job, info.records_done, info.done_chunks, info.dead_chunks, info.redeliveries, secs,
         secs > 0 ? (double)run_records / secs : 0.0, run_records,
         cm_histogram_quantile(f->m_latency, 0.5), cm_histogram_quantile(f->m_latency, 0.99));
  fflush(stdout);
  cm_log_info("job %s complete: %" PRIu64 " records, %" PRIu64 " chunks, %" PRIu64
              " dead, %" PRIu64 " redeliveries, %.2f s",
              f->job, info.records_done, info.done_chunks, info.dead_chunks, info.redeliveries,
              secs);
  if (f->cfg.once) {
    code = (info.dead_chunks > 0 && !f->cfg.allow_dead) ? 3 : 0;
    f->stopping = true;
    cm_daemon_exit(f->d, code);
  }
}

static void fetch_progress(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  cm_job_info_t info;
  int64_t now = now_ms(f);
  double dt = (double)(now - f->last_progress_ms) / 1000.0;
  double rate;
  if (f->complete) return;
  cm_ledger_info(f->ledger, &info);
  rate = dt > 0 ? (double)(info.records_done - f->last_progress_records) / dt : 0;
  f->last_progress_records = info.records_done;
  f->last_progress_ms = now;
  if (f->total_chunks >= 0)
    printf("progress: %" PRIu64 "/%" PRId64 " chunks (%.1f%%), %" PRIu64
           " records, %.0f records/s, in flight %zu, mappers %d, redeliveries %" PRIu64 "\n",
           info.done_chunks, f->total_chunks,
           f->total_chunks > 0 ? 100.0 * (double)info.done_chunks / (double)f->total_chunks : 0.0,
           info.records_done, rate, cm_ledger_leased_count(f->ledger), active_members(f),
           info.redeliveries);
  else
    printf("progress: %" PRIu64 " chunks done (source %s), %" PRIu64
           " records, %.0f records/s, in flight %zu, mappers %d, redeliveries %" PRIu64 "\n",
           info.done_chunks, info.source_done ? "read" : "reading", info.records_done, rate,
           cm_ledger_leased_count(f->ledger), active_members(f), info.redeliveries);
  fflush(stdout);
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

/* Thread pool: reads the next chunk of a sequential source into f->rd.
 * Only this function touches the source while a read is in flight. */
static void fetch_read_work(uv_work_t *w) {
  cm_fetch_t *f = w->data;
  sread_t *r = &f->rd;
  cm_buf_reset(&r->buf);
  cm_buf_reset(&r->bad);
  r->err[0] = '\0';
  r->nrec = r->nbad = 0;
  if (cm_buf_puts(&r->buf, "[") != 0) {
    r->rc = -E2BIG;
    return;
  }
  r->rc = cm_source_next(f->src, &r->buf, &r->nrec, &r->bad, &r->nbad, &r->pos, r->err,
                         sizeof(r->err));
  if (r->rc == 0 &&
      (cm_buf_puts(&r->buf, "]") != 0 ||
       (r->nbad > 0 && (cm_buf_puts(&r->buf, ",\"dead\":[") != 0 ||
                        cm_buf_append(&r->buf, r->bad.data, r->bad.len) != 0 ||
                        cm_buf_puts(&r->buf, "]") != 0)))) {
    r->rc = -E2BIG;
    snprintf(r->err, sizeof(r->err), "chunk larger than %zu bytes", r->buf.max);
  }
  r->line = cm_source_line(f->src);
}

static void fetch_pump(cm_fetch_t *f);

static void fetch_read_done(uv_work_t *w, int status) {
  cm_fetch_t *f = w->data;
  f->rd.busy = false;
  if (status == UV_ECANCELED) return;
  f->rd.ready = true;
  fetch_pump(f);
}

static void fetch_start_read(cm_fetch_t *f) {
  cm_job_info_t info;
  if (f->rd.busy || f->rd.ready || f->stopping || f->health.failing) return;
  cm_ledger_info(f->ledger, &info);
  if (info.source_done) return;
  f->rd.busy = true;
  f->rd.work.data = f;
  if (uv_queue_work(cm_daemon_loop(f->d), &f->rd.work, fetch_read_work, fetch_read_done) != 0) {
    f->rd.busy = false;
    fetch_fatal(f, "cannot queue a source read");
  }
}

/* Next chunk to send: a due retry first (lowest index), else a new chunk
 * from the source. Returns 1 with *index, 0 when there is nothing to send. */
static int fetch_next_chunk(cm_fetch_t *f, int64_t now, uint64_t *index) {
  cm_job_info_t info;
  if (cm_ledger_next_due(f->ledger, now, index) == 1) return 1;
  cm_ledger_info(f->ledger, &info);
  if (info.source_done) return 0;
  if (f->random_access) {
    uint64_t idx = info.next_index;
    bool last = f->total_chunks >= 0 && (int64_t)idx + 1 >= f->total_chunks;
    if (f->total_chunks == 0) {
      if (cm_ledger_set_source_done(f->ledger) != 0) fetch_fatal(f, "ledger write failed");
      return 0;
    }
    if (cm_ledger_add_chunk(f->ledger, idx, NULL, 0, 0, 0, last) != 0) {
      fetch_fatal(f, "ledger: cannot add chunk");
      return 0;
    }
    *index = idx;
    return 1;
  } else {
    sread_t *r = &f->rd;
    /* Sequential sources (file, HTTP) are read on the thread pool, one
     * chunk ahead, so a slow disk or a retrying HTTP API never stalls the
     * loop (probes, acks, credit). The pump is called again when it lands. */
    if (r->busy) return 0;
    if (!r->ready) {
      fetch_start_read(f);
      return 0;
    }
    r->ready = false;
    if (r->rc == 1) {
      if (cm_ledger_set_source_done(f->ledger) != 0) fetch_fatal(f, "ledger write failed");
      cm_log_info("source read to the end: %" PRIu64 " chunks", info.next_index);
      return 0;
    }
    if (r->rc < 0) {
      char msg[400];
      snprintf(msg, sizeof(msg), "source error: %s", r->err);
      fetch_fatal(f, msg);
      return 0;
    }
    if (r->nbad > 0)
      cm_log_warn("chunk %" PRIu64 ": %u source records are not valid JSON (kept as dead letters)",
                  info.next_index, r->nbad);
    if (cm_ledger_add_chunk(f->ledger, info.next_index, r->buf.data, r->buf.len, r->pos, r->line,
                            false) != 0) {
      fetch_fatal(f, "ledger: cannot store chunk");
      return 0;
    }
    /* A sequential source (stdin, an HTTP API) may not give the same chunk
     * twice: its payload is in the ledger before anyone sees the chunk. If
     * the write fails, the chunk waits (pending, in memory) for the ledger
     * to recover; reading pauses meanwhile. */
    if (fetch_flush_now(f) != 0) return 0;
    *index = info.next_index;
    fetch_start_read(f); /* read ahead while this one is dispatched */
    return 1;
  }
}

/* Builds the wire chunk for (index, attempt) into f->buf. */
static int fetch_build(cm_fetch_t *f, uint64_t index, uint32_t attempt, const char *mapper) {
  cm_chunk_hdr_t h;
  int rc;
  memset(&h, 0, sizeof(h));
  snprintf(h.job, sizeof(h.job), "%s", f->job);
  h.index = index;
  h.attempt = attempt;
  if (f->cfg.lease_key != NULL) {
    snprintf(h.mapper, sizeof(h.mapper), "%s", mapper);
    cm_lease_token(f->cfg.lease_key, f->job, index, attempt, h.mapper, h.lease);
  }
  cm_buf_reset(&f->buf);
  if ((rc = cm_chunk_begin(&f->buf, &h)) != 0) return rc;
  if (f->random_access) {
    uint32_t nrec = 0;
    if ((rc = cm_source_chunk(f->src, index, &f->buf, &nrec)) != 0) return rc;
    return cm_chunk_end(&f->buf, NULL, 0);
  }
  /* Stored payload is `[records]` or `[records],"dead":[...]`: it continues
   * the `"data":[` that cm_chunk_begin wrote. */
  {
    size_t mark = f->buf.len;
    if ((rc = cm_ledger_payload(f->ledger, index, &f->buf)) != 0) return rc;
    if (f->buf.len == mark || f->buf.data[mark] != '[') return -EINVAL;
    memmove(f->buf.data + mark, f->buf.data + mark + 1, f->buf.len - mark - 1);
    f->buf.len--;
    return cm_buf_puts(&f->buf, "}");
  }
}

static member_t *fetch_pick(cm_fetch_t *f) {
  member_t *best = NULL;
  int64_t best_av = 0;
  for (int i = 0; i < f->nmembers; i++) {
    member_t *m = &f->members[i];
    int64_t av;
    if (!m->active) continue;
    av = member_available(m);
    if (av > best_av) {
      best = m;
      best_av = av;
    }
  }
  return best;
}

static void fetch_arm_due(cm_fetch_t *f, int64_t now);

static void fetch_pump(cm_fetch_t *f) {
  int64_t now;
  if (f->stopping || f->complete || f->health.failing || !cm_nats_connected(cm_daemon_nats(f->d)))
    return;
  now = now_ms(f);
  while ((int64_t)cm_ledger_leased_count(f->ledger) < f->cfg.max_inflight) {
    member_t *m = fetch_pick(f);
    uint64_t index;
    uint32_t attempt = 0;
    int rc;
    if (m == NULL) break;
    if (fetch_next_chunk(f, now, &index) != 1) break;
    if (cm_ledger_lease(f->ledger, index, m->id, now + f->cfg.ack_wait_ms, &attempt) != 0) {
      fetch_fatal(f, "ledger: cannot lease a pending chunk");
      return;
    }
    rc = fetch_build(f, index, attempt, m->id);
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
      cm_log_warn("could not send chunk %" PRIu64 " to %s: %s", index, m->id, reason);
      fetch_release(f, index, attempt, now + 100, reason);
      break;
    }
    m->sent++;
    if (m->first_dispatch_ms < 0) {
      m->first_dispatch_ms = now;
      cm_log_info("mapper %s got its first chunk %.3f s after joining", m->id,
                  (double)(now - m->joined_ms) / 1000.0);
    }
    cm_versions_count(f->versions, m->version, CM_VERSION_DISPATCHED, now);
    lat_put(f, index, now, m->version);
    cm_counter_inc(f->m_dispatched);
    if (attempt > 1) cm_counter_inc(f->m_redelivered);
  }
  fetch_arm_due(f, now);
}

static void fetch_due_cb(uv_timer_t *t) { fetch_pump(t->data); }

static void fetch_arm_due(cm_fetch_t *f, int64_t now) {
  /* Wake up when the next backed-off chunk becomes due. A chunk that is due
   * already is waiting for credit, and credit wakes the pump: re-arming a
   * 0 ms timer from its own callback would spin libuv's timer loop. */
  int64_t at = cm_ledger_next_due_at(f->ledger);
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
  if (m->draining && (cm_ledger_each_held(f->ledger, m->id, count_held, &held), held == 0))
    return true;
  /* At least 250 ms of slack: a busy host delays short periods by that. */
  return now - m->hb_ms > period + (period / 4 > 250 ? period / 4 : 250);
}

static void member_challenge(member_t *m, const char *instance, bool heard, int64_t now) {
  if (strcmp(m->challenger, instance) != 0) m->challenger_heard = false;
  snprintf(m->challenger, sizeof(m->challenger), "%s", instance);
  m->challenger_ms = now;
  m->challenger_heard = m->challenger_heard || heard;
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
      strlen(c->mapper_id) >= sizeof(f->members[0].id) || strcmp(c->subject, want) != 0) {
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
      if (!c->draining) member_challenge(m, inst, false, now);
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
  if (a == NULL) {
    cm_reject(f->rej, now_ms(f), "invalid_message", "an invalid Ack message");
    goto out;
  }
  if (a->job == NULL || strcmp(a->job, f->job) != 0) goto out;
  if (f->cfg.lease_key != NULL &&
      !cm_lease_ack_verify(f->cfg.lease_key, a->job, a->index, a->attempt, a->records,
                           a->dead_records, a->duplicate, a->mac)) {
    /* Only a saver holding the lease key makes this MAC, and only after
     * committing the chunk: anything else would mark unsaved work done. */
    cm_reject(f->rej, now_ms(f), "ack_forged",
              "Ack for chunk %" PRIu64 " attempt %u (saver %.64s) without a valid MAC: a forgery, "
              "or a saver without this --lease-key-file",
              a->index, a->attempt, a->saver_id ? a->saver_id : "?");
    goto out;
  }
  if (cm_ledger_ack(f->ledger, a->index, a->attempt, a->records) == 1) {
    const lat_t *l = lat_get(f, a->index);
    cm_counter_inc(f->m_acked);
    cm_counter_add(f->m_records, a->records);
    if (l != NULL) {
      cm_histogram_observe(f->m_latency, (double)(now_ms(f) - l->t_ms) / 1000.0);
      cm_versions_count(f->versions, l->version, CM_VERSION_ACKED, now_ms(f));
      cm_dispatch_times_del(f->lat, a->index);
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
  int64_t now;
  now = now_ms(f);
  if (n == NULL) {
    cm_reject(f->rej, now, "invalid_message", "an invalid Nak message");
    goto out;
  }
  if (n->job == NULL || strcmp(n->job, f->job) != 0) goto out;
  if (f->cfg.lease_key != NULL &&
      !cm_lease_verify(f->cfg.lease_key, n->job, n->index, n->attempt,
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
    if (cm_ledger_release(f->ledger, n->index, n->attempt, now,
                          n->reason ? n->reason : "handed back", 0) == 0)
      cm_counter_inc(f->m_fenced);
  } else {
    const lat_t *l = lat_get(f, n->index);
    int64_t wait = n->retry_after_ms > 0 ? (int64_t)n->retry_after_ms : backoff_ms(n->attempt);
    cm_counter_inc(f->m_naks);
    if (l != NULL) cm_versions_count(f->versions, l->version, CM_VERSION_NAK, now);
    cm_log_warn("chunk %" PRIu64 " attempt %u failed on %s: %s", n->index, n->attempt,
                n->mapper_id ? n->mapper_id : "?", n->reason ? n->reason : "");
    fetch_release(f, n->index, n->attempt, now + wait, n->reason ? n->reason : "nak");
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
  for (int i = 0; i < f->nmembers; i++) {
    member_t *m = &f->members[i];
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
  member_t *m;
  const Chunkmill__Heartbeat *hb;
  int64_t now;
  int n;
} reconcile_ctx_t;

static void reconcile_one(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  reconcile_ctx_t *c = ud;
  const lat_t *l = lat_get(c->f, index);
  /* Dispatched after the failover (or unknown): it may still be on its way. */
  if (l == NULL || l->t_ms >= c->m->reconcile_cutoff) return;
  for (size_t i = 0; i < c->hb->n_inflight; i++) {
    const Chunkmill__Lease *h = c->hb->inflight[i];
    if (h->index == index && h->job != NULL && strcmp(h->job, c->f->job) == 0) return;
  }
  /* Never arrived, or done and its ack lost: out again at once (the saver
   * deduplicates). Not the chunk's fault: no --max-deliver budget spent. */
  if (cm_ledger_release(c->f->ledger, index, attempt, c->now, "lost in a NATS failover", 0) == 1) {
    if (c->m->sent > c->m->received) c->m->sent--;
    c->n++;
  }
}

static void fetch_reconcile(cm_fetch_t *f, member_t *m, const Chunkmill__Heartbeat *hb,
                            int64_t now) {
  reconcile_ctx_t c = {f, m, hb, now, 0};
  m->reconcile_at = 0;
  (void)cm_ledger_each_held(f->ledger, m->id, reconcile_one, &c);
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
        if (!hb->draining) member_challenge(m, inst, true, now);
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
      for (size_t i = 0; i < hb->n_inflight; i++) {
        Chunkmill__Lease *l = hb->inflight[i];
        if (l->job == NULL || strcmp(l->job, f->job) != 0) continue;
        if (f->cfg.lease_key != NULL &&
            !cm_lease_verify(f->cfg.lease_key, l->job, l->index, l->attempt, m->id, l->lease)) {
          cm_reject(f->rej, now, "lease_forged",
                    "heartbeat of mapper %.64s claims chunk %" PRIu64
                    " attempt %u without its lease token",
                    m->id, l->index, l->attempt);
          continue;
        }
        (void)cm_ledger_extend(f->ledger, l->index, l->attempt, now + f->cfg.ack_wait_ms);
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
  int64_t now;
  const char *reason;
  bool at_once;
} release_ctx_t;

static void release_one(void *ud, uint64_t index, uint32_t attempt, const char *holder) {
  release_ctx_t *c = ud;
  const lat_t *l = lat_get(c->f, index);
  member_t *m = holder != NULL ? member_find(c->f, holder) : NULL;
  /* A lease that ends without an ack or nak may never have reached its
   * mapper (lost in a reconnect): stop counting it as in transit. */
  if (m != NULL && m->sent > m->received) m->sent--;
  if (l != NULL) cm_versions_count(c->f->versions, l->version, CM_VERSION_EXPIRED, c->now);
  fetch_release(c->f, index, attempt, c->at_once ? c->now : c->now + backoff_ms(attempt),
                c->reason);
}

static int member_release_all(cm_fetch_t *f, member_t *m, const char *reason) {
  release_ctx_t g = {f, now_ms(f), reason, true};
  return cm_ledger_each_held(f->ledger, m->id, release_one, &g);
}

static void fetch_tick(uv_timer_t *t) {
  cm_fetch_t *f = t->data;
  int64_t now = now_ms(f);
  int64_t hb = cm_daemon_cfg(f->d)->heartbeat_ms;
  release_ctx_t c = {f, now, "lease expired (ack wait)", false};
  int n;
  if (f->stopping) return;
  cm_versions_sweep(f->versions, now);
  /* The member table only ages while we can hear the members: an outage
   * of our own connection must not look like every mapper dying. */
  if (cm_nats_connected(cm_daemon_nats(f->d))) {
    for (int i = 0; i < f->nmembers; i++) {
      member_t *m = &f->members[i];
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
        m->active = false;
        cm_versions_leave(f->versions, m->version, now);
        continue;
      }
      release_ctx_t g = {f, now, "mapper stopped sending heartbeats", true};
      int held = cm_ledger_each_held(f->ledger, m->id, release_one, &g);
      cm_counter_inc(f->m_departed);
      cm_log_warn("mapper %s missed 3 heartbeats: gone; %d chunks it held are pending again",
                  m->id, held);
      m->active = false;
      cm_versions_leave(f->versions, m->version, now);
    }
    n = cm_ledger_each_expired(f->ledger, now, release_one, &c);
    if (n > 0) {
      cm_counter_add(f->m_expired, (uint64_t)n);
      cm_log_warn("%d leases expired after --ack-wait; re-dispatching", n);
    }
  }
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

static double g_backlog(void *ud) {
  cm_fetch_t *f = ud;
  cm_job_info_t info;
  double unread;
  cm_ledger_info(f->ledger, &info);
  if (info.source_done)
    unread = 0;
  else if (f->total_chunks >= 0)
    unread = (double)(f->total_chunks - (int64_t)info.next_index);
  else
    unread = 1; /* unknown size: at least one more */
  return unread + (double)cm_ledger_pending_count(f->ledger);
}

static double g_oldest(void *ud) {
  cm_fetch_t *f = ud;
  cm_job_info_t info;
  bool unread;
  if (f->complete) return 0;
  cm_ledger_info(f->ledger, &info);
  /* Chunks not read yet wait too when the source has more. */
  unread = !info.source_done &&
           (f->total_chunks < 0 || (int64_t)info.next_index < f->total_chunks);
  return (double)cm_ledger_oldest_pending_ms(f->ledger, unread) / 1000.0;
}

static double g_inflight(void *ud) { return (double)cm_ledger_leased_count(((cm_fetch_t *)ud)->ledger); }
static double g_members(void *ud) { return (double)active_members(ud); }
static double g_done(void *ud) {
  cm_job_info_t info;
  cm_ledger_info(((cm_fetch_t *)ud)->ledger, &info);
  return (double)info.done_chunks;
}
static double g_total(void *ud) {
  cm_fetch_t *f = ud;
  cm_job_info_t info;
  cm_ledger_info(f->ledger, &info);
  if (info.source_done) return (double)info.next_index;
  return f->total_chunks >= 0 ? (double)f->total_chunks : NAN;
}
static double g_records_done(void *ud) {
  cm_job_info_t info;
  cm_ledger_info(((cm_fetch_t *)ud)->ledger, &info);
  return (double)info.records_done;
}

int cm_fetch_status(cm_fetch_t *f, cm_buf_t *out) {
  cm_job_info_t info;
  int64_t now = now_ms(f);
  int rc;
  bool first = true;
  char total[32] = "null";
  cm_ledger_info(f->ledger, &info);
  rc = cm_buf_puts(out, ",\"job\":{\"name\":");
  rc |= cm_buf_append_json_str(out, f->job, strlen(f->job));
  rc |= cm_buf_puts(out, ",\"source\":");
  rc |= cm_buf_append_json_str(out, info.source, strlen(info.source));
  if (info.source_done)
    snprintf(total, sizeof(total), "%" PRIu64, info.next_index);
  else if (f->total_chunks >= 0)
    snprintf(total, sizeof(total), "%" PRId64, f->total_chunks);
  rc |= cm_buf_printf(out,
                      ",\"chunk_size\":%u,\"chunks_created\":%" PRIu64 ",\"total_chunks\":%s"
                      ",\"done_chunks\":%" PRIu64 ",\"dead_chunks\":%" PRIu64
                      ",\"records_done\":%" PRIu64 ",\"redeliveries\":%" PRIu64
                      ",\"inflight\":%zu,\"pending\":%zu,\"backlog\":%.0f,\"complete\":%s}",
                      info.chunk_size, info.next_index, total, info.done_chunks,
                      info.dead_chunks, info.records_done, info.redeliveries,
                      cm_ledger_leased_count(f->ledger), cm_ledger_pending_count(f->ledger),
                      g_backlog(f), f->complete ? "true" : "false");
  rc |= cm_buf_puts(out, ",\"members\":[");
  for (int i = 0; i < f->nmembers; i++) {
    member_t *m = &f->members[i];
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
    for (int i = 0; i < f->nmembers; i++) {
      member_t *m = &f->members[i];
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
  cm_job_info_t info;
  cm_ledger_info(f->ledger, &info);
  hb->processed = info.done_chunks;
  hb->records = info.records_done;
  hb->errors = info.dead_chunks;
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
  if (f->rd.busy) {
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
  cm_buf_free(&f->buf);
  cm_buf_free(&f->rd.buf);
  cm_buf_free(&f->rd.bad);
  free(f);
}

int cm_fetch_create(cm_fetch_t **out, cm_daemon_t *d, const cm_fetch_cfg_t *cfg,
                    cm_ledger_t *ledger, cm_source_t *src) {
  cm_fetch_t *f = calloc(1, sizeof(*f));
  const cm_common_cfg_t *cc = cm_daemon_cfg(d);
  cm_metrics_t *m = cm_daemon_metrics(d);
  cm_nats_t *n = cm_daemon_nats(d);
  uv_loop_t *loop = cm_daemon_loop(d);
  cm_job_info_t info;
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
  if (cm_peers_create(&f->peers) != 0) {
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
  f->src = src;
  f->random_access = cm_source_random_access(src);
  f->total_chunks = cm_source_total_chunks(src);
  snprintf(f->job, sizeof(f->job), "%s", cfg->job);
  cm_buf_init(&f->buf, FETCH_MAX_CHUNK_BYTES);
  cm_buf_init(&f->rd.buf, FETCH_MAX_CHUNK_BYTES);
  cm_buf_init(&f->rd.bad, FETCH_MAX_CHUNK_BYTES / 2);
  f->start_ms = now_ms(f);
  f->start_wall = cm_wall_time();
  f->last_progress_ms = f->start_ms;
  cm_ledger_info(ledger, &info);
  f->records_at_start = info.records_done;
  f->last_progress_records = info.records_done;
  cm_ledger_health_init(&f->health, ledger);
  /* Jitter only needs variety between runs; keep the conversion in range. */
  srand((unsigned)((uint64_t)(f->start_wall * 1000.0) & 0xffffffffu));

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
