/* api.c - the job API: authorization, the API's policy on submissions,
 * the routes of docs/jobs.md, and the HTTP and NATS adapters around them. */
#include "api.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "cm/daemon.h"
#include "cm/log.h"
#include "cm/ratelimit.h"
#include "jobspec.h"

#define SRC_GEN 1u
#define SRC_FILE 2u
#define SRC_HTTP 4u

#define TOKEN_MIN 16
#define TOKEN_MAX 4096

static const char WRITES_OFF[] =
    "job API writes are disabled: start the fetcher with --api-token-file";

struct cm_api_s {
  cm_jobs_t *jobs;
  char *token; /* NULL: writes disabled */
  size_t token_len;
  unsigned sources;
  char sources_str[64];
  char *file_root; /* realpath of --api-file-root, or NULL */
  int (*status)(void *ud, cm_buf_t *out);
  void *status_ud;
  cm_nats_t *nats;
  char prefix[200];
  cm_ratelimit_t unauthorized_log; /* one warning per minute at most */
};

/* ---- options ---- */

static int load_token(cm_api_t *a, const char *path, char *err, size_t errlen) {
  char buf[TOKEN_MAX + 2];
  FILE *f = fopen(path, "rb");
  size_t n;
  if (f == NULL) {
    int e = errno;
    snprintf(err, errlen, "--api-token-file %s: %s", path, strerror(e));
    return -e;
  }
  n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  if (n > TOKEN_MAX) {
    explicit_bzero(buf, sizeof buf);
    snprintf(err, errlen, "--api-token-file %s: the token is longer than %d bytes", path,
             TOKEN_MAX);
    return -EINVAL;
  }
  /* Written with echo or an editor: the newline is not part of it. */
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                   buf[n - 1] == '\t'))
    n--;
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e) {
      explicit_bzero(buf, sizeof buf);
      snprintf(err, errlen,
               "--api-token-file %s: the token must be printable ASCII without blanks (it is "
               "sent as \"Authorization: Bearer TOKEN\")",
               path);
      return -EINVAL;
    }
  }
  if (n < TOKEN_MIN) {
    explicit_bzero(buf, sizeof buf);
    snprintf(err, errlen, "--api-token-file %s holds %zu bytes; at least %d are needed", path, n,
             TOKEN_MIN);
    return -EINVAL;
  }
  a->token = malloc(n + 1);
  if (a->token == NULL) {
    explicit_bzero(buf, sizeof buf);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  memcpy(a->token, buf, n);
  a->token[n] = '\0';
  a->token_len = n;
  explicit_bzero(buf, sizeof buf);
  return 0;
}

static int parse_sources(cm_api_t *a, const char *list, char *err, size_t errlen) {
  const char *p = list;
  a->sources = 0;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    if (len == 3 && strncmp(p, "gen", 3) == 0)
      a->sources |= SRC_GEN;
    else if (len == 4 && strncmp(p, "file", 4) == 0)
      a->sources |= SRC_FILE;
    else if (len == 4 && strncmp(p, "http", 4) == 0)
      a->sources |= SRC_HTTP;
    else {
      snprintf(err, errlen,
               "invalid value \"%s\" for --api-sources: \"%.*s\" is not a source kind (use a "
               "comma list of gen, file, http)",
               list, (int)(len > 64 ? 64 : len), p);
      return -EINVAL;
    }
    if (end == NULL) break;
    p = end + 1;
  }
  snprintf(a->sources_str, sizeof a->sources_str, "%s%s%s",
           (a->sources & SRC_GEN) ? "gen," : "", (a->sources & SRC_FILE) ? "file," : "",
           (a->sources & SRC_HTTP) ? "http," : "");
  a->sources_str[strlen(a->sources_str) - 1] = '\0'; /* the last ',' (one kind at least) */
  return 0;
}

