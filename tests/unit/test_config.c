/* test_config.c - flags vs environment vs defaults, value checking, errors
 * that name the option, --help. `err`/`out` are captured with open_memstream. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/config.h"

/* A stream whose text can be read back after fflush. */
typedef struct {
  FILE *f;
  char *buf;
  size_t len;
} cap_t;

static void cap_open(cap_t *c) {
  c->buf = NULL;
  c->len = 0;
  c->f = open_memstream(&c->buf, &c->len);
  assert_non_null(c->f);
}

static const char *cap_text(cap_t *c) {
  fflush(c->f);
  return c->buf != NULL ? c->buf : "";
}

static void cap_close(cap_t *c) {
  fclose(c->f);
  free(c->buf);
}

static const char *const env_vars[] = {
    "CHUNKMILL_NATS_URL", "NATS_URL",           "CHUNKMILL_PREFIX",        "CHUNKMILL_HEARTBEAT",
    "CHUNKMILL_CHUNK_SIZE", "CHUNKMILL_ONCE",  "CHUNKMILL_TRANSFORM",      "CHUNKMILL_RATIO",
    "CHUNKMILL_NATS_PASSWORD", "CHUNKMILL_DRAIN_TIMEOUT", "CHUNKMILL_LOG_LEVEL",
    "CHUNKMILL_RECORDS", "CHUNKMILL_NATS_USER", NULL};

static int clean_env(void **state) {
  for (size_t i = 0; env_vars[i] != NULL; i++) unsetenv(env_vars[i]);
  return 0;
}

/* Runs cm_config_parse over a NULL-terminated argument list. */
static int parse(const cm_opt_t *opts, size_t n, cap_t *out, cap_t *err, ...) {
  char *argv[32];
  int argc = 0;
  va_list ap;
  argv[argc++] = "prog";
  va_start(ap, err);
  for (char *a = va_arg(ap, char *); a != NULL && argc < 31; a = va_arg(ap, char *))
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  return cm_config_parse(opts, n, argc, argv, "fetcher", "test daemon", out->f, err->f);
}

typedef struct {
  cm_common_cfg_t common;
  int64_t chunk_size;
  bool once;
  const char *transform;
  double ratio;
  cm_opt_t opts[CM_COMMON_OPTS_N + 8];
  size_t n;
} cfg_t;

static void cfg_init(cfg_t *c) {
  static const char *const transforms[] = {"identity", "fullname", "burn:", NULL};
  memset(c, 0, sizeof *c);
  int n = cm_config_common_opts(&c->common, c->opts, sizeof c->opts / sizeof c->opts[0]);
  assert_int_equal(n, CM_COMMON_OPTS_N);
  c->n = (size_t)n;
  c->opts[c->n++] = (cm_opt_t){"chunk-size", CM_OPT_INT, "100", 1, 100000, NULL, NULL,
                               "records per chunk", &c->chunk_size};
  c->opts[c->n++] =
      (cm_opt_t){"once", CM_OPT_BOOL, "false", 0, 0, NULL, NULL, "exit when done", &c->once};
  c->opts[c->n++] = (cm_opt_t){"transform", CM_OPT_STRING, "identity", 0, 0, transforms, NULL,
                               "transform", &c->transform};
  c->opts[c->n++] =
      (cm_opt_t){"ratio", CM_OPT_DOUBLE, "0.5", 0, 1, NULL, NULL, "a ratio", &c->ratio};
}

static void test_common_defaults(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), 0);
  assert_string_equal(c.common.nats_url, "nats://127.0.0.1:4222");
  assert_string_equal(c.common.prefix, "chunkmill");
  assert_string_equal(c.common.http_addr, ":8080");
  assert_string_equal(c.common.protocol, "native");
  assert_string_equal(c.common.log_level, "info");
  assert_string_equal(c.common.version, "dev");
  assert_null(c.common.id);
  assert_null(c.common.probe);
  assert_null(c.common.nats_user);
  assert_null(c.common.nats_password);
  assert_null(c.common.nats_token);
  assert_null(c.common.nats_creds);
  assert_null(c.common.nats_ca);
  assert_null(c.common.nats_cert);
  assert_null(c.common.nats_key);
  assert_int_equal(c.common.drain_timeout_ms, 25000);
  assert_int_equal(c.common.heartbeat_ms, 1000);
  assert_int_equal(c.chunk_size, 100);
  assert_false(c.once);
  assert_string_equal(c.transform, "identity");
  assert_true(c.ratio == 0.5);
  assert_string_equal(cap_text(&err), "");

  /* Too small a table. */
  cm_opt_t few[3];
  assert_int_equal(cm_config_common_opts(&c.common, few, 3), -ENOSPC);
  cap_close(&out);
  cap_close(&err);
}

