/* test_buf.c - cm_buf: growth, the hard maximum, printf, JSON strings. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "cm/buf.h"

static void test_append_and_nul(void **state) {
  cm_buf_t b;
  cm_buf_init(&b, 1024);
  assert_null(b.data);
  assert_int_equal(cm_buf_append(&b, "abc", 3), 0);
  assert_int_equal(cm_buf_puts(&b, "def"), 0);
  assert_int_equal(b.len, 6);
  assert_string_equal(b.data, "abcdef");
  assert_true(b.cap > b.len);

  /* Many small appends grow the buffer; content stays intact. */
  for (int i = 0; i < 200; i++) assert_int_equal(cm_buf_append(&b, "x", 1), 0);
  assert_int_equal(b.len, 206);
  assert_int_equal(strlen(b.data), 206);

  cm_buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.data, "");
  assert_non_null(b.data); /* memory kept */
  cm_buf_free(&b);
  assert_null(b.data);
  assert_int_equal(b.max, 1024);
  cm_buf_free(NULL);
}

static void test_max_is_hard(void **state) {
  cm_buf_t b;
  cm_buf_init(&b, 8);
  assert_int_equal(cm_buf_append(&b, "12345", 5), 0);
  /* Would reach 9 > 8: refused, buffer unchanged. */
  assert_int_equal(cm_buf_append(&b, "6789", 4), -E2BIG);
  assert_int_equal(b.len, 5);
  assert_string_equal(b.data, "12345");
  /* Exactly up to the max is fine. */
  assert_int_equal(cm_buf_append(&b, "678", 3), 0);
  assert_string_equal(b.data, "12345678");
  assert_true(b.cap <= 9); /* never allocates beyond what max can use */
  assert_int_equal(cm_buf_append(&b, "9", 1), -E2BIG);
  assert_int_equal(cm_buf_reserve(&b, SIZE_MAX), -E2BIG);
  assert_int_equal(cm_buf_append(&b, "", 0), 0);
  cm_buf_free(&b);
}

static void test_printf(void **state) {
  cm_buf_t b;
  cm_buf_init(&b, 64);
  assert_int_equal(cm_buf_printf(&b, "%d-%s", 42, "x"), 0);
  assert_int_equal(cm_buf_printf(&b, "|%05d", 7), 0);
  assert_string_equal(b.data, "42-x|00007");

  /* Too long: -E2BIG and the buffer, including the NUL, is as before even
   * though the first attempt may have written into spare capacity. */
  char big[100];
  memset(big, 'z', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(cm_buf_printf(&b, "%s", big), -E2BIG);
  assert_string_equal(b.data, "42-x|00007");
  assert_int_equal(b.len, 10);

  /* A case that fits the allocation but not the max. */
  cm_buf_t s;
  cm_buf_init(&s, 1000);
  assert_int_equal(cm_buf_reserve(&s, 500), 0);
  s.max = 10;
  assert_int_equal(cm_buf_printf(&s, "%s", "0123456789AB"), -E2BIG);
  assert_int_equal(s.len, 0);
  assert_string_equal(s.data, "");
  cm_buf_free(&s);

  /* Growth path of printf. */
  cm_buf_t g;
  cm_buf_init(&g, 1 << 20);
  for (int i = 0; i < 1000; i++) assert_int_equal(cm_buf_printf(&g, "%04d,", i), 0);
  assert_int_equal(g.len, 5000);
  assert_memory_equal(g.data + 4995, "0999,", 5);
  cm_buf_free(&g);
  cm_buf_free(&b);
}

static void test_json_str(void **state) {
  cm_buf_t b;
  cm_buf_init(&b, 1024);
  const char in[] = "a\"b\\c\n\t\x01\x7f";
  assert_int_equal(cm_buf_append_json_str(&b, in, sizeof in - 1), 0);
  assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\"");

  /* Valid UTF-8 is kept; invalid bytes become \ufffd one by one. */
  cm_buf_reset(&b);
  const char u[] = "\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80-\xff\xc3-\xed\xa0\x80";
  assert_int_equal(cm_buf_append_json_str(&b, u, sizeof u - 1), 0);
  assert_string_equal(b.data, "\"\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80-\\ufffd\\ufffd-"
                              "\\ufffd\\ufffd\\ufffd\"");

  /* Embedded NUL is escaped, not a terminator. */
  cm_buf_reset(&b);
  assert_int_equal(cm_buf_append_json_str(&b, "a\0b", 3), 0);
  assert_string_equal(b.data, "\"a\\u0000b\"");

  /* All or nothing at the maximum. */
  cm_buf_t s;
  cm_buf_init(&s, 6);
  assert_int_equal(cm_buf_puts(&s, "x"), 0);
  assert_int_equal(cm_buf_append_json_str(&s, "\n\n", 2), -E2BIG); /* needs 6 */
  assert_string_equal(s.data, "x");
  assert_int_equal(cm_buf_append_json_str(&s, "\n", 1), 0);
  assert_string_equal(s.data, "x\"\\n\"");
  cm_buf_free(&s);
  cm_buf_free(&b);
}

static void test_json_escape_bounded(void **state) {
  char dst[8];
  size_t used = 0;
  /* Never splits an escape: "ab" fits, then \u0001 (6 bytes) would not. */
  size_t n = cm_buf_json_escape(dst, 7, "ab\x01z", 4, &used);
  assert_int_equal(n, 2);
  assert_int_equal(used, 2);
  assert_memory_equal(dst, "ab", 2);
  /* Never splits a UTF-8 character. */
  n = cm_buf_json_escape(dst, 3, "a\xe2\x82\xac", 4, &used);
  assert_int_equal(n, 1);
  assert_int_equal(used, 1);
  /* Measuring. */
  assert_int_equal(cm_buf_json_escape(NULL, 0, "\"\x02", 2, &used), 8);
  assert_int_equal(used, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append_and_nul), cmocka_unit_test(test_max_is_hard),
      cmocka_unit_test(test_printf),         cmocka_unit_test(test_json_str),
      cmocka_unit_test(test_json_escape_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
