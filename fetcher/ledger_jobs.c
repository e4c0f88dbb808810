/* ledger_jobs.c - the ledger's job rows (see ledger.h): opening a job
 * (create, resume, crash recovery, loading its pending chunks), the job
 * list, state, spec and cursor, dead chunks (list, replay), redo and each
 * chunk's origin in its source. */
#include "ledger_impl.h"

#include "cm/redact.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- jobs -------------------------------------------------------------- */

static double cm__now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads the job row into l->info. Returns 1 found, 0 absent, or -errno. */
static int cm__job_read(cm_ledger_t *l, const char *name, const char **src_out, char **src_copy) {
  sqlite3_stmt *st = l->st[CM__S_JOB_GET];
  int ret = 0;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) goto out;
  if (rc != SQLITE_ROW) {
    ret = cm__fail(l, rc);
    goto out;
  }
  const char *src = (const char *)sqlite3_column_text(st, 0);
  if (!(*src_copy = cm__strdup(src ? src : ""))) {
    ret = -ENOMEM;
    goto out;
  }
  *src_out = *src_copy;
  cm_job_info_t *in = &l->info;
  in->chunk_size = (uint32_t)sqlite3_column_int64(st, 1);
  in->next_index = (uint64_t)sqlite3_column_int64(st, 2);
  in->source_done = sqlite3_column_int(st, 3) != 0;
  in->source_pos = sqlite3_column_int64(st, 4);
  in->source_line = (uint64_t)sqlite3_column_int64(st, 5);
  in->done_chunks = (uint64_t)sqlite3_column_int64(st, 6);
  in->dead_chunks = (uint64_t)sqlite3_column_int64(st, 7);
  in->records_done = (uint64_t)sqlite3_column_int64(st, 8);
  in->redeliveries = (uint64_t)sqlite3_column_int64(st, 9);
  in->created_at = sqlite3_column_double(st, 10);
  in->state = sqlite3_column_int(st, 11);
  in->priority = (uint32_t)sqlite3_column_int64(st, 12);
  in->max_deliver = (uint32_t)sqlite3_column_int64(st, 13);
  in->finished_at = sqlite3_column_double(st, 14);
  const unsigned char *le = sqlite3_column_text(st, 15);
  snprintf(in->last_error, sizeof in->last_error, "%s", le ? (const char *)le : "");
  const unsigned char *spec = sqlite3_column_text(st, 16);
  const unsigned char *rv = sqlite3_column_text(st, 17);
  free(l->spec);
  free(l->redo_version);
  l->spec = spec ? cm__strdup((const char *)spec) : NULL;
  l->redo_version = rv ? cm__strdup((const char *)rv) : NULL;
  if ((spec && !l->spec) || (rv && !l->redo_version)) {
    ret = -ENOMEM;
    goto out;
  }
  in->redo_gen = (uint32_t)sqlite3_column_int64(st, 18);
  in->redo_chunks = (uint64_t)sqlite3_column_int64(st, 19);
  in->redo_done = (uint64_t)sqlite3_column_int64(st, 20);
  const unsigned char *cur = sqlite3_column_text(st, 21);
  free(l->cursor);
  l->cursor = cur ? cm__strdup((const char *)cur) : NULL;
  if (cur && !l->cursor) {
    ret = -ENOMEM;
    goto out;
  }
  ret = 1;
out:
  sqlite3_reset(st);
  return ret;
}

/* A pending chunk rebuilt from its ledger row (its payload, if any, is in
 * the payloads table). NULL on out-of-memory. */
static cm__chunk_t *cm__chunk_from_row(uint64_t idx, uint32_t attempt, uint32_t base_attempt,
                                       int64_t not_before_ms, const unsigned char *reason,
                                       uint32_t records, uint32_t redo, bool payload) {
  cm__chunk_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->idx = idx;
  c->attempt = attempt;
  c->base_attempt = base_attempt;
  c->not_before_ms = not_before_ms;
  c->records = records;
  c->redo = redo;
  c->state = CM_CHUNK_PENDING;
  c->payload_in_db = payload;
  if (reason && !(c->reason = cm__strdup((const char *)reason))) {
    free(c);
    return NULL;
  }
  return c;
}

/* Loads the job's pending chunks (after recovery there are no leased ones).
 * Dead chunks stay on disk; replay_dead or a late ack brings one back. */
