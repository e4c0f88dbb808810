/* test_api.c - the job API (fetcher/api.c) in isolation: every route, status
 * code, auth case, bad-field message, the file-root checks and the NATS
 * adapter, against a small registry implementing jobs.h here (it records
 * what the API passed to it). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "jobs.h"
#include "tmpdir.h"

/* ------------------------------------------------------- test registry */

struct cm_job_s {
  char name[CM_JOB_MAX];
  cm_job_state_t state;
  cm_jobspec_t spec;
  char source[PATH_MAX + 8];
  char header[PATH_MAX + 8];
  char page_param[64];
  char redo_version[64];
  int redos;
  int replays;
};

struct cm_jobs_s {
  cm_job_t jobs[16];
  size_t n;
  int submit_rc; /* forced answer of the next submit (0: normal) */
  size_t dead_max;
};

static const char *const STATE_NAMES[] = {"queued",   "running",   "paused",
                                          "complete", "complete_with_dead",
                                          "cancelled", "failed"};

const char *cm_job_state_name(cm_job_state_t s) { return STATE_NAMES[s]; }

int cm_jobs_submit(cm_jobs_t *r, const cm_jobspec_t *spec, cm_job_t **out, char *err,
                   size_t errlen) {
  if (r->submit_rc != 0) {
    int rc = r->submit_rc;
    r->submit_rc = 0;
    snprintf(err, errlen, rc == -EIO ? "ledger: disk full" : "source: cannot open it");
    return rc;
  }
  if (cm_jobs_find(r, spec->job) != NULL) return -EEXIST;
  cm_job_t *j = &r->jobs[r->n++];
  memset(j, 0, sizeof *j);
  snprintf(j->name, sizeof j->name, "%s", spec->job);
  j->state = CM_JOB_RUNNING;
  /* Copy what the borrowed strings say, as the real registry does. */
  j->spec = *spec;
  snprintf(j->source, sizeof j->source, "%s", spec->source.spec);
  j->spec.source.spec = j->source;
  if (spec->source.http_header != NULL) {
    snprintf(j->header, sizeof j->header, "%s", spec->source.http_header);
    j->spec.source.http_header = j->header;
  }
  if (spec->source.http_page_param != NULL) {
    snprintf(j->page_param, sizeof j->page_param, "%s", spec->source.http_page_param);
    j->spec.source.http_page_param = j->page_param;
  }
  j->spec.source.http_next_field = NULL;
  j->spec.source.http_records_path = NULL;
  if (out != NULL) *out = j;
  return 0;
}

cm_job_t *cm_jobs_find(cm_jobs_t *r, const char *name) {
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->jobs[i].name, name) == 0) return &r->jobs[i];
  return NULL;
}
size_t cm_jobs_count(const cm_jobs_t *r) { return r->n; }
cm_job_t *cm_jobs_at(cm_jobs_t *r, size_t i) { return &r->jobs[i]; }
cm_job_state_t cm_job_state(const cm_job_t *j) { return j->state; }
const char *cm_job_name(const cm_job_t *j) { return j->name; }

int cm_job_json(cm_job_t *j, cm_buf_t *out) {
  return cm_buf_printf(out, "{\"job\":\"%s\",\"state\":\"%s\",\"priority\":%u,\"redo\":%s%s%s}",
                       j->name, cm_job_state_name(j->state), j->spec.priority,
                       j->redos ? "\"" : "", j->redos ? j->redo_version : "null",
                       j->redos ? "\"" : "");
}

static cm_jobs_t *dead_reg; /* for cm_job_dead_json to record its max */
int cm_job_dead_json(cm_job_t *j, size_t max, cm_buf_t *out) {
  if (dead_reg != NULL) dead_reg->dead_max = max;
  return cm_buf_printf(out, "{\"dead\":[{\"index\":17,\"attempts\":5,\"reason\":\"%s\"}]}",
                       j->name);
}

static int deny(cm_job_t *j, char *err, size_t errlen) {
  snprintf(err, errlen, "job %s is %s", j->name, cm_job_state_name(j->state));
  return -EPERM;
}

int cm_job_pause(cm_job_t *j, char *err, size_t errlen) {
  if (j->state != CM_JOB_RUNNING && j->state != CM_JOB_QUEUED) return deny(j, err, errlen);
  j->state = CM_JOB_PAUSED;
  return 0;
}
int cm_job_resume(cm_job_t *j, char *err, size_t errlen) {
  if (j->state != CM_JOB_PAUSED) return deny(j, err, errlen);
  j->state = CM_JOB_RUNNING;
  return 0;
}
int cm_job_cancel(cm_job_t *j, char *err, size_t errlen) {
  if (j->state != CM_JOB_RUNNING && j->state != CM_JOB_QUEUED && j->state != CM_JOB_PAUSED)
    return deny(j, err, errlen);
  j->state = CM_JOB_CANCELLED;
  return 0;
}
int cm_job_replay_dead(cm_job_t *j, int *n, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  j->replays++;
  *n = 3;
  return 0;
}
int cm_job_redo(cm_job_t *j, const char *version, int *n, char *err, size_t errlen) {
  if (j->state == CM_JOB_CANCELLED || j->state == CM_JOB_PAUSED) return deny(j, err, errlen);
  snprintf(j->redo_version, sizeof j->redo_version, "%s", version);
  j->redos++;
  j->state = CM_JOB_RUNNING;
  *n = 7;
  return 0;
}
int cm_jobs_members_json(cm_jobs_t *r, cm_buf_t *out) {
  (void)r;
  return cm_buf_puts(out, "{\"members\":[{\"id\":\"m1\",\"role\":\"mapper\"}]}");
}

