/* FedAvg arithmetic against hand-computed cases, bad updates that must not
 * poison the sum, and the AUC helpers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "aggregation/fedavg.h"
#include "aggregation/metrics.h"

static const fedavg_opts_t plain = {.opt = SERVER_OPT_FEDAVG, .lr = 1.0};

/* Three sites, sample counts 1, 2, 5; deltas chosen so the weighted mean is
 * easy by hand: (1*a + 2*b + 5*c) / 8. */
static void test_weighted_mean_hand_computed(void **state)
{
    (void)state;
    fedavg_t *f = fedavg_new(3, &plain);
    char err[128];
    const float a[3] = {8, 0, -8}, b[3] = {4, 4, 0}, c[3] = {0, 1.6f, 1.6f};
    fedavg_begin(f);
    assert_int_equal(fedavg_add(f, (const uint8_t *)a, sizeof a, 1, err, sizeof err), 0);
    assert_int_equal(fedavg_add(f, (const uint8_t *)b, sizeof b, 2, err, sizeof err), 0);
    assert_int_equal(fedavg_add(f, (const uint8_t *)c, sizeof c, 5, err, sizeof err), 0);
    assert_int_equal(fedavg_weight(f), 8);
    assert_int_equal(fedavg_count(f), 3);
    float g[3] = {1, 1, 1};
    assert_int_equal(fedavg_apply(f, g, err, sizeof err), 0);
    /* x: (8 + 8 + 0)/8 = 2; y: (0 + 8 + 8)/8 = 2; z: (-8 + 0 + 8)/8 = 0 */
    assert_float_equal(g[0], 3.0f, 1e-6);
    assert_float_equal(g[1], 3.0f, 1e-6);
    assert_float_equal(g[2], 1.0f, 1e-6);
    fedavg_destroy(&f);
    assert_null(f);
    fedavg_destroy(&f); /* NULL-safe */
}

static void test_unaligned_input(void **state)
{
    (void)state;
    fedavg_t *f = fedavg_new(2, &plain);
    char err[128];
    uint8_t raw[1 + 8];
    const float v[2] = {0.5f, -0.25f};
    memcpy(raw + 1, v, sizeof v); /* as a msgpack bin sits in a frame */
    fedavg_begin(f);
    assert_int_equal(fedavg_add(f, raw + 1, 8, 4, err, sizeof err), 0);
    float g[2] = {0, 0};
    assert_int_equal(fedavg_apply(f, g, err, sizeof err), 0);
    assert_float_equal(g[0], 0.5f, 1e-7);
    assert_float_equal(g[1], -0.25f, 1e-7);
    fedavg_destroy(&f);
}

static void test_bad_updates_change_nothing(void **state)
{
    (void)state;
    fedavg_t *f = fedavg_new(3, &plain);
    char err[128];
    const float good[3] = {1, 2, 3};
    float bad[3] = {1, NAN, 3};
    fedavg_begin(f);
    assert_int_equal(fedavg_add(f, (const uint8_t *)good, sizeof good, 10, err, sizeof err), 0);

    assert_int_equal(fedavg_add(f, (const uint8_t *)good, 8, 10, err, sizeof err), -1);
    assert_non_null(strstr(err, "8 bytes, model needs 12"));
    assert_int_equal(fedavg_add(f, (const uint8_t *)bad, sizeof bad, 10, err, sizeof err), -1);
    assert_non_null(strstr(err, "value 1 is not finite"));
    bad[1] = INFINITY;
    assert_int_equal(fedavg_add(f, (const uint8_t *)bad, sizeof bad, 10, err, sizeof err), -1);
    assert_int_equal(fedavg_add(f, (const uint8_t *)good, sizeof good, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "sample count"));
    assert_int_equal(fedavg_add(f, (const uint8_t *)good, sizeof good, -5, err, sizeof err), -1);

    /* Too long: another model's update (or a probe), never truncated. */
    const float longer[4] = {1, 2, 3, 4};
    assert_int_equal(fedavg_add(f, (const uint8_t *)longer, sizeof longer, 10, err, sizeof err), -1);
    assert_non_null(strstr(err, "16 bytes, model needs 12"));
    /* Huge but finite: 3e38 * n would overflow the average into infinity. */
    float huge[3] = {1, 3e38f, 3};
    assert_int_equal(fedavg_add(f, (const uint8_t *)huge, sizeof huge, 10, err, sizeof err), -1);
    assert_non_null(strstr(err, "value 1 is"));
    huge[1] = -2 * (float)FEDAVG_MAX_ABS;
    assert_int_equal(fedavg_add(f, (const uint8_t *)huge, sizeof huge, 10, err, sizeof err), -1);

    assert_int_equal(fedavg_count(f), 1);
    assert_int_equal(fedavg_weight(f), 10);
    float g[3] = {0, 0, 0};
    assert_int_equal(fedavg_apply(f, g, err, sizeof err), 0);
    assert_float_equal(g[0], 1, 1e-6);
    assert_float_equal(g[1], 2, 1e-6);
    assert_float_equal(g[2], 3, 1e-6);
    fedavg_destroy(&f);
}

