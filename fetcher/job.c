/* job.c - the fetcher's job registry (jobs.h, job.h).
 *
 * A job is one ledger handle (its chunks and counters), its source and the
 * read-ahead of a sequential source, its scheduling entry and its rate
 * samples. State changes are written to the ledger (jobs.state) before
 * they are answered; the dispatcher finds runnable jobs through
 * cm_job_runnable and never holds a job pointer beyond a call except the
 * registry's own (jobs are never removed while the fetcher runs). */
#include "job.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/chunk.h"
#include "cm/digest.h"
#include "cm/log.h"
#include "cm/redact.h"
#include "jobspec.h"

#define RATE_SLOTS 12       /* one sample a second: the last ~10 s */
#define RATE_EVERY_MS 1000

/* The read-ahead of a sequential source: one chunk read on the thread pool
 * while the previous one is dispatched. */
typedef struct sread_s {
  uv_work_t work;
  bool busy, ready;
  int rc;
  cm_buf_t buf, bad;
  uint32_t nrec, nbad;
  int64_t pos;
  uint64_t line;
  char cursor[2048]; /* cm_source_cursor after the read, "" for none */
  unsigned char digest[CM_SHA256_LEN]; /* of buf, the payload stored */
  char err[256];
} sread_t;

/* The reason a redone chunk dies when its source no longer gives it. */
#define CHANGED_REASON "source changed since the chunk was first read (digest mismatch)"

/* Redo of a sequential source: one redone chunk read again from where it
 * started (its ledger origin) on the thread pool, with a source of its own
 * (the read-ahead may be using the job's), and its digest compared. */
typedef struct reread_s {
  uv_work_t work;
  bool busy, ready;
  uint64_t index;
  int64_t pos;
  uint64_t line;
  bool has_cursor;
  char cursor[2048];
  unsigned char want[CM_SHA256_LEN];
  int rc; /* 0 same bytes (buf), 1 different or gone, < 0 read error (err) */
  cm_buf_t buf, bad;
  char err[256];
} reread_t;

struct cm_job_s {
  cm_jobs_t *r;
  char name[CM_JOB_MAX];
  cm_ledger_t *ledger;    /* owned handle, job open */
  cm_source_t *src;       /* owned; NULL until opened (or when unknown) */
  cm_jobspec_store_t spec; /* owned; spec.spec.source.spec NULL when unknown */
  bool have_spec;
  bool random_access;
  int64_t total_chunks;   /* -1 unknown */
  cm_job_state_t state;
  cm_sched_ent_t sched;
  sread_t rd;
  reread_t rr;
  double start_wall;
  uint64_t records_at_start;
  int64_t rate_ms[RATE_SLOTS];
  uint64_t rate_rec[RATE_SLOTS];
  int rate_n, rate_head;
};

struct cm_jobs_s {
  cm_jobs_cfg_t cfg;
  cm_source_t *given; /* cm_jobs_give_source: used by the job named given_name */
  char given_name[CM_JOB_MAX];
  cm_job_t **v;
  size_t n, cap;
};

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *cm_job_state_name(cm_job_state_t s) {
  switch (s) {
  case CM_JOB_QUEUED: return "queued";
  case CM_JOB_RUNNING: return "running";
  case CM_JOB_PAUSED: return "paused";
  case CM_JOB_COMPLETE: return "complete";
  case CM_JOB_COMPLETE_WITH_DEAD: return "complete_with_dead";
  case CM_JOB_CANCELLED: return "cancelled";
  case CM_JOB_FAILED: return "failed";
  }
  return "unknown";
}

static bool state_final(cm_job_state_t s) {
  return s == CM_JOB_COMPLETE || s == CM_JOB_COMPLETE_WITH_DEAD || s == CM_JOB_CANCELLED ||
         s == CM_JOB_FAILED;
}

/* ---- registry ---------------------------------------------------------- */

int cm_jobs_create(cm_jobs_t **out, const cm_jobs_cfg_t *cfg) {
  cm_jobs_t *r = calloc(1, sizeof(*r));
  *out = r;
  if (r == NULL) return -ENOMEM;
  r->cfg = *cfg;
  return 0;
}

void cm_jobs_bind(cm_jobs_t *r, uv_loop_t *loop, void *ud, void (*wake)(void *),
                  void (*fatal)(void *, const char *), int (*flush)(void *),
                  int (*members_json)(void *, cm_buf_t *)) {
  r->cfg.loop = loop;
  r->cfg.ud = ud;
  r->cfg.wake = wake;
  r->cfg.fatal = fatal;
  r->cfg.flush = flush;
  r->cfg.members_json = members_json;
}

/* Before the dispatcher is bound nothing reads or flushes: a fatal error
 * then is only logged (the caller of the registry sees its return code). */
static void jobs_fatal(cm_jobs_t *r, const char *what) {
  if (r->cfg.fatal != NULL)
    r->cfg.fatal(r->cfg.ud, what);
  else
    cm_log_error("%s", what);
}

static int jobs_flush(cm_jobs_t *r) {
  return r->cfg.flush != NULL ? r->cfg.flush(r->cfg.ud) : cm_ledger_flush(r->cfg.ledger);
}

static void job_free(cm_job_t *j) {
  if (j == NULL) return;
  cm_source_close(j->src);
  cm_ledger_close(j->ledger);
  cm_jobspec_free(&j->spec);
  cm_buf_free(&j->rd.buf);
  cm_buf_free(&j->rd.bad);
  cm_buf_free(&j->rr.buf);
  cm_buf_free(&j->rr.bad);
  free(j);
}

void cm_jobs_give_source(cm_jobs_t *r, const char *job, cm_source_t *src) {
  cm_source_close(r->given);
  r->given = src;
  snprintf(r->given_name, sizeof(r->given_name), "%s", job);
}

