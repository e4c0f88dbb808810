/* chunk.c - the JSON chunk codec: a one-pass header scanner, a validating
 * value-span scanner and a streaming encoder. No trees, no allocation. */
#include "cm/chunk.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Nesting limit of the span scanner: deeper input is rejected rather than
 * tracked, so the scanner needs no allocation and a fixed-size stack.
 * (SQLite's JSON1 stops at 2000, cJSON at 1000; real records use < 10.) */
#define CM_JSON_MAX_DEPTH 512

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static size_t skip_ws(const char *s, size_t len, size_t i) {
  while (i < len && is_ws(s[i])) i++;
  return i;
}

/* ---- span scanner ------------------------------------------------------ */

/* SWAR helpers: test 8 bytes at a time for the bytes that end the fast
 * path of a string (quote, backslash, control). As booleans these are
 * exact (bit tricks from "Bit Twiddling Hacks", public domain). */
#define CM_ONES UINT64_C(0x0101010101010101)
#define CM_HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t has_zero(uint64_t x) { return (x - CM_ONES) & ~x & CM_HIGHS; }
static inline uint64_t has_less(uint64_t x, unsigned n) {
  return (x - CM_ONES * n) & ~x & CM_HIGHS;
}

/* Index of the first byte at or after i that may end a plain run inside a
 * string: '"', '\\' or (when ctl) a byte < 0x20; len if none. */
static inline size_t string_run(const char *s, size_t len, size_t i, bool ctl) {
  while (i + 8 <= len) {
    uint64_t x;
    memcpy(&x, s + i, 8); /* unaligned-safe load */
    uint64_t hit = has_zero(x ^ (CM_ONES * '"')) | has_zero(x ^ (CM_ONES * '\\'));
    if (ctl) hit |= has_less(x, 0x20);
    if (hit) break;
    i += 8;
  }
  while (i < len) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\' || (ctl && c < 0x20)) break;
    i++;
  }
  return i;
}

/* Scans the string literal at s[i] == '"'. Returns the index just past the
 * closing quote, or (size_t)-1 with *why and *at set. */
