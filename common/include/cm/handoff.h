/* handoff.h - hands work from other threads (nats.c's callbacks, the thread
 * pool) to the libuv loop thread: a bounded FIFO plus a uv_async_t.
 *
 * Bounded: when the queue is full, cm_handoff_post() blocks the calling
 * (non-loop) thread until the loop has made room. That back-pressure reaches
 * nats.c's delivery thread and from there the server, instead of growing
 * memory. Never post from the loop thread while the queue may be full: use a
 * direct call there. */
#ifndef CM_HANDOFF_H
#define CM_HANDOFF_H

#include <stddef.h>
#include <uv.h>

typedef struct cm_handoff_s cm_handoff_t;

/* Runs on the loop thread. `cancelled` is 1 when the item is being dropped
 * because the handoff is closing: release `arg` and do nothing else. */
typedef void (*cm_handoff_fn)(void *arg, int cancelled);

int cm_handoff_create(cm_handoff_t **out, uv_loop_t *loop, size_t cap)
    __attribute__((warn_unused_result));
/* Any thread. 0, or -ESHUTDOWN when h is NULL or stopped/closed (fn is then
 * NOT called: the caller still owns arg). A handoff's memory is freed once
 * its close has completed on the loop: the owner must make sure no thread
 * posts after that (cm_nats_post exists for nats.c's threads). */
int cm_handoff_post(cm_handoff_t *h, cm_handoff_fn fn, void *arg)
    __attribute__((warn_unused_result));
/* Any thread. From now on every post fails with -ESHUTDOWN, and producers
 * blocked on a full queue return at once. Items already queued stay for
 * cm_handoff_close. Used before waiting for the producer threads to stop:
 * none of them can then be stuck waiting for the loop. NULL-safe. */
void cm_handoff_stop(cm_handoff_t *h);
/* Loop thread. Runs the queued items with cancelled=1, closes the async
 * handle; memory is freed in its close callback. NULL-safe. */
void cm_handoff_close(cm_handoff_t *h);
/* Loop thread, after cm_handoff_close and before the loop runs again: the
 * memory is never freed, for when producer threads may still be running
 * (e.g. they did not stop in time). Their posts keep failing with
 * -ESHUTDOWN instead of touching freed memory. The block stays reachable
 * (no leak report). NULL-safe. */
void cm_handoff_keep(cm_handoff_t *h);
size_t cm_handoff_depth(cm_handoff_t *h);

#endif