void cm_jobs_destroy(cm_jobs_t *r) {
  if (r == NULL) return;
  cm_source_close(r->given);
  for (size_t i = 0; i < r->n; i++) job_free(r->v[i]);
  free(r->v);
  free(r);
}

cm_job_t *cm_jobs_find(cm_jobs_t *r, const char *name) {
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->v[i]->name, name) == 0) return r->v[i];
  return NULL;
}
size_t cm_jobs_count(const cm_jobs_t *r) { return r->n; }
cm_job_t *cm_jobs_at(cm_jobs_t *r, size_t i) { return i < r->n ? r->v[i] : NULL; }
cm_job_state_t cm_job_state(const cm_job_t *j) { return j->state; }
const char *cm_job_name(const cm_job_t *j) { return j->name; }
bool cm_job_runnable(const cm_job_t *j) { return j->state == CM_JOB_RUNNING && j->src != NULL; }
cm_sched_ent_t *cm_job_sched(cm_job_t *j) { return &j->sched; }
cm_ledger_t *cm_job_ledger(cm_job_t *j) { return j->ledger; }
int64_t cm_job_total_chunks(const cm_job_t *j) {
  cm_job_info_t in;
  cm_ledger_info(j->ledger, &in);
  return in.source_done ? (int64_t)in.next_index : j->total_chunks;
}
uint32_t cm_job_max_deliver(const cm_job_t *j) {
  cm_job_info_t in;
  cm_ledger_info(j->ledger, &in);
  return in.max_deliver ? in.max_deliver : j->r->cfg.max_deliver;
}
void cm_job_run_start(const cm_job_t *j, double *wall, uint64_t *records) {
  *wall = j->start_wall;
  *records = j->records_at_start;
}
bool cm_jobs_reading(const cm_jobs_t *r) {
  for (size_t i = 0; i < r->n; i++)
    if (r->v[i]->rd.busy || r->v[i]->rr.busy) return true;
  return false;
}

int cm_jobs_members_json(cm_jobs_t *r, cm_buf_t *out) {
  if (r->cfg.members_json == NULL) return cm_buf_puts(out, "{\"members\":[]}");
  return r->cfg.members_json(r->cfg.ud, out);
}

static int jobs_push(cm_jobs_t *r, cm_job_t *j) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    cm_job_t **v = realloc(r->v, cap * sizeof(*v));
    if (v == NULL) return -ENOMEM;
    r->v = v;
    r->cap = cap;
  }
  r->v[r->n++] = j;
  return 0;
}

/* A job starting or resuming shares from now on (sched.h). */
static void job_join(cm_job_t *j) {
  cm_jobs_t *r = j->r;
  cm_sched_ent_t *e[64];
  size_t n = 0;
  for (size_t i = 0; i < r->n && n < 64; i++)
    if (r->v[i] != j && cm_job_runnable(r->v[i])) e[n++] = &r->v[i]->sched;
  cm_sched_join(&j->sched, e, n);
}

static void job_wake(cm_job_t *j) {
  if (j->r->cfg.wake) j->r->cfg.wake(j->r->cfg.ud);
}

/* Opens j's source and moves it to its resume point. */
static int job_open_source(cm_job_t *j, char *err, size_t errlen) {
  cm_job_info_t in;
  char e[512] = "";
  if (j->src != NULL) return 0;
  if (!j->have_spec) {
    snprintf(err, errlen,
             "job %s has no stored spec (a ledger from an older fetcher): start the fetcher "
             "with --job %s and its --source to resume it",
             j->name, j->name);
    return -EPERM;
  }
  if (cm_source_open(&j->src, &j->spec.spec.source, e, sizeof(e)) != 0) {
    char shown[1024];
    snprintf(err, errlen, "source %s: %s",
             cm_redact_urls(j->spec.spec.source.spec, shown, sizeof(shown)), e);
    j->src = NULL;
    return -EINVAL;
  }
  j->random_access = cm_source_random_access(j->src);
  j->total_chunks = cm_source_total_chunks(j->src);
  cm_ledger_info(j->ledger, &in);
  if (!j->random_access && in.source_pos > 0 &&
      cm_source_resume(j->src, in.source_pos, in.source_line, cm_ledger_cursor(j->ledger)) != 0) {
    char shown[1024];
    snprintf(err, errlen, "cannot resume source %s at byte %" PRId64,
             cm_redact_urls(j->spec.spec.source.spec, shown, sizeof(shown)), in.source_pos);
    cm_source_close(j->src);
    j->src = NULL;
    return -EIO;
  }
  return 0;
}

static cm_job_t *job_new(cm_jobs_t *r, const char *name) {
  cm_job_t *j = calloc(1, sizeof(*j));
  if (j == NULL) return NULL;
  j->r = r;
  snprintf(j->name, sizeof(j->name), "%s", name);
  j->total_chunks = -1;
  j->sched.priority = 1;
  cm_buf_init(&j->rd.buf, CM_JOB_MAX_CHUNK_BYTES);
  cm_buf_init(&j->rd.bad, CM_JOB_MAX_CHUNK_BYTES / 2);
  cm_buf_init(&j->rr.buf, CM_JOB_MAX_CHUNK_BYTES);
  cm_buf_init(&j->rr.bad, CM_JOB_MAX_CHUNK_BYTES / 2);
  if (cm_ledger_share(r->cfg.ledger, &j->ledger) != 0) {
    free(j);
    return NULL;
  }
  return j;
}

static void job_started(cm_job_t *j) {
  cm_job_info_t in;
  cm_ledger_info(j->ledger, &in);
  j->state = (cm_job_state_t)in.state;
  j->sched.priority = in.priority ? in.priority : 1;
  j->start_wall = wall_now();
  j->records_at_start = in.records_done;
}

