/* chunkmill - the operator's command line for a running pipeline: submit,
 * list, watch, pause, resume, cancel and redo the jobs of a `fetcher
 * --serve` over NATS request/reply (docs/jobs.md), like the `nats` CLI
 * speaks to a server.
 *
 * Lifecycle only: the command line (the daemons' NATS option rows from
 * cm/config.h plus the CLI's own), one synchronous connection (client.c),
 * one command, an exit code. Output for people is render.c's; with
 * --output json every reply body is printed as it came.
 *
 * Exit codes (README "Jobs and the chunkmill CLI"):
 *   0 done; the job complete (--wait, watch NAME)
 *   1 an error the fetcher answered (403, 409, ...), or the job ended
 *     failed or cancelled (--wait, watch NAME)
 *   2 invalid command line (also a request the fetcher refused as invalid:
 *     400)
 *   3 the job ended complete_with_dead (--wait, watch NAME)
 *   4 no such job (404)
 *   5 no answer from the job service: NATS unreachable or refusing the
 *     credentials or the subject, no fetcher subscribed, or no reply within
 *     --timeout
 *   6 --wait-timeout passed before the job finished
 *   130 interrupted (Ctrl-C) while waiting; the job itself goes on */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "client.h"
#include "cm/config.h"
#include "render.h"

enum {
  EX_OK = 0,
  EX_ERROR = 1,
  EX_USAGE = 2,
  EX_DEAD = 3,
  EX_NOTFOUND = 4,
  EX_UNAVAILABLE = 5,
  EX_WAIT_TIMEOUT = 6,
  EX_INTERRUPTED = 130,
};

#define PROG "chunkmill"
#define MAX_OPTS 32
#define MAX_GIVEN 64
/* A non-TTY --wait prints a progress line at most this often (and on every
 * state change), so a Kubernetes Job's log stays readable. */
#define WAIT_LINE_MS 5000

typedef struct cli_s {
  /* global options */
  cm_common_cfg_t nats; /* only the NATS rows are used */
  int64_t timeout_ms;
  const char *token_file;
  const char *output;
  /* command options */
  const char *source, *http_options, *version;
  int64_t records, seed, chunk_size, priority, max_deliver;
  bool wait;
  int64_t interval_ms, wait_timeout_ms;
  /* the command line */
  const char *name; /* NAME, or NULL */
  const char *given[MAX_GIVEN]; /* option names that appeared as flags */
  size_t ngiven;
  bool json;
  char *token;
  cm_cli_t *c;
} cli_t;

static cli_t G;
static volatile sig_atomic_t interrupted;
/* The options-only argv for cm_config_parse, and the "--version=V" made of
 * redo's "--version V" (which cm_config_parse would take for the program's
 * --version). Globals: alive until exit, whatever path main leaves by. */
static char **fargv;
static char *version_arg;

typedef struct cmd_s cmd_t;
struct cmd_s {
  const char *name;
  const char *usage;   /* after "chunkmill [GLOBAL OPTIONS] " */
  int min_args, max_args; /* positional NAME: 0..1 */
  const char *summary; /* one line, for the command list */
  const char *details; /* paragraph(s) for its --help */
  const cm_opt_t *opts;
  size_t nopts;
  int (*run)(cli_t *c, const cmd_t *cmd);
};

/* ---- option tables ---- */

static const char *const outputs[] = {"text", "json", NULL};

/* The CLI's own global rows (after the daemons' NATS rows). */
static const cm_opt_t own_global[] = {
    {"timeout", CM_OPT_DURATION, "5s", 100, 3600000, NULL, NULL,
     "how long to wait for the fetcher's reply to each request", &G.timeout_ms},
    {"api-token-file", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
     "file holding the job API token (the fetcher's --api-token-file), sent with every request",
     &G.token_file},
    {"output", CM_OPT_STRING, "text", 0, 0, outputs, NULL,
     "text: tables for people; json: each reply body as the fetcher sent it", &G.output},
};

#define INTERVAL_ROW                                                                       \
  {"interval", CM_OPT_DURATION, "1s", 100, 60000, NULL, CM_OPT_FLAG_ONLY,                  \
   "how often to ask the fetcher for the job's progress", &G.interval_ms}
#define WAIT_TIMEOUT_ROW                                                                   \
  {"wait-timeout", CM_OPT_DURATION, "0", 0, 86400000LL * 365, NULL, CM_OPT_FLAG_ONLY,      \
   "with --wait: give up (exit 6) after this long; 0: wait for as long as it takes",       \
   &G.wait_timeout_ms}

