/* http.c - probe/metrics HTTP server on libuv, its I/O-free request parser,
 * and a blocking probe client.
 *
 * One request per connection: read until the request is complete, answer,
 * close. That is all kubelet probes and Prometheus scrapes need, and it keeps
 * every connection's memory bounded by CM_HTTP_MAX_REQUEST plus one reply. */
#include "cm/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#define CM_HTTP_BACKLOG 128

/* ------------------------------------------------------------------------ */
/* Request parser                                                            */

struct cm_httpreq_s {
  http_parser parser;
  http_parser_settings settings;
  size_t max;     /* bytes accepted in total */
  size_t fed;     /* bytes given to http_parser so far */
  int state;      /* 0 reading, 1 complete, <0 error (sticky) */
  bool done;      /* set by the callbacks */
  cm_buf_t url;   /* request target as received */
  char method[24];
  char *path;     /* owned: url without query and fragment */
};

static int on_url(http_parser *p, const char *at, size_t len) {
  cm_httpreq_t *r = p->data;
  /* The URL is never longer than the bytes fed, which are capped, so this
   * only fails on OOM; http_parser then reports a callback error (-EINVAL). */
  return cm_buf_append(&r->url, at, len) == 0 ? 0 : -1;
}

static int on_headers_complete(http_parser *p) {
  cm_httpreq_t *r = p->data;
  /* GET and HEAD have no body we care about: answer as soon as the head is
   * in, rather than wait for a body that a broken client might never end. */
  if (p->method == HTTP_GET || p->method == HTTP_HEAD) {
    r->done = true;
    http_parser_pause(p, 1);
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  cm_httpreq_t *r = p->data;
  r->done = true;
  http_parser_pause(p, 1);
  return 0;
}

int cm_httpreq_create(cm_httpreq_t **out, size_t max_bytes) {
  cm_httpreq_t *r = calloc(1, sizeof *r);
  if (r == NULL) return -ENOMEM;
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
  http_parser_settings_init(&r->settings);
  r->settings.on_url = on_url;
  r->settings.on_headers_complete = on_headers_complete;
  r->settings.on_message_complete = on_message_complete;
  r->max = max_bytes;
  cm_buf_init(&r->url, max_bytes);
  *out = r;
  return 0;
}

void cm_httpreq_destroy(cm_httpreq_t *r) {
  if (r == NULL) return;
  cm_buf_free(&r->url);
  free(r->path);
  free(r);
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
      p = u + pu.field_data[UF_PATH].off;
      plen = pu.field_data[UF_PATH].len;
    }
  }
  for (size_t i = 0; i < plen; i++) {
    if (p[i] == '?' || p[i] == '#') {
      plen = i;
      break;
    }
  }
  r->path = malloc(plen + 1);
  if (r->path == NULL) return -ENOMEM;
  if (plen > 0) memcpy(r->path, p, plen);
  r->path[plen] = '\0';
  snprintf(r->method, sizeof r->method, "%s", http_method_str(r->parser.method));
  return 1;
}

int cm_httpreq_feed(cm_httpreq_t *r, const char *data, size_t len) {
  if (r->state != 0) return r->state;
  if (len == 0) return 0; /* http_parser would take 0 bytes as EOF */

  /* Never hand the parser more than the cap: the part that fits may still
   * complete the request (a pipelined tail is simply ignored). */
  size_t room = r->max - r->fed;
  size_t n = len < room ? len : room;
  bool over = n < len;

  if (n > 0) {
    size_t done = http_parser_execute(&r->parser, &r->settings, data, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    r->fed += done;
    if (r->done) {
      r->state = finish(r);
      return r->state;
    }
    if (e != HPE_OK || done != n) {
      r->state = -EINVAL;
      return r->state;
    }
  }
  if (over) r->state = -E2BIG;
  return r->state;
}

const char *cm_httpreq_method(const cm_httpreq_t *r) { return r->state == 1 ? r->method : NULL; }

const char *cm_httpreq_path(const cm_httpreq_t *r) { return r->state == 1 ? r->path : NULL; }

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
                            const char *body, size_t len, int head_only) {
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
                         "Connection: close\r\n"
                         "\r\n",
                         status, reason(status), content_type, len,
                         status == 405 ? "Allow: GET, HEAD\r\n" : "");
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
  size_t live;           /* connections not yet freed (the limit counts these) */
  cm_http_conn_t *conns; /* open connections, for cm_http_close */
};

struct cm_http_conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  cm_http_t *srv;
  cm_httpreq_t *req;
  cm_buf_t out;
  conn_state_t state;
  bool closing;
  bool peer_eof;
  int handles_open; /* tcp + timer; memory goes when both close callbacks ran */
  cm_http_conn_t *prev, *next;
  char rbuf[4096];
};

static void srv_maybe_free(cm_http_t *h) {
  if (h->closing && h->listener_closed && h->live == 0) free(h);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
  cm_http_conn_t *c = handle->data;
  if (--c->handles_open > 0) return;
  cm_http_t *h = c->srv;
  cm_httpreq_destroy(c->req);
  cm_buf_free(&c->out);
  free(c);
  h->live--;
  srv_maybe_free(h);
}

