/* source.c - where a job's records come from (see source.h).
 *
 * gen:users  record i is a pure function of (seed, i): a splitmix64 stream
 *            seeded with hash(seed, i) gives its uuid, names and friends, and
 *            a friend's uuid is that record's uuid, recomputed from its index.
 *            So any chunk can be regenerated alone, in any order, on any
 *            fetcher run. JSON is written by hand straight into the output
 *            buffer (no tree, no printf): this is the pipeline's load
 *            generator and must not be its bottleneck.
 * file:PATH  read through a fixed 64 KiB buffer; a record is assembled in a
 *            buffer capped at max_record (16 MiB by default), so memory does
 *            not depend on the size of the file. NDJSON or one JSON array,
 *            decided by the first non-blank byte. */
#include "source.h"

#include "source_http.h"

#include "cm/chunk.h"
#include "cm/redact.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CM__RBUF_SIZE (64 * 1024)
#define CM__MAX_RECORD_DEFAULT ((size_t)16 * 1024 * 1024)
#define CM__RAW_MAX 1024 /* bytes of a bad record echoed back */

enum { CM__SRC_GEN = 1, CM__SRC_FILE, CM__SRC_HTTP };

/* JSON array reader states. */
enum {
  CM__A_START, /* before '[' */
  CM__A_FIRST, /* after '[': a value or ']' */
  CM__A_ELEM,  /* after ',': a value */
  CM__A_IN,    /* inside a value */
  CM__A_SEP,   /* after a value: ',' or ']' */
  CM__A_DONE,  /* after ']': only blanks */
};

struct cm_source_s {
  int kind;
  uint32_t chunk_size;
  char *desc;

  /* gen */
  uint64_t records;
  uint64_t seed_hash; /* hash of the seed, mixed with each record index */

  /* http(s) */
  cm_http_src_t *http;

  /* file */
  char *spec_path; /* as given, for messages */
  int fd;
  bool is_stdin;
  bool array;
  int astate;
  char *rbuf;   /* CM__RBUF_SIZE bytes */
  size_t rlen;  /* valid bytes in rbuf */
  size_t rpos;  /* next unread byte in rbuf */
  int64_t off;  /* file offset of rbuf[0] */
  bool eof;
  cm_buf_t rec; /* the record being assembled, <= max_record */
  size_t max_record;
  uint64_t line; /* NDJSON: lines consumed; array: values consumed */
  /* position inside a value of the array */
  uint64_t depth;
  bool in_str, esc;
};

/* ---- gen:users --------------------------------------------------------- */

typedef struct cm__name_s {
  const char *s;
  uint8_t n;
} cm__name_t;

