/* source_gen.c - the gen:users source (source.h): record i is a pure
 * function of (seed, i): a splitmix64 stream seeded with hash(seed, i) gives
 * its uuid, names and friends, and a friend's uuid is that record's uuid,
 * recomputed from its index. So any chunk can be regenerated alone, in any
 * order, on any fetcher run. JSON is written by hand straight into the
 * output buffer (no tree, no printf): this is the pipeline's load generator
 * and must not be its bottleneck. */
#include "source_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cm__gen_s {
  uint32_t chunk_size;
  uint64_t records;
  uint64_t seed_hash; /* hash of the seed, mixed with each record index */
} cm__gen_t;

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
static inline uint64_t cm__rec_state(const cm__gen_t *s, uint64_t i) {
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

static inline void cm__uuid_of(const cm__gen_t *s, uint64_t i, char *d) {
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
static int cm__gen_record(const cm__gen_t *s, uint64_t i, bool first, cm_buf_t *out) {
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

static int64_t cm__gen_total(const void *impl) {
  const cm__gen_t *s = impl;
  return (int64_t)(s->records / s->chunk_size + (s->records % s->chunk_size != 0));
}

static int cm__gen_chunk(void *impl, uint64_t index, cm_buf_t *out, uint32_t *nrec) {
  const cm__gen_t *s = impl;
  int rc = 0;
  *nrec = 0;
  if (index >= (uint64_t)cm__gen_total(s)) return -ERANGE;
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

static int cm__gen_open(void **impl, char **desc, const cm_source_opts_t *o, char *err,
                        size_t errlen) {
  cm__gen_t *s;
  if (strcmp(o->spec, "gen:users") != 0) return cm_source_unknown(o->spec, err, errlen);
  if (!(s = calloc(1, sizeof *s))) {
    snprintf(err, errlen, "source %s: out of memory", o->spec);
    return -ENOMEM;
  }
  s->chunk_size = o->chunk_size;
  s->records = o->records;
  /* mix the seed once so seeds 1 and 2 give unrelated data sets */
  s->seed_hash = cm__fmix64(o->seed ^ 0x243f6a8885a308d3ULL) | 1;
  *desc = cm_source_fmt("gen:users records=%llu seed=%llu chunk=%u",
                        (unsigned long long)o->records, (unsigned long long)o->seed,
                        o->chunk_size);
  if (!*desc) {
    free(s);
    snprintf(err, errlen, "source %s: out of memory", o->spec);
    return -ENOMEM;
  }
  *impl = s;
  return 0;
}

static void cm__gen_close(void *impl) { free(impl); }

const cm_source_ops_t cm_source_gen_ops = {
    .open = cm__gen_open,
    .close = cm__gen_close,
    .random_access = true,
    .total_chunks = cm__gen_total,
    .chunk = cm__gen_chunk,
};
