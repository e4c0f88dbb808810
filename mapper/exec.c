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
#include <dirent.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cm/log.h"

extern char **environ;

#define CM__EXEC_MAX_ARGS 256
#define CM__EXEC_MAX_ENV 64
#define CM__EXEC_MAX_WORKERS 512
#define CM__EXEC_ERRLINE_MAX 4096
#define CM__EXEC_OUT_MAX ((size_t)256 * 1024 * 1024)
#define CM__EXEC_QUOTE_MAX 60 /* bytes of a stray line quoted in an error */
#define CM__EXEC_REAP_MS 250
#define CM__EXEC_EXIT_GRACE_MS 200 /* stdout closed early: time to see an exit */  /* how often orphaned grandchildren are reaped */

typedef struct cm__xw_s cm__xw_t;

/* Orphan reaping, for the whole process (every cm_exec_t): g_spawn_mu is
 * held around uv_spawn and while reaping, so a child some libuv loop owns
 * (listed in g_owned) is never waited for by a reaper: libuv would then
 * never see it exit. */
#define CM__EXEC_OWNED_MAX 4096
static pthread_mutex_t g_spawn_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_owned[CM__EXEC_OWNED_MAX];
static int g_nowned;

struct cm_exec_s {
  char **argv; /* NULL-terminated, owned */
  char **envp; /* NULL-terminated, owned */
  char *cwd;
  int64_t timeout_ms;
  int64_t settle_ms;
  bool per_chunk; /* framing "chunk": one child per chunk */
  bool tagged;    /* framing "tagged": "<seq>\t" before every line, both ways */
  cm_metrics_t *metrics;
  cm_counter_t *m_progress, *m_restarts, *m_protocol, *m_reaped;
  pthread_mutex_t mu;
  cm__xw_t *w[CM__EXEC_MAX_WORKERS];
  bool busy[CM__EXEC_MAX_WORKERS];
  int nw;
  unsigned long spawned;
  pthread_cond_t reap_cv; /* with g_spawn_mu */
  bool reaper_on, reaper_stop;
  pthread_t reaper;
  unsigned long reaped;
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
  size_t line_start;      /* where the line being received starts */
  size_t extra_off, extra_len; /* the first line beyond `want`, if any */
  uint64_t seq;           /* tagged: records this child has answered */
  bool bad_tag;           /* tagged: a line without the expected tag */
  uv_timer_t settle;
  bool out_eof, write_done, timed_out, overflow, settled;
  bool err_eof; /* stderr reached EOF (framing chunk: its last lines read) */
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

/* ---- what a child inherits ------------------------------------------- */

static bool name_has(const char *name, size_t nl, const char *word) {
  size_t wl = strlen(word);
  for (size_t i = 0; i + wl <= nl; i++)
    if (memcmp(name + i, word, wl) == 0) return true;
  return false;
}

bool cm_exec_env_is_secret(const char *entry) {
  static const char *const words[] = {"PASSWORD", "TOKEN", "SECRET", "CREDS",
                                      "NKEY",     "SEED",  "KEY"};
  const char *eq = strchr(entry, '=');
  size_t nl = eq ? (size_t)(eq - entry) : strlen(entry);
  bool ours = nl > 10 && memcmp(entry, "CHUNKMILL_", 10) == 0;
  bool nats = nl > 5 && memcmp(entry, "NATS_", 5) == 0;
  if (nl > 15 && memcmp(entry, "CHUNKMILL_NATS_", 15) == 0) return true;
  if (ours || nats)
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
      if (name_has(entry, nl, words[i])) return true;
  if (eq != NULL && nl == 8 && memcmp(entry, "NATS_URL", 8) == 0) {
    /* nats://user:pass@host or nats://token@host: credentials inside. */
    const char *v = eq + 1, *sch = strstr(v, "://");
    const char *at = strchr(v, '@');
    return at != NULL && (sch == NULL || at > sch);
  }
  return false;
}

void cm_exec_scrub_environ(void) {
  char name[256];
  for (;;) {
    bool again = false;
    for (char **ev = environ; ev && *ev; ev++) {
      if (!cm_exec_env_is_secret(*ev)) continue;
      const char *eq = strchr(*ev, '=');
      size_t nl = eq ? (size_t)(eq - *ev) : strlen(*ev);
      if (nl == 0 || nl >= sizeof name) continue;
      memcpy(name, *ev, nl);
      name[nl] = '\0';
      (void)unsetenv(name);
      again = true; /* environ changed under us: rescan */
      break;
    }
    if (!again) return;
  }
}

/* In the forked child, before exec (pthread_atfork; uv_spawn forks): every
 * descriptor above 2 becomes close-on-exec. nats.c opens its socket without
 * O_CLOEXEC, and a descriptor opened by another thread between any scan in
 * the parent and the fork would escape it: marking them in the child after
 * the fork has no such window. Only async-signal-safe calls here. */
static int cm__fd_max = 65536;

static void cm__cloexec_in_child(void) {
#ifdef CLOSE_RANGE_CLOEXEC
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
#endif
  for (int fd = 3; fd < cm__fd_max; fd++) {
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC)) (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  }
}

