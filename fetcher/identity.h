/* identity.h - member identity and liveness: which running instance a
 * mapper id is bound to (the random token in its heartbeats and credits),
 * when another instance may take the id over, when a member is gone, and
 * what a NATS failover or reconnect does to the members' clocks. It decides
 * and keeps the member table's identity fields (members.h); what a replaced
 * or departed instance held is released by the dispatcher's hook (leases
 * are the ledger's).
 *
 * The rule (README "Security"): a credit or heartbeat of another instance
 * under a bound id is refused (counted as member_instance) and remembered
 * as the challenger, unless
 *   - the bound instance was never heard (it holds nothing), or
 *   - the other instance has sent a heartbeat (a credit alone never takes
 *     over an id that was heard) and the bound one has drained with
 *     nothing held, or is late: its own period and half a period more (at
 *     least 250 ms) without a heartbeat.
 * A challenger that heartbeats takes over at the first tick where that
 * holds, so a restart after kill -9 releases its predecessor's leases at
 * most about 1.5 periods after the kill, not after --ack-wait. A live
 * instance that stalls is not displaced by credits, whatever they say.
 * Loop thread only. */
#ifndef CM_IDENTITY_H
#define CM_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>

#include "cm/metrics.h"
#include "cm/reject.h"
#include "members.h"

typedef struct cm_identity_hooks_s {
  void *ud;
  /* Releases every lease `id` holds, in every job, due at once; returns
   * how many. */
  int (*release_all)(void *ud, const char *id, int64_t now, const char *reason);
  /* Leases `id` holds in every job. */
  int (*held)(void *ud, const char *id);
} cm_identity_hooks_t;

typedef struct cm_identity_s cm_identity_t;

/* Borrows mt, metrics and rej (they outlive it); registers the restart and
 * departure counters. heartbeat_ms: the fetcher's own period, used for a
 * member that has not said its own and as the floor of the departure
 * time. */
int cm_identity_create(cm_identity_t **out, cm_members_t *mt, cm_metrics_t *metrics,
                       cm_reject_t *rej, int64_t heartbeat_ms, const cm_identity_hooks_t *hooks)
    __attribute__((warn_unused_result));
void cm_identity_destroy(cm_identity_t *id); /* NULL-safe */

/* A credit from `instance` under the id of the active member m. true: it
 * is m's bound instance (now, possibly after a takeover: version set);
 * false: refused (counted) or ignored (a draining credit of another
 * instance): drop the credit. */
bool cm_identity_credit(cm_identity_t *id, cm_member_t *m, const char *instance, bool draining,
                        const char *version, int64_t now);
/* A heartbeat from `instance` under m's id (m may be NULL: unknown ids are
 * created by credit). Returns m, alive now (heard, its period taken), when
 * the heartbeat is its bound instance's (possibly after a takeover); else
 * NULL (refused and counted, or unknown). *first: m had not been heard. */
cm_member_t *cm_identity_heartbeat(cm_identity_t *id, cm_member_t *m, const char *instance,
                                   bool draining, const char *version, int64_t period_ms,
                                   int64_t now, bool *first);
/* Every tick while connected: challengers take over late instances;
 * members silent for three periods are gone (their leases released, an
 * unheard one simply forgotten). */
void cm_identity_tick(cm_identity_t *id, int64_t now);

/* A NATS failover somewhere (ours, or a peer's seen in its heartbeat):
 * every member's leases are to be checked against its heartbeat from
 * m->reconcile_at on (the dispatcher does, see cm_member_t), and members
 * silent now get the reconnect grace (they are probably failing over too). */
void cm_identity_failover(cm_identity_t *id, int64_t now);
/* A heartbeat of a peer (any role but the fetcher) with its count of NATS
 * reconnects: a new reconnect is a failover (cm_identity_failover). */
void cm_identity_peer(cm_identity_t *id, const char *role, const char *peer,
                      uint64_t reconnects, const char *server, int64_t now);
/* We (re)connected: chunks sent before may never have arrived (free is
 * forgotten until the next credit), and every member gets the reconnect
 * grace before a missed heartbeat counts. */
void cm_identity_connected(cm_identity_t *id, int64_t now);

#endif
