/* natsconn.c - a NATS connection whose events arrive on the libuv loop.
 *
 * Threads: nats.c does its socket I/O and calls message and connection
 * callbacks on its own threads; those callbacks only wrap the event and post
 * it to a handoff queue, so everything the owner sees happens on the loop
 * thread. Publishing from the loop thread is safe (nats.c is thread-safe and
 * buffers; its flusher thread writes).
 *
 * Why not nats.c's libuv adapter (docs/design.md proposed it): measured here with
 * nats.c 3.4 and libuv 1.44, a reconnect after the server restarts makes the
 * adapter attach a new uv_poll to a reused socket number while the old
 * handle is still closing, and libuv aborts inside uv_run (reproduced: stop
 * nats-server for 2 s mid-job, restart it, the fetcher dies with SIGABRT in
 * uv__io_poll). The adapter also needs the first connect to block the loop
 * thread. Without it, the first connect is asynchronous ("retry on failed
 * connect") and reconnects are nats.c's own, well-trodden path. Message
 * callbacks ran on nats.c threads either way. */
#include "cm/natsconn.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/buf.h"
#include "cm/handoff.h"
#include "cm/log.h"
#include "cm/redact.h"

#define CM__NATS_MAX_SUBS 16
#define CM__NATS_HANDOFF_CAP 4096
/* Per-subscription buffer inside nats.c while the loop catches up. Flow
 * control (credit, the fetcher's window) keeps real use far below this;
 * crossing it would drop messages (slow consumer), which we count. */
#define CM__NATS_PENDING_MSGS (1 << 20)
#define CM__NATS_PENDING_BYTES (512 * 1024 * 1024)

typedef struct cm__nats_sub_s {
  cm_nats_t *n;
  char *subject;
  char *queue;
  cm_nats_msg_fn fn;
  void *ud;
  natsSubscription *sub;
  void (*drained)(void *ud); /* cm_nats_drain_sub */
  void *drained_ud;
} cm__nats_sub_t;

struct cm_nats_s {
  uv_loop_t *loop;
  natsOptions *opts;
  natsOptions *diag_opts; /* same server, auth and TLS; no retry, no callbacks */
  natsConnection *nc;
  cm_handoff_t *ho;
  cm_nats_event_fn fn;
  void *ud;
  char url[512]; /* the configured list, redacted (logs) */
  char **servers; /* the configured list, split (owned) */
  int nservers;
  /* The server of the current connection (redacted; "" while connected to
   * none), written by nats.c threads in the connection callbacks. */
  pthread_mutex_t server_mu;
  char server[256];
  atomic_uint_fast64_t reconnects;
  cm__nats_sub_t subs[CM__NATS_MAX_SUBS];
  int nsubs;
  atomic_bool connected;
  atomic_bool closing;        /* we asked for the close (drain/destroy) */
  atomic_bool ever_connected; /* for the diagnosis in closed_cb */
  atomic_bool diagnosed;      /* cm__nats_diagnose ran (once is enough) */
  bool draining;
  bool closed_sent;
  struct cm_nats_s *kept_next; /* cm__nats_kept */
  char refused[256]; /* loop thread: the first permissions violation, "" if none */
};

typedef struct cm__nats_delivery_s {
  cm__nats_sub_t *s;
  natsMsg *msg;
} cm__nats_delivery_t;

typedef struct cm__nats_event_s {
  cm_nats_t *n;
  cm_nats_event_t ev;
} cm__nats_event_item_t;

/* ---- nats.c threads -> loop ---- */

static void cm__nats_deliver(void *arg, int cancelled) {
  cm__nats_delivery_t *d = arg;
  if (cancelled)
    natsMsg_Destroy(d->msg);
  else
    d->s->fn(d->s->ud, d->msg);
  free(d);
}

