/* crypto/: key agreement, the mask PRG (known answers, chunking, cancelling
 * masks, byte statistics), Shamir sharing (every subset, hand-built shares,
 * malformed input), share boxes, identities and key files, and that misuse
 * aborts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "crypto/crypto.h"

#define FIELD_P ((UINT64_C(1) << 61) - 1)

static const prg_alg_t algs[2] = {PRG_AES256CTR, PRG_CHACHA20};

static void fill_seed(uint8_t seed[PRG_SEEDBYTES], uint8_t v)
{
    for (size_t i = 0; i < PRG_SEEDBYTES; i++) seed[i] = (uint8_t)(v + 31 * i);
}

/* ---- helpers ------------------------------------------------------------------ */

static void test_helpers(void **state)
{
    (void)state;
    assert_int_equal(crypto_init(), 0); /* a second call is fine */

    /* FIPS 180-2 "abc". */
    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                    0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                    0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    uint8_t h[CRYPTO_HASHBYTES];
    crypto_sha256(h, "abc", 3);
    assert_memory_equal(h, abc, 32);
    static const uint8_t empty[32] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
                                      0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
                                      0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
                                      0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
    crypto_sha256(h, NULL, 0);
    assert_memory_equal(h, empty, 32);

    uint8_t a[40], b[40];
    crypto_random(a, sizeof a);
    memcpy(b, a, sizeof b);
    assert_int_equal(crypto_equal(a, b, sizeof a), 1);
    b[39] ^= 0x80;
    assert_int_equal(crypto_equal(a, b, sizeof a), 0);
    crypto_wipe(a, sizeof a);
    for (size_t i = 0; i < sizeof a; i++) assert_int_equal(a[i], 0);

    uint8_t *s = crypto_secure_alloc(64);
    assert_non_null(s);
    memset(s, 0xaa, 64);
    crypto_secure_free(s);
    crypto_secure_free(NULL);
}

/* ---- key agreement ---------------------------------------------------------------- */

static void test_ka_agree(void **state)
{
    (void)state;
    uint8_t pa[KA_PUBLICKEYBYTES], sa[KA_SECRETKEYBYTES], pb[KA_PUBLICKEYBYTES],
        sb[KA_SECRETKEYBYTES], pc[KA_PUBLICKEYBYTES], sc[KA_SECRETKEYBYTES];
    assert_int_equal(ka_keypair(pa, sa), 0);
    assert_int_equal(ka_keypair(pb, sb), 0);
    assert_int_equal(ka_keypair(pc, sc), 0);

    uint8_t s1[KA_SEEDBYTES], s2[KA_SEEDBYTES], s3[KA_SEEDBYTES];
    /* Both sides, both id orders: a is 7, b is 3. */
    assert_int_equal(ka_derive(s1, sa, pa, pb, "mask", 5, 7, 3), 0);
    assert_int_equal(ka_derive(s2, sb, pb, pa, "mask", 5, 3, 7), 0);
    assert_memory_equal(s1, s2, KA_SEEDBYTES);

    assert_int_equal(ka_derive(s3, sa, pa, pb, "share", 5, 7, 3), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);
    assert_int_equal(ka_derive(s3, sa, pa, pb, "mask", 6, 7, 3), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);
    assert_int_equal(ka_derive(s3, sa, pa, pb, "mask", 5, 7, 4), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);
    assert_int_equal(ka_derive(s3, sa, pa, pb, "mask", 5, 8, 3), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);
    /* A context that is a prefix of another. */
    assert_int_equal(ka_derive(s3, sa, pa, pb, "mas", 5, 7, 3), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);
    /* Another pair with the same ids and round. */
    assert_int_equal(ka_derive(s3, sa, pa, pc, "mask", 5, 7, 3), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);
    /* Same key agreement, but a wrong own public key changes the seed: the
     * keys are bound into it. */
    assert_int_equal(ka_derive(s3, sa, pc, pb, "mask", 5, 7, 3), 0);
    assert_memory_not_equal(s1, s3, KA_SEEDBYTES);

    /* A pair of one. */
    assert_int_equal(ka_derive(s3, sa, pa, pb, "mask", 5, 3, 3), -1);
}

static void test_ka_low_order(void **state)
{
    (void)state;
    uint8_t pk[KA_PUBLICKEYBYTES], sk[KA_SECRETKEYBYTES], seed[KA_SEEDBYTES];
    assert_int_equal(ka_keypair(pk, sk), 0);

    uint8_t bad[KA_PUBLICKEYBYTES] = {0};
    memset(seed, 0xee, sizeof seed);
    assert_int_equal(ka_derive(seed, sk, pk, bad, "mask", 1, 1, 2), -1);
    for (size_t i = 0; i < sizeof seed; i++) assert_int_equal(seed[i], 0);

    bad[0] = 1; /* u = 1: order 4 */
    assert_int_equal(ka_derive(seed, sk, pk, bad, "mask", 1, 1, 2), -1);

    /* u = p - 1 = 2^255 - 20: order 2. */
    memset(bad, 0xff, sizeof bad);
    bad[0] = 0xec;
    bad[31] = 0x7f;
    assert_int_equal(ka_derive(seed, sk, pk, bad, "mask", 1, 1, 2), -1);
}

/* ---- PRG ---------------------------------------------------------------------------- */

