/* ratelimit.h - at most one log line per period for a repeating condition
 * (a store that cannot be written fails many times a second).
 *
 *   static cm_ratelimit_t rl = CM_RATELIMIT_INIT(5000);
 *   uint64_t more;
 *   if (cm_ratelimit_allow(&rl, now_ms, &more))
 *     cm_log_error("commit failed: %s (%llu more since the last report)", why, more);
 *
 * Not thread-safe: one owner thread (the loop). */
#ifndef CM_RATELIMIT_H
#define CM_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cm_ratelimit_s {
  int64_t period_ms;
  int64_t last_ms; /* time of the last allowed event; -1: never */
  uint64_t suppressed;
} cm_ratelimit_t;

#define CM_RATELIMIT_INIT(period) {(period), -1, 0}

/* true when an event at now_ms may be reported: the first one, and then one
 * per period_ms. *suppressed (may be NULL) gets the number of events refused
 * since the last allowed one; the count restarts. */
bool cm_ratelimit_allow(cm_ratelimit_t *r, int64_t now_ms, uint64_t *suppressed);
/* Forgets the history: the next event is reported at once (e.g. after the
 * condition cleared). Returns the events refused since the last report. */
uint64_t cm_ratelimit_reset(cm_ratelimit_t *r);

#endif
