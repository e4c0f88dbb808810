/* digest.c - SHA-256 (see digest.h). */
#include "cm/digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

int cm_sha256(const void *data, size_t len, unsigned char out[CM_SHA256_LEN]) {
  unsigned int n = 0;
  if (EVP_Digest(data ? data : "", len, out, &n, EVP_sha256(), NULL) != 1 ||
      n != CM_SHA256_LEN) {
    memset(out, 0, CM_SHA256_LEN);
    return -EIO;
  }
  return 0;
}
