/* sink.c - picks the backend from --db and dispatches (see sink.h). */
#include "sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/err.h"

struct cm_sink_s {
  void *impl;
  const cm_sink_ops_t *ops;
  const char *kind;
  char name[512];
};

bool cm_sink_is_postgres(const char *db) {
  const char *p = db;
  if (db == NULL) return false;
  if (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0) return true;
  /* A libpq keyword string starts with a keyword and '=' ("host=..."); a
   * path with '=' further on ("/data/a=b.db") is still a file. */
  while (*p == ' ' || *p == '\t') p++;
  if (!((*p >= 'a' && *p <= 'z') || *p == '_')) return false;
  while ((*p >= 'a' && *p <= 'z') || *p == '_') p++;
  while (*p == ' ' || *p == '\t') p++;
  return *p == '=';
}

int cm_sink_open(cm_sink_t **out, const cm_sink_opts_t *opts, char *err, size_t errlen) {
  cm_sink_t *s;
  int rc;
  *out = NULL;
  if (opts == NULL || opts->db == NULL || opts->db[0] == '\0') {
    cm_set_err(err, errlen, "no results database given (--db)");
    return -EINVAL;
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    cm_set_err(err, errlen, "out of memory");
    return -ENOMEM;
  }
  if (cm_sink_is_postgres(opts->db)) {
    s->kind = "postgres";
    cm_sink_redact(opts->db, s->name, sizeof(s->name));
    rc = cm_sink_pg_open(&s->impl, &s->ops, opts, err, errlen);
  } else {
    s->kind = "sqlite";
    snprintf(s->name, sizeof(s->name), "%s", opts->db);
    rc = cm_sink_sqlite_open(&s->impl, &s->ops, opts, err, errlen);
  }
  if (rc != 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void cm_sink_close(cm_sink_t *s) {
  if (s == NULL) return;
  s->ops->close(s->impl);
  free(s);
}

const char *cm_sink_name(const cm_sink_t *s) { return s->name; }
const char *cm_sink_kind(const cm_sink_t *s) { return s->kind; }

int cm_sink_save_batch(cm_sink_t *s, cm_sink_item_t *items, size_t n) {
  return s->ops->save_batch(s->impl, items, n);
}

const char *cm_sink_batch_error(const cm_sink_item_t *items, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (items[i].status < 0 && items[i].temporary && items[i].err[0]) return items[i].err;
  return "commit failed";
}

void cm_sink_check(cm_sink_t *s) { s->ops->check(s->impl); }

bool cm_sink_health(cm_sink_t *s, char *why, size_t whylen) {
  return s->ops->health(s->impl, why, whylen);
}

int cm_sink_query(cm_sink_t *s, const char *sql, char *out, size_t outlen, char *err,
                  size_t errlen) {
  return s->ops->query(s->impl, sql, out, outlen, err, errlen);
}

/* ---- redaction ----------------------------------------------------------- */

/* Copies src[0..n) to out at *o, bounded. */
static void put(char *out, size_t outlen, size_t *o, const char *src, size_t n) {
  while (n-- > 0 && *o + 1 < outlen) out[(*o)++] = *src++;
  out[*o < outlen ? *o : outlen - 1] = '\0';
}

/* A URL: postgresql://user:SECRET@host/db?password=SECRET&x=y */
static void redact_url(const char *db, char *out, size_t outlen) {
  const char *p = strstr(db, "://") + 3;
  const char *auth_end = p + strcspn(p, "/?#");
  const char *at = NULL, *q;
  size_t o = 0;
  for (q = p; q < auth_end; q++)
    if (*q == '@') at = q;
  if (at != NULL) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon != NULL) {
      put(out, outlen, &o, db, (size_t)(colon + 1 - db));
      put(out, outlen, &o, "***", 3);
      p = at;
    }
  }
  if (o == 0) p = db;
  /* The rest, with password=... in the query replaced. */
  for (q = p; *q;) {
    if (q > db && (q[-1] == '?' || q[-1] == '&') && strncmp(q, "password=", 9) == 0) {
      put(out, outlen, &o, "password=***", 12);
      q += 9;
      q += strcspn(q, "&#");
      continue;
    }
    put(out, outlen, &o, q, 1);
    q++;
  }
}

/* A keyword string: host=h password=SECRET or password = 'se cret' */
static void redact_kv(const char *db, char *out, size_t outlen) {
  const char *q = db;
  size_t o = 0;
  while (*q) {
    bool word_start = q == db || q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n';
    if (word_start && strncmp(q, "password", 8) == 0) {
      const char *v = q + 8;
      while (*v == ' ' || *v == '\t') v++;
      if (*v == '=') {
        v++;
        while (*v == ' ' || *v == '\t') v++;
        put(out, outlen, &o, "password=***", 12);
        if (*v == '\'') {
          for (v++; *v && *v != '\''; v++)
            if (*v == '\\' && v[1]) v++;
          if (*v == '\'') v++;
        } else {
          while (*v && *v != ' ' && *v != '\t' && *v != '\n') {
            if (*v == '\\' && v[1]) v++;
            v++;
          }
        }
        q = v;
        continue;
      }
    }
    put(out, outlen, &o, q, 1);
    q++;
  }
}

void cm_sink_redact(const char *db, char *out, size_t outlen) {
  if (outlen == 0) return;
  out[0] = '\0';
  if (db == NULL) return;
  if (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0)
    redact_url(db, out, outlen);
  else if (strchr(db, '=') != NULL)
    redact_kv(db, out, outlen);
  else
    snprintf(out, outlen, "%s", db);
}
