/*
 * check.h - what a daemon's `--check` reports, step by step.
 *
 * By default a person reads it: one line per step as soon as the step ends
 * ("ok", "WARN" or "FAIL", the step, what was found), a "..." line before a
 * step that may take long, and a last line with the verdict. With --json the
 * same steps become members of one JSON object on stdout (jansson), printed
 * at the end; the step lines then go to stderr, so a slow check still shows
 * where it is. Warnings (a certificate that expires soon) do not fail the check.
 */
#ifndef MEDFED_CHECK_H
#define MEDFED_CHECK_H

#include <jansson.h>

typedef enum { CHECK_OK, CHECK_WARN, CHECK_FAIL } check_status_t;

typedef struct check check_t;

/* title: the first line of the human report. NULL on out of memory. */
check_t *check_new(const char *title, int json);
/* The top-level object of --json (to add members such as "site"). */
json_t *check_root(check_t *k);
/* A step that may take long starts: "  ...   WHAT  DETAIL" at once. */
void check_begin(check_t *k, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A step ended: value (stolen; NULL for none) becomes member key of the
 * JSON object; the human line says status, key and the formatted detail. */
void check_step(check_t *k, const char *key, json_t *value, check_status_t status,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A warning without a step of its own (also in the JSON's "warnings"). */
void check_warn(check_t *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the verdict (human) or the object with "ok" (JSON), frees k.
 * Returns the exit status: 0 when no step failed, else 1. */
int check_finish(check_t **k);

/* A certificate's expiry as a step: ok, WARN within CERT_WARN_DAYS (naming
 * the fix), FAIL once expired; value {"file","not_after","days_left"}. */
void check_certificate(check_t *k, const char *key, const char *path, const char *renew_hint);

#endif