static void cm__install_cloexec(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 1048576)
    cm__fd_max = (int)rl.rlim_cur;
  else
    cm__fd_max = 1048576;
  if (pthread_atfork(NULL, NULL, cm__cloexec_in_child) != 0)
    cm_log_warn("exec: cannot install the close-on-exec fork handler");
}

/* The child's environment: ours without secrets (cm_exec_env_is_secret),
 * then CHUNKMILL_TRANSFORM_ARG, then the --exec-env pairs ("K=V,K2=V2"),
 * later entries replacing earlier ones. */
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
    if (cm_exec_env_is_secret(*ev)) continue;
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

/* ---- orphaned grandchildren ------------------------------------------ */

static bool owned_locked(int pid) {
  for (int i = 0; i < g_nowned; i++)
    if (g_owned[i] == pid) return true;
  return false;
}

/* libuv has reaped pid (its exit callback ran): no longer ours to skip. */
static void disown(int pid) {
  pthread_mutex_lock(&g_spawn_mu);
  for (int i = 0; i < g_nowned; i++)
    if (g_owned[i] == pid) {
      g_owned[i] = g_owned[--g_nowned];
      break;
    }
  pthread_mutex_unlock(&g_spawn_mu);
}

/* Waits (WNOHANG) for pid unless libuv owns it. g_spawn_mu held. */
static void reap_pid(cm_exec_t *e, int pid) {
  int st;
  if (pid <= 0 || owned_locked(pid)) return;
  if (waitpid(pid, &st, WNOHANG) == pid) {
    e->reaped++;
    cm_counter_inc(e->m_reaped);
  }
}

/* Our children that libuv does not own: from /proc/self/task/T/children
 * (every thread's list: orphans are re-parented to one of our threads), or,
 * without that file, zombies in /proc whose parent is us. g_spawn_mu held. */
static void reap_orphans(cm_exec_t *e) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *de;
  bool listed = false;
  char path[300];
  if (d != NULL) {
    while ((de = readdir(d)) != NULL) {
      FILE *f;
      int pid;
      if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
      (void)snprintf(path, sizeof path, "/proc/self/task/%s/children", de->d_name);
      if ((f = fopen(path, "r")) == NULL) continue;
      listed = true;
      while (fscanf(f, "%d", &pid) == 1) reap_pid(e, pid);
      fclose(f);
    }
    closedir(d);
  }
  if (listed || (d = opendir("/proc")) == NULL) return;
  while ((de = readdir(d)) != NULL) {
    char buf[512], *rp;
    FILE *f;
    size_t n;
    int ppid;
    char state;
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    (void)snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
    if ((f = fopen(path, "r")) == NULL) continue;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if ((rp = strrchr(buf, ')')) == NULL || sscanf(rp + 1, " %c %d", &state, &ppid) != 2)
      continue;
    if (state == 'Z' && ppid == (int)getpid()) reap_pid(e, atoi(de->d_name));
  }
  closedir(d);
}

static void *reaper_main(void *arg) {
  cm_exec_t *e = arg;
  pthread_mutex_lock(&g_spawn_mu);
  while (!e->reaper_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)CM__EXEC_REAP_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    (void)pthread_cond_timedwait(&e->reap_cv, &g_spawn_mu, &ts);
    if (!e->reaper_stop) reap_orphans(e);
  }
  pthread_mutex_unlock(&g_spawn_mu);
  return NULL;
}

