/* metrics.c - counters, gauges and histograms -> Prometheus text 0.0.4.
 *
 * Updates are lock-free C11 atomics so mapper workers on the thread pool never
 * contend with the loop thread rendering /metrics. Only registration and
 * rendering take the registry mutex. */
#include "cm/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every registry has a maximum (STYLE): a bug that registers per-request
 * label sets gets NULL handles instead of unbounded memory. */
#define CM_METRICS_MAX 1024

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_GAUGE_FN, KIND_HISTOGRAM } kind_t;

struct cm_counter_s {
  _Atomic uint64_t v;
};

struct cm_gauge_s {
  _Atomic uint64_t bits; /* a double's bit pattern: C11 has no atomic double ops */
  cm_gauge_fn fn;        /* set for computed gauges */
  void *ud;
};

struct cm_histogram_s {
  size_t nbounds;
  double *bounds;             /* owned, strictly increasing */
  _Atomic uint64_t *buckets;  /* nbounds + 1 (+Inf); per bucket, not cumulative */
  _Atomic uint64_t sum_bits;  /* double bits */
  /* Smallest and largest value observed (double bits; +Inf/-Inf while
   * empty). Not exported (the text format has no place for them): they keep
   * cm_histogram_quantile inside the range actually seen, so a wide bucket
   * cannot turn a 12 s maximum into a 25 s p99. */
  _Atomic uint64_t min_bits, max_bits;
};

typedef struct {
  kind_t kind;
  char *name;   /* owned */
  char *help;   /* owned */
  char *labels; /* owned; "" when none */
  struct cm_counter_s counter;
  struct cm_gauge_s gauge;
  struct cm_histogram_s hist;
} entry_t;

struct cm_metrics_s {
  pthread_mutex_t mu;
  size_t n;
  entry_t *items[CM_METRICS_MAX]; /* registration order; entries never move */
};

static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double bitsd(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static bool valid_name(const char *s) {
  if (s == NULL || *s == '\0') return false;
  for (size_t i = 0; s[i] != '\0'; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

/* Label text is pasted between braces: refuse what would break the line. */
static bool valid_labels(const char *s) {
  return strpbrk(s, "\n{}") == NULL;
}

static const char *type_name(kind_t k) {
  switch (k) {
  case KIND_COUNTER: return "counter";
  case KIND_GAUGE:
  case KIND_GAUGE_FN: return "gauge";
  case KIND_HISTOGRAM: return "histogram";
  }
  return "untyped";
}

int cm_metrics_create(cm_metrics_t **out) {
  cm_metrics_t *m = calloc(1, sizeof *m);
  if (m == NULL) return -ENOMEM;
  int rc = pthread_mutex_init(&m->mu, NULL);
  if (rc != 0) {
    free(m);
    return -rc;
  }
  *out = m;
  return 0;
}

static void entry_free(entry_t *e) {
  if (e == NULL) return;
  free(e->name);
  free(e->help);
  free(e->labels);
  free(e->hist.bounds);
  free((void *)e->hist.buckets);
  free(e);
}

void cm_metrics_destroy(cm_metrics_t *m) {
  if (m == NULL) return;
  for (size_t i = 0; i < m->n; i++) entry_free(m->items[i]);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL) memcpy(p, s, n);
  return p;
}

/* Finds or creates the entry for (name, labels). Returns NULL when the name is
 * invalid, the type clashes, the registry is full, or on OOM. For histograms,
 * bounds must match an existing entry of the same name and labels. */
static entry_t *lookup(cm_metrics_t *m, kind_t kind, const char *name, const char *help,
                       const char *labels, const double *bounds, size_t nbounds) {
  entry_t *e = NULL, *found = NULL;

  if (m == NULL || !valid_name(name)) return NULL;
  if (labels == NULL) labels = "";
  if (help == NULL) help = "";
  if (!valid_labels(labels)) return NULL;
  if (kind == KIND_HISTOGRAM) {
    if (nbounds > 0 && bounds == NULL) return NULL;
    for (size_t i = 0; i < nbounds; i++)
      if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) return NULL;
  }

  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->n; i++) {
    entry_t *x = m->items[i];
    if (strcmp(x->name, name) != 0) continue;
    /* One family, one type: gauge and computed gauge are both "gauge". */
    if (strcmp(type_name(x->kind), type_name(kind)) != 0) goto out;
    if (strcmp(x->labels, labels) == 0) {
      if (x->kind != kind) goto out;
      if (kind == KIND_HISTOGRAM &&
          (x->hist.nbounds != nbounds ||
           (nbounds > 0 && memcmp(x->hist.bounds, bounds, nbounds * sizeof *bounds) != 0)))
        goto out;
      found = x;
      goto out;
    }
  }
  if (m->n >= CM_METRICS_MAX) goto out;

  e = calloc(1, sizeof *e);
  if (e == NULL) goto out;
  e->kind = kind;
  e->name = dup_str(name);
  e->help = dup_str(help);
  e->labels = dup_str(labels);
  if (e->name == NULL || e->help == NULL || e->labels == NULL) goto fail;
  atomic_init(&e->counter.v, 0);
  atomic_init(&e->gauge.bits, dbits(0.0));
  atomic_init(&e->hist.sum_bits, dbits(0.0));
  atomic_init(&e->hist.min_bits, dbits(INFINITY));
  atomic_init(&e->hist.max_bits, dbits(-INFINITY));
  if (kind == KIND_HISTOGRAM) {
    e->hist.nbounds = nbounds;
    if (nbounds > 0) {
      e->hist.bounds = malloc(nbounds * sizeof *bounds);
      if (e->hist.bounds == NULL) goto fail;
      memcpy(e->hist.bounds, bounds, nbounds * sizeof *bounds);
    }
    e->hist.buckets = calloc(nbounds + 1, sizeof *e->hist.buckets);
    if (e->hist.buckets == NULL) goto fail;
    for (size_t i = 0; i <= nbounds; i++) atomic_init(&e->hist.buckets[i], 0);
  }
  m->items[m->n++] = e;
  found = e;
  goto out;

fail:
  entry_free(e);
out:
  pthread_mutex_unlock(&m->mu);
  return found;
}

