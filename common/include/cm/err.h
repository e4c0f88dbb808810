/* err.h - filling the caller's error text.
 *
 * Functions that can fail for a reason worth telling a user take
 * (char *err, size_t errlen) and describe the failure there; the return code
 * stays a negative errno. */
#ifndef CM_ERR_H
#define CM_ERR_H

#include <stddef.h>

/* snprintf into err (NULL or errlen 0: nothing). Truncates, never overflows. */
void cm_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
