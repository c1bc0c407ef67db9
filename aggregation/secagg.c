#include "aggregation/secagg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "common/rng.h"

int secagg_fits(const quant_t *q, int64_t weight, unsigned clients)
{
    if (q->bits < ENC_BITS_MIN || q->bits > ENC_BITS_MAX) return 0;
    /* In doubles: exact below 2^53, and every term here is far below that. */
    return q->clip * q->scale * (double)weight + (double)clients <= ldexp(1.0, (int)q->bits - 1) - 1;
}

int secagg_quant_params(double clip, int64_t max_weight, unsigned clients, unsigned bits,
                        quant_t *q, char *err, size_t errlen)
{
    if (!(clip > 0) || !isfinite(clip) || max_weight <= 0 || clients == 0 ||
        bits < ENC_BITS_MIN || bits > ENC_BITS_MAX) {
        snprintf(err, errlen, "bad quantisation inputs (clip %g, weight %lld, clients %u, %u bits)",
                 clip, (long long)max_weight, clients, bits);
        return -1;
    }
    /* Each client's rounding adds at most 1 per value: keep `clients` spare. */
    const double room = ldexp(1.0, (int)bits - 1) - 1 - (double)clients;
    const double x = room / (clip * (double)max_weight);
    /* The largest scale that fits: an integer, as it always was at 32 bits;
     * below one unit per clip x sample (a narrow width, a large weight) a
     * fraction, floored to 2^-24: exact in a double, the same on every site. */
    double scale = x >= 1.0 ? floor(x) : ldexp(floor(ldexp(x, 24)), -24);
    *q = (quant_t){clip, scale, bits};
    if (scale > 0 && !secagg_fits(q, max_weight, clients)) /* x was rounded up */
        q->scale = scale = x >= 1.0 ? scale - 1 : scale - ldexp(1.0, -24);
    if (!(room > 0) || !(scale > 0)) {
        snprintf(err, errlen, "clip %g x total weight %lld leaves no fixed-point precision in %u "
                 "bits; raise upload_bits", clip, (long long)max_weight, bits);
        return -1;
    }
    return 0;
}

double secagg_loss_scale(int64_t max_weight, unsigned clients)
{
    if (max_weight <= 0) return 0;
    /* one unit of slack for the division's rounding */
    return (4294967295.0 - (double)clients - 1) / (SECAGG_LOSS_MAX * (double)max_weight);
}

int secagg_loss_scale_ok(double s, int64_t weight)
{
    return s > 0 && isfinite(s) && weight > 0 && SECAGG_LOSS_MAX * s * (double)weight + 1 <= 4294967295.0;
}

uint32_t secagg_encode_loss(double loss, int64_t weight, double s)
{
    if (!(loss <= SECAGG_LOSS_MAX)) loss = SECAGG_LOSS_MAX; /* NaN too */
    if (loss < 0) loss = 0;
    double v = floor(loss * (double)weight * s + 0.5);
    return v >= 4294967295.0 ? UINT32_MAX : (uint32_t)v;
}

double secagg_decode_loss(uint32_t sum, int64_t weight, double s)
{
    if (weight <= 0 || !(s > 0)) return NAN;
    double l = (double)sum / (s * (double)weight);
    return l <= SECAGG_LOSS_MAX + 1e-6 ? l : NAN;
}

double secagg_next_clip(const float *mean, size_t n, double headroom, double ceiling)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(mean[i]);
        if (a > m && isfinite(a)) m = a;
    }
    double c = headroom * (double)m, lo = ceiling / SECAGG_CLIP_RANGE;
    return c > ceiling ? ceiling : c < lo ? lo : c;
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
    if (q->bits < ENC_BITS_MIN || q->bits > ENC_BITS_MAX) {
        snprintf(err, errlen, "upload width %u bits outside [%d, %d]", q->bits, ENC_BITS_MIN,
                 ENC_BITS_MAX);
        return -1;
    }
    int64_t w = sum[n];
    if (w <= 0 || w > max_weight) {
        snprintf(err, errlen, "unmasked weight %lld outside (0, %lld]: a client misreported its "
                 "sample count", (long long)w, (long long)max_weight);
        return -1;
    }
    const double inv = 1.0 / (q->scale * (double)w);
    for (size_t i = 0; i < n; i++) {
        uint32_t word = sum[i]; /* read before the (possibly aliasing) write */
        float v = (float)((double)enc_signed(word, q->bits) * inv);
        memcpy(&avg[i], &v, sizeof v);
    }
    *weight = w;
    return 0;
}

unsigned secagg_colluders(unsigned n, unsigned federation, double collusion)
{
    unsigned of = federation > n ? federation : n;
    return (unsigned)floor(collusion * of + 1e-9);
}

unsigned secagg_min_threshold(unsigned n, double collusion)
{
    unsigned c = secagg_colluders(n, 0, collusion);
    if (c > n) c = n;
    return (n + c) / 2 + 1;
}

/* t for n sharing sites of which c may collude; -1 with the reason when the
 * colluders could be all but one of them, or dropouts leave fewer than t. */
