/* metrics.h - a registry of counters, gauges and histograms rendered in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * Registration (cm_metrics_counter/...) may happen from any thread but is
 * meant for start-up and for the loop thread; it takes the registry lock.
 * Updates (add/set/observe) are lock-free or briefly locked and safe from any
 * thread (mapper workers update counters from the thread pool).
 * Metric handles are owned by the registry and live until
 * cm_metrics_destroy(). The same (name, labels) returns the same handle.
 * At most 1024 (name, labels) pairs per registry; registration returns NULL
 * past that. */
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"

typedef struct cm_metrics_s cm_metrics_t;
typedef struct cm_counter_s cm_counter_t;
typedef struct cm_gauge_s cm_gauge_t;
typedef struct cm_histogram_s cm_histogram_t;

/* A gauge whose value is computed when /metrics is rendered (loop thread).
 * It runs under the registry lock: it must not register metrics. set/add on
 * such a gauge are ignored; cm_gauge_get calls it. */
typedef double (*cm_gauge_fn)(void *ud);

int cm_metrics_create(cm_metrics_t **out) __attribute__((warn_unused_result));
void cm_metrics_destroy(cm_metrics_t *m); /* NULL-safe */

/* name: a valid Prometheus metric name ("chunkmill_records_saved_total").
 * labels: NULL, or the label pairs without braces: `version="1.2",role="x"`
 * (the caller escapes values). help: one line. Returns NULL on OOM, on an
 * invalid name, when the name is already registered with another type, when
 * labels contain a newline or a brace, or (histograms) when the same
 * (name, labels) was registered with other bounds. */
cm_counter_t *cm_metrics_counter(cm_metrics_t *m, const char *name, const char *help,
                                 const char *labels);
cm_gauge_t *cm_metrics_gauge(cm_metrics_t *m, const char *name, const char *help,
                             const char *labels);
cm_gauge_t *cm_metrics_gauge_fn(cm_metrics_t *m, const char *name, const char *help,
                                const char *labels, cm_gauge_fn fn, void *ud);
/* bounds: strictly increasing upper bounds (the +Inf bucket is implicit);
 * copied. */
cm_histogram_t *cm_metrics_histogram(cm_metrics_t *m, const char *name, const char *help,
                                     const char *labels, const double *bounds,
                                     size_t nbounds);

void cm_counter_add(cm_counter_t *c, uint64_t n); /* NULL-safe no-op */
void cm_counter_inc(cm_counter_t *c);
uint64_t cm_counter_get(const cm_counter_t *c);
void cm_gauge_set(cm_gauge_t *g, double v);
void cm_gauge_add(cm_gauge_t *g, double d);
double cm_gauge_get(const cm_gauge_t *g);
void cm_histogram_observe(cm_histogram_t *h, double v); /* NaN is dropped */
uint64_t cm_histogram_count(const cm_histogram_t *h);
/* Quantile estimated from the buckets by linear interpolation, kept within
 * the smallest and largest value observed (0 if empty). */
double cm_histogram_quantile(const cm_histogram_t *h, double q);
/* Largest value observed (0 if empty). */
double cm_histogram_max(const cm_histogram_t *h);

/* Appends the whole registry to `out`, families in registration order, one
 * HELP and TYPE line per family. 0 or a negative errno (-E2BIG). */
int cm_metrics_render(cm_metrics_t *m, cm_buf_t *out) __attribute__((warn_unused_result));

#endif