static const cm_opt_t submit_opts[] = {
    {"source", CM_OPT_STRING, NULL, 0, 0, NULL, CM_OPT_FLAG_ONLY,
     "where the records come from (required): gen:users | file:PATH | http(s)://URL", &G.source},
    {"records", CM_OPT_INT, NULL, 0, INT64_MAX, NULL, CM_OPT_FLAG_ONLY,
     "records to generate (gen:users; the fetcher's default: 100000)", &G.records},
    {"seed", CM_OPT_INT, NULL, 0, INT64_MAX, NULL, CM_OPT_FLAG_ONLY,
     "generator seed (gen:users; the fetcher's default: 1)", &G.seed},
    {"chunk-size", CM_OPT_INT, NULL, 1, 1000000, NULL, CM_OPT_FLAG_ONLY,
     "records per chunk (the fetcher's default: 100)", &G.chunk_size},
    {"priority", CM_OPT_INT, NULL, 1, 1000, NULL, CM_OPT_FLAG_ONLY,
     "share of the mappers relative to other jobs (default 1)", &G.priority},
    {"max-deliver", CM_OPT_INT, NULL, 1, 1000, NULL, CM_OPT_FLAG_ONLY,
     "leases of one chunk before it is dead (default: the fetcher's --max-deliver)",
     &G.max_deliver},
    {"http-options", CM_OPT_STRING, NULL, 0, 0, NULL, CM_OPT_FLAG_ONLY,
     "http(s) source: a JSON object of the http settings of docs/jobs.md, e.g. "
     "'{\"next_field\":\"links.next\"}'",
     &G.http_options},
    {"wait", CM_OPT_BOOL, "false", 0, 0, NULL, CM_OPT_FLAG_ONLY,
     "wait until the job is finished, showing its progress on stderr; the exit code says how "
     "it ended",
     &G.wait},
    INTERVAL_ROW,
    WAIT_TIMEOUT_ROW,
};

static const cm_opt_t redo_opts[] = {
    {"version", CM_OPT_STRING, NULL, 0, 0, NULL, CM_OPT_FLAG_ONLY,
     "the mapper version (--version-label) whose chunks are redone (required)", &G.version},
    {"wait", CM_OPT_BOOL, "false", 0, 0, NULL, CM_OPT_FLAG_ONLY,
     "wait until the redo is finished (as submit --wait)", &G.wait},
    INTERVAL_ROW,
    WAIT_TIMEOUT_ROW,
};

static const cm_opt_t watch_opts[] = {
    {"interval", CM_OPT_DURATION, "1s", 100, 60000, NULL, CM_OPT_FLAG_ONLY,
     "how often the view is refreshed", &G.interval_ms},
};

/* ---- helpers ---- */

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, or less when interrupted. */
static void nap(int64_t ms) {
  int64_t end = now_ms() + ms;
  while (!interrupted) {
    int64_t left = end - now_ms();
    if (left <= 0) break;
    struct timespec ts = {0, (left > 50 ? 50 : left) * 1000000L};
    nanosleep(&ts, NULL);
  }
}

static bool given(const cli_t *c, const char *name) {
  for (size_t i = 0; i < c->ngiven; i++)
    if (strcmp(c->given[i], name) == 0) return true;
  return false;
}

static void print_body_json(const cJSON *body) {
  char *s = cJSON_PrintUnformatted(body);
  if (s != NULL) {
    printf("%s\n", s);
    free(s);
  }
  fflush(stdout);
}

static const char *error_text(const cJSON *body) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
  return cJSON_IsString(e) && e->valuestring != NULL ? e->valuestring : "(no reason given)";
}

/* The exit code of an API status. */
static int exit_of_status(int status) {
  if (status >= 200 && status < 300) return EX_OK;
  if (status == 404) return EX_NOTFOUND;
  if (status == 400) return EX_USAGE;
  return EX_ERROR;
}

static int exit_of_state(const char *state) {
  if (state == NULL) return EX_ERROR;
  if (strcmp(state, "complete") == 0) return EX_OK;
  if (strcmp(state, "complete_with_dead") == 0) return EX_DEAD;
  return EX_ERROR; /* failed, cancelled */
}

static const char *state_of(const cJSON *job) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(job, "state");
  return cJSON_IsString(s) ? s->valuestring : NULL;
}

/* One request. On a transport failure prints the reason and returns its
 * exit code (5, or 130 when interrupted); quiet: print nothing. Otherwise
 * 0 with *status and *body (caller frees). */
static int call(cli_t *c, const cmd_t *cmd, const char *op, cJSON *req, int *status,
                cJSON **body, bool quiet, char *err, size_t errlen) {
  int rc = cm_cli_request(c->c, op, req, status, body, err, errlen);
  cJSON_Delete(req);
  if (rc == 0) return 0;
  if (rc == -EINTR) return EX_INTERRUPTED;
  if (!quiet) fprintf(stderr, PROG " %s: %s\n", cmd->name, err);
  return EX_UNAVAILABLE;
}

