/* source_http.c - paged JSON over HTTP(S) with libcurl (see source_http.h).
 *
 * A page body is held in one buffer (at most CM__HTTP_MAX_BODY bytes),
 * syntax-checked once (cm_json_value_span_why), and its records are handed
 * out as raw spans of that text: no tree, and numbers keep their exact
 * spelling. */
#define _GNU_SOURCE
#include "cm/err.h"
#include "source_http.h"
#include "source_impl.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <time.h>

#include "cm/chunk.h"
#include "cm/log.h"
#include "cm/redact.h"

#define CM__HTTP_MAX_BODY ((size_t)256 * 1024 * 1024)
#define CM__HTTP_MAX_HEADERS 32
#define CM__HTTP_MAX_HDRLINE 8192
#define CM__HTTP_BACKOFF_MAX_MS 8000

struct cm_http_src_s {
  CURL *curl;
  struct curl_slist *headers;
  char *url;        /* as given (after "http:"/"https:" prefix handling) */
  char *shown;      /* url with its credentials as "***": for logs, errors, desc */
  bool follow_redirects; /* to other origins too (never with the headers) */
  char *param;      /* page parameter, "" for none */
  int64_t start, step, pages, timeout_ms, retries, backoff_ms;
  char *next_field; /* NULL: page numbers */
  char *records_path;
  char errbuf[CURL_ERROR_SIZE];

  cm_buf_t body;      /* the current page */
  const char *arr;    /* its records array span, inside body */
  size_t arr_len, arr_pos;
  int64_t seq;        /* sequence number of the page in body (0: none) */
  uint64_t used;      /* records of that page handed out */
  bool page_empty;    /* the page in body had no records */
  char *next_url;     /* next-field mode: the link of the page in body */
  bool end;           /* no more pages */
  int64_t seek_seq;   /* pending resume (0: none) */
  uint64_t seek_used;
  char *seek_url;     /* next-field mode: the resume cursor, the page's own URL */
  char *page_url;     /* next-field mode: the URL the page in body came from */
};


