/*
 * test_model_synthetic.c - the plain-C backend of model.h (model/model_synthetic.c)
 * that protocol-only clients (medfed-swarm) link instead of LibTorch, and the
 * in-process sharing of read-only vectors it relies on (common/vecshare.c).
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
#include <unistd.h>

#include "common/vecshare.h"
#include "model/checkpoint.h"
#include "model/model_synthetic.h"

#define P 5000
#define N 300

static int32_t labels[N];

static model_t *new_model(size_t params, uint64_t seed)
{
    model_spec_t spec;
    char err[MODEL_ERR_MAX];
    assert_int_equal(model_synthetic_spec(&spec, params), 0);
    model_t *m = model_new(&spec, seed, err, sizeof err);
    assert_non_null(m);
    return m;
}

static model_train_opts_t opts_with(uint64_t seed)
{
    return (model_train_opts_t){.epochs = 2, .batch = 32, .lr = 0.02f, .momentum = 0.9f,
                                .seed = seed};
}

static void test_spec_and_schema(void **state)
{
    (void)state;
    model_spec_t spec;
    assert_int_equal(model_synthetic_spec(&spec, 1000000), 0);
    assert_string_equal(spec.arch, "synthetic-1000000");
    assert_int_equal(model_synthetic_spec(&spec, 0), -1);
    assert_int_equal(model_synthetic_spec(&spec, MODEL_SYNTHETIC_MAX_PARAMS + 1), -1);
    model_t *m = new_model(P, 1);
    assert_int_equal(model_numel(m), P);
    assert_int_equal(model_num_tensors(m), 1);
    assert_string_equal(model_tensor_name(m, 0), "weight");
    int64_t shape[MODEL_MAX_DIMS];
    assert_int_equal(model_tensor_shape(m, 0, shape), 1);
    assert_int_equal(shape[0], P);
    assert_int_equal(model_tensor_shape(m, 1, shape), -1);
    model_destroy(&m);
    assert_null(m);
    model_destroy(&m); /* NULL-safe */
}

static void test_unknown_arch_refused(void **state)
{
    (void)state;
    const char *bad[] = {"cnn", "resnet18", "synthetic-", "synthetic-0", "synthetic-12x",
                         "synthetic--5", "synthetic-999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        model_spec_t spec;
        model_synthetic_spec(&spec, 10);
        snprintf(spec.arch, sizeof spec.arch, "%s", bad[i]);
        char err[MODEL_ERR_MAX] = "";
        assert_null(model_new(&spec, 1, err, sizeof err));
        assert_non_null(strstr(err, "synthetic"));
    }
}

static void test_seeded_and_exact(void **state)
{
    (void)state;
    float *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    model_t *m1 = new_model(P, 7), *m2 = new_model(P, 7), *m3 = new_model(P, 8);
    assert_int_equal(model_get_params(m1, a, P), 0);
    assert_int_equal(model_get_params(m2, b, P), 0);
    assert_memory_equal(a, b, P * sizeof *a); /* same seed, same model */
    assert_int_equal(model_get_params(m3, b, P), 0);
    assert_memory_not_equal(a, b, P * sizeof *a);
    /* set then get gives the same bits */
    for (int i = 0; i < P; i++) a[i] = (float)i * 0.001f - 1.0f;
    assert_int_equal(model_set_params(m3, a, P), 0);
    assert_int_equal(model_get_params(m3, b, P), 0);
    assert_memory_equal(a, b, P * sizeof *a);
    /* non-finite values and wrong lengths are refused */
    a[17] = NAN;
    assert_int_equal(model_set_params(m3, a, P), -1);
    assert_non_null(strstr(model_errmsg(m3), "not finite"));
    assert_int_equal(model_get_params(m3, b, P - 1), -1);
    model_destroy(&m1);
    model_destroy(&m2);
    model_destroy(&m3);
    free(a);
    free(b);
}

/* The update of a site: the training seed decides it, bit for bit; images
 * are never read (x is NULL); each value moves by a small step. */
