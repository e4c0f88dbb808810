/* render.h - the chunkmill CLI's human output: tables and progress bars
 * from the job API's JSON (docs/jobs.md "The job object"). Pure functions
 * of their input, writing to the FILE given; missing or null fields print
 * as "-" (a fetcher of another version may lack some). */
#ifndef CM_CLI_RENDER_H
#define CM_CLI_RENDER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* {"jobs":[...]} as a table, one row per job; "no jobs" when empty. */
void cm_render_jobs(FILE *out, const cJSON *body);
/* One job object in detail (key: value lines, with a progress bar). */
void cm_render_job(FILE *out, const cJSON *job);
/* {"members":[...]} as a table. */
void cm_render_members(FILE *out, const cJSON *body);
/* {"dead":[...]} of job `name` as a table. */
void cm_render_dead(FILE *out, const char *name, const cJSON *body);
/* One line about a job: `NAME  STATE  [bar] P%  done/total chunks  N
 * records  R records/s  ETA E  dead D` (no newline). width: of the bar. */
void cm_render_progress_line(char *out, size_t outlen, const cJSON *job, int width);
/* One line about the members: "members: fetcher 1, mapper 3, saver 1". */
void cm_render_members_line(char *out, size_t outlen, const cJSON *body);
/* Anything else (P.status) as indented JSON. */
void cm_render_json_pretty(FILE *out, const cJSON *v);

/* Durations and rates as people read them ("1m05s", "0.6s", "-"). */
void cm_render_duration(char *out, size_t outlen, double seconds);

/* Whether a state name is final for --wait: complete, complete_with_dead,
 * cancelled, failed. */
bool cm_render_state_final(const char *state);

#endif