/* A reply that is an error: prints it and returns its exit code. */
static int api_error(cli_t *c, const cmd_t *cmd, int status, const cJSON *body) {
  if (c->json) print_body_json(body);
  fprintf(stderr, PROG " %s%s%s: %s (status %d)\n", cmd->name, c->name ? " " : "",
          c->name ? c->name : "", error_text(body), status);
  /* 401 is the token; a 403 names its own cause (writes disabled on the
   * fetcher, a source the API refuses), which the token does not change. */
  if (status == 401)
    fprintf(stderr, PROG ": %s\n",
            c->token == NULL ? "the fetcher wants a token: give --api-token-file"
                             : "check that --api-token-file holds the fetcher's token");
  return exit_of_status(status);
}

static cJSON *job_req(const char *name) {
  cJSON *r = cJSON_CreateObject();
  if (r != NULL) cJSON_AddStringToObject(r, "job", name);
  return r;
}

/* ---- --wait ---- */

/* Polls the job until it is in a final state; progress on stderr (redrawn
 * on a TTY, a line every WAIT_LINE_MS and on each state change otherwise).
 * Keeps trying through a fetcher restart or a NATS outage. */
static int wait_job(cli_t *c, const cmd_t *cmd) {
  bool tty = isatty(STDERR_FILENO);
  int64_t start = now_ms(), last_line = 0;
  char last_state[32] = "", last_err[512] = "", line[512], err[512];

  for (;;) {
    int status = 0;
    cJSON *body = NULL;
    int rc = call(c, cmd, "jobs.get", job_req(c->name), &status, &body, true, err, sizeof err);
    if (rc == EX_INTERRUPTED || interrupted) {
      cJSON_Delete(body);
      if (tty) fputc('\n', stderr);
      fprintf(stderr, PROG " %s: interrupted; job %s goes on (chunkmill status %s)\n", cmd->name,
              c->name, c->name);
      return EX_INTERRUPTED;
    }
    if (rc != 0) {
      /* Say it once per distinct reason: a fetcher restarting is normal. */
      if (strcmp(err, last_err) != 0) {
        if (tty) fputc('\n', stderr);
        fprintf(stderr, PROG " %s: %s; still waiting\n", cmd->name, err);
        snprintf(last_err, sizeof last_err, "%s", err);
      }
    } else if (status != 200) {
      if (tty) fputc('\n', stderr);
      rc = api_error(c, cmd, status, body);
      cJSON_Delete(body);
      return rc;
    } else {
      const char *st = state_of(body);
      bool final = cm_render_state_final(st);
      last_err[0] = '\0';
      cm_render_progress_line(line, sizeof line, body, tty ? 30 : 0);
      if (tty) {
        fprintf(stderr, "\r%s\033[K", line);
        if (final) fputc('\n', stderr);
      } else if (final || strcmp(last_state, st != NULL ? st : "") != 0 ||
                 now_ms() - last_line >= WAIT_LINE_MS) {
        fprintf(stderr, "%s\n", line);
        last_line = now_ms();
      }
      fflush(stderr);
      snprintf(last_state, sizeof last_state, "%s", st != NULL ? st : "");
      if (final) {
        if (c->json)
          print_body_json(body);
        else
          cm_render_job(stdout, body);
        rc = exit_of_state(st);
        if (rc == EX_DEAD)
          fprintf(stderr, PROG " %s: job %s is complete with dead chunks (chunkmill dead %s)\n",
                  cmd->name, c->name, c->name);
        else if (rc != EX_OK)
          fprintf(stderr, PROG " %s: job %s ended %s\n", cmd->name, c->name, st);
        cJSON_Delete(body);
        return rc;
      }
    }
    cJSON_Delete(body);
    if (c->wait_timeout_ms > 0 && now_ms() - start >= c->wait_timeout_ms) {
      if (tty) fputc('\n', stderr);
      fprintf(stderr, PROG " %s: job %s is still %s after --wait-timeout; it goes on\n",
              cmd->name, c->name, last_state[0] ? last_state : "unanswered");
      return EX_WAIT_TIMEOUT;
    }
    nap(c->interval_ms);
  }
}

/* ---- commands ---- */

/* How a read command prints a 200 answer's body as text. */
typedef enum { SHOW_JOBS, SHOW_JOB, SHOW_MEMBERS, SHOW_DEAD, SHOW_PRETTY } show_t;

/* The read commands: one request, then the body as it came (--output
 * json) or rendered, or the API's error. Takes req. */