static void cm__nats_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  cm__nats_sub_t *s = closure;
  cm__nats_delivery_t *d = malloc(sizeof(*d));
  if (d == NULL) {
    natsMsg_Destroy(msg);
    return;
  }
  d->s = s;
  d->msg = msg;
  if (cm_handoff_post(s->n->ho, cm__nats_deliver, d) != 0) {
    natsMsg_Destroy(msg);
    free(d);
  }
}

static void cm__nats_emit(void *arg, int cancelled) {
  cm__nats_event_item_t *e = arg;
  cm_nats_t *n = e->n;
  if (!cancelled) {
    if (e->ev == CM_NATS_CLOSED) {
      if (!n->closed_sent) {
        n->closed_sent = true;
        n->fn(n->ud, CM_NATS_CLOSED);
      }
    } else if (!n->closed_sent) {
      n->fn(n->ud, e->ev);
    }
  }
  free(e);
}

static void cm__nats_post_event(cm_nats_t *n, cm_nats_event_t ev) {
  cm__nats_event_item_t *e = malloc(sizeof(*e));
  if (e == NULL) return;
  e->n = n;
  e->ev = ev;
  if (cm_handoff_post(n->ho, cm__nats_emit, e) != 0) free(e);
}

/* Records which server nc is on now (redacted), or none. Any thread. */
static void cm__nats_note_server(cm_nats_t *n, natsConnection *nc) {
  char raw[256] = "";
  char red[256] = "";
  if (nc != NULL && natsConnection_GetConnectedUrl(nc, raw, sizeof(raw)) == NATS_OK)
    cm_nats_redact_url(raw, red, sizeof(red));
  pthread_mutex_lock(&n->server_mu);
  snprintf(n->server, sizeof(n->server), "%s", red);
  pthread_mutex_unlock(&n->server_mu);
}

static void cm__nats_disconnected_cb(natsConnection *nc, void *closure) {
  cm_nats_t *n = closure;
  cm__nats_note_server(n, NULL);
  atomic_store(&n->connected, false);
  cm__nats_post_event(n, CM_NATS_DISCONNECTED);
}

static void cm__nats_reconnected_cb(natsConnection *nc, void *closure) {
  cm_nats_t *n = closure;
  cm__nats_note_server(n, nc);
  atomic_fetch_add(&n->reconnects, 1);
  atomic_store(&n->connected, true);
  atomic_store(&n->ever_connected, true);
  cm__nats_post_event(n, CM_NATS_CONNECTED);
}

/* nats.c reconnect thread, after every server of the list failed once
 * more: exponential backoff from 250 ms, capped at 2 s, with +-50% jitter so
 * that the clients of a restarted cluster do not come back in lockstep.
 * Within a round nats.c tries the next server at once, so losing one node
 * of a cluster costs no wait at all. */
static int64_t cm__nats_reconnect_delay(natsConnection *nc, int attempts, void *closure) {
  double base = 250.0;
  for (int i = 1; i < attempts && base < 2000.0; i++) base *= 2.0;
  if (base > 2000.0) base = 2000.0;
  return (int64_t)(base * (0.5 + (double)rand() / ((double)RAND_MAX + 1.0)));
}

/* nats.c thread, the connection closed by itself before it ever connected.
 * With retry-on-failed-connect, nats.c keeps retrying only while the server
 * is unreachable; on an error it treats as permanent (TLS handshake,
 * authorization) it closes with just "No server available for connection",
 * having cleared the real reason. One synchronous attempt with the same
 * options (no retry, no callbacks) recovers it, so the log says what to
 * fix. The text comes from the server or the TLS library: no secrets. */
