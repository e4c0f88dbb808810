/* sched.c - see sched.h. */
#include "sched.h"

static uint64_t stride(const cm_sched_ent_t *e) {
  return CM_SCHED_STRIDE / (e->priority ? e->priority : 1);
}

int cm_sched_pick(cm_sched_ent_t *const *e, size_t n, bool (*due)(void *ud, size_t i), void *ud) {
  for (size_t i = 0; i < n; i++)
    if (e[i]) e[i]->tried = false;
  /* n is the number of jobs (small): a selection per try is cheaper than a
   * sort, and the common case is that the first one tried has work. */
  for (;;) {
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
      if (!e[i] || e[i]->tried) continue;
      if (best == n || e[i]->pass < e[best]->pass) best = i;
    }
    if (best == n) return -1;
    e[best]->tried = true;
    if (!due(ud, best)) continue;
    for (size_t i = 0; i < n; i++)
      if (e[i] && e[i]->tried && e[i]->pass < e[best]->pass) e[i]->pass = e[best]->pass;
    e[best]->pass += stride(e[best]);
    return (int)best;
  }
}

void cm_sched_join(cm_sched_ent_t *e, cm_sched_ent_t *const *all, size_t n) {
  bool any = false;
  uint64_t low = 0;
  for (size_t i = 0; i < n; i++) {
    if (!all[i] || all[i] == e) continue;
    if (!any || all[i]->pass < low) low = all[i]->pass;
    any = true;
  }
  if (any && e->pass < low) e->pass = low;
}