static int show(cli_t *c, const cmd_t *cmd, const char *subject, cJSON *req, show_t how) {
  char err[512];
  int status;
  cJSON *body = NULL;
  int rc = call(c, cmd, subject, req, &status, &body, false, err, sizeof err);
  if (rc != 0) return rc;
  if (status != 200)
    rc = api_error(c, cmd, status, body);
  else if (c->json)
    print_body_json(body);
  else if (how == SHOW_JOBS)
    cm_render_jobs(stdout, body);
  else if (how == SHOW_JOB)
    cm_render_job(stdout, body);
  else if (how == SHOW_MEMBERS)
    cm_render_members(stdout, body);
  else if (how == SHOW_DEAD)
    cm_render_dead(stdout, c->name, body);
  else
    cm_render_json_pretty(stdout, body);
  cJSON_Delete(body);
  return rc;
}

static int run_jobs(cli_t *c, const cmd_t *cmd) {
  return show(c, cmd, "jobs.list", cJSON_CreateObject(), SHOW_JOBS);
}

static int run_submit(cli_t *c, const cmd_t *cmd) {
  char err[512];
  int status;
  cJSON *body = NULL, *req = job_req(c->name);
  if (req == NULL) return EX_ERROR;
  cJSON_AddStringToObject(req, "source", c->source);
  if (given(c, "records")) cJSON_AddNumberToObject(req, "records", (double)c->records);
  if (given(c, "seed")) cJSON_AddNumberToObject(req, "seed", (double)c->seed);
  if (given(c, "chunk-size")) cJSON_AddNumberToObject(req, "chunk_size", (double)c->chunk_size);
  if (given(c, "priority")) cJSON_AddNumberToObject(req, "priority", (double)c->priority);
  if (given(c, "max-deliver"))
    cJSON_AddNumberToObject(req, "max_deliver", (double)c->max_deliver);
  if (c->http_options != NULL)
    cJSON_AddItemToObject(req, "http", cJSON_Parse(c->http_options)); /* checked in main */
  int rc = call(c, cmd, "jobs.submit", req, &status, &body, false, err, sizeof err);
  if (rc != 0) return rc;
  if (status != 201 && status != 200) {
    rc = api_error(c, cmd, status, body);
    cJSON_Delete(body);
    return rc;
  }
  if (!c->wait) {
    if (c->json)
      print_body_json(body);
    else
      printf("job %s submitted (%s)\n", c->name, state_of(body) ? state_of(body) : "?");
    cJSON_Delete(body);
    return EX_OK;
  }
  if (!c->json) {
    printf("job %s submitted (%s); waiting for it to finish\n", c->name,
           state_of(body) ? state_of(body) : "?");
    fflush(stdout);
  }
  cJSON_Delete(body);
  return wait_job(c, cmd);
}

static int run_status(cli_t *c, const cmd_t *cmd) {
  if (c->name != NULL) return show(c, cmd, "jobs.get", job_req(c->name), SHOW_JOB);
  return show(c, cmd, "status", cJSON_CreateObject(), SHOW_PRETTY);
}

/* pause, resume, cancel, replay-dead: P.jobs.<command> {"job":NAME}. */
static int run_action(cli_t *c, const cmd_t *cmd) {
  char op[64], err[512];
  int status;
  cJSON *body = NULL;
  snprintf(op, sizeof op, "jobs.%s", cmd->name);
  int rc = call(c, cmd, op, job_req(c->name), &status, &body, false, err, sizeof err);
  if (rc != 0) return rc;
  if (status != 200)
    rc = api_error(c, cmd, status, body);
  else if (c->json)
    print_body_json(body);
  else
    printf("job %s: %s\n", c->name, state_of(body) ? state_of(body) : "?");
  cJSON_Delete(body);
  return rc;
}

static int run_redo(cli_t *c, const cmd_t *cmd) {
  char err[512];
  int status;
  cJSON *body = NULL, *req = job_req(c->name);
  if (req == NULL) return EX_ERROR;
  cJSON_AddStringToObject(req, "version", c->version);
  int rc = call(c, cmd, "jobs.redo", req, &status, &body, false, err, sizeof err);
  if (rc != 0) return rc;
  if (status != 202 && status != 200) {
    rc = api_error(c, cmd, status, body);
    cJSON_Delete(body);
    return rc;
  }
  if (c->json && !c->wait) print_body_json(body);
  if (!c->json) {
    const cJSON *redo = cJSON_GetObjectItemCaseSensitive(body, "redo");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(redo, "chunks");
    if (cJSON_IsNumber(n))
      printf("job %s: %lld chunks saved by version %s are redone (%s)\n", c->name,
             (long long)n->valuedouble, c->version, state_of(body) ? state_of(body) : "?");
    else
      printf("job %s: redo of version %s started (%s)\n", c->name, c->version,
             state_of(body) ? state_of(body) : "?");
    fflush(stdout);
  }
  cJSON_Delete(body);
  return c->wait ? wait_job(c, cmd) : EX_OK;
}

static int run_members(cli_t *c, const cmd_t *cmd) {
  return show(c, cmd, "members", cJSON_CreateObject(), SHOW_MEMBERS);
}