static void test_training_updates(void **state)
{
    (void)state;
    float *g = malloc(P * sizeof *g), *u1 = malloc(P * sizeof *u1), *u2 = malloc(P * sizeof *u2);
    assert_true(g && u1 && u2);
    model_data_t data = {.x = NULL, .y = labels, .n = N};
    model_t *m = new_model(P, 3);
    assert_int_equal(model_get_params(m, g, P), 0);
    model_train_opts_t o = opts_with(42);
    model_result_t res;
    assert_int_equal(model_train(m, &data, &o, &res), 0);
    assert_int_equal(res.n, N);
    assert_true(res.train_loss > 0);
    assert_int_equal(model_get_params(m, u1, P), 0);
    assert_int_equal(model_set_params(m, g, P), 0);
    assert_int_equal(model_train(m, &data, &o, NULL), 0);
    assert_int_equal(model_get_params(m, u2, P), 0);
    assert_memory_equal(u1, u2, P * sizeof *u1); /* same seed: same update */
    assert_int_equal(model_set_params(m, g, P), 0);
    o.seed = 43;
    assert_int_equal(model_train(m, &data, &o, NULL), 0);
    assert_int_equal(model_get_params(m, u2, P), 0);
    int differ = 0;
    for (int i = 0; i < P; i++) {
        differ += u1[i] != u2[i];
        assert_true(u1[i] != g[i]);
        assert_true(fabsf(u1[i] - g[i]) < 0.1f); /* well inside the default clip */
    }
    assert_true(differ > P * 9 / 10);
    /* Training twice without a set in between trains on from the first result. */
    assert_int_equal(model_set_params(m, g, P), 0);
    o.seed = 42;
    assert_int_equal(model_train(m, &data, &o, NULL), 0);
    assert_int_equal(model_train(m, &data, &o, NULL), 0);
    assert_int_equal(model_get_params(m, u2, P), 0);
    assert_memory_not_equal(u1, u2, P * sizeof *u1);
    model_destroy(&m);
    free(g);
    free(u1);
    free(u2);
}

/* Federated rounds of the synthetic task: averaged updates move the model
 * towards the target, and evaluation says so. */
static void test_rounds_improve_evaluation(void **state)
{
    (void)state;
    float *g = malloc(P * sizeof *g), *sum = malloc(P * sizeof *sum), *u = malloc(P * sizeof *u);
    float *scores = malloc(N * sizeof *scores);
    assert_true(g && sum && u && scores);
    model_data_t data = {.x = NULL, .y = labels, .n = N};
    model_t *m = new_model(P, 5);
    assert_int_equal(model_get_params(m, g, P), 0);
    model_result_t first, last;
    assert_int_equal(model_evaluate(m, &data, 64, &first, scores), 0);
    assert_int_equal(first.n, N);
    for (int j = 0; j < N; j++) assert_true(scores[j] >= 0 && scores[j] <= 1);
    for (int round = 0; round < 40; round++) {
        memset(sum, 0, P * sizeof *sum);
        for (int site = 0; site < 4; site++) {
            model_train_opts_t o = opts_with((uint64_t)(round * 10 + site));
            o.lr = 0.1f;
            assert_int_equal(model_set_params(m, g, P), 0);
            assert_int_equal(model_train(m, &data, &o, NULL), 0);
            assert_int_equal(model_get_params(m, u, P), 0);
            for (int i = 0; i < P; i++) sum[i] += (u[i] - g[i]) / 4;
        }
        for (int i = 0; i < P; i++) g[i] += sum[i];
    }
    assert_int_equal(model_set_params(m, g, P), 0);
    assert_int_equal(model_evaluate(m, &data, 64, &last, scores), 0);
    assert_true(last.loss_sum < first.loss_sum * 0.7);
    assert_true(last.correct > first.correct + N / 5);
    model_destroy(&m);
    free(g);
    free(sum);
    free(u);
    free(scores);
}

