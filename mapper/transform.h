/* transform.h - what a mapper does to each record. Pure: no I/O, no NATS.
 *
 *   identity    the record unchanged
 *   fullname    the original example's mapping: {"id": uuid, "name": "fn ln"}
 *               (a record without string uuid/fn/ln is a dead letter)
 *   burn:N      N units of deterministic CPU work per record (load tests);
 *               output: the record with "burn": <checksum> added
 *   sleep:MS    sleeps MS milliseconds per chunk, records unchanged
 *   exec:CMD    records as NDJSON through a child process (one per chunk,
 *               or long-lived per worker: see exec.h for the contract); an
 *               output line that is not JSON, or is {"error":"why"}, is a
 *               dead letter
 *   plugin:PATH a shared object implementing include/chunkmill/plugin.h
 *
 * A transform is created once and then used concurrently from the thread
 * pool: cm_transform_chunk() must be thread-safe. */
#ifndef CM_TRANSFORM_H
#define CM_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"
#include "cm/metrics.h"

typedef struct cm_transform_s cm_transform_t;

typedef struct cm_transform_stats_s {
  uint32_t records; /* records mapped */
  uint32_t dead;    /* records turned into dead letters */
} cm_transform_stats_t;

/* spec: see above. Unknown or malformed spec -> -EINVAL with err naming it
 * ("unknown transform \"foo\": expected identity, fullname, burn:N,
 * sleep:MS"). N is an integer 1..1000000 and MS 0..600000, digits only.
 * cm_transform_name() gives the canonical spec ("burn:1000"). */
int cm_transform_create(cm_transform_t **out, const char *spec, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cm_transform_destroy(cm_transform_t *t); /* NULL-safe */
const char *cm_transform_name(const cm_transform_t *t);

/* Settings of exec: and plugin: transforms (ignored by the others). */
typedef struct cm_transform_opts_s {
  const char *arg;         /* --transform-arg: exec children get it as env
                              CHUNKMILL_TRANSFORM_ARG, plugins in init; NULL */
  int64_t exec_timeout_ms; /* per chunk; <= 0: 30 s */
  const char *exec_cwd;    /* working directory of children; NULL: ours */
  const char *exec_env;    /* "KEY=VAL,KEY2=VAL2" added to children's env */
  const char *exec_framing; /* "chunk" (NULL: the same), "tagged" or "lines";
                               see exec.h */
  int64_t exec_settle_ms;   /* lines framing: quiet time after a chunk's last
                               answer before it counts; <= 0: none */
} cm_transform_opts_t;

/* cm_transform_create with settings (o may be NULL). exec: checks that the
 * program exists; plugin: loads the library, checks its ABI version and
 * runs its init once, so every such error shows at start. */
int cm_transform_create_ex(cm_transform_t **out, const char *spec, const cm_transform_opts_t *o,
                           char *err, size_t errlen) __attribute__((warn_unused_result));
/* Where exec children's counter:NAME,N lines go (borrowed; must outlive t).
 * Call before the first chunk. No-op for other transforms. */
void cm_transform_set_metrics(cm_transform_t *t, cm_metrics_t *m);

/* The mapper version label (--version-label) written as "version" into the
 * header of every mapped chunk (cm/chunk.h); unset or "": no "version" key.
 * At most CM_VERSION_MAX - 1 bytes of valid UTF-8, else -EINVAL with err
 * saying why. Call before the first chunk (not thread-safe). */
int cm_transform_set_version(cm_transform_t *t, const char *label, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Maps one chunk. `in` is a whole chunk in wire form (see cm/chunk.h); the
 * mapped chunk (same job/index/attempt/mapper/lease, this transform's version;
 * dead records as null in "data" and
 * listed in "dead") is appended to `out`. Returns 0, or -EINVAL when the
 * chunk itself is unusable (not JSON, no data array) with err set: the
 * caller NAKs it. Thread-safe.
 * Details:
 * - the whole chunk is syntax-checked (cm_chunk_peek), identity included;
 * - a dead letter is {"idx":i,"reason":"fullname: missing string field
 *   \"fn\"","record":<the input record, raw>}; "dead" entries the input
 *   already carries (e.g. the source's {"line":N,"reason":..,"raw":..}) are
 *   passed through first, then the new ones; "dead" is omitted when empty;
 * - a `null` slot in the input stays null and is not a new dead letter (it
 *   is a record already reported upstream);
 * - burn:N output is the record with ,"burn":"<16 hex digits>" appended
 *   (see cm_transform_burn_checksum); a non-object record is a dead letter;
 * - st (may be NULL): records = non-null records written, dead = dead
 *   letters created by this call (passed-through ones not counted);
 * - other errors, err set, `out` unchanged: -E2BIG (the mapped chunk
 *   would exceed out->max), -ENOMEM. On any error `out` is left as it was. */
int cm_transform_chunk(const cm_transform_t *t, const char *in, size_t len, cm_buf_t *out,
                       cm_transform_stats_t *st, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The burn:N checksum of one raw record: an FNV-1a pass over its bytes, then
 * `rounds` dependent rounds of a 64-bit mix (the CPU work). Exposed so tests
 * and consumers can verify a "burn" value. */
uint64_t cm_transform_burn_checksum(const char *rec, size_t n, uint32_t rounds);

#endif