cm_counter_t *cm_metrics_counter(cm_metrics_t *m, const char *name, const char *help,
                                 const char *labels) {
  entry_t *e = lookup(m, KIND_COUNTER, name, help, labels, NULL, 0);
  return e != NULL ? &e->counter : NULL;
}

cm_gauge_t *cm_metrics_gauge(cm_metrics_t *m, const char *name, const char *help,
                             const char *labels) {
  entry_t *e = lookup(m, KIND_GAUGE, name, help, labels, NULL, 0);
  return e != NULL ? &e->gauge : NULL;
}

cm_gauge_t *cm_metrics_gauge_fn(cm_metrics_t *m, const char *name, const char *help,
                                const char *labels, cm_gauge_fn fn, void *ud) {
  if (fn == NULL) return NULL;
  entry_t *e = lookup(m, KIND_GAUGE_FN, name, help, labels, NULL, 0);
  if (e == NULL) return NULL;
  /* Written under no lock: registration happens before rendering starts, and
   * re-registering the same gauge with the same callback is harmless. */
  e->gauge.fn = fn;
  e->gauge.ud = ud;
  return &e->gauge;
}

cm_histogram_t *cm_metrics_histogram(cm_metrics_t *m, const char *name, const char *help,
                                     const char *labels, const double *bounds,
                                     size_t nbounds) {
  entry_t *e = lookup(m, KIND_HISTOGRAM, name, help, labels, bounds, nbounds);
  return e != NULL ? &e->hist : NULL;
}

