/* buf.h - a growable byte buffer with a hard maximum.
 *
 * The struct is public so callers can embed it. Every append fails with
 * -E2BIG instead of growing past `max` (STYLE: every buffer has a maximum).
 * The data is always NUL-terminated (not counted in len) so it can be used
 * as a C string. */
#ifndef CM_BUF_H
#define CM_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cm_buf_s {
  char *data; /* owned; NULL until the first append */
  size_t len;
  size_t cap;
  size_t max; /* hard limit on len */
} cm_buf_t;

void cm_buf_init(cm_buf_t *b, size_t max);
void cm_buf_free(cm_buf_t *b); /* frees data, keeps max; NULL-safe */
void cm_buf_reset(cm_buf_t *b); /* len = 0, keeps memory */
/* 0, -ENOMEM, or -E2BIG (would exceed max; buffer unchanged). */
int cm_buf_reserve(cm_buf_t *b, size_t extra) __attribute__((warn_unused_result));
int cm_buf_append(cm_buf_t *b, const void *p, size_t n) __attribute__((warn_unused_result));
int cm_buf_puts(cm_buf_t *b, const char *s) __attribute__((warn_unused_result));
int cm_buf_printf(cm_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), warn_unused_result));
int cm_buf_vprintf(cm_buf_t *b, const char *fmt, va_list ap) __attribute__((warn_unused_result));
/* Appends `s` (n bytes) as a JSON string literal, quoted and escaped. */
int cm_buf_append_json_str(cm_buf_t *b, const char *s, size_t n) __attribute__((warn_unused_result));

#endif
