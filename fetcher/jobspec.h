/* jobspec.h - a job submission (cm_jobspec_t of jobs.h) as JSON: the body
 * of POST /jobs and P.jobs.submit, and the jobs.spec column of the ledger
 * that lets a restart reopen the job's source (docs/jobs.md).
 *
 * An inline --http-header value is a secret: cm_jobspec_to_json stores a
 * header only when it is an indirection ("@FILE" or "Name: @FILE"/"$ENV"),
 * never the value itself. */
#ifndef CM_JOBSPEC_H
#define CM_JOBSPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "cm/buf.h"
#include "jobs.h"

/* A spec whose strings it owns (parse/copy fill it; free with _free). */
typedef struct cm_jobspec_store_s {
  cm_jobspec_t spec;
  char *str[6];
} cm_jobspec_store_t;

/* docs/jobs.md defaults: records 100000, seed 1, chunk_size 100, priority 1,
 * max_deliver 0 (the fetcher's), http: page 1 step 1, timeout 30 s, 5
 * retries. Strings NULL except http_page_param "page". */
void cm_jobspec_defaults(cm_jobspec_t *s);
/* Name (1..127 of A-Z a-z 0-9 . _ : -), source given, chunk_size 1..1000000,
 * priority 1..1000, max_deliver 0..1000: -EINVAL with err naming the field. */
int cm_jobspec_validate(const cm_jobspec_t *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Appends the spec as one JSON object (the submission format). */
int cm_jobspec_to_json(const cm_jobspec_t *s, cm_buf_t *out) __attribute__((warn_unused_result));
/* Parses a submission: defaults for what is absent, unknown keys and wrong
 * types refused ("unknown key \"recrods\"", "\"records\" must be a
 * non-negative integer"). Validated. -EINVAL with err; out is then empty. */
int cm_jobspec_parse(cm_jobspec_store_t *out, const char *json, size_t len, char *err,
                     size_t errlen) __attribute__((warn_unused_result));
/* Deep copy of in. -ENOMEM. */
int cm_jobspec_copy(cm_jobspec_store_t *out, const cm_jobspec_t *in)
    __attribute__((warn_unused_result));
void cm_jobspec_free(cm_jobspec_store_t *s);
/* true when the source URL carries credentials (userinfo or a credential
 * query parameter, cm/redact.h): cm_jobspec_to_json stores it redacted, so
 * a stored spec with such a source cannot reopen it. */
bool cm_jobspec_source_redacted(const cm_jobspec_t *s);

#endif
