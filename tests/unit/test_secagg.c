/* Secure-aggregation arithmetic: fixed-point encoding, the no-wrap bound,
 * threshold policy, and a whole masked round in memory with real crypto
 * (masks cancel exactly; a dropped client's pairwise masks are removed from
 * its Shamir-rebuilt key). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "aggregation/secagg.h"
#include "common/rng.h"
#include "crypto/crypto.h"

static void random_words(rng_t *r, uint32_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++) w[i] = (uint32_t)rng_next(r);
}

static void test_quant_params(void **state)
{
    (void)state;
    quant_t q;
    char err[256];
    assert_int_equal(secagg_quant_params(2.0, 4708, 10, 32, &q, err, sizeof err), 0);
    assert_true(q.scale >= 228000 && q.scale * 2.0 * 4708 + 10 <= 2147483647.0);
    /* 32 bits is the encoding from before the upload width, bit for bit */
    assert_true(q.scale == floor((2147483647.0 - 10) / (2.0 * 4708)));
    assert_int_equal(q.bits, 32);
    assert_int_equal(secagg_quant_params(0, 10, 1, 32, &q, err, sizeof err), -1);
    assert_int_equal(secagg_quant_params(1e9, 1e9, 1, 32, &q, err, sizeof err), -1);
    assert_non_null(strstr(err, "no fixed-point precision"));
    /* a narrow width under a large weight: a fractional scale (2^-24 steps) */
    assert_int_equal(secagg_quant_params(2.0, 4708, 10, 12, &q, err, sizeof err), 0);
    assert_true(q.scale > 0.216 && q.scale < 0.2164 && secagg_fits(&q, 4708, 10));
    assert_true(ldexp(q.scale, 24) == floor(ldexp(q.scale, 24)));
    assert_int_equal(secagg_quant_params(2.0, 100, 2, 7, &q, err, sizeof err), -1);
    assert_int_equal(secagg_quant_params(2.0, 100, 2, 33, &q, err, sizeof err), -1);
    /* each width: the largest scale that fits, and one more does not */
    for (unsigned b = 8; b <= 32; b++) {
        if (secagg_quant_params(0.5, 40, 10, b, &q, err, sizeof err) < 0) {
            assert_true(b < 12); /* 0.5 x 40 + 10 needs room below 2^(b-1) */
            continue;
        }
        assert_int_equal(q.bits, b);
        assert_true(secagg_fits(&q, 40, 10));
        q.scale += 1;
        assert_false(secagg_fits(&q, 40, 10));
    }
}

/* The rule a site checks: C * S * weight + clients < 2^(w-1). */
static void test_fits(void **state)
{
    (void)state;
    quant_t q = {.clip = 1.0, .scale = 100.0, .bits = 16}; /* room 32767 */
    assert_true(secagg_fits(&q, 327, 67));   /* 32700 + 67 = 32767 */
    assert_false(secagg_fits(&q, 327, 68));
    assert_false(secagg_fits(&q, 328, 1));
    q.bits = 32;
    assert_true(secagg_fits(&q, 21474836, 47));
    q.bits = 7;
    assert_false(secagg_fits(&q, 0, 1));    /* no width below ENC_BITS_MIN */
    q.bits = 33;
    assert_false(secagg_fits(&q, 0, 1));
}

/* Extreme inputs: every client at +clip with the largest weights, or at
 * -clip: the w-bit signed sum must not wrap, at any width. */
