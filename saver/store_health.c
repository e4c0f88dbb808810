/* store_health.c - see store_health.h. */
#include "store_health.h"

#include <stdio.h>
#include <string.h>

#include "cm/log.h"

void cm_store_health_init(cm_store_health_t *h, const char *db_path) {
  memset(h, 0, sizeof(*h));
  h->db_path = db_path;
  h->log = (cm_ratelimit_t)CM_RATELIMIT_INIT(CM_STORE_HEALTH_LOG_MS);
  h->ok_log = (cm_ratelimit_t)CM_RATELIMIT_INIT(CM_STORE_HEALTH_LOG_MS);
}

void cm_store_health_note(cm_store_health_t *h, int rc, const char *why, const char *what_next,
                          int64_t now_ms) {
  uint64_t more = 0;
  if (rc == 0) {
    /* The limiters are not reset: a store that flaps (a commit fails, a
     * smaller one fits) still logs at most one line per period. */
    if (h->failing && cm_ratelimit_allow(&h->ok_log, now_ms, NULL))
      cm_log_info("results database %s is writable again after %llu failed commits", h->db_path,
                  (unsigned long long)h->failures);
    h->failing = false;
    h->failures = 0;
    return;
  }
  h->failing = true;
  h->failures++;
  snprintf(h->err, sizeof(h->err), "%s", why != NULL && why[0] ? why : "commit failed");
  if (cm_ratelimit_allow(&h->log, now_ms, &more))
    cm_log_error("results database %s cannot be written (%llu failed commits, %llu not logged): "
                 "%s; nothing of those batches is acknowledged, %s",
                 h->db_path, (unsigned long long)h->failures, (unsigned long long)more, h->err,
                 what_next);
}

bool cm_store_health_ready(const cm_store_health_t *h, char *why, size_t whylen) {
  if (!h->failing) return true;
  snprintf(why, whylen, "results database cannot be written: %s", h->err);
  return false;
}
