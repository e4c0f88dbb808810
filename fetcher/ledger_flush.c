/* ledger_flush.c - writes the ledger's changes out (see cm_ledger_flush in
 * ledger.h): every handle of a connection in one transaction, then done
 * and dead chunks leave memory. */
#include "ledger_impl.h"

#include <stdlib.h>

/* ---- flush ------------------------------------------------------------- */

static int cm__write_chunk(cm_ledger_t *l, const cm__chunk_t *c) {
  sqlite3_stmt *st = l->st[CM__S_CHUNK_UPSERT];
  int ret;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)c->idx);
  sqlite3_bind_int(st, 3, c->state);
  sqlite3_bind_int64(st, 4, c->attempt);
  sqlite3_bind_int64(st, 5, c->base_attempt);
  sqlite3_bind_int64(st, 6, c->deadline_ms);
  if (c->holder)
    sqlite3_bind_text(st, 7, c->holder, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 7);
  sqlite3_bind_int64(st, 8, c->not_before_ms);
  if (c->reason)
    sqlite3_bind_text(st, 9, c->reason, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 9);
  sqlite3_bind_int64(st, 10, c->records);
  if (c->version)
    sqlite3_bind_text(st, 11, c->version, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 11);
  sqlite3_bind_int64(st, 12, c->redo);
  if (c->origin) {
    sqlite3_bind_int64(st, 13, c->origin->pos);
    sqlite3_bind_int64(st, 14, (sqlite3_int64)c->origin->line);
    if (c->origin->cursor)
      sqlite3_bind_text(st, 15, c->origin->cursor, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null(st, 15);
    sqlite3_bind_blob(st, 16, c->origin->digest, (int)sizeof c->origin->digest, SQLITE_STATIC);
  } else {
    for (int i = 13; i <= 16; i++) sqlite3_bind_null(st, i);
  }
  ret = cm__step_done(l, st);
  sqlite3_clear_bindings(st);
  if (ret < 0) return ret;
  if (c->state == CM_CHUNK_DONE) {
    if (!c->payload_in_db) return 0;
    st = l->st[CM__S_PAYLOAD_DEL];
    cm__bind_job(l, st);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c->idx);
    return cm__step_done(l, st);
  }
  if (!c->payload) return 0;
  st = l->st[CM__S_PAYLOAD_PUT];
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)c->idx);
  sqlite3_bind_blob64(st, 3, c->payload, c->payload_len, SQLITE_STATIC);
  ret = cm__step_done(l, st);
  sqlite3_clear_bindings(st);
  return ret;
}

static int cm__write_job(cm_ledger_t *l) {
  sqlite3_stmt *st = l->st[CM__S_JOB_UPDATE];
  const cm_job_info_t *in = &l->info;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)in->next_index);
  sqlite3_bind_int(st, 3, in->source_done);
  sqlite3_bind_int64(st, 4, in->source_pos);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)in->source_line);
  sqlite3_bind_int64(st, 6, (sqlite3_int64)in->done_chunks);
  sqlite3_bind_int64(st, 7, (sqlite3_int64)in->dead_chunks);
  sqlite3_bind_int64(st, 8, (sqlite3_int64)in->records_done);
  sqlite3_bind_int64(st, 9, (sqlite3_int64)in->redeliveries);
  sqlite3_bind_int(st, 10, in->state);
  if (in->finished_at > 0)
    sqlite3_bind_double(st, 11, in->finished_at);
  else
    sqlite3_bind_null(st, 11);
  if (in->last_error[0])
    sqlite3_bind_text(st, 12, in->last_error, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 12);
  if (l->redo_version)
    sqlite3_bind_text(st, 13, l->redo_version, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 13);
  sqlite3_bind_int64(st, 14, in->redo_gen);
  sqlite3_bind_int64(st, 15, (sqlite3_int64)in->redo_chunks);
  sqlite3_bind_int64(st, 16, (sqlite3_int64)in->redo_done);
  if (l->cursor)
    sqlite3_bind_text(st, 17, l->cursor, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 17);
  int ret = cm__step_done(l, st);
  sqlite3_clear_bindings(st);
  return ret;
}

static bool cm__has_changes(const cm_ledger_t *h) {
  return h->job && (h->queue_n > 0 || h->job_dirty);
}

/* After the commit: forget payload copies, and done/dead chunks leave
 * memory. */
static void cm__committed(cm_ledger_t *l) {
  for (size_t i = 0; i < l->queue_n; i++) {
    cm__chunk_t *c = l->queue[i];
    c->dirty = false;
    cm__origin_free(c->origin);
    c->origin = NULL;
    if (c->payload) {
      free(c->payload);
      c->payload = NULL;
      c->payload_len = 0;
      c->payload_in_db = true;
    }
    if (c->state == CM_CHUNK_DONE || c->state == CM_CHUNK_DEAD) {
      cm__set_delete(&l->set, c);
      cm__chunk_free(c);
    }
  }
  l->queue_n = 0;
  l->job_dirty = false;
  /* Give back memory after a burst (e.g. a large replay) has drained. */
  cm__set_shrink(&l->set);
  if (l->queue_cap > 1024) {
    free(l->queue);
    l->queue = NULL;
    l->queue_cap = 0;
  }
}

int cm_ledger_flush(cm_ledger_t *l) {
  int ret = 0;
  bool any = false;
  cm_ledger_t *h;
  for (h = l->conn->handles; h; h = h->next) any = any || cm__has_changes(h);
  if (!any) return 0;
  /* IMMEDIATE: take the write lock up front, so the busy timeout applies
   * here and not as a deadlock-prone lock upgrade in the middle. */
  if ((ret = cm__step_done(l, l->st[CM__S_BEGIN])) < 0) goto fail;
  for (h = l->conn->handles; h; h = h->next) {
    if (!cm__has_changes(h)) continue;
    for (size_t i = 0; i < h->queue_n; i++)
      if ((ret = cm__write_chunk(h, h->queue[i])) < 0) goto fail;
    if ((ret = cm__write_job(h)) < 0) goto fail;
  }
  if ((ret = cm__step_done(l, l->st[CM__S_COMMIT])) < 0) goto fail;
  for (h = l->conn->handles; h; h = h->next)
    if (cm__has_changes(h)) cm__committed(h);
  return 0;
fail:
  /* Nothing was committed; the queues are intact and the next flush retries. */
  cm__rollback(l);
  return ret;
}

size_t cm_ledger_unflushed(const cm_ledger_t *l) {
  size_t n = 0;
  for (const cm_ledger_t *h = l->conn->handles; h; h = h->next)
    if (h->job) n += h->queue_n + (h->job_dirty ? 1 : 0);
  return n;
}
