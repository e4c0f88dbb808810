/* web.c - serves the dashboard files of web_assets.c (see web.h). */
#include "web.h"

#include <string.h>

#include "web_assets.h"

int cm_web_serve(const char *path, cm_buf_t *body, const char **ctype) {
  if (path == NULL) return 0;
  if (strcmp(path, "/") == 0) path = "/index.html";
  for (size_t i = 0; i < cm_web_nassets; i++) {
    const cm_web_asset_t *a = &cm_web_assets[i];
    if (strcmp(a->path, path) != 0) continue;
    if (cm_buf_append(body, a->data, a->len) != 0) return 500;
    *ctype = a->ctype;
    return 200;
  }
  return 0;
}
