/* transform.c - the built-in record transforms (see transform.h).
 *
 * A chunk is read with cm_chunk_peek (header + a syntax-checked data span)
 * and its records are visited one by one as raw spans: no transform builds
 * a tree (fullname scans a record's top-level keys, see map_fullname).
 * The output is streamed into the caller's buffer with cm_chunk_begin/end.
 * Nothing here is static and mutable: one cm_transform_t is shared by all
 * worker threads. */
#define _GNU_SOURCE /* memmem */
#include "transform.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm/chunk.h"
#include "cm/err.h"
#include "exec.h"
#include "plugin_host.h"

#define CM_BURN_MAX 1000000u
#define CM_SLEEP_MAX_MS 600000u

typedef enum {
  CM_T_IDENTITY,
  CM_T_FULLNAME,
  CM_T_BURN,
  CM_T_SLEEP,
  CM_T_FAIL,
  CM_T_EXEC,
  CM_T_PLUGIN
} cm_transform_kind_t;

#define CM_FAIL_MAX 16
#define CM_ELEMS_MAX 1024 /* records per chunk split by the validating scan */

struct cm_transform_s {
  cm_transform_kind_t kind;
  uint32_t arg;  /* burn: rounds per record; sleep: milliseconds */
  char name[24]; /* canonical spec, e.g. "burn:1000" */
  uint64_t fail[CM_FAIL_MAX]; /* fail:I,J,...: chunk indexes that fail */
  size_t nfail;
  cm_exec_t *exec;     /* exec:CMD */
  cm_plugin_t *plugin; /* plugin:PATH */
  char version[CM_VERSION_MAX]; /* written into every mapped chunk; "" = none */
};

/* fail:I,J,K - identity, except that the listed chunk indexes fail as a
 * whole (for exercising NAK, backoff and dead chunks end to end). */
static int parse_fail(const char *s, cm_transform_t *t) {
  while (*s) {
    char *end;
    unsigned long long v;
    if (*s < '0' || *s > '9' || t->nfail == CM_FAIL_MAX) return -EINVAL;
    v = strtoull(s, &end, 10);
    t->fail[t->nfail++] = v;
    if (*end == ',') end++;
    else if (*end != '\0') return -EINVAL;
    s = end;
  }
  return t->nfail > 0 ? 0 : -EINVAL;
}


/* Strict decimal: digits only (no sign, blanks or exponent), <= max. */
static int parse_arg(const char *s, uint32_t min, uint32_t max, uint32_t *out) {
  uint64_t v = 0;
  if (*s == '\0') return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -EINVAL;
    v = v * 10 + (uint64_t)(*s - '0');
    if (v > max) return -EINVAL;
  }
  if (v < min) return -EINVAL;
  *out = (uint32_t)v;
  return 0;
}

int cm_transform_create(cm_transform_t **out, const char *spec, char *err, size_t errlen) {
  return cm_transform_create_ex(out, spec, NULL, err, errlen);
}

