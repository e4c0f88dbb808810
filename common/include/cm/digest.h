/* digest.h - SHA-256 of a byte string (OpenSSL libcrypto, as lease.h).
 * The fetcher stores the digest of each sequential chunk's payload so a
 * redo can tell whether the source still gives the same bytes. */
#ifndef CM_DIGEST_H
#define CM_DIGEST_H

#include <stddef.h>

#define CM_SHA256_LEN 32

/* out gets the 32-byte digest of data[0..len). 0, or -EIO if libcrypto
 * fails (out is then zeroed). */
int cm_sha256(const void *data, size_t len, unsigned char out[CM_SHA256_LEN])
    __attribute__((warn_unused_result));

#endif
