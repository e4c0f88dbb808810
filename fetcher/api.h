/* api.h - the fetcher's job API (docs/jobs.md "HTTP API" and "NATS
 * request/reply"): one request handler, cm_api_handle, behind two adapters,
 * HTTP (the daemon's route hook) and NATS request/reply (P.jobs.>,
 * P.members, P.status).
 *
 * The handler authorizes (Bearer token from --api-token-file, compared in
 * constant time), parses submissions with the one submission parser
 * (jobspec.h: unknown keys refused, each bad field named; a key given twice
 * is refused here), applies the API's policy (--api-sources, file: and
 * http.header "@FILE" under --api-file-root, no stdin) and calls the job
 * registry (jobs.h). Every answer is JSON; errors are {"error":"..."}.
 *
 * Loop thread only (the NATS adapter gets its messages there through
 * natsconn's handoff). The token is never logged or echoed. */
#ifndef CM_API_H
#define CM_API_H

#include <stddef.h>

#include "cm/buf.h"
#include "cm/http.h"
#include "cm/natsconn.h"
#include "jobs.h"

/* Request bodies larger than this are refused (413), over HTTP and NATS. */
#define CM_API_MAX_BODY CM_HTTP_MAX_REQUEST_BODY
/* At most this many dead chunks in GET /jobs/NAME/dead. */
#define CM_API_MAX_DEAD 1000

typedef struct cm_api_s cm_api_t;

typedef struct cm_api_cfg_s {
  /* --api-token-file: the file holding the token (trailing whitespace
   * removed; 16..4096 printable ASCII bytes, no blanks). NULL or "": every
   * write is refused (403) and reads need no token. */
  const char *token_file;
  /* --api-sources: comma list of gen, file, http ("http" covers https).
   * NULL: "gen,http". */
  const char *sources;
  /* --api-file-root: file: sources (and http.header @FILE) must resolve
   * under this directory. NULL or "": file: refused. */
  const char *file_root;
  /* What P.status answers (the daemon's /status object): appends a JSON
   * object to out. May be NULL (P.status then answers 404). */
  int (*status)(void *ud, cm_buf_t *out);
  void *status_ud;
} cm_api_cfg_t;

/* Reads the token file and checks the options. 0, or -EINVAL/-errno with
 * err naming the option and the file (never the token's bytes). `jobs` may
 * be NULL until cm_api_set_jobs (requests then answer 503). */
int cm_api_create(cm_api_t **out, const cm_api_cfg_t *cfg, cm_jobs_t *jobs, char *err,
                  size_t errlen) __attribute__((warn_unused_result));
void cm_api_set_jobs(cm_api_t *a, cm_jobs_t *jobs);
/* Wipes the token and frees. NULL-safe. After the NATS connection closed. */
void cm_api_destroy(cm_api_t *a);

/* Whether path is one of the API's (/jobs, /jobs/..., /members). */
bool cm_api_owns_path(const char *path);

/* The one request handler. method "GET" (or "HEAD") | "POST"; path as in
 * the HTTP API; token: the Bearer token given, or NULL; body/len: the
 * request body (may be NULL with len 0). Appends the JSON answer to out
 * and returns its HTTP status. Paths outside the API: 404. */
int cm_api_handle(cm_api_t *a, const char *method, const char *path, const char *token,
                  const char *body, size_t len, cm_buf_t *out);

/* HTTP adapter, for the daemon's route hook (cm_daemon_hooks_t.route):
 * 0 for a path that is not the API's, else the status with the JSON body
 * in `body` and *ctype "application/json". */
int cm_api_route(cm_api_t *a, const cm_http_request_t *req, cm_buf_t *body, const char **ctype);

/* NATS adapter, without NATS: `suffix` is the subject after "P." ("jobs.get",
 * "members", "status"), data/len the request. Appends the reply
 * {"status":N,"body":{...}} to out. */
int cm_api_nats_reply(cm_api_t *a, const char *suffix, const char *data, size_t len,
                      cm_buf_t *out) __attribute__((warn_unused_result));
/* Subscribes P.jobs.>, P.members and P.status on n (P = prefix, no queue
 * group) and answers each request on its reply subject (requests without
 * one are dropped). 0 or a negative errno. */
int cm_api_nats_start(cm_api_t *a, cm_nats_t *n, const char *prefix)
    __attribute__((warn_unused_result));

#endif
