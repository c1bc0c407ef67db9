/*
 * data_folder.c - the `folder` data source.
 *
 *   [data]
 *   source = folder
 *   path = /srv/pacs-export          directory tree, walked recursively (sorted;
 *                                    hidden entries and directory symlinks skipped):
 *                                    *.dcm, *.dicom, files with the DICM preamble,
 *                                    and 8/16-bit grayscale *.png
 *   labels, label_key, val_fraction, height, width, window, salt_file:
 *                                    as for every DICOM source (dicom_source.h);
 *                                    label_key = file matches the path relative to
 *                                    `path` (for PNG the only key there is)
 *
 * Images are decoded by the DICOM worker (dicom.h), all of them on the first
 * load; both splits are kept until asked for. An image is used when it decodes
 * and its key has a label; every other image is counted under its reason
 * (dicom_counts_t). Logs name an image only by dicom_image_ref() of its
 * relative path: folder names can be patient names, tag values never appear.
 */
#include "imaging/data_folder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imaging/dicom_source.h"
#include "common/log.h"
#include "common/util.h"

#define FOLDER_DEPTH_MAX 32
#define FOLDER_WARN_MAX 10 /* per-image warnings per load; the rest at debug */

/* One split being built. */
typedef struct {
    dataset_t d;
    int64_t cap;
} builder_t;

typedef struct {
    char root[DATA_VALUE_MAX];
    dicom_common_t c;
    dataset_t pending[2];
    int have[2];
    dicom_counts_t stats;
} folder_t;

const conf_opt_t data_folder_opts[] = {
    {"path", CONF_STR, offsetof(folder_t, root), DATA_VALUE_MAX, 0, 0, NULL},
};
_Static_assert(sizeof data_folder_opts / sizeof data_folder_opts[0] == DATA_FOLDER_NOPTS,
               "DATA_FOLDER_NOPTS: one row per key");

