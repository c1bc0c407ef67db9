/*
 * test_model.c - unit tests for the LibTorch shim (model/model.h).
 *
 * The data is a tiny synthetic set: 64 grey 28x28 images whose label says
 * which corner holds a bright square, plus seeded noise. A CNN learns it in
 * a few epochs, which keeps the whole file to a few seconds on two cores.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

#define N_IMAGES 64
#define SIDE 28
#define PIXELS (SIDE * SIDE)

/* ---- fixtures ----------------------------------------------------------- */

typedef struct {
    float x[N_IMAGES * PIXELS];
    int32_t y[N_IMAGES];
    model_data_t data;
} dataset_t;

/* xorshift64*: a tiny deterministic generator, independent of libc's rand. */
static uint64_t next_u64(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static float next_unit(uint64_t *s)
{
    return (float)(next_u64(s) >> 40) / (float)(1 << 24);
}

/* Label 1: bright 8x8 square top-left; label 0: bottom-right. Noise on top. */
static void make_dataset(dataset_t *d)
{
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < N_IMAGES; i++) {
        int label = i % 2;
        float *img = d->x + (size_t)i * PIXELS;
        for (int r = 0; r < SIDE; r++) {
            for (int c = 0; c < SIDE; c++) {
                int in_square = label ? (r >= 3 && r < 11 && c >= 3 && c < 11)
                                      : (r >= 17 && r < 25 && c >= 17 && c < 25);
                img[r * SIDE + c] = (in_square ? 1.0f : 0.0f) + 0.3f * (next_unit(&s) - 0.5f);
            }
        }
        d->y[i] = label;
    }
    d->data.x = d->x;
    d->data.y = d->y;
    d->data.n = N_IMAGES;
}

static dataset_t *g_data;

static int setup_all(void **state)
{
    (void)state;
    model_set_threads(2);
    g_data = malloc(sizeof *g_data);
    if (g_data == NULL)
        return -1;
    make_dataset(g_data);
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    free(g_data);
    g_data = NULL;
    return 0;
}

static model_spec_t spec_of(const char *arch, int ch, int h, int w, int classes)
{
    model_spec_t s;
    memset(&s, 0, sizeof s);
    snprintf(s.arch, sizeof s.arch, "%s", arch);
    s.in_channels = ch;
    s.height = h;
    s.width = w;
    s.classes = classes;
    return s;
}

static model_t *new_cnn(uint64_t seed)
{
    model_spec_t s = spec_of("cnn", 1, SIDE, SIDE, 2);
    char err[MODEL_ERR_MAX];
    model_t *m = model_new(&s, seed, err, sizeof err);
    if (m == NULL)
        fail_msg("model_new: %s", err);
    return m;
}

static model_train_opts_t default_opts(void)
{
    model_train_opts_t o;
    memset(&o, 0, sizeof o);
    o.epochs = 1;
    o.batch = 16;
    o.lr = 0.05f;
    o.momentum = 0.9f;
    o.weight_decay = 1e-4f;
    o.seed = 7;
    return o;
}

static float *get_params(model_t *m)
{
    size_t n = model_numel(m);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    assert_int_equal(model_get_params(m, p, n), 0);
    return p;
}

/* ---- schema ------------------------------------------------------------- */

static void test_cnn_schema(void **state)
{
    (void)state;
    model_t *m = new_cnn(1);
    static const struct { const char *name; int dims; int64_t shape[4]; } want[] = {
        {"conv1.weight", 4, {32, 1, 5, 5}}, {"conv1.bias", 1, {32}},
        {"conv2.weight", 4, {64, 32, 5, 5}}, {"conv2.bias", 1, {64}},
        {"fc1.weight", 2, {512, 3136}},     {"fc1.bias", 1, {512}},
        {"fc2.weight", 2, {2, 512}},        {"fc2.bias", 1, {2}},
    };
    assert_int_equal(model_num_tensors(m), 8);
    for (size_t i = 0; i < 8; i++) {
        int64_t shape[MODEL_MAX_DIMS];
        assert_string_equal(model_tensor_name(m, i), want[i].name);
        assert_int_equal(model_tensor_shape(m, i, shape), want[i].dims);
        for (int d = 0; d < want[i].dims; d++)
            assert_int_equal(shape[d], want[i].shape[d]);
    }
    size_t expect = (32 * 1 * 5 * 5 + 32) + (64 * 32 * 5 * 5 + 64) + (3136 * 512 + 512) +
                    (512 * 2 + 2);
    assert_int_equal(model_numel(m), expect);
    assert_int_equal(expect, 1659266);

    int64_t shape[MODEL_MAX_DIMS];
    assert_int_equal(model_tensor_shape(m, 8, shape), -1);
    assert_null(model_tensor_name(m, 8));
    assert_string_equal(model_get_spec(m)->arch, "cnn");
    assert_int_equal(model_get_spec(m)->classes, 2);
    model_destroy(&m);
    assert_null(m);
}

