/* daemon.c - the run-time frame shared by fetcher, mapper and saver.
 *
 * Owns the loop and the handles every daemon has (HTTP probe server, signal
 * watchers, heartbeat and drain-deadline timers, the NATS connection) and
 * sequences shutdown so that uv_loop_close() finds nothing open. */
#include "cm/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cm/http.h"
#include "cm/log.h"
#include "cm/redact.h"

#define CM__MAX_OPTS 64
#define CM__MAX_SERVERS 32

struct cm_daemon_s {
  uv_loop_t loop;
  const char *role;
  cm_common_cfg_t cfg;
  char id[128];
  char instance[33]; /* random per start: see cm_daemon_instance */
  cm_daemon_hooks_t hooks;
  void *ud;

  cm_metrics_t *metrics;
  cm_gauge_t *m_connected;
  cm_counter_t *m_reconnects;
  cm_counter_t *m_reconnects_only;
  /* chunkmill_nats_server_info{server="..."}: 1 for the server of the
   * current connection, 0 for the others seen before (bounded). */
  cm_gauge_t *m_server[CM__MAX_SERVERS];
  char m_server_url[CM__MAX_SERVERS][256];
  int nservers;
  cm_http_t *http;
  cm_nats_t *nats;

  uv_signal_t sigterm, sigint;
  uv_timer_t heartbeat, deadline;
  char hb_subject[256];

  bool draining;
  bool forced;
  bool exiting;
  bool exit_called;
  bool closed;
  int exit_code;
  int64_t started_ms;
};

double cm_wall_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cm_subject(char *out, size_t outlen, const char *prefix, const char *suffix) {
  int n = snprintf(out, outlen, "%s.%s", prefix, suffix);
  return (n < 0 || (size_t)n >= outlen) ? -ENAMETOOLONG : 0;
}

/* ---- configuration ---- */