static void cm__nats_diagnose(cm_nats_t *n) {
  natsConnection *probe = NULL;
  natsStatus st;
  if (atomic_exchange(&n->diagnosed, true)) return;
  st = natsConnection_Connect(&probe, n->diag_opts);
  if (st != NATS_OK) {
    const char *detail = nats_GetLastError(NULL);
    char stack[512] = "";
    if (detail == NULL || detail[0] == '\0' || strcmp(detail, natsStatus_GetText(st)) == 0) {
      /* Some paths leave only the status text on top: the stack has the
       * TLS library's or the server's words further down. One line. */
      if (nats_GetLastErrorStack(stack, sizeof(stack)) == NATS_OK)
        for (char *c = stack; *c; c++)
          if (*c == '\n' || *c == '\r') *c = ' ';
      detail = stack;
    }
    cm_log_error("nats: cannot connect to %s: %s%s%s", n->url, natsStatus_GetText(st),
                 detail[0] != '\0' ? ": " : "", detail);
  }
  natsConnection_Destroy(probe); /* NULL-safe; closes it if it did connect */
}

static void cm__nats_closed_cb(natsConnection *nc, void *closure) {
  cm_nats_t *n = closure;
  if (!atomic_load(&n->closing) && !atomic_load(&n->ever_connected)) cm__nats_diagnose(n);
  atomic_store(&n->connected, false);
  cm__nats_post_event(n, CM_NATS_CLOSED);
}

/* Loop thread: keeps the first refusal (they do not go away by themselves:
 * a refused subscription is refused again after every reconnect). */
typedef struct {
  cm_nats_t *n;
  char text[256];
} cm__nats_refusal_t;

static void cm__nats_note_refusal(void *arg, int cancelled) {
  cm__nats_refusal_t *r = arg;
  if (!cancelled && r->n->refused[0] == '\0')
    snprintf(r->n->refused, sizeof(r->n->refused), "%s", r->text);
  free(r);
}

static void cm__nats_error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err,
                              void *closure) {
  /* Logging is thread-safe (one write per line). The connection's last
   * error has the server's words, e.g. "Permissions Violation for
   * Subscription to chunkmill.save": say which subject was refused. */
  cm_nats_t *n = closure;
  const char *why = NULL;
  if (natsConnection_GetLastError(nc, &why) == NATS_OK || why == NULL) why = "";
  cm_log_warn("nats: asynchronous error: %s%s%s", natsStatus_GetText(err), why[0] ? ": " : "",
              why);
  if (err == NATS_NOT_PERMITTED || strstr(why, "Permissions Violation") != NULL) {
    /* The server refused a subscription or a publish: the daemon cannot
     * do its job, so it must not look ready (cm_nats_refused). */
    cm__nats_refusal_t *r = malloc(sizeof(*r));
    if (r == NULL) return;
    r->n = n;
    snprintf(r->text, sizeof(r->text), "%s", why[0] ? why : natsStatus_GetText(err));
    if (cm_handoff_post(n->ho, cm__nats_note_refusal, r) != 0) free(r);
  }
}

/* ---- loop thread ---- */

static int cm__nats_subscribe_now(cm_nats_t *n, cm__nats_sub_t *s) {
  natsStatus st;
  if (s->queue != NULL)
    st = natsConnection_QueueSubscribe(&s->sub, n->nc, s->subject, s->queue, cm__nats_on_msg, s);
  else
    st = natsConnection_Subscribe(&s->sub, n->nc, s->subject, cm__nats_on_msg, s);
  if (st == NATS_OK)
    st = natsSubscription_SetPendingLimits(s->sub, CM__NATS_PENDING_MSGS, CM__NATS_PENDING_BYTES);
  if (st != NATS_OK) {
    cm_log_error("nats: cannot subscribe to %s: %s", s->subject, natsStatus_GetText(st));
    /* nats.c closed the connection before it ever connected (a permanent
     * error: TLS, authorization) and the owner is about to give up: say why
     * now, before the closed callback (which would) races with the
     * shutdown. Blocks at most the connect timeout. */
    if (!atomic_load(&n->ever_connected) && natsConnection_IsClosed(n->nc)) cm__nats_diagnose(n);
    return -EIO;
  }
  return 0;
}

/* nats.c thread: the first successful connect (retry-on-failed-connect). */
static void cm__nats_connected_cb(natsConnection *nc, void *closure) {
  cm_nats_t *n = closure;
  cm__nats_note_server(n, nc);
  atomic_store(&n->connected, true);
  atomic_store(&n->ever_connected, true);
  cm__nats_post_event(n, CM_NATS_CONNECTED);
}