static void test_resnet18_schema(void **state)
{
    (void)state;
    model_spec_t s = spec_of("resnet18", 3, 32, 32, 10);
    char err[MODEL_ERR_MAX];
    model_t *m = model_new(&s, 1, err, sizeof err);
    assert_non_null(m);

    /* 62 parameters (torchvision's count) + running mean/var of 20 BN layers */
    assert_int_equal(model_num_tensors(m), 62 + 40);
    /* torchvision resnet18(num_classes=10) has 11,181,642 parameters; the
     * 3x3 stem saves 64*3*(49-9) = 7,680; BN layers hold 4,800 channels,
     * each with a running mean and variance. */
    assert_int_equal(model_numel(m), 11181642 - 7680 + 2 * 4800);

    int64_t shape[MODEL_MAX_DIMS];
    assert_string_equal(model_tensor_name(m, 0), "conv1.weight");
    assert_int_equal(model_tensor_shape(m, 0, shape), 4);
    assert_int_equal(shape[0], 64);
    assert_int_equal(shape[1], 3);
    assert_int_equal(shape[2], 3);
    assert_int_equal(shape[3], 3);
    assert_string_equal(model_tensor_name(m, 60), "fc.weight");
    assert_int_equal(model_tensor_shape(m, 60, shape), 2);
    assert_int_equal(shape[0], 10);
    assert_int_equal(shape[1], 512);
    assert_string_equal(model_tensor_name(m, 61), "fc.bias");
    assert_string_equal(model_tensor_name(m, 62), "bn1.running_mean");
    assert_string_equal(model_tensor_name(m, 63), "bn1.running_var");

    int seen_downsample = 0;
    for (size_t i = 0; i < model_num_tensors(m); i++) {
        const char *name = model_tensor_name(m, i);
        assert_null(strstr(name, "num_batches_tracked"));
        if (strcmp(name, "layer2.0.downsample.0.weight") == 0)
            seen_downsample = 1;
    }
    assert_true(seen_downsample);
    model_destroy(&m);

    /* Large inputs get the 7x7 stride-2 stem. */
    s = spec_of("resnet18", 1, 64, 64, 2);
    m = model_new(&s, 1, err, sizeof err);
    assert_non_null(m);
    assert_int_equal(model_tensor_shape(m, 0, shape), 4);
    assert_int_equal(shape[2], 7);
    model_destroy(&m);
}

static void test_invalid_spec(void **state)
{
    (void)state;
    char err[MODEL_ERR_MAX];
    model_spec_t s = spec_of("nope", 1, 28, 28, 2);
    assert_null(model_new(&s, 1, err, sizeof err));
    assert_non_null(strstr(err, "nope"));

    s = spec_of("cnn", 1, 28, 28, 1);
    assert_null(model_new(&s, 1, err, sizeof err));
    assert_non_null(strstr(err, "classes"));

    s = spec_of("cnn", 0, 28, 28, 2);
    assert_null(model_new(&s, 1, err, sizeof err));
    assert_non_null(strstr(err, "in_channels"));

    s = spec_of("cnn", 1, 7, 28, 2);
    assert_null(model_new(&s, 1, err, sizeof err));
    assert_non_null(strstr(err, "height"));

    s = spec_of("cnn", 1, 28, 513, 2);
    assert_null(model_new(&s, 1, err, sizeof err));
    assert_non_null(strstr(err, "width"));

    memset(s.arch, 'a', sizeof s.arch); /* no NUL */
    assert_null(model_new(&s, 1, err, sizeof err));
    assert_non_null(strstr(err, "NUL"));

    assert_null(model_new(NULL, 1, err, sizeof err));
    assert_null(model_new(NULL, 1, NULL, 0)); /* no buffer: still no crash */
}

