#include "imaging/imaging.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/data_dicomweb.h"
#include "imaging/data_folder.h"
#include "imaging/dicom_source.h"
#include "common/util.h"

int data_conf_set(data_conf_t *c, const char *key, const char *value, int line, char *err,
                  size_t errlen)
{
    if (data_conf_get(c, key)) {
        snprintf(err, errlen, "key '%s' given twice", key);
        return -1;
    }
    if (c->n == DATA_MAX_OPTS) {
        snprintf(err, errlen, "too many keys in [data] (at most %d)", DATA_MAX_OPTS);
        return -1;
    }
    data_opt_t *o = &c->opt[c->n];
    if (util_strlcpy(o->key, key, sizeof o->key) < 0 ||
        util_strlcpy(o->value, value, sizeof o->value) < 0) {
        snprintf(err, errlen, "key or value too long for '%s'", key);
        return -1;
    }
    o->line = line;
    c->n++;
    return 0;
}

const char *data_conf_get(const data_conf_t *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->opt[i].key, key) == 0) return c->opt[i].value;
    return NULL;
}

int data_conf_line(const data_conf_t *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->opt[i].key, key) == 0) return c->opt[i].line;
    return 0;
}

/* Row of key in t (exactly: a '-' is not a '_' here), or -1. */
static int opt_row(const conf_opt_t *t, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, key) == 0) return (int)i;
    return -1;
}

int data_conf_apply(const data_conf_t *c, const conf_opt_t *t, size_t n, void *base, char *err,
                    size_t errlen)
{
    for (size_t i = 0; i < c->n; i++) {
        int r = opt_row(t, n, c->opt[i].key);
        char why[512];
        if (r < 0) continue;
        if (conf_set(&t[r], base, c->opt[i].value, why, sizeof why) < 0) {
            snprintf(err, errlen, "%s:%d: %s", c->file, c->opt[i].line, why);
            return -1;
        }
    }
    return 0;
}

void dataset_normalise_u8(const uint8_t *pixels, size_t count, float *out)
{
    for (size_t i = 0; i < count; i++) out[i] = ((float)pixels[i] / 255.0f - 0.5f) / 0.5f;
}

void dataset_free(dataset_t *d)
{
    if (!d) return;
    free(d->x);
    free(d->y);
    memset(d, 0, sizeof *d);
}

/* ---- the idx source ---------------------------------------------------------- */

typedef struct {
    char images[2][DATA_VALUE_MAX];
    char labels[2][DATA_VALUE_MAX];
} idx_source_t;

#define IDX_STR(name, f) {name, CONF_STR, offsetof(idx_source_t, f), DATA_VALUE_MAX, 0, 0, NULL}
static const conf_opt_t idx_opts[] = {
    IDX_STR("train_images", images[DATA_TRAIN]), IDX_STR("train_labels", labels[DATA_TRAIN]),
    IDX_STR("val_images", images[DATA_VAL]), IDX_STR("val_labels", labels[DATA_VAL]),
};

static void *idx_open(const data_conf_t *c, char *err, size_t errlen)
{
    idx_source_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (data_conf_apply(c, idx_opts, sizeof idx_opts / sizeof idx_opts[0], s, err, errlen) < 0)
        goto fail;
    if (!s->images[DATA_TRAIN][0] || !s->labels[DATA_TRAIN][0]) {
        snprintf(err, errlen, "%s: [data] source idx needs train_images and train_labels", c->file);
        goto fail;
    }
    if (!s->images[DATA_VAL][0] != !s->labels[DATA_VAL][0]) {
        snprintf(err, errlen, "%s: [data] val_images and val_labels go together", c->file);
        goto fail;
    }
    return s;
fail:
    free(s);
    return NULL;
}

static int idx_source_load(void *state, data_split_t split, dataset_t *out, char *err,
                           size_t errlen)
{
    idx_source_t *s = state;
    memset(out, 0, sizeof *out);
    if (!s->images[split][0]) return 0; /* no such split configured */
    idx_set_t set;
    if (idx_load(s->images[split], s->labels[split], &set, err, errlen) < 0) return -1;
    size_t per = (size_t)set.rows * (size_t)set.cols;
    out->x = malloc((size_t)set.n * per * sizeof *out->x);
    out->y = malloc((size_t)(set.n ? set.n : 1) * sizeof *out->y);
    if (!out->x || !out->y) {
        snprintf(err, errlen, "out of memory for %lld images", (long long)set.n);
        idx_free(&set);
        dataset_free(out);
        return -1;
    }
    dataset_normalise_u8(set.pixels, (size_t)set.n * per, out->x);
    for (int64_t i = 0; i < set.n; i++) out->y[i] = set.labels[i];
    out->n = set.n;
    out->channels = 1;
    out->height = set.rows;
    out->width = set.cols;
    idx_free(&set);
    return 0;
}

