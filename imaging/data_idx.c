/*
 * data_idx.c - IDX (MNIST layout) image and label files, gzip or raw.
 *
 * zlib's gzread reads both: it decompresses gzip and passes any other file
 * through unchanged. Headers are checked before anything is allocated, and
 * the body buffer grows with the bytes actually decompressed, so a short file
 * that claims a huge count cannot make us allocate its claim.
 */
#include "common/util.h"
#include "imaging/imaging.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_GZ_CHUNK (1u << 30)        /* gzread/gzwrite take an unsigned, return an int */
#define IDX_FIRST_ALLOC (1u << 20)     /* body buffer starts here and doubles */
#define IDX_STAGE 65536

static uint32_t idx_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static void idx_put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* zlib's description of the stream's error state, or "" if none. */
static const char *idx_gzmsg(gzFile f)
{
    int errnum = Z_OK;
    const char *m = gzerror(f, &errnum);
    if (errnum == Z_OK || m == NULL)
        return "";
    if (errnum == Z_ERRNO)
        return strerror(errno);
    return m;
}

/* ---- reading ------------------------------------------------------------- */

static gzFile idx_open(const char *path, char *err, size_t errlen)
{
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (f == NULL) {
        util_seterr(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(f, 1u << 17); /* larger reads: the default 8 KiB is slow for big sets */
    return f;
}

/* Reads up to len bytes; returns the count (short only at end of data), or -1
 * with a message if zlib reports a hard error (bad gzip data, I/O error). */
static int64_t idx_read_some(gzFile f, const char *path, void *buf, uint64_t len, char *err,
                             size_t errlen)
{
    unsigned char *p = buf;
    uint64_t got = 0;
    while (got < len) {
        uint64_t want = len - got;
        if (want > IDX_GZ_CHUNK)
            want = IDX_GZ_CHUNK;
        int r = gzread(f, p + got, (unsigned)want);
        if (r < 0) {
            util_seterr(err, errlen, "%s: read error: %s", path, idx_gzmsg(f));
            return -1;
        }
        if (r == 0)
            break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

/* Reads the header of hlen bytes. */
static int idx_read_header(gzFile f, const char *path, unsigned char *h, size_t hlen, char *err,
                           size_t errlen)
{
    int64_t got = idx_read_some(f, path, h, hlen, err, errlen);
    if (got < 0)
        return -1;
    if ((uint64_t)got < hlen) {
        const char *m = idx_gzmsg(f);
        util_seterr(err, errlen, "%s: truncated header: expected %zu bytes, got %lld%s%s", path, hlen,
                (long long)got, *m ? "; " : "", m);
        return -1;
    }
    return 0;
}

/* Reads exactly len body bytes into a new buffer, then insists on end of
 * data. what names the bytes in messages ("pixel", "label"). */
static int idx_read_body(gzFile f, const char *path, const char *what, uint64_t len,
                         uint8_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (len > SIZE_MAX - 1) {
        util_seterr(err, errlen, "%s: %llu %s bytes do not fit in memory", path,
                (unsigned long long)len, what);
        return -1;
    }
    uint64_t cap = len < IDX_FIRST_ALLOC ? len : IDX_FIRST_ALLOC;
    uint8_t *buf = malloc(cap ? (size_t)cap : 1);
    if (buf == NULL) {
        util_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    uint64_t got = 0;
    while (got < len) {
        if (got == cap) {
            uint64_t ncap = cap > len / 2 ? len : cap * 2;
            uint8_t *nb = realloc(buf, (size_t)ncap);
            if (nb == NULL) {
                util_seterr(err, errlen, "%s: out of memory for %llu %s bytes", path,
                        (unsigned long long)len, what);
                free(buf);
                return -1;
            }
            buf = nb;
            cap = ncap;
        }
        int64_t r = idx_read_some(f, path, buf + got, cap - got, err, errlen);
        if (r < 0) {
            free(buf);
            return -1;
        }
        got += (uint64_t)r;
        if (got < cap)
            break; /* end of data before the buffer filled */
    }
    if (got < len) {
        const char *m = idx_gzmsg(f);
        util_seterr(err, errlen, "%s: truncated: expected %llu %s bytes, got %llu%s%s", path,
                (unsigned long long)len, what, (unsigned long long)got, *m ? "; " : "", m);
        free(buf);
        return -1;
    }
    /* Anything after the declared data means the header lies about the size. */
    unsigned char extra;
    int r = gzread(f, &extra, 1);
    if (r > 0) {
        util_seterr(err, errlen, "%s: trailing garbage after the %llu %s bytes the header declares",
                path, (unsigned long long)len, what);
        free(buf);
        return -1;
    }
    int errnum = Z_OK;
    gzerror(f, &errnum);
    if (r < 0 || errnum != Z_OK) {
        /* e.g. a gzip stream cut before its trailer, or a CRC mismatch. */
        util_seterr(err, errlen, "%s: corrupt or truncated gzip stream: %s", path, idx_gzmsg(f));
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

int idx_load(const char *images_path, const char *labels_path, idx_set_t *out, char *err,
             size_t errlen)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (images_path == NULL || labels_path == NULL || out == NULL) {
        util_seterr(err, errlen, "idx_load: missing path or output");
        return -1;
    }
    int rc = -1;
    uint8_t *pixels = NULL, *labels = NULL;
    gzFile fl = NULL;
    gzFile fi = idx_open(images_path, err, errlen);
    if (fi == NULL)
        return -1;

    unsigned char hi[16], hl[8];
    if (idx_read_header(fi, images_path, hi, sizeof hi, err, errlen) != 0)
        goto out;
    uint32_t magic = idx_be32(hi), count = idx_be32(hi + 4);
    uint32_t rows = idx_be32(hi + 8), cols = idx_be32(hi + 12);
    if (magic != IDX_MAGIC_IMAGES) {
        util_seterr(err, errlen, "%s: bad magic 0x%08x, expected 0x%08x (IDX uint8 images)%s",
                images_path, (unsigned)magic, IDX_MAGIC_IMAGES,
                magic == IDX_MAGIC_LABELS ? "; this looks like a label file" : "");
        goto out;
    }
    if (count > IDX_MAX_COUNT) {
        util_seterr(err, errlen, "%s: image count %u exceeds the limit of %d", images_path,
                (unsigned)count, IDX_MAX_COUNT);
        goto out;
    }
    if (rows < 1 || rows > IDX_MAX_SIDE || cols < 1 || cols > IDX_MAX_SIDE) {
        util_seterr(err, errlen, "%s: image size %ux%u outside 1..%d", images_path, (unsigned)rows,
                (unsigned)cols, IDX_MAX_SIDE);
        goto out;
    }

    fl = idx_open(labels_path, err, errlen);
    if (fl == NULL)
        goto out;
    if (idx_read_header(fl, labels_path, hl, sizeof hl, err, errlen) != 0)
        goto out;
    uint32_t lmagic = idx_be32(hl), lcount = idx_be32(hl + 4);
    if (lmagic != IDX_MAGIC_LABELS) {
        util_seterr(err, errlen, "%s: bad magic 0x%08x, expected 0x%08x (IDX uint8 labels)%s",
                labels_path, (unsigned)lmagic, IDX_MAGIC_LABELS,
                lmagic == IDX_MAGIC_IMAGES ? "; this looks like an image file" : "");
        goto out;
    }
    if (lcount != count) {
        util_seterr(err, errlen, "%s has %u images but %s has %u labels", images_path,
                (unsigned)count, labels_path, (unsigned)lcount);
        goto out;
    }

    /* count <= 1e7 and sides <= 4096: the product fits in 64 bits. */
    uint64_t npix = (uint64_t)count * rows * cols;
    if (idx_read_body(fi, images_path, "pixel", npix, &pixels, err, errlen) != 0)
        goto out;
    if (idx_read_body(fl, labels_path, "label", count, &labels, err, errlen) != 0)
        goto out;

    out->pixels = pixels;
    out->labels = labels;
    out->n = count;
    out->rows = (int)rows;
    out->cols = (int)cols;
    pixels = labels = NULL;
    rc = 0;
out:
    free(pixels);
    free(labels);
    gzclose(fi);
    if (fl != NULL)
        gzclose(fl);
    return rc;
}

void idx_free(idx_set_t *set)
{
    if (set == NULL)
        return;
    free(set->pixels);
    free(set->labels);
    memset(set, 0, sizeof *set);
}

/* ---- writing ------------------------------------------------------------- */

/* A file being written: temp name in the final directory, renamed at the end. */
typedef struct {
    const char *path;
    char *tmp;
    char *dir;
    int created; /* tmp exists on disk and must be unlinked on failure */
} idx_out_t;

static int idx_out_names(idx_out_t *o, const char *path, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->path = path;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (base[0] == '\0') {
        util_seterr(err, errlen, "%s: not a file name", path);
        return -1;
    }
    size_t dirlen = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
    o->dir = malloc(dirlen + 1);
    size_t tlen = dirlen + strlen(base) + 32;
    o->tmp = malloc(tlen);
    if (o->dir == NULL || o->tmp == NULL) {
        util_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(o->dir, slash ? path : ".", dirlen);
    o->dir[dirlen] = '\0';
    /* Same directory as the target so rename() is atomic; the base name is
     * cut short to stay under NAME_MAX. */
    snprintf(o->tmp, tlen, "%s/.%.100s.tmp-XXXXXX", o->dir, base);
    return 0;
}

static void idx_out_free(idx_out_t *o)
{
    if (o->created)
        unlink(o->tmp);
    free(o->tmp);
    free(o->dir);
    memset(o, 0, sizeof *o);
}

static int idx_gzwrite_all(gzFile g, const uint8_t *p, uint64_t len)
{
    while (len > 0) {
        unsigned n = len > IDX_GZ_CHUNK ? IDX_GZ_CHUNK : (unsigned)len;
        if (gzwrite(g, p, n) != (int)n)
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

/* Writes header then, for each selected item, item bytes from base; small
 * items go through a staging buffer so zlib is not called per byte. */
static int idx_gz_body(gzFile g, const unsigned char *hdr, size_t hlen, const uint8_t *base,
                       size_t item, const int64_t *subset, int64_t count)
{
    if (idx_gzwrite_all(g, hdr, hlen) != 0)
        return -1;
    if (subset == NULL)
        return idx_gzwrite_all(g, base, (uint64_t)count * item);
    uint8_t stage[IDX_STAGE];
    size_t k = 0;
    for (int64_t i = 0; i < count; i++) {
        const uint8_t *src = base + (size_t)subset[i] * item;
        if (item > sizeof stage) {
            if (idx_gzwrite_all(g, src, item) != 0)
                return -1;
            continue;
        }
        if (k + item > sizeof stage) {
            if (idx_gzwrite_all(g, stage, k) != 0)
                return -1;
            k = 0;
        }
        memcpy(stage + k, src, item);
        k += item;
    }
    return idx_gzwrite_all(g, stage, k);
}

/* Creates o->tmp and fills it with a gzip IDX file; fsynced and closed. */
static int idx_write_tmp(idx_out_t *o, const unsigned char *hdr, size_t hlen,
                         const uint8_t *base, size_t item, const int64_t *subset, int64_t count,
                         char *err, size_t errlen)
{
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        util_seterr(err, errlen, "%s: cannot create temp file in %s: %s", o->path, o->dir,
                strerror(errno));
        return -1;
    }
    o->created = 1;
    /* gzclose closes the descriptor it was given; keep our own for fsync. */
    errno = 0;
    int gfd = dup(fd);
    gzFile g = gfd >= 0 ? gzdopen(gfd, "wb") : NULL;
    if (g == NULL) {
        util_seterr(err, errlen, "%s: cannot start gzip stream: %s", o->path,
                errno ? strerror(errno) : "out of memory");
        if (gfd >= 0)
            close(gfd);
        close(fd);
        return -1;
    }
    int wrc = idx_gz_body(g, hdr, hlen, base, item, subset, count);
    const char *m = wrc != 0 ? idx_gzmsg(g) : "";
    char msg[128];
    snprintf(msg, sizeof msg, "%s", m); /* gzerror's string dies with gzclose */
    int crc = gzclose(g);
    if (wrc != 0 || crc != Z_OK) {
        util_seterr(err, errlen, "%s: write failed: %s", o->path,
                wrc != 0 ? msg : crc == Z_ERRNO ? strerror(errno) : "gzip error on close");
        close(fd);
        return -1;
    }
    if (fsync(fd) != 0) {
        util_seterr(err, errlen, "%s: fsync failed: %s", o->path, strerror(errno));
        close(fd);
        return -1;
    }
    if (close(fd) != 0) {
        util_seterr(err, errlen, "%s: close failed: %s", o->path, strerror(errno));
        return -1;
    }
    return 0;
}

static void idx_fsync_dir(const char *dir)
{
    /* Best effort: makes the renames durable where the filesystem allows. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

int idx_write(const char *images_path, const char *labels_path, const idx_set_t *set,
              const int64_t *subset, int64_t nsubset, char *err, size_t errlen)
{
    if (images_path == NULL || labels_path == NULL || set == NULL) {
        util_seterr(err, errlen, "idx_write: missing path or set");
        return -1;
    }
    if (strcmp(images_path, labels_path) == 0) {
        util_seterr(err, errlen, "idx_write: images and labels both go to %s", images_path);
        return -1;
    }
    if (set->n < 0 || set->n > IDX_MAX_COUNT || set->rows < 1 || set->rows > IDX_MAX_SIDE ||
        set->cols < 1 || set->cols > IDX_MAX_SIDE ||
        (set->n > 0 && (set->pixels == NULL || set->labels == NULL))) {
        util_seterr(err, errlen, "idx_write: invalid set (n %lld, %dx%d)", (long long)set->n,
                set->rows, set->cols);
        return -1;
    }
    int64_t count = set->n;
    if (subset != NULL) {
        if (nsubset < 0 || nsubset > IDX_MAX_COUNT) {
            util_seterr(err, errlen, "idx_write: subset size %lld outside 0..%d",
                    (long long)nsubset, IDX_MAX_COUNT);
            return -1;
        }
        for (int64_t i = 0; i < nsubset; i++) {
            if (subset[i] < 0 || subset[i] >= set->n) {
                util_seterr(err, errlen, "idx_write: subset[%lld] = %lld is outside 0..%lld",
                        (long long)i, (long long)subset[i], (long long)set->n - 1);
                return -1;
            }
        }
        count = nsubset;
    }

    size_t item = (size_t)set->rows * (size_t)set->cols;
    unsigned char hi[16], hl[8];
    idx_put_be32(hi, IDX_MAGIC_IMAGES);
    idx_put_be32(hi + 4, (uint32_t)count);
    idx_put_be32(hi + 8, (uint32_t)set->rows);
    idx_put_be32(hi + 12, (uint32_t)set->cols);
    idx_put_be32(hl, IDX_MAGIC_LABELS);
    idx_put_be32(hl + 4, (uint32_t)count);

    /* Both temp files are complete before either is renamed, so a failure
     * never leaves new images next to old labels. */
    int rc = -1;
    idx_out_t oi, ol;
    memset(&oi, 0, sizeof oi);
    memset(&ol, 0, sizeof ol);
    if (idx_out_names(&oi, images_path, err, errlen) != 0 ||
        idx_out_names(&ol, labels_path, err, errlen) != 0)
        goto out;
    if (idx_write_tmp(&oi, hi, sizeof hi, set->pixels, item, subset, count, err, errlen) != 0 ||
        idx_write_tmp(&ol, hl, sizeof hl, set->labels, 1, subset, count, err, errlen) != 0)
        goto out;
    if (rename(oi.tmp, images_path) != 0) {
        util_seterr(err, errlen, "%s: rename from temp file failed: %s", images_path,
                strerror(errno));
        goto out;
    }
    oi.created = 0;
    if (rename(ol.tmp, labels_path) != 0) {
        util_seterr(err, errlen, "%s: rename from temp file failed: %s", labels_path,
                strerror(errno));
        goto out;
    }
    ol.created = 0;
    idx_fsync_dir(oi.dir);
    if (strcmp(oi.dir, ol.dir) != 0)
        idx_fsync_dir(ol.dir);
    rc = 0;
out:
    idx_out_free(&oi);
    idx_out_free(&ol);
    return rc;
}