static int cm__job_load(cm_ledger_t *l) {
  sqlite3_stmt *st = l->st[CM__S_LOAD_LIVE];
  cm__chunk_t *c = NULL;
  int ret = 0, rc;
  cm__bind_job(l, st);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if ((ret = cm__set_reserve(&l->set)) < 0) goto out;
    if ((ret = cm__heap_reserve(&l->ready)) < 0) goto out;
    if ((ret = cm__heap_reserve(&l->wait)) < 0) goto out;
    c = cm__chunk_from_row((uint64_t)sqlite3_column_int64(st, 0),
                           (uint32_t)sqlite3_column_int64(st, 1),
                           (uint32_t)sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                           sqlite3_column_text(st, 4), (uint32_t)sqlite3_column_int64(st, 5),
                           (uint32_t)sqlite3_column_int64(st, 6), sqlite3_column_int(st, 7) != 0);
    if (!c) {
      ret = -ENOMEM;
      goto out;
    }
    cm__set_insert(&l->set, c);
    cm__pend(l, c); /* waiting since this run could first send it */
    c = NULL;
  }
  if (rc != SQLITE_DONE) ret = cm__fail(l, rc);
out:
  sqlite3_reset(st);
  cm__chunk_free(c);
  return ret;
}

int cm_ledger_job_open(cm_ledger_t *l, const char *name, const char *source, uint32_t chunk_size,
                       cm_job_info_t *info, char *err, size_t errlen) {
  return cm_ledger_job_open_ex(l, name, source, chunk_size, NULL, info, err, errlen);
}

/* Runs one UPDATE jobs SET <col> = ?1 WHERE name = ?2 (inside job_open's
 * transaction). */
