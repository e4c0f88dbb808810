/* test_render.c - the chunkmill CLI's human output from job API JSON:
 * tables align, unknown totals and nulls print as "?"/"-", finished jobs
 * show no ETA, progress counts dead chunks as finished, durations read
 * like people write them. Output captured with open_memstream. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "render.h"

typedef void (*render_fn)(FILE *, const cJSON *);

/* Renders body (JSON text) with fn; caller frees. */
static char *render(render_fn fn, const char *json) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cJSON *v = cJSON_Parse(json);
  assert_non_null(f);
  assert_non_null(v);
  fn(f, v);
  fclose(f);
  cJSON_Delete(v);
  return buf;
}

#define JOB_RUNNING                                                                         \
  "{\"job\":\"users-1m\",\"state\":\"running\",\"priority\":2,\"source\":\"gen:users\","    \
  "\"chunks\":{\"total\":1000,\"done\":500,\"leased\":40,\"pending\":460,\"dead\":0},"    \
  "\"records_saved\":50000,\"records_per_s\":81234.5,\"eta_s\":65,"                        \
  "\"created_at\":1764590000.5,\"finished_at\":null,\"last_error\":null,\"redo\":null}"
#define JOB_SEQ                                                                             \
  "{\"job\":\"f\",\"state\":\"running\",\"priority\":1,"                                   \
  "\"chunks\":{\"total\":null,\"done\":7,\"leased\":1,\"pending\":0,\"dead\":0},"         \
  "\"records_saved\":700,\"records_per_s\":0,\"eta_s\":null}"
#define JOB_DEAD                                                                            \
  "{\"job\":\"d\",\"state\":\"complete_with_dead\",\"priority\":1,"                        \
  "\"chunks\":{\"total\":20,\"done\":19,\"leased\":0,\"pending\":0,\"dead\":1},"          \
  "\"records_saved\":1900,\"records_per_s\":12,\"eta_s\":0}"

static void test_jobs_table(void **state) {
  char *t = render(cm_render_jobs, "{\"jobs\":[" JOB_RUNNING "," JOB_SEQ "," JOB_DEAD "]}");
  /* Header, then one row per job; columns line up under their header. */
  assert_non_null(strstr(t, "JOB       STATE               PRIORITY"));
  assert_non_null(strstr(t, "users-1m  running                    2  500/1000   50.0%"));
  assert_non_null(strstr(t, "f         running                    1       7/?       -     0      700"));
  /* A dead chunk is finished: 19 done + 1 dead of 20 is 100 %; no ETA. */
  assert_non_null(strstr(t, "d         complete_with_dead         1     19/20  100.0%     1     1900"));
  const char *row = strstr(t, "\nd ");
  assert_non_null(row);
  const char *eol = strchr(row + 1, '\n');
  assert_non_null(eol);
  assert_int_equal(eol[-1], '-');
  assert_non_null(strstr(t, "81234"));
  assert_non_null(strstr(t, "1m05s"));
  free(t);
  t = render(cm_render_jobs, "{\"jobs\":[]}");
  assert_string_equal(t, "no jobs\n");
  free(t);
}

static void test_job_detail(void **state) {
  char *t = render(cm_render_job, JOB_RUNNING);
  assert_non_null(strstr(t, "job:         users-1m\n"));
  assert_non_null(strstr(t, "chunks:      1000 total, 500 done, 40 leased, 460 pending, 0 dead\n"));
  assert_non_null(strstr(t, "progress:    [###############---------------] 50.0%\n"));
  assert_non_null(strstr(t, "records:     50000 saved, 81234 records/s, ETA 1m05s\n"));
  assert_non_null(strstr(t, "created:     2025-12-01T11:53:20Z\n"));
  assert_non_null(strstr(t, "finished:    -\n"));
  assert_non_null(strstr(t, "redo:        -\n"));
  free(t);
  t = render(cm_render_job,
             "{\"job\":\"x\",\"state\":\"running\",\"chunks\":{\"total\":null,\"done\":3},"
             "\"redo\":{\"version\":\"v1\",\"generation\":2,\"chunks\":10,\"done\":4},"
             "\"last_error\":\"source: HTTP 500\"}");
  assert_non_null(strstr(t, "chunks:      ? total, 3 done, - leased, - pending, - dead\n"));
  assert_non_null(strstr(t, "progress:    [??????????????????????????????] -\n"));
  assert_non_null(strstr(t, "redo:        version v1 (generation 2): 4/10 chunks redone\n"));
  assert_non_null(strstr(t, "last error:  source: HTTP 500\n"));
  free(t);
}

