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
/* Appends `s` (n bytes) as a JSON string literal, quoted and escaped:
 * `"` `\\` and control characters are escaped, valid UTF-8 is copied as is,
 * every byte that is not part of valid UTF-8 becomes \ufffd. All or nothing:
 * on -E2BIG/-ENOMEM the buffer is unchanged. */
int cm_buf_append_json_str(cm_buf_t *b, const char *s, size_t n) __attribute__((warn_unused_result));

/* The escaper behind cm_buf_append_json_str, for callers that must not
 * allocate (the logger): escapes s[0..n) into dst[0..cap) without quotes or
 * NUL, never splitting an escape sequence or a UTF-8 character. Returns the
 * bytes written; *used (may be NULL) gets the input bytes consumed (< n when
 * dst was too small). dst NULL: only measures (cap ignored). */
size_t cm_buf_json_escape(char *dst, size_t cap, const char *s, size_t n, size_t *used);

#endif
