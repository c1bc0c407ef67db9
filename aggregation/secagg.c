#include "aggregation/secagg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

int secagg_quant_params(double clip, int64_t max_weight, unsigned clients, quant_t *q, char *err,
                        size_t errlen)
{
    if (!(clip > 0) || !isfinite(clip) || max_weight <= 0 || clients == 0) {
        snprintf(err, errlen, "bad quantisation inputs (clip %g, weight %lld, clients %u)", clip,
                 (long long)max_weight, clients);
        return -1;
    }
    /* Each client's rounding adds at most 1 per value: keep `clients` spare. */
    double room = 2147483647.0 - (double)clients;
    double scale = floor(room / (clip * (double)max_weight));
    if (scale < 1.0) {
        snprintf(err, errlen, "clip %g x total weight %lld leaves no fixed-point precision", clip,
                 (long long)max_weight);
        return -1;
    }
    q->clip = clip;
    q->scale = scale;
    return 0;
}

size_t secagg_encode(const float *delta, size_t n, int64_t weight, const quant_t *q,
                     const uint32_t *dither, uint32_t *out)
{
    const double k = (double)weight * q->scale, c = q->clip;
    size_t clipped = 0;
    for (size_t i = 0; i < n; i++) {
        double d = delta[i];
        if (!(d <= c)) { /* also catches NaN: encoded as +C, counted */
            clipped++;
            d = c;
        } else if (d < -c) {
            clipped++;
            d = -c;
        }
        double v = d * k, fl = floor(v);
        /* Round up with probability frac(v): unbiased. */
        double u = (double)dither[i] * (1.0 / 4294967296.0);
        int64_t r = (int64_t)fl + (u < v - fl);
        out[i] = (uint32_t)r;
    }
    out[n] = (uint32_t)weight;
    return clipped;
}

int secagg_decode(const uint32_t *sum, size_t n, const quant_t *q, int64_t max_weight,
                  float *avg, int64_t *weight, char *err, size_t errlen)
{
    int64_t w = sum[n];
    if (w <= 0 || w > max_weight) {
        snprintf(err, errlen, "unmasked weight %lld outside (0, %lld]: a client misreported its "
                 "sample count", (long long)w, (long long)max_weight);
        return -1;
    }
    const double inv = 1.0 / (q->scale * (double)w);
    for (size_t i = 0; i < n; i++) {
        uint32_t word = sum[i]; /* read before the (possibly aliasing) write */
        float v = (float)((double)(int32_t)word * inv);
        memcpy(&avg[i], &v, sizeof v);
    }
    *weight = w;
    return 0;
}

void secagg_add_le(uint32_t *acc, const uint8_t *y_le, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, y_le + 4 * i, sizeof v);
        acc[i] += v;
    }
}

unsigned secagg_min_threshold(unsigned n, double collusion)
{
    unsigned c = (unsigned)floor(collusion * n + 1e-9);
    if (c > n) c = n;
    return (n + c) / 2 + 1;
}

int secagg_threshold(unsigned n, double dropout, double collusion, unsigned *t, char *err,
                     size_t errlen)
{
    if (n < 2) {
        snprintf(err, errlen, "secure aggregation needs at least 2 clients in the cohort, got %u", n);
        return -1;
    }
    if (!(dropout >= 0 && dropout < 1) || !(collusion >= 0 && collusion < 1)) {
        snprintf(err, errlen, "dropout (%g) and collusion (%g) must be fractions in [0, 1)",
                 dropout, collusion);
        return -1;
    }
    unsigned need = secagg_min_threshold(n, collusion);
    unsigned survivors = n - (unsigned)ceil(dropout * n - 1e-9);
    if (need > survivors) {
        snprintf(err, errlen,
                 "unsafe settings for %u clients: privacy needs threshold >= %u (more than half "
                 "of the cohort plus %.0f%% colluders), but with %.0f%% dropouts only %u are expected to "
                 "finish; lower the dropout or collusion estimate or enlarge the cohort",
                 n, need, collusion * 100, dropout * 100, survivors);
        return -1;
    }
    *t = need;
    return 0;
}

unsigned secagg_degree(unsigned n, unsigned requested)
{
    if (n <= 1) return 0;
    unsigned k = requested;
    if (k == 0) k = n <= 16 ? n - 1 : 2 * (unsigned)ceil(1.5 * log2((double)n));
    if (k >= n - 1) return n - 1;
    return k + (k & 1); /* even, so the cycle construction is regular */
}

int secagg_graph(unsigned n, unsigned k, uint64_t seed, uint8_t *adj)
{
    if (n == 0) return -1;
    memset(adj, 0, (size_t)n * n);
    if (k >= n - 1) {
        for (unsigned i = 0; i < n; i++)
            for (unsigned j = 0; j < n; j++) adj[(size_t)i * n + j] = i != j;
        return 0;
    }
    if (k & 1) return -1;
    int64_t *order = malloc(n * sizeof *order);
    if (!order) return -1;
    for (unsigned i = 0; i < n; i++) order[i] = i;
    rng_t r;
    rng_seed(&r, seed);
    rng_shuffle_i64(&r, order, n);
    for (unsigned p = 0; p < n; p++)
        for (unsigned d = 1; d <= k / 2; d++) {
            int64_t a = order[p], b = order[(p + d) % n];
            adj[(size_t)a * n + (size_t)b] = adj[(size_t)b * n + (size_t)a] = 1;
        }
    free(order);
    return 0;
}
