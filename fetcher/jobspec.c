/* jobspec.c - see jobspec.h. */
#include "jobspec.h"

#include "cm/redact.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"

void cm_jobspec_defaults(cm_jobspec_t *s) {
  memset(s, 0, sizeof(*s));
  s->source.records = 100000;
  s->source.seed = 1;
  s->source.chunk_size = 100;
  s->source.http_page_param = "page";
  s->source.http_page_start = 1;
  s->source.http_page_step = 1;
  s->source.http_timeout_ms = 30000;
  s->source.http_retries = 5;
  s->priority = 1;
}

int cm_jobspec_validate(const cm_jobspec_t *s, char *err, size_t errlen) {
  size_t n = strnlen(s->job, sizeof(s->job));
  if (n == 0 || n >= sizeof(s->job) || strspn(s->job, NAME_CHARS) != n) {
    snprintf(err, errlen, "\"job\" must be 1..%d of A-Z a-z 0-9 . _ : -", CM_JOB_MAX - 1);
    return -EINVAL;
  }
  if (s->source.spec == NULL || s->source.spec[0] == '\0') {
    snprintf(err, errlen, "\"source\" is required");
    return -EINVAL;
  }
  if (s->source.chunk_size < 1 || s->source.chunk_size > 1000000) {
    snprintf(err, errlen, "\"chunk_size\" must be 1..1000000");
    return -EINVAL;
  }
  if (s->priority < 1 || s->priority > 1000) {
    snprintf(err, errlen, "\"priority\" must be 1..1000");
    return -EINVAL;
  }
  if (s->max_deliver > 1000) {
    snprintf(err, errlen, "\"max_deliver\" must be 1..1000");
    return -EINVAL;
  }
  return 0;
}

/* A header worth storing: an indirection, not the secret itself. */
static bool header_storable(const char *h) {
  const char *v;
  if (h == NULL || h[0] == '\0') return false;
  if (h[0] == '@') return true;
  v = strchr(h, ':');
  if (v == NULL) return false;
  v++;
  while (*v == ' ' || *v == '\t') v++;
  return *v == '@' || *v == '$';
}

static int put_str(cm_buf_t *b, const char *key, const char *v) {
  int rc = cm_buf_printf(b, ",\"%s\":", key);
  if (v == NULL) return rc | cm_buf_puts(b, "null");
  return rc | cm_buf_append_json_str(b, v, strlen(v));
}

int cm_jobspec_to_json(const cm_jobspec_t *s, cm_buf_t *out) {
  const cm_source_opts_t *o = &s->source;
  int rc = cm_buf_puts(out, "{\"job\":");
  rc |= cm_buf_append_json_str(out, s->job, strlen(s->job));
  /* Credentials in the URL are never stored: a job whose stored source
   * was redacted resumes only with its --source on the command line. */
  if (o->spec != NULL) {
    char *shown = cm_redact_urls_dup(o->spec);
    if (shown == NULL) return -ENOMEM;
    rc |= put_str(out, "source", shown);
    free(shown);
  } else {
    rc |= put_str(out, "source", NULL);
  }
  rc |= cm_buf_printf(out,
                      ",\"records\":%" PRIu64 ",\"seed\":%" PRIu64
                      ",\"chunk_size\":%u,\"priority\":%u,\"max_deliver\":%u,\"http\":{",
                      o->records, o->seed, o->chunk_size, s->priority, s->max_deliver);
  rc |= cm_buf_puts(out, "\"page_param\":");
  if (o->http_page_param)
    rc |= cm_buf_append_json_str(out, o->http_page_param, strlen(o->http_page_param));
  else
    rc |= cm_buf_puts(out, "null");
  rc |= cm_buf_printf(out, ",\"page_start\":%" PRId64 ",\"page_step\":%" PRId64,
                      o->http_page_start, o->http_page_step);
  rc |= put_str(out, "next_field", o->http_next_field);
  rc |= put_str(out, "records_path", o->http_records_path);
  rc |= cm_buf_printf(out, ",\"pages\":%" PRId64, o->http_pages);
  rc |= put_str(out, "header", header_storable(o->http_header) ? o->http_header : NULL);
  rc |= cm_buf_printf(out,
                      ",\"timeout_ms\":%" PRId64 ",\"retries\":%" PRId64
                      ",\"follow_redirects\":%s}}",
                      o->http_timeout_ms, o->http_retries,
                      o->http_follow_redirects ? "true" : "false");
  return rc;
}