static void sum_cannot_wrap_at(unsigned bits)
{
    enum { CLIENTS = 7, N = 4 };
    const int64_t w[CLIENTS] = {1000, 1, 5000, 300, 1, 1, 12345};
    int64_t total = 0;
    for (int k = 0; k < CLIENTS; k++) total += w[k];
    quant_t q;
    char err[256];
    assert_int_equal(secagg_quant_params(1.5, total, CLIENTS, bits, &q, err, sizeof err), 0);
    const float up[N] = {1.5f, 9.0f, INFINITY, 1.5f}, down[N] = {-1.5f, -9.0f, -INFINITY, -1.5f};
    uint32_t dither[N], x[N + 1], sum_up[N + 1] = {0}, sum_down[N + 1] = {0};
    for (int i = 0; i < N; i++) dither[i] = UINT32_MAX; /* always round up */
    for (int k = 0; k < CLIENTS; k++) {
        secagg_encode(up, N, w[k], &q, dither, x);
        for (int i = 0; i <= N; i++) sum_up[i] += x[i];
        assert_int_equal(secagg_encode(down, N, w[k], &q, dither, x), 2); /* -9 and -inf */
        for (int i = 0; i <= N; i++) sum_down[i] += x[i];
    }
    float avg[N];
    int64_t weight;
    const double tol = (CLIENTS + 1) / (q.scale * (double)total); /* one unit per client */
    assert_int_equal(secagg_decode(sum_up, N, &q, total, avg, &weight, err, sizeof err), 0);
    assert_int_equal(weight, total);
    for (int i = 0; i < N; i++) assert_float_equal(avg[i], 1.5f, tol);
    assert_int_equal(secagg_decode(sum_down, N, &q, total, avg, &weight, err, sizeof err), 0);
    for (int i = 0; i < N; i++) assert_float_equal(avg[i], -1.5f, tol);
}

static void test_sum_cannot_wrap(void **state)
{
    (void)state;
    for (unsigned bits = 32; bits >= 16; bits -= 4) sum_cannot_wrap_at(bits);
}

static void test_encode_decode_error_and_unbiased(void **state)
{
    (void)state;
    enum { N = 20000 };
    rng_t r;
    rng_seed(&r, 9);
    quant_t q;
    char err[256];
    const int64_t w1 = 37, w2 = 63;
    /* A deliberately coarse scale shows stochastic rounding is unbiased, and
     * the narrowest width decodes the same sum (negative words reduced and
     * sign-extended from 8 bits). */
    q.clip = 2.0;
    q.scale = 3.0;
    q.bits = 8;
    float *d1 = malloc(N * sizeof *d1), *d2 = malloc(N * sizeof *d2), *avg = malloc(N * sizeof *avg);
    uint32_t *dither = malloc(N * 4), *x = malloc((N + 1) * 4), *sum = calloc(N + 1, 4);
    double bias = 0;
    for (int i = 0; i < N; i++) {
        d1[i] = 0.01f * (float)((i % 7) - 3);
        d2[i] = 0.0123f;
    }
    random_words(&r, dither, N);
    secagg_encode(d1, N, w1, &q, dither, x);
    for (int i = 0; i <= N; i++) sum[i] += x[i];
    random_words(&r, dither, N);
    secagg_encode(d2, N, w2, &q, dither, x);
    for (int i = 0; i <= N; i++) sum[i] += x[i];
    for (int i = 0; i < N; i++) sum[i] &= 0xFFu; /* all the coordinator learns of 8-bit elements */
    int64_t weight;
    assert_int_equal(secagg_decode(sum, N, &q, 100, avg, &weight, err, sizeof err), 0);
    assert_int_equal(weight, 100);
    for (int i = 0; i < N; i++) bias += avg[i] - (w1 * d1[i] + w2 * d2[i]) / 100.0;
    assert_true(fabs(bias / N) < 2e-3); /* per-value error ~1/300, mean error ~0 */

    /* At the real scale the error is far below 1e-6. */
    assert_int_equal(secagg_quant_params(2.0, 100, 2, 32, &q, err, sizeof err), 0);
    memset(sum, 0, (N + 1) * 4);
    random_words(&r, dither, N);
    secagg_encode(d1, N, w1, &q, dither, x);
    for (int i = 0; i <= N; i++) sum[i] += x[i];
    random_words(&r, dither, N);
    secagg_encode(d2, N, w2, &q, dither, x);
    for (int i = 0; i <= N; i++) sum[i] += x[i];
    assert_int_equal(secagg_decode(sum, N, &q, 100, avg, &weight, err, sizeof err), 0);
    for (int i = 0; i < N; i++)
        assert_float_equal(avg[i], (w1 * d1[i] + w2 * d2[i]) / 100.0, 1e-6);
    /* A weight above the announced bound is refused (a client lied). */
    assert_int_equal(secagg_decode(sum, N, &q, 99, avg, &weight, err, sizeof err), -1);
    assert_non_null(strstr(err, "misreported"));
    free(d1);
    free(d2);
    free(avg);
    free(dither);
    free(x);
    free(sum);
}