static size_t scan_string(const char *s, size_t len, size_t i, size_t *at, const char **why) {
  size_t start = i++;
  for (;;) {
    /* Everything >= 0x20 but '"' and '\\' is taken verbatim (UTF-8 is
     * not checked: consumers copy it through). */
    i = string_run(s, len, i, true);
    if (i >= len) break;
    unsigned char c = (unsigned char)s[i];
    if (c == '"') return i + 1;
    if (c < 0x20) {
      *at = i;
      *why = "control character in string";
      return (size_t)-1;
    }
    /* backslash */
    if (i + 1 >= len) break;
    switch (s[i + 1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't': i += 2; break;
    case 'u':
      if (i + 6 > len) {
        i = len;
        break;
      }
      for (int k = 2; k < 6; k++) {
        if (hexval(s[i + k]) < 0) {
          *at = i;
          *why = "bad \\u escape in string";
          return (size_t)-1;
        }
      }
      i += 6;
      break;
    default:
      *at = i;
      *why = "bad escape in string";
      return (size_t)-1;
    }
  }
  *at = start;
  *why = "unterminated string";
  return (size_t)-1;
}

/* Number per RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static size_t scan_number(const char *s, size_t len, size_t i, size_t *at, const char **why) {
  size_t start = i;
  if (i < len && s[i] == '-') i++;
  if (i >= len || !is_digit(s[i])) goto bad;
  if (s[i] == '0') {
    i++;
  } else {
    while (i < len && is_digit(s[i])) i++;
  }
  if (i < len && s[i] == '.') {
    i++;
    if (i >= len || !is_digit(s[i])) goto bad;
    while (i < len && is_digit(s[i])) i++;
  }
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= len || !is_digit(s[i])) goto bad;
    while (i < len && is_digit(s[i])) i++;
  }
  return i;
bad:
  *at = start;
  *why = "malformed number";
  return (size_t)-1;
}

static size_t scan_literal(const char *s, size_t len, size_t i, size_t *at, const char **why) {
  static const char *const lits[] = {"true", "false", "null"};
  for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
    size_t n = strlen(lits[k]);
    if (len - i >= n && memcmp(s + i, lits[k], n) == 0) return i + n;
  }
  *at = i;
  *why = "unexpected character";
  return (size_t)-1;
}

/* Scans one scalar (string, number, literal) at s[i]. */
static size_t scan_scalar(const char *s, size_t len, size_t i, size_t *at, const char **why) {
  char c = s[i];
  if (c == '"') return scan_string(s, len, i, at, why);
  if (c == '-' || is_digit(c)) return scan_number(s, len, i, at, why);
  return scan_literal(s, len, i, at, why);
}

static size_t skip_ws_note(const char *s, size_t len, size_t i, bool *ws) {
  size_t j = skip_ws(s, len, i);
  if (j != i) *ws = true;
  return j;
}

/* The validator; *ws is set when whitespace occurs between tokens. */
static long span_scan(const char *s, size_t len, size_t *errpos, const char **why, bool *ws,
                      cm_json_elems_t *el) {
  /* Iterative with an explicit container stack (not recursion), so hostile
   * nesting costs a bounded, small amount of thread-pool stack. */
  char stack[CM_JSON_MAX_DEPTH];
  size_t depth = 0, i = 0, at = 0;
  const char *w = NULL;

  if (s == NULL || len == 0) {
    w = "unexpected end of input";
    goto fail;
  }
  if (len > (size_t)LONG_MAX) {
    w = "input too large";
    goto fail;
  }
  for (;;) {
    /* Expecting a value at s[i]. */
    if (i >= len) {
      at = i;
      w = "unexpected end of input";
      goto fail;
    }
    char c = s[i];
    if (depth == 1 && el != NULL) {
      /* An element of the outer array starts here. */
      if (el->n < el->cap)
        el->start[el->n] = (uint32_t)i;
      else
        el = NULL; /* too many: ok stays false, the caller splits by itself */
    }
    if (c == '{' || c == '[') {
      if (depth == CM_JSON_MAX_DEPTH) {
        at = i;
        w = "nesting too deep";
        goto fail;
      }
      stack[depth++] = c;
      i = skip_ws_note(s, len, i + 1, ws);
      if (i < len && s[i] == (c == '{' ? '}' : ']')) {
        depth--;
        i++;
        goto after_value;
      }
      if (c == '[') continue;
      goto object_key;
    }
    i = scan_scalar(s, len, i, &at, &w);
    if (i == (size_t)-1) goto fail;

  after_value:
    if (depth == 0) {
      if (el != NULL) el->ok = true;
      return (long)i;
    }
    if (depth == 1 && el != NULL) el->end[el->n++] = (uint32_t)i;
    i = skip_ws_note(s, len, i, ws);
    if (i >= len) {
      at = i;
      w = "unexpected end of input (unbalanced brackets)";
      goto fail;
    }
    if (s[i] == ',') {
      i = skip_ws_note(s, len, i + 1, ws);
      if (stack[depth - 1] == '[') continue;
      goto object_key;
    }
    if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
      depth--;
      i++;
      goto after_value;
    }
    at = i;
    w = stack[depth - 1] == '{' ? "expected ',' or '}' in object" : "expected ',' or ']' in array";
    goto fail;

  object_key:
    if (i >= len) {
      at = i;
      w = "unexpected end of input (unbalanced brackets)";
      goto fail;
    }
    if (s[i] != '"') {
      at = i;
      w = "expected a string key in object";
      goto fail;
    }
    i = scan_string(s, len, i, &at, &w);
    if (i == (size_t)-1) goto fail;
    i = skip_ws_note(s, len, i, ws);
    if (i >= len || s[i] != ':') {
      at = i;
      w = i >= len ? "unexpected end of input (unbalanced brackets)"
                   : "expected ':' after object key";
      goto fail;
    }
    i = skip_ws_note(s, len, i + 1, ws);
  }

fail:
  if (errpos) *errpos = at;
  if (why) *why = w;
  return -EINVAL;
}