int cm_daemon_main_config(const char *role, const char *summary, cm_common_cfg_t *cfg,
                          const cm_opt_t *own, size_t nown, int argc, char **argv,
                          int *probe_status) {
  cm_opt_t opts[CM__MAX_OPTS];
  int n = cm_config_common_opts(cfg, opts, CM__MAX_OPTS);
  cm_log_level_t lvl = CM_LOG_INFO;
  static char idbuf[128];
  int rc;
  if (n < 0 || (size_t)n + nown > CM__MAX_OPTS) return -ENOSPC;
  memcpy(opts + n, own, nown * sizeof(*own));
  rc = cm_config_parse(opts, (size_t)n + nown, argc, argv, role, summary, stdout, stderr);
  if (rc == 2) {
    printf("%s %s\n", role, CM_VERSION);
    return 1;
  }
  if (rc != 0) return rc;
  /* The whole command line is checked before main opens any file. */
  if (cm_http_check_addr(cfg->http_addr) != 0) {
    fprintf(stderr,
            "%s: invalid value \"%s\" for --http: use HOST:PORT, :PORT or PORT (numeric host "
            "or localhost, port 0..65535)\n",
            role, cfg->http_addr);
    return -EINVAL;
  }
  if (cfg->probe != NULL) {
    int st = cm_http_probe(cfg->http_addr, cfg->probe, 2000);
    if (st != 200) {
      if (st < 0)
        fprintf(stderr, "%s: probe %s on %s failed: %s\n", role, cfg->probe, cfg->http_addr,
                strerror(-st));
      else
        fprintf(stderr, "%s: probe %s on %s: HTTP %d\n", role, cfg->probe, cfg->http_addr, st);
    }
    *probe_status = st == 200 ? 0 : 1;
    return 2;
  }
  {
    char err[512] = "";
    if (cm_nats_check_options(cfg, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s: %s\n", role, err);
      return -EINVAL;
    }
  }
  if (cfg->id == NULL) {
    char host[64] = "host";
    (void)gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(idbuf, sizeof(idbuf), "%s-%s-%d", role, host, (int)getpid());
    cfg->id = idbuf;
  }
  (void)cm_log_level_parse(cfg->log_level, &lvl);
  cm_log_init(role, cfg->id, lvl);
  return 0;
}

/* ---- HTTP ---- */

bool cm_daemon_ready(cm_daemon_t *d) {
  char why[128];
  if (d->draining || !cm_nats_connected(d->nats) || cm_nats_refused(d->nats) != NULL) return false;
  return d->hooks.ready == NULL || d->hooks.ready(d->ud, why, sizeof(why));
}

/* The paths the daemon serves itself, GET/HEAD only. */
static bool cm__daemon_own_path(const char *path) {
  return strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
         strcmp(path, "/metrics") == 0 || strcmp(path, "/status") == 0;
}

int cm_daemon_status_json(cm_daemon_t *d, cm_buf_t *body) {
  int rc = 0;
  rc |= cm_buf_puts(body, "{\"role\":");
  rc |= cm_buf_append_json_str(body, d->role, strlen(d->role));
  rc |= cm_buf_puts(body, ",\"id\":");
  rc |= cm_buf_append_json_str(body, d->id, strlen(d->id));
  rc |= cm_buf_puts(body, ",\"version\":");
  rc |= cm_buf_append_json_str(body, d->cfg.version, strlen(d->cfg.version));
  rc |= cm_buf_printf(body, ",\"ready\":%s,\"nats_connected\":%s,\"draining\":%s,\"uptime_s\":%.3f",
                      cm_daemon_ready(d) ? "true" : "false",
                      cm_nats_connected(d->nats) ? "true" : "false",
                      d->draining ? "true" : "false",
                      (double)(cm_daemon_now_ms(d) - d->started_ms) / 1000.0);
  {
    char server[256];
    cm_nats_server(d->nats, server, sizeof(server));
    rc |= cm_buf_puts(body, ",\"nats_server\":");
    rc |= server[0] != '\0' ? cm_buf_append_json_str(body, server, strlen(server))
                            : cm_buf_puts(body, "null");
    rc |= cm_buf_printf(body, ",\"nats_reconnects\":%llu",
                        (unsigned long long)cm_nats_reconnects(d->nats));
  }
  if (rc == 0 && d->hooks.status != NULL) rc = d->hooks.status(d->ud, body);
  if (rc == 0) rc = cm_buf_puts(body, "}");
  return rc == 0 ? 0 : -ENOMEM;
}

static int cm__daemon_http(void *ud, const cm_http_request_t *req, cm_buf_t *body,
                           const char **ctype) {
  cm_daemon_t *d = ud;
  const char *path = req->path;
  if (!cm__daemon_own_path(path)) {
    int st = d->hooks.route != NULL ? d->hooks.route(d->ud, req, body, ctype) : 0;
    if (st != 0) return st;
    *ctype = NULL;
    cm_buf_reset(body);
    if (cm_buf_puts(body, "not found\n") != 0) return 500;
    return 404;
  }
  if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
    if (cm_buf_puts(body, "method not allowed\n") != 0) return 500;
    return 405;
  }
  if (strcmp(path, "/healthz") == 0) {
    /* Answering at all proves the loop is turning; the daemon may know
     * better (its workers all stuck). */
    char why[160] = "";
    if (d->hooks.alive != NULL && !d->hooks.alive(d->ud, why, sizeof(why))) {
      if (cm_buf_printf(body, "not alive: %s\n", why) != 0) return 503;
      return 503;
    }
    return cm_buf_puts(body, "ok\n") == 0 ? 200 : 500;
  }
  if (strcmp(path, "/readyz") == 0) {
    char why[320] = "";
    const char *reason = NULL;
    if (d->draining)
      reason = "draining";
    else if (!cm_nats_connected(d->nats))
      reason = "not connected to NATS";
    else if (cm_nats_refused(d->nats) != NULL) {
      snprintf(why, sizeof(why), "NATS refused: %s", cm_nats_refused(d->nats));
      reason = why;
    }
    else if (d->hooks.ready != NULL && !d->hooks.ready(d->ud, why, sizeof(why)))
      reason = why;
    if (reason == NULL) return cm_buf_puts(body, "ready\n") == 0 ? 200 : 500;
    if (cm_buf_printf(body, "not ready: %s\n", reason) != 0) return 503;
    return 503;
  }
  if (strcmp(path, "/metrics") == 0) {
    *ctype = "text/plain; version=0.0.4; charset=utf-8";
    return cm_metrics_render(d->metrics, body) == 0 ? 200 : 500;
  }
  /* /status */
  *ctype = "application/json";
  if (cm_daemon_status_json(d, body) != 0 || cm_buf_puts(body, "\n") != 0) return 500;
  return 200;
}

