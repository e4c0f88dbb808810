/* cmbench - measures one pipeline stage alone on the data the pipeline
 * moves (gen:users chunks of --chunk-size records), and prints one JSON
 * object:
 *
 *   cmbench transform --transform T --records N [--threads K]
 *   cmbench store     --transform T --records N [--batch B] [--sync full|normal] --db PATH|DSN
 *                     (a PostgreSQL DSN: its tables are emptied first)
 *                     [--pragma "SQL"]  (run on the store's connection after open: to
 *                                        compare settings side by side)
 *   cmbench nats      --transform T --records N --url URL
 *   cmbench jetstream --records N --url URL   (a nats-server started with -js)
 *
 * Chunks are generated (and, for store/nats, mapped) before the clock
 * starts, so only the stage itself is timed. */
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cm/buf.h"
#include "cm/chunk.h"
#include "source.h"
#include "sink.h"
#include "transform.h"

typedef struct {
  const char *stage, *transform, *db, *url, *sync, *pragma;
  uint64_t records;
  uint32_t chunk_size;
  int threads, batch;
} opts_t;

typedef struct {
  char *data;
  size_t len;
} blob_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the whole process so far: with now_s() around the timed
 * section it says whether a stage waits (I/O, fsync) or computes. */
static double cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "cmbench: %s\n", what);
  exit(1);
}

/* Generates the job's input chunks (wire form, attempt 1). */
static blob_t *gen_chunks(const opts_t *o, size_t *n) {
  cm_source_t *src;
  cm_source_opts_t so = {.spec = "gen:users", .records = o->records, .seed = 1,
                         .chunk_size = o->chunk_size};
  char err[256];
  size_t nc = (size_t)((o->records + o->chunk_size - 1) / o->chunk_size);
  blob_t *b = calloc(nc, sizeof(*b));
  if (b == NULL || cm_source_open(&src, &so, err, sizeof(err)) != 0) die("cannot open gen:users");
  for (size_t i = 0; i < nc; i++) {
    cm_buf_t buf;
    cm_chunk_hdr_t h = {.index = i, .attempt = 1};
    uint32_t nrec;
    snprintf(h.job, sizeof(h.job), "bench");
    cm_buf_init(&buf, 1u << 30);
    if (cm_chunk_begin(&buf, &h) != 0 || cm_source_chunk(src, i, &buf, &nrec) != 0 ||
        cm_chunk_end(&buf, NULL, 0) != 0)
      die("generate");
    b[i].data = buf.data;
    b[i].len = buf.len;
  }
  cm_source_close(src);
  *n = nc;
  return b;
}

static void free_blobs(blob_t *b, size_t n) {
  for (size_t i = 0; b != NULL && i < n; i++) free(b[i].data);
  free(b);
}

static blob_t *map_chunks(const opts_t *o, blob_t *in, size_t n) {
  cm_transform_t *t;
  char err[256];
  blob_t *b = calloc(n, sizeof(*b));
  if (b == NULL || cm_transform_create(&t, o->transform, err, sizeof(err)) != 0) die(err);
  for (size_t i = 0; i < n; i++) {
    cm_buf_t buf;
    cm_transform_stats_t st;
    cm_buf_init(&buf, 1u << 30);
    if (cm_transform_chunk(t, in[i].data, in[i].len, &buf, &st, err, sizeof(err)) != 0) die(err);
    b[i].data = buf.data;
    b[i].len = buf.len;
  }
  cm_transform_destroy(t);
  return b;
}

/* ---- transform ---- */
typedef struct {
  cm_transform_t *t;
  blob_t *in;
  size_t n;
  atomic_size_t next;
} tctx_t;

static void *tworker(void *arg) {
  tctx_t *c = arg;
  cm_buf_t buf;
  char err[256];
  cm_buf_init(&buf, 1u << 30);
  for (;;) {
    size_t i = atomic_fetch_add(&c->next, 1);
    cm_transform_stats_t st;
    if (i >= c->n) break;
    cm_buf_reset(&buf);
    if (cm_transform_chunk(c->t, c->in[i].data, c->in[i].len, &buf, &st, err, sizeof(err)) != 0)
      die(err);
  }
  cm_buf_free(&buf);
  return NULL;
}