static int cm__job_set_text(cm_ledger_t *l, const char *sql, const char *v, const char *name) {
  sqlite3_stmt *up = NULL;
  int ret = 0;
  int rc = sqlite3_prepare_v2(l->db, sql, -1, &up, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(up, 1, v, -1, SQLITE_STATIC);
    sqlite3_bind_text(up, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(up);
  }
  if (rc != SQLITE_OK && rc != SQLITE_DONE) ret = cm__fail(l, rc);
  sqlite3_finalize(up);
  return ret;
}

int cm_ledger_job_open_ex(cm_ledger_t *l, const char *name, const char *source,
                          uint32_t chunk_size, const cm_ledger_new_job_t *nj, cm_job_info_t *info,
                          char *err, size_t errlen) {
  char *stored = NULL;
  const char *old_src = NULL;
  int ret = 0, found;
  if (errlen) err[0] = '\0';
  if (!name || !*name || strlen(name) >= sizeof info->name || chunk_size == 0 || !source) {
    snprintf(err, errlen, "ledger %s: invalid job name or chunk size", l->path);
    return -EINVAL;
  }
  l->errmsg[0] = '\0';
  /* One job per handle at a time: switching jobs writes the old one out
   * (and keeps it open if that fails). */
  if (l->job) {
    if ((ret = cm_ledger_flush(l)) < 0) {
      snprintf(err, errlen, "%s", l->errmsg);
      return ret;
    }
    cm__reset_memory(l);
    free(l->job);
    free(l->source);
    l->job = l->source = NULL;
  }
  free(l->spec);
  free(l->redo_version);
  free(l->cursor);
  l->spec = l->redo_version = l->cursor = NULL;
  memset(&l->info, 0, sizeof l->info);
  if (!(l->job = cm__strdup(name)) || !(l->source = cm__strdup(source))) {
    ret = -ENOMEM;
    goto fail;
  }
  if ((ret = cm__step_done(l, l->st[CM__S_BEGIN])) < 0) goto sqlfail;
  found = cm__job_read(l, name, &old_src, &stored);
  if (found < 0) {
    ret = found;
    goto sqlfail;
  }
  if (found && strcmp(old_src, source) != 0) {
    /* Descriptions show URLs with their credentials as "***"; a ledger
     * written before that holds them in clear: the same source, whose row
     * is rewritten so the secret leaves the file. */
    char shown[1024];
    (void)cm_redact_urls(old_src, shown, sizeof(shown));
    if (strcmp(shown, source) == 0) {
      if ((ret = cm__job_set_text(l, "UPDATE jobs SET source = ?1 WHERE name = ?2", source,
                                  name)) < 0)
        goto sqlfail;
    } else {
      snprintf(err, errlen,
               "job \"%s\" in ledger %s was created with source \"%s\"; refusing to resume it "
               "with \"%s\"; use another --job or ledger",
               name, l->path, shown, source);
      ret = -EEXIST;
      goto fail;
    }
  }
  if (found && nj && nj->must_be_new) {
    snprintf(err, errlen, "job \"%s\" exists in ledger %s", name, l->path);
    ret = -EEXIST;
    goto fail;
  }
  if (found && l->info.chunk_size != chunk_size) {
    snprintf(err, errlen,
             "job \"%s\" in ledger %s was created with chunk size %u; refusing to resume it "
             "with chunk size %u; use another --job or ledger",
             name, l->path, l->info.chunk_size, chunk_size);
    ret = -EEXIST;
    goto fail;
  }
  if (found && nj && nj->spec && !l->spec) {
    /* A job of a schema-1 ledger: its spec is known from now on. */
    if ((ret = cm__job_set_text(l, "UPDATE jobs SET spec = ?1 WHERE name = ?2", nj->spec,
                                name)) < 0)
      goto sqlfail;
    if (!(l->spec = cm__strdup(nj->spec))) {
      ret = -ENOMEM;
      goto sqlfail;
    }
  }
  if (!found) {
    sqlite3_stmt *st = l->st[CM__S_JOB_INSERT];
    l->info.chunk_size = chunk_size;
    l->info.created_at = cm__now_s();
    l->info.priority = nj && nj->priority ? nj->priority : 1;
    l->info.max_deliver = nj ? nj->max_deliver : 0;
    l->info.state = nj ? nj->state : 1;
    if (nj && nj->spec && !(l->spec = cm__strdup(nj->spec))) {
      ret = -ENOMEM;
      goto sqlfail;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, chunk_size);
    sqlite3_bind_double(st, 4, l->info.created_at);
    if (l->spec)
      sqlite3_bind_text(st, 5, l->spec, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null(st, 5);
    sqlite3_bind_int64(st, 6, l->info.priority);
    sqlite3_bind_int64(st, 7, l->info.max_deliver);
    sqlite3_bind_int(st, 8, l->info.state);
    ret = cm__step_done(l, st);
    sqlite3_clear_bindings(st);
    if (ret < 0) goto sqlfail;
  }
  /* Crash recovery: nobody holds a lease from a previous run any more.
   * Attempts continue from the stored ones. A lease that was never flushed
   * is handed out again with the same attempt number, so a mapper from
   * before the crash could nak the new lease: one more redelivery at worst,
   * never a lost chunk (the saver deduplicates). */
  cm__bind_job(l, l->st[CM__S_RECOVER]);
  if ((ret = cm__step_done(l, l->st[CM__S_RECOVER])) < 0) goto sqlfail;
  if ((ret = cm__step_done(l, l->st[CM__S_COMMIT])) < 0) goto sqlfail;
  if ((ret = cm__job_load(l)) < 0) goto sqlfail;
  l->last_add_ms = cm__clock_ms(l);
  snprintf(l->info.name, sizeof l->info.name, "%s", name);
  snprintf(l->info.source, sizeof l->info.source, "%s", source);
  if (info) *info = l->info;
  free(stored);
  return 0;
sqlfail:
  snprintf(err, errlen, "%s", l->errmsg[0] ? l->errmsg : "ledger: out of memory");
fail:
  cm__rollback(l);
  cm__reset_memory(l);
  free(stored);
  free(l->job);
  free(l->source);
  free(l->spec);
  free(l->redo_version);
  free(l->cursor);
  l->job = l->source = l->spec = l->redo_version = l->cursor = NULL;
  memset(&l->info, 0, sizeof l->info);
  return ret;
}

void cm_ledger_info(const cm_ledger_t *l, cm_job_info_t *info) { *info = l->info; }

/* ---- dead chunks -------------------------------------------------------- */

/* A chunk read back from its row (dead or done) becomes pending again:
 * room for it first (so a failure leaves nothing half-moved), then it is
 * in memory, due, and its row change queued. */
static int repend_reserve(cm_ledger_t *l) {
  int ret;
  if ((ret = cm__set_reserve(&l->set)) < 0 || (ret = cm__heap_reserve(&l->ready)) < 0 ||
      (ret = cm__queue_reserve(l)) < 0)
    return ret;
  return 0;
}

static void repend(cm_ledger_t *l, cm__chunk_t *c) {
  cm__set_insert(&l->set, c);
  cm__pend(l, c);
  cm__queue(l, c);
}

int cm_ledger_replay_dead(cm_ledger_t *l) {
  sqlite3_stmt *st = l->st[CM__S_LOAD_DEAD];
  cm__chunk_t *c = NULL;
  int ret, rc, n = 0;
  if (!l->job) return -EINVAL;
  /* Dead chunks live on disk only: write out the ones that died since the
   * last flush, then the table is the complete list. */
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  cm__bind_job(l, st);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint64_t idx = (uint64_t)sqlite3_column_int64(st, 0);
    if (cm__set_find(&l->set, idx)) continue; /* cannot happen after the flush */
    if ((ret = repend_reserve(l)) < 0) goto out;
    uint32_t attempt = (uint32_t)sqlite3_column_int64(st, 1);
    /* base_attempt = attempt: a fresh max_deliver budget. */
    c = cm__chunk_from_row(idx, attempt, attempt, 0, sqlite3_column_text(st, 2),
                           (uint32_t)sqlite3_column_int64(st, 3),
                           (uint32_t)sqlite3_column_int64(st, 4), sqlite3_column_int(st, 5) != 0);
    if (!c) {
      ret = -ENOMEM;
      goto out;
    }
    repend(l, c);
    c = NULL;
    l->info.dead_chunks--;
    l->job_dirty = true;
    n++;
  }
  ret = rc == SQLITE_DONE ? n : cm__fail(l, rc);
out:
  /* On an error midway the chunks replayed so far stay replayed (memory and
   * queue agree), the rest stay dead. */
  sqlite3_reset(st);
  cm__chunk_free(c);
  return ret;
}

/* ---- jobs of the service (schema 2) ----------------------------------- */

int cm_ledger_set_state(cm_ledger_t *l, int state, double finished_at, const char *last_error) {
  cm_job_info_t old;
  int ret;
  if (!l->job) return -EINVAL;
  old = l->info;
  l->info.state = state;
  l->info.finished_at = finished_at;
  snprintf(l->info.last_error, sizeof l->info.last_error, "%s", last_error ? last_error : "");
  l->job_dirty = true;
  if ((ret = cm_ledger_flush(l)) < 0) {
    /* Not stored: memory says what the file says. */
    l->info.state = old.state;
    l->info.finished_at = old.finished_at;
    memcpy(l->info.last_error, old.last_error, sizeof old.last_error);
  }
  return ret;
}

const char *cm_ledger_spec(const cm_ledger_t *l) { return l->spec; }
const char *cm_ledger_cursor(const cm_ledger_t *l) { return l->cursor; }

int cm_ledger_set_cursor(cm_ledger_t *l, const char *cursor) {
  char *c = NULL;
  if (!l->job) return -EINVAL;
  if ((cursor == NULL && l->cursor == NULL) ||
      (cursor && l->cursor && strcmp(cursor, l->cursor) == 0))
    return 0;
  if (cursor && !(c = cm__strdup(cursor))) return -ENOMEM;
  free(l->cursor);
  l->cursor = c;
  l->job_dirty = true;
  return 0;
}
const char *cm_ledger_redo_version(const cm_ledger_t *l) { return l->redo_version; }

int cm_ledger_each_job(cm_ledger_t *l, cm_ledger_job_fn fn, void *ud) {
  sqlite3_stmt *st = l->st[CM__S_JOB_LIST];
  int rc, n = 0, ret = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    cm_ledger_job_row_t r;
    memset(&r, 0, sizeof r);
    r.name = (const char *)sqlite3_column_text(st, 0);
    r.source = (const char *)sqlite3_column_text(st, 1);
    r.chunk_size = (uint32_t)sqlite3_column_int64(st, 2);
    r.state = sqlite3_column_int(st, 3);
    r.spec = (const char *)sqlite3_column_text(st, 4);
    r.priority = (uint32_t)sqlite3_column_int64(st, 5);
    r.max_deliver = (uint32_t)sqlite3_column_int64(st, 6);
    r.created_at = sqlite3_column_double(st, 7);
    n++;
    if (fn && (ret = fn(ud, &r)) != 0) break;
  }
  if (ret == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE) ret = cm__fail(l, rc);
  sqlite3_reset(st);
  return ret != 0 ? ret : n;
}