static int run_dead(cli_t *c, const cmd_t *cmd) {
  return show(c, cmd, "jobs.dead", job_req(c->name), SHOW_DEAD);
}

/* Prints `text` line by line, each line cleared to its end (a TTY frame
 * drawn over the previous one). */
static void frame_lines(const char *text) {
  const char *p = text;
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    fprintf(stdout, "%.*s\033[K\n", (int)len, p);
    p += len + (nl ? 1 : 0);
  }
}

static void stamp(char *out, size_t n) {
  time_t t = time(NULL);
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL || strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(out, n, "-");
}

/* The live view: every job (or NAME) with a progress bar, rate and ETA, and
 * the members. Ends on Ctrl-C (exit 0) or when NAME is final (its exit
 * code, as --wait). Keeps refreshing through outages (the reason shown). */
static int run_watch(cli_t *c, const cmd_t *cmd) {
  bool tty = isatty(STDOUT_FILENO) && !c->json;
  char err[512], line[512], ts[32], last_err[512] = "";
  int rc = EX_OK;
  if (tty) fputs("\033[2J\033[?25l", stdout);
  while (!interrupted) {
    int st_j = 0, st_m = 0;
    cJSON *jobs = NULL, *members = NULL;
    char *frame = NULL;
    size_t framelen = 0;
    FILE *f;
    int r1 = call(c, cmd, c->name ? "jobs.get" : "jobs.list",
                  c->name ? job_req(c->name) : cJSON_CreateObject(), &st_j, &jobs, true, err,
                  sizeof err);
    int r2 = r1 != 0 ? r1
                     : call(c, cmd, "members", cJSON_CreateObject(), &st_m, &members, true, err,
                            sizeof err);
    if (r1 == EX_INTERRUPTED || r2 == EX_INTERRUPTED) break;
    if (r1 == 0 && st_j != 200) {
      if (tty) fputs("\033[?25h", stdout);
      rc = api_error(c, cmd, st_j, jobs);
      cJSON_Delete(jobs);
      cJSON_Delete(members);
      return rc;
    }
    stamp(ts, sizeof ts);
    if (c->json) {
      if (r1 == 0 && r2 == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "time", ts);
        cJSON_AddItemReferenceToObject(o, c->name ? "job" : "jobs",
                                       c->name ? jobs
                                               : cJSON_GetObjectItemCaseSensitive(jobs, "jobs"));
        cJSON_AddItemReferenceToObject(o, "members",
                                       cJSON_GetObjectItemCaseSensitive(members, "members"));
        print_body_json(o);
        cJSON_Delete(o);
      } else if (strcmp(err, last_err) != 0) {
        fprintf(stderr, PROG " watch: %s; still trying\n", err);
      }
    } else if ((f = open_memstream(&frame, &framelen)) != NULL) {
      if (tty)
        fprintf(f, "chunkmill watch  %s  prefix %s  (Ctrl-C to quit)\n\n", ts, c->nats.prefix);
      if (r1 != 0 || r2 != 0) {
        if (tty || strcmp(err, last_err) != 0) fprintf(f, "%s%s%s\n", tty ? "" : ts,
                                                       tty ? "" : " ", err);
      } else {
        const cJSON *list = c->name ? NULL : cJSON_GetObjectItemCaseSensitive(jobs, "jobs");
        const cJSON *j;
        if (c->name) {
          cm_render_progress_line(line, sizeof line, jobs, tty ? 30 : 0);
          fprintf(f, "%s%s%s\n", tty ? "" : ts, tty ? "" : " ", line);
        } else if (cJSON_GetArraySize(list) == 0) {
          fprintf(f, "%s%sno jobs\n", tty ? "" : ts, tty ? "" : " ");
        } else {
          cJSON_ArrayForEach(j, list) {
            cm_render_progress_line(line, sizeof line, j, tty ? 30 : 0);
            fprintf(f, "%s%s%s\n", tty ? "" : ts, tty ? "" : " ", line);
          }
        }
        if (tty) {
          fputc('\n', f);
          cm_render_members(f, members);
        } else {
          cm_render_members_line(line, sizeof line, members);
          fprintf(f, "%s %s\n", ts, line);
        }
      }
      fclose(f);
      if (tty) {
        fputs("\033[H", stdout);
        frame_lines(frame != NULL ? frame : "");
        fputs("\033[J", stdout);
      } else {
        fputs(frame != NULL ? frame : "", stdout);
      }
      fflush(stdout);
      free(frame);
    }
    snprintf(last_err, sizeof last_err, "%s", (r1 != 0 || r2 != 0) ? err : "");
    if (c->name != NULL && r1 == 0 && cm_render_state_final(state_of(jobs))) {
      rc = exit_of_state(state_of(jobs));
      cJSON_Delete(jobs);
      cJSON_Delete(members);
      if (tty) fputs("\033[?25h", stdout);
      return rc;
    }
    cJSON_Delete(jobs);
    cJSON_Delete(members);
    /* nats.c ignores SIGPIPE: a reader that went away (watch | head) shows
     * as a write error, which ends the view. */
    if (ferror(stdout)) {
      if (tty) fputs("\033[?25h", stdout);
      return EX_ERROR;
    }
    nap(c->interval_ms);
  }
  if (tty) fputs("\033[?25h\n", stdout);
  fflush(stdout);
  return EX_OK;
}

