/* sched.h - stride scheduling of the dispatcher's credit between jobs
 * (docs/jobs.md "running"): every lease advances the job's pass by
 * CM_SCHED_STRIDE / priority, and the next credit goes to the job with the
 * lowest pass that has a chunk due. A job with nothing due is skipped, never
 * waited for, and banks no credit meanwhile: when a job is chosen, every
 * job tried before it (nothing due) is lifted to the chosen one's pass, so
 * coming back it shares from now on instead of taking everything until its
 * pass has caught up. A job added while others run starts at the lowest
 * pass of the others (cm_sched_join), so it gets its share at once.
 *
 * Pure: no I/O, no clock; the caller owns the entries. */
#ifndef CM_SCHED_H
#define CM_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CM_SCHED_STRIDE 1000000u

typedef struct cm_sched_ent_s {
  uint64_t pass;
  uint32_t priority; /* 1..1000 (0 is taken as 1) */
  bool tried;        /* scratch of cm_sched_pick */
} cm_sched_ent_t;

/* Tries the non-NULL entries (NULL: not runnable) in order of (pass, position) and
 * calls due(ud, i) for each until one returns true; that one is charged one
 * stride and its index returned. -1 when none has anything due. */
int cm_sched_pick(cm_sched_ent_t *const *e, size_t n, bool (*due)(void *ud, size_t i), void *ud);
/* Sets e's pass to the lowest pass of the others (0 if none) when it is
 * behind it: for a job that starts or resumes (NULLs are skipped). */
void cm_sched_join(cm_sched_ent_t *e, cm_sched_ent_t *const *all, size_t n);

#endif
