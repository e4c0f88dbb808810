/* chunk.h - the JSON chunk codec (I/O-free).
 *
 * Wire form (docs/design.md), always written with "data" last:
 *   {"job":"users","index":17,"attempt":2,"data":[ ...records... ]}
 * or, with an authenticated lease (cm/lease.h), header keys before "data":
 *   {"job":"users","index":17,"attempt":2,"mapper":"m1","lease":"<hex>",
 *    "data":[...]}
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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"

#define CM_JOB_MAX 128 /* bytes of a job name, NUL included */

#define CM_MAPPER_ID_MAX 128 /* bytes of a lease's mapper id, NUL included */
#define CM_LEASE_MAX 33      /* bytes of a lease token, NUL included */
#define CM_VERSION_MAX 128   /* bytes of a mapper version label, NUL included */

/* mapper and lease are the authenticated lease (cm/lease.h): written by the
 * fetcher when it has a lease key, copied unchanged by the mapper into the
 * mapped chunk, verified by the saver. Both "" when absent. */
typedef struct cm_chunk_hdr_s {
  char job[CM_JOB_MAX];
  uint64_t index;
  uint32_t attempt;
  char mapper[CM_MAPPER_ID_MAX];
  char lease[CM_LEASE_MAX];
  char version[CM_VERSION_MAX];
  /* Redo generation (docs/jobs.md "Redo by version"): 0 for a chunk never
   * redone; written (after "attempt") only when > 0. */
  uint32_t redo;
} cm_chunk_hdr_t;

typedef struct cm_chunk_view_s {
  cm_chunk_hdr_t hdr;
  const char *data; /* points into the input: "[...]" including brackets */
  size_t data_len;
  bool data_ws; /* data has whitespace between tokens (false: compact JSON) */
  const char *dead; /* "[...]" or NULL when absent */
  size_t dead_len;
} cm_chunk_view_t;

/* Scans `json` (len bytes, need not be NUL-terminated). Returns 0, or
 * -EINVAL with a reason in err (e.g. "missing \"data\"", "\"index\" is not a
 * non-negative integer", "job name longer than 127 bytes"). Unknown keys are
 * skipped. The view borrows `json`.
 * Details: "index" is required; "job" (-> "") and "attempt" (-> 0) are
 * optional, as in the app9 format; so are "mapper", "lease" and "version"
 * (-> ""); the job name, the mapper id and the version must be valid UTF-8
 * without NUL, at most CM_JOB_MAX / CM_MAPPER_ID_MAX / CM_VERSION_MAX - 1
 * bytes; "dead": null counts as absent. Every
 * value, the data span included, is fully syntax-checked (so a view's data
 * is valid JSON); a known key given twice, or anything but whitespace after
 * the object, is an error. err names the byte offset of the problem. */
int cm_chunk_peek(const char *json, size_t len, cm_chunk_view_t *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Element spans of the data array, found by the validating scan itself so
 * a caller does not walk the records a second time: element k is
 * data[start[k] .. end[k]) (offsets from view.data). ok is false when the
 * array had more than cap elements (or no data was found): then split the
 * data with cm_json_array_next as usual. */
typedef struct cm_json_elems_s {
  uint32_t *start, *end; /* caller's arrays of cap entries */
  size_t cap, n;
  bool ok;
} cm_json_elems_t;

/* cm_chunk_peek that also fills elems (may be NULL). */
int cm_chunk_peek_elems(const char *json, size_t len, cm_chunk_view_t *out, cm_json_elems_t *elems,
                        char *err, size_t errlen) __attribute__((warn_unused_result));

/* Like cm_chunk_peek, but only the header (job, index, attempt, mapper,
 * lease, version) is
 * syntax-checked: the other values are delimited with cm_json_value_skip
 * (memory-safe on any input, but a malformed value may go unnoticed), so
 * the view's spans must not be trusted until cm_chunk_peek has checked the
 * same bytes. It stops as soon as job, index and attempt are all read, so
 * data/dead may be left unset and "missing data" or trailing bytes go
 * unnoticed. For a receiver that needs the header now and validates the
 * whole chunk later, elsewhere (the mapper's loop thread vs its workers). */
int cm_chunk_peek_header(const char *json, size_t len, cm_chunk_view_t *out, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* Encoder in three steps so records can be streamed in without a tree:
 *   cm_chunk_begin(b, &hdr)           -> {"job":"..","index":N,"attempt":N,"data":[
 *                                        (with "mapper","lease" when hdr->lease
 *                                        is set, "version" when hdr->version is)
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

/* Like cm_json_value_span (which is a full RFC 8259 syntax check of the
 * value, nesting limited to 512), and on failure also says where and why:
 * *errpos = byte offset from s, *why = a static string such as
 * "unterminated string". Either pointer may be NULL. */
long cm_json_value_span_why(const char *s, size_t len, size_t *errpos, const char **why);

/* Fast span of a value whose syntax is already known to be valid (e.g.
 * inside a view from cm_chunk_peek): follows only strings and brackets.
 * Never reads past len; on invalid input it returns -EINVAL or a
 * meaningless span, so check unknown input with cm_json_value_span. */
long cm_json_value_skip(const char *s, size_t len);

/* Iterates the elements of a JSON array span arr[0..len) ("[...]", e.g. a
 * view's data or dead). Start with *pos = 0. Returns 1 with *elem and
 * *elem_len set to the next element's raw text, 0 at the end, -EINVAL when
 * the array is cut short or a separator is wrong. Elements are delimited
 * with cm_json_value_skip, so arr must be syntax-checked already (as a
 * view's spans are). Borrowed pointers into arr. */
int cm_json_array_next(const char *arr, size_t len, size_t *pos, const char **elem,
                       size_t *elem_len) __attribute__((warn_unused_result));

/* Copies the syntax-checked JSON value s[0..len) to out without the
 * whitespace between tokens (string contents, escapes included, are copied
 * as written) and returns the new length. out == NULL only measures, so
 * "cm_json_compact(s, len, NULL) == len" means s is compact already. out
 * needs len bytes (no NUL is written). */
size_t cm_json_compact(const char *s, size_t len, char *out);

/* Unescapes the JSON string literal lit[0..n) (quotes included, already
 * validated, e.g. by cm_chunk_peek) into dst (cap bytes including the NUL;
 * the result is never longer than n - 2). Returns the length, -E2BIG when it
 * does not fit, -EINVAL for a lone surrogate or, without
 * CM_UNESCAPE_NUL_ENDS, an escaped NUL (\u0000). With CM_UNESCAPE_NUL_ENDS the
 * text ends at an escaped NUL, as a C string would hold it. */
#define CM_UNESCAPE_NUL_ENDS 1
long cm_json_unescape(const char *lit, size_t n, char *dst, size_t cap, int flags);

/* UTF-8 (RFC 3629: no overlong forms, surrogates or code points above
 * U+10FFFF). cm_utf8_check returns the offset of the first byte that does
 * not start a well-formed sequence, or len when all of s is valid. */
size_t cm_utf8_check(const char *s, size_t len);
bool cm_utf8_valid(const char *s, size_t len);

#endif