static char *fmt_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_alloc(const char *fmt, ...) {
  va_list ap;
  char *s = NULL;
  va_start(ap, fmt);
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- headers ----------------------------------------------------------- */

static char *trim(char *s) {
  char *e;
  while (*s == ' ' || *s == '\t') s++;
  e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = '\0';
  return s;
}

/* Reads a small file (a secret or a header list) into a new string. */
static char *slurp(const char *path, size_t max) {
  FILE *f = fopen(path, "rb");
  char *b;
  size_t n;
  if (f == NULL) return NULL;
  b = malloc(max + 1);
  if (b == NULL) {
    fclose(f);
    return NULL;
  }
  n = fread(b, 1, max, f);
  fclose(f);
  b[n] = '\0';
  return b;
}

/* "Name: value" with the value "@FILE" or "$ENV" resolved. Errors name the
 * header and the file or variable, never a value. */
static int add_header(cm_http_src_t *h, const char *line, char *err, size_t errlen) {
  char *copy = strdup(line), *colon, *name, *val, *full = NULL, *owned = NULL;
  struct curl_slist *l;
  int rc = 0;
  if (copy == NULL) return -ENOMEM;
  colon = strchr(copy, ':');
  if (colon == NULL || colon == copy) {
    cm_set_err(err, errlen, "--http-header: expected \"Name: value\"");
    rc = -EINVAL;
    goto done;
  }
  *colon = '\0';
  name = trim(copy);
  val = trim(colon + 1);
  if (val[0] == '@') {
    if ((owned = slurp(val + 1, CM__HTTP_MAX_HDRLINE)) == NULL) {
      cm_set_err(err, errlen, "--http-header %s: cannot read %s: %s", name, val + 1, strerror(errno));
      rc = -ENOENT;
      goto done;
    }
    val = trim(owned);
  } else if (val[0] == '$') {
    const char *ev = getenv(val + 1);
    if (ev == NULL || *ev == '\0') {
      cm_set_err(err, errlen, "--http-header %s: environment variable %s is not set", name, val + 1);
      rc = -ENOENT;
      goto done;
    }
    val = (char *)ev;
  }
  if (strpbrk(val, "\r\n") != NULL) {
    cm_set_err(err, errlen, "--http-header %s: the value contains a line break", name);
    rc = -EINVAL;
    goto done;
  }
  if ((full = fmt_alloc("%s: %s", name, val)) == NULL || (l = curl_slist_append(h->headers, full)) == NULL) {
    rc = -ENOMEM;
    goto done;
  }
  h->headers = l;
done:
  if (full) {
    /* it held the secret: do not leave it in freed memory */
    memset(full, 0, strlen(full));
    free(full);
  }
  if (owned) {
    memset(owned, 0, strlen(owned));
    free(owned);
  }
  free(copy);
  return rc;
}

static int parse_headers(cm_http_src_t *h, const char *opt, char *err, size_t errlen) {
  char *list, *save = NULL, *ln;
  int rc = 0, n = 0;
  if (opt == NULL || *opt == '\0') return 0;
  if (opt[0] != '@') return add_header(h, opt, err, errlen);
  /* "@FILE": one header per line; blank lines and #comments skipped */
  if ((list = slurp(opt + 1, CM__HTTP_MAX_HEADERS * CM__HTTP_MAX_HDRLINE)) == NULL) {
    cm_set_err(err, errlen, "--http-header: cannot read %s: %s", opt + 1, strerror(errno));
    return -ENOENT;
  }
  for (ln = strtok_r(list, "\n", &save); ln && rc == 0; ln = strtok_r(NULL, "\n", &save)) {
    char *t = trim(ln);
    if (*t == '\0' || *t == '#') continue;
    if (++n > CM__HTTP_MAX_HEADERS) {
      cm_set_err(err, errlen, "--http-header %s: more than %d headers", opt + 1, CM__HTTP_MAX_HEADERS);
      rc = -E2BIG;
      break;
    }
    rc = add_header(h, t, err, errlen);
  }
  memset(list, 0, strlen(list));
  free(list);
  return rc;
}

/* ---- open/close -------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  cm_buf_t *b = ud;
  if (cm_buf_append(b, p, sz * n) != 0) return 0; /* too big: curl fails the transfer */
  return sz * n;
}

void cm_http_src_close(cm_http_src_t *h) {
  if (h == NULL) return;
  if (h->curl) curl_easy_cleanup(h->curl);
  curl_slist_free_all(h->headers);
  cm_buf_free(&h->body);
  free(h->url);
  free(h->shown);
  free(h->param);
  free(h->next_field);
  free(h->records_path);
  free(h->next_url);
  free(h->seek_url);
  free(h->page_url);
  free(h);
  curl_global_cleanup();
}

