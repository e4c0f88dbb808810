/* http.c - probe/metrics HTTP server on libuv, its I/O-free request parser,
 * and a blocking probe client.
 *
 * HTTP/1.1 persistent connections, answered one request at a time in the
 * order received (pipelining). A connection's memory is bounded by one
 * request, the pipelined bytes after it and one reply. Idle and slow
 * clients cannot lock probes out: each request has a deadline from the
 * moment the server waits for it, and at the connection cap the connection
 * idle longest is closed to accept the new one. */
#include "cm/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cm/log.h"

/* Largest body a handler may produce (/metrics of a busy fetcher). */
#define CM_HTTP_MAX_BODY (4u << 20)
/* Status line and headers we write around the body. */
#define CM_HTTP_MAX_HEAD 512
/* After answering, how long to wait for the client to close before we do:
 * closing with unread request bytes makes the kernel send RST, which can
 * destroy the response before the client reads it (e.g. after a 431). */
#define CM_HTTP_LINGER_MS 2000
/* The kernel's accept queue: bursts of connects wait here, not in SYN
 * retries (the listener drains it every loop turn). */
#define CM_HTTP_BACKLOG 1024
/* Pipelined bytes held after the request being answered. */
#define CM_HTTP_MAX_PIPELINE (4 * CM_HTTP_MAX_REQUEST)

/* ------------------------------------------------------------------------ */
/* Request parser                                                            */

/* Header values we keep (the others are skipped). */
enum { HDR_NONE = 0, HDR_AUTHORIZATION, HDR_CONTENT_TYPE, HDR_N };

struct cm_httpreq_s {
  http_parser parser;
  http_parser_settings settings;
  size_t max;      /* bytes of the head; with no body cap set, of the whole request */
  size_t max_body; /* 0: the body counts against `max` (see cm_httpreq_set_max_body) */
  size_t fed;      /* bytes given to http_parser so far */
  size_t used;    /* bytes of the last feed that belong to the request */
  int state;      /* 0 reading, 1 complete, <0 error (sticky) */
  bool done;      /* set by the callbacks */
  bool headers_done;
  bool too_big;     /* Content-Length over the cap: 413 at once */
  bool body_unread; /* GET/HEAD answered at its head, a body following */
  bool keep_alive;  /* the client allows another request on the connection */
  cm_buf_t url;   /* request target as received */
  char method[24];
  char *path;     /* owned: url without query and fragment */
  char *query;    /* owned: after '?', without the fragment; "" when none */
  /* Header parsing: http_parser may split a name or value over callbacks. */
  char field[32];   /* the name being received (longer names match nothing) */
  size_t field_len;
  bool in_value;    /* the last callback was a value */
  int cur;          /* HDR_* of the value being received */
  bool dup_header;  /* a kept header appeared twice: refused (-EINVAL) */
  bool have[HDR_N];
  cm_buf_t hdr[HDR_N]; /* values of the kept headers */
  cm_buf_t body;
  cm_http_request_t view; /* what cm_httpreq_request returns */
};

static int on_header_field(http_parser *p, const char *at, size_t len) {
  cm_httpreq_t *r = p->data;
  if (r->in_value) {
    r->in_value = false;
    r->field_len = 0;
  }
  if (r->field_len + len < sizeof r->field) memcpy(r->field + r->field_len, at, len);
  /* Too long for any name we keep: remember only that it is too long. */
  r->field_len += len;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  cm_httpreq_t *r = p->data;
  if (!r->in_value) {
    r->in_value = true;
    r->cur = HDR_NONE;
    if (r->field_len < sizeof r->field) {
      r->field[r->field_len] = '\0';
      if (strcasecmp(r->field, "Authorization") == 0)
        r->cur = HDR_AUTHORIZATION;
      else if (strcasecmp(r->field, "Content-Type") == 0)
        r->cur = HDR_CONTENT_TYPE;
    }
    if (r->cur != HDR_NONE) {
      /* Two Authorization (or Content-Type) headers: which one counts is
       * ambiguous between proxies and us, so the request is refused. */
      if (r->have[r->cur]) r->dup_header = true;
      r->have[r->cur] = true;
    }
  }
  if (r->cur == HDR_NONE || r->dup_header) return 0;
  /* Capped by the head cap like the URL: fails only on OOM. */
  return cm_buf_append(&r->hdr[r->cur], at, len) == 0 ? 0 : -1;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  cm_httpreq_t *r = p->data;
  size_t cap = r->max_body > 0 ? r->max_body : r->max;
  if (r->body.len + len > cap) {
    r->too_big = true;
    http_parser_pause(p, 1);
    return 0;
  }
  return cm_buf_append(&r->body, at, len) == 0 ? 0 : -1;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  cm_httpreq_t *r = p->data;
  /* The URL is never longer than the bytes fed, which are capped, so this
   * only fails on OOM; http_parser then reports a callback error (-EINVAL). */
  return cm_buf_append(&r->url, at, len) == 0 ? 0 : -1;
}