int cm_api_create(cm_api_t **out, const cm_api_cfg_t *cfg, cm_jobs_t *jobs, char *err,
                  size_t errlen) {
  cm_api_t *a = calloc(1, sizeof *a);
  int rc;
  *out = NULL;
  if (a == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  a->jobs = jobs;
  a->unauthorized_log = (cm_ratelimit_t)CM_RATELIMIT_INIT(60000);
  a->status = cfg->status;
  a->status_ud = cfg->status_ud;
  rc = parse_sources(a, cfg->sources != NULL ? cfg->sources : "gen,http", err, errlen);
  if (rc == 0 && cfg->token_file != NULL && cfg->token_file[0] != '\0')
    rc = load_token(a, cfg->token_file, err, errlen);
  if (rc == 0 && cfg->file_root != NULL && cfg->file_root[0] != '\0') {
    struct stat st;
    a->file_root = realpath(cfg->file_root, NULL);
    if (a->file_root == NULL) {
      rc = -errno;
      snprintf(err, errlen, "--api-file-root %s: %s", cfg->file_root, strerror(-rc));
    } else if (stat(a->file_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
      rc = -ENOTDIR;
      snprintf(err, errlen, "--api-file-root %s: not a directory", cfg->file_root);
    }
  }
  if (rc != 0) {
    cm_api_destroy(a);
    return rc;
  }
  *out = a;
  return 0;
}

void cm_api_set_jobs(cm_api_t *a, cm_jobs_t *jobs) { a->jobs = jobs; }

void cm_api_destroy(cm_api_t *a) {
  if (a == NULL) return;
  if (a->token != NULL) explicit_bzero(a->token, a->token_len);
  free(a->token);
  free(a->file_root);
  free(a);
}

/* ---- answers ---- */

static int answer_error(cm_buf_t *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int answer_error(cm_buf_t *out, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cm_buf_reset(out);
  if (cm_buf_puts(out, "{\"error\":") != 0 || cm_buf_append_json_str(out, msg, strlen(msg)) != 0 ||
      cm_buf_puts(out, "}") != 0)
    return 500;
  return status;
}

static int answer_job(cm_buf_t *out, int status, cm_job_t *j) {
  if (cm_job_json(j, out) != 0) return answer_error(out, 500, "out of memory");
  return status;
}

/* ---- authorization ---- */

/* Constant time in the length of the configured token: neither the bytes
 * nor the length of the given one show in the time taken. */
static bool token_ok(const cm_api_t *a, const char *given) {
  size_t glen;
  unsigned char diff = 0;
  if (a->token == NULL || given == NULL) return false;
  glen = strnlen(given, TOKEN_MAX + 1);
  for (size_t i = 0; i < a->token_len; i++) {
    unsigned char g = i < glen ? (unsigned char)given[i] : 0;
    diff |= (unsigned char)(g ^ (unsigned char)a->token[i]);
  }
  return diff == 0 && glen == a->token_len;
}

/* ---- strict parsing ---- */

typedef struct {
  /* file: and @FILE resolved under the root: what the registry opens. */
  char source[PATH_MAX + 8];
  char header[PATH_MAX + 2];
} submission_t;

static bool valid_job_name(const char *s) {
  size_t n = strlen(s);
  return n > 0 && n < CM_JOB_MAX &&
         strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n;
}

/* More keys than any request has: refused before the quadratic duplicate
 * check below (this runs before authorization on NATS). */
#define MAX_KEYS 64

/* Refuses an object with too many keys or a key given twice (cJSON keeps
 * both; which one counts would be a guess): 0, or the status of the answer
 * written to out. */
static int check_object(const cJSON *obj, const char *prefix, cm_buf_t *out) {
  int n = cJSON_GetArraySize(obj);
  if (n > MAX_KEYS) return answer_error(out, 400, "body: more than %d keys", MAX_KEYS);
  for (const cJSON *a = obj->child; a != NULL; a = a->next)
    for (const cJSON *b = a->next; b != NULL; b = b->next)
      if (a->string != NULL && b->string != NULL && strcmp(a->string, b->string) == 0)
        return answer_error(out, 400, "\"%s%.128s\" is given twice", prefix, a->string);
  return 0;
}

static int get_str(const cJSON *obj, const char *key, const char *name, const char **v,
                   cm_buf_t *out) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (it == NULL || cJSON_IsNull(it)) return 0;
  if (!cJSON_IsString(it)) return answer_error(out, 400, "\"%s\" must be a string", name);
  *v = it->valuestring;
  return 0;
}

static int check_keys(const cJSON *obj, const char *prefix, const char *const *keys,
                      cm_buf_t *out) {
  int st = check_object(obj, prefix, out);
  if (st != 0) return st;
  for (const cJSON *it = obj->child; it != NULL; it = it->next) {
    bool known = false;
    for (size_t i = 0; keys[i] != NULL && !known; i++) known = strcmp(it->string, keys[i]) == 0;
    if (!known) return answer_error(out, 400, "unknown key \"%s%.128s\"", prefix, it->string);
  }
  return 0;
}

/* Resolves path and requires it under the root: 0 with the resolved path;
 * 403 outside (or no root); 400 when it does not exist (only said when its
 * directory is under the root, so the answer is no oracle for files
 * elsewhere). */
static int resolve_under_root(const cm_api_t *a, const char *field, const char *path,
                              char *resolved, size_t rlen, cm_buf_t *out) {
  char buf[PATH_MAX];
  size_t root_len;
  if (a->file_root == NULL)
    return answer_error(out, 403, "%s: files are refused through the API (no --api-file-root)",
                        field);
  if (path[0] == '\0') return answer_error(out, 400, "%s: empty file path", field);
  root_len = strlen(a->file_root);
  if (realpath(path, buf) == NULL) {
    int e = errno;
    if (e == ENOENT) {
      /* Is the directory it would be in under the root? */
      char dir[PATH_MAX];
      char *slash;
      snprintf(dir, sizeof dir, "%s", path);
      slash = strrchr(dir, '/');
      if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
      else if (slash == dir)
        dir[1] = '\0';
      else
        *slash = '\0';
      if (realpath(dir, buf) != NULL &&
          (strcmp(a->file_root, "/") == 0 ||
           (strncmp(buf, a->file_root, root_len) == 0 &&
            (buf[root_len] == '\0' || buf[root_len] == '/'))))
        return answer_error(out, 400, "%s: %.512s: No such file or directory", field, path);
    }
    return answer_error(out, 403, "%s: %.512s is not under --api-file-root", field, path);
  }
  if (strcmp(a->file_root, "/") != 0 &&
      (strncmp(buf, a->file_root, root_len) != 0 || (buf[root_len] != '/' && buf[root_len] != '\0')))
    return answer_error(out, 403, "%s: %.512s is not under --api-file-root", field, path);
  if ((size_t)snprintf(resolved, rlen, "%s", buf) >= rlen)
    return answer_error(out, 400, "%s: path too long", field);
  return 0;
}

/* The API's policy on a parsed submission (docs/jobs.md): source kinds of
 * --api-sources, file: and an http.header "@FILE" only under the root (the
 * spec then points at the resolved paths in s), no stdin. 0, or the status
 * of the error answer written to out. */
static int apply_policy(const cm_api_t *a, cm_jobspec_t *spec, submission_t *s, cm_buf_t *out) {
  cm_source_opts_t *o = &spec->source;
  const char *src = o->spec;
  unsigned kind;
  int rc;
  if (strncmp(src, "gen:", 4) == 0)
    kind = SRC_GEN;
  else if (strncmp(src, "file:", 5) == 0)
    kind = SRC_FILE;
  else if (strncmp(src, "http://", 7) == 0 || strncmp(src, "https://", 8) == 0)
    kind = SRC_HTTP;
  else {
    /* Only the kind is echoed: the rest may hold credentials. */
    size_t k = strcspn(src, ":/");
    return answer_error(out, 400,
                        "source: unknown kind \"%.*s\": expected gen:users, file:PATH, "
                        "http://URL or https://URL",
                        (int)(k > 32 ? 32 : k), src);
  }
  if ((a->sources & kind) == 0)
    return answer_error(out, 403,
                        "source: %s sources are not allowed through the API (--api-sources %s)",
                        kind == SRC_GEN ? "gen" : kind == SRC_FILE ? "file" : "http",
                        a->sources_str);
  if (kind == SRC_HTTP && cm_jobspec_source_redacted(spec))
    /* The spec is stored in the ledger so that a restart reopens the
     * source: a credential in the URL would be stored with it. */
    return answer_error(out, 400,
                        "source: credentials in the URL are not accepted through the API (the "
                        "job's spec is stored in the ledger): put them in a header file, "
                        "http.header \"@FILE\" under --api-file-root");
  if (kind == SRC_FILE) {
    if (strcmp(src + 5, "-") == 0)
      return answer_error(out, 400, "source: file:- (stdin) cannot be read through the API");
    memcpy(s->source, "file:", 5);
    if ((rc = resolve_under_root(a, "source", src + 5, s->source + 5, sizeof s->source - 5,
                                 out)) != 0)
      return rc;
    o->spec = s->source;
  }
  if (o->http_header != NULL) {
    /* A header value is a secret: it may only be named, as a file under
     * the root, never sent (it would sit in the ledger's spec). */
    if (o->http_header[0] != '@')
      return answer_error(out, 400,
                          "http.header: only \"@FILE\" (a file under --api-file-root holding "
                          "the header lines) is accepted through the API");
    if ((rc = resolve_under_root(a, "http.header", o->http_header + 1, s->header + 1,
                                 sizeof s->header - 1, out)) != 0)
      return rc;
    s->header[0] = '@';
    o->http_header = s->header;
  }
  return 0;
}

/* Parses a request body: NULL with the error answered (status in *st). An
 * empty body is {}. */
static cJSON *parse_body(const char *body, size_t len, int *st, cm_buf_t *out) {
  cJSON *root;
  const char *end = NULL;
  size_t i = 0;
  while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n')) i++;
  if (i == len) {
    root = cJSON_CreateObject();
    if (root == NULL) *st = answer_error(out, 500, "out of memory");
    return root;
  }
  root = cJSON_ParseWithLengthOpts(body, len, &end, false);
  if (root == NULL) {
    *st = answer_error(out, 400, "body: not valid JSON (at byte %zu)",
                       end != NULL && end >= body ? (size_t)(end - body) : (size_t)0);
    return NULL;
  }
  /* Only blanks may follow the value. */
  for (const char *p = end; p != NULL && p < body + len; p++) {
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '\0') {
      cJSON_Delete(root);
      *st = answer_error(out, 400, "body: not valid JSON (data after the value at byte %zu)",
                         (size_t)(p - body));
      return NULL;
    }
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    *st = answer_error(out, 400, "body: must be a JSON object");
    return NULL;
  }
  return root;
}

/* ---- routes ---- */

typedef enum {
  OP_NONE = 0,
  OP_SUBMIT,
  OP_LIST,
  OP_GET,
  OP_PAUSE,
  OP_RESUME,
  OP_CANCEL,
  OP_REPLAY_DEAD,
  OP_REDO,
  OP_DEAD,
  OP_MEMBERS,
} op_t;

static const struct {
  const char *name;
  op_t op;
  bool write;
} JOB_ACTIONS[] = {
    {"pause", OP_PAUSE, true},        {"resume", OP_RESUME, true}, {"cancel", OP_CANCEL, true},
    {"replay-dead", OP_REPLAY_DEAD, true}, {"redo", OP_REDO, true}, {"dead", OP_DEAD, false},
};

bool cm_api_owns_path(const char *path) {
  return strcmp(path, "/jobs") == 0 || strncmp(path, "/jobs/", 6) == 0 ||
         strcmp(path, "/members") == 0;
}

/* path -> op and job name; *write says whether it takes POST. OP_NONE:
 * no such route. */
static op_t route_of(const char *path, char *name, size_t namelen, bool *write) {
  *write = false;
  name[0] = '\0';
  if (strcmp(path, "/members") == 0) return OP_MEMBERS;
  if (strcmp(path, "/jobs") == 0) return OP_LIST; /* POST: OP_SUBMIT, by the caller */
  if (strncmp(path, "/jobs/", 6) != 0) return OP_NONE;
  const char *p = path + 6;
  const char *slash = strchr(p, '/');
  size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);
  if (n == 0 || n >= namelen) return OP_NONE;
  memcpy(name, p, n);
  name[n] = '\0';
  if (slash == NULL) return OP_GET;
  for (size_t i = 0; i < sizeof JOB_ACTIONS / sizeof JOB_ACTIONS[0]; i++)
    if (strcmp(slash + 1, JOB_ACTIONS[i].name) == 0) {
      *write = JOB_ACTIONS[i].write;
      return JOB_ACTIONS[i].op;
    }
  return OP_NONE;
}