#define OPTS(a) a, sizeof a / sizeof a[0]

static const cmd_t commands[] = {
    {"jobs", "jobs", 0, 0, "list the jobs with their state and progress",
     "Lists every job of the fetcher (P.jobs.list), oldest first.", NULL, 0, run_jobs},
    {"submit", "submit NAME --source SOURCE [OPTIONS]", 1, 1,
     "submit a job (--wait: until it is finished)",
     "Submits job NAME (P.jobs.submit). Only the options given are sent; the fetcher\n"
     "applies its defaults to the rest. With --wait, shows its progress on stderr\n"
     "until it is finished and exits 0 (complete), 3 (complete_with_dead) or 1\n"
     "(failed, cancelled); a fetcher restart or a NATS outage meanwhile is waited\n"
     "out.",
     OPTS(submit_opts), run_submit},
    {"status", "status [NAME]", 0, 1, "one job in detail; without NAME the fetcher's /status",
     "With NAME: the job's state, chunks, records, rate, ETA, errors and redo\n"
     "(P.jobs.get). Without: the fetcher's /status document (P.status).",
     NULL, 0, run_status},
    {"pause", "pause NAME", 1, 1, "stop leasing the job's chunks (leases in flight finish)",
     "Pauses job NAME (P.jobs.pause): no new leases; leases in flight finish.", NULL, 0,
     run_action},
    {"resume", "resume NAME", 1, 1, "resume a paused job",
     "Resumes job NAME (P.jobs.resume).", NULL, 0, run_action},
    {"cancel", "cancel NAME", 1, 1, "cancel a job for good (its progress stays in the ledger)",
     "Cancels job NAME (P.jobs.cancel): no new leases; final.", NULL, 0, run_action},
    {"replay-dead", "replay-dead NAME", 1, 1, "put the job's dead chunks back to pending",
     "Puts the dead chunks of job NAME back to pending (P.jobs.replay-dead).", NULL, 0,
     run_action},
    {"redo", "redo NAME --version V [--wait]", 1, 1,
     "redo every chunk of a job saved by mapper version V (--version V)",
     "Puts every chunk of job NAME saved by mapper version V (its --version-label)\n"
     "back to pending (P.jobs.redo); the savers replace those chunks' rows. With\n"
     "--wait, waits as submit --wait does.",
     OPTS(redo_opts), run_redo},
    {"members", "members", 0, 0, "the fetcher, mappers and savers heard, with their versions",
     "Lists the members the fetcher knows (P.members): id, role, version, chunks in\n"
     "flight, time since the last heartbeat.",
     NULL, 0, run_members},
    {"dead", "dead NAME", 1, 1, "the job's dead chunks with their reasons",
     "Lists the dead chunks of job NAME (P.jobs.dead, at most 1000) with the\n"
     "attempts made and the last reason.",
     NULL, 0, run_dead},
    {"watch", "watch [NAME] [--interval D]", 0, 1, "live view of the jobs and members",
     "A live view: one progress bar per job (or only NAME) with rate and ETA, and the\n"
     "members. On a terminal it is redrawn in place; otherwise it prints plain\n"
     "timestamped lines (--output json: one JSON object per refresh). Ends on Ctrl-C\n"
     "(exit 0) or, with NAME, when the job is finished (exit codes as submit --wait).",
     OPTS(watch_opts), run_watch},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* ---- the command line ---- */

static size_t global_opts(cm_opt_t *out) {
  int n = cm_config_nats_opts(&G.nats, out, MAX_OPTS);
  if (n < 0) return 0;
  memcpy(out + n, own_global, sizeof own_global);
  return (size_t)n + sizeof own_global / sizeof own_global[0];
}

static const cmd_t *find_cmd(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

static const cm_opt_t *find_row(const cm_opt_t *rows, size_t n, const char *name, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(rows[i].name) == len && strncmp(rows[i].name, name, len) == 0) return &rows[i];
  return NULL;
}

static void usage_exit_codes(FILE *out) {
  fputs("\nExit codes:\n"
        "  0  done; with --wait (or watch NAME): the job is complete\n"
        "  1  an error answered by the fetcher (401, 403, 409, ...), or the job ended\n"
        "     failed or cancelled\n"
        "  2  invalid command line (or a request the fetcher refused as invalid: 400)\n"
        "  3  the job ended complete_with_dead\n"
        "  4  no such job\n"
        "  5  no answer: NATS unreachable or refusing the user or the subject, no fetcher\n"
        "     with --serve on this --prefix, or no reply within --timeout\n"
        "  6  --wait-timeout passed before the job finished\n"
        "  130 interrupted while waiting (the job goes on)\n",
        out);
}

static void usage_main(FILE *out, const cm_opt_t *g, size_t ng) {
  fprintf(out,
          PROG " - submit, watch and steer the jobs of a running chunkmill pipeline (a "
               "fetcher with --serve) over NATS\n\n"
               "Usage: " PROG " [GLOBAL OPTIONS] COMMAND [NAME] [OPTIONS]\n\nCommands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++) {
    char head[64];
    snprintf(head, sizeof head, "%s%s", commands[i].name,
             commands[i].max_args == 0 ? "" : commands[i].min_args ? " NAME" : " [NAME]");
    fprintf(out, "  %-18s %s\n", head, commands[i].summary);
  }
  fprintf(out, "\nGlobal options (anywhere on the line; flags win over the environment):\n");
  cm_config_print_options(g, ng, out);
  fprintf(out, "  -h, --help   show this help (" PROG " COMMAND --help: that command's)\n"
               "  --version    print the program's name and version and exit\n");
  usage_exit_codes(out);
}

static void usage_cmd(FILE *out, const cmd_t *cmd, const cm_opt_t *g, size_t ng) {
  fprintf(out, PROG " %s - %s\n\nUsage: " PROG " [GLOBAL OPTIONS] %s\n\n%s\n", cmd->name,
          cmd->summary, cmd->usage, cmd->details);
  if (cmd->nopts > 0) {
    fprintf(out, "\nOptions:\n");
    cm_config_print_options(cmd->opts, cmd->nopts, out);
  }
  fprintf(out, "\nGlobal options (flags win over the environment):\n");
  cm_config_print_options(g, ng, out);
  fprintf(out, "  -h, --help   show this help\n");
  usage_exit_codes(out);
}

/* Reads the API token: the file's content without trailing whitespace. */
static int read_token(cli_t *c) {
  FILE *f = fopen(c->token_file, "r");
  char buf[4096];
  size_t n;
  if (f == NULL) {
    fprintf(stderr, PROG ": cannot read --api-token-file %s: %s\n", c->token_file,
            strerror(errno));
    return -1;
  }
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                   buf[n - 1] == '\t'))
    buf[--n] = '\0';
  if (n == 0 || strlen(buf) != n) {
    fprintf(stderr, PROG ": --api-token-file %s is %s\n", c->token_file,
            n == 0 ? "empty" : "not text");
    explicit_bzero(buf, sizeof buf);
    return -1;
  }
  c->token = strdup(buf);
  explicit_bzero(buf, sizeof buf);
  return c->token != NULL ? 0 : -1;
}