static void test_null_safety(void **state)
{
    (void)state;
    model_t *m = NULL;
    model_destroy(NULL);
    model_destroy(&m);
    assert_non_null(model_errmsg(NULL));
    assert_null(model_get_spec(NULL));
    assert_int_equal(model_num_tensors(NULL), 0);
    assert_int_equal(model_numel(NULL), 0);
    assert_null(model_tensor_name(NULL, 0));
    float f = 0;
    assert_int_equal(model_get_params(NULL, &f, 1), -1);
    assert_int_equal(model_set_params(NULL, &f, 1), -1);
    assert_int_equal(model_train(NULL, &g_data->data, NULL, NULL), -1);
    assert_int_equal(model_evaluate(NULL, &g_data->data, 0, NULL, NULL), -1);
}

/* ---- parameters --------------------------------------------------------- */

static void test_params_roundtrip(void **state)
{
    (void)state;
    model_t *m = new_cnn(3);
    size_t n = model_numel(m);
    float *a = get_params(m);
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(i % 1000) * 0.001f - 0.5f;
    assert_int_equal(model_set_params(m, a, n), 0);
    assert_string_equal(model_errmsg(m), "");
    float *b = get_params(m);
    assert_memory_equal(a, b, n * sizeof *a);
    free(a);
    free(b);
    model_destroy(&m);
}

static void test_set_params_rejects(void **state)
{
    (void)state;
    model_t *m = new_cnn(3);
    size_t n = model_numel(m);
    float *before = get_params(m);
    float *bad = get_params(m);

    assert_int_equal(model_set_params(m, bad, n - 1), -1);
    assert_non_null(strstr(model_errmsg(m), "1659265"));
    assert_int_equal(model_get_params(m, bad, n + 1), -1);
    assert_int_equal(model_set_params(m, NULL, n), -1);
    assert_int_equal(model_get_params(m, NULL, n), -1);

    bad[808] = NAN; /* conv1.bias[8]: the first 800 are conv1.weight */
    bad[n - 1] = 1.0f; /* a valid change that must not be applied either */
    assert_int_equal(model_set_params(m, bad, n), -1);
    assert_non_null(strstr(model_errmsg(m), "not finite"));
    assert_non_null(strstr(model_errmsg(m), "conv1.bias[8]"));
    bad[808] = INFINITY;
    assert_int_equal(model_set_params(m, bad, n), -1);
    assert_non_null(strstr(model_errmsg(m), "not finite"));

    float *after = get_params(m);
    assert_memory_equal(before, after, n * sizeof *before);
    free(before);
    free(bad);
    free(after);
    model_destroy(&m);
}

/* ---- training ----------------------------------------------------------- */

static void test_same_seed_is_bit_identical(void **state)
{
    (void)state;
    model_t *a = new_cnn(11), *b = new_cnn(11);
    size_t n = model_numel(a);
    float *pa = get_params(a), *pb = get_params(b);
    assert_memory_equal(pa, pb, n * sizeof *pa);
    free(pa);
    free(pb);

    model_train_opts_t o = default_opts();
    o.epochs = 2;
    o.batch = 10; /* 64 = 6*10 + 4: the partial batch is exercised too */
    assert_int_equal(model_train(a, &g_data->data, &o, NULL), 0);
    assert_int_equal(model_train(b, &g_data->data, &o, NULL), 0);
    pa = get_params(a);
    pb = get_params(b);
    assert_memory_equal(pa, pb, n * sizeof *pa);
    free(pa);
    free(pb);
    model_destroy(&a);
    model_destroy(&b);
}

/* Trains a fresh cnn (seed 11) once with o; returns its parameters and the
 * distance they moved from the start. */
static float *train_with(const model_train_opts_t *o, const model_data_t *d, double *moved)
{
    model_t *m = new_cnn(11);
    float *p0 = get_params(m);
    assert_int_equal(model_train(m, d, o, NULL), 0);
    float *p = get_params(m);
    double s = 0;
    for (size_t i = 0; i < model_numel(m); i++) s += ((double)p[i] - p0[i]) * ((double)p[i] - p0[i]);
    *moved = sqrt(s);
    free(p0);
    model_destroy(&m);
    return p;
}

/* The recipe's options (model.h): augmentation is seeded (the same seed gives
 * the same weights) and changes what is learnt; FedProx's term holds the
 * weights nearer their start the larger mu is; class-balanced loss weighs a
 * rare class up (another result than unweighted on skewed labels). Bad values
 * are refused. */
