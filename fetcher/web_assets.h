/* web_assets.h - the dashboard's files as compiled into the fetcher.
 *
 * The table is generated at build time from fetcher/web/ by
 * fetcher/web/embed.cmake (web_assets.c in the build tree); web.c serves it.
 * Everything is static, read-only data. */
#ifndef CM_WEB_ASSETS_H
#define CM_WEB_ASSETS_H

#include <stddef.h>

typedef struct cm_web_asset_s {
  const char *path;          /* URL path: "/index.html", "/dashboard.js" ... */
  const char *ctype;         /* Content-Type */
  const unsigned char *data; /* len bytes (then a NUL not counted) */
  size_t len;
} cm_web_asset_t;

extern const cm_web_asset_t cm_web_assets[];
extern const size_t cm_web_nassets;

#endif
