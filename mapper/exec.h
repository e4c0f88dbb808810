/* exec.h - the exec:COMMAND transform's process side (internal to the
 * mapper; transform.c turns records into NDJSON spans and lines back into a
 * mapped chunk).
 *
 * A cm_exec_t owns a pool of workers. A worker is a private uv_loop_t and
 * the child it spawned (uv_spawn, stdin/stdout/stderr pipes). A thread-pool
 * thread checks a worker out for one chunk and back in afterwards, so a
 * worker is only ever run by one thread at a time and the daemon's own loop
 * is never touched; there are at most as many workers (children) as chunks
 * mapped at once (--concurrency).
 *
 * Contract with the child, per chunk: the records are written to its stdin,
 * one compact JSON record per line; it answers exactly one line per input
 * line on stdout, in order, and writes nothing else there. Framing (how the
 * mapper knows which line answers which record):
 *
 *   chunk (default)  one child per chunk: the records are written, stdin is
 *                    closed, and the answers are read until stdout reaches
 *                    EOF and the child has exited with status 0. Exactly N
 *                    lines or the chunk fails. Nothing depends on timing:
 *                    no line can be misread, at the cost of a process
 *                    start per chunk; any filter works unchanged.
 *   tagged           one long-lived child per worker; every record line is
 *                    "<seq>\t<record>" and every answer must be
 *                    "<seq>\t<answer>" with the same seq (1, 2, 3... over the
 *                    child's life). An answer whose tag is not the next
 *                    expected one fails the chunk; a chunk is committed as
 *                    soon as its N tagged answers are in. Output after them
 *                    (before or during the next chunk) can only carry a
 *                    wrong tag, so it is caught without touching committed
 *                    answers: no timing is involved and no settle time.
 *   lines            one long-lived child per worker, untagged. A chunk's N
 *                    answers are committed only when (a) the child wrote
 *                    nothing on stdout since the previous chunk was
 *                    committed (checked before the chunk is written: such
 *                    output means the child is out of step; it is killed
 *                    and a new one gets the chunk), (b) exactly N lines
 *                    arrived, and (c) no further byte arrived within the
 *                    settle time after the N-th (exec_settle_ms). Extra
 *                    lines, or stdout closed before the N-th answer, fail
 *                    the chunk (-EPROTO, the offending line quoted in err)
 *                    and kill the child. Limit: an extra line early in a
 *                    chunk is only caught if the chunk's true last answer
 *                    follows the N-th line within the settle time; a child
 *                    that is slower than that on its last record can still
 *                    be misread. Opt-in only.
 *
 * Its stderr lines are
 *   progress:N          counted (chunkmill_exec_progress_total) and logged
 *                       at debug level; the mapper's heartbeat keeps every
 *                       in-flight lease alive anyway
 *   counter:NAME,N      chunkmill_exec_counter_total{name="NAME"} += N
 *   anything else       logged at info level
 * A child that exits, or does not answer within the timeout, is killed
 * (SIGKILL to its process group), the chunk fails, and a new child is
 * spawned for the next chunk.
 *
 * Isolation: children get the mapper's environment without NATS
 * credentials (cm_exec_env_is_secret), plus --transform-arg and --exec-env,
 * and no descriptor but 0, 1 and 2 (every other one is close-on-exec in the
 * forked child before exec). The mapper becomes a child subreaper
 * (PR_SET_CHILD_SUBREAPER) and reaps orphaned grandchildren (a killed
 * `sh -c 'a | b'` leaves its pipeline's processes to us), so none stays a
 * zombie even when the mapper is PID 1 in a container. Only exec: does
 * this: a plugin that waits for its own children keeps their status. */
#ifndef CM_EXEC_H
#define CM_EXEC_H

#include <stdbool.h>
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
 * up in PATH): errors name it. o: arg, exec_timeout_ms, exec_cwd, exec_env,
 * exec_framing, exec_settle_ms. */
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

/* True for an environment entry "NAME=VALUE" a child must not inherit: the
 * mapper's NATS settings (CHUNKMILL_NATS_*), any CHUNKMILL_* or NATS_*
 * variable whose name says PASSWORD, TOKEN, SECRET, CREDS, NKEY, SEED or
 * KEY, and NATS_URL when it carries user:password@. */
bool cm_exec_env_is_secret(const char *entry);
/* Removes those entries from this process's environment (for plugins, which
 * share it). Call once at start, after the configuration was read: glibc
 * does not free removed strings, so values already taken stay valid. */
void cm_exec_scrub_environ(void);

/* Children spawned so far (restarts = spawned - workers). For tests. */
unsigned long cm_exec_spawned(const cm_exec_t *e);
/* Orphaned descendants reaped so far. For tests. */
unsigned long cm_exec_reaped(const cm_exec_t *e);

#endif
