#include "aggregation/fedavg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fedavg {
    size_t numel;
    fedavg_opts_t opts;
    double *sum;       /* sum of n_k * delta_k */
    double *velocity;  /* fedavgm's velocity, or the adaptive optimisers' m; else NULL */
    double *second;    /* the adaptive optimisers' v, else NULL */
    int64_t weight;
    int count;
};

fedavg_t *fedavg_new(size_t numel, const fedavg_opts_t *opts)
{
    fedavg_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->numel = numel;
    f->opts = *opts;
    const int adaptive = fedavg_opt_adaptive(opts->opt);
    if (opts->opt == SERVER_OPT_FEDAVGM || adaptive)
        f->velocity = calloc(numel ? numel : 1, sizeof(double));
    if (adaptive) f->second = malloc((numel ? numel : 1) * sizeof(double));
    if ((opts->opt == SERVER_OPT_FEDAVGM || adaptive) && (!f->velocity || (adaptive && !f->second))) {
        fedavg_destroy(&f);
        return NULL;
    }
    if (adaptive)
        for (size_t i = 0; i < numel; i++) f->second[i] = opts->tau * opts->tau;
    return f;
}

void fedavg_destroy(fedavg_t **f)
{
    if (!f || !*f) return;
    free((*f)->sum);
    free((*f)->velocity);
    free((*f)->second);
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

/* The server optimiser's step for element i with mean update d. */
static inline double server_step(fedavg_t *f, size_t i, double d)
{
    const fedavg_opts_t *o = &f->opts;
    switch (o->opt) {
    case SERVER_OPT_FEDAVG: return o->lr * d;
    case SERVER_OPT_FEDAVGM:
        f->velocity[i] = o->momentum * f->velocity[i] + d;
        return o->lr * f->velocity[i];
    case SERVER_OPT_FEDADAGRAD:
    case SERVER_OPT_FEDYOGI:
    case SERVER_OPT_FEDADAM: {
        double m = o->beta1 * f->velocity[i] + (1 - o->beta1) * d, v = f->second[i], d2 = d * d;
        if (o->opt == SERVER_OPT_FEDADAGRAD) v = v + d2;
        else if (o->opt == SERVER_OPT_FEDYOGI) v = v - (1 - o->beta2) * d2 * (v > d2 ? 1 : v < d2 ? -1 : 0);
        else v = o->beta2 * v + (1 - o->beta2) * d2;
        f->velocity[i] = m;
        f->second[i] = v;
        return o->eta * m / (sqrt(v) + o->tau);
    }
    }
    return 0;
}

int fedavg_apply(fedavg_t *f, float *global, char *err, size_t errlen)
{
    if (f->count == 0 || f->weight <= 0) {
        snprintf(err, errlen, "no update was accepted this round");
        return -1;
    }
    const double inv = 1.0 / (double)f->weight;
    for (size_t i = 0; i < f->numel; i++)
        global[i] = (float)((double)global[i] + server_step(f, i, f->sum[i] * inv));
    return 0;
}

void fedavg_apply_mean(fedavg_t *f, float *global, const float *mean)
{
    for (size_t i = 0; i < f->numel; i++)
        global[i] = (float)((double)global[i] + server_step(f, i, (double)mean[i]));
}

double fedavg_lr_at(const lr_sched_t *s, double lr, uint32_t round, uint32_t rounds)
{
    double r = round > 0 ? (double)(round - 1) : 0, v = lr;
    if (s->kind == LR_STEP && s->step_rounds > 0)
        v = lr * pow(s->gamma, floor(r / (double)s->step_rounds));
    else if (s->kind == LR_COSINE && rounds > 0)
        v = s->lr_min + (lr - s->lr_min) * 0.5 * (1 + cos(M_PI * (r < rounds ? r : rounds) / rounds));
    return v < s->lr_min ? s->lr_min : v > lr ? lr : v;
}

static const char *const sched_names[] = {"constant", "step", "cosine"};

int fedavg_lr_schedule_parse(const char *s, lr_schedule_t *out)
{
    for (size_t i = 0; i < sizeof sched_names / sizeof sched_names[0]; i++)
        if (strcmp(s, sched_names[i]) == 0) {
            *out = (lr_schedule_t)i;
            return 0;
        }
    return -1;
}

const char *fedavg_lr_schedule_name(lr_schedule_t k)
{
    return (unsigned)k < sizeof sched_names / sizeof sched_names[0] ? sched_names[k] : "?";
}

static const char *const opt_names[] = {"fedavg", "fedavgm", "fedadagrad", "fedyogi", "fedadam"};

const char *fedavg_opt_name(server_opt_t opt)
{
    return (unsigned)opt < sizeof opt_names / sizeof opt_names[0] ? opt_names[opt] : "?";
}

int fedavg_opt_adaptive(server_opt_t opt)
{
    return opt == SERVER_OPT_FEDADAGRAD || opt == SERVER_OPT_FEDYOGI || opt == SERVER_OPT_FEDADAM;
}

void fedavg_opts_adaptive_defaults(fedavg_opts_t *o)
{
    o->eta = FEDAVG_DEFAULT_ETA;
    o->beta1 = FEDAVG_DEFAULT_BETA1;
    o->beta2 = FEDAVG_DEFAULT_BETA2;
    o->tau = FEDAVG_DEFAULT_TAU;
}

int fedavg_state_count(const fedavg_t *f)
{
    return fedavg_opt_adaptive(f->opts.opt) ? 2 : f->opts.opt == SERVER_OPT_FEDAVGM ? 1 : 0;
}

double *fedavg_state(fedavg_t *f, int k)
{
    if (k < 0 || k >= fedavg_state_count(f)) return NULL;
    return k == 0 ? f->velocity : f->second;
}

int fedavg_opt_parse(const char *s, server_opt_t *out)
{
    for (size_t i = 0; i < sizeof opt_names / sizeof opt_names[0]; i++)
        if (strcmp(s, opt_names[i]) == 0) {
            *out = (server_opt_t)i;
            return 0;
        }
    return -1;
}
