/* versions.h - the fetcher's per-mapper-version outcome counters (/status
 * "versions", read by the canary analysis).
 *
 * A bounded table of named versions. Members hold a handle to their
 * version; every dispatch and outcome is counted through a handle. Rules:
 *   - a version is never counted under another version's name: when every
 *     slot holds a version that still has live members, a new version is
 *     counted under the reserved name "other" (shown only once used);
 *   - a version that has no live member left ages out: after `idle_ms`
 *     without a member or an event it is dropped and its slot is free again;
 *     a table that is full makes room at once by dropping the departed
 *     version idle longest;
 *   - handles carry a generation, so a late outcome (an ack after the
 *     version was dropped) is dropped too rather than credited to the slot's
 *     next owner.
 * Single-threaded (the loop thread). Times are the caller's clock, in ms. */
#ifndef CM_VERSIONS_H
#define CM_VERSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"

#define CM_VERSIONS_MAX 16
#define CM_VERSIONS_NAME_MAX 64
#define CM_VERSIONS_OTHER "other"

typedef struct cm_versions_s cm_versions_t;
/* 0 is never a valid handle. */
typedef uint32_t cm_version_h;

typedef enum {
  CM_VERSION_DISPATCHED,
  CM_VERSION_ACKED,
  CM_VERSION_NAK,
  CM_VERSION_EXPIRED,
} cm_version_event_t;

/* max: named slots (1..CM_VERSIONS_MAX; more is clamped). */
int cm_versions_create(cm_versions_t **out, size_t max, int64_t idle_ms)
    __attribute__((warn_unused_result));
void cm_versions_destroy(cm_versions_t *v); /* NULL-safe */

/* A member of version `name` joined (NULL or "" mean "unknown"; names longer
 * than CM_VERSIONS_NAME_MAX - 1 are cut). Returns its handle, never 0. */
cm_version_h cm_versions_join(cm_versions_t *v, const char *name, int64_t now_ms);
/* The member holding h left (once per join). */
void cm_versions_leave(cm_versions_t *v, cm_version_h h, int64_t now_ms);
/* Counts one event for h; ignored for a handle whose version was dropped. */
void cm_versions_count(cm_versions_t *v, cm_version_h h, cm_version_event_t ev, int64_t now_ms);
/* Name of h's version ("other" for the overflow), or NULL if it was dropped.
 * Borrowed; valid until the next join or sweep. */
const char *cm_versions_name(const cm_versions_t *v, cm_version_h h);
/* Drops versions with no live member and no event for idle_ms. */
void cm_versions_sweep(cm_versions_t *v, int64_t now_ms);
/* Versions in the table (named ones, plus "other" once used). */
size_t cm_versions_count_listed(const cm_versions_t *v);

/* Appends `"name":{"dispatched":..,"acked":..,"naks":..,"expired":..,
 * "errors":..,"error_ratio":..,"members":..}` for each listed version,
 * comma-separated (no braces around the whole). */
int cm_versions_json(const cm_versions_t *v, cm_buf_t *out) __attribute__((warn_unused_result));

#endif
