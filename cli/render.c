/* render.c - tables and progress bars for people (see render.h). Columns
 * are as wide as their widest cell; numbers are right-aligned. */
#include "render.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CELL 160
#define MAXCOL 10

typedef struct {
  int ncol;
  const char *head[MAXCOL];
  bool right[MAXCOL];
  char (*cells)[MAXCOL][CELL];
  size_t nrows, cap;
} table_t;

static void t_init(table_t *t, int ncol, const char *const *head, const bool *right) {
  memset(t, 0, sizeof *t);
  t->ncol = ncol;
  for (int i = 0; i < ncol; i++) {
    t->head[i] = head[i];
    t->right[i] = right[i];
  }
}

/* A new row (zeroed), or NULL when out of memory (the row is dropped). */
static char (*t_row(table_t *t))[CELL] {
  if (t->nrows == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    void *p = realloc(t->cells, cap * sizeof *t->cells);
    if (p == NULL) return NULL;
    t->cells = p;
    t->cap = cap;
  }
  memset(t->cells[t->nrows], 0, sizeof t->cells[0]);
  return t->cells[t->nrows++];
}

static void t_print(table_t *t, FILE *out) {
  int w[MAXCOL];
  for (int c = 0; c < t->ncol; c++) {
    w[c] = (int)strlen(t->head[c]);
    for (size_t r = 0; r < t->nrows; r++) {
      int l = (int)strlen(t->cells[r][c]);
      if (l > w[c]) w[c] = l;
    }
  }
  for (int c = 0; c < t->ncol; c++) {
    if (t->right[c])
      fprintf(out, "%*s%s", w[c], t->head[c], c + 1 < t->ncol ? "  " : "\n");
    else if (c + 1 < t->ncol)
      fprintf(out, "%-*s  ", w[c], t->head[c]);
    else
      fprintf(out, "%s\n", t->head[c]);
  }
  for (size_t r = 0; r < t->nrows; r++) {
    for (int c = 0; c < t->ncol; c++) {
      const char *v = t->cells[r][c];
      if (c + 1 == t->ncol && !t->right[c])
        fprintf(out, "%s\n", v);
      else if (t->right[c])
        fprintf(out, "%*s%s", w[c], v, c + 1 < t->ncol ? "  " : "\n");
      else
        fprintf(out, "%-*s  ", w[c], v);
    }
  }
  free(t->cells);
  t->cells = NULL;
}

/* ---- fields ---- */

static const cJSON *get(const cJSON *o, const char *k) {
  return cJSON_GetObjectItemCaseSensitive(o, k);
}

static bool num(const cJSON *o, const char *k, double *v) {
  const cJSON *x = get(o, k);
  if (!cJSON_IsNumber(x)) return false;
  *v = x->valuedouble;
  return true;
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *x = get(o, k);
  return cJSON_IsString(x) && x->valuestring != NULL ? x->valuestring : NULL;
}

static void fmt_int(char *out, size_t n, const cJSON *o, const char *k) {
  double v;
  if (num(o, k, &v))
    snprintf(out, n, "%lld", (long long)llround(v));
  else
    snprintf(out, n, "-");
}

void cm_render_duration(char *out, size_t n, double s) {
  if (!isfinite(s) || s < 0) {
    snprintf(out, n, "-");
  } else if (s < 10) {
    snprintf(out, n, "%.1fs", s);
  } else if (s < 3600) {
    long v = lround(s);
    if (v < 60)
      snprintf(out, n, "%lds", v);
    else
      snprintf(out, n, "%ldm%02lds", v / 60, v % 60);
  } else {
    long v = lround(s / 60.0);
    snprintf(out, n, "%ldh%02ldm", v / 60, v % 60);
  }
}

static void fmt_rate(char *out, size_t n, const cJSON *o, const char *k) {
  double v;
  if (num(o, k, &v))
    snprintf(out, n, "%.0f", v);
  else
    snprintf(out, n, "-");
}

static void fmt_eta(char *out, size_t n, const cJSON *job) {
  double v;
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(job, "state");
  /* A finished job has nothing left to wait for, whatever the rate says. */
  if (cJSON_IsString(st) && cm_render_state_final(st->valuestring))
    snprintf(out, n, "-");
  else if (num(job, "eta_s", &v))
    cm_render_duration(out, n, v);
  else
    snprintf(out, n, "-");
}

static void fmt_time(char *out, size_t n, const cJSON *o, const char *k) {
  double v;
  if (!num(o, k, &v)) {
    snprintf(out, n, "-");
    return;
  }
  time_t t = (time_t)v;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL || strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(out, n, "%.3f", v);
}

