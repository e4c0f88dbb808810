/* app9wire.h - the original example's wire protocol ("--protocol app9"),
 * shared by the three daemons' app9 modules: fixed subjects, queue groups,
 * and the comparison of its plain-text control bodies. */
#ifndef CM_APP9WIRE_H
#define CM_APP9WIRE_H

#include <nats/nats.h>
#include <stdbool.h>

#define CM_APP9_SUBJ_STATUS "mapper_status"       /* anyone_listening / im_listening */
#define CM_APP9_SUBJ_MAPPER_DATA "mapper_data"    /* fetcher -> one idle mapper */
#define CM_APP9_SUBJ_SAVER_DATA "saver_data"      /* mapper -> one saver */
#define CM_APP9_SUBJ_PROCESSED "processed_data"   /* saver -> fetcher: the index */
#define CM_APP9_QUEUE_MAPPERS "mapper.workers"
#define CM_APP9_QUEUE_SAVERS "saver.workers"

/* true when the message body is `word`, tolerating surrounding whitespace and
 * one layer of JSON quotes (a client may publish JSON.stringify("...")). */
bool cm_app9_body_is(natsMsg *msg, const char *word);

#endif
