/* fuzz_chunk.c - the JSON chunk decoder: cm_chunk_peek, the value-span
 * scanners and cm_json_array_next, on arbitrary bytes.
 *
 * Properties checked besides memory safety:
 * - cm_json_value_span and cm_json_value_span_why agree, and the fast
 *   cm_json_value_skip gives the same length on a value the full scanner
 *   accepted;
 * - a view from cm_chunk_peek has "data" (and "dead") spans that are valid
 *   JSON arrays whose elements cm_json_array_next walks to the end without
 *   error, each element itself a valid value;
 * - re-encoding the view (cm_chunk_begin + elements + cm_chunk_end) gives a
 *   chunk that peeks to the same header and the same elements. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/chunk.h"
#include "fuzz_check.h"

#define MAX_ELEMS 4096

typedef struct {
  const char *p[MAX_ELEMS];
  size_t n[MAX_ELEMS];
  size_t count;
  bool truncated;
} elems_t;

static void check_span(const char *s, size_t len) {
  size_t pos = (size_t)-1;
  const char *why = NULL;
  long a = cm_json_value_span(s, len);
  long b = cm_json_value_span_why(s, len, &pos, &why);
  FUZZ_CHECK(a == b);
  if (a < 0) {
    FUZZ_CHECK(a == -EINVAL);
    FUZZ_CHECK(why != NULL);
    FUZZ_CHECK(pos <= len);
  } else {
    FUZZ_CHECK(a > 0 && (size_t)a <= len);
    FUZZ_CHECK(cm_json_value_skip(s, (size_t)a) == a);
  }
}

/* Walks a syntax-checked array span; every element must be a whole value. */
static void walk(const char *arr, size_t len, elems_t *out) {
  size_t pos = 0;
  const char *e;
  size_t n;
  int rc;
  FUZZ_CHECK(len >= 2 && arr[0] == '[' && arr[len - 1] == ']');
  FUZZ_CHECK(cm_json_value_span(arr, len) == (long)len);
  out->count = 0;
  out->truncated = false;
  while ((rc = cm_json_array_next(arr, len, &pos, &e, &n)) == 1) {
    FUZZ_CHECK(e > arr && e + n < arr + len);
    FUZZ_CHECK(cm_json_value_span(e, n) == (long)n);
    if (out->count < MAX_ELEMS) {
      out->p[out->count] = e;
      out->n[out->count] = n;
      out->count++;
    } else {
      out->truncated = true;
    }
  }
  FUZZ_CHECK(rc == 0);
}

static bool ascii(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s >= 0x80) return false;
  return true;
}

static elems_t data1, dead1, data2, dead2;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  cm_chunk_view_t v, v2;
  char err[256];
  cm_buf_t b;

  if (size > 0) check_span(s, size);

  err[0] = '\0';
  int rc = cm_chunk_peek(s, size, &v, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == -EINVAL);
    FUZZ_CHECK(err[0] != '\0');
    return 0;
  }
  FUZZ_CHECK(v.data != NULL && v.data >= s && v.data + v.data_len <= s + size);
  FUZZ_CHECK(strlen(v.hdr.job) < CM_JOB_MAX);
  walk(v.data, v.data_len, &data1);
  if (v.dead != NULL) {
    FUZZ_CHECK(v.dead >= s && v.dead + v.dead_len <= s + size);
    walk(v.dead, v.dead_len, &dead1);
  }
  if (data1.truncated) return 0;

  /* Round trip through the encoder. A job name that is not valid UTF-8 is
   * written with U+FFFD (and may then exceed CM_JOB_MAX): only ASCII names
   * are compared. */
  cm_chunk_hdr_t hdr = v.hdr;
  bool same_job = ascii(hdr.job);
  if (!same_job) snprintf(hdr.job, sizeof hdr.job, "x");
  cm_buf_init(&b, 4 * size + 1024);
  rc = cm_chunk_begin(&b, &hdr);
  for (size_t i = 0; rc == 0 && i < data1.count; i++) {
    if (i > 0) rc = cm_buf_append(&b, ",", 1);
    if (rc == 0) rc = cm_buf_append(&b, data1.p[i], data1.n[i]);
  }
  if (rc == 0) rc = cm_chunk_end(&b, v.dead, v.dead_len);
  FUZZ_CHECK(rc == 0);

  rc = cm_chunk_peek(b.data, b.len, &v2, err, sizeof err);
  if (rc != 0) fprintf(stderr, "re-encoded chunk rejected: %s\n%.*s\n", err, (int)b.len, b.data);
  FUZZ_CHECK(rc == 0);
  FUZZ_CHECK(v2.hdr.index == v.hdr.index);
  FUZZ_CHECK(v2.hdr.attempt == v.hdr.attempt);
  FUZZ_CHECK(strcmp(v2.hdr.job, hdr.job) == 0);
  /* The lease (hex) and its mapper id (valid UTF-8) survive unchanged. */
  FUZZ_CHECK(strcmp(v2.hdr.lease, hdr.lease) == 0);
  if (hdr.lease[0] != '\0') FUZZ_CHECK(strcmp(v2.hdr.mapper, hdr.mapper) == 0);
  /* So does the mapper version (bounded, valid UTF-8). */
  FUZZ_CHECK(strlen(v.hdr.version) < CM_VERSION_MAX);
  FUZZ_CHECK(cm_utf8_valid(v.hdr.version, strlen(v.hdr.version)));
  FUZZ_CHECK(strcmp(v2.hdr.version, hdr.version) == 0);
  walk(v2.data, v2.data_len, &data2);
  FUZZ_CHECK(data2.count == data1.count);
  for (size_t i = 0; i < data1.count; i++)
    FUZZ_CHECK(data2.n[i] == data1.n[i] && memcmp(data2.p[i], data1.p[i], data1.n[i]) == 0);
  FUZZ_CHECK((v2.dead != NULL) == (v.dead != NULL));
  if (v.dead != NULL) {
    walk(v2.dead, v2.dead_len, &dead2);
    FUZZ_CHECK(dead2.count == dead1.count);
  }
  cm_buf_free(&b);
  return 0;
}