/* The submission: JSON and duplicate keys checked here, the fields by the
 * one submission parser (jobspec.h: unknown keys and bad values refused,
 * naming them), then the API's policy. */
static int do_submit(cm_api_t *a, const char *body, size_t len, cm_buf_t *out) {
  submission_t s;
  cm_jobspec_store_t store;
  cm_job_t *j = NULL;
  char err[512] = "";
  int st = 0, rc;
  cJSON *root = parse_body(body, len, &st, out);
  if (root == NULL) return st;
  const cJSON *http = cJSON_GetObjectItemCaseSensitive(root, "http");
  if ((st = check_object(root, "", out)) != 0 ||
      (cJSON_IsObject(http) && (st = check_object(http, "http.", out)) != 0)) {
    cJSON_Delete(root);
    return st;
  }
  cJSON_Delete(root);
  /* A blank body is {} (parse_body took it so): "job" is then required. */
  if (strspn(body != NULL ? body : "", " \t\r\n") == len) {
    body = "{}";
    len = 2;
  }
  if (cm_jobspec_parse(&store, body, len, err, sizeof err) != 0)
    return answer_error(out, 400, "%s", err);
  st = apply_policy(a, &store.spec, &s, out);
  if (st != 0) {
    cm_jobspec_free(&store);
    return st;
  }
  rc = cm_jobs_submit(a->jobs, &store.spec, &j, err, sizeof err);
  char name[CM_JOB_MAX];
  snprintf(name, sizeof name, "%s", store.spec.job);
  cm_jobspec_free(&store);
  if (rc == -EEXIST) return answer_error(out, 409, "job \"%s\" exists", name);
  if (rc == -EINVAL) return answer_error(out, 400, "%s", err[0] ? err : "invalid submission");
  if (rc != 0)
    return answer_error(out, rc == -EIO ? 503 : 500, "%s", err[0] ? err : strerror(-rc));
  cm_log_info("api: job %s submitted", name);
  if (j == NULL) j = cm_jobs_find(a->jobs, name);
  if (j == NULL) return answer_error(out, 500, "job \"%s\" vanished", name);
  return answer_job(out, 201, j);
}

