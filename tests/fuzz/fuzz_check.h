/* fuzz_check.h - a property check that survives NDEBUG (release-type fuzz
 * builds): a failed check aborts, which libFuzzer reports as a crash and
 * saves the input. */
#ifndef CM_FUZZ_CHECK_H
#define CM_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond);         \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

#endif