void cm_nats_redact_url(const char *in, char *out, size_t outlen) {
  /* nats://user:pass@host -> nats://user:***@host, every URL of a list:
   * never log secrets. One redactor for the whole project (cm/redact). */
  (void)cm_redact_urls(in, out, outlen);
}

/* Splits the comma-separated --nats-url into n->servers (blanks around an
 * item are ignored). An empty item is an error: "a,,b" is a typo. */
static int cm__nats_split_servers(cm_nats_t *n, const char *list, char *err, size_t errlen) {
  const char *p = list;
  int count = 1;
  for (const char *c = list; *c; c++) count += *c == ',';
  n->servers = calloc((size_t)count, sizeof(char *));
  if (n->servers == NULL) return -ENOMEM;
  for (;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma != NULL ? comma : p + strlen(p);
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
    if (end == p) {
      snprintf(err, errlen,
               "invalid value for --nats-url: empty server URL in the list \"%s\" (give "
               "comma-separated URLs such as nats://a:4222,nats://b:4222)",
               n->url);
      return -EINVAL;
    }
    n->servers[n->nservers] = strndup(p, (size_t)(end - p));
    if (n->servers[n->nservers] == NULL) return -ENOMEM;
    n->nservers++;
    if (comma == NULL) break;
    p = comma + 1;
  }
  return 0;
}

static void cm__nats_free_servers(cm_nats_t *n) {
  for (int i = 0; i < n->nservers; i++) free(n->servers[i]);
  free(n->servers);
  n->servers = NULL;
  n->nservers = 0;
}

/* Builds *out. diag: the options of the one-shot diagnostic connect (no
 * retry, no reconnect, no callbacks). */
static int cm__nats_opts(cm_nats_t *n, natsOptions **out, bool diag, const cm_common_cfg_t *cfg,
                         const char *name, char *err, size_t errlen) {
  natsStatus st = natsOptions_Create(out);
  natsOptions *o = *out;
  const char *what = "options";
  /* The whole list, in random order (nats.c shuffles it unless told not
   * to), plus the servers the cluster tells us about (discovered). */
  if (st == NATS_OK)
    st = natsOptions_SetServers(o, (const char **)n->servers, n->nservers), what = "--nats-url";
  if (st == NATS_OK) st = natsOptions_SetName(o, name);
  if (st == NATS_OK) st = natsOptions_SetTimeout(o, 2000);
  if (st == NATS_OK) st = natsOptions_SetMaxReconnect(o, -1);
  /* Backoff and jitter between rounds over the server list (nats.c then
   * ignores its fixed reconnect wait and jitter). */
  if (st == NATS_OK && !diag)
    st = natsOptions_SetCustomReconnectDelay(o, cm__nats_reconnect_delay, n);
  if (st == NATS_OK) st = natsOptions_SetReconnectBufSize(o, 32 * 1024 * 1024);
  /* A node that vanishes without closing its sockets (a partitioned or
   * frozen pod) is given up after 2 unanswered pings, 2 s apart: 4-6 s. */
  if (st == NATS_OK) st = natsOptions_SetPingInterval(o, 2000);
  if (st == NATS_OK) st = natsOptions_SetMaxPingsOut(o, 2);
  if (st == NATS_OK) st = natsOptions_SetSendAsap(o, true);
  if (st == NATS_OK) st = natsOptions_SetIgnoreDiscoveredServers(o, false);
  if (!diag) {
    if (st == NATS_OK) st = natsOptions_SetDisconnectedCB(o, cm__nats_disconnected_cb, n);
    if (st == NATS_OK) st = natsOptions_SetReconnectedCB(o, cm__nats_reconnected_cb, n);
    if (st == NATS_OK) st = natsOptions_SetClosedCB(o, cm__nats_closed_cb, n);
    if (st == NATS_OK) st = natsOptions_SetErrorHandler(o, cm__nats_error_cb, n);
  } else if (st == NATS_OK) {
    st = natsOptions_SetAllowReconnect(o, false);
  }
  if (st == NATS_OK && (cfg->nats_user != NULL || cfg->nats_password != NULL))
    st = natsOptions_SetUserInfo(o, cfg->nats_user, cfg->nats_password), what = "--nats-user";
  if (st == NATS_OK && cfg->nats_token != NULL)
    st = natsOptions_SetToken(o, cfg->nats_token), what = "--nats-token";
  if (st == NATS_OK && cfg->nats_creds != NULL)
    st = natsOptions_SetUserCredentialsFromFiles(o, cfg->nats_creds, NULL),
    what = "--nats-creds";
  if (st == NATS_OK && (cfg->nats_ca != NULL || cfg->nats_cert != NULL || cfg->nats_key != NULL))
    st = natsOptions_SetSecure(o, true), what = "TLS";
  if (st == NATS_OK && cfg->nats_ca != NULL)
    st = natsOptions_LoadCATrustedCertificates(o, cfg->nats_ca), what = "--nats-ca";
  if (st == NATS_OK && (cfg->nats_cert != NULL || cfg->nats_key != NULL)) {
    what = "--nats-cert/--nats-key";
    if (cfg->nats_cert == NULL || cfg->nats_key == NULL)
      st = NATS_INVALID_ARG;
    else
      st = natsOptions_LoadCertificatesChain(o, cfg->nats_cert, cfg->nats_key);
  }
  /* Keep trying forever in the background if the server is not up yet. */
  if (st == NATS_OK && !diag)
    st = natsOptions_SetRetryOnFailedConnect(o, true, cm__nats_connected_cb, n);
  if (st != NATS_OK) {
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, errlen, "NATS %s: %s%s%s", what, natsStatus_GetText(st),
             detail != NULL ? ": " : "", detail != NULL ? detail : "");
    return -EINVAL;
  }
  return 0;
}