static void test_threshold_policy(void **state)
{
    (void)state;
    unsigned t;
    char err[512];
    /* t > (n + c) / 2 with c = floor(collusion * n): a split view needs 2t <= n + c */
    assert_int_equal(secagg_min_threshold(10, 0.33), 7);
    assert_int_equal(secagg_min_threshold(10, 0.0), 6); /* a strict majority */
    assert_int_equal(secagg_min_threshold(100, 0.33), 67);
    assert_int_equal(secagg_min_threshold(3, 0.33), 2);
    for (unsigned n = 2; n <= 200; n++)
        for (double g = 0; g < 0.99; g += 0.07) {
            unsigned c = (unsigned)floor(g * n + 1e-9), m = secagg_min_threshold(n, g);
            assert_true(2 * m > n + c && 2 * (m - 1) <= n + c); /* the least such t */
        }
    assert_int_equal(secagg_threshold(10, 0.2, 0.2, &t, err, sizeof err), 0);
    assert_int_equal(t, 7);
    assert_int_equal(secagg_threshold(10, 0.1, 0.7, &t, err, sizeof err), 0);
    assert_int_equal(t, 9); /* (10 + 7) / 2 < 9 */
    assert_int_equal(secagg_threshold(3, 0.2, 0.2, &t, err, sizeof err), 0);
    assert_int_equal(t, 2);
    assert_int_equal(secagg_threshold(4, 0.5, 0.2, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "unsafe settings for 4 clients"));
    assert_int_equal(secagg_threshold(10, 0.1, 0.95, &t, err, sizeof err), -1);
    assert_int_equal(secagg_threshold(1, 0, 0, &t, err, sizeof err), -1);
    assert_int_equal(secagg_threshold(5, 1.5, 0, &t, err, sizeof err), -1);
}

/* The protocol's arithmetic end to end, in memory: 4 clients, client 3
 * drops after sharing. Masks cancel and the dropped client's pairwise masks
 * are removed with its rebuilt key: the result is exactly sum x_u over the
 * survivors. */
static void test_masked_round_in_memory(void **state)
{
    (void)state;
    enum { K = 4, N = 1000, T = 3 };
    uint8_t s_pk[K][32], s_sk[K][32], b[K][32], seed[32];
    uint32_t xs[K] = {1, 2, 3, 4};
    uint8_t sh_b[K][K][SHAMIR_SHAREBYTES], sh_s[K][K][SHAMIR_SHAREBYTES]; /* [owner][holder] */
    uint32_t x[K][N], acc[N] = {0}, expect[N] = {0};
    rng_t r;
    rng_seed(&r, 3);
    for (int u = 0; u < K; u++) {
        assert_int_equal(ka_keypair(s_pk[u], s_sk[u]), 0);
        crypto_random(b[u], 32);
        assert_int_equal(shamir_split(b[u], T, K, xs, sh_b[u]), 0);
        assert_int_equal(shamir_split(s_sk[u], T, K, xs, sh_s[u]), 0);
        random_words(&r, x[u], N);
    }
    const int dropped = 3;
    for (int u = 0; u < K; u++) {
        if (u == dropped) continue; /* shared, never sent its masked input */
        uint32_t y[N];
        memcpy(y, x[u], sizeof y);
        for (int i = 0; i < N; i++) expect[i] += x[u][i];
        assert_int_equal(prg_add(PRG_DEFAULT, b[u], y, N, +1), 0);
        for (int v = 0; v < K; v++) {
            if (v == u) continue;
            assert_int_equal(ka_derive(seed, s_sk[u], s_pk[u], s_pk[v], "mask", 1, u, v), 0);
            assert_int_equal(prg_add(PRG_DEFAULT, seed, y, N, u < v ? 1 : -1), 0);
        }
        for (int i = 0; i < N; i++) acc[i] += y[i];
    }
    /* A masked vector looks nothing like its input. */
    assert_memory_not_equal(acc, expect, sizeof acc);
    /* Unmask: b of survivors from holders 0..2, s_sk of the dropped one. */
    uint8_t secret[32];
    uint8_t shares[T][SHAMIR_SHAREBYTES];
    for (int u = 0; u < K; u++) {
        for (int h = 0; h < T; h++)
            memcpy(shares[h], u == dropped ? sh_s[u][h] : sh_b[u][h], SHAMIR_SHAREBYTES);
        assert_int_equal(shamir_combine(T, T, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])shares, secret), 0);
        if (u != dropped) {
            assert_memory_equal(secret, b[u], 32);
            assert_int_equal(prg_add(PRG_DEFAULT, secret, acc, N, -1), 0);
            continue;
        }
        assert_memory_equal(secret, s_sk[u], 32);
        for (int v = 0; v < K; v++) {
            if (v == dropped) continue;
            assert_int_equal(ka_derive(seed, secret, s_pk[u], s_pk[v], "mask", 1, u, v), 0);
            assert_int_equal(prg_add(PRG_DEFAULT, seed, acc, N, v < u ? -1 : 1), 0);
        }
    }
    assert_memory_equal(acc, expect, sizeof acc);
}