static void test_recipe_options(void **state)
{
    (void)state;
    model_t *probe = new_cnn(11);
    const size_t numel = model_numel(probe);
    model_destroy(&probe);
    model_train_opts_t o = default_opts();
    double d0, d1, d2, dp, dq;
    float *plain = train_with(&o, &g_data->data, &d0);
    o.augment = 1;
    float *aug1 = train_with(&o, &g_data->data, &d1), *aug2 = train_with(&o, &g_data->data, &d2);
    assert_memory_equal(aug1, aug2, numel * sizeof *aug1);
    assert_memory_not_equal(aug1, plain, numel * sizeof *aug1);
    o.augment = 0;
    o.prox_mu = 1.0f;
    float *prox = train_with(&o, &g_data->data, &dp);
    o.prox_mu = 20.0f;
    float *prox20 = train_with(&o, &g_data->data, &dq);
    assert_true(dp < d0);
    assert_true(dq < dp);
    o.prox_mu = 0;
    /* skewed labels: 56 of class 0, 8 of class 1 */
    static int32_t y[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) y[i] = i < 56 ? 0 : 1;
    model_data_t skew = {g_data->x, y, N_IMAGES};
    double e0, e1;
    float *unw = train_with(&o, &skew, &e0);
    o.class_balanced = 1;
    float *bal = train_with(&o, &skew, &e1);
    assert_memory_not_equal(unw, bal, numel * sizeof *unw);
    for (int i = 0; i < N_IMAGES; i++) y[i] = 0; /* a class absent: weight 0, still trains */
    float *one = train_with(&o, &skew, &e1);
    model_t *m = new_cnn(11);
    o.class_balanced = 2;
    assert_int_equal(model_train(m, &g_data->data, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "class_balanced"));
    o.class_balanced = 0;
    o.prox_mu = -1;
    assert_int_equal(model_train(m, &g_data->data, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "prox_mu"));
    model_destroy(&m);
    free(plain);
    free(aug1);
    free(aug2);
    free(prox);
    free(prox20);
    free(unw);
    free(bal);
    free(one);
}

static void test_different_seeds_differ(void **state)
{
    (void)state;
    model_t *a = new_cnn(11), *b = new_cnn(12);
    size_t n = model_numel(a);
    float *pa = get_params(a), *pb = get_params(b);
    assert_true(memcmp(pa, pb, n * sizeof *pa) != 0); /* init seed matters */
    assert_int_equal(model_set_params(b, pa, n), 0);  /* same start ... */
    free(pa);
    free(pb);

    model_train_opts_t o = default_opts();
    assert_int_equal(model_train(a, &g_data->data, &o, NULL), 0);
    o.seed = 8; /* ... different shuffling */
    assert_int_equal(model_train(b, &g_data->data, &o, NULL), 0);
    pa = get_params(a);
    pb = get_params(b);
    assert_true(memcmp(pa, pb, n * sizeof *pa) != 0);
    free(pa);
    free(pb);
    model_destroy(&a);
    model_destroy(&b);
}

static void test_training_learns(void **state)
{
    (void)state;
    model_t *m = new_cnn(5);
    model_result_t before, after, tr;
    float scores[N_IMAGES];
    assert_int_equal(model_evaluate(m, &g_data->data, 0, &before, NULL), 0);
    assert_int_equal(before.n, N_IMAGES);

    model_train_opts_t o = default_opts();
    o.epochs = 4;
    o.lr = 0.02f;
    assert_int_equal(model_train(m, &g_data->data, &o, &tr), 0);
    assert_int_equal(tr.n, N_IMAGES);
    assert_true(isfinite(tr.train_loss));
    assert_true(fabs(tr.train_loss - tr.loss_sum / N_IMAGES) < 1e-9);
    assert_true(tr.correct >= 0 && tr.correct <= N_IMAGES);

    assert_int_equal(model_evaluate(m, &g_data->data, 7, &after, scores), 0);
    assert_int_equal(after.n, N_IMAGES);
    assert_true(after.correct >= (int64_t)(0.9 * N_IMAGES));
    assert_true(after.loss_sum < before.loss_sum);

    /* Scores are P(class 1) for a binary task, consistent with arg-max. */
    int64_t agree = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        assert_true(scores[i] >= 0.0f && scores[i] <= 1.0f);
        agree += (scores[i] > 0.5f) == (g_data->y[i] == 1);
    }
    assert_true(agree >= after.correct - 1 && agree <= after.correct + 1);

    /* The batch size of evaluation does not change the answer (beyond
     * float rounding in the loss). */
    model_result_t again;
    assert_int_equal(model_evaluate(m, &g_data->data, 0, &again, NULL), 0);
    assert_int_equal(again.correct, after.correct);
    assert_true(fabs(again.loss_sum - after.loss_sum) < 1e-3 * (1 + after.loss_sum));
    model_destroy(&m);
}

