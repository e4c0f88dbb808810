/* test_metrics.c - registry, exact Prometheus text, histograms, quantiles,
 * limits and concurrent updates. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cm/metrics.h"

static double backlog_fn(void *ud) { return (double)*(int *)ud; }

static void test_render_exact(void **state) {
  cm_metrics_t *m = NULL;
  assert_int_equal(cm_metrics_create(&m), 0);

  cm_counter_t *saved = cm_metrics_counter(m, "cm_saved_total", "Records saved.", NULL);
  cm_gauge_t *inflight = cm_metrics_gauge(m, "cm_inflight", "Chunks in flight.", "role=\"fetcher\"");
  static const double bounds[] = {0.005, 0.5, 1};
  cm_histogram_t *lat =
      cm_metrics_histogram(m, "cm_latency_seconds", "Save latency.", NULL, bounds, 3);
  /* A second label set of the first family, registered later: still grouped
   * under the one HELP/TYPE. */
  cm_counter_t *saved_v2 =
      cm_metrics_counter(m, "cm_saved_total", "Records saved.", "version=\"2\"");
  int backlog = 17;
  cm_gauge_t *bl = cm_metrics_gauge_fn(m, "cm_backlog", "Help with \\ and\nnewline.", NULL,
                                       backlog_fn, &backlog);
  assert_non_null(saved);
  assert_non_null(inflight);
  assert_non_null(lat);
  assert_non_null(saved_v2);
  assert_non_null(bl);

  cm_counter_add(saved, 41);
  cm_counter_inc(saved);
  cm_counter_inc(saved_v2);
  cm_gauge_set(inflight, 3);
  cm_gauge_add(inflight, 0.25);
  /* Values exact in binary so the _sum text is exact too. */
  cm_histogram_observe(lat, 0.00390625);
  cm_histogram_observe(lat, 0.5); /* upper bounds are inclusive */
  cm_histogram_observe(lat, 0.75);
  cm_histogram_observe(lat, 2);
  backlog = 18; /* read at render time */

  assert_int_equal(cm_counter_get(saved), 42);
  assert_true(cm_gauge_get(inflight) == 3.25);
  assert_true(cm_gauge_get(bl) == 18);
  assert_int_equal(cm_histogram_count(lat), 4);

  cm_buf_t out;
  cm_buf_init(&out, 1 << 16);
  assert_int_equal(cm_metrics_render(m, &out), 0);
  assert_string_equal(out.data,
                      "# HELP cm_saved_total Records saved.\n"
                      "# TYPE cm_saved_total counter\n"
                      "cm_saved_total 42\n"
                      "cm_saved_total{version=\"2\"} 1\n"
                      "# HELP cm_inflight Chunks in flight.\n"
                      "# TYPE cm_inflight gauge\n"
                      "cm_inflight{role=\"fetcher\"} 3.25\n"
                      "# HELP cm_latency_seconds Save latency.\n"
                      "# TYPE cm_latency_seconds histogram\n"
                      "cm_latency_seconds_bucket{le=\"0.005\"} 1\n"
                      "cm_latency_seconds_bucket{le=\"0.5\"} 2\n"
                      "cm_latency_seconds_bucket{le=\"1\"} 3\n"
                      "cm_latency_seconds_bucket{le=\"+Inf\"} 4\n"
                      "cm_latency_seconds_sum 3.25390625\n"
                      "cm_latency_seconds_count 4\n"
                      "# HELP cm_backlog Help with \\\\ and\\nnewline.\n"
                      "# TYPE cm_backlog gauge\n"
                      "cm_backlog 18\n");

  /* Too small an output buffer: error, and nothing half-written. */
  cm_buf_t small;
  cm_buf_init(&small, 64);
  assert_int_equal(cm_buf_puts(&small, "keep"), 0);
  assert_int_equal(cm_metrics_render(m, &small), -E2BIG);
  assert_string_equal(small.data, "keep");
  cm_buf_free(&small);

  cm_buf_free(&out);
  cm_metrics_destroy(m);
}

