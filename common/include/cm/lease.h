/* lease.h - authenticated leases: MACs under a key shared by the fetcher and
 * the savers, so that a saver stores a mapped chunk only for a lease the
 * fetcher really issued, and the fetcher marks a chunk done only on an Ack a
 * saver really produced. Mappers never hold the key: they carry the lease
 * token from the chunk they received into the mapped chunk unchanged.
 *
 *   lease token = HMAC-SHA256(key, "lease" | job | index | attempt | mapper
 *                             [| "r" | redo])
 *   ack MAC     = HMAC-SHA256(key, "ack" | job | index | attempt | records |
 *                             dead_records | duplicate [| "v" | version]
 *                             [| "r" | redo])
 * redo is the chunk's redo generation (docs/jobs.md "Redo by version"),
 * version the mapper version of the stored rows (the Ack's version). The
 * bracketed parts are present only when redo > 0 / version is not "", so a
 * chunk never redone and without a version has the MAC daemons without
 * these fields computed (a fetcher upgraded before its savers keeps
 * verifying their acks); their tags keep the optional parts apart. Every
 * field is length-prefixed, so no two tuples share an input. Tokens
 * are the first 128 bits, as 32 lowercase hex digits. Verification compares
 * in constant time.
 *
 * The key is read from a file (--lease-key-file): its bytes, trailing
 * whitespace removed, at least 16 of them. Immutable after loading: safe
 * from any thread. */
#ifndef CM_LEASE_H
#define CM_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CM_LEASE_TOKEN_HEX 32 /* hex digits of a token (NUL not included) */
#define CM_LEASE_KEY_MIN 16
#define CM_LEASE_KEY_MAX 4096

typedef struct cm_lease_key_s cm_lease_key_t;

/* Loads the key from `path`. 0, or a negative errno with a reason naming the
 * file in err (missing, unreadable, shorter than 16 bytes, ...). The key's
 * bytes are never written to err. *out is owned by the caller. */
int cm_lease_key_load(cm_lease_key_t **out, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* A daemon's --lease-key-file: with path NULL or "", *out = NULL and one
 * warning is logged that leases are not authenticated; else as
 * cm_lease_key_load. */
int cm_lease_key_option(cm_lease_key_t **out, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Wipes and frees; NULL-safe. */
void cm_lease_key_free(cm_lease_key_t *k);

/* out: CM_LEASE_TOKEN_HEX + 1 bytes, NUL-terminated. */
void cm_lease_token(const cm_lease_key_t *k, const char *job, uint64_t index, uint32_t attempt,
                    uint32_t redo, const char *mapper, char *out);
bool cm_lease_verify(const cm_lease_key_t *k, const char *job, uint64_t index, uint32_t attempt,
                     uint32_t redo, const char *mapper, const char *token);

/* version may be NULL (as ""). */
void cm_lease_ack_mac(const cm_lease_key_t *k, const char *job, uint64_t index, uint32_t attempt,
                      uint32_t redo, uint32_t records, uint32_t dead_records, bool duplicate,
                      const char *version, char *out);
bool cm_lease_ack_verify(const cm_lease_key_t *k, const char *job, uint64_t index,
                         uint32_t attempt, uint32_t redo, uint32_t records, uint32_t dead_records,
                         bool duplicate, const char *version, const char *mac);

#endif