int cm_nats_create(cm_nats_t **out, uv_loop_t *loop, const cm_common_cfg_t *cfg, const char *name,
                   cm_nats_event_fn fn, void *ud, char *err, size_t errlen) {
  cm_nats_t *n;
  natsStatus st;
  int rc;
  *out = NULL;
  n = calloc(1, sizeof(*n));
  if (n == NULL) return -ENOMEM;
  n->loop = loop;
  n->fn = fn;
  n->ud = ud;
  atomic_init(&n->connected, false);
  atomic_init(&n->closing, false);
  atomic_init(&n->ever_connected, false);
  atomic_init(&n->diagnosed, false);
  atomic_init(&n->reconnects, 0);
  pthread_mutex_init(&n->server_mu, NULL);
  cm_nats_redact_url(cfg->nats_url, n->url, sizeof(n->url));
  if ((rc = cm__nats_split_servers(n, cfg->nats_url, err, errlen)) != 0) {
    if (rc == -ENOMEM) snprintf(err, errlen, "out of memory");
    cm__nats_free_servers(n);
    pthread_mutex_destroy(&n->server_mu);
    free(n);
    return rc;
  }

  if ((rc = cm_handoff_create(&n->ho, loop, CM__NATS_HANDOFF_CAP)) != 0) {
    snprintf(err, errlen, "handoff: %s", uv_strerror(rc));
    cm__nats_free_servers(n);
    pthread_mutex_destroy(&n->server_mu);
    free(n);
    return rc;
  }
  if ((rc = cm__nats_opts(n, &n->opts, false, cfg, name, err, errlen)) != 0 ||
      (rc = cm__nats_opts(n, &n->diag_opts, true, cfg, name, err, errlen)) != 0)
    goto fail;
  /* Returns at once: connected now, or NATS_NOT_YET_CONNECTED and nats.c
   * keeps trying in the background (connected_cb fires then). */
  st = natsConnection_Connect(&n->nc, n->opts);
  if (st == NATS_OK) {
    cm__nats_note_server(n, n->nc);
    atomic_store(&n->connected, true);
    atomic_store(&n->ever_connected, true);
    cm__nats_post_event(n, CM_NATS_CONNECTED);
  } else if (st == NATS_NOT_YET_CONNECTED) {
    cm_log_warn("nats: %s not reachable yet; retrying in the background", n->url);
  } else {
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, errlen, "NATS connect to %s: %s%s%s", n->url, natsStatus_GetText(st),
             detail != NULL ? ": " : "", detail != NULL ? detail : "");
    rc = -EINVAL;
    goto fail;
  }
  *out = n;
  return 0;