int cm_http_src_open(cm_http_src_t **out, const cm_source_opts_t *o, char **desc, char *err,
                     size_t errlen) {
  cm_http_src_t *h = NULL;
  int rc = -ENOMEM;
  CURLU *u = NULL;

  char shown[1024];
  *out = NULL;
  *desc = NULL;
  (void)cm_redact_urls(o->spec, shown, sizeof(shown)); /* for messages */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
    cm_set_err(err, errlen, "%s: cannot initialise libcurl", shown);
    return -EIO;
  }
  if ((h = calloc(1, sizeof *h)) == NULL) {
    curl_global_cleanup();
    cm_set_err(err, errlen, "%s: out of memory", shown);
    return -ENOMEM;
  }
  cm_buf_init(&h->body, CM__HTTP_MAX_BODY);
  h->url = strdup(o->spec); /* "http://..." or "https://...": the spec is the URL */
  h->shown = cm_redact_urls_dup(o->spec);
  h->follow_redirects = o->http_follow_redirects;
  h->param = strdup(o->http_page_param ? o->http_page_param : "page");
  h->start = o->http_page_start;
  h->step = o->http_page_step ? o->http_page_step : 1;
  h->pages = o->http_pages > 0 ? o->http_pages : 0;
  h->timeout_ms = o->http_timeout_ms > 0 ? o->http_timeout_ms : 30000;
  h->retries = o->http_retries >= 0 ? o->http_retries : 5;
  h->backoff_ms = 250;
  if (o->http_next_field && *o->http_next_field) h->next_field = strdup(o->http_next_field);
  if (o->http_records_path && *o->http_records_path)
    h->records_path = strdup(o->http_records_path);
  if (!h->url || !h->shown || !h->param || (o->http_next_field && *o->http_next_field && !h->next_field) ||
      (o->http_records_path && *o->http_records_path && !h->records_path))
    goto nomem;
  /* The URL must parse now: a typo is a start-up error, not a retry loop. */
  if ((u = curl_url()) == NULL) goto nomem;
  if (curl_url_set(u, CURLUPART_URL, h->url, 0) != CURLUE_OK) {
    cm_set_err(err, errlen, "%s: not a valid URL", h->shown);
    rc = -EINVAL;
    goto fail;
  }
  if ((rc = parse_headers(h, o->http_header, err, errlen)) < 0) goto fail;
  if ((h->curl = curl_easy_init()) == NULL) goto nomem;
  (void)curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
  /* Redirects are followed by hand (follow()): to the same origin only,
   * unless --http-follow-redirects, and never with the custom headers to
   * another origin (https -> http included). */
  (void)curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);
  (void)curl_easy_setopt(h->curl, CURLOPT_UNRESTRICTED_AUTH, 0L);
  (void)curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https");
  (void)curl_easy_setopt(h->curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  (void)curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
  (void)curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(h->timeout_ms < 10000 ? h->timeout_ms : 10000));
  (void)curl_easy_setopt(h->curl, CURLOPT_ACCEPT_ENCODING, "");
  (void)curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "chunkmill-fetcher");
  (void)curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
  (void)curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
  (void)curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &h->body);
  (void)curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->errbuf);
  (void)curl_easy_setopt(h->curl, CURLOPT_FAILONERROR, 0L);
  if (h->next_field)
    *desc = fmt_alloc("%s next=%s records=%s pages=%" PRId64 " chunk=%u", h->shown, h->next_field,
                      h->records_path ? h->records_path : "(body)", h->pages, o->chunk_size);
  else
    *desc = fmt_alloc("%s param=%s start=%" PRId64 " step=%" PRId64 " records=%s pages=%" PRId64
                      " chunk=%u",
                      h->shown, h->param, h->start, h->step,
                      h->records_path ? h->records_path : "(body)", h->pages, o->chunk_size);
  if (*desc == NULL) goto nomem;
  curl_url_cleanup(u);
  *out = h;
  return 0;
nomem:
  cm_set_err(err, errlen, "%s: out of memory", shown);
  rc = -ENOMEM;
fail:
  curl_url_cleanup(u);
  cm_http_src_close(h);
  return rc;
}

void cm_http_src_set_backoff(cm_http_src_t *h, int64_t base_ms) { h->backoff_ms = base_ms; }

/* ---- fetching ---------------------------------------------------------- */

/* URL of page seq (page-number mode). */
static char *page_url(const cm_http_src_t *h, int64_t seq) {
  if (h->param[0] == '\0') return strdup(h->url);
  return fmt_alloc("%s%c%s=%" PRId64, h->url, strchr(h->url, '?') ? '&' : '?', h->param,
                   h->start + (seq - 1) * h->step);
}

int cm_http_same_origin(const char *a, const char *b) {
  static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
  CURLU *ua = curl_url(), *ub = curl_url();
  int same = ua != NULL && ub != NULL && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
             curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK;
  for (size_t i = 0; same && i < sizeof(parts) / sizeof(parts[0]); i++) {
    char *va = NULL, *vb = NULL;
    same = curl_url_get(ua, parts[i], &va, CURLU_DEFAULT_PORT) == CURLUE_OK &&
           curl_url_get(ub, parts[i], &vb, CURLU_DEFAULT_PORT) == CURLUE_OK &&
           strcasecmp(va, vb) == 0;
    curl_free(va);
    curl_free(vb);
  }
  curl_url_cleanup(ua);
  curl_url_cleanup(ub);
  return same;
}

#define CM__HTTP_MAX_REDIRECTS 5