static void test_labels_and_special_values(void **state) {
  cm_metrics_t *m = NULL;
  assert_int_equal(cm_metrics_create(&m), 0);
  static const double bounds[] = {1, 2};
  cm_histogram_t *h = cm_metrics_histogram(m, "h", "", "op=\"x\"", bounds, 2);
  cm_gauge_t *nan = cm_metrics_gauge(m, "g", "g", "k=\"nan\"");
  cm_gauge_t *pinf = cm_metrics_gauge(m, "g", "g", "k=\"pinf\"");
  cm_gauge_t *ninf = cm_metrics_gauge(m, "g", "g", "k=\"ninf\"");
  cm_gauge_t *frac = cm_metrics_gauge(m, "g", "g", "k=\"frac\"");
  cm_gauge_t *neg = cm_metrics_gauge(m, "g", "g", "k=\"neg\"");
  cm_gauge_set(nan, NAN);
  cm_gauge_set(pinf, INFINITY);
  cm_gauge_set(ninf, -INFINITY);
  cm_gauge_set(frac, 0.1);
  cm_gauge_set(neg, -12);
  cm_histogram_observe(h, 1.5);
  cm_histogram_observe(h, NAN); /* ignored */

  cm_buf_t out;
  cm_buf_init(&out, 1 << 16);
  assert_int_equal(cm_metrics_render(m, &out), 0);
  assert_string_equal(out.data,
                      "# HELP h \n"
                      "# TYPE h histogram\n"
                      "h_bucket{op=\"x\",le=\"1\"} 0\n"
                      "h_bucket{op=\"x\",le=\"2\"} 1\n"
                      "h_bucket{op=\"x\",le=\"+Inf\"} 1\n"
                      "h_sum{op=\"x\"} 1.5\n"
                      "h_count{op=\"x\"} 1\n"
                      "# HELP g g\n"
                      "# TYPE g gauge\n"
                      "g{k=\"nan\"} NaN\n"
                      "g{k=\"pinf\"} +Inf\n"
                      "g{k=\"ninf\"} -Inf\n"
                      "g{k=\"frac\"} 0.1\n"
                      "g{k=\"neg\"} -12\n");
  cm_buf_free(&out);
  cm_metrics_destroy(m);
}

static void test_registry_rules(void **state) {
  cm_metrics_t *m = NULL;
  assert_int_equal(cm_metrics_create(&m), 0);
  cm_counter_t *a = cm_metrics_counter(m, "a_total", "a", "x=\"1\"");
  /* Same (name, labels): the same handle. */
  assert_ptr_equal(cm_metrics_counter(m, "a_total", "a", "x=\"1\""), a);
  assert_ptr_not_equal(cm_metrics_counter(m, "a_total", "a", "x=\"2\""), a);
  /* Same name, other type: refused. */
  assert_null(cm_metrics_gauge(m, "a_total", "a", NULL));
  static const double b1[] = {1, 2}, b2[] = {1, 3}, bad[] = {2, 1};
  assert_null(cm_metrics_histogram(m, "a_total", "a", NULL, b1, 2));
  /* Histogram bounds must increase, and match on re-registration. */
  assert_null(cm_metrics_histogram(m, "h", "h", NULL, bad, 2));
  cm_histogram_t *h = cm_metrics_histogram(m, "h", "h", NULL, b1, 2);
  assert_non_null(h);
  assert_ptr_equal(cm_metrics_histogram(m, "h", "h", NULL, b1, 2), h);
  assert_null(cm_metrics_histogram(m, "h", "h", NULL, b2, 2));
  /* Invalid names. */
  assert_null(cm_metrics_counter(m, "1abc", "x", NULL));
  assert_null(cm_metrics_counter(m, "a-b", "x", NULL));
  assert_null(cm_metrics_counter(m, "", "x", NULL));
  assert_null(cm_metrics_counter(m, NULL, "x", NULL));
  assert_non_null(cm_metrics_counter(m, "ns:sub_total", "x", NULL));
  assert_non_null(cm_metrics_counter(m, "_under", "x", NULL));
  /* NULL handles are harmless. */
  cm_counter_inc(NULL);
  cm_gauge_set(NULL, 1);
  cm_histogram_observe(NULL, 1);
  assert_int_equal(cm_counter_get(NULL), 0);
  cm_metrics_destroy(m);
  cm_metrics_destroy(NULL);
}