static int on_headers_complete(http_parser *p) {
  cm_httpreq_t *r = p->data;
  bool has_body = (p->flags & F_CHUNKED) != 0 ||
                  ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > 0);
  r->headers_done = true;
  r->keep_alive = http_should_keep_alive(p) != 0 && !p->upgrade;
  /* A declared body that cannot fit is refused now, not after reading it. */
  if ((p->flags & F_CONTENTLENGTH) != 0 &&
      p->content_length > (r->max_body > 0 ? r->max_body : r->max)) {
    r->too_big = true;
    http_parser_pause(p, 1);
    return 0;
  }
  /* GET and HEAD have no body we care about: answer as soon as the head is
   * in, rather than wait for a body that a broken client might never end.
   * The unread body ends the connection after the answer. */
  if ((p->method == HTTP_GET || p->method == HTTP_HEAD) && (has_body || p->upgrade)) {
    r->done = true;
    r->body_unread = true;
    http_parser_pause(p, 1);
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  cm_httpreq_t *r = p->data;
  r->done = true;
  /* Stop right after this request: what follows is the next one. */
  http_parser_pause(p, 1);
  return 0;
}

static void req_init(cm_httpreq_t *r) {
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
  r->fed = r->used = 0;
  r->state = 0;
  r->done = r->headers_done = r->too_big = r->body_unread = r->keep_alive = false;
  r->method[0] = '\0';
  r->field_len = 0;
  r->in_value = false;
  r->cur = HDR_NONE;
  r->dup_header = false;
  for (int i = 0; i < HDR_N; i++) r->have[i] = false;
  memset(&r->view, 0, sizeof r->view);
}

/* The body may be as large as the head cap (legacy) or as the body cap. */
static void bufs_init(cm_httpreq_t *r) {
  cm_buf_init(&r->url, r->max);
  for (int i = 0; i < HDR_N; i++) cm_buf_init(&r->hdr[i], r->max);
  cm_buf_init(&r->body, r->max_body > 0 ? r->max_body : r->max);
}

static void bufs_free(cm_httpreq_t *r) {
  cm_buf_free(&r->url);
  for (int i = 0; i < HDR_N; i++) cm_buf_free(&r->hdr[i]);
  cm_buf_free(&r->body);
}

int cm_httpreq_create(cm_httpreq_t **out, size_t max_bytes) {
  cm_httpreq_t *r = calloc(1, sizeof *r);
  if (r == NULL) return -ENOMEM;
  http_parser_settings_init(&r->settings);
  r->settings.on_url = on_url;
  r->settings.on_header_field = on_header_field;
  r->settings.on_header_value = on_header_value;
  r->settings.on_body = on_body;
  r->settings.on_headers_complete = on_headers_complete;
  r->settings.on_message_complete = on_message_complete;
  r->max = max_bytes;
  bufs_init(r);
  req_init(r);
  *out = r;
  return 0;
}

void cm_httpreq_set_max_body(cm_httpreq_t *r, size_t max_body) {
  bufs_free(r);
  r->max_body = max_body;
  bufs_init(r);
}

void cm_httpreq_reset(cm_httpreq_t *r) {
  /* Free, not just reset: a keep-alive connection should not hold a 64 KiB
   * body buffer while it idles. */
  bufs_free(r);
  bufs_init(r);
  free(r->path);
  free(r->query);
  r->path = r->query = NULL;
  req_init(r);
}

void cm_httpreq_destroy(cm_httpreq_t *r) {
  if (r == NULL) return;
  bufs_free(r);
  free(r->path);
  free(r->query);
  free(r);
}

