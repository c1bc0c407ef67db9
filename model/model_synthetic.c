/*
 * model_synthetic.c - model.h without LibTorch, for protocol-only clients
 * (medfed-swarm): the real client code runs unchanged on top of it, with
 * updates of the model's size that cost almost nothing to make.
 *
 * Parameters are never stored per model: a model holds its parameters as
 *   base  the vector last given to model_set_params, shared in the process
 *         (vecshare_get), or NULL for the seeded initial values;
 *   own   a private copy, made only when a model trains twice without a
 *         model_set_params in between (the client never does);
 *   step  the training pending on top of them: p + step * (target - p) +
 *         noise * u, with u in [-1, 1) drawn from the training seed.
 * Every value is a function of its index (a counter-based hash, splitmix64's
 * finaliser), so model_get_params computes them in one pass and model_evaluate
 * samples a few thousand of them.
 *
 * Behaviour as model.cpp's where model.h leaves it open: errors in
 * model_errmsg, cleared by each fallible call; the progress callback after
 * every progress_every images (1-based epoch); a model is not thread-safe,
 * different models may be used from different threads.
 */
#include "model/model_synthetic.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/vecshare.h"

#define TARGET_SEED UINT64_C(0x7a26e7f3c1d5b90f) /* the task: the same for every model */
#define INIT_SALT UINT64_C(0x3c6ef372fe94f82b)
#define EVAL_SEED UINT64_C(0x510e527fade682d1)
#define EVAL_SAMPLES 4096 /* parameters sampled to measure the distance to the target */
#define NOISE 0.1f        /* of the step: each site's own share of its update */

struct model {
    model_spec_t spec;
    size_t numel;
    uint64_t init_seed;
    const float *base; /* shared (vecshare); NULL: the seeded initial values */
    float *own;        /* private values, when set (see the top of the file) */
    float step;        /* training pending on top of base/own; 0: none */
    uint64_t train_seed;
    char err[MODEL_ERR_MAX];
};

static int fail(model_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(model_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* A uniform value in [-0.5, 0.5) for (seed, index): splitmix64's output for
 * a state of seed after index + 1 steps. */
static inline float hashed(uint64_t seed, size_t i)
{
    uint64_t z = seed + (uint64_t)(i + 1) * UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return (float)(z >> 40) * 0x1p-24f - 0.5f;
}

/* Parameter i, with the pending training applied. */
static inline float value(const model_t *m, size_t i)
{
    float p = m->own ? m->own[i] : m->base ? m->base[i] : hashed(m->init_seed, i);
    if (m->step == 0) return p;
    return p + m->step * (hashed(TARGET_SEED, i) - p) +
           2 * NOISE * m->step * hashed(m->train_seed, i);
}

/* Distance to the target as a share of a random model's: 1 at a random
 * model (two independent U(-0.5, 0.5) vectors), 0 at the target. */
static double distance(const model_t *m)
{
    size_t n = m->numel < EVAL_SAMPLES ? m->numel : EVAL_SAMPLES, stride = m->numel / n;
    double d2 = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = k * stride;
        double d = (double)value(m, i) - (double)hashed(TARGET_SEED, i);
        d2 += d * d;
    }
    return sqrt(d2 / (double)n * 6.0); /* E[(p - t)^2] = 1/6 for a random model */
}

int model_synthetic_spec(model_spec_t *spec, size_t params)
{
    if (params == 0 || params > MODEL_SYNTHETIC_MAX_PARAMS) return -1;
    memset(spec, 0, sizeof *spec);
    snprintf(spec->arch, sizeof spec->arch, MODEL_SYNTHETIC_PREFIX "%zu", params);
    spec->in_channels = 1;
    spec->height = 28;
    spec->width = 28;
    spec->classes = 2;
    return 0;
}

/* P from "synthetic-P", or 0. */
static size_t params_of(const char *arch)
{
    const size_t plen = strlen(MODEL_SYNTHETIC_PREFIX);
    long long p;
    if (strncmp(arch, MODEL_SYNTHETIC_PREFIX, plen) != 0 ||
        util_parse_int(arch + plen, 1, (long long)MODEL_SYNTHETIC_MAX_PARAMS, &p) < 0)
        return 0;
    return (size_t)p;
}

void model_set_threads(int threads)
{
    (void)threads; /* one thread per model, always */
}

model_t *model_new(const model_spec_t *spec, uint64_t seed, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!spec || !memchr(spec->arch, '\0', sizeof spec->arch)) {
        util_seterr(err, errlen, "spec is NULL or its arch is not terminated");
        return NULL;
    }
    size_t numel = params_of(spec->arch);
    if (!numel) {
        util_seterr(err, errlen, "unknown arch \"%s\" (this build has only synthetic models: "
                    "\"" MODEL_SYNTHETIC_PREFIX "P\", P in [1, %zu])", spec->arch,
                    MODEL_SYNTHETIC_MAX_PARAMS);
        return NULL;
    }
    if (spec->in_channels < 1 || spec->height < 1 || spec->width < 1 || spec->classes < 2) {
        util_seterr(err, errlen, "spec %dx%dx%d with %d classes is out of range",
                    spec->in_channels, spec->height, spec->width, spec->classes);
        return NULL;
    }
    model_t *m = calloc(1, sizeof *m);
    if (!m) {
        util_seterr(err, errlen, "out of memory");
        return NULL;
    }
    m->spec = *spec;
    m->numel = numel;
    m->init_seed = seed ^ INIT_SALT;
    return m;
}

