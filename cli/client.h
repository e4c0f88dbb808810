/* client.h - the chunkmill CLI's side of the jobs API over NATS
 * (docs/jobs.md "NATS request/reply"): one synchronous connection, one
 * request at a time, each answered by {"status":N,"body":{...}} or by a
 * classified failure.
 *
 * Blocking by design: the CLI is a short-lived tool with nothing else to do
 * while it waits (no loop; cm_nats_connect_sync). */
#ifndef CM_CLI_CLIENT_H
#define CM_CLI_CLIENT_H

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/config.h"

typedef struct cm_cli_s cm_cli_t;

typedef struct cm_cli_opts_s {
  const cm_common_cfg_t *nats; /* --nats-url, --prefix, auth, TLS (borrowed) */
  int64_t timeout_ms;          /* per request */
  const char *token;           /* API token sent as "token", or NULL (copied) */
  bool reconnect;              /* keep reconnecting (--wait, watch) */
  /* Set (by a signal handler) to make a waiting request return -EINTR
   * within ~100 ms. May be NULL. Borrowed. */
  volatile sig_atomic_t *cancel;
} cm_cli_opts_t;

/* Connects. 0; or the codes of cm_nats_connect_sync (-EINVAL options,
 * -ECONNREFUSED unreachable, -EACCES credentials refused, -EIO) with the
 * reason in err. */
int cm_cli_open(cm_cli_t **out, const cm_cli_opts_t *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Sends `req` (a JSON object, borrowed; NULL: {}) plus "token" to
 * <prefix>.<op> ("jobs.get", "members", "status") and waits for the reply.
 * 0: *status is the reply's status, *body its body (caller owns it,
 * cJSON_Delete). Otherwise *body is NULL and err says what happened:
 *   -EHOSTUNREACH  no one subscribes to the subject (NATS "no responders"):
 *                  no fetcher with --serve on this prefix;
 *   -ETIMEDOUT     no reply within timeout_ms;
 *   -EACCES        the NATS server refused the publish or the reply inbox
 *                  (permissions of the NATS user);
 *   -ENOTCONN      the connection is closed;
 *   -EBADMSG       the reply is not {"status":N,"body":...};
 *   -EINTR         *cancel was set. */
int cm_cli_request(cm_cli_t *c, const char *op, const cJSON *req, int *status, cJSON **body,
                   char *err, size_t errlen) __attribute__((warn_unused_result));

/* The subject a request for `op` goes to ("chunkmill.jobs.get"), into out. */
void cm_cli_subject(const cm_cli_t *c, const char *op, char *out, size_t outlen);

/* Closes the connection and frees c. NULL-safe. */
void cm_cli_close(cm_cli_t *c);

#endif
