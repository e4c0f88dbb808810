/* app9_peer - an independent test client playing one role of the ORIGINAL
 * example's protocol (issue 7), so each chunkmill daemon in --protocol app9
 * mode can be tested against the other two roles as the original services
 * behave. Written from the protocol description only; it shares no code
 * with chunkmill.
 *
 *   app9_peer --role fetcher --nats-url URL [--records N] [--chunk-size N]
 *             [--seed S] [--timeout S]
 *       Splits N generated users into chunks 0..K-1. Until every chunk is
 *       confirmed: pick a random unconfirmed chunk (already sent or not),
 *       subscribe to mapper_status, publish "anyone_listening", wait for an
 *       "im_listening", unsubscribe, publish {"index":N,"data":[...]} on
 *       mapper_data. processed_data bodies (decimal index) confirm chunks.
 *       Prints one JSON summary line; exit 0 when all are confirmed.
 *   app9_peer --role fetcher --dump-chunk N [--records N ...]
 *       Prints chunk N as it would be sent, and exits (for checks).
 *   app9_peer --role mapper --nats-url URL [--delay-ms MS]
 *       Answers "anyone_listening" with "im_listening" unless busy. While
 *       idle it is subscribed to mapper_data (queue group mapper.workers) and
 *       says "im_listening" on becoming idle; on a chunk it unsubscribes
 *       (dropping what the server still sends it, as the original does),
 *       maps users to {"id","name"}, publishes on saver_data.
 *   app9_peer --role saver --nats-url URL
 *       Queue group saver.workers on saver_data: records each chunk (index,
 *       records, distinct ids), publishes the index on processed_data. On
 *       SIGTERM/SIGINT prints one JSON summary line and exits 0.
 *
 * A test tool: blocking nats.c calls, nats.c's own threads, one mutex. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PEER_FRIENDS 12
#define PEER_MAX_CHUNK_BYTES (16u * 1024 * 1024)

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

typedef struct peer_opts_s {
  const char *role;
  const char *url;
  int64_t records, chunk_size, seed, timeout_s, delay_ms, dump_chunk;
} peer_opts_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool body_is(natsMsg *m, const char *word) {
  size_t n = strlen(word);
  return (size_t)natsMsg_GetDataLength(m) == n && memcmp(natsMsg_GetData(m), word, n) == 0;
}

/* Unsubscribed subscriptions are destroyed only after the connection is
 * closed: destroying one right away while nats.c's reader thread is still
 * handing it a message crashed (seen under ASan with nats.c 3.4). */
static natsSubscription **g_retired;
static size_t g_nretired, g_capretired;

static void retire(natsSubscription *sub) {
  (void)natsSubscription_Unsubscribe(sub);
  if (g_nretired == g_capretired) {
    size_t cap = g_capretired ? g_capretired * 2 : 1024;
    natsSubscription **v = realloc(g_retired, cap * sizeof(*v));
    if (v == NULL) return; /* leak it rather than risk the crash */
    g_retired = v;
    g_capretired = cap;
  }
  g_retired[g_nretired++] = sub;
}

static void retired_destroy(void) {
  for (size_t i = 0; i < g_nretired; i++) natsSubscription_Destroy(g_retired[i]);
  free(g_retired);
  g_retired = NULL;
  g_nretired = g_capretired = 0;
}

/* ---- generated users (fetcher) ---- */

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static void user_uuid(const peer_opts_t *o, uint64_t rec, char out[37]) {
  uint64_t a = mix64((uint64_t)o->seed * 0x100000001b3ULL ^ rec);
  uint64_t b = mix64(a ^ 0xa5a5a5a5a5a5a5a5ULL);
  a = (a & 0xffffffffffff0fffULL) | 0x4000ULL;             /* version 4 */
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant */
  snprintf(out, 37, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
           a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48, (uint64_t)(b & 0xffffffffffffULL));
}