static int threshold_for(unsigned n, unsigned c, double dropout, double collusion, unsigned *t,
                         char *err, size_t errlen)
{
    unsigned need = (n + c) / 2 + 1;
    unsigned survivors = n - (unsigned)ceil(dropout * n - 1e-9);
    if (n < c + 2) {
        snprintf(err, errlen, "unsafe settings: a cohort of %u with %u possible colluders (%.0f%% of "
                 "the federation) leaves fewer than two honest sites; enlarge the cohort", n, c,
                 collusion * 100);
        return -1;
    }
    if (need > survivors) {
        snprintf(err, errlen,
                 "unsafe settings for %u clients: privacy needs threshold >= %u (more than half "
                 "of the cohort plus %u colluders, %.0f%% of the federation), but with %.0f%% "
                 "dropouts only %u are expected to finish; lower the dropout or collusion "
                 "estimate or enlarge the cohort",
                 n, need, c, collusion * 100, dropout * 100, survivors);
        return -1;
    }
    *t = need;
    return 0;
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
    return threshold_for(n, secagg_colluders(n, 0, collusion), dropout, collusion, t, err, errlen);
}

/* log P[Bin(k, p) = j] */
static double binom_log_pmf(unsigned k, double p, unsigned j)
{
    double lc = lgamma(k + 1.0) - lgamma(j + 1.0) - lgamma(k - j + 1.0);
    double a = j ? j * log(p) : 0, b = k - j ? (k - j) * log1p(-p) : 0;
    return lc + a + b;
}

/* P[Bin(k, p) >= x], summed directly (no 1 - tail: the tails are tiny). */
static double binom_upper(unsigned k, double p, long x)
{
    if (x <= 0) return 1.0;
    if ((unsigned long)x > k) return 0.0;
    if (p <= 0) return 0.0;
    if (p >= 1) return 1.0;
    double s = 0;
    for (unsigned j = (unsigned)x; j <= k; j++) s += exp(binom_log_pmf(k, p, j));
    return s;
}

/* P[Bin(k, p) < x] */
static double binom_lower(unsigned k, double p, long x)
{
    if (x <= 0) return 0.0;
    if ((unsigned long)x > k) return 1.0;
    if (p >= 1) return 0.0;
    if (p <= 0) return 1.0;
    double s = 0;
    for (unsigned j = 0; j < (unsigned)x; j++) s += exp(binom_log_pmf(k, p, j));
    return s;
}

unsigned secagg_plus_threshold(unsigned n, unsigned k, double collusion)
{
    for (unsigned t = 1; t <= k + 1; t++)
        if ((double)n * binom_upper(k, collusion, 2 * (long)t - (long)(k + 1)) <=
            ldexp(1.0, -SECAGG_SIGMA))
            return t;
    return 0;
}

int secagg_plus_correct(unsigned n, unsigned k, unsigned t, double dropout)
{
    return (double)n * binom_lower(k, 1 - dropout, (long)t - 1) <= ldexp(1.0, -SECAGG_ETA);
}

unsigned secagg_plus_degree(unsigned n, double collusion, double dropout)
{
    for (unsigned k = 2; k + 1 < n; k += 2) {
        unsigned t = secagg_plus_threshold(n, k, collusion);
        if (t && secagg_plus_correct(n, k, t, dropout)) return k;
    }
    return n ? n - 1 : 0;
}

int secagg_plan(unsigned n, unsigned federation, unsigned requested, double dropout,
                double collusion, unsigned *k, unsigned *t, char *err, size_t errlen)
{
    if (n < 2) return secagg_threshold(n, dropout, collusion, t, err, errlen);
    const unsigned c = secagg_colluders(n, federation, collusion);
    unsigned bound = secagg_plus_degree(n, collusion, dropout);
    /* Up to SECAGG_ALL_PAIRS_MAX clients all pairs cost next to nothing: a
     * sparse graph there would only make every drop more likely to abort. */
    unsigned want = requested ? requested + (requested & 1) : n <= SECAGG_ALL_PAIRS_MAX ? n - 1 : bound;
    if (want < bound) {
        snprintf(err, errlen,
                 "--neighbors %u is below the degree %u that %u clients need with %.0f%% colluders "
                 "and %.0f%% dropouts (SecAgg+ bound: security 2^-%d, correctness 2^-%d%s)",
                 requested, bound, n, collusion * 100, dropout * 100, SECAGG_SIGMA, SECAGG_ETA,
                 bound >= n - 1 ? "; at this size only all pairs are safe" : "");
        return -1;
    }
    if (want >= n - 1) {
        *k = n - 1;
        if (secagg_threshold(n, dropout, collusion, t, err, errlen) < 0) return -1;
        return threshold_for(n, c, dropout, collusion, t, err, errlen);
    }
    /* A client cannot check who else is in U1, so every colluder of the
     * federation may sit in its neighbourhood: the all-pairs rule with c
     * applies within it too (and the SecAgg+ bound on top). */
    *k = want;
    *t = secagg_plus_threshold(n, want, collusion);
    unsigned floor_t = (want + 1 + c) / 2 + 1;
    if (*t && *t < floor_t) *t = floor_t;
    if (want + 1 < c + 2 || *t > want + 1) *t = 0;
    if ((!*t || !secagg_plus_correct(n, want, *t, dropout)) && !requested) {
        *k = n - 1; /* the bound's degree does not hold the federation's colluders: all pairs */
        if (secagg_threshold(n, dropout, collusion, t, err, errlen) < 0) return -1;
        return threshold_for(n, c, dropout, collusion, t, err, errlen);
    }
    if (!*t || !secagg_plus_correct(n, want, *t, dropout)) {
        snprintf(err, errlen, "degree %u for %u clients: no threshold is both safe with %.0f%% "
                 "colluders and live with %.0f%% dropouts", want, n, collusion * 100, dropout * 100);
        return -1;
    }
    return 0;
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
