/* chunk.h - the JSON chunk codec (I/O-free).
 *
 * Wire form (DESIGN.md), always written with "data" last:
 *   {"job":"users","index":17,"attempt":2,"data":[ ...records... ]}
 * A mapped chunk (mapper -> saver) may carry dead letters after "data":
 *   {"job":..,"index":..,"attempt":..,"data":[..., null, ...],
 *    "dead":[{"idx":3,"reason":"missing field fn","record":{...}}]}
 * A record that became a dead letter keeps its slot in "data" as `null`, so a
 * record's index inside its chunk never shifts.
 *
 * Decoding does not build a tree: cm_chunk_peek() scans the top-level object
 * once, reads job/index/attempt and returns the byte spans of the "data" and
 * "dead" values (balanced, string-aware), validated only structurally. The
 * saver hands the data span to SQLite's json_each; the mapper parses it. */
#ifndef CM_CHUNK_H
#define CM_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"

#define CM_JOB_MAX 128 /* bytes of a job name, NUL included */

typedef struct cm_chunk_hdr_s {
  char job[CM_JOB_MAX];
  uint64_t index;
  uint32_t attempt;
} cm_chunk_hdr_t;

typedef struct cm_chunk_view_s {
  cm_chunk_hdr_t hdr;
  const char *data; /* points into the input: "[...]" including brackets */
  size_t data_len;
  const char *dead; /* "[...]" or NULL when absent */
  size_t dead_len;
} cm_chunk_view_t;

/* Scans `json` (len bytes, need not be NUL-terminated). Returns 0, or
 * -EINVAL with a reason in err (e.g. "missing \"data\"", "\"index\" is not a
 * non-negative integer", "job name longer than 127 bytes"). Unknown keys are
 * skipped. The view borrows `json`. */
int cm_chunk_peek(const char *json, size_t len, cm_chunk_view_t *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Encoder in three steps so records can be streamed in without a tree:
 *   cm_chunk_begin(b, &hdr)           -> {"job":"..","index":N,"attempt":N,"data":[
 *   append records separated by ','   (raw JSON text)
 *   cm_chunk_end(b, dead, dead_len)   -> ]}  or  ],"dead":[...]}
 * dead may be NULL. */
int cm_chunk_begin(cm_buf_t *b, const cm_chunk_hdr_t *hdr) __attribute__((warn_unused_result));
int cm_chunk_end(cm_buf_t *b, const char *dead, size_t dead_len) __attribute__((warn_unused_result));

/* Length of the JSON value starting at s[0] (after leading whitespace is
 * skipped by the caller), or -EINVAL if it is not balanced/terminated within
 * len. Strings, objects, arrays, numbers, literals. Used by peek and by the
 * file source to split a JSON array into records. */
long cm_json_value_span(const char *s, size_t len);

#endif