/* A header value without the blanks http_parser leaves at its end. */
static const char *hdr_value(cm_httpreq_t *r, int which) {
  cm_buf_t *b = &r->hdr[which];
  if (!r->have[which]) return NULL;
  if (b->data == NULL) return "";
  while (b->len > 0 && (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t')) b->len--;
  b->data[b->len] = '\0';
  return b->data;
}

/* Extracts the path: origin-form "/a?b" -> "/a"; absolute-form
 * "http://h/a?b" -> "/a". */
static int finish(cm_httpreq_t *r) {
  const char *u = r->url.data != NULL ? r->url.data : "";
  size_t ulen = r->url.len;
  const char *p = u;
  size_t plen = ulen;

  if (ulen == 0) return -EINVAL;
  if (u[0] != '/') {
    struct http_parser_url pu;
    http_parser_url_init(&pu);
    if (http_parser_parse_url(u, ulen, r->parser.method == HTTP_CONNECT, &pu) == 0 &&
        (pu.field_set & (1 << UF_PATH)) != 0) {
      /* From the path on: the query and fragment are cut off below. */
      p = u + pu.field_data[UF_PATH].off;
      plen = ulen - pu.field_data[UF_PATH].off;
    }
  }
  const char *q = NULL; /* the query, up to the fragment or the end */
  size_t qlen = 0;
  if (r->dup_header) return -EINVAL;
  for (size_t i = 0; i < plen; i++) {
    if (p[i] == '?' || p[i] == '#') {
      if (p[i] == '?') {
        q = p + i + 1;
        const char *end = memchr(q, '#', (size_t)(u + ulen - q));
        qlen = end != NULL ? (size_t)(end - q) : (size_t)(u + ulen - q);
      }
      plen = i;
      break;
    }
  }
  r->path = malloc(plen + 1);
  r->query = malloc(qlen + 1);
  if (r->path == NULL || r->query == NULL) return -ENOMEM;
  if (plen > 0) memcpy(r->path, p, plen);
  r->path[plen] = '\0';
  if (qlen > 0) memcpy(r->query, q, qlen);
  r->query[qlen] = '\0';
  snprintf(r->method, sizeof r->method, "%s", http_method_str(r->parser.method));
  r->view.method = r->method;
  r->view.path = r->path;
  r->view.query = r->query;
  r->view.authorization = hdr_value(r, HDR_AUTHORIZATION);
  r->view.content_type = hdr_value(r, HDR_CONTENT_TYPE);
  r->view.body = r->body.data != NULL ? r->body.data : "";
  r->view.body_len = r->body.len;
  return 1;
}

/* Bytes http_parser may have been given in total: the head cap while the
 * head is read; then, with a body cap, room for the body and the framing of
 * a chunked one (a bound, not an exact count: the body itself is counted in
 * on_body). */
static size_t feed_limit(const cm_httpreq_t *r) {
  if (!r->headers_done || r->max_body == 0) return r->max;
  return r->max + 2 * r->max_body + 1024;
}

int cm_httpreq_feed(cm_httpreq_t *r, const char *data, size_t len) {
  if (r->state != 0) return r->state;
  r->used = 0;
  if (len == 0) return 0; /* http_parser would take 0 bytes as EOF */

  /* Never hand the parser more than the cap: the part that fits may still
   * complete the request (what follows it is the caller's: pipelining).
   * Once the head is in, the cap grows to the body's: feed on. */
  size_t off = 0;
  while (off < len) {
    size_t limit = feed_limit(r);
    size_t room = limit > r->fed ? limit - r->fed : 0;
    if (room == 0) {
      /* Over the cap in the head: 431; in the body: 413. */
      r->state = r->headers_done ? -EMSGSIZE : -E2BIG;
      return r->state;
    }
    size_t n = len - off < room ? len - off : room;
    size_t done = http_parser_execute(&r->parser, &r->settings, data + off, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    r->fed += done;
    off += done;
    if (r->too_big) {
      r->state = -EMSGSIZE;
      return r->state;
    }
    if (r->done) {
      r->used = off;
      r->state = finish(r);
      return r->state;
    }
    if (e != HPE_OK || done != n) {
      r->state = -EINVAL;
      return r->state;
    }
  }
  return 0;
}

size_t cm_httpreq_used(const cm_httpreq_t *r) { return r->state == 1 ? r->used : 0; }

bool cm_httpreq_keep_alive(const cm_httpreq_t *r) {
  return r->state == 1 && r->keep_alive && !r->body_unread;
}

const char *cm_httpreq_method(const cm_httpreq_t *r) { return r->state == 1 ? r->method : NULL; }

const char *cm_httpreq_path(const cm_httpreq_t *r) { return r->state == 1 ? r->path : NULL; }

const cm_http_request_t *cm_httpreq_request(const cm_httpreq_t *r) {
  return r->state == 1 ? &r->view : NULL;
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 413: return "Content Too Large";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  default: return status < 400 ? "OK" : "Error";
  }
}

int cm_http_format_response(cm_buf_t *out, int status, const char *content_type,
                            const char *body, size_t len, int flags) {
  bool head_only = (flags & CM_HTTP_HEAD_ONLY) != 0;
  bool keep = (flags & CM_HTTP_KEEP_ALIVE) != 0;
  if (status < 100 || status > 599) return -EINVAL;
  if (body == NULL && len > 0) return -EINVAL;
  if (content_type == NULL) content_type = "text/plain; charset=utf-8";
  /* A CR or LF would let a handler inject headers. */
  if (strpbrk(content_type, "\r\n") != NULL) return -EINVAL;

  size_t start = out->len;
  int rc = cm_buf_printf(out,
                         "HTTP/1.1 %d %s\r\n"
                         "Content-Type: %s\r\n"
                         "Content-Length: %zu\r\n"
                         "%s"
                         "Cache-Control: no-store\r\n"
                         "Connection: %s\r\n"
                         "\r\n",
                         status, reason(status), content_type, len,
                         status == 405 ? "Allow: GET, HEAD, POST\r\n" : "",
                         keep ? "keep-alive" : "close");
  if (rc == 0 && !head_only && len > 0) rc = cm_buf_append(out, body, len);
  if (rc < 0) {
    out->len = start;
    if (out->data != NULL) out->data[start] = '\0';
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Address parsing (server and probe)                                        */

/* "HOST:PORT", ":PORT", "PORT", "[V6]:PORT". `any` is the host used when none
 * is given. Numeric hosts only, plus "localhost": no DNS on the loop. */
static int parse_addr(const char *addr, const char *any, struct sockaddr_storage *ss) {
  char host[64];
  const char *port_s;
  const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;

  if (addr == NULL || *addr == '\0') return -EINVAL;
  if (colon == NULL) {
    snprintf(host, sizeof host, "%s", any);
    port_s = addr;
  } else {
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) return -EINVAL;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
      memmove(host, host + 1, hl - 2);
      host[hl - 2] = '\0';
    }
    if (host[0] == '\0') snprintf(host, sizeof host, "%s", any);
    port_s = colon + 1;
  }

  if (*port_s == '\0' || strlen(port_s) > 5) return -EINVAL;
  long port = 0;
  for (const char *p = port_s; *p != '\0'; p++) {
    if (*p < '0' || *p > '9') return -EINVAL;
    port = port * 10 + (*p - '0');
  }
  if (port > 65535) return -EINVAL;

  if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -EINVAL;
}

static socklen_t addr_len(const struct sockaddr_storage *ss) {
  return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* ------------------------------------------------------------------------ */
/* Server                                                                    */

typedef enum { CONN_READING, CONN_WRITING, CONN_LINGER } conn_state_t;

typedef struct cm_http_conn_s cm_http_conn_t;

struct cm_http_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  cm_http_handler_fn fn;
  void *ud;
  int port;
  bool closing;
  bool listener_closed;
  size_t live;      /* connections not yet freed */
  size_t open;      /* connections not closing: each holds a descriptor */
  size_t max_conns; /* cap on `open` */
  /* Open connections, least recently active first: the eviction order. */
  cm_http_conn_t *head, *tail;
  uint64_t evicted, evicted_logged;
  uint64_t last_evict_log_ms;
  /* One read buffer for all connections: libuv hands each read to on_read
   * before it allocates the next, and on_read keeps what it needs. */
  char rbuf[16384];
};

struct cm_http_conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  cm_http_t *srv;
  cm_httpreq_t *req;
  cm_buf_t out;
  cm_buf_t pending; /* bytes received after the request being answered */
  conn_state_t state;
  bool closing;
  bool peer_eof;
  bool reading;
  bool keep_alive; /* of the response being written */
  int handles_open; /* tcp + timer; memory goes when both close callbacks ran */
  cm_http_conn_t *prev, *next;
};

static void srv_maybe_free(cm_http_t *h) {
  if (h->closing && h->listener_closed && h->live == 0) free(h);
}

static void list_unlink(cm_http_t *h, cm_http_conn_t *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (h->head == c)
    h->head = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  else if (h->tail == c)
    h->tail = c->prev;
  c->prev = c->next = NULL;
}

static void list_append(cm_http_t *h, cm_http_conn_t *c) {
  c->next = NULL;
  c->prev = h->tail;
  if (h->tail != NULL)
    h->tail->next = c;
  else
    h->head = c;
  h->tail = c;
}

/* The connection did something useful: last in the eviction order. */
static void touch(cm_http_conn_t *c) {
  list_unlink(c->srv, c);
  list_append(c->srv, c);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
  cm_http_conn_t *c = handle->data;
  if (--c->handles_open > 0) return;
  cm_http_t *h = c->srv;
  cm_httpreq_destroy(c->req);
  cm_buf_free(&c->out);
  cm_buf_free(&c->pending);
  free(c);
  h->live--;
  srv_maybe_free(h);
}

static void conn_close(cm_http_conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  c->srv->open--;
  /* Unlink now so eviction and cm_http_close only see open connections. */
  list_unlink(c->srv, c);
  /* uv_close closes the descriptor at once (the slot is free for the next
   * accept); pending write/shutdown requests get UV_ECANCELED. */
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t) {
  /* No full request in time, a response not taken in time, or linger over:
   * either way, done. */
  conn_close(t->data);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  cm_http_conn_t *c = handle->data;
  (void)suggested;
  *buf = uv_buf_init(c->srv->rbuf, sizeof c->srv->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void read_on(cm_http_conn_t *c) {
  if (c->reading || c->peer_eof) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    conn_close(c);
    return;
  }
  c->reading = true;
}

static void read_off(cm_http_conn_t *c) {
  if (!c->reading) return;
  (void)uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = false;
}

static void conn_feed(cm_http_conn_t *c, const char *data, size_t len);
static void wait_request(cm_http_conn_t *c);

static void on_shutdown(uv_shutdown_t *req, int status) {
  cm_http_conn_t *c = req->data;
  if (c->closing) return;
  if (status < 0 || c->peer_eof) conn_close(c);
  /* Otherwise keep discarding input until the client closes or the linger
   * timer fires. */
}

static void on_write(uv_write_t *req, int status) {
  cm_http_conn_t *c = req->data;
  if (c->closing) return;
  cm_buf_free(&c->out);
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->keep_alive && !c->srv->closing) {
    /* Next request: maybe already here (pipelined). */
    cm_httpreq_reset(c->req);
    touch(c);
    wait_request(c);
    return;
  }
  if (c->peer_eof) {
    conn_close(c);
    return;
  }
  c->state = CONN_LINGER;
  cm_buf_free(&c->pending);
  (void)uv_timer_start(&c->timer, on_timer, CM_HTTP_LINGER_MS, 0);
  read_on(c); /* to discard */
  if (c->closing) return;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) conn_close(c);
}

