/*
 * tensor_cache.c - preprocessed images on disk (see tensor_cache.h).
 *
 * The directory is read once at open into a name-sorted index (name, size,
 * mtime); puts and hits keep it current, so a lookup or an eviction never
 * lists the directory again.
 */
#include "imaging/tensor_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "common/util.h"
#include "crypto/crypto.h"

#define ENTRY_MAGIC "MFTCACHE"
#define ENTRY_VERSION 1u
#define ENTRY_HEADERBYTES 24 /* magic 8, version, height, width, crc32 (u32 each) */
#define ENTRY_MAX_PIXELS (4096u * 4096u)

typedef struct {
    char name[TENSOR_CACHE_KEYHEX + 1];
    uint64_t size;
    double mtime;
} entry_t;

struct tensor_cache {
    char dir[PATH_MAX - TENSOR_CACHE_KEYHEX - 2];
    uint64_t max_bytes;
    uint8_t salt[TENSOR_CACHE_SALTBYTES];
    entry_t *e; /* sorted by name */
    size_t n, cap;
    tensor_cache_stats_t st;
};

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_entry_name(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return i == TENSOR_CACHE_KEYHEX;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->name, ((const entry_t *)b)->name);
}

/* Index of name, or -(insertion point) - 1. */
static long find(const tensor_cache_t *c, const char *name)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->e[mid].name, name);
        if (r == 0) return (long)mid;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return -(long)lo - 1;
}

static int index_add(tensor_cache_t *c, const char *name, uint64_t size, double mtime)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        entry_t *e = realloc(c->e, cap * sizeof *e);
        if (!e) return -1;
        c->e = e;
        c->cap = cap;
    }
    c->e[c->n].size = size;
    c->e[c->n].mtime = mtime;
    memcpy(c->e[c->n].name, name, TENSOR_CACHE_KEYHEX + 1);
    c->n++;
    c->st.bytes += size;
    return 0;
}

/* dir/name; "" if it does not fit (then no file operation finds anything). */
static void path_of(const tensor_cache_t *c, const char *name, char *out, size_t outlen)
{
    if (snprintf(out, outlen, "%s/%s", c->dir, name) >= (int)outlen) out[0] = '\0';
}

static void index_remove(tensor_cache_t *c, size_t i, int unlink_file)
{
    if (unlink_file) {
        char p[PATH_MAX];
        path_of(c, c->e[i].name, p, sizeof p);
        unlink(p);
    }
    c->st.bytes -= c->e[i].size;
    memmove(&c->e[i], &c->e[i + 1], (c->n - i - 1) * sizeof *c->e);
    c->n--;
}

static int open_dir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        if (errno != ENOENT || util_mkdirs(dir, err, errlen) < 0 || chmod(dir, 0700) < 0) {
            if (errno != ENOENT) util_seterr(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
            return -1;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        util_seterr(err, errlen, "%s: not a directory", dir);
        return -1;
    }
    if (sb.st_uid != geteuid() || (sb.st_mode & 077)) {
        util_seterr(err, errlen,
                    "%s: the cache must be a directory of this user that others cannot read "
                    "(chmod 700)", dir);
        return -1;
    }
    return 0;
}

