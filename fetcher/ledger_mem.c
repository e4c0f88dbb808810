/* ledger_mem.c - the ledger's in-memory index of live chunks: an
 * open-addressing hash table by chunk index, the binary heaps that order
 * them, and the FIFO of pending chunks (see ledger_mem.h). Pure data
 * structures: no SQLite, no I/O. */
#include "ledger_mem.h"

#include <errno.h>
#include <stdlib.h>

static uint64_t cm__mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

/* ---- pending FIFO ---- */

void cm__pendq_push(cm__pendq_t *q, cm__chunk_t *c, int64_t now_ms) {
  if (c->in_pendq) cm__pendq_remove(q, c); /* re-pending: it waits anew */
  c->pending_since_ms = now_ms;
  c->pq_next = NULL;
  c->pq_prev = q->tail;
  if (q->tail)
    q->tail->pq_next = c;
  else
    q->head = c;
  q->tail = c;
  c->in_pendq = true;
}

void cm__pendq_remove(cm__pendq_t *q, cm__chunk_t *c) {
  if (!c->in_pendq) return;
  if (c->pq_prev)
    c->pq_prev->pq_next = c->pq_next;
  else
    q->head = c->pq_next;
  if (c->pq_next)
    c->pq_next->pq_prev = c->pq_prev;
  else
    q->tail = c->pq_prev;
  c->pq_prev = c->pq_next = NULL;
  c->in_pendq = false;
}

/* ---- heaps ---- */

static bool cm__less(int kind, const cm__chunk_t *a, const cm__chunk_t *b) {
  if (kind == CM__H_WAIT && a->not_before_ms != b->not_before_ms)
    return a->not_before_ms < b->not_before_ms;
  if (kind == CM__H_LEASE && a->deadline_ms != b->deadline_ms)
    return a->deadline_ms < b->deadline_ms;
  return a->idx < b->idx;
}

static void cm__heap_set(cm__heap_t *h, size_t i, cm__chunk_t *c) {
  h->v[i] = c;
  c->heap_pos = (uint32_t)i;
}

static void cm__sift_up(cm__heap_t *h, size_t i) {
  cm__chunk_t *c = h->v[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!cm__less(h->kind, c, h->v[p])) break;
    cm__heap_set(h, i, h->v[p]);
    i = p;
  }
  cm__heap_set(h, i, c);
}

static void cm__sift_down(cm__heap_t *h, size_t i) {
  cm__chunk_t *c = h->v[i];
  for (;;) {
    size_t m = 2 * i + 1;
    if (m >= h->n) break;
    if (m + 1 < h->n && cm__less(h->kind, h->v[m + 1], h->v[m])) m++;
    if (!cm__less(h->kind, h->v[m], c)) break;
    cm__heap_set(h, i, h->v[m]);
    i = m;
  }
  cm__heap_set(h, i, c);
}

int cm__heap_reserve(cm__heap_t *h) {
  if (h->n < h->cap) return 0;
  size_t cap = h->cap ? h->cap * 2 : 64;
  cm__chunk_t **v = realloc(h->v, cap * sizeof *v);
  if (!v) return -ENOMEM;
  h->v = v;
  h->cap = cap;
  return 0;
}

/* Capacity must have been reserved: pushes never fail, so a state change
 * either happens completely or not at all. */
void cm__heap_push(cm__heap_t *h, cm__chunk_t *c) {
  c->heap = (uint8_t)h->kind;
  h->v[h->n++] = c;
  cm__sift_up(h, h->n - 1);
}

void cm__heap_remove(cm__heap_t *h, cm__chunk_t *c) {
  size_t i = c->heap_pos;
  cm__chunk_t *last = h->v[--h->n];
  c->heap = CM__H_NONE;
  if (i == h->n) return;
  cm__heap_set(h, i, last);
  cm__sift_down(h, i);
  cm__sift_up(h, last->heap_pos);
}

void cm__heap_fix(cm__heap_t *h, cm__chunk_t *c) {
  /* The key of c changed: move it whichever way restores the order. */
  cm__sift_down(h, c->heap_pos);
  cm__sift_up(h, c->heap_pos);
}

/* ---- hash table ---- */

cm__chunk_t *cm__set_find(const cm__chunkset_t *l, uint64_t idx) {
  if (l->cap == 0) return NULL;
  size_t mask = l->cap - 1;
  for (size_t i = cm__mix64(idx) & mask;; i = (i + 1) & mask) {
    cm__chunk_t *c = l->tab[i];
    if (!c) return NULL;
    if (c->idx == idx) return c;
  }
}

static void cm__tab_put(cm__chunk_t **tab, size_t cap, cm__chunk_t *c) {
  size_t mask = cap - 1;
  size_t i = cm__mix64(c->idx) & mask;
  while (tab[i]) i = (i + 1) & mask;
  tab[i] = c;
}

static int cm__set_resize(cm__chunkset_t *l, size_t cap) {
  cm__chunk_t **tab = calloc(cap, sizeof *tab);
  if (!tab) return -ENOMEM;
  for (size_t i = 0; i < l->cap; i++)
    if (l->tab[i]) cm__tab_put(tab, cap, l->tab[i]);
  free(l->tab);
  l->tab = tab;
  l->cap = cap;
  return 0;
}

/* Room for one more entry at a load factor <= 1/2. */
int cm__set_reserve(cm__chunkset_t *l) {
  if ((l->n + 1) * 2 <= l->cap) return 0;
  return cm__set_resize(l, l->cap ? l->cap * 2 : 64);
}

void cm__set_insert(cm__chunkset_t *l, cm__chunk_t *c) {
  cm__tab_put(l->tab, l->cap, c);
  l->n++;
}

/* Backward-shift deletion: no tombstones, so lookups stay short however
 * many chunks pass through the table. */
void cm__set_delete(cm__chunkset_t *l, const cm__chunk_t *c) {
  size_t mask = l->cap - 1;
  size_t i = cm__mix64(c->idx) & mask;
  while (l->tab[i] != c) i = (i + 1) & mask;
  for (size_t j = (i + 1) & mask; l->tab[j]; j = (j + 1) & mask) {
    size_t home = cm__mix64(l->tab[j]->idx) & mask;
    /* move tab[j] into the hole at i unless its home lies in (i, j] */
    bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      l->tab[i] = l->tab[j];
      i = j;
    }
  }
  l->tab[i] = NULL;
  l->n--;
}

/* After a flush drops done chunks: give memory back when the table is mostly
 * empty, so a burst (e.g. a replay) does not pin it. */
void cm__set_shrink(cm__chunkset_t *l) {
  if (l->cap > 1024 && l->n * 8 < l->cap) (void)cm__set_resize(l, l->cap / 4);
}
