/* source_file.c - the file:PATH source (source.h): read through a fixed
 * 64 KiB buffer; a record is assembled in a buffer capped at max_record
 * (16 MiB by default), so memory does not depend on the size of the file.
 * NDJSON or one JSON array, decided by the first non-blank byte. file:-
 * reads stdin (not resumable). */
#include "source_impl.h"

#include "cm/chunk.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CM__RBUF_SIZE (64 * 1024)
#define CM__MAX_RECORD_DEFAULT ((size_t)16 * 1024 * 1024)
#define CM__RAW_MAX 1024 /* bytes of a bad record echoed back */

/* JSON array reader states. */
enum {
  CM__A_START, /* before '[' */
  CM__A_FIRST, /* after '[': a value or ']' */
  CM__A_ELEM,  /* after ',': a value */
  CM__A_IN,    /* inside a value */
  CM__A_SEP,   /* after a value: ',' or ']' */
  CM__A_DONE,  /* after ']': only blanks */
};

typedef struct cm__file_s {
  uint32_t chunk_size;
  char *spec_path; /* as given, for messages */
  int fd;
  bool is_stdin;
  bool array;
  int astate;
  char *rbuf;   /* CM__RBUF_SIZE bytes */
  size_t rlen;  /* valid bytes in rbuf */
  size_t rpos;  /* next unread byte in rbuf */
  int64_t off;  /* file offset of rbuf[0] */
  bool eof;
  cm_buf_t rec; /* the record being assembled, <= max_record */
  size_t max_record;
  uint64_t line; /* NDJSON: lines consumed; array: values consumed */
  /* position inside a value of the array */
  uint64_t depth;
  bool in_str, esc;
} cm__file_t;

static bool cm__blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int cm__fill(cm__file_t *s);

/* Skips leading blanks (counting blank lines) and picks the format. */
static int cm__detect(cm__file_t *s) {
  for (;;) {
    int n = cm__fill(s);
    if (n <= 0) return n; /* empty file: NDJSON with no lines */
    char c = s->rbuf[s->rpos];
    if (!cm__blank(c)) {
      s->array = c == '[';
      s->astate = CM__A_START;
      if (s->array) s->line = 0; /* counts values, not lines */
      return 0;
    }
    if (c == '\n') s->line++;
    s->rpos++;
  }
}

/* Opens path into s (already zeroed, fd -1); *desc gets the description. */
static int cm__open_file(cm__file_t *s, const cm_source_opts_t *o, const char *path, char **desc,
                         char *err, size_t errlen) {
  struct stat sb;
  char *real = NULL;
  int ret = 0;
  s->fd = -1;
  s->max_record = CM__MAX_RECORD_DEFAULT;
  cm_buf_init(&s->rec, s->max_record);
  if (!(s->spec_path = cm_source_strdup(path)) || !(s->rbuf = malloc(CM__RBUF_SIZE))) goto nomem;
  if (strcmp(path, "-") == 0) {
    /* stdin: read once, cannot be resumed (seek fails unless it is to the
     * current position), and its description carries no identity. */
    s->is_stdin = true;
    s->fd = STDIN_FILENO;
    if (!(*desc = cm_source_fmt("file:- chunk=%u", o->chunk_size))) goto nomem;
  } else {
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0 || fstat(s->fd, &sb) < 0) {
      ret = -errno;
      snprintf(err, errlen, "file:%s: %s", path, strerror(errno));
      goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
      ret = -EISDIR;
      snprintf(err, errlen, "file:%s: %s", path, strerror(EISDIR));
      goto fail;
    }
    /* Identity for the ledger: the absolute path (a relative one would
     * change with the working directory), size and mtime (a changed file
     * must not be resumed at an old byte offset). */
    real = realpath(path, NULL);
    *desc = cm_source_fmt("file:%s size=%lld mtime=%lld.%09ld chunk=%u", real ? real : path,
                      (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                      (long)sb.st_mtim.tv_nsec, o->chunk_size);
    if (!*desc) goto nomem;
  }
  if ((ret = cm__detect(s)) < 0) {
    snprintf(err, errlen, "file:%s: %s", path, strerror(-ret));
    goto fail;
  }
  free(real);
  return 0;
nomem:
  ret = -ENOMEM;
  snprintf(err, errlen, "file:%s: out of memory", path);
fail:
  free(real);
  return ret;
}