static void test_flags_beat_env(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  setenv("CHUNKMILL_PREFIX", "fromenv", 1);
  setenv("CHUNKMILL_CHUNK_SIZE", "7", 1);
  setenv("CHUNKMILL_NATS_URL", "nats://env:1", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--prefix", "fromflag", "--chunk-size=9", NULL),
                   0);
  assert_string_equal(c.common.prefix, "fromflag");
  assert_int_equal(c.chunk_size, 9);
  assert_string_equal(c.common.nats_url, "nats://env:1"); /* env beats default */

  /* The last flag wins. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--prefix", "a", "--prefix=b", NULL), 0);
  assert_string_equal(c.common.prefix, "b");
  cap_close(&out);
  cap_close(&err);
}

static void test_env_fallback(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  setenv("NATS_URL", "nats://fallback:4222", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), 0);
  assert_string_equal(c.common.nats_url, "nats://fallback:4222");

  /* CHUNKMILL_NATS_URL comes before NATS_URL... */
  setenv("CHUNKMILL_NATS_URL", "nats://primary:4222", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), 0);
  assert_string_equal(c.common.nats_url, "nats://primary:4222");
  /* ...but an empty one counts as unset. */
  setenv("CHUNKMILL_NATS_URL", "", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), 0);
  assert_string_equal(c.common.nats_url, "nats://fallback:4222");
  /* And a flag beats both. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--nats-url", "nats://flag:1", NULL), 0);
  assert_string_equal(c.common.nats_url, "nats://flag:1");
  cap_close(&out);
  cap_close(&err);
}

static void test_durations(void **state) {
  static const struct {
    const char *text;
    int64_t ms;
  } ok[] = {{"250ms", 250}, {"5s", 5000}, {"2m", 120000},  {"1h", 3600000},
            {"3", 3000},    {"1.5", 1500}, {"0.25s", 250}, {"0", 0}};
  cfg_t c;
  cap_t out, err;
  char flag[64];
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    snprintf(flag, sizeof flag, "--drain-timeout=%s", ok[i].text);
    assert_int_equal(parse(c.opts, c.n, &out, &err, flag, NULL), 0);
    assert_int_equal(c.common.drain_timeout_ms, ok[i].ms);
  }
  static const char *const bad[] = {"5x", "s", "", "abc", "inf", "nan", "1e400", "5 s", NULL};
  for (size_t i = 0; bad[i] != NULL; i++) {
    assert_int_equal(parse(c.opts, c.n, &out, &err, "--drain-timeout", bad[i], NULL), -EINVAL);
  }
  assert_non_null(strstr(cap_text(&err), "--drain-timeout"));
  cap_close(&out);
  cap_close(&err);
}

static void test_bounds_name_the_option(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);

  /* Duration below its minimum, from a flag. */
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--heartbeat", "10ms", NULL), -EINVAL);
  assert_string_equal(cap_text(&err),
                      "fetcher: invalid value \"10ms\" for --heartbeat: out of range (50ms..1m)\n");
  cap_close(&err);

  /* Integer above its maximum, from the environment: names the variable. */
  cap_open(&err);
  setenv("CHUNKMILL_CHUNK_SIZE", "1000000", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), -EINVAL);
  assert_string_equal(cap_text(&err),
                      "fetcher: invalid value \"1000000\" for --chunk-size (CHUNKMILL_CHUNK_SIZE "
                      "from the environment): out of range (1..100000)\n");
  cap_close(&err);

  /* Not an integer. */
  cap_open(&err);
  setenv("CHUNKMILL_CHUNK_SIZE", "abc", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "not an integer"));
  assert_non_null(strstr(cap_text(&err), "CHUNKMILL_CHUNK_SIZE"));
  cap_close(&err);
  unsetenv("CHUNKMILL_CHUNK_SIZE");

  /* Double bounds, and bad booleans. */
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--ratio", "1.5", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "--ratio"));
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--once=maybe", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "--once"));
  cap_close(&err);

  /* Exactly one line per error. */
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--chunk-size", "0", NULL), -EINVAL);
  int lines = 0;
  for (const char *t = cap_text(&err); *t != '\0'; t++) lines += *t == '\n';
  assert_int_equal(lines, 1);
  cap_close(&err);
  cap_close(&out);
}

