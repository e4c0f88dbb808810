/* fetcher - splits a source into chunks, leases them to mappers, and keeps
 * the durable ledger of which chunks are done.
 *
 * Lifecycle only: configuration, ledger and the job registry (job.c: the
 * --source job, and with --serve every job of the ledger), then the
 * dispatcher (fetch.c) on the shared daemon frame. Exit codes: 0 done (or drained),
 * 1 fatal error, 2 invalid command line, 3 job completed with dead chunks
 * (without --allow-dead). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/chunk.h"
#include "cm/daemon.h"
#include "cm/lease.h"
#include "cm/log.h"
#include "cm/redact.h"
#include "api.h"
#include "app9.h"
#include "fetch.h"
#include "job.h"
#include "ledger.h"
#include "source.h"
#include "web.h"

typedef struct fetcher_s {
  cm_common_cfg_t cfg;
  cm_fetch_cfg_t fc;
  const char *source;
  const char *ledger_path;
  const char *lease_key_file;
  cm_lease_key_t *lease_key;
  int64_t records, seed, chunk_size, print_chunk;
  cm_source_opts_t http; /* the http_* settings of an http(s) source */
  bool replay_dead;
  const char *redo_version;
  bool serve;
  const char *api_token_file, *api_sources, *api_file_root;
  cm_api_t *api; /* the job API (api.h) */
  cm_fetch_t *fetch;
  cm_jobs_t *jobs;
  cm_ledger_t *ledger;
  cm_daemon_t *d;
} fetcher_t;

static fetcher_t F;

static void h_on_nats(void *ud, cm_nats_event_t ev) {
  fetcher_t *f = ud;
  if (f->fetch != NULL) cm_fetch_on_nats(f->fetch, ev);
}

/* Paths the daemon does not serve itself: the job API (api.c: /jobs...,
 * /members), the web dashboard's files (web.c) for GET and HEAD; anything
 * else is 404. */
static int h_route(void *ud, const cm_http_request_t *req, cm_buf_t *body, const char **ctype) {
  fetcher_t *f = ud;
  int st = f->api != NULL ? cm_api_route(f->api, req, body, ctype) : 0;
  if (st != 0) return st;
  if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
    return cm_web_serve(req->path, body, ctype);
  return 0;
}

/* P.status over NATS: the /status object. */
static int h_api_status(void *ud, cm_buf_t *out) {
  fetcher_t *f = ud;
  return f->d != NULL ? cm_daemon_status_json(f->d, out) : -EAGAIN;
}
static int h_status(void *ud, cm_buf_t *out) {
  fetcher_t *f = ud;
  return f->fetch != NULL ? cm_fetch_status(f->fetch, out) : 0;
}
static bool h_ready(void *ud, char *why, size_t whylen) {
  fetcher_t *f = ud;
  return f->fetch == NULL || cm_fetch_ready(f->fetch, why, whylen);
}
static void h_shutdown(void *ud, bool forced) {
  fetcher_t *f = ud;
  if (f->fetch != NULL)
    cm_fetch_shutdown(f->fetch, forced);
  else
    cm_daemon_exit(f->d, 0);
}
static void h_close(void *ud) {
  fetcher_t *f = ud;
  if (f->fetch != NULL) cm_fetch_close(f->fetch);
}
static void h_heartbeat(void *ud, Chunkmill__Heartbeat *hb) {
  fetcher_t *f = ud;
  if (f->fetch != NULL) cm_fetch_heartbeat(f->fetch, hb);
}

/* --print-chunk N: write chunk N of the source, as a mapper would receive
 * it (attempt 1), to stdout. For checking outputs against inputs. */