static void test_registry_is_bounded(void **state) {
  cm_metrics_t *m = NULL;
  char labels[32];
  size_t ok = 0;
  assert_int_equal(cm_metrics_create(&m), 0);
  for (int i = 0; i < 1100; i++) {
    snprintf(labels, sizeof labels, "i=\"%d\"", i);
    if (cm_metrics_counter(m, "many_total", "m", labels) != NULL) ok++;
  }
  assert_int_equal(ok, 1024);
  /* Existing ones are still found when full. */
  assert_non_null(cm_metrics_counter(m, "many_total", "m", "i=\"5\""));
  cm_metrics_destroy(m);
}

static void test_quantile(void **state) {
  cm_metrics_t *m = NULL;
  assert_int_equal(cm_metrics_create(&m), 0);
  static const double bounds[] = {10, 20, 40};
  cm_histogram_t *h = cm_metrics_histogram(m, "q", "q", NULL, bounds, 3);
  assert_true(cm_histogram_quantile(h, 0.5) == 0); /* empty */
  for (int i = 0; i < 10; i++) cm_histogram_observe(h, 5);   /* (0,10] */
  for (int i = 0; i < 10; i++) cm_histogram_observe(h, 15);  /* (10,20] */
  /* rank 10 of 20 is the end of the first bucket */
  assert_true(fabs(cm_histogram_quantile(h, 0.5) - 10.0) < 1e-9);
  /* rank 15 is half way through (10,20], narrowed to (10,15] by the largest
   * value seen */
  assert_true(fabs(cm_histogram_quantile(h, 0.75) - 12.5) < 1e-9);
  /* rank 2 is a fifth into (0,10], narrowed to [5,10] by the smallest */
  assert_true(fabs(cm_histogram_quantile(h, 0.1) - 6.0) < 1e-9);
  assert_true(cm_histogram_max(h) == 15);
  /* Ranks in +Inf interpolate between the last bound and the largest value
   * seen: rank 99 of 100 is 79/80 into (40, 1000]. */
  for (int i = 0; i < 80; i++) cm_histogram_observe(h, 1000);
  assert_true(fabs(cm_histogram_quantile(h, 0.99) - (40 + 960 * 79.0 / 80)) < 1e-9);
  assert_true(fabs(cm_histogram_quantile(h, 1.0) - 1000.0) < 1e-9);
  assert_int_equal(cm_histogram_count(h), 100);
  cm_metrics_destroy(m);
}

/* The fetcher's latency buckets end ..., 5, 10, 30: a job whose chunks all
 * took 10-12.5 s had its p99 reported as 25.6 s (interpolated across
 * (10, 30]). No quantile may leave the range of what was observed, and a
 * known distribution must come out close. */
