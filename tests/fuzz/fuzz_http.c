/* fuzz_http.c - the probe server's I/O-free request parser.
 *
 * Input: byte 0 picks the size cap (bit 0) and a separate body cap (bit 1),
 * byte 1 seeds the split points, the rest
 * is the request. The same bytes are fed once whole and once in random
 * pieces; the parser must give the same answer both ways (a TCP stream can
 * be cut anywhere), stay sticky after its final answer, and hand out a
 * method and path only after a complete request. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cm/http.h"
#include "fuzz_check.h"

static int feed_whole(cm_httpreq_t *r, const uint8_t *d, size_t n) {
  return cm_httpreq_feed(r, (const char *)d, n);
}

static int feed_split(cm_httpreq_t *r, const uint8_t *d, size_t n, uint32_t seed) {
  size_t pos = 0;
  int rc = 0;
  while (pos < n) {
    seed = seed * 1103515245u + 12345u;
    size_t step = 1 + (seed >> 16) % 97;
    if (step > n - pos) step = n - pos;
    rc = cm_httpreq_feed(r, (const char *)d + pos, step);
    pos += step;
    if (rc != 0) break;
  }
  return rc;
}

static void check_result(const cm_httpreq_t *r, int rc) {
  FUZZ_CHECK(rc == 0 || rc == 1 || rc == -EINVAL || rc == -E2BIG || rc == -EMSGSIZE);
  if (rc == 1) {
    FUZZ_CHECK(cm_httpreq_method(r) != NULL);
    FUZZ_CHECK(cm_httpreq_path(r) != NULL);
  } else {
    FUZZ_CHECK(cm_httpreq_method(r) == NULL);
    FUZZ_CHECK(cm_httpreq_path(r) == NULL);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cm_httpreq_t *a = NULL, *b = NULL;
  if (size < 2) return 0;
  /* Small caps reach the -E2BIG path with short inputs; odd bytes use the
   * server's real cap. */
  size_t cap = (data[0] & 1) ? CM_HTTP_MAX_REQUEST : 1 + (size_t)data[0] * 8;
  uint32_t seed = data[1];
  int body_cap = data[0] & 2;
  data += 2;
  size -= 2;

  if (cm_httpreq_create(&a, cap) != 0 || cm_httpreq_create(&b, cap) != 0) abort();
  /* Bit 1: a body cap of its own (the server's setting), larger than the
   * head's. */
  if (body_cap) {
    cm_httpreq_set_max_body(a, 4 * cap);
    cm_httpreq_set_max_body(b, 4 * cap);
  }
  int ra = feed_whole(a, data, size);
  int rb = feed_split(b, data, size, seed);
  check_result(a, ra);
  check_result(b, rb);
  FUZZ_CHECK(ra == rb);
  if (ra == 1) {
    FUZZ_CHECK(strcmp(cm_httpreq_method(a), cm_httpreq_method(b)) == 0);
    FUZZ_CHECK(strcmp(cm_httpreq_path(a), cm_httpreq_path(b)) == 0);
    FUZZ_CHECK(strlen(cm_httpreq_path(a)) <= size);
    FUZZ_CHECK(cm_httpreq_keep_alive(a) == cm_httpreq_keep_alive(b));
    FUZZ_CHECK(cm_httpreq_used(a) > 0 && cm_httpreq_used(a) <= size);
    const cm_http_request_t *qa = cm_httpreq_request(a), *qb = cm_httpreq_request(b);
    FUZZ_CHECK(qa != NULL && qb != NULL);
    FUZZ_CHECK(strcmp(qa->path, cm_httpreq_path(a)) == 0);
    FUZZ_CHECK(strcmp(qa->query, qb->query) == 0);
    FUZZ_CHECK((qa->authorization == NULL) == (qb->authorization == NULL));
    FUZZ_CHECK(qa->authorization == NULL || strcmp(qa->authorization, qb->authorization) == 0);
    FUZZ_CHECK((qa->content_type == NULL) == (qb->content_type == NULL));
    FUZZ_CHECK(qa->content_type == NULL || strcmp(qa->content_type, qb->content_type) == 0);
    FUZZ_CHECK(qa->body_len == qb->body_len && qa->body_len <= size);
    FUZZ_CHECK(memcmp(qa->body, qb->body, qa->body_len) == 0 && qa->body[qa->body_len] == '\0');
  }
  /* Sticky: once answered, more bytes change nothing. */
  if (ra != 0) FUZZ_CHECK(cm_httpreq_feed(a, "GET / HTTP/1.1\r\n\r\n", 18) == ra);
  FUZZ_CHECK(cm_httpreq_feed(a, "", 0) == ra);

  /* The response formatter with what the parser let through as body and
   * (rejected when it holds CR/LF) content type. */
  if (ra == 1) {
    cm_buf_t out;
    const char *p = cm_httpreq_path(a);
    cm_buf_init(&out, 1 << 16);
    int fr = cm_http_format_response(&out, 200, p, p, strlen(p), data[0] & 1);
    FUZZ_CHECK(fr == 0 || fr == -EINVAL || fr == -E2BIG);
    if (fr == -EINVAL) FUZZ_CHECK(strpbrk(p, "\r\n") != NULL);
    cm_buf_free(&out);
  }
  /* Reset: the same parser takes the next request on the connection. */
  cm_httpreq_reset(a);
  FUZZ_CHECK(cm_httpreq_path(a) == NULL);
  if (cap >= 19) {
    FUZZ_CHECK(cm_httpreq_feed(a, "GET /n HTTP/1.1\r\n\r\n", 19) == 1);
    FUZZ_CHECK(strcmp(cm_httpreq_path(a), "/n") == 0);
    FUZZ_CHECK(cm_httpreq_keep_alive(a));
  }
  cm_httpreq_destroy(a);
  cm_httpreq_destroy(b);
  return 0;
}