/* ------------------------------------------------------------ fixture */

#define TOKEN "0123456789abcdef-token"

typedef struct {
  char dir[PATH_MAX];  /* removed in teardown */
  char root[PATH_MAX]; /* --api-file-root inside dir */
  char token_file[PATH_MAX];
  cm_jobs_t reg;
  cm_api_t *api;
  cm_buf_t out;
  int status;
  cJSON *json; /* the last answer, parsed */
} fx_t;

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static int fx_setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  char p[PATH_MAX + 64];
  if (f == NULL) return -1;
  cm_test_mkdtemp(f->dir, sizeof f->dir, "api");
  snprintf(f->root, sizeof f->root, "%s/root", f->dir);
  if (mkdir(f->root, 0700) != 0) return -1;
  snprintf(p, sizeof p, "%s/data.ndjson", f->root);
  write_file(p, "{\"a\":1}\n");
  snprintf(p, sizeof p, "%s/headers", f->root);
  write_file(p, "Authorization: Bearer upstream\n");
  snprintf(p, sizeof p, "%s/outside.ndjson", f->dir);
  write_file(p, "{\"b\":2}\n");
  /* A sibling whose name starts with the root's: not under it. */
  snprintf(p, sizeof p, "%s/root-evil", f->dir);
  if (mkdir(p, 0700) != 0) return -1;
  snprintf(p, sizeof p, "%s/root-evil/f.ndjson", f->dir);
  write_file(p, "{\"c\":3}\n");
  /* A link inside the root to a file outside it, and one to a file inside. */
  char target[PATH_MAX + 64];
  snprintf(target, sizeof target, "%s/outside.ndjson", f->dir);
  snprintf(p, sizeof p, "%s/escape.ndjson", f->root);
  if (symlink(target, p) != 0) return -1;
  snprintf(p, sizeof p, "%s/inside-link.ndjson", f->root);
  if (symlink("data.ndjson", p) != 0) return -1;
  snprintf(f->token_file, sizeof f->token_file, "%s/token", f->dir);
  write_file(f->token_file, TOKEN "\n");
  cm_buf_init(&f->out, 4u << 20);
  *state = f;
  return 0;
}

static int fx_teardown(void **state) {
  fx_t *f = *state;
  cm_api_destroy(f->api);
  cm_buf_free(&f->out);
  cJSON_Delete(f->json);
  cm_test_rmtree(f->dir);
  free(f);
  return 0;
}

static int status_fn(void *ud, cm_buf_t *out) {
  (void)ud;
  return cm_buf_puts(out, "{\"role\":\"fetcher\",\"ready\":true}");
}

/* A new API with the given options (token: use the fixture's token file). */
static void fx_api(fx_t *f, bool token, const char *sources, bool root) {
  char err[512] = "";
  cm_api_destroy(f->api);
  f->api = NULL;
  cm_api_cfg_t cfg = {.token_file = token ? f->token_file : NULL,
                      .sources = sources,
                      .file_root = root ? f->root : NULL,
                      .status = status_fn};
  assert_int_equal(cm_api_create(&f->api, &cfg, &f->reg, err, sizeof err), 0);
}

/* One request; the answer parsed into f->json (must be JSON). */
static int req(fx_t *f, const char *method, const char *path, const char *token,
               const char *body) {
  cm_buf_reset(&f->out);
  cJSON_Delete(f->json);
  f->status = cm_api_handle(f->api, method, path, token, body, body ? strlen(body) : 0, &f->out);
  f->json = cJSON_Parse(f->out.data);
  assert_non_null(f->json);
  return f->status;
}

static const char *error_of(fx_t *f) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(f->json, "error");
  assert_true(cJSON_IsString(e));
  return e->valuestring;
}

static const char *field_of(fx_t *f, const char *key) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(f->json, key);
  assert_true(cJSON_IsString(e));
  return e->valuestring;
}

/* Status and the error text (which must start with want). */
static void expect_error(fx_t *f, int status, const char *want) {
  if (f->status != status || strncmp(error_of(f), want, strlen(want)) != 0)
    fail_msg("want %d \"%s...\", got %d %s", status, want, f->status, f->out.data);
}

/* --------------------------------------------------------------- tests */

