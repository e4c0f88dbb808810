/* test_lease.c - lease tokens and ack MACs (cm/lease.h), URL redaction
 * (cm/redact.h), and the lease header of the chunk codec. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm/buf.h"
#include "cm/chunk.h"
#include "cm/lease.h"
#include "cm/redact.h"

static char key_path[64], key2_path[64];

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static int setup(void **state) {
  (void)state;
  snprintf(key_path, sizeof(key_path), "/tmp/cm-lease-%d.key", (int)getpid());
  snprintf(key2_path, sizeof(key2_path), "/tmp/cm-lease2-%d.key", (int)getpid());
  write_file(key_path, "0123456789abcdef0123456789abcdef\n");
  write_file(key2_path, "another key, also long enough");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(key_path);
  unlink(key2_path);
  return 0;
}

static void test_token_binds_every_field(void **state) {
  cm_lease_key_t *k, *k2;
  char err[256], t[CM_LEASE_TOKEN_HEX + 1], u[CM_LEASE_TOKEN_HEX + 1];
  (void)state;
  assert_int_equal(cm_lease_key_load(&k, key_path, err, sizeof(err)), 0);
  assert_int_equal(cm_lease_key_load(&k2, key2_path, err, sizeof(err)), 0);
  cm_lease_token(k, "job", 17, 2, 0, "m1", t);
  assert_int_equal(strlen(t), CM_LEASE_TOKEN_HEX);
  assert_true(cm_lease_verify(k, "job", 17, 2, 0, "m1", t));
  /* Any other job, index, attempt, mapper or key: not valid. */
  assert_false(cm_lease_verify(k, "jo", 17, 2, 0, "m1", t));
  assert_false(cm_lease_verify(k, "job", 18, 2, 0, "m1", t));
  assert_false(cm_lease_verify(k, "job", 17, 3, 0, "m1", t));
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m2", t));
  assert_false(cm_lease_verify(k2, "job", 17, 2, 0, "m1", t));
  /* Fields cannot be shifted into each other (length-prefixed input). */
  cm_lease_token(k, "job1", 7, 2, 0, "m1", u);
  assert_string_not_equal(t, u);
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m1", u));
  /* Missing, short or altered tokens. */
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m1", NULL));
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m1", ""));
  t[5] = t[5] == 'a' ? 'b' : 'a';
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m1", t));
  t[CM_LEASE_TOKEN_HEX - 1] = '\0';
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m1", t));
  /* The redo generation is covered: a token of generation 0 is not one of
   * generation 1, nor the other way round (a late answer to a lease from
   * before a redo cannot pass for the redo). */
  cm_lease_token(k, "job", 17, 2, 1, "m1", t);
  assert_true(cm_lease_verify(k, "job", 17, 2, 1, "m1", t));
  assert_false(cm_lease_verify(k, "job", 17, 2, 0, "m1", t));
  assert_false(cm_lease_verify(k, "job", 17, 2, 2, "m1", t));
  cm_lease_token(k, "job", 17, 2, 0, "m1", u);
  assert_false(cm_lease_verify(k, "job", 17, 2, 1, "m1", u));

  cm_lease_ack_mac(k, "job", 17, 2, 0, 100, 3, false, "", t);
  assert_true(cm_lease_ack_verify(k, "job", 17, 2, 0, 100, 3, false, "", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 0, 101, 3, false, "", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 0, 100, 2, false, "", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 0, 100, 3, true, "", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 1, 0, 100, 3, false, "", t));
  /* The version of the stored rows and the redo generation are covered;
   * absent (version "", redo 0) is not the same as any present value. */
  cm_lease_ack_mac(k, "job", 17, 2, 1, 100, 3, false, "v2", t);
  assert_true(cm_lease_ack_verify(k, "job", 17, 2, 1, 100, 3, false, "v2", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 1, 100, 3, false, "v1", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 1, 100, 3, false, "", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 0, 100, 3, false, "v2", t));
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 2, 100, 3, false, "v2", t));
  cm_lease_ack_mac(k, "job", 17, 2, 0, 100, 3, false, "1", t);
  cm_lease_ack_mac(k, "job", 17, 2, 1, 100, 3, false, "", u);
  assert_string_not_equal(t, u);
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 1, 100, 3, false, "", t));
  /* NULL version is "": the MAC of a saver without versions. */
  cm_lease_ack_mac(k, "job", 17, 2, 0, 100, 3, false, NULL, t);
  assert_true(cm_lease_ack_verify(k, "job", 17, 2, 0, 100, 3, false, "", t));
  /* A lease token is not an ack MAC. */
  cm_lease_token(k, "job", 17, 2, 0, "m1", u);
  assert_false(cm_lease_ack_verify(k, "job", 17, 2, 0, 0, 0, false, "", u));
  cm_lease_key_free(k);
  cm_lease_key_free(k2);
}

