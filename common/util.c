#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double util_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int util_parse_int(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int util_parse_double(const char *s, double lo, double hi, double *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int util_strlcpy(char *dst, const char *s, size_t dstlen)
{
    size_t n = strlen(s);
    if (dstlen == 0) return -1;
    if (n >= dstlen) {
        memcpy(dst, s, dstlen - 1);
        dst[dstlen - 1] = '\0';
        return -1;
    }
    memcpy(dst, s, n + 1);
    return 0;
}

int util_fsync_dir_of(const char *path)
{
    char copy[PATH_MAX];
    if (util_strlcpy(copy, path, sizeof copy) < 0) return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

char *util_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    /* O_NONBLOCK: a FIFO in place of the file must not block the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    char *buf = NULL;
    if (fd < 0) {
        util_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        util_seterr(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > (uint64_t)max) {
        util_seterr(err, errlen, "%s: larger than %zu bytes", path, max);
        goto out;
    }
    size_t cap = (size_t)st.st_size + 1, got = 0; /* +1: notices a file that grew */
    buf = malloc(cap + 1);
    if (!buf) {
        util_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            util_seterr(err, errlen, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0) {
            buf[got] = '\0';
            *len = got;
            close(fd);
            return buf;
        }
        got += (size_t)r;
        if (got == cap) {
            util_seterr(err, errlen, "%s: changed while it was read", path);
            break;
        }
    }
    free(buf);
    buf = NULL;
out:
    close(fd);
    return buf;
}

int util_write_file_atomic(const char *path, const void *buf, size_t len, char *err,
                           size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create temp file: %s", path, strerror(errno));
        return -1;
    }
    const uint8_t *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
        snprintf(err, errlen, "%s: fsync failed: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        snprintf(err, errlen, "%s: rename failed: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    util_fsync_dir_of(path);
    return 0;
fail:
    close(fd);
    unlink(tmp);
    return -1;
}

int util_mkdirs(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (util_strlcpy(buf, path, sizeof buf) < 0) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "%s: mkdir failed: %s", buf, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: mkdir failed: %s", buf, strerror(errno));
        return -1;
    }
    return 0;
}

void util_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

void util_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