/* prg_add_many is exactly the sum of single prg_add passes, for lengths that
 * do and do not fill whole chunks, with both signs and both algorithms. */
static void test_prg_add_many_matches_single(void **state)
{
    (void)state;
    enum { N = 70001, S = 5 };
    uint8_t seeds[S][PRG_SEEDBYTES];
    const int signs[S] = {1, -1, -1, 1, 1};
    uint32_t *a = malloc(N * 4), *b = malloc(N * 4);
    rng_t r;
    rng_seed(&r, 11);
    for (int alg = 0; alg < 2; alg++) {
        for (int s = 0; s < S; s++) crypto_random(seeds[s], PRG_SEEDBYTES);
        random_words(&r, a, N);
        memcpy(b, a, N * 4);
        for (int s = 0; s < S; s++) assert_int_equal(prg_add((prg_alg_t)alg, seeds[s], a, N, signs[s]), 0);
        assert_int_equal(prg_add_many((prg_alg_t)alg, (const uint8_t(*)[PRG_SEEDBYTES])seeds, signs, S, b, N), 0);
        assert_memory_equal(a, b, N * 4);
    }
    assert_int_equal(prg_add_many(PRG_DEFAULT, NULL, NULL, 0, b, N), 0);
    free(a);
    free(b);
}

