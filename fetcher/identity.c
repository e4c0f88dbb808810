/* identity.c - see identity.h. */
#include "identity.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/log.h"
#include "cm/peers.h"

/* After a reconnect, how long the members (reconnecting too: nats.c's
 * reconnect wait plus jitter) have before a missed heartbeat counts. */
#define IDENTITY_RECONNECT_GRACE_MS 3000
/* After a failover, how long to let messages already on their way land
 * before a mapper's heartbeat is trusted to list every chunk it holds. */
#define IDENTITY_FAILOVER_SETTLE_MS 500
/* The least lateness that counts as a missed heartbeat: a busy host delays
 * short periods by about that much. */
#define IDENTITY_MIN_SLACK_MS 250

struct cm_identity_s {
  cm_members_t *mt;
  cm_reject_t *rej;
  int64_t hb_ms;
  cm_identity_hooks_t hooks;
  cm_peers_t *peers; /* reconnect counts from heartbeats */
  cm_counter_t *m_replaced, *m_departed;
};

int cm_identity_create(cm_identity_t **out, cm_members_t *mt, cm_metrics_t *metrics,
                       cm_reject_t *rej, int64_t heartbeat_ms, const cm_identity_hooks_t *hooks) {
  cm_identity_t *id = calloc(1, sizeof(*id));
  *out = id;
  if (id == NULL) return -ENOMEM;
  id->mt = mt;
  id->rej = rej;
  id->hb_ms = heartbeat_ms;
  id->hooks = *hooks;
  if (cm_peers_create(&id->peers) != 0) {
    free(id);
    *out = NULL;
    return -ENOMEM;
  }
  id->m_departed = cm_metrics_counter(metrics, "chunkmill_fetcher_mapper_departures_total",
                                      "Mappers declared gone after 3 missed heartbeats.", NULL);
  id->m_replaced = cm_metrics_counter(metrics, "chunkmill_fetcher_mapper_restarts_total",
                                      "Mapper ids taken over by a new instance (a restart); the "
                                      "predecessor's leases were released at once.",
                                      NULL);
  return 0;
}

void cm_identity_destroy(cm_identity_t *id) {
  if (id == NULL) return;
  cm_peers_destroy(id->peers);
  free(id);
}

static int64_t period_of(const cm_identity_t *id, const cm_member_t *m) {
  return m->period_ms > 0 ? m->period_ms : id->hb_ms;
}

/* identity.h's rule. `heard`: the other instance has sent a heartbeat (this
 * message is one, or it is the challenger and one of its heartbeats was
 * seen). */
static bool may_take_over(cm_identity_t *id, const cm_member_t *m, bool heard, int64_t now) {
  int64_t period = period_of(id, m);
  if (!m->heard) return true;
  /* Anyone who may publish a credit can make one up under any id: only a
   * heartbeating process is taken for a restart. */
  if (!heard) return false;
  /* Drained: it announced it is leaving and holds nothing any more. */
  if (m->draining && id->hooks.held(id->hooks.ud, m->id) == 0) return true;
  return now - m->hb_ms >
         period + (period / 2 > IDENTITY_MIN_SLACK_MS ? period / 2 : IDENTITY_MIN_SLACK_MS);
}

static bool challenger_heard(const cm_member_t *m, const char *instance) {
  return m->challenger_heard && strcmp(m->challenger, instance) == 0;
}

/* Remembers `instance` as the challenger of m's id (see cm_member_t). */
static void challenge(cm_member_t *m, const char *instance, bool heard, int64_t now) {
  if (strcmp(m->challenger, instance) != 0) m->challenger_heard = false;
  snprintf(m->challenger, sizeof(m->challenger), "%s", instance);
  m->challenger_ms = now;
  m->challenger_heard = m->challenger_heard || heard;
}

/* Binds m to `instance`, releasing what a predecessor held. */
static void rebind(cm_identity_t *id, cm_member_t *m, const char *instance, bool heard,
                   int64_t now) {
  int held = 0;
  bool had = m->heard;
  char old[sizeof(m->instance)];
  snprintf(old, sizeof(old), "%s", m->instance);
  if (m->heard)
    held = id->hooks.release_all(id->hooks.ud, m->id, now,
                                 "mapper restarted (a new instance of its id)");
  snprintf(m->instance, sizeof(m->instance), "%s", instance);
  m->heard = heard;
  m->hb_ms = now;
  m->last_seen_ms = now;
  m->free = 0;
  m->sent = m->received = 0;
  m->slots = 0;
  m->draining = false;
  /* period_ms is kept: a restarted instance beats like its predecessor
   * until its own heartbeat says otherwise. */
  m->challenger[0] = '\0';
  m->challenger_heard = false;
  if (had) {
    cm_counter_inc(id->m_replaced);
    cm_log_warn("mapper %s: new instance %.8s replaces %.8s, which stopped sending heartbeats; "
                "%d chunks it held are pending again",
                m->id, instance, old, held);
  }
}

