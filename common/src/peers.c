/* peers.c - last heard NATS reconnect count per peer id (see peers.h). */
#include "cm/peers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char id[128];
  uint64_t reconnects;
  int64_t seen_ms;
  bool used;
} cm__peer_t;

struct cm_peers_s {
  cm__peer_t t[CM_PEERS_MAX];
};

int cm_peers_create(cm_peers_t **out) {
  *out = calloc(1, sizeof(**out));
  return *out != NULL ? 0 : -ENOMEM;
}

void cm_peers_destroy(cm_peers_t *p) { free(p); }

bool cm_peers_saw(cm_peers_t *p, const char *id, uint64_t reconnects, int64_t now_ms) {
  cm__peer_t *slot = NULL, *oldest = NULL;
  bool went_up;
  for (int i = 0; i < CM_PEERS_MAX; i++) {
    cm__peer_t *e = &p->t[i];
    if (e->used && strncmp(e->id, id, sizeof(e->id) - 1) == 0) {
      slot = e;
      break;
    }
    if (oldest == NULL || !e->used || (oldest->used && e->seen_ms < oldest->seen_ms)) oldest = e;
  }
  if (slot == NULL) {
    /* New (or forgotten): take a free slot, else the least recently heard. */
    slot = oldest;
    snprintf(slot->id, sizeof(slot->id), "%s", id);
    slot->used = true;
    slot->reconnects = reconnects;
    slot->seen_ms = now_ms;
    return false;
  }
  went_up = reconnects > slot->reconnects;
  slot->reconnects = reconnects;
  slot->seen_ms = now_ms;
  return went_up;
}