static const char *const FIRST[] = {"Adelia", "Bruno", "Chiara", "Dmitri", "Esme",  "Farid",
                                    "Greta",  "Hugo",  "Ines",   "Jonas",  "Kaia",  "Luca",
                                    "Mara",   "Nils",  "Olga",   "Pavel",  "Quinn", "Rosa"};
static const char *const LAST[] = {"Marquardt", "Okafor", "Lindqvist", "Moreau", "Tanaka",
                                   "O'Neil",    "Kowalski", "Haddad",  "Silva",  "Novak",
                                   "Ferreira",  "Brandt"};

/* Appends chunk `index` as {"index":N,"data":[...]} to buf (cap bytes).
 * Returns the length, or -1 if it does not fit. */
static long build_chunk(const peer_opts_t *o, int64_t index, char *buf, size_t cap) {
  size_t len = 0;
  int64_t first = index * o->chunk_size;
  int64_t last = first + o->chunk_size;
  int n;
  if (last > o->records) last = o->records;
  n = snprintf(buf, cap, "{\"index\":%" PRId64 ",\"data\":[", index);
  if (n < 0 || (size_t)n >= cap) return -1;
  len = (size_t)n;
  for (int64_t r = first; r < last; r++) {
    char id[37], fid[37];
    uint64_t h = mix64((uint64_t)r * 31 + 7);
    n = snprintf(buf + len, cap - len, "%s{\"uuid\":\"", r == first ? "" : ",");
    if (n < 0 || (size_t)n >= cap - len) return -1;
    len += (size_t)n;
    user_uuid(o, (uint64_t)r, id);
    n = snprintf(buf + len, cap - len, "%s\",\"fn\":\"%s\",\"ln\":\"%s\",\"friends\":[", id,
                 FIRST[h % (sizeof(FIRST) / sizeof(FIRST[0]))],
                 LAST[(h >> 20) % (sizeof(LAST) / sizeof(LAST[0]))]);
    if (n < 0 || (size_t)n >= cap - len) return -1;
    len += (size_t)n;
    for (int f = 0; f < PEER_FRIENDS; f++) {
      user_uuid(o, mix64(h + (uint64_t)f) % (uint64_t)o->records, fid);
      n = snprintf(buf + len, cap - len, "%s\"%s\"", f ? "," : "", fid);
      if (n < 0 || (size_t)n >= cap - len) return -1;
      len += (size_t)n;
    }
    n = snprintf(buf + len, cap - len, "]}");
    if (n < 0 || (size_t)n >= cap - len) return -1;
    len += (size_t)n;
  }
  n = snprintf(buf + len, cap - len, "]}");
  if (n < 0 || (size_t)n >= cap - len) return -1;
  return (long)(len + (size_t)n);
}

/* ---- fetcher ---- */

typedef struct fetch_state_s {
  pthread_mutex_t mu;
  bool *confirmed;
  int64_t nconfirmed, nchunks, dup_confirmations;
} fetch_state_t;

static void fetch_on_processed(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *cl) {
  fetch_state_t *st = cl;
  char tmp[32];
  int len = natsMsg_GetDataLength(msg);
  char *end = NULL;
  long long idx;
  if (len > 0 && len < (int)sizeof(tmp)) {
    memcpy(tmp, natsMsg_GetData(msg), (size_t)len);
    tmp[len] = '\0';
    errno = 0;
    idx = strtoll(tmp, &end, 10);
    if (errno == 0 && end != tmp && *end == '\0' && idx >= 0 && idx < st->nchunks) {
      pthread_mutex_lock(&st->mu);
      if (!st->confirmed[idx]) {
        st->confirmed[idx] = true;
        st->nconfirmed++;
      } else {
        st->dup_confirmations++;
      }
      pthread_mutex_unlock(&st->mu);
    }
  }
  natsMsg_Destroy(msg);
}

static fetch_state_t g_fetch; /* st.confirmed freed at exit: late callbacks */

