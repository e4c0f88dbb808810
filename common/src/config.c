/* config.c - flags and environment into typed targets, from one table.
 *
 * Order of precedence per option: the last --flag on the command line, then
 * CHUNKMILL_<NAME>, then env_fallback, then the default. An environment
 * variable set to "" counts as unset (Kubernetes manifests often render empty
 * values for optional settings). */
#include "cm/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CM_ENV_PREFIX "CHUNKMILL_"

const char cm_opt_flag_only[] = "(flag only)";
#define CM_ENV_NAME_MAX 128

/* Where the value being checked came from; used to word the error. */
typedef enum { SRC_DEFAULT, SRC_FLAG, SRC_ENV } src_kind_t;

typedef struct {
  src_kind_t kind;
  const char *env; /* name of the variable when kind == SRC_ENV */
} src_t;

static int env_name(const char *opt, char *dst, size_t cap) {
  int n = snprintf(dst, cap, CM_ENV_PREFIX "%s", opt);
  if (n < 0 || (size_t)n >= cap) return -ENAMETOOLONG;
  for (char *p = dst + strlen(CM_ENV_PREFIX); *p != '\0'; p++)
    *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  return 0;
}

/* Secrets must never reach stderr (and from there the log collector). The
 * table has no "secret" column, so go by the name. */
static int is_secret(const char *name) {
  return strstr(name, "password") != NULL || strstr(name, "token") != NULL ||
         strstr(name, "secret") != NULL;
}

static void report(FILE *err, const char *prog, const cm_opt_t *o, const src_t *src,
                   const char *value, const char *why) {
  const char *shown = is_secret(o->name) ? "(hidden)" : value;
  if (src->kind == SRC_ENV) {
    fprintf(err, "%s: invalid value \"%s\" for --%s (%s from the environment): %s\n", prog,
            shown, o->name, src->env, why);
  } else if (src->kind == SRC_DEFAULT) {
    fprintf(err, "%s: invalid default \"%s\" for --%s: %s\n", prog, shown, o->name, why);
  } else {
    fprintf(err, "%s: invalid value \"%s\" for --%s: %s\n", prog, shown, o->name, why);
  }
}

static int has_bounds(const cm_opt_t *o) { return !(o->min == 0 && o->max == 0); }

/* Duration text for messages and --help: the largest unit that is exact. */
static void fmt_duration(char *dst, size_t cap, int64_t ms) {
  if (ms == 0)
    snprintf(dst, cap, "0s");
  else if (ms % 3600000 == 0)
    snprintf(dst, cap, "%" PRId64 "h", ms / 3600000);
  else if (ms % 60000 == 0)
    snprintf(dst, cap, "%" PRId64 "m", ms / 60000);
  else if (ms % 1000 == 0)
    snprintf(dst, cap, "%" PRId64 "s", ms / 1000);
  else
    snprintf(dst, cap, "%" PRId64 "ms", ms);
}

static int parse_int(const char *s, int64_t *out, const char **why) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0') {
    *why = "not an integer";
    return -EINVAL;
  }
  if (errno == ERANGE) {
    *why = "out of range";
    return -EINVAL;
  }
  *out = (int64_t)v;
  return 0;
}

static int parse_double(const char *s, double *out, const char **why) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0' || !isfinite(v)) {
    *why = "not a number";
    return -EINVAL;
  }
  if (errno == ERANGE) {
    *why = "out of range";
    return -EINVAL;
  }
  *out = v;
  return 0;
}

static int parse_duration(const char *s, int64_t *out, const char **why) {
  char *end;
  double mult;

  *why = "not a duration (use e.g. 250ms, 5s, 2m, 1h, or seconds)";
  if (*s == '\0' || isspace((unsigned char)*s)) return -EINVAL;
  /* Reject what strtod would accept but is no duration: inf, nan, hex. */
  if (!(isdigit((unsigned char)*s) || *s == '.' || *s == '-' || *s == '+')) return -EINVAL;
  if (strpbrk(s, "xXpP") != NULL) return -EINVAL;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno == ERANGE || !isfinite(v)) return -EINVAL;

  if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
    mult = 1000.0;
  else if (strcmp(end, "ms") == 0)
    mult = 1.0;
  else if (strcmp(end, "m") == 0)
    mult = 60000.0;
  else if (strcmp(end, "h") == 0)
    mult = 3600000.0;
  else
    return -EINVAL;

  double ms = v * mult;
  /* Well inside int64 and exactly representable as a double. */
  if (fabs(ms) > 9.0e15) {
    *why = "out of range";
    return -EINVAL;
  }
  *out = (int64_t)llround(ms);
  return 0;
}

static int parse_bool(const char *s, bool *out, const char **why) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  *why = "not a boolean (use true/false, 1/0, yes/no, on/off)";
  return -EINVAL;
}