/* One GET of url, following redirects by hand: to the first URL's origin
 * with the custom headers; to any other origin (another host or port, or
 * https -> http) only with follow_redirects, and then without them for the
 * rest of the chain. 0 with *cc and *status set, or -EIO with err set for a
 * refused redirect (not retried). */
static int perform(cm_http_src_t *h, const char *url, CURLcode *cc, long *status, char *err,
                   size_t errlen) {
  char *cur = strdup(url);
  bool headers = true;
  int rc = 0;
  if (cur == NULL) return -ENOMEM;
  for (int hop = 0;; hop++) {
    char *loc = NULL;
    cm_buf_reset(&h->body);
    h->errbuf[0] = '\0';
    *status = 0;
    (void)curl_easy_setopt(h->curl, CURLOPT_URL, cur);
    (void)curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers ? h->headers : NULL);
    *cc = curl_easy_perform(h->curl);
    if (*cc != CURLE_OK) break;
    (void)curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    if (*status < 300 || *status > 399) break;
    if (curl_easy_getinfo(h->curl, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || loc == NULL)
      break; /* a 3xx without Location: judged as a status */
    if (hop == CM__HTTP_MAX_REDIRECTS) {
      cm_set_err(err, errlen, "GET %s: more than %d redirects", h->shown, CM__HTTP_MAX_REDIRECTS);
      rc = -EIO;
      break;
    }
    if (!cm_http_same_origin(url, loc)) {
      if (!h->follow_redirects) {
        char shown[1024];
        cm_set_err(err, errlen,
                   "GET %s: redirected to another origin (%s): not followed (--http-follow-"
                   "redirects follows it, without the custom headers)",
                   h->shown, cm_redact_urls(loc, shown, sizeof(shown)));
        rc = -EIO;
        break;
      }
      headers = false;
    }
    {
      char *next = strdup(loc);
      if (next == NULL) {
        rc = -ENOMEM;
        break;
      }
      free(cur);
      cur = next;
    }
  }
  free(cur);
  (void)curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
  return rc;
}

