/* upper.c - an example chunkmill transform plugin (include/chunkmill/plugin.h).
 *
 * Upper-cases the ASCII letters of the string members named in
 * --transform-arg (a comma-separated list; default "fn,ln"), leaving every
 * other byte of the record as it is. A record that is not a JSON object is
 * rejected (a dead letter). Build:
 *   cc -shared -fPIC -I include -o upper.so examples/plugin/upper.c
 * Run:
 *   mapper --transform plugin:./upper.so --transform-arg fn,ln
 *
 * The record is scanned, not parsed: a member key at depth 1 that is in the
 * list and whose value is a string gets that string upper-cased. The output
 * buffer lives in the state and is reused (the ABI's ownership rule). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkmill/plugin.h"

#define UPPER_MAX_FIELDS 16
#define UPPER_MAX_OUT ((size_t)64 * 1024 * 1024)

typedef struct upper_state_s {
  char field[UPPER_MAX_FIELDS][64];
  int nfield;
  char *buf;
  size_t cap;
} upper_state_t;

int cm_transform_abi_version(void) { return CM_PLUGIN_ABI_VERSION; }

void *cm_transform_init(const char *arg, char *err, size_t errlen) {
  upper_state_t *s = calloc(1, sizeof *s);
  const char *p = (arg && *arg) ? arg : "fn,ln";
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  while (*p) {
    const char *c = strchr(p, ',');
    size_t n = c ? (size_t)(c - p) : strlen(p);
    if (n == 0 || n >= sizeof s->field[0] || s->nfield == UPPER_MAX_FIELDS) {
      snprintf(err, errlen, "bad field list \"%s\": up to %d names of 1..63 bytes", arg,
               UPPER_MAX_FIELDS);
      free(s);
      return NULL;
    }
    memcpy(s->field[s->nfield], p, n);
    s->field[s->nfield++][n] = '\0';
    p += n + (c ? 1 : 0);
  }
  return s;
}

static bool wanted(const upper_state_t *s, const char *key, size_t n) {
  for (int i = 0; i < s->nfield; i++)
    if (strlen(s->field[i]) == n && memcmp(s->field[i], key, n) == 0) return true;
  return false;
}

int cm_transform_record(void *state, const char *in, size_t n, char **out, size_t *out_len,
                        char *err, size_t errlen) {
  upper_state_t *s = state;
  size_t i = 0, depth = 0, key_start = 0, key_len = 0;
  bool in_str = false, esc = false, upper = false, after_colon = false, is_key = false;

  while (n > 0 && (in[0] == ' ' || in[0] == '\t')) in++, n--;
  if (n == 0 || in[0] != '{') {
    snprintf(err, errlen, "upper: record is not an object");
    return 1;
  }
  if (n + 1 > s->cap) {
    size_t cap = n + 1 > 4096 ? n + 1 : 4096;
    char *b;
    if (cap > UPPER_MAX_OUT) {
      snprintf(err, errlen, "upper: record larger than %zu bytes", UPPER_MAX_OUT);
      return 1;
    }
    if ((b = realloc(s->buf, cap)) == NULL) {
      snprintf(err, errlen, "out of memory");
      return -ENOMEM;
    }
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf, in, n);
  for (i = 0; i < n; i++) {
    char c = s->buf[i];
    if (in_str) {
      if (esc) {
        esc = false;
      } else if (c == '\\') {
        esc = true;
      } else if (c == '"') {
        in_str = false;
        if (is_key) key_len = i - key_start;
      } else if (upper && c >= 'a' && c <= 'z') {
        s->buf[i] = (char)(c - 'a' + 'A');
      }
      continue;
    }
    if (c == '"') {
      in_str = true;
      /* depth 1: a key (after '{' or ',') or a value (after ':') */
      is_key = depth == 1 && !after_colon;
      upper = depth == 1 && after_colon && wanted(s, s->buf + key_start, key_len);
      if (is_key) key_start = i + 1;
    } else if (c == '{' || c == '[') {
      depth++;
      after_colon = false;
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == ':' && depth == 1) {
      after_colon = true;
    } else if (c == ',' && depth == 1) {
      after_colon = false;
      upper = false;
    }
  }
  *out = s->buf;
  *out_len = n;
  return 0;
}

void cm_transform_destroy(void *state) {
  upper_state_t *s = state;
  if (s == NULL) return;
  free(s->buf);
  free(s);
}
