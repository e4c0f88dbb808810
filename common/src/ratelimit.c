/* ratelimit.c - see ratelimit.h. */
#include "cm/ratelimit.h"

#include <stddef.h>

bool cm_ratelimit_allow(cm_ratelimit_t *r, int64_t now_ms, uint64_t *suppressed) {
  if (r->last_ms >= 0 && now_ms - r->last_ms < r->period_ms) {
    r->suppressed++;
    return false;
  }
  if (suppressed != NULL) *suppressed = r->suppressed;
  r->suppressed = 0;
  r->last_ms = now_ms;
  return true;
}

uint64_t cm_ratelimit_reset(cm_ratelimit_t *r) {
  uint64_t n = r->suppressed;
  r->suppressed = 0;
  r->last_ms = -1;
  return n;
}
