/* ledger_mem.h - internal to the ledger: the in-memory record of each live
 * (not done) chunk, the hash table that finds it by index, and the heaps
 * that order it:
 *   ready  pending and due, by index
 *   wait   pending with a retry time, by (not_before, index)
 *   lease  leased, by (deadline, index)
 * and the FIFO of pending chunks in the order they became pending (its head
 * is the one that has waited longest: /metrics oldest pending age).
 * Heap and table capacity is reserved before a state change, so pushes and
 * inserts never fail halfway through one (the FIFO is intrusive: no
 * allocation at all). */
#ifndef CM_LEDGER_MEM_H
#define CM_LEDGER_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { CM__H_NONE = 0, CM__H_READY, CM__H_WAIT, CM__H_LEASE };

/* Where a sequential chunk starts in its source and the digest of its
 * payload (schema 3): written with the chunk's first row, for redo. */
typedef struct cm__origin_s {
  int64_t pos;
  uint64_t line;
  char *cursor; /* owned, may be NULL */
  unsigned char digest[32];
} cm__origin_t;

typedef struct cm__chunk_s {
  uint64_t idx;
  int64_t deadline_ms;
  int64_t not_before_ms;
  char *holder;  /* owned; set while leased */
  char *reason;  /* owned; last release reason, may be NULL */
  void *payload; /* owned; only until a flush has written it */
  char *version; /* owned; the saver's mapper version once done (Ack.version) */
  cm__origin_t *origin; /* owned; only until a flush has written it */
  size_t payload_len;
  uint32_t attempt;
  uint32_t base_attempt;
  uint32_t records;
  uint32_t redo; /* redo generation (docs/jobs.md): acks of an older one are ignored */
  uint32_t heap_pos;
  uint8_t state;        /* cm_chunk_state_t */
  uint8_t heap;         /* CM__H_* that holds it */
  bool dirty;           /* queued for the next flush */
  bool payload_in_db;   /* a payloads row may exist (delete it when done) */
  bool in_pendq;        /* linked in the pending FIFO */
  int64_t pending_since_ms; /* when it last became pending (ledger clock) */
  struct cm__chunk_s *pq_prev, *pq_next;
} cm__chunk_t;

typedef struct cm__heap_s {
  cm__chunk_t **v;
  size_t n, cap;
  int kind;
} cm__heap_t;

/* index -> chunk, open addressing with linear probing */
typedef struct cm__chunkset_s {
  cm__chunk_t **tab;
  size_t cap; /* power of two, or 0 */
  size_t n;
} cm__chunkset_t;

/* Pending chunks, oldest first. Appending with a clock that never goes
 * back keeps the head the oldest. */
typedef struct cm__pendq_s {
  cm__chunk_t *head, *tail;
} cm__pendq_t;

void cm__pendq_push(cm__pendq_t *q, cm__chunk_t *c, int64_t now_ms); /* c not linked */
void cm__pendq_remove(cm__pendq_t *q, cm__chunk_t *c);               /* no-op if not linked */

int cm__heap_reserve(cm__heap_t *h);
void cm__heap_push(cm__heap_t *h, cm__chunk_t *c);
void cm__heap_remove(cm__heap_t *h, cm__chunk_t *c);
void cm__heap_fix(cm__heap_t *h, cm__chunk_t *c);

cm__chunk_t *cm__set_find(const cm__chunkset_t *s, uint64_t idx);
int cm__set_reserve(cm__chunkset_t *s);
void cm__set_insert(cm__chunkset_t *s, cm__chunk_t *c);
void cm__set_delete(cm__chunkset_t *s, const cm__chunk_t *c);
void cm__set_shrink(cm__chunkset_t *s);

#endif