/* ---- file: reading ----------------------------------------------------- */

/* Bytes available at rpos (refilling when empty), 0 at EOF, or -errno. */
static int cm__fill(cm__file_t *s) {
  ssize_t n;
  if (s->rpos < s->rlen) return (int)(s->rlen - s->rpos);
  if (s->eof) return 0;
  s->off += (int64_t)s->rlen;
  s->rpos = s->rlen = 0;
  do
    n = read(s->fd, s->rbuf, CM__RBUF_SIZE);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (n == 0) {
    s->eof = true;
    return 0;
  }
  s->rlen = (size_t)n;
  /* A UTF-8 byte order mark is not JSON; editors on some systems add it. */
  if (s->off == 0 && s->rlen >= 3 && memcmp(s->rbuf, "\xEF\xBB\xBF", 3) == 0) s->rpos = 3;
  return (int)(s->rlen - s->rpos);
}

static int64_t cm__tell(const cm__file_t *s) { return s->off + (int64_t)s->rpos; }

static int cm__rec_append(cm__file_t *s, const char *p, size_t n, char *err, size_t errlen) {
  if (n > s->max_record - s->rec.len) {
    snprintf(err, errlen, "file:%s: %s %llu is longer than the maximum record size (%zu bytes)",
             s->spec_path, s->array ? "array value" : "line", (unsigned long long)s->line + 1,
             s->max_record);
    return -E2BIG;
  }
  int rc = cm_buf_append(&s->rec, p, n);
  if (rc < 0) snprintf(err, errlen, "file:%s: out of memory", s->spec_path);
  return rc;
}

static int cm__read_error(cm__file_t *s, int rc, char *err, size_t errlen) {
  snprintf(err, errlen, "file:%s: read: %s", s->spec_path, strerror(-rc));
  return rc;
}

/* The next line (without '\n') into rec: 1, 0 at EOF, or -errno. */
static int cm__read_line(cm__file_t *s, char *err, size_t errlen) {
  bool any = false;
  cm_buf_reset(&s->rec);
  for (;;) {
    int n = cm__fill(s);
    if (n < 0) return cm__read_error(s, n, err, errlen);
    if (n == 0) return any ? 1 : 0;
    const char *p = s->rbuf + s->rpos;
    const char *nl = memchr(p, '\n', (size_t)n);
    size_t take = nl ? (size_t)(nl - p) : (size_t)n;
    int rc = cm__rec_append(s, p, take, err, errlen);
    if (rc < 0) return rc;
    any = true;
    s->rpos += take + (nl ? 1 : 0);
    if (nl) return 1;
  }
}

static int cm__syntax(cm__file_t *s, const char *what, char *err, size_t errlen) {
  snprintf(err, errlen, "file:%s: JSON array syntax error at byte %lld: %s", s->spec_path,
           (long long)cm__tell(s), what);
  return -EBADMSG;
}

/* The next value of the array into rec: 1, 0 after ']', or -errno. Values
 * are split, not parsed: brackets are counted outside strings, so a value
 * that is not valid JSON is still cut at the right place and reported as a
 * bad record; only a broken structure (EOF inside a value, a stray '}') is
 * fatal, because the rest cannot be split reliably. */
