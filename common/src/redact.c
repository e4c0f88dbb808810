/* redact.c - credentials out of URLs before they are shown. */
#include "cm/redact.h"

#include <stdlib.h>
#include <string.h>

/* Appends s[0..n) to out at *o (bounded by outlen - 1). */
static void put(char *out, size_t outlen, size_t *o, const char *s, size_t n) {
  if (outlen == 0) return;
  if (*o + n > outlen - 1) n = outlen - 1 - *o;
  memcpy(out + *o, s, n);
  *o += n;
}

/* One URL u[0..n): the userinfo (between "://" and the last '@' of the
 * authority) loses its password, or all of itself when it has no ':'
 * (a token). */
static void redact_one(const char *u, size_t n, char *out, size_t outlen, size_t *o) {
  const char *scheme = NULL, *auth, *end, *at = NULL, *colon;
  for (size_t i = 0; i + 3 <= n; i++)
    if (memcmp(u + i, "://", 3) == 0) {
      scheme = u + i;
      break;
    }
  if (scheme == NULL) {
    /* No scheme: "user:pw@host" is still a URL with userinfo to nats.c. */
    auth = u;
  } else {
    auth = scheme + 3;
  }
  end = auth;
  while (end < u + n && *end != '/' && *end != '?' && *end != '#') end++;
  for (const char *p = auth; p < end; p++)
    if (*p == '@') at = p;
  if (at == NULL) {
    put(out, outlen, o, u, n);
    return;
  }
  colon = memchr(auth, ':', (size_t)(at - auth));
  if (colon != NULL) {
    put(out, outlen, o, u, (size_t)(colon + 1 - u));
  } else {
    put(out, outlen, o, u, (size_t)(auth - u));
  }
  put(out, outlen, o, "***", 3);
  put(out, outlen, o, at, (size_t)(u + n - at));
}

char *cm_redact_urls(const char *in, char *out, size_t outlen) {
  size_t o = 0;
  if (outlen == 0) return out;
  if (in == NULL) in = "";
  for (;;) {
    const char *comma = strchr(in, ',');
    size_t n = comma ? (size_t)(comma - in) : strlen(in);
    redact_one(in, n, out, outlen, &o);
    if (comma == NULL) break;
    put(out, outlen, &o, ",", 1);
    in = comma + 1;
  }
  out[o] = '\0';
  return out;
}

char *cm_redact_urls_dup(const char *in) {
  size_t cap;
  char *out;
  if (in == NULL) return NULL;
  /* Each "***" may replace as little as nothing (a 0-byte password). */
  cap = strlen(in) * 2 + 16;
  if ((out = malloc(cap)) == NULL) return NULL;
  return cm_redact_urls(in, out, cap);
}
