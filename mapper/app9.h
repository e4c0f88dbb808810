/* app9.h - the mapper speaking the original example's wire protocol
 * (`--protocol app9`, docs/design.md "Compatibility profile").
 *
 *   mapper_status  in "anyone_listening" -> out "im_listening" (when idle)
 *   mapper_data    in {"index":N,"data":[users]}, queue group mapper.workers,
 *                  subscribed only while idle
 *   saver_data     out {"index":N,"data":[{"id","name"}...]}
 *
 * One chunk at a time, mapped on the libuv thread pool with the configured
 * transform (fullname for the original savers). Chunks that arrive after the
 * mapper became busy (sent by the server before it processed our UNSUB) are
 * not lost: the subscription is drained, not dropped, and every chunk that
 * still arrives is queued (bounded) and mapped in turn; on shutdown or when
 * the queue is full it is published back on mapper_data for another mapper.
 * Loop thread only. */
#ifndef CM_MAPPER_APP9_H
#define CM_MAPPER_APP9_H

#include <stdint.h>

#include "cm/config.h"
#include "transform.h"

/* Runs the whole daemon (cm_daemon_create .. cm_daemon_destroy) in app9
 * mode. Borrows cfg and t. chunk_timeout_ms (--chunk-timeout, 0: none): a
 * chunk whose transform takes longer is dropped (this protocol has no NAK;
 * the fetcher sends it again) and, one chunk at a time, the mapper is then
 * stuck: /healthz 503 until the transform returns, if ever. Returns the
 * process exit code. */
int cm_mapper_app9_run(const cm_common_cfg_t *cfg, const cm_transform_t *t,
                       int64_t chunk_timeout_ms);

#endif
