/*
 * safetensors.c - model schemas and F32 safetensors files.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON, then the
 * data buffer. The JSON maps tensor names to {"dtype","shape","data_offsets"}
 * (offsets relative to the start of the buffer) plus an optional
 * "__metadata__" object of string values.
 *
 * The reader is deliberately strict: its own small JSON parser accepts exactly
 * that shape (objects, strings, arrays of non-negative integers) and every
 * number read from the file is checked against the file's real size before it
 * is used for anything.
 */
#include "common/util.h"
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_META_KEY "__metadata__"
#define ST_DTYPE_MAX 16     /* longest dtype string we bother to read, with NUL */
#define ST_FIELD_MAX 32     /* longest tensor field name we bother to read */
#define ST_IO_CHUNK 65536

#if defined(__GNUC__)
#define ST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ST_PRINTF(a, b)
#endif

/* ---- schema -------------------------------------------------------------- */

typedef struct {
    char name[SCHEMA_NAME_MAX];
    int ndims;
    int64_t shape[SCHEMA_MAX_DIMS];
    size_t numel;
    size_t offset; /* in floats */
} schema_entry_t;

struct schema {
    schema_entry_t *t;
    size_t n, cap;
    size_t numel;
};

schema_t *schema_new(void)
{
    return calloc(1, sizeof(schema_t));
}

void schema_destroy(schema_t **s)
{
    if (s == NULL || *s == NULL)
        return;
    free((*s)->t);
    free(*s);
    *s = NULL;
}

int schema_add(schema_t *s, const char *name, int ndims, const int64_t *shape)
{
    if (s == NULL || name == NULL || name[0] == '\0')
        return -1;
    size_t len = strnlen(name, SCHEMA_NAME_MAX);
    if (len >= SCHEMA_NAME_MAX || strcmp(name, ST_META_KEY) == 0)
        return -1; /* "__metadata__" would collide with the file's own key */
    if (ndims < 0 || ndims > SCHEMA_MAX_DIMS || (ndims > 0 && shape == NULL))
        return -1;
    if (s->n >= SCHEMA_MAX_TENSORS)
        return -1;
    /* numel and the running total are kept small enough that their byte
     * counts (x4) fit in a size_t, so later arithmetic never overflows. */
    const size_t lim = SIZE_MAX / sizeof(float) / 2;
    size_t numel = 1;
    for (int d = 0; d < ndims; d++) {
        if (shape[d] < 0)
            return -1;
        if (shape[d] == 0) {
            numel = 0;
            continue;
        }
        if ((uint64_t)shape[d] > lim || (numel != 0 && numel > lim / (size_t)shape[d]))
            return -1;
        numel *= (size_t)shape[d];
    }
    if (numel > lim - s->numel)
        return -1;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return -1;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        if (cap > SCHEMA_MAX_TENSORS)
            cap = SCHEMA_MAX_TENSORS;
        schema_entry_t *t = realloc(s->t, cap * sizeof *t);
        if (t == NULL)
            return -1;
        s->t = t;
        s->cap = cap;
    }
    schema_entry_t *e = &s->t[s->n];
    memset(e, 0, sizeof *e);
    memcpy(e->name, name, len + 1);
    e->ndims = ndims;
    for (int d = 0; d < ndims; d++)
        e->shape[d] = shape[d];
    e->numel = numel;
    e->offset = s->numel;
    s->numel += numel;
    s->n++;
    return 0;
}

size_t schema_count(const schema_t *s)
{
    return s ? s->n : 0;
}

size_t schema_numel(const schema_t *s)
{
    return s ? s->numel : 0;
}

const char *schema_name(const schema_t *s, size_t i)
{
    return s && i < s->n ? s->t[i].name : NULL;
}

int schema_ndims(const schema_t *s, size_t i)
{
    return s && i < s->n ? s->t[i].ndims : -1;
}

const int64_t *schema_shape(const schema_t *s, size_t i)
{
    return s && i < s->n ? s->t[i].shape : NULL;
}

size_t schema_offset(const schema_t *s, size_t i)
{
    return s && i < s->n ? s->t[i].offset : 0;
}

int schema_equal(const schema_t *a, const schema_t *b)
{
    if (a == NULL || b == NULL || a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const schema_entry_t *x = &a->t[i], *y = &b->t[i];
        if (strcmp(x->name, y->name) != 0 || x->ndims != y->ndims)
            return 0;
        for (int d = 0; d < x->ndims; d++)
            if (x->shape[d] != y->shape[d])
                return 0;
    }
    return 1;
}