static void test_options(void **state) {
  fx_t *f = *state;
  char err[512], p[PATH_MAX + 64];
  cm_api_t *a = NULL;
  cm_api_cfg_t cfg = {0};

  /* A missing token file is named. */
  snprintf(p, sizeof p, "%s/nope", f->dir);
  cfg.token_file = p;
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -ENOENT);
  assert_null(a);
  assert_non_null(strstr(err, p));
  assert_non_null(strstr(err, "--api-token-file"));
  /* Too short, blanks inside: refused, never echoing the bytes. */
  write_file(p, "short\n");
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "at least 16"));
  assert_null(strstr(err, "short"));
  write_file(p, "a token with blanks inside\n");
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "printable"));
  assert_null(strstr(err, "blanks inside"));
  /* --api-sources: unknown kinds named. */
  cfg.token_file = NULL;
  cfg.sources = "gen,ftp";
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "\"ftp\""));
  cfg.sources = "";
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -EINVAL);
  /* --api-file-root: must exist and be a directory. */
  cfg.sources = "file";
  cfg.file_root = p;
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -ENOTDIR);
  assert_non_null(strstr(err, "--api-file-root"));
  snprintf(p, sizeof p, "%s/missing-dir", f->dir);
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), -ENOENT);
  cfg.file_root = f->root;
  assert_int_equal(cm_api_create(&a, &cfg, &f->reg, err, sizeof err), 0);
  cm_api_destroy(a);
  cm_api_destroy(NULL);
}

/* Without --api-token-file: reads are open, every write is 403. */
static void test_no_token(void **state) {
  fx_t *f = *state;
  fx_api(f, false, NULL, false);
  assert_int_equal(req(f, "GET", "/jobs", NULL, NULL), 200);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(f->json, "jobs")), 0);
  assert_int_equal(req(f, "GET", "/members", NULL, NULL), 200);
  assert_int_equal(req(f, "POST", "/jobs", NULL, "{\"job\":\"a\",\"source\":\"gen:users\"}"),
                   403);
  assert_string_equal(error_of(f),
                      "job API writes are disabled: start the fetcher with --api-token-file");
  /* A token sent anyway changes nothing. */
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"a\",\"source\":\"gen:users\"}"),
                   403);
  assert_int_equal(f->reg.n, 0);
  f->reg.n = 1;
  snprintf(f->reg.jobs[0].name, CM_JOB_MAX, "a");
  f->reg.jobs[0].state = CM_JOB_RUNNING;
  const char *writes[] = {"/jobs/a/pause", "/jobs/a/resume", "/jobs/a/cancel",
                          "/jobs/a/replay-dead", "/jobs/a/redo"};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(req(f, "POST", writes[i], NULL, "{\"version\":\"v1\"}"), 403);
  }
  assert_int_equal(f->reg.jobs[0].state, CM_JOB_RUNNING);
  assert_int_equal(f->reg.jobs[0].redos, 0);
  assert_int_equal(req(f, "GET", "/jobs/a", NULL, NULL), 200);
  assert_int_equal(req(f, "GET", "/jobs/a/dead", NULL, NULL), 200);
}

/* With --api-token-file: every request needs the token, reads too; a
 * wrong, a prefix, a longer one and another scheme are all 401. */
static void test_token(void **state) {
  fx_t *f = *state;
  fx_api(f, true, NULL, false);
  const char *paths[] = {"/jobs", "/members", "/jobs/a", "/jobs/nosuch/dead", "/jobs/a/bogus"};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(req(f, "GET", paths[i], NULL, NULL), 401);
    assert_int_equal(req(f, "GET", paths[i], "wrong", NULL), 401);
    assert_int_equal(req(f, "GET", paths[i], "0123456789abcdef-toke", NULL), 401);
    assert_int_equal(req(f, "GET", paths[i], TOKEN "x", NULL), 401);
    assert_int_equal(req(f, "GET", paths[i], "", NULL), 401);
  }
  assert_null(strstr(f->out.data, TOKEN)); /* never echoed */
  assert_int_equal(req(f, "POST", "/jobs", NULL, "{\"job\":\"a\",\"source\":\"gen:users\"}"), 401);
  assert_int_equal(f->reg.n, 0);
  assert_int_equal(req(f, "GET", "/jobs", TOKEN, NULL), 200);

  /* The HTTP adapter: "Bearer TOKEN", the scheme in any case. */
  const char *hdrs[] = {"Bearer " TOKEN, "bearer " TOKEN, "BEARER  " TOKEN, "Basic " TOKEN,
                        TOKEN, "Bearer", NULL};
  const int want[] = {200, 200, 200, 401, 401, 401, 401};
  for (size_t i = 0; i < 7; i++) {
    cm_http_request_t r = {.method = "GET", .path = "/jobs", .query = "",
                           .authorization = hdrs[i], .body = "", .body_len = 0};
    const char *ctype = NULL;
    cm_buf_reset(&f->out);
    assert_int_equal(cm_api_route(f->api, &r, &f->out, &ctype), want[i]);
    assert_string_equal(ctype, "application/json");
  }
}

