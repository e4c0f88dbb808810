/* ledger.c - the fetcher's durable chunk ledger (see ledger.h): open and
 * close, and the chunk state machine in memory (add, lease, extend, ack,
 * release, expiry, kill) with its queries. The SQL and the schema are in
 * ledger_schema.c, job rows in ledger_jobs.c, writing changes out in
 * ledger_flush.c; ledger_impl.h holds what they share.
 *
 * Memory: a hash table (index -> chunk) holds every pending or leased chunk,
 * plus done/dead chunks whose change is not flushed yet (they leave memory
 * at the next flush). Three binary heaps order them:
 *   ready  pending and due, by index       -> next_due is O(log n)
 *   wait   pending with a retry time, by (not_before, index)
 *   lease  leased, by (deadline, index)    -> each_expired visits only hits
 * Done and dead chunks are only in the database, so memory follows the
 * in-flight window (plus retries), never the size of the job. */
#include "ledger_impl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small helpers ---------------------------------------------------- */

char *cm__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* ---- which heap holds a chunk ----------------------------------------- */

static cm__heap_t *cm__heap_of(cm_ledger_t *l, const cm__chunk_t *c) {
  switch (c->heap) {
  case CM__H_READY:
    return &l->ready;
  case CM__H_WAIT:
    return &l->wait;
  case CM__H_LEASE:
    return &l->lease;
  default:
    return NULL;
  }
}

static void cm__unheap(cm_ledger_t *l, cm__chunk_t *c) {
  cm__heap_t *h = cm__heap_of(l, c);
  if (h) cm__heap_remove(h, c);
}

/* A pending chunk with no retry time is due whatever `now` is: it goes
 * straight to `ready`; others wait until next_due's clock passes them. */
static cm__heap_t *cm__pending_heap(cm_ledger_t *l, const cm__chunk_t *c) {
  return c->not_before_ms <= 0 ? &l->ready : &l->wait;
}

int64_t cm__clock_ms(const cm_ledger_t *l) {
  if (l->clock) return l->clock(l->clock_ud);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every entry into the pending state goes through here (the FIFO feeds
 * cm_ledger_oldest_pending_ms). */
void cm__pend(cm_ledger_t *l, cm__chunk_t *c) {
  cm__heap_push(cm__pending_heap(l, c), c);
  cm__pendq_push(&l->pendq, c, cm__clock_ms(l));
}

/* ---- chunk bookkeeping ------------------------------------------------- */

void cm__origin_free(cm__origin_t *o) {
  if (!o) return;
  free(o->cursor);
  free(o);
}

void cm__chunk_free(cm__chunk_t *c) {
  if (!c) return;
  cm__origin_free(c->origin);
  free(c->holder);
  free(c->reason);
  free(c->payload);
  free(c->version);
  free(c);
}

int cm__queue_reserve(cm_ledger_t *l) {
  if (l->queue_n < l->queue_cap) return 0;
  size_t cap = l->queue_cap ? l->queue_cap * 2 : 64;
  cm__chunk_t **q = realloc(l->queue, cap * sizeof *q);
  if (!q) return -ENOMEM;
  l->queue = q;
  l->queue_cap = cap;
  return 0;
}

/* Coalesces: a chunk changed several times between flushes is written once,
 * with its latest state. Capacity must have been reserved. */
void cm__queue(cm_ledger_t *l, cm__chunk_t *c) {
  if (c->dirty) return;
  c->dirty = true;
  l->queue[l->queue_n++] = c;
}

void cm__reset_memory(cm_ledger_t *l) {
  for (size_t i = 0; i < l->set.cap; i++) cm__chunk_free(l->set.tab[i]);
  free(l->set.tab);
  l->set.tab = NULL;
  l->set.cap = l->set.n = 0;
  l->ready.n = l->wait.n = l->lease.n = 0;
  l->pendq.head = l->pendq.tail = NULL;
  l->queue_n = 0;
  l->job_dirty = false;
}

/* Loads chunk `idx` from its row (used for dead chunks, which are kept out
 * of memory). Returns 1 and *out, 0 if there is no row, or -errno. */
static int cm__load_row(cm_ledger_t *l, uint64_t idx, cm__chunk_t **out) {
  sqlite3_stmt *st = l->st[CM__S_CHUNK_GET];
  cm__chunk_t *c = NULL;
  int ret = 0;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)idx);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) goto out;
  if (rc != SQLITE_ROW) {
    ret = cm__fail(l, rc);
    goto out;
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    ret = -ENOMEM;
    goto out;
  }
  c->idx = idx;
  c->state = (uint8_t)sqlite3_column_int(st, 0);
  c->attempt = (uint32_t)sqlite3_column_int64(st, 1);
  c->base_attempt = (uint32_t)sqlite3_column_int64(st, 2);
  const unsigned char *reason = sqlite3_column_text(st, 3);
  c->records = (uint32_t)sqlite3_column_int64(st, 4);
  c->redo = (uint32_t)sqlite3_column_int64(st, 5);
  c->payload_in_db = true;
  if (reason && !(c->reason = cm__strdup((const char *)reason))) {
    ret = -ENOMEM;
    goto out;
  }
  *out = c;
  c = NULL;
  ret = 1;
