/*
 * util.h - small helpers shared by every program: clocks, number parsing,
 * file writing, JSON string escaping (JSON itself: common/json.h).
 */
#ifndef MEDFED_UTIL_H
#define MEDFED_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Monotonic time in seconds. */
double util_now(void);

/* Strict parsers: the whole string must be a number in [lo, hi]. 0 or -1. */
int util_parse_int(const char *s, long long lo, long long hi, long long *out);
int util_parse_double(const char *s, double lo, double hi, double *out);

/* Reads a regular file whole, at most max bytes, into a malloc'd buffer with a
 * NUL after the last byte (*len excludes it). NULL and err "PATH: reason"
 * when it is missing, not a regular file, larger than max or unreadable. */
char *util_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

/* fsyncs the directory holding path (a new or renamed entry in it is durable). */
int util_fsync_dir_of(const char *path);
/* Writes len bytes to path atomically (temp file, fsync, rename, fsync dir). */
int util_write_file_atomic(const char *path, const void *buf, size_t len, char *err,
                           size_t errlen);
/* mkdir -p. */
int util_mkdirs(const char *path, char *err, size_t errlen);

/* Writes s as a JSON string literal (with quotes) to f. */
void util_json_string(FILE *f, const char *s);

/* Formats a message into err (if err is not NULL and errlen > 0): the one
 * helper behind every module's "err, errlen" out-parameter. */
void util_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies at most dstlen-1 bytes and terminates; returns -1 if s did not fit. */
int util_strlcpy(char *dst, const char *s, size_t dstlen);

#endif