static void test_submit(void **state) {
  fx_t *f = *state;
  fx_api(f, true, NULL, false);
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"a\",\"source\":\"gen:users\"}"), 201);
  assert_string_equal(field_of(f, "job"), "a");
  assert_string_equal(field_of(f, "state"), "running");
  /* The defaults of docs/jobs.md. */
  cm_job_t *j = &f->reg.jobs[0];
  assert_string_equal(j->spec.job, "a");
  assert_string_equal(j->spec.source.spec, "gen:users");
  assert_int_equal(j->spec.source.records, 100000);
  assert_int_equal(j->spec.source.seed, 1);
  assert_int_equal(j->spec.source.chunk_size, 100);
  assert_int_equal(j->spec.priority, 1);
  assert_int_equal(j->spec.max_deliver, 0);
  assert_string_equal(j->spec.source.http_page_param, "page");
  assert_int_equal(j->spec.source.http_page_start, 1);
  assert_int_equal(j->spec.source.http_page_step, 1);
  assert_int_equal(j->spec.source.http_timeout_ms, 30000);
  assert_int_equal(j->spec.source.http_retries, 5);
  assert_null(j->spec.source.http_header);

  /* The same name again: 409, nothing changed. */
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"a\",\"source\":\"gen:users\"}"), 409);
  assert_string_equal(error_of(f), "job \"a\" exists");
  assert_int_equal(f->reg.n, 1);

  /* Every field. */
  assert_int_equal(req(f, "POST", "/jobs", TOKEN,
                       "{\"job\":\"B.2:x-y_z\",\"source\":\"https://api.example/u\",\"records\":7,"
                       "\"seed\":9,\"chunk_size\":1000000,\"priority\":1000,\"max_deliver\":3,"
                       "\"http\":{\"page_param\":\"p\",\"page_start\":0,\"page_step\":100,"
                       "\"next_field\":null,\"records_path\":null,\"pages\":4,\"header\":null,"
                       "\"timeout_ms\":100,\"retries\":0,\"follow_redirects\":true}}"),
                   201);
  j = &f->reg.jobs[1];
  assert_string_equal(j->spec.job, "B.2:x-y_z");
  assert_string_equal(j->spec.source.spec, "https://api.example/u");
  assert_int_equal(j->spec.source.records, 7);
  assert_int_equal(j->spec.source.seed, 9);
  assert_int_equal(j->spec.source.chunk_size, 1000000);
  assert_int_equal(j->spec.priority, 1000);
  assert_int_equal(j->spec.max_deliver, 3);
  assert_string_equal(j->spec.source.http_page_param, "p");
  assert_int_equal(j->spec.source.http_page_start, 0);
  assert_int_equal(j->spec.source.http_page_step, 100);
  assert_int_equal(j->spec.source.http_pages, 4);
  assert_int_equal(j->spec.source.http_timeout_ms, 100);
  assert_int_equal(j->spec.source.http_retries, 0);
  assert_true(j->spec.source.http_follow_redirects);

  /* The registry's refusals. */
  f->reg.submit_rc = -EINVAL;
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"c\",\"source\":\"gen:users\"}"), 400);
  assert_string_equal(error_of(f), "source: cannot open it");
  f->reg.submit_rc = -EIO;
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"c\",\"source\":\"gen:users\"}"), 503);
  assert_string_equal(error_of(f), "ledger: disk full");
  assert_int_equal(f->reg.n, 2);

  /* The list, in creation order. */
  assert_int_equal(req(f, "GET", "/jobs", TOKEN, NULL), 200);
  cJSON *jobs = cJSON_GetObjectItem(f->json, "jobs");
  assert_int_equal(cJSON_GetArraySize(jobs), 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(jobs, 0), "job")->valuestring, "a");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(jobs, 1), "job")->valuestring,
                      "B.2:x-y_z");
}

/* Each bad submission is 400 naming its field; nothing reaches the
 * registry. */