/* The largest accepted value still averages to a finite model. */
static void test_largest_value_accepted(void **state)
{
    (void)state;
    fedavg_t *f = fedavg_new(1, &plain);
    char err[128];
    const float top = (float)FEDAVG_MAX_ABS;
    fedavg_begin(f);
    assert_int_equal(fedavg_add(f, (const uint8_t *)&top, 4, (int64_t)1 << 40, err, sizeof err), 0);
    float g = 0;
    assert_int_equal(fedavg_apply(f, &g, err, sizeof err), 0);
    assert_float_equal(g, FEDAVG_MAX_ABS, 1e-6);
    fedavg_destroy(&f);
}

static void test_empty_round_leaves_model(void **state)
{
    (void)state;
    fedavg_t *f = fedavg_new(2, &plain);
    char err[128];
    float g[2] = {7, 8};
    fedavg_begin(f);
    assert_int_equal(fedavg_apply(f, g, err, sizeof err), -1);
    assert_true(g[0] == 7 && g[1] == 8);
    fedavg_destroy(&f);
}

static void test_begin_clears_and_server_lr(void **state)
{
    (void)state;
    fedavg_opts_t o = {.opt = SERVER_OPT_FEDAVG, .lr = 0.5};
    fedavg_t *f = fedavg_new(1, &o);
    char err[128];
    const float d = 4;
    float g = 0;
    fedavg_begin(f);
    fedavg_add(f, (const uint8_t *)&d, 4, 3, err, sizeof err);
    fedavg_apply(f, &g, err, sizeof err);
    assert_float_equal(g, 2.0f, 1e-6);
    fedavg_begin(f); /* second round: previous sum gone */
    const float d2 = -2;
    fedavg_add(f, (const uint8_t *)&d2, 4, 1, err, sizeof err);
    fedavg_apply(f, &g, err, sizeof err);
    assert_float_equal(g, 1.0f, 1e-6);
    fedavg_destroy(&f);
}

static void test_fedavgm_momentum(void **state)
{
    (void)state;
    fedavg_opts_t o = {.opt = SERVER_OPT_FEDAVGM, .lr = 1.0, .momentum = 0.5};
    fedavg_t *f = fedavg_new(1, &o);
    char err[128];
    const float d = 1;
    float g = 0;
    for (int r = 0; r < 2; r++) {
        fedavg_begin(f);
        fedavg_add(f, (const uint8_t *)&d, 4, 1, err, sizeof err);
        fedavg_apply(f, &g, err, sizeof err);
    }
    /* v1 = 1, g = 1; v2 = 0.5 + 1 = 1.5, g = 2.5 */
    assert_float_equal(g, 2.5f, 1e-6);
    server_opt_t so;
    assert_int_equal(fedavg_opt_parse("fedavgm", &so), 0);
    assert_int_equal(so, SERVER_OPT_FEDAVGM);
    assert_int_equal(fedavg_opt_parse("fedadam?", &so), -1);
    assert_int_equal(fedavg_state_count(f), 1);
    fedavg_destroy(&f);
}