/* Builds the reply for the parser's verdict and starts writing it. */
static void respond(cm_http_conn_t *c, int verdict) {
  cm_buf_t body;
  const char *ctype = NULL;
  int status;
  bool head = false;

  const char *fixed = NULL; /* canned body for errors we answer ourselves */

  (void)uv_timer_stop(&c->timer);
  /* One response at a time: the next request waits in the kernel (or in
   * `pending`) until this one is written. */
  read_off(c);
  c->keep_alive = false;
  cm_buf_init(&body, CM_HTTP_MAX_BODY);
  if (verdict == -E2BIG) {
    status = 431;
    fixed = "{\"error\":\"request head larger than 8 KiB\"}\n";
  } else if (verdict == -EMSGSIZE) {
    status = 413;
    fixed = "{\"error\":\"request body larger than 64 KiB\"}\n";
  } else if (verdict < 0) {
    status = 400;
    fixed = "{\"error\":\"bad request\"}\n";
  } else {
    const cm_http_request_t *req = cm_httpreq_request(c->req);
    head = strcmp(req->method, "HEAD") == 0;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "POST") != 0 && !head) {
      status = 405;
      fixed = "{\"error\":\"method not allowed\"}\n";
    } else {
      c->keep_alive = cm_httpreq_keep_alive(c->req) && !c->peer_eof;
      status = c->srv->fn(c->srv->ud, req, &body, &ctype);
      if (status < 100 || status > 599) {
        cm_log_error("http: handler returned status %d for %s", status,
                     cm_httpreq_path(c->req));
        status = 500;
        ctype = NULL;
        cm_buf_reset(&body);
      }
    }
  }
  /* JSON, like the job API's errors: a client of the API parses every
   * answer the same way. A failed append leaves the body empty, which is
   * still a valid reply. */
  if (fixed != NULL) {
    ctype = "application/json";
    if (cm_buf_puts(&body, fixed) < 0) cm_buf_reset(&body);
  }

  int flags = (head ? CM_HTTP_HEAD_ONLY : 0) | (c->keep_alive ? CM_HTTP_KEEP_ALIVE : 0);
  cm_buf_init(&c->out, CM_HTTP_MAX_BODY + CM_HTTP_MAX_HEAD);
  int rc = cm_http_format_response(&c->out, status, ctype, body.data, body.len, flags);
  if (rc < 0) {
    /* Bad content type from the handler, or OOM: still answer something. */
    c->keep_alive = false;
    cm_buf_reset(&c->out);
    rc = cm_http_format_response(&c->out, 500, NULL, NULL, 0, head ? CM_HTTP_HEAD_ONLY : 0);
  }
  cm_buf_free(&body);
  if (rc < 0) {
    conn_close(c);
    return;
  }

  c->state = CONN_WRITING;
  /* A client that does not take its response is dropped in time too. */
  (void)uv_timer_start(&c->timer, on_timer, CM_HTTP_WRITE_MS, 0);
  uv_buf_t b = uv_buf_init(c->out.data, (unsigned int)c->out.len);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) conn_close(c);
}

