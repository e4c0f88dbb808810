/* source.c - the front of the sources (source.h): a registration table
 * maps a spec's prefix to its kind's ops (source_impl.h), and every public
 * function dispatches to them. Adding a source means one file with its ops
 * and one line in cm__kinds. */
#include "source.h"
#include "source_impl.h"

#include "cm/redact.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cm_source_s {
  const cm_source_ops_t *ops;
  void *impl;
  char *desc;
};

/* spec prefix -> kind. */
static const struct {
  const char *prefix;
  const cm_source_ops_t *ops;
} cm__kinds[] = {
    {"gen:", &cm_source_gen_ops},
    {"file:", &cm_source_file_ops},
    {"http:", &cm_source_http_ops},
    {"https:", &cm_source_http_ops},
};

int cm_source_unknown(const char *spec, char *err, size_t errlen) {
  char shown[1024];
  snprintf(err, errlen,
           "unknown source \"%s\": expected gen:users, file:PATH, file:- or http(s)://URL",
           cm_redact_urls(spec, shown, sizeof(shown)));
  return -EINVAL;
}

char *cm_source_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

char *cm_source_fmt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *p = n < 0 ? NULL : malloc((size_t)n + 1);
  if (!p) return NULL;
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

int cm_source_open(cm_source_t **out, const cm_source_opts_t *o, char *err, size_t errlen) {
  cm_source_t *s = NULL;
  const cm_source_ops_t *ops = NULL;
  int ret;
  *out = NULL;
  if (errlen) err[0] = '\0';
  if (!o || !o->spec) {
    snprintf(err, errlen, "no source given: expected gen:users or file:PATH");
    return -EINVAL;
  }
  if (o->chunk_size == 0) {
    snprintf(err, errlen, "source %s: chunk size must be at least 1", o->spec);
    return -EINVAL;
  }
  for (size_t i = 0; i < sizeof cm__kinds / sizeof cm__kinds[0] && !ops; i++)
    if (strncmp(o->spec, cm__kinds[i].prefix, strlen(cm__kinds[i].prefix)) == 0)
      ops = cm__kinds[i].ops;
  if (!ops) return cm_source_unknown(o->spec, err, errlen);
  if (!(s = calloc(1, sizeof *s))) {
    snprintf(err, errlen, "source %s: out of memory", o->spec);
    return -ENOMEM;
  }
  s->ops = ops;
  if ((ret = ops->open(&s->impl, &s->desc, o, err, errlen)) < 0) {
    free(s->desc);
    free(s);
    return ret;
  }
  *out = s;
  return 0;
}

void cm_source_close(cm_source_t *s) {
  if (!s) return;
  if (s->impl) s->ops->close(s->impl);
  free(s->desc);
  free(s);
}

const char *cm_source_describe(const cm_source_t *s) { return s->desc; }
bool cm_source_random_access(const cm_source_t *s) { return s->ops->random_access; }

int64_t cm_source_total_chunks(const cm_source_t *s) {
  return s->ops->total_chunks ? s->ops->total_chunks(s->impl) : -1;
}

int cm_source_chunk(cm_source_t *s, uint64_t index, cm_buf_t *out, uint32_t *nrec) {
  *nrec = 0;
  if (!s->ops->chunk) return -ENOTSUP;
  return s->ops->chunk(s->impl, index, out, nrec);
}

int cm_source_next(cm_source_t *s, cm_buf_t *out, uint32_t *nrec, cm_buf_t *bad, uint32_t *nbad,
                   int64_t *pos, char *err, size_t errlen) {
  *nrec = *nbad = 0;
  if (errlen) err[0] = '\0';
  if (!s->ops->next) {
    snprintf(err, errlen, "source %s is read by chunk index, not sequentially", s->desc);
    return -ENOTSUP;
  }
  return s->ops->next(s->impl, out, nrec, bad, nbad, pos, err, errlen);
}

uint64_t cm_source_line(const cm_source_t *s) {
  return s->ops->line ? s->ops->line(s->impl) : 0;
}

const char *cm_source_cursor(const cm_source_t *s) {
  return s->ops->cursor ? s->ops->cursor(s->impl) : NULL;
}

int cm_source_resume(cm_source_t *s, int64_t pos, uint64_t line, const char *cursor) {
  if (!s->ops->resume) return -ENOTSUP;
  return s->ops->resume(s->impl, pos, line, cursor);
}

int cm_source_seek(cm_source_t *s, int64_t pos, uint64_t line) {
  return cm_source_resume(s, pos, line, NULL);
}

int cm_source_set_max_record(cm_source_t *s, size_t bytes) {
  if (bytes == 0 || !s->ops->set_max_record) return -EINVAL;
  return s->ops->set_max_record(s->impl, bytes);
}
