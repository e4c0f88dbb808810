/* copy_out.h - shared by the test plugins hang.c and envprobe.c: the
 * identity answer of a record, kept in a buffer the plugin's state owns. */
#ifndef CM_EXAMPLE_PLUGIN_COPY_OUT_H
#define CM_EXAMPLE_PLUGIN_COPY_OUT_H

#include <stdlib.h>
#include <string.h>

/* Copies in[0..n) into *buf (grown with realloc, *cap its size; the plugin
 * frees *buf in cm_transform_destroy) and points *out and *out_len at it: the
 * answer lives in the state until the next call (the ABI's rule).
 * Returns 0, or -12 (-ENOMEM) with *buf unchanged. */
static inline int copy_out(char **buf, size_t *cap, const char *in, size_t n, char **out,
                           size_t *out_len) {
  if (n + 1 > *cap) {
    char *nb = realloc(*buf, n + 1);
    if (nb == NULL) return -12; /* -ENOMEM */
    *buf = nb;
    *cap = n + 1;
  }
  memcpy(*buf, in, n);
  *out = *buf;
  *out_len = n;
  return 0;
}

#endif