unsigned long cm_exec_reaped(const cm_exec_t *e) {
  pthread_mutex_lock(&g_spawn_mu);
  unsigned long n = e->reaped;
  pthread_mutex_unlock(&g_spawn_mu);
  return n;
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
  if (pthread_cond_init(&e->reap_cv, NULL) != 0) {
    pthread_mutex_destroy(&e->mu);
    free(e);
    e = NULL;
    goto nomem;
  }
  e->timeout_ms = o && o->exec_timeout_ms > 0 ? o->exec_timeout_ms : 30000;
  e->settle_ms = o && o->exec_settle_ms > 0 ? o->exec_settle_ms : 0;
  {
    /* The default is the framing that needs nothing of the child and that
     * no timing can confuse. */
    const char *fr = o && o->exec_framing && *o->exec_framing ? o->exec_framing : "chunk";
    if (strcmp(fr, "chunk") == 0) {
      e->per_chunk = true;
    } else if (strcmp(fr, "tagged") == 0) {
      e->tagged = true;
    } else if (strcmp(fr, "lines") != 0) {
      cm_set_err(err, errlen, "--exec-framing \"%.32s\": expected chunk, tagged or lines", fr);
      rc = -EINVAL;
      goto fail;
    }
  }
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
  {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, cm__install_cloexec);
  }
  /* Orphans of our children (a killed shell's pipeline) come to us, not to
   * PID 1 (which may be us, or not reap), and are reaped here. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
    cm_log_warn("exec: cannot become a child subreaper: %s", strerror(errno));
  else if (pthread_create(&e->reaper, NULL, reaper_main, e) == 0)
    e->reaper_on = true;
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
  e->m_protocol = cm_metrics_counter(
      m, "chunkmill_exec_protocol_errors_total",
      "exec children out of step: output that answers no record, or stdout closed early.", NULL);
  pthread_mutex_lock(&g_spawn_mu);
  e->m_reaped = cm_metrics_counter(m, "chunkmill_exec_orphans_reaped_total",
                                   "Orphaned descendants of exec children reaped.", NULL);
  pthread_mutex_unlock(&g_spawn_mu);
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
  disown(w->pid);
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
  /* Record where each answer line starts and ends; remember the first line
   * beyond what was asked for (quoted in the error). */
  while (w->scan < w->lines->len) {
    char *nl = memchr(w->lines->data + w->scan, '\n', w->lines->len - w->scan);
    if (nl == NULL) {
      w->scan = w->lines->len;
      break;
    }
    size_t end = (size_t)(nl - w->lines->data);
    if (w->got < w->want) {
      size_t start = w->line_start;
      if (w->e->tagged) {
        /* "<seq>\t": the sequence number of the record it answers. */
        char want[24];
        int k = snprintf(want, sizeof want, "%" PRIu64 "\t", w->seq + w->got + 1);
        if (k <= 0 || end - start < (size_t)k ||
            memcmp(w->lines->data + start, want, (size_t)k) != 0) {
          w->bad_tag = true;
          w->extra_off = start;
          w->extra_len = end - start;
          (void)uv_read_stop(s);
          return;
        }
        start += (size_t)k;
      }
      size_t l = end - start;
      if (l > 0 && w->lines->data[start + l - 1] == '\r') l--;
      w->off[w->got] = start;
      w->ln[w->got] = l;
    } else if (w->got == w->want) {
      w->extra_off = w->line_start;
      w->extra_len = end - w->line_start;
    }
    w->got++; /* counts extra lines too: a protocol error */
    w->scan = end + 1;
    w->line_start = end + 1;
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
    if (n == UV_EOF) w->err_eof = true;
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
  /* framing "chunk": EOF on stdin tells the child the chunk is complete. */
  if (w->e->per_chunk && !uv_is_closing((uv_handle_t *)&w->in))
    uv_close((uv_handle_t *)&w->in, on_close);
}

static void on_timer(uv_timer_t *t) {
  cm__xw_t *w = t->data;
  w->timed_out = true;
}

static void on_settle(uv_timer_t *t) {
  cm__xw_t *w = t->data;
  w->settled = true;
}

