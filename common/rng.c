/*
 * rng.c - xoshiro256** seeded through splitmix64, plus the few distributions the
 * simulator needs. NOT cryptographic: masks and keys come from crypto/.
 *
 * Reference: Blackman & Vigna, "Scrambled linear pseudorandom number
 * generators" (2018); Marsaglia & Tsang, "A simple method for generating gamma
 * variables" (2000).
 */
#include "common/rng.h"

#include <math.h>
#include <stddef.h>

static uint64_t rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* splitmix64 spreads one 64-bit seed over the 256-bit state; it never yields
 * four zero words in a row, so the all-zero state (a fixed point) is avoided. */
static uint64_t rng_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void rng_seed(rng_t *r, uint64_t seed)
{
    if (r == NULL)
        return;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = rng_splitmix64(&x);
}

uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return result;
}

double rng_uniform(rng_t *r)
{
    /* The top 53 bits fill a double's mantissa exactly: values k * 2^-53. */
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t rng_below(rng_t *r, uint64_t bound)
{
    if (bound <= 1)
        return 0; /* bound 0 is a caller error; 0 is the only safe answer */
    /* Rejection: discard the lowest (2^64 mod bound) values so that every
     * residue is equally likely. threshold < bound, so at most half of the
     * draws are rejected even in the worst case. */
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t x = rng_next(r);
        if (x >= threshold)
            return x % bound;
    }
}

double rng_normal(rng_t *r)
{
    /* Marsaglia's polar method. The second variate is dropped: rng_t has no
     * room for a cache, and keeping one would make results depend on call
     * history in a way callers cannot see. */
    for (;;) {
        double u = 2.0 * rng_uniform(r) - 1.0;
        double v = 2.0 * rng_uniform(r) - 1.0;
        double q = u * u + v * v;
        if (q > 0.0 && q < 1.0)
            return u * sqrt(-2.0 * log(q) / q);
    }
}

/* Marsaglia-Tsang for shape >= 1. */
static double rng_gamma_ge1(rng_t *r, double shape)
{
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = rng_uniform(r);
        double x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2)
            return d * v;
        /* log(0) = -inf is accepted here, which is correct (u = 0 < anything). */
        if (log(u) < 0.5 * x2 + d * (1.0 - v + log(v)))
            return d * v;
    }
}

double rng_gamma(rng_t *r, double shape)
{
    if (!(shape > 0.0) || !isfinite(shape))
        return NAN; /* caller error: Gamma(shape) undefined */
    if (shape >= 1.0)
        return rng_gamma_ge1(r, shape);
    /* Boost: if G ~ Gamma(a+1) and U ~ U(0,1] then G * U^(1/a) ~ Gamma(a).
     * U is taken in (0, 1] so the power is never 0^(1/a) by construction;
     * it may still underflow to 0 for very small a, which callers handle. */
    double g = rng_gamma_ge1(r, shape + 1.0);
    double u = 1.0 - rng_uniform(r);
    return g * pow(u, 1.0 / shape);
}

void rng_shuffle_i64(rng_t *r, int64_t *a, int64_t n)
{
    if (r == NULL || a == NULL || n < 2)
        return;
    /* Fisher-Yates, from the end: a[i] swaps with a uniform a[0..i]. */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(r, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
