/* reject.c - counted, rate-limited reporting of refused messages. */
#include "cm/reject.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/log.h"

#define REJECT_REASONS 32
#define REJECT_LOG_EVERY_MS 1000

typedef struct {
  char reason[48];
  cm_counter_t *c;
  int64_t last_log_ms;
  uint64_t suppressed;
} reason_t;

struct cm_reject_s {
  cm_metrics_t *m;
  reason_t r[REJECT_REASONS];
  int n;
};

int cm_reject_create(cm_reject_t **out, cm_metrics_t *m) {
  cm_reject_t *r = calloc(1, sizeof(*r));
  *out = NULL;
  if (r == NULL) return -ENOMEM;
  r->m = m;
  *out = r;
  return 0;
}

void cm_reject_destroy(cm_reject_t *r) { free(r); }

static reason_t *slot(cm_reject_t *r, const char *reason) {
  char labels[96];
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->r[i].reason, reason) == 0) return &r->r[i];
  if (r->n == REJECT_REASONS) return &r->r[REJECT_REASONS - 1]; /* reasons are constants */
  reason_t *s = &r->r[r->n++];
  snprintf(s->reason, sizeof(s->reason), "%s", reason);
  snprintf(labels, sizeof(labels), "reason=\"%s\"", s->reason);
  s->c = cm_metrics_counter(r->m, "chunkmill_rejected_messages_total",
                            "Messages refused as not authentic or not allowed, by reason.",
                            labels);
  s->last_log_ms = -REJECT_LOG_EVERY_MS;
  return s;
}

void cm_reject(cm_reject_t *r, int64_t now_ms, const char *reason, const char *fmt, ...) {
  reason_t *s;
  char detail[384];
  va_list ap;
  if (r == NULL) return;
  s = slot(r, reason);
  cm_counter_inc(s->c);
  if (now_ms - s->last_log_ms < REJECT_LOG_EVERY_MS) {
    s->suppressed++;
    return;
  }
  va_start(ap, fmt);
  (void)vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  if (s->suppressed > 0)
    cm_log_warn("rejected (%s): %s (and %llu more like it in the last %.1f s)", s->reason, detail,
                (unsigned long long)s->suppressed, (double)(now_ms - s->last_log_ms) / 1000.0);
  else
    cm_log_warn("rejected (%s): %s", s->reason, detail);
  s->suppressed = 0;
  s->last_log_ms = now_ms;
}

uint64_t cm_reject_count(const cm_reject_t *r, const char *reason) {
  if (r == NULL) return 0;
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->r[i].reason, reason) == 0) return cm_counter_get(r->r[i].c);
  return 0;
}