const char *st_meta_get(const st_meta_t *meta, size_t n_meta, const char *key)
{
    if (meta == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < n_meta; i++)
        if (strncmp(meta[i].key, key, ST_META_KEY_MAX) == 0)
            return meta[i].value;
    return NULL;
}

/* ---- small helpers ------------------------------------------------------- */

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. JSON
 * text must be UTF-8, and other readers (Python's) reject anything else. */
static int st_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += len;
    }
    return 1;
}

static int st_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Bytes read (< len only at end of file), or -1 on error. */
static ssize_t st_read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        size_t want = len - got;
        if (want > (1u << 30))
            want = 1u << 30;
        ssize_t r = read(fd, p + got, want);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* ---- writer -------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} st_buf_t;

static void sb_put(st_buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(st_buf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(st_buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}

/* JSON string literal. Control characters become \uXXXX (or the short forms);
 * bytes >= 0x80 pass through, the caller has checked they are UTF-8. */
static void sb_json_str(st_buf_t *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*p);
                sb_put(b, esc, 6);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* Builds the JSON header, padded with spaces to a multiple of 8. */
static int st_build_header(const char *path, const schema_t *s, const st_meta_t *meta,
                           size_t n_meta, st_buf_t *b, char *err, size_t errlen)
{
    sb_puts(b, "{");
    int first = 1;
    if (n_meta > 0) {
        sb_puts(b, "\"" ST_META_KEY "\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i > 0)
                sb_puts(b, ",");
            sb_json_str(b, meta[i].key);
            sb_puts(b, ":");
            sb_json_str(b, meta[i].value);
        }
        sb_puts(b, "}");
        first = 0;
    }
    for (size_t i = 0; i < s->n; i++) {
        const schema_entry_t *e = &s->t[i];
        if (!first)
            sb_puts(b, ",");
        first = 0;
        sb_json_str(b, e->name);
        sb_puts(b, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < e->ndims; d++) {
            if (d > 0)
                sb_puts(b, ",");
            sb_u64(b, (uint64_t)e->shape[d]);
        }
        sb_puts(b, "],\"data_offsets\":[");
        sb_u64(b, (uint64_t)e->offset * sizeof(float));
        sb_puts(b, ",");
        sb_u64(b, (uint64_t)(e->offset + e->numel) * sizeof(float));
        sb_puts(b, "]}");
    }
    sb_puts(b, "}");
    /* Padding keeps the data buffer 8-byte aligned, as other writers do. */
    while (!b->oom && b->len % 8 != 0)
        sb_puts(b, " ");
    if (b->oom) {
        util_seterr(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }
    if (b->len > ST_HEADER_MAX) {
        util_seterr(err, errlen, "%s: header of %zu bytes exceeds the %u-byte limit", path, b->len,
               (unsigned)ST_HEADER_MAX);
        return -1;
    }
    return 0;
}

static int st_check_write_args(const char *path, const schema_t *s, const float *data,
                               const st_meta_t *meta, size_t n_meta, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0' || s == NULL) {
        util_seterr(err, errlen, "safetensors_write: missing path or schema");
        return -1;
    }
    if (data == NULL && s->numel > 0) {
        util_seterr(err, errlen, "%s: no data for %zu floats", path, s->numel);
        return -1;
    }
    if (n_meta > ST_META_MAX || (n_meta > 0 && meta == NULL)) {
        util_seterr(err, errlen, "%s: %zu metadata entries (at most %d)", path, n_meta, ST_META_MAX);
        return -1;
    }
    for (size_t i = 0; i < n_meta; i++) {
        const char *k = meta[i].key, *v = meta[i].value;
        if (memchr(k, '\0', ST_META_KEY_MAX) == NULL || memchr(v, '\0', ST_META_VALUE_MAX) == NULL) {
            util_seterr(err, errlen, "%s: metadata entry %zu is not NUL-terminated", path, i);
            return -1;
        }
        if (!st_utf8_valid((const unsigned char *)k, strlen(k)) ||
            !st_utf8_valid((const unsigned char *)v, strlen(v))) {
            util_seterr(err, errlen, "%s: metadata entry \"%s\" is not valid UTF-8", path, k);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(meta[j].key, k) == 0) {
                util_seterr(err, errlen, "%s: duplicate metadata key \"%s\"", path, k);
                return -1;
            }
        }
    }
    for (size_t i = 0; i < s->n; i++) {
        const char *name = s->t[i].name;
        if (!st_utf8_valid((const unsigned char *)name, strlen(name))) {
            util_seterr(err, errlen, "%s: tensor name %zu is not valid UTF-8", path, i);
            return -1;
        }
    }
    return 0;
}

/* fsync the directory holding path, so the rename itself is durable. */
static int st_fsync_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = fsync(dfd);
    /* Some filesystems cannot fsync a directory (EINVAL); nothing more to do. */
    if (rc != 0 && errno == EINVAL)
        rc = 0;
    int saved = errno;
    close(dfd);
    errno = saved;
    return rc;
}