/* Reddi et al. 2021, Algorithm 2, by hand: eta 0.1, beta1 0.9, beta2 0.99,
 * tau 0.1 (v starts at tau^2 = 0.01), one element from g = 1, mean updates
 * 0.3, -0.2, 0.01 over three rounds. m: 0.03, 0.007, 0.0073 each time
 * (0.9 * 0.007 + 0.1 * 0.01). v, by optimiser:
 *   fedadagrad  v + d^2                      0.1, 0.14, 0.1401
 *   fedadam     0.99 v + 0.01 d^2            0.0108, 0.011092, 0.01098208
 *   fedyogi     v - 0.01 d^2 sign(v - d^2)   0.0109, 0.0113, 0.011299
 * (yogi's third round has v > d^2: it shrinks v, where adam's decay would
 * take 0.99 v). Each round g += 0.1 m / (sqrt(v) + 0.1). The two mean-update
 * paths (plaintext sum, decoded secure mean) take the same step. */
static void run_adaptive(server_opt_t opt, const double v[3], int secure)
{
    fedavg_opts_t o = {.opt = opt, .eta = 0.1, .beta1 = 0.9, .beta2 = 0.99, .tau = 0.1};
    fedavg_t *f = fedavg_new(1, &o);
    assert_non_null(f);
    assert_int_equal(fedavg_state_count(f), 2);
    assert_float_equal(fedavg_state(f, 1)[0], 0.01, 1e-15);
    const float d[3] = {0.3f, -0.2f, 0.01f};
    const double m[3] = {0.03, 0.007, 0.0073};
    char err[128];
    float g = 1;
    double want = 1;
    for (int r = 0; r < 3; r++) {
        fedavg_begin(f);
        if (secure) {
            fedavg_apply_mean(f, &g, &d[r]);
        } else {
            assert_int_equal(fedavg_add(f, (const uint8_t *)&d[r], 4, 3, err, sizeof err), 0);
            assert_int_equal(fedavg_apply(f, &g, err, sizeof err), 0);
        }
        want += 0.1 * m[r] / (sqrt(v[r]) + 0.1);
        assert_float_equal(fedavg_state(f, 0)[0], m[r], 1e-7);
        assert_float_equal(fedavg_state(f, 1)[0], v[r], 1e-8);
        assert_float_equal(g, want, 1e-6);
    }
    fedavg_destroy(&f);
}

static void test_adaptive_optimisers(void **state)
{
    (void)state;
    const double adagrad[3] = {0.1, 0.14, 0.1401}, adam[3] = {0.0108, 0.011092, 0.01098208},
                 yogi[3] = {0.0109, 0.0113, 0.011299};
    for (int secure = 0; secure < 2; secure++) {
        run_adaptive(SERVER_OPT_FEDADAGRAD, adagrad, secure);
        run_adaptive(SERVER_OPT_FEDADAM, adam, secure);
        run_adaptive(SERVER_OPT_FEDYOGI, yogi, secure);
    }
    /* round 1 by hand for fedadam: 1 + 0.1 * 0.03 / (sqrt(0.0108) + 0.1) */
    fedavg_opts_t o = {.opt = SERVER_OPT_FEDADAM, .eta = 0.1, .beta1 = 0.9, .beta2 = 0.99, .tau = 0.1};
    fedavg_t *f = fedavg_new(1, &o);
    float g = 1;
    const float d = 0.3f;
    fedavg_begin(f);
    fedavg_apply_mean(f, &g, &d);
    assert_float_equal(g, 1.0147114f, 1e-6);
    fedavg_destroy(&f);
    server_opt_t so;
    const char *names[] = {"fedavg", "fedavgm", "fedadagrad", "fedyogi", "fedadam"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fedavg_opt_parse(names[i], &so), 0);
        assert_string_equal(fedavg_opt_name(so), names[i]);
    }
    fedavg_opts_t dflt = {.opt = SERVER_OPT_FEDAVG};
    fedavg_opts_adaptive_defaults(&dflt);
    assert_float_equal(dflt.beta1, 0.9, 0);
    assert_float_equal(dflt.beta2, 0.99, 0);
}

