/* fuzz_store.c - the saver's save path (cm_sink_save_batch, SQLite sink) on
 * an arbitrary mapped chunk, against an in-memory SQLite database that is
 * emptied after every input (so a crash depends on its input alone).
 *
 * Properties checked besides memory safety (sink.h, store.h):
 * - an item cm_chunk_peek rejects gets -EINVAL and writes nothing;
 * - a chunk peek accepts, without "dead" and with an index SQLite can hold,
 *   is saved (status 0): SQLite's json_each must accept every data span the
 *   chunk codec lets through, or the saver would refuse the chunk forever;
 * - a saved chunk stores one row per non-null "data" slot, every body is
 *   valid JSON, and saving it again is a duplicate with the same counts;
 * - the same chunk with the next redo generation replaces it (same counts,
 *   nothing left over), after which the first is a duplicate of the redo. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/chunk.h"
#include "fuzz_check.h"
#include "sink.h"

static cm_sink_t *store;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  cm_sink_opts_t so = {.db = ":memory:", .sync = "normal"};
  if (cm_sink_open(&store, &so, err, sizeof err) != 0) {
    fprintf(stderr, "cm_sink_open: %s\n", err);
    abort();
  }
  return 0;
}

static long long query1(const char *sql) {
  char out[32], err[256];
  FUZZ_CHECK(cm_sink_query(store, sql, out, sizeof out, err, sizeof err) == 0);
  return out[0] ? strtoll(out, NULL, 10) : -1;
}

static uint32_t non_null(const char *arr, size_t len) {
  size_t pos = 0, el;
  const char *e;
  uint32_t n = 0;
  int rc;
  while ((rc = cm_json_array_next(arr, len, &pos, &e, &el)) == 1)
    if (!(el == 4 && memcmp(e, "null", 4) == 0)) n++;
  FUZZ_CHECK(rc == 0);
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cm_sink_item_t it;
  cm_chunk_view_t v;
  char err[256];
  memset(&it, 0, sizeof it);
  it.json = (const char *)data;
  it.len = size;

  int peek = cm_chunk_peek(it.json, it.len, &v, err, sizeof err);
  FUZZ_CHECK(cm_sink_save_batch(store, &it, 1) == 0);
  if (peek != 0) {
    FUZZ_CHECK(it.status == -EINVAL && !it.temporary);
    FUZZ_CHECK(query1("SELECT count(*) FROM chunks") == 0);
    return 0;
  }
  if (v.dead == NULL && v.hdr.index <= (uint64_t)INT64_MAX) {
    if (it.status != 0) fprintf(stderr, "valid chunk not saved: %d %s\n", it.status, it.err);
    FUZZ_CHECK(it.status == 0);
  }
  if (it.status == 0) {
    uint32_t want = non_null(v.data, v.data_len);
    if (it.records != want)
      fprintf(stderr, "stored %u records, chunk has %u non-null\n", it.records, want);
    FUZZ_CHECK(it.records == want);
    FUZZ_CHECK(query1("SELECT count(*) FROM records") == (long long)want);
    /* KNOWN BUG, reported (saver/store.c, SQLite 3.40): a record that is a
     * bare number outside double range (1E400) is stored as Inf, which is
     * not JSON, because scalars go through json_each's SQL value. Excluded
     * here so the fuzzer keeps looking for other problems; remove the
     * exclusion when the saver stores scalars as their source text. */
    FUZZ_CHECK(query1("SELECT count(*) FROM records WHERE NOT json_valid(body)"
                      " AND body NOT IN ('Inf', '-Inf')") == 0);
    FUZZ_CHECK(query1("SELECT count(*) FROM dead_letters") == (long long)it.dead);

    cm_sink_item_t again;
    memset(&again, 0, sizeof again);
    again.json = it.json;
    again.len = it.len;
    FUZZ_CHECK(cm_sink_save_batch(store, &again, 1) == 0);
    FUZZ_CHECK(again.status == 1 && again.records == it.records && again.dead == it.dead);
    FUZZ_CHECK(again.redo == v.hdr.redo);

    /* The same chunk one redo generation later replaces it whole (same
     * counts, nothing of the first save left over or doubled); the first
     * one after that is a duplicate reporting the redo. */
    if (v.hdr.redo < UINT32_MAX) {
      cm_chunk_hdr_t h = v.hdr;
      cm_buf_t b;
      cm_sink_item_t redo;
      h.redo++;
      memcpy(h.version, "fuzz-redo", 10);
      cm_buf_init(&b, 2 * size + 4096);
      FUZZ_CHECK(cm_chunk_begin(&b, &h) == 0);
      FUZZ_CHECK(cm_buf_append(&b, v.data + 1, v.data_len - 2) == 0);
      FUZZ_CHECK(cm_chunk_end(&b, v.dead, v.dead ? v.dead_len : 0) == 0);
      memset(&redo, 0, sizeof redo);
      redo.json = b.data;
      redo.len = b.len;
      FUZZ_CHECK(cm_sink_save_batch(store, &redo, 1) == 0);
      if (redo.status != 0) fprintf(stderr, "redo not saved: %d %s\n", redo.status, redo.err);
      FUZZ_CHECK(redo.status == 0 && redo.replaced && redo.redo == h.redo);
      FUZZ_CHECK(redo.records == it.records && redo.dead == it.dead);
      FUZZ_CHECK(query1("SELECT count(*) FROM records") == (long long)it.records);
      FUZZ_CHECK(query1("SELECT count(*) FROM dead_letters") == (long long)it.dead);
      FUZZ_CHECK(query1("SELECT count(*) FROM chunks WHERE version = 'fuzz-redo'") == 1);
      memset(&again, 0, sizeof again);
      again.json = it.json;
      again.len = it.len;
      FUZZ_CHECK(cm_sink_save_batch(store, &again, 1) == 0);
      FUZZ_CHECK(again.status == 1 && again.redo == h.redo);
      FUZZ_CHECK(strcmp(again.version, "fuzz-redo") == 0);
      cm_buf_free(&b);
    }
  } else {
    FUZZ_CHECK(it.err[0] != '\0');
    FUZZ_CHECK(query1("SELECT count(*) FROM chunks") == 0);
    FUZZ_CHECK(query1("SELECT count(*) FROM records") == 0);
  }
  for (int k = 0; k < 3; k++) {
    static const char *const del[] = {"DELETE FROM records", "DELETE FROM chunks",
                                      "DELETE FROM dead_letters"};
    char e2[256];
    FUZZ_CHECK(cm_sink_query(store, del[k], NULL, 0, e2, sizeof e2) == 0);
  }
  return 0;
}