static int cm__read_value(cm__file_t *s, char *err, size_t errlen) {
  cm_buf_reset(&s->rec);
  for (;;) {
    int n = cm__fill(s);
    if (n < 0) return cm__read_error(s, n, err, errlen);
    if (n == 0) {
      if (s->astate == CM__A_DONE) return 0;
      return cm__syntax(s, s->astate == CM__A_START ? "expected '['" : "unexpected end of input",
                        err, errlen);
    }
    char c = s->rbuf[s->rpos];
    if (s->astate != CM__A_IN && cm__blank(c)) {
      s->rpos++;
      continue;
    }
    switch (s->astate) {
    case CM__A_START:
      if (c != '[') return cm__syntax(s, "expected '['", err, errlen);
      s->astate = CM__A_FIRST;
      s->rpos++;
      continue;
    case CM__A_SEP:
      if (c == ',') s->astate = CM__A_ELEM;
      else if (c == ']') s->astate = CM__A_DONE;
      else return cm__syntax(s, "expected ',' or ']'", err, errlen);
      s->rpos++;
      continue;
    case CM__A_DONE:
      return cm__syntax(s, "unexpected data after the array", err, errlen);
    case CM__A_FIRST:
    case CM__A_ELEM:
      if (c == ']' && s->astate == CM__A_FIRST) {
        s->astate = CM__A_DONE;
        s->rpos++;
        continue;
      }
      if (c == ',' || c == ']') return cm__syntax(s, "expected a value", err, errlen);
      s->astate = CM__A_IN;
      s->depth = 0;
      s->in_str = s->esc = false;
      break;
    default:
      break;
    }
    /* CM__A_IN: scan to the ',' or ']' that ends the value at depth 0 */
    const char *p = s->rbuf + s->rpos;
    size_t i = 0;
    bool end = false;
    for (; i < (size_t)n && !end; i++) {
      char b = p[i];
      if (s->in_str) {
        if (s->esc) s->esc = false;
        else if (b == '\\') s->esc = true;
        else if (b == '"') s->in_str = false;
      } else if (b == '"') {
        s->in_str = true;
      } else if (b == '[' || b == '{') {
        s->depth++;
      } else if (b == ']' || b == '}' || b == ',') {
        if (s->depth == 0) {
          if (b == '}') {
            s->rpos += i;
            return cm__syntax(s, "unbalanced '}'", err, errlen);
          }
          end = true;
          i--; /* the separator is not part of the value */
        } else if (b != ',') {
          s->depth--;
        }
      }
    }
    int rc = cm__rec_append(s, p, i, err, errlen);
    if (rc < 0) return rc;
    s->rpos += i;
    if (end) {
      s->astate = CM__A_SEP;
      return 1;
    }
  }
}

/* ---- file: records ----------------------------------------------------- */

static bool cm__valid_json(const char *p, size_t n) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(p, n, &end, 0);
  if (!j) return false;
  cJSON_Delete(j);
  /* cJSON stops after the first value; "1 2" must not pass as 1 */
  for (const char *q = end; q < p + n; q++)
    if (!cm__blank(*q)) return false;
  return true;
}

/* Appends the first CM__RAW_MAX bytes of a bad record as a JSON string,
 * cut at a character boundary (cm_buf_append_json_str escapes controls and
 * replaces invalid UTF-8, so any input gives valid JSON). */
static int cm__append_raw(cm_buf_t *b, const char *s, size_t n) {
  size_t lim = n;
  if (lim > CM__RAW_MAX) {
    lim = CM__RAW_MAX;
    while (lim > 0 && ((unsigned char)s[lim] & 0xc0) == 0x80) lim--;
  }
  return cm_buf_append_json_str(b, s, lim);
}

static int cm__emit_bad(cm_buf_t *bad, bool first, uint64_t line, const char *p, size_t n,
                        const char *reason) {
  int rc = cm_buf_printf(bad, "%s{\"line\":%llu,\"reason\":\"%s\",\"raw\":",
                         first ? "" : ",", (unsigned long long)line, reason);
  if (rc == 0) rc = cm__append_raw(bad, p, n);
  if (rc == 0) rc = cm_buf_append(bad, "}", 1);
  return rc;
}