void model_destroy(model_t **m)
{
    if (!m || !*m) return;
    vecshare_put((const void **)&(*m)->base);
    free((*m)->own);
    free(*m);
    *m = NULL;
}

const char *model_errmsg(const model_t *m) { return m ? m->err : "model is NULL"; }
const model_spec_t *model_get_spec(const model_t *m) { return m ? &m->spec : NULL; }
size_t model_num_tensors(const model_t *m) { return m ? 1 : 0; }
size_t model_numel(const model_t *m) { return m ? m->numel : 0; }

const char *model_tensor_name(const model_t *m, size_t i)
{
    return m && i == 0 ? "weight" : NULL;
}

int model_tensor_shape(const model_t *m, size_t i, int64_t shape[MODEL_MAX_DIMS])
{
    if (!m || i != 0) return -1;
    shape[0] = (int64_t)m->numel;
    return 1;
}

int model_get_params(model_t *m, float *out, size_t n)
{
    if (!m) return -1;
    m->err[0] = '\0';
    if (!out || n != m->numel) return fail(m, "params: %zu floats given, model has %zu", n, m->numel);
    for (size_t i = 0; i < n; i++) out[i] = value(m, i);
    return 0;
}

int model_set_params(model_t *m, const float *in, size_t n)
{
    if (!m) return -1;
    m->err[0] = '\0';
    if (!in || n != m->numel) return fail(m, "params: %zu floats given, model has %zu", n, m->numel);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(in[i])) return fail(m, "params: value %zu is not finite", i);
    const float *shared = vecshare_get(in, n * sizeof *in);
    if (!shared) return fail(m, "out of memory");
    vecshare_put((const void **)&m->base);
    free(m->own);
    m->own = NULL;
    m->base = shared;
    m->step = 0;
    return 0;
}

static int check_data(model_t *m, const model_data_t *data, int allow_empty)
{
    if (!data) return fail(m, "data is NULL");
    if (data->n < 0 || (data->n == 0 && !allow_empty))
        return fail(m, "data->n = %lld: %s", (long long)data->n, data->n ? "negative" : "empty");
    if (data->n > 0 && !data->y) return fail(m, "data->y is NULL with n = %lld", (long long)data->n);
    for (int64_t i = 0; i < data->n; i++)
        if (data->y[i] < 0 || data->y[i] >= m->spec.classes)
            return fail(m, "label %d at index %lld is out of range [0, %d)", (int)data->y[i],
                        (long long)i, m->spec.classes);
    return 0; /* data->x is never read: it may be NULL */
}