static void test_evaluate_multiclass_scores(void **state)
{
    (void)state;
    model_spec_t s = spec_of("cnn", 1, SIDE, SIDE, 3);
    char err[MODEL_ERR_MAX];
    model_t *m = model_new(&s, 2, err, sizeof err);
    assert_non_null(m);
    float scores[N_IMAGES];
    model_result_t r;
    assert_int_equal(model_evaluate(m, &g_data->data, 0, &r, scores), 0);
    for (int i = 0; i < N_IMAGES; i++) /* max of 3 probabilities >= 1/3 */
        assert_true(scores[i] >= 1.0f / 3.0f - 1e-6f && scores[i] <= 1.0f);

    model_data_t empty = {NULL, NULL, 0};
    assert_int_equal(model_evaluate(m, &empty, 0, &r, NULL), 0);
    assert_int_equal(r.n, 0);
    model_destroy(&m);
}

/* A ResNet (with batch norm) trains deterministically too, and its running
 * statistics, part of the schema, move. */
static void test_resnet18_trains_deterministically(void **state)
{
    (void)state;
    model_spec_t s = spec_of("resnet18", 1, 16, 16, 2);
    char err[MODEL_ERR_MAX];
    model_t *a = model_new(&s, 4, err, sizeof err);
    model_t *b = model_new(&s, 4, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);

    /* 12 images 16x16 cut from the 28x28 set */
    static float x[12 * 16 * 16];
    for (int i = 0; i < 12; i++)
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++)
                x[(i * 16 + r) * 16 + c] = g_data->x[(size_t)i * PIXELS + (r + 6) * SIDE + c + 6];
    model_data_t d = {x, g_data->y, 12};

    size_t n = model_numel(a);
    float *init = get_params(a);
    model_train_opts_t o = default_opts();
    o.batch = 5; /* 5 + 5 + 2 */
    assert_int_equal(model_train(a, &d, &o, NULL), 0);
    assert_int_equal(model_train(b, &d, &o, NULL), 0);
    float *pa = get_params(a), *pb = get_params(b);
    assert_memory_equal(pa, pb, n * sizeof *pa);

    size_t rm = 0; /* bn1.running_mean */
    for (size_t i = 0, off = 0; i < model_num_tensors(a); i++) {
        int64_t shape[MODEL_MAX_DIMS];
        int dims = model_tensor_shape(a, i, shape);
        if (strcmp(model_tensor_name(a, i), "bn1.running_mean") == 0)
            rm = off;
        size_t len = 1;
        for (int k = 0; k < dims; k++)
            len *= (size_t)shape[k];
        off += len;
    }
    assert_true(rm > 0);
    assert_true(memcmp(init + rm, pa + rm, 64 * sizeof *pa) != 0);
    free(init);
    free(pa);
    free(pb);
    model_destroy(&a);
    model_destroy(&b);
}

/* ---- progress callback -------------------------------------------------- */

typedef struct {
    int calls;
    int last_epoch;
    int64_t last_done;
    int stop_at; /* stop on this call (1-based); 0 = never */
    int64_t seen[32];
} progress_log_t;

static int on_progress(void *user, int epoch, int64_t done)
{
    progress_log_t *log = user;
    if (log->calls < 32)
        log->seen[log->calls] = done;
    log->calls++;
    log->last_epoch = epoch;
    log->last_done = done;
    return log->stop_at != 0 && log->calls >= log->stop_at;
}

