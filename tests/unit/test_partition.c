/*
 * test_partition.c - common/rng and sim/partition.
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

#include "common/rng.h"
#include "sim/partition.h"

#define N 1000
#define SITES 10
#define MAXC 16

/* ---- rng ----------------------------------------------------------------- */

static void test_rng_deterministic(void **state)
{
    (void)state;
    rng_t a, b, c;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rng_next(&a);
        assert_true(x == rng_next(&b));
        differ |= x != rng_next(&c);
    }
    assert_true(differ);
    /* Seed 0 must not give the all-zero (stuck) state. */
    rng_seed(&a, 0);
    assert_false(a.s[0] == 0 && a.s[1] == 0 && a.s[2] == 0 && a.s[3] == 0);
    assert_true(rng_next(&a) != rng_next(&a));
}

static void test_rng_uniform_range(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 7);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.01);
}

static void test_rng_below(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 1);
    assert_int_equal(rng_below(&r, 1), 0);
    int hist[7] = { 0 };
    for (int i = 0; i < 70000; i++) {
        uint64_t x = rng_below(&r, 7);
        assert_true(x < 7);
        hist[x]++;
    }
    for (int i = 0; i < 7; i++)
        assert_in_range(hist[i], 9000, 11000);
    /* Bounds where rejection matters most. */
    const uint64_t big[] = { (UINT64_C(1) << 63) + 1, UINT64_MAX, 3, 1000003 };
    for (size_t k = 0; k < sizeof big / sizeof big[0]; k++)
        for (int i = 0; i < 1000; i++)
            assert_true(rng_below(&r, big[k]) < big[k]);
}

static void test_rng_normal(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 3);
    double s = 0, s2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = rng_normal(&r);
        assert_true(isfinite(x));
        s += x;
        s2 += x * x;
    }
    assert_true(fabs(s / n) < 0.02);
    assert_true(fabs(s2 / n - 1.0) < 0.03);
}

static void test_rng_gamma_mean(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 11);
    const double shapes[] = { 0.1, 0.3, 0.5, 1.0, 2.5, 7.0 };
    const int n = 200000;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        double a = shapes[k], s = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            double g = rng_gamma(&r, a);
            assert_true(g >= 0.0 && isfinite(g));
            s += g;
            s2 += g * g;
        }
        double mean = s / n, var = s2 / n - mean * mean;
        /* Mean and variance of Gamma(a, 1) are both a; the standard error of
         * the mean is sqrt(a / n), so 6 of those is a safe bound. */
        assert_true(fabs(mean - a) < 6 * sqrt(a / n));
        assert_true(fabs(var - a) < 0.1 * a);
    }
    assert_true(isnan(rng_gamma(&r, 0.0)));
    assert_true(isnan(rng_gamma(&r, -1.0)));
}

static void test_rng_shuffle(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 5);
    int64_t a[100];
    for (int i = 0; i < 100; i++)
        a[i] = i;
    rng_shuffle_i64(&r, a, 100);
    int seen[100] = { 0 }, moved = 0;
    for (int i = 0; i < 100; i++) {
        assert_in_range(a[i], 0, 99);
        seen[a[i]]++;
        moved += a[i] != i;
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > 80);
    rng_shuffle_i64(&r, a, 0);
    rng_shuffle_i64(&r, a, 1);
}

/* ---- partition helpers --------------------------------------------------- */

/* Labels 0..classes-1 in a scrambled but fixed pattern; for 2 classes a
 * 30/70 imbalance like PneumoniaMNIST's. */
static void make_labels(uint8_t *labels, int64_t n, int classes)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = (uint64_t)i * UINT64_C(0x9e3779b97f4a7c15);
        h ^= h >> 29;
        if (classes == 2)
            labels[i] = (uint8_t)(h % 10 < 3 ? 0 : 1);
        else
            labels[i] = (uint8_t)(i % classes);
    }
}

typedef struct {
    int64_t size[SITES];
    int64_t count[SITES][MAXC];
} tally_t;

/* Checks the basic invariant (each sample in exactly one site, in range) and
 * returns per-site label counts. */
