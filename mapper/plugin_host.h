/* plugin_host.h - loads a plugin:PATH.so transform (the ABI is in
 * include/chunkmill/plugin.h) and keeps one plugin state per concurrent
 * worker. Internal to the mapper. */
#ifndef CM_PLUGIN_HOST_H
#define CM_PLUGIN_HOST_H

#include <stddef.h>

typedef struct cm_plugin_s cm_plugin_t;

/* dlopens path, checks the ABI version and the symbols, and creates the
 * first state with cm_transform_init(arg) so a bad plugin or argument fails
 * the start. Errors name the file: "plugin /x/y.so has ABI version 2; this
 * mapper supports 1". arg NULL means "". */
int cm_plugin_load(cm_plugin_t **out, const char *path, const char *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Destroys every idle state, then dlcloses (unless a state is still in use
 * after a forced shutdown). NULL-safe. */
void cm_plugin_unload(cm_plugin_t *p);

/* Checks out a state for one chunk (creating one when all are in use).
 * *slot must be given back to cm_plugin_release. Thread-safe. */
int cm_plugin_acquire(cm_plugin_t *p, void **state, int *slot, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cm_plugin_release(cm_plugin_t *p, int slot);

/* Calls the plugin's cm_transform_record (see the ABI header for results
 * and ownership of *out). */
int cm_plugin_record(const cm_plugin_t *p, void *state, const char *in, size_t n, char **out,
                     size_t *out_len, char *err, size_t errlen);

#endif