static int print_chunk(cm_source_t *src, uint64_t index, const char *job) {
  cm_buf_t b;
  cm_chunk_hdr_t h;
  char err[256] = "";
  int rc = 0;
  memset(&h, 0, sizeof(h));
  snprintf(h.job, sizeof(h.job), "%s", job);
  h.index = index;
  h.attempt = 1;
  cm_buf_init(&b, 1u << 30);
  rc = cm_chunk_begin(&b, &h);
  if (rc == 0 && cm_source_random_access(src)) {
    uint32_t n;
    rc = cm_source_chunk(src, index, &b, &n);
  } else if (rc == 0) {
    cm_buf_t bad;
    uint32_t n, nb;
    int64_t pos;
    cm_buf_init(&bad, 1u << 30);
    for (uint64_t i = 0; i <= index && rc == 0; i++) {
      size_t mark = b.len;
      cm_buf_reset(&bad);
      rc = cm_source_next(src, &b, &n, &bad, &nb, &pos, err, sizeof(err));
      if (rc == 1) rc = -ERANGE;
      if (rc == 0 && i < index) b.len = mark;
    }
    cm_buf_free(&bad);
  }
  if (rc == 0) rc = cm_chunk_end(&b, NULL, 0);
  if (rc == 0) {
    fwrite(b.data, 1, b.len, stdout);
    fputc('\n', stdout);
  } else {
    fprintf(stderr, "fetcher: cannot produce chunk %" PRIu64 ": %s\n", index,
            err[0] ? err : strerror(-rc));
  }
  cm_buf_free(&b);
  return rc == 0 ? 0 : 1;
}

/* The native dispatcher over the job registry. Returns the exit code. */
static int run_native(fetcher_t *f, const cm_source_opts_t *so, cm_daemon_hooks_t hooks) {
  cm_jobspec_t spec;
  cm_job_t *primary = NULL;
  cm_job_info_t info;
  cm_daemon_t *d = NULL;
  char err[1024] = "";
  int rc;
  memset(&spec, 0, sizeof(spec));
  snprintf(spec.job, sizeof(spec.job), "%s", f->fc.job);
  spec.source = *so;
  spec.priority = 1;
  if (f->serve) {
    int n = cm_jobs_load(f->jobs, f->source != NULL ? &spec : NULL, err, sizeof(err));
    if (n < 0) {
      fprintf(stderr, "fetcher: %s\n", err);
      return 1;
    }
    cm_log_info("--serve: %d jobs in ledger %s", n, f->ledger_path);
  }
  if (f->source != NULL) {
    if (cm_jobs_open(f->jobs, &spec, &primary, err, sizeof(err)) != 0) {
      fprintf(stderr, "fetcher: %s\n", err);
      return 1;
    }
    if (cm_job_state(primary) == CM_JOB_CANCELLED && f->fc.once) {
      fprintf(stderr, "fetcher: job %s is cancelled: it cannot run to completion\n", f->fc.job);
      return 1;
    }
  }
  if (f->replay_dead && primary != NULL) {
    int n = 0;
    if (cm_job_replay_dead(primary, &n, err, sizeof(err)) != 0) {
      fprintf(stderr, "fetcher: --replay-dead failed: %s\n", err);
      return 1;
    }
    cm_log_info("--replay-dead: %d dead chunks are pending again", n);
    printf("replayed %d dead chunks of job \"%s\"\n", n, f->fc.job);
  }
  if (f->redo_version != NULL && primary != NULL) {
    int n = 0;
    if (cm_job_redo(primary, f->redo_version, &n, err, sizeof(err)) != 0) {
      fprintf(stderr, "fetcher: --redo failed: %s\n", err);
      return 1;
    }
    printf("redo of version %s: %d chunks of job \"%s\" are pending again\n", f->redo_version,
           n, f->fc.job);
  }
  if (primary != NULL) {
    cm_ledger_info(cm_job_ledger(primary), &info);
    if (info.next_index > 0)
      cm_log_info("resuming job %s from ledger %s: %" PRIu64 " chunks done, %" PRIu64
                  " created, %zu pending",
                  f->fc.job, f->ledger_path, info.done_chunks, info.next_index,
                  cm_ledger_pending_count(cm_job_ledger(primary)));
    else
      cm_log_info("starting job %s: %s", f->fc.job, info.source);
  }
  if (cm_lease_key_option(&f->lease_key, f->lease_key_file, err, sizeof(err)) != 0) {
    fprintf(stderr, "fetcher: invalid value for --lease-key-file: %s\n", err);
    cm_log_error("%s", err);
    return 2;
  }
  f->fc.lease_key = f->lease_key;
  if (cm_daemon_create(&d, "fetcher", &f->cfg, &hooks, f) != 0) return 1;
  f->d = d;
  cm_api_set_jobs(f->api, f->jobs);
  if (cm_api_nats_start(f->api, cm_daemon_nats(d), f->cfg.prefix) != 0) {
    cm_log_error("cannot subscribe to the job API's subjects");
    cm_daemon_exit(d, 1);
  }
  if (cm_fetch_create(&f->fetch, d, &f->fc, f->ledger, f->jobs, primary) != 0) {
    cm_log_error("cannot start the dispatcher");
    cm_daemon_exit(d, 1);
  }
  rc = cm_daemon_run(d);
  cm_daemon_destroy(d);
  cm_fetch_destroy(f->fetch);
  f->fetch = NULL;
  /* Never report success with state the ledger does not hold. */
  if (rc == 0 && cm_ledger_unflushed(f->ledger) > 0 && cm_ledger_flush(f->ledger) != 0) {
    fprintf(stderr, "fetcher: ledger cannot be written: %s\n", cm_ledger_errmsg(f->ledger));
    rc = 1;
  }
  return rc;
}

