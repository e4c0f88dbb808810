/* exec.c - exec:COMMAND: long-lived children fed NDJSON (see exec.h).
 *
 * Each worker has its own uv_loop_t, run only by the thread that has the
 * worker checked out, with UV_RUN_ONCE until the chunk is answered, the
 * child dies or the timer fires. Writing the whole chunk and reading the
 * answers happen on the same loop, so a child that answers before it has
 * read everything never deadlocks on a full pipe. */
#define _GNU_SOURCE /* environ */
#include "cm/err.h"
#include "exec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "cm/log.h"

extern char **environ;

#define CM__EXEC_MAX_ARGS 256
#define CM__EXEC_MAX_ENV 64
#define CM__EXEC_MAX_WORKERS 512
#define CM__EXEC_ERRLINE_MAX 4096
#define CM__EXEC_OUT_MAX ((size_t)256 * 1024 * 1024)

typedef struct cm__xw_s cm__xw_t;

struct cm_exec_s {
  char **argv; /* NULL-terminated, owned */
  char **envp; /* NULL-terminated, owned */
  char *cwd;
  int64_t timeout_ms;
  cm_metrics_t *metrics;
  cm_counter_t *m_progress, *m_restarts;
  pthread_mutex_t mu;
  cm__xw_t *w[CM__EXEC_MAX_WORKERS];
  bool busy[CM__EXEC_MAX_WORKERS];
  int nw;
  unsigned long spawned;
};

struct cm__xw_s {
  cm_exec_t *e;
  uv_loop_t loop;
  uv_timer_t timer;
  uv_process_t proc;
  uv_pipe_t in, out, errp;
  uv_write_t wreq;
  int open;     /* handles of the child not yet closed */
  bool running; /* a child was spawned and its handles are open */
  bool exited;  /* its exit callback ran */
  int64_t status;
  int term_signal;
  int pid;
  /* per chunk */
  cm_buf_t *lines;
  size_t *off, *ln;
  size_t want, got, scan; /* lines wanted/received; bytes scanned for '\n' */
  bool out_eof, write_done, timed_out, overflow;
  int io_err;
  cm_buf_t ebuf; /* the stderr line being assembled */
};


static void free_vec(char **v) {
  if (v == NULL) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* ---- command line ------------------------------------------------------ */

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int push_arg(char **argv, int *n, const char *s, size_t len) {
  if (*n >= CM__EXEC_MAX_ARGS) return -E2BIG;
  argv[*n] = strndup(s, len);
  if (argv[*n] == NULL) return -ENOMEM;
  (*n)++;
  return 0;
}

static int parse_json_argv(const char *cmd, char **argv, int *n, char *err, size_t errlen) {
  cJSON *a = cJSON_Parse(cmd), *it;
  int rc = 0;
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0) {
    cm_set_err(err, errlen, "exec: a JSON command must be a non-empty array of strings");
    rc = -EINVAL;
    goto done;
  }
  cJSON_ArrayForEach(it, a) {
    if (!cJSON_IsString(it) || it->valuestring == NULL) {
      cm_set_err(err, errlen, "exec: a JSON command must be a non-empty array of strings");
      rc = -EINVAL;
      goto done;
    }
    if ((rc = push_arg(argv, n, it->valuestring, strlen(it->valuestring))) < 0) {
      cm_set_err(err, errlen, "exec: too many arguments (at most %d)", CM__EXEC_MAX_ARGS);
      goto done;
    }
  }
done:
  cJSON_Delete(a);
  return rc;
}

