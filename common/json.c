/* json.c - see json.h. */
#include "common/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

json_t *jx_real(double v, int decimals)
{
    if (!isfinite(v)) return json_null();
    double scale = pow(10, decimals), r = round(v * scale) / scale;
    return json_real(isfinite(r) ? r : v);
}

json_t *jx_str(const char *s) { return s ? json_string(s) : json_null(); }

void jx_set(json_t *obj, const char *key, json_t *value)
{
    if (value) json_object_set_new(obj, key, value);
}

int jx_write_line(FILE *f, const json_t *v)
{
    char *s = json_dumps(v, JX_COMPACT);
    if (!s) return -1;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return -1;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    int rc = fputs(line, f) < 0 ? -1 : 0;
    free(line);
    return rc;
}

int jx_write_atomic(const char *path, const json_t *v, size_t flags, char *err, size_t errlen)
{
    char *s = json_dumps(v, flags);
    if (!s) {
        util_seterr(err, errlen, "%s: cannot encode JSON", path);
        return -1;
    }
    size_t n = strlen(s);
    char *text = realloc(s, n + 2);
    if (!text) {
        free(s);
        util_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    text[n] = '\n';
    text[n + 1] = '\0';
    int rc = util_write_file_atomic(path, text, n + 1, err, errlen);
    free(text);
    return rc;
}

json_t *jx_loads_object(const char *text, size_t len)
{
    json_error_t e;
    json_t *v = json_loadb(text, len, 0, &e);
    if (v && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

json_t *jx_load_file(const char *path, size_t max, char *err, size_t errlen)
{
    size_t len;
    char *text = util_read_file(path, max, &len, err, errlen);
    if (!text) return NULL;
    json_error_t e;
    json_t *v = json_loadb(text, len, 0, &e);
    free(text);
    if (!v) util_seterr(err, errlen, "%s:%d: %s", path, e.line, e.text);
    else if (!json_is_object(v)) {
        util_seterr(err, errlen, "%s: not a JSON object", path);
        json_decref(v);
        v = NULL;
    }
    return v;
}

int jx_number(const json_t *obj, const char *key, double *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_number(v)) return -1;
    double d = json_number_value(v);
    if (!isfinite(d)) return -1;
    *out = d;
    return 0;
}

int jx_u32(const json_t *obj, const char *key, uint32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0 || i > (json_int_t)UINT32_MAX) return -1;
    *out = (uint32_t)i;
    return 0;
}

const char *jx_string(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

int jx_true(const json_t *obj, const char *key) { return json_is_true(json_object_get(obj, key)); }

void jx_now_iso(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