static int spawn_child(cm__xw_t *w, char *err, size_t errlen) {
  cm_exec_t *e = w->e;
  uv_process_options_t po;
  uv_stdio_container_t io[3];
  int rc;

  w->exited = false;
  w->status = 0;
  w->term_signal = 0;
  w->seq = 0;
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
  pthread_mutex_lock(&g_spawn_mu);
  rc = uv_spawn(&w->loop, &w->proc, &po);
  if (rc == 0 && g_nowned < CM__EXEC_OWNED_MAX) g_owned[g_nowned++] = w->proc.pid;
  pthread_mutex_unlock(&g_spawn_mu);
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
  (void)uv_timer_init(&w->loop, &w->settle);
  w->timer.data = w;
  w->settle.data = w;
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
  uv_close((uv_handle_t *)&w->settle, NULL);
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
  if (e->reaper_on) {
    pthread_mutex_lock(&g_spawn_mu);
    e->reaper_stop = true;
    pthread_cond_signal(&e->reap_cv);
    pthread_mutex_unlock(&g_spawn_mu);
    (void)pthread_join(e->reaper, NULL);
  }
  pthread_cond_destroy(&e->reap_cv);
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

/* A line of the child's output as a short, printable, ASCII quotation. */
static void quote_line(const char *s, size_t n, char *out, size_t outlen) {
  size_t k = 0;
  if (outlen == 0) return;
  while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
  for (size_t i = 0; i < n && k + 4 < outlen; i++) {
    if (i == CM__EXEC_QUOTE_MAX) {
      out[k++] = '.', out[k++] = '.', out[k++] = '.';
      break;
    }
    unsigned char c = (unsigned char)s[i];
    out[k++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
  }
  out[k] = '\0';
}

/* Before a chunk is written: has the child said anything since the last
 * chunk was committed? Its stdout is read at once (the worker loop only
 * runs while a chunk is in hand, so such output waits in the pipe). */
static bool idle_output(cm__xw_t *w, cm_buf_t *lines, char *why, size_t whylen) {
  char q[CM__EXEC_QUOTE_MAX + 8];
  w->lines = lines;
  w->want = w->got = w->scan = w->line_start = 0;
  w->out_eof = w->overflow = false;
  w->io_err = 0;
  cm_buf_reset(lines);
  (void)uv_read_start((uv_stream_t *)&w->out, on_alloc, on_stdout);
  (void)uv_run(&w->loop, UV_RUN_NOWAIT);
  (void)uv_read_stop((uv_stream_t *)&w->out);
  if (lines->len > 0) {
    quote_line(lines->data, lines->len, q, sizeof q);
    cm_set_err(why, whylen, "wrote to stdout while no chunk was outstanding: \"%s\"", q);
  } else if (w->out_eof) {
    cm_set_err(why, whylen, "closed its stdout between chunks");
  } else {
    return false;
  }
  cm_buf_reset(lines);
  return true;
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
  if (w->running) {
    /* Out of step already: this chunk was not sent, so it is innocent; it
     * goes to a new child. What the old one answered before is the last
     * chunk's, committed already (see exec.h for what can and cannot be
     * told apart then). */
    char why[200];
    if (idle_output(w, lines, why, sizeof why)) {
      cm_log_warn("exec: child %s (pid %d) is out of step: it %s; restarting it", e->argv[0],
                  w->pid, why);
      cm_counter_inc(e->m_protocol);
      cm_counter_inc(e->m_restarts);
      kill_child(w);
    }
  }
  if (!w->running && (rc = spawn_child(w, err, errlen)) < 0) goto out;

  for (size_t i = 0; i < n && rc == 0; i++) {
    size_t mark;
    if (e->tagged) rc = cm_buf_printf(&inb, "%" PRIu64 "\t", w->seq + i + 1);
    mark = inb.len;
    if (rc == 0) rc = cm_buf_append(&inb, recs[i], lens[i]);
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
  w->got = w->scan = w->line_start = w->extra_off = w->extra_len = 0;
  w->out_eof = w->write_done = w->timed_out = w->overflow = w->settled = w->bad_tag = false;
  w->err_eof = false;
  w->io_err = 0;
  cm_buf_reset(lines);
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
    bool all = w->got == w->want && w->scan == lines->len && w->write_done;
    if (w->got > w->want || (w->got == w->want && w->scan < lines->len)) break; /* extra */
    if (w->timed_out || w->overflow || w->io_err || w->bad_tag) break;
    if (e->tagged) {
      /* Every answer names its record: no settle time is needed, and
       * whatever comes after the last one is caught before the next chunk
       * (or by its tags) without touching this one. */
      if (all || w->out_eof) break;
    } else if (e->per_chunk) {
      /* Only EOF and exit end a chunk: nothing depends on timing. (EOF
       * before the last answer: the child cannot answer any more; a short
       * wait for its exit only says which of the two it was.) */
      if (w->exited && w->out_eof) {
        /* Its last stderr lines (counters) too, unless a descendant keeps
         * stderr open: then not longer than a moment. */
        if (w->err_eof || w->settled) break;
        if (!uv_is_active((uv_handle_t *)&w->settle))
          (void)uv_timer_start(&w->settle, on_settle, CM__EXEC_EXIT_GRACE_MS, 0);
      } else if (w->out_eof && w->got < w->want) {
        if (w->settled) break;
        if (!uv_is_active((uv_handle_t *)&w->settle))
          (void)uv_timer_start(&w->settle, on_settle, CM__EXEC_EXIT_GRACE_MS, 0);
      }
    } else {
      if (w->out_eof && (all || w->exited || w->settled)) break;
      if (w->out_eof) {
        /* EOF before the last answer: a child that is exiting closes its
         * stdout first. Give its exit a moment, to say which it was. */
        if (!uv_is_active((uv_handle_t *)&w->settle))
          (void)uv_timer_start(&w->settle, on_settle, CM__EXEC_EXIT_GRACE_MS, 0);
        (void)uv_run(&w->loop, UV_RUN_ONCE);
        continue;
      }
      if (all && (e->settle_ms <= 0 || w->settled)) break;
      if (all && !uv_is_active((uv_handle_t *)&w->settle))
        (void)uv_timer_start(&w->settle, on_settle, (uint64_t)e->settle_ms, 0);
    }
    (void)uv_run(&w->loop, UV_RUN_ONCE);
  }
  (void)uv_timer_stop(&w->timer);
  (void)uv_timer_stop(&w->settle);
  (void)uv_read_stop((uv_stream_t *)&w->out);
  (void)uv_read_stop((uv_stream_t *)&w->errp);

  (void)snprintf(when, sizeof when, "after %zu of %zu answer lines", w->got < n ? w->got : n, n);
  if (w->bad_tag) {
    char q[CM__EXEC_QUOTE_MAX + 8];
    quote_line(lines->data + w->extra_off, w->extra_len, q, sizeof q);
    cm_set_err(err, errlen,
               "exec: child %s (pid %d) is out of step: answer line %zu should start with "
               "\"%" PRIu64 "<TAB>\": \"%s\"",
               e->argv[0], w->pid, w->got + 1, w->seq + w->got + 1, q);
    cm_counter_inc(e->m_protocol);
    rc = -EPROTO;
  } else if (!e->tagged && (w->got > w->want || (w->got == w->want && w->scan < lines->len))) {
    char q1[CM__EXEC_QUOTE_MAX + 8], q2[CM__EXEC_QUOTE_MAX + 8];
    size_t xl = w->got > w->want ? w->extra_len : lines->len - w->line_start;
    size_t xo = w->got > w->want ? w->extra_off : w->line_start;
    quote_line(lines->data, w->ln[0], q1, sizeof q1);
    quote_line(lines->data + xo, xl, q2, sizeof q2);
    cm_set_err(err, errlen,
               "exec: child %s (pid %d) is out of step: more output than the %zu records it "
               "was sent (first line \"%s\", extra line \"%s\")",
               e->argv[0], w->pid, n, q1, q2);
    cm_counter_inc(e->m_protocol);
    rc = -EPROTO;
  } else if (w->got == w->want && w->write_done && !w->io_err && !w->timed_out && !w->overflow &&
             (!e->per_chunk || (w->exited && w->status == 0 && w->term_signal == 0))) {
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
  } else if (w->out_eof) {
    cm_set_err(err, errlen, "exec: child %s (pid %d) is out of step: it closed its stdout %s",
               e->argv[0], w->pid, when);
    cm_counter_inc(e->m_protocol);
    rc = -EPROTO;
  } else {
    cm_set_err(err, errlen, "exec: child %s (pid %d): pipe error: %s", e->argv[0], w->pid,
            uv_strerror(w->io_err));
    rc = -EIO;
  }
  if (rc == 0) w->seq += n;
  if (rc == 0 && e->tagged && (w->got > w->want || w->scan < lines->len)) {
    /* The answers carried the right tags, so they stand; what followed
     * them answers nothing: the child is out of step for the next chunk. */
    char q[CM__EXEC_QUOTE_MAX + 8];
    size_t xo = w->got > w->want ? w->extra_off : w->line_start;
    size_t xl = w->got > w->want ? w->extra_len : lines->len - w->line_start;
    quote_line(lines->data + xo, xl, q, sizeof q);
    cm_log_warn("exec: child %s (pid %d) is out of step: it wrote \"%s\" after its last answer; "
                "restarting it",
                e->argv[0], w->pid, q);
    cm_counter_inc(e->m_protocol);
    cm_counter_inc(e->m_restarts);
    kill_child(w);
  }
  if (rc < 0) {
    /* The child is out of step with us (or gone): never reuse it. */
    cm_counter_inc(e->m_restarts);
    kill_child(w);
    cm_buf_reset(lines);
  } else if (e->per_chunk || w->out_eof) {
    /* Done with this child (its stdout is closed): the next chunk gets a
     * new one, which is no restart. (Its group is not signalled once it
     * has been reaped: the id may belong to someone else by then.) */
    kill_child(w);
  }
out:
  w->lines = NULL;
  cm_buf_free(&inb);
  checkin(e, slot);
  return rc;
}
