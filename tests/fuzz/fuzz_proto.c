/* fuzz_proto.c - the control-plane decoders (protobuf-c generated code for
 * Credit, Ack, Nak, Heartbeat) on arbitrary bytes, as a daemon receives them
 * from anyone who can publish on P.credit / P.ack / P.nak / P.heartbeat.
 *
 * Every message type gets every input. What decodes must re-encode, decode
 * again, and re-encode to the same bytes (packing is canonical). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunkmill.pb-c.h"
#include "fuzz_check.h"

/* Whether m or any message nested in it kept unknown fields. */
static bool has_unknown(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  if (m->n_unknown_fields > 0) return true;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *base = (const char *)m;
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
      for (size_t k = 0; k < n; k++)
        if (arr[k] != NULL && has_unknown(arr[k])) return true;
    } else {
      const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
      if (sub != NULL && has_unknown(sub)) return true;
    }
  }
  return false;
}

static void roundtrip(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size) {
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, size, data);
  if (m == NULL) return;
  FUZZ_CHECK(protobuf_c_message_check(m));
  size_t n1 = protobuf_c_message_get_packed_size(m);
  uint8_t *b1 = malloc(n1 + 1);
  FUZZ_CHECK(b1 != NULL);
  FUZZ_CHECK(protobuf_c_message_pack(m, b1) == n1);
  ProtobufCMessage *m2 = protobuf_c_message_unpack(desc, NULL, n1, b1);
  /* protobuf-c 1.4 keeps unknown fields as raw (tag, bytes) and re-packs
   * them; it accepts an over-long varint tag with field number 0 on input
   * but rejects the canonical form it writes back. The daemons never
   * re-pack what they receive, so only messages without unknown fields
   * must survive the round trip. */
  if (m2 == NULL && has_unknown(m)) {
    free(b1);
    protobuf_c_message_free_unpacked(m, NULL);
    return;
  }
  FUZZ_CHECK(m2 != NULL);
  size_t n2 = protobuf_c_message_get_packed_size(m2);
  uint8_t *b2 = malloc(n2 + 1);
  FUZZ_CHECK(b2 != NULL);
  FUZZ_CHECK(protobuf_c_message_pack(m2, b2) == n2);
  FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
  free(b1);
  free(b2);
  protobuf_c_message_free_unpacked(m2, NULL);
  protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The generated per-type functions, as the daemons call them. */
  Chunkmill__Credit *c = chunkmill__credit__unpack(NULL, size, data);
  if (c != NULL) FUZZ_CHECK(c->mapper_id != NULL && c->subject != NULL && c->version != NULL);
  chunkmill__credit__free_unpacked(c, NULL);
  Chunkmill__Ack *a = chunkmill__ack__unpack(NULL, size, data);
  if (a != NULL) FUZZ_CHECK(a->job != NULL && a->saver_id != NULL);
  chunkmill__ack__free_unpacked(a, NULL);
  Chunkmill__Nak *k = chunkmill__nak__unpack(NULL, size, data);
  if (k != NULL) FUZZ_CHECK(k->job != NULL && k->mapper_id != NULL && k->reason != NULL);
  chunkmill__nak__free_unpacked(k, NULL);
  Chunkmill__Heartbeat *h = chunkmill__heartbeat__unpack(NULL, size, data);
  if (h != NULL) {
    FUZZ_CHECK(h->id != NULL && h->role != NULL && h->version != NULL);
    FUZZ_CHECK(h->n_inflight == 0 || h->inflight != NULL);
    for (size_t i = 0; i < h->n_inflight; i++)
      FUZZ_CHECK(h->inflight[i] != NULL && h->inflight[i]->job != NULL);
  }
  chunkmill__heartbeat__free_unpacked(h, NULL);

  roundtrip(&chunkmill__credit__descriptor, data, size);
  roundtrip(&chunkmill__ack__descriptor, data, size);
  roundtrip(&chunkmill__nak__descriptor, data, size);
  roundtrip(&chunkmill__heartbeat__descriptor, data, size);
  roundtrip(&chunkmill__lease__descriptor, data, size);
  return 0;
}