int cm_ledger_each_dead(cm_ledger_t *l, size_t max, cm_ledger_dead_fn fn, void *ud) {
  sqlite3_stmt *st = l->st[CM__S_DEAD_LIST];
  int rc, n = 0, ret;
  if (!l->job) return -EINVAL;
  /* Chunks that died since the last flush are not in the table yet. */
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)(max > INT64_MAX ? INT64_MAX : max));
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *reason = sqlite3_column_text(st, 2);
    if (fn)
      fn(ud, (uint64_t)sqlite3_column_int64(st, 0), (uint32_t)sqlite3_column_int64(st, 1),
         reason ? (const char *)reason : "");
    n++;
  }
  ret = rc == SQLITE_DONE ? n : cm__fail(l, rc);
  sqlite3_reset(st);
  return ret;
}

int cm_ledger_redo(cm_ledger_t *l, const char *version) {
  sqlite3_stmt *st = l->st[CM__S_LOAD_REDO];
  cm__chunk_t *c = NULL;
  char *v = NULL;
  uint32_t gen;
  int ret, rc, n = 0;
  if (!l->job || !version) return -EINVAL;
  /* Done chunks leave memory at the flush: then the table has them all. */
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  if (!(v = cm__strdup(version))) return -ENOMEM;
  gen = l->info.redo_gen + 1;
  cm__bind_job(l, st);
  sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint64_t idx = (uint64_t)sqlite3_column_int64(st, 0);
    if (cm__set_find(&l->set, idx)) continue; /* cannot happen after the flush */
    if ((ret = repend_reserve(l)) < 0) goto out;
    uint32_t attempt = (uint32_t)sqlite3_column_int64(st, 1);
    uint32_t records = (uint32_t)sqlite3_column_int64(st, 3);
    /* A fresh max_deliver budget, like a replay; records are counted again
     * when the new save is acked. */
    /* Its payload row was deleted when it was done: a sequential source's
     * chunk is re-read (cm_ledger_needs_payload) before it is sent. */
    c = cm__chunk_from_row(idx, attempt, attempt, 0, NULL, 0, gen, false);
    if (!c) {
      ret = -ENOMEM;
      goto out;
    }
    repend(l, c);
    c = NULL;
    l->info.done_chunks--;
    l->info.records_done -= records;
    n++;
  }
  ret = rc == SQLITE_DONE ? n : cm__fail(l, rc);