/* ---- process metrics ---- */

static double cm__rss_bytes(void *ud) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return 0;
  if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
  fclose(f);
  return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

/* VmHWM from /proc/self/status, not getrusage's ru_maxrss: on Linux
 * ru_maxrss survives exec, so a daemon started by a large parent reports the
 * parent's high-water mark instead of its own. */
static double cm__peak_rss_bytes(void *ud) {
  char line[256];
  double kb = 0;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, "VmHWM:", 6) == 0) {
      kb = strtod(line + 6, NULL);
      break;
    }
  }
  fclose(f);
  return kb * 1024.0;
}

static double cm__cpu_seconds(void *ud) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Loop thread, on every connection event: the info gauge shows the server
 * we are on now (none while disconnected). */
static void cm__daemon_note_server(cm_daemon_t *d) {
  char server[256], labels[300];
  size_t o = 0;
  int slot = -1;
  cm_nats_server(d->nats, server, sizeof(server));
  for (int i = 0; i < d->nservers; i++) {
    if (server[0] != '\0' && strcmp(d->m_server_url[i], server) == 0) slot = i;
    cm_gauge_set(d->m_server[i], 0);
  }
  if (server[0] == '\0') return;
  if (slot < 0 && d->nservers < CM__MAX_SERVERS) {
    /* A label value: escape what the text format needs escaped. */
    o = (size_t)snprintf(labels, sizeof(labels), "server=\"");
    for (const char *c = server; *c && o + 3 < sizeof(labels); c++) {
      if (*c == '"' || *c == '\\') labels[o++] = '\\';
      labels[o++] = *c == '\n' ? ' ' : *c;
    }
    labels[o++] = '"';
    labels[o] = '\0';
    slot = d->nservers;
    d->m_server[slot] = cm_metrics_gauge(d->metrics, "chunkmill_nats_server_info",
                                         "1 for the NATS server this daemon is connected to "
                                         "(password redacted).",
                                         labels);
    snprintf(d->m_server_url[slot], sizeof(d->m_server_url[slot]), "%s", server);
    d->nservers++;
  }
  if (slot >= 0) cm_gauge_set(d->m_server[slot], 1);
}

static double cm__nats_dropped(void *ud) {
  cm_daemon_t *d = ud;
  return d->nats != NULL ? (double)cm_nats_dropped(d->nats) : 0;
}

/* /readyz as a metric (1 when it would answer 200), so that an alert can
 * tell a saver that is up but not ready from one that serves. */
static double cm__ready(void *ud) { return cm_daemon_ready(ud) ? 1 : 0; }

/* ---- NATS, heartbeats ---- */

static void cm__daemon_close_all(cm_daemon_t *d);
static void cm__daemon_heartbeat(uv_timer_t *t);

