/* redact.c - credentials out of URLs before they are shown. */
#include "cm/redact.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Appends s[0..n) to out at *o (bounded by outlen - 1). */
static void put(char *out, size_t outlen, size_t *o, const char *s, size_t n) {
  if (outlen == 0) return;
  if (*o + n > outlen - 1) n = outlen - 1 - *o;
  memcpy(out + *o, s, n);
  *o += n;
}

/* The words a query parameter's name is made of that mark its value as a
 * credential (compared lowercased). */
static const char *const secret_words[] = {
    "token",      "tokens",      "access_token", "accesstoken", "api_key", "apikey",
    "key",        "keys",        "password",     "passwd",      "pwd",     "secret",
    "signature",  "sig",         "auth",         "credential",  "credentials",
    "client_secret", "clientsecret", NULL};

static bool is_secret_word(const char *w, size_t n) {
  for (size_t i = 0; secret_words[i] != NULL; i++)
    if (strlen(secret_words[i]) == n && memcmp(secret_words[i], w, n) == 0) return true;
  return false;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Whether the parameter name s[0..n) looks like a credential: the whole name
 * (percent-decoded, lowercased) or one of its words (split at anything but
 * a letter or digit, and where a lowercase letter meets an uppercase one:
 * "X-Amz-Signature", "refresh_token", "apiKey") is a secret word. */
static bool secret_name(const char *s, size_t n) {
  char name[128], low[128];
  size_t m = 0, w = 0;
  for (size_t i = 0; i < n && m < sizeof name; i++) {
    if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      name[m++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      name[m++] = s[i] == '+' ? ' ' : s[i];
    }
  }
  for (size_t i = 0; i < m; i++) low[i] = (char)tolower((unsigned char)name[i]);
  if (is_secret_word(low, m)) return true;
  for (size_t i = 0; i <= m; i++) {
    bool end = i == m || !isalnum((unsigned char)name[i]) ||
               (i > w && islower((unsigned char)name[i - 1]) && isupper((unsigned char)name[i]));
    if (!end) continue;
    if (i > w && is_secret_word(low + w, i - w)) return true;
    w = (i < m && isalnum((unsigned char)name[i])) ? i : i + 1;
  }
  return false;
}

/* Copies s[0..n) (the rest of a URL after its authority) with the value of
 * each query or fragment parameter ("name=value", separated by '&') whose
 * name looks like a credential replaced by "***". The URL ends at the first
 * white space (a URL holds none): what follows, such as the rest of a
 * source description, is copied as it is. */
static void put_rest(const char *s, size_t n, char *out, size_t outlen, size_t *o) {
  size_t i = 0, all = n;
  for (n = 0; n < all && !isspace((unsigned char)s[n]); n++) {
  }
  while (i < n && s[i] != '?' && s[i] != '#') i++;
  put(out, outlen, o, s, i);
  while (i < n) {
    size_t start, eq, stop;
    put(out, outlen, o, s + i, 1); /* the '?', '&' or '#' before a parameter */
    start = ++i;
    while (i < n && s[i] != '&' && s[i] != '#') i++;
    stop = i;
    for (eq = start; eq < stop && s[eq] != '='; eq++) {
    }
    if (eq < stop && eq + 1 < stop && secret_name(s + start, eq - start)) {
      put(out, outlen, o, s + start, eq + 1 - start);
      put(out, outlen, o, "***", 3);
    } else {
      put(out, outlen, o, s + start, stop - start);
    }
  }
  put(out, outlen, o, s + n, all - n);
}

/* One URL u[0..n): the userinfo (between "://" and the last '@' of the
 * authority) loses its password, or all of itself when it has no ':'
 * (a token); the query and fragment go through put_rest. */
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
    put(out, outlen, o, u, (size_t)(end - u));
  } else {
    colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon != NULL) {
      put(out, outlen, o, u, (size_t)(colon + 1 - u));
    } else {
      put(out, outlen, o, u, (size_t)(auth - u));
    }
    put(out, outlen, o, "***", 3);
    put(out, outlen, o, at, (size_t)(end - at));
  }
  put_rest(end, (size_t)(u + n - end), out, outlen, o);
}

/* Whether s starts with a URL scheme and "://". */
static bool scheme_at(const char *s) {
  size_t i = 0;
  if (!isalpha((unsigned char)s[0])) return false;
  while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.') i++;
  return strncmp(s + i, "://", 3) == 0;
}

/* The length of the list element at s: up to a comma, except that in a
 * query or fragment a comma belongs to the value ("?fields=a,b") unless
 * the next URL of a list ("scheme://") follows it. */
static size_t element_len(const char *s) {
  bool query = false;
  size_t i;
  for (i = 0; s[i] != '\0'; i++) {
    if (s[i] == '?' || s[i] == '#') query = true;
    if (s[i] == ',' && (!query || scheme_at(s + i + 1))) break;
  }
  return i;
}

char *cm_redact_urls(const char *in, char *out, size_t outlen) {
  size_t o = 0;
  if (outlen == 0) return out;
  if (in == NULL) in = "";
  for (;;) {
    size_t n = element_len(in);
    redact_one(in, n, out, outlen, &o);
    if (in[n] != ',') break;
    put(out, outlen, &o, ",", 1);
    in += n + 1;
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