fail:
  natsConnection_Destroy(n->nc);
  natsOptions_Destroy(n->opts);
  natsOptions_Destroy(n->diag_opts);
  cm_handoff_close(n->ho); /* frees itself in its close callback */
  cm__nats_free_servers(n);
  pthread_mutex_destroy(&n->server_mu);
  free(n);
  return rc;
}

int cm_nats_subscribe(cm_nats_t *n, const char *subject, const char *queue, cm_nats_msg_fn fn,
                      void *ud, natsSubscription **out) {
  cm__nats_sub_t *s;
  if (n->nsubs == CM__NATS_MAX_SUBS) return -ENOSPC;
  s = &n->subs[n->nsubs];
  memset(s, 0, sizeof(*s));
  s->n = n;
  s->fn = fn;
  s->ud = ud;
  s->subject = strdup(subject);
  s->queue = queue != NULL ? strdup(queue) : NULL;
  if (s->subject == NULL || (queue != NULL && s->queue == NULL)) {
    free(s->subject);
    free(s->queue);
    return -ENOMEM;
  }
  n->nsubs++;
  /* Also before the first connect: nats.c sends it once connected, and
   * again after every reconnect. */
  {
    int rc = cm__nats_subscribe_now(n, s);
    if (rc != 0) return rc;
  }
  if (out != NULL) *out = s->sub;
  return 0;
}

int cm_nats_publish(cm_nats_t *n, const char *subject, const char *reply, const void *data,
                    size_t len) {
  natsStatus st;
  if (n == NULL || n->nc == NULL) return -ENOTCONN;
  if (reply != NULL)
    st = natsConnection_PublishRequest(n->nc, subject, reply, data, (int)len);
  else
    st = natsConnection_Publish(n->nc, subject, data, (int)len);
  if (st != NATS_OK) {
    if (st == NATS_MAX_PAYLOAD) return -EMSGSIZE; /* permanent: too big for the server */
    return st == NATS_CONNECTION_CLOSED ? -ENOTCONN : -EIO;
  }
  return 0;
}

void cm_nats_unsubscribe_all(cm_nats_t *n) {
  for (int i = 0; i < n->nsubs; i++)
    if (n->subs[i].sub != NULL) (void)natsSubscription_Unsubscribe(n->subs[i].sub);
}

static void cm__nats_sub_drained(void *arg, int cancelled) {
  cm__nats_sub_t *s = arg;
  if (!cancelled && s->drained != NULL) s->drained(s->drained_ud);
}

/* nats.c thread, after the subscription's last callback returned: queued
 * behind every message that callback handed to the loop. */
static void cm__nats_sub_complete(void *closure) {
  cm__nats_sub_t *s = closure;
  if (cm_handoff_post(s->n->ho, cm__nats_sub_drained, s) != 0) {
    /* Closing: the owner is being torn down and waits for nothing. */
  }
}

int cm_nats_drain_sub(cm_nats_t *n, natsSubscription *sub, int64_t timeout_ms,
                      void (*done)(void *ud), void *ud) {
  for (int i = 0; i < n->nsubs; i++) {
    cm__nats_sub_t *s = &n->subs[i];
    if (s->sub != sub || sub == NULL) continue;
    s->drained = done;
    s->drained_ud = ud;
    if (natsSubscription_SetOnCompleteCB(sub, cm__nats_sub_complete, s) != NATS_OK ||
        natsSubscription_DrainTimeout(sub, timeout_ms) != NATS_OK) {
      s->drained = NULL;
      return -EIO;
    }
    return 0;
  }
  return -EIO;
}