/* done/total and the fraction done (-1 when the total is unknown). */
static double progress(const cJSON *job, char *chunks, size_t n) {
  const cJSON *c = get(job, "chunks");
  double done = 0, total = 0, dead = 0;
  bool have_done = num(c, "done", &done);
  bool have_total = num(c, "total", &total);
  (void)num(c, "dead", &dead);
  if (!have_done) {
    snprintf(chunks, n, "-");
    return -1;
  }
  if (!have_total) {
    snprintf(chunks, n, "%lld/?", (long long)llround(done));
    return -1;
  }
  snprintf(chunks, n, "%lld/%lld", (long long)llround(done), (long long)llround(total));
  if (total <= 0) return 1.0;
  /* Dead chunks are finished too: a complete_with_dead job is at 100%. */
  double f = (done + dead) / total;
  return f > 1.0 ? 1.0 : f;
}

static void bar(char *out, size_t n, double f, int width) {
  if (width <= 0 || n < (size_t)width + 3) {
    if (n) out[0] = '\0';
    return;
  }
  int fill = f < 0 ? 0 : (int)(f * width + 1e-9);
  size_t o = 0;
  out[o++] = '[';
  for (int i = 0; i < width; i++) out[o++] = f < 0 ? '?' : i < fill ? '#' : '-';
  out[o++] = ']';
  out[o] = '\0';
}

static void fmt_pct(char *out, size_t n, double f) {
  if (f < 0)
    snprintf(out, n, "-");
  else
    snprintf(out, n, "%.1f%%", f * 100.0);
}

static const char *or_dash(const char *s) { return s != NULL ? s : "-"; }

bool cm_render_state_final(const char *s) {
  return s != NULL && (strcmp(s, "complete") == 0 || strcmp(s, "complete_with_dead") == 0 ||
                       strcmp(s, "cancelled") == 0 || strcmp(s, "failed") == 0);
}

/* ---- renderers ---- */

void cm_render_jobs(FILE *out, const cJSON *body) {
  static const char *const head[] = {"JOB",    "STATE",   "PRIORITY", "CHUNKS", "DONE",
                                     "DEAD",   "RECORDS", "RECORDS/S", "ETA"};
  static const bool right[] = {false, false, true, true, true, true, true, true, true};
  const cJSON *jobs = get(body, "jobs");
  const cJSON *j;
  table_t t;
  if (cJSON_GetArraySize(jobs) == 0) {
    fprintf(out, "no jobs\n");
    return;
  }
  t_init(&t, 9, head, right);
  cJSON_ArrayForEach(j, jobs) {
    char(*r)[CELL] = t_row(&t);
    if (r == NULL) break;
    snprintf(r[0], CELL, "%s", or_dash(str(j, "job")));
    snprintf(r[1], CELL, "%s", or_dash(str(j, "state")));
    fmt_int(r[2], CELL, j, "priority");
    fmt_pct(r[4], CELL, progress(j, r[3], CELL));
    fmt_int(r[5], CELL, get(j, "chunks"), "dead");
    fmt_int(r[6], CELL, j, "records_saved");
    fmt_rate(r[7], CELL, j, "records_per_s");
    fmt_eta(r[8], CELL, j);
  }
  t_print(&t, out);
}

void cm_render_job(FILE *out, const cJSON *job) {
  char a[CELL], b[CELL], c[CELL], d[CELL], e[CELL];
  const cJSON *ch = get(job, "chunks");
  const cJSON *redo = get(job, "redo");
  double f = progress(job, a, sizeof a);

  fprintf(out, "job:         %s\n", or_dash(str(job, "job")));
  fprintf(out, "state:       %s\n", or_dash(str(job, "state")));
  fprintf(out, "source:      %s\n", or_dash(str(job, "source")));
  fmt_int(b, sizeof b, job, "priority");
  fprintf(out, "priority:    %s\n", b);
  fmt_int(b, sizeof b, ch, "total");
  fmt_int(c, sizeof c, ch, "done");
  fmt_int(d, sizeof d, ch, "leased");
  fmt_int(e, sizeof e, ch, "pending");
  fprintf(out, "chunks:      %s total, %s done, %s leased, %s pending, ",
          strcmp(b, "-") == 0 ? "?" : b, c, d, e);
  fmt_int(b, sizeof b, ch, "dead");
  fprintf(out, "%s dead\n", b);
  bar(b, sizeof b, f, 30);
  fmt_pct(c, sizeof c, f);
  fprintf(out, "progress:    %s %s\n", b, c);
  fmt_int(b, sizeof b, job, "records_saved");
  fmt_rate(c, sizeof c, job, "records_per_s");
  fmt_eta(d, sizeof d, job);
  fprintf(out, "records:     %s saved, %s records/s, ETA %s\n", b, c, d);
  fmt_time(b, sizeof b, job, "created_at");
  fmt_time(c, sizeof c, job, "finished_at");
  fprintf(out, "created:     %s\nfinished:    %s\n", b, c);
  fprintf(out, "last error:  %s\n", or_dash(str(job, "last_error")));
  if (cJSON_IsObject(redo)) {
    fmt_int(b, sizeof b, redo, "generation");
    fmt_int(c, sizeof c, redo, "done");
    fmt_int(d, sizeof d, redo, "chunks");
    fprintf(out, "redo:        version %s (generation %s): %s/%s chunks redone\n",
            or_dash(str(redo, "version")), b, c, d);
  } else {
    fprintf(out, "redo:        -\n");
  }
}