static void test_bad_fields(void **state) {
  fx_t *f = *state;
  fx_api(f, true, "gen,http,file", true);
  static const struct {
    const char *body;
    int status;
    const char *error;
  } cases[] = {
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"recrods\":5}", 400, "unknown key \"recrods\""},
      {"{\"source\":\"gen:users\"}", 400, "\"job\" is required"},
      {"{\"job\":null,\"source\":\"gen:users\"}", 400, "\"job\" must be 1..127"},
      {"{\"job\":\"\",\"source\":\"gen:users\"}", 400, "\"job\" must be 1..127"},
      {"{\"job\":\"a/b\",\"source\":\"gen:users\"}", 400, "\"job\" must be 1..127"},
      {"{\"job\":\"caf\\u00e9\",\"source\":\"gen:users\"}", 400, "\"job\" must be 1..127"},
      {"{\"job\":7,\"source\":\"gen:users\"}", 400, "\"job\" must be"},
      {"{\"job\":\"a\"}", 400, "\"source\" is required"},
      {"{\"job\":\"a\",\"source\":5}", 400, "\"source\" must be a string"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"records\":-1}", 400, "\"records\" must be"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"records\":\"5\"}", 400, "\"records\" must be"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"seed\":1.5}", 400, "\"seed\" must be"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"chunk_size\":0}", 400, "\"chunk_size\" must be 1..1000000"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"chunk_size\":1000001}", 400, "\"chunk_size\" must be 1..1000000"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"priority\":0}", 400, "\"priority\" must be 1..1000"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"priority\":1001}", 400, "\"priority\" must be 1..1000"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"max_deliver\":1001}", 400, "\"max_deliver\" must be 1..1000"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":[]}", 400, "\"http\" must be an object"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"page\":1}}", 400, "unknown key \"http.page\""},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"timeout_ms\":50}}", 400, "\"http.timeout_ms\""},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"retries\":101}}", 400, "\"http.retries\""},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"page_step\":0}}", 400, "\"http.page_step\""},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"follow_redirects\":\"yes\"}}", 400, "\"http.follow_redirects\""},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"next_field\":3}}", 400, "\"http.next_field\""},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"header\":\"Authorization: Bearer x\"}}", 400, "http.header: only \"@FILE\""},
      {"{\"job\":\"a\",\"source\":\"https://u:pw@h.example/x\"}", 400, "source: credentials in the URL are not accepted"},
      {"{\"job\":\"a\",\"source\":\"https://h.example/x?api_key=K\"}", 400, "source: credentials in the URL are not accepted"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"job\":\"b\"}", 400, "\"job\" is given twice"},
      {"{\"job\":\"a\",\"source\":\"gen:users\",\"http\":{\"pages\":1,\"pages\":2}}", 400, "\"http.pages\" is given twice"},
      {"{\"job\":\"a\",\"source\":\"gen:users\"", 400, "body: not valid JSON"},
      {"{\"job\":\"a\",\"source\":\"gen:users\"} x", 400, "body: not valid JSON"},
      {"[1,2]", 400, "body: must be a JSON object"},
      {"\"gen:users\"", 400, "body: must be a JSON object"},
      {"", 400, "\"job\" is required"},
      {"{\"job\":\"a\",\"source\":\"ftp://user:hunter2@host/x\"}", 400, "source: unknown kind \"ftp\""},
      {"{\"job\":\"a\",\"source\":\"gen\"}", 400, "source: unknown kind \"gen\""},
      {"{\"job\":\"a\",\"source\":\"file:-\"}", 400, "source: file:- (stdin)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    req(f, "POST", "/jobs", TOKEN, cases[i].body);
    if (f->status != cases[i].status || strstr(error_of(f), cases[i].error) == NULL)
      fail_msg("%s: want %d \"...%s...\", got %d %s", cases[i].body, cases[i].status,
               cases[i].error, f->status, f->out.data);
    assert_null(strstr(f->out.data, "hunter2")); /* credentials never echoed */
  }
  assert_int_equal(f->reg.n, 0);
}

/* --api-sources: kinds not listed are 403; "http" covers https. */
static void test_sources(void **state) {
  fx_t *f = *state;
  char body[PATH_MAX + 128];
  fx_api(f, true, NULL, true); /* default gen,http */
  snprintf(body, sizeof body, "{\"job\":\"f\",\"source\":\"file:%s/data.ndjson\"}", f->root);
  req(f, "POST", "/jobs", TOKEN, body);
  expect_error(f, 403, "source: file sources are not allowed through the API (--api-sources gen,http)");
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"h\",\"source\":\"http://x/\"}"), 201);
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"s\",\"source\":\"https://x/\"}"), 201);
  fx_api(f, true, "gen", true);
  req(f, "POST", "/jobs", TOKEN, "{\"job\":\"h2\",\"source\":\"https://x/\"}");
  expect_error(f, 403, "source: http sources are not allowed");
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"g\",\"source\":\"gen:users\"}"), 201);
  fx_api(f, true, "file", true);
  req(f, "POST", "/jobs", TOKEN, "{\"job\":\"g2\",\"source\":\"gen:users\"}");
  expect_error(f, 403, "source: gen sources are not allowed");
  assert_int_equal(f->reg.n, 3);
}

/* file: and http.header @FILE: only what resolves (realpath) under the
 * root; what the registry gets is the resolved path. */
static void test_file_root(void **state) {
  fx_t *f = *state;
  char body[3 * PATH_MAX], want[PATH_MAX + 64], real_root[PATH_MAX];
  assert_non_null(realpath(f->root, real_root));

  fx_api(f, true, "gen,file", false); /* no root: file: refused */
  snprintf(body, sizeof body, "{\"job\":\"f\",\"source\":\"file:%s/data.ndjson\"}", f->root);
  req(f, "POST", "/jobs", TOKEN, body);
  expect_error(f, 403, "source: files are refused through the API (no --api-file-root)");

  fx_api(f, true, "gen,file", true);
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, body), 201);
  snprintf(want, sizeof want, "file:%s/data.ndjson", real_root);
  assert_string_equal(f->reg.jobs[0].spec.source.spec, want);
  /* A link inside the root to a file inside: fine, resolved. */
  snprintf(body, sizeof body, "{\"job\":\"f2\",\"source\":\"file:%s/inside-link.ndjson\"}", f->root);
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, body), 201);
  assert_string_equal(f->reg.jobs[1].spec.source.spec, want);

  static const char *escapes[] = {"/root/../etc/passwd", "/etc/passwd", "%s/../outside.ndjson",
                                  "%s/escape.ndjson", "%s/../../../../../../etc/passwd",
                                  "%s/../nonexistent", "/nonexistent-dir/x", "%s/..",
                                  "%s-evil/f.ndjson", "%s-evil/missing"};
  for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, escapes[i], f->root);
    snprintf(body, sizeof body, "{\"job\":\"e%zu\",\"source\":\"file:%s\"}", i, path);
    req(f, "POST", "/jobs", TOKEN, body);
    expect_error(f, 403, "source: ");
    assert_non_null(strstr(error_of(f), "is not under --api-file-root"));
  }
  /* Missing, but where it would be is under the root: said so. */
  snprintf(body, sizeof body, "{\"job\":\"m\",\"source\":\"file:%s/missing.ndjson\"}", f->root);
  req(f, "POST", "/jobs", TOKEN, body);
  expect_error(f, 400, "source: ");
  assert_non_null(strstr(error_of(f), "No such file"));

  /* http.header: "@FILE" under the root only. */
  snprintf(body, sizeof body,
           "{\"job\":\"h\",\"source\":\"https://x/\",\"http\":{\"header\":\"@%s/headers\"}}",
           f->root);
  fx_api(f, true, "gen,file,http", true);
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, body), 201);
  snprintf(want, sizeof want, "@%s/headers", real_root);
  assert_string_equal(f->reg.jobs[2].spec.source.http_header, want);
  snprintf(body, sizeof body,
           "{\"job\":\"h2\",\"source\":\"https://x/\",\"http\":{\"header\":\"@%s/../token\"}}",
           f->root);
  req(f, "POST", "/jobs", TOKEN, body);
  expect_error(f, 403, "http.header: ");
  assert_null(strstr(f->out.data, TOKEN)); /* the token file's bytes stay unread */
  assert_int_equal(f->reg.n, 3);
}