static int run_fetcher(natsConnection *nc, const peer_opts_t *o) {
  fetch_state_t *st = &g_fetch;
  natsSubscription *psub = NULL;
  char *buf = malloc(PEER_MAX_CHUNK_BYTES);
  int64_t *pick = NULL;
  int64_t sent = 0, resent = 0, waits_over_1s = 0;
  bool *was_sent = NULL;
  double t0 = now_s(), deadline = t0 + (double)o->timeout_s;
  int rc = 1;
  memset(st, 0, sizeof(*st));
  pthread_mutex_init(&st->mu, NULL);
  st->nchunks = (o->records + o->chunk_size - 1) / o->chunk_size;
  st->confirmed = calloc((size_t)st->nchunks + 1, sizeof(bool));
  was_sent = calloc((size_t)st->nchunks + 1, sizeof(bool));
  pick = calloc((size_t)st->nchunks + 1, sizeof(int64_t));
  if (buf == NULL || st->confirmed == NULL || pick == NULL || was_sent == NULL) goto out;
  srand((unsigned)(time(NULL) ^ getpid()));
  if (natsConnection_Subscribe(&psub, nc, "processed_data", fetch_on_processed, st) != NATS_OK)
    goto out;
  (void)natsConnection_Flush(nc);
  while (!g_stop && now_s() < deadline) {
    int64_t n = 0, index;
    long len;
    natsSubscription *ssub = NULL;
    bool got = false;
    double wait_start;
    pthread_mutex_lock(&st->mu);
    for (int64_t i = 0; i < st->nchunks; i++)
      if (!st->confirmed[i]) pick[n++] = i;
    pthread_mutex_unlock(&st->mu);
    if (n == 0) {
      rc = 0;
      break;
    }
    index = pick[rand() % n];
    /* Subscribe, ask, wait for some mapper to say it listens. */
    if (natsConnection_SubscribeSync(&ssub, nc, "mapper_status") != NATS_OK) goto out;
    (void)natsConnection_PublishString(nc, "mapper_status", "anyone_listening");
    wait_start = now_s();
    while (!g_stop && now_s() < deadline) {
      natsMsg *m = NULL;
      natsStatus s = natsSubscription_NextMsg(&m, ssub, 200);
      if (s == NATS_OK) {
        got = body_is(m, "im_listening");
        natsMsg_Destroy(m);
        if (got) break;
      } else if (s != NATS_TIMEOUT) {
        break;
      }
    }
    if (now_s() - wait_start > 1.0) waits_over_1s++;
    retire(ssub);
    if (!got) continue;
    len = build_chunk(o, index, buf, PEER_MAX_CHUNK_BYTES);
    if (len < 0) goto out;
    if (natsConnection_Publish(nc, "mapper_data", buf, (int)len) != NATS_OK) continue;
    sent++;
    if (was_sent[index]) resent++;
    was_sent[index] = true;
  }
  (void)natsConnection_Flush(nc);
  pthread_mutex_lock(&st->mu);
  printf("{\"role\":\"fetcher\",\"chunks\":%" PRId64 ",\"confirmed\":%" PRId64 ",\"sent\":%" PRId64
         ",\"resent\":%" PRId64 ",\"duplicate_confirmations\":%" PRId64
         ",\"waits_over_1s\":%" PRId64 ",\"seconds\":%.3f}\n",
         st->nchunks, st->nconfirmed, sent, resent, st->dup_confirmations, waits_over_1s,
         now_s() - t0);
  pthread_mutex_unlock(&st->mu);
  fflush(stdout);
out:
  if (psub != NULL) retire(psub);
  free(buf);
  free(pick);
  free(was_sent);
  return rc;
}

/* ---- mapper ---- */

static atomic_bool g_busy;
static atomic_llong g_answers;

static void mapper_on_status(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *cl) {
  if (body_is(msg, "anyone_listening") && !atomic_load(&g_busy)) {
    atomic_fetch_add(&g_answers, 1);
    (void)natsConnection_PublishString(nc, "mapper_status", "im_listening");
  }
  natsMsg_Destroy(msg);
}

/* {"index":N,"data":[{"uuid","fn","ln",...}]} -> {"index":N,"data":[{"id","name"}]}.
 * Returns a malloc'd string or NULL. */