static void test_progress_callback(void **state)
{
    (void)state;
    model_t *m = new_cnn(9);
    model_train_opts_t o = default_opts();
    progress_log_t log;

    /* progress_every 0: once per epoch, at its end */
    memset(&log, 0, sizeof log);
    o.epochs = 2;
    o.progress = on_progress;
    o.progress_user = &log;
    assert_int_equal(model_train(m, &g_data->data, &o, NULL), 0);
    assert_int_equal(log.calls, 2);
    assert_int_equal(log.last_epoch, 2);
    assert_int_equal(log.last_done, N_IMAGES);

    /* every 24 images with batches of 16: after 32, 48, 64 (end of epoch) */
    memset(&log, 0, sizeof log);
    o.epochs = 1;
    o.progress_every = 24;
    assert_int_equal(model_train(m, &g_data->data, &o, NULL), 0);
    assert_int_equal(log.calls, 3);
    assert_int_equal(log.seen[0], 32);
    assert_int_equal(log.seen[1], 48);
    assert_int_equal(log.seen[2], 64);

    /* non-zero return stops training */
    memset(&log, 0, sizeof log);
    log.stop_at = 2;
    o.epochs = 3;
    o.progress_every = 16;
    model_result_t r = {0, 0, 0, 0};
    assert_int_equal(model_train(m, &g_data->data, &o, &r), -1);
    assert_string_equal(model_errmsg(m), "training stopped by caller");
    assert_int_equal(log.calls, 2);
    assert_int_equal(log.last_epoch, 1);
    assert_int_equal(r.n, 0); /* res is left alone on failure */
    model_destroy(&m);
}

/* ---- argument checking -------------------------------------------------- */

static void test_labels_out_of_range(void **state)
{
    (void)state;
    model_t *m = new_cnn(1);
    int32_t y[N_IMAGES];
    memcpy(y, g_data->y, sizeof y);
    y[17] = 2;
    model_data_t d = {g_data->x, y, N_IMAGES};
    model_train_opts_t o = default_opts();
    assert_int_equal(model_train(m, &d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "label 2 at index 17"));

    y[17] = -1;
    assert_int_equal(model_evaluate(m, &d, 0, NULL, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "label -1 at index 17"));
    model_destroy(&m);
}

static void test_bad_train_args(void **state)
{
    (void)state;
    model_t *m = new_cnn(1);
    const model_data_t *d = &g_data->data;
    model_train_opts_t o;

    o = default_opts(); o.epochs = 0;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "epochs"));
    o = default_opts(); o.batch = 0;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "batch"));
    o = default_opts(); o.lr = 0;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "lr"));
    o = default_opts(); o.lr = NAN;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    o = default_opts(); o.momentum = 1.0f;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "momentum"));
    o = default_opts(); o.weight_decay = -1e-3f;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "weight_decay"));
    o = default_opts(); o.progress_every = -1;
    assert_int_equal(model_train(m, d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "progress_every"));

    o = default_opts();
    assert_int_equal(model_train(m, NULL, &o, NULL), -1);
    assert_int_equal(model_train(m, d, NULL, NULL), -1);
    model_data_t empty = {NULL, NULL, 0};
    assert_int_equal(model_train(m, &empty, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "empty"));
    model_data_t no_x = {NULL, g_data->y, 4};
    assert_int_equal(model_train(m, &no_x, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "data->x"));
    model_data_t negative = {g_data->x, g_data->y, -3};
    assert_int_equal(model_evaluate(m, &negative, 0, NULL, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "negative"));
    model_destroy(&m);
}

static void test_divergence_is_reported(void **state)
{
    (void)state;
    model_t *m = new_cnn(1);
    static float x[N_IMAGES * PIXELS];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = g_data->x[i] * 1e30f; /* overflows the logits */
    model_data_t d = {x, g_data->y, N_IMAGES};
    model_train_opts_t o = default_opts();
    assert_int_equal(model_train(m, &d, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "diverged"));
    model_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnn_schema),
        cmocka_unit_test(test_resnet18_schema),
        cmocka_unit_test(test_invalid_spec),
        cmocka_unit_test(test_null_safety),
        cmocka_unit_test(test_params_roundtrip),
        cmocka_unit_test(test_set_params_rejects),
        cmocka_unit_test(test_same_seed_is_bit_identical),
        cmocka_unit_test(test_different_seeds_differ),
        cmocka_unit_test(test_recipe_options),
        cmocka_unit_test(test_training_learns),
        cmocka_unit_test(test_evaluate_multiclass_scores),
        cmocka_unit_test(test_resnet18_trains_deterministically),
        cmocka_unit_test(test_progress_callback),
        cmocka_unit_test(test_labels_out_of_range),
        cmocka_unit_test(test_bad_train_args),
        cmocka_unit_test(test_divergence_is_reported),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