bool cm_nats_connected(const cm_nats_t *n) { return n != NULL && atomic_load(&n->connected); }

const char *cm_nats_url(const cm_nats_t *n) { return n != NULL ? n->url : ""; }

void cm_nats_server(cm_nats_t *n, char *out, size_t outlen) {
  if (outlen == 0) return;
  out[0] = '\0';
  if (n == NULL) return;
  pthread_mutex_lock(&n->server_mu);
  snprintf(out, outlen, "%s", n->server);
  pthread_mutex_unlock(&n->server_mu);
}

uint64_t cm_nats_reconnects(const cm_nats_t *n) {
  return n != NULL ? (uint64_t)atomic_load(&n->reconnects) : 0;
}

char *cm_nats_new_inbox(cm_nats_t *n) {
  natsInbox *inbox = NULL;
  char *s;
  if (natsInbox_Create(&inbox) != NATS_OK) return NULL;
  s = strdup(inbox);
  natsInbox_Destroy(inbox);
  return s;
}

const char *cm_nats_refused(const cm_nats_t *n) {
  return n != NULL && n->refused[0] != '\0' ? n->refused : NULL;
}

natsConnection *cm_nats_conn(cm_nats_t *n) { return n->nc; }

int cm_nats_post(cm_nats_t *n, void (*fn)(void *arg, int cancelled), void *arg) {
  if (n == NULL || n->ho == NULL) return -ESHUTDOWN;
  return cm_handoff_post(n->ho, fn, arg);
}

uint64_t cm_nats_dropped(cm_nats_t *n) {
  uint64_t total = 0;
  for (int i = 0; i < n->nsubs; i++) {
    int64_t d = 0;
    if (n->subs[i].sub != NULL && natsSubscription_GetDropped(n->subs[i].sub, &d) == NATS_OK)
      total += (uint64_t)d;
  }
  return total;
}

void cm_nats_drain(cm_nats_t *n, int64_t timeout_ms) {
  if (n->draining) return;
  n->draining = true;
  atomic_store(&n->closing, true);
  if (n->nc == NULL || natsConnection_DrainTimeout(n->nc, timeout_ms) != NATS_OK) {
    /* Never connected (or already closed): nothing to drain. */
    cm__nats_post_event(n, CM_NATS_CLOSED);
  }
}

/* Connections whose nats.c threads did not stop in time (see
 * cm_nats_destroy): kept, and reachable, for as long as the process lives. */
static cm_nats_t *cm__nats_kept;

void cm_nats_destroy(cm_nats_t *n) {
  natsStatus st;
  if (n == NULL) return;
  atomic_store(&n->closing, true);
  /* No nats.c thread may stay blocked in a post waiting for this (loop)
   * thread, which is about to wait for them: posts fail from now on. */
  cm_handoff_stop(n->ho);
  for (int i = 0; i < n->nsubs; i++) {
    natsSubscription_Destroy(n->subs[i].sub);
    n->subs[i].sub = NULL;
  }
  if (n->nc != NULL) {
    natsConnection_Close(n->nc);
    natsConnection_Destroy(n->nc);
    n->nc = NULL;
  }
  /* Messages still queued for the loop are released now, while the library
   * is alive (natsMsg_Destroy after nats_CloseAndWait crashes in nats.c's
   * GC). The handoff's memory is freed by its close callback, which cannot
   * run before this (loop) thread returns to the loop. */
  cm_handoff_close(n->ho);
  /* nats.c's threads may still be finishing a callback that reads n and
   * posts into the handoff: wait for the library to stop. */
  st = nats_CloseAndWait(2000);
  if (st == NATS_TIMEOUT) {
    /* A nats.c thread is still running and may yet call one of our
     * callbacks: freeing n or the handoff now would be a use after free.
     * Keep both for the rest of the process (it is exiting); posts keep
     * failing with -ESHUTDOWN. */
    cm_log_warn("nats: library threads still running 2 s after close; keeping their state");
    cm_handoff_keep(n->ho);
    n->kept_next = cm__nats_kept;
    cm__nats_kept = n;
    return;
  }
  for (int i = 0; i < n->nsubs; i++) {
    free(n->subs[i].subject);
    free(n->subs[i].queue);
  }
  natsOptions_Destroy(n->opts);
  natsOptions_Destroy(n->diag_opts);
  cm__nats_free_servers(n);
  pthread_mutex_destroy(&n->server_mu);
  free(n);
}