/* GET url into body, with retries. 0, or a negative errno with err set. */
static int get(cm_http_src_t *h, const char *url_in, char *err, size_t errlen) {
  int64_t delay = h->backoff_ms;
  char url[1024];
  (void)cm_redact_urls(url_in, url, sizeof(url)); /* what messages show */
  for (int64_t attempt = 0;; attempt++) {
    long status = 0;
    CURLcode cc;
    bool retry;
    char what[CURL_ERROR_SIZE + 64];
    int rc = perform(h, url_in, &cc, &status, err, errlen);
    if (rc < 0) return rc;
    if (cc == CURLE_OK) {
      if (status >= 200 && status < 300) return 0;
      retry = status >= 500 || status == 429;
      snprintf(what, sizeof what, "HTTP %ld", status);
    } else if (cc == CURLE_WRITE_ERROR) {
      cm_set_err(err, errlen, "GET %s: the page is larger than %zu bytes", url, h->body.max);
      return -E2BIG;
    } else {
      retry = cc != CURLE_URL_MALFORMAT && cc != CURLE_UNSUPPORTED_PROTOCOL;
      snprintf(what, sizeof what, "%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
    }
    if (!retry) {
      cm_set_err(err, errlen, "GET %s: %s (not retried)", url, what);
      return -EIO;
    }
    if (attempt >= h->retries) {
      cm_set_err(err, errlen, "GET %s: %s, giving up after %" PRId64 " attempts", url, what,
              attempt + 1);
      return -EIO;
    }
    cm_log_warn("GET %s: %s: retrying in %" PRId64 " ms (retry %" PRId64 " of %" PRId64 ")", url,
                what, delay, attempt + 1, h->retries);
    sleep_ms(delay);
    delay = delay * 2 < CM__HTTP_BACKOFF_MAX_MS ? delay * 2 : CM__HTTP_BACKOFF_MAX_MS;
  }
}

static const char *skip_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* The value of member `key` (klen bytes, compared with the raw key text) of
 * the object span [p, e): 1 with *v and *vl set, 0 when absent or not an object. The
 * span is syntax-checked already. */
static int member(const char *p, const char *e, const char *key, size_t klen, const char **v,
                  size_t *vl) {
  p = skip_ws(p, e);
  if (p >= e || *p != '{') return 0;
  p++;
  for (;;) {
    long n;
    const char *k;
    size_t kl;
    p = skip_ws(p, e);
    if (p >= e || *p != '"') return 0;
    if ((n = cm_json_value_skip(p, (size_t)(e - p))) < 2) return 0;
    k = p + 1;
    kl = (size_t)n - 2;
    p = skip_ws(p + n, e);
    if (p >= e || *p != ':') return 0;
    p = skip_ws(p + 1, e);
    if ((n = cm_json_value_skip(p, (size_t)(e - p))) <= 0) return 0;
    if (kl == klen && memcmp(k, key, klen) == 0) {
      *v = p;
      *vl = (size_t)n;
      return 1;
    }
    p = skip_ws(p + n, e);
    if (p >= e || *p != ',') return 0;
    p++;
  }
}

/* Follows a dotted path from the span [p, p+n). */
static int lookup(const char *p, size_t n, const char *path, const char **v, size_t *vl) {
  const char *e = p + n;
  while (*path) {
    const char *dot = strchr(path, '.');
    size_t kl = dot ? (size_t)(dot - path) : strlen(path);
    if (!member(p, e, path, kl, v, vl)) return 0;
    p = *v;
    e = p + *vl;
    path += kl + (dot ? 1 : 0);
  }
  *v = p;
  *vl = (size_t)(e - p);
  return 1;
}

/* Fetches page seq (url: NULL in page-number mode) and finds its records. */
static int load_page(cm_http_src_t *h, int64_t seq, const char *url_in, char *err, size_t errlen) {
  char *url = url_in ? strdup(url_in) : page_url(h, seq);
  char shown[1024];
  const char *why = NULL, *v = NULL, *lb;
  size_t epos = 0, vl = 0;
  long span;
  int rc;

  if (url == NULL) return -ENOMEM;
  free(h->next_url);
  h->next_url = NULL;
  h->arr = NULL;
  h->arr_len = h->arr_pos = 0;
  h->used = 0;
  h->seq = seq;
  if ((rc = get(h, url, err, errlen)) < 0) goto done;
  (void)cm_redact_urls(url, shown, sizeof(shown));
  lb = skip_ws(h->body.data ? h->body.data : "", (h->body.data ? h->body.data : "") + h->body.len);
  span = cm_json_value_span_why(lb, h->body.len - (size_t)(lb - h->body.data), &epos, &why);
  if (h->body.len == 0 || span < 0) {
    cm_set_err(err, errlen, "GET %s: the body is not JSON (%s at byte %zu)", shown,
            why ? why : "empty body", epos + (size_t)(lb - (h->body.data ? h->body.data : lb)));
    rc = -EBADMSG;
    goto done;
  }
  if (h->records_path) {
    if (!lookup(lb, (size_t)span, h->records_path, &v, &vl)) {
      /* {"data": null} or no member: treat as an empty page (the end) */
      v = "[]";
      vl = 2;
    }
  } else {
    v = lb;
    vl = (size_t)span;
  }
  if (vl == 4 && memcmp(v, "null", 4) == 0) {
    v = "[]";
    vl = 2;
  }
  if (v[0] != '[') {
    cm_set_err(err, errlen, "GET %s: %s is not a JSON array", shown,
            h->records_path ? h->records_path : "the body");
    rc = -EBADMSG;
    goto done;
  }
  h->arr = v;
  h->arr_len = vl;
  {
    size_t pos = 0, el;
    const char *rec;
    h->page_empty = cm_json_array_next(v, vl, &pos, &rec, &el) != 1;
  }
  if (h->next_field) {
    const char *nv;
    size_t nl;
    if (lookup(lb, (size_t)span, h->next_field, &nv, &nl) && nv[0] == '"') {
      cJSON *s = cJSON_ParseWithLength(nv, nl);
      if (s && cJSON_IsString(s) && s->valuestring && s->valuestring[0]) {
        /* relative links resolve against the page that gave them */
        CURLU *u = curl_url();
        char *abs = NULL;
        if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            curl_url_set(u, CURLUPART_URL, s->valuestring, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_URL, &abs, 0) == CURLUE_OK) {
          h->next_url = strdup(abs);
        } else {
          cm_set_err(err, errlen, "GET %s: the next link is not a valid URL", shown);
          rc = -EBADMSG;
        }
        curl_free(abs);
        curl_url_cleanup(u);
      }
      cJSON_Delete(s);
    }
  }
  if (rc == 0 && h->next_field) {
    /* The resume cursor (cm_http_src_cursor): this page's URL. */
    free(h->page_url);
    h->page_url = url;
    url = NULL;
  }
done:
  free(url);
  return rc;
}

