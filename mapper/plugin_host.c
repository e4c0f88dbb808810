/* plugin_host.c - dlopen a transform plugin, check its ABI, pool its states
 * (see plugin_host.h and include/chunkmill/plugin.h). */
#include "cm/err.h"
#include "plugin_host.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkmill/plugin.h"
#include "cm/log.h"

#define CM__PLUGIN_MAX_STATES 512

typedef int (*cm__abi_fn)(void);
typedef void *(*cm__init_fn)(const char *, char *, size_t);
typedef int (*cm__record_fn)(void *, const char *, size_t, char **, size_t *, char *, size_t);
typedef void (*cm__destroy_fn)(void *);

struct cm_plugin_s {
  void *dl;
  char *path;
  char *arg;
  cm__init_fn init;
  cm__record_fn record;
  cm__destroy_fn destroy;
  pthread_mutex_t mu;
  void *st[CM__PLUGIN_MAX_STATES];
  bool busy[CM__PLUGIN_MAX_STATES];
  int n;
};


/* dlsym returns void *; a function pointer is converted through memcpy
 * (ISO C leaves the direct cast undefined, -Wpedantic warns). */
static int sym(void *dl, const char *name, void *fn, size_t fnsize) {
  void *p = dlsym(dl, name);
  if (p == NULL) return -ENOENT;
  memcpy(fn, &p, fnsize);
  return 0;
}

static void *new_state(cm_plugin_t *p, char *err, size_t errlen) {
  char perr[256] = "";
  void *s = p->init(p->arg, perr, sizeof perr);
  if (s == NULL)
    cm_set_err(err, errlen, "plugin %s: cm_transform_init failed: %s", p->path,
            perr[0] ? perr : "(no reason given)");
  return s;
}

int cm_plugin_load(cm_plugin_t **out, const char *path, const char *arg, char *err,
                   size_t errlen) {
  cm_plugin_t *p = NULL;
  cm__abi_fn abi = NULL;
  int rc = -ENOMEM, v;
  const char *missing = NULL;

  *out = NULL;
  if (path == NULL || *path == '\0') {
    cm_set_err(err, errlen, "plugin: no path given (plugin:PATH.so)");
    return -EINVAL;
  }
  if ((p = calloc(1, sizeof *p)) == NULL || (p->path = strdup(path)) == NULL ||
      (p->arg = strdup(arg ? arg : "")) == NULL) {
    cm_set_err(err, errlen, "plugin: out of memory");
    goto fail_early;
  }
  if (pthread_mutex_init(&p->mu, NULL) != 0) goto fail_early;
  p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (p->dl == NULL) {
    const char *why = dlerror();
    cm_set_err(err, errlen, "plugin %s: cannot load: %s", path, why ? why : "unknown error");
    rc = -ENOENT;
    goto fail;
  }
  if (sym(p->dl, "cm_transform_abi_version", &abi, sizeof abi) < 0)
    missing = "cm_transform_abi_version";
  else if ((v = abi()) != CM_PLUGIN_ABI_VERSION) {
    cm_set_err(err, errlen, "plugin %s has ABI version %d; this mapper supports %d", path, v,
            CM_PLUGIN_ABI_VERSION);
    rc = -EPROTO;
    goto fail;
  } else if (sym(p->dl, "cm_transform_init", &p->init, sizeof p->init) < 0)
    missing = "cm_transform_init";
  else if (sym(p->dl, "cm_transform_record", &p->record, sizeof p->record) < 0)
    missing = "cm_transform_record";
  else if (sym(p->dl, "cm_transform_destroy", &p->destroy, sizeof p->destroy) < 0)
    missing = "cm_transform_destroy";
  if (missing) {
    cm_set_err(err, errlen, "plugin %s does not export %s (see chunkmill/plugin.h)", path, missing);
    rc = -ENOENT;
    goto fail;
  }
  if ((p->st[0] = new_state(p, err, errlen)) == NULL) {
    rc = -EINVAL;
    goto fail;
  }
  p->n = 1;
  *out = p;
  return 0;
fail:
  if (p->dl) dlclose(p->dl);
  pthread_mutex_destroy(&p->mu);
fail_early:
  if (p) {
    free(p->path);
    free(p->arg);
    free(p);
  }
  return rc;
}

void cm_plugin_unload(cm_plugin_t *p) {
  bool in_use = false;
  if (p == NULL) return;
  for (int i = 0; i < p->n; i++) {
    if (p->busy[i]) in_use = true;
    else if (p->st[i] != NULL) p->destroy(p->st[i]);
  }
  /* Code still running on a worker thread (forced shutdown) must not be
   * unmapped under it: leave the library loaded. */
  if (!in_use) dlclose(p->dl);
  pthread_mutex_destroy(&p->mu);
  free(p->path);
  free(p->arg);
  free(p);
}

int cm_plugin_acquire(cm_plugin_t *p, void **state, int *slot, char *err, size_t errlen) {
  int i;
  void *s;
  pthread_mutex_lock(&p->mu);
  for (i = 0; i < p->n; i++)
    if (!p->busy[i]) break;
  if (i == p->n) {
    if (p->n == CM__PLUGIN_MAX_STATES) {
      pthread_mutex_unlock(&p->mu);
      cm_set_err(err, errlen, "plugin %s: more than %d states", p->path, CM__PLUGIN_MAX_STATES);
      return -EBUSY;
    }
    p->st[p->n++] = NULL;
  }
  p->busy[i] = true;
  s = p->st[i];
  pthread_mutex_unlock(&p->mu);
  if (s == NULL) {
    /* A new slot (or one whose init failed before): init outside the lock,
     * it may be slow. The slot is ours while busy. */
    if ((s = new_state(p, err, errlen)) == NULL) {
      cm_plugin_release(p, i);
      return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    p->st[i] = s;
    pthread_mutex_unlock(&p->mu);
  }
  *state = s;
  *slot = i;
  return 0;
}

void cm_plugin_release(cm_plugin_t *p, int slot) {
  /* (also used by acquire's failure path) */
  pthread_mutex_lock(&p->mu);
  p->busy[slot] = false;
  pthread_mutex_unlock(&p->mu);
}

int cm_plugin_record(const cm_plugin_t *p, void *state, const char *in, size_t n, char **out,
                     size_t *out_len, char *err, size_t errlen) {
  return p->record(state, in, n, out, out_len, err, errlen);
}