static int parse_words(const char *cmd, char **argv, int *n, char *err, size_t errlen) {
  const char *p = cmd;
  int rc = 0;
  for (;;) {
    while (*p && is_blank(*p)) p++;
    if (*p == '\0') break;
    if (*n == 2 && strcmp(argv[1], "-c") == 0) {
      /* `sh -c SCRIPT`: the rest is one argument, unquoted once. */
      size_t len = strlen(p);
      while (len > 0 && is_blank(p[len - 1])) len--;
      if (len >= 2 && (p[0] == '\'' || p[0] == '"') && p[len - 1] == p[0]) {
        p++;
        len -= 2;
      }
      rc = push_arg(argv, n, p, len);
      break;
    }
    const char *s = p;
    while (*p && !is_blank(*p)) p++;
    if ((rc = push_arg(argv, n, s, (size_t)(p - s))) < 0) break;
  }
  if (rc == -E2BIG) cm_set_err(err, errlen, "exec: too many arguments (at most %d)", CM__EXEC_MAX_ARGS);
  else if (rc < 0) cm_set_err(err, errlen, "exec: out of memory");
  else if (*n == 0) {
    cm_set_err(err, errlen, "exec: no command given (exec:COMMAND)");
    rc = -EINVAL;
  }
  return rc;
}

/* The program must be runnable now: a clear error at start beats a NAK
 * loop. */
static int check_program(const char *prog, char *err, size_t errlen) {
  struct stat sb;
  if (strchr(prog, '/') != NULL) {
    if (stat(prog, &sb) != 0 || !S_ISREG(sb.st_mode) || access(prog, X_OK) != 0) {
      cm_set_err(err, errlen, "exec: %s: %s", prog,
              errno ? strerror(errno) : "not an executable file");
      return -ENOENT;
    }
    return 0;
  }
  const char *path = getenv("PATH");
  char cand[4096];
  if (path == NULL || *path == '\0') path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *c = strchr(path, ':');
    size_t dl = c ? (size_t)(c - path) : strlen(path);
    int k = snprintf(cand, sizeof cand, "%.*s%s%s", (int)dl, path, dl ? "/" : "./", prog);
    if (k > 0 && (size_t)k < sizeof cand && stat(cand, &sb) == 0 && S_ISREG(sb.st_mode) &&
        access(cand, X_OK) == 0)
      return 0;
    path += dl + (c ? 1 : 0);
  }
  cm_set_err(err, errlen, "exec: %s: command not found in PATH", prog);
  return -ENOENT;
}

/* The child's environment: ours, then CHUNKMILL_TRANSFORM_ARG, then the
 * --exec-env pairs ("K=V,K2=V2"), later entries replacing earlier ones. */
static int build_env(cm_exec_t *e, const cm_transform_opts_t *o, char *err, size_t errlen) {
  size_t n = 0, cap;
  char *extra[CM__EXEC_MAX_ENV + 1];
  size_t nextra = 0;
  int rc = 0;

  memset(extra, 0, sizeof extra);
  if (o && o->arg) {
    size_t l = strlen("CHUNKMILL_TRANSFORM_ARG=") + strlen(o->arg) + 1;
    if ((extra[nextra] = malloc(l)) == NULL) goto nomem;
    (void)snprintf(extra[nextra++], l, "CHUNKMILL_TRANSFORM_ARG=%s", o->arg);
  }
  if (o && o->exec_env && *o->exec_env) {
    const char *p = o->exec_env;
    while (*p) {
      const char *c = strchr(p, ',');
      size_t l = c ? (size_t)(c - p) : strlen(p);
      const char *eq = memchr(p, '=', l);
      if (l > 0) {
        if (eq == NULL || eq == p) {
          cm_set_err(err, errlen, "--exec-env: \"%.*s\" is not KEY=VALUE", (int)(l > 64 ? 64 : l), p);
          rc = -EINVAL;
          goto fail;
        }
        if (nextra == CM__EXEC_MAX_ENV) {
          cm_set_err(err, errlen, "--exec-env: at most %d variables", CM__EXEC_MAX_ENV - 1);
          rc = -E2BIG;
          goto fail;
        }
        if ((extra[nextra++] = strndup(p, l)) == NULL) goto nomem;
      }
      p += l + (c ? 1 : 0);
    }
  }
  for (char **ev = environ; ev && *ev; ev++) n++;
  cap = n + nextra + 1;
  if ((e->envp = calloc(cap, sizeof(char *))) == NULL) goto nomem;
  n = 0;
  for (char **ev = environ; ev && *ev; ev++) {
    const char *eq = strchr(*ev, '=');
    size_t kl = eq ? (size_t)(eq - *ev) + 1 : strlen(*ev);
    bool replaced = false;
    for (size_t k = 0; k < nextra && !replaced; k++) replaced = strncmp(extra[k], *ev, kl) == 0;
    if (replaced) continue;
    if ((e->envp[n++] = strdup(*ev)) == NULL) goto nomem;
  }
  for (size_t k = 0; k < nextra; k++) {
    e->envp[n++] = extra[k];
    extra[k] = NULL;
  }
  return 0;
nomem:
  cm_set_err(err, errlen, "exec: out of memory");
  rc = -ENOMEM;
fail:
  for (size_t k = 0; k < nextra; k++) free(extra[k]);
  return rc;
}