void cm_counter_add(cm_counter_t *c, uint64_t n) {
  if (c == NULL) return;
  atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

void cm_counter_inc(cm_counter_t *c) { cm_counter_add(c, 1); }

uint64_t cm_counter_get(const cm_counter_t *c) {
  if (c == NULL) return 0;
  return atomic_load_explicit(&((cm_counter_t *)c)->v, memory_order_relaxed);
}

void cm_gauge_set(cm_gauge_t *g, double v) {
  if (g == NULL || g->fn != NULL) return;
  atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

/* Adds to a double held as bits: compare-and-swap until no other thread
 * changed it in between. */
static void atomic_add_double(_Atomic uint64_t *bits, double d) {
  uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(bits, &old, dbits(bitsd(old) + d),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

void cm_gauge_add(cm_gauge_t *g, double d) {
  if (g == NULL || g->fn != NULL) return;
  atomic_add_double(&g->bits, d);
}

/* For computed gauges this calls the callback, on the caller's thread. */
double cm_gauge_get(const cm_gauge_t *g) {
  if (g == NULL) return 0.0;
  if (g->fn != NULL) return g->fn(g->ud);
  return bitsd(atomic_load_explicit(&((cm_gauge_t *)g)->bits, memory_order_relaxed));
}

/* Lowers (want_less) or raises a double held as bits to v. */
static void atomic_bound_double(_Atomic uint64_t *bits, double v, bool want_less) {
  uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
  while (want_less ? v < bitsd(old) : v > bitsd(old)) {
    if (atomic_compare_exchange_weak_explicit(bits, &old, dbits(v), memory_order_relaxed,
                                              memory_order_relaxed))
      break;
  }
}

void cm_histogram_observe(cm_histogram_t *h, double v) {
  /* A NaN would poison _sum for the life of the process; drop it. */
  if (h == NULL || isnan(v)) return;
  size_t i = 0;
  while (i < h->nbounds && !(v <= h->bounds[i])) i++;
  /* min/max first: a quantile read in between sees the range already
   * covering the new bucket count. */
  atomic_bound_double(&h->min_bits, v, true);
  atomic_bound_double(&h->max_bits, v, false);
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  atomic_add_double(&h->sum_bits, v);
}

double cm_histogram_max(const cm_histogram_t *h) {
  if (h == NULL || cm_histogram_count(h) == 0) return 0.0;
  return bitsd(atomic_load_explicit(&((cm_histogram_t *)h)->max_bits, memory_order_relaxed));
}

uint64_t cm_histogram_count(const cm_histogram_t *h) {
  uint64_t n = 0;
  if (h == NULL) return 0;
  for (size_t i = 0; i <= h->nbounds; i++)
    n += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
  return n;
}

double cm_histogram_quantile(const cm_histogram_t *h, double q) {
  if (h == NULL) return 0.0;
  if (isnan(q)) return NAN;
  if (q < 0) q = 0;
  if (q > 1) q = 1;

  /* Snapshot first so the total and the walk agree while other threads keep
   * observing. Histograms here have a handful of buckets; bigger ones are
   * read live (the walk then still ends in a bucket, just less exactly). */
  enum { SNAP_MAX = 64 };
  uint64_t snap[SNAP_MAX];
  size_t nb = h->nbounds + 1;
  bool live = nb > SNAP_MAX;
  uint64_t total = 0;
  for (size_t i = 0; i < nb; i++) {
    uint64_t c = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    if (!live) snap[i] = c;
    total += c;
  }
  if (total == 0) return 0.0;

  /* PromQL's histogram_quantile rule (find the bucket holding the rank and
   * interpolate linearly inside it), with the bucket narrowed to the values
   * actually observed: the first non-empty bucket starts at the smallest
   * value, the last one ends at the largest, and ranks in +Inf give the
   * largest. So the estimate never leaves [min, max]: a bucket (10, 30]
   * holding only 12 s answers at most 12 s, not up to 30. */
  double lo = bitsd(atomic_load_explicit(&((cm_histogram_t *)h)->min_bits, memory_order_relaxed));
  double hi = bitsd(atomic_load_explicit(&((cm_histogram_t *)h)->max_bits, memory_order_relaxed));
  double rank = q * (double)total;
  uint64_t cum = 0;
  for (size_t i = 0; i < nb; i++) {
    uint64_t c = live ? atomic_load_explicit(&h->buckets[i], memory_order_relaxed) : snap[i];
    if (c > 0 && (double)(cum + c) >= rank) {
      double upper = i < h->nbounds ? h->bounds[i] : hi;
      double lower = i > 0 ? h->bounds[i - 1] : lo;
      if (upper > hi) upper = hi;
      if (lower < lo) lower = lo;
      if (!(lower <= upper)) return upper; /* a racing observe; or +Inf only */
      double frac = (rank - (double)cum) / (double)c;
      if (frac < 0) frac = 0;
      if (frac > 1) frac = 1;
      return lower + (upper - lower) * frac;
    }
    cum += c;
  }
  return hi;
}

/* Prometheus float text: NaN, +Inf, -Inf; integers without exponent; other
 * values in the shortest %g form that reads back exactly. The decimal point
 * is forced to '.', whatever LC_NUMERIC says. */
static void fmt_double(char *dst, size_t cap, double v) {
  if (isnan(v)) {
    snprintf(dst, cap, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(dst, cap, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (v == floor(v) && fabs(v) < 1e15) {
    snprintf(dst, cap, "%" PRId64, (int64_t)v);
    return;
  }
  snprintf(dst, cap, "%.15g", v);
  if (strtod(dst, NULL) != v) snprintf(dst, cap, "%.17g", v);
  for (char *p = dst; *p != '\0'; p++)
    if (!((*p >= '0' && *p <= '9') || *p == 'e' || *p == '-' || *p == '+')) *p = '.';
}

/* HELP text escaping per the 0.0.4 format: backslash and newline only. */
static int put_help(cm_buf_t *out, const char *s) {
  int rc = 0;
  for (; *s != '\0' && rc == 0; s++) {
    if (*s == '\\')
      rc = cm_buf_puts(out, "\\\\");
    else if (*s == '\n')
      rc = cm_buf_puts(out, "\\n");
    else
      rc = cm_buf_append(out, s, 1);
  }
  return rc;
}

static int render_entry(cm_buf_t *out, const entry_t *e) {
  char num[64];
  const char *lb = e->labels[0] != '\0' ? "{" : "";
  const char *rb = e->labels[0] != '\0' ? "}" : "";

  switch (e->kind) {
  case KIND_COUNTER:
    return cm_buf_printf(out, "%s%s%s%s %" PRIu64 "\n", e->name, lb, e->labels, rb,
                         cm_counter_get(&e->counter));
  case KIND_GAUGE:
  case KIND_GAUGE_FN:
    fmt_double(num, sizeof num, cm_gauge_get(&e->gauge));
    return cm_buf_printf(out, "%s%s%s%s %s\n", e->name, lb, e->labels, rb, num);
  case KIND_HISTOGRAM: {
    const struct cm_histogram_s *h = &e->hist;
    const char *sep = e->labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i <= h->nbounds && rc == 0; i++) {
      cum += atomic_load_explicit(&((struct cm_histogram_s *)h)->buckets[i],
                                  memory_order_relaxed);
      if (i < h->nbounds)
        fmt_double(num, sizeof num, h->bounds[i]);
      else
        snprintf(num, sizeof num, "+Inf");
      rc = cm_buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", e->name, e->labels, sep,
                         num, cum);
    }
    /* _count is the +Inf bucket, so the two always agree even while other
     * threads observe during rendering. */
    fmt_double(num, sizeof num,
               bitsd(atomic_load_explicit(&((struct cm_histogram_s *)h)->sum_bits,
                                          memory_order_relaxed)));
    if (rc == 0) rc = cm_buf_printf(out, "%s_sum%s%s%s %s\n", e->name, lb, e->labels, rb, num);
    if (rc == 0)
      rc = cm_buf_printf(out, "%s_count%s%s%s %" PRIu64 "\n", e->name, lb, e->labels, rb, cum);
    return rc;
  }
  }
  return -EINVAL;
}

int cm_metrics_render(cm_metrics_t *m, cm_buf_t *out) {
  int rc = 0;
  size_t start = out->len;

  if (m == NULL) return -EINVAL;
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->n && rc == 0; i++) {
    const entry_t *e = m->items[i];
    /* Families are emitted at their first member; later label sets of the
     * same name were already written with it. */
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++) seen = strcmp(m->items[j]->name, e->name) == 0;
    if (seen) continue;

    rc = cm_buf_printf(out, "# HELP %s ", e->name);
    if (rc == 0) rc = put_help(out, e->help);
    if (rc == 0) rc = cm_buf_printf(out, "\n# TYPE %s %s\n", e->name, type_name(e->kind));
    for (size_t j = i; j < m->n && rc == 0; j++)
      if (strcmp(m->items[j]->name, e->name) == 0) rc = render_entry(out, m->items[j]);
  }
  pthread_mutex_unlock(&m->mu);

  if (rc < 0) {
    /* All or nothing: a half-rendered exposition would confuse the scraper. */
    out->len = start;
    if (out->data != NULL) out->data[start] = '\0';
  }
  return rc;
}