static char *map_chunk(const char *data, int len) {
  cJSON *in = cJSON_ParseWithLength(data, (size_t)len);
  cJSON *out = NULL, *arr, *idx, *rec;
  char *s = NULL;
  if (in == NULL) return NULL;
  idx = cJSON_GetObjectItemCaseSensitive(in, "index");
  arr = cJSON_GetObjectItemCaseSensitive(in, "data");
  if (!cJSON_IsNumber(idx) || !cJSON_IsArray(arr)) goto done;
  out = cJSON_CreateObject();
  cJSON_AddNumberToObject(out, "index", idx->valuedouble);
  {
    cJSON *oarr = cJSON_AddArrayToObject(out, "data");
    cJSON_ArrayForEach(rec, arr) {
      cJSON *u = cJSON_GetObjectItemCaseSensitive(rec, "uuid");
      cJSON *fn = cJSON_GetObjectItemCaseSensitive(rec, "fn");
      cJSON *ln = cJSON_GetObjectItemCaseSensitive(rec, "ln");
      cJSON *o = cJSON_CreateObject();
      char name[512];
      snprintf(name, sizeof(name), "%s %s", cJSON_IsString(fn) ? fn->valuestring : "",
               cJSON_IsString(ln) ? ln->valuestring : "");
      cJSON_AddStringToObject(o, "id", cJSON_IsString(u) ? u->valuestring : "");
      cJSON_AddStringToObject(o, "name", name);
      cJSON_AddItemToArray(oarr, o);
    }
  }
  s = cJSON_PrintUnformatted(out);
done:
  cJSON_Delete(in);
  cJSON_Delete(out);
  return s;
}

static int run_mapper(natsConnection *nc, const peer_opts_t *o) {
  natsSubscription *ssub = NULL;
  int64_t processed = 0, failed = 0;
  atomic_store(&g_busy, true);
  if (natsConnection_Subscribe(&ssub, nc, "mapper_status", mapper_on_status, NULL) != NATS_OK)
    return 1;
  while (!g_stop) {
    natsSubscription *dsub = NULL;
    natsMsg *m = NULL;
    char *outs;
    if (natsConnection_QueueSubscribeSync(&dsub, nc, "mapper_data", "mapper.workers") != NATS_OK)
      break;
    atomic_store(&g_busy, false);
    (void)natsConnection_PublishString(nc, "mapper_status", "im_listening");
    while (!g_stop && m == NULL) {
      natsStatus s = natsSubscription_NextMsg(&m, dsub, 200);
      if (s != NATS_OK && s != NATS_TIMEOUT) break;
    }
    atomic_store(&g_busy, true);
    /* The original unsubscribes and drops whatever else arrives. */
    retire(dsub);
    if (m == NULL) continue;
    if (o->delay_ms > 0) usleep((useconds_t)(o->delay_ms * 1000));
    outs = map_chunk(natsMsg_GetData(m), natsMsg_GetDataLength(m));
    if (outs != NULL) {
      (void)natsConnection_PublishString(nc, "saver_data", outs);
      processed++;
      free(outs);
    } else {
      failed++;
    }
    natsMsg_Destroy(m);
  }
  retire(ssub);
  printf("{\"role\":\"mapper\",\"processed\":%" PRId64 ",\"failed\":%" PRId64
         ",\"answers\":%lld}\n",
         processed, failed, (long long)atomic_load(&g_answers));
  fflush(stdout);
  return 0;
}

/* ---- saver ---- */

#define ID_SET_BITS 20 /* 1M slots: plenty for 100,000 ids */

typedef struct saver_state_s {
  pthread_mutex_t mu;
  char (*ids)[37];
  int64_t distinct_ids, duplicate_ids;
  bool seen[1 << 16];
  int64_t chunks, records, duplicate_chunks, bad_records, bad_chunks, max_index;
} saver_state_t;

