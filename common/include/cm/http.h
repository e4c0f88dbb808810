/* http.h - the probe/metrics HTTP server on the libuv loop, and the I/O-free
 * request parser it is built on (tested without sockets).
 *
 * Serves GET, HEAD and POST (others: 405), over HTTP/1.1 persistent
 * connections: requests are answered one at a time in the order received
 * (pipelining); "Connection: close", HTTP/1.0 without keep-alive, an error
 * status or a GET/HEAD with a body (answered at its head, the body never
 * read) end the connection after the answer.
 * Limits: request head CM_HTTP_MAX_REQUEST bytes (-> 431); a POST body
 * (Content-Length or chunked) CM_HTTP_MAX_REQUEST_BODY bytes (-> 413, as
 * soon as Content-Length says so);
 * CM_HTTP_IDLE_MS to receive each full request, counted from when the server
 * starts waiting for it (slow or idle -> connection closed);
 * CM_HTTP_WRITE_MS for the client to take a response; at most
 * cm_http_max_conns() connections (CM_HTTP_MAX_CONNS, lowered to fit the
 * descriptor limit): at the cap, the connection idle longest is closed so
 * that the new one (a probe) is served. cm_http_create raises the process's
 * RLIMIT_NOFILE soft limit to the hard limit.
 * The errors the server answers itself (400, 405, 413, 431) are JSON
 * {"error":"..."}, as the fetcher's job API's are.
 * After a closing answer, the server shuts down its sending side and waits
 * (up to 2 s) for the client to close, so an early 400/431 is not lost to a
 * TCP RST. libuv writes with write(2): the process must ignore SIGPIPE. */
#ifndef CM_HTTP_H
#define CM_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "cm/buf.h"

#define CM_HTTP_MAX_REQUEST 8192
#define CM_HTTP_MAX_REQUEST_BODY (64u * 1024u)
#define CM_HTTP_MAX_CONNS 4096
#define CM_HTTP_IDLE_MS 5000
#define CM_HTTP_WRITE_MS 10000

/* A complete request as the server's handler sees it. Every pointer is
 * borrowed from the parser and valid during the handler call only. Nothing
 * is decoded (no %-decoding of path or query). */
typedef struct cm_http_request_s {
  const char *method;        /* "GET", "HEAD" or "POST" (the parser: any) */
  const char *path;          /* target without query and fragment: "/jobs/x" */
  const char *query;         /* after '?', without the fragment; "" when none */
  const char *authorization; /* the Authorization header's value, or NULL */
  const char *content_type;  /* the Content-Type header's value, or NULL */
  const char *body;          /* the request body, NUL-terminated; "" when none */
  size_t body_len;
} cm_http_request_t;

/* ---- I/O-free request parser (http-parser underneath) ---- */
typedef struct cm_httpreq_s cm_httpreq_t;

/* max_bytes caps the request head; until cm_httpreq_set_max_body, the body
 * counts against the same cap. */
int cm_httpreq_create(cm_httpreq_t **out, size_t max_bytes) __attribute__((warn_unused_result));
/* Caps the body separately at max_body bytes (the head keeps max_bytes).
 * Call before feeding. */
void cm_httpreq_set_max_body(cm_httpreq_t *r, size_t max_body);
void cm_httpreq_destroy(cm_httpreq_t *r); /* NULL-safe */
/* Feeds bytes. Returns 0 when more bytes are needed, 1 when a complete
 * request has been read, -E2BIG when the request head exceeds max_bytes,
 * -EMSGSIZE when its body exceeds its cap (at once when Content-Length says
 * so), -EINVAL when it is not valid HTTP/1.x or carries Authorization or
 * Content-Type twice. Once 1 or an error was returned,
 * further calls return the same value (until cm_httpreq_reset). */
int cm_httpreq_feed(cm_httpreq_t *r, const char *data, size_t len);
/* After feed returned 1: how many bytes of that call's data belong to the
 * request (the rest starts the next one). 0 otherwise. */
size_t cm_httpreq_used(const cm_httpreq_t *r);
/* After feed returned 1: the connection may carry another request (HTTP/1.1
 * without "Connection: close", or 1.0 with keep-alive; no body left unread). */
bool cm_httpreq_keep_alive(const cm_httpreq_t *r);
/* Ready for the next request on the same connection. */
void cm_httpreq_reset(cm_httpreq_t *r);
/* Both NULL until feed returned 1; borrowed, valid until destroy. */
const char *cm_httpreq_method(const cm_httpreq_t *r); /* "GET"; valid after 1 */
const char *cm_httpreq_path(const cm_httpreq_t *r);   /* path without query */
/* After feed returned 1: the whole request (borrowed, valid until reset or
 * destroy); NULL otherwise. */
const cm_http_request_t *cm_httpreq_request(const cm_httpreq_t *r);

/* Formats a complete HTTP/1.1 response with Content-Length and
 * "Connection: close", or "Connection: keep-alive" with CM_HTTP_KEEP_ALIVE.
 * CM_HTTP_HEAD_ONLY leaves the body out (HEAD). A NULL body with len 0 is
 * allowed. */
#define CM_HTTP_HEAD_ONLY 1
#define CM_HTTP_KEEP_ALIVE 2
int cm_http_format_response(cm_buf_t *out, int status, const char *content_type,
                            const char *body, size_t len, int flags)
    __attribute__((warn_unused_result));

/* ---- server ---- */
typedef struct cm_http_s cm_http_t;

/* Called on the loop thread for each complete GET/HEAD/POST request. Append
 * the response body to `body` (capped at 4 MiB; left out of a HEAD answer),
 * set *content_type (static string; default "text/plain; charset=utf-8")
 * and return the status code. */
typedef int (*cm_http_handler_fn)(void *ud, const cm_http_request_t *req, cm_buf_t *body,
                                  const char **content_type);

/* addr: "HOST:PORT", ":PORT" (all interfaces, 0.0.0.0) or "PORT".
 * PORT 0 picks a free port (see cm_http_port). Returns 0 or a negative
 * errno/UV error; on error nothing is left open. */
int cm_http_create(cm_http_t **out, uv_loop_t *loop, const char *addr, cm_http_handler_fn fn,
                   void *ud) __attribute__((warn_unused_result));
int cm_http_port(const cm_http_t *h);
/* The connection cap in force; set_max_conns can only lower it (tests). */
size_t cm_http_max_conns(const cm_http_t *h);
void cm_http_set_max_conns(cm_http_t *h, size_t n);
/* Closes the listener and all connections; memory is freed in the close
 * callbacks (run the loop afterwards). NULL-safe. Call it once: `h` is gone
 * after the loop has run the close callbacks. */
void cm_http_close(cm_http_t *h);

/* Blocking client for probe mode (`--probe /readyz`): GET path on addr
 * (":PORT" means 127.0.0.1:PORT). Returns the HTTP status, or a negative
 * errno on connection failure or timeout. No libuv loop needed. */
int cm_http_probe(const char *addr, const char *path, int timeout_ms);

/* 0 if addr is an address cm_http_create accepts (syntax only: numeric host
 * or localhost, port 0..65535), else -EINVAL. For checking the command line
 * before anything is opened. */
int cm_http_check_addr(const char *addr);

#endif
