/* natsconn_close.c - cm_nats_destroy while a nats.c delivery thread is
 * blocked handing a message to a loop that is not running (the handoff
 * queue is full): the destroy must release that thread and return promptly,
 * without freeing memory the thread still uses (run under ASan in CI).
 *
 *   natsconn_close NATS_URL   -> exit 0 and one line of numbers, or 1
 *
 * Driven by test_natsconn_close.py, which starts a real nats-server. */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cm/log.h"
#include "cm/natsconn.h"

typedef struct {
  int connected, closed, delivered;
} state_t;

static void on_event(void *ud, cm_nats_event_t ev) {
  state_t *st = ud;
  if (ev == CM_NATS_CONNECTED) st->connected = 1;
  if (ev == CM_NATS_CLOSED) st->closed = 1;
}

static void on_msg(void *ud, natsMsg *m) {
  state_t *st = ud;
  st->delivered++;
  natsMsg_Destroy(m);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  cm_common_cfg_t cfg;
  cm_nats_t *n = NULL;
  state_t st = {0};
  char err[512] = "";
  const char *subj = "cm.test.natsconn_close";
  double t0, dt;
  const int count = 20000; /* far more than the handoff holds (4096) */

  if (argc != 2) {
    fprintf(stderr, "usage: natsconn_close NATS_URL\n");
    return 2;
  }
  cm_log_init("natsconn_close", "test", CM_LOG_WARN);
  memset(&cfg, 0, sizeof(cfg));
  cfg.nats_url = argv[1];
  if (uv_loop_init(&loop) != 0 ||
      cm_nats_create(&n, &loop, &cfg, "natsconn-close-test", on_event, &st, err, sizeof(err)) != 0) {
    fprintf(stderr, "natsconn_close: %s\n", err);
    return 1;
  }
  t0 = now_s();
  while (!st.connected && now_s() - t0 < 10) (void)uv_run(&loop, UV_RUN_NOWAIT), usleep(1000);
  if (!st.connected || cm_nats_subscribe(n, subj, NULL, on_msg, &st, NULL) != 0 ||
      natsConnection_Flush(cm_nats_conn(n)) != NATS_OK) {
    fprintf(stderr, "natsconn_close: cannot connect or subscribe\n");
    return 1;
  }
  /* The loop does not run from here on: nats.c's delivery thread fills the
   * handoff and then blocks in it, as it would behind a busy loop thread. */
  for (int i = 0; i < count; i++) (void)cm_nats_publish(n, subj, NULL, "x", 1);
  if (natsConnection_Flush(cm_nats_conn(n)) != NATS_OK) {
    fprintf(stderr, "natsconn_close: flush failed\n");
    return 1;
  }
  usleep(500 * 1000);
  t0 = now_s();
  cm_nats_destroy(n);
  dt = now_s() - t0;
  (void)uv_run(&loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&loop);
  printf("destroy_seconds %.3f delivered %d\n", dt, st.delivered);
  if (dt >= 1.5) {
    fprintf(stderr, "natsconn_close: cm_nats_destroy took %.2f s (nats.c threads were stuck)\n",
            dt);
    return 1;
  }
  return 0;
}