/* Makes sure a page with unread records is loaded: 0, 1 at the end, <0. */
static int ensure_page(cm_http_src_t *h, char *err, size_t errlen) {
  int rc;
  if (h->seek_seq > 0) {
    /* Resume: page seek_seq, seek_used records already in the ledger. */
    int64_t target = h->seek_seq;
    uint64_t skip = h->seek_used;
    h->seek_seq = 0;
    if (h->next_field && h->seek_url != NULL) {
      /* The stored cursor: that page at once, not every link from page 1. */
      char *u = h->seek_url;
      h->seek_url = NULL;
      rc = load_page(h, target, u, err, errlen);
      free(u);
    } else if (h->next_field) {
      rc = load_page(h, 1, h->url, err, errlen);
      for (int64_t s = 2; rc == 0 && s <= target; s++) {
        if (h->next_url == NULL) {
          cm_set_err(err, errlen, "%s: cannot resume at page %" PRId64 ": the links end at page %" PRId64,
                  h->shown, target, s - 1);
          return -ESPIPE;
        }
        char *nu = strdup(h->next_url);
        if (nu == NULL) return -ENOMEM;
        rc = load_page(h, s, nu, err, errlen);
        free(nu);
      }
    } else {
      rc = load_page(h, target, NULL, err, errlen);
    }
    if (rc < 0) return rc;
    for (uint64_t k = 0; k < skip; k++) {
      const char *rec;
      size_t el;
      if (cm_json_array_next(h->arr, h->arr_len, &h->arr_pos, &rec, &el) != 1) break;
      h->used++;
    }
  }
  for (;;) {
    if (h->end) return 1;
    if (h->seq > 0 && h->arr != NULL) {
      size_t p = h->arr_pos, el;
      const char *rec;
      if (cm_json_array_next(h->arr, h->arr_len, &p, &rec, &el) == 1) return 0;
      if (h->page_empty) {
        h->end = true; /* the first empty page ends the source */
        return 1;
      }
    }
    /* the page in hand is used up: the next one, if any */
    if (h->pages > 0 && h->seq >= h->pages) {
      h->end = true;
      return 1;
    }
    if (h->next_field) {
      if (h->seq == 0) {
        rc = load_page(h, 1, h->url, err, errlen);
      } else if (h->next_url == NULL) {
        h->end = true;
        return 1;
      } else {
        char *nu = strdup(h->next_url);
        if (nu == NULL) return -ENOMEM;
        rc = load_page(h, h->seq + 1, nu, err, errlen);
        free(nu);
      }
    } else {
      rc = load_page(h, h->seq + 1, NULL, err, errlen);
    }
    if (rc < 0) return rc;
  }
}

int cm_http_src_next(cm_http_src_t *h, uint32_t chunk_size, cm_buf_t *out, uint32_t *nrec,
                     int64_t *pos, uint64_t *line, char *err, size_t errlen) {
  int rc;
  *nrec = 0;
  if ((rc = ensure_page(h, err, errlen)) != 0) {
    if (rc < 0) h->seq = 0, h->arr = NULL; /* nothing half-read is kept */
    return rc;
  }
  while (*nrec < chunk_size) {
    const char *rec;
    size_t el;
    if (cm_json_array_next(h->arr, h->arr_len, &h->arr_pos, &rec, &el) != 1) break;
    if (*nrec > 0 && (rc = cm_buf_append(out, ",", 1)) < 0) break;
    if ((rc = cm_buf_append(out, rec, el)) < 0) break;
    (*nrec)++;
    h->used++;
  }
  if (rc < 0) {
    cm_set_err(err, errlen, "%s: page %" PRId64 ": chunk too large (%s)", h->shown, h->seq,
            strerror(-rc));
    return rc;
  }
  *pos = h->seq;
  *line = h->used;
  return 0;
}