static void test_neighbour_graph(void **state)
{
    (void)state;
    unsigned k, t;
    char err[512];
    /* The SecAgg+ bound: a third colluding, a fifth dropping: all pairs up to
     * 1,000 clients (the old 2 * ceil(1.5 log2 n) = 20 at n = 100 exposed a
     * survivor in about a quarter of rounds). */
    assert_int_equal(secagg_plus_degree(100, 0.33, 0.2), 99);
    assert_int_equal(secagg_plus_degree(1000, 0.33, 0.2), 999);
    assert_int_equal(secagg_plus_degree(100, 0.1, 0.05), 62);
    assert_int_equal(secagg_plus_degree(1000, 0.1, 0.05), 68);
    assert_int_equal(secagg_plus_degree(12, 0, 0), 2); /* nobody colludes or drops */
    /* what it promises, checked by brute force against the definition */
    for (unsigned n = 20; n <= 400; n += 60) {
        unsigned kk = secagg_plus_degree(n, 0.1, 0.05);
        if (kk >= n - 1) continue;
        unsigned tt = secagg_plus_threshold(n, kk, 0.1);
        assert_true(tt > 0 && secagg_plus_correct(n, kk, tt, 0.05));
        unsigned t2 = secagg_plus_threshold(n, kk - 2, 0.1);
        assert_true(t2 == 0 || !secagg_plus_correct(n, kk - 2, t2, 0.05)); /* the least k */
        assert_true(tt == 1 || secagg_plus_threshold(n, kk, 0.1) == tt);
    }
    assert_int_equal(secagg_plan(12, 0, 4, 0.2, 0.33, &k, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "--neighbors 4 is below the degree 11"));
    assert_int_equal(secagg_plan(12, 0, 0, 0.2, 0.33, &k, &t, err, sizeof err), 0);
    assert_int_equal(k, 11); /* all pairs */
    assert_int_equal(t, 8);  /* secagg_threshold: (12 + 3) / 2 < 8 */
    assert_int_equal(secagg_plan(12, 0, 4, 0, 0, &k, &t, err, sizeof err), 0);
    assert_int_equal(k, 4);
    assert_int_equal(t, 3);  /* 2t > k + 1 */
    assert_int_equal(secagg_plan(12, 0, 5, 0, 0, &k, &t, err, sizeof err), 0);
    assert_int_equal(k, 6);  /* made even */
    /* The bound alone would allow 68 neighbours here, but all 100 colluders
     * of the federation may sit in one neighbourhood: all pairs. */
    assert_int_equal(secagg_plan(1000, 0, 0, 0.05, 0.1, &k, &t, err, sizeof err), 0);
    assert_int_equal(k, 999);
    assert_int_equal(t, (1000 + 100) / 2 + 1);
    assert_int_equal(secagg_plan(1000, 0, 68, 0.05, 0.1, &k, &t, err, sizeof err), -1);
    assert_int_equal(secagg_plan(1000, 0, 0, 0.05, 0.0, &k, &t, err, sizeof err), 0);
    assert_true(k < 999 && t > (k + 1) / 2 && t <= k + 1); /* nobody colludes: sparse */
    /* colluders counted against the federation: a cohort of 3 in 95 sites */
    assert_int_equal(secagg_plan(3, 95, 0, 0, 0.33, &k, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "fewer than two honest sites"));
    assert_int_equal(secagg_plan(6, 6, 0, 0, 0.33, &k, &t, err, sizeof err), 0);
    assert_int_equal(t, 4);
    enum { N = 40, K = 8 };
    uint8_t adj[N * N], again[N * N];
    assert_int_equal(secagg_graph(N, K, 7, adj), 0);
    for (int i = 0; i < N; i++) {
        int deg = 0;
        assert_int_equal(adj[i * N + i], 0);
        for (int j = 0; j < N; j++) {
            assert_int_equal(adj[i * N + j], adj[j * N + i]);
            deg += adj[i * N + j];
        }
        assert_int_equal(deg, K);
    }
    /* Connected: a breadth-first search reaches everyone. */
    int seen[N] = {1}, queue[N] = {0}, head = 0, tail = 1;
    while (head < tail)
        for (int j = 0, i = queue[head++]; j < N; j++)
            if (adj[i * N + j] && !seen[j]) seen[j] = 1, queue[tail++] = j;
    assert_int_equal(tail, N);
    assert_int_equal(secagg_graph(N, K, 7, again), 0);
    assert_memory_equal(adj, again, sizeof adj);          /* same seed, same graph */
    assert_int_equal(secagg_graph(N, K, 8, again), 0);
    assert_memory_not_equal(adj, again, sizeof adj);
    assert_int_equal(secagg_graph(N, 7, 1, again), -1);   /* odd degree refused */
    assert_int_equal(secagg_graph(4, 3, 1, again), 0);    /* complete */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) assert_int_equal(again[i * 4 + j], i != j);
}

static void test_add_le_unaligned(void **state)
{
    (void)state;
    uint8_t raw[1 + 12];
    const uint32_t v[3] = {1, UINT32_MAX, 7};
    memcpy(raw + 1, v, sizeof v);
    uint32_t acc[3] = {5, 2, 0};
    enc_unpack_add(raw + 1, 3, 32, acc);
    assert_int_equal(acc[0], 6);
    assert_int_equal(acc[1], 1); /* wraps mod 2^32 */
    assert_int_equal(acc[2], 7);
}

/* The next round's clip: headroom x the largest finite |mean| value, held
 * between ceiling / SECAGG_CLIP_RANGE and the ceiling. */