bool cm_jobspec_source_redacted(const cm_jobspec_t *s) {
  char *shown;
  bool redacted;
  if (s->source.spec == NULL) return false;
  /* A stored source is already redacted: redacting it again changes
   * nothing, so compare with the marker itself. */
  shown = cm_redact_urls_dup(s->source.spec);
  redacted = shown != NULL && strstr(shown, "***") != NULL;
  free(shown);
  return redacted;
}

void cm_jobspec_free(cm_jobspec_store_t *s) {
  for (size_t i = 0; i < sizeof(s->str) / sizeof(s->str[0]); i++) free(s->str[i]);
  memset(s, 0, sizeof(*s));
}

/* Points *dst at an owned copy of v (slot i of out->str). */
static int own(cm_jobspec_store_t *out, int i, const char **dst, const char *v) {
  free(out->str[i]);
  out->str[i] = NULL;
  if (v == NULL) {
    *dst = NULL;
    return 0;
  }
  if ((out->str[i] = strdup(v)) == NULL) return -ENOMEM;
  *dst = out->str[i];
  return 0;
}

int cm_jobspec_copy(cm_jobspec_store_t *out, const cm_jobspec_t *in) {
  cm_source_opts_t *o = &out->spec.source;
  int rc = 0;
  memset(out, 0, sizeof(*out));
  out->spec = *in;
  rc |= own(out, 0, &o->spec, in->source.spec);
  rc |= own(out, 1, &o->http_page_param, in->source.http_page_param);
  rc |= own(out, 2, &o->http_next_field, in->source.http_next_field);
  rc |= own(out, 3, &o->http_records_path, in->source.http_records_path);
  rc |= own(out, 4, &o->http_header, in->source.http_header);
  if (rc != 0) {
    cm_jobspec_free(out);
    return -ENOMEM;
  }
  return 0;
}

static bool is_uint(const cJSON *v, double max) {
  return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= max &&
         floor(v->valuedouble) == v->valuedouble;
}

#define FAIL(...)                             \
  do {                                        \
    snprintf(err, errlen, __VA_ARGS__);       \
    goto fail;                                \
  } while (0)

/* A string or null member (null: *dst = NULL). */
static int str_or_null(cm_jobspec_store_t *out, int slot, const char **dst, const cJSON *v) {
  if (cJSON_IsNull(v)) return own(out, slot, dst, NULL) == 0 ? 0 : -ENOMEM;
  if (!cJSON_IsString(v)) return -EINVAL;
  return own(out, slot, dst, v->valuestring) == 0 ? 0 : -ENOMEM;
}

