/* source_impl.h - internal to the sources: what one kind of source
 * implements (source.h is the front every caller uses). A kind is one file
 * (source_gen.c, source_file.c, source_http.c) exporting its ops, plus one
 * line in source.c's registration table (spec prefix -> ops); source.c
 * dispatches source.h's functions to them.
 *
 * A source handle owns its implementation state (`impl`, from open, freed
 * by close). The same threading rule as source.h: one thread at a time. */
#ifndef CM_SOURCE_IMPL_H
#define CM_SOURCE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm/buf.h"
#include "source.h"

typedef struct cm_source_ops_s {
  /* o->spec starts with the kind's registered prefix and o->chunk_size is
   * >= 1. *impl gets the state, *desc a malloc'd cm_source_describe text.
   * Errors name what was wrong (err). */
  int (*open)(void **impl, char **desc, const cm_source_opts_t *o, char *err, size_t errlen);
  void (*close)(void *impl); /* NULL-safe */
  /* true: chunks by index (chunk, total_chunks); false: sequential (next,
   * line, resume, cursor). A NULL member means "not supported". */
  bool random_access;
  int64_t (*total_chunks)(const void *impl);
  int (*chunk)(void *impl, uint64_t index, cm_buf_t *out, uint32_t *nrec);
  /* cm_source_next's contract; *nrec and *nbad are 0 and err is "" on entry. */
  int (*next)(void *impl, cm_buf_t *out, uint32_t *nrec, cm_buf_t *bad, uint32_t *nbad,
              int64_t *pos, char *err, size_t errlen);
  uint64_t (*line)(const void *impl);
  const char *(*cursor)(const void *impl);
  /* cm_source_resume's contract (cursor may be NULL: cm_source_seek). */
  int (*resume)(void *impl, int64_t pos, uint64_t line, const char *cursor);
  int (*set_max_record)(void *impl, size_t bytes); /* bytes >= 1 */
} cm_source_ops_t;

extern const cm_source_ops_t cm_source_gen_ops;
extern const cm_source_ops_t cm_source_file_ops;
extern const cm_source_ops_t cm_source_http_ops;

/* Shared by the kinds: the "unknown source" error (-EINVAL), and malloc'd
 * strings (NULL when out of memory). */
int cm_source_unknown(const char *spec, char *err, size_t errlen);
char *cm_source_strdup(const char *s);
char *cm_source_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