static void test_next_clip(void **state)
{
    (void)state;
    const float mean[5] = {0.01f, -0.05f, 0.02f, NAN, 0.0f};
    assert_float_equal(secagg_next_clip(mean, 5, 4.0, 2.0), 4.0 * (double)0.05f, 1e-12);
    const float inf[2] = {INFINITY, 0.1f}; /* a non-finite value never sets the clip */
    assert_float_equal(secagg_next_clip(inf, 2, 4.0, 2.0), 4.0 * (double)0.1f, 1e-12);
    const float big[1] = {-3.0f}; /* never above the research lead's clip */
    assert_float_equal(secagg_next_clip(big, 1, 4.0, 2.0), 2.0, 0);
    const float zero[3] = {0, 0, 0}; /* no training: the floor, never 0 */
    assert_float_equal(secagg_next_clip(zero, 3, 4.0, 2.0), 2.0 / SECAGG_CLIP_RANGE, 0);
    /* A smaller clip buys a finer step at the same width. */
    quant_t a, b;
    char err[128];
    assert_int_equal(secagg_quant_params(2.0, 4708, 10, 16, &a, err, sizeof err), 0);
    assert_int_equal(secagg_quant_params(secagg_next_clip(mean, 5, 4.0, 2.0), 4708, 10, 16, &b,
                                         err, sizeof err), 0);
    assert_true(b.scale > 9.0 * a.scale);
}

/* The weighted training loss as one more masked word: three sites' words
 * sum to n-weighted mean loss; the cohort's worst case stays below 2^32; a
 * loss beyond SECAGG_LOSS_MAX (or NaN) is clipped to it; a sum that is not
 * one of the sites' encodings decodes to NaN. */
static void test_loss_word(void **state)
{
    (void)state;
    const int64_t n[3] = {100, 300, 600};
    const double loss[3] = {0.9, 0.5, 0.2}; /* weighted mean (90 + 150 + 120) / 1000 = 0.36 */
    double s = secagg_loss_scale(1000, 3);
    assert_true(s > 0);
    assert_true(SECAGG_LOSS_MAX * s * 1000 + 3 <= 4294967295.0);
    uint32_t sum = 0;
    for (int k = 0; k < 3; k++) {
        assert_true(secagg_loss_scale_ok(s, n[k]));
        sum += secagg_encode_loss(loss[k], n[k], s);
    }
    assert_float_equal(secagg_decode_loss(sum, 1000, s), 0.36, 1e-6);
    /* the worst case: every site at the cap fits, nothing wraps */
    uint32_t worst = 0;
    for (int k = 0; k < 3; k++) worst += secagg_encode_loss(NAN, n[k], s);
    assert_float_equal(secagg_decode_loss(worst, 1000, s), SECAGG_LOSS_MAX, 1e-6);
    assert_int_equal(secagg_encode_loss(1e9, 600, s), secagg_encode_loss(SECAGG_LOSS_MAX, 600, s));
    assert_int_equal(secagg_encode_loss(-1, 600, s), 0);
    assert_true(isnan(secagg_decode_loss(UINT32_MAX, 500, s))); /* 128 nats: not an encoding */
    assert_false(secagg_loss_scale_ok(s, 2000)); /* one site above the bound the scale was made for */
    assert_false(secagg_loss_scale_ok(0, 10));
}

int main(void)
{
    if (crypto_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_params),
        cmocka_unit_test(test_next_clip),
        cmocka_unit_test(test_fits),
        cmocka_unit_test(test_sum_cannot_wrap),
        cmocka_unit_test(test_encode_decode_error_and_unbiased),
        cmocka_unit_test(test_threshold_policy),
        cmocka_unit_test(test_masked_round_in_memory),
        cmocka_unit_test(test_add_le_unaligned),
        cmocka_unit_test(test_prg_add_many_matches_single),
        cmocka_unit_test(test_neighbour_graph),
        cmocka_unit_test(test_loss_word),
    };
    return cmocka_run_group_tests_name("secagg", tests, NULL, NULL);
}
