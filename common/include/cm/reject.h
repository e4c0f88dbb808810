/* reject.h - messages refused as not authentic or not allowed (forged lease,
 * forged ack, a credit that would take over a live member, ...): each one is
 * counted in chunkmill_rejected_messages_total{reason="..."} and logged, at
 * most one warning per reason per second (with the number suppressed in
 * between), so a flood of forgeries cannot flood the log.
 * Loop thread only. */
#ifndef CM_REJECT_H
#define CM_REJECT_H

#include <stdint.h>

#include "cm/metrics.h"

typedef struct cm_reject_s cm_reject_t;

/* Borrows m (it outlives the rejecter). */
int cm_reject_create(cm_reject_t **out, cm_metrics_t *m) __attribute__((warn_unused_result));
void cm_reject_destroy(cm_reject_t *r); /* NULL-safe */

/* Counts one rejection for `reason` (a short constant label value of
 * [a-z_], e.g. "lease_forged") and logs the formatted detail, rate-limited.
 * now_ms: a monotonic clock. Never pass secrets in the detail. */
void cm_reject(cm_reject_t *r, int64_t now_ms, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Rejections counted so far for reason (tests, /status). */
uint64_t cm_reject_count(const cm_reject_t *r, const char *reason);

#endif
