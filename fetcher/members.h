/* members.h - the dispatcher's member table: every mapper that sent credit
 * (bound to one running instance by its random token, see fetch.c), the
 * versions they report (versions.h), and the savers heard in heartbeats
 * (for GET /members). Pure bookkeeping: what a member holds is the ledger's
 * business, so releasing its leases stays with the dispatcher.
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

typedef struct cm_member_s {
  bool active;
  bool heard;
  char id[128];
  char instance[40];
  uint32_t slots; /* what the instance declared it can hold (capped) */
  int64_t hb_ms;  /* last heartbeat of the bound instance */
  /* Another instance under this id, seen while the bound one was alive:
   * it takes over as soon as the bound one misses its heartbeat. */
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
/* Remembers `instance` as the challenger of m's id (see cm_member_t). */
void cm_member_challenge(cm_member_t *m, const char *instance, bool heard, int64_t now);
/* Chunks m can take now: its free slots minus chunks still in transit. */
int64_t cm_member_available(const cm_member_t *m);

/* A saver heard in a heartbeat. */
void cm_members_saver_seen(cm_members_t *t, const char *id, const char *instance,
                           const char *version, uint64_t inflight, int64_t now);
/* {"members":[...]} of docs/jobs.md: the fetcher itself (self_*), every
 * active mapper, every saver heard within the last forget_ms. */
int cm_members_json(cm_members_t *t, const char *self_id, const char *self_instance,
                    const char *self_version, int64_t now, int64_t forget_ms, cm_buf_t *out)
    __attribute__((warn_unused_result));

#endif