tensor_cache_t *tensor_cache_open(const char *dir, uint64_t max_bytes,
                                  const uint8_t salt[TENSOR_CACHE_SALTBYTES], char *err,
                                  size_t errlen)
{
    tensor_cache_t *c = calloc(1, sizeof *c);
    if (!c) {
        util_seterr(err, errlen, "out of memory");
        return NULL;
    }
    if (util_strlcpy(c->dir, dir, sizeof c->dir) < 0) {
        util_seterr(err, errlen, "%s: path too long", dir);
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    memcpy(c->salt, salt, TENSOR_CACHE_SALTBYTES);
    if (open_dir(dir, err, errlen) < 0) goto fail;
    DIR *d = opendir(dir);
    if (!d) {
        util_seterr(err, errlen, "%s: cannot list: %s", dir, strerror(errno));
        goto fail;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char p[PATH_MAX];
        path_of(c, de->d_name, p, sizeof p);
        if (strstr(de->d_name, ".tmp") && strlen(de->d_name) > TENSOR_CACHE_KEYHEX) {
            unlink(p); /* left by a crash mid-write */
            continue;
        }
        struct stat sb;
        if (!is_entry_name(de->d_name) || lstat(p, &sb) < 0 || !S_ISREG(sb.st_mode)) continue;
        if (index_add(c, de->d_name, (uint64_t)sb.st_size,
                      (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec * 1e-9) < 0) {
            closedir(d);
            util_seterr(err, errlen, "out of memory");
            goto fail;
        }
    }
    closedir(d);
    if (c->n) qsort(c->e, c->n, sizeof *c->e, cmp_name);
    return c;
fail:
    tensor_cache_close(&c);
    return NULL;
}

void tensor_cache_close(tensor_cache_t **c)
{
    if (!c || !*c) return;
    crypto_wipe((*c)->salt, sizeof (*c)->salt);
    free((*c)->e);
    free(*c);
    *c = NULL;
}

void tensor_cache_key(const tensor_cache_t *c, const char *uid, const dicom_prep_t *prep,
                      char out[TENSOR_CACHE_KEYHEX + 1])
{
    char buf[TENSOR_CACHE_SALTBYTES + DICOM_KEY_MAX + 160];
    size_t n = TENSOR_CACHE_SALTBYTES;
    memcpy(buf, c->salt, n);
    int w = snprintf(buf + n, sizeof buf - n, "%s|v%u|%dx%d|w%d|%.17g|%.17g", uid,
                     ENTRY_VERSION, prep->height, prep->width, (int)prep->window, prep->center,
                     prep->width_w);
    n += w > 0 && (size_t)w < sizeof buf - n ? (size_t)w : sizeof buf - n - 1;
    uint8_t h[CRYPTO_HASHBYTES];
    crypto_sha256(h, buf, n);
    crypto_wipe(buf, sizeof buf);
    for (int i = 0; i < CRYPTO_HASHBYTES; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int tensor_cache_get(tensor_cache_t *c, const char *uid, const dicom_prep_t *prep, float *pixels)
{
    char name[TENSOR_CACHE_KEYHEX + 1];
    tensor_cache_key(c, uid, prep, name);
    return tensor_cache_get_named(c, name, prep, pixels);
}

int tensor_cache_get_named(tensor_cache_t *c, const char *name, const dicom_prep_t *prep,
                           float *pixels)
{
    char p[PATH_MAX];
    long i = find(c, name);
    if (i < 0) {
        c->st.misses++;
        return 0;
    }
    path_of(c, name, p, sizeof p);
    size_t count = (size_t)prep->height * (size_t)prep->width;
    size_t want = ENTRY_HEADERBYTES + count * sizeof(float);
    uint8_t hdr[ENTRY_HEADERBYTES];
    int ok = 0;
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        struct stat sb;
        ok = fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == want &&
             read(fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr &&
             memcmp(hdr, ENTRY_MAGIC, 8) == 0 && rd32(hdr + 8) == ENTRY_VERSION &&
             rd32(hdr + 12) == (uint32_t)prep->height && rd32(hdr + 16) == (uint32_t)prep->width;
        size_t got = 0;
        while (ok && got < count * sizeof(float)) {
            ssize_t r = read(fd, (uint8_t *)pixels + got, count * sizeof(float) - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) ok = 0;
            else got += (size_t)r;
        }
        ok = ok && (uint32_t)crc32(0L, (const Bytef *)pixels, (uInt)(count * sizeof(float))) ==
                       rd32(hdr + 20);
        close(fd);
    }
    if (!ok) {
        c->st.corrupt++;
        c->st.misses++;
        index_remove(c, (size_t)i, 1);
        return 0;
    }
    utimensat(AT_FDCWD, p, NULL, 0); /* most recently used */
    c->e[i].mtime = wall_now();
    c->st.hits++;
    return 1;
}

typedef struct {
    double mtime;
    size_t i;
} age_t;

static int cmp_age(const void *a, const void *b)
{
    double x = ((const age_t *)a)->mtime, y = ((const age_t *)b)->mtime;
    return x < y ? -1 : x > y;
}

/* Deletes the oldest entries (never keep) until the total is under the cap. */
static void evict(tensor_cache_t *c, const char *keep)
{
    if (!c->max_bytes || c->st.bytes <= c->max_bytes) return;
    age_t *a = malloc(c->n * sizeof *a);
    if (!a) return;
    for (size_t i = 0; i < c->n; i++) a[i] = (age_t){c->e[i].mtime, i};
    qsort(a, c->n, sizeof *a, cmp_age);
    /* mark, then compact once */
    uint64_t bytes = c->st.bytes;
    size_t k = 0;
    for (; k < c->n && bytes > c->max_bytes; k++) {
        entry_t *e = &c->e[a[k].i];
        if (strcmp(e->name, keep) == 0) continue;
        char p[PATH_MAX];
        path_of(c, e->name, p, sizeof p);
        unlink(p);
        bytes -= e->size;
        e->name[0] = '\0';
        c->st.evicted++;
    }
    free(a);
    size_t o = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].name[0]) c->e[o++] = c->e[i];
    c->n = o;
    c->st.bytes = bytes;
}

int tensor_cache_put(tensor_cache_t *c, const char *uid, const dicom_prep_t *prep,
                     const float *pixels, char *err, size_t errlen)
{
    if (prep->height <= 0 || prep->width <= 0 ||
        (uint64_t)prep->height * (uint64_t)prep->width > ENTRY_MAX_PIXELS) {
        util_seterr(err, errlen, "image size out of range for the cache");
        return -1;
    }
    char name[TENSOR_CACHE_KEYHEX + 1], p[PATH_MAX];
    tensor_cache_key(c, uid, prep, name);
    path_of(c, name, p, sizeof p);
    size_t count = (size_t)prep->height * (size_t)prep->width;
    size_t len = ENTRY_HEADERBYTES + count * sizeof(float);
    uint8_t *buf = malloc(len);
    if (!buf) {
        util_seterr(err, errlen, "out of memory");
        return -1;
    }
    memcpy(buf, ENTRY_MAGIC, 8);
    wr32(buf + 8, ENTRY_VERSION);
    wr32(buf + 12, (uint32_t)prep->height);
    wr32(buf + 16, (uint32_t)prep->width);
    memcpy(buf + ENTRY_HEADERBYTES, pixels, count * sizeof(float));
    wr32(buf + 20, (uint32_t)crc32(0L, buf + ENTRY_HEADERBYTES, (uInt)(count * sizeof(float))));
    /* the directory is 0700: the entry is private from its first byte */
    int rc = util_write_file_atomic(p, buf, len, err, errlen);
    free(buf);
    if (rc < 0) return -1;
    chmod(p, 0600);
    long i = find(c, name);
    if (i >= 0) {
        index_remove(c, (size_t)i, 0);
        i = find(c, name);
    }
    size_t at = (size_t)(-i - 1);
    if (index_add(c, name, len, wall_now()) < 0) {
        util_seterr(err, errlen, "out of memory");
        return -1;
    }
    /* index_add appended: move the new entry to its sorted place */
    entry_t e = c->e[c->n - 1];
    memmove(&c->e[at + 1], &c->e[at], (c->n - 1 - at) * sizeof *c->e);
    c->e[at] = e;
    evict(c, name);
    return 0;
}

void tensor_cache_stats(const tensor_cache_t *c, tensor_cache_stats_t *out)
{
    *out = c->st;
    out->entries = c->n;
}