/* Header length (explicit little-endian), header, then the floats converted
 * to little-endian bytes through a bounded staging buffer. */
static int st_write_body(int fd, const st_buf_t *hdr, const float *data, size_t numel)
{
    unsigned char len8[8];
    uint64_t hl = hdr->len;
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(hl >> (8 * i));
    if (st_write_all(fd, len8, sizeof len8) != 0 || st_write_all(fd, hdr->p, hdr->len) != 0)
        return -1;
    unsigned char chunk[ST_IO_CHUNK];
    size_t i = 0;
    while (i < numel) {
        size_t k = 0;
        for (; i < numel && k + 4 <= sizeof chunk; i++, k += 4) {
            uint32_t u;
            memcpy(&u, &data[i], 4);
            chunk[k] = (unsigned char)u;
            chunk[k + 1] = (unsigned char)(u >> 8);
            chunk[k + 2] = (unsigned char)(u >> 16);
            chunk[k + 3] = (unsigned char)(u >> 24);
        }
        if (st_write_all(fd, chunk, k) != 0)
            return -1;
    }
    return 0;
}

int safetensors_write(const char *path, const schema_t *s, const float *data,
                      const st_meta_t *meta, size_t n_meta, char *err, size_t errlen)
{
    if (st_check_write_args(path, s, data, meta, n_meta, err, errlen) != 0)
        return -1;

    /* Split path into directory and base name; the temp file must live in the
     * same directory so that rename() is atomic. */
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (base[0] == '\0') {
        util_seterr(err, errlen, "%s: not a file name", path);
        return -1;
    }
    size_t dirlen = slash ? (size_t)(slash - path) : 1;
    const char *dirp = slash ? path : ".";
    if (slash == path)
        dirlen = 1; /* "/file": the directory is "/" */

    int rc = -1, fd = -1;
    st_buf_t hdr = { NULL, 0, 0, 0 };
    size_t tlen = dirlen + strlen(base) + 32;
    char *tmp = malloc(tlen);
    char *dir = malloc(dirlen + 1);
    if (tmp == NULL || dir == NULL) {
        util_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    memcpy(dir, dirp, dirlen);
    dir[dirlen] = '\0';
    /* The base name is cut short in the temp name to stay under NAME_MAX. */
    snprintf(tmp, tlen, "%s/.%.100s.tmp-XXXXXX", dir, base);

    if (st_build_header(path, s, meta, n_meta, &hdr, err, errlen) != 0)
        goto out;

    fd = mkstemp(tmp);
    if (fd < 0) {
        util_seterr(err, errlen, "%s: cannot create temp file in %s: %s", path, dir, strerror(errno));
        goto out;
    }
    if (st_write_body(fd, &hdr, data, s->numel) != 0) {
        util_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        goto out_unlink;
    }
    if (fsync(fd) != 0) {
        util_seterr(err, errlen, "%s: fsync failed: %s", path, strerror(errno));
        goto out_unlink;
    }
    int c = close(fd);
    fd = -1;
    if (c != 0) {
        util_seterr(err, errlen, "%s: close failed: %s", path, strerror(errno));
        goto out_unlink;
    }
    if (rename(tmp, path) != 0) {
        util_seterr(err, errlen, "%s: rename from temp file failed: %s", path, strerror(errno));
        goto out_unlink;
    }
    if (st_fsync_dir(dir) != 0) {
        /* The new file is in place, but its name may not survive a crash. */
        util_seterr(err, errlen, "%s: written, but fsync of directory %s failed: %s", path, dir,
               strerror(errno));
        goto out;
    }
    rc = 0;
    goto out;

out_unlink:
    if (fd >= 0) {
        close(fd);
        fd = -1;
    }
    unlink(tmp);
out:
    free(hdr.p);
    free(tmp);
    free(dir);
    return rc;
}

/* ---- JSON header parser -------------------------------------------------- */

typedef struct {
    char name[SCHEMA_NAME_MAX];
    char dtype[ST_DTYPE_MAX];
    int ndims;
    uint64_t shape[SCHEMA_MAX_DIMS];
    uint64_t begin, end;
    size_t file_pos; /* order of appearance, for messages in file order */
} st_rec_t;

typedef struct {
    const char *start, *p, *end;
    const char *path;
    char *err;
    size_t errlen;
    /* results */
    st_rec_t *recs;
    size_t nrec, caprec;
    st_meta_t *meta; /* ST_META_MAX entries */
    size_t nmeta;
    int seen_meta;
} st_parse_t;

ST_PRINTF(2, 3)
static int js_fail(st_parse_t *j, const char *fmt, ...)
{
    if (j->err == NULL || j->errlen == 0)
        return -1;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    util_seterr(j->err, j->errlen, "%s: header is not valid safetensors JSON: %s at byte %zu", j->path,
           what, (size_t)(j->p - j->start));
    return -1;
}

static void js_ws(st_parse_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* Skips whitespace, then consumes c or fails. */
static int js_expect(st_parse_t *j, char c)
{
    js_ws(j);
    if (j->p >= j->end)
        return js_fail(j, "expected '%c', found end of header", c);
    if (*j->p != c)
        return js_fail(j, "expected '%c', found '%c'", c, *j->p);
    j->p++;
    return 0;
}

/* Peeks the next non-space character; 0 at end. */
static char js_peek(st_parse_t *j)
{
    js_ws(j);
    return j->p < j->end ? *j->p : '\0';
}

static int js_hex4(st_parse_t *j, unsigned *out)
{
    if (j->end - j->p < 4)
        return js_fail(j, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = j->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return js_fail(j, "bad hex digit in \\u escape");
    }
    j->p += 4;
    *out = v;
    return 0;
}

/* A JSON string, decoded into out (cap bytes with NUL). Rejects raw control
 * characters, unknown escapes, lone surrogates, \u0000 (it would cut a C
 * string short) and invalid UTF-8. */
static int js_string(st_parse_t *j, char *out, size_t cap, const char *what)
{
    js_ws(j);
    if (j->p >= j->end || *j->p != '"')
        return js_fail(j, "expected a string (%s)", what);
    j->p++;
    size_t n = 0;
    for (;;) {
        if (j->p >= j->end)
            return js_fail(j, "unterminated string (%s)", what);
        unsigned char c = (unsigned char)*j->p;
        char enc[4];
        size_t enclen = 1;
        if (c == '"') {
            j->p++;
            break;
        } else if (c < 0x20) {
            return js_fail(j, "raw control character 0x%02x in string (%s)", c, what);
        } else if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return js_fail(j, "unterminated escape (%s)", what);
            char e = *j->p++;
            switch (e) {
            case '"': enc[0] = '"'; break;
            case '\\': enc[0] = '\\'; break;
            case '/': enc[0] = '/'; break;
            case 'b': enc[0] = '\b'; break;
            case 'f': enc[0] = '\f'; break;
            case 'n': enc[0] = '\n'; break;
            case 'r': enc[0] = '\r'; break;
            case 't': enc[0] = '\t'; break;
            case 'u': {
                unsigned cp;
                if (js_hex4(j, &cp) != 0)
                    return -1;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return js_fail(j, "lone low surrogate in string (%s)", what);
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return js_fail(j, "lone high surrogate in string (%s)", what);
                    j->p += 2;
                    if (js_hex4(j, &lo) != 0)
                        return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return js_fail(j, "bad surrogate pair in string (%s)", what);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0)
                    return js_fail(j, "\\u0000 in string (%s)", what);
                if (cp < 0x80) {
                    enc[0] = (char)cp;
                } else if (cp < 0x800) {
                    enc[0] = (char)(0xC0 | (cp >> 6));
                    enc[1] = (char)(0x80 | (cp & 0x3F));
                    enclen = 2;
                } else if (cp < 0x10000) {
                    enc[0] = (char)(0xE0 | (cp >> 12));
                    enc[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    enc[2] = (char)(0x80 | (cp & 0x3F));
                    enclen = 3;
                } else {
                    enc[0] = (char)(0xF0 | (cp >> 18));
                    enc[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    enc[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    enc[3] = (char)(0x80 | (cp & 0x3F));
                    enclen = 4;
                }
                break;
            }
            default:
                return js_fail(j, "unknown escape '\\%c' in string (%s)", e, what);
            }
        } else {
            enc[0] = (char)c;
            j->p++;
        }
        if (enclen >= cap - n)
            return js_fail(j, "string too long (%s; limit %zu bytes)", what, cap - 1);
        memcpy(out + n, enc, enclen);
        n += enclen;
    }
    out[n] = '\0';
    if (!st_utf8_valid((const unsigned char *)out, n))
        return js_fail(j, "string is not valid UTF-8 (%s)", what);
    return 0;
}

/* A non-negative integer without sign, fraction, exponent or leading zeros. */
static int js_uint(st_parse_t *j, uint64_t *out)
{
    js_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return js_fail(j, "expected a non-negative integer");
    if (*j->p == '0' && j->end - j->p > 1 && j->p[1] >= '0' && j->p[1] <= '9')
        return js_fail(j, "integer with a leading zero");
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return js_fail(j, "integer too large");
        v = v * 10 + d;
        j->p++;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return js_fail(j, "expected an integer, found a fraction or exponent");
    *out = v;
    return 0;
}

/* [u, u, ...] with at most maxn entries; -1 with a message naming field. */
static int js_uint_array(st_parse_t *j, uint64_t *vals, int maxn, int *count,
                         const char *tensor, const char *field)
{
    if (js_expect(j, '[') != 0)
        return -1;
    int n = 0;
    if (js_peek(j) == ']') {
        j->p++;
        *count = 0;
        return 0;
    }
    for (;;) {
        uint64_t v = 0;
        if (js_uint(j, &v) != 0)
            return -1;
        if (n >= maxn) {
            util_seterr(j->err, j->errlen, "%s: tensor %s: %s has more than %d entries", j->path,
                   tensor, field, maxn);
            return -1;
        }
        vals[n++] = v;
        char c = js_peek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == ']') {
            j->p++;
            break;
        }
        return js_fail(j, "expected ',' or ']' in %s of tensor %s", field, tensor);
    }
    *count = n;
    return 0;
}

/* {"dtype": "...", "shape": [...], "data_offsets": [b, e]}, each exactly once. */
static int js_tensor(st_parse_t *j, st_rec_t *r)
{
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    if (js_expect(j, '{') != 0)
        return -1;
    if (js_peek(j) == '}') {
        j->p++;
    } else {
        for (;;) {
            char key[ST_FIELD_MAX];
            if (js_string(j, key, sizeof key, "tensor field name") != 0)
                return -1;
            if (js_expect(j, ':') != 0)
                return -1;
            int *seen;
            if (strcmp(key, "dtype") == 0) {
                seen = &have_dtype;
                if (*seen == 0 && js_string(j, r->dtype, sizeof r->dtype, "dtype") != 0)
                    return -1;
            } else if (strcmp(key, "shape") == 0) {
                seen = &have_shape;
                if (*seen == 0 &&
                    js_uint_array(j, r->shape, SCHEMA_MAX_DIMS, &r->ndims, r->name, "shape") != 0)
                    return -1;
            } else if (strcmp(key, "data_offsets") == 0) {
                uint64_t off[2];
                int n = 0;
                seen = &have_offsets;
                if (*seen == 0) {
                    if (js_uint_array(j, off, 2, &n, r->name, "data_offsets") != 0)
                        return -1;
                    if (n != 2) {
                        util_seterr(j->err, j->errlen,
                               "%s: tensor %s: data_offsets needs 2 entries, has %d", j->path,
                               r->name, n);
                        return -1;
                    }
                    r->begin = off[0];
                    r->end = off[1];
                }
            } else {
                util_seterr(j->err, j->errlen, "%s: tensor %s: unexpected key \"%s\"", j->path,
                       r->name, key);
                return -1;
            }
            if (*seen) {
                util_seterr(j->err, j->errlen, "%s: tensor %s: duplicate key \"%s\"", j->path,
                       r->name, key);
                return -1;
            }
            *seen = 1;
            char c = js_peek(j);
            if (c == ',') {
                j->p++;
                continue;
            }
            if (c == '}') {
                j->p++;
                break;
            }
            return js_fail(j, "expected ',' or '}' in tensor %s", r->name);
        }
    }
    const char *missing = !have_dtype ? "dtype" : !have_shape ? "shape"
                        : !have_offsets ? "data_offsets" : NULL;
    if (missing != NULL) {
        util_seterr(j->err, j->errlen, "%s: tensor %s: missing %s", j->path, r->name, missing);
        return -1;
    }
    return 0;
}

/* {"key": "value", ...}; values must be strings, as in Python's writer. */
static int js_metadata(st_parse_t *j)
{
    if (j->seen_meta) {
        util_seterr(j->err, j->errlen, "%s: duplicate " ST_META_KEY " key", j->path);
        return -1;
    }
    j->seen_meta = 1;
    if (js_expect(j, '{') != 0)
        return -1;
    if (js_peek(j) == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        st_meta_t m;
        if (js_string(j, m.key, sizeof m.key, "metadata key") != 0)
            return -1;
        if (js_expect(j, ':') != 0)
            return -1;
        if (js_peek(j) != '"')
            return js_fail(j, "metadata value for \"%s\" is not a string", m.key);
        if (js_string(j, m.value, sizeof m.value, "metadata value") != 0)
            return -1;
        if (j->nmeta >= ST_META_MAX) {
            util_seterr(j->err, j->errlen, "%s: more than %d metadata entries", j->path, ST_META_MAX);
            return -1;
        }
        for (size_t i = 0; i < j->nmeta; i++) {
            if (strcmp(j->meta[i].key, m.key) == 0) {
                util_seterr(j->err, j->errlen, "%s: duplicate metadata key \"%s\"", j->path, m.key);
                return -1;
            }
        }
        j->meta[j->nmeta] = m;
        j->nmeta++;
        char c = js_peek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == '}') {
            j->p++;
            return 0;
        }
        return js_fail(j, "expected ',' or '}' in " ST_META_KEY);
    }
}

static int js_header(st_parse_t *j)
{
    /* Like the reference reader, the header must start with '{' itself. */
    if (j->p >= j->end || *j->p != '{')
        return js_fail(j, "header does not start with '{'");
    j->p++;
    if (js_peek(j) == '}') {
        j->p++;
    } else {
        for (;;) {
            char name[SCHEMA_NAME_MAX];
            if (js_string(j, name, sizeof name, "tensor name") != 0)
                return -1;
            if (js_expect(j, ':') != 0)
                return -1;
            if (strcmp(name, ST_META_KEY) == 0) {
                if (js_metadata(j) != 0)
                    return -1;
            } else {
                if (name[0] == '\0') {
                    util_seterr(j->err, j->errlen, "%s: empty tensor name", j->path);
                    return -1;
                }
                if (j->nrec >= SCHEMA_MAX_TENSORS) {
                    util_seterr(j->err, j->errlen, "%s: more than %d tensors", j->path,
                           SCHEMA_MAX_TENSORS);
                    return -1;
                }
                if (j->nrec == j->caprec) {
                    size_t cap = j->caprec ? j->caprec * 2 : 16;
                    st_rec_t *r = realloc(j->recs, cap * sizeof *r);
                    if (r == NULL) {
                        util_seterr(j->err, j->errlen, "%s: out of memory", j->path);
                        return -1;
                    }
                    j->recs = r;
                    j->caprec = cap;
                }
                st_rec_t *r = &j->recs[j->nrec];
                memset(r, 0, sizeof *r);
                memcpy(r->name, name, sizeof name);
                r->file_pos = j->nrec;
                if (js_tensor(j, r) != 0)
                    return -1;
                j->nrec++;
            }
            char c = js_peek(j);
            if (c == ',') {
                j->p++;
                continue;
            }
            if (c == '}') {
                j->p++;
                break;
            }
            return js_fail(j, "expected ',' or '}' after an entry");
        }
    }
    /* Only padding may follow: writers pad with spaces to a multiple of 8. */
    js_ws(j);
    if (j->p != j->end)
        return js_fail(j, "unexpected data after the JSON object");
    return 0;
}

/* ---- reader -------------------------------------------------------------- */

static int st_cmp_name(const void *a, const void *b)
{
    const st_rec_t *x = *(const st_rec_t *const *)a, *y = *(const st_rec_t *const *)b;
    return strcmp(x->name, y->name);
}

static int st_cmp_offsets(const void *a, const void *b)
{
    const st_rec_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name); /* ties: only zero-length tensors */
}

