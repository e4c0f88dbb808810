/* members.c - see members.h. */
#include "members.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct saver_s {
  char id[128];
  char instance[40];
  char version[CM_VERSIONS_NAME_MAX];
  uint64_t inflight;
  int64_t hb_ms;
} saver_t;

struct cm_members_s {
  cm_versions_t *versions;
  cm_member_t v[CM_MEMBERS_MAX];
  int n;
  saver_t savers[CM_MEMBERS_MAX_SAVERS];
  int nsavers;
};

int cm_members_create(cm_members_t **out, cm_versions_t *versions) {
  cm_members_t *t = calloc(1, sizeof(*t));
  *out = t;
  if (t == NULL) return -ENOMEM;
  t->versions = versions;
  return 0;
}

void cm_members_destroy(cm_members_t *t) { free(t); }

int cm_members_count(const cm_members_t *t) { return t->n; }
cm_member_t *cm_members_at(cm_members_t *t, int i) { return &t->v[i]; }

int cm_members_active(const cm_members_t *t) {
  int n = 0;
  for (int i = 0; i < t->n; i++) n += t->v[i].active;
  return n;
}

cm_member_t *cm_members_find(cm_members_t *t, const char *id) {
  for (int i = 0; i < t->n; i++)
    if (t->v[i].active && strcmp(t->v[i].id, id) == 0) return &t->v[i];
  return NULL;
}

void cm_members_forget(cm_members_t *t, cm_member_t *m, int64_t now) {
  m->active = false;
  if (m->version_name[0] != '\0') cm_versions_leave(t->versions, m->version, now);
}

void cm_members_set_version(cm_members_t *t, cm_member_t *m, const char *v, int64_t now) {
  const char *name = v != NULL && v[0] ? v : "unknown";
  if (m->version_name[0] != '\0') {
    if (strncmp(name, m->version_name, sizeof(m->version_name) - 1) == 0) return;
    cm_versions_leave(t->versions, m->version, now);
  }
  snprintf(m->version_name, sizeof(m->version_name), "%s", name);
  m->version = cm_versions_join(t->versions, m->version_name, now);
}

cm_member_t *cm_members_add(cm_members_t *t, const char *id, int64_t now) {
  cm_member_t *m = NULL, *oldest = NULL;
  int unheard = 0;
  for (int i = 0; i < t->n; i++) {
    cm_member_t *u = &t->v[i];
    if (!u->active || u->heard) continue;
    unheard++;
    if (oldest == NULL || u->joined_ms < oldest->joined_ms) oldest = u;
  }
  /* An unheard member holds no work: dropping it loses nothing. */
  if (unheard >= CM_MEMBERS_MAX_UNHEARD && oldest != NULL) cm_members_forget(t, oldest, now);
  for (int i = 0; i < t->n; i++)
    if (!t->v[i].active) {
      m = &t->v[i];
      break;
    }
  if (m == NULL) {
    if (t->n == CM_MEMBERS_MAX) return NULL;
    m = &t->v[t->n++];
  }
  memset(m, 0, sizeof(*m));
  m->active = true;
  snprintf(m->id, sizeof(m->id), "%s", id);
  m->joined_ms = now;
  m->last_seen_ms = now;
  m->first_dispatch_ms = -1;
  return m;
}

int64_t cm_member_available(const cm_member_t *m) {
  /* Chunks sent that the mapper had not seen when it reported `free` are
   * still on their way: subtract them, so a stale credit never overfills. */
  int64_t in_transit = (int64_t)m->sent - (int64_t)m->received;
  if (in_transit < 0) in_transit = 0;
  if (m->draining || !m->heard) return 0;
  return (int64_t)(m->free < m->slots ? m->free : m->slots) - in_transit;
}

cm_member_t *cm_members_pick(cm_members_t *t) {
  cm_member_t *best = NULL;
  int64_t best_av = 0;
  for (int i = 0; i < t->n; i++) {
    cm_member_t *m = &t->v[i];
    int64_t av;
    if (!m->active) continue;
    av = cm_member_available(m);
    if (av > best_av) {
      best = m;
      best_av = av;
    }
  }
  return best;
}