int cm_transform_create_ex(cm_transform_t **out, const char *spec, const cm_transform_opts_t *o,
                           char *err, size_t errlen) {
  cm_transform_t *t = NULL;
  int rc = -EINVAL;

  *out = NULL;
  if (spec == NULL) spec = "";
  t = calloc(1, sizeof *t);
  if (t == NULL) {
    rc = -ENOMEM;
    cm_set_err(err, errlen, "out of memory");
    goto fail;
  }
  if (strcmp(spec, "identity") == 0) {
    t->kind = CM_T_IDENTITY;
  } else if (strcmp(spec, "fullname") == 0) {
    t->kind = CM_T_FULLNAME;
  } else if (strncmp(spec, "burn:", 5) == 0) {
    t->kind = CM_T_BURN;
    if (parse_arg(spec + 5, 1, CM_BURN_MAX, &t->arg) < 0) {
      cm_set_err(err, errlen, "bad transform \"%.64s\": N in burn:N must be an integer 1..%u", spec,
              CM_BURN_MAX);
      goto fail;
    }
  } else if (strncmp(spec, "sleep:", 6) == 0) {
    t->kind = CM_T_SLEEP;
    if (parse_arg(spec + 6, 0, CM_SLEEP_MAX_MS, &t->arg) < 0) {
      cm_set_err(err, errlen, "bad transform \"%.64s\": MS in sleep:MS must be an integer 0..%u", spec,
              CM_SLEEP_MAX_MS);
      goto fail;
    }
  } else if (strncmp(spec, "fail:", 5) == 0) {
    t->kind = CM_T_FAIL;
    if (parse_fail(spec + 5, t) < 0) {
      cm_set_err(err, errlen,
              "bad transform \"%.64s\": fail:I,J,... needs 1..%d chunk indexes", spec,
              CM_FAIL_MAX);
      goto fail;
    }
  } else if (strncmp(spec, "exec:", 5) == 0) {
    t->kind = CM_T_EXEC;
    if ((rc = cm_exec_create(&t->exec, spec + 5, o, err, errlen)) < 0) goto fail;
  } else if (strncmp(spec, "plugin:", 7) == 0) {
    t->kind = CM_T_PLUGIN;
    if ((rc = cm_plugin_load(&t->plugin, spec + 7, o ? o->arg : NULL, err, errlen)) < 0) goto fail;
  } else {
    cm_set_err(err, errlen,
            "unknown transform \"%.64s\": expected identity, fullname, burn:N, sleep:MS, "
            "exec:COMMAND, plugin:PATH.so",
            spec);
    goto fail;
  }
  switch (t->kind) {
  case CM_T_IDENTITY: (void)snprintf(t->name, sizeof t->name, "identity"); break;
  case CM_T_FULLNAME: (void)snprintf(t->name, sizeof t->name, "fullname"); break;
  case CM_T_BURN: (void)snprintf(t->name, sizeof t->name, "burn:%" PRIu32, t->arg); break;
  case CM_T_SLEEP: (void)snprintf(t->name, sizeof t->name, "sleep:%" PRIu32, t->arg); break;
  case CM_T_FAIL: (void)snprintf(t->name, sizeof t->name, "fail:%zu-chunks", t->nfail); break;
  case CM_T_EXEC: (void)snprintf(t->name, sizeof t->name, "exec"); break;
  case CM_T_PLUGIN: (void)snprintf(t->name, sizeof t->name, "plugin"); break;
  }
  *out = t;
  return 0;

fail:
  free(t);
  return rc;
}

void cm_transform_destroy(cm_transform_t *t) {
  if (t == NULL) return;
  cm_exec_destroy(t->exec);
  cm_plugin_unload(t->plugin);
  free(t);
}

void cm_transform_set_metrics(cm_transform_t *t, cm_metrics_t *m) {
  if (t->exec) cm_exec_set_metrics(t->exec, m);
}

const char *cm_transform_name(const cm_transform_t *t) { return t->name; }

int cm_transform_set_version(cm_transform_t *t, const char *label, char *err, size_t errlen) {
  size_t n = label ? strlen(label) : 0;
  if (n >= sizeof t->version) {
    cm_set_err(err, errlen, "longer than %d bytes", CM_VERSION_MAX - 1);
    return -EINVAL;
  }
  if (!cm_utf8_valid(label ? label : "", n)) {
    cm_set_err(err, errlen, "not valid UTF-8 (byte %zu)", cm_utf8_check(label, n));
    return -EINVAL;
  }
  memcpy(t->version, label ? label : "", n);
  t->version[n] = '\0';
  return 0;
}

/* ---- per-record work --------------------------------------------------- */

/* Why a record became a dead letter: a short static-or-formatted text. */
typedef struct {
  char text[256];
} reason_t;

