/* http.h - the probe/metrics HTTP server on the libuv loop, and the I/O-free
 * request parser it is built on (tested without sockets).
 *
 * Serves GET (and HEAD) only; one request per connection (Connection: close).
 * Limits: request head CM_HTTP_MAX_REQUEST bytes (-> 431), at most
 * CM_HTTP_MAX_CONNS connections at once (further ones are closed at accept),
 * CM_HTTP_IDLE_MS to receive a full request (-> connection closed).
 * After answering, the server shuts down its sending side and waits (up to
 * 2 s) for the client to close, so an early 400/431 is not lost to a TCP RST.
 * libuv writes with write(2): the process must ignore SIGPIPE. */
#ifndef CM_HTTP_H
#define CM_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "cm/buf.h"

#define CM_HTTP_MAX_REQUEST 8192
#define CM_HTTP_MAX_CONNS 64
#define CM_HTTP_IDLE_MS 5000

/* ---- I/O-free request parser (http-parser underneath) ---- */
typedef struct cm_httpreq_s cm_httpreq_t;

int cm_httpreq_create(cm_httpreq_t **out, size_t max_bytes) __attribute__((warn_unused_result));
void cm_httpreq_destroy(cm_httpreq_t *r); /* NULL-safe */
/* Feeds bytes. Returns 0 when more bytes are needed, 1 when a complete
 * request has been read, -E2BIG when the request exceeds max_bytes,
 * -EINVAL when it is not valid HTTP/1.x. Once 1 or an error was returned,
 * further calls return the same value. */
int cm_httpreq_feed(cm_httpreq_t *r, const char *data, size_t len);
/* Both NULL until feed returned 1; borrowed, valid until destroy. */
const char *cm_httpreq_method(const cm_httpreq_t *r); /* "GET"; valid after 1 */
const char *cm_httpreq_path(const cm_httpreq_t *r);   /* path without query */

/* Formats a complete HTTP/1.1 response with Content-Length and
 * Connection: close. A NULL body with len 0 is allowed. */
int cm_http_format_response(cm_buf_t *out, int status, const char *content_type,
                            const char *body, size_t len, int head_only)
    __attribute__((warn_unused_result));

/* ---- server ---- */
typedef struct cm_http_s cm_http_t;

/* Called on the loop thread for each complete GET/HEAD request. Append the
 * body to `body` (capped at 4 MiB), set *content_type (static string; default
 * "text/plain; charset=utf-8") and return the status code. */
typedef int (*cm_http_handler_fn)(void *ud, const char *path, cm_buf_t *body,
                                  const char **content_type);

/* addr: "HOST:PORT", ":PORT" (all interfaces, 0.0.0.0) or "PORT".
 * PORT 0 picks a free port (see cm_http_port). Returns 0 or a negative
 * errno/UV error; on error nothing is left open. */
int cm_http_create(cm_http_t **out, uv_loop_t *loop, const char *addr, cm_http_handler_fn fn,
                   void *ud) __attribute__((warn_unused_result));
int cm_http_port(const cm_http_t *h);
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
