/* fetch.h - the fetcher's dispatcher: mapper credit in, leased chunks out,
 * acks and naks back into the ledger; lease expiry; progress; completion.
 * Loop thread only. */
#ifndef CM_FETCH_H
#define CM_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/daemon.h"
#include "cm/lease.h"
#include "jobs.h"
#include "ledger.h"

typedef struct cm_fetch_cfg_s {
  const char *job;
  int64_t ack_wait_ms;
  int64_t max_inflight;
  int64_t max_deliver;
  int64_t progress_ms; /* 0: no progress lines */
  bool once;
  bool allow_dead;
  /* Borrowed, may be NULL: with a key every chunk carries a lease token and
   * only Acks with a saver's MAC, Naks and heartbeat leases with the
   * chunk's token count (cm/lease.h). */
  const cm_lease_key_t *lease_key;
} cm_fetch_cfg_t;

typedef struct cm_fetch_s cm_fetch_t;

/* Borrows d, the root ledger handle (no job open: its flush writes every
 * job's changes) and the job registry; primary (may be NULL) is the --job
 * job: /status "job", the single-job metrics, and --once's exit. They
 * outlive the dispatcher, which binds the registry's hooks. Subscribes and
 * starts the timers. On a subscription failure it returns -EIO but still
 * sets *out (stopped, timers idle): earlier subscriptions point at it, so it
 * must live until NATS is closed; destroy it after cm_daemon_run. */
int cm_fetch_create(cm_fetch_t **out, cm_daemon_t *d, const cm_fetch_cfg_t *cfg,
                    cm_ledger_t *ledger, cm_jobs_t *jobs, cm_job_t *primary)
    __attribute__((warn_unused_result));
/* Daemon hooks, forwarded by main.c. */
void cm_fetch_on_nats(cm_fetch_t *f, cm_nats_event_t ev);
int cm_fetch_status(cm_fetch_t *f, cm_buf_t *out);
/* Readiness: false (with the reason) while the ledger cannot be written. */
bool cm_fetch_ready(cm_fetch_t *f, char *why, size_t whylen);
void cm_fetch_shutdown(cm_fetch_t *f, bool forced);
void cm_fetch_close(cm_fetch_t *f);
void cm_fetch_heartbeat(cm_fetch_t *f, Chunkmill__Heartbeat *hb);
void cm_fetch_destroy(cm_fetch_t *f);

#endif
