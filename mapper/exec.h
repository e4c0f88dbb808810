/* exec.h - the exec:COMMAND transform's process side (internal to the
 * mapper; transform.c turns records into NDJSON spans and lines back into a
 * mapped chunk).
 *
 * A cm_exec_t owns a pool of workers. A worker is a private uv_loop_t and
 * the one long-lived child it spawned (uv_spawn, stdin/stdout/stderr
 * pipes). A thread-pool thread checks a worker out for one chunk and back
 * in afterwards, so a worker is only ever run by one thread at a time and
 * the daemon's own loop is never touched; there are at most as many
 * workers (children) as chunks mapped at once (--concurrency).
 *
 * Contract with the child, per chunk: the records are written to its stdin,
 * one compact JSON record per line; it answers exactly one line per input
 * line on stdout, in order. Its stderr lines are
 *   progress:N          counted (chunkmill_exec_progress_total) and logged
 *                       at debug level; the mapper's heartbeat keeps every
 *                       in-flight lease alive anyway
 *   counter:NAME,N      chunkmill_exec_counter_total{name="NAME"} += N
 *   anything else       logged at info level
 * A child that exits, or does not answer within the timeout, is killed
 * (SIGKILL to its process group), the chunk fails, and a new child is
 * spawned for the next chunk. */
#ifndef CM_EXEC_H
#define CM_EXEC_H

#include <stddef.h>

#include "cm/buf.h"
#include "cm/metrics.h"
#include "transform.h"

typedef struct cm_exec_s cm_exec_t;

/* cmd: the text after "exec:". Either a JSON array of strings
 * (["python3","-u","map.py"]), or words split on blanks with no quoting,
 * where `X -c REST` (e.g. sh -c 'tr a-z A-Z') passes REST as one argument,
 * without one pair of enclosing quotes. No shell is involved unless the
 * command names one. The program must exist (a name without '/' is looked
 * up in PATH): errors name it. o: arg, exec_timeout_ms, exec_cwd, exec_env. */
int cm_exec_create(cm_exec_t **out, const char *cmd, const cm_transform_opts_t *o, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
/* Closes every idle child's stdin, gives them 1 s to exit, then SIGKILLs
 * their process groups. NULL-safe. No chunk may be running. */
void cm_exec_destroy(cm_exec_t *e);
/* Borrowed; must outlive e. NULL: no metrics. Call before the first chunk. */
void cm_exec_set_metrics(cm_exec_t *e, cm_metrics_t *m);

/* Runs n records through a child. recs[i]/lens[i] are compact JSON texts
 * (newlines inside them are sent as blanks). On 0, `lines` holds the n
 * answers, line i at lines->data + off[i], ln[i] bytes, without '\n'. On
 * error (negative errno, err set: spawn failure, child exit, timeout, too
 * much output) the child is gone and the chunk must fail. Thread-safe. */
int cm_exec_run(cm_exec_t *e, const char *const *recs, const size_t *lens, size_t n,
                cm_buf_t *lines, size_t *off, size_t *ln, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Children spawned so far (restarts = spawned - workers). For tests. */
unsigned long cm_exec_spawned(const cm_exec_t *e);

#endif