static void test_body_too_large(void **state) {
  fx_t *f = *state;
  fx_api(f, true, NULL, false);
  size_t n = CM_API_MAX_BODY + 1;
  char *big = malloc(n + 1);
  memset(big, ' ', n);
  big[n] = '\0';
  memcpy(big, "{\"job\":\"a\",\"source\":\"gen:users\"}", 32);
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, big), 413);
  /* Exactly at the cap is parsed. */
  big[n - 1] = '\0';
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, big), 201);
  free(big);
}

static void test_routes(void **state) {
  fx_t *f = *state;
  fx_api(f, true, NULL, false);
  dead_reg = &f->reg;
  req(f, "GET", "/jobs/a", TOKEN, NULL);
  expect_error(f, 404, "no job \"a\"");
  assert_int_equal(req(f, "POST", "/jobs", TOKEN, "{\"job\":\"a\",\"source\":\"gen:users\"}"), 201);
  assert_int_equal(req(f, "GET", "/jobs/a", TOKEN, NULL), 200);
  assert_string_equal(field_of(f, "job"), "a");
  assert_int_equal(req(f, "HEAD", "/jobs/a", TOKEN, NULL), 200);
  assert_int_equal(req(f, "GET", "/jobs/a/dead", TOKEN, NULL), 200);
  assert_int_equal(f->reg.dead_max, 1000);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(f->json, "dead")), 1);
  assert_int_equal(req(f, "GET", "/members", TOKEN, NULL), 200);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(f->json, "members")), 1);

  /* State changes, and the 409s of states that do not allow them. */
  assert_int_equal(req(f, "POST", "/jobs/a/pause", TOKEN, NULL), 200);
  assert_string_equal(field_of(f, "state"), "paused");
  req(f, "POST", "/jobs/a/pause", TOKEN, NULL);
  expect_error(f, 409, "job a is paused");
  req(f, "POST", "/jobs/a/redo", TOKEN, "{\"version\":\"v1\"}");
  expect_error(f, 409, "job a is paused");
  assert_int_equal(req(f, "POST", "/jobs/a/resume", TOKEN, ""), 200);
  assert_string_equal(field_of(f, "state"), "running");
  assert_int_equal(req(f, "POST", "/jobs/a/replay-dead", TOKEN, NULL), 200);
  assert_int_equal(f->reg.jobs[0].replays, 1);
  req(f, "POST", "/jobs/a/redo", TOKEN, NULL);
  expect_error(f, 400, "\"version\" is required");
  req(f, "POST", "/jobs/a/redo", TOKEN, "{\"version\":\"\"}");
  expect_error(f, 400, "\"version\" is required");
  req(f, "POST", "/jobs/a/redo", TOKEN, "{\"version\":3}");
  expect_error(f, 400, "\"version\" must be a string");
  req(f, "POST", "/jobs/a/redo", TOKEN, "{\"version\":\"v1\",\"force\":true}");
  expect_error(f, 400, "unknown key \"force\"");
  assert_int_equal(req(f, "POST", "/jobs/a/redo", TOKEN, "{\"version\":\"v1\"}"), 202);
  assert_string_equal(field_of(f, "redo"), "v1");
  assert_int_equal(req(f, "POST", "/jobs/a/cancel", TOKEN, NULL), 200);
  assert_string_equal(field_of(f, "state"), "cancelled");
  req(f, "POST", "/jobs/a/resume", TOKEN, NULL);
  expect_error(f, 409, "job a is cancelled");
  req(f, "POST", "/jobs/a/cancel", TOKEN, NULL);
  expect_error(f, 409, "job a is cancelled");
  req(f, "POST", "/jobs/nosuch/pause", TOKEN, NULL);
  expect_error(f, 404, "no job \"nosuch\"");
  req(f, "POST", "/jobs/a%2fb/pause", TOKEN, NULL);
  expect_error(f, 404, "no job");

  /* Wrong methods and unknown routes. */
  req(f, "GET", "/jobs/a/pause", TOKEN, NULL);
  expect_error(f, 405, "GET /jobs/a/pause: use POST");
  req(f, "POST", "/jobs/a", TOKEN, NULL);
  expect_error(f, 405, "POST /jobs/a: use GET");
  req(f, "POST", "/jobs/a/dead", TOKEN, NULL);
  expect_error(f, 405, "");
  req(f, "POST", "/members", TOKEN, NULL);
  expect_error(f, 405, "");
  req(f, "PUT", "/jobs", TOKEN, NULL);
  expect_error(f, 405, "method PUT not allowed");
  req(f, "GET", "/jobs/a/bogus", TOKEN, NULL);
  expect_error(f, 404, "not found");
  req(f, "GET", "/jobs/", TOKEN, NULL);
  expect_error(f, 404, "not found");
  req(f, "GET", "/jobs/a/pause/x", TOKEN, NULL);
  expect_error(f, 404, "not found");
  req(f, "GET", "/elsewhere", TOKEN, NULL);
  expect_error(f, 404, "not found");

  /* The HTTP adapter leaves other paths to the daemon. */
  const char *others[] = {"/", "/jobsx", "/dashboard.js", "/healthz", "/member"};
  for (size_t i = 0; i < 5; i++) {
    cm_http_request_t r = {.method = "GET", .path = others[i], .query = "", .body = ""};
    const char *ctype = NULL;
    cm_buf_reset(&f->out);
    assert_int_equal(cm_api_route(f->api, &r, &f->out, &ctype), 0);
    assert_int_equal(f->out.len, 0);
  }
  /* And answers its own with a JSON body. */
  cm_http_request_t r = {.method = "POST", .path = "/jobs", .query = "",
                         .authorization = "Bearer " TOKEN,
                         .body = "{\"job\":\"b\",\"source\":\"gen:users\"}"};
  r.body_len = strlen(r.body);
  const char *ctype = NULL;
  cm_buf_reset(&f->out);
  assert_int_equal(cm_api_route(f->api, &r, &f->out, &ctype), 201);
  assert_non_null(strstr(f->out.data, "\"job\":\"b\""));
  dead_reg = NULL;
}