static void cm__daemon_nats_event(void *ud, cm_nats_event_t ev) {
  cm_daemon_t *d = ud;
  if (ev != CM_NATS_CLOSED) cm__daemon_note_server(d);
  switch (ev) {
  case CM_NATS_CONNECTED:
    cm_gauge_set(d->m_connected, 1);
    cm_counter_inc(d->m_reconnects);
    {
      uint64_t now = cm_nats_reconnects(d->nats), seen = cm_counter_get(d->m_reconnects_only);
      if (now > seen) cm_counter_add(d->m_reconnects_only, now - seen);
    }
    break;
  case CM_NATS_DISCONNECTED:
    cm_gauge_set(d->m_connected, 0);
    if (!d->exiting) cm_log_warn("nats: disconnected; reconnecting");
    break;
  case CM_NATS_CLOSED:
    cm_gauge_set(d->m_connected, 0);
    break;
  }
  if (d->hooks.on_nats != NULL) d->hooks.on_nats(d->ud, ev);
  if (ev == CM_NATS_CLOSED) {
    if (!d->exiting) {
      cm_log_error("nats: connection closed unexpectedly");
      d->exit_code = 1;
      d->exiting = true;
    }
    cm__daemon_close_all(d);
  } else if (ev == CM_NATS_CONNECTED) {
    {
      char server[256];
      cm_nats_server(d->nats, server, sizeof(server));
      cm_log_info("nats: ready (connected to %s, %llu reconnects)",
                  server[0] ? server : "?", (unsigned long long)cm_nats_reconnects(d->nats));
    }
    /* Announce ourselves at once instead of a period later: a mapper that
     * hears a new fetcher's heartbeat sends its credit right away, so a job
     * starts without waiting for the next periodic credit. */
    cm__daemon_heartbeat(&d->heartbeat);
  }
}

int cm_daemon_publish_proto(cm_daemon_t *d, const char *subject, const ProtobufCMessage *msg) {
  uint8_t stackbuf[1024];
  size_t len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = len <= sizeof(stackbuf) ? stackbuf : malloc(len);
  int rc;
  if (buf == NULL) return -ENOMEM;
  protobuf_c_message_pack(msg, buf);
  rc = cm_nats_publish(d->nats, subject, NULL, buf, len);
  if (buf != stackbuf) free(buf);
  return rc;
}

static void cm__daemon_heartbeat(uv_timer_t *t) {
  cm_daemon_t *d = t->data;
  Chunkmill__Heartbeat hb = CHUNKMILL__HEARTBEAT__INIT;
  char server[256];
  if (!cm_nats_connected(d->nats)) return;
  hb.id = d->id;
  hb.instance = d->instance;
  hb.role = (char *)d->role;
  hb.version = (char *)d->cfg.version;
  hb.period_ms = (uint32_t)d->cfg.heartbeat_ms;
  hb.draining = d->draining;
  cm_nats_server(d->nats, server, sizeof(server));
  hb.nats_server = server;
  hb.nats_reconnects = cm_nats_reconnects(d->nats);
  if (d->hooks.heartbeat != NULL) d->hooks.heartbeat(d->ud, &hb);
  (void)cm_daemon_publish_proto(d, d->hb_subject, &hb.base);
}

void cm_daemon_heartbeat_now(cm_daemon_t *d) { cm__daemon_heartbeat(&d->heartbeat); }

/* ---- signals and shutdown ---- */

static void cm__daemon_deadline(uv_timer_t *t) {
  cm_daemon_t *d = t->data;
  if (d->forced) return;
  d->forced = true;
  cm_log_warn("drain timeout (%lld ms) reached: stopping now", (long long)d->cfg.drain_timeout_ms);
  d->hooks.shutdown(d->ud, true);
}

static void cm__daemon_signal(uv_signal_t *s, int signum) {
  cm_daemon_t *d = s->data;
  if (!d->draining) {
    d->draining = true;
    cm_log_info("received %s: draining (readiness is now 503)", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    (void)uv_timer_start(&d->deadline, cm__daemon_deadline, (uint64_t)d->cfg.drain_timeout_ms, 0);
    d->hooks.shutdown(d->ud, false);
    return;
  }
  if (!d->forced) {
    d->forced = true;
    cm_log_warn("second signal: stopping now");
    d->hooks.shutdown(d->ud, true);
  }
}

void cm_daemon_exit(cm_daemon_t *d, int code) {
  int64_t left;
  if (d->exit_called) return;
  d->exit_called = true;
  if (!d->exiting) d->exit_code = code;
  d->exiting = true;
  d->draining = true;
  (void)uv_timer_stop(&d->heartbeat);
  /* Give the NATS drain whatever is left of a short budget: what is queued
   * (acks, replies, hand-backs) must still reach the server. */
  left = d->forced ? 1000 : 5000;
  cm_nats_drain(d->nats, left);
}

static void cm__daemon_close_all(cm_daemon_t *d) {
  if (d->closed) return;
  d->closed = true;
  if (d->hooks.close != NULL) d->hooks.close(d->ud);
  cm_nats_destroy(d->nats);
  d->nats = NULL;
  cm_http_close(d->http);
  d->http = NULL;
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->heartbeat, NULL);
  uv_close((uv_handle_t *)&d->deadline, NULL);
}