int model_train(model_t *m, const model_data_t *data, const model_train_opts_t *opts,
                model_result_t *res)
{
    if (!m) return -1;
    m->err[0] = '\0';
    if (!opts) return fail(m, "opts is NULL");
    if (opts->epochs < 1) return fail(m, "opts->epochs = %d must be >= 1", opts->epochs);
    if (opts->batch < 1) return fail(m, "opts->batch = %d must be >= 1", opts->batch);
    if (!(opts->lr > 0) || !isfinite(opts->lr))
        return fail(m, "opts->lr = %g must be finite and > 0", (double)opts->lr);
    if (!(opts->momentum >= 0 && opts->momentum < 1))
        return fail(m, "opts->momentum = %g must be in [0, 1)", (double)opts->momentum);
    if (opts->progress_every < 0)
        return fail(m, "opts->progress_every = %lld must be >= 0", (long long)opts->progress_every);
    if (check_data(m, data, 0) < 0) return -1;
    if (m->step != 0) { /* trained before without a set since: make the values our own */
        float *own = m->own ? m->own : malloc(m->numel * sizeof *own);
        if (!own) return fail(m, "out of memory");
        for (size_t i = 0; i < m->numel; i++) own[i] = value(m, i);
        m->own = own;
        m->step = 0;
        vecshare_put((const void **)&m->base);
    }
    /* The images are not looked at, but the caller hears of progress as it
     * would from the real shim: after every progress_every images. */
    const int64_t every = opts->progress_every > 0 ? opts->progress_every : data->n;
    for (int epoch = 1; epoch <= opts->epochs; epoch++)
        for (int64_t done = 0; done < data->n;) {
            done = done + every < data->n ? done + every : data->n;
            if (opts->progress && opts->progress(opts->progress_user, epoch, done) != 0)
                return fail(m, "training stopped by caller");
        }
    double lr = opts->lr < 0.5 ? opts->lr : 0.5;
    m->step = (float)(1.0 - pow(1.0 - lr, opts->epochs));
    m->train_seed = opts->seed;
    if (res) {
        double d = distance(m);
        res->n = data->n;
        res->loss_sum = (double)data->n * log1p(exp(-3.0 * (1.0 - d))); /* as evaluated */
        res->correct = 0;
        res->train_loss = res->loss_sum / (double)data->n;
    }
    return 0;
}

int model_evaluate(model_t *m, const model_data_t *data, int batch, model_result_t *res,
                   float *scores)
{
    (void)batch;
    if (!m) return -1;
    m->err[0] = '\0';
    if (check_data(m, data, 1) < 0) return -1;
    /* Margin 3 (1 - d) on the true class plus a standard normal (the sum of
     * four uniforms, scaled): a random model scores like a coin. */
    double d = distance(m), margin = 3.0 * (d < 1 ? 1.0 - d : 0.0), loss = 0;
    int64_t correct = 0;
    for (int64_t j = 0; j < data->n; j++) {
        double g = 0;
        for (int k = 0; k < 4; k++) g += hashed(EVAL_SEED ^ (uint64_t)k, (size_t)j);
        double z = margin + g * sqrt(3.0), p_true = 1.0 / (1.0 + exp(-z));
        loss += log1p(exp(-z));
        correct += z > 0;
        if (scores)
            scores[j] = (float)(m->spec.classes == 2 ? (data->y[j] == 1 ? p_true : 1 - p_true)
                                                      : (z > 0 ? p_true : 1 - p_true));
    }
    if (res) {
        res->n = data->n;
        res->loss_sum = loss;
        res->correct = correct;
        res->train_loss = 0;
    }
    return 0;
}