/* Reference keystreams computed in one call, without prg.c's chunking. */
static void reference_stream(prg_alg_t alg, const uint8_t seed[32], uint8_t *out, size_t len)
{
    memset(out, 0, len);
    if (alg == PRG_CHACHA20) {
        static const uint8_t nonce[8];
        assert_int_equal(crypto_stream_chacha20(out, len, nonce, seed), 0);
        return;
    }
    static const uint8_t iv[16];
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    assert_non_null(c);
    int outl = 0;
    assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_ctr(), NULL, seed, iv), 1);
    assert_int_equal(EVP_EncryptUpdate(c, out, &outl, out, (int)len), 1);
    assert_int_equal(outl, (int)len);
    EVP_CIPHER_CTX_free(c);
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void test_prg_known_answers(void **state)
{
    (void)state;
    const uint8_t zero[PRG_SEEDBYTES] = {0};
    uint32_t w[16];

    /* RFC 8439 A.1 test vector #1: key 0, nonce 0, block counter 0. */
    static const uint8_t chacha[64] = {
        0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53,
        0x86, 0xbd, 0x28, 0xbd, 0xd2, 0x19, 0xb8, 0xa0, 0x8d, 0xed, 0x1a, 0xa8, 0x36,
        0xef, 0xcc, 0x8b, 0x77, 0x0d, 0xc7, 0xda, 0x41, 0x59, 0x7c, 0x51, 0x57, 0x48,
        0x8d, 0x77, 0x24, 0xe0, 0x3f, 0xb8, 0xd8, 0x4a, 0x37, 0x6a, 0x43, 0xb8, 0xf4,
        0x15, 0x18, 0xa1, 0x1c, 0xc3, 0x87, 0xb6, 0x69, 0xb2, 0xee, 0x65, 0x86};
    assert_int_equal(prg_expand(PRG_CHACHA20, zero, w, 16), 0);
    for (size_t i = 0; i < 16; i++) assert_int_equal(w[i], le32(chacha + 4 * i));
    assert_int_equal(w[0], 0xade0b876u); /* the little-endian reading, spelled out */

    /* AES-256 of the zero block under the zero key (counter block 0). */
    static const uint8_t aes[16] = {0xdc, 0x95, 0xc0, 0x78, 0xa2, 0x40, 0x89, 0x89,
                                    0xad, 0x48, 0xa2, 0x14, 0x92, 0x84, 0x20, 0x87};
    assert_int_equal(prg_expand(PRG_AES256CTR, zero, w, 4), 0);
    for (size_t i = 0; i < 4; i++) assert_int_equal(w[i], le32(aes + 4 * i));
    assert_int_equal(w[0], 0x78c095dcu);
}

/* Lengths around and across the chunk boundary, checked against a one-shot
 * reference stream: chunking must be invisible. */
static void test_prg_lengths_match_reference(void **state)
{
    (void)state;
    const size_t lens[] = {0, 1, 3, 4, 15, 16, 17, 2047, 2048, 2049, 4095, 4096, 4097, 8193,
                           100003};
    const size_t max = 100003;
    uint8_t *ref = malloc(4 * max);
    uint32_t *got = malloc(4 * max + 4);
    assert_non_null(ref);
    assert_non_null(got);
    uint8_t seed[PRG_SEEDBYTES];
    fill_seed(seed, 9);
    for (size_t a = 0; a < 2; a++) {
        reference_stream(algs[a], seed, ref, 4 * max);
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            const size_t n = lens[l];
            got[n] = 0x5a5a5a5a; /* canary: nothing past n is written */
            assert_int_equal(prg_expand(algs[a], seed, got, n), 0);
            for (size_t i = 0; i < n; i++) assert_int_equal(got[i], le32(ref + 4 * i));
            assert_int_equal(got[n], 0x5a5a5a5a);
        }
        /* prg_add into zeros is the same stream. */
        memset(got, 0, 4 * max);
        assert_int_equal(prg_add(algs[a], seed, got, max, 1), 0);
        for (size_t i = 0; i < max; i++) assert_int_equal(got[i], le32(ref + 4 * i));
    }
    free(ref);
    free(got);
}

static void test_prg_deterministic_and_distinct(void **state)
{
    (void)state;
    enum { N = 5000 };
    static uint32_t x[N], y[N];
    uint8_t s1[PRG_SEEDBYTES], s2[PRG_SEEDBYTES];
    fill_seed(s1, 1);
    fill_seed(s2, 1);
    s2[31] ^= 1; /* one bit apart */
    for (size_t a = 0; a < 2; a++) {
        assert_int_equal(prg_expand(algs[a], s1, x, N), 0);
        assert_int_equal(prg_expand(algs[a], s1, y, N), 0);
        assert_memory_equal(x, y, sizeof x);
        assert_int_equal(prg_expand(algs[a], s2, y, N), 0);
        size_t same = 0;
        for (size_t i = 0; i < N; i++) same += x[i] == y[i];
        assert_true(same < 3);
    }
    /* The two algorithms differ for the same seed. */
    assert_int_equal(prg_expand(PRG_AES256CTR, s1, x, N), 0);
    assert_int_equal(prg_expand(PRG_CHACHA20, s1, y, N), 0);
    assert_memory_not_equal(x, y, sizeof x);
    assert_true(PRG_DEFAULT == PRG_AES256CTR || PRG_DEFAULT == PRG_CHACHA20);
}

static void test_prg_add_sub_roundtrip(void **state)
{
    (void)state;
    const size_t n = 100003; /* not a multiple of the chunk */
    uint32_t *orig = malloc(4 * n), *acc = malloc(4 * n);
    assert_non_null(orig);
    assert_non_null(acc);
    crypto_random(orig, 4 * n);
    uint8_t seed[PRG_SEEDBYTES];
    crypto_random(seed, sizeof seed);
    for (size_t a = 0; a < 2; a++) {
        memcpy(acc, orig, 4 * n);
        assert_int_equal(prg_add(algs[a], seed, acc, n, 1), 0);
        assert_memory_not_equal(acc, orig, 4 * n);
        assert_int_equal(prg_add(algs[a], seed, acc, n, -1), 0);
        assert_memory_equal(acc, orig, 4 * n);
    }
    free(orig);
    free(acc);
}

