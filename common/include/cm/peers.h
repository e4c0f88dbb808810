/* peers.h - which peers have just failed over to another NATS server.
 *
 * Every heartbeat carries its sender's NATS reconnect count. A peer whose
 * count went up since its previous heartbeat has reconnected (to the same or
 * another node of a cluster): messages to or from it in the moment its old
 * connection died may be lost, and the receiver reacts (the fetcher checks
 * the leases of its mappers, a mapper resends unconfirmed saves).
 *
 * A fixed table of the most recently heard peers (CM_PEERS_MAX); a peer that
 * falls out of it is simply new again (never reported as reconnected).
 * Single-threaded: the loop thread. */
#ifndef CM_PEERS_H
#define CM_PEERS_H

#include <stdbool.h>
#include <stdint.h>

#define CM_PEERS_MAX 256

typedef struct cm_peers_s cm_peers_t;

int cm_peers_create(cm_peers_t **out) __attribute__((warn_unused_result));
void cm_peers_destroy(cm_peers_t *p); /* NULL-safe */

/* Records a heartbeat of peer `id` carrying `reconnects`. Returns true when
 * the peer was heard before with a lower count (it reconnected since), false
 * for a new peer or an unchanged count. A lower count than before is a
 * restarted process: remembered, not a reconnect. */
bool cm_peers_saw(cm_peers_t *p, const char *id, uint64_t reconnects, int64_t now_ms);

#endif
