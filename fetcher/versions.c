/* versions.c - bounded per-version counters that never mislabel (see
 * versions.h).
 *
 * Handle = generation << 8 | slot. Slots 0..max-1 hold named versions; slot
 * max is "other". A slot's generation grows each time it is given to a new
 * version, so handles of a dropped version stop matching. */
#include "versions.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_BITS 8
#define SLOT_MASK ((1u << SLOT_BITS) - 1)

typedef struct {
  char name[CM_VERSIONS_NAME_MAX];
  bool used;
  uint32_t gen;     /* 1.. ; bumped when the slot gets a new version */
  uint32_t members; /* live members holding a handle */
  int64_t last_ms;  /* last join, leave or event */
  uint64_t dispatched, acked, naks, expired;
} slot_t;

struct cm_versions_s {
  size_t max;
  int64_t idle_ms;
  slot_t slot[CM_VERSIONS_MAX + 1]; /* [max] is "other" */
};

int cm_versions_create(cm_versions_t **out, size_t max, int64_t idle_ms) {
  cm_versions_t *v;
  if (out == NULL || max == 0 || idle_ms < 0) return -EINVAL;
  v = calloc(1, sizeof *v);
  if (v == NULL) return -ENOMEM;
  v->max = max > CM_VERSIONS_MAX ? CM_VERSIONS_MAX : max;
  v->idle_ms = idle_ms;
  for (size_t i = 0; i <= v->max; i++) v->slot[i].gen = 1;
  snprintf(v->slot[v->max].name, sizeof v->slot[0].name, "%s", CM_VERSIONS_OTHER);
  *out = v;
  return 0;
}

void cm_versions_destroy(cm_versions_t *v) { free(v); }

static cm_version_h handle(const cm_versions_t *v, size_t i) {
  return (cm_version_h)(v->slot[i].gen << SLOT_BITS | (uint32_t)i);
}

static slot_t *resolve(cm_versions_t *v, cm_version_h h) {
  size_t i = h & SLOT_MASK;
  if (v == NULL || h == 0 || i > v->max) return NULL;
  slot_t *s = &v->slot[i];
  if (!s->used || s->gen != h >> SLOT_BITS) return NULL;
  return s;
}

static void drop(slot_t *s) {
  uint32_t gen = s->gen + 1;
  if (gen >= (1u << (32 - SLOT_BITS))) gen = 1; /* wraps after 16M reuses of one slot */
  memset(s, 0, sizeof *s);
  s->gen = gen;
}

void cm_versions_sweep(cm_versions_t *v, int64_t now_ms) {
  if (v == NULL) return;
  for (size_t i = 0; i < v->max; i++) {
    slot_t *s = &v->slot[i];
    if (s->used && s->members == 0 && now_ms - s->last_ms >= v->idle_ms) drop(s);
  }
}

cm_version_h cm_versions_join(cm_versions_t *v, const char *name, int64_t now_ms) {
  char want[CM_VERSIONS_NAME_MAX];
  size_t free_i = SIZE_MAX, idle_i = SIZE_MAX;
  slot_t *s;
  snprintf(want, sizeof want, "%s", name != NULL && name[0] != '\0' ? name : "unknown");
  cm_versions_sweep(v, now_ms);
  /* A version literally named "other" shares the overflow row: both are
   * "not one of the named versions", and no row ever has two meanings. */
  if (strcmp(want, CM_VERSIONS_OTHER) == 0) goto other;
  for (size_t i = 0; i < v->max; i++) {
    s = &v->slot[i];
    if (!s->used) {
      if (free_i == SIZE_MAX) free_i = i;
      continue;
    }
    if (strcmp(s->name, want) == 0) {
      s->members++;
      s->last_ms = now_ms;
      return handle(v, i);
    }
    /* Departed versions are candidates for eviction, longest idle first. */
    if (s->members == 0 && (idle_i == SIZE_MAX || s->last_ms < v->slot[idle_i].last_ms))
      idle_i = i;
  }
  if (free_i == SIZE_MAX && idle_i != SIZE_MAX) {
    drop(&v->slot[idle_i]);
    free_i = idle_i;
  }
  if (free_i != SIZE_MAX) {
    s = &v->slot[free_i];
    s->used = true;
    snprintf(s->name, sizeof s->name, "%s", want);
    s->members = 1;
    s->last_ms = now_ms;
    return handle(v, free_i);
  }
other:
  /* Every slot is held by a version with live members. */
  s = &v->slot[v->max];
  s->used = true;
  s->members++;
  s->last_ms = now_ms;
  return handle(v, v->max);
}

void cm_versions_leave(cm_versions_t *v, cm_version_h h, int64_t now_ms) {
  slot_t *s = resolve(v, h);
  if (s == NULL) return;
  if (s->members > 0) s->members--;
  s->last_ms = now_ms;
}

void cm_versions_count(cm_versions_t *v, cm_version_h h, cm_version_event_t ev, int64_t now_ms) {
  slot_t *s = resolve(v, h);
  if (s == NULL) return;
  switch (ev) {
  case CM_VERSION_DISPATCHED: s->dispatched++; break;
  case CM_VERSION_ACKED: s->acked++; break;
  case CM_VERSION_NAK: s->naks++; break;
  case CM_VERSION_EXPIRED: s->expired++; break;
  }
  s->last_ms = now_ms;
}

const char *cm_versions_name(const cm_versions_t *v, cm_version_h h) {
  slot_t *s = resolve((cm_versions_t *)v, h);
  return s != NULL ? s->name : NULL;
}

size_t cm_versions_count_listed(const cm_versions_t *v) {
  size_t n = 0;
  for (size_t i = 0; v != NULL && i <= v->max; i++) n += v->slot[i].used;
  return n;
}

int cm_versions_json(const cm_versions_t *v, cm_buf_t *out) {
  int rc = 0;
  bool first = true;
  for (size_t i = 0; i <= v->max; i++) {
    const slot_t *s = &v->slot[i];
    if (!s->used) continue;
    uint64_t errors = s->naks + s->expired;
    uint64_t outcomes = s->acked + errors;
    if (!first) rc |= cm_buf_puts(out, ",");
    first = false;
    rc |= cm_buf_append_json_str(out, s->name, strlen(s->name));
    rc |= cm_buf_printf(out,
                        ":{\"dispatched\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"naks\":%" PRIu64
                        ",\"expired\":%" PRIu64 ",\"errors\":%" PRIu64
                        ",\"error_ratio\":%.4f,\"members\":%u}",
                        s->dispatched, s->acked, s->naks, s->expired, errors,
                        outcomes > 0 ? (double)errors / (double)outcomes : 0.0, s->members);
  }
  return rc != 0 ? -E2BIG : 0;
}
