/* natsconn.h - one NATS connection driven by the libuv loop, reconnecting
 * forever, with every callback delivered on the loop thread through a
 * handoff queue.
 *
 * --nats-url is a comma-separated list of servers (one server, or some or
 * all nodes of a cluster): nats.c picks them in random order, also learns
 * the cluster's other nodes from the servers it reaches, and on losing its
 * node moves to another one at once (backoff with jitter only once every
 * known server has failed).
 *
 * nats.c runs message and connection callbacks on its own threads even with
 * the libuv adapter: this module moves them to the loop. Publishing from the
 * loop thread is fine (buffered, non-blocking); blocking calls
 * (natsConnection_Request, Flush) are never made here. */
#ifndef CM_NATSCONN_H
#define CM_NATSCONN_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cm/config.h"

typedef struct cm_nats_s cm_nats_t;

typedef enum {
  CM_NATS_CONNECTED = 1,    /* first connect or reconnect */
  CM_NATS_DISCONNECTED = 2, /* lost; nats.c is reconnecting */
  CM_NATS_CLOSED = 3,       /* after cm_nats_drain/close finished: final */
} cm_nats_event_t;

/* Loop thread. Takes ownership of msg (natsMsg_Destroy it). */
typedef void (*cm_nats_msg_fn)(void *ud, natsMsg *msg);
typedef void (*cm_nats_event_fn)(void *ud, cm_nats_event_t ev);

/* Starts connecting (in the background; retries forever if the server is not
 * up yet). `name` is the client name shown by the server. Errors in the
 * options (an empty item in the --nats-url list, unreadable credentials,
 * bad TLS files) fail here with a message in err. */
int cm_nats_create(cm_nats_t **out, uv_loop_t *loop, const cm_common_cfg_t *cfg,
                   const char *name, cm_nats_event_fn fn, void *ud, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* queue may be NULL. pending_limit_bytes 0 = nats.c default. */
int cm_nats_subscribe(cm_nats_t *n, const char *subject, const char *queue, cm_nats_msg_fn fn,
                      void *ud, natsSubscription **out) __attribute__((warn_unused_result));
/* 0; -ENOTCONN after close (or n NULL); -EMSGSIZE when the message is larger
 * than the server's max_payload (permanent); -EIO otherwise.
 * While reconnecting, nats.c buffers the message (up to 32 MiB). Callers
 * that rely on a retry path elsewhere may ignore the result. */
int cm_nats_publish(cm_nats_t *n, const char *subject, const char *reply, const void *data,
                    size_t len);
/* Stops all subscriptions (messages already pending in nats.c are still
 * delivered). Used at the start of a graceful shutdown. */
void cm_nats_unsubscribe_all(cm_nats_t *n);
/* Drains one subscription (from cm_nats_subscribe's *out): the server stops
 * sending to it, and every message nats.c already holds for it is still
 * delivered to its callback; then done(ud) runs on the loop thread, after
 * the last of those messages. After timeout_ms nats.c closes it and drops
 * what is left (done still runs). 0, or -EIO if the drain could not start
 * (then nothing is called: fall back to cm_nats_unsubscribe_all). */
int cm_nats_drain_sub(cm_nats_t *n, natsSubscription *sub, int64_t timeout_ms,
                      void (*done)(void *ud), void *ud) __attribute__((warn_unused_result));
bool cm_nats_connected(const cm_nats_t *n);
/* The configured server list, passwords and tokens redacted (for logs).
 * Borrowed; lives as long as n. "" for NULL. */
const char *cm_nats_url(const cm_nats_t *n);
/* The server of the current connection, redacted, into out ("" while
 * connected to none). Any thread. */
void cm_nats_server(cm_nats_t *n, char *out, size_t outlen);
/* Reconnects so far (the first connect is not one). Any thread. */
uint64_t cm_nats_reconnects(const cm_nats_t *n);
/* The one URL redactor: in every URL of a comma-separated list, the
 * password (user:PASSWORD@host) or the token (TOKEN@host) becomes three
 * stars; the user name and the host stay. Truncates to outlen. */
void cm_nats_redact_url(const char *in, char *out, size_t outlen);
/* A fresh inbox subject, unique to this connection. Caller frees. */
char *cm_nats_new_inbox(cm_nats_t *n);
natsConnection *cm_nats_conn(cm_nats_t *n);
/* Any thread: hands fn(arg) to the loop thread through the connection's own
 * handoff, for callbacks registered with nats.c directly (natsConnection_*
 * via cm_nats_conn). That handoff outlives nats.c's threads (cm_nats_destroy
 * frees it only after nats_CloseAndWait succeeded, else never), so a
 * callback nats.c runs while the connection is being closed still finds it:
 * the post is then refused. 0, or -ESHUTDOWN (n NULL, or being destroyed:
 * fn is not called, the caller keeps arg); queued items that do not run
 * before the destroy run with cancelled=1. */
int cm_nats_post(cm_nats_t *n, void (*fn)(void *arg, int cancelled), void *arg);
/* Loop thread: the server's words for the first subscription or publish it
 * refused for lack of permission ("Permissions Violation for Subscription
 * to ..."), or NULL. Sticky: a refused subject stays refused. */
const char *cm_nats_refused(const cm_nats_t *n);
/* Messages dropped by nats.c as slow consumer, all subscriptions. */
uint64_t cm_nats_dropped(cm_nats_t *n);

/* Starts draining (unsubscribe, deliver what is pending, flush, close).
 * CM_NATS_CLOSED is delivered when done or after timeout_ms. */
void cm_nats_drain(cm_nats_t *n, int64_t timeout_ms);
/* Loop thread, after CM_NATS_CLOSED (or to abort): destroys the connection
 * and closes the loop handles. NULL-safe. */
void cm_nats_destroy(cm_nats_t *n);

/* Checks the NATS settings of cfg as cm_nats_create would use them (URL
 * syntax as far as nats.c checks it, TLS files readable, certificate and key
 * given together) without connecting. 0, or -EINVAL with the reason in err.
 * For checking the command line before anything is opened. */
int cm_nats_check_options(const cm_common_cfg_t *cfg, char *err, size_t errlen);

/* For a short-lived tool without a loop (the chunkmill CLI): a plain nats.c
 * connection with the servers, auth and TLS of cfg exactly as
 * cm_nats_create sets them, connected (or refused) before this returns. No
 * handoff, no callbacks: the caller uses nats.c's blocking calls on it and
 * destroys it with natsConnection_Destroy. reconnect: a connection lost
 * later is re-established by nats.c in the background (every server, again
 * and again); false: it closes. Errors, with the reason in err (from the
 * server or the TLS library; never a secret):
 *   -EINVAL       the options (a bad --nats-url list, unreadable TLS or
 *                 credentials files): a usage error;
 *   -ECONNREFUSED no server of the list could be reached;
 *   -EACCES       the server refused the credentials;
 *   -EIO          anything else (TLS handshake, protocol). */
int cm_nats_connect_sync(natsConnection **out, const cm_common_cfg_t *cfg, const char *name,
                         bool reconnect, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