static int in_choices(const char *const *choices, const char *s) {
  for (size_t i = 0; choices[i] != NULL; i++) {
    size_t cl = strlen(choices[i]);
    if (cl > 0 && choices[i][cl - 1] == ':') {
      /* Prefix choice: "burn:" takes "burn:5" but not a bare "burn:". */
      if (strncmp(s, choices[i], cl) == 0 && s[cl] != '\0') return 1;
    } else if (strcmp(s, choices[i]) == 0) {
      return 1;
    }
  }
  return 0;
}

static void fmt_choices(char *dst, size_t cap, const char *const *choices) {
  size_t o = 0;
  dst[0] = '\0';
  for (size_t i = 0; choices[i] != NULL && o < cap; i++) {
    size_t cl = strlen(choices[i]);
    int prefix = cl > 0 && choices[i][cl - 1] == ':';
    int n = snprintf(dst + o, cap - o, "%s%s%s", i > 0 ? "|" : "", choices[i], prefix ? "..." : "");
    if (n < 0) break;
    o += (size_t)n;
  }
}

/* Parses `value` for option `o` and stores it in o->target. On failure prints
 * the one-line error and returns -EINVAL. */
static int apply(const cm_opt_t *o, const char *value, const src_t *src, const char *prog,
                 FILE *err) {
  const char *why = NULL;
  char range[96], lo[32], hi[32];

  switch (o->type) {
  case CM_OPT_STRING:
    if (value != NULL && o->choices != NULL && !in_choices(o->choices, value)) {
      char list[512], msg[560];
      fmt_choices(list, sizeof list, o->choices);
      snprintf(msg, sizeof msg, "not one of %s", list);
      report(err, prog, o, src, value, msg);
      return -EINVAL;
    }
    *(const char **)o->target = value;
    return 0;

  case CM_OPT_BOOL: {
    bool b = false;
    if (value != NULL && parse_bool(value, &b, &why) < 0) goto bad;
    *(bool *)o->target = b;
    return 0;
  }

  case CM_OPT_INT: {
    int64_t v = 0;
    if (value != NULL && parse_int(value, &v, &why) < 0) goto bad;
    if (value != NULL && has_bounds(o) && (v < o->min || v > o->max)) {
      snprintf(range, sizeof range, "out of range (%" PRId64 "..%" PRId64 ")", o->min, o->max);
      why = range;
      goto bad;
    }
    *(int64_t *)o->target = v;
    return 0;
  }

  case CM_OPT_DURATION: {
    int64_t v = 0;
    if (value != NULL && parse_duration(value, &v, &why) < 0) goto bad;
    if (value != NULL && has_bounds(o) && (v < o->min || v > o->max)) {
      fmt_duration(lo, sizeof lo, o->min);
      fmt_duration(hi, sizeof hi, o->max);
      snprintf(range, sizeof range, "out of range (%s..%s)", lo, hi);
      why = range;
      goto bad;
    }
    *(int64_t *)o->target = v;
    return 0;
  }

  case CM_OPT_DOUBLE: {
    double v = 0;
    if (value != NULL && parse_double(value, &v, &why) < 0) goto bad;
    if (value != NULL && has_bounds(o) && (v < (double)o->min || v > (double)o->max)) {
      snprintf(range, sizeof range, "out of range (%" PRId64 "..%" PRId64 ")", o->min, o->max);
      why = range;
      goto bad;
    }
    *(double *)o->target = v;
    return 0;
  }
  }
  why = "unknown option type";

bad:
  report(err, prog, o, src, value != NULL ? value : "", why);
  return -EINVAL;
}

static const char *type_meta(const cm_opt_t *o) {
  switch (o->type) {
  case CM_OPT_INT: return "N";
  case CM_OPT_DURATION: return "DURATION";
  case CM_OPT_DOUBLE: return "X";
  case CM_OPT_BOOL: return "";
  case CM_OPT_STRING: break;
  }
  return "VALUE";
}

/* Whether o's help text already names every one of its choices (a prefix
 * choice "burn:" by its prefix): then --help does not list them again. */
static int help_names_choices(const cm_opt_t *o) {
  if (o->help == NULL) return 0;
  for (size_t i = 0; o->choices[i] != NULL; i++)
    if (strstr(o->help, o->choices[i]) == NULL) return 0;
  return 1;
}

static int flag_only(const cm_opt_t *o) { return o->env_fallback == CM_OPT_FLAG_ONLY; }

/* Width of the flag column: the longest "--name VALUE", at least "-h, --help". */
static int flag_width(const cm_opt_t *opts, size_t n) {
  char head[160];
  int width = (int)strlen("-h, --help");
  for (size_t i = 0; i < n; i++) {
    int w = snprintf(head, sizeof head, "--%s %s", opts[i].name, type_meta(&opts[i]));
    if (w > width && w < (int)sizeof head) width = w;
  }
  return width;
}

