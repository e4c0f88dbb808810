/* web.h - the web dashboard (issue 15): static HTML, CSS and JavaScript
 * compiled into the fetcher and served on its --http port. The page reads
 * /status, /jobs and /members itself (docs/jobs.md); nothing here touches
 * the fetcher's state. */
#ifndef CM_WEB_H
#define CM_WEB_H

#include "cm/buf.h"

/* Serves GET `path` if it is one of the dashboard's files ("/" is
 * /index.html): appends the file to body, sets *ctype (a static string) and
 * returns 200; 500 if body cannot hold it. Returns 0, touching nothing, when
 * the path is not a dashboard file. */
int cm_web_serve(const char *path, cm_buf_t *body, const char **ctype);

#endif
