/* hang.c - a test plugin (include/chunkmill/plugin.h): the identity
 * transform, except that a record containing the text given as
 * --transform-arg (default "\"hang\":true") never returns - the plugin in an
 * endless loop that --chunk-timeout exists for. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunkmill/plugin.h"
#include "copy_out.h"

typedef struct hang_state_s {
  char needle[256];
  char *buf;
  size_t cap;
} hang_state_t;

int cm_transform_abi_version(void) { return CM_PLUGIN_ABI_VERSION; }

void *cm_transform_init(const char *arg, char *err, size_t errlen) {
  hang_state_t *s = calloc(1, sizeof *s);
  (void)err;
  (void)errlen;
  if (s == NULL) return NULL;
  strncpy(s->needle, arg && *arg ? arg : "\"hang\":true", sizeof s->needle - 1);
  return s;
}

int cm_transform_record(void *state, const char *in, size_t in_len, char **out, size_t *out_len,
                        char *err, size_t errlen) {
  hang_state_t *s = state;
  size_t nl = strlen(s->needle);
  (void)err;
  (void)errlen;
  for (size_t i = 0; nl > 0 && i + nl <= in_len; i++)
    if (memcmp(in + i, s->needle, nl) == 0)
      for (;;) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
      }
  return copy_out(&s->buf, &s->cap, in, in_len, out, out_len);
}

void cm_transform_destroy(void *state) {
  hang_state_t *s = state;
  if (s) free(s->buf);
  free(s);
}
