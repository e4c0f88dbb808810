/* lease.c - HMAC-SHA256 lease tokens and ack MACs (OpenSSL libcrypto). */
#include "cm/lease.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/log.h"

struct cm_lease_key_s {
  size_t len;
  unsigned char bytes[CM_LEASE_KEY_MAX];
};

int cm_lease_key_load(cm_lease_key_t **out, const char *path, char *err, size_t errlen) {
  cm_lease_key_t *k;
  FILE *f;
  size_t n;
  int extra;
  *out = NULL;
  if (path == NULL || path[0] == '\0') {
    snprintf(err, errlen, "no lease key file given");
    return -EINVAL;
  }
  f = fopen(path, "rb");
  if (f == NULL) {
    int e = errno;
    snprintf(err, errlen, "cannot read lease key file %s: %s", path, strerror(e));
    return -e;
  }
  k = calloc(1, sizeof(*k));
  if (k == NULL) {
    fclose(f);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  n = fread(k->bytes, 1, sizeof(k->bytes), f);
  extra = fgetc(f);
  fclose(f);
  if (extra != EOF) {
    cm_lease_key_free(k);
    snprintf(err, errlen, "lease key file %s is larger than %d bytes", path, CM_LEASE_KEY_MAX);
    return -EINVAL;
  }
  /* A key written with echo or a text editor ends in a newline: not part
   * of the key, so that every daemon reading the same file agrees. */
  while (n > 0 && (k->bytes[n - 1] == '\n' || k->bytes[n - 1] == '\r' ||
                   k->bytes[n - 1] == ' ' || k->bytes[n - 1] == '\t'))
    n--;
  if (n < CM_LEASE_KEY_MIN) {
    cm_lease_key_free(k);
    snprintf(err, errlen, "lease key file %s holds %zu bytes; at least %d are needed", path, n,
             CM_LEASE_KEY_MIN);
    return -EINVAL;
  }
  k->len = n;
  *out = k;
  return 0;
}

int cm_lease_key_option(cm_lease_key_t **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  if (path == NULL || path[0] == '\0') {
    cm_log_warn("leases are not authenticated (no --lease-key-file): any client on the bus can "
                "forge saves and acks; give the fetcher and every saver the same key file");
    return 0;
  }
  return cm_lease_key_load(out, path, err, errlen);
}

void cm_lease_key_free(cm_lease_key_t *k) {
  if (k == NULL) return;
  OPENSSL_cleanse(k, sizeof(*k));
  free(k);
}

/* The MAC input: each field as a 4-byte big-endian length and its bytes. */
typedef struct {
  unsigned char buf[1024];
  size_t len;
  bool overflow;
} macin_t;

static void put(macin_t *m, const void *p, size_t n) {
  if (m->overflow || n > sizeof(m->buf) - 4 - m->len) {
    m->overflow = true;
    return;
  }
  m->buf[m->len++] = (unsigned char)(n >> 24);
  m->buf[m->len++] = (unsigned char)(n >> 16);
  m->buf[m->len++] = (unsigned char)(n >> 8);
  m->buf[m->len++] = (unsigned char)n;
  memcpy(m->buf + m->len, p, n);
  m->len += n;
}

static void put_str(macin_t *m, const char *s) {
  if (s == NULL) s = "";
  put(m, s, strlen(s));
}

static void put_u64(macin_t *m, uint64_t v) {
  char t[24];
  int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
  put(m, t, (size_t)n);
}

/* 32 hex digits of HMAC-SHA256(key, in); "" when the input did not fit
 * (job names and ids are bounded far below that, so it never matches). */
static void mac_hex(const cm_lease_key_t *k, const macin_t *in, char *out) {
  static const char hex[] = "0123456789abcdef";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  out[0] = '\0';
  if (in->overflow) return;
  if (HMAC(EVP_sha256(), k->bytes, (int)k->len, in->buf, in->len, md, &mdlen) == NULL ||
      mdlen < CM_LEASE_TOKEN_HEX / 2)
    return;
  for (int i = 0; i < CM_LEASE_TOKEN_HEX / 2; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  out[CM_LEASE_TOKEN_HEX] = '\0';
}

static bool same(const char *want, const char *got) {
  if (got == NULL || want[0] == '\0' || strlen(got) != CM_LEASE_TOKEN_HEX) return false;
  return CRYPTO_memcmp(want, got, CM_LEASE_TOKEN_HEX) == 0;
}

/* The optional trailing fields (lease.h): each behind its own tag, in a
 * fixed order, so an absent one cannot be mistaken for another. */
static void put_redo(macin_t *m, uint32_t redo) {
  if (redo == 0) return;
  put_str(m, "r");
  put_u64(m, redo);
}

static void lease_in(macin_t *m, const char *job, uint64_t index, uint32_t attempt, uint32_t redo,
                     const char *mapper) {
  memset(m, 0, sizeof(*m));
  put_str(m, "lease");
  put_str(m, job);
  put_u64(m, index);
  put_u64(m, attempt);
  put_str(m, mapper);
  put_redo(m, redo);
}

void cm_lease_token(const cm_lease_key_t *k, const char *job, uint64_t index, uint32_t attempt,
                    uint32_t redo, const char *mapper, char *out) {
  macin_t m;
  lease_in(&m, job, index, attempt, redo, mapper);
  mac_hex(k, &m, out);
}

bool cm_lease_verify(const cm_lease_key_t *k, const char *job, uint64_t index, uint32_t attempt,
                     uint32_t redo, const char *mapper, const char *token) {
  char want[CM_LEASE_TOKEN_HEX + 1];
  cm_lease_token(k, job, index, attempt, redo, mapper, want);
  return same(want, token);
}

static void ack_in(macin_t *m, const char *job, uint64_t index, uint32_t attempt, uint32_t redo,
                   uint32_t records, uint32_t dead, bool dup, const char *version) {
  memset(m, 0, sizeof(*m));
  put_str(m, "ack");
  put_str(m, job);
  put_u64(m, index);
  put_u64(m, attempt);
  put_u64(m, records);
  put_u64(m, dead);
  put_u64(m, dup ? 1 : 0);
  if (version != NULL && version[0] != '\0') {
    put_str(m, "v");
    put_str(m, version);
  }
  put_redo(m, redo);
}

void cm_lease_ack_mac(const cm_lease_key_t *k, const char *job, uint64_t index, uint32_t attempt,
                      uint32_t redo, uint32_t records, uint32_t dead_records, bool duplicate,
                      const char *version, char *out) {
  macin_t m;
  ack_in(&m, job, index, attempt, redo, records, dead_records, duplicate, version);
  mac_hex(k, &m, out);
}

bool cm_lease_ack_verify(const cm_lease_key_t *k, const char *job, uint64_t index,
                         uint32_t attempt, uint32_t redo, uint32_t records, uint32_t dead_records,
                         bool duplicate, const char *version, const char *mac) {
  char want[CM_LEASE_TOKEN_HEX + 1];
  cm_lease_ack_mac(k, job, index, attempt, redo, records, dead_records, duplicate, version, want);
  return same(want, mac);
}