long cm_json_value_span_why(const char *s, size_t len, size_t *errpos, const char **why) {
  bool ws = false;
  return span_scan(s, len, errpos, why, &ws, NULL);
}

long cm_json_value_span(const char *s, size_t len) {
  return cm_json_value_span_why(s, len, NULL, NULL);
}

long cm_json_value_skip(const char *s, size_t len) {
  /* Trusts the syntax (checked before by cm_json_value_span): tracks only
   * string boundaries and bracket depth, but never reads past len. */
  size_t i = 0, depth = 0;
  if (s == NULL || len == 0 || len > (size_t)LONG_MAX) return -EINVAL;
  if (s[0] != '{' && s[0] != '[' && s[0] != '"') {
    while (i < len && s[i] != ',' && s[i] != ']' && s[i] != '}' && !is_ws(s[i])) i++;
    return (long)i;
  }
  while (i < len) {
    char c = s[i];
    if (c == '"') {
      i++;
      for (;;) {
        i = string_run(s, len, i, false);
        if (i >= len) return -EINVAL;
        if (s[i] == '"') break;
        i += 2; /* backslash + the escaped byte (a \uXXXX's digits are plain) */
      }
      i++;
      if (depth == 0) return (long)i;
      continue;
    }
    if (c == '{' || c == '[') {
      depth++;
    } else if (c == '}' || c == ']') {
      if (depth == 0) return -EINVAL;
      if (--depth == 0) return (long)(i + 1);
    }
    i++;
  }
  return -EINVAL;
}

size_t cm_json_compact(const char *s, size_t len, char *out) {
  size_t i = 0, o = 0;
  while (i < len) {
    char c = s[i];
    if (is_ws(c)) {
      i++;
      continue;
    }
    if (c != '"') {
      if (out) out[o] = c;
      o++;
      i++;
      continue;
    }
    /* A string: copy through its closing quote (the input is valid, so
     * every backslash has a byte after it). */
    size_t start = i++;
    for (;;) {
      i = string_run(s, len, i, false);
      if (i >= len) break;
      if (s[i] == '"') {
        i++;
        break;
      }
      i += 2;
    }
    if (i > len) i = len;
    if (out) memcpy(out + o, s + start, i - start);
    o += i - start;
  }
  return o;
}

int cm_json_array_next(const char *arr, size_t len, size_t *pos, const char **elem,
                       size_t *elem_len) {
  size_t i = *pos;
  if (len < 2 || arr[0] != '[') return -EINVAL;
  if (i == 0) {
    /* First call: step over '[' and see whether the array is empty. */
    i = skip_ws(arr, len, 1);
    if (i < len && arr[i] == ']') {
      *pos = len;
      return 0;
    }
  } else {
    if (i >= len) return 0;
    i = skip_ws(arr, len, i);
    if (i < len && arr[i] == ']') {
      *pos = len;
      return 0;
    }
    if (i >= len || arr[i] != ',') return -EINVAL;
    i = skip_ws(arr, len, i + 1);
  }
  if (i >= len) return -EINVAL;
  long n = cm_json_value_skip(arr + i, len - i);
  if (n <= 0) return -EINVAL;
  *elem = arr + i;
  *elem_len = (size_t)n;
  *pos = i + (size_t)n;
  return 1;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0] (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return len >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (len < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
    if (c == 0xED && s[1] > 0x9F) return 0; /* surrogate */
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (len < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
      return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xF4 && s[1] > 0x8F) return 0; /* above U+10FFFF */
    return 4;
  }
  return 0;
}

size_t cm_utf8_check(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    if (u[i] < 0x80) {
      uint64_t x;
      i++;
      /* ASCII runs 8 bytes at a time. */
      while (i + 8 <= len && (memcpy(&x, u + i, 8), (x & CM_HIGHS) == 0)) i += 8;
      continue;
    }
    size_t n = utf8_seq(u + i, len - i);
    if (n == 0) return i;
    i += n;
  }
  return len;
}

