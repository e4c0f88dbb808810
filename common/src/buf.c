/* buf.c - growable byte buffer with a hard maximum (see cm/buf.h). */
#include "cm/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Smallest first allocation: avoids a realloc per byte for tiny appends. */
#define CM_BUF_MIN_CAP 64

void cm_buf_init(cm_buf_t *b, size_t max) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

void cm_buf_free(cm_buf_t *b) {
  if (b == NULL) return;
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void cm_buf_reset(cm_buf_t *b) {
  b->len = 0;
  if (b->data != NULL) b->data[0] = '\0';
}

int cm_buf_reserve(cm_buf_t *b, size_t extra) {
  /* cap always leaves room for the terminating NUL, so len + extra + 1. */
  if (extra > b->max || b->len > b->max - extra) return -E2BIG;
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;

  /* Double to keep appends amortised O(1), but never allocate more than the
   * maximum can ever use. */
  size_t ncap = b->cap < CM_BUF_MIN_CAP ? CM_BUF_MIN_CAP : b->cap;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2) {
      ncap = need;
      break;
    }
    ncap *= 2;
  }
  if (ncap > b->max + 1) ncap = b->max + 1;
  if (ncap < need) ncap = need;

  char *p = realloc(b->data, ncap);
  if (p == NULL) return -ENOMEM;
  if (b->data == NULL) p[0] = '\0';
  b->data = p;
  b->cap = ncap;
  return 0;
}

int cm_buf_append(cm_buf_t *b, const void *p, size_t n) {
  int rc = cm_buf_reserve(b, n);
  if (rc < 0) return rc;
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int cm_buf_puts(cm_buf_t *b, const char *s) { return cm_buf_append(b, s, strlen(s)); }

int cm_buf_vprintf(cm_buf_t *b, const char *fmt, va_list ap) {
  va_list ap2;
  int rc = 0;

  /* First try into the space already there; most calls fit. */
  size_t room = b->cap > b->len ? b->cap - b->len : 0;
  va_copy(ap2, ap);
  int n = vsnprintf(room > 0 ? b->data + b->len : NULL, room, fmt, ap2);
  va_end(ap2);
  if (n < 0) return -EINVAL;
  if ((size_t)n < room) {
    if ((size_t)n > b->max - b->len) goto too_big; /* fitted in cap, not in max */
    b->len += (size_t)n;
    return 0;
  }

  rc = cm_buf_reserve(b, (size_t)n);
  if (rc < 0) goto fail;
  va_copy(ap2, ap);
  n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
  va_end(ap2);
  if (n < 0) {
    rc = -EINVAL;
    goto fail;
  }
  b->len += (size_t)n;
  return 0;

too_big:
  rc = -E2BIG;
fail:
  /* vsnprintf may have written past len: restore the terminator. */
  if (b->data != NULL) b->data[b->len] = '\0';
  return rc;
}

int cm_buf_printf(cm_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = cm_buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

/* Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 if the
 * bytes there are not valid UTF-8 (overlong forms, surrogates, > U+10FFFF,
 * truncated sequences). Follows the table in RFC 3629 section 4. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

size_t cm_buf_json_escape(char *dst, size_t cap, const char *s, size_t n, size_t *used) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, o = 0;

  while (i < n) {
    char esc[8];
    const char *out = esc;
    size_t olen, ilen = 1;
    unsigned char c = u[i];

    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      olen = 2;
    } else if (c < 0x20 || c == 0x7f) {
      esc[0] = '\\';
      olen = 2;
      switch (c) {
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      default:
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 0xf];
        olen = 6;
      }
    } else if (c < 0x80) {
      out = (const char *)&u[i];
      olen = 1;
    } else {
      ilen = utf8_seq_len(&u[i], n - i);
      if (ilen == 0) {
        /* Invalid byte: replace it alone so the rest can resync, and spell the
         * replacement as an escape so the output stays plain ASCII here. */
        out = "\\ufffd";
        olen = 6;
        ilen = 1;
      } else {
        out = (const char *)&u[i];
        olen = ilen;
      }
    }

    if (dst != NULL) {
      if (olen > cap - o) break;
      memcpy(dst + o, out, olen);
    }
    o += olen;
    i += ilen;
  }
  if (used != NULL) *used = i;
  return o;
}

int cm_buf_append_json_str(cm_buf_t *b, const char *s, size_t n) {
  /* Measure first so the append is all or nothing. */
  size_t elen = cm_buf_json_escape(NULL, 0, s, n, NULL);
  if (elen > SIZE_MAX - 2) return -E2BIG;
  int rc = cm_buf_reserve(b, elen + 2);
  if (rc < 0) return rc;
  char *p = b->data + b->len;
  p[0] = '"';
  (void)cm_buf_json_escape(p + 1, elen, s, n, NULL);
  p[1 + elen] = '"';
  b->len += elen + 2;
  b->data[b->len] = '\0';
  return 0;
}
