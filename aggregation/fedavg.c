#include "aggregation/fedavg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fedavg {
    size_t numel;
    fedavg_opts_t opts;
    double *sum;       /* sum of n_k * delta_k */
    double *velocity;  /* fedavgm state, NULL otherwise */
    int64_t weight;
    int count;
};

fedavg_t *fedavg_new(size_t numel, const fedavg_opts_t *opts)
{
    fedavg_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->numel = numel;
    f->opts = *opts;
    if (opts->opt == SERVER_OPT_FEDAVGM) f->velocity = calloc(numel ? numel : 1, sizeof(double));
    if (opts->opt == SERVER_OPT_FEDAVGM && !f->velocity) {
        fedavg_destroy(&f);
        return NULL;
    }
    return f;
}

void fedavg_destroy(fedavg_t **f)
{
    if (!f || !*f) return;
    free((*f)->sum);
    free((*f)->velocity);
    free(*f);
    *f = NULL;
}

size_t fedavg_numel(const fedavg_t *f) { return f->numel; }
int64_t fedavg_weight(const fedavg_t *f) { return f->weight; }
int fedavg_count(const fedavg_t *f) { return f->count; }

void fedavg_begin(fedavg_t *f)
{
    if (f->sum) memset(f->sum, 0, f->numel * sizeof *f->sum);
    f->weight = 0;
    f->count = 0;
}

/* Reads float i of an unaligned little-endian buffer (x86-64 and arm64 are
 * little-endian; memcpy compiles to one load). */
static inline float load_f32(const uint8_t *p, size_t i)
{
    float v;
    memcpy(&v, p + 4 * i, sizeof v);
    return v;
}

int fedavg_add(fedavg_t *f, const uint8_t *le_f32, size_t len, int64_t n_samples, char *err,
               size_t errlen)
{
    if (len != f->numel * 4) {
        snprintf(err, errlen, "update has %zu bytes, model needs %zu (%zu float32)", len,
                 f->numel * 4, f->numel);
        return -1;
    }
    if (n_samples <= 0 || n_samples > (int64_t)1 << 40) {
        snprintf(err, errlen, "sample count %lld out of range", (long long)n_samples);
        return -1;
    }
    if (!f->sum && !(f->sum = calloc(f->numel ? f->numel : 1, sizeof *f->sum))) {
        snprintf(err, errlen, "out of memory for the FedAvg sum");
        return -1;
    }
    /* Check everything before touching the sum. */
    for (size_t i = 0; i < f->numel; i++) {
        const float v = load_f32(le_f32, i);
        if (!isfinite(v)) {
            snprintf(err, errlen, "update value %zu is not finite", i);
            return -1;
        }
        if (!(fabs(v) <= FEDAVG_MAX_ABS)) {
            snprintf(err, errlen, "update value %zu is %g, beyond +-%g", i, (double)v,
                     FEDAVG_MAX_ABS);
            return -1;
        }
    }
    const double w = (double)n_samples;
    double *restrict s = f->sum;
    for (size_t i = 0; i < f->numel; i++) s[i] += w * (double)load_f32(le_f32, i);
    f->weight += n_samples;
    f->count++;
    return 0;
}

int fedavg_apply(fedavg_t *f, float *global, char *err, size_t errlen)
{
    if (f->count == 0 || f->weight <= 0) {
        snprintf(err, errlen, "no update was accepted this round");
        return -1;
    }
    const double inv = 1.0 / (double)f->weight;
    const double lr = f->opts.lr;
    if (f->opts.opt == SERVER_OPT_FEDAVGM) {
        const double mu = f->opts.momentum;
        for (size_t i = 0; i < f->numel; i++) {
            f->velocity[i] = mu * f->velocity[i] + f->sum[i] * inv;
            global[i] = (float)((double)global[i] + lr * f->velocity[i]);
        }
    } else {
        for (size_t i = 0; i < f->numel; i++)
            global[i] = (float)((double)global[i] + lr * f->sum[i] * inv);
    }
    return 0;
}

void fedavg_apply_mean(fedavg_t *f, float *global, const float *mean)
{
    const double lr = f->opts.lr;
    if (f->opts.opt == SERVER_OPT_FEDAVGM) {
        const double mu = f->opts.momentum;
        for (size_t i = 0; i < f->numel; i++) {
            f->velocity[i] = mu * f->velocity[i] + (double)mean[i];
            global[i] = (float)((double)global[i] + lr * f->velocity[i]);
        }
    } else {
        for (size_t i = 0; i < f->numel; i++)
            global[i] = (float)((double)global[i] + lr * (double)mean[i]);
    }
}

int fedavg_opt_parse(const char *s, server_opt_t *out)
{
    if (strcmp(s, "fedavg") == 0) *out = SERVER_OPT_FEDAVG;
    else if (strcmp(s, "fedavgm") == 0) *out = SERVER_OPT_FEDAVGM;
    else return -1;
    return 0;
}
