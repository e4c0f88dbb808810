/* daemon.h - what the three daemons share at run time: the loop, the probe
 * HTTP server, metrics, signals, heartbeats and the NATS connection, and the
 * orderly shutdown that ties them together.
 *
 * Lifecycle (main.c of each daemon):
 *   cm_daemon_main_config()  parse flags/env (common + own options), --help,
 *                            --probe mode, logging
 *   cm_daemon_create()       loop, metrics, HTTP, signals, NATS (connecting)
 *   ...the daemon subscribes and starts its own handles...
 *   cm_daemon_run()          runs the loop until everything is closed;
 *                            returns the exit code
 *   cm_daemon_destroy()
 *
 * Shutdown: SIGTERM/SIGINT -> readiness 503 at once -> hooks.shutdown(false)
 * -> the daemon finishes or hands back its work and calls cm_daemon_exit()
 * -> NATS is drained -> hooks.close() (close your handles) -> the loop ends.
 * A second signal or the --drain-timeout deadline calls hooks.shutdown(true):
 * exit promptly (still through cm_daemon_exit). */
#ifndef CM_DAEMON_H
#define CM_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "chunkmill.pb-c.h"
#include "cm/buf.h"
#include "cm/config.h"
#include "cm/http.h"
#include "cm/metrics.h"
#include "cm/natsconn.h"

typedef struct cm_daemon_s cm_daemon_t;

typedef struct cm_daemon_hooks_s {
  /* NATS connection state changed (loop thread). May be NULL. */
  void (*on_nats)(void *ud, cm_nats_event_t ev);
  /* Extra readiness condition (e.g. store usable); NULL = none. Write a short
   * reason into why when not ready. */
  bool (*ready)(void *ud, char *why, size_t whylen);
  /* /status: append members to the JSON object, each preceded by ','. */
  int (*status)(void *ud, cm_buf_t *out);
  /* Begin shutdown. forced=false: drain gracefully; forced=true: second
   * signal or drain deadline, stop now. Must lead to cm_daemon_exit(). */
  void (*shutdown)(void *ud, bool forced);
  /* Close the daemon's own uv handles (called once, after NATS closed). */
  void (*close)(void *ud);
  /* Add role-specific fields to each heartbeat (in-flight leases...). The
   * daemon owns whatever it puts there until the next call. May be NULL. */
  void (*heartbeat)(void *ud, Chunkmill__Heartbeat *hb);
  /* Extra liveness condition for /healthz (e.g. every worker stuck); NULL =
   * none. Write a short reason into why when not alive. */
  bool (*alive)(void *ud, char *why, size_t whylen);
  /* Every HTTP request whose path is not one the daemon serves itself
   * (/healthz, /readyz, /metrics, /status): GET, HEAD or POST (HEAD: the
   * body is left out of the answer). Append the response body to `body`,
   * set *ctype (static string) and return the status; 0 means "not mine"
   * (the daemon answers 404 and drops what was appended). Loop thread.
   * May be NULL (every such path: 404). */
  int (*route)(void *ud, const cm_http_request_t *req, cm_buf_t *body, const char **ctype);
} cm_daemon_hooks_t;

/* Parses the command line for `role` with the common options plus
 * `own[0..nown)`. Handles --help and --version (returns 1: exit 0), --probe
 * (returns 2 and sets *probe_status to the exit code), invalid input,
 * including an --http address or NATS settings cm_daemon_create would refuse
 * (returns -EINVAL: exit 2; nothing has been opened yet), and initialises
 * logging. Fills cfg->id when unset. */
int cm_daemon_main_config(const char *role, const char *summary, cm_common_cfg_t *cfg,
                          const cm_opt_t *own, size_t nown, int argc, char **argv,
                          int *probe_status);

int cm_daemon_create(cm_daemon_t **out, const char *role, const cm_common_cfg_t *cfg,
                     const cm_daemon_hooks_t *hooks, void *ud) __attribute__((warn_unused_result));
int cm_daemon_run(cm_daemon_t *d);
void cm_daemon_destroy(cm_daemon_t *d);

/* Finish: drain NATS, close everything, make cm_daemon_run return `code`.
 * Idempotent (the first code wins). */
void cm_daemon_exit(cm_daemon_t *d, int code);

uv_loop_t *cm_daemon_loop(cm_daemon_t *d);
cm_metrics_t *cm_daemon_metrics(cm_daemon_t *d);
cm_nats_t *cm_daemon_nats(cm_daemon_t *d);
const cm_common_cfg_t *cm_daemon_cfg(cm_daemon_t *d);
const char *cm_daemon_id(cm_daemon_t *d);
/* 32 hex digits drawn at random when the daemon was created: sent in every
 * heartbeat and credit, so the fetcher tells a restart under the same --id
 * (a new instance) from the same process speaking again. */
const char *cm_daemon_instance(cm_daemon_t *d);
bool cm_daemon_draining(cm_daemon_t *d);
/* The code cm_daemon_run will return (for a forced _exit). */
int cm_daemon_exit_code(cm_daemon_t *d);
bool cm_daemon_ready(cm_daemon_t *d);
/* Milliseconds on a monotonic clock (uv_now of the loop, updated). */
int64_t cm_daemon_now_ms(cm_daemon_t *d);
/* Unix time in seconds, with fractions. */
double cm_wall_time(void);

/* The /status JSON object (without the trailing newline of the HTTP
 * answer) appended to out: the daemon's fields, then hooks.status's. For
 * answering status requests over NATS as well. 0 or -ENOMEM/-E2BIG. */
int cm_daemon_status_json(cm_daemon_t *d, cm_buf_t *out) __attribute__((warn_unused_result));

/* "<prefix>.<suffix>" into out. 0 or -ENAMETOOLONG. */
int cm_subject(char *out, size_t outlen, const char *prefix, const char *suffix);
/* Sends a heartbeat now (loop thread), besides the periodic ones. */
void cm_daemon_heartbeat_now(cm_daemon_t *d);
/* Publishes a protobuf-c message. */
int cm_daemon_publish_proto(cm_daemon_t *d, const char *subject, const ProtobufCMessage *msg);

#endif
