#include "model/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static schema_t *schema_of(const model_t *m)
{
    schema_t *s = schema_new();
    if (!s) return NULL;
    for (size_t i = 0; i < model_num_tensors(m); i++) {
        int64_t shape[MODEL_MAX_DIMS];
        int nd = model_tensor_shape(m, i, shape);
        if (nd < 0 || schema_add(s, model_tensor_name(m, i), nd, shape) < 0) {
            schema_destroy(&s);
            return NULL;
        }
    }
    return s;
}

int checkpoint_save(model_t *m, const char *path, const st_meta_t *extra, size_t n_extra,
                    char *err, size_t errlen)
{
    const model_spec_t *sp = model_get_spec(m);
    st_meta_t meta[ST_META_MAX];
    size_t n = 0;
    const struct { const char *k; long long v; } ints[] = {
        {"in_channels", sp->in_channels}, {"height", sp->height}, {"width", sp->width},
        {"classes", sp->classes},
    };
    util_strlcpy(meta[n].key, "arch", ST_META_KEY_MAX);
    util_strlcpy(meta[n].value, sp->arch, ST_META_VALUE_MAX);
    n++;
    for (size_t i = 0; i < 4; i++, n++) {
        util_strlcpy(meta[n].key, ints[i].k, ST_META_KEY_MAX);
        snprintf(meta[n].value, ST_META_VALUE_MAX, "%lld", ints[i].v);
    }
    util_strlcpy(meta[n].key, "format", ST_META_KEY_MAX);
    util_strlcpy(meta[n].value, "pt", ST_META_VALUE_MAX);
    n++;
    for (size_t i = 0; i < n_extra && n < ST_META_MAX; i++) meta[n++] = extra[i];

    schema_t *s = schema_of(m);
    size_t numel = model_numel(m);
    float *v = malloc(numel * sizeof *v);
    int rc = -1;
    if (!s || !v) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (model_get_params(m, v, numel) < 0) {
        snprintf(err, errlen, "%s", model_errmsg(m));
        goto out;
    }
    rc = safetensors_write(path, s, v, meta, n, err, errlen);
out:
    free(v);
    schema_destroy(&s);
    return rc;
}

int checkpoint_init(const model_spec_t *spec, uint64_t seed, const char *path, size_t *numel,
                    char *err, size_t errlen)
{
    model_t *m = model_new(spec, seed, err, errlen);
    if (!m) return -1;
    st_meta_t extra[2] = {{"round", "0"}, {"seed", ""}};
    snprintf(extra[1].value, sizeof extra[1].value, "%llu", (unsigned long long)seed);
    int rc = checkpoint_save(m, path, extra, 2, err, errlen);
    *numel = model_numel(m);
    model_destroy(&m);
    return rc;
}

static int meta_int(const st_meta_t *meta, size_t n, const char *key, const char *path, int *out,
                    char *err, size_t errlen)
{
    const char *v = st_meta_get(meta, n, key);
    long long x;
    if (!v || util_parse_int(v, 1, 100000, &x) < 0) {
        snprintf(err, errlen, "%s: metadata '%s' missing or invalid", path, key);
        return -1;
    }
    *out = (int)x;
    return 0;
}

model_t *checkpoint_load(const char *path, char *err, size_t errlen)
{
    schema_t *fs = NULL, *ms = NULL;
    float *v = NULL;
    st_meta_t meta[ST_META_MAX];
    size_t n_meta = 0;
    model_t *m = NULL;
    if (safetensors_read(path, &fs, &v, meta, &n_meta, err, errlen) < 0) return NULL;
    model_spec_t spec = {0};
    const char *arch = st_meta_get(meta, n_meta, "arch");
    if (!arch || util_strlcpy(spec.arch, arch, sizeof spec.arch) < 0) {
        snprintf(err, errlen, "%s: metadata 'arch' missing", path);
        goto fail;
    }
    if (meta_int(meta, n_meta, "in_channels", path, &spec.in_channels, err, errlen) < 0 ||
        meta_int(meta, n_meta, "height", path, &spec.height, err, errlen) < 0 ||
        meta_int(meta, n_meta, "width", path, &spec.width, err, errlen) < 0 ||
        meta_int(meta, n_meta, "classes", path, &spec.classes, err, errlen) < 0)
        goto fail;
    m = model_new(&spec, 0, err, errlen);
    if (!m) goto fail;
    ms = schema_of(m);
    if (!ms || !schema_equal(fs, ms)) {
        snprintf(err, errlen, "%s: tensors do not match architecture '%s'", path, spec.arch);
        goto fail;
    }
    if (model_set_params(m, v, schema_numel(fs)) < 0) {
        snprintf(err, errlen, "%s: %s", path, model_errmsg(m));
        goto fail;
    }
    schema_destroy(&fs);
    schema_destroy(&ms);
    free(v);
    return m;
fail:
    model_destroy(&m);
    schema_destroy(&fs);
    schema_destroy(&ms);
    free(v);
    return NULL;
}