/* Bonawitz's pairwise masks: y_u = x_u + sum_{v != u} sign(u, v) PRG(s_uv)
 * with sign +1 when u < v; the masks cancel in sum_u y_u, exactly, mod 2^32. */
static void test_prg_masks_cancel(void **state)
{
    (void)state;
    enum { P = 3 };
    const size_t n = 100003;
    const uint32_t ids[P] = {11, 4, 27};
    uint8_t pk[P][KA_PUBLICKEYBYTES], sk[P][KA_SECRETKEYBYTES];
    for (int u = 0; u < P; u++) assert_int_equal(ka_keypair(pk[u], sk[u]), 0);

    uint32_t *x[P], *y[P];
    for (int u = 0; u < P; u++) {
        x[u] = malloc(4 * n);
        y[u] = malloc(4 * n);
        assert_non_null(x[u]);
        assert_non_null(y[u]);
        for (size_t i = 0; i < n; i++) x[u][i] = (uint32_t)(i * 2654435761u + (uint32_t)u * 97u);
    }
    for (size_t a = 0; a < 2; a++) {
        for (int u = 0; u < P; u++) {
            memcpy(y[u], x[u], 4 * n);
            for (int v = 0; v < P; v++) {
                if (v == u) continue;
                uint8_t seed[KA_SEEDBYTES];
                assert_int_equal(
                    ka_derive(seed, sk[u], pk[u], pk[v], "mask", 42, ids[u], ids[v]), 0);
                assert_int_equal(prg_add(algs[a], seed, y[u], n, ids[u] < ids[v] ? 1 : -1), 0);
            }
            assert_memory_not_equal(y[u], x[u], 4 * n); /* actually masked */
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t sx = 0, sy = 0;
            for (int u = 0; u < P; u++) {
                sx += x[u][i];
                sy += y[u][i];
            }
            assert_int_equal(sx, sy);
        }
    }
    for (int u = 0; u < P; u++) {
        free(x[u]);
        free(y[u]);
    }
}

/* Chi-square of the byte histogram of a masked vector against uniform: 255
 * degrees of freedom (mean 255, sd 22.6), so 400 is > 6 sd: a sound PRG
 * passes with a fixed seed every time; a bias or a structured mask does not. */
static double chi_square(const uint32_t *v, size_t n)
{
    uint64_t bins[256] = {0};
    const uint8_t *b = (const uint8_t *)v;
    for (size_t i = 0; i < 4 * n; i++) bins[b[i]]++;
    const double expect = 4.0 * (double)n / 256.0;
    double chi = 0;
    for (int i = 0; i < 256; i++) chi += ((double)bins[i] - expect) * ((double)bins[i] - expect) / expect;
    return chi;
}

static void test_prg_chi_square(void **state)
{
    (void)state;
    const size_t n = (1u << 20) / 4; /* 1 MiB */
    uint32_t *v = malloc(4 * n);
    assert_non_null(v);
    uint8_t seed[PRG_SEEDBYTES];
    fill_seed(seed, 77);
    for (size_t a = 0; a < 2; a++) {
        memset(v, 0, 4 * n);
        assert_true(chi_square(v, n) > 1e6); /* the test does notice structure */
        assert_int_equal(prg_add(algs[a], seed, v, n, 1), 0);
        const double c0 = chi_square(v, n);
        for (size_t i = 0; i < n; i++) v[i] = 0x01020304u;
        assert_int_equal(prg_add(algs[a], seed, v, n, -1), 0);
        const double c1 = chi_square(v, n);
        print_message("chi-square (255 dof) alg %zu: zeros %.1f, constant %.1f\n", a, c0, c1);
        assert_true(c0 < 400.0);
        assert_true(c1 < 400.0);
    }
    free(v);
}

/* ---- Shamir ------------------------------------------------------------------------ */

static void store64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static void test_shamir_all_subsets(void **state)
{
    (void)state;
    enum { N = 5, T = 3 };
    const uint32_t xs[N] = {1, 2, 3, 1000, 0xffffffffu};
    uint8_t secret[SHAMIR_SECRETBYTES], out[SHAMIR_SECRETBYTES];
    uint8_t shares[N][SHAMIR_SHAREBYTES];
    crypto_random(secret, sizeof secret);
    assert_int_equal(shamir_split(secret, T, N, xs, shares), 0);

    /* Every share element is a canonical field element. */
    for (int i = 0; i < N; i++)
        for (int l = 0; l < 8; l++) {
            uint64_t e = 0;
            for (int b = 7; b >= 0; b--) e = e << 8 | shares[i][8 * l + b];
            assert_true(e < FIELD_P);
        }

    /* All C(5,3) subsets, each in two orders. */
    int subsets = 0;
    for (int a = 0; a < N; a++)
        for (int b = a + 1; b < N; b++)
            for (int c = b + 1; c < N; c++) {
                const int pick[2][T] = {{a, b, c}, {c, a, b}};
                for (int o = 0; o < 2; o++) {
                    uint32_t sx[T];
                    uint8_t ss[T][SHAMIR_SHAREBYTES];
                    for (int j = 0; j < T; j++) {
                        sx[j] = xs[pick[o][j]];
                        memcpy(ss[j], shares[pick[o][j]], SHAMIR_SHAREBYTES);
                    }
                    memset(out, 0, sizeof out);
                    assert_int_equal(shamir_combine(T, T, sx, (const uint8_t (*)[SHAMIR_SHAREBYTES])ss, out), 0);
                    assert_memory_equal(out, secret, sizeof secret);
                }
                subsets++;
            }
    assert_int_equal(subsets, 10);

    /* k > t: only the first t are read, so garbage after them is harmless. */
    uint32_t xk[N];
    uint8_t sk[N][SHAMIR_SHAREBYTES];
    memcpy(xk, xs, sizeof xk);
    memcpy(sk, shares, sizeof sk);
    memset(sk[3], 0xff, SHAMIR_SHAREBYTES); /* not field elements */
    xk[4] = xk[0];                          /* a repeat, but unused */
    assert_int_equal(shamir_combine(T, N, xk, (const uint8_t (*)[SHAMIR_SHAREBYTES])sk, out), 0);
    assert_memory_equal(out, secret, sizeof secret);

    /* t - 1 shares do not give the secret: the interpolated limbs are
     * random field elements, almost surely >= 2^32 (caught: -1), and if not,
     * wrong. */
    const int rc = shamir_combine(T - 1, T - 1, xs, (const uint8_t (*)[SHAMIR_SHAREBYTES])shares, out);
    if (rc == 0) assert_memory_not_equal(out, secret, sizeof secret);
    else for (size_t i = 0; i < sizeof out; i++) assert_int_equal(out[i], 0);
}

