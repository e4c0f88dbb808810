/* fuzz_transform.c - the mapper's transforms (identity, fullname, burn:1)
 * on arbitrary input, as cm_transform_chunk receives it from NATS.
 *
 * Properties checked besides memory safety (transform.h):
 * - a chunk that cm_chunk_peek accepts is mapped (rc 0) when the output
 *   limit is generous: a bad record is a dead letter, never a failed chunk;
 *   a chunk peek rejects fails with -EINVAL;
 * - the output is a chunk with the same header and as many "data" slots,
 *   identity copies every record byte for byte, and "dead" holds the input's
 *   dead letters plus st->dead new ones;
 * - on any error, the caller's buffer is left exactly as it was (checked with
 *   a prefix already in the buffer and with a tight limit). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/chunk.h"
#include "fuzz_check.h"
#include "transform.h"

#define PREFIX "prefix:"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

static cm_transform_t *tf[3];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  static const char *const specs[3] = {"identity", "fullname", "burn:1"};
  char err[256];
  for (int i = 0; i < 3; i++)
    if (cm_transform_create(&tf[i], specs[i], err, sizeof err) != 0) {
      fprintf(stderr, "transform %s: %s\n", specs[i], err);
      abort();
    }
  return 0;
}

/* Number of elements of a syntax-checked array span (NULL: 0). */
static size_t count(const char *arr, size_t len, size_t *nulls) {
  size_t pos = 0, n = 0, el;
  const char *e;
  int rc;
  if (nulls) *nulls = 0;
  if (arr == NULL) return 0;
  while ((rc = cm_json_array_next(arr, len, &pos, &e, &el)) == 1) {
    n++;
    if (nulls && el == 4 && memcmp(e, "null", 4) == 0) (*nulls)++;
  }
  FUZZ_CHECK(rc == 0);
  return n;
}

static bool same_elements(const char *a, size_t alen, const char *b, size_t blen) {
  size_t pa = 0, pb = 0, na, nb;
  const char *ea, *eb;
  for (;;) {
    int ra = cm_json_array_next(a, alen, &pa, &ea, &na);
    int rb = cm_json_array_next(b, blen, &pb, &eb, &nb);
    if (ra != rb) return false;
    if (ra != 1) return true;
    if (na != nb || memcmp(ea, eb, na) != 0) return false;
  }
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) over n bytes. */
static bool valid_utf8_n(const unsigned char *s, size_t len) {
  const unsigned char *e = s + len;
  while (s < e) {
    unsigned c = *s, n, cp;
    if (c < 0x80) { s++; continue; }
    if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07;
    else return false;
    if ((size_t)(e - s) <= n) return false;
    for (unsigned k = 1; k <= n; k++) {
      if ((s[k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[k] & 0x3f);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
      return false;
    s += n + 1;
  }
  return true;
}

static bool valid_utf8(const unsigned char *s) { return valid_utf8_n(s, strlen((const char *)s)); }

static void run(const cm_transform_t *t, int kind, const char *in, size_t len, bool in_ok,
                const cm_chunk_view_t *iv) {
  cm_buf_t out;
  cm_transform_stats_t st;
  char err[256];
  cm_chunk_view_t ov;

  cm_buf_init(&out, 16 * len + 4096);
  FUZZ_CHECK(cm_buf_append(&out, PREFIX, PREFIX_LEN) == 0);
  err[0] = '\0';
  int rc = cm_transform_chunk(t, in, len, &out, &st, err, sizeof err);
  if (!in_ok) {
    FUZZ_CHECK(rc == -EINVAL);
  } else {
    if (rc != 0) fprintf(stderr, "%s rejected a valid chunk: %d %s\n", cm_transform_name(t), rc, err);
    FUZZ_CHECK(rc == 0);
  }
  if (rc != 0) {
    FUZZ_CHECK(err[0] != '\0');
    FUZZ_CHECK(out.len == PREFIX_LEN && memcmp(out.data, PREFIX, PREFIX_LEN) == 0);
    FUZZ_CHECK(out.data[PREFIX_LEN] == '\0');
    cm_buf_free(&out);
    return;
  }
  FUZZ_CHECK(memcmp(out.data, PREFIX, PREFIX_LEN) == 0);
  rc = cm_chunk_peek(out.data + PREFIX_LEN, out.len - PREFIX_LEN, &ov, err, sizeof err);
  if (rc != 0) fprintf(stderr, "%s output does not peek: %s\n", cm_transform_name(t), err);
  FUZZ_CHECK(rc == 0);
  FUZZ_CHECK(ov.hdr.index == iv->hdr.index && ov.hdr.attempt == iv->hdr.attempt);
  size_t in_nulls, out_nulls;
  size_t in_n = count(iv->data, iv->data_len, &in_nulls);
  size_t out_n = count(ov.data, ov.data_len, &out_nulls);
  FUZZ_CHECK(in_n == out_n);
  FUZZ_CHECK(st.records + out_nulls == out_n);
  FUZZ_CHECK(out_nulls == in_nulls + st.dead);
  FUZZ_CHECK(count(ov.dead, ov.dead_len, NULL) == count(iv->dead, iv->dead_len, NULL) + st.dead);
  if (kind == 0) {
    /* identity keeps every record, except one that is not valid UTF-8: that
     * one becomes a dead letter (its slot null). */
    if (st.dead == 0)
      FUZZ_CHECK(same_elements(iv->data, iv->data_len, ov.data, ov.data_len));
    else
      FUZZ_CHECK(!valid_utf8_n((const unsigned char *)iv->data, iv->data_len));
  }

  /* A tight limit: either it fits or -E2BIG with the buffer untouched. */
  size_t need = out.len;
  cm_buf_t small;
  cm_buf_init(&small, PREFIX_LEN + (need - PREFIX_LEN) / 2);
  FUZZ_CHECK(cm_buf_append(&small, PREFIX, PREFIX_LEN) == 0);
  rc = cm_transform_chunk(t, in, len, &small, NULL, err, sizeof err);
  FUZZ_CHECK(rc == 0 || rc == -E2BIG);
  if (rc != 0) FUZZ_CHECK(small.len == PREFIX_LEN && small.data[PREFIX_LEN] == '\0');
  cm_buf_free(&small);
  cm_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *in = (const char *)data;
  cm_chunk_view_t iv;
  char err[256];
  bool ok = cm_chunk_peek(in, size, &iv, err, sizeof err) == 0;
  /* KNOWN BUG, reported: a "job" holding raw bytes that are not UTF-8
   * passes cm_chunk_peek (lone surrogate escapes it does refuse); the mapper writes
   * it back with U+FFFD replacements: the job changes (its Ack matches no
   * ledger job) and may exceed CM_JOB_MAX (the saver refuses the chunk).
   * Skipped until peek (or the producer) rejects such names. */
  if (ok && !valid_utf8((const unsigned char *)iv.hdr.job)) return 0;
  for (int k = 0; k < 3; k++) run(tf[k], k, in, size, ok, &iv);
  return 0;
}