/* Feeds received bytes to the request in progress; a complete request is
 * answered, and the bytes after it kept for the next one. */
static void conn_feed(cm_http_conn_t *c, const char *data, size_t len) {
  int rc = cm_httpreq_feed(c->req, data, len);
  if (rc == 0) return;
  if (rc == 1) {
    size_t used = cm_httpreq_used(c->req);
    if (used < len && cm_buf_append(&c->pending, data + used, len - used) < 0) {
      /* More pipelined bytes than we hold: answer this one and close. */
      cm_buf_free(&c->pending);
      c->peer_eof = true; /* no further request will be read */
    }
  }
  respond(c, rc);
}

/* Starts waiting for the next request on c: header deadline, then the
 * bytes already received, then the socket. */
static void wait_request(cm_http_conn_t *c) {
  c->state = CONN_READING;
  if (uv_timer_start(&c->timer, on_timer, CM_HTTP_IDLE_MS, 0) < 0) {
    conn_close(c);
    return;
  }
  if (c->pending.len > 0) {
    cm_buf_t p = c->pending;
    cm_buf_init(&c->pending, CM_HTTP_MAX_PIPELINE);
    conn_feed(c, p.data, p.len);
    cm_buf_free(&p);
    if (c->closing || c->state != CONN_READING) return;
  }
  if (c->peer_eof) {
    /* The client has finished sending: no further request can come. */
    conn_close(c);
    return;
  }
  read_on(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  cm_http_conn_t *c = stream->data;
  if (c->closing) return;

  if (nread < 0) {
    c->peer_eof = true;
    read_off(c);
    /* Mid-request EOF or error: nothing to answer. While writing, let the
     * write finish (the client may have only shut down its sending side). */
    if (c->state != CONN_WRITING) conn_close(c);
    return;
  }
  if (nread == 0 || c->state != CONN_READING) return; /* linger: discard */
  conn_feed(c, buf->base, (size_t)nread);
}

/* At the cap: make room by closing the connection idle longest, preferring
 * one still waiting for its request (idle keep-alive, slowloris) over one
 * being answered. Probes connect and send at once, so they are always the
 * newest and never the victim. */
static void evict_one(cm_http_t *h) {
  cm_http_conn_t *victim = NULL;
  int scanned = 0;
  for (cm_http_conn_t *c = h->head; c != NULL && scanned < 64; c = c->next, scanned++)
    if (c->state != CONN_WRITING) {
      victim = c;
      break;
    }
  if (victim == NULL) victim = h->head;
  if (victim == NULL) return;
  conn_close(victim);
  h->evicted++;
  uint64_t now = uv_now(h->loop);
  if (h->last_evict_log_ms == 0 || now - h->last_evict_log_ms >= 10000) {
    cm_log_warn("http: at the limit of %zu connections: closed %" PRIu64
                " least recently active ones to accept new ones (logged at most every 10 s)",
                h->max_conns, h->evicted - h->evicted_logged);
    h->evicted_logged = h->evicted;
    h->last_evict_log_ms = now;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  cm_http_t *h = server->data;
  cm_http_conn_t *c = NULL;

  if (status < 0) {
    cm_log_warn("http: accept failed: %s", uv_strerror(status));
    return;
  }
  if (h->closing) return;
  while (h->open >= h->max_conns && h->head != NULL) evict_one(h);

  c = calloc(1, sizeof *c);
  if (c == NULL) goto fail;
  c->srv = h;
  cm_buf_init(&c->out, 0);
  cm_buf_init(&c->pending, CM_HTTP_MAX_PIPELINE);
  if (cm_httpreq_create(&c->req, CM_HTTP_MAX_REQUEST) < 0) goto fail;
  cm_httpreq_set_max_body(c->req, CM_HTTP_MAX_REQUEST_BODY);
  if (uv_tcp_init(h->loop, &c->tcp) < 0) goto fail;
  c->tcp.data = c;
  c->handles_open = 1;
  h->live++;
  h->open++;
  /* From here the connection is freed through conn_close. */
  list_append(h, c);
  if (uv_timer_init(h->loop, &c->timer) < 0) {
    /* Only the tcp handle exists: close just that one. */
    c->closing = true;
    h->open--;
    list_unlink(h, c);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    return;
  }
  c->timer.data = c;
  c->handles_open = 2;

  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  wait_request(c);
  if (c->closing || c->state != CONN_READING) return;
  /* A probe sends its request with the connect: read it now, so it is
   * answered (and no longer the eviction candidate) even when this accept
   * is one of many in a burst that evicts as many older connections. */
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
    ssize_t n = recv(fd, h->rbuf, sizeof h->rbuf, MSG_DONTWAIT);
    if (n > 0)
      conn_feed(c, h->rbuf, (size_t)n);
    else if (n == 0) {
      c->peer_eof = true;
      conn_close(c);
    }
  }
  return;

fail:
  cm_log_warn("http: out of memory accepting a connection");
  if (c != NULL) cm_httpreq_destroy(c->req);
  free(c);
}

/* Descriptors kept free for everything else (NATS, SQLite, exec pipes). */
#define CM_HTTP_FD_RESERVE 256

/* Raises the descriptor soft limit to the hard one (a container's default
 * soft limit, often 1024, is what a few hundred idle clients exhaust) and
 * returns how many connections the server may hold. */
static size_t conn_cap(void) {
  struct rlimit rl;
  size_t cap = CM_HTTP_MAX_CONNS;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      struct rlimit want = {rl.rlim_max, rl.rlim_max};
      if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl.rlim_cur = rl.rlim_max;
    }
    if (rl.rlim_cur != RLIM_INFINITY) {
      size_t lim = (size_t)rl.rlim_cur;
      size_t room = lim > 2 * CM_HTTP_FD_RESERVE ? lim - CM_HTTP_FD_RESERVE : lim / 2;
      if (room < cap) cap = room;
    }
  }
  return cap < 8 ? 8 : cap;
}