static void test_choices(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--transform", "burn:5", NULL), 0);
  assert_string_equal(c.transform, "burn:5");
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--transform=fullname", NULL), 0);
  assert_string_equal(c.transform, "fullname");
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--protocol", "app9", NULL), 0);
  assert_string_equal(c.common.protocol, "app9");

  /* A bare prefix, a near miss, an unknown value. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--transform", "burn:", NULL), -EINVAL);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--transform", "burn", NULL), -EINVAL);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--protocol", "http", NULL), -EINVAL);
  const char *t = cap_text(&err);
  assert_non_null(strstr(t, "invalid value \"http\" for --protocol: not one of native|app9"));
  assert_non_null(strstr(t, "--transform"));

  setenv("CHUNKMILL_LOG_LEVEL", "loud", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "CHUNKMILL_LOG_LEVEL from the environment"));
  cap_close(&out);
  cap_close(&err);
}

static void test_bool_flag(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--once", NULL), 0);
  assert_true(c.once);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--once=no", NULL), 0);
  assert_false(c.once);
  setenv("CHUNKMILL_ONCE", "yes", 1);
  assert_int_equal(parse(c.opts, c.n, &out, &err, NULL), 0);
  assert_true(c.once);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--once=off", NULL), 0);
  assert_false(c.once);
  /* A bare bool flag does not swallow the next argument. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--once", "false", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "unexpected argument \"false\""));
  cap_close(&out);
  cap_close(&err);
}

static void test_unknown_and_stray(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--bogus", "1", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "unknown option --bogus"));
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--bogus=1", NULL), -EINVAL);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "stray", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "unexpected argument \"stray\""));
  assert_int_equal(parse(c.opts, c.n, &out, &err, "-x", NULL), -EINVAL);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--prefix", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "missing value for --prefix"));
  /* Prefixes of option names are not accepted. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--pre", "x", NULL), -EINVAL);
  assert_string_equal(cap_text(&out), "");
  cap_close(&out);
  cap_close(&err);
}

static void test_secrets_not_echoed(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cm_opt_t opts[2] = {
      {"nats-password", CM_OPT_INT, NULL, 0, 0, NULL, NULL, "pw", &c.chunk_size},
      {"api-token", CM_OPT_STRING, NULL, 0, 0, (const char *const[]){"a", NULL}, NULL, "t",
       &c.transform},
  };
  cap_open(&out);
  cap_open(&err);
  setenv("CHUNKMILL_NATS_PASSWORD", "hunter2", 1);
  assert_int_equal(parse(opts, 2, &out, &err, NULL), -EINVAL);
  assert_int_equal(parse(opts, 2, &out, &err, "--nats-password=0", "--api-token", "s3cret", NULL),
                   -EINVAL);
  const char *t = cap_text(&err);
  assert_non_null(strstr(t, "--nats-password"));
  assert_non_null(strstr(t, "--api-token"));
  assert_null(strstr(t, "hunter2"));
  assert_null(strstr(t, "s3cret"));

  /* The real common options parse a secret and keep it. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--nats-token", "tok", NULL), 0);
  assert_string_equal(c.common.nats_token, "tok");
  assert_string_equal(c.common.nats_password, "hunter2");
  cap_close(&out);
  cap_close(&err);
}

static void test_help(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--prefix", "x", "--help", NULL), 1);
  const char *t = cap_text(&out);
  assert_non_null(strstr(t, "test daemon"));
  /* Every option, with its env var; defaults where there are some. */
  for (size_t i = 0; i < c.n; i++) {
    char needle[128];
    snprintf(needle, sizeof needle, "--%s ", c.opts[i].name);
    assert_non_null(strstr(t, needle));
  }
  assert_non_null(strstr(t, "(env CHUNKMILL_NATS_URL or NATS_URL, default: nats://127.0.0.1:4222)"));
  assert_non_null(strstr(t, "(env CHUNKMILL_DRAIN_TIMEOUT, default: 25s)"));
  assert_non_null(strstr(t, "(env CHUNKMILL_VERSION_LABEL, default: dev)"));
  assert_non_null(strstr(t, "(env CHUNKMILL_CHUNK_SIZE, default: 100)"));
  assert_non_null(strstr(t, "[native|app9]"));
  assert_non_null(strstr(t, "(env CHUNKMILL_ID)"));
  assert_non_null(strstr(t, "  --http VALUE "));
  assert_string_equal(cap_text(&err), "");

  cap_close(&out);
  cap_open(&out);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "-h", NULL), 1);
  assert_non_null(strstr(cap_text(&out), "--heartbeat DURATION"));
  cap_close(&out);
  cap_close(&err);
}