int cm_nats_check_options(const cm_common_cfg_t *cfg, char *err, size_t errlen) {
  natsOptions *o = NULL;
  /* The diagnostic variant registers no callbacks: a scratch cm_nats_t
   * holding only the split server list is enough. */
  cm_nats_t *n = calloc(1, sizeof *n);
  int rc;
  if (n == NULL) return -ENOMEM;
  cm_nats_redact_url(cfg->nats_url, n->url, sizeof(n->url));
  rc = cm__nats_split_servers(n, cfg->nats_url, err, errlen);
  if (rc == -ENOMEM) snprintf(err, errlen, "out of memory");
  if (rc == 0) rc = cm__nats_opts(n, &o, true, cfg, "check", err, errlen);
  natsOptions_Destroy(o);
  cm__nats_free_servers(n);
  free(n);
  return rc;
}

int cm_nats_connect_sync(natsConnection **out, const cm_common_cfg_t *cfg, const char *name,
                         bool reconnect, char *err, size_t errlen) {
  natsOptions *o = NULL;
  natsStatus st;
  cm_nats_t *n = calloc(1, sizeof *n);
  int rc;

  *out = NULL;
  if (n == NULL) return -ENOMEM;
  cm_nats_redact_url(cfg->nats_url, n->url, sizeof(n->url));
  rc = cm__nats_split_servers(n, cfg->nats_url, err, errlen);
  if (rc == -ENOMEM) snprintf(err, errlen, "out of memory");
  /* The diagnostic variant: no callbacks (none of them may run without the
   * loop and the handoff), one connect attempt per server. */
  if (rc == 0) rc = cm__nats_opts(n, &o, true, cfg, name, err, errlen);
  if (rc == 0 && reconnect) {
    st = natsOptions_SetAllowReconnect(o, true);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(o, 250);
    if (st == NATS_OK) st = natsOptions_SetReconnectJitter(o, 250, 1000);
    if (st != NATS_OK) {
      snprintf(err, errlen, "NATS options: %s", natsStatus_GetText(st));
      rc = -EINVAL;
    }
  }
  if (rc == 0) {
    st = natsConnection_Connect(out, o);
    if (st != NATS_OK) {
      const char *detail = nats_GetLastError(NULL);
      /* nats.c's text is often "(conn.c:2088): <the status text>" again. */
      if (detail == NULL || strstr(detail, natsStatus_GetText(st)) != NULL) detail = "";
      snprintf(err, errlen, "cannot connect to NATS at %s: %s%s%s", n->url, natsStatus_GetText(st),
               detail[0] != '\0' ? ": " : "", detail);
      if (st == NATS_NO_SERVER || st == NATS_IO_ERROR || st == NATS_TIMEOUT)
        rc = -ECONNREFUSED;
      else if (st == NATS_CONNECTION_AUTH_FAILED || st == NATS_NOT_PERMITTED)
        rc = -EACCES;
      else
        rc = -EIO;
      natsConnection_Destroy(*out);
      *out = NULL;
    }
  }
  natsOptions_Destroy(o);
  cm__nats_free_servers(n);
  free(n);
  return rc;
}