#define CM__N(x) {x, sizeof(x) - 1}
static const cm__name_t cm__first[] = {
    CM__N("Ada"),      CM__N("Alan"),     CM__N("Alba"),     CM__N("Amara"),   CM__N("Anders"),
    CM__N("Anika"),    CM__N("Arlo"),     CM__N("Astrid"),   CM__N("Beatrix"), CM__N("Bjorn"),
    CM__N("Bruno"),    CM__N("Camila"),   CM__N("Cedric"),   CM__N("Celeste"), CM__N("Dagny"),
    CM__N("Dario"),    CM__N("Delphine"), CM__N("Desmond"),  CM__N("Edda"),    CM__N("Elio"),
    CM__N("Elvira"),   CM__N("Emeka"),    CM__N("Enzo"),     CM__N("Esme"),    CM__N("Ezra"),
    CM__N("Farah"),    CM__N("Felix"),    CM__N("Fiona"),    CM__N("Florin"),  CM__N("Gaia"),
    CM__N("Gideon"),   CM__N("Greta"),    CM__N("Gustav"),   CM__N("Hana"),    CM__N("Hector"),
    CM__N("Helga"),    CM__N("Hugo"),     CM__N("Ida"),      CM__N("Idris"),   CM__N("Ines"),
    CM__N("Ivo"),      CM__N("Jasper"),   CM__N("Jia"),      CM__N("Jonas"),   CM__N("Juno"),
    CM__N("Kaito"),    CM__N("Karin"),    CM__N("Kofi"),     CM__N("Lars"),    CM__N("Leila"),
    CM__N("Linnea"),   CM__N("Lorenzo"),  CM__N("Lucia"),     CM__N("Magnus"),  CM__N("Maren"),
    CM__N("Mateo"),    CM__N("Mira"),     CM__N("Nadia"),    CM__N("Nils"),    CM__N("Noor"),
    CM__N("Odile"),    CM__N("Olek"),     CM__N("Orla"),     CM__N("Oskar"),   CM__N("Paloma"),
    CM__N("Pavel"),    CM__N("Petra"),    CM__N("Quentin"),  CM__N("Quinn"),   CM__N("Rafael"),
    CM__N("Rania"),    CM__N("Rohan"),    CM__N("Ronja"),    CM__N("Sami"),    CM__N("Saoirse"),
    CM__N("Selma"),    CM__N("Soren"),    CM__N("Tamsin"),   CM__N("Teodor"),  CM__N("Thea"),
    CM__N("Tobias"),   CM__N("Ulla"),     CM__N("Umar"),     CM__N("Valeria"), CM__N("Viggo"),
    CM__N("Vivian"),   CM__N("Wanda"),    CM__N("Wilhelm"),  CM__N("Xander"),  CM__N("Ximena"),
    CM__N("Yara"),     CM__N("Yusuf"),    CM__N("Zainab"),   CM__N("Zeno"),    CM__N("Zofia"),
    CM__N("Benedikt"), CM__N("Cosima"),   CM__N("Leopold"),  CM__N("Marisol"), CM__N("Anouk"),
};
static const cm__name_t cm__last[] = {
    CM__N("Abernathy"), CM__N("Achterberg"), CM__N("Alvarez"),   CM__N("Andersen"),
    CM__N("Baptiste"),  CM__N("Bergstrom"),  CM__N("Blackwood"), CM__N("Bosch"),
    CM__N("Brennan"),   CM__N("Calloway"),   CM__N("Castellano"), CM__N("Chandra"),
    CM__N("Dahl"),      CM__N("Delacroix"),  CM__N("Dimitrov"),  CM__N("Donnelly"),
    CM__N("Eastwood"),  CM__N("Eklund"),     CM__N("Esposito"),  CM__N("Falk"),
    CM__N("Ferreira"),  CM__N("Fitzgerald"), CM__N("Fontaine"),  CM__N("Gallagher"),
    CM__N("Garrido"),   CM__N("Gunnarsson"), CM__N("Haddad"),    CM__N("Halvorsen"),
    CM__N("Hartmann"),  CM__N("Holloway"),   CM__N("Ibarra"),    CM__N("Ingram"),
    CM__N("Iversen"),   CM__N("Jablonski"),  CM__N("Jansen"),    CM__N("Jovanovic"),
    CM__N("Kaminski"),  CM__N("Karlsson"),   CM__N("Kowalczyk"), CM__N("Kuznetsov"),
    CM__N("Lachance"),  CM__N("Lindqvist"),  CM__N("Lombardi"),  CM__N("Lundgren"),
    CM__N("Madsen"),    CM__N("Marchetti"),  CM__N("Mbeki"),     CM__N("Moreau"),
    CM__N("Nakamura"),  CM__N("Navarro"),    CM__N("Nieminen"),  CM__N("Novak"),
    CM__N("Oakley"),    CM__N("Okafor"),     CM__N("Olsen"),     CM__N("Ortega"),
    CM__N("Pacheco"),   CM__N("Petrov"),     CM__N("Pham"),      CM__N("Quigley"),
    CM__N("Quintero"),  CM__N("Radcliffe"),  CM__N("Rasmussen"), CM__N("Reyes"),
    CM__N("Rossi"),     CM__N("Salazar"),    CM__N("Sandoval"),  CM__N("Schneider"),
    CM__N("Sorensen"),  CM__N("Takahashi"),  CM__N("Tanaka"),    CM__N("Thornton"),
    CM__N("Toivonen"),  CM__N("Underhill"),  CM__N("Urquhart"),  CM__N("Valdez"),
    CM__N("Vasquez"),   CM__N("Vogel"),      CM__N("Wagner"),    CM__N("Whitfield"),
    CM__N("Winther"),   CM__N("Wozniak"),    CM__N("Xiong"),     CM__N("Yamamoto"),
    CM__N("Yilmaz"),    CM__N("Zamora"),     CM__N("Zielinski"), CM__N("Zubiri"),
    CM__N("Aldana"),    CM__N("Brandt"),     CM__N("Coelho"),    CM__N("Dunmore"),
    CM__N("Engel"),     CM__N("Fairbanks"),  CM__N("Greco"),     CM__N("Hoffmann"),
    CM__N("Ikeda"),     CM__N("Kessler"),    CM__N("Moreno"),    CM__N("Stavros"),
};
#undef CM__N
#define CM__NFIRST (sizeof cm__first / sizeof cm__first[0])
#define CM__NLAST (sizeof cm__last / sizeof cm__last[0])