/* Opens (or creates, with nj) the job `spec` names in a new job object. */
static int job_make(cm_jobs_t *r, const cm_jobspec_t *spec, const cm_ledger_new_job_t *nj,
                    bool open_source, cm_job_t **out, char *err, size_t errlen) {
  cm_job_t *j = job_new(r, spec->job);
  cm_source_t *probe = NULL;
  cm_job_info_t in;
  char e[512] = "";
  int rc;
  *out = NULL;
  if (j == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  if ((rc = cm_jobspec_copy(&j->spec, spec)) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  j->have_spec = true;
  /* The ledger compares the description: open the source first (or take
   * the one the command line opened: stdin can be opened only once). */
  if (r->given != NULL && strcmp(r->given_name, spec->job) == 0) {
    probe = r->given;
    r->given = NULL;
  } else if (cm_source_open(&probe, &spec->source, e, sizeof(e)) != 0) {
    char shown[1024];
    snprintf(err, errlen, "source %s: %s", cm_redact_urls(spec->source.spec, shown, sizeof(shown)),
             e);
    rc = -EINVAL;
    goto fail;
  }
  rc = cm_ledger_job_open_ex(j->ledger, spec->job, cm_source_describe(probe),
                             spec->source.chunk_size, nj, &in, err, errlen);
  if (rc != 0) {
    if (rc != -EEXIST) rc = -EIO;
    goto fail;
  }
  j->src = probe;
  probe = NULL;
  j->random_access = cm_source_random_access(j->src);
  j->total_chunks = cm_source_total_chunks(j->src);
  if (!j->random_access && in.source_pos > 0 &&
      cm_source_resume(j->src, in.source_pos, in.source_line, cm_ledger_cursor(j->ledger)) != 0) {
    char shown[1024];
    snprintf(err, errlen, "cannot resume --source %s at byte %" PRId64,
             cm_redact_urls(spec->source.spec, shown, sizeof(shown)), in.source_pos);
    rc = -EIO;
    goto fail;
  }
  if (!open_source) {
    cm_source_close(j->src);
    j->src = NULL;
  }
  job_started(j);
  if ((rc = jobs_push(r, j)) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  *out = j;
  return 0;
fail:
  cm_source_close(probe);
  job_free(j);
  return rc;
}

int cm_jobs_submit(cm_jobs_t *r, const cm_jobspec_t *spec, cm_job_t **out, char *err,
                   size_t errlen) {
  cm_buf_t json;
  cm_job_t *j = NULL;
  int rc;
  if (out) *out = NULL;
  if ((rc = cm_jobspec_validate(spec, err, errlen)) != 0) return rc;
  if (cm_jobs_find(r, spec->job) != NULL) {
    snprintf(err, errlen, "job %s exists", spec->job);
    return -EEXIST;
  }
  cm_buf_init(&json, 64 * 1024);
  if (cm_jobspec_to_json(spec, &json) != 0 || cm_buf_puts(&json, "") != 0) {
    cm_buf_free(&json);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  /* NUL-terminated for the ledger */
  if (cm_buf_append(&json, "", 1) != 0) {
    cm_buf_free(&json);
    return -ENOMEM;
  }
  cm_ledger_new_job_t nj = {.spec = json.data,
                            .priority = spec->priority,
                            .max_deliver = spec->max_deliver,
                            .state = CM_JOB_RUNNING,
                            .must_be_new = true};
  rc = job_make(r, spec, &nj, true, &j, err, errlen);
  cm_buf_free(&json);
  if (rc != 0) return rc;
  job_join(j);
  cm_log_info("job %s submitted: %s (priority %u)", j->name, cm_source_describe(j->src),
              j->sched.priority);
  if (out) *out = j;
  job_wake(j);
  return 0;
}

int cm_jobs_open(cm_jobs_t *r, const cm_jobspec_t *spec, cm_job_t **out, char *err,
                 size_t errlen) {
  cm_buf_t json;
  cm_job_t *j = cm_jobs_find(r, spec->job);
  int rc;
  *out = NULL;
  if (j != NULL) {
    /* Loaded by cm_jobs_load: the stored job is this one. */
    *out = j;
    return 0;
  }
  cm_buf_init(&json, 64 * 1024);
  if (cm_jobspec_to_json(spec, &json) != 0 || cm_buf_append(&json, "", 1) != 0) {
    cm_buf_free(&json);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  cm_ledger_new_job_t nj = {.spec = json.data,
                            .priority = spec->priority,
                            .max_deliver = spec->max_deliver,
                            .state = CM_JOB_RUNNING};
  rc = job_make(r, spec, &nj, true, &j, err, errlen);
  cm_buf_free(&json);
  if (rc != 0) return rc;
  if (j->state == CM_JOB_FAILED || j->state == CM_JOB_QUEUED) {
    /* Named on the command line again: the operator wants it run. */
    if (cm_ledger_set_state(j->ledger, CM_JOB_RUNNING, 0, NULL) == 0) j->state = CM_JOB_RUNNING;
  }
  job_join(j);
  *out = j;
  return 0;
}

typedef struct {
  cm_jobs_t *r;
  const cm_jobspec_t *cli;
  char *err;
  size_t errlen;
  int n;
  int rc;
} load_ctx_t;

static int load_one(void *ud, const cm_ledger_job_row_t *row) {
  load_ctx_t *c = ud;
  cm_jobs_t *r = c->r;
  cm_job_t *j = NULL;
  cm_jobspec_store_t st;
  char e[512] = "";
  int rc;
  cm_job_state_t state = (cm_job_state_t)row->state;
  bool redacted = false;
  if (cm_jobs_find(r, row->name) != NULL) return 0;
  if (c->cli != NULL && strcmp(c->cli->job, row->name) == 0) {
    /* The --source job: its flags are the spec (cm_jobs_open compares). */
    c->rc = cm_jobs_open(r, c->cli, &j, c->err, c->errlen);
    if (c->rc != 0) return 1;
    c->n++;
    return 0;
  }
  bool parsed =
      row->spec != NULL && cm_jobspec_parse(&st, row->spec, strlen(row->spec), e, sizeof(e)) == 0;
  if (parsed && cm_jobspec_source_redacted(&st.spec)) {
    cm_jobspec_free(&st);
    redacted = true;
  } else if (parsed) {
    rc = job_make(r, &st.spec, NULL, !state_final(state), &j, e, sizeof(e));
    cm_jobspec_free(&st);
    if (rc == 0) {
      job_join(j);
      c->n++;
      if (state == CM_JOB_RUNNING || state == CM_JOB_PAUSED)
        cm_log_info("job %s resumed (%s)", j->name, cm_job_state_name(state));
      return 0;
    }
    cm_log_error("job %s cannot be resumed: %s", row->name, e);
    if (rc == -EIO && strstr(e, "ledger") != NULL) {
      snprintf(c->err, c->errlen, "%s", e);
      c->rc = rc;
      return 1;
    }
  } else if (row->spec != NULL) {
    cm_log_error("job %s: its stored spec is not valid: %s", row->name, e);
  }
  /* Listed without a source: counters from the ledger, never run. */
  if ((j = job_new(r, row->name)) == NULL) {
    c->rc = -ENOMEM;
    return 1;
  }
  rc = cm_ledger_job_open(j->ledger, row->name, row->source, row->chunk_size, NULL, c->err,
                          c->errlen);
  if (rc != 0 || jobs_push(r, j) != 0) {
    job_free(j);
    c->rc = rc ? rc : -ENOMEM;
    return 1;
  }
  job_started(j);
  if (!state_final(j->state) && redacted)
    cm_log_warn("job %s: its source URL's credentials are not stored in the ledger: listed, not "
                "run (start the fetcher with --job %s and its --source to resume it)",
                j->name, j->name);
  else if (!state_final(j->state))
    cm_log_warn("job %s has no usable stored spec: listed, not run (start the fetcher with "
                "--job %s and its --source to resume it)",
                j->name, j->name);
  c->n++;
  return 0;
}

int cm_jobs_load(cm_jobs_t *r, const cm_jobspec_t *cli, char *err, size_t errlen) {
  load_ctx_t c = {r, cli, err, errlen, 0, 0};
  int rc = cm_ledger_each_job(r->cfg.ledger, load_one, &c);
  if (c.rc != 0) return c.rc;
  if (rc < 0) {
    snprintf(err, errlen, "%s", cm_ledger_errmsg(r->cfg.ledger));
    return rc;
  }
  return c.n;
}

/* ---- reading ----------------------------------------------------------- */

static void job_fail(cm_job_t *j, const char *why) {
  if (!j->r->cfg.serve) {
    jobs_fatal(j->r, why);
    return;
  }
  cm_log_error("job %s failed: %s", j->name, why);
  j->state = CM_JOB_FAILED;
  if (cm_ledger_set_state(j->ledger, CM_JOB_FAILED, wall_now(), why) != 0)
    cm_log_error("job %s: its failed state is not stored yet (ledger): it is retried", j->name);
}

/* Reads src's next chunk into buf as the ledger stores it: `[records]`, or
 * `[records],"dead":[bad]`. cm_source_next's return code. */
static int read_chunk(cm_source_t *src, cm_buf_t *buf, cm_buf_t *bad, uint32_t *nrec,
                      uint32_t *nbad, int64_t *pos, char *err, size_t errlen) {
  int rc;
  cm_buf_reset(buf);
  cm_buf_reset(bad);
  err[0] = '\0';
  *nrec = *nbad = 0;
  if (cm_buf_puts(buf, "[") != 0) return -E2BIG;
  rc = cm_source_next(src, buf, nrec, bad, nbad, pos, err, errlen);
  if (rc == 0 && (cm_buf_puts(buf, "]") != 0 ||
                  (*nbad > 0 && (cm_buf_puts(buf, ",\"dead\":[") != 0 ||
                                 cm_buf_append(buf, bad->data, bad->len) != 0 ||
                                 cm_buf_puts(buf, "]") != 0)))) {
    rc = -E2BIG;
    snprintf(err, errlen, "chunk larger than %zu bytes", buf->max);
  }
  return rc;
}

/* Thread pool: reads the next chunk of a sequential source into j->rd.
 * Only this function touches the source while a read is in flight. */
static void read_work(uv_work_t *w) {
  cm_job_t *j = w->data;
  sread_t *r = &j->rd;
  r->rc = read_chunk(j->src, &r->buf, &r->bad, &r->nrec, &r->nbad, &r->pos, r->err,
                     sizeof(r->err));
  if (r->rc == 0 && cm_sha256(r->buf.data, r->buf.len, r->digest) != 0) {
    r->rc = -EIO;
    snprintf(r->err, sizeof(r->err), "cannot compute the chunk's digest");
  }
  r->line = cm_source_line(j->src);
  {
    const char *c = r->rc == 0 ? cm_source_cursor(j->src) : NULL;
    /* A cursor that does not fit is dropped: the resume then walks. */
    if (c == NULL || snprintf(r->cursor, sizeof(r->cursor), "%s", c) >= (int)sizeof(r->cursor))
      r->cursor[0] = '\0';
  }
}

static void read_done(uv_work_t *w, int status) {
  cm_job_t *j = w->data;
  j->rd.busy = false;
  if (status == UV_ECANCELED) return;
  j->rd.ready = true;
  job_wake(j);
}

static void start_read(cm_job_t *j) {
  cm_job_info_t in;
  if (j->rd.busy || j->rd.ready || j->src == NULL || j->state != CM_JOB_RUNNING) return;
  cm_ledger_info(j->ledger, &in);
  if (in.source_done) return;
  j->rd.busy = true;
  j->rd.work.data = j;
  if (uv_queue_work(j->r->cfg.loop, &j->rd.work, read_work, read_done) != 0) {
    j->rd.busy = false;
    jobs_fatal(j->r, "cannot queue a source read");
  }
}

/* Thread pool: reads chunk rr->index again with a source of its own,
 * opened for this read from the job's spec (read-only while a read is in
 * flight), and compares the payload's digest with the stored one. */
static void reread_work(uv_work_t *w) {
  cm_job_t *j = w->data;
  reread_t *rr = &j->rr;
  cm_source_t *src = NULL;
  unsigned char got[CM_SHA256_LEN];
  uint32_t nrec, nbad;
  int64_t pos;
  char e[256] = "";
  rr->err[0] = '\0';
  cm_buf_reset(&rr->buf);
  if (cm_source_open(&src, &j->spec.spec.source, e, sizeof(e)) != 0) {
    rr->rc = -EIO;
    snprintf(rr->err, sizeof(rr->err), "%s", e);
    return;
  }
  /* Position 0 is the start of a freshly opened source. */
  if ((rr->pos > 0 || rr->has_cursor) &&
      cm_source_resume(src, rr->pos, rr->line, rr->has_cursor ? rr->cursor : NULL) != 0) {
    rr->rc = 1; /* that position does not exist any more */
  } else {
    rr->rc = read_chunk(src, &rr->buf, &rr->bad, &nrec, &nbad, &pos, rr->err, sizeof(rr->err));
    if (rr->rc == 0 && cm_sha256(rr->buf.data, rr->buf.len, got) != 0) {
      rr->rc = -EIO;
      snprintf(rr->err, sizeof(rr->err), "cannot compute the chunk's digest");
    } else if (rr->rc == 0 && memcmp(got, rr->want, sizeof(got)) != 0) {
      rr->rc = 1;
    }
    /* a source that ends before the chunk: it changed (rc 1) */
  }
  cm_source_close(src);
}

static void reread_done(uv_work_t *w, int status) {
  cm_job_t *j = w->data;
  j->rr.busy = false;
  if (status == UV_ECANCELED) return;
  j->rr.ready = true;
  job_wake(j);
}

/* Starts re-reading chunk index (it needs a payload) unless a re-read is
 * in flight or waiting to be taken. */
static void start_reread(cm_job_t *j, uint64_t index) {
  reread_t *rr = &j->rr;
  cm_ledger_origin_t o;
  int rc;
  if (rr->busy || rr->ready || j->state != CM_JOB_RUNNING) return;
  rc = cm_ledger_chunk_origin(j->ledger, index, &o, rr->cursor, sizeof(rr->cursor));
  if (rc != 0) {
    /* cm_job_redo refuses chunks without an origin; one can still come
     * here through replay-dead of such a chunk after a restart. */
    if (cm_ledger_kill(j->ledger, index,
                       "chunk cannot be read again: the ledger has no position for it") != 0)
      jobs_fatal(j->r, "ledger: cannot mark a chunk dead");
    job_wake(j);
    return;
  }
  rr->index = index;
  rr->pos = o.pos;
  rr->line = o.line;
  rr->has_cursor = o.cursor != NULL;
  memcpy(rr->want, o.digest, sizeof(rr->want));
  rr->busy = true;
  rr->work.data = j;
  if (uv_queue_work(j->r->cfg.loop, &rr->work, reread_work, reread_done) != 0) {
    rr->busy = false;
    jobs_fatal(j->r, "cannot queue a source read");
  }
}

/* Takes a landed re-read: the same bytes become the chunk's payload (it is
 * sent with the new redo generation); different ones (or none) make it dead
 * so nothing the source did not first give is saved silently. */
static void reread_land(cm_job_t *j) {
  reread_t *rr = &j->rr;
  int rc = 0;
  rr->ready = false;
  if (!cm_ledger_needs_payload(j->ledger, rr->index)) return; /* replayed, cancelled... */
  if (rr->rc == 0) {
    rc = cm_ledger_set_payload(j->ledger, rr->index, rr->buf.data, rr->buf.len);
  } else if (rr->rc == 1) {
    cm_log_warn("job %s chunk %" PRIu64 ": %s", j->name, rr->index, CHANGED_REASON);
    rc = cm_ledger_kill(j->ledger, rr->index, CHANGED_REASON);
  } else {
    char why[400];
    snprintf(why, sizeof(why), "chunk cannot be read again from the source: %s", rr->err);
    cm_log_warn("job %s chunk %" PRIu64 ": %s", j->name, rr->index, why);
    rc = cm_ledger_kill(j->ledger, rr->index, why);
  }
  if (rc != 0) jobs_fatal(j->r, "ledger: cannot store a re-read chunk");
}

int cm_job_next_chunk(cm_job_t *j, int64_t now, uint64_t *index) {
  cm_job_info_t info;
  if (j->state != CM_JOB_RUNNING) return 0;
  if (!j->random_access && j->rr.ready) reread_land(j);
  if (cm_ledger_next_due(j->ledger, now, index) == 1) {
    if (j->random_access) return 1;
    if (cm_ledger_needs_payload(j->ledger, *index)) {
      /* A redone chunk: read again first (wake when it lands). */
      start_reread(j, *index);
      return 0;
    }
    /* Read the next redone chunk while this one is dispatched. */
    if (cm_ledger_needs_payload(j->ledger, *index + 1)) start_reread(j, *index + 1);
    return 1;
  }
  cm_ledger_info(j->ledger, &info);
  if (info.source_done || j->src == NULL) return 0;
  if (j->random_access) {
    uint64_t idx = info.next_index;
    bool last = j->total_chunks >= 0 && (int64_t)idx + 1 >= j->total_chunks;
    if (j->total_chunks == 0) {
      if (cm_ledger_set_source_done(j->ledger) != 0)
        jobs_fatal(j->r, "ledger write failed");
      return 0;
    }
    if (cm_ledger_add_chunk(j->ledger, idx, NULL, 0, 0, 0, last) != 0) {
      jobs_fatal(j->r, "ledger: cannot add chunk");
      return 0;
    }
    *index = idx;
    return 1;
  } else {
    sread_t *r = &j->rd;
    /* Sequential sources (file, HTTP) are read on the thread pool, one
     * chunk ahead, so a slow disk or a retrying HTTP API never stalls the
     * loop (probes, acks, credit), nor another job. */
    if (r->busy) return 0;
    if (!r->ready) {
      start_read(j);
      return 0;
    }
    r->ready = false;
    if (r->rc == 1) {
      if (cm_ledger_set_source_done(j->ledger) != 0)
        jobs_fatal(j->r, "ledger write failed");
      cm_log_info("job %s: source read to the end: %" PRIu64 " chunks", j->name, info.next_index);
      return 0;
    }
    if (r->rc < 0) {
      char msg[400];
      snprintf(msg, sizeof(msg), "source error: %s", r->err);
      job_fail(j, msg);
      return 0;
    }
    if (r->nbad > 0)
      cm_log_warn("job %s chunk %" PRIu64
                  ": %u source records are not valid JSON (kept as dead letters)",
                  j->name, info.next_index, r->nbad);
    {
      /* The chunk starts where the job's resume point is now. */
      cm_ledger_origin_t o = {.pos = info.source_pos, .line = info.source_line};
      char before[sizeof(r->cursor)] = "";
      const char *c = cm_ledger_cursor(j->ledger);
      if (c != NULL && snprintf(before, sizeof(before), "%s", c) < (int)sizeof(before))
        o.cursor = before;
      memcpy(o.digest, r->digest, sizeof(o.digest));
      if (cm_ledger_set_cursor(j->ledger, r->cursor[0] ? r->cursor : NULL) != 0 ||
          cm_ledger_add_chunk_origin(j->ledger, info.next_index, r->buf.data, r->buf.len, r->pos,
                                     r->line, false, &o) != 0) {
        jobs_fatal(j->r, "ledger: cannot store chunk");
        return 0;
      }
    }
    /* A sequential source (stdin, an HTTP API) may not give the same chunk
     * twice: its payload is in the ledger before anyone sees the chunk. If
     * the write fails, the chunk waits (pending, in memory) for the ledger
     * to recover; reading pauses meanwhile. */
    if (jobs_flush(j->r) != 0) return 0;
    *index = info.next_index;
    start_read(j); /* read ahead while this one is dispatched */
    return 1;
  }
}

int cm_job_build(cm_job_t *j, uint64_t index, uint32_t attempt, const char *mapper,
                 const cm_lease_key_t *key, cm_buf_t *out) {
  cm_chunk_hdr_t h;
  int rc;
  memset(&h, 0, sizeof(h));
  snprintf(h.job, sizeof(h.job), "%s", j->name);
  h.index = index;
  h.attempt = attempt;
  h.redo = cm_ledger_chunk_redo(j->ledger, index);
  if (key != NULL) {
    snprintf(h.mapper, sizeof(h.mapper), "%s", mapper);
    cm_lease_token(key, j->name, index, attempt, h.redo, h.mapper, h.lease);
  }
  cm_buf_reset(out);
  if ((rc = cm_chunk_begin(out, &h)) != 0) return rc;
  if (j->src == NULL) return -ENOENT;
  if (j->random_access) {
    uint32_t nrec = 0;
    if ((rc = cm_source_chunk(j->src, index, out, &nrec)) != 0) return rc;
    return cm_chunk_end(out, NULL, 0);
  }
  /* Stored payload is `[records]` or `[records],"dead":[...]`: it continues
   * the `"data":[` that cm_chunk_begin wrote. */
  {
    size_t mark = out->len;
    if ((rc = cm_ledger_payload(j->ledger, index, out)) != 0) return rc;
    if (out->len == mark || out->data[mark] != '[') return -EINVAL;
    memmove(out->data + mark, out->data + mark + 1, out->len - mark - 1);
    out->len--;
    return cm_buf_puts(out, "}");
  }
}

int cm_job_settle(cm_job_t *j) {
  cm_job_info_t in;
  cm_job_state_t to;
  int rc;
  if (j->state != CM_JOB_RUNNING && j->state != CM_JOB_PAUSED) return 0;
  if (!cm_ledger_job_complete(j->ledger)) return 0;
  cm_ledger_info(j->ledger, &in);
  to = in.dead_chunks > 0 ? CM_JOB_COMPLETE_WITH_DEAD : CM_JOB_COMPLETE;
  if ((rc = cm_ledger_set_state(j->ledger, to, wall_now(), NULL)) != 0) return rc;
  j->state = to;
  return 1;
}

/* ---- progress ---------------------------------------------------------- */

void cm_jobs_sample(cm_jobs_t *r, int64_t now) {
  for (size_t i = 0; i < r->n; i++) {
    cm_job_t *j = r->v[i];
    cm_job_info_t in;
    int last = (j->rate_head + RATE_SLOTS - 1) % RATE_SLOTS;
    if (j->rate_n > 0 && now - j->rate_ms[last] < RATE_EVERY_MS) continue;
    cm_ledger_info(j->ledger, &in);
    j->rate_ms[j->rate_head] = now;
    j->rate_rec[j->rate_head] = in.records_done;
    j->rate_head = (j->rate_head + 1) % RATE_SLOTS;
    if (j->rate_n < RATE_SLOTS) j->rate_n++;
  }
}

static double job_rate(const cm_job_t *j) {
  int last, first;
  if (j->rate_n < 2) return 0;
  last = (j->rate_head + RATE_SLOTS - 1) % RATE_SLOTS;
  first = (j->rate_head + RATE_SLOTS - j->rate_n) % RATE_SLOTS;
  if (j->rate_ms[last] <= j->rate_ms[first] || j->rate_rec[last] < j->rate_rec[first]) return 0;
  return (double)(j->rate_rec[last] - j->rate_rec[first]) * 1000.0 /
         (double)(j->rate_ms[last] - j->rate_ms[first]);
}

/* ---- API side ---------------------------------------------------------- */

static int json_num_or_null(cm_buf_t *out, double v, bool null) {
  return null ? cm_buf_puts(out, "null") : cm_buf_printf(out, "%.3f", v);
}

int cm_job_json(cm_job_t *j, cm_buf_t *out) {
  cm_job_info_t in;
  char shown[1024];
  int64_t total = cm_job_total_chunks(j);
  uint64_t pending;
  double rate = job_rate(j), eta = 0;
  bool eta_null = true;
  int rc;
  cm_ledger_info(j->ledger, &in);
  pending = cm_ledger_pending_count(j->ledger);
  if (total >= 0 && (uint64_t)total > in.next_index) pending += (uint64_t)total - in.next_index;
  /* Only a running job finishes by itself: a paused or cancelled one has
   * no ETA, whatever its rate of the last seconds. */
  if (total >= 0 && rate > 0 && j->state == CM_JOB_RUNNING) {
    uint64_t left = (uint64_t)total > in.done_chunks + in.dead_chunks
                        ? (uint64_t)total - in.done_chunks - in.dead_chunks
                        : 0;
    double per = in.done_chunks > 0 ? (double)in.records_done / (double)in.done_chunks
                                    : (double)in.chunk_size;
    eta = (double)left * per / rate;
    eta_null = false;
  }
  rc = cm_buf_puts(out, "{\"job\":");
  rc |= cm_buf_append_json_str(out, j->name, strlen(j->name));
  rc |= cm_buf_printf(out, ",\"state\":\"%s\",\"priority\":%u,\"source\":",
                      cm_job_state_name(j->state), j->sched.priority);
  cm_redact_urls(in.source, shown, sizeof(shown));
  rc |= cm_buf_append_json_str(out, shown, strlen(shown));
  rc |= cm_buf_puts(out, ",\"chunks\":{\"total\":");
  rc |= total >= 0 ? cm_buf_printf(out, "%" PRId64, total) : cm_buf_puts(out, "null");
  rc |= cm_buf_printf(out,
                      ",\"done\":%" PRIu64 ",\"leased\":%zu,\"pending\":%" PRIu64
                      ",\"dead\":%" PRIu64 "},\"records_saved\":%" PRIu64
                      ",\"records_per_s\":%.1f,\"eta_s\":",
                      in.done_chunks, cm_ledger_leased_count(j->ledger), pending, in.dead_chunks,
                      in.records_done, rate);
  rc |= json_num_or_null(out, eta, eta_null);
  rc |= cm_buf_printf(out, ",\"created_at\":%.3f,\"finished_at\":", in.created_at);
  rc |= json_num_or_null(out, in.finished_at, in.finished_at <= 0);
  rc |= cm_buf_puts(out, ",\"last_error\":");
  rc |= in.last_error[0] ? cm_buf_append_json_str(out, in.last_error, strlen(in.last_error))
                         : cm_buf_puts(out, "null");
  rc |= cm_buf_puts(out, ",\"redo\":");
  if (in.redo_gen > 0 && cm_ledger_redo_version(j->ledger) != NULL) {
    const char *v = cm_ledger_redo_version(j->ledger);
    rc |= cm_buf_puts(out, "{\"version\":");
    rc |= cm_buf_append_json_str(out, v, strlen(v));
    rc |= cm_buf_printf(out, ",\"generation\":%u,\"chunks\":%" PRIu64 ",\"done\":%" PRIu64 "}",
                        in.redo_gen, in.redo_chunks, in.redo_done);
  } else {
    rc |= cm_buf_puts(out, "null");
  }
  return rc | cm_buf_puts(out, "}");
}

typedef struct {
  cm_buf_t *out;
  int rc;
  bool first;
} dead_ctx_t;

static void dead_one(void *ud, uint64_t index, uint32_t attempt, const char *reason) {
  dead_ctx_t *c = ud;
  c->rc |= cm_buf_printf(c->out, "%s{\"index\":%" PRIu64 ",\"attempts\":%u,\"reason\":",
                         c->first ? "" : ",", index, attempt);
  c->rc |= cm_buf_append_json_str(c->out, reason, strlen(reason));
  c->rc |= cm_buf_puts(c->out, "}");
  c->first = false;
}

int cm_job_dead_json(cm_job_t *j, size_t max, cm_buf_t *out) {
  dead_ctx_t c = {out, 0, true};
  int n;
  c.rc = cm_buf_puts(out, "{\"dead\":[");
  n = cm_ledger_each_dead(j->ledger, max, dead_one, &c);
  if (n < 0) return n;
  return c.rc | cm_buf_puts(out, "]}");
}

static int deny(cm_job_t *j, char *err, size_t errlen) {
  snprintf(err, errlen, "job %s is %s", j->name, cm_job_state_name(j->state));
  return -EPERM;
}

/* Stores `to` (and finished_at when final); memory follows only once stored. */
static int set_state(cm_job_t *j, cm_job_state_t to, char *err, size_t errlen) {
  cm_job_info_t in;
  int rc;
  cm_ledger_info(j->ledger, &in);
  rc = cm_ledger_set_state(j->ledger, to, state_final(to) ? wall_now() : 0,
                           to == CM_JOB_RUNNING ? NULL : in.last_error);
  if (rc != 0) {
    snprintf(err, errlen, "ledger cannot be written: %s", cm_ledger_errmsg(j->ledger));
    return -EIO;
  }
  j->state = to;
  return 0;
}

int cm_job_pause(cm_job_t *j, char *err, size_t errlen) {
  if (j->state == CM_JOB_PAUSED) return 0;
  if (j->state != CM_JOB_RUNNING && j->state != CM_JOB_QUEUED) return deny(j, err, errlen);
  return set_state(j, CM_JOB_PAUSED, err, errlen);
}

int cm_job_resume(cm_job_t *j, char *err, size_t errlen) {
  int rc;
  if (j->state == CM_JOB_RUNNING) return 0;
  if (j->state != CM_JOB_PAUSED && j->state != CM_JOB_QUEUED) return deny(j, err, errlen);
  if ((rc = job_open_source(j, err, errlen)) != 0) return rc;
  if ((rc = set_state(j, CM_JOB_RUNNING, err, errlen)) != 0) return rc;
  job_join(j);
  job_wake(j);
  return 0;
}

int cm_job_cancel(cm_job_t *j, char *err, size_t errlen) {
  if (j->state == CM_JOB_CANCELLED) return 0;
  if (state_final(j->state)) return deny(j, err, errlen);
  return set_state(j, CM_JOB_CANCELLED, err, errlen);
}

/* After a replay or redo put chunks back: a finished job runs again. */
static int reopen(cm_job_t *j, char *err, size_t errlen) {
  int rc;
  if (j->state != CM_JOB_COMPLETE && j->state != CM_JOB_COMPLETE_WITH_DEAD) return 0;
  if ((rc = set_state(j, CM_JOB_RUNNING, err, errlen)) != 0) return rc;
  job_join(j);
  return 0;
}

/* After chunks of a finished or running job became pending again (replay,
 * redo): the job runs again and the change is in the ledger before the
 * caller answers. */
static int requeued(cm_job_t *j, char *err, size_t errlen) {
  int rc;
  if ((rc = reopen(j, err, errlen)) != 0) return rc;
  if (jobs_flush(j->r) != 0) {
    snprintf(err, errlen, "ledger cannot be written: %s", cm_ledger_errmsg(j->ledger));
    return -EIO;
  }
  return 0;
}

int cm_job_replay_dead(cm_job_t *j, int *n, char *err, size_t errlen) {
  int rc;
  *n = 0;
  if (j->state == CM_JOB_CANCELLED || j->state == CM_JOB_FAILED) return deny(j, err, errlen);
  if ((rc = job_open_source(j, err, errlen)) != 0) return rc == -EIO ? rc : -EPERM;
  if ((rc = cm_ledger_replay_dead(j->ledger)) < 0) {
    snprintf(err, errlen, "ledger cannot be written: %s", cm_ledger_errmsg(j->ledger));
    return -EIO;
  }
  *n = rc;
  if (rc > 0) {
    if ((rc = requeued(j, err, errlen)) != 0) return rc;
    job_wake(j);
  }
  return 0;
}

int cm_job_redo(cm_job_t *j, const char *version, int *n, char *err, size_t errlen) {
  int rc;
  *n = 0;
  if (version == NULL || version[0] == '\0') {
    snprintf(err, errlen, "\"version\" is required");
    return -EINVAL;
  }
  if (j->state != CM_JOB_COMPLETE && j->state != CM_JOB_COMPLETE_WITH_DEAD &&
      j->state != CM_JOB_RUNNING)
    return deny(j, err, errlen);
  if ((rc = job_open_source(j, err, errlen)) != 0) return rc == -EIO ? rc : -EPERM;
  if (!j->random_access) {
    /* A done chunk's payload is deleted once it is saved: it is read again
     * from where it started, which needs a source that can be read again
     * and a stored origin for each chunk. */
    const char *spec = j->spec.spec.source.spec;
    if (spec != NULL && strcmp(spec, "file:-") == 0) {
      snprintf(err, errlen,
               "job %s reads stdin (file:-): its chunks cannot be read again, so it cannot be "
               "redone",
               j->name);
      return -EPERM;
    }
    if ((rc = cm_ledger_redo_unplaced(j->ledger, version)) < 0) {
      snprintf(err, errlen, "ledger cannot be read: %s", cm_ledger_errmsg(j->ledger));
      return -EIO;
    }
    if (rc > 0) {
      snprintf(err, errlen,
               "job %s: %d chunks saved by version %s were read by an older fetcher that did "
               "not store where they start in the source (ledger schema 2): they cannot be "
               "read again, so the redo is refused",
               j->name, rc, version);
      return -EPERM;
    }
  }
  if ((rc = cm_ledger_redo(j->ledger, version)) < 0) {
    snprintf(err, errlen, "ledger cannot be written: %s", cm_ledger_errmsg(j->ledger));
    return -EIO;
  }
  *n = rc;
  if (rc > 0) {
    if ((rc = requeued(j, err, errlen)) != 0) return rc;
    cm_log_info("job %s: redo of version %s: %d chunks are pending again", j->name, version, *n);
    job_wake(j);
  }
  return 0;
}