out:
  sqlite3_clear_bindings(st);
  sqlite3_reset(st);
  cm__chunk_free(c);
  if (n > 0) {
    /* Chunks moved so far stay moved (memory and queue agree). */
    free(l->redo_version);
    l->redo_version = v;
    v = NULL;
    l->info.redo_gen = gen;
    l->info.redo_chunks = (uint64_t)n;
    l->info.redo_done = 0;
    l->job_dirty = true;
  }
  free(v);
  return ret;
}

uint32_t cm_ledger_chunk_redo(cm_ledger_t *l, uint64_t index) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  return c ? c->redo : 0;
}

int cm_ledger_redo_unplaced(cm_ledger_t *l, const char *version) {
  sqlite3_stmt *st = l->st[CM__S_REDO_UNPLACED];
  int ret, rc;
  if (!l->job || !version) return -EINVAL;
  if ((ret = cm_ledger_flush(l)) < 0) return ret;
  cm__bind_job(l, st);
  sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  ret = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : cm__fail(l, rc);
  sqlite3_clear_bindings(st);
  sqlite3_reset(st);
  return ret;
}

int cm_ledger_chunk_origin(cm_ledger_t *l, uint64_t index, cm_ledger_origin_t *o, char *cursor,
                           size_t cursor_len) {
  cm__chunk_t *c = cm__set_find(&l->set, index);
  sqlite3_stmt *st = l->st[CM__S_ORIGIN_GET];
  int ret = -ENOENT, rc;
  if (!l->job) return -ENOENT;
  if (cursor_len) cursor[0] = '\0';
  o->cursor = NULL;
  if (c && c->origin) {
    /* not flushed yet */
    o->pos = c->origin->pos;
    o->line = c->origin->line;
    memcpy(o->digest, c->origin->digest, sizeof o->digest);
    if (c->origin->cursor) {
      if (snprintf(cursor, cursor_len, "%s", c->origin->cursor) >= (int)cursor_len) return -E2BIG;
      o->cursor = cursor;
    }
    return 0;
  }
  cm__bind_job(l, st);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)index);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const void *d = sqlite3_column_blob(st, 3);
    const unsigned char *cur = sqlite3_column_text(st, 2);
    if (sqlite3_column_type(st, 0) != SQLITE_NULL && d &&
        sqlite3_column_bytes(st, 3) == (int)sizeof o->digest) {
      o->pos = sqlite3_column_int64(st, 0);
      o->line = (uint64_t)sqlite3_column_int64(st, 1);
      memcpy(o->digest, d, sizeof o->digest);
      ret = 0;
      if (cur) {
        if (snprintf(cursor, cursor_len, "%s", (const char *)cur) >= (int)cursor_len)
          ret = -E2BIG;
        else
          o->cursor = cursor;
      }
    }
  } else if (rc != SQLITE_DONE) {
    ret = cm__fail(l, rc);
  }
  sqlite3_reset(st);
  return ret;
}
