/* ledger_health.c - see ledger_health.h. */
#include "ledger_health.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cm/log.h"

void cm_ledger_health_init(cm_ledger_health_t *h, cm_ledger_t *ledger) {
  memset(h, 0, sizeof(*h));
  h->ledger = ledger;
  h->log = (cm_ratelimit_t)CM_RATELIMIT_INIT(CM_LEDGER_HEALTH_LOG_MS);
  h->ok_log = (cm_ratelimit_t)CM_RATELIMIT_INIT(CM_LEDGER_HEALTH_LOG_MS);
  cm_ledger_set_busy_timeout(ledger, CM_LEDGER_HEALTH_BUSY_MS);
}

int cm_ledger_health_flush(cm_ledger_health_t *h, int64_t now_ms) {
  uint64_t more = 0;
  int rc;
  if (cm_ledger_unflushed(h->ledger) == 0) return 0;
  rc = cm_ledger_flush(h->ledger);
  if (rc == 0) {
    /* The limiters are not reset: a ledger that flaps (one flush fails, a
     * smaller one fits) still logs at most one line per period. */
    if (h->failing && cm_ratelimit_allow(&h->ok_log, now_ms, NULL))
      cm_log_info("ledger is writable again after %" PRIu64 " failed flushes: resuming",
                  h->failures);
    h->failing = false;
    h->failures = 0;
    return 0;
  }
  h->failing = true;
  h->failures++;
  snprintf(h->err, sizeof(h->err), "%s",
           cm_ledger_errmsg(h->ledger)[0] ? cm_ledger_errmsg(h->ledger) : strerror(-rc));
  if (cm_ratelimit_allow(&h->log, now_ms, &more))
    cm_log_error("ledger cannot be written (%" PRIu64 " failed flushes, %" PRIu64
                 " not logged, %zu changes held): %s; dispatch and source reading are paused "
                 "until it can",
                 h->failures, more, cm_ledger_unflushed(h->ledger), h->err);
  return rc;
}

bool cm_ledger_health_ready(const cm_ledger_health_t *h, char *why, size_t whylen) {
  if (!h->failing) return true;
  snprintf(why, whylen, "ledger cannot be written: %s", h->err);
  return false;
}