static void sleep_ms(uint32_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  /* Signals (the daemon's SIGTERM lands on the loop thread, but others may
   * interrupt us): keep sleeping the rest. */
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Appends the value of the validated string literal lit[0..n) (quotes
 * included) to b, as a C string would hold it: the text stops at a \u0000
 * (what the cJSON-based version produced, whose valuestring is
 * NUL-terminated). Returns 0, -EINVAL for a lone surrogate, or a buffer
 * error. */
static int append_unescaped(cm_buf_t *b, const char *lit, size_t n) {
  long len;
  int rc = cm_buf_reserve(b, n); /* the value is never longer than its literal */
  if (rc < 0) return rc;
  len = cm_json_unescape(lit, n, b->data + b->len, n, CM_UNESCAPE_NUL_ENDS);
  if (len < 0) {
    b->data[b->len] = '\0';
    return (int)len;
  }
  b->len += (size_t)len;
  return 0;
}

/* Which of uuid, fn, ln (0..2) the key literal k[0..n) (quotes included)
 * names, or -1. Keys are compared by value, escapes resolved, as an object
 * lookup does; tmp holds an escaped key's value. */
static int fullname_key(const char *k, size_t n, cm_buf_t *tmp) {
  static const char *const need[] = {"uuid", "fn", "ln"};
  const char *name = k + 1;
  size_t len = n - 2;
  if (memchr(name, '\\', len) != NULL) {
    cm_buf_reset(tmp);
    if (append_unescaped(tmp, k, n) < 0 || tmp->data == NULL) return -1;
    name = tmp->data;
    len = tmp->len;
  }
  for (int j = 0; j < 3; j++)
    if (len == strlen(need[j]) && memcmp(name, need[j], len) == 0) return j;
  return -1;
}

/* fullname: {"id":<uuid>,"name":"<fn> <ln>"}. Returns 0 with the record
 * appended to out, 1 with *why filled (dead letter, nothing appended), or a
 * negative errno. scratch is reused across records to build the name.
 *
 * No tree: the record (syntax-checked by cm_chunk_peek) is scanned over its
 * top-level keys only, values skipped with cm_json_value_skip, and the scan
 * stops once the three fields are found. As with an object lookup, the
 * first occurrence of a key counts and it must be a string. The output is
 * byte for byte what the cJSON-based version produced. */
static int map_fullname(const char *rec, size_t n, cm_buf_t *out, cm_buf_t *scratch,
                        reason_t *why) {
  static const char *const need[] = {"uuid", "fn", "ln"};
  const char *val[3] = {NULL, NULL, NULL};
  size_t vlen[3] = {0, 0, 0};
  bool found[3] = {false, false, false};
  int nfound = 0;
  size_t i = 1, mark = out->len;
  int rc = 0;

  if (rec[0] != '{') {
    (void)snprintf(why->text, sizeof why->text, "fullname: record is not an object");
    return 1;
  }
  while (nfound < 3) {
    long kl, vl;
    int key;
    while (i < n && (is_ws(rec[i]) || rec[i] == ',')) i++;
    if (i >= n || rec[i] != '"') break; /* '}': the end of the object */
    kl = cm_json_value_skip(rec + i, n - i);
    if (kl <= 0) return -EINVAL;
    key = fullname_key(rec + i, (size_t)kl, scratch);
    i += (size_t)kl;
    while (i < n && (is_ws(rec[i]) || rec[i] == ':')) i++;
    if (i >= n) return -EINVAL;
    vl = cm_json_value_skip(rec + i, n - i);
    if (vl <= 0) return -EINVAL;
    if (key >= 0 && !found[key]) {
      found[key] = true;
      nfound++;
      if (rec[i] == '"') {
        val[key] = rec + i;
        vlen[key] = (size_t)vl;
      }
    }
    i += (size_t)vl;
  }
  for (size_t k = 0; k < 3; k++) {
    if (val[k] == NULL) {
      (void)snprintf(why->text, sizeof why->text, "fullname: missing string field \"%s\"", need[k]);
      return 1;
    }
  }
  /* The name: fn + " " + ln, each as the C string its literal holds. */
  cm_buf_reset(scratch);
  for (size_t k = 1; k < 3 && rc == 0; k++) {
    if (k == 2) rc = cm_buf_append(scratch, " ", 1);
    if (rc == 0) rc = append_unescaped(scratch, val[k], vlen[k]);
    if (rc == -EINVAL) {
      (void)snprintf(why->text, sizeof why->text,
                     "fullname: field \"%s\" has a lone surrogate escape", need[k]);
      return 1;
    }
  }
  if (rc == 0) rc = cm_buf_append(out, "{\"id\":", 6);
  if (rc == 0) {
    const char *id = val[0] + 1;
    size_t idlen = vlen[0] - 2;
    if (memchr(id, '\\', idlen) != NULL) {
      /* Unescape after the name (scratch holds it): into out's tail, then
       * escaped again from a copy. Rare: uuids have no escapes. */
      cm_buf_t tmp;
      cm_buf_init(&tmp, out->max);
      rc = append_unescaped(&tmp, val[0], vlen[0]);
      if (rc == -EINVAL) {
        cm_buf_free(&tmp);
        out->len = mark;
        if (out->data) out->data[mark] = '\0';
        (void)snprintf(why->text, sizeof why->text,
                       "fullname: field \"uuid\" has a lone surrogate escape");
        return 1;
      }
      if (rc == 0) rc = cm_buf_append_json_str(out, tmp.data ? tmp.data : "", tmp.len);
      cm_buf_free(&tmp);
    } else {
      rc = cm_buf_append_json_str(out, id, idlen);
    }
  }
  if (rc == 0) rc = cm_buf_append(out, ",\"name\":", 8);
  if (rc == 0) rc = cm_buf_append_json_str(out, scratch->data ? scratch->data : "", scratch->len);
  if (rc == 0) rc = cm_buf_append(out, "}", 1);
  if (rc < 0) {
    out->len = mark;
    if (out->data) out->data[mark] = '\0';
  }
  return rc;
}

/* splitmix64's finaliser: a full-avalanche 64-bit mix. */
static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

uint64_t cm_transform_burn_checksum(const char *rec, size_t n, uint32_t rounds) {
  /* One FNV-1a pass binds the result to every byte of the record, then
   * `rounds` dependent mixes are the adjustable CPU work: each round needs
   * the previous result, so the compiler cannot fold or vectorise them. */
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)rec[i]) * UINT64_C(0x100000001b3);
  for (uint32_t r = 0; r < rounds; r++) h = mix64(h + r);
  return h;
}