static void idx_close(void *state) { free(state); }

/* ---- the table of sources ------------------------------------------------------ */

typedef struct {
    const char *kind;
    /* The keys this source accepts besides "source": its own table and a shared one. */
    const conf_opt_t *opts, *shared;
    size_t nopts, nshared;
    void *(*open)(const data_conf_t *c, char *err, size_t errlen);
    int (*load)(void *state, data_split_t split, dataset_t *out, char *err, size_t errlen);
    void (*close)(void *state);
    /* Optional: the source's own counts; NULL counts every loaded image as
     * found, labelled and decoded. */
    void (*stats)(const void *state, data_stats_t *out);
} source_ops_t;

#define NOPTS(t) sizeof t / sizeof t[0]
static const source_ops_t sources[] = {
    {.kind = "idx", .opts = idx_opts, .nopts = NOPTS(idx_opts), .open = idx_open,
     .load = idx_source_load, .close = idx_close},
    {.kind = "folder", .opts = data_folder_opts, .nopts = DATA_FOLDER_NOPTS,
     .shared = dicom_common_opts, .nshared = DICOM_COMMON_NOPTS, .open = data_folder_open,
     .load = data_folder_load, .close = data_folder_close, .stats = data_folder_stats},
    {.kind = "dicomweb", .opts = dicomweb_opts, .nopts = DICOMWEB_NOPTS,
     .shared = dicom_common_opts, .nshared = DICOM_COMMON_NOPTS, .open = dicomweb_open,
     .load = dicomweb_load, .close = dicomweb_close, .stats = dicomweb_stats},
};

struct datasource {
    const source_ops_t *ops;
    void *state;
    data_stats_t loaded; /* for sources without a stats hook */
};

datasource_t *datasource_open(const data_conf_t *conf, char *err, size_t errlen)
{
    const char *kind = data_conf_get(conf, "source");
    if (!kind) kind = "idx";
    const source_ops_t *ops = NULL;
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++)
        if (strcmp(sources[i].kind, kind) == 0) ops = &sources[i];
    if (!ops) {
        snprintf(err, errlen, "%s: [data] unknown source '%s' (known: idx, folder, dicomweb)", conf->file, kind);
        return NULL;
    }
    for (size_t i = 0; i < conf->n; i++) {
        const char *key = conf->opt[i].key;
        if (strcmp(key, "source") != 0 && opt_row(ops->opts, ops->nopts, key) < 0 &&
            opt_row(ops->shared, ops->nshared, key) < 0) {
            snprintf(err, errlen, "%s:%d: unknown key '%s' for data source %s", conf->file,
                     conf->opt[i].line, conf->opt[i].key, kind);
            return NULL;
        }
    }
    datasource_t *ds = calloc(1, sizeof *ds);
    if (!ds) return NULL;
    ds->ops = ops;
    ds->state = ops->open(conf, err, errlen);
    if (!ds->state) {
        free(ds);
        return NULL;
    }
    return ds;
}

void datasource_destroy(datasource_t **ds)
{
    if (!ds || !*ds) return;
    (*ds)->ops->close((*ds)->state);
    free(*ds);
    *ds = NULL;
}

const char *datasource_kind(const datasource_t *ds) { return ds->ops->kind; }

int datasource_load(datasource_t *ds, data_split_t split, dataset_t *out, char *err,
                    size_t errlen)
{
    int rc = ds->ops->load(ds->state, split, out, err, errlen);
    if (rc == 0) {
        ds->loaded.found += out->n;
        ds->loaded.labelled += out->n;
        ds->loaded.decoded += out->n;
    }
    return rc;
}

void datasource_stats(const datasource_t *ds, data_stats_t *out)
{
    if (ds->ops->stats) ds->ops->stats(ds->state, out);
    else *out = ds->loaded;
}

int64_t data_stats_skipped(const data_stats_t *s, const char *reason)
{
    int64_t n = 0;
    for (size_t i = 0; i < s->nskipped; i++)
        if (!reason || strcmp(s->skipped[i].reason, reason) == 0) n += s->skipped[i].n;
    return n;
}

void data_stats_json(const data_stats_t *s, FILE *f)
{
    fprintf(f, "\"found\":%lld,\"labelled\":%lld,\"decoded\":%lld,\"skipped\":{",
            (long long)s->found, (long long)s->labelled, (long long)s->decoded);
    for (size_t i = 0; i < s->nskipped; i++)
        fprintf(f, "%s\"%s\":%lld", i ? "," : "", s->skipped[i].reason,
                (long long)s->skipped[i].n);
    fputc('}', f);
}
