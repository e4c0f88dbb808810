/* redact.h - URLs as they may be shown: in logs, /status, metric labels and
 * ledger rows a URL's credentials are replaced by "***".
 *
 *   "nats://alice:PASSWORD@host:4222"  ->  "nats://alice:" "***" "@host:4222"
 *   "nats://TOKEN@host"                ->  "nats://" "***" "@host"
 *   "https://u:p@api.example/x?y=1"    ->  "https://u:" "***" "@api.example/x?y=1"
 *   "nats://a:x@h1,nats://b:y@h2"      ->  each element so
 *   "https://h/u?api_key=K&page=1"     ->  "https://h/u?api_key=" "***" "&page=1"
 * (written as adjacent string pieces, since a slash and a star would open
 * a comment here).
 * A query or fragment parameter loses its value when its name (percent-
 * decoded, case-insensitive), or a word of it ("X-Amz-Signature",
 * "refresh_token", "apiKey"), is one of token, access_token, api_key,
 * apikey, key, password, passwd, pwd, secret, signature, sig, auth,
 * credential, client_secret (or a plural): "sort_key" is hidden too,
 * "monkey" is not. A URL ends at white space; in a query a comma belongs
 * to the value unless a "scheme://" follows it.
 * A comma-separated list is redacted element by element; anything that is
 * not a URL with userinfo or such a parameter is copied as it is. Pure
 * functions. */
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
