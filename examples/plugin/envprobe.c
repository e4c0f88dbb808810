/* envprobe.c - a test plugin (include/chunkmill/plugin.h): the identity
 * transform whose init writes what user code can see of the mapper to the
 * file named by --transform-arg: one line per environment entry ("env
 * NAME=VALUE"), then "ok". Tests check that no NATS credential is there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkmill/plugin.h"
#include "copy_out.h"

extern char **environ;

typedef struct probe_state_s {
  char *buf;
  size_t cap;
} probe_state_t;

int cm_transform_abi_version(void) { return CM_PLUGIN_ABI_VERSION; }

void *cm_transform_init(const char *arg, char *err, size_t errlen) {
  FILE *f;
  if (arg == NULL || *arg == '\0') {
    snprintf(err, errlen, "envprobe: --transform-arg must name the output file");
    return NULL;
  }
  if ((f = fopen(arg, "w")) == NULL) {
    snprintf(err, errlen, "envprobe: cannot write %s", arg);
    return NULL;
  }
  for (char **e = environ; e && *e; e++) fprintf(f, "env %s\n", *e);
  fprintf(f, "ok\n");
  fclose(f);
  return calloc(1, sizeof(probe_state_t));
}

int cm_transform_record(void *state, const char *in, size_t in_len, char **out, size_t *out_len,
                        char *err, size_t errlen) {
  probe_state_t *s = state;
  (void)err;
  (void)errlen;
  return copy_out(&s->buf, &s->cap, in, in_len, out, out_len);
}

void cm_transform_destroy(void *state) {
  probe_state_t *s = state;
  if (s) free(s->buf);
  free(s);
}