/* --version: return 2 and print nothing (the daemon prints its name and
 * version), wherever it stands; it is listed in --help. */
static void test_version(void **state) {
  cfg_t c;
  cap_t out, err;
  cfg_init(&c);
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--version", NULL), 2);
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--prefix", "x", "--version", NULL), 2);
  assert_string_equal(cap_text(&out), "");
  assert_string_equal(cap_text(&err), "");
  /* "--version" as the value of an option is that value. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--prefix", "--version", NULL), 0);
  assert_string_equal(c.common.prefix, "--version");
  /* --version-label is still its own option. */
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--version-label", "v2", NULL), 0);
  assert_string_equal(c.common.version, "v2");
  assert_int_equal(parse(c.opts, c.n, &out, &err, "--help", NULL), 1);
  assert_non_null(strstr(cap_text(&out), "  --version "));
  cap_close(&out);
  cap_close(&err);
}

/* An option whose help text already names its choices does not get them
 * listed a second time; one whose text does not gets the list. */
static void test_help_choices_once(void **state) {
  static const char *const modes[] = {"fast", "slow:", NULL};
  const char *a = NULL, *b = NULL;
  cm_opt_t opts[] = {
      {"named", CM_OPT_STRING, "fast", 0, 0, modes, NULL, "fast | slow:N (a delay)", &a},
      {"unnamed", CM_OPT_STRING, "fast", 0, 0, modes, NULL, "how to run", &b},
  };
  cap_t out, err;
  cap_open(&out);
  cap_open(&err);
  assert_int_equal(parse(opts, 2, &out, &err, "--help", NULL), 1);
  const char *t = cap_text(&out);
  const char *named = strstr(t, "--named ");
  const char *unnamed = strstr(t, "--unnamed ");
  assert_non_null(named);
  assert_non_null(unnamed);
  const char *eol = strchr(named, '\n');
  assert_non_null(eol);
  char line[512];
  snprintf(line, sizeof line, "%.*s", (int)(eol - named), named);
  assert_non_null(strstr(line, "fast | slow:N (a delay) (env CHUNKMILL_NAMED"));
  assert_null(strstr(line, "[fast"));
  assert_non_null(strstr(unnamed, "how to run [fast|slow:...] (env CHUNKMILL_UNNAMED"));
  cap_close(&out);
  cap_close(&err);
}

/* A CM_OPT_FLAG_ONLY row ignores CHUNKMILL_<NAME> (a daemon's environment
 * must not become a CLI's job spec) while the others still read theirs;
 * --help says "flag only" instead of naming a variable. */
