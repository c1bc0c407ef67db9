/*
 * shamir.c - t-of-n Shamir secret sharing of a 32-byte secret over the prime
 * field GF(p), p = 2^61 - 1 (a Mersenne prime: reduction is a shift and an
 * add, and products fit in 128 bits).
 *
 * The secret is cut into 8 little-endian 32-bit limbs; each limb is the
 * constant term of its own random polynomial of degree t-1. A share is the 8
 * polynomial values at the holder's x, each 8 bytes little-endian. Limbs are
 * 32 bits although the field holds 61 so that a reconstruction from wrong
 * shares (of another secret, another round, a garbled element) almost surely
 * lands outside [0, 2^32) and is detected. It is a sanity check, not
 * integrity: the error in the secret is lambda_i * delta, and lambda_i is a
 * small integer for small x (15 for x = 7 among {5, 6, 7}), so a small delta
 * can stay in range, and an adversary can pick delta at will.
 *
 * Field elements that derive from the secret or the coefficients only go
 * through branch-free arithmetic. The x coordinates are public.
 */
#include "crypto/crypto.h"
#include "crypto/internal.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define LIMBS (SHAMIR_SECRETBYTES / 4)
#define FIELD_P ((UINT64_C(1) << 61) - 1)

/* ---- GF(2^61 - 1) ------------------------------------------------------------ */

/* Reduces r < 2^62 to [0, p), without a data-dependent branch. */
static uint64_t fe_reduce_once(uint64_t r)
{
    const uint64_t ge = (uint64_t)0 - (uint64_t)(r >= FIELD_P); /* all-ones if r >= p */
    return r - (FIELD_P & ge);
}

static uint64_t fe_add(uint64_t a, uint64_t b)
{
    return fe_reduce_once(a + b); /* a, b < p: sum < 2^62 */
}

static uint64_t fe_sub(uint64_t a, uint64_t b)
{
    return fe_reduce_once(a + FIELD_P - b); /* a + p - b in (0, 2p) */
}

static uint64_t fe_mul(uint64_t a, uint64_t b)
{
    /* a, b < 2^61, so a*b < 2^122. Since 2^61 == 1 (mod p), the high part
     * (bits 61..121) folds onto the low 61 bits with an add. */
    const __uint128_t prod = (__uint128_t)a * b;
    const uint64_t lo = (uint64_t)prod & FIELD_P;
    const uint64_t hi = (uint64_t)(prod >> 61); /* < 2^61 */
    return fe_reduce_once(lo + hi);             /* < 2^62 */
}

/* a^(p-2) = a^-1 for a != 0 (Fermat). Only used on public values (x
 * coordinates and their differences), but the exponent is fixed anyway. */
static uint64_t fe_inv(uint64_t a)
{
    uint64_t result = 1, base = a;
    for (uint64_t e = FIELD_P - 2; e != 0; e >>= 1) {
        if (e & 1) result = fe_mul(result, base);
        base = fe_mul(base, base);
    }
    return result;
}

/* Uniform in [0, p): 61 random bits, rejecting the single value 2^61 - 1 = p
 * (probability 2^-61, so the loop essentially never repeats). */
static uint64_t fe_random(void)
{
    uint8_t b[8];
    uint64_t v;
    do {
        randombytes_buf(b, sizeof b);
        v = crypto_load64_le(b) & FIELD_P;
    } while (v == FIELD_P);
    sodium_memzero(b, sizeof b);
    return v;
}

/* ---- input checks ------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* 0 if all xs[0..k) are non-zero and distinct. x == 0 would hand out the
 * secret itself; a repeat breaks interpolation. Sorting a copy keeps split
 * O(n log n) for large rosters; the copy holds nothing secret. */
static int xs_valid(const uint32_t *xs, size_t k)
{
    for (size_t i = 0; i < k; i++)
        if (xs[i] == 0) return -1;
    if (k < 2) return 0;
    uint32_t *sorted = malloc(k * sizeof *sorted);
    if (sorted == NULL) return -1;
    memcpy(sorted, xs, k * sizeof *sorted);
    qsort(sorted, k, sizeof *sorted, cmp_u32);
    int rc = 0;
    for (size_t i = 1; i < k; i++)
        if (sorted[i] == sorted[i - 1]) rc = -1;
    free(sorted);
    return rc;
}