/* ---- create / run ---- */

int cm_daemon_create(cm_daemon_t **out, const char *role, const cm_common_cfg_t *cfg,
                     const cm_daemon_hooks_t *hooks, void *ud) {
  cm_daemon_t *d;
  char err[512] = "";
  char labels[256];
  int rc;
  *out = NULL;
  d = calloc(1, sizeof(*d));
  if (d == NULL) return -ENOMEM;
  /* libuv writes with write(2): a peer that hung up must give EPIPE, not
   * kill the daemon. */
  signal(SIGPIPE, SIG_IGN);
  d->role = role;
  d->cfg = *cfg;
  d->hooks = *hooks;
  d->ud = ud;
  snprintf(d->id, sizeof(d->id), "%s", cfg->id);
  {
    /* 128 random bits: unguessable, so a restart is told apart from a
     * client that only knows the id. */
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    size_t got = 0;
    while (got < sizeof(r)) {
      ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        free(d);
        return -errno;
      }
      got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(r); i++) {
      d->instance[2 * i] = hex[r[i] >> 4];
      d->instance[2 * i + 1] = hex[r[i] & 15];
    }
    d->instance[32] = '\0';
  }
  if ((rc = uv_loop_init(&d->loop)) != 0) {
    free(d);
    return rc;
  }
  d->started_ms = (int64_t)uv_now(&d->loop);
  if ((rc = cm_metrics_create(&d->metrics)) != 0) goto fail_loop;
  snprintf(labels, sizeof(labels), "role=\"%s\",version=\"%s\"", role, cfg->version);
  cm_gauge_set(cm_metrics_gauge(d->metrics, "chunkmill_build_info",
                                "Build and version information.", labels),
               1);
  d->m_connected = cm_metrics_gauge(d->metrics, "chunkmill_nats_connected",
                                    "1 while connected to NATS.", NULL);
  d->m_reconnects = cm_metrics_counter(d->metrics, "chunkmill_nats_connects_total",
                                       "Successful NATS connects and reconnects.", NULL);
  d->m_reconnects_only = cm_metrics_counter(
      d->metrics, "chunkmill_nats_reconnects_total",
      "Reconnects to NATS after a lost connection (to the same or another server).", NULL);
  (void)cm_metrics_gauge_fn(d->metrics, "chunkmill_nats_dropped_messages",
                            "Messages dropped by the NATS client as a slow consumer.", NULL,
                            cm__nats_dropped, d);
  snprintf(labels, sizeof(labels), "role=\"%s\"", role);
  (void)cm_metrics_gauge_fn(d->metrics, "chunkmill_ready",
                            "1 while /readyz answers 200 (connected, not draining, role ready).",
                            labels, cm__ready, d);
  (void)cm_metrics_gauge_fn(d->metrics, "process_resident_memory_bytes",
                            "Resident memory size in bytes.", NULL, cm__rss_bytes, d);
  (void)cm_metrics_gauge_fn(d->metrics, "chunkmill_process_peak_rss_bytes",
                            "Peak resident memory size in bytes.", NULL, cm__peak_rss_bytes, d);
  (void)cm_metrics_gauge_fn(d->metrics, "chunkmill_process_cpu_seconds",
                            "User and system CPU time spent, in seconds.", NULL, cm__cpu_seconds,
                            d);

  if ((rc = cm_http_create(&d->http, &d->loop, cfg->http_addr, cm__daemon_http, d)) != 0) {
    cm_log_error("cannot serve HTTP on %s: %s", cfg->http_addr,
                 rc < 0 && rc > -4096 ? uv_strerror(rc) : "error");
    fprintf(stderr, "%s: cannot serve HTTP on --http %s: %s\n", role, cfg->http_addr,
            uv_strerror(rc));
    goto fail_metrics;
  }
  (void)uv_signal_init(&d->loop, &d->sigterm);
  (void)uv_signal_init(&d->loop, &d->sigint);
  d->sigterm.data = d->sigint.data = d;
  (void)uv_signal_start(&d->sigterm, cm__daemon_signal, SIGTERM);
  (void)uv_signal_start(&d->sigint, cm__daemon_signal, SIGINT);
  (void)uv_timer_init(&d->loop, &d->heartbeat);
  (void)uv_timer_init(&d->loop, &d->deadline);
  d->heartbeat.data = d->deadline.data = d;
  (void)cm_subject(d->hb_subject, sizeof(d->hb_subject), cfg->prefix, "heartbeat");

  if ((rc = cm_nats_create(&d->nats, &d->loop, cfg, d->id, cm__daemon_nats_event, d, err,
                           sizeof(err))) != 0) {
    cm_log_error("%s", err);
    fprintf(stderr, "%s: %s\n", role, err);
    /* Close what we opened and let the loop free it. */
    cm_http_close(d->http);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->heartbeat, NULL);
    uv_close((uv_handle_t *)&d->deadline, NULL);
    (void)uv_run(&d->loop, UV_RUN_DEFAULT);
    goto fail_metrics;
  }
  (void)uv_timer_start(&d->heartbeat, cm__daemon_heartbeat, (uint64_t)cfg->heartbeat_ms,
                       (uint64_t)cfg->heartbeat_ms);
  cm_log_info("%s %s starting: nats %s, http %s (port %d), prefix %s", role, CM_VERSION,
              cm_nats_url(d->nats), cfg->http_addr, cm_http_port(d->http), cfg->prefix);
  *out = d;
  return 0;

