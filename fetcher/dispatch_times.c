/* dispatch_times.c - see dispatch_times.h. Open addressing, linear probing,
 * backward-shift deletion (no tombstones), load factor at most 1/2. */
#include "dispatch_times.h"

#include <errno.h>
#include <stdbool.h>
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

static int cm__dt_resize(cm_dispatch_times_t *d, size_t cap) {
  cm__dt_slot_t *tab = calloc(cap, sizeof *tab);
  if (tab == NULL) return -ENOMEM;
  for (size_t i = 0; i < d->cap; i++) {
    if (!d->tab[i].used) continue;
    size_t j = cm__dt_mix(d->tab[i].e.index) & (cap - 1);
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

/* The slot holding index, or the empty slot where it would go. */
static size_t cm__dt_find(const cm_dispatch_times_t *d, uint64_t index) {
  size_t mask = d->cap - 1, i = cm__dt_mix(index) & mask;
  while (d->tab[i].used && d->tab[i].e.index != index) i = (i + 1) & mask;
  return i;
}

int cm_dispatch_times_put(cm_dispatch_times_t *d, uint64_t index, int64_t t_ms,
                          uint32_t version) {
  size_t i = cm__dt_find(d, index);
  if (d->tab[i].used) {
    d->tab[i].e.version = version;
    return 0;
  }
  if (d->n >= CM_DISPATCH_TIMES_MAX) return -ENOSPC;
  if ((d->n + 1) * 2 > d->cap) {
    if (cm__dt_resize(d, d->cap * 2) != 0) return -ENOMEM;
    i = cm__dt_find(d, index);
  }
  d->tab[i].used = true;
  d->tab[i].e = (cm_dispatch_time_t){.index = index, .t_ms = t_ms, .version = version};
  d->n++;
  return 0;
}

const cm_dispatch_time_t *cm_dispatch_times_get(const cm_dispatch_times_t *d, uint64_t index) {
  size_t i = cm__dt_find(d, index);
  return d->tab[i].used ? &d->tab[i].e : NULL;
}

void cm_dispatch_times_del(cm_dispatch_times_t *d, uint64_t index) {
  size_t mask = d->cap - 1, i = cm__dt_find(d, index);
  if (!d->tab[i].used) return;
  for (size_t j = (i + 1) & mask; d->tab[j].used; j = (j + 1) & mask) {
    size_t home = cm__dt_mix(d->tab[j].e.index) & mask;
    /* move slot j into the hole at i unless its home lies in (i, j] */
    bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      d->tab[i] = d->tab[j];
      i = j;
    }
  }
  d->tab[i].used = false;
  d->n--;
  /* Mostly empty after a burst (a replay, a stalled saver): shrink, with
   * room to spare so the next puts do not grow it straight back. */
  if (d->cap > 1024 && d->n * 8 < d->cap) (void)cm__dt_resize(d, d->cap / 4);
}

size_t cm_dispatch_times_count(const cm_dispatch_times_t *d) { return d->n; }

size_t cm_dispatch_times_capacity(const cm_dispatch_times_t *d) { return d->cap; }