static void test_members_and_dead(void **state) {
  char *t = render(cm_render_members,
                   "{\"members\":[{\"id\":\"fetcher-a\",\"role\":\"fetcher\",\"version\":\"dev\","
                   "\"inflight\":3,\"last_heartbeat_ms_ago\":0,\"instance\":\"i1\"},"
                   "{\"id\":\"m0\",\"role\":\"mapper\",\"version\":\"v2\",\"inflight\":12,"
                   "\"last_heartbeat_ms_ago\":1530,\"instance\":\"i2\"}]}");
  assert_non_null(strstr(t, "ID         ROLE     VERSION  INFLIGHT  HEARTBEAT  INSTANCE\n"));
  assert_non_null(strstr(t, "fetcher-a  fetcher  dev             3   0.0s ago  i1\n"));
  assert_non_null(strstr(t, "m0         mapper   v2             12   1.5s ago  i2\n"));
  free(t);

  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cJSON *v = cJSON_Parse("{\"dead\":[{\"index\":17,\"attempts\":5,\"reason\":\"boom\"}]}");
  cm_render_dead(f, "j", v);
  cJSON_Delete(v);
  v = cJSON_Parse("{\"dead\":[]}");
  cm_render_dead(f, "j", v);
  cJSON_Delete(v);
  fclose(f);
  assert_string_equal(buf, "CHUNK  ATTEMPTS  REASON\n   17         5  boom\nno dead chunks in job j\n");
  free(buf);
}

static void test_lines(void **state) {
  char line[512];
  cJSON *j = cJSON_Parse(JOB_RUNNING);
  cm_render_progress_line(line, sizeof line, j, 10);
  assert_string_equal(line, "users-1m running [#####-----] 50.0% 500/1000 chunks, 50000 records, "
                            "81234 records/s, ETA 1m05s, dead 0");
  cm_render_progress_line(line, sizeof line, j, 0);
  assert_string_equal(line, "users-1m running 50.0% 500/1000 chunks, 50000 records, "
                            "81234 records/s, ETA 1m05s, dead 0");
  cJSON_Delete(j);
  j = cJSON_Parse("{\"members\":[{\"role\":\"mapper\"},{\"role\":\"mapper\"},{\"role\":\"saver\"},"
                  "{\"role\":\"fetcher\"},{\"role\":\"spy\"}]}");
  cm_render_members_line(line, sizeof line, j);
  assert_string_equal(line, "members: fetcher 1, mapper 2, saver 1, other 1");
  cJSON_Delete(j);
}

static void test_durations_and_states(void **state) {
  static const struct {
    double s;
    const char *want;
  } cases[] = {{0.04, "0.0s"}, {0.6, "0.6s"}, {9.94, "9.9s"}, {10, "10s"}, {59.4, "59s"},
               {65, "1m05s"}, {3599, "59m59s"}, {3600, "1h00m"}, {10062, "2h48m"},
               {-1, "-"}};
  char out[32];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cm_render_duration(out, sizeof out, cases[i].s);
    assert_string_equal(out, cases[i].want);
  }
  assert_true(cm_render_state_final("complete"));
  assert_true(cm_render_state_final("complete_with_dead"));
  assert_true(cm_render_state_final("cancelled"));
  assert_true(cm_render_state_final("failed"));
  assert_false(cm_render_state_final("running"));
  assert_false(cm_render_state_final("paused"));
  assert_false(cm_render_state_final("queued"));
  assert_false(cm_render_state_final(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jobs_table),     cmocka_unit_test(test_job_detail),
      cmocka_unit_test(test_members_and_dead), cmocka_unit_test(test_lines),
      cmocka_unit_test(test_durations_and_states),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