/* burn:N: the record with ,"burn":"<16 hex digits>" before its closing
 * brace. A hex string, not a number: a 64-bit value does not survive
 * consumers that read JSON numbers as doubles. */
static int map_burn(const char *rec, size_t n, uint32_t rounds, cm_buf_t *out, reason_t *why) {
  size_t mark = out->len;
  int rc;
  bool empty = true;

  if (rec[0] != '{') {
    (void)snprintf(why->text, sizeof why->text, "burn: record is not an object");
    return 1;
  }
  for (size_t i = 1; i + 1 < n && empty; i++)
    empty = rec[i] == ' ' || rec[i] == '\t' || rec[i] == '\n' || rec[i] == '\r';
  uint64_t h = cm_transform_burn_checksum(rec, n, rounds);
  /* The span ends in '}' (peek checked it): drop it and append ours. */
  rc = cm_buf_append(out, rec, n - 1);
  if (rc == 0) rc = cm_buf_printf(out, "%s\"burn\":\"%016" PRIx64 "\"}", empty ? "" : ",", h);
  if (rc < 0) {
    out->len = mark;
    if (out->data) out->data[mark] = '\0';
  }
  return rc;
}

/* Appends one dead letter {"idx":i,"reason":..,"record":<raw>} to dead. */
static int add_dead(cm_buf_t *dead, uint32_t *ndead, uint32_t idx, const reason_t *why,
                    const char *rec, size_t n) {
  int rc = 0;
  if (*ndead > 0) rc = cm_buf_append(dead, ",", 1);
  if (rc == 0) rc = cm_buf_printf(dead, "{\"idx\":%" PRIu32 ",\"reason\":", idx);
  if (rc == 0) rc = cm_buf_append_json_str(dead, why->text, strlen(why->text));
  if (rc == 0) rc = cm_buf_append(dead, ",\"record\":", 10);
  /* A record that is not UTF-8 is kept as a JSON string of its text (the
   * bad bytes replaced): the dead letter itself stays valid JSON. */
  if (rc == 0)
    rc = cm_utf8_valid(rec, n) ? cm_buf_append(dead, rec, n) : cm_buf_append_json_str(dead, rec, n);
  if (rc == 0) rc = cm_buf_append(dead, "}", 1);
  if (rc == 0) (*ndead)++;
  return rc;
}

/* An answer of exec or plugin: valid JSON is the mapped record (0); an
 * object whose only member is "error" is a dead letter with that reason,
 * and so is anything that is not JSON (1). */