static int do_list(cm_api_t *a, cm_buf_t *out) {
  size_t n = cm_jobs_count(a->jobs);
  if (cm_buf_puts(out, "{\"jobs\":[") != 0) return answer_error(out, 500, "out of memory");
  for (size_t i = 0; i < n; i++) {
    if ((i > 0 && cm_buf_puts(out, ",") != 0) || cm_job_json(cm_jobs_at(a->jobs, i), out) != 0)
      return answer_error(out, 500, "the job list does not fit in an answer");
  }
  if (cm_buf_puts(out, "]}") != 0) return answer_error(out, 500, "out of memory");
  return 200;
}

static int do_redo(cm_job_t *j, const char *body, size_t len, cm_buf_t *out) {
  static const char *const keys[] = {"version", NULL};
  const char *version = NULL;
  char err[512] = "";
  int n = 0, st = 0, rc;
  cJSON *root = parse_body(body, len, &st, out);
  if (root == NULL) return st;
  if ((st = check_keys(root, "", keys, out)) != 0 ||
      (st = get_str(root, "version", "version", &version, out)) != 0) {
    cJSON_Delete(root);
    return st;
  }
  if (version == NULL || version[0] == '\0') {
    cJSON_Delete(root);
    return answer_error(out, 400, "\"version\" is required");
  }
  rc = cm_job_redo(j, version, &n, err, sizeof err);
  if (rc == 0) cm_log_info("api: job %s: redo of version %s: %d chunks", cm_job_name(j), version, n);
  /* Nothing matched (a mistyped version, or one already redone): a 202
   * would show the previous redo's progress as if it were this one. */
  if (rc == 0 && n == 0)
    st = answer_error(out, 409, "job %s has no done chunk saved by version %s: nothing to redo",
                      cm_job_name(j), version);
  cJSON_Delete(root); /* version points into it */
  if (rc == 0 && n == 0) return st;
  if (rc == -EPERM) return answer_error(out, 409, "%s", err);
  if (rc != 0) return answer_error(out, rc == -EIO ? 503 : 500, "%s", err[0] ? err : strerror(-rc));
  return answer_job(out, 202, j);
}