static int cm__file_next(void *impl, cm_buf_t *out, uint32_t *nrec, cm_buf_t *bad,
                         uint32_t *nbad, int64_t *pos, char *err, size_t errlen) {
  cm__file_t *s = impl;
  uint32_t got = 0;
  int rc = 0;
  *nrec = *nbad = 0;
  if (errlen) err[0] = '\0';
  while (got < s->chunk_size) {
    rc = s->array ? cm__read_value(s, err, errlen) : cm__read_line(s, err, errlen);
    if (rc < 0) return rc;
    if (rc == 0) break;
    rc = 0;
    s->line++;
    const char *p = s->rec.data ? s->rec.data : "";
    size_t n = s->rec.len;
    while (n && cm__blank(*p)) p++, n--;
    while (n && cm__blank(p[n - 1])) n--;
    if (n == 0) continue; /* blank NDJSON line: not a record */
    got++;
    size_t ubad = cm_utf8_check(p, n);
    if (ubad != n) {
      /* JSON text is UTF-8 (RFC 8259): a record that is not is a dead
       * letter here, with where it goes wrong. */
      char why[64];
      snprintf(why, sizeof(why), "not valid UTF-8 (byte %zu)", ubad);
      rc = cm__emit_bad(bad, *nbad == 0, s->line, p, n, why);
      if (rc == 0) (*nbad)++;
    } else if (cm__valid_json(p, n)) {
      if (*nrec) rc = cm_buf_append(out, ",", 1);
      if (rc == 0) rc = cm_buf_append(out, p, n);
      if (rc == 0) (*nrec)++;
    } else {
      rc = cm__emit_bad(bad, *nbad == 0, s->line, p, n, "invalid JSON");
      if (rc == 0) (*nbad)++;
    }
    if (rc < 0) {
      snprintf(err, errlen, "file:%s: record %llu does not fit the chunk buffer: %s",
               s->spec_path, (unsigned long long)s->line, strerror(-rc));
      return rc;
    }
  }
  *pos = cm__tell(s);
  return got ? 0 : 1;
}

static int cm__file_seek(cm__file_t *s, int64_t pos, uint64_t line) {
  if (pos < 0) return -EINVAL;
  if (s->is_stdin) {
    /* a pipe only goes forward: "resuming" where we already are is fine */
    if (pos != cm__tell(s)) return -ESPIPE;
    s->line = line;
    return 0;
  }
  if (lseek(s->fd, (off_t)pos, SEEK_SET) < 0) return -errno;
  s->off = pos;
  s->rpos = s->rlen = 0;
  s->eof = false;
  s->line = line;
  cm_buf_reset(&s->rec);
  /* Chunks end right after a value, so a resume point inside an array is
   * always followed by ',' or ']'. */
  s->astate = pos == 0 ? CM__A_START : CM__A_SEP;
  s->depth = 0;
  s->in_str = s->esc = false;
  return 0;
}

static void cm__file_close(void *impl) {
  cm__file_t *s = impl;
  if (!s) return;
  if (s->fd >= 0 && !s->is_stdin) close(s->fd);
  cm_buf_free(&s->rec);
  free(s->rbuf);
  free(s->spec_path);
  free(s);
}

static int cm__file_open_ops(void **impl, char **desc, const cm_source_opts_t *o, char *err,
                             size_t errlen) {
  cm__file_t *s;
  int ret;
  if (o->spec[5] == '\0') return cm_source_unknown(o->spec, err, errlen);
  if (!(s = calloc(1, sizeof *s))) {
    snprintf(err, errlen, "source %s: out of memory", o->spec);
    return -ENOMEM;
  }
  s->chunk_size = o->chunk_size;
  s->fd = -1;
  if ((ret = cm__open_file(s, o, o->spec + 5, desc, err, errlen)) < 0) {
    free(*desc);
    *desc = NULL;
    cm__file_close(s);
    return ret;
  }
  *impl = s;
  return 0;
}

static uint64_t cm__file_line(const void *impl) { return ((const cm__file_t *)impl)->line; }

static int cm__file_resume(void *impl, int64_t pos, uint64_t line, const char *cursor) {
  (void)cursor;
  return cm__file_seek(impl, pos, line);
}

static int cm__file_set_max_record(void *impl, size_t bytes) {
  cm__file_t *s = impl;
  s->max_record = bytes;
  s->rec.max = bytes;
  return 0;
}

const cm_source_ops_t cm_source_file_ops = {
    .open = cm__file_open_ops,
    .close = cm__file_close,
    .next = cm__file_next,
    .line = cm__file_line,
    .resume = cm__file_resume,
    .set_max_record = cm__file_set_max_record,
};