static int judge_output(const char *who, const char *line, size_t n, cm_buf_t *out,
                        reason_t *why) {
  size_t epos = 0;
  const char *ewhy = NULL;
  long span;
  while (n > 0 && (line[0] == ' ' || line[0] == '\t')) line++, n--;
  while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r')) n--;
  if (n == 0) {
    (void)snprintf(why->text, sizeof why->text, "%s: empty output line", who);
    return 1;
  }
  span = cm_json_value_span_why(line, n, &epos, &ewhy);
  if (span < 0 || (size_t)span != n) {
    (void)snprintf(why->text, sizeof why->text, "%s: output is not valid JSON (%s at byte %zu)",
                   who, span < 0 && ewhy ? ewhy : "trailing data", span < 0 ? epos : (size_t)span);
    return 1;
  }
  if (line[0] == '{' && memmem(line, n, "\"error\"", 7) != NULL) {
    cJSON *o = cJSON_ParseWithLength(line, n);
    const cJSON *e = o ? cJSON_GetObjectItemCaseSensitive(o, "error") : NULL;
    if (e != NULL && cJSON_GetArraySize(o) == 1) {
      if (cJSON_IsString(e) && e->valuestring)
        (void)snprintf(why->text, sizeof why->text, "%s: %s", who, e->valuestring);
      else
        (void)snprintf(why->text, sizeof why->text, "%s: error (not a string)", who);
      cJSON_Delete(o);
      return 1;
    }
    cJSON_Delete(o);
    if (o == NULL) return -ENOMEM;
  }
  return cm_buf_append(out, line, n);
}

/* The plugin's answer for one record: 0 appended, 1 dead letter, or a
 * negative errno failing the chunk (why holds the plugin's reason). */
static int map_plugin(const cm_transform_t *t, void *st, const char *rec, size_t n, cm_buf_t *out,
                      cm_buf_t *scratch, reason_t *why) {
  char perr[200] = "";
  char *res = NULL;
  size_t rlen = 0;
  int r;
  if (memchr(rec, '\n', n) != NULL || memchr(rec, '\r', n) != NULL) {
    /* The ABI promises one-line records: JSON has no raw newline inside a
     * string, so the ones here are blanks. */
    cm_buf_reset(scratch);
    if ((r = cm_buf_append(scratch, rec, n)) < 0) return r;
    for (size_t k = 0; k < scratch->len; k++)
      if (scratch->data[k] == '\n' || scratch->data[k] == '\r') scratch->data[k] = ' ';
    rec = scratch->data;
  }
  r = cm_plugin_record(t->plugin, st, rec, n, &res, &rlen, perr, sizeof perr);
  perr[sizeof perr - 1] = '\0';
  if (r == 1) {
    (void)snprintf(why->text, sizeof why->text, "plugin: %s", perr[0] ? perr : "rejected");
    return 1;
  }
  if (r < 0) {
    (void)snprintf(why->text, sizeof why->text, "plugin failed (%d): %s", r,
                   perr[0] ? perr : "no reason given");
    return r > -4096 ? r : -EIO;
  }
  if (r != 0 || (res == NULL && rlen > 0)) {
    (void)snprintf(why->text, sizeof why->text, "plugin: cm_transform_record returned %d", r);
    return 1;
  }
  return judge_output("plugin", res ? res : "", rlen, out, why);
}

/* exec: the chunk's non-null records go through a child in one batch; the
 * record loop then takes the answers in order. */
typedef struct {
  const char **rec;
  size_t *len, *off, *ln;
  size_t n, next;
  cm_buf_t lines;
} exec_batch_t;

static void exec_batch_free(exec_batch_t *b) {
  free(b->rec);
  free(b->len);
  free(b->off);
  free(b->ln);
  cm_buf_free(&b->lines);
}

