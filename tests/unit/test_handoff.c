/* test_handoff.c - items posted from other threads run on the loop thread,
 * in order, bounded, and are cancelled (not lost silently) on close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "cm/handoff.h"

typedef struct {
  uv_thread_t loop_thread;
  int ran, cancelled, wrong_thread;
  int last, out_of_order;
  int target;
  uv_loop_t *loop;
  cm_handoff_t *h;
} ctx_t;

typedef struct {
  ctx_t *c;
  int seq;
} item_t;

static void item_fn(void *arg, int cancelled) {
  item_t *it = arg;
  ctx_t *c = it->c;
  uv_thread_t self = uv_thread_self();
  if (!uv_thread_equal(&self, &c->loop_thread)) c->wrong_thread++;
  if (cancelled) {
    c->cancelled++;
  } else {
    c->ran++;
    if (it->seq != c->last + 1) c->out_of_order++;
    c->last = it->seq;
  }
  free(it);
}

static void producer(void *arg) {
  ctx_t *c = arg;
  for (int i = 1; i <= c->target; i++) {
    item_t *it = malloc(sizeof(*it));
    it->c = c;
    it->seq = i;
    assert_int_equal(cm_handoff_post(c->h, item_fn, it), 0);
  }
}

static void test_cross_thread_order_and_backpressure(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx_t c = {0};
  uv_thread_t t;
  assert_int_equal(uv_loop_init(&loop), 0);
  c.loop_thread = uv_thread_self();
  c.target = 20000; /* far more than the capacity: the producer must block */
  assert_int_equal(cm_handoff_create(&c.h, &loop, 16), 0);
  assert_int_equal(uv_thread_create(&t, producer, &c), 0);
  while (c.ran < c.target) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(c.ran, c.target);
  assert_int_equal(c.out_of_order, 0);
  assert_int_equal(c.wrong_thread, 0);
  assert_true(cm_handoff_depth(c.h) == 0);
  cm_handoff_close(c.h);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_close_cancels_pending_and_refuses_new(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx_t c = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  c.loop_thread = uv_thread_self();
  assert_int_equal(cm_handoff_create(&c.h, &loop, 8), 0);
  for (int i = 1; i <= 5; i++) {
    item_t *it = malloc(sizeof(*it));
    it->c = &c;
    it->seq = i;
    assert_int_equal(cm_handoff_post(c.h, item_fn, it), 0);
  }
  /* On the loop thread a full queue is refused rather than deadlocking. */
  for (int i = 6; i <= 8; i++) {
    item_t *it = malloc(sizeof(*it));
    it->c = &c;
    it->seq = i;
    assert_int_equal(cm_handoff_post(c.h, item_fn, it), 0);
  }
  item_t *extra = malloc(sizeof(*extra));
  extra->c = &c;
  extra->seq = 9;
  assert_int_equal(cm_handoff_post(c.h, item_fn, extra), -EAGAIN);
  cm_handoff_close(c.h);
  assert_int_equal(c.cancelled, 8);
  assert_int_equal(c.ran, 0);
  assert_int_equal(cm_handoff_post(c.h, item_fn, extra), -ESHUTDOWN);
  free(extra);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A producer thread blocked on a full queue, the way a nats.c delivery
 * thread blocks while the loop thread waits for nats.c to stop: stop must
 * release it at once, and every later post is refused. */
typedef struct {
  cm_handoff_t *h;
  ctx_t *c;
  int rc;
} blocked_t;

static void blocked_producer(void *arg) {
  blocked_t *b = arg;
  item_t *it = malloc(sizeof(*it));
  it->c = b->c;
  it->seq = 99;
  b->rc = cm_handoff_post(b->h, item_fn, it);
  if (b->rc != 0) free(it);
}

static void test_stop_releases_blocked_producer(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx_t c = {0};
  uv_thread_t t;
  blocked_t b = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  c.loop_thread = uv_thread_self();
  assert_int_equal(cm_handoff_create(&c.h, &loop, 1), 0);
  item_t *it = malloc(sizeof(*it));
  it->c = &c;
  it->seq = 1;
  assert_int_equal(cm_handoff_post(c.h, item_fn, it), 0); /* full now */
  b.h = c.h;
  b.c = &c;
  b.rc = 1;
  assert_int_equal(uv_thread_create(&t, blocked_producer, &b), 0);
  usleep(100 * 1000); /* it is waiting for room */
  cm_handoff_stop(c.h);
  assert_int_equal(uv_thread_join(&t), 0); /* returns: it does not hang */
  assert_int_equal(b.rc, -ESHUTDOWN);
  cm_handoff_close(c.h);
  assert_int_equal(c.cancelled, 1);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* After cm_handoff_close + cm_handoff_keep and the loop has closed the handle, a thread
 * that still posts gets -ESHUTDOWN and touches only live memory (ASan would
 * report a use after free had the handoff been freed). */
static void test_close_keep_stays_valid(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx_t c = {0};
  uv_thread_t t;
  blocked_t b = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  c.loop_thread = uv_thread_self();
  assert_int_equal(cm_handoff_create(&c.h, &loop, 4), 0);
  cm_handoff_close(c.h);
  cm_handoff_keep(c.h);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  b.h = c.h;
  b.c = &c;
  b.rc = 1;
  assert_int_equal(uv_thread_create(&t, blocked_producer, &b), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(b.rc, -ESHUTDOWN);
  assert_int_equal(c.ran + c.cancelled, 0);
  assert_int_equal(cm_handoff_post(NULL, item_fn, NULL), -ESHUTDOWN);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cross_thread_order_and_backpressure),
      cmocka_unit_test(test_close_cancels_pending_and_refuses_new),
      cmocka_unit_test(test_stop_releases_blocked_producer),
      cmocka_unit_test(test_close_keep_stays_valid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