int cm_exec_create(cm_exec_t **out, const char *cmd, const cm_transform_opts_t *o, char *err,
                   size_t errlen) {
  cm_exec_t *e = NULL;
  int rc = -ENOMEM, n = 0;

  *out = NULL;
  if ((e = calloc(1, sizeof *e)) == NULL) goto nomem;
  if (pthread_mutex_init(&e->mu, NULL) != 0) {
    free(e);
    e = NULL;
    goto nomem;
  }
  e->timeout_ms = o && o->exec_timeout_ms > 0 ? o->exec_timeout_ms : 30000;
  if ((e->argv = calloc(CM__EXEC_MAX_ARGS + 1, sizeof(char *))) == NULL) goto nomem;
  while (*cmd && is_blank(*cmd)) cmd++;
  rc = *cmd == '[' ? parse_json_argv(cmd, e->argv, &n, err, errlen)
                   : parse_words(cmd, e->argv, &n, err, errlen);
  if (rc < 0) goto fail;
  if ((rc = check_program(e->argv[0], err, errlen)) < 0) goto fail;
  if (o && o->exec_cwd && *o->exec_cwd) {
    struct stat sb;
    if (stat(o->exec_cwd, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      cm_set_err(err, errlen, "--exec-cwd %s: not a directory", o->exec_cwd);
      rc = -ENOTDIR;
      goto fail;
    }
    if ((e->cwd = strdup(o->exec_cwd)) == NULL) goto nomem;
  }
  if ((rc = build_env(e, o, err, errlen)) < 0) goto fail;
  /* A child that dies while we write to it must give EPIPE, not kill us
   * (the daemons ignore SIGPIPE already; unit tests may not). */
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) cm_log_warn("exec: cannot ignore SIGPIPE");
  *out = e;
  return 0;
nomem:
  cm_set_err(err, errlen, "exec: out of memory");
  rc = -ENOMEM;
fail:
  cm_exec_destroy(e);
  return rc;
}

void cm_exec_set_metrics(cm_exec_t *e, cm_metrics_t *m) {
  e->metrics = m;
  if (m == NULL) return;
  e->m_progress = cm_metrics_counter(m, "chunkmill_exec_progress_total",
                                     "progress:N lines written by exec children.", NULL);
  e->m_restarts = cm_metrics_counter(m, "chunkmill_exec_restarts_total",
                                     "exec children killed or lost and replaced.", NULL);
}

unsigned long cm_exec_spawned(const cm_exec_t *e) {
  pthread_mutex_lock((pthread_mutex_t *)&e->mu);
  unsigned long n = e->spawned;
  pthread_mutex_unlock((pthread_mutex_t *)&e->mu);
  return n;
}

/* ---- a worker's child -------------------------------------------------- */

static void on_close(uv_handle_t *h) {
  cm__xw_t *w = h->data;
  w->open--;
}

