/* dispatch_times.c - see dispatch_times.h. Open addressing, linear probing,
 * backward-shift deletion (no tombstones), load factor at most 1/2. */
#include "dispatch_times.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define CM__DT_MIN_CAP 64

typedef struct {
  cm_dispatch_time_t e;
  bool used;
} cm__dt_slot_t;

struct cm_dispatch_times_s {
  cm__dt_slot_t *tab;
  size_t cap, n; /* cap: a power of two */
};

static uint64_t cm__dt_mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static uint64_t cm__dt_hash(const void *job, uint64_t index) {
  return cm__dt_mix(index ^ ((uint64_t)(uintptr_t)job * 0x9E3779B97F4A7C15ULL));
}

static int cm__dt_resize(cm_dispatch_times_t *d, size_t cap) {
  cm__dt_slot_t *tab = calloc(cap, sizeof *tab);
  if (tab == NULL) return -ENOMEM;
  for (size_t i = 0; i < d->cap; i++) {
    if (!d->tab[i].used) continue;
    size_t j = cm__dt_hash(d->tab[i].e.job, d->tab[i].e.index) & (cap - 1);
    while (tab[j].used) j = (j + 1) & (cap - 1);
    tab[j] = d->tab[i];
  }
  free(d->tab);
  d->tab = tab;
  d->cap = cap;
  return 0;
}

int cm_dispatch_times_create(cm_dispatch_times_t **out) {
  cm_dispatch_times_t *d = calloc(1, sizeof *d);
  *out = NULL;
  if (d == NULL || cm__dt_resize(d, CM__DT_MIN_CAP) != 0) {
    free(d);
    return -ENOMEM;
  }
  *out = d;
  return 0;
}

void cm_dispatch_times_destroy(cm_dispatch_times_t *d) {
  if (d == NULL) return;
  free(d->tab);
  free(d);
}

/* The slot holding (job, index), or the empty slot where it would go. */
static size_t cm__dt_find(const cm_dispatch_times_t *d, const void *job, uint64_t index) {
  size_t mask = d->cap - 1, i = cm__dt_hash(job, index) & mask;
  while (d->tab[i].used && (d->tab[i].e.index != index || d->tab[i].e.job != job))
    i = (i + 1) & mask;
  return i;
}

int cm_dispatch_times_put(cm_dispatch_times_t *d, const void *job, uint64_t index, int64_t t_ms,
                          uint32_t version) {
  size_t i = cm__dt_find(d, job, index);
  if (d->tab[i].used) {
    d->tab[i].e.version = version;
    return 0;
  }
  if (d->n >= CM_DISPATCH_TIMES_MAX) return -ENOSPC;
  if ((d->n + 1) * 2 > d->cap) {
    if (cm__dt_resize(d, d->cap * 2) != 0) return -ENOMEM;
    i = cm__dt_find(d, job, index);
  }
  d->tab[i].used = true;
  d->tab[i].e = (cm_dispatch_time_t){.job = job, .index = index, .t_ms = t_ms, .version = version};
  d->n++;
  return 0;
}

const cm_dispatch_time_t *cm_dispatch_times_get(const cm_dispatch_times_t *d, const void *job,
                                                uint64_t index) {
  size_t i = cm__dt_find(d, job, index);
  return d->tab[i].used ? &d->tab[i].e : NULL;
}

/* Backward-shift deletion of the entry in slot i; no shrink. */
static void cm__dt_remove_at(cm_dispatch_times_t *d, size_t i) {
  size_t mask = d->cap - 1;
  for (size_t j = (i + 1) & mask; d->tab[j].used; j = (j + 1) & mask) {
    size_t home = cm__dt_hash(d->tab[j].e.job, d->tab[j].e.index) & mask;
    /* move slot j into the hole at i unless its home lies in (i, j] */
    bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      d->tab[i] = d->tab[j];
      i = j;
    }
  }
  d->tab[i].used = false;
  d->n--;
}

static void cm__dt_maybe_shrink(cm_dispatch_times_t *d) {
  /* Mostly empty after a burst (a replay, a stalled saver): shrink, with
   * room to spare so the next puts do not grow it straight back. */
  if (d->cap > 1024 && d->n * 8 < d->cap) (void)cm__dt_resize(d, d->cap / 4);
}

void cm_dispatch_times_del(cm_dispatch_times_t *d, const void *job, uint64_t index) {
  size_t i = cm__dt_find(d, job, index);
  if (!d->tab[i].used) return;
  cm__dt_remove_at(d, i);
  cm__dt_maybe_shrink(d);
}

size_t cm_dispatch_times_count(const cm_dispatch_times_t *d) { return d->n; }

size_t cm_dispatch_times_capacity(const cm_dispatch_times_t *d) { return d->cap; }