static void test_flag_only(void **state) {
  int64_t records = -1;
  const char *url = NULL;
  cm_opt_t opts[] = {
      {"records", CM_OPT_INT, NULL, 0, 1000, NULL, CM_OPT_FLAG_ONLY, "records", &records},
      {"nats-url", CM_OPT_STRING, "nats://d:1", 0, 0, NULL, NULL, "url", &url},
  };
  cap_t out, err;
  cap_open(&out);
  cap_open(&err);
  setenv("CHUNKMILL_RECORDS", "7", 1);
  setenv("CHUNKMILL_NATS_URL", "nats://env:1", 1);
  assert_int_equal(parse(opts, 2, &out, &err, NULL), 0);
  assert_int_equal(records, 0); /* NULL default, the variable not read */
  assert_string_equal(url, "nats://env:1");
  assert_int_equal(parse(opts, 2, &out, &err, "--records", "9", NULL), 0);
  assert_int_equal(records, 9);
  /* Checked like any other value. */
  assert_int_equal(parse(opts, 2, &out, &err, "--records", "9999", NULL), -EINVAL);
  assert_non_null(strstr(cap_text(&err), "--records"));
  assert_int_equal(parse(opts, 2, &out, &err, "--help", NULL), 1);
  assert_non_null(strstr(cap_text(&out), "records (flag only)"));
  assert_null(strstr(cap_text(&out), "CHUNKMILL_RECORDS"));
  assert_non_null(strstr(cap_text(&out), "url (env CHUNKMILL_NATS_URL, default: nats://d:1)"));
  cap_close(&out);
  cap_open(&out);
  cm_config_print_options(opts, 2, out.f);
  assert_non_null(strstr(cap_text(&out), "  --records N "));
  assert_null(strstr(cap_text(&out), "--help"));
  cap_close(&out);
  cap_close(&err);
}

/* The NATS subset is the daemons' rows, unchanged (names, environment,
 * defaults), and only those. */
static void test_nats_opts(void **state) {
  cm_common_cfg_t common, sub;
  cm_opt_t all[CM_COMMON_OPTS_N], nats[CM_NATS_OPTS_N];
  cap_t out, err;
  memset(&common, 0, sizeof common);
  memset(&sub, 0, sizeof sub);
  assert_int_equal(cm_config_common_opts(&common, all, CM_COMMON_OPTS_N), CM_COMMON_OPTS_N);
  assert_int_equal(cm_config_nats_opts(&sub, nats, CM_NATS_OPTS_N), CM_NATS_OPTS_N);
  assert_int_equal(cm_config_nats_opts(&sub, nats, CM_NATS_OPTS_N - 1), -ENOSPC);
  for (size_t i = 0; i < CM_NATS_OPTS_N; i++) {
    const cm_opt_t *same = NULL;
    for (size_t j = 0; j < CM_COMMON_OPTS_N; j++)
      if (strcmp(all[j].name, nats[i].name) == 0) same = &all[j];
    assert_non_null(same);
    assert_true(strcmp(nats[i].name, "prefix") == 0 || strncmp(nats[i].name, "nats-", 5) == 0);
    assert_int_equal(same->type, nats[i].type);
    assert_true(same->env_fallback == nats[i].env_fallback);
    assert_true((same->def == NULL) == (nats[i].def == NULL));
    if (same->def != NULL) assert_string_equal(same->def, nats[i].def);
  }
  cap_open(&out);
  cap_open(&err);
  setenv("CHUNKMILL_NATS_USER", "ops", 1);
  setenv("NATS_URL", "nats://fb:2", 1);
  assert_int_equal(parse(nats, CM_NATS_OPTS_N, &out, &err, "--prefix", "p", NULL), 0);
  assert_string_equal(sub.nats_user, "ops");
  assert_string_equal(sub.nats_url, "nats://fb:2");
  assert_string_equal(sub.prefix, "p");
  assert_null(sub.http_addr); /* not a row of the subset: untouched */
  /* A daemon-only option is unknown here. */
  assert_int_equal(parse(nats, CM_NATS_OPTS_N, &out, &err, "--heartbeat", "1s", NULL), -EINVAL);
  cap_close(&out);
  cap_close(&err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_flag_only, clean_env),
      cmocka_unit_test_setup(test_nats_opts, clean_env),
      cmocka_unit_test_setup(test_version, clean_env),
      cmocka_unit_test_setup(test_help_choices_once, clean_env),
      cmocka_unit_test_setup(test_common_defaults, clean_env),
      cmocka_unit_test_setup(test_flags_beat_env, clean_env),
      cmocka_unit_test_setup(test_env_fallback, clean_env),
      cmocka_unit_test_setup(test_durations, clean_env),
      cmocka_unit_test_setup(test_bounds_name_the_option, clean_env),
      cmocka_unit_test_setup(test_choices, clean_env),
      cmocka_unit_test_setup(test_bool_flag, clean_env),
      cmocka_unit_test_setup(test_unknown_and_stray, clean_env),
      cmocka_unit_test_setup(test_secrets_not_echoed, clean_env),
      cmocka_unit_test_setup(test_help, clean_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