void *data_folder_open(const data_conf_t *c, char *err, size_t errlen)
{
    struct stat st;
    folder_t *s = calloc(1, sizeof *s);
    if (!s) {
        util_seterr(err, errlen, "out of memory");
        return NULL;
    }
    if (data_conf_apply(c, data_folder_opts, DATA_FOLDER_NOPTS, s, err, errlen) < 0) goto fail;
    if (!s->root[0]) {
        util_seterr(err, errlen, "%s: [data] source folder needs path (a directory)", c->file);
        goto fail;
    }
    if (stat(s->root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        util_seterr(err, errlen, "%s:%d: path %s is not a directory", c->file,
                    data_conf_line(c, "path"), s->root);
        goto fail;
    }
    if (dicom_common_parse(c, &s->c, err, errlen) < 0) goto fail;
    return s;
fail:
    free(s);
    return NULL;
}

void data_folder_close(void *state)
{
    folder_t *s = state;
    if (!s) return;
    dicom_common_free(&s->c);
    dataset_free(&s->pending[0]);
    dataset_free(&s->pending[1]);
    free(s);
}

void data_folder_stats(const void *state, data_stats_t *out)
{
    dicom_counts_stats(&((const folder_t *)state)->stats, out);
}

/* ---- the walk ------------------------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n, cap;
} paths_t;

static int has_suffix(const char *name, const char *suf)
{
    size_t n = strlen(name), k = strlen(suf);
    return n > k && strcasecmp(name + n - k, suf) == 0;
}

static int is_candidate(const char *full, const char *name)
{
    if (has_suffix(name, ".dcm") || has_suffix(name, ".dicom") || has_suffix(name, ".png"))
        return 1;
    uint8_t pre[132];
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, pre, sizeof pre);
    close(fd);
    return n == (ssize_t)sizeof pre && memcmp(pre + 128, "DICM", 4) == 0;
}

static int paths_add(paths_t *p, const char *rel)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 256;
        char **nv = realloc(p->v, nc * sizeof *nv);
        if (!nv) return -1;
        p->v = nv, p->cap = nc;
    }
    if (!(p->v[p->n] = strdup(rel))) return -1;
    p->n++;
    return 0;
}

static void paths_free(paths_t *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->v[i]);
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* Adds the candidate files under root/rel (rel "" for the root). */
static int walk(const char *root, const char *rel, int depth, paths_t *out, char *err,
                size_t errlen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) {
        if (depth == 0) {
            util_seterr(err, errlen, "%s: %s", root, strerror(errno));
            return -1;
        }
        log_warn("data: a subfolder cannot be read, skipped");
        return 0;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* ., .., the salt, hidden files */
        char r[PATH_MAX], full[PATH_MAX];
        if (snprintf(r, sizeof r, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= (int)sizeof r ||
            snprintf(full, sizeof full, "%s/%s", root, r) >= (int)sizeof full)
            continue;
        struct stat st;
        if (lstat(full, &st) < 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < FOLDER_DEPTH_MAX) rc = walk(root, r, depth + 1, out, err, errlen);
            continue;
        }
        if (S_ISLNK(st.st_mode) && (stat(full, &st) < 0 || !S_ISREG(st.st_mode))) continue;
        if (!S_ISREG(st.st_mode) || !is_candidate(full, e->d_name)) continue;
        if (paths_add(out, r) < 0) {
            util_seterr(err, errlen, "out of memory listing %s", root);
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- decoding into the two splits ------------------------------------------------------ */

static int builder_add(builder_t *b, const float *pix, size_t per, int32_t label)
{
    if (b->d.n == b->cap) {
        int64_t nc = b->cap ? b->cap * 2 : 1024;
        if ((uint64_t)nc > SIZE_MAX / sizeof(float) / per) return -1;
        float *x = realloc(b->d.x, (size_t)nc * per * sizeof *x);
        if (!x) return -1;
        b->d.x = x;
        int32_t *y = realloc(b->d.y, (size_t)nc * sizeof *y);
        if (!y) return -1;
        b->d.y = y;
        b->cap = nc;
    }
    memcpy(b->d.x + (size_t)b->d.n * per, pix, per * sizeof *pix);
    b->d.y[b->d.n++] = label;
    return 0;
}

static void skip(folder_t *s, const char *rel, dicom_status_t st, const char *reason, int *warned)
{
    char ref[17];
    dicom_image_ref(s->c.salt, rel, ref);
    s->stats.skipped[st]++;
    if (st != DICOM_SKIP_UNLABELLED && (*warned)++ < FOLDER_WARN_MAX)
        log_warn("data: image %s skipped: %s (%s)", ref, dicom_status_name(st), reason);
    else log_debug("data: image %s skipped: %s (%s)", ref, dicom_status_name(st), reason);
}

static int scan(folder_t *s, char *err, size_t errlen)
{
    paths_t paths = {0};
    builder_t b[2] = {{{0}, 0}, {{0}, 0}};
    dicom_worker_t *w = NULL;
    int rc = -1, warned = 0;
    size_t per = (size_t)s->c.prep.height * (size_t)s->c.prep.width;
    double t0 = util_now();
    memset(&s->stats, 0, sizeof s->stats);
    for (int i = 0; i < 2; i++) dataset_free(&s->pending[i]), s->have[i] = 0;
    if (walk(s->root, "", 0, &paths, err, errlen) < 0) goto out;
    qsort(paths.v, paths.n, sizeof *paths.v, str_cmp);
    if (paths.n && !(w = dicom_worker_start(err, errlen))) goto out;
    dicom_progress_t prog;
    dicom_progress_start(&prog, "data: folder", paths.n, DICOM_PROGRESS_SECONDS);
    for (size_t i = 0; i < paths.n; i++) {
        dicom_progress_update(&prog, i, util_now(), NULL, 0);
        const char *rel = paths.v[i];
        s->stats.found++;
        const dicom_label_row_t *row = NULL;
        if (s->c.key == DICOM_LABEL_FILE) {
            if (!(row = dicom_common_find(&s->c, rel))) {
                skip(s, rel, DICOM_SKIP_UNLABELLED, "no label", &warned);
                continue;
            }
        }
        char full[PATH_MAX], reason[256];
        snprintf(full, sizeof full, "%s/%s", s->root, rel);
        dicom_image_t img;
        dicom_status_t st = dicom_worker_decode_file(w, full, &s->c.prep, &img, reason,
                                                     sizeof reason);
        if (s->c.key != DICOM_LABEL_FILE)
            row = dicom_common_find(&s->c, s->c.key == DICOM_LABEL_ACCESSION ? img.accession : img.sop_uid);
        if (row) s->stats.labelled++;
        if (st == DICOM_OK && !row) st = DICOM_SKIP_UNLABELLED, snprintf(reason, sizeof reason, "no label");
        if (st != DICOM_OK) {
            skip(s, rel, st, reason, &warned);
        } else if (builder_add(&b[dicom_common_split(&s->c, row)], img.pixels, per, row->label) < 0) {
            util_seterr(err, errlen, "out of memory after %zu images", i);
            free(img.pixels);
            goto out;
        } else {
            s->stats.decoded++;
        }
        free(img.pixels);
    }
    for (int i = 0; i < 2; i++) {
        s->pending[i] = b[i].d;
        s->pending[i].channels = 1;
        s->pending[i].height = s->c.prep.height;
        s->pending[i].width = s->c.prep.width;
        s->have[i] = 1;
        memset(&b[i], 0, sizeof b[i]);
    }
    double dt = util_now() - t0;
    const int64_t *k = s->stats.skipped;
    log_info("data: folder found=%lld labelled=%lld decoded=%lld train=%lld val=%lld "
             "skipped: unlabelled=%lld malformed=%lld unsupported=%lld burned_in=%lld "
             "crashed=%lld (%.1f s, %.0f images/s)",
             (long long)s->stats.found, (long long)s->stats.labelled,
             (long long)s->stats.decoded, (long long)s->pending[0].n,
             (long long)s->pending[1].n, (long long)k[DICOM_SKIP_UNLABELLED],
             (long long)k[DICOM_SKIP_MALFORMED], (long long)k[DICOM_SKIP_UNSUPPORTED],
             (long long)k[DICOM_SKIP_BURNED_IN], (long long)k[DICOM_SKIP_CRASH], dt,
             dt > 0 ? (double)s->stats.found / dt : 0.0);
    rc = 0;
out:
    dicom_worker_stop(&w);
    dataset_free(&b[0].d);
    dataset_free(&b[1].d);
    paths_free(&paths);
    return rc;
}

int data_folder_load(void *state, data_split_t split, dataset_t *out, char *err, size_t errlen)
{
    folder_t *s = state;
    memset(out, 0, sizeof *out);
    if (!s->have[split] && scan(s, err, errlen) < 0) return -1;
    *out = s->pending[split];
    memset(&s->pending[split], 0, sizeof s->pending[split]);
    s->have[split] = 0;
    return 0;
}