int main(int argc, char **argv) {
  cli_t *c = &G;
  cm_opt_t g[MAX_OPTS], all[MAX_OPTS];
  size_t ng = global_opts(g), nall;
  const cmd_t *cmd = NULL;
  int fargc = 1, npos = 0, rc;
  bool help = false, version = false;
  const char *pos[2] = {NULL, NULL};
  char err[1024] = "";

  fargv = calloc((size_t)argc + 1, sizeof *fargv);
  if (fargv == NULL || ng == 0) return EX_ERROR;
  fargv[0] = argv[0];
  /* Pass 1: find the command and NAME among the options (global options
   * may come anywhere), so that cm_config_parse sees options only. An
   * option's value is the next argument unless it is a bare BOOL flag or
   * written --name=value. */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      help = true;
      continue;
    }
    if (strcmp(a, "--version") == 0 &&
        (cmd == NULL || find_row(cmd->opts, cmd->nopts, "version", 7) == NULL)) {
      version = true;
      continue;
    }
    if (strcmp(a, "--version") == 0) {
      /* redo's --version V: handed on as --version=V. */
      if (i + 1 >= argc) {
        fprintf(stderr, PROG " %s: missing value for --version\n", cmd->name);
        return EX_USAGE;
      }
      free(version_arg);
      if (asprintf(&version_arg, "--version=%s", argv[++i]) < 0) return EX_ERROR;
      if (c->ngiven < MAX_GIVEN) c->given[c->ngiven++] = "version";
      fargv[fargc++] = version_arg;
      continue;
    }
    if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
      const char *name = a + 2, *eq = strchr(name, '=');
      size_t len = eq ? (size_t)(eq - name) : strlen(name);
      const cm_opt_t *o = find_row(g, ng, name, len);
      if (o == NULL && cmd != NULL) o = find_row(cmd->opts, cmd->nopts, name, len);
      if (o == NULL) {
        const cmd_t *owner = NULL;
        for (size_t k = 0; k < NCOMMANDS && owner == NULL && cmd == NULL; k++)
          if (find_row(commands[k].opts, commands[k].nopts, name, len) != NULL)
            owner = &commands[k];
        if (owner != NULL)
          fprintf(stderr, PROG ": --%.*s is an option of a command (e.g. %s): put it after the "
                          "command (see " PROG " %s --help)\n",
                  (int)len, name, owner->name, owner->name);
        else
          fprintf(stderr, PROG "%s%s: unknown option --%.*s (see " PROG "%s%s --help)\n",
                  cmd ? " " : "", cmd ? cmd->name : "", (int)len, name, cmd ? " " : "",
                  cmd ? cmd->name : "");
        return EX_USAGE;
      }
      if (c->ngiven < MAX_GIVEN) c->given[c->ngiven++] = o->name;
      fargv[fargc++] = argv[i];
      if (eq == NULL && o->type != CM_OPT_BOOL) {
        if (i + 1 >= argc) {
          fprintf(stderr, PROG ": missing value for --%s\n", o->name);
          return EX_USAGE;
        }
        fargv[fargc++] = argv[++i];
      }
      continue;
    }
    if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, PROG ": unknown option %s (options are --name VALUE; see " PROG
                      " --help)\n",
              a);
      return EX_USAGE;
    }
    if (cmd == NULL) {
      cmd = find_cmd(a);
      if (cmd == NULL) {
        fprintf(stderr, PROG ": unknown command \"%s\" (see " PROG " --help)\n", a);
        return EX_USAGE;
      }
      continue;
    }
    if (npos >= cmd->max_args) {
      fprintf(stderr, PROG " %s: unexpected argument \"%s\" (usage: " PROG " %s)\n", cmd->name, a,
              cmd->usage);
      return EX_USAGE;
    }
    pos[npos++] = a;
  }
  if (version) {
    printf(PROG " %s\n", CM_VERSION);
    return EX_OK;
  }
  if (help) {
    if (cmd != NULL)
      usage_cmd(stdout, cmd, g, ng);
    else
      usage_main(stdout, g, ng);
    return EX_OK;
  }
  if (cmd == NULL) {
    fprintf(stderr, PROG ": no command given (see " PROG " --help)\n");
    return EX_USAGE;
  }
  if (npos < cmd->min_args) {
    fprintf(stderr, PROG " %s: missing the job name (usage: " PROG " %s)\n", cmd->name,
            cmd->usage);
    return EX_USAGE;
  }
  c->name = pos[0];

  /* Pass 2: values, from the flags and (global options only) the
   * environment, checked by the daemons' own parser. */
  memcpy(all, g, ng * sizeof *g);
  if (cmd->nopts > 0) memcpy(all + ng, cmd->opts, cmd->nopts * sizeof *cmd->opts);
  nall = ng + cmd->nopts;
  char prog[64];
  snprintf(prog, sizeof prog, PROG " %s", cmd->name);
  rc = cm_config_parse(all, nall, fargc, fargv, prog, cmd->summary, stdout, stderr);
  if (rc != 0) return EX_USAGE;
  c->json = strcmp(c->output, "json") == 0;
  if (cmd->run == run_submit && c->source == NULL) {
    fprintf(stderr, PROG " submit: --source is required (gen:users, file:PATH or http(s)://URL)\n");
    return EX_USAGE;
  }
  if (cmd->run == run_submit && c->http_options != NULL) {
    cJSON *h = cJSON_Parse(c->http_options);
    bool ok = cJSON_IsObject(h);
    cJSON_Delete(h);
    if (!ok) {
      fprintf(stderr, PROG " submit: invalid value for --http-options: not a JSON object\n");
      return EX_USAGE;
    }
  }
  if (cmd->run == run_redo && (c->version == NULL || c->version[0] == '\0')) {
    fprintf(stderr, PROG " redo: --version is required (the mapper --version-label to redo)\n");
    return EX_USAGE;
  }
  if (c->token_file != NULL && read_token(c) != 0) return EX_USAGE;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  cm_cli_opts_t co = {&c->nats, c->timeout_ms, c->token, c->wait || cmd->run == run_watch,
                      &interrupted};
  rc = cm_cli_open(&c->c, &co, err, sizeof err);
  if (rc == -EINVAL) {
    fprintf(stderr, PROG ": %s\n", err);
    rc = EX_USAGE;
  } else if (rc != 0) {
    fprintf(stderr, PROG " %s: %s\n", cmd->name, err);
    rc = EX_UNAVAILABLE;
  } else {
    rc = cmd->run(c, cmd);
  }
  cm_cli_close(c->c);
  if (c->token != NULL) {
    explicit_bzero(c->token, strlen(c->token));
    free(c->token);
  }
  nats_CloseAndWait(2000);
  return rc;
}