static void close_child(cm__xw_t *w) {
  uv_handle_t *hs[] = {(uv_handle_t *)&w->proc, (uv_handle_t *)&w->in, (uv_handle_t *)&w->out,
                       (uv_handle_t *)&w->errp};
  if (!w->running) return;
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], on_close);
  while (w->open > 0) (void)uv_run(&w->loop, UV_RUN_ONCE);
  w->running = false;
}

/* Kills the child's process group (it is a session leader: DETACHED), so a
 * shell's own children die with it, and waits for its exit callback. */
static void kill_child(cm__xw_t *w) {
  if (!w->running) return;
  if (!w->exited) {
    if (w->pid > 0) (void)kill(-w->pid, SIGKILL);
    (void)uv_process_kill(&w->proc, SIGKILL);
    while (!w->exited) (void)uv_run(&w->loop, UV_RUN_ONCE);
  }
  close_child(w);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  cm__xw_t *w = p->data;
  w->exited = true;
  w->status = status;
  w->term_signal = sig;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  cm__xw_t *w = h->data;
  if ((uv_handle_t *)&w->out == h) {
    if (cm_buf_reserve(w->lines, 65536) == 0) {
      b->base = w->lines->data + w->lines->len;
      b->len = w->lines->cap - w->lines->len - 1;
      return;
    }
    w->overflow = true;
    b->base = NULL;
    b->len = 0;
    return;
  }
  static __thread char ebuf[8192];
  b->base = ebuf;
  b->len = sizeof ebuf;
}

static void on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  cm__xw_t *w = s->data;
  if (n == UV_ENOBUFS) {
    w->overflow = true;
    (void)uv_read_stop(s);
    return;
  }
  if (n < 0) {
    if (n == UV_EOF) w->out_eof = true;
    else w->io_err = (int)n;
    (void)uv_read_stop(s);
    return;
  }
  w->lines->len += (size_t)n;
  w->lines->data[w->lines->len] = '\0';
  /* Record where each answer line starts and ends. */
  while (w->scan < w->lines->len) {
    char *nl = memchr(w->lines->data + w->scan, '\n', w->lines->len - w->scan);
    if (nl == NULL) {
      w->scan = w->lines->len;
      break;
    }
    size_t end = (size_t)(nl - w->lines->data);
    if (w->got < w->want) {
      size_t start = w->got == 0 ? 0 : w->off[w->got - 1] + w->ln[w->got - 1] + 1;
      size_t l = end - start;
      if (l > 0 && w->lines->data[start + l - 1] == '\r') l--;
      w->off[w->got] = start;
      w->ln[w->got] = l;
    }
    w->got++; /* counts extra lines too: a protocol error */
    w->scan = end + 1;
  }
}

static void handle_err_line(cm__xw_t *w, const char *s, size_t n) {
  cm_exec_t *e = w->e;
  unsigned long long v;
  char *end;
  while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == ' ')) n--;
  if (n > 9 && memcmp(s, "progress:", 9) == 0) {
    char num[32];
    size_t k = n - 9 < sizeof num - 1 ? n - 9 : sizeof num - 1;
    memcpy(num, s + 9, k);
    num[k] = '\0';
    v = strtoull(num, &end, 10);
    if (*end == '\0' && num[0] >= '0' && num[0] <= '9') {
      cm_counter_inc(e->m_progress);
      cm_log_debug("exec[%d]: progress %llu", w->pid, v);
      return;
    }
  } else if (n > 8 && memcmp(s, "counter:", 8) == 0) {
    const char *name = s + 8, *comma = memchr(name, ',', n - 8);
    size_t nl = comma ? (size_t)(comma - name) : 0;
    bool ok = comma != NULL && nl > 0 && nl <= 64;
    for (size_t i = 0; ok && i < nl; i++) {
      char c = name[i];
      ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.' || c == ':';
    }
    if (ok) {
      char num[32], labels[96];
      size_t k = n - 8 - nl - 1;
      if (k == 0 || k >= sizeof num) ok = false;
      if (ok) {
        memcpy(num, comma + 1, k);
        num[k] = '\0';
        v = strtoull(num, &end, 10);
        ok = *end == '\0' && num[0] >= '0' && num[0] <= '9';
      }
      if (ok) {
        (void)snprintf(labels, sizeof labels, "name=\"%.*s\"", (int)nl, name);
        if (e->metrics)
          cm_counter_add(cm_metrics_counter(e->metrics, "chunkmill_exec_counter_total",
                                            "Counters reported by exec children (counter:NAME,N).",
                                            labels),
                         v);
        return;
      }
    }
  }
  cm_log_info("exec[%d] stderr: %.*s", w->pid, (int)n, s);
}

