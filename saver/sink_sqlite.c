/* sink_sqlite.c - the SQLite sink: the results database of store.c behind
 * the sink interface (sink.h). store.c keeps the storage logic and the error
 * classification (cm_store_status_temporary); this file only translates
 * items and tracks health. */
#include "sink.h"
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/err.h"

typedef struct {
  cm_store_t *store;
  cm_store_item_t *items; /* scratch for one batch */
  size_t cap;
  pthread_mutex_t mu; /* guards ok/why: health is read from any thread */
  bool ok;
  char why[256];
} sq_t;

static void sq_set_health(sq_t *q, bool ok, const char *why) {
  pthread_mutex_lock(&q->mu);
  q->ok = ok;
  snprintf(q->why, sizeof(q->why), "%s", ok ? "" : why);
  pthread_mutex_unlock(&q->mu);
}

static int sq_save_batch(void *impl, cm_sink_item_t *items, size_t n) {
  sq_t *q = impl;
  int rc;
  bool store_fault = false;
  const char *fault = "";
  if (n > q->cap) {
    cm_store_item_t *p = realloc(q->items, n * sizeof(*p));
    if (p == NULL) {
      for (size_t k = 0; k < n; k++) {
        items[k].status = -ENOMEM;
        items[k].temporary = true;
        cm_set_err(items[k].err, sizeof(items[k].err), "batch not saved: out of memory");
      }
      return -ENOMEM;
    }
    q->items = p;
    q->cap = n;
  }
  for (size_t k = 0; k < n; k++) {
    memset(&q->items[k], 0, sizeof(q->items[k]));
    q->items[k].json = items[k].json;
    q->items[k].len = items[k].len;
    q->items[k].view = items[k].view;
    q->items[k].elems = items[k].elems;
  }
  rc = cm_store_save_batch(q->store, q->items, n);
  for (size_t k = 0; k < n; k++) {
    const cm_store_item_t *si = &q->items[k];
    cm_sink_item_t *it = &items[k];
    it->status = si->status;
    /* store.c's classification: a data error (-EINVAL, -ERANGE, -E2BIG)
     * is the chunk's; anything else is the store's, and a batch that did
     * not commit gives every item that was fine the batch's (temporary)
     * error. */
    it->temporary = cm_store_status_temporary(si->status);
    it->hdr = si->hdr;
    it->records = si->records;
    it->dead = si->dead;
    memcpy(it->version, si->version, sizeof(it->version));
    it->redo = si->redo;
    it->replaced = si->replaced;
    memcpy(it->err, si->err, sizeof(it->err));
    if (it->status < 0 && it->temporary && !store_fault) {
      store_fault = true;
      fault = it->err;
    }
  }
  if (rc != 0 || store_fault) {
    char why[256];
    snprintf(why, sizeof(why), "results database cannot be written: %s",
             fault[0] ? fault : "commit failed");
    sq_set_health(q, false, why);
  } else {
    sq_set_health(q, true, NULL);
  }
  return rc;
}

static void sq_check(void *impl) { (void)impl; }

static bool sq_health(void *impl, char *why, size_t whylen) {
  sq_t *q = impl;
  bool ok;
  pthread_mutex_lock(&q->mu);
  ok = q->ok;
  if (!ok) snprintf(why, whylen, "%s", q->why);
  pthread_mutex_unlock(&q->mu);
  return ok;
}

static int sq_query(void *impl, const char *sql, char *out, size_t outlen, char *err,
                    size_t errlen) {
  sq_t *q = impl;
  sqlite3 *db = cm_store_db(q->store);
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (outlen > 0) out[0] = '\0';
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && out != NULL && outlen > 0) {
      const unsigned char *t = sqlite3_column_text(st, 0);
      snprintf(out, outlen, "%s", t ? (const char *)t : "");
    }
    while (rc == SQLITE_ROW) rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK) cm_set_err(err, errlen, "%s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? 0 : -EIO;
}

static void sq_close(void *impl) {
  sq_t *q = impl;
  if (q == NULL) return;
  cm_store_close(q->store);
  pthread_mutex_destroy(&q->mu);
  free(q->items);
  free(q);
}

static const cm_sink_ops_t sq_ops = {
    .save_batch = sq_save_batch,
    .check = sq_check,
    .health = sq_health,
    .query = sq_query,
    .close = sq_close,
};

int cm_sink_sqlite_open(void **impl, const cm_sink_ops_t **ops, const cm_sink_opts_t *opts,
                        char *err, size_t errlen) {
  sq_t *q = calloc(1, sizeof(*q));
  int rc;
  if (q == NULL) {
    cm_set_err(err, errlen, "out of memory");
    return -ENOMEM;
  }
  rc = cm_store_open(&q->store, opts->db,
                     opts->sync != NULL && strcmp(opts->sync, "normal") == 0 ? CM_SYNC_NORMAL
                                                                             : CM_SYNC_FULL,
                     err, errlen);
  if (rc != 0) {
    free(q);
    return rc;
  }
  pthread_mutex_init(&q->mu, NULL);
  q->ok = true;
  *impl = q;
  *ops = &sq_ops;
  return 0;
}