static uint64_t cm__fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static inline uint64_t cm__splitmix(uint64_t *st) {
  uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, n) by multiply-shift (no division, negligible bias). */
static inline uint64_t cm__below(uint64_t r, uint64_t n) {
  return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

/* The stream of record i. fmix64 is a bijection, so for one seed every
 * record gets a different start. */
static inline uint64_t cm__rec_state(const cm_source_t *s, uint64_t i) {
  return cm__fmix64(i ^ s->seed_hash);
}

/* Two hex digits per byte value: one 2-byte copy per byte of a uuid. */
static const char cm__hex2[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

static inline void cm__hex8(char *d, uint64_t v, int nbytes) {
  for (int k = 0; k < nbytes; k++) memcpy(d + 2 * k, cm__hex2 + 2 * ((v >> (56 - 8 * k)) & 0xff), 2);
}

/* RFC 4122 version 4 layout (version nibble 4, variant 10xx), 36 chars. */
static inline void cm__uuid_from(char *d, uint64_t a, uint64_t b) {
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  cm__hex8(d, a, 4);
  d[8] = '-';
  cm__hex8(d + 9, a << 32, 2);
  d[13] = '-';
  cm__hex8(d + 14, a << 48, 2);
  d[18] = '-';
  cm__hex8(d + 19, b, 2);
  d[23] = '-';
  cm__hex8(d + 24, b << 16, 6);
}

static inline void cm__uuid_of(const cm_source_t *s, uint64_t i, char *d) {
  uint64_t st = cm__rec_state(s, i);
  uint64_t a = cm__splitmix(&st);
  uint64_t b = cm__splitmix(&st);
  cm__uuid_from(d, a, b);
}

#define CM__LIT(d, x) (memcpy((d), (x), sizeof(x) - 1), (d) + sizeof(x) - 1)
#define CM__LEN(x) (sizeof(x) - 1)
#define CM__P_UUID "{\"uuid\":\""
#define CM__P_FN "\",\"fn\":\""
#define CM__P_LN "\",\"ln\":\""
#define CM__P_FR "\",\"friends\":["
#define CM__P_END "]}"
#define CM__UUID_LEN 36

/* Appends record i; `first` decides the leading ','. The exact length is
 * known before writing, so one reserve covers the record. */
static int cm__gen_record(const cm_source_t *s, uint64_t i, bool first, cm_buf_t *out) {
  uint64_t st = cm__rec_state(s, i);
  uint64_t a = cm__splitmix(&st);
  uint64_t b = cm__splitmix(&st);
  const cm__name_t *fn = &cm__first[cm__below(cm__splitmix(&st), CM__NFIRST)];
  const cm__name_t *ln = &cm__last[cm__below(cm__splitmix(&st), CM__NLAST)];
  unsigned nf = 10 + (unsigned)cm__below(cm__splitmix(&st), 5); /* 10..14 */
  size_t len = (first ? 0 : 1) + CM__LEN(CM__P_UUID) + CM__UUID_LEN + CM__LEN(CM__P_FN) + fn->n +
               CM__LEN(CM__P_LN) + ln->n + CM__LEN(CM__P_FR) + nf * (CM__UUID_LEN + 2) +
               (nf - 1) + CM__LEN(CM__P_END);
  int rc = cm_buf_reserve(out, len); /* reserve counts the NUL itself */
  if (rc < 0) return rc;
  char *d = out->data + out->len;
  if (!first) *d++ = ',';
  d = CM__LIT(d, CM__P_UUID);
  cm__uuid_from(d, a, b);
  d += CM__UUID_LEN;
  d = CM__LIT(d, CM__P_FN);
  memcpy(d, fn->s, fn->n);
  d += fn->n;
  d = CM__LIT(d, CM__P_LN);
  memcpy(d, ln->s, ln->n);
  d += ln->n;
  d = CM__LIT(d, CM__P_FR);
  for (unsigned k = 0; k < nf; k++) {
    if (k) *d++ = ',';
    *d++ = '"';
    cm__uuid_of(s, cm__below(cm__splitmix(&st), s->records), d);
    d += CM__UUID_LEN;
    *d++ = '"';
  }
  d = CM__LIT(d, CM__P_END);
  out->len += len;
  out->data[out->len] = '\0';
  return 0;
}

int64_t cm_source_total_chunks(const cm_source_t *s) {
  if (s->kind != CM__SRC_GEN) return -1;
  return (int64_t)(s->records / s->chunk_size + (s->records % s->chunk_size != 0));
}

int cm_source_chunk(cm_source_t *s, uint64_t index, cm_buf_t *out, uint32_t *nrec) {
  int rc = 0;
  *nrec = 0;
  if (s->kind != CM__SRC_GEN) return -ENOTSUP;
  if (index >= (uint64_t)cm_source_total_chunks(s)) return -ERANGE;
  uint64_t from = index * s->chunk_size;
  uint64_t to = from + s->chunk_size < s->records ? from + s->chunk_size : s->records;
  size_t len0 = out->len;
  for (uint64_t i = from; i < to && rc == 0; i++) rc = cm__gen_record(s, i, i == from, out);
  if (rc < 0) {
    /* all or nothing: leave the caller's buffer as it was */
    out->len = len0;
    if (out->data) out->data[len0] = '\0';
    return rc;
  }
  *nrec = (uint32_t)(to - from);
  return 0;
}

/* ---- open / close ------------------------------------------------------ */

static char *cm__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static char *cm__fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *cm__fmt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *p = n < 0 ? NULL : malloc((size_t)n + 1);
  if (!p) return NULL;
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

static bool cm__blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int cm__fill(cm_source_t *s);

/* Skips leading blanks (counting blank lines) and picks the format. */
static int cm__detect(cm_source_t *s) {
  for (;;) {
    int n = cm__fill(s);
    if (n <= 0) return n; /* empty file: NDJSON with no lines */
    char c = s->rbuf[s->rpos];
    if (!cm__blank(c)) {
      s->array = c == '[';
      s->astate = CM__A_START;
      if (s->array) s->line = 0; /* counts values, not lines */
      return 0;
    }
    if (c == '\n') s->line++;
    s->rpos++;
  }
}

static int cm__open_file(cm_source_t *s, const cm_source_opts_t *o, const char *path, char *err,
                         size_t errlen) {
  struct stat sb;
  char *real = NULL;
  int ret = 0;
  s->kind = CM__SRC_FILE;
  s->fd = -1;
  s->max_record = CM__MAX_RECORD_DEFAULT;
  cm_buf_init(&s->rec, s->max_record);
  if (!(s->spec_path = cm__strdup(path)) || !(s->rbuf = malloc(CM__RBUF_SIZE))) goto nomem;
  if (strcmp(path, "-") == 0) {
    /* stdin: read once, cannot be resumed (seek fails unless it is to the
     * current position), and its description carries no identity. */
    s->is_stdin = true;
    s->fd = STDIN_FILENO;
    if (!(s->desc = cm__fmt("file:- chunk=%u", o->chunk_size))) goto nomem;
  } else {
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0 || fstat(s->fd, &sb) < 0) {
      ret = -errno;
      snprintf(err, errlen, "file:%s: %s", path, strerror(errno));
      goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
      ret = -EISDIR;
      snprintf(err, errlen, "file:%s: %s", path, strerror(EISDIR));
      goto fail;
    }
    /* Identity for the ledger: the absolute path (a relative one would
     * change with the working directory), size and mtime (a changed file
     * must not be resumed at an old byte offset). */
    real = realpath(path, NULL);
    s->desc = cm__fmt("file:%s size=%lld mtime=%lld.%09ld chunk=%u", real ? real : path,
                      (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                      (long)sb.st_mtim.tv_nsec, o->chunk_size);
    if (!s->desc) goto nomem;
  }
  if ((ret = cm__detect(s)) < 0) {
    snprintf(err, errlen, "file:%s: %s", path, strerror(-ret));
    goto fail;
  }
  free(real);
  return 0;
nomem:
  ret = -ENOMEM;
  snprintf(err, errlen, "file:%s: out of memory", path);
fail:
  free(real);
  return ret;
}

int cm_source_open(cm_source_t **out, const cm_source_opts_t *o, char *err, size_t errlen) {
  cm_source_t *s = NULL;
  int ret = 0;
  *out = NULL;
  if (errlen) err[0] = '\0';
  if (!o || !o->spec) {
    snprintf(err, errlen, "no source given: expected gen:users or file:PATH");
    return -EINVAL;
  }
  if (o->chunk_size == 0) {
    snprintf(err, errlen, "source %s: chunk size must be at least 1", o->spec);
    return -EINVAL;
  }
  if (!(s = calloc(1, sizeof *s))) {
    snprintf(err, errlen, "source %s: out of memory", o->spec);
    return -ENOMEM;
  }
  s->chunk_size = o->chunk_size;
  s->fd = -1;
  if (strcmp(o->spec, "gen:users") == 0) {
    s->kind = CM__SRC_GEN;
    s->records = o->records;
    /* mix the seed once so seeds 1 and 2 give unrelated data sets */
    s->seed_hash = cm__fmix64(o->seed ^ 0x243f6a8885a308d3ULL) | 1;
    s->desc = cm__fmt("gen:users records=%llu seed=%llu chunk=%u", (unsigned long long)o->records,
                      (unsigned long long)o->seed, o->chunk_size);
    if (!s->desc) {
      snprintf(err, errlen, "source %s: out of memory", o->spec);
      ret = -ENOMEM;
      goto fail;
    }
  } else if (strncmp(o->spec, "file:", 5) == 0 && o->spec[5] != '\0') {
    if ((ret = cm__open_file(s, o, o->spec + 5, err, errlen)) < 0) goto fail;
  } else if (strncmp(o->spec, "http:", 5) == 0 || strncmp(o->spec, "https:", 6) == 0) {
    /* "https://host/x", or the same with a redundant scheme prefix
     * ("http:https://host/x") */
    cm_source_opts_t ho = *o;
    const char *colon = strchr(o->spec, ':');
    if (strncmp(colon + 1, "http://", 7) == 0 || strncmp(colon + 1, "https://", 8) == 0)
      ho.spec = colon + 1;
    s->kind = CM__SRC_HTTP;
    if ((ret = cm_http_src_open(&s->http, &ho, &s->desc, err, errlen)) < 0) goto fail;
  } else {
    char shown[1024];
    snprintf(err, errlen,
             "unknown source \"%s\": expected gen:users, file:PATH, file:- or http(s)://URL",
             cm_redact_urls(o->spec, shown, sizeof(shown)));
    ret = -EINVAL;
    goto fail;
  }
  *out = s;
  return 0;
fail:
  cm_source_close(s);
  return ret;
}

void cm_source_close(cm_source_t *s) {
  if (!s) return;
  if (s->fd >= 0 && !s->is_stdin) close(s->fd);
  cm_http_src_close(s->http);
  cm_buf_free(&s->rec);
  free(s->rbuf);
  free(s->spec_path);
  free(s->desc);
  free(s);
}

const char *cm_source_describe(const cm_source_t *s) { return s->desc; }
bool cm_source_random_access(const cm_source_t *s) { return s->kind == CM__SRC_GEN; }
uint64_t cm_source_line(const cm_source_t *s) { return s->line; }

int cm_source_set_max_record(cm_source_t *s, size_t bytes) {
  if (s->kind != CM__SRC_FILE || bytes == 0) return -EINVAL;
  s->max_record = bytes;
  s->rec.max = bytes;
  return 0;
}

/* ---- file: reading ----------------------------------------------------- */

/* Bytes available at rpos (refilling when empty), 0 at EOF, or -errno. */
static int cm__fill(cm_source_t *s) {
  ssize_t n;
  if (s->rpos < s->rlen) return (int)(s->rlen - s->rpos);
  if (s->eof) return 0;
  s->off += (int64_t)s->rlen;
  s->rpos = s->rlen = 0;
  do
    n = read(s->fd, s->rbuf, CM__RBUF_SIZE);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (n == 0) {
    s->eof = true;
    return 0;
  }
  s->rlen = (size_t)n;
  /* A UTF-8 byte order mark is not JSON; editors on some systems add it. */
  if (s->off == 0 && s->rlen >= 3 && memcmp(s->rbuf, "\xEF\xBB\xBF", 3) == 0) s->rpos = 3;
  return (int)(s->rlen - s->rpos);
}

static int64_t cm__tell(const cm_source_t *s) { return s->off + (int64_t)s->rpos; }

static int cm__rec_append(cm_source_t *s, const char *p, size_t n, char *err, size_t errlen) {
  if (n > s->max_record - s->rec.len) {
    snprintf(err, errlen, "file:%s: %s %llu is longer than the maximum record size (%zu bytes)",
             s->spec_path, s->array ? "array value" : "line", (unsigned long long)s->line + 1,
             s->max_record);
    return -E2BIG;
  }
  int rc = cm_buf_append(&s->rec, p, n);
  if (rc < 0) snprintf(err, errlen, "file:%s: out of memory", s->spec_path);
  return rc;
}

static int cm__read_error(cm_source_t *s, int rc, char *err, size_t errlen) {
  snprintf(err, errlen, "file:%s: read: %s", s->spec_path, strerror(-rc));
  return rc;
}

/* The next line (without '\n') into rec: 1, 0 at EOF, or -errno. */
static int cm__read_line(cm_source_t *s, char *err, size_t errlen) {
  bool any = false;
  cm_buf_reset(&s->rec);
  for (;;) {
    int n = cm__fill(s);
    if (n < 0) return cm__read_error(s, n, err, errlen);
    if (n == 0) return any ? 1 : 0;
    const char *p = s->rbuf + s->rpos;
    const char *nl = memchr(p, '\n', (size_t)n);
    size_t take = nl ? (size_t)(nl - p) : (size_t)n;
    int rc = cm__rec_append(s, p, take, err, errlen);
    if (rc < 0) return rc;
    any = true;
    s->rpos += take + (nl ? 1 : 0);
    if (nl) return 1;
  }
}

static int cm__syntax(cm_source_t *s, const char *what, char *err, size_t errlen) {
  snprintf(err, errlen, "file:%s: JSON array syntax error at byte %lld: %s", s->spec_path,
           (long long)cm__tell(s), what);
  return -EBADMSG;
}

/* The next value of the array into rec: 1, 0 after ']', or -errno. Values
 * are split, not parsed: brackets are counted outside strings, so a value
 * that is not valid JSON is still cut at the right place and reported as a
 * bad record; only a broken structure (EOF inside a value, a stray '}') is
 * fatal, because the rest cannot be split reliably. */
static int cm__read_value(cm_source_t *s, char *err, size_t errlen) {
  cm_buf_reset(&s->rec);
  for (;;) {
    int n = cm__fill(s);
    if (n < 0) return cm__read_error(s, n, err, errlen);
    if (n == 0) {
      if (s->astate == CM__A_DONE) return 0;
      return cm__syntax(s, s->astate == CM__A_START ? "expected '['" : "unexpected end of input",
                        err, errlen);
    }
    char c = s->rbuf[s->rpos];
    if (s->astate != CM__A_IN && cm__blank(c)) {
      s->rpos++;
      continue;
    }
    switch (s->astate) {
    case CM__A_START:
      if (c != '[') return cm__syntax(s, "expected '['", err, errlen);
      s->astate = CM__A_FIRST;
      s->rpos++;
      continue;
    case CM__A_SEP:
      if (c == ',') s->astate = CM__A_ELEM;
      else if (c == ']') s->astate = CM__A_DONE;
      else return cm__syntax(s, "expected ',' or ']'", err, errlen);
      s->rpos++;
      continue;
    case CM__A_DONE:
      return cm__syntax(s, "unexpected data after the array", err, errlen);
    case CM__A_FIRST:
    case CM__A_ELEM:
      if (c == ']' && s->astate == CM__A_FIRST) {
        s->astate = CM__A_DONE;
        s->rpos++;
        continue;
      }
      if (c == ',' || c == ']') return cm__syntax(s, "expected a value", err, errlen);
      s->astate = CM__A_IN;
      s->depth = 0;
      s->in_str = s->esc = false;
      break;
    default:
      break;
    }
    /* CM__A_IN: scan to the ',' or ']' that ends the value at depth 0 */
    const char *p = s->rbuf + s->rpos;
    size_t i = 0;
    bool end = false;
    for (; i < (size_t)n && !end; i++) {
      char b = p[i];
      if (s->in_str) {
        if (s->esc) s->esc = false;
        else if (b == '\\') s->esc = true;
        else if (b == '"') s->in_str = false;
      } else if (b == '"') {
        s->in_str = true;
      } else if (b == '[' || b == '{') {
        s->depth++;
      } else if (b == ']' || b == '}' || b == ',') {
        if (s->depth == 0) {
          if (b == '}') {
            s->rpos += i;
            return cm__syntax(s, "unbalanced '}'", err, errlen);
          }
          end = true;
          i--; /* the separator is not part of the value */
        } else if (b != ',') {
          s->depth--;
        }
      }
    }
    int rc = cm__rec_append(s, p, i, err, errlen);
    if (rc < 0) return rc;
    s->rpos += i;
    if (end) {
      s->astate = CM__A_SEP;
      return 1;
    }
  }
}

/* ---- file: records ----------------------------------------------------- */

static bool cm__valid_json(const char *p, size_t n) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(p, n, &end, 0);
  if (!j) return false;
  cJSON_Delete(j);
  /* cJSON stops after the first value; "1 2" must not pass as 1 */
  for (const char *q = end; q < p + n; q++)
    if (!cm__blank(*q)) return false;
  return true;
}

/* Appends the first CM__RAW_MAX bytes of a bad record as a JSON string,
 * cut at a character boundary (cm_buf_append_json_str escapes controls and
 * replaces invalid UTF-8, so any input gives valid JSON). */
static int cm__append_raw(cm_buf_t *b, const char *s, size_t n) {
  size_t lim = n;
  if (lim > CM__RAW_MAX) {
    lim = CM__RAW_MAX;
    while (lim > 0 && ((unsigned char)s[lim] & 0xc0) == 0x80) lim--;
  }
  return cm_buf_append_json_str(b, s, lim);
}

static int cm__emit_bad(cm_buf_t *bad, bool first, uint64_t line, const char *p, size_t n,
                        const char *reason) {
  int rc = cm_buf_printf(bad, "%s{\"line\":%llu,\"reason\":\"%s\",\"raw\":",
                         first ? "" : ",", (unsigned long long)line, reason);
  if (rc == 0) rc = cm__append_raw(bad, p, n);
  if (rc == 0) rc = cm_buf_append(bad, "}", 1);
  return rc;
}

int cm_source_next(cm_source_t *s, cm_buf_t *out, uint32_t *nrec, cm_buf_t *bad, uint32_t *nbad,
                   int64_t *pos, char *err, size_t errlen) {
  uint32_t got = 0;
  int rc = 0;
  *nrec = *nbad = 0;
  if (errlen) err[0] = '\0';
  if (s->kind == CM__SRC_HTTP) {
    rc = cm_http_src_next(s->http, s->chunk_size, out, nrec, pos, &s->line, err, errlen);
    return rc;
  }
  if (s->kind != CM__SRC_FILE) {
    snprintf(err, errlen, "source %s is read by chunk index, not sequentially", s->desc);
    return -ENOTSUP;
  }
  while (got < s->chunk_size) {
    rc = s->array ? cm__read_value(s, err, errlen) : cm__read_line(s, err, errlen);
    if (rc < 0) return rc;
    if (rc == 0) break;
    rc = 0;
    s->line++;
    const char *p = s->rec.data ? s->rec.data : "";
    size_t n = s->rec.len;
    while (n && cm__blank(*p)) p++, n--;
    while (n && cm__blank(p[n - 1])) n--;
    if (n == 0) continue; /* blank NDJSON line: not a record */
    got++;
    size_t ubad = cm_utf8_check(p, n);
    if (ubad != n) {
      /* JSON text is UTF-8 (RFC 8259): a record that is not is a dead
       * letter here, with where it goes wrong. */
      char why[64];
      snprintf(why, sizeof(why), "not valid UTF-8 (byte %zu)", ubad);
      rc = cm__emit_bad(bad, *nbad == 0, s->line, p, n, why);
      if (rc == 0) (*nbad)++;
    } else if (cm__valid_json(p, n)) {
      if (*nrec) rc = cm_buf_append(out, ",", 1);
      if (rc == 0) rc = cm_buf_append(out, p, n);
      if (rc == 0) (*nrec)++;
    } else {
      rc = cm__emit_bad(bad, *nbad == 0, s->line, p, n, "invalid JSON");
      if (rc == 0) (*nbad)++;
    }
    if (rc < 0) {
      snprintf(err, errlen, "file:%s: record %llu does not fit the chunk buffer: %s",
               s->spec_path, (unsigned long long)s->line, strerror(-rc));
      return rc;
    }
  }
  *pos = cm__tell(s);
  return got ? 0 : 1;
}

const char *cm_source_cursor(const cm_source_t *s) {
  return s->kind == CM__SRC_HTTP ? cm_http_src_cursor(s->http) : NULL;
}

int cm_source_resume(cm_source_t *s, int64_t pos, uint64_t line, const char *cursor) {
  if (s->kind == CM__SRC_HTTP) {
    s->line = line;
    return cm_http_src_seek_cursor(s->http, pos, line, cursor);
  }
  return cm_source_seek(s, pos, line);
}

int cm_source_seek(cm_source_t *s, int64_t pos, uint64_t line) {
  if (s->kind == CM__SRC_HTTP) {
    s->line = line;
    return cm_http_src_seek(s->http, pos, line);
  }
  if (s->kind != CM__SRC_FILE) return -ENOTSUP;
  if (pos < 0) return -EINVAL;
  if (s->is_stdin) {
    /* a pipe only goes forward: "resuming" where we already are is fine */
    if (pos != cm__tell(s)) return -ESPIPE;
    s->line = line;
    return 0;
  }
  if (lseek(s->fd, (off_t)pos, SEEK_SET) < 0) return -errno;
  s->off = pos;
  s->rpos = s->rlen = 0;
  s->eof = false;
  s->line = line;
  cm_buf_reset(&s->rec);
  /* Chunks end right after a value, so a resume point inside an array is
   * always followed by ',' or ']'. */
  s->astate = pos == 0 ? CM__A_START : CM__A_SEP;
  s->depth = 0;
  s->in_str = s->esc = false;
  return 0;
}