static void test_shamir_edges(void **state)
{
    (void)state;
    uint8_t secret[SHAMIR_SECRETBYTES], out[SHAMIR_SECRETBYTES];
    crypto_random(secret, sizeof secret);

    /* t == n. */
    enum { N = 7 };
    uint32_t xs[N];
    for (int i = 0; i < N; i++) xs[i] = (uint32_t)(i * 1000 + 1);
    uint8_t shares[N][SHAMIR_SHAREBYTES];
    assert_int_equal(shamir_split(secret, N, N, xs, shares), 0);
    assert_int_equal(shamir_combine(N, N, xs, (const uint8_t (*)[SHAMIR_SHAREBYTES])shares, out), 0);
    assert_memory_equal(out, secret, sizeof secret);
    assert_int_equal(shamir_combine(N, N - 1, xs, (const uint8_t (*)[SHAMIR_SHAREBYTES])shares, out), -1);

    /* t == 1: every share is the secret (each limb as a field element). */
    assert_int_equal(shamir_split(secret, 1, 3, xs, shares), 0);
    for (int i = 0; i < 3; i++) {
        for (int l = 0; l < 8; l++) {
            uint8_t expect[8] = {0};
            memcpy(expect, secret + 4 * l, 4);
            assert_memory_equal(shares[i] + 8 * l, expect, 8);
        }
        assert_int_equal(shamir_combine(1, 1, xs + i, (const uint8_t (*)[SHAMIR_SHAREBYTES])&shares[i], out), 0);
        assert_memory_equal(out, secret, sizeof secret);
    }

    /* A bigger threshold, shares taken from the end. */
    enum { BN = 40, BT = 25 };
    static uint8_t big[BN][SHAMIR_SHAREBYTES];
    uint32_t bx[BN];
    for (int i = 0; i < BN; i++) bx[i] = 0xfffffff0u - (uint32_t)i * 7919u;
    assert_int_equal(shamir_split(secret, BT, BN, bx, big), 0);
    assert_int_equal(shamir_combine(BT, BT, bx + (BN - BT), (const uint8_t (*)[SHAMIR_SHAREBYTES])big + (BN - BT), out), 0);
    assert_memory_equal(out, secret, sizeof secret);

    /* Two splits of the same secret use fresh coefficients. */
    uint8_t again[N][SHAMIR_SHAREBYTES];
    assert_int_equal(shamir_split(secret, 3, N, xs, shares), 0);
    assert_int_equal(shamir_split(secret, 3, N, xs, again), 0);
    assert_memory_not_equal(shares, again, sizeof shares);
}

static void test_shamir_rejects(void **state)
{
    (void)state;
    uint8_t secret[SHAMIR_SECRETBYTES], out[SHAMIR_SECRETBYTES];
    crypto_random(secret, sizeof secret);
    uint32_t xs[4] = {5, 6, 7, 8};
    uint8_t shares[4][SHAMIR_SHAREBYTES], bad[4][SHAMIR_SHAREBYTES];
    assert_int_equal(shamir_split(secret, 3, 4, xs, shares), 0);
    const uint8_t (*cb)[SHAMIR_SHAREBYTES] = (const uint8_t (*)[SHAMIR_SHAREBYTES])bad;

    /* split: x == 0 would hand out the secret; repeated x. */
    uint32_t x0[3] = {1, 0, 2}, xd[3] = {4, 9, 4};
    assert_int_equal(shamir_split(secret, 2, 3, x0, bad), -1);
    assert_int_equal(shamir_split(secret, 2, 3, xd, bad), -1);

    /* combine: too few. */
    memcpy(bad, shares, sizeof bad);
    memset(out, 0xee, sizeof out);
    assert_int_equal(shamir_combine(3, 2, xs, cb, out), -1);
    for (size_t i = 0; i < sizeof out; i++) assert_int_equal(out[i], 0);

    /* duplicate x and x == 0 among the first t. */
    uint32_t xb[4] = {5, 6, 5, 8};
    assert_int_equal(shamir_combine(3, 4, xb, cb, out), -1);
    uint32_t xz[4] = {5, 0, 7, 8};
    assert_int_equal(shamir_combine(3, 4, xz, cb, out), -1);

    /* An element == p and one above. */
    store64(bad[1] + 8 * 3, FIELD_P);
    assert_int_equal(shamir_combine(3, 4, xs, cb, out), -1);
    store64(bad[1] + 8 * 3, UINT64_MAX);
    assert_int_equal(shamir_combine(3, 4, xs, cb, out), -1);
    /* An element == p is refused even where it would reduce to a valid
     * share: with t = 1 the share is the secret, so p would pass for 0. */
    const uint32_t x1[1] = {1};
    uint8_t one[1][SHAMIR_SHAREBYTES];
    memset(one, 0, sizeof one);
    const uint8_t (*c1)[SHAMIR_SHAREBYTES] = (const uint8_t (*)[SHAMIR_SHAREBYTES])one;
    assert_int_equal(shamir_combine(1, 1, x1, c1, out), 0); /* all-zero share: secret 0 */
    for (size_t i = 0; i < sizeof out; i++) assert_int_equal(out[i], 0);
    store64(one[0] + 8 * 3, FIELD_P);
    assert_int_equal(shamir_combine(1, 1, x1, c1, out), -1);
    store64(one[0] + 8 * 3, FIELD_P - 1); /* the largest element: limb out of range */
    assert_int_equal(shamir_combine(1, 1, x1, c1, out), -1);

    /* A garbled element (still a field element) moves its limb by
     * lambda * delta; a large delta takes the limb out of [0, 2^32). */
    memcpy(bad, shares, sizeof bad);
    bad[2][6] ^= 0x10; /* delta = +-2^52 */
    memset(out, 0xee, sizeof out);
    assert_int_equal(shamir_combine(3, 4, xs, cb, out), -1);
    for (size_t i = 0; i < sizeof out; i++) assert_int_equal(out[i], 0);

    /* The limit of that check: here lambda for x = 7 is 5*6 / ((5-7)(6-7)) =
     * 15, so a delta of 1 moves the limb by 15 and usually stays in range:
     * the range check is a sanity check, not integrity. The result is then
     * wrong, never silently right. */
    memcpy(bad, shares, sizeof bad);
    bad[2][0] ^= 1;
    if (shamir_combine(3, 4, xs, cb, out) == 0) assert_memory_not_equal(out, secret, sizeof out);

    /* Shares of two different secrets mixed. */
    uint8_t other[SHAMIR_SECRETBYTES], oshares[4][SHAMIR_SHAREBYTES];
    crypto_random(other, sizeof other);
    assert_int_equal(shamir_split(other, 3, 4, xs, oshares), 0);
    memcpy(bad, shares, sizeof bad);
    memcpy(bad[1], oshares[1], SHAMIR_SHAREBYTES);
    assert_int_equal(shamir_combine(3, 4, xs, cb, out), -1);
}