static void print_options(const cm_opt_t *opts, size_t n, int width, FILE *out) {
  char head[160], env[CM_ENV_NAME_MAX], list[512];
  for (size_t i = 0; i < n; i++) {
    const cm_opt_t *o = &opts[i];
    if (o->type == CM_OPT_BOOL)
      snprintf(head, sizeof head, "--%s", o->name);
    else
      snprintf(head, sizeof head, "--%s %s", o->name, type_meta(o));
    if (env_name(o->name, env, sizeof env) < 0) env[0] = '\0';

    fprintf(out, "  %-*s   %s", width, head, o->help != NULL ? o->help : "");
    if (o->choices != NULL && !help_names_choices(o)) {
      fmt_choices(list, sizeof list, o->choices);
      fprintf(out, " [%s]", list);
    }
    if (flag_only(o)) {
      fprintf(out, " (flag only");
    } else {
      fprintf(out, " (env %s", env);
      if (o->env_fallback != NULL) fprintf(out, " or %s", o->env_fallback);
    }
    if (o->def != NULL)
      fprintf(out, "%sdefault: %s", flag_only(o) ? "; " : ", ",
              is_secret(o->name) ? "(hidden)" : o->def);
    fprintf(out, ")\n");
  }
}

void cm_config_print_options(const cm_opt_t *opts, size_t n, FILE *out) {
  print_options(opts, n, flag_width(opts, n), out);
}

static void usage(const cm_opt_t *opts, size_t n, const char *prog, const char *summary,
                  FILE *out) {
  int width = flag_width(opts, n);
  fprintf(out, "%s - %s\n\nUsage: %s [OPTIONS]\n\nOptions (flags win over the environment):\n",
          prog, summary != NULL ? summary : "", prog);
  print_options(opts, n, width, out);
  fprintf(out, "  %-*s   show this help and exit\n", width, "-h, --help");
  fprintf(out, "  %-*s   print the program's name and version and exit\n", width, "--version");
}

static const cm_opt_t *find_opt(const cm_opt_t *opts, size_t n, const char *name, size_t len,
                                size_t *idx) {
  for (size_t i = 0; i < n; i++) {
    if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
      *idx = i;
      return &opts[i];
    }
  }
  return NULL;
}

int cm_config_parse(const cm_opt_t *opts, size_t n, int argc, char **argv, const char *prog,
                    const char *summary, FILE *out, FILE *err) {
  /* flagval[i]: the value given on the command line for opts[i], if any. */
  const char **flagval = NULL;
  int rc = 0;

  if (prog == NULL) prog = "chunkmill";
  if (n > 0) {
    flagval = calloc(n, sizeof *flagval);
    if (flagval == NULL) return -ENOMEM;
  }

  /* Pass 1: the command line. Only syntax here; values are checked below so
   * that every value, whatever its source, goes through the same code. */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(opts, n, prog, summary, out);
      rc = 1;
      goto done;
    }
    if (strcmp(a, "--version") == 0) {
      rc = 2;
      goto done;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      fprintf(err, "%s: unexpected argument \"%s\" (options are --name VALUE; see --help)\n",
              prog, a);
      rc = -EINVAL;
      goto fail;
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
    size_t idx = 0;
    const cm_opt_t *o = find_opt(opts, n, name, nlen, &idx);
    if (o == NULL) {
      fprintf(err, "%s: unknown option --%.*s (see --help)\n", prog, (int)nlen, name);
      rc = -EINVAL;
      goto fail;
    }
    if (eq != NULL) {
      flagval[idx] = eq + 1;
    } else if (o->type == CM_OPT_BOOL) {
      /* A bare boolean flag never takes the next argument: "--once x" would
       * otherwise silently change meaning with x. */
      flagval[idx] = "true";
    } else if (i + 1 < argc) {
      flagval[idx] = argv[++i];
    } else {
      fprintf(err, "%s: missing value for --%s\n", prog, o->name);
      rc = -EINVAL;
      goto fail;
    }
  }

  /* Pass 2: resolve each option's source and store its value. */
  for (size_t i = 0; i < n; i++) {
    const cm_opt_t *o = &opts[i];
    char env[CM_ENV_NAME_MAX];
    src_t src = {SRC_DEFAULT, NULL};
    const char *value = o->def;

    if (o->target == NULL || o->name == NULL) {
      fprintf(err, "%s: option table row %zu has no name or target\n", prog, i);
      rc = -EINVAL;
      goto fail;
    }
    if (env_name(o->name, env, sizeof env) < 0) {
      fprintf(err, "%s: option name --%s is too long\n", prog, o->name);
      rc = -EINVAL;
      goto fail;
    }

    const char *ev = flag_only(o) ? NULL : getenv(env);
    const char *fb = o->env_fallback != NULL && !flag_only(o) ? getenv(o->env_fallback) : NULL;
    if (flagval[i] != NULL) {
      value = flagval[i];
      src.kind = SRC_FLAG;
    } else if (ev != NULL && ev[0] != '\0') {
      value = ev;
      src.kind = SRC_ENV;
      src.env = env;
    } else if (fb != NULL && fb[0] != '\0') {
      value = fb;
      src.kind = SRC_ENV;
      src.env = o->env_fallback;
    }

    rc = apply(o, value, &src, prog, err);
    if (rc < 0) goto fail;
  }
  rc = 0;