static void test_key_file_errors(void **state) {
  cm_lease_key_t *k = (cm_lease_key_t *)1;
  char err[256], path[64];
  (void)state;
  assert_true(cm_lease_key_load(&k, "/nonexistent/key", err, sizeof(err)) < 0);
  assert_null(k);
  assert_non_null(strstr(err, "/nonexistent/key"));
  snprintf(path, sizeof(path), "/tmp/cm-lease-short-%d.key", (int)getpid());
  write_file(path, "short-key\n\n");
  assert_int_equal(cm_lease_key_load(&k, path, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "at least 16"));
  assert_null(strstr(err, "short-key"));
  unlink(path);
  /* Without a path: no key, leases not authenticated (logged). */
  assert_int_equal(cm_lease_key_option(&k, NULL, err, sizeof(err)), 0);
  assert_null(k);
  /* A trailing newline is not part of the key. */
  write_file(path, "0123456789abcdef0123456789abcdef");
  {
    cm_lease_key_t *a, *b;
    char t[CM_LEASE_TOKEN_HEX + 1];
    assert_int_equal(cm_lease_key_load(&a, path, err, sizeof(err)), 0);
    assert_int_equal(cm_lease_key_load(&b, key_path, err, sizeof(err)), 0);
    cm_lease_token(a, "j", 1, 1, 0, "m", t);
    assert_true(cm_lease_verify(b, "j", 1, 1, 0, "m", t));
    cm_lease_key_free(a);
    cm_lease_key_free(b);
  }
  unlink(path);
}

static void test_redact(void **state) {
  char out[256];
  (void)state;
  assert_string_equal(cm_redact_urls("nats://alice:PASSWORD@host:4222", out, sizeof(out)),
                      "nats://alice:***@host:4222");
  assert_string_equal(cm_redact_urls("nats://TOKEN@host", out, sizeof(out)), "nats://***@host");
  assert_string_equal(cm_redact_urls("nats://127.0.0.1:4222", out, sizeof(out)),
                      "nats://127.0.0.1:4222");
  assert_string_equal(cm_redact_urls("nats://a:x@h1,nats://b:y@h2:4223,nats://h3", out,
                                     sizeof(out)),
                      "nats://a:***@h1,nats://b:***@h2:4223,nats://h3");
  assert_string_equal(cm_redact_urls("https://u:p@@ss@api.example/x?y=a@b", out, sizeof(out)),
                      "https://u:***@api.example/x?y=a@b");
  assert_string_equal(cm_redact_urls("http://api.example/x?mail=a@b", out, sizeof(out)),
                      "http://api.example/x?mail=a@b");
  assert_string_equal(cm_redact_urls("alice:pw@host:4222", out, sizeof(out)),
                      "alice:***@host:4222");
  /* Truncated output never holds a secret. */
  assert_string_equal(cm_redact_urls("nats://alice:SECRETSECRET@host", out, 16),
                      "nats://alice:**");
  /* Query (and fragment) parameters named like a credential lose their
   * value; the others and the order stay. */
  assert_string_equal(cm_redact_urls("https://api.example/users?token=SECRET&page=1", out,
                                     sizeof(out)),
                      "https://api.example/users?token=***&page=1");
  assert_string_equal(cm_redact_urls("http://h/x?page=2&API_KEY=s1&Access_Token=s2&apikey=s3"
                                     "&key=s4&password=s5&passwd=s6&secret=s7&signature=s8"
                                     "&sig=s9&auth=s10&credential=s11&client_secret=s12",
                                     out, sizeof(out)),
                      "http://h/x?page=2&API_KEY=***&Access_Token=***&apikey=***&key=***"
                      "&password=***&passwd=***&secret=***&signature=***&sig=***&auth=***"
                      "&credential=***&client_secret=***");
  /* Names made of words: X-Amz-Signature, apiKey, refresh_token, a
   * percent-encoded name; "monkey" is not "key", "pages" not a secret. */
  assert_string_equal(cm_redact_urls("https://b.example/o?X-Amz-Signature=ab12&apiKey=k1"
                                     "&refresh_token=t1&api%5Fkey=k2&monkey=m&pages=3",
                                     out, sizeof(out)),
                      "https://b.example/o?X-Amz-Signature=***&apiKey=***&refresh_token=***"
                      "&api%5Fkey=***&monkey=m&pages=3");
  /* A comma inside the query is part of it (not the next URL of a list);
   * userinfo and query are both redacted; a fragment too; an empty value
   * and a name without '=' stay as they are. */
  assert_string_equal(cm_redact_urls("https://u:pw@h/x?fields=a,b&token=t,u&page=1#sig=zz", out,
                                     sizeof(out)),
                      "https://u:***@h/x?fields=a,b&token=***&page=1#sig=***");
  assert_string_equal(cm_redact_urls("http://h/x?token=&key&page=1", out, sizeof(out)),
                      "http://h/x?token=&key&page=1");
  /* The URL ends at white space: a source description after it stays. */
  assert_string_equal(cm_redact_urls("http://h/x?token=T&p=1 param=page start=1 records=data",
                                     out, sizeof(out)),
                      "http://h/x?token=***&p=1 param=page start=1 records=data");
  /* A list after a query still splits at the next URL. */
  assert_string_equal(cm_redact_urls("http://h1/x?token=t1,nats://a:x@h2", out, sizeof(out)),
                      "http://h1/x?token=***,nats://a:***@h2");
  /* Truncation inside a secret value shows none of it. */
  assert_string_equal(cm_redact_urls("http://h/x?token=SECRETSECRET", out, 20),
                      "http://h/x?token=**");
  {
    char *d = cm_redact_urls_dup("http://h/?k=1&sig=&sig=x");
    assert_string_equal(d, "http://h/?k=1&sig=&sig=***");
    free(d);
  }
  {
    char *d = cm_redact_urls_dup("nats://u:@h");
    assert_string_equal(d, "nats://u:***@h");
    free(d);
  }
}

