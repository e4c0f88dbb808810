/* app9.h - the saver speaking the original example's wire protocol
 * (`--protocol app9`, docs/design.md "Compatibility profile").
 *
 *   saver_data      in  {"index":N,"data":[{"id","name"}...]}, queue group
 *                       saver.workers
 *   processed_data  out the index as a decimal string, after COMMIT
 *
 * Storage is the native saver's (cm_sink_save_batch, group commit on the
 * thread pool): the chunk is stored as job CM_SAVER_APP9_JOB ("app9"), so
 * records(job='app9', chunk=N, idx=i) and a chunk saved twice is a duplicate
 * that is confirmed again but not rewritten. Loop thread only. */
#ifndef CM_SAVER_APP9_H
#define CM_SAVER_APP9_H

#include "cm/config.h"
#include "sink.h"

/* The job name of every chunk saved in app9 mode (app9 bodies carry none). */
#define CM_SAVER_APP9_JOB "app9"

/* Runs the whole daemon (cm_daemon_create .. cm_daemon_destroy) in app9
 * mode. Borrows cfg, store and db_path. Returns the process exit code. */
int cm_saver_app9_run(const cm_common_cfg_t *cfg, cm_sink_t *store, const char *db_path);

#endif