void cm_render_members(FILE *out, const cJSON *body) {
  static const char *const head[] = {"ID", "ROLE", "VERSION", "INFLIGHT", "HEARTBEAT", "INSTANCE"};
  static const bool right[] = {false, false, false, true, true, false};
  const cJSON *ms = get(body, "members");
  const cJSON *m;
  table_t t;
  if (cJSON_GetArraySize(ms) == 0) {
    fprintf(out, "no members\n");
    return;
  }
  t_init(&t, 6, head, right);
  cJSON_ArrayForEach(m, ms) {
    char(*r)[CELL] = t_row(&t);
    double ago;
    if (r == NULL) break;
    snprintf(r[0], CELL, "%s", or_dash(str(m, "id")));
    snprintf(r[1], CELL, "%s", or_dash(str(m, "role")));
    snprintf(r[2], CELL, "%s", or_dash(str(m, "version")));
    fmt_int(r[3], CELL, m, "inflight");
    if (num(m, "last_heartbeat_ms_ago", &ago)) {
      char d[32];
      cm_render_duration(d, sizeof d, ago / 1000.0);
      snprintf(r[4], CELL, "%s ago", d);
    } else {
      snprintf(r[4], CELL, "-");
    }
    snprintf(r[5], CELL, "%s", or_dash(str(m, "instance")));
  }
  t_print(&t, out);
}

void cm_render_dead(FILE *out, const char *name, const cJSON *body) {
  static const char *const head[] = {"CHUNK", "ATTEMPTS", "REASON"};
  static const bool right[] = {true, true, false};
  const cJSON *ds = get(body, "dead");
  const cJSON *d;
  table_t t;
  if (cJSON_GetArraySize(ds) == 0) {
    fprintf(out, "no dead chunks in job %s\n", name);
    return;
  }
  t_init(&t, 3, head, right);
  cJSON_ArrayForEach(d, ds) {
    char(*r)[CELL] = t_row(&t);
    if (r == NULL) break;
    fmt_int(r[0], CELL, d, "index");
    fmt_int(r[1], CELL, d, "attempts");
    snprintf(r[2], CELL, "%s", or_dash(str(d, "reason")));
  }
  t_print(&t, out);
}

void cm_render_progress_line(char *out, size_t n, const cJSON *job, int width) {
  char chunks[64], b[128], pct[16], rec[32], rate[32], eta[32], dead[32];
  double f = progress(job, chunks, sizeof chunks);
  bar(b, sizeof b, f, width);
  fmt_pct(pct, sizeof pct, f);
  fmt_int(rec, sizeof rec, job, "records_saved");
  fmt_rate(rate, sizeof rate, job, "records_per_s");
  fmt_eta(eta, sizeof eta, job);
  fmt_int(dead, sizeof dead, get(job, "chunks"), "dead");
  snprintf(out, n, "%s %s %s%s%s %s chunks, %s records, %s records/s, ETA %s, dead %s",
           or_dash(str(job, "job")), or_dash(str(job, "state")), b, b[0] ? " " : "", pct,
           chunks, rec, rate, eta, dead);
}

void cm_render_members_line(char *out, size_t n, const cJSON *body) {
  static const char *const roles[] = {"fetcher", "mapper", "saver"};
  int count[3] = {0, 0, 0}, other = 0;
  const cJSON *m;
  cJSON_ArrayForEach(m, get(body, "members")) {
    const char *r = str(m, "role");
    int k = -1;
    for (int i = 0; i < 3 && r != NULL; i++)
      if (strcmp(r, roles[i]) == 0) k = i;
    if (k >= 0)
      count[k]++;
    else
      other++;
  }
  int o = snprintf(out, n, "members: fetcher %d, mapper %d, saver %d", count[0], count[1],
                   count[2]);
  if (other > 0 && o > 0 && (size_t)o < n) snprintf(out + o, n - (size_t)o, ", other %d", other);
}

void cm_render_json_pretty(FILE *out, const cJSON *v) {
  char *s = cJSON_Print(v);
  if (s != NULL) {
    fprintf(out, "%s\n", s);
    free(s);
  }
}