fail_metrics:
  cm_metrics_destroy(d->metrics);
fail_loop:
  (void)uv_loop_close(&d->loop);
  free(d);
  return rc < 0 ? rc : -EINVAL;
}

int cm_daemon_run(cm_daemon_t *d) {
  (void)uv_run(&d->loop, UV_RUN_DEFAULT);
  /* Everything is closed once uv_run returns; a non-zero close means a
   * handle leaked, which is a bug worth shouting about. */
  if (uv_loop_close(&d->loop) != 0) {
    cm_log_error("event loop still has open handles at exit");
    if (d->exit_code == 0) d->exit_code = 1;
  }
  return d->exit_code;
}

void cm_daemon_destroy(cm_daemon_t *d) {
  if (d == NULL) return;
  cm_metrics_destroy(d->metrics);
  free(d);
}

uv_loop_t *cm_daemon_loop(cm_daemon_t *d) { return &d->loop; }
cm_metrics_t *cm_daemon_metrics(cm_daemon_t *d) { return d->metrics; }
cm_nats_t *cm_daemon_nats(cm_daemon_t *d) { return d->nats; }
const cm_common_cfg_t *cm_daemon_cfg(cm_daemon_t *d) { return &d->cfg; }
const char *cm_daemon_id(cm_daemon_t *d) { return d->id; }
const char *cm_daemon_instance(cm_daemon_t *d) { return d->instance; }
bool cm_daemon_draining(cm_daemon_t *d) { return d->draining; }
int cm_daemon_exit_code(cm_daemon_t *d) { return d->exit_code; }
int64_t cm_daemon_now_ms(cm_daemon_t *d) {
  uv_update_time(&d->loop);
  return (int64_t)uv_now(&d->loop);
}