/* Independent reference arithmetic for the hand-built shares: plain % on
 * 128-bit integers, nothing shared with shamir.c. */
static uint64_t ref_eval(const uint64_t *coef, int deg, uint64_t x)
{
    __uint128_t y = 0;
    for (int j = deg; j >= 0; j--) y = (y * x + coef[j]) % FIELD_P;
    return (uint64_t)y;
}

static void combine_hand_built(int t, const uint32_t *xs, const uint64_t coef_hi[][2],
                               const uint32_t limbs[8], const uint64_t (*expect)[8])
{
    uint8_t shares[3][SHAMIR_SHAREBYTES];
    for (int i = 0; i < t; i++)
        for (int l = 0; l < 8; l++) {
            const uint64_t coef[3] = {limbs[l], coef_hi[l][0], coef_hi[l][1]};
            const uint64_t y = ref_eval(coef, t - 1, xs[i]);
            if (expect != NULL) assert_int_equal(y, expect[i][l]);
            store64(shares[i] + 8 * l, y);
        }
    uint8_t out[SHAMIR_SECRETBYTES];
    assert_int_equal(shamir_combine((unsigned)t, (unsigned)t, xs, (const uint8_t (*)[SHAMIR_SHAREBYTES])shares, out), 0);
    for (int l = 0; l < 8; l++) assert_int_equal(le32(out + 4 * l), limbs[l]);
}

static void test_shamir_hand_built(void **state)
{
    (void)state;
    const uint64_t P = FIELD_P;

    /* t = 2, f(x) = 5 + (p-1)x = 5 - x: shares (1, 4) and (2, 3), by hand. */
    {
        uint8_t shares[2][SHAMIR_SHAREBYTES] = {{0}};
        for (int l = 0; l < 8; l++) {
            store64(shares[0] + 8 * l, 4);
            store64(shares[1] + 8 * l, 3);
        }
        const uint32_t xs[2] = {1, 2};
        uint8_t out[SHAMIR_SECRETBYTES];
        assert_int_equal(shamir_combine(2, 2, xs, (const uint8_t (*)[SHAMIR_SHAREBYTES])shares, out), 0);
        for (int l = 0; l < 8; l++) assert_int_equal(le32(out + 4 * l), 5);
    }

    /* t = 2 and t = 3, f(x) = s + (p-2)x + (p-1)x^2 = s - 2x - x^2 at x = 1,
     * 2, 3: s - 3, s - 8, s - 15, written out for s = 0 (values just below
     * p) and s = 2^32 - 1. */
    {
        const uint32_t limbs[8] = {0, 0xffffffffu, 0, 0xffffffffu, 0, 0xffffffffu, 0, 0xffffffffu};
        uint64_t coef[8][2];
        for (int l = 0; l < 8; l++) {
            coef[l][0] = P - 2;
            coef[l][1] = P - 1;
        }
        uint64_t expect[3][8];
        for (int l = 0; l < 8; l++) {
            const int hi = limbs[l] != 0;
            expect[0][l] = hi ? 0xfffffffcu : P - 3;
            expect[1][l] = hi ? 0xfffffff7u : P - 8;
            expect[2][l] = hi ? 0xfffffff0u : P - 15;
        }
        const uint32_t xs[3] = {1, 2, 3};
        combine_hand_built(3, xs, (const uint64_t (*)[2])coef, limbs, (const uint64_t (*)[8])expect);

        /* t = 2 with f(x) = s + (p-2)x: s - 2, s - 4. */
        uint64_t coef2[8][2];
        uint64_t expect2[2][8];
        for (int l = 0; l < 8; l++) {
            coef2[l][0] = P - 2;
            coef2[l][1] = 0;
            const int hi = limbs[l] != 0;
            expect2[0][l] = hi ? 0xfffffffdu : P - 2;
            expect2[1][l] = hi ? 0xfffffffbu : P - 4;
        }
        combine_hand_built(2, xs, (const uint64_t (*)[2])coef2, limbs, (const uint64_t (*)[8])expect2);
    }

    /* Extreme coordinates and coefficients (p - 1, 2^60, 1, 0), checked
     * against the reference arithmetic. */
    {
        const uint32_t limbs[8] = {0, 1, 0x80000000u, 0xffffffffu, 12345, 0xdeadbeefu, 7, 0xfffffffeu};
        const uint64_t c[8][2] = {{P - 1, P - 1}, {1, P - 1}, {UINT64_C(1) << 60, 3},
                                  {P - 1, 0},     {0, 1},     {P - 2, (UINT64_C(1) << 60) + 1},
                                  {2, P - 3},     {P - 1, P - 1}};
        const uint32_t xs3[3] = {0xffffffffu, 1, 0x80000001u};
        combine_hand_built(3, xs3, c, limbs, NULL);
        const uint32_t xs2[2] = {0xfffffffeu, 0xffffffffu};
        combine_hand_built(2, xs2, c, limbs, NULL);
    }
}

