/* log.h - one JSON object per line on stderr.
 *
 *   {"ts":"2026-11-22T06:01:02.345Z","level":"info","daemon":"fetcher",
 *    "id":"fetcher-1","msg":"..."}
 *
 * The level is checked before the arguments are evaluated (CM_LOG macro).
 * Each line is written with a single write(2), so lines from several threads
 * never interleave. Never pass secrets (passwords, tokens) to the logger. */
#ifndef CM_LOG_H
#define CM_LOG_H

typedef enum {
  CM_LOG_DEBUG = 0,
  CM_LOG_INFO = 1,
  CM_LOG_WARN = 2,
  CM_LOG_ERROR = 3,
} cm_log_level_t;

extern cm_log_level_t cm__log_level;

/* daemon: "fetcher" | "mapper" | "saver"; id: instance id. Both copied. */
void cm_log_init(const char *daemon, const char *id, cm_log_level_t level);
/* "debug" | "info" | "warn" | "error" -> 0, else -EINVAL. */
int cm_log_level_parse(const char *s, cm_log_level_t *out);
void cm_log_write(cm_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Test hook: write to `fd` instead of stderr (2). */
void cm_log_set_fd(int fd);

#define CM_LOG(lvl, ...)                                                       \
  do {                                                                         \
    if ((lvl) >= cm__log_level) cm_log_write((lvl), __VA_ARGS__);              \
  } while (0)
#define cm_log_debug(...) CM_LOG(CM_LOG_DEBUG, __VA_ARGS__)
#define cm_log_info(...) CM_LOG(CM_LOG_INFO, __VA_ARGS__)
#define cm_log_warn(...) CM_LOG(CM_LOG_WARN, __VA_ARGS__)
#define cm_log_error(...) CM_LOG(CM_LOG_ERROR, __VA_ARGS__)

#endif
