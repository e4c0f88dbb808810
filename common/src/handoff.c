/* handoff.c - bounded FIFO from any thread to the loop thread.
 *
 * A ring buffer under a mutex; uv_async_send wakes the loop, which drains
 * the whole ring in one callback (uv_async_send coalesces, so one wake-up may
 * stand for many posts). Producers on other threads block on a condition
 * variable while the ring is full: back-pressure instead of growth. */
#include "cm/handoff.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct cm__handoff_item_s {
  cm_handoff_fn fn;
  void *arg;
} cm__handoff_item_t;

struct cm_handoff_s {
  uv_async_t async;
  uv_mutex_t lock;
  uv_cond_t not_full;
  uv_thread_t loop_thread;
  cm__handoff_item_t *ring;
  size_t cap, head, count;
  bool closing;
  bool keep; /* cm_handoff_keep: never freed */
  struct cm_handoff_s *kept_next;
};

/* Handoffs marked with cm_handoff_keep, so their memory stays
 * reachable for the threads that may still post (and for leak checkers). */
static struct cm_handoff_s *cm__handoff_kept;
static uv_mutex_t cm__handoff_kept_lock;
static uv_once_t cm__handoff_kept_once = UV_ONCE_INIT;
static void cm__handoff_kept_init(void) { (void)uv_mutex_init(&cm__handoff_kept_lock); }

static void cm__handoff_drain(cm_handoff_t *h, int cancelled) {
  /* Take a bounded batch under the lock, run it unlocked: callbacks may post
   * again (from the loop thread) without deadlocking. */
  for (;;) {
    cm__handoff_item_t batch[64];
    size_t n = 0;
    uv_mutex_lock(&h->lock);
    while (n < 64 && h->count > 0) {
      batch[n++] = h->ring[h->head];
      h->head = (h->head + 1) % h->cap;
      h->count--;
    }
    if (n > 0) uv_cond_broadcast(&h->not_full);
    uv_mutex_unlock(&h->lock);
    if (n == 0) return;
    /* An item may close the handoff (the NATS CLOSED event tears the
     * connection down): what follows it in the batch is cancelled, never
     * run against freed owners. */
    for (size_t i = 0; i < n; i++) batch[i].fn(batch[i].arg, cancelled || h->closing);
  }
}

static void cm__handoff_async_cb(uv_async_t *a) {
  cm_handoff_t *h = a->data;
  cm__handoff_drain(h, 0);
}

static void cm__handoff_close_cb(uv_handle_t *handle) {
  cm_handoff_t *h = handle->data;
  if (h->keep) return;
  uv_cond_destroy(&h->not_full);
  uv_mutex_destroy(&h->lock);
  free(h->ring);
  free(h);
}

int cm_handoff_create(cm_handoff_t **out, uv_loop_t *loop, size_t cap) {
  cm_handoff_t *h = NULL;
  int rc;
  *out = NULL;
  if (cap == 0) return -EINVAL;
  h = calloc(1, sizeof(*h));
  if (h == NULL) return -ENOMEM;
  h->ring = calloc(cap, sizeof(*h->ring));
  if (h->ring == NULL) {
    free(h);
    return -ENOMEM;
  }
  h->cap = cap;
  h->loop_thread = uv_thread_self();
  if ((rc = uv_mutex_init(&h->lock)) != 0) goto fail_ring;
  if ((rc = uv_cond_init(&h->not_full)) != 0) goto fail_mutex;
  if ((rc = uv_async_init(loop, &h->async, cm__handoff_async_cb)) != 0) goto fail_cond;
  h->async.data = h;
  *out = h;
  return 0;

fail_cond:
  uv_cond_destroy(&h->not_full);
fail_mutex:
  uv_mutex_destroy(&h->lock);
fail_ring:
  free(h->ring);
  free(h);
  return rc;
}

int cm_handoff_post(cm_handoff_t *h, cm_handoff_fn fn, void *arg) {
  uv_thread_t self = uv_thread_self();
  bool on_loop;
  if (h == NULL) return -ESHUTDOWN;
  on_loop = uv_thread_equal(&self, &h->loop_thread) != 0;
  uv_mutex_lock(&h->lock);
  while (!h->closing && h->count == h->cap) {
    /* The loop thread would wait for itself: refuse instead. */
    if (on_loop) {
      uv_mutex_unlock(&h->lock);
      return -EAGAIN;
    }
    uv_cond_wait(&h->not_full, &h->lock);
  }
  if (h->closing) {
    uv_mutex_unlock(&h->lock);
    return -ESHUTDOWN;
  }
  h->ring[(h->head + h->count) % h->cap] = (cm__handoff_item_t){fn, arg};
  h->count++;
  /* Sent under the lock so close cannot free the handle in between. */
  (void)uv_async_send(&h->async);
  uv_mutex_unlock(&h->lock);
  return 0;
}

size_t cm_handoff_depth(cm_handoff_t *h) {
  size_t n;
  uv_mutex_lock(&h->lock);
  n = h->count;
  uv_mutex_unlock(&h->lock);
  return n;
}

void cm_handoff_stop(cm_handoff_t *h) {
  if (h == NULL) return;
  uv_mutex_lock(&h->lock);
  h->closing = true;
  uv_cond_broadcast(&h->not_full);
  uv_mutex_unlock(&h->lock);
}

void cm_handoff_close(cm_handoff_t *h) {
  if (h == NULL) return;
  cm_handoff_stop(h);
  cm__handoff_drain(h, 1);
  uv_close((uv_handle_t *)&h->async, cm__handoff_close_cb);
}

void cm_handoff_keep(cm_handoff_t *h) {
  if (h == NULL) return;
  uv_once(&cm__handoff_kept_once, cm__handoff_kept_init);
  uv_mutex_lock(&cm__handoff_kept_lock);
  h->keep = true;
  h->kept_next = cm__handoff_kept;
  cm__handoff_kept = h;
  uv_mutex_unlock(&cm__handoff_kept_lock);
}