int cm_http_src_seek(cm_http_src_t *h, int64_t pos, uint64_t line) {
  return cm_http_src_seek_cursor(h, pos, line, NULL);
}

int cm_http_src_seek_cursor(cm_http_src_t *h, int64_t pos, uint64_t line, const char *cursor) {
  char *u = NULL;
  if (pos < 1) return -EINVAL;
  if (cursor != NULL && cursor[0] != '\0' && h->next_field && !(u = strdup(cursor)))
    return -ENOMEM;
  free(h->seek_url);
  h->seek_url = u;
  h->seek_seq = pos;
  h->seek_used = line;
  h->end = false;
  return 0;
}

const char *cm_http_src_cursor(const cm_http_src_t *h) {
  char shown[2048];
  if (!h->next_field || h->page_url == NULL) return NULL;
  /* The cursor is stored in the ledger: never a URL that carries a
   * credential (the walk from page 1 is the fallback). */
  if (strlen(h->page_url) >= sizeof(shown)) return NULL;
  (void)cm_redact_urls(h->page_url, shown, sizeof(shown));
  return strcmp(shown, h->page_url) == 0 ? h->page_url : NULL;
}

/* ---- the source kind (source_impl.h) ---------------------------------- */

typedef struct cm__http_kind_s {
  cm_http_src_t *h;
  uint32_t chunk_size;
  uint64_t line; /* records of the current page used (cm_source_line) */
} cm__http_kind_t;

static int cm__http_open(void **impl, char **desc, const cm_source_opts_t *o, char *err,
                         size_t errlen) {
  /* "https://host/x", or the same with a redundant scheme prefix
   * ("http:https://host/x") */
  cm_source_opts_t ho = *o;
  const char *colon = strchr(o->spec, ':');
  cm__http_kind_t *k;
  int rc;
  if (strncmp(colon + 1, "http://", 7) == 0 || strncmp(colon + 1, "https://", 8) == 0)
    ho.spec = colon + 1;
  if (!(k = calloc(1, sizeof *k))) {
    cm_set_err(err, errlen, "source: out of memory");
    return -ENOMEM;
  }
  k->chunk_size = o->chunk_size;
  if ((rc = cm_http_src_open(&k->h, &ho, desc, err, errlen)) < 0) {
    free(k);
    return rc;
  }
  *impl = k;
  return 0;
}

static void cm__http_close(void *impl) {
  cm__http_kind_t *k = impl;
  if (!k) return;
  cm_http_src_close(k->h);
  free(k);
}

static int cm__http_next(void *impl, cm_buf_t *out, uint32_t *nrec, cm_buf_t *bad,
                         uint32_t *nbad, int64_t *pos, char *err, size_t errlen) {
  cm__http_kind_t *k = impl;
  (void)bad; /* records come out of a parsed JSON array: none is bad */
  (void)nbad;
  return cm_http_src_next(k->h, k->chunk_size, out, nrec, pos, &k->line, err, errlen);
}

static uint64_t cm__http_line(const void *impl) { return ((const cm__http_kind_t *)impl)->line; }

static const char *cm__http_cursor(const void *impl) {
  return cm_http_src_cursor(((const cm__http_kind_t *)impl)->h);
}

static int cm__http_resume(void *impl, int64_t pos, uint64_t line, const char *cursor) {
  cm__http_kind_t *k = impl;
  k->line = line;
  return cm_http_src_seek_cursor(k->h, pos, line, cursor);
}

const cm_source_ops_t cm_source_http_ops = {
    .open = cm__http_open,
    .close = cm__http_close,
    .next = cm__http_next,
    .line = cm__http_line,
    .cursor = cm__http_cursor,
    .resume = cm__http_resume,
};