static int exec_batch_run(const cm_transform_t *t, const cm_chunk_view_t *v, exec_batch_t *b,
                          char *err, size_t errlen) {
  size_t pos = 0, el = 0, cnt = 0;
  const char *rec = NULL;
  int more;
  while ((more = cm_json_array_next(v->data, v->data_len, &pos, &rec, &el)) == 1)
    if (!(el == 4 && memcmp(rec, "null", 4) == 0)) cnt++;
  if (more < 0) {
    cm_set_err(err, errlen, "bad chunk: malformed \"data\" array");
    return more;
  }
  if (cnt == 0) return 0;
  b->rec = calloc(cnt, sizeof *b->rec);
  b->len = calloc(cnt, sizeof *b->len);
  b->off = calloc(cnt, sizeof *b->off);
  b->ln = calloc(cnt, sizeof *b->ln);
  if (!b->rec || !b->len || !b->off || !b->ln) {
    cm_set_err(err, errlen, "out of memory");
    return -ENOMEM;
  }
  pos = 0;
  while (cm_json_array_next(v->data, v->data_len, &pos, &rec, &el) == 1)
    if (!(el == 4 && memcmp(rec, "null", 4) == 0)) {
      b->rec[b->n] = rec;
      b->len[b->n++] = el;
    }
  return cm_exec_run(t->exec, b->rec, b->len, b->n, &b->lines, b->off, b->ln, err, errlen);
}