/* ---- split / combine ------------------------------------------------------------- */

int shamir_split(const uint8_t secret[SHAMIR_SECRETBYTES], unsigned t, unsigned n,
                 const uint32_t *xs, uint8_t (*shares)[SHAMIR_SHAREBYTES])
{
    CRYPTO_REQUIRE(secret != NULL && xs != NULL && shares != NULL);
    CRYPTO_REQUIRE(t >= 1 && t <= n && n <= SHAMIR_MAX_SHARES);

    if (xs_valid(xs, n) != 0) return -1;

    /* coef[1..t-1] of the current limb's polynomial; coef[0] is the limb. */
    uint64_t *coef = malloc((size_t)t * sizeof *coef);
    if (coef == NULL) return -1;

    for (size_t l = 0; l < LIMBS; l++) {
        coef[0] = crypto_load32_le(secret + 4 * l);
        for (size_t j = 1; j < t; j++) coef[j] = fe_random();
        for (size_t i = 0; i < n; i++) {
            /* Horner: f(x) = c0 + x(c1 + x(c2 + ...)). */
            const uint64_t x = xs[i];
            uint64_t y = coef[t - 1];
            for (size_t j = t - 1; j-- > 0;) y = fe_add(fe_mul(y, x), coef[j]);
            crypto_store64_le(shares[i] + 8 * l, y);
        }
    }
    /* The coefficients are as secret as the secret: any t-1 shares plus them
     * give it away. */
    sodium_memzero(coef, (size_t)t * sizeof *coef);
    free(coef);
    return 0;
}

int shamir_combine(unsigned t, unsigned k, const uint32_t *xs,
                   const uint8_t (*shares)[SHAMIR_SHAREBYTES], uint8_t secret[SHAMIR_SECRETBYTES])
{
    CRYPTO_REQUIRE(secret != NULL);
    CRYPTO_REQUIRE(t >= 1 && t <= SHAMIR_MAX_SHARES);

    /* Zero until success, so that no path leaves a wrong "secret" behind. */
    sodium_memzero(secret, SHAMIR_SECRETBYTES);
    if (k < t) return -1;
    CRYPTO_REQUIRE(xs != NULL && shares != NULL);

    /* Only the first t shares are read (the rest are ignored, not checked):
     * they must sit at distinct non-zero x and hold canonical elements. */
    if (xs_valid(xs, t) != 0) return -1;
    for (size_t i = 0; i < t; i++)
        for (size_t l = 0; l < LIMBS; l++)
            if (crypto_load64_le(shares[i] + 8 * l) >= FIELD_P) return -1;

    /* Lagrange at 0: f(0) = sum_i y_i * prod_{j != i} x_j / (x_j - x_i).
     * Each coefficient is computed on the fly (t^2 products, t inversions):
     * no allocation. */
    uint64_t acc[LIMBS] = {0};
    for (size_t i = 0; i < t; i++) {
        uint64_t num = 1, den = 1;
        for (size_t j = 0; j < t; j++) {
            if (j == i) continue;
            num = fe_mul(num, xs[j]);
            den = fe_mul(den, fe_sub(xs[j], xs[i]));
        }
        const uint64_t lambda = fe_mul(num, fe_inv(den));
        for (size_t l = 0; l < LIMBS; l++)
            acc[l] = fe_add(acc[l], fe_mul(lambda, crypto_load64_le(shares[i] + 8 * l)));
    }

    /* A limb outside 32 bits cannot come from shamir_split: the shares are
     * wrong (corrupt, mixed from different secrets, or fewer than the real
     * threshold). Checked on all limbs without an early exit. */
    uint64_t high = 0;
    for (size_t l = 0; l < LIMBS; l++) high |= acc[l] >> 32;
    if (high != 0) {
        sodium_memzero(acc, sizeof acc);
        return -1;
    }
    for (size_t l = 0; l < LIMBS; l++) crypto_store32_le(secret + 4 * l, (uint32_t)acc[l]);
    sodium_memzero(acc, sizeof acc);
    return 0;
}