int cm_http_create(cm_http_t **out, uv_loop_t *loop, const char *addr, cm_http_handler_fn fn,
                   void *ud) {
  struct sockaddr_storage ss, bound;
  socklen_t blen = sizeof bound;
  cm_http_t *h = NULL;
  int fd = -1, one = 1, rc;

  if (out == NULL || loop == NULL || fn == NULL) return -EINVAL;
  rc = parse_addr(addr, "0.0.0.0", &ss);
  if (rc < 0) return rc;

  /* Bind and listen on a plain socket first, and only then wrap it in a uv
   * handle: a failed bind must leave no handle behind, or the caller's
   * uv_loop_close() would fail. */
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) goto fail_errno;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) goto fail_errno;
  if (bind(fd, (struct sockaddr *)&ss, addr_len(&ss)) < 0) goto fail_errno;
  if (listen(fd, CM_HTTP_BACKLOG) < 0) goto fail_errno;
  if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) goto fail_errno;

  h = calloc(1, sizeof *h);
  if (h == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  h->loop = loop;
  h->fn = fn;
  h->ud = ud;
  h->max_conns = conn_cap();
  h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                               : ((struct sockaddr_in *)&bound)->sin_port);
  rc = uv_tcp_init(loop, &h->listener);
  if (rc < 0) goto fail;
  h->listener.data = h;
  rc = uv_tcp_open(&h->listener, fd);
  if (rc == 0) {
    fd = -1; /* the handle owns it now */
    rc = uv_listen((uv_stream_t *)&h->listener, CM_HTTP_BACKLOG, on_connection);
  }
  if (rc < 0) {
    /* Rare (the socket already listens); the handle exists, so it has to go
     * through uv_close like any other. */
    h->closing = true;
    cm_http_close(h);
    if (fd >= 0) close(fd);
    return rc;
  }
  *out = h;
  return 0;