/* ---- share boxes ---------------------------------------------------------------------- */

static void test_sharebox(void **state)
{
    (void)state;
    uint8_t key[SHAREBOX_KEYBYTES], key2[SHAREBOX_KEYBYTES];
    uint8_t plain[SHAREBOX_PLAINBYTES], got[SHAREBOX_PLAINBYTES], box[SHAREBOX_BYTES],
        bad[SHAREBOX_BYTES];
    crypto_random(key, sizeof key);
    memcpy(key2, key, sizeof key2);
    key2[0] ^= 1;
    crypto_random(plain, sizeof plain);

    assert_int_equal(sharebox_seal(box, plain, key, 3, 10, 20), 0);
    assert_memory_not_equal(box, plain, sizeof plain);
    assert_int_equal(sharebox_open(got, box, key, 3, 10, 20), 0);
    assert_memory_equal(got, plain, sizeof plain);

    /* Deterministic given (key, round, from, to); the other direction of the
     * same pair gets a different nonce. */
    uint8_t box2[SHAREBOX_BYTES];
    assert_int_equal(sharebox_seal(box2, plain, key, 3, 10, 20), 0);
    assert_memory_equal(box, box2, sizeof box);
    assert_int_equal(sharebox_seal(box2, plain, key, 3, 20, 10), 0);
    assert_memory_not_equal(box, box2, sizeof plain);

    /* Any flipped bit: first byte, middle, last ciphertext byte, tag. */
    const size_t pos[] = {0, 50, SHAREBOX_PLAINBYTES - 1, SHAREBOX_PLAINBYTES, SHAREBOX_BYTES - 1};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        memcpy(bad, box, sizeof bad);
        bad[pos[i]] ^= 0x10;
        memset(got, 0xee, sizeof got);
        assert_int_equal(sharebox_open(got, bad, key, 3, 10, 20), -1);
        for (size_t j = 0; j < sizeof got; j++) assert_int_equal(got[j], 0);
    }
    assert_int_equal(sharebox_open(got, box, key, 4, 10, 20), -1);  /* replay into round 4 */
    assert_int_equal(sharebox_open(got, box, key, 3, 20, 10), -1);  /* swapped from/to */
    assert_int_equal(sharebox_open(got, box, key, 3, 10, 21), -1);  /* re-routed */
    assert_int_equal(sharebox_open(got, box, key, 3, 11, 20), -1);  /* other sender */
    assert_int_equal(sharebox_open(got, box, key2, 3, 10, 20), -1); /* wrong key */
}

/* ---- identity ---------------------------------------------------------------------------- */

static void test_identity_sign_verify(void **state)
{
    (void)state;
    uint8_t pk[IDENTITY_PUBLICKEYBYTES], sk[IDENTITY_SECRETKEYBYTES], pk2[IDENTITY_PUBLICKEYBYTES],
        sk2[IDENTITY_SECRETKEYBYTES], sig[IDENTITY_SIGBYTES], bad[IDENTITY_SIGBYTES];
    uint8_t c_pk[KA_PUBLICKEYBYTES], s_pk[KA_PUBLICKEYBYTES], x[KA_PUBLICKEYBYTES];
    assert_int_equal(identity_keypair(pk, sk), 0);
    assert_int_equal(identity_keypair(pk2, sk2), 0);
    uint8_t pko[IDENTITY_PUBLICKEYBYTES];
    identity_pk_of(pko, sk);
    assert_memory_equal(pko, pk, sizeof pk);

    crypto_random(c_pk, sizeof c_pk);
    crypto_random(s_pk, sizeof s_pk);
    assert_int_equal(identity_sign_keys(sig, sk, 9, 4, c_pk, s_pk), 0);
    assert_int_equal(identity_verify_keys(sig, pk, 9, 4, c_pk, s_pk), 0);

    for (size_t bit = 0; bit < 8 * IDENTITY_SIGBYTES; bit += 37) {
        memcpy(bad, sig, sizeof bad);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(identity_verify_keys(bad, pk, 9, 4, c_pk, s_pk), -1);
    }
    assert_int_equal(identity_verify_keys(sig, pk, 10, 4, c_pk, s_pk), -1);
    assert_int_equal(identity_verify_keys(sig, pk, 9, 5, c_pk, s_pk), -1);
    memcpy(x, c_pk, sizeof x);
    x[31] ^= 1;
    assert_int_equal(identity_verify_keys(sig, pk, 9, 4, x, s_pk), -1);
    memcpy(x, s_pk, sizeof x);
    x[0] ^= 0x80;
    assert_int_equal(identity_verify_keys(sig, pk, 9, 4, c_pk, x), -1);
    /* c_pk and s_pk swapped. */
    assert_int_equal(identity_verify_keys(sig, pk, 9, 4, s_pk, c_pk), -1);
    /* Another site's identity. */
    assert_int_equal(identity_verify_keys(sig, pk2, 9, 4, c_pk, s_pk), -1);
}