out:
  sqlite3_reset(st);
  cm__chunk_free(c);
  return ret;
}

/* ---- open / close ------------------------------------------------------ */

static cm_ledger_t *cm__handle_new(cm__conn_t *c) {
  cm_ledger_t *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  l->conn = c;
  l->db = c->db;
  l->st = c->st;
  l->path = c->path;
  l->errmsg = c->errmsg;
  l->ready.kind = CM__H_READY;
  l->wait.kind = CM__H_WAIT;
  l->lease.kind = CM__H_LEASE;
  l->next = c->handles;
  c->handles = l;
  c->refs++;
  return l;
}

static void cm__conn_free(cm__conn_t *c) {
  if (!c) return;
  for (int i = 0; i < CM__S_COUNT; i++) sqlite3_finalize(c->st[i]);
  sqlite3_close(c->db);
  free(c->path);
  free(c);
}

int cm_ledger_open(cm_ledger_t **out, const char *path, char *err, size_t errlen) {
  cm_ledger_t *l = NULL;
  cm__conn_t *c = NULL;
  int ret = 0, rc, v = 0;
  *out = NULL;
  if (errlen) err[0] = '\0';
  c = calloc(1, sizeof *c);
  if (!c || !(c->path = cm__strdup(path)) || !(l = cm__handle_new(c))) {
    snprintf(err, errlen, "ledger %s: out of memory", path);
    ret = -ENOMEM;
    goto fail;
  }
  rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  l->db = c->db;
  if (rc != SQLITE_OK) goto sqlfail;
  /* The fetcher is the only writer, but a tool reading the file (or a
   * second fetcher started by mistake) may hold a lock briefly. */
  sqlite3_busy_timeout(l->db, 5000);
  /* Refuse a newer file before changing anything in it (journal mode). */
  rc = cm__user_version(l->db, &v);
  if (rc != SQLITE_OK) goto sqlfail;
  if (v > CM_LEDGER_SCHEMA_VERSION) {
    snprintf(err, errlen, "ledger %s has schema version %d, this fetcher supports up to %d", path,
             v, CM_LEDGER_SCHEMA_VERSION);
    ret = -EPROTO;
    goto fail;
  }
  /* WAL: one fsync per commit at most, readers never block the writer.
   * synchronous=NORMAL: a commit is not fsynced until the next checkpoint,
   * so a power loss may roll back the last few flushes. For the ledger that
   * is the same as a crash before those flushes, which is always safe: an
   * unwritten lease comes back pending, an unwritten ack is redelivered and
   * the saver deduplicates it. The database itself cannot be corrupted in
   * WAL mode with NORMAL. */
  rc = sqlite3_exec(l->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(l->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
  /* A page cache of 512 KiB, not SQLite's default 2 MiB: the pages a job
   * touches are the right edge of the chunk table and the small index of
   * live chunks, whatever the job's size; a larger cache only fills with
   * cold pages as the file grows (2 MiB more RSS for a long job). */
  if (rc == SQLITE_OK) rc = sqlite3_exec(l->db, "PRAGMA cache_size = -512", NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto sqlfail;
  ret = cm__migrate(l, err, errlen);
  if (ret < 0) goto fail;
  for (int i = 0; i < CM__S_COUNT; i++) {
    rc = sqlite3_prepare_v3(l->db, cm__sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
    if (rc != SQLITE_OK) goto sqlfail;
  }
  *out = l;
  return 0;
sqlfail:
  snprintf(err, errlen, "ledger %s: %s", path,
           c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
  ret = cm__sqlerr(rc);
  if (ret == 0) ret = -EIO;
fail:
  free(l);
  cm__conn_free(c);
  return ret;
}

int cm_ledger_share(cm_ledger_t *l, cm_ledger_t **out) {
  *out = cm__handle_new(l->conn);
  return *out ? 0 : -ENOMEM;
}

void cm_ledger_close(cm_ledger_t *l) {
  cm__conn_t *c;
  if (!l) return;
  c = l->conn;
  /* Best effort: a failed final flush only means redeliveries (see the
   * header); the caller that cares flushes first and checks. */
  if (cm_ledger_flush(l) < 0) {
    /* nothing more to do: gcc does not accept (void) for warn_unused_result */
  }
  cm__reset_memory(l);
  for (cm_ledger_t **p = &c->handles; *p; p = &(*p)->next)
    if (*p == l) {
      *p = l->next;
      break;
    }
  free(l->ready.v);
  free(l->wait.v);
  free(l->lease.v);
  free(l->queue);
  free(l->hits);
  free(l->stack);
  free(l->job);
  free(l->source);
  free(l->spec);
  free(l->redo_version);
  free(l->cursor);
  free(l);
  if (--c->refs == 0) cm__conn_free(c);
}

const char *cm_ledger_errmsg(const cm_ledger_t *l) { return l->errmsg; }

void cm_ledger_set_busy_timeout(cm_ledger_t *l, int ms) { (void)sqlite3_busy_timeout(l->db, ms); }

/* ---- state changes ----------------------------------------------------- */

int cm_ledger_add_chunk(cm_ledger_t *l, uint64_t index, const void *payload, size_t len,
                        int64_t pos, uint64_t line, bool source_done) {
  return cm_ledger_add_chunk_origin(l, index, payload, len, pos, line, source_done, NULL);
}

int cm_ledger_add_chunk_origin(cm_ledger_t *l, uint64_t index, const void *payload, size_t len,
                               int64_t pos, uint64_t line, bool source_done,
                               const cm_ledger_origin_t *origin) {
  cm__chunk_t *c = NULL;
  int ret;
  if (!l->job || index != l->info.next_index || l->info.source_done) return -EINVAL;
  if ((ret = cm__set_reserve(&l->set)) < 0 || (ret = cm__heap_reserve(&l->ready)) < 0 ||
      (ret = cm__queue_reserve(l)) < 0)
    return ret;
  if (!(c = calloc(1, sizeof *c))) return -ENOMEM;
  if (origin) {
    if (!(c->origin = calloc(1, sizeof *c->origin)) ||
        (origin->cursor && !(c->origin->cursor = cm__strdup(origin->cursor)))) {
      cm__chunk_free(c);
      return -ENOMEM;
    }
    c->origin->pos = origin->pos;
    c->origin->line = origin->line;
    memcpy(c->origin->digest, origin->digest, sizeof c->origin->digest);
  }
  if (payload) {
    /* Kept until the flush writes it, so add + flush is one transaction. */
    if (!(c->payload = malloc(len ? len : 1))) {
      cm__chunk_free(c);
      return -ENOMEM;
    }
    memcpy(c->payload, payload, len);
    c->payload_len = len;
  }
  c->idx = index;
  c->state = CM_CHUNK_PENDING;
  cm__set_insert(&l->set, c);
  cm__pend(l, c);
  cm__queue(l, c);
  l->last_add_ms = c->pending_since_ms;
  l->info.next_index = index + 1;
  l->info.source_pos = pos;
  l->info.source_line = line;
  l->info.source_done = source_done;
  l->job_dirty = true;
  return 0;
}

int cm_ledger_set_source_done(cm_ledger_t *l) {
  if (!l->job) return -EINVAL;
  if (!l->info.source_done) {
    l->info.source_done = true;
    l->job_dirty = true;
  }
  return 0;
}

int cm_ledger_next_due(cm_ledger_t *l, int64_t now_ms, uint64_t *index) {
  /* Each chunk moves from wait to ready once per retry: amortised
   * O(log n), and the lowest due index is the top of `ready`. */
  while (l->wait.n && l->wait.v[0]->not_before_ms <= now_ms) {
    cm__chunk_t *c = l->wait.v[0];
    if (cm__heap_reserve(&l->ready) < 0) break; /* serve what is ready */
    cm__heap_remove(&l->wait, c);
    cm__heap_push(&l->ready, c);
  }
  if (!l->ready.n) return 0;
  *index = l->ready.v[0]->idx;
  return 1;
}

int64_t cm_ledger_next_due_at(const cm_ledger_t *l) {
  return l->wait.n ? l->wait.v[0]->not_before_ms : -1;
}

int cm_ledger_lease(cm_ledger_t *l, uint64_t index, const char *holder, int64_t deadline_ms,
                    uint32_t *attempt) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  char *h = NULL;
  int ret;
  if (!c || c->state != CM_CHUNK_PENDING) return -EINVAL;
  if ((ret = cm__heap_reserve(&l->lease)) < 0 || (ret = cm__queue_reserve(l)) < 0) return ret;
  if (!(h = cm__strdup(holder ? holder : ""))) return -ENOMEM;
  cm__unheap(l, c);
  cm__pendq_remove(&l->pendq, c);
  free(c->holder);
  c->holder = h;
  c->attempt++;
  if (c->attempt > 1) l->info.redeliveries++;
  c->state = CM_CHUNK_LEASED;
  c->deadline_ms = deadline_ms;
  c->not_before_ms = 0;
  cm__heap_push(&l->lease, c);
  cm__queue(l, c);
  l->job_dirty = true;
  if (attempt) *attempt = c->attempt;
  return 0;
}

int cm_ledger_extend(cm_ledger_t *l, uint64_t index, uint32_t attempt, int64_t deadline_ms) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  if (!c || c->state != CM_CHUNK_LEASED || c->attempt != attempt) return 0;
  /* Not queued for writing: after a restart every lease becomes pending
   * anyway, so a stored deadline is never used. Heartbeats extend leases
   * often; skipping the write keeps flushes small. */
  c->deadline_ms = deadline_ms;
  cm__heap_fix(&l->lease, c);
  return 1;
}

int cm_ledger_ack(cm_ledger_t *l, uint64_t index, uint32_t attempt, uint32_t records) {
  return cm_ledger_ack_v(l, index, attempt, records, NULL, 0);
}

int cm_ledger_ack_v(cm_ledger_t *l, uint64_t index, uint32_t attempt, uint32_t records,
                    const char *version, uint32_t redo) {
  cm__chunk_t *c;
  char *v = NULL;
  int ret;
  (void)attempt; /* any attempt: the data is saved, whoever saved it */
  if (!l->job || index >= l->info.next_index) return 0;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  c = cm__set_find(&l->set, index);
  if (!c) {
    /* Not in memory: done (nothing to do) or dead (a late ack of a chunk
     * that ran out of deliveries: it is saved after all). */
    if ((ret = cm__set_reserve(&l->set)) < 0) return ret;
    ret = cm__load_row(l, index, &c);
    if (ret <= 0) return ret;
    if (c->state != CM_CHUNK_DEAD || c->redo > redo) {
      cm__chunk_free(c);
      return 0;
    }
    cm__set_insert(&l->set, c);
  }
  if (c->state == CM_CHUNK_DONE) return 0;
  /* Saved by an older generation than the chunk's redo: the saver keeps
   * the newer rows (docs/jobs.md), so this ack proves nothing. */
  if (c->redo > redo) return 0;
  if (version && !(v = cm__strdup(version))) return -ENOMEM;
  free(c->version);
  c->version = v;
  if (c->redo > 0 && c->redo == l->info.redo_gen) l->info.redo_done++;
  cm__unheap(l, c);
  cm__pendq_remove(&l->pendq, c);
  if (c->state == CM_CHUNK_DEAD) l->info.dead_chunks--;
  free(c->holder);
  c->holder = NULL;
  c->state = CM_CHUNK_DONE;
  c->records = records;
  /* A saved chunk is never read again: drop its copy now, its row at the
   * flush. */
  free(c->payload);
  c->payload = NULL;
  c->payload_len = 0;
  l->info.done_chunks++;
  l->info.records_done += records;
  l->job_dirty = true;
  cm__queue(l, c);
  return 1;
}

int cm_ledger_release(cm_ledger_t *l, uint64_t index, uint32_t attempt, int64_t not_before_ms,
                      const char *reason, uint32_t max_deliver) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  char *r = NULL;
  int ret;
  if (!c || c->state != CM_CHUNK_LEASED || c->attempt != attempt) return 0;
  bool dead = max_deliver > 0 && c->attempt - c->base_attempt >= max_deliver;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  if (!dead && (ret = cm__heap_reserve(not_before_ms <= 0 ? &l->ready : &l->wait)) < 0)
    return ret;
  if (reason && !(r = cm__strdup(reason))) return -ENOMEM;
  if (reason) {
    free(c->reason);
    c->reason = r;
  }
  cm__heap_remove(&l->lease, c);
  free(c->holder);
  c->holder = NULL;
  c->deadline_ms = 0;
  cm__queue(l, c);
  l->job_dirty = true;
  if (dead) {
    /* Leaves memory at the next flush; the row keeps reason and attempt. */
    c->state = CM_CHUNK_DEAD;
    c->not_before_ms = 0;
    l->info.dead_chunks++;
    return 2;
  }
  c->state = CM_CHUNK_PENDING;
  c->not_before_ms = not_before_ms;
  cm__pend(l, c);
  return 1;
}

/* Collects (index, attempt) first and calls fn afterwards, re-checking each
 * chunk: fn may release this chunk or others (e.g. every chunk of a holder
 * that stopped heartbeating) without invalidating the walk. */
static int cm__hits_reserve(cm_ledger_t *l, size_t n) {
  if (n <= l->hits_cap) return 0;
  void *p = realloc(l->hits, n * sizeof *l->hits);
  if (!p) return -ENOMEM;
  l->hits = p;
  p = realloc(l->stack, n * sizeof *l->stack);
  if (!p) return -ENOMEM;
  l->stack = p;
  l->hits_cap = n;
  return 0;
}

static int cm__hit_cmp(const void *a, const void *b) {
  uint64_t x = ((const struct cm__hit_s *)a)->idx, y = ((const struct cm__hit_s *)b)->idx;
  return (x > y) - (x < y);
}

int cm_ledger_each_expired(cm_ledger_t *l, int64_t now_ms, cm_ledger_lease_fn fn, void *ud) {
  size_t n = 0, top = 0;
  int found = 0;
  if (cm__hits_reserve(l, l->lease.n + 1) < 0) return -ENOMEM;
  /* Walk the heap from the root, pruning subtrees whose root is not yet
   * expired: O(expired), not O(leased). `stack` holds heap positions still
   * to visit; each position is pushed at most once, so n + 1 is enough. */
  size_t *stack = l->stack;
  if (l->lease.n) stack[top++] = 0;
  while (top) {
    size_t i = stack[--top];
    cm__chunk_t *c = l->lease.v[i];
    if (c->deadline_ms > now_ms) continue;
    l->hits[n].idx = c->idx;
    l->hits[n++].attempt = c->attempt;
    if (2 * i + 1 < l->lease.n) stack[top++] = 2 * i + 1;
    if (2 * i + 2 < l->lease.n) stack[top++] = 2 * i + 2;
  }
  qsort(l->hits, n, sizeof *l->hits, cm__hit_cmp);
  for (size_t k = 0; k < n; k++) {
    cm__chunk_t *c = cm__set_find(&l->set, l->hits[k].idx);
    if (!c || c->state != CM_CHUNK_LEASED || c->attempt != l->hits[k].attempt ||
        c->deadline_ms > now_ms)
      continue;
    found++;
    if (fn) fn(ud, c->idx, c->attempt, c->holder);
  }
  return found;
}

int cm_ledger_each_held(cm_ledger_t *l, const char *holder, cm_ledger_lease_fn fn, void *ud) {
  size_t n = 0;
  int found = 0;
  if (!holder) return 0;
  if (cm__hits_reserve(l, l->lease.n + 1) < 0) return -ENOMEM;
  for (size_t i = 0; i < l->lease.n; i++) {
    cm__chunk_t *c = l->lease.v[i];
    if (strcmp(c->holder, holder) != 0) continue;
    l->hits[n].idx = c->idx;
    l->hits[n++].attempt = c->attempt;
  }
  qsort(l->hits, n, sizeof *l->hits, cm__hit_cmp);
  for (size_t k = 0; k < n; k++) {
    cm__chunk_t *c = cm__set_find(&l->set, l->hits[k].idx);
    if (!c || c->state != CM_CHUNK_LEASED || c->attempt != l->hits[k].attempt ||
        strcmp(c->holder, holder) != 0)
      continue;
    found++;
    if (fn) fn(ud, c->idx, c->attempt, c->holder);
  }
  return found;
}

bool cm_ledger_needs_payload(const cm_ledger_t *l, uint64_t index) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  return c && c->state == CM_CHUNK_PENDING && !c->payload && !c->payload_in_db;
}

int cm_ledger_set_payload(cm_ledger_t *l, uint64_t index, const void *payload, size_t len) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  void *p;
  int ret;
  if (!c || c->state != CM_CHUNK_PENDING || !payload) return -EINVAL;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  if (!(p = malloc(len ? len : 1))) return -ENOMEM;
  memcpy(p, payload, len);
  free(c->payload);
  c->payload = p;
  c->payload_len = len;
  cm__queue(l, c);
  return 0;
}