static int stop_at_second(void *user, int epoch, int64_t done)
{
    (void)epoch;
    (void)done;
    return ++*(int *)user >= 2;
}

static void test_progress_and_bad_args(void **state)
{
    (void)state;
    model_data_t data = {.x = NULL, .y = labels, .n = N};
    model_t *m = new_model(P, 1);
    int calls = 0;
    model_train_opts_t o = opts_with(1);
    o.progress = stop_at_second;
    o.progress_user = &calls;
    o.progress_every = 100;
    assert_int_equal(model_train(m, &data, &o, NULL), -1);
    assert_int_equal(calls, 2);
    assert_string_equal(model_errmsg(m), "training stopped by caller");
    o = opts_with(1);
    o.epochs = 0;
    assert_int_equal(model_train(m, &data, &o, NULL), -1);
    o = opts_with(1);
    int32_t bad[2] = {0, 2};
    model_data_t two = {.x = NULL, .y = bad, .n = 2};
    assert_int_equal(model_train(m, &two, &o, NULL), -1);
    assert_non_null(strstr(model_errmsg(m), "out of range"));
    model_data_t empty = {.x = NULL, .y = NULL, .n = 0};
    assert_int_equal(model_train(m, &empty, &o, NULL), -1);
    model_result_t res;
    assert_int_equal(model_evaluate(m, &empty, 64, &res, NULL), 0);
    assert_int_equal(res.n, 0);
    model_destroy(&m);
}

/* A thousand models holding the same parameters hold them once. */
static void test_shared_parameters(void **state)
{
    (void)state;
    float *g = malloc(P * sizeof *g);
    assert_non_null(g);
    for (int i = 0; i < P; i++) g[i] = (float)i;
    size_t before = vecshare_count();
    enum { MODELS = 1000 };
    static model_t *ms[MODELS];
    for (int k = 0; k < MODELS; k++) {
        ms[k] = new_model(P, (uint64_t)k);
        assert_int_equal(model_set_params(ms[k], g, P), 0);
    }
    assert_int_equal(vecshare_count(), before + 1);
    g[P - 1] += 1; /* one value differs: another copy, never the same one */
    assert_int_equal(model_set_params(ms[0], g, P), 0);
    assert_int_equal(vecshare_count(), before + 2);
    float *back = malloc(P * sizeof *back);
    assert_non_null(back);
    assert_int_equal(model_get_params(ms[0], back, P), 0);
    assert_memory_equal(back, g, P * sizeof *g);
    assert_int_equal(model_get_params(ms[1], back, P), 0);
    assert_true(back[P - 1] == (float)(P - 1));
    for (int k = 0; k < MODELS; k++) model_destroy(&ms[k]);
    assert_int_equal(vecshare_count(), before);
    free(g);
    free(back);
}

static void test_checkpoint_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/medfed-synth.XXXXXX", path[64], err[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/init.safetensors", dir);
    model_t *m = new_model(P, 9);
    assert_int_equal(checkpoint_save(m, path, NULL, 0, err, sizeof err), 0);
    model_t *back = checkpoint_load(path, err, sizeof err);
    assert_non_null(back);
    assert_string_equal(model_get_spec(back)->arch, "synthetic-5000");
    float *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b);
    assert_true(a && b);
    assert_int_equal(model_get_params(m, a, P), 0);
    assert_int_equal(model_get_params(back, b, P), 0);
    assert_memory_equal(a, b, P * sizeof *a);
    model_destroy(&m);
    model_destroy(&back);
    free(a);
    free(b);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    for (int j = 0; j < N; j++) labels[j] = j % 3 == 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_and_schema),
        cmocka_unit_test(test_unknown_arch_refused),
        cmocka_unit_test(test_seeded_and_exact),
        cmocka_unit_test(test_training_updates),
        cmocka_unit_test(test_rounds_improve_evaluation),
        cmocka_unit_test(test_progress_and_bad_args),
        cmocka_unit_test(test_shared_parameters),
        cmocka_unit_test(test_checkpoint_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
