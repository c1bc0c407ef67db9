/*
 * rng.h - a small seeded, NON-cryptographic generator (xoshiro256**, seeded
 * through splitmix64) for data partitioning and simulation choices. Never use
 * it for masks or keys: those come from crypto/.
 */
#ifndef MEDFED_RNG_H
#define MEDFED_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
double rng_uniform(rng_t *r);                  /* [0, 1) */
uint64_t rng_below(rng_t *r, uint64_t bound);  /* [0, bound), unbiased; bound > 0 */
double rng_normal(rng_t *r);                   /* standard normal */
double rng_gamma(rng_t *r, double shape);      /* Gamma(shape, 1), shape > 0 */
void rng_shuffle_i64(rng_t *r, int64_t *a, int64_t n);

#endif