static void test_no_registry(void **state) {
  fx_t *f = *state;
  char err[256];
  cm_api_cfg_t cfg = {0};
  cm_api_destroy(f->api);
  assert_int_equal(cm_api_create(&f->api, &cfg, NULL, err, sizeof err), 0);
  req(f, "GET", "/jobs", NULL, NULL);
  expect_error(f, 503, "the job registry is not running");
  cm_api_set_jobs(f->api, &f->reg);
  assert_int_equal(req(f, "GET", "/jobs", NULL, NULL), 200);
}

/* One NATS request: the reply parsed; returns its status, body in *body. */
static int nats(fx_t *f, const char *suffix, const char *data, cJSON **body) {
  cm_buf_reset(&f->out);
  cJSON_Delete(f->json);
  assert_int_equal(cm_api_nats_reply(f->api, suffix, data, data ? strlen(data) : 0, &f->out), 0);
  f->json = cJSON_Parse(f->out.data);
  assert_non_null(f->json);
  /* Exactly {"status":N,"body":{...}}. */
  assert_int_equal(cJSON_GetArraySize(f->json), 2);
  cJSON *st = cJSON_GetObjectItemCaseSensitive(f->json, "status");
  *body = cJSON_GetObjectItemCaseSensitive(f->json, "body");
  assert_true(cJSON_IsNumber(st));
  assert_true(cJSON_IsObject(*body));
  return st->valueint;
}

static const char *nats_error(cJSON *body) {
  cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
  assert_true(cJSON_IsString(e));
  return e->valuestring;
}