/* The schedules by hand: lr 0.1 over 20 rounds. */
static void test_lr_schedules(void **state)
{
    (void)state;
    lr_sched_t c = {.kind = LR_CONSTANT}, st = {.kind = LR_STEP, .step_rounds = 5, .gamma = 0.5},
               cs = {.kind = LR_COSINE, .lr_min = 0.001};
    assert_float_equal(fedavg_lr_at(&c, 0.1, 17, 20), 0.1, 1e-15);
    assert_float_equal(fedavg_lr_at(&st, 0.1, 1, 20), 0.1, 1e-15);
    assert_float_equal(fedavg_lr_at(&st, 0.1, 5, 20), 0.1, 1e-15);
    assert_float_equal(fedavg_lr_at(&st, 0.1, 6, 20), 0.05, 1e-15);
    assert_float_equal(fedavg_lr_at(&st, 0.1, 16, 20), 0.0125, 1e-15);
    assert_float_equal(fedavg_lr_at(&cs, 0.1, 1, 20), 0.1, 1e-15);
    /* round 11: (r - 1) / R = 1/2, cos = 0: halfway, 0.001 + 0.099 / 2 */
    assert_float_equal(fedavg_lr_at(&cs, 0.1, 11, 20), 0.0505, 1e-12);
    /* round 20: 0.001 + 0.099 * (1 + cos(0.95 pi)) / 2 */
    assert_float_equal(fedavg_lr_at(&cs, 0.1, 20, 20), 0.001 + 0.099 * (1 + cos(0.95 * M_PI)) / 2, 1e-12);
    assert_true(fedavg_lr_at(&cs, 0.1, 40, 20) >= 0.001); /* past the horizon: the floor */
    lr_schedule_t k;
    assert_int_equal(fedavg_lr_schedule_parse("cosine", &k), 0);
    assert_int_equal(k, LR_COSINE);
    assert_int_equal(fedavg_lr_schedule_parse("linear", &k), -1);
}

static void test_auc_exact(void **state)
{
    (void)state;
    const float s[6] = {0.1f, 0.4f, 0.35f, 0.8f, 0.5f, 0.5f};
    const int32_t y[6] = {0, 0, 1, 1, 1, 0};
    /* positives {0.35, 0.8, 0.5}, negatives {0.1, 0.4, 0.5}: pairs won
     * 0.35: 1; 0.8: 3; 0.5: 2 + one tie (0.5) -> 6.5 / 9 */
    assert_float_equal(metrics_auc(s, y, 6), 6.5 / 9.0, 1e-12);
    const int32_t all_pos[2] = {1, 1};
    assert_true(isnan(metrics_auc(s, all_pos, 2)));
}

static void test_auc_from_histograms_matches_exact(void **state)
{
    (void)state;
    enum { N = 400, BINS = 1000 };
    float s[N];
    int32_t y[N];
    for (int i = 0; i < N; i++) {
        y[i] = (i * 7) % 3 == 0;
        s[i] = (float)((i * 37) % 1000) / 1000.0f * 0.7f + (y[i] ? 0.3f : 0.0f);
    }
    /* Two "sites" pool their histograms. */
    uint32_t neg[2][BINS] = {{0}}, pos[2][BINS] = {{0}};
    metrics_hist_add(neg[0], pos[0], BINS, s, y, N / 2);
    metrics_hist_add(neg[1], pos[1], BINS, s + N / 2, y + N / 2, N / 2);
    uint64_t pn[BINS], pp[BINS];
    for (int b = 0; b < BINS; b++) {
        pn[b] = (uint64_t)neg[0][b] + neg[1][b];
        pp[b] = (uint64_t)pos[0][b] + pos[1][b];
    }
    double exact = metrics_auc(s, y, N), pooled = metrics_auc_hist(pn, pp, BINS);
    assert_true(exact > 0.6 && exact < 1.0);
    assert_float_equal(pooled, exact, 2e-3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighted_mean_hand_computed),
        cmocka_unit_test(test_unaligned_input),
        cmocka_unit_test(test_bad_updates_change_nothing),
        cmocka_unit_test(test_largest_value_accepted),
        cmocka_unit_test(test_empty_round_leaves_model),
        cmocka_unit_test(test_begin_clears_and_server_lr),
        cmocka_unit_test(test_fedavgm_momentum),
        cmocka_unit_test(test_adaptive_optimisers),
        cmocka_unit_test(test_lr_schedules),
        cmocka_unit_test(test_auc_exact),
        cmocka_unit_test(test_auc_from_histograms_matches_exact),
    };
    return cmocka_run_group_tests_name("fedavg", tests, NULL, NULL);
}