int cm_ledger_kill(cm_ledger_t *l, uint64_t index, const char *reason) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  char *r;
  int ret;
  if (!c || c->state != CM_CHUNK_PENDING || !reason) return -EINVAL;
  if ((ret = cm__queue_reserve(l)) < 0) return ret;
  if (!(r = cm__strdup(reason))) return -ENOMEM;
  free(c->reason);
  c->reason = r;
  cm__unheap(l, c);
  cm__pendq_remove(&l->pendq, c);
  c->state = CM_CHUNK_DEAD;
  c->not_before_ms = 0;
  l->info.dead_chunks++;
  l->job_dirty = true;
  cm__queue(l, c);
  return 0;
}

/* ---- queries ----------------------------------------------------------- */

int cm_ledger_payload(cm_ledger_t *l, uint64_t index, cm_buf_t *out) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  sqlite3_stmt *st = l->st[CM__S_PAYLOAD_GET];
  int ret, rc;
  if (!l->job) return -ENOENT;
  /* done: saved, and its row goes at the next flush */
  if (c && c->state == CM_CHUNK_DONE) return -ENOENT;
  if (c && c->payload) return cm_buf_append(out, c->payload, c->payload_len);
  if (c && !c->payload_in_db) return -ENOENT;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)index);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const void *p = sqlite3_column_blob(st, 0);
    int n = sqlite3_column_bytes(st, 0);
    ret = cm_buf_append(out, p ? p : "", (size_t)n);
  } else {
    ret = rc == SQLITE_DONE ? -ENOENT : cm__fail(l, rc);
  }
  sqlite3_reset(st);
  return ret;
}

