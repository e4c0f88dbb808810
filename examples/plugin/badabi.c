/* badabi.c - a plugin that claims a future ABI version; the mapper must
 * refuse to load it (tests). */
#include <stddef.h>

#include "chunkmill/plugin.h"

int cm_transform_abi_version(void) { return CM_PLUGIN_ABI_VERSION + 1; }
void *cm_transform_init(const char *arg, char *err, size_t errlen) { return NULL; }
int cm_transform_record(void *state, const char *in, size_t in_len, char **out, size_t *out_len,
                        char *err, size_t errlen) {
  return -1;
}
void cm_transform_destroy(void *state) {}