int cm_jobspec_parse(cm_jobspec_store_t *out, const char *json, size_t len, char *err,
                     size_t errlen) {
  cJSON *root = cJSON_ParseWithLength(json, len), *v;
  cm_jobspec_t *s = &out->spec;
  cm_source_opts_t *o = &s->source;
  memset(out, 0, sizeof(*out));
  cm_jobspec_defaults(s);
  if (own(out, 1, &o->http_page_param, "page") != 0) FAIL("out of memory");
  if (root == NULL || !cJSON_IsObject(root)) FAIL("the body must be a JSON object");
  cJSON_ArrayForEach(v, root) {
    const char *k = v->string;
    if (strcmp(k, "job") == 0) {
      if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof(s->job))
        FAIL("\"job\" must be 1..%d of A-Z a-z 0-9 . _ : -", CM_JOB_MAX - 1);
      snprintf(s->job, sizeof(s->job), "%s", v->valuestring);
    } else if (strcmp(k, "source") == 0) {
      if (!cJSON_IsString(v)) FAIL("\"source\" must be a string");
      if (own(out, 0, &o->spec, v->valuestring) != 0) FAIL("out of memory");
    } else if (strcmp(k, "records") == 0) {
      if (!is_uint(v, 9007199254740991.0)) FAIL("\"records\" must be a non-negative integer");
      o->records = (uint64_t)v->valuedouble;
    } else if (strcmp(k, "seed") == 0) {
      if (!is_uint(v, 9007199254740991.0)) FAIL("\"seed\" must be a non-negative integer");
      o->seed = (uint64_t)v->valuedouble;
    } else if (strcmp(k, "chunk_size") == 0) {
      if (!is_uint(v, 1000000) || v->valuedouble < 1) FAIL("\"chunk_size\" must be 1..1000000");
      o->chunk_size = (uint32_t)v->valuedouble;
    } else if (strcmp(k, "priority") == 0) {
      if (!is_uint(v, 1000) || v->valuedouble < 1) FAIL("\"priority\" must be 1..1000");
      s->priority = (uint32_t)v->valuedouble;
    } else if (strcmp(k, "max_deliver") == 0) {
      /* 0 is what the ledger stores for "the fetcher's default". */
      if (!is_uint(v, 1000)) FAIL("\"max_deliver\" must be 1..1000");
      s->max_deliver = (uint32_t)v->valuedouble;
    } else if (strcmp(k, "http") == 0) {
      cJSON *h;
      if (cJSON_IsNull(v)) continue;
      if (!cJSON_IsObject(v)) FAIL("\"http\" must be an object");
      cJSON_ArrayForEach(h, v) {
        const char *hk = h->string;
        int rc = 0;
        if (strcmp(hk, "page_param") == 0)
          rc = str_or_null(out, 1, &o->http_page_param, h);
        else if (strcmp(hk, "next_field") == 0)
          rc = str_or_null(out, 2, &o->http_next_field, h);
        else if (strcmp(hk, "records_path") == 0)
          rc = str_or_null(out, 3, &o->http_records_path, h);
        else if (strcmp(hk, "header") == 0)
          rc = str_or_null(out, 4, &o->http_header, h);
        else if (strcmp(hk, "page_start") == 0 && is_uint(h, 9007199254740991.0))
          o->http_page_start = (int64_t)h->valuedouble;
        else if (strcmp(hk, "page_step") == 0 && is_uint(h, 1000000000) && h->valuedouble >= 1)
          o->http_page_step = (int64_t)h->valuedouble;
        else if (strcmp(hk, "pages") == 0 && is_uint(h, 9007199254740991.0))
          o->http_pages = (int64_t)h->valuedouble;
        else if (strcmp(hk, "timeout_ms") == 0 && is_uint(h, 3600000) && h->valuedouble >= 100)
          o->http_timeout_ms = (int64_t)h->valuedouble;
        else if (strcmp(hk, "retries") == 0 && is_uint(h, 100))
          o->http_retries = (int64_t)h->valuedouble;
        else if (strcmp(hk, "follow_redirects") == 0 && cJSON_IsBool(h))
          o->http_follow_redirects = cJSON_IsTrue(h);
        else if (strcmp(hk, "page_start") == 0 || strcmp(hk, "page_step") == 0 ||
                 strcmp(hk, "pages") == 0 || strcmp(hk, "timeout_ms") == 0 ||
                 strcmp(hk, "retries") == 0 || strcmp(hk, "follow_redirects") == 0)
          rc = -EINVAL;
        else
          FAIL("unknown key \"http.%.64s\"", hk);
        if (rc == -ENOMEM) FAIL("out of memory");
        if (rc != 0) FAIL("\"http.%s\" has an invalid value", hk);
      }
    } else {
      FAIL("unknown key \"%.64s\"", k);
    }
  }
  if (!cJSON_GetObjectItemCaseSensitive(root, "job")) FAIL("\"job\" is required");
  if (cm_jobspec_validate(s, err, errlen) != 0) goto fail;
  cJSON_Delete(root);
  return 0;
fail:
  cJSON_Delete(root);
  cm_jobspec_free(out);
  return -EINVAL;
}