bool cm_identity_credit(cm_identity_t *id, cm_member_t *m, const char *instance, bool draining,
                        const char *version, int64_t now) {
  bool heard;
  if (strcmp(m->instance, instance) == 0) return true;
  heard = challenger_heard(m, instance);
  if (!may_take_over(id, m, heard, now)) {
    cm_reject(id->rej, now, "member_instance",
              "credit for mapper %.64s from instance %.8s while instance %.8s of that id is "
              "alive",
              m->id, instance, m->instance);
    if (!draining) challenge(m, instance, false, now);
    return false;
  }
  if (draining) return false;
  rebind(id, m, instance, heard, now);
  cm_members_set_version(id->mt, m, version, now);
  return true;
}

cm_member_t *cm_identity_heartbeat(cm_identity_t *id, cm_member_t *m, const char *instance,
                                   bool draining, const char *version, int64_t period_ms,
                                   int64_t now, bool *first) {
  *first = false;
  if (m == NULL) return NULL;
  if (strcmp(m->instance, instance) != 0) {
    if (!may_take_over(id, m, true, now)) {
      cm_reject(id->rej, now, "member_instance",
                "heartbeat of mapper %.64s from instance %.8s while instance %.8s of that id "
                "is alive",
                m->id, instance, m->instance);
      if (!draining) challenge(m, instance, true, now);
      return NULL;
    }
    /* A restart (kill -9, container restart under the same name): the
     * predecessor's leases are pending again now, not after --ack-wait.
     * The new instance's next credit names its room. */
    rebind(id, m, instance, true, now);
    cm_members_set_version(id->mt, m, version, now);
  }
  *first = !m->heard;
  m->heard = true;
  m->hb_ms = now;
  m->last_seen_ms = now;
  m->period_ms = period_ms;
  return m;
}

void cm_identity_tick(cm_identity_t *id, int64_t now) {
  for (int i = 0; i < cm_members_count(id->mt); i++) {
    cm_member_t *m = cm_members_at(id->mt, i);
    int64_t period = period_of(id, m);
    if (m->active && m->challenger[0] != '\0') {
      /* A challenger heard within the last two periods takes over once the
       * bound instance is late. */
      if (now - m->challenger_ms > 2 * period) {
        m->challenger[0] = '\0';
        m->challenger_heard = false;
      } else if (may_take_over(id, m, m->challenger_heard, now)) {
        char inst[sizeof(m->challenger)];
        snprintf(inst, sizeof(inst), "%s", m->challenger);
        rebind(id, m, inst, m->challenger_heard, now);
        /* Its subject is <prefix>.chunk.<id>; its room comes with its next
         * credit. */
        continue;
      }
    }
    /* Three of the mapper's own periods (it may beat slower than us). */
    if (!m->active || now - m->last_seen_ms <= 3 * (m->period_ms > id->hb_ms ? m->period_ms
                                                                             : id->hb_ms))
      continue;
    if (!m->heard) {
      /* Credit without a heartbeat: never got work, nothing to release. */
      cm_log_debug("mapper %s sent credit but no heartbeat: forgotten", m->id);
      cm_members_forget(id->mt, m, now);
      continue;
    }
    int held = id->hooks.release_all(id->hooks.ud, m->id, now, "mapper stopped sending heartbeats");
    cm_counter_inc(id->m_departed);
    cm_log_warn("mapper %s missed 3 heartbeats: gone; %d chunks it held are pending again", m->id,
                held);
    cm_members_forget(id->mt, m, now);
  }
}

void cm_identity_failover(cm_identity_t *id, int64_t now) {
  for (int i = 0; i < cm_members_count(id->mt); i++) {
    cm_member_t *m = cm_members_at(id->mt, i);
    int64_t period = m->period_ms > id->hb_ms ? m->period_ms : id->hb_ms;
    if (!m->active) continue;
    m->reconcile_at =
        now + (period > IDENTITY_FAILOVER_SETTLE_MS ? period : IDENTITY_FAILOVER_SETTLE_MS);
    m->reconcile_cutoff = now;
    if (now - m->last_seen_ms > period && m->last_seen_ms < now + IDENTITY_RECONNECT_GRACE_MS)
      m->last_seen_ms = now + IDENTITY_RECONNECT_GRACE_MS;
  }
}

void cm_identity_peer(cm_identity_t *id, const char *role, const char *peer,
                      uint64_t reconnects, const char *server, int64_t now) {
  if (!cm_peers_saw(id->peers, peer, reconnects, now)) return;
  cm_log_info("%s %s reconnected to NATS (now on %s): checking the mappers' leases", role, peer,
              server != NULL && server[0] ? server : "?");
  cm_identity_failover(id, now);
}

void cm_identity_connected(cm_identity_t *id, int64_t now) {
  for (int i = 0; i < cm_members_count(id->mt); i++) {
    cm_member_t *m = cm_members_at(id->mt, i);
    if (!m->active) continue;
    /* `sent` is kept: chunks buffered across the outage are delivered now
     * and still count against the mapper's room. A chunk that was really
     * lost is healed when its lease expires. */
    m->free = 0;
    m->last_seen_ms = now + IDENTITY_RECONNECT_GRACE_MS;
  }
}
