/* app9wire.c - see cm/app9wire.h. */
#include "cm/app9wire.h"

#include <string.h>

static bool cm__is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

bool cm_app9_body_is(natsMsg *msg, const char *word) {
  const char *p = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  size_t wl = strlen(word);
  while (len > 0 && cm__is_space(p[0])) p++, len--;
  while (len > 0 && cm__is_space(p[len - 1])) len--;
  if (len >= 2 && p[0] == '"' && p[len - 1] == '"') p++, len -= 2;
  return (size_t)len == wl && memcmp(p, word, wl) == 0;
}
