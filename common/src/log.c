/* log.c - one JSON object per line, each written with a single write(2).
 *
 * No allocation: the line is built in stack buffers so logging keeps working
 * when memory is short and from any thread (NATS callbacks, thread pool). */
#include "cm/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cm/buf.h"

/* Longest message kept (bytes of escaped JSON); longer ones are cut at a
 * character boundary and the line gets "truncated":true. */
#define CM_LOG_MSG_MAX 8192
/* daemon and id are short labels; longer ones are cut. */
#define CM_LOG_LABEL_MAX 128
/* Everything around the message: ts, level, escaped labels, keys. */
#define CM_LOG_LINE_MAX (CM_LOG_MSG_MAX + 2 * 6 * CM_LOG_LABEL_MAX + 256)

cm_log_level_t cm__log_level = CM_LOG_INFO;

/* Set once at start-up (cm_log_init) before threads exist; read-only later. */
static char log_daemon[CM_LOG_LABEL_MAX];
static char log_id[CM_LOG_LABEL_MAX];
/* Atomic because tests switch it while other threads may log. */
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static void copy_label(char *dst, const char *src) {
  size_t n = src != NULL ? strnlen(src, CM_LOG_LABEL_MAX - 1) : 0;
  if (n > 0) memcpy(dst, src, n);
  dst[n] = '\0';
}

void cm_log_init(const char *daemon, const char *id, cm_log_level_t level) {
  copy_label(log_daemon, daemon);
  copy_label(log_id, id);
  if (level >= CM_LOG_DEBUG && level <= CM_LOG_ERROR) cm__log_level = level;
}

int cm_log_level_parse(const char *s, cm_log_level_t *out) {
  if (s == NULL) return -EINVAL;
  for (int i = 0; i <= CM_LOG_ERROR; i++) {
    if (strcasecmp(s, level_names[i]) == 0) {
      *out = (cm_log_level_t)i;
      return 0;
    }
  }
  /* Accept the common long spelling too; operators type it. */
  if (strcasecmp(s, "warning") == 0) {
    *out = CM_LOG_WARN;
    return 0;
  }
  return -EINVAL;
}

void cm_log_set_fd(int fd) { atomic_store(&log_fd, fd); }

/* Appends raw text; the caller sized the buffer so this cannot overflow, but
 * stay bounded anyway. */
static void put(char *line, size_t *o, const char *s, size_t n) {
  if (n > CM_LOG_LINE_MAX - *o) n = CM_LOG_LINE_MAX - *o;
  memcpy(line + *o, s, n);
  *o += n;
}

static void put_str(char *line, size_t *o, const char *s) { put(line, o, s, strlen(s)); }

static void put_json(char *line, size_t *o, const char *s, size_t n, size_t cap, int *cut) {
  size_t used = 0;
  if (cap > CM_LOG_LINE_MAX - *o) cap = CM_LOG_LINE_MAX - *o;
  *o += cm_buf_json_escape(line + *o, cap, s, n, &used);
  if (cut != NULL && used < n) *cut = 1;
}

static void write_all(int fd, const char *p, size_t n) {
  /* One write(2) per line: atomic on pipes up to PIPE_BUF, and in practice on
   * files opened O_APPEND. Retry only what a signal or a short write left. */
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return; /* nowhere left to report it */
    }
    p += w;
    n -= (size_t)w;
  }
}

void cm_log_write(cm_log_level_t lvl, const char *fmt, ...) {
  char msg[CM_LOG_MSG_MAX + 1];
  char line[CM_LOG_LINE_MAX];
  char ts[40];
  size_t o = 0;
  int cut = 0;
  int saved_errno = errno; /* callers often log right before using errno */

  if (lvl < CM_LOG_DEBUG || lvl > CM_LOG_ERROR) lvl = CM_LOG_ERROR;

  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  size_t mlen;
  if (n < 0) {
    mlen = 0;
    cut = 1;
  } else if ((size_t)n >= sizeof msg) {
    mlen = sizeof msg - 1;
    cut = 1;
  } else {
    mlen = (size_t)n;
  }

  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tl, sizeof ts - tl, ".%03ldZ", (long)(now.tv_nsec / 1000000));

  put_str(line, &o, "{\"ts\":\"");
  put_str(line, &o, ts);
  put_str(line, &o, "\",\"level\":\"");
  put_str(line, &o, level_names[lvl]);
  put_str(line, &o, "\",\"daemon\":\"");
  put_json(line, &o, log_daemon, strlen(log_daemon), 6 * CM_LOG_LABEL_MAX, NULL);
  put_str(line, &o, "\",\"id\":\"");
  put_json(line, &o, log_id, strlen(log_id), 6 * CM_LOG_LABEL_MAX, NULL);
  put_str(line, &o, "\",\"msg\":\"");
  put_json(line, &o, msg, mlen, CM_LOG_MSG_MAX, &cut);
  put_str(line, &o, cut ? "\",\"truncated\":true}\n" : "\"}\n");

  write_all(atomic_load(&log_fd), line, o);
  errno = saved_errno;
}