bool cm_member_credit(cm_member_t *m, const char *subject, uint32_t free, uint32_t slots,
                      uint64_t received, bool draining) {
  snprintf(m->subject, sizeof(m->subject), "%s", subject);
  if (m->slots == 0) {
    /* Bound once per instance: a later credit cannot raise it. 0 (a mapper
     * that does not say) means the hard bound. */
    m->slots = slots > 0 && slots < CM_MEMBERS_MAX_SLOTS ? slots : CM_MEMBERS_MAX_SLOTS;
  }
  m->free = free > m->slots ? m->slots : free;
  if (m->sent == 0 || received < m->received) {
    /* First credit from this instance, or its counter went back: align
     * our count of chunks sent with its count of chunks received, so
     * sent - received is what is in transit. */
    m->received = received;
    m->sent = received;
  } else {
    m->received = received;
  }
  m->draining = draining;
  return free <= m->slots;
}

bool cm_member_dispatched(cm_member_t *m, int64_t now) {
  m->sent++;
  if (m->first_dispatch_ms >= 0) return false;
  m->first_dispatch_ms = now;
  return true;
}

void cm_members_saver_seen(cm_members_t *t, const char *id, const char *instance,
                           const char *version, uint64_t inflight, int64_t now) {
  saver_t *s = NULL, *oldest = NULL;
  for (int i = 0; i < t->nsavers; i++) {
    if (strcmp(t->savers[i].id, id) == 0) {
      s = &t->savers[i];
      break;
    }
    if (oldest == NULL || t->savers[i].hb_ms < oldest->hb_ms) oldest = &t->savers[i];
  }
  if (s == NULL) s = t->nsavers < CM_MEMBERS_MAX_SAVERS ? &t->savers[t->nsavers++] : oldest;
  snprintf(s->id, sizeof(s->id), "%s", id);
  snprintf(s->instance, sizeof(s->instance), "%s", instance ? instance : "");
  snprintf(s->version, sizeof(s->version), "%s", version && version[0] ? version : "unknown");
  s->inflight = inflight;
  s->hb_ms = now;
}

static int member_obj(cm_buf_t *out, bool first, const char *id, const char *role,
                      const char *version, uint64_t inflight, int64_t ago, const char *instance) {
  int rc = cm_buf_puts(out, first ? "{\"id\":" : ",{\"id\":");
  rc |= cm_buf_append_json_str(out, id, strlen(id));
  rc |= cm_buf_printf(out, ",\"role\":\"%s\",\"version\":", role);
  rc |= cm_buf_append_json_str(out, version, strlen(version));
  rc |= cm_buf_printf(out, ",\"inflight\":%" PRIu64 ",\"last_heartbeat_ms_ago\":", inflight);
  rc |= ago < 0 ? cm_buf_puts(out, "null") : cm_buf_printf(out, "%" PRId64, ago);
  rc |= cm_buf_puts(out, ",\"instance\":");
  rc |= cm_buf_append_json_str(out, instance, strlen(instance));
  return rc | cm_buf_puts(out, "}");
}

int cm_members_json(cm_members_t *t, const char *self_id, const char *self_instance,
                    const char *self_version, int64_t now, int64_t forget_ms,
                    const uint32_t *held, cm_buf_t *out) {
  int rc = cm_buf_puts(out, "{\"members\":[");
  rc |= member_obj(out, true, self_id, "fetcher", self_version ? self_version : "", 0, 0,
                   self_instance ? self_instance : "");
  for (int i = 0; i < t->n; i++) {
    const cm_member_t *m = &t->v[i];
    if (!m->active) continue;
    rc |= member_obj(out, false, m->id, "mapper", m->version_name, held != NULL ? held[i] : 0,
                     m->heard ? now - m->hb_ms : -1, m->instance);
  }
  for (int i = 0; i < t->nsavers; i++) {
    const saver_t *s = &t->savers[i];
    if (now - s->hb_ms > forget_ms) continue;
    rc |= member_obj(out, false, s->id, "saver", s->version, s->inflight, now - s->hb_ms,
                     s->instance);
  }
  return rc | cm_buf_puts(out, "]}");
}
