/* store_health.h - whether the results database can be written right now,
 * shared by the native and the app9 saver.
 *
 * Fed with the outcome of every batch commit. After a failed one (disk full,
 * I/O error, locked) readiness is 503 with SQLite's reason until a commit
 * succeeds. Logging: one line with the reason when it starts failing, then
 * at most one per CM_STORE_HEALTH_LOG_MS (with the count not logged), one
 * when it works again. Loop thread only. */
#ifndef CM_STORE_HEALTH_H
#define CM_STORE_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/ratelimit.h"

#define CM_STORE_HEALTH_LOG_MS 5000

typedef struct cm_store_health_s {
  const char *db_path; /* borrowed */
  bool failing;
  uint64_t failures; /* failed commits since the store last worked */
  char err[200];
  cm_ratelimit_t log, ok_log;
} cm_store_health_t;

void cm_store_health_init(cm_store_health_t *h, const char *db_path);
/* rc: the commit's result (0 committed); why: its error text when rc != 0.
 * what_next: said in the failure log ("the mappers retry"). */
void cm_store_health_note(cm_store_health_t *h, int rc, const char *why, const char *what_next,
                          int64_t now_ms);
/* Readiness: false with "results database cannot be written: ..." while
 * failing. */
bool cm_store_health_ready(const cm_store_health_t *h, char *why, size_t whylen);

#endif