int cm_ledger_chunk_state(cm_ledger_t *l, uint64_t index, cm_chunk_state_t *state,
                          uint32_t *attempt) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  int ret = 0;
  if (!l->job) return -ENOENT;
  if (!c) {
    ret = cm__load_row(l, index, &c);
    if (ret < 0) return ret;
    if (ret == 0) return -ENOENT;
  }
  if (state) *state = (cm_chunk_state_t)c->state;
  if (attempt) *attempt = c->attempt;
  if (ret == 1) cm__chunk_free(c); /* loaded for the question only */
  return 0;
}

size_t cm_ledger_leased_count(const cm_ledger_t *l) { return l->lease.n; }
size_t cm_ledger_pending_count(const cm_ledger_t *l) { return l->ready.n + l->wait.n; }
size_t cm_ledger_memory_chunks(const cm_ledger_t *l) { return l->set.n; }

void cm_ledger_set_clock(cm_ledger_t *l, int64_t (*now_ms)(void *ud), void *ud) {
  l->clock = now_ms;
  l->clock_ud = ud;
}

int64_t cm_ledger_oldest_pending_ms(const cm_ledger_t *l, bool unread) {
  int64_t now, since = INT64_MAX;
  if (!l->job) return 0;
  if (l->pendq.head) since = l->pendq.head->pending_since_ms;
  if (unread && !l->info.source_done && l->last_add_ms < since) since = l->last_add_ms;
  if (since == INT64_MAX) return 0;
  now = cm__clock_ms(l);
  return now > since ? now - since : 0;
}

bool cm_ledger_job_complete(const cm_ledger_t *l) {
  return l->job && l->info.source_done &&
         l->info.done_chunks + l->info.dead_chunks == l->info.next_index;
}