bool cm_utf8_valid(const char *s, size_t len) { return cm_utf8_check(s, len) == len; }

/* ---- header scanner ---------------------------------------------------- */

static int fail_at(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -EINVAL;
}

static void put_utf8(char *dst, size_t *n, uint32_t cp) {
  if (cp < 0x80) {
    dst[(*n)++] = (char)cp;
  } else if (cp < 0x800) {
    dst[(*n)++] = (char)(0xC0 | (cp >> 6));
    dst[(*n)++] = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    dst[(*n)++] = (char)(0xE0 | (cp >> 12));
    dst[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[(*n)++] = (char)(0x80 | (cp & 0x3F));
  } else {
    dst[(*n)++] = (char)(0xF0 | (cp >> 18));
    dst[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[(*n)++] = (char)(0x80 | (cp & 0x3F));
  }
}

static uint32_t hex4(const char *p) {
  return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

long cm_json_unescape(const char *lit, size_t n, char *dst, size_t cap, int flags) {
  size_t o = 0;
  for (size_t i = 1; i + 1 < n;) {
    char c = lit[i];
    if (c != '\\') {
      if (o + 1 >= cap) return -E2BIG; /* keep room for the NUL */
      dst[o++] = c;
      i++;
      continue;
    }
    char e = lit[i + 1];
    uint32_t cp;
    i += 2;
    switch (e) {
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u':
      cp = hex4(lit + i);
      i += 4;
      if (cp >= 0xD800 && cp < 0xDC00) {
        /* A high surrogate must be followed by \uDC00..\uDFFF. */
        if (i + 6 > n - 1 || lit[i] != '\\' || lit[i + 1] != 'u') return -EINVAL;
        uint32_t lo = hex4(lit + i + 2);
        if (lo < 0xDC00 || lo >= 0xE000) return -EINVAL;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        i += 6;
      } else if (cp >= 0xDC00 && cp < 0xE000) {
        return -EINVAL;
      }
      if (cp == 0) {
        if (!(flags & CM_UNESCAPE_NUL_ENDS)) return -EINVAL;
        dst[o] = '\0'; /* the C string ends here */
        return (long)o;
      }
      break;
    default: cp = (unsigned char)e; break; /* '"', '\\', '/' */
    }
    size_t need = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (o + need >= cap) return -E2BIG;
    put_utf8(dst, &o, cp);
  }
  dst[o] = '\0';
  return (long)o;
}

/* Parses the unsigned integer literal lit[0..n) (digits only: no sign,
 * fraction or exponent) into *v. -EINVAL if not such a literal, -ERANGE if
 * above max. */
static int parse_uint(const char *lit, size_t n, uint64_t max, uint64_t *v) {
  uint64_t x = 0;
  if (n == 0) return -EINVAL;
  for (size_t k = 0; k < n; k++) {
    if (!is_digit(lit[k])) return -EINVAL;
    unsigned d = (unsigned)(lit[k] - '0');
    if (x > (max - d) / 10) return -ERANGE;
    x = x * 10 + d;
  }
  *v = x;
  return 0;
}

enum { K_JOB = 1, K_INDEX = 2, K_ATTEMPT = 4, K_DATA = 8, K_DEAD = 16, K_MAPPER = 32, K_LEASE = 64,
       K_VERSION = 128, K_REDO = 256 };
#define K_HDR3 (K_JOB | K_INDEX | K_ATTEMPT)
#define K_HDR6 (K_HDR3 | K_MAPPER | K_LEASE | K_VERSION | K_REDO)

static int key_id(const char *k, size_t n) {
  /* Keys are compared raw (between the quotes): an escaped spelling of a
   * known key is treated as an unknown key, which is skipped. */
  if (n == 3 && memcmp(k, "job", 3) == 0) return K_JOB;
  if (n == 5 && memcmp(k, "index", 5) == 0) return K_INDEX;
  if (n == 7 && memcmp(k, "attempt", 7) == 0) return K_ATTEMPT;
  if (n == 4 && memcmp(k, "data", 4) == 0) return K_DATA;
  if (n == 4 && memcmp(k, "dead", 4) == 0) return K_DEAD;
  if (n == 6 && memcmp(k, "mapper", 6) == 0) return K_MAPPER;
  if (n == 5 && memcmp(k, "lease", 5) == 0) return K_LEASE;
  if (n == 7 && memcmp(k, "version", 7) == 0) return K_VERSION;
  if (n == 4 && memcmp(k, "redo", 4) == 0) return K_REDO;
  return 0;
}

/* Every structural error leaves through one exit, with its reason. */
#define FAIL(...)                                                                                  \
  do {                                                                                             \
    (void)fail_at(err, errlen, __VA_ARGS__);                                                       \
    goto fail;                                                                                     \
  } while (0)

static bool vlen_fits(size_t n) { return n <= UINT32_MAX; }

static int peek_impl(const char *json, size_t len, cm_chunk_view_t *out, char *err, size_t errlen,
                     bool header_only, cm_json_elems_t *elems) {
  cm_chunk_view_t v;
  unsigned seen = 0;
  size_t i, at = 0;
  const char *why = NULL;

  memset(&v, 0, sizeof v);
  if (err && errlen) err[0] = '\0';
  if (json == NULL) FAIL("no input");

  i = skip_ws(json, len, 0);
  if (i >= len) FAIL("empty chunk");
  if (json[i] != '{') FAIL("chunk is not a JSON object (byte %zu)", i);
  i = skip_ws(json, len, i + 1);
  if (i < len && json[i] == '}') {
    i++;
    goto end_object;
  }
  for (;;) {
    /* key */
    if (i >= len) FAIL("unexpected end of input at byte %zu", i);
    if (json[i] != '"') FAIL("expected a string key at byte %zu", i);
    size_t kstart = i;
    i = scan_string(json, len, i, &at, &why);
    if (i == (size_t)-1) FAIL("%s at byte %zu", why, at);
    const char *kname = json + kstart + 1;
    size_t kraw = i - kstart - 2;
    int key = key_id(kname, kraw);
    int klen = kraw > 32 ? 32 : (int)kraw; /* for messages */
    i = skip_ws(json, len, i);
    if (i >= len) FAIL("unexpected end of input at byte %zu", i);
    if (json[i] != ':') FAIL("expected ':' after key at byte %zu", i);
    i = skip_ws(json, len, i + 1);
    if (i >= len) FAIL("unexpected end of input at byte %zu", i);

    /* The header precedes "data" in the wire form: a header-only peek
     * that reaches "data" with job, index and attempt read is done. */
    if (header_only && key == K_DATA && (seen & K_HDR3) == K_HDR3) {
      *out = v;
      return 0;
    }

    /* value */
    size_t vstart = i;
    bool ws = header_only; /* unknown without the full scan: assume some */
    long n;
    if (header_only && key != K_JOB && key != K_INDEX && key != K_ATTEMPT && key != K_MAPPER &&
        key != K_LEASE && key != K_VERSION) {
      n = cm_json_value_skip(json + i, len - i);
      at = 0;
      why = "malformed value";
    } else {
      cm_json_elems_t *el = key == K_DATA ? elems : NULL;
      if (el != NULL) {
        el->n = 0;
        el->ok = false;
        if (!vlen_fits(len - i)) el = NULL;
      }
      n = span_scan(json + i, len - i, &at, &why, &ws, el);
    }
    if (n < 0) FAIL("%s at byte %zu (in the value of \"%.*s\")", why, vstart + at, klen, kname);
    const char *val = json + vstart;
    size_t vlen = (size_t)n;
    i = vstart + vlen;

    if (key && (seen & (unsigned)key))
      FAIL("duplicate key \"%.*s\" at byte %zu", klen, kname, kstart);
    seen |= (unsigned)key;
    uint64_t u = 0;
    int rc;
    switch (key) {
    case K_JOB: {
      if (val[0] != '"') FAIL("\"job\" is not a string");
      long jl = cm_json_unescape(val, vlen, v.hdr.job, sizeof v.hdr.job, 0);
      if (jl == -E2BIG) FAIL("job name longer than %d bytes", CM_JOB_MAX - 1);
      if (jl < 0) FAIL("job name has a NUL or a lone surrogate escape");
      if (!cm_utf8_valid(v.hdr.job, (size_t)jl)) FAIL("job name is not valid UTF-8");
      break;
    }
    case K_MAPPER: {
      if (val[0] != '"') FAIL("\"mapper\" is not a string");
      long ml = cm_json_unescape(val, vlen, v.hdr.mapper, sizeof v.hdr.mapper, 0);
      if (ml == -E2BIG) FAIL("mapper id longer than %d bytes", CM_MAPPER_ID_MAX - 1);
      if (ml < 0) FAIL("mapper id has a NUL or a lone surrogate escape");
      if (!cm_utf8_valid(v.hdr.mapper, (size_t)ml)) FAIL("mapper id is not valid UTF-8");
      break;
    }
    case K_VERSION: {
      if (val[0] != '"') FAIL("\"version\" is not a string");
      long vl = cm_json_unescape(val, vlen, v.hdr.version, sizeof v.hdr.version, 0);
      if (vl == -E2BIG) FAIL("mapper version longer than %d bytes", CM_VERSION_MAX - 1);
      if (vl < 0) FAIL("mapper version has a NUL or a lone surrogate escape");
      if (!cm_utf8_valid(v.hdr.version, (size_t)vl)) FAIL("mapper version is not valid UTF-8");
      break;
    }
    case K_LEASE:
      /* A token is hex digits, taken as written. */
      if (val[0] != '"' || vlen - 2 >= sizeof v.hdr.lease) FAIL("\"lease\" is not a lease token");
      for (size_t k = 1; k + 1 < vlen; k++)
        if (hexval(val[k]) < 0) FAIL("\"lease\" is not a lease token");
      memcpy(v.hdr.lease, val + 1, vlen - 2);
      v.hdr.lease[vlen - 2] = '\0';
      break;
    case K_INDEX:
      rc = parse_uint(val, vlen, UINT64_MAX, &u);
      if (rc == -ERANGE) FAIL("\"index\" is larger than 2^64-1");
      if (rc < 0) FAIL("\"index\" is not a non-negative integer");
      v.hdr.index = u;
      break;
    case K_ATTEMPT:
      rc = parse_uint(val, vlen, UINT32_MAX, &u);
      if (rc == -ERANGE) FAIL("\"attempt\" is larger than 2^32-1");
      if (rc < 0) FAIL("\"attempt\" is not a non-negative integer");
      v.hdr.attempt = (uint32_t)u;
      break;
    case K_REDO:
      rc = parse_uint(val, vlen, UINT32_MAX, &u);
      if (rc == -ERANGE) FAIL("\"redo\" is larger than 2^32-1");
      if (rc < 0) FAIL("\"redo\" is not a non-negative integer");
      v.hdr.redo = (uint32_t)u;
      break;
    case K_DATA:
      if (val[0] != '[') FAIL("\"data\" is not an array");
      v.data = val;
      v.data_len = vlen;
      v.data_ws = ws;
      break;
    case K_DEAD:
      /* null means "no dead letters", as an absent key does. */
      if (val[0] == 'n') break;
      if (val[0] != '[') FAIL("\"dead\" is not an array");
      v.dead = val;
      v.dead_len = vlen;
      break;
    default: break; /* unknown key: its value was validated and skipped */
    }

    /* The header is complete: nothing after it is needed (and in the wire
     * form "data" follows the header, so this skips no data at all). */
    if (header_only && (seen & K_HDR6) == K_HDR6) {
      *out = v;
      return 0;
    }
    i = skip_ws(json, len, i);
    if (i >= len) FAIL("unexpected end of input at byte %zu (missing '}')", i);
    if (json[i] == ',') {
      i = skip_ws(json, len, i + 1);
      continue;
    }
    if (json[i] == '}') {
      i++;
      break;
    }
    FAIL("expected ',' or '}' at byte %zu", i);
  }

end_object:
  i = skip_ws(json, len, i);
  if (i < len) FAIL("trailing garbage after the chunk object at byte %zu", i);
  if (!(seen & K_INDEX)) FAIL("missing \"index\"");
  if (!(seen & K_DATA)) FAIL("missing \"data\"");
  *out = v;
  return 0;

fail:
  return -EINVAL;
}

#undef FAIL

int cm_chunk_peek(const char *json, size_t len, cm_chunk_view_t *out, char *err, size_t errlen) {
  return peek_impl(json, len, out, err, errlen, false, NULL);
}

int cm_chunk_peek_elems(const char *json, size_t len, cm_chunk_view_t *out, cm_json_elems_t *elems,
                        char *err, size_t errlen) {
  if (elems != NULL) elems->ok = false;
  return peek_impl(json, len, out, err, errlen, false, elems);
}

int cm_chunk_peek_header(const char *json, size_t len, cm_chunk_view_t *out, char *err,
                         size_t errlen) {
  return peek_impl(json, len, out, err, errlen, true, NULL);
}

/* ---- encoder ----------------------------------------------------------- */

int cm_chunk_begin(cm_buf_t *b, const cm_chunk_hdr_t *hdr) {
  size_t mark = b->len;
  int rc = cm_buf_append(b, "{\"job\":", 7);
  if (rc == 0) rc = cm_buf_append_json_str(b, hdr->job, strnlen(hdr->job, sizeof hdr->job));
  if (rc == 0)
    rc = cm_buf_printf(b, ",\"index\":%" PRIu64 ",\"attempt\":%" PRIu32, hdr->index,
                       hdr->attempt);
  if (rc == 0 && hdr->redo > 0) rc = cm_buf_printf(b, ",\"redo\":%" PRIu32, hdr->redo);
  if (rc == 0 && hdr->lease[0] != '\0') {
    rc = cm_buf_append(b, ",\"mapper\":", 10);
    if (rc == 0)
      rc = cm_buf_append_json_str(b, hdr->mapper, strnlen(hdr->mapper, sizeof hdr->mapper));
    if (rc == 0) rc = cm_buf_append(b, ",\"lease\":", 9);
    if (rc == 0) rc = cm_buf_append_json_str(b, hdr->lease, strnlen(hdr->lease, sizeof hdr->lease));
  }
  if (rc == 0 && hdr->version[0] != '\0') {
    rc = cm_buf_append(b, ",\"version\":", 11);
    if (rc == 0)
      rc = cm_buf_append_json_str(b, hdr->version, strnlen(hdr->version, sizeof hdr->version));
  }
  if (rc == 0) rc = cm_buf_append(b, ",\"data\":[", 9);
  if (rc < 0 && b->len != mark) {
    /* Leave the buffer as it was: the caller may retry into another one. */
    b->len = mark;
    if (b->data) b->data[mark] = '\0';
  }
  return rc;
}

int cm_chunk_end(cm_buf_t *b, const char *dead, size_t dead_len) {
  size_t mark = b->len;
  int rc;
  if (dead && dead_len) {
    rc = cm_buf_append(b, "],\"dead\":", 9);
    if (rc == 0) rc = cm_buf_append(b, dead, dead_len);
    if (rc == 0) rc = cm_buf_append(b, "}", 1);
  } else {
    rc = cm_buf_append(b, "]}", 2);
  }
  if (rc < 0 && b->len != mark) {
    b->len = mark;
    if (b->data) b->data[mark] = '\0';
  }
  return rc;
}
