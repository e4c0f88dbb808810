/* app9.h - the fetcher speaking the original example's wire protocol
 * (`--protocol app9`, docs/design.md "Compatibility profile").
 *
 * Subjects (fixed, no prefix):
 *   mapper_status   out "anyone_listening", in "im_listening"
 *   mapper_data     out {"index":N,"data":[...records...]}
 *   processed_data  in  the index as a decimal string: chunk N is saved
 *
 * The ledger, the sources and the durability are the native fetcher's: a
 * chunk is leased in the ledger before it is published, a confirmed chunk
 * is done for good (also across restarts), and an unconfirmed one is sent
 * again only after --ack-wait. One chunk per "im_listening" message; next
 * chunk = the lowest-index unconfirmed chunk whose wait is over, else a new
 * one from the source. Loop thread only. */
#ifndef CM_FETCHER_APP9_H
#define CM_FETCHER_APP9_H

#include "cm/config.h"
#include "fetch.h"
#include "ledger.h"
#include "source.h"

/* Runs the whole daemon (cm_daemon_create .. cm_daemon_destroy) in app9
 * mode. Borrows every argument; the job named by fc->job must be open in
 * the ledger. Returns the process exit code (0 done or drained, 1 fatal). */
int cm_fetch_app9_run(const cm_common_cfg_t *cfg, const cm_fetch_cfg_t *fc, cm_ledger_t *ledger,
                      cm_source_t *src);

#endif