static void test_chunk_lease_header(void **state) {
  cm_buf_t b;
  cm_chunk_hdr_t h;
  cm_chunk_view_t v;
  char err[256];
  (void)state;
  memset(&h, 0, sizeof(h));
  snprintf(h.job, sizeof(h.job), "users");
  h.index = 9;
  h.attempt = 2;
  snprintf(h.mapper, sizeof(h.mapper), "m-\"1\"");
  snprintf(h.lease, sizeof(h.lease), "00112233445566778899aabbccddeeff");
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_int_equal(cm_buf_puts(&b, "{\"a\":1}"), 0);
  assert_int_equal(cm_chunk_end(&b, NULL, 0), 0);
  assert_int_equal(cm_chunk_peek(b.data, b.len, &v, err, sizeof(err)), 0);
  assert_string_equal(v.hdr.mapper, "m-\"1\"");
  assert_string_equal(v.hdr.lease, "00112233445566778899aabbccddeeff");
  assert_int_equal(v.hdr.index, 9);
  /* The header-only scan sees the lease too. */
  memset(&v, 0, sizeof(v));
  assert_int_equal(cm_chunk_peek_header(b.data, b.len, &v, err, sizeof(err)), 0);
  assert_string_equal(v.hdr.lease, "00112233445566778899aabbccddeeff");
  assert_string_equal(v.hdr.mapper, "m-\"1\"");
  cm_buf_free(&b);
  /* Without a lease, the wire form is as before. */
  memset(&h, 0, sizeof(h));
  h.index = 1;
  cm_buf_init(&b, 4096);
  assert_int_equal(cm_chunk_begin(&b, &h), 0);
  assert_null(strstr(b.data, "lease"));
  cm_buf_free(&b);
  /* A lease that is too long, or not a string. */
  static const char *bad[] = {
      "{\"index\":1,\"lease\":\"00112233445566778899aabbccddeeff0\",\"data\":[]}",
      "{\"index\":1,\"lease\":7,\"data\":[]}",
      "{\"index\":1,\"lease\":\"00112233445566778899aabbccddeefg\",\"data\":[]}",
      "{\"index\":1,\"lease\":\"\\u0030\",\"data\":[]}",
      "{\"index\":1,\"mapper\":\"\\u00e9\\ud800\",\"data\":[]}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(cm_chunk_peek(bad[i], strlen(bad[i]), &v, err, sizeof(err)), -EINVAL);
}

static void test_utf8(void **state) {
  cm_chunk_view_t v;
  char err[256];
  (void)state;
  assert_true(cm_utf8_valid("plain", 5));
  assert_true(cm_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
  assert_false(cm_utf8_valid("\xff", 1));
  assert_false(cm_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
  assert_false(cm_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
  assert_false(cm_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
  assert_false(cm_utf8_valid("\xe2\x82", 2));         /* cut short */
  assert_int_equal(cm_utf8_check("ab\xe9z", 4), 2);
  /* A job name that is not UTF-8 makes the chunk invalid. */
  const char *c = "{\"job\":\"j\xe9\",\"index\":1,\"data\":[]}";
  assert_int_equal(cm_chunk_peek(c, strlen(c), &v, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "UTF-8"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_token_binds_every_field), cmocka_unit_test(test_key_file_errors),
      cmocka_unit_test(test_redact), cmocka_unit_test(test_chunk_lease_header),
      cmocka_unit_test(test_utf8),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