static int bench_transform(const opts_t *o) {
  size_t n;
  blob_t *in = gen_chunks(o, &n);
  tctx_t c = {.in = in, .n = n};
  pthread_t th[256];
  char err[256];
  double t0, dt, c0;
  if (cm_transform_create(&c.t, o->transform, err, sizeof(err)) != 0) die(err);
  atomic_init(&c.next, 0);
  c0 = cpu_s();
  t0 = now_s();
  for (int i = 0; i < o->threads; i++) pthread_create(&th[i], NULL, tworker, &c);
  for (int i = 0; i < o->threads; i++) pthread_join(th[i], NULL);
  dt = now_s() - t0;
  printf("{\"stage\":\"transform\",\"transform\":\"%s\",\"threads\":%d,\"records\":%" PRIu64
         ",\"seconds\":%.4f,\"cpu_s\":%.3f,\"records_per_s\":%.0f}\n",
         o->transform, o->threads, o->records, dt, cpu_s() - c0, (double)o->records / dt);
  cm_transform_destroy(c.t);
  free_blobs(in, n);
  return 0;
}

/* ---- store ---- */
static int bench_store(const opts_t *o) {
  size_t n;
  blob_t *in = gen_chunks(o, &n);
  blob_t *mapped = map_chunks(o, in, n);
  cm_sink_t *s;
  char err[256];
  cm_sink_item_t *items = calloc((size_t)o->batch, sizeof(*items));
  cm_sink_opts_t so = {.db = o->db, .sync = o->sync};
  double t0, dt, c0;
  if (!cm_sink_is_postgres(o->db)) (void)unlink(o->db);
  if (cm_sink_open(&s, &so, err, sizeof(err)) != 0) die(err);
  if (!cm_sink_health(s, err, sizeof(err))) die(err);
  /* A PostgreSQL database is emptied instead of deleted. */
  if (cm_sink_is_postgres(o->db) &&
      cm_sink_query(s, "TRUNCATE records, chunks, dead_letters", NULL, 0, err, sizeof(err)) != 0)
    die(err);
  if (o->pragma != NULL && cm_sink_query(s, o->pragma, NULL, 0, err, sizeof(err)) != 0) die(err);
  c0 = cpu_s();
  t0 = now_s();
  for (size_t i = 0; i < n; i += (size_t)o->batch) {
    size_t k = n - i < (size_t)o->batch ? n - i : (size_t)o->batch;
    for (size_t j = 0; j < k; j++) {
      memset(&items[j], 0, sizeof(items[j]));
      items[j].json = mapped[i + j].data;
      items[j].len = mapped[i + j].len;
    }
    if (cm_sink_save_batch(s, items, k) != 0) die(items[0].err);
  }
  dt = now_s() - t0;
  printf("{\"stage\":\"store\",\"sink\":\"%s\",\"transform\":\"%s\",\"batch\":%d,\"sync\":\"%s\",\"records\":%" PRIu64
         ",\"seconds\":%.4f,\"cpu_s\":%.3f,\"records_per_s\":%.0f}\n",
         cm_sink_kind(s), o->transform, o->batch, o->sync, o->records, dt, cpu_s() - c0,
         (double)o->records / dt);
  cm_sink_close(s);
  free(items);
  free_blobs(mapped, n);
  free_blobs(in, n);
  return 0;
}

/* ---- nats ---- */
static atomic_size_t received;
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *c) {
  atomic_fetch_add(&received, 1);
  natsMsg_Destroy(m);
}