static int do_state(cm_job_t *j, op_t op, cm_buf_t *out) {
  char err[512] = "";
  int n = 0, rc;
  const char *what;
  switch (op) {
  case OP_PAUSE:
    rc = cm_job_pause(j, err, sizeof err);
    what = "paused";
    break;
  case OP_RESUME:
    rc = cm_job_resume(j, err, sizeof err);
    what = "resumed";
    break;
  case OP_CANCEL:
    rc = cm_job_cancel(j, err, sizeof err);
    what = "cancelled";
    break;
  default:
    rc = cm_job_replay_dead(j, &n, err, sizeof err);
    what = "dead chunks replayed";
    break;
  }
  if (rc == -EPERM) return answer_error(out, 409, "%s", err[0] ? err : "not allowed in this state");
  if (rc != 0) return answer_error(out, rc == -EIO ? 503 : 500, "%s", err[0] ? err : strerror(-rc));
  cm_log_info("api: job %s %s", cm_job_name(j), what);
  return answer_job(out, 200, j);
}

int cm_api_handle(cm_api_t *a, const char *method, const char *path, const char *token,
                  const char *body, size_t len, cm_buf_t *out) {
  char name[CM_JOB_MAX + 1];
  bool write, post;
  op_t op;
  cm_job_t *j = NULL;

  if (body == NULL) len = 0;
  if (!cm_api_owns_path(path)) return answer_error(out, 404, "not found");
  /* With a token configured, nothing of the API is answered without it
   * (not even whether a route exists). */
  if (a->token != NULL && !token_ok(a, token)) {
    uint64_t more = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Worth knowing (a client with an old token, or probing), but never
     * a log line per request, and never what was sent. */
    if (cm_ratelimit_allow(&a->unauthorized_log,
                           (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, &more))
      cm_log_warn("api: refused %s %.200s: %s API token (%llu more refused since the last "
                  "report)",
                  method, path, token == NULL ? "no" : "wrong", (unsigned long long)more);
    return answer_error(out, 401, "missing or wrong API token (Authorization: Bearer TOKEN)");
  }
  op = route_of(path, name, sizeof name, &write);
  if (op == OP_NONE) return answer_error(out, 404, "not found: %.200s", path);
  post = strcmp(method, "POST") == 0;
  if (!post && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return answer_error(out, 405, "method %.16s not allowed", method);
  if (op == OP_LIST && post) {
    op = OP_SUBMIT;
    write = true;
  }
  if (post != write)
    return answer_error(out, 405, "%s %.200s: use %s", method, path, write ? "POST" : "GET");
  if (write && a->token == NULL) return answer_error(out, 403, "%s", WRITES_OFF);
  if (len > CM_API_MAX_BODY)
    return answer_error(out, 413, "request body larger than %u bytes", CM_API_MAX_BODY);
  if (a->jobs == NULL) return answer_error(out, 503, "the job registry is not running");

  if (name[0] != '\0') {
    j = valid_job_name(name) ? cm_jobs_find(a->jobs, name) : NULL;
    if (j == NULL) return answer_error(out, 404, "no job \"%.127s\"", name);
  }
  switch (op) {
  case OP_SUBMIT:
    return do_submit(a, body, len, out);
  case OP_LIST:
    return do_list(a, out);
  case OP_GET:
    return answer_job(out, 200, j);
  case OP_DEAD:
    if (cm_job_dead_json(j, CM_API_MAX_DEAD, out) != 0)
      return answer_error(out, 500, "out of memory");
    return 200;
  case OP_MEMBERS:
    if (cm_jobs_members_json(a->jobs, out) != 0) return answer_error(out, 500, "out of memory");
    return 200;
  case OP_REDO:
    return do_redo(j, body, len, out);
  default:
    return do_state(j, op, out);
  }
}

/* ---- HTTP adapter ---- */

int cm_api_route(cm_api_t *a, const cm_http_request_t *req, cm_buf_t *body, const char **ctype) {
  const char *token = NULL;
  const char *h = req->authorization;
  int st;
  if (!cm_api_owns_path(req->path)) return 0;
  /* "Bearer TOKEN" (the scheme in any case); any other scheme is no token. */
  if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
    token = h + 7;
    while (*token == ' ') token++;
  }
  *ctype = "application/json";
  st = cm_api_handle(a, req->method, req->path, token, req->body, req->body_len, body);
  if (cm_buf_puts(body, "\n") != 0) return 500;
  return st;
}

/* ---- NATS adapter ---- */

static const struct {
  const char *suffix;
  const char *method;
  const char *action; /* NULL: no job; "": the job itself */
  bool takes_job;
} SUBJECTS[] = {
    {"jobs.submit", "POST", NULL, false},          {"jobs.list", "GET", NULL, false},
    {"jobs.get", "GET", "", true},                 {"jobs.pause", "POST", "pause", true},
    {"jobs.resume", "POST", "resume", true},       {"jobs.cancel", "POST", "cancel", true},
    {"jobs.replay-dead", "POST", "replay-dead", true}, {"jobs.redo", "POST", "redo", true},
    {"jobs.dead", "GET", "dead", true},            {"members", "GET", NULL, false},
};

/* The request of one subject as an HTTP request to cm_api_handle: the
 * "token" and "job" fields are taken out; what is left is the body (the
 * submission, or redo's version). */
static int nats_handle(cm_api_t *a, const char *suffix, const char *data, size_t len,
                       cm_buf_t *body) {
  char path[CM_JOB_MAX + 32];
  char *token = NULL, *rest = NULL;
  const char *name = NULL;
  int idx = -1, st = 0;
  cJSON *root, *it;

  for (size_t i = 0; i < sizeof SUBJECTS / sizeof SUBJECTS[0]; i++)
    if (strcmp(suffix, SUBJECTS[i].suffix) == 0) idx = (int)i;
  if (idx < 0) return answer_error(body, 404, "unknown subject %.200s", suffix);
  if (len > CM_API_MAX_BODY)
    return answer_error(body, 413, "request larger than %u bytes", CM_API_MAX_BODY);
  root = parse_body(data, len, &st, body);
  if (root == NULL) return st;

  if ((st = check_object(root, "", body)) != 0) goto done;
  it = cJSON_GetObjectItemCaseSensitive(root, "token");
  if (it != NULL) {
    if (!cJSON_IsString(it)) {
      st = answer_error(body, 400, "\"token\" must be a string");
      goto done;
    }
    token = strdup(it->valuestring);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "token");
    if (token == NULL) {
      st = answer_error(body, 500, "out of memory");
      goto done;
    }
  }
  if (SUBJECTS[idx].takes_job) {
    it = cJSON_GetObjectItemCaseSensitive(root, "job");
    if (it == NULL || cJSON_IsNull(it)) {
      st = answer_error(body, 400, "\"job\" is required");
      goto done;
    }
    if (!cJSON_IsString(it)) {
      st = answer_error(body, 400, "\"job\" must be a string");
      goto done;
    }
    name = it->valuestring;
    if (!valid_job_name(name)) {
      st = answer_error(body, 400, "\"job\" must be 1..%d of A-Z a-z 0-9 . _ : -",
                        CM_JOB_MAX - 1);
      goto done;
    }
    snprintf(path, sizeof path, "/jobs/%s%s%s", name, SUBJECTS[idx].action[0] ? "/" : "",
             SUBJECTS[idx].action);
  } else {
    snprintf(path, sizeof path, "%s", strcmp(suffix, "members") == 0 ? "/members" : "/jobs");
  }
  /* Only submit and redo carry a body; the others take no other field. */
  if (strcmp(suffix, "jobs.submit") != 0 && strcmp(suffix, "jobs.redo") != 0) {
    for (const cJSON *c = root->child; c != NULL; c = c->next)
      if (!SUBJECTS[idx].takes_job || strcmp(c->string, "job") != 0) {
        st = answer_error(body, 400, "unknown key \"%.128s\"", c->string);
        goto done;
      }
  } else {
    /* job stays in a submission; redo's goes (it is in the path). */
    if (strcmp(suffix, "jobs.redo") == 0) {
      /* name points into the item about to go: the path holds it now. */
      name = NULL;
      cJSON_DeleteItemFromObjectCaseSensitive(root, "job");
    }
    rest = cJSON_PrintUnformatted(root);
    if (rest == NULL) {
      st = answer_error(body, 500, "out of memory");
      goto done;
    }
  }
  st = cm_api_handle(a, SUBJECTS[idx].method, path, token, rest, rest != NULL ? strlen(rest) : 0,
                     body);
done:
  if (token != NULL) {
    explicit_bzero(token, strlen(token));
    free(token);
  }
  cJSON_free(rest);
  cJSON_Delete(root);
  return st;
}

