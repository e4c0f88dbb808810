/* config.h - command-line and environment configuration from one table.
 *
 * Every option is a long flag (--name VALUE or --name=VALUE) with an
 * environment variable CHUNKMILL_<NAME> (upper case, '-' -> '_'); flags win
 * over the environment, the environment over the default. `--help` prints
 * every option with its environment variable and default.
 *
 * Values are validated (type, bounds, choices); an invalid value is rejected
 * with a message that names the option and the source (flag or env var).
 *
 * Details callers can rely on:
 * - An environment variable set to "" counts as unset.
 * - A bare BOOL flag ("--once") means true and never takes the next argument;
 *   use "--once=false" to turn it off.
 * - A NULL default sets STRING targets to NULL, INT/DURATION/DOUBLE to 0 and
 *   BOOL to false.
 * - Values of options whose name contains "password", "token" or "secret" are
 *   never printed (errors and --help show "(hidden)").
 * - --help lists a STRING option's choices after its help text unless that
 *   text already names every choice.
 * - STRING targets point into argv or the environment: do not setenv/unsetenv
 *   a CHUNKMILL_* variable after parsing.
 * - On error, the targets of earlier rows may already have been written. */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
  CM_OPT_STRING,   /* target: const char ** (borrowed from argv/env/default) */
  CM_OPT_INT,      /* target: int64_t *; bounds min..max */
  CM_OPT_DURATION, /* target: int64_t * in milliseconds; "250ms", "5s", "2m",
                      "1h", or a bare number of seconds ("1.5"); bounds in ms */
  CM_OPT_BOOL,     /* target: bool *; "--flag" alone means true; values
                      1/0 true/false yes/no on/off */
  CM_OPT_DOUBLE,   /* target: double *; bounds min..max (as integers) */
} cm_opt_type_t;

typedef struct cm_opt_s {
  const char *name;  /* long flag without the dashes: "nats-url" */
  cm_opt_type_t type;
  const char *def;   /* default, as text parsed like user input; NULL: unset
                        (STRING target stays NULL) */
  int64_t min, max;  /* bounds for INT/DURATION(ms)/DOUBLE; min==max==0: none */
  const char *const *choices; /* STRING only: NULL-terminated allowed values,
                                 or NULL for any. A choice ending in ':'
                                 accepts any value with that prefix
                                 ("burn:" accepts "burn:5"). */
  const char *env_fallback;   /* consulted after CHUNKMILL_<NAME>, e.g.
                                 "NATS_URL"; may be NULL; CM_OPT_FLAG_ONLY:
                                 no environment variable at all */
  const char *help;
  void *target;
} cm_opt_t;

/* env_fallback of an option read from the command line only: neither
 * CHUNKMILL_<NAME> nor any other variable is consulted, and --help says
 * "flag only". For settings that must never leak in from a daemon's
 * environment (the job spec options of the chunkmill CLI: a CHUNKMILL_SOURCE
 * meant for the fetcher is not a job submission). Compared by address. */
extern const char cm_opt_flag_only[];
#define CM_OPT_FLAG_ONLY cm_opt_flag_only

/* Parses argv and the environment into the targets of `opts`.
 * Returns 0 on success; 1 when --help (or -h) was given and the usage was
 * printed to `out` (the caller exits 0); 2 when --version was given (nothing
 * printed: the caller prints its name and version and exits 0; no table row
 * may be named "version"); -EINVAL on an invalid value, unknown
 * flag or stray argument, after printing one clear line to `err`, e.g.
 *   fetcher: invalid value "abc" for --chunk-size (CHUNKMILL_CHUNK_SIZE from
 *   the environment): not an integer
 * `summary` is one line printed at the top of --help. */
int cm_config_parse(const cm_opt_t *opts, size_t n, int argc, char **argv,
                    const char *prog, const char *summary, FILE *out, FILE *err)
    __attribute__((warn_unused_result));

/* Prints the option lines of --help (one per row: flag, help, choices,
 * environment variable, default; no header, no -h/--version lines) to out,
 * for tools that write their own usage header (the chunkmill CLI's
 * per-command help). */
void cm_config_print_options(const cm_opt_t *opts, size_t n, FILE *out);

/* Options every daemon has (docs/design.md "Command line"). */
typedef struct cm_common_cfg_s {
  const char *nats_url;      /* --nats-url, env CHUNKMILL_NATS_URL, NATS_URL */
  const char *prefix;        /* --prefix (chunkmill) */
  const char *http_addr;     /* --http (":8080"); HOST:PORT or :PORT */
  const char *protocol;      /* --protocol native|app9 */
  const char *log_level;     /* --log-level debug|info|warn|error */
  const char *id;            /* --id instance id; default: <role>-<host>-<pid> */
  const char *version;       /* --version-label (CHUNKMILL_VERSION_LABEL) */
  const char *probe;         /* --probe PATH: GET PATH on --http, exit 0 if 200 */
  const char *nats_user;     /* --nats-user */
  const char *nats_password; /* --nats-password (never logged) */
  const char *nats_token;    /* --nats-token (never logged) */
  const char *nats_creds;    /* --nats-creds FILE */
  const char *nats_ca;       /* --nats-ca FILE */
  const char *nats_cert;     /* --nats-cert FILE */
  const char *nats_key;      /* --nats-key FILE */
  int64_t drain_timeout_ms;  /* --drain-timeout (25s) */
  int64_t heartbeat_ms;      /* --heartbeat (1s) */
} cm_common_cfg_t;

/* Number of rows cm_config_common_opts writes. */
#define CM_COMMON_OPTS_N 17

/* Writes the common option rows (targets inside `cfg`) into out[0..cap);
 * returns the number written (CM_COMMON_OPTS_N) or -ENOSPC. */
int cm_config_common_opts(cm_common_cfg_t *cfg, cm_opt_t *out, size_t cap);

/* Number of rows cm_config_nats_opts writes. */
#define CM_NATS_OPTS_N 9

/* The subset of the common rows a NATS client that is no daemon needs (the
 * chunkmill CLI): --nats-url, --prefix and the --nats-* auth/TLS options,
 * exactly as the daemons have them (same names, environment variables,
 * defaults). Targets inside cfg; the other fields of cfg are not touched
 * (zero them first). Returns CM_NATS_OPTS_N or -ENOSPC. */
int cm_config_nats_opts(cm_common_cfg_t *cfg, cm_opt_t *out, size_t cap);

#endif