/* identity_sign / identity_verify: "medfed-" || label || 0 || msg. A
 * signature verifies only under its own label, message and key: one made for
 * one medfed message (advertise-v2) is never valid for another (consistency-v1). */
static void test_identity_labelled(void **state)
{
    (void)state;
    uint8_t pk[IDENTITY_PUBLICKEYBYTES], sk[IDENTITY_SECRETKEYBYTES], pk2[IDENTITY_PUBLICKEYBYTES],
        sk2[IDENTITY_SECRETKEYBYTES], sig[IDENTITY_SIGBYTES], bad[IDENTITY_SIGBYTES];
    assert_int_equal(identity_keypair(pk, sk), 0);
    assert_int_equal(identity_keypair(pk2, sk2), 0);
    uint8_t msg[48];
    crypto_random(msg, sizeof msg);

    assert_int_equal(identity_sign(sig, sk, "consistency-v1", msg, sizeof msg), 0);
    assert_int_equal(identity_verify(sig, pk, "consistency-v1", msg, sizeof msg), 0);
    /* Under another label, of the same length and of another length. */
    assert_int_equal(identity_verify(sig, pk, "consistency-v2", msg, sizeof msg), -1);
    assert_int_equal(identity_verify(sig, pk, "advertise-v2", msg, sizeof msg), -1);
    /* The label / message boundary is part of what is signed. */
    assert_int_equal(identity_sign(sig, sk, "ab", "c", 1), 0);
    assert_int_equal(identity_verify(sig, pk, "ab", "c", 1), 0);
    assert_int_equal(identity_verify(sig, pk, "a", "bc", 2), -1);
    assert_int_equal(identity_sign(sig, sk, "consistency-v1", msg, sizeof msg), 0);
    /* Flipped bits anywhere in the signature, an altered or shortened message,
     * another key, an all-zero signature. */
    for (size_t bit = 0; bit < 8 * IDENTITY_SIGBYTES; bit += 29) {
        memcpy(bad, sig, sizeof bad);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(identity_verify(bad, pk, "consistency-v1", msg, sizeof msg), -1);
    }
    msg[17] ^= 4;
    assert_int_equal(identity_verify(sig, pk, "consistency-v1", msg, sizeof msg), -1);
    msg[17] ^= 4;
    assert_int_equal(identity_verify(sig, pk, "consistency-v1", msg, sizeof msg - 1), -1);
    assert_int_equal(identity_verify(sig, pk2, "consistency-v1", msg, sizeof msg), -1);
    memset(bad, 0, sizeof bad);
    assert_int_equal(identity_verify(bad, pk, "consistency-v1", msg, sizeof msg), -1);
    /* Another key's valid signature on the same label and message. */
    assert_int_equal(identity_sign(bad, sk2, "consistency-v1", msg, sizeof msg), 0);
    assert_int_equal(identity_verify(bad, pk, "consistency-v1", msg, sizeof msg), -1);
    assert_int_equal(identity_verify(bad, pk2, "consistency-v1", msg, sizeof msg), 0);
}