int cm_api_nats_reply(cm_api_t *a, const char *suffix, const char *data, size_t len,
                      cm_buf_t *out) {
  cm_buf_t body;
  int st;
  cm_buf_init(&body, out->max);
  if (strcmp(suffix, "status") == 0) {
    if (a->status == NULL)
      st = answer_error(&body, 404, "no status here");
    else if (a->status(a->status_ud, &body) != 0)
      st = answer_error(&body, 500, "out of memory");
    else
      st = 200;
  } else {
    st = nats_handle(a, suffix, data, len, &body);
  }
  int rc = cm_buf_printf(out, "{\"status\":%d,\"body\":", st);
  if (rc == 0) rc = cm_buf_append(out, body.data != NULL ? body.data : "{}", body.data != NULL ? body.len : 2);
  if (rc == 0) rc = cm_buf_puts(out, "}");
  cm_buf_free(&body);
  return rc;
}

/* Loop thread (natsconn's handoff). */
static void api_on_msg(void *ud, natsMsg *msg) {
  cm_api_t *a = ud;
  const char *subject = natsMsg_GetSubject(msg);
  const char *reply = natsMsg_GetReply(msg);
  size_t plen = strlen(a->prefix);
  cm_buf_t out;
  if (reply == NULL || reply[0] == '\0' || strncmp(subject, a->prefix, plen) != 0 ||
      subject[plen] != '.') {
    natsMsg_Destroy(msg);
    return;
  }
  /* Answers hold job lists and dead chunks: bounded like the HTTP ones. */
  cm_buf_init(&out, 4u << 20);
  if (cm_api_nats_reply(a, subject + plen + 1, natsMsg_GetData(msg),
                        (size_t)natsMsg_GetDataLength(msg), &out) != 0) {
    cm_buf_reset(&out);
    if (cm_buf_puts(&out, "{\"status\":500,\"body\":{\"error\":\"answer too large\"}}") != 0)
      cm_buf_reset(&out);
  }
  int rc = cm_nats_publish(a->nats, reply, NULL, out.data, out.len);
  if (rc == -EMSGSIZE) {
    static const char big[] =
        "{\"status\":500,\"body\":{\"error\":\"answer larger than the server's max_payload\"}}";
    rc = cm_nats_publish(a->nats, reply, NULL, big, sizeof big - 1);
  }
  if (rc != 0) cm_log_warn("api: cannot answer a request on %s: %s", subject, strerror(-rc));
  cm_buf_free(&out);
  natsMsg_Destroy(msg);
}

int cm_api_nats_start(cm_api_t *a, cm_nats_t *n, const char *prefix) {
  char subj[256];
  int rc = 0;
  a->nats = n;
  if ((size_t)snprintf(a->prefix, sizeof a->prefix, "%s", prefix) >= sizeof a->prefix)
    return -ENAMETOOLONG;
  static const char *const suffixes[] = {"jobs.>", "members", "status"};
  for (size_t i = 0; i < 3 && rc == 0; i++) {
    if (cm_subject(subj, sizeof subj, prefix, suffixes[i]) != 0) return -ENAMETOOLONG;
    rc = cm_nats_subscribe(n, subj, NULL, api_on_msg, a, NULL);
  }
  return rc;
}