static void on_stderr(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  cm__xw_t *w = s->data;
  if (n < 0) {
    if (w->ebuf.len > 0) handle_err_line(w, w->ebuf.data, w->ebuf.len);
    cm_buf_reset(&w->ebuf);
    (void)uv_read_stop(s);
    return;
  }
  for (ssize_t i = 0; i < n;) {
    const char *p = b->base + i;
    const char *nl = memchr(p, '\n', (size_t)(n - i));
    size_t take = nl ? (size_t)(nl - p) : (size_t)(n - i);
    size_t room = CM__EXEC_ERRLINE_MAX - w->ebuf.len;
    if (cm_buf_append(&w->ebuf, p, take < room ? take : room) < 0) cm_buf_reset(&w->ebuf);
    i += (ssize_t)take + (nl ? 1 : 0);
    if (nl) {
      handle_err_line(w, w->ebuf.data ? w->ebuf.data : "", w->ebuf.len);
      cm_buf_reset(&w->ebuf);
    }
  }
}

static void on_write(uv_write_t *req, int status) {
  cm__xw_t *w = req->data;
  w->write_done = true;
  if (status < 0 && status != UV_EPIPE && status != UV_ECANCELED) w->io_err = status;
}

static void on_timer(uv_timer_t *t) {
  cm__xw_t *w = t->data;
  w->timed_out = true;
}

static int spawn_child(cm__xw_t *w, char *err, size_t errlen) {
  cm_exec_t *e = w->e;
  uv_process_options_t po;
  uv_stdio_container_t io[3];
  int rc;

  w->exited = false;
  w->status = 0;
  w->term_signal = 0;
  (void)uv_pipe_init(&w->loop, &w->in, 0);
  (void)uv_pipe_init(&w->loop, &w->out, 0);
  (void)uv_pipe_init(&w->loop, &w->errp, 0);
  w->in.data = w->out.data = w->errp.data = w;
  w->proc.data = w;
  memset(&po, 0, sizeof po);
  io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  io[0].data.stream = (uv_stream_t *)&w->in;
  io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[1].data.stream = (uv_stream_t *)&w->out;
  io[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[2].data.stream = (uv_stream_t *)&w->errp;
  po.exit_cb = on_exit_cb;
  po.file = e->argv[0];
  po.args = e->argv;
  po.env = e->envp;
  po.cwd = e->cwd;
  po.stdio = io;
  po.stdio_count = 3;
  po.flags = UV_PROCESS_DETACHED; /* own process group: killed as a whole */
  w->open = 4;
  w->running = true;
  rc = uv_spawn(&w->loop, &w->proc, &po);
  if (rc < 0) {
    w->exited = true;
    close_child(w);
    cm_set_err(err, errlen, "exec: cannot start %s: %s", e->argv[0], uv_strerror(rc));
    return rc;
  }
  w->pid = w->proc.pid;
  pthread_mutex_lock(&e->mu);
  e->spawned++;
  pthread_mutex_unlock(&e->mu);
  cm_log_info("exec: started %s (pid %d)", e->argv[0], w->pid);
  return 0;
}

static cm__xw_t *worker_new(cm_exec_t *e) {
  cm__xw_t *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->e = e;
  cm_buf_init(&w->ebuf, CM__EXEC_ERRLINE_MAX + 1);
  if (uv_loop_init(&w->loop) != 0) {
    free(w);
    return NULL;
  }
  (void)uv_timer_init(&w->loop, &w->timer);
  w->timer.data = w;
  return w;
}

static void worker_free(cm__xw_t *w) {
  if (w == NULL) return;
  if (w->running && !w->exited) {
    /* Ask politely: EOF on stdin, 1 s to exit, then SIGKILL. */
    if (!uv_is_closing((uv_handle_t *)&w->in)) uv_close((uv_handle_t *)&w->in, on_close);
    w->timed_out = false;
    (void)uv_timer_start(&w->timer, on_timer, 1000, 0);
    while (!w->exited && !w->timed_out) (void)uv_run(&w->loop, UV_RUN_ONCE);
    (void)uv_timer_stop(&w->timer);
  }
  kill_child(w);
  uv_close((uv_handle_t *)&w->timer, NULL);
  (void)uv_run(&w->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&w->loop) != 0) cm_log_warn("exec: a worker loop still has handles");
  cm_buf_free(&w->ebuf);
  free(w);
}