static void id_insert(saver_state_t *st, const char *id) {
  uint64_t h = 1469598103934665603ULL;
  size_t mask = ((size_t)1 << ID_SET_BITS) - 1;
  for (const char *p = id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    if (st->ids[i][0] == '\0') {
      snprintf(st->ids[i], 37, "%s", id);
      st->distinct_ids++;
      return;
    }
    if (strncmp(st->ids[i], id, 36) == 0) {
      st->duplicate_ids++;
      return;
    }
  }
}

static void saver_on_data(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *cl) {
  saver_state_t *st = cl;
  cJSON *in = cJSON_ParseWithLength(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
  cJSON *idx = in ? cJSON_GetObjectItemCaseSensitive(in, "index") : NULL;
  cJSON *arr = in ? cJSON_GetObjectItemCaseSensitive(in, "data") : NULL;
  char body[32];
  pthread_mutex_lock(&st->mu);
  if (!cJSON_IsNumber(idx) || !cJSON_IsArray(arr) || idx->valuedouble < 0 ||
      idx->valuedouble >= (double)(sizeof(st->seen) / sizeof(st->seen[0]))) {
    st->bad_chunks++;
    pthread_mutex_unlock(&st->mu);
    goto out;
  }
  if (st->seen[(int)idx->valuedouble]) {
    st->duplicate_chunks++;
  } else {
    cJSON *rec;
    st->seen[(int)idx->valuedouble] = true;
    st->chunks++;
    if ((int64_t)idx->valuedouble > st->max_index) st->max_index = (int64_t)idx->valuedouble;
    cJSON_ArrayForEach(rec, arr) {
      cJSON *id = cJSON_GetObjectItemCaseSensitive(rec, "id");
      cJSON *name = cJSON_GetObjectItemCaseSensitive(rec, "name");
      st->records++;
      if (!cJSON_IsString(id) || strlen(id->valuestring) != 36 || !cJSON_IsString(name) ||
          strchr(name->valuestring, ' ') == NULL || cJSON_GetArraySize(rec) != 2) {
        st->bad_records++;
        continue;
      }
      id_insert(st, id->valuestring);
    }
  }
  pthread_mutex_unlock(&st->mu);
  /* "saved": confirm, also a chunk seen before. */
  snprintf(body, sizeof(body), "%d", (int)idx->valuedouble);
  (void)natsConnection_PublishString(nc, "processed_data", body);
out:
  cJSON_Delete(in);
  natsMsg_Destroy(msg);
}

static saver_state_t *g_saver; /* freed at exit: late callbacks may still run */

static int run_saver(natsConnection *nc, const peer_opts_t *o) {
  saver_state_t *st = g_saver = calloc(1, sizeof(*st));
  natsSubscription *sub = NULL;
  if (st == NULL) return 1;
  st->ids = calloc((size_t)1 << ID_SET_BITS, sizeof(*st->ids));
  st->max_index = -1;
  pthread_mutex_init(&st->mu, NULL);
  if (st->ids == NULL ||
      natsConnection_QueueSubscribe(&sub, nc, "saver_data", "saver.workers", saver_on_data, st) !=
          NATS_OK)
    return 1;
  while (!g_stop) usleep(50 * 1000);
  retire(sub);
  pthread_mutex_lock(&st->mu);
  printf("{\"role\":\"saver\",\"chunks\":%" PRId64 ",\"records\":%" PRId64
         ",\"distinct_ids\":%" PRId64 ",\"duplicate_ids\":%" PRId64 ",\"duplicate_chunks\":%" PRId64
         ",\"bad_records\":%" PRId64 ",\"bad_chunks\":%" PRId64 ",\"max_index\":%" PRId64 "}\n",
         st->chunks, st->records, st->distinct_ids, st->duplicate_ids, st->duplicate_chunks,
         st->bad_records, st->bad_chunks, st->max_index);
  pthread_mutex_unlock(&st->mu);
  fflush(stdout);
  return 0;
}

/* ---- main ---- */

static int parse_int(const char *s, int64_t *out) {
  char *end = NULL;
  long long v;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return -EINVAL;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  peer_opts_t o = {.role = NULL,
                   .url = "nats://127.0.0.1:4222",
                   .records = 100000,
                   .chunk_size = 100,
                   .seed = 1,
                   .timeout_s = 300,
                   .delay_ms = 0,
                   .dump_chunk = -1};
  natsOptions *opts = NULL;
  natsConnection *nc = NULL;
  int rc = 2;
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0;
    if (v == NULL) {
      bad = 1;
    } else if (strcmp(a, "--role") == 0) {
      o.role = v;
    } else if (strcmp(a, "--nats-url") == 0) {
      o.url = v;
    } else if (strcmp(a, "--records") == 0) {
      bad = parse_int(v, &o.records) != 0 || o.records < 1;
    } else if (strcmp(a, "--chunk-size") == 0) {
      bad = parse_int(v, &o.chunk_size) != 0 || o.chunk_size < 1 || o.chunk_size > 10000;
    } else if (strcmp(a, "--seed") == 0) {
      bad = parse_int(v, &o.seed) != 0;
    } else if (strcmp(a, "--timeout") == 0) {
      bad = parse_int(v, &o.timeout_s) != 0 || o.timeout_s < 1;
    } else if (strcmp(a, "--delay-ms") == 0) {
      bad = parse_int(v, &o.delay_ms) != 0 || o.delay_ms < 0;
    } else if (strcmp(a, "--dump-chunk") == 0) {
      bad = parse_int(v, &o.dump_chunk) != 0 || o.dump_chunk < 0;
    } else {
      bad = 1;
    }
    if (bad) {
      fprintf(stderr, "app9_peer: bad argument %s (see the comment at the top of app9_peer.c)\n", a);
      return 2;
    }
  }
  if (o.role == NULL || (strcmp(o.role, "fetcher") != 0 && strcmp(o.role, "mapper") != 0 &&
                         strcmp(o.role, "saver") != 0)) {
    fprintf(stderr, "app9_peer: --role fetcher|mapper|saver is required\n");
    return 2;
  }
  if (o.dump_chunk >= 0) {
    char *buf = malloc(PEER_MAX_CHUNK_BYTES);
    long len = buf ? build_chunk(&o, o.dump_chunk, buf, PEER_MAX_CHUNK_BYTES) : -1;
    if (len >= 0) printf("%.*s\n", (int)len, buf);
    free(buf);
    return len >= 0 ? 0 : 1;
  }
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  signal(SIGPIPE, SIG_IGN);
  if (natsOptions_Create(&opts) != NATS_OK || natsOptions_SetURL(opts, o.url) != NATS_OK ||
      natsOptions_SetMaxReconnect(opts, -1) != NATS_OK ||
      natsOptions_SetRetryOnFailedConnect(opts, true, NULL, NULL) != NATS_OK ||
      natsOptions_SetMaxPendingMsgs(opts, 1 << 20) != NATS_OK) {
    fprintf(stderr, "app9_peer: bad NATS options\n");
    goto out;
  }
  {
    natsStatus s = natsConnection_Connect(&nc, opts);
    double until = now_s() + 10;
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
      fprintf(stderr, "app9_peer: cannot connect to %s: %s\n", o.url, natsStatus_GetText(s));
      goto out;
    }
    while (!natsConnection_IsClosed(nc) && natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED &&
           now_s() < until)
      usleep(20 * 1000);
  }
  fprintf(stderr, "app9_peer: %s connected to %s\n", o.role, o.url);
  if (strcmp(o.role, "fetcher") == 0)
    rc = run_fetcher(nc, &o);
  else if (strcmp(o.role, "mapper") == 0)
    rc = run_mapper(nc, &o);
  else
    rc = run_saver(nc, &o);
  (void)natsConnection_FlushTimeout(nc, 2000);
out:
  if (nc != NULL) natsConnection_Close(nc);
  retired_destroy();
  natsConnection_Destroy(nc);
  natsOptions_Destroy(opts);
  (void)nats_CloseAndWait(2000);
  free(g_fetch.confirmed);
  if (g_saver != NULL) {
    free(g_saver->ids);
    free(g_saver);
  }
  return rc;
}