int main(int argc, char **argv) {
  fetcher_t *f = &F;
  cm_opt_t own[] = {
      {"source", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "where records come from: gen:users | file:PATH (NDJSON or a JSON array; - for stdin) | "
       "http(s)://URL (paged JSON API); default gen:users, with --serve none", &f->source},
      {"serve", CM_OPT_BOOL, "false", 0, 0, NULL, NULL,
       "job service: resume every unfinished job of --ledger in its state (docs/jobs.md); "
       "with --source that job is submitted or resumed too", &f->serve},
      {"records", CM_OPT_INT, "100000", 0, INT64_MAX, NULL, NULL,
       "records to generate (gen:users)", &f->records},
      {"seed", CM_OPT_INT, "1", 0, INT64_MAX, NULL, NULL, "generator seed (gen:users)", &f->seed},
      {"chunk-size", CM_OPT_INT, "100", 1, 1000000, NULL, NULL, "records per chunk",
       &f->chunk_size},
      {"ledger", CM_OPT_STRING, "chunkmill-ledger.db", 0, 0, NULL, NULL,
       "SQLite ledger file (job progress; survives restarts)", &f->ledger_path},
      {"job", CM_OPT_STRING, "default", 0, 0, NULL, NULL,
       "job name (a ledger can hold several jobs)", &f->fc.job},
      {"once", CM_OPT_BOOL, "false", 0, 0, NULL, NULL,
       "exit when the job is complete (default: stay up and ready)", &f->fc.once},
      {"allow-dead", CM_OPT_BOOL, "false", 0, 0, NULL, NULL,
       "with --once, exit 0 even if some chunks are dead (else 3)", &f->fc.allow_dead},
      {"ack-wait", CM_OPT_DURATION, "30s", 100, 86400000, NULL, NULL,
       "lease time before an unacknowledged chunk is sent again", &f->fc.ack_wait_ms},
      {"max-inflight", CM_OPT_INT, "256", 1, 65536, NULL, NULL,
       "chunks leased at once, all mappers together", &f->fc.max_inflight},
      {"max-deliver", CM_OPT_INT, "5", 1, 1000, NULL, NULL,
       "leases of one chunk before it is declared dead", &f->fc.max_deliver},
      {"progress", CM_OPT_DURATION, "2s", 0, 3600000, NULL, NULL,
       "interval of progress lines on stdout (0: none)", &f->fc.progress_ms},
      {"replay-dead", CM_OPT_BOOL, "false", 0, 0, NULL, NULL,
       "put the job's dead chunks back to pending before starting", &f->replay_dead},
      {"redo", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "redo by version: put the job's chunks saved by mapper version V (--version-label) "
       "back to pending before starting; the savers replace their rows (not file:-)",
       &f->redo_version},
      {"print-chunk", CM_OPT_INT, "-1", -1, INT64_MAX, NULL, NULL,
       "print chunk N of the source as JSON and exit (no NATS needed)", &f->print_chunk},
      {"http-page-param", CM_OPT_STRING, "page", 0, 0, NULL, NULL,
       "http: query parameter carrying the page number (\"\": none, same URL every time)",
       &f->http.http_page_param},
      {"http-page-start", CM_OPT_INT, "1", 0, INT64_MAX, NULL, NULL, "http: first page number",
       &f->http.http_page_start},
      {"http-page-step", CM_OPT_INT, "1", 1, 1000000000, NULL, NULL,
       "http: page number increment (e.g. 100 for an offset parameter)", &f->http.http_page_step},
      {"http-next-field", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "http: follow the URL in this body field (dotted path, e.g. links.next) instead of page "
       "numbers", &f->http.http_next_field},
      {"http-records-path", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "http: dotted path of the records array in the body, e.g. data (default: the body is the "
       "array)", &f->http.http_records_path},
      {"http-pages", CM_OPT_INT, "0", 0, INT64_MAX, NULL, NULL,
       "http: read exactly this many pages at most (0: until an empty page)", &f->http.http_pages},
      {"http-header", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "http: request header \"Name: value\"; value @FILE or $ENV reads it from a file or the "
       "environment; @FILE alone: one header per line. Never logged", &f->http.http_header},
      {"http-timeout", CM_OPT_DURATION, "30s", 100, 3600000, NULL, NULL,
       "http: time limit of one request", &f->http.http_timeout_ms},
      {"http-follow-redirects", CM_OPT_BOOL, "false", 0, 0, NULL, NULL,
       "http: follow redirects to another origin (host, port or https -> http) too; the "
       "--http-header headers are never sent there", &f->http.http_follow_redirects},
      {"lease-key-file", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "file holding the key shared with every saver: chunks carry lease tokens, only acks "
       "a saver signed count (unset: leases are not authenticated)", &f->lease_key_file},
      {"http-retries", CM_OPT_INT, "5", 0, 100, NULL, NULL,
       "http: retries of a page after a 5xx, 429 or network error (backoff 0.25 s doubling)",
       &f->http.http_retries},
      {"api-token-file", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "job API token (docs/jobs.md): every /jobs and /members request, HTTP (Authorization: "
       "Bearer TOKEN) or NATS (\"token\"), needs it; unset: reads open, writes refused (403)",
       &f->api_token_file},
      {"api-sources", CM_OPT_STRING, "gen,http", 0, 0, NULL, NULL,
       "source kinds a job submitted through the API may use: comma list of gen, file, http "
       "(http covers https)", &f->api_sources},
      {"api-file-root", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "directory that file: sources (and an http.header @FILE) of submitted jobs must "
       "resolve under (unset: file: refused through the API)", &f->api_file_root},
  };
  cm_daemon_hooks_t hooks = {.on_nats = h_on_nats,
                             .ready = h_ready,
                             .status = h_status,
                             .shutdown = h_shutdown,
                             .close = h_close,
                             .heartbeat = h_heartbeat,
                             .route = h_route};
  cm_source_opts_t so;
  cm_source_t *src = NULL;
  cm_job_info_t info;
  char err[768] = "";
  int probe = 0, rc;

  rc = cm_daemon_main_config("fetcher", "splits a source into chunks and leases them to mappers",
                             &f->cfg, own, sizeof(own) / sizeof(own[0]), argc, argv, &probe);
  if (rc == 1) return 0;
  if (rc == 2) return probe;
  if (rc != 0) return 2;
  if (strlen(f->fc.job) == 0 || strlen(f->fc.job) >= CM_JOB_MAX ||
      strspn(f->fc.job, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
          strlen(f->fc.job)) {
    /* The name travels in every chunk, ack and results row: keep it to
     * characters no layer rewrites (found by fuzzing: non-UTF-8 bytes were
     * replaced on the way and the acks no longer matched the job). */
    fprintf(stderr,
            "fetcher: invalid value \"%.*s\" for --job: use 1..%d of A-Z a-z 0-9 . _ : -\n",
            CM_JOB_MAX, f->fc.job, CM_JOB_MAX - 1);
    return 2;
  }

  if (f->serve && f->fc.once) {
    fprintf(stderr, "fetcher: --once and --serve exclude each other (--once runs the one "
                    "--source job)\n");
    return 2;
  }
  if (f->serve && strcmp(f->cfg.protocol, "app9") == 0) {
    fprintf(stderr, "fetcher: --serve needs the native protocol (not --protocol app9)\n");
    return 2;
  }
  if (f->redo_version != NULL &&
      (f->redo_version[0] == '\0' || strcmp(f->cfg.protocol, "app9") == 0 ||
       (f->serve && f->source == NULL))) {
    fprintf(stderr, "fetcher: invalid value for --redo: a version label, for the --source job "
                    "(native protocol)\n");
    return 2;
  }
  if (f->source == NULL && !f->serve) f->source = "gen:users";
  {
    /* The token file is read now: a bad one stops the fetcher at start. */
    cm_api_cfg_t ac = {.token_file = f->api_token_file,
                       .sources = f->api_sources,
                       .file_root = f->api_file_root,
                       .status = h_api_status,
                       .status_ud = f};
    if (cm_api_create(&f->api, &ac, NULL, err, sizeof(err)) != 0) {
      fprintf(stderr, "fetcher: %s\n", err);
      return 2;
    }
  }

  so = f->http;
  so.spec = f->source;
  so.records = (uint64_t)f->records;
  so.seed = (uint64_t)f->seed;
  so.chunk_size = (uint32_t)f->chunk_size;
  if (f->source != NULL && cm_source_open(&src, &so, err, sizeof(err)) != 0) {
    char shown[1024];
    fprintf(stderr, "fetcher: invalid value \"%s\" for --source: %s\n",
            cm_redact_urls(f->source, shown, sizeof(shown)), err);
    return 2;
  }
  if (f->print_chunk >= 0) {
    if (src == NULL) {
      fprintf(stderr, "fetcher: --print-chunk needs --source\n");
      return 2;
    }
    rc = print_chunk(src, (uint64_t)f->print_chunk, f->fc.job);
    cm_source_close(src);
    return rc;
  }
  if (cm_ledger_open(&f->ledger, f->ledger_path, err, sizeof(err)) != 0) {
    fprintf(stderr, "fetcher: cannot open --ledger: %s\n", err); /* err names the file */
    cm_source_close(src);
    return 1;
  }
  if (strcmp(f->cfg.protocol, "app9") != 0) {
    /* The native dispatcher: jobs in the registry, each with its own
     * ledger handle and source (the one opened above only checked the
     * flags). */
    if (cm_jobs_create(&f->jobs, &(cm_jobs_cfg_t){.ledger = f->ledger,
                                                  .max_deliver = (uint32_t)f->fc.max_deliver,
                                                  .serve = f->serve}) != 0) {
      fprintf(stderr, "fetcher: out of memory\n");
      rc = 1;
      goto done;
    }
    if (src != NULL) cm_jobs_give_source(f->jobs, f->fc.job, src);
    src = NULL;
    rc = run_native(f, &so, hooks);
    goto done;
  }
  if (cm_ledger_job_open(f->ledger, f->fc.job, cm_source_describe(src), (uint32_t)f->chunk_size,
                         &info, err, sizeof(err)) != 0) {
    fprintf(stderr, "fetcher: %s\n", err);
    rc = 1;
    goto done;
  }
  if (f->replay_dead) {
    int n = cm_ledger_replay_dead(f->ledger);
    if (n < 0 || cm_ledger_flush(f->ledger) != 0) {
      fprintf(stderr, "fetcher: --replay-dead failed\n");
      rc = 1;
      goto done;
    }
    cm_log_info("--replay-dead: %d dead chunks are pending again", n);
    printf("replayed %d dead chunks of job \"%s\"\n", n, f->fc.job);
    cm_ledger_info(f->ledger, &info);
  }
  if (!cm_source_random_access(src) && info.source_pos > 0 &&
      cm_source_seek(src, info.source_pos, info.source_line) != 0) {
    char shown[1024];
    fprintf(stderr, "fetcher: cannot resume --source %s at byte %" PRId64 "\n",
            cm_redact_urls(f->source, shown, sizeof(shown)),
            info.source_pos);
    rc = 1;
    goto done;
  }
  if (info.next_index > 0)
    cm_log_info("resuming job %s from ledger %s: %" PRIu64 " chunks done, %" PRIu64
                " created, %zu pending",
                f->fc.job, f->ledger_path, info.done_chunks, info.next_index,
                cm_ledger_pending_count(f->ledger));
  else
    cm_log_info("starting job %s: %s", f->fc.job, cm_source_describe(src));

  { /* --protocol app9: the original example's protocol */
    /* Its chunks have no header to carry a lease token. */
    cm_log_warn("--protocol app9: leases are not authenticated (the app9 wire format has no "
                "room for a lease token)");
    rc = cm_fetch_app9_run(&f->cfg, &f->fc, f->ledger, src);
  }
done:
  cm_api_destroy(f->api);
  cm_lease_key_free(f->lease_key);
  cm_jobs_destroy(f->jobs);
  cm_ledger_close(f->ledger);
  cm_source_close(src);
  return rc;
}