static int bench_nats(const opts_t *o) {
  size_t n;
  blob_t *in = gen_chunks(o, &n);
  blob_t *mapped = map_chunks(o, in, n);
  natsConnection *pub = NULL, *sub = NULL;
  natsSubscription *s = NULL;
  double t0, dt;
  size_t bytes = 0;
  if (natsConnection_ConnectTo(&pub, o->url) != NATS_OK ||
      natsConnection_ConnectTo(&sub, o->url) != NATS_OK)
    die("cannot connect to NATS");
  if (natsConnection_Subscribe(&s, sub, "cmbench.x", on_msg, NULL) != NATS_OK ||
      natsSubscription_SetPendingLimits(s, -1, -1) != NATS_OK || natsConnection_Flush(sub) != NATS_OK)
    die("subscribe");
  atomic_init(&received, 0);
  t0 = now_s();
  /* The pipeline moves every chunk twice: fetcher -> mapper (input) and
   * mapper -> saver (mapped). */
  for (size_t i = 0; i < n; i++) {
    if (natsConnection_Publish(pub, "cmbench.x", in[i].data, (int)in[i].len) != NATS_OK ||
        natsConnection_Publish(pub, "cmbench.x", mapped[i].data, (int)mapped[i].len) != NATS_OK)
      die("publish");
    bytes += in[i].len + mapped[i].len;
  }
  (void)natsConnection_Flush(pub);
  while (atomic_load(&received) < 2 * n) {
    if (now_s() - t0 > 120) die("timeout waiting for messages");
    usleep(200);
  }
  dt = now_s() - t0;
  printf("{\"stage\":\"nats\",\"transform\":\"%s\",\"records\":%" PRIu64 ",\"messages\":%zu,\"bytes\":%zu"
         ",\"seconds\":%.4f,\"records_per_s\":%.0f,\"mb_per_s\":%.1f}\n",
         o->transform, o->records, 2 * n, bytes, dt, (double)o->records / dt,
         (double)bytes / dt / 1e6);
  natsSubscription_Destroy(s);
  natsConnection_Destroy(pub);
  natsConnection_Destroy(sub);
  nats_Close();
  free_blobs(mapped, n);
  free_blobs(in, n);
  return 0;
}

/* ---- jetstream ----
 * What a user would get from NATS JetStream alone, as the transport-only
 * yardstick: the input chunks published (async, at most 256 unacked) to a
 * file-backed work-queue stream on one connection while a pull consumer on
 * another fetches batches of 10 and acks each message (async ack, as a
 * pipeline stage that hands the record on would). No parsing, no saving.
 * Timed from the first publish to the last ack flushed; the stream must
 * then be empty (every message delivered and acked exactly as counted). */
