/* tmpdir.h - private temporary directories for the unit tests, removed with
 * everything in them however the test ends.
 *
 * cm_test_mkdtemp() creates "$TMPDIR/<name>-XXXXXX" (TMPDIR unset or empty:
 * /tmp; ctest sets it to a folder in the build tree) and registers it; the
 * caller's teardown removes it with cm_test_rmtree(), and an atexit handler
 * removes every registered directory still present when the test binary
 * exits - also after a failed setup, whose teardown cmocka never runs. (A
 * crash or a kill skips atexit: then what is left stays under ctest's
 * TMPDIR in the build tree, not in /tmp.)
 *
 * CM_TEST_FORCE_FAIL=1 in the environment makes cm_test_mkdtemp() put a file
 * into the new directory and fail the test there: tests/integration/
 * test_tmp_cleanup.py uses it to prove that a failing run leaves nothing.
 *
 * Include after <cmocka.h>. */
#ifndef CM_TEST_TMPDIR_H
#define CM_TEST_TMPDIR_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CM_TEST_TMPDIRS_MAX 256
#define CM_TEST_PATH_MAX 256

static char cm__test_tmpdirs[CM_TEST_TMPDIRS_MAX][CM_TEST_PATH_MAX];
static int cm__test_ntmpdirs;

/* Removes path and, for a directory, everything below it (symlinks are
 * removed, never followed). A path that does not exist is no error. Returns
 * 0 or -errno of the first failure. */
static inline int cm_test_rmtree(const char *path) {
  struct stat st;
  int rc = 0;
  if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -errno;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    struct dirent *e;
    if (d == NULL) return -errno;
    while ((e = readdir(d)) != NULL) {
      char child[CM_TEST_PATH_MAX];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) {
        rc = rc != 0 ? rc : -ENAMETOOLONG;
        continue;
      }
      int crc = cm_test_rmtree(child);
      if (crc != 0 && rc == 0) rc = crc;
    }
    closedir(d);
    if (rmdir(path) != 0 && rc == 0) rc = -errno;
    return rc;
  }
  return unlink(path) == 0 ? 0 : -errno;
}

static inline void cm__test_rm_registered(void) {
  for (int i = 0; i < cm__test_ntmpdirs; i++) {
    int rc = cm_test_rmtree(cm__test_tmpdirs[i]);
    if (rc != 0)
      fprintf(stderr, "cannot remove test directory %s: %s\n", cm__test_tmpdirs[i], strerror(-rc));
  }
  cm__test_ntmpdirs = 0;
}

/* Creates the directory into buf[0..cap) and registers it for removal at
 * exit; fails the test (naming the path) if it cannot. */
static inline void cm_test_mkdtemp(char *buf, size_t cap, const char *name) {
  static int registered;
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0') base = "/tmp";
  if (snprintf(buf, cap, "%s/%s-XXXXXX", base, name) >= (int)cap)
    fail_msg("temporary directory name too long: %s/%s-XXXXXX", base, name);
  if (cm__test_ntmpdirs == CM_TEST_TMPDIRS_MAX || strlen(buf) >= CM_TEST_PATH_MAX)
    fail_msg("too many or too long temporary directories (%s)", buf);
  if (!registered) {
    if (atexit(cm__test_rm_registered) != 0) fail_msg("atexit failed");
    registered = 1;
  }
  if (mkdtemp(buf) == NULL) fail_msg("cannot create a directory like %s: %s", buf, strerror(errno));
  snprintf(cm__test_tmpdirs[cm__test_ntmpdirs++], CM_TEST_PATH_MAX, "%s", buf);

  const char *force = getenv("CM_TEST_FORCE_FAIL");
  if (force != NULL && force[0] != '\0' && strcmp(force, "0") != 0) {
    char p[CM_TEST_PATH_MAX + 16];
    FILE *f;
    snprintf(p, sizeof p, "%s/forced", buf);
    f = fopen(p, "w");
    if (f != NULL) fclose(f);
    fail_msg("forced failure (CM_TEST_FORCE_FAIL is set) with %s in place", p);
  }
}

#endif