static void test_quantile_stays_within_observed(void **state) {
  cm_metrics_t *m = NULL;
  assert_int_equal(cm_metrics_create(&m), 0);
  static const double bounds[] = {0.5, 1, 2.5, 5, 10, 30};
  cm_histogram_t *h = cm_metrics_histogram(m, "lat", "l", NULL, bounds, 6);

  /* Every chunk 12.5 s: every quantile is 12.5. */
  for (int i = 0; i < 100; i++) cm_histogram_observe(h, 12.5);
  for (double q = 0.01; q <= 1.0; q += 0.01) {
    double v = cm_histogram_quantile(h, q);
    assert_true(v <= 12.5 + 1e-9);
    assert_true(v >= 10.0);
  }
  assert_true(fabs(cm_histogram_quantile(h, 0.99) - 12.5) < 1e-9);

  /* Uniform over [0, 12.5]: p50 ~ 6.25, p90 ~ 11.25, p99 ~ 12.375, none
   * above the maximum. */
  cm_histogram_t *u = cm_metrics_histogram(m, "lat_u", "l", NULL, bounds, 6);
  for (int i = 0; i <= 10000; i++) cm_histogram_observe(u, 12.5 * i / 10000.0);
  assert_true(fabs(cm_histogram_quantile(u, 0.5) - 6.25) < 0.5);
  assert_true(fabs(cm_histogram_quantile(u, 0.9) - 11.25) < 0.5);
  assert_true(fabs(cm_histogram_quantile(u, 0.99) - 12.375) < 0.3);
  assert_true(cm_histogram_quantile(u, 1.0) <= 12.5);
  assert_true(cm_histogram_max(u) == 12.5);

  /* Values above the last bound: the +Inf bucket answers the largest. */
  cm_histogram_t *t = cm_metrics_histogram(m, "lat_t", "l", NULL, bounds, 6);
  for (int i = 0; i < 99; i++) cm_histogram_observe(t, 1);
  cm_histogram_observe(t, 40);
  assert_true(cm_histogram_quantile(t, 1.0) == 40);
  assert_true(cm_histogram_quantile(t, 0.5) <= 1);
  cm_metrics_destroy(m);
}

typedef struct {
  cm_counter_t *c;
  cm_gauge_t *g;
  cm_histogram_t *h;
} hot_t;

static void *hammer(void *arg) {
  hot_t *t = arg;
  for (int i = 0; i < 100000; i++) {
    cm_counter_inc(t->c);
    cm_gauge_add(t->g, 1.0);
    cm_histogram_observe(t->h, (double)(i % 4));
  }
  return NULL;
}

static void test_concurrent_updates(void **state) {
  cm_metrics_t *m = NULL;
  assert_int_equal(cm_metrics_create(&m), 0);
  static const double bounds[] = {0.5, 1.5, 2.5};
  hot_t t = {
      cm_metrics_counter(m, "hot_total", "h", NULL),
      cm_metrics_gauge(m, "hot_gauge", "h", NULL),
      cm_metrics_histogram(m, "hot_hist", "h", NULL, bounds, 3),
  };
  pthread_t th[4];
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, &t), 0);
  /* Render while updates are running: must not crash or tear. */
  cm_buf_t out;
  cm_buf_init(&out, 1 << 16);
  for (int i = 0; i < 50; i++) {
    cm_buf_reset(&out);
    assert_int_equal(cm_metrics_render(m, &out), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  assert_int_equal(cm_counter_get(t.c), 400000);
  assert_true(cm_gauge_get(t.g) == 400000.0);
  assert_int_equal(cm_histogram_count(t.h), 400000);
  cm_buf_reset(&out);
  assert_int_equal(cm_metrics_render(m, &out), 0);
  assert_non_null(strstr(out.data, "hot_hist_bucket{le=\"0.5\"} 100000\n"));
  assert_non_null(strstr(out.data, "hot_hist_bucket{le=\"1.5\"} 200000\n"));
  assert_non_null(strstr(out.data, "hot_hist_bucket{le=\"+Inf\"} 400000\n"));
  assert_non_null(strstr(out.data, "hot_hist_sum 600000\n"));
  cm_buf_free(&out);
  cm_metrics_destroy(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render_exact),      cmocka_unit_test(test_labels_and_special_values),
      cmocka_unit_test(test_registry_rules),    cmocka_unit_test(test_registry_is_bounded),
      cmocka_unit_test(test_quantile),          cmocka_unit_test(test_concurrent_updates),
      cmocka_unit_test(test_quantile_stays_within_observed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
