/* chunkmill/plugin.h - the C ABI of a mapper transform plugin
 * (`mapper --transform plugin:/path/libx.so`).
 *
 * A plugin is a shared object exporting the five functions below with C
 * linkage. The mapper loads it with dlopen(RTLD_NOW | RTLD_LOCAL) at start,
 * and refuses it with a clear message when a symbol is missing or when
 * cm_transform_abi_version() does not return the CM_PLUGIN_ABI_VERSION the
 * mapper was built with.
 *
 * Threads and state: the mapper maps chunks on --concurrency worker threads.
 * It calls cm_transform_init() once per worker context (at most
 * --concurrency of them, the first one at start so a bad argument fails the
 * start), and a state is never used by two threads at the same time. A state
 * may move from one worker thread to another between chunks, so keep
 * everything in the state: no thread-local storage, and no unsynchronised
 * globals (several states exist at once).
 *
 * Records: `in` is one input record as compact JSON text (in_len bytes, not
 * NUL-terminated; no newlines). The plugin sets *out / *out_len to the mapped
 * record as JSON text.
 *
 * Ownership: *out points to memory the PLUGIN owns (typically a buffer kept
 * in the state and reused). It must stay valid and unchanged until the next
 * call on the same state (cm_transform_record or cm_transform_destroy); the
 * mapper copies it before that. The mapper never frees it. `in` is borrowed
 * for the duration of the call.
 *
 * Results of cm_transform_record:
 *    0  *out holds the mapped record (it must be valid JSON, else the record
 *       becomes a dead letter "plugin: output is not valid JSON");
 *    1  the record is rejected: it becomes a dead letter whose reason is the
 *       NUL-terminated text the plugin wrote to err (errlen bytes at most);
 *   <0  a failure of the whole chunk (e.g. -ENOMEM): the chunk is NAKed and
 *       delivered again later, up to the fetcher's --max-deliver.
 * cm_transform_init returns NULL on failure with a reason in err; the mapper
 * then exits with that reason (at start) or fails the chunk (later).
 *
 * `arg` is the mapper's --transform-arg (CHUNKMILL_TRANSFORM_ARG), "" when
 * unset; it is borrowed for the duration of the call. */
#ifndef CHUNKMILL_PLUGIN_H
#define CHUNKMILL_PLUGIN_H

#include <stddef.h>

#define CM_PLUGIN_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

int cm_transform_abi_version(void);
void *cm_transform_init(const char *arg, char *err, size_t errlen);
int cm_transform_record(void *state, const char *in, size_t in_len, char **out, size_t *out_len,
                        char *err, size_t errlen);
void cm_transform_destroy(void *state);

#ifdef __cplusplus
}
#endif

#endif
