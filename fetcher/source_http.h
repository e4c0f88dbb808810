/* source_http.h - the http:URL / https:URL source (its kind's ops are
 * cm_source_http_ops, source_impl.h; callers use source.h).
 *
 * Pages are fetched one after another with libcurl:
 *   - by page number: URL?<param>=<start + k*step> (param "" = the URL as
 *     is every time, for an API that answers every GET with a new batch),
 *   - or, with a next field, from the first URL and then the URL found in
 *     each body at that dotted path (relative links are resolved); a
 *     missing, null or empty next ends the source.
 * The records are the body itself (a JSON array) or the array at the dotted
 * records path ({"data":[...]}). The first page with no records ends the
 * source, and so does page `pages` when that is set.
 * Each page's records are cut into chunks of chunk_size records that never
 * span two pages, so a resume position is exact: (page sequence number
 * 1.., records of that page already used). A resume re-reads that page
 * (with a next field: walks the links from the first page to it); the
 * chunks before it are in the fetcher's ledger and are not read again.
 * 5xx, 429 and network errors are retried `retries` times with backoff
 * (0.25 s doubling, at most 8 s); other statuses fail at once. Header
 * values are never put into errors or logs, and the URL's credentials are
 * shown as "***" (desc, errors, logs). Redirects: see cm_http_same_origin.
 * Calls block (the fetcher reads sequential sources on its thread pool):
 * bounded by (retries + 1) * timeout plus the backoff. */
#ifndef CM_SOURCE_HTTP_H
#define CM_SOURCE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"
#include "source.h"

typedef struct cm_http_src_s cm_http_src_t;

/* *desc gets a malloc'd description for the ledger (URL and paging, never
 * headers). Nothing is fetched yet. */
int cm_http_src_open(cm_http_src_t **out, const cm_source_opts_t *o, char **desc, char *err,
                     size_t errlen) __attribute__((warn_unused_result));
void cm_http_src_close(cm_http_src_t *h); /* NULL-safe */
/* Appends the next chunk's records (joined by ',') to out: 0 with *nrec > 0,
 * 1 at the end, or a negative errno with err set. *pos and *line: the
 * resume position after this chunk. */
int cm_http_src_next(cm_http_src_t *h, uint32_t chunk_size, cm_buf_t *out, uint32_t *nrec,
                     int64_t *pos, uint64_t *line, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Resume at a position from cm_http_src_next (applied at the next read). */
/* The same with the opaque cursor from cm_http_src_cursor (may be NULL):
 * a next-link source loads that page at once instead of walking the links
 * from page 1 again. */
int cm_http_src_seek_cursor(cm_http_src_t *h, int64_t pos, uint64_t line, const char *cursor)
    __attribute__((warn_unused_result));
/* After cm_http_src_next: what to store with its position so a resume can
 * go straight back (next-link mode: the URL of the page in hand; NULL in
 * page-number mode, or when that URL carries a credential). Borrowed until
 * the next call. */
const char *cm_http_src_cursor(const cm_http_src_t *h);
int cm_http_src_seek(cm_http_src_t *h, int64_t pos, uint64_t line)
    __attribute__((warn_unused_result));
/* 1 when URLs a and b have the same origin (scheme, host, port with the
 * scheme's default filled in), else 0. Redirects to another origin are not
 * followed unless --http-follow-redirects, and never with the custom
 * headers. */
int cm_http_same_origin(const char *a, const char *b);
/* Test hook: backoff base in ms (default 250). */
void cm_http_src_set_backoff(cm_http_src_t *h, int64_t base_ms);

#endif