void cm_exec_destroy(cm_exec_t *e) {
  if (e == NULL) return;
  for (int i = 0; i < e->nw; i++) {
    if (e->busy[i]) {
      /* Still mapping (a forced shutdown): do not touch its loop. */
      if (e->w[i]->running && e->w[i]->pid > 0) (void)kill(-e->w[i]->pid, SIGKILL);
      continue;
    }
    worker_free(e->w[i]);
  }
  free_vec(e->argv);
  free_vec(e->envp);
  free(e->cwd);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

static cm__xw_t *checkout(cm_exec_t *e, int *slot) {
  cm__xw_t *w = NULL;
  pthread_mutex_lock(&e->mu);
  for (int i = 0; i < e->nw && w == NULL; i++)
    if (!e->busy[i]) {
      e->busy[i] = true;
      w = e->w[i];
      *slot = i;
    }
  if (w == NULL && e->nw < CM__EXEC_MAX_WORKERS && (w = worker_new(e)) != NULL) {
    *slot = e->nw;
    e->w[e->nw] = w;
    e->busy[e->nw++] = true;
  }
  pthread_mutex_unlock(&e->mu);
  return w;
}

static void checkin(cm_exec_t *e, int slot) {
  pthread_mutex_lock(&e->mu);
  e->busy[slot] = false;
  pthread_mutex_unlock(&e->mu);
}

static void describe_exit(cm__xw_t *w, char *err, size_t errlen, const char *when) {
  if (w->term_signal)
    cm_set_err(err, errlen, "exec: child %s (pid %d) was killed by signal %d %s", w->e->argv[0],
            w->pid, w->term_signal, when);
  else
    cm_set_err(err, errlen, "exec: child %s (pid %d) exited with status %" PRId64 " %s",
            w->e->argv[0], w->pid, w->status, when);
}

int cm_exec_run(cm_exec_t *e, const char *const *recs, const size_t *lens, size_t n,
                cm_buf_t *lines, size_t *off, size_t *ln, char *err, size_t errlen) {
  cm_buf_t inb;
  cm__xw_t *w;
  int slot = -1, rc = 0;
  char when[96];

  cm_buf_init(&inb, CM__EXEC_OUT_MAX);
  cm_buf_reset(lines);
  if (n == 0) return 0;
  if ((w = checkout(e, &slot)) == NULL) {
    cm_set_err(err, errlen, "exec: out of memory");
    return -ENOMEM;
  }
  /* A child that died between chunks: notice it now and start a new one. */
  (void)uv_run(&w->loop, UV_RUN_NOWAIT);
  if (w->running && w->exited) {
    char why[256];
    describe_exit(w, why, sizeof why, "between chunks");
    cm_log_warn("%s: restarting it", why);
    cm_counter_inc(e->m_restarts);
    close_child(w);
  }
  if (!w->running && (rc = spawn_child(w, err, errlen)) < 0) goto out;

  for (size_t i = 0; i < n && rc == 0; i++) {
    size_t mark = inb.len;
    rc = cm_buf_append(&inb, recs[i], lens[i]);
    /* JSON has no raw newlines inside strings: any here are blanks. */
    for (size_t k = mark; rc == 0 && k < inb.len; k++)
      if (inb.data[k] == '\n' || inb.data[k] == '\r') inb.data[k] = ' ';
    if (rc == 0) rc = cm_buf_append(&inb, "\n", 1);
  }
  if (rc < 0) {
    cm_set_err(err, errlen, "exec: chunk too large to send (%s)", strerror(-rc));
    goto out;
  }
  w->lines = lines;
  w->off = off;
  w->ln = ln;
  w->want = n;
  w->got = w->scan = 0;
  w->out_eof = w->write_done = w->timed_out = w->overflow = false;
  w->io_err = 0;
  {
    uv_buf_t b = uv_buf_init(inb.data, (unsigned)inb.len);
    w->wreq.data = w;
    rc = uv_write(&w->wreq, (uv_stream_t *)&w->in, &b, 1, on_write);
    if (rc < 0) {
      w->write_done = true;
      w->io_err = rc;
    }
  }
  rc = 0;
  (void)uv_read_start((uv_stream_t *)&w->out, on_alloc, on_stdout);
  (void)uv_read_start((uv_stream_t *)&w->errp, on_alloc, on_stderr);
  (void)uv_timer_start(&w->timer, on_timer, (uint64_t)e->timeout_ms, 0);
  for (;;) {
    if (w->got >= w->want && w->write_done) break;
    if (w->timed_out || w->overflow || w->io_err) break;
    if (w->exited && w->out_eof) break;
    (void)uv_run(&w->loop, UV_RUN_ONCE);
  }
  (void)uv_timer_stop(&w->timer);
  (void)uv_read_stop((uv_stream_t *)&w->out);
  (void)uv_read_stop((uv_stream_t *)&w->errp);

  (void)snprintf(when, sizeof when, "after %zu of %zu answer lines", w->got < n ? w->got : n, n);
  if (w->got > w->want || (w->got == w->want && w->scan < lines->len)) {
    cm_set_err(err, errlen, "exec: child %s (pid %d) wrote more lines than it was sent records",
            e->argv[0], w->pid);
    rc = -EPROTO;
  } else if (w->got >= w->want && w->write_done && !w->io_err) {
    rc = 0;
  } else if (w->timed_out) {
    cm_set_err(err, errlen, "exec: child %s (pid %d) timed out after %" PRId64 " ms (%s)",
            e->argv[0], w->pid, e->timeout_ms, when);
    rc = -ETIMEDOUT;
  } else if (w->overflow) {
    cm_set_err(err, errlen, "exec: child %s (pid %d) wrote more than %zu bytes for one chunk",
            e->argv[0], w->pid, lines->max);
    rc = -E2BIG;
  } else if (w->exited) {
    describe_exit(w, err, errlen, when);
    rc = -ECHILD;
  } else {
    cm_set_err(err, errlen, "exec: child %s (pid %d): pipe error: %s", e->argv[0], w->pid,
            uv_strerror(w->io_err));
    rc = -EIO;
  }
  if (rc < 0) {
    /* The child is out of step with us (or gone): never reuse it. */
    cm_counter_inc(e->m_restarts);
    kill_child(w);
    cm_buf_reset(lines);
  }
out:
  w->lines = NULL;
  cm_buf_free(&inb);
  checkin(e, slot);
  return rc;
}
