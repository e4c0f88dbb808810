/* transform.h - what a mapper does to each record. Pure: no I/O, no NATS.
 *
 *   identity    the record unchanged
 *   fullname    the original example's mapping: {"id": uuid, "name": "fn ln"}
 *               (a record without string uuid/fn/ln is a dead letter)
 *   burn:N      N units of deterministic CPU work per record (load tests);
 *               output: the record with "burn": <checksum> added
 *   sleep:MS    sleeps MS milliseconds per chunk, records unchanged
 *
 * A transform is created once and then used concurrently from the thread
 * pool: cm_transform_chunk() must be thread-safe. */
#ifndef CM_TRANSFORM_H
#define CM_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"

typedef struct cm_transform_s cm_transform_t;

typedef struct cm_transform_stats_s {
  uint32_t records; /* records mapped */
  uint32_t dead;    /* records turned into dead letters */
} cm_transform_stats_t;

/* spec: see above. Unknown or malformed spec -> -EINVAL with err naming it
 * ("unknown transform \"foo\": expected identity, fullname, burn:N,
 * sleep:MS"). */
int cm_transform_create(cm_transform_t **out, const char *spec, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cm_transform_destroy(cm_transform_t *t); /* NULL-safe */
const char *cm_transform_name(const cm_transform_t *t);

/* Maps one chunk. `in` is a whole chunk in wire form (see cm/chunk.h); the
 * mapped chunk (same job/index/attempt; dead records as null in "data" and
 * listed in "dead") is appended to `out`. Returns 0, or -EINVAL when the
 * chunk itself is unusable (not JSON, no data array) with err set: the
 * caller NAKs it. Thread-safe. */
int cm_transform_chunk(const cm_transform_t *t, const char *in, size_t len, cm_buf_t *out,
                       cm_transform_stats_t *st, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
