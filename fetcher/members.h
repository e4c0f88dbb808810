/* members.h - the dispatcher's member table: every mapper that sent credit
 * (bound to one running instance by its random token: identity.h decides),
 * the versions they report (versions.h), and the savers heard in
 * heartbeats (for GET /members). Pure bookkeeping: what a member holds is
 * the ledger's business, so releasing its leases stays with the dispatcher.
 * Loop thread only. */
#ifndef CM_MEMBERS_H
#define CM_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"
#include "versions.h"

#define CM_MEMBERS_MAX 1024
/* Members that have sent credit but no heartbeat yet: at most this many
 * (the oldest is dropped first), so a flood of made-up ids cannot fill the
 * member table. */
#define CM_MEMBERS_MAX_UNHEARD 64
#define CM_MEMBERS_MAX_SAVERS 256
/* Hard upper bound of what one mapper instance may hold, whatever it
 * declares (the mapper's own MAPPER_MAX_SLOTS). */
#define CM_MEMBERS_MAX_SLOTS 1024

typedef struct cm_member_s {
  bool active;
  bool heard;
  char id[128];
  char instance[40];
  uint32_t slots; /* what the instance declared it can hold (capped) */
  int64_t hb_ms;  /* last heartbeat of the bound instance */
  /* Another instance under this id, seen while the bound one was alive
   * (challenger_heard: in a heartbeat): it may take over later, by
   * identity.h's rule. */
  char challenger[40];
  int64_t challenger_ms;
  bool challenger_heard;
  char subject[256];
  cm_version_h version;
  char version_name[CM_VERSIONS_NAME_MAX]; /* as the mapper reports it */
  uint32_t free;
  uint64_t received;
  uint64_t sent;
  int64_t last_seen_ms;
  int64_t joined_ms;
  int64_t first_dispatch_ms; /* -1 until it got work */
  int64_t period_ms;         /* its heartbeat period (0 until heard) */
  bool draining;
  uint64_t acked;
  /* Set by a NATS failover (ours, this mapper's or a saver's): at its first
   * heartbeat from reconcile_at on, leases dispatched to it before
   * reconcile_cutoff that it does not hold were lost and go out again. */
  int64_t reconcile_at;
  int64_t reconcile_cutoff;
} cm_member_t;

typedef struct cm_members_s cm_members_t;

/* versions: borrowed, outlives the table. */
int cm_members_create(cm_members_t **out, cm_versions_t *versions)
    __attribute__((warn_unused_result));
void cm_members_destroy(cm_members_t *t); /* NULL-safe */

/* Slots 0 .. count-1, active or not (check ->active). */
int cm_members_count(const cm_members_t *t);
cm_member_t *cm_members_at(cm_members_t *t, int i);
int cm_members_active(const cm_members_t *t);

cm_member_t *cm_members_find(cm_members_t *t, const char *id); /* active only */
/* A new active member (unheard, not bound to a version yet); NULL when the
 * table is full. Drops the oldest unheard one beyond the unheard limit. */
cm_member_t *cm_members_add(cm_members_t *t, const char *id, int64_t now);
/* Marks m inactive (it leaves its version). */
void cm_members_forget(cm_members_t *t, cm_member_t *m, int64_t now);
/* The version m reports (NULL or "" = "unknown"): m leaves its previous
 * version's entry, if any, and joins the new one. */
void cm_members_set_version(cm_members_t *t, cm_member_t *m, const char *v, int64_t now);
/* Chunks m can take now: its free slots minus chunks still in transit. */
int64_t cm_member_available(const cm_member_t *m);
/* The active member that can take the most chunks now; NULL if none can. */
cm_member_t *cm_members_pick(cm_members_t *t);
/* A credit of m's bound instance: the subject it receives on, its room
 * (free, capped at its slots, which are fixed by its first credit: 0 means
 * CM_MEMBERS_MAX_SLOTS), the chunks it has received, draining. false when
 * free was more than its slots (capped). */
bool cm_member_credit(cm_member_t *m, const char *subject, uint32_t free, uint32_t slots,
                      uint64_t received, bool draining);
/* A chunk was sent to m: true the first time. */
bool cm_member_dispatched(cm_member_t *m, int64_t now);

/* A saver heard in a heartbeat. */
void cm_members_saver_seen(cm_members_t *t, const char *id, const char *instance,
                           const char *version, uint64_t inflight, int64_t now);
/* {"members":[...]} of docs/jobs.md: the fetcher itself (self_*), every
 * active mapper, every saver heard within the last forget_ms. A mapper's
 * "inflight" is held[i] for slot i (the leases the fetcher holds for it,
 * counted by the caller; held may be NULL: 0), a saver's what its last
 * heartbeat listed. */
int cm_members_json(cm_members_t *t, const char *self_id, const char *self_instance,
                    const char *self_version, int64_t now, int64_t forget_ms,
                    const uint32_t *held, cm_buf_t *out) __attribute__((warn_unused_result));

#endif