static void tally(const uint8_t *labels, const int32_t *site_of, int64_t n, int classes,
                  tally_t *t)
{
    memset(t, 0, sizeof *t);
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_in_range(site_of[i], 0, SITES - 1);
        assert_true(labels[i] < classes);
        t->size[site_of[i]]++;
        t->count[site_of[i]][labels[i]]++;
    }
    for (int s = 0; s < SITES; s++)
        total += t->size[s];
    assert_int_equal(total, n);
}

/* Mean over sites of the largest single label's share of the site. */
static double mean_max_share(const tally_t *t, int classes)
{
    double acc = 0;
    for (int s = 0; s < SITES; s++) {
        int64_t mx = 0;
        for (int c = 0; c < classes; c++)
            if (t->count[s][c] > mx)
                mx = t->count[s][c];
        acc += t->size[s] ? (double)mx / (double)t->size[s] : 1.0;
    }
    return acc / SITES;
}

static void assign_ok(const char *spec_text, const uint8_t *labels, int classes, int64_t min,
                      uint64_t seed, int32_t *site_of)
{
    part_spec_t spec;
    char err[256] = "";
    assert_int_equal(partition_parse(spec_text, &spec, err, sizeof err), 0);
    int rc = partition_assign(&spec, labels, N, classes, SITES, min, seed, site_of, err,
                              sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", spec_text, err);
}

/* ---- partition ----------------------------------------------------------- */

static void test_iid(void **state)
{
    (void)state;
    const int cls[] = { 2, 10 };
    for (int k = 0; k < 2; k++) {
        uint8_t labels[N];
        int32_t site_of[N];
        tally_t t;
        int classes = cls[k];
        make_labels(labels, N, classes);
        assign_ok("iid", labels, classes, 0, 1, site_of);
        tally(labels, site_of, N, classes, &t);
        int64_t lo = N, hi = 0, global[MAXC] = { 0 };
        for (int64_t i = 0; i < N; i++)
            global[labels[i]]++;
        for (int s = 0; s < SITES; s++) {
            lo = t.size[s] < lo ? t.size[s] : lo;
            hi = t.size[s] > hi ? t.size[s] : hi;
            /* Label proportions follow the global ones, loosely. */
            for (int c = 0; c < classes; c++) {
                double share = (double)t.count[s][c] / (double)t.size[s];
                double want = (double)global[c] / N;
                assert_true(fabs(share - want) < 0.15);
            }
        }
        assert_true(hi - lo <= 1);
    }
}

static void test_dirichlet(void **state)
{
    (void)state;
    uint8_t labels[N];
    int32_t site_of[N], iid_site[N];
    tally_t t, ti;
    make_labels(labels, N, 10);
    assign_ok("dirichlet:0.1", labels, 10, 5, 1, site_of);
    tally(labels, site_of, N, 10, &t);
    for (int s = 0; s < SITES; s++)
        assert_true(t.size[s] >= 5);
    assign_ok("iid", labels, 10, 0, 1, iid_site);
    tally(labels, iid_site, N, 10, &ti);
    double skew = mean_max_share(&t, 10), base = mean_max_share(&ti, 10);
    /* iid sites are ~10% per label (max share ~0.15); alpha 0.1 concentrates
     * each site on one or two labels. */
    assert_true(base < 0.25);
    assert_true(skew > base + 0.25);

    /* Two classes, imbalanced, as in the main simulation. */
    make_labels(labels, N, 2);
    assign_ok("dirichlet:0.5", labels, 2, 20, 9, site_of);
    tally(labels, site_of, N, 2, &t);
    for (int s = 0; s < SITES; s++)
        assert_true(t.size[s] >= 20);
    assign_ok("iid", labels, 2, 0, 9, iid_site);
    tally(labels, iid_site, N, 2, &ti);
    assert_true(mean_max_share(&t, 2) > mean_max_share(&ti, 2) + 0.05);

    /* A huge alpha is close to iid but still a valid partition. */
    assign_ok("dirichlet:1000", labels, 2, 50, 9, site_of);
    tally(labels, site_of, N, 2, &t);
}

static void test_dirichlet_impossible(void **state)
{
    (void)state;
    uint8_t labels[N];
    int32_t site_of[N];
    part_spec_t spec;
    char err[256] = "";
    make_labels(labels, N, 2);
    for (int64_t i = 0; i < N; i++)
        site_of[i] = -7;
    /* alpha 0.001 puts each class on ~1 site: 10 sites can never all be fed. */
    assert_int_equal(partition_parse("dirichlet:0.001", &spec, err, sizeof err), 0);
    assert_int_equal(partition_assign(&spec, labels, N, 2, SITES, 1, 1, site_of, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "1000 tries"));
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(site_of[i], -7); /* untouched on failure */
    /* More than a perfect split can give. */
    assert_int_equal(partition_parse("dirichlet:0.5", &spec, err, sizeof err), 0);
    assert_int_equal(partition_assign(&spec, labels, N, 2, SITES, 101, 1, site_of, err,
                                      sizeof err),
                     -1);
    assert_non_null(strstr(err, "101"));
}

static void test_classes(void **state)
{
    (void)state;
    const struct { int classes, k; } cases[] = { { 10, 1 }, { 10, 2 }, { 10, 3 }, { 2, 1 },
                                                 { 2, 2 }, { 7, 1 } };
    for (size_t q = 0; q < sizeof cases / sizeof cases[0]; q++) {
        int classes = cases[q].classes, k = cases[q].k;
        uint8_t labels[N];
        int32_t site_of[N];
        tally_t t;
        char spec_text[32];
        snprintf(spec_text, sizeof spec_text, "classes:%d", k);
        make_labels(labels, N, classes);
        assign_ok(spec_text, labels, classes, 1, 4, site_of);
        tally(labels, site_of, N, classes, &t);
        int held[MAXC] = { 0 };
        for (int s = 0; s < SITES; s++) {
            int distinct = 0;
            for (int c = 0; c < classes; c++) {
                if (t.count[s][c] > 0) {
                    distinct++;
                    held[c]++;
                    /* Exactly the round-robin classes. */
                    int expected = 0;
                    for (int j = 0; j < k; j++)
                        expected |= (s * k + j) % classes == c;
                    assert_true(expected);
                }
            }
            assert_true(distinct <= k);
            assert_true(t.size[s] > 0);
        }
        for (int c = 0; c < classes; c++)
            assert_true(held[c] > 0);
        /* A class's samples are split evenly among its holders. */
        for (int c = 0; c < classes; c++) {
            int64_t lo = N, hi = 0;
            for (int s = 0; s < SITES; s++) {
                int holds = 0;
                for (int j = 0; j < k; j++)
                    holds |= (s * k + j) % classes == c;
                if (!holds)
                    continue;
                lo = t.count[s][c] < lo ? t.count[s][c] : lo;
                hi = t.count[s][c] > hi ? t.count[s][c] : hi;
            }
            assert_true(hi - lo <= 1);
        }
    }
}

static void test_seeds(void **state)
{
    (void)state;
    const char *kinds[] = { "iid", "dirichlet:0.5", "classes:2" };
    uint8_t labels[N];
    make_labels(labels, N, 10);
    for (size_t q = 0; q < 3; q++) {
        int32_t a[N], b[N], c[N];
        assign_ok(kinds[q], labels, 10, 1, 77, a);
        assign_ok(kinds[q], labels, 10, 1, 77, b);
        assign_ok(kinds[q], labels, 10, 1, 78, c);
        assert_memory_equal(a, b, sizeof a);
        assert_memory_not_equal(a, c, sizeof a);
    }
}

static void test_assign_errors(void **state)
{
    (void)state;
    uint8_t labels[N];
    int32_t site_of[N];
    char err[256];
    part_spec_t iid = { PART_IID, 0, 0 }, cls = { PART_CLASSES, 0, 3 };
    part_spec_t dir = { PART_DIRICHLET, 0.0, 0 };
    make_labels(labels, N, 10);

    assert_int_equal(partition_assign(&iid, labels, 5, 10, 6, 0, 1, site_of, err, sizeof err), -1);
    assert_non_null(strstr(err, "6 sites"));
    assert_int_equal(partition_assign(&iid, labels, N, 10, 0, 0, 1, site_of, err, sizeof err), -1);
    assert_int_equal(partition_assign(&dir, labels, N, 10, SITES, 0, 1, site_of, err, sizeof err),
                     -1);
    dir.alpha = NAN;
    assert_int_equal(partition_assign(&dir, labels, N, 10, SITES, 0, 1, site_of, err, sizeof err),
                     -1);
    dir.alpha = INFINITY;
    assert_int_equal(partition_assign(&dir, labels, N, 10, SITES, 0, 1, site_of, err, sizeof err),
                     -1);
    /* K > classes; sites*K < classes. */
    cls.k = 11;
    assert_int_equal(partition_assign(&cls, labels, N, 10, SITES, 0, 1, site_of, err, sizeof err),
                     -1);
    cls.k = 3;
    assert_int_equal(partition_assign(&cls, labels, N, 10, 3, 0, 1, site_of, err, sizeof err), -1);
    assert_non_null(strstr(err, "9"));
    cls.k = 0;
    assert_int_equal(partition_assign(&cls, labels, N, 10, SITES, 0, 1, site_of, err, sizeof err),
                     -1);
    /* Label out of range names index and label. */
    labels[123] = 10;
    assert_int_equal(partition_assign(&iid, labels, N, 10, SITES, 0, 1, site_of, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "index 123"));
    assert_non_null(strstr(err, "label 10"));
    /* Null arguments; NULL err buffer is fine. */
    assert_int_equal(partition_assign(NULL, labels, N, 10, SITES, 0, 1, site_of, NULL, 0), -1);
    assert_int_equal(partition_assign(&iid, NULL, N, 10, SITES, 0, 1, site_of, NULL, 0), -1);
    assert_int_equal(partition_assign(&iid, labels, N, 10, SITES, 0, 1, NULL, NULL, 0), -1);
}

static void test_one_site(void **state)
{
    (void)state;
    uint8_t labels[N];
    int32_t site_of[N];
    char err[256];
    part_spec_t spec = { PART_DIRICHLET, 0.3, 0 };
    make_labels(labels, N, 10);
    assert_int_equal(partition_assign(&spec, labels, N, 10, 1, N, 1, site_of, err, sizeof err), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(site_of[i], 0);
    /* n == sites: one sample each under iid. */
    spec.kind = PART_IID;
    assert_int_equal(partition_assign(&spec, labels, 10, 10, 10, 1, 1, site_of, err, sizeof err),
                     0);
    int seen[10] = { 0 };
    for (int i = 0; i < 10; i++)
        seen[site_of[i]]++;
    for (int i = 0; i < 10; i++)
        assert_int_equal(seen[i], 1);
}

static void test_parse(void **state)
{
    (void)state;
    part_spec_t s;
    char err[256];
    assert_int_equal(partition_parse("iid", &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PART_IID);
    assert_int_equal(partition_parse("dirichlet:0.5", &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PART_DIRICHLET);
    assert_true(s.alpha == 0.5);
    assert_int_equal(partition_parse("dirichlet:1e-2", &s, err, sizeof err), 0);
    assert_true(s.alpha == 0.01);
    assert_int_equal(partition_parse("classes:2", &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PART_CLASSES);
    assert_int_equal(s.k, 2);

    const char *bad[] = { "dirichlet:", "dirichlet:-1", "dirichlet:abc", "dirichlet:0",
                          "dirichlet:0.5x", "dirichlet: 0.5", "dirichlet:nan", "dirichlet:inf",
                          "dirichlet:1e999", "dirichlet", "classes:0", "classes:x",
                          "classes:", "classes:2 ", "classes:-2", "classes:+2",
                          "classes:99999999999", "iid ", "IID", "", "shards:2", "iid:3" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        s.kind = PART_IID;
        s.k = 12345;
        if (partition_parse(bad[i], &s, err, sizeof err) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        /* The message quotes the text. */
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        if (strstr(err, quoted) == NULL)
            fail_msg("message for \"%s\" does not quote it: %s", bad[i], err);
        assert_int_equal(s.k, 12345); /* out untouched on error */
    }
    assert_int_equal(partition_parse(NULL, &s, err, sizeof err), -1);
    assert_int_equal(partition_parse("iid", NULL, NULL, 0), -1);
    assert_int_equal(partition_parse("nope", &s, NULL, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_deterministic),
        cmocka_unit_test(test_rng_uniform_range),
        cmocka_unit_test(test_rng_below),
        cmocka_unit_test(test_rng_normal),
        cmocka_unit_test(test_rng_gamma_mean),
        cmocka_unit_test(test_rng_shuffle),
        cmocka_unit_test(test_iid),
        cmocka_unit_test(test_dirichlet),
        cmocka_unit_test(test_dirichlet_impossible),
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_assign_errors),
        cmocka_unit_test(test_one_site),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
