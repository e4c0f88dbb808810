/* redact.h - URLs as they may be shown: in logs, /status, metric labels and
 * ledger rows a URL's credentials are replaced by "***".
 *
 *   "nats://alice:PASSWORD@host:4222"  ->  "nats://alice:" "***" "@host:4222"
 *   "nats://TOKEN@host"                ->  "nats://" "***" "@host"
 *   "https://u:p@api.example/x?y=1"    ->  "https://u:" "***" "@api.example/x?y=1"
 *   "nats://a:x@h1,nats://b:y@h2"      ->  each element so
 * (written as adjacent string pieces, since a slash and a star would open
 * a comment here).
 * A comma-separated list is redacted element by element; anything that is
 * not a URL with userinfo is copied as it is. Pure functions. */
#ifndef CM_REDACT_H
#define CM_REDACT_H

#include <stddef.h>

/* Writes the redacted form of in (a URL or a comma-separated list of URLs)
 * into out (outlen bytes, always NUL-terminated, truncated if needed).
 * Truncation never exposes a secret: the output is built from the redacted
 * parts only. Returns out. */
char *cm_redact_urls(const char *in, char *out, size_t outlen);

/* The same into a new string (malloc); NULL on OOM or in == NULL. */
char *cm_redact_urls_dup(const char *in);

#endif