static void test_nats(void **state) {
  fx_t *f = *state;
  cJSON *b;
  fx_api(f, true, NULL, false);
  /* The token is checked like the Bearer token. */
  assert_int_equal(nats(f, "jobs.submit", "{\"job\":\"n\",\"source\":\"gen:users\"}", &b), 401);
  assert_int_equal(
      nats(f, "jobs.submit", "{\"job\":\"n\",\"source\":\"gen:users\",\"token\":\"bad\"}", &b),
      401);
  assert_int_equal(nats(f, "jobs.list", "{}", &b), 401);
  assert_int_equal(nats(f, "members", "", &b), 401);
  assert_int_equal(f->reg.n, 0);
  assert_int_equal(nats(f, "jobs.submit",
                        "{\"job\":\"n\",\"source\":\"gen:users\",\"records\":5,\"token\":\"" TOKEN
                        "\"}",
                        &b),
                   201);
  assert_string_equal(cJSON_GetObjectItem(b, "job")->valuestring, "n");
  assert_int_equal(f->reg.jobs[0].spec.source.records, 5);
  assert_int_equal(nats(f, "jobs.submit",
                        "{\"job\":\"n\",\"source\":\"gen:users\",\"token\":\"" TOKEN "\"}", &b),
                   409);
  assert_int_equal(nats(f, "jobs.submit",
                        "{\"job\":\"m\",\"source\":\"gen:users\",\"prio\":2,\"token\":\"" TOKEN
                        "\"}",
                        &b),
                   400);
  assert_string_equal(nats_error(b), "unknown key \"prio\"");
  assert_int_equal(nats(f, "jobs.list", "{\"token\":\"" TOKEN "\"}", &b), 200);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(b, "jobs")), 1);
  assert_int_equal(nats(f, "jobs.get", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 200);
  assert_string_equal(cJSON_GetObjectItem(b, "state")->valuestring, "running");
  assert_int_equal(nats(f, "jobs.get", "{\"token\":\"" TOKEN "\"}", &b), 400);
  assert_string_equal(nats_error(b), "\"job\" is required");
  assert_int_equal(nats(f, "jobs.get", "{\"job\":\"x/y\",\"token\":\"" TOKEN "\"}", &b), 400);
  assert_int_equal(nats(f, "jobs.get", "{\"job\":\"nosuch\",\"token\":\"" TOKEN "\"}", &b), 404);
  assert_int_equal(nats(f, "jobs.get", "{\"job\":\"n\",\"x\":1,\"token\":\"" TOKEN "\"}", &b), 400);
  assert_string_equal(nats_error(b), "unknown key \"x\"");
  assert_int_equal(nats(f, "jobs.pause", "{\"job\":\"n\",\"token\":\"bad\"}", &b), 401);
  assert_int_equal(f->reg.jobs[0].state, CM_JOB_RUNNING);
  assert_int_equal(nats(f, "jobs.pause", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 200);
  assert_string_equal(cJSON_GetObjectItem(b, "state")->valuestring, "paused");
  assert_int_equal(nats(f, "jobs.pause", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 409);
  assert_int_equal(nats(f, "jobs.resume", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 200);
  assert_int_equal(nats(f, "jobs.replay-dead", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 200);
  assert_int_equal(nats(f, "jobs.redo", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 400);
  assert_string_equal(nats_error(b), "\"version\" is required");
  assert_int_equal(
      nats(f, "jobs.redo", "{\"job\":\"n\",\"version\":\"v1\",\"token\":\"" TOKEN "\"}", &b), 202);
  assert_string_equal(f->reg.jobs[0].redo_version, "v1");
  assert_int_equal(nats(f, "jobs.dead", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 200);
  assert_true(cJSON_IsArray(cJSON_GetObjectItem(b, "dead")));
  assert_int_equal(nats(f, "jobs.cancel", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 200);
  assert_int_equal(nats(f, "jobs.resume", "{\"job\":\"n\",\"token\":\"" TOKEN "\"}", &b), 409);
  assert_int_equal(nats(f, "members", "{\"token\":\"" TOKEN "\"}", &b), 200);
  assert_true(cJSON_IsArray(cJSON_GetObjectItem(b, "members")));
  /* P.status: the daemon's object, open like /status. */
  assert_int_equal(nats(f, "status", "anything", &b), 200);
  assert_string_equal(cJSON_GetObjectItem(b, "role")->valuestring, "fetcher");
  /* Malformed requests. */
  assert_int_equal(nats(f, "jobs.bogus", "{}", &b), 404);
  assert_int_equal(nats(f, "jobs.list", "not json", &b), 400);
  assert_int_equal(nats(f, "jobs.list", "{\"token\":5}", &b), 400);
  assert_string_equal(nats_error(b), "\"token\" must be a string");
  assert_int_equal(nats(f, "jobs.list", "{\"token\":\"a\",\"token\":\"b\"}", &b), 400);
  /* Many keys are refused before anything else (no quadratic check). */
  {
    cm_buf_t many;
    cm_buf_init(&many, 1 << 20);
    assert_int_equal(cm_buf_puts(&many, "{"), 0);
    for (int i = 0; i < 65; i++) assert_int_equal(cm_buf_printf(&many, "%s\"k%d\":1", i ? "," : "", i), 0);
    assert_int_equal(cm_buf_puts(&many, "}"), 0);
    assert_int_equal(nats(f, "jobs.list", many.data, &b), 400);
    assert_string_equal(nats_error(b), "body: more than 64 keys");
    req(f, "POST", "/jobs", TOKEN, many.data);
    expect_error(f, 400, "body: more than 64 keys");
    cm_buf_free(&many);
  }
  size_t n = CM_API_MAX_BODY + 1;
  char *big = malloc(n + 1);
  memset(big, ' ', n);
  memcpy(big, "{}", 2);
  big[n] = '\0';
  assert_int_equal(nats(f, "jobs.list", big, &b), 413);
  free(big);
  assert_null(strstr(f->out.data, TOKEN));

  /* Without --api-token-file, writes over NATS are 403 too. */
  fx_api(f, false, NULL, false);
  assert_int_equal(nats(f, "jobs.submit", "{\"job\":\"o\",\"source\":\"gen:users\"}", &b), 403);
  assert_int_equal(nats(f, "jobs.get", "{\"job\":\"n\"}", &b), 200);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_options, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_no_token, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_token, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_submit, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_bad_fields, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_sources, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_file_root, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_body_too_large, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_routes, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_no_registry, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_nats, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