/* Semantic checks on parsed records, in file order; then sorts them by data
 * offset and checks that they tile the buffer exactly. */
static int st_check_records(const char *path, st_rec_t *recs, size_t n, uint64_t buflen,
                            char *err, size_t errlen)
{
    /* Duplicate names: sort pointers by name, compare neighbours. */
    if (n > 1) {
        const st_rec_t **byname = malloc(n * sizeof *byname);
        if (byname == NULL) {
            util_seterr(err, errlen, "%s: out of memory", path);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            byname[i] = &recs[i];
        qsort(byname, n, sizeof *byname, st_cmp_name);
        for (size_t i = 1; i < n; i++) {
            if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
                util_seterr(err, errlen, "%s: duplicate tensor name \"%s\"", path, byname[i]->name);
                free(byname);
                return -1;
            }
        }
        free(byname);
    }
    for (size_t i = 0; i < n; i++) {
        const st_rec_t *r = &recs[i];
        if (strcmp(r->dtype, "F32") != 0) {
            util_seterr(err, errlen, "%s: tensor %s: dtype %s not supported (only F32)", path, r->name,
                   r->dtype);
            return -1;
        }
        if (r->begin > r->end) {
            util_seterr(err, errlen, "%s: tensor %s: data_offsets [%llu,%llu] are reversed", path,
                   r->name, (unsigned long long)r->begin, (unsigned long long)r->end);
            return -1;
        }
        if (r->end > buflen) {
            util_seterr(err, errlen,
                   "%s: tensor %s: data_offsets [%llu,%llu] outside the %llu-byte data buffer",
                   path, r->name, (unsigned long long)r->begin, (unsigned long long)r->end,
                   (unsigned long long)buflen);
            return -1;
        }
        int zero = 0;
        for (int d = 0; d < r->ndims; d++) {
            if (r->shape[d] > (uint64_t)INT64_MAX) {
                util_seterr(err, errlen, "%s: tensor %s: dimension %d too large", path, r->name, d);
                return -1;
            }
            if (r->shape[d] == 0)
                zero = 1;
        }
        /* Compare the shape's element count with span / 4, stopping as soon
         * as the product exceeds it, so the multiplication cannot overflow. */
        uint64_t span = r->end - r->begin, want = span / 4, numel = zero ? 0 : 1;
        int ok = span % 4 == 0;
        for (int d = 0; d < r->ndims && ok && !zero; d++) {
            if (numel > want / r->shape[d])
                ok = 0;
            else
                numel *= r->shape[d];
        }
        if (!ok || numel != want) {
            char dims[SCHEMA_MAX_DIMS * 22 + 3];
            size_t k = 0;
            dims[k++] = '[';
            for (int d = 0; d < r->ndims; d++)
                k += (size_t)snprintf(dims + k, sizeof dims - k, "%s%llu", d ? "," : "",
                                      (unsigned long long)r->shape[d]);
            snprintf(dims + k, sizeof dims - k, "]");
            util_seterr(err, errlen,
                   "%s: tensor %s: shape %s does not match data_offsets [%llu,%llu] (%llu bytes, "
                   "F32 needs 4 per element)",
                   path, r->name, dims, (unsigned long long)r->begin, (unsigned long long)r->end,
                   (unsigned long long)span);
            return -1;
        }
    }
    if (n > 1) /* recs is NULL when the file holds no tensors */
        qsort(recs, n, sizeof *recs, st_cmp_offsets);
    uint64_t cursor = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].begin < cursor) {
            util_seterr(err, errlen, "%s: tensor %s: data_offsets [%llu,%llu] overlap tensor %s", path,
                   recs[i].name, (unsigned long long)recs[i].begin,
                   (unsigned long long)recs[i].end, recs[i - 1].name);
            return -1;
        }
        if (recs[i].begin > cursor) {
            util_seterr(err, errlen, "%s: gap of %llu bytes in the data buffer before tensor %s", path,
                   (unsigned long long)(recs[i].begin - cursor), recs[i].name);
            return -1;
        }
        cursor = recs[i].end;
    }
    if (cursor != buflen) {
        util_seterr(err, errlen, "%s: %llu bytes at the end of the data buffer belong to no tensor",
               path, (unsigned long long)(buflen - cursor));
        return -1;
    }
    return 0;
}