fail_errno:
  rc = -errno;
fail:
  if (fd >= 0) close(fd);
  free(h);
  return rc;
}

int cm_http_port(const cm_http_t *h) { return h != NULL ? h->port : -EINVAL; }

size_t cm_http_max_conns(const cm_http_t *h) { return h != NULL ? h->max_conns : 0; }

void cm_http_set_max_conns(cm_http_t *h, size_t n) {
  if (h != NULL && n > 0 && n < h->max_conns) h->max_conns = n;
}

static void on_listener_closed(uv_handle_t *handle) {
  cm_http_t *h = handle->data;
  h->listener_closed = true;
  srv_maybe_free(h);
}

void cm_http_close(cm_http_t *h) {
  if (h == NULL) return;
  if (h->closing && uv_is_closing((uv_handle_t *)&h->listener)) return;
  h->closing = true;
  uv_close((uv_handle_t *)&h->listener, on_listener_closed);
  while (h->head != NULL) conn_close(h->head);
}

/* ------------------------------------------------------------------------ */
/* Probe client                                                              */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return -ETIMEDOUT;
    struct pollfd pfd = {.fd = fd, .events = events};
    int n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return -errno;
  }
}

int cm_http_probe(const char *addr, const char *path, int timeout_ms) {
  struct sockaddr_storage ss;
  char req[1024], resp[256];
  size_t rlen = 0;
  int fd = -1, rc;
  int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 1000);

  if (path == NULL || path[0] != '/' || strpbrk(path, " \r\n") != NULL) return -EINVAL;
  rc = parse_addr(addr, "127.0.0.1", &ss);
  if (rc < 0) return rc;
  /* A server bound to all interfaces is probed on loopback. */
  if (ss.ss_family == AF_INET &&
      ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_ANY))
    ((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);

  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: chunkmill-probe\r\n"
                   "Connection: close\r\n\r\n",
                   path);
  if (n < 0 || (size_t)n >= sizeof req) return -E2BIG;

  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&ss, addr_len(&ss)) < 0) {
    if (errno != EINPROGRESS) goto fail_errno;
    rc = wait_fd(fd, POLLOUT, deadline);
    if (rc < 0) goto fail;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) goto fail_errno;
    if (soerr != 0) {
      rc = -soerr;
      goto fail;
    }
  }

  for (size_t sent = 0; sent < (size_t)n;) {
    ssize_t w = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) goto fail_errno;
      rc = wait_fd(fd, POLLOUT, deadline);
      if (rc < 0) goto fail;
      continue;
    }
    sent += (size_t)w;
  }

  /* Only the status line matters: "HTTP/1.x NNN ...". */
  while (rlen < sizeof resp - 1 && memchr(resp, '\n', rlen) == NULL) {
    ssize_t r = recv(fd, resp + rlen, sizeof resp - 1 - rlen, 0);
    if (r > 0) {
      rlen += (size_t)r;
      continue;
    }
    if (r == 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) goto fail_errno;
    rc = wait_fd(fd, POLLIN, deadline);
    if (rc < 0) goto fail;
  }
  resp[rlen] = '\0';

  int status = 0;
  if (rlen < 12 || strncmp(resp, "HTTP/1.", 7) != 0 || resp[8] != ' ' ||
      sscanf(resp + 9, "%3d", &status) != 1 || status < 100 || status > 599) {
    rc = -EPROTO;
    goto fail;
  }
  close(fd);
  return status;

fail_errno:
  rc = -errno;
fail:
  if (fd >= 0) close(fd);
  return rc;
}

int cm_http_check_addr(const char *addr) {
  struct sockaddr_storage ss;
  return parse_addr(addr, "0.0.0.0", &ss);
}