static atomic_size_t js_pub_errors;
static void js_pub_err(jsCtx *js, jsPubAckErr *pae, void *c) {
  (void)js, (void)c;
  atomic_fetch_add(&js_pub_errors, 1);
  fprintf(stderr, "cmbench: jetstream publish failed: %s\n",
          pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
}

typedef struct {
  jsCtx *js;
  blob_t *in;
  size_t n;
} jspub_t;

static void *js_publisher(void *arg) {
  jspub_t *p = arg;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 30000;
  for (size_t i = 0; i < p->n; i++)
    if (js_PublishAsync(p->js, "cmbench.js", p->in[i].data, (int)p->in[i].len, NULL) != NATS_OK)
      die("jetstream publish");
  if (js_PublishAsyncComplete(p->js, &po) != NATS_OK) die("jetstream publish did not complete");
  return NULL;
}

static int bench_jetstream(const opts_t *o) {
  size_t n, got = 0, bytes = 0;
  blob_t *in = gen_chunks(o, &n);
  natsConnection *pub = NULL, *sub = NULL;
  natsSubscription *ps = NULL;
  jsCtx *js = NULL, *jsc = NULL;
  jsOptions jo;
  jsStreamConfig sc;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  const char *subjects[] = {"cmbench.js"};
  pthread_t th;
  jspub_t p;
  double t0, dt, c0;
  uint64_t left = 0;

  if (natsConnection_ConnectTo(&pub, o->url) != NATS_OK ||
      natsConnection_ConnectTo(&sub, o->url) != NATS_OK)
    die("cannot connect to NATS");
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 256;
  jo.PublishAsync.StallWait = 30000;
  jo.PublishAsync.ErrHandler = js_pub_err;
  if (natsConnection_JetStream(&js, pub, &jo) != NATS_OK ||
      natsConnection_JetStream(&jsc, sub, NULL) != NATS_OK)
    die("no JetStream context");
  jsStreamConfig_Init(&sc);
  sc.Name = "CMBENCH";
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Retention = js_WorkQueuePolicy;
  sc.Storage = js_FileStorage;
  if (js_AddStream(NULL, js, &sc, NULL, &jerr) != NATS_OK)
    die("cannot create the JetStream stream (is nats-server running with -js?)");
  if (js_PullSubscribe(&ps, jsc, "cmbench.js", "cmbench", NULL, NULL, &jerr) != NATS_OK)
    die("cannot create the pull consumer");
  for (size_t i = 0; i < n; i++) bytes += in[i].len;
  p = (jspub_t){js, in, n};
  atomic_init(&js_pub_errors, 0);
  c0 = cpu_s();
  t0 = now_s();
  if (pthread_create(&th, NULL, js_publisher, &p) != 0) die("thread");
  while (got < n) {
    natsMsgList list = {0};
    natsStatus s = natsSubscription_Fetch(&list, ps, 10, 5000, &jerr);
    if (s == NATS_TIMEOUT) {
      if (now_s() - t0 > 300) die("jetstream: timeout waiting for messages");
      continue;
    }
    if (s != NATS_OK) die("jetstream fetch");
    for (int k = 0; k < list.Count; k++) {
      if (natsMsg_Ack(list.Msgs[k], NULL) != NATS_OK) die("jetstream ack");
      got++;
    }
    natsMsgList_Destroy(&list);
  }
  if (natsConnection_Flush(sub) != NATS_OK) die("flush acks");
  dt = now_s() - t0;
  pthread_join(th, NULL);
  c0 = cpu_s() - c0;
  if (atomic_load(&js_pub_errors) != 0) die("jetstream: some publishes failed");
  /* Acks are processed by the server asynchronously: wait for the
   * work queue to drain, then it must be empty. */
  for (int tries = 0; tries < 100; tries++) {
    if (js_GetStreamInfo(&si, js, "CMBENCH", NULL, &jerr) != NATS_OK) die("stream info");
    left = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (left == 0) break;
    usleep(20000);
  }
  if (got != n || left != 0) {
    fprintf(stderr, "cmbench: jetstream: received %zu of %zu messages, %" PRIu64 " left in the stream\n",
            got, n, left);
    exit(1);
  }
  printf("{\"stage\":\"jetstream\",\"records\":%" PRIu64 ",\"messages\":%zu,\"bytes\":%zu"
         ",\"batch\":10,\"seconds\":%.4f,\"cpu_s\":%.3f,\"records_per_s\":%.0f,\"mb_per_s\":%.1f,"
         "\"received\":%zu,\"left_in_stream\":%" PRIu64 "}\n",
         o->records, n, bytes, dt, c0, (double)o->records / dt, (double)bytes / dt / 1e6, got,
         left);
  (void)js_DeleteStream(js, "CMBENCH", NULL, NULL);
  natsSubscription_Destroy(ps);
  jsCtx_Destroy(js);
  jsCtx_Destroy(jsc);
  natsConnection_Destroy(pub);
  natsConnection_Destroy(sub);
  nats_Close();
  free_blobs(in, n);
  return 0;
}

int main(int argc, char **argv) {
  opts_t o = {.transform = "fullname", .records = 100000, .chunk_size = 100, .threads = 2,
              .batch = 64, .sync = "full", .db = "/tmp/cmbench.db",
              .url = "nats://127.0.0.1:4222"};
  if (argc < 2) die("usage: cmbench transform|store|nats|jetstream [--transform T] [--records N] ...");
  o.stage = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (strcmp(k, "--transform") == 0) o.transform = v;
    else if (strcmp(k, "--records") == 0) o.records = strtoull(v, NULL, 10);
    else if (strcmp(k, "--chunk-size") == 0) o.chunk_size = (uint32_t)strtoul(v, NULL, 10);
    else if (strcmp(k, "--threads") == 0) o.threads = atoi(v);
    else if (strcmp(k, "--batch") == 0) o.batch = atoi(v);
    else if (strcmp(k, "--sync") == 0) o.sync = v;
    else if (strcmp(k, "--pragma") == 0) o.pragma = v;
    else if (strcmp(k, "--db") == 0) o.db = v;
    else if (strcmp(k, "--url") == 0) o.url = v;
    else die("unknown option");
  }
  if (o.threads < 1 || o.threads > 256 || o.batch < 1 || o.chunk_size < 1) die("bad option value");
  if (strcmp(o.stage, "transform") == 0) return bench_transform(&o);
  if (strcmp(o.stage, "store") == 0) return bench_store(&o);
  if (strcmp(o.stage, "nats") == 0) return bench_nats(&o);
  if (strcmp(o.stage, "jetstream") == 0) return bench_jetstream(&o);
  die("unknown stage");
  return 1;
}