static void test_identity_hex(void **state)
{
    (void)state;
    uint8_t pk[IDENTITY_PUBLICKEYBYTES], sk[IDENTITY_SECRETKEYBYTES], back[IDENTITY_PUBLICKEYBYTES];
    assert_int_equal(identity_keypair(pk, sk), 0);
    char hex[IDENTITY_HEXBYTES];
    identity_pk_to_hex(hex, pk);
    assert_int_equal(strlen(hex), 64);
    for (size_t i = 0; i < 64; i++) assert_true((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'));
    assert_int_equal(identity_pk_from_hex(back, hex), 0);
    assert_memory_equal(back, pk, sizeof pk);

    const uint8_t known[4] = {0x00, 0x1f, 0xa0, 0xff};
    uint8_t kpk[IDENTITY_PUBLICKEYBYTES] = {0};
    memcpy(kpk, known, sizeof known);
    identity_pk_to_hex(hex, kpk);
    assert_memory_equal(hex, "001fa0ff0000", 12);

    char bad[80];
    memcpy(bad, hex, sizeof hex);
    bad[63] = '\0'; /* 63 digits */
    assert_int_equal(identity_pk_from_hex(back, bad), -1);
    memcpy(bad, hex, 64);
    bad[64] = '0';
    bad[65] = '\0'; /* 65 digits */
    assert_int_equal(identity_pk_from_hex(back, bad), -1);
    memcpy(bad, hex, sizeof hex);
    bad[10] = 'g';
    assert_int_equal(identity_pk_from_hex(back, bad), -1);
    memcpy(bad, hex, sizeof hex);
    bad[2] = 'A'; /* upper case is not the canonical spelling */
    assert_int_equal(identity_pk_from_hex(back, bad), -1);
    memcpy(bad, hex, 64);
    bad[64] = '\n';
    bad[65] = '\0';
    assert_int_equal(identity_pk_from_hex(back, bad), -1);
    bad[0] = ' ';
    memcpy(bad + 1, hex, sizeof hex);
    assert_int_equal(identity_pk_from_hex(back, bad), -1);
    assert_int_equal(identity_pk_from_hex(back, ""), -1);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_identity_key_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/medfed-test-crypto-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], text[200], err[256];
    snprintf(path, sizeof path, "%s/key.sec", dir);

    uint8_t pk[IDENTITY_PUBLICKEYBYTES], sk[IDENTITY_SECRETKEYBYTES], got[IDENTITY_SECRETKEYBYTES];
    assert_int_equal(identity_keypair(pk, sk), 0);
    err[0] = '\0';
    assert_int_equal(identity_save_secret(path, sk, err, sizeof err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 129);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), 0);
    assert_memory_equal(got, sk, sizeof sk);

    /* The file's exact text. */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    const size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    assert_int_equal(len, 129);
    assert_int_equal(text[128], '\n');
    char hex[129];
    sodium_bin2hex(hex, sizeof hex, sk, sizeof sk);
    assert_memory_equal(text, hex, 128);

    /* Saving over an existing, loosely-permissioned file tightens it. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(identity_save_secret(path, sk, err, sizeof err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* Group or others may read: refused, with the fix in the message. */
    assert_int_equal(chmod(path, 0644), 0);
    memset(got, 0xee, sizeof got);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "readable by others"));
    assert_non_null(strstr(err, "(mode 0644)"));
    assert_non_null(strstr(err, "chmod 600"));
    assert_non_null(strstr(err, "key.sec"));
    for (size_t i = 0; i < sizeof got; i++) assert_int_equal(got[i], 0);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "readable by others"));
    assert_int_equal(chmod(path, 0602), 0);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "writable by others (mode 0602)"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(identity_load_secret(path, got, NULL, 0), 0); /* err is optional */

    /* Truncated, too long, non-hex, no newline, wrong public half. */
    char bad[200];
    write_file(path, text, 64, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "wrong length"));
    memcpy(bad, text, 129);
    bad[129] = '\n';
    write_file(path, bad, 130, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    memcpy(bad, text, 129);
    bad[128] = '0';
    write_file(path, bad, 129, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    memcpy(bad, text, 129);
    bad[77] = 'x';
    write_file(path, bad, 129, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a hex"));
    memcpy(bad, text, 129);
    bad[127] = bad[127] == '0' ? '1' : '0'; /* last digit of the public half */
    write_file(path, bad, 129, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "corrupt"));
    write_file(path, "", 0, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);

    /* Upper-case hex is the same key. */
    for (size_t i = 0; i < 128; i++)
        bad[i] = (text[i] >= 'a' && text[i] <= 'f') ? (char)(text[i] - 'a' + 'A') : text[i];
    bad[128] = '\n';
    write_file(path, bad, 129, 0600);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), 0);
    assert_memory_equal(got, sk, sizeof sk);

    /* Missing file; a directory. */
    unlink(path);
    assert_int_equal(identity_load_secret(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(identity_load_secret(dir, got, err, sizeof err), -1);
    /* Saving into a directory that does not exist. */
    char nodir[160];
    snprintf(nodir, sizeof nodir, "%s/missing/key.sec", dir);
    assert_int_equal(identity_save_secret(nodir, sk, err, sizeof err), -1);

    assert_int_equal(rmdir(dir), 0); /* nothing (no temp file) left behind */
}

/* ---- misuse aborts ----------------------------------------------------------------------- */

static void expect_abort(void (*fn)(void))
{
    fflush(NULL);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL) _exit(2);
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void misuse_sign(void)
{
    uint32_t acc[4] = {0};
    const uint8_t seed[PRG_SEEDBYTES] = {0};
    if (prg_add(PRG_DEFAULT, seed, acc, 4, 0) != 0) _exit(1);
}
static void misuse_null_seed(void)
{
    uint32_t acc[4] = {0};
    if (prg_add(PRG_DEFAULT, NULL, acc, 4, 1) != 0) _exit(1);
}
static void misuse_t_zero(void)
{
    uint8_t secret[32] = {0}, shares[2][SHAMIR_SHAREBYTES];
    const uint32_t xs[2] = {1, 2};
    if (shamir_split(secret, 0, 2, xs, shares) != 0) _exit(1);
}
static void misuse_t_above_n(void)
{
    uint8_t secret[32] = {0}, shares[2][SHAMIR_SHAREBYTES];
    const uint32_t xs[2] = {1, 2};
    if (shamir_split(secret, 3, 2, xs, shares) != 0) _exit(1);
}
static void misuse_combine_t_zero(void)
{
    uint8_t secret[32], shares[2][SHAMIR_SHAREBYTES] = {{0}};
    const uint32_t xs[2] = {1, 2};
    if (shamir_combine(0, 2, xs, (const uint8_t (*)[SHAMIR_SHAREBYTES])shares, secret) != 0) _exit(1);
}
static void misuse_null_context(void)
{
    uint8_t seed[32], sk[32] = {1}, pk[32] = {9};
    if (ka_derive(seed, sk, pk, pk, NULL, 1, 1, 2) != 0) _exit(1);
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_sign);
    expect_abort(misuse_null_seed);
    expect_abort(misuse_t_zero);
    expect_abort(misuse_t_above_n);
    expect_abort(misuse_combine_t_zero);
    expect_abort(misuse_null_context);
}

int main(void)
{
    if (crypto_init() != 0) {
        fprintf(stderr, "crypto_init failed\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_ka_agree),
        cmocka_unit_test(test_ka_low_order),
        cmocka_unit_test(test_prg_known_answers),
        cmocka_unit_test(test_prg_lengths_match_reference),
        cmocka_unit_test(test_prg_deterministic_and_distinct),
        cmocka_unit_test(test_prg_add_sub_roundtrip),
        cmocka_unit_test(test_prg_masks_cancel),
        cmocka_unit_test(test_prg_chi_square),
        cmocka_unit_test(test_shamir_all_subsets),
        cmocka_unit_test(test_shamir_edges),
        cmocka_unit_test(test_shamir_rejects),
        cmocka_unit_test(test_shamir_hand_built),
        cmocka_unit_test(test_sharebox),
        cmocka_unit_test(test_identity_sign_verify),
        cmocka_unit_test(test_identity_labelled),
        cmocka_unit_test(test_identity_hex),
        cmocka_unit_test(test_identity_key_files),
        cmocka_unit_test(test_misuse_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