done:
fail:
  free(flagval);
  return rc;
}

int cm_config_common_opts(cm_common_cfg_t *cfg, cm_opt_t *out, size_t cap) {
  static const char *const protocols[] = {"native", "app9", NULL};
  static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
  const cm_opt_t rows[CM_COMMON_OPTS_N] = {
      {"nats-url", CM_OPT_STRING, "nats://127.0.0.1:4222", 0, 0, NULL, "NATS_URL",
       "NATS server URL(s), comma separated", &cfg->nats_url},
      {"prefix", CM_OPT_STRING, "chunkmill", 0, 0, NULL, NULL, "subject prefix", &cfg->prefix},
      {"http", CM_OPT_STRING, ":8080", 0, 0, NULL, NULL,
       "probe/metrics HTTP address, HOST:PORT or :PORT", &cfg->http_addr},
      {"protocol", CM_OPT_STRING, "native", 0, 0, protocols, NULL, "wire protocol",
       &cfg->protocol},
      {"log-level", CM_OPT_STRING, "info", 0, 0, levels, NULL, "lowest level logged",
       &cfg->log_level},
      {"id", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "instance id; unset: <role>-<host>-<pid>", &cfg->id},
      {"version-label", CM_OPT_STRING, "dev", 0, 0, NULL, NULL,
       "version reported in heartbeats and metrics; a mapper's is also stored with each chunk "
       "it produces (chunks.version)",
       &cfg->version},
      {"probe", CM_OPT_STRING, NULL, 0, 0, NULL, NULL,
       "probe mode: GET PATH on --http, exit 0 if it answers 200", &cfg->probe},
      {"nats-user", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "NATS user name", &cfg->nats_user},
      {"nats-password", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "NATS password",
       &cfg->nats_password},
      {"nats-token", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "NATS token", &cfg->nats_token},
      {"nats-creds", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "NATS credentials file",
       &cfg->nats_creds},
      {"nats-ca", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "TLS CA certificate file",
       &cfg->nats_ca},
      {"nats-cert", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "TLS client certificate file",
       &cfg->nats_cert},
      {"nats-key", CM_OPT_STRING, NULL, 0, 0, NULL, NULL, "TLS client key file",
       &cfg->nats_key},
      {"drain-timeout", CM_OPT_DURATION, "25s", 0, 3600000, NULL, NULL,
       "time allowed to finish in-flight work on SIGTERM", &cfg->drain_timeout_ms},
      {"heartbeat", CM_OPT_DURATION, "1s", 50, 60000, NULL, NULL, "heartbeat period",
       &cfg->heartbeat_ms},
  };

  if (cfg == NULL || out == NULL) return -EINVAL;
  if (cap < CM_COMMON_OPTS_N) return -ENOSPC;
  memcpy(out, rows, sizeof rows);
  return CM_COMMON_OPTS_N;
}

int cm_config_nats_opts(cm_common_cfg_t *cfg, cm_opt_t *out, size_t cap) {
  static const char *const names[CM_NATS_OPTS_N] = {
      "nats-url",  "prefix",  "nats-user", "nats-password", "nats-token",
      "nats-creds", "nats-ca", "nats-cert", "nats-key"};
  cm_opt_t all[CM_COMMON_OPTS_N];
  size_t k = 0;

  if (cfg == NULL || out == NULL) return -EINVAL;
  if (cap < CM_NATS_OPTS_N) return -ENOSPC;
  if (cm_config_common_opts(cfg, all, CM_COMMON_OPTS_N) < 0) return -EINVAL;
  /* In the daemons' order, so --help lists them the same way. */
  for (size_t i = 0; i < CM_COMMON_OPTS_N; i++)
    for (size_t j = 0; j < CM_NATS_OPTS_N; j++)
      if (strcmp(all[i].name, names[j]) == 0) out[k++] = all[i];
  return k == CM_NATS_OPTS_N ? (int)k : -EINVAL;
}
