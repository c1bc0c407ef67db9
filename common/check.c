/* check.c - see check.h. */
#include "common/check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/cert.h"

struct check {
    int json;
    FILE *lines;      /* the step lines: stdout, or stderr with --json */
    json_t *root;
    json_t *warnings;
    int failed, warned;
};

static const char *const status_word[] = {"ok", "WARN", "FAIL"};

check_t *check_new(const char *title, int json)
{
    check_t *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->json = json;
    k->lines = json ? stderr : stdout;
    k->root = json_object();
    k->warnings = json_array();
    if (!k->root || !k->warnings) {
        json_decref(k->root);
        json_decref(k->warnings);
        free(k);
        return NULL;
    }
    fprintf(k->lines, "%s\n", title);
    fflush(k->lines);
    return k;
}

json_t *check_root(check_t *k) { return k->root; }

static void line(check_t *k, const char *word, const char *key, const char *fmt, va_list ap)
{
    fprintf(k->lines, "  %-5s %-14s ", word, key);
    vfprintf(k->lines, fmt, ap);
    fputc('\n', k->lines);
    fflush(k->lines);
}

void check_begin(check_t *k, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line(k, "...", what, fmt, ap);
    va_end(ap);
}

void check_step(check_t *k, const char *key, json_t *value, check_status_t status,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line(k, status_word[status], key, fmt, ap);
    va_end(ap);
    if (value) json_object_set_new(k->root, key, value);
    if (status == CHECK_FAIL) k->failed++;
    if (status == CHECK_WARN) {
        char text[512];
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        char with_key[600];
        snprintf(with_key, sizeof with_key, "%s: %s", key, text);
        json_array_append_new(k->warnings, json_string(with_key));
        k->warned++;
    }
}

void check_warn(check_t *k, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(k->lines, "  %-5s %s\n", "WARN", text);
    fflush(k->lines);
    json_array_append_new(k->warnings, json_string(text));
    k->warned++;
}

int check_finish(check_t **kp)
{
    check_t *k = *kp;
    int rc = k->failed ? 1 : 0;
    if (k->failed)
        fprintf(k->lines, "result: %d problem%s%s", k->failed, k->failed == 1 ? "" : "s",
                k->warned ? ", " : "\n");
    else
        fprintf(k->lines, "result: all checks passed%s", k->warned ? ", " : "\n");
    if (k->warned) fprintf(k->lines, "%d warning%s\n", k->warned, k->warned == 1 ? "" : "s");
    fflush(k->lines);
    if (k->json) {
        if (json_array_size(k->warnings)) json_object_set(k->root, "warnings", k->warnings);
        json_object_set_new(k->root, "ok", json_boolean(!k->failed));
        char *text = json_dumps(k->root, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text) printf("%s\n", text);
        free(text);
        fflush(stdout);
    }
    json_decref(k->warnings);
    json_decref(k->root);
    free(k);
    *kp = NULL;
    return rc;
}

void check_certificate(check_t *k, const char *key, const char *path, const char *renew_hint)
{
    uint8_t der[CERT_DER_MAX];
    size_t len = 0;
    char err[600];
    int64_t t;
    if (cert_load_file(path, der, &len, err, sizeof err) < 0 ||
        cert_not_after(der, len, &t, err, sizeof err) < 0) {
        check_step(k, key, json_pack("{s:b,s:s,s:s}", "ok", 0, "file", path, "reason", err),
                   CHECK_FAIL, "%s", err);
        return;
    }
    int64_t days = cert_days_left(t);
    char date[32];
    time_t tt = (time_t)t;
    struct tm tm;
    strftime(date, sizeof date, "%Y-%m-%d", gmtime_r(&tt, &tm));
    json_t *v = json_pack("{s:b,s:s,s:I,s:I}", "ok", days >= 0, "file", path, "not_after",
                          (json_int_t)t, "days_left", (json_int_t)days);
    if (days < 0)
        check_step(k, key, v, CHECK_FAIL, "%s expired on %s: %s", path, date, renew_hint);
    else if (days < CERT_WARN_DAYS)
        check_step(k, key, v, CHECK_WARN, "%s expires in %lld days (%s): %s", path,
                   (long long)days, date, renew_hint);
    else
        check_step(k, key, v, CHECK_OK, "%s valid until %s (%lld days)", path, date,
                   (long long)days);
}
