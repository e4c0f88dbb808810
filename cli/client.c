/* client.c - request/reply to the fetcher's job API over one synchronous
 * NATS connection.
 *
 * A request is a private inbox subscription, a publish with that inbox as
 * the reply subject, and a wait for the reply in 100 ms slices. The slices
 * let the wait notice what nats.c only reports asynchronously: a
 * permissions violation (the server answers a refused publish with -ERR,
 * never on the inbox, so the request would otherwise run into its timeout
 * looking like a missing fetcher) and the caller's cancel flag (Ctrl-C).
 * "No responders" (nats-server >= 2.2 with headers, as nats.c negotiates)
 * arrives on the inbox at once as a status message (nats.c's NextMsg
 * returns NATS_NO_RESPONDERS for it). */
#include "client.h"

#include <errno.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/natsconn.h"

struct cm_cli_s {
  natsConnection *nc;
  char *prefix;
  char *token;
  int64_t timeout_ms;
  volatile sig_atomic_t *cancel;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cm_cli_open(cm_cli_t **out, const cm_cli_opts_t *o, char *err, size_t errlen) {
  cm_cli_t *c = calloc(1, sizeof *c);
  int rc;
  *out = NULL;
  if (c == NULL) return -ENOMEM;
  c->prefix = strdup(o->nats->prefix != NULL ? o->nats->prefix : "chunkmill");
  c->token = o->token != NULL ? strdup(o->token) : NULL;
  c->timeout_ms = o->timeout_ms;
  c->cancel = o->cancel;
  if (c->prefix == NULL || (o->token != NULL && c->token == NULL)) {
    cm_cli_close(c);
    return -ENOMEM;
  }
  rc = cm_nats_connect_sync(&c->nc, o->nats, "chunkmill-cli", o->reconnect, err, errlen);
  if (rc != 0) {
    cm_cli_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

void cm_cli_subject(const cm_cli_t *c, const char *op, char *out, size_t outlen) {
  snprintf(out, outlen, "%s.%s", c->prefix, op);
}

/* The server's words for a refused publish or subscription, if any. */
static bool refused(cm_cli_t *c, char *err, size_t errlen, const char *subject) {
  const char *why = NULL;
  natsStatus st = natsConnection_GetLastError(c->nc, &why);
  if (st != NATS_NOT_PERMITTED && (why == NULL || strstr(why, "Permissions Violation") == NULL))
    return false;
  snprintf(err, errlen,
           "the NATS server refused the request to %s: %s (the NATS user needs publish "
           "permission on %s.jobs.>, %s.members and %s.status, and subscribe on _INBOX.>)",
           subject, why != NULL && why[0] != '\0' ? why : natsStatus_GetText(st), c->prefix,
           c->prefix, c->prefix);
  return true;
}

static int parse_reply(natsMsg *msg, int *status, cJSON **body, const char *subject, char *err,
                       size_t errlen) {
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  cJSON *root = cJSON_ParseWithLength(data != NULL ? data : "", (size_t)(len > 0 ? len : 0));
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
  if (root == NULL || !cJSON_IsObject(root) || !cJSON_IsNumber(st) ||
      cJSON_GetObjectItemCaseSensitive(root, "body") == NULL) {
    snprintf(err, errlen,
             "the reply from %s is not {\"status\":N,\"body\":...} (%d bytes): is the fetcher a "
             "chunkmill fetcher of this version?",
             subject, len);
    cJSON_Delete(root);
    return -EBADMSG;
  }
  *status = st->valueint;
  *body = cJSON_DetachItemFromObjectCaseSensitive(root, "body");
  cJSON_Delete(root);
  return 0;
}

int cm_cli_request(cm_cli_t *c, const char *op, const cJSON *req, int *status, cJSON **body,
                   char *err, size_t errlen) {
  char subject[512];
  natsInbox *inbox = NULL;
  natsSubscription *sub = NULL;
  cJSON *msg = NULL;
  char *text = NULL;
  int64_t deadline;
  int rc = 0;
  natsStatus st;

  *body = NULL;
  *status = 0;
  cm_cli_subject(c, op, subject, sizeof subject);
  msg = req != NULL ? cJSON_Duplicate(req, 1) : cJSON_CreateObject();
  if (msg == NULL || (c->token != NULL && cJSON_AddStringToObject(msg, "token", c->token) == NULL) ||
      (text = cJSON_PrintUnformatted(msg)) == NULL) {
    snprintf(err, errlen, "out of memory");
    rc = -ENOMEM;
    goto out;
  }
  if (refused(c, err, errlen, subject)) {
    rc = -EACCES;
    goto out;
  }
  st = natsInbox_Create(&inbox);
  if (st == NATS_OK) st = natsConnection_SubscribeSync(&sub, c->nc, inbox);
  if (st == NATS_OK)
    st = natsConnection_PublishRequest(c->nc, subject, inbox, text, (int)strlen(text));
  if (st != NATS_OK) {
    snprintf(err, errlen, "cannot send the request to %s: %s", subject, natsStatus_GetText(st));
    rc = st == NATS_CONNECTION_CLOSED ? -ENOTCONN : -EIO;
    goto out;
  }
  deadline = now_ms() + c->timeout_ms;
  for (;;) {
    natsMsg *reply = NULL;
    int64_t left = deadline - now_ms();
    if (c->cancel != NULL && *c->cancel) {
      snprintf(err, errlen, "interrupted");
      rc = -EINTR;
      break;
    }
    if (left <= 0) {
      snprintf(err, errlen,
               "no answer on %s within %.1f s: is a fetcher running with --serve and --prefix "
               "%s, and connected to this NATS?",
               subject, (double)c->timeout_ms / 1000.0, c->prefix);
      rc = -ETIMEDOUT;
      break;
    }
    st = natsSubscription_NextMsg(&reply, sub, left < 100 ? left : 100);
    if (st == NATS_NO_RESPONDERS || (st == NATS_OK && natsMsg_IsNoResponders(reply))) {
      snprintf(err, errlen,
               "no fetcher answers %s (nothing subscribes to it): start the fetcher with "
               "--serve and the same --prefix (%s)",
               subject, c->prefix);
      rc = -EHOSTUNREACH;
      natsMsg_Destroy(reply);
      break;
    }
    if (st == NATS_OK) {
      rc = parse_reply(reply, status, body, subject, err, errlen);
      natsMsg_Destroy(reply);
      break;
    }
    if (refused(c, err, errlen, subject)) {
      rc = -EACCES;
      break;
    }
    if (st == NATS_TIMEOUT) continue;
    if (st == NATS_CONNECTION_CLOSED || natsConnection_IsClosed(c->nc)) {
      snprintf(err, errlen, "the NATS connection closed while waiting for %s", subject);
      rc = -ENOTCONN;
      break;
    }
    snprintf(err, errlen, "waiting for the reply on %s: %s", subject, natsStatus_GetText(st));
    rc = -EIO;
    break;
  }

out:
  if (sub != NULL) {
    (void)natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
  }
  natsInbox_Destroy(inbox);
  free(text);
  cJSON_Delete(msg);
  return rc;
}

void cm_cli_close(cm_cli_t *c) {
  if (c == NULL) return;
  if (c->nc != NULL) {
    natsConnection_Close(c->nc);
    natsConnection_Destroy(c->nc);
  }
  free(c->prefix);
  if (c->token != NULL) {
    /* The token is a secret: do not leave it in freed memory. */
    explicit_bzero(c->token, strlen(c->token));
    free(c->token);
  }
  free(c);
}
