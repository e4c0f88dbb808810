/* ledger_health.h - whether the fetcher's ledger can be written right now,
 * shared by both dispatchers (fetch.c and the app9 profile).
 *
 * Every write-behind flush goes through cm_ledger_health_flush. While the
 * last one failed (disk full, I/O error, another process holding the lock)
 * the dispatcher sends no chunk and reads no source, readiness is 503 with
 * SQLite's reason, and completion waits; the next successful flush clears
 * it. Logging: one line with the reason when it starts failing, then at most
 * one per CM_LEDGER_HEALTH_LOG_MS (with the count not logged), one when it
 * works again. Loop thread only. */
#ifndef CM_LEDGER_HEALTH_H
#define CM_LEDGER_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/ratelimit.h"
#include "ledger.h"

/* The loop thread never waits longer than this for another process's lock
 * on the ledger: a busy ledger is a failed flush, retried by the timer. */
#define CM_LEDGER_HEALTH_BUSY_MS 10
#define CM_LEDGER_HEALTH_LOG_MS 5000

typedef struct cm_ledger_health_s {
  cm_ledger_t *ledger; /* borrowed */
  bool failing;
  uint64_t failures; /* failed flushes since the ledger last worked */
  char err[300];     /* the last failure, "ledger PATH: <SQLite's message>" */
  cm_ratelimit_t log, ok_log;
} cm_ledger_health_t;

/* Also sets the ledger's busy timeout to CM_LEDGER_HEALTH_BUSY_MS. */
void cm_ledger_health_init(cm_ledger_health_t *h, cm_ledger_t *ledger);
/* Flushes the queued changes (nothing to write: 0 at once) and records the
 * outcome. Returns the flush's result. */
int cm_ledger_health_flush(cm_ledger_health_t *h, int64_t now_ms);
/* Readiness: false with "ledger cannot be written: ..." while failing. */
bool cm_ledger_health_ready(const cm_ledger_health_t *h, char *why, size_t whylen);

#endif