static void conn_close(cm_http_conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  /* Unlink now so cm_http_close only sees connections still open. */
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->srv->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  /* Pending write/shutdown requests get UV_ECANCELED before these run. */
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t) {
  /* Idle (no full request in time) or linger over: either way, done. */
  conn_close(t->data);
}

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
  if (status < 0 || c->peer_eof) {
    conn_close(c);
    return;
  }
  c->state = CONN_LINGER;
  (void)uv_timer_start(&c->timer, on_timer, CM_HTTP_LINGER_MS, 0);
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

  cm_buf_init(&body, CM_HTTP_MAX_BODY);
  if (verdict == -E2BIG) {
    status = 431;
    fixed = "request too large\n";
  } else if (verdict < 0) {
    status = 400;
    fixed = "bad request\n";
  } else {
    const char *method = cm_httpreq_method(c->req);
    head = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !head) {
      status = 405;
      fixed = "method not allowed\n";
    } else {
      status = c->srv->fn(c->srv->ud, cm_httpreq_path(c->req), &body, &ctype);
      if (status < 100 || status > 599) {
        cm_log_error("http: handler returned status %d for %s", status,
                     cm_httpreq_path(c->req));
        status = 500;
        ctype = NULL;
        cm_buf_reset(&body);
      }
    }
  }
  /* A failed append leaves the body empty, which is still a valid reply. */
  if (fixed != NULL && cm_buf_puts(&body, fixed) < 0) cm_buf_reset(&body);

  cm_buf_init(&c->out, CM_HTTP_MAX_BODY + CM_HTTP_MAX_HEAD);
  int rc = cm_http_format_response(&c->out, status, ctype, body.data, body.len, head);
  if (rc < 0) {
    /* Bad content type from the handler, or OOM: still answer something. */
    cm_buf_reset(&c->out);
    rc = cm_http_format_response(&c->out, 500, NULL, NULL, 0, head);
  }
  cm_buf_free(&body);
  if (rc < 0) {
    conn_close(c);
    return;
  }

  c->state = CONN_WRITING;
  uv_buf_t b = uv_buf_init(c->out.data, (unsigned int)c->out.len);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) conn_close(c);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  cm_http_conn_t *c = handle->data;
  /* One read at a time per handle, so the connection's own buffer will do. */
  *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  cm_http_conn_t *c = stream->data;
  if (c->closing) return;

  if (nread < 0) {
    c->peer_eof = true;
    (void)uv_read_stop(stream);
    /* Mid-request EOF or error: nothing to answer. While writing, let the
     * write finish (the client may have only shut down its sending side). */
    if (c->state != CONN_WRITING) conn_close(c);
    return;
  }
  if (nread == 0 || c->state != CONN_READING) return; /* discard after the request */

  int rc = cm_httpreq_feed(c->req, buf->base, (size_t)nread);
  if (rc != 0) {
    (void)uv_timer_stop(&c->timer);
    respond(c, rc);
  }
}

static void on_extra_closed(uv_handle_t *handle) { free(handle); }

static void on_connection(uv_stream_t *server, int status) {
  cm_http_t *h = server->data;
  cm_http_conn_t *c = NULL;

  if (status < 0) {
    cm_log_warn("http: accept failed: %s", uv_strerror(status));
    return;
  }
  if (h->closing) return;

  if (h->live >= CM_HTTP_MAX_CONNS) {
    /* Accept and drop at once: leaving it in the backlog would stall the
     * listener (libuv stops polling until the pending socket is taken). */
    uv_tcp_t *t = malloc(sizeof *t);
    if (t == NULL) return;
    if (uv_tcp_init(h->loop, t) < 0) {
      free(t);
      return;
    }
    (void)uv_accept(server, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_extra_closed);
    return;
  }

  c = calloc(1, sizeof *c);
  if (c == NULL) goto fail;
  c->srv = h;
  cm_buf_init(&c->out, 0);
  if (cm_httpreq_create(&c->req, CM_HTTP_MAX_REQUEST) < 0) goto fail;
  if (uv_tcp_init(h->loop, &c->tcp) < 0) goto fail;
  c->tcp.data = c;
  c->handles_open = 1;
  h->live++;
  /* From here the connection is freed through conn_close. */
  c->next = h->conns;
  if (h->conns != NULL) h->conns->prev = c;
  h->conns = c;
  if (uv_timer_init(h->loop, &c->timer) < 0) {
    /* Only the tcp handle exists: close just that one. */
    c->closing = true;
    h->conns = c->next;
    if (c->next != NULL) c->next->prev = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    return;
  }
  c->timer.data = c;
  c->handles_open = 2;

  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
      uv_timer_start(&c->timer, on_timer, CM_HTTP_IDLE_MS, 0) < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
  return;

fail:
  cm_log_warn("http: out of memory accepting a connection");
  if (c != NULL) cm_httpreq_destroy(c->req);
  free(c);
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
  while (h->conns != NULL) conn_close(h->conns);
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