int safetensors_read(const char *path, schema_t **s, float **data, st_meta_t *meta,
                     size_t *n_meta, char *err, size_t errlen)
{
    if (s != NULL)
        *s = NULL;
    if (data != NULL)
        *data = NULL;
    if (n_meta != NULL)
        *n_meta = 0;
    if (path == NULL || s == NULL || data == NULL) {
        util_seterr(err, errlen, "safetensors_read: missing path or outputs");
        return -1;
    }

    int rc = -1;
    char *hdr = NULL;
    float *out = NULL;
    schema_t *sch = NULL;
    st_meta_t metabuf[ST_META_MAX];
    st_parse_t j;
    memset(&j, 0, sizeof j);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        util_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        util_seterr(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        util_seterr(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    unsigned char len8[8];
    if (fsize < 8 || st_read_full(fd, len8, 8) != 8) {
        util_seterr(err, errlen, "%s: file is %llu bytes, too short for the 8-byte header length",
               path, (unsigned long long)fsize);
        goto out;
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | len8[i];
    if (hl > fsize - 8) {
        util_seterr(err, errlen, "%s: header length %llu exceeds file size %llu", path,
               (unsigned long long)hl, (unsigned long long)fsize);
        goto out;
    }
    if (hl > ST_HEADER_MAX) {
        util_seterr(err, errlen, "%s: header length %llu exceeds the %u-byte limit", path,
               (unsigned long long)hl, (unsigned)ST_HEADER_MAX);
        goto out;
    }
    uint64_t buflen = fsize - 8 - hl;
    if (buflen > SIZE_MAX / 2) {
        util_seterr(err, errlen, "%s: data buffer of %llu bytes is too large", path,
               (unsigned long long)buflen);
        goto out;
    }
    hdr = malloc((size_t)hl + 1);
    if (hdr == NULL) {
        util_seterr(err, errlen, "%s: out of memory for a %llu-byte header", path,
               (unsigned long long)hl);
        goto out;
    }
    ssize_t got = st_read_full(fd, hdr, (size_t)hl);
    if (got != (ssize_t)hl) {
        util_seterr(err, errlen, "%s: truncated header: expected %llu bytes, got %lld", path,
               (unsigned long long)hl, (long long)got);
        goto out;
    }

    j.start = j.p = hdr;
    j.end = hdr + hl;
    j.path = path;
    j.err = err;
    j.errlen = errlen;
    j.meta = metabuf;
    if (js_header(&j) != 0)
        goto out;
    if (st_check_records(path, j.recs, j.nrec, buflen, err, errlen) != 0)
        goto out;

    sch = schema_new();
    if (sch == NULL) {
        util_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < j.nrec; i++) {
        int64_t shape[SCHEMA_MAX_DIMS];
        for (int d = 0; d < j.recs[i].ndims; d++)
            shape[d] = (int64_t)j.recs[i].shape[d];
        if (schema_add(sch, j.recs[i].name, j.recs[i].ndims, shape) != 0) {
            util_seterr(err, errlen, "%s: tensor %s: cannot be added to the schema", path,
                   j.recs[i].name);
            goto out;
        }
    }
    /* The records tile the buffer in offset order, so the buffer is exactly
     * the flat parameter vector in the returned schema's order. */
    size_t numel = schema_numel(sch);
    if ((uint64_t)numel * 4 != buflen) {
        util_seterr(err, errlen, "%s: tensors hold %zu floats but the buffer has %llu bytes", path,
               numel, (unsigned long long)buflen);
        goto out;
    }
    out = malloc(numel ? numel * sizeof(float) : sizeof(float));
    if (out == NULL) {
        util_seterr(err, errlen, "%s: out of memory for %zu floats", path, numel);
        goto out;
    }
    got = st_read_full(fd, out, (size_t)buflen);
    if (got != (ssize_t)buflen) {
        util_seterr(err, errlen, "%s: truncated data: expected %llu bytes, got %lld", path,
               (unsigned long long)buflen, (long long)got);
        goto out;
    }
    unsigned char *b = (unsigned char *)out;
    for (size_t i = 0; i < numel; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }

    if (meta != NULL)
        memcpy(meta, metabuf, j.nmeta * sizeof *meta);
    if (n_meta != NULL)
        *n_meta = j.nmeta;
    *s = sch;
    *data = out;
    sch = NULL;
    out = NULL;
    rc = 0;
out:
    close(fd);
    free(hdr);
    free(j.recs);
    free(out);
    schema_destroy(&sch);
    return rc;
}