int cm_transform_chunk(const cm_transform_t *t, const char *in, size_t len, cm_buf_t *out,
                       cm_transform_stats_t *st, char *err, size_t errlen) {
  cm_chunk_view_t v;
  cm_buf_t dead, scratch;
  /* Record spans from the validating scan (no second walk over the data);
   * chunks of more records fall back to cm_json_array_next. */
  uint32_t el_start[CM_ELEMS_MAX], el_end[CM_ELEMS_MAX];
  cm_json_elems_t el_spans = {el_start, el_end, CM_ELEMS_MAX, 0, false};
  size_t el_k = 0;
  size_t mark = out->len, pos = 0, el = 0;
  const char *rec = NULL;
  uint32_t idx = 0, nrec = 0, nnew = 0, ndead = 0;
  int rc, more, pslot = -1;
  char perr[160];
  exec_batch_t xb;
  void *pst = NULL;

  /* Both scratch buffers share out's limit: neither can usefully grow past
   * what the mapped chunk may hold. */
  cm_buf_init(&dead, out->max);
  cm_buf_init(&scratch, out->max);
  memset(&xb, 0, sizeof xb);
  cm_buf_init(&xb.lines, out->max);
  if (st) memset(st, 0, sizeof *st);

  rc = cm_chunk_peek_elems(in, len, &v, &el_spans, perr, sizeof perr);
  if (rc < 0) {
    cm_set_err(err, errlen, "bad chunk: %s", perr);
    goto fail;
  }
  if (t->kind == CM_T_SLEEP && t->arg > 0) sleep_ms(t->arg);
  for (size_t i = 0; t->kind == CM_T_FAIL && i < t->nfail; i++)
    if (t->fail[i] == v.hdr.index) {
      rc = -EINVAL;
      cm_set_err(err, errlen, "fail: chunk %" PRIu64 " fails on purpose", v.hdr.index);
      goto fail;
    }
  if (t->kind == CM_T_EXEC && (rc = exec_batch_run(t, &v, &xb, err, errlen)) < 0) goto fail;
  if (t->kind == CM_T_PLUGIN && (rc = cm_plugin_acquire(t->plugin, &pst, &pslot, err, errlen)) < 0)
    goto fail;

  rc = cm_buf_append(&dead, "[", 1);
  /* Dead letters the chunk already carries (e.g. the source's unreadable
   * lines) travel on to the saver ahead of ours. */
  if (rc == 0 && v.dead) {
    pos = 0;
    while (rc == 0 && (more = cm_json_array_next(v.dead, v.dead_len, &pos, &rec, &el)) != 0) {
      if (more < 0) {
        rc = more;
        cm_set_err(err, errlen, "bad chunk: malformed \"dead\" array");
        goto fail;
      }
      if (ndead > 0) rc = cm_buf_append(&dead, ",", 1);
      if (rc == 0) rc = cm_buf_append(&dead, rec, el);
      if (rc == 0) ndead++;
    }
  }
  /* The mapped chunk names the mapper that produced it, whatever the input
   * said. */
  memcpy(v.hdr.version, t->version, sizeof v.hdr.version);
  if (rc == 0) rc = cm_chunk_begin(out, &v.hdr);
  pos = 0;
  while (rc == 0) {
    reason_t why;
    if (el_spans.ok) {
      if (el_k == el_spans.n) break;
      rec = v.data + el_start[el_k];
      el = el_end[el_k] - el_start[el_k];
      el_k++;
      more = 1;
    } else if ((more = cm_json_array_next(v.data, v.data_len, &pos, &rec, &el)) == 0) {
      break;
    }
    int r = 0;
    if (more < 0) {
      rc = more;
      cm_set_err(err, errlen, "bad chunk: malformed \"data\" array");
      goto fail;
    }
    if (idx > 0) rc = cm_buf_append(out, ",", 1);
    if (rc < 0) break;
    if (el == 4 && memcmp(rec, "null", 4) == 0) {
      /* A slot already emptied upstream: its dead letter exists already. */
      rc = cm_buf_append(out, "null", 4);
      idx++;
      continue;
    }
    size_t rec_mark = out->len, ubad = cm_utf8_check(rec, el);
    if (ubad != el) {
      /* JSON is UTF-8 (RFC 8259): such a record is a dead letter, never
       * stored as a result. An exec child has answered it already: that
       * answer is not used. */
      if (t->kind == CM_T_EXEC) xb.next++;
      (void)snprintf(why.text, sizeof why.text, "record is not valid UTF-8 (byte %zu)", ubad);
      r = 1;
    } else switch (t->kind) {
    case CM_T_IDENTITY:
    case CM_T_FAIL:
    case CM_T_SLEEP: r = cm_buf_append(out, rec, el); break;
    case CM_T_FULLNAME: r = map_fullname(rec, el, out, &scratch, &why); break;
    case CM_T_BURN: r = map_burn(rec, el, t->arg, out, &why); break;
    case CM_T_EXEC:
      if (xb.next >= xb.n) {
        r = -EPROTO; /* cannot happen: one answer per non-null record */
        break;
      }
      r = judge_output("exec", xb.lines.data + xb.off[xb.next], xb.ln[xb.next], out, &why);
      xb.next++;
      break;
    case CM_T_PLUGIN:
      r = map_plugin(t, pst, rec, el, out, &scratch, &why);
      if (r < 0 && r != -ENOMEM && r != -E2BIG) {
        rc = r;
        cm_set_err(err, errlen, "%s", why.text);
        goto fail;
      }
      break;
    }
    if (r == 0 && (ubad = cm_utf8_check(out->data + rec_mark, out->len - rec_mark)) !=
                      out->len - rec_mark) {
      /* The transform (exec, plugin) wrote bytes that are not UTF-8. */
      out->len = rec_mark;
      out->data[rec_mark] = '\0';
      (void)snprintf(why.text, sizeof why.text, "mapped record is not valid UTF-8 (byte %zu)",
                     ubad);
      r = 1;
    }
    if (r == 0) {
      nrec++;
    } else if (r == 1) {
      rc = cm_buf_append(out, "null", 4);
      if (rc == 0) rc = add_dead(&dead, &ndead, idx, &why, rec, el);
      if (rc == 0) nnew++;
    } else {
      rc = r;
    }
    idx++;
  }
  if (rc == 0) rc = cm_buf_append(&dead, "]", 1);
  if (rc == 0) rc = cm_chunk_end(out, ndead ? dead.data : NULL, ndead ? dead.len : 0);
  if (rc < 0) {
    if (rc == -E2BIG)
      cm_set_err(err, errlen, "mapped chunk %" PRIu64 " exceeds the %zu-byte limit", v.hdr.index,
              out->max);
    else if (rc == -ENOMEM)
      cm_set_err(err, errlen, "out of memory mapping chunk %" PRIu64, v.hdr.index);
    else
      cm_set_err(err, errlen, "mapping chunk %" PRIu64 " failed (error %d)", v.hdr.index, rc);
    goto fail;
  }
  if (st) {
    st->records = nrec;
    st->dead = nnew;
  }
  cm_buf_free(&dead);
  cm_buf_free(&scratch);
  exec_batch_free(&xb);
  if (pslot >= 0) cm_plugin_release(t->plugin, pslot);
  return 0;

fail:
  /* All or nothing: the caller's buffer is left as it was. */
  out->len = mark;
  if (out->data) out->data[mark] = '\0';
  cm_buf_free(&dead);
  cm_buf_free(&scratch);
  exec_batch_free(&xb);
  if (pslot >= 0) cm_plugin_release(t->plugin, pslot);
  return rc;
}
