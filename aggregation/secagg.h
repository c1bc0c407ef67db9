/*
 * secagg.h - the arithmetic of secure aggregation: fixed-point encoding of a
 * weighted update in Z_{2^w}, the threshold that the threat model implies,
 * and the masked accumulator. No I/O, no keys (those are crypto/'s).
 *
 * Encoding (one client):  x[i] = SR(clip(delta[i], -C, C) * n_k * S)  mod 2^w
 *                          x[numel] = n_k                             mod 2^32
 * where SR is stochastic rounding (unbiased) driven by caller-supplied random
 * words, and w the plan's upload width (aggregation/encoding.h: words are
 * computed mod 2^32 and only their low w bits travel). The sum over clients
 * of |x[i]| is at most C * W * S + (clients), where W bounds sum(n_k); S is
 * chosen so that this stays below 2^(w-1), so the sum, read as a w-bit
 * signed number, never wraps. Decoding: avg[i] = signed_w(sum[i]) / S / sum(n_k).
 */
#ifndef MEDFED_SECAGG_H
#define MEDFED_SECAGG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double clip;   /* C: each delta value is clipped to [-C, C] */
    double scale;  /* S: fixed-point scale */
    unsigned bits; /* w: the upload width, ENC_BITS_MIN..ENC_BITS_MAX */
} quant_t;

/* Chooses S for a cohort of `clients` whose weights sum to at most
 * max_weight, at width `bits`: the largest S with secagg_fits(q, max_weight,
 * clients). At 32 bits that is floor((2^31 - 1 - clients) / (C * W)).
 * -1 (with a reason) if no usable scale exists. */
int secagg_quant_params(double clip, int64_t max_weight, unsigned clients, unsigned bits,
                        quant_t *q, char *err, size_t errlen);

/* 1 if `clients` encoded values whose weights sum to `weight` cannot wrap
 * q's width: C * S * weight + clients <= 2^(w-1) - 1 (each client's
 * rounding adds at most 1). The coordinator picks S by it; each site checks
 * it for its own weight alone (PLAN) and for the signed weights of the U1
 * members it sees (KEYS). 0 for a width outside [ENC_BITS_MIN, ENC_BITS_MAX]. */
int secagg_fits(const quant_t *q, int64_t weight, unsigned clients);

/* Encodes n values of delta with weight into out[0..n] (out[n] = weight),
 * as 32-bit words (reduced to q->bits when packed).
 * dither: n uniformly random words; it may be out itself (each word is read
 * before it is overwritten). Returns the number of clipped values. */
size_t secagg_encode(const float *delta, size_t n, int64_t weight, const quant_t *q,
                     const uint32_t *dither, uint32_t *out);

/* The training loss under secure aggregation: each site adds one more
 * masked word, L = round(n_k * min(loss_k, SECAGG_LOSS_MAX) * S_L) (a NaN
 * loss counts as SECAGG_LOSS_MAX), so the coordinator learns sum(L) only:
 * the weighted mean loss sum(L) / S_L / sum(n_k), as plaintext FedAvg
 * reports it. S_L (the plan's loss_scale) is the largest scale at which the
 * cohort's sum cannot pass 2^32 - 1: SECAGG_LOSS_MAX * S_L * max_weight +
 * clients <= 2^32 - 1 (each rounding adds at most 1/2). */
#define SECAGG_LOSS_MAX 64.0
double secagg_loss_scale(int64_t max_weight, unsigned clients);
/* 1 if a site of weight n_k can encode its loss at scale s without passing
 * 2^32 - 1 alone (a site checks the plan's scale with it). */
int secagg_loss_scale_ok(double s, int64_t weight);
uint32_t secagg_encode_loss(double loss, int64_t weight, double s);
/* The weighted mean loss from the unmasked word, or NAN when it cannot be
 * one (beyond SECAGG_LOSS_MAX: not the sites' encoding). */
double secagg_decode_loss(uint32_t sum, int64_t weight, double s);

/* The clip of the next round, from this round's decoded mean update (public
 * to the coordinator: nothing per site): headroom x max |mean[i]| over the
 * finite values, within [ceiling / SECAGG_CLIP_RANGE, ceiling]. A site's own
 * values spread wider than the mean's, hence the headroom; values beyond the
 * clip are clipped on the site (and counted in its log), so the rule trades
 * a few clipped values for a finer fixed-point step at a narrow width. */
#define SECAGG_CLIP_RANGE 1024.0
double secagg_next_clip(const float *mean, size_t n, double headroom, double ceiling);

/* Decodes an unmasked sum of n + 1 words: each of the n elements is read mod
 * 2^(q->bits) as a signed number, avg[i] = mean delta; *weight = the 32-bit
 * sum of n_k. avg may be the same memory as sum (in-place decoding, element i
 * read before it is written). -1 if the weight is 0 or exceeds max_weight (a client misreported). */
int secagg_decode(const uint32_t *sum, size_t n, const quant_t *q, int64_t max_weight,
                  float *avg, int64_t *weight, char *err, size_t errlen);

/* The least safe threshold for a cohort (or neighbourhood) of n when up to
 * c = floor(collusion * n) members may collude with a malicious coordinator:
 * t > (n + c) / 2. Why: a coordinator that shows two groups of honest
 * members different views of who survived collects b-shares of a victim
 * from one group and s_sk-shares from the other; the colluders answer both.
 * That needs t <= |A| + c and t <= |B| + c with |A| + |B| <= n - c, i.e.
 * 2t <= n + c. (With the consistency round a group reveals only after t
 * signatures on its own view, so both groups reach t only that way.) It
 * implies t > n / 2 and t > c. Both the coordinator and every client's policy
 * use this rule. */
unsigned secagg_min_threshold(unsigned n, double collusion);
/* The colluders to assume among n sharing sites of a federation of
 * `federation` sites (0: unknown, n): floor(collusion * max(n, federation)).
 * Counted against the federation, not the cohort: a coordinator that
 * announces a cohort of three (the victim and two colluders) must not make
 * the tolerated colluders floor(0.33 * 3) = 0. A cohort needs n >= c + 2 and
 * t > (n + c) / 2. */
unsigned secagg_colluders(unsigned n, unsigned federation, double collusion);
/* The threshold t for a cohort of n, from the research lead's threat model:
 * dropout = expected share of clients lost during a round, collusion = share
 * of clients that may collude with the coordinator. t is
 * secagg_min_threshold(n, collusion) and at most the expected survivors
 * (t <= n - ceil(dropout * n)). -1 with a reason when both cannot hold. */
int secagg_threshold(unsigned n, double dropout, double collusion, unsigned *t, char *err,
                     size_t errlen);

/* SecAgg+ (Bell et al. 2020): each client masks with and shares among only
 * its k neighbours in a random graph, and t applies within each neighbourhood
 * of k + 1. The graph is random and unknown when sites are corrupted, so the
 * colluders among one client's k neighbours are X ~ Hypergeometric, bounded
 * here by Binomial(k, collusion); the survivors among them Y ~
 * Binomial(k, 1 - dropout). With a union bound over the n clients:
 *   security     n * P[X >= 2t - (k + 1)] <= 2^-SECAGG_SIGMA
 *                (a split view needs 2t <= k + 1 + X, the rule of
 *                secagg_min_threshold with X colluders)
 *   correctness  n * P[Y < t - 1] <= 2^-SECAGG_ETA
 *                (fewer than t of a neighbourhood survive: the round fails) */
#define SECAGG_SIGMA 40
#define SECAGG_ETA 20
#define SECAGG_ALL_PAIRS_MAX 16
/* The least t meeting the security bound for degree k < n - 1; 0 if none. */
unsigned secagg_plus_threshold(unsigned n, unsigned k, double collusion);
/* 1 if threshold t with degree k meets the correctness bound. */
int secagg_plus_correct(unsigned n, unsigned k, unsigned t, double dropout);
/* The least even degree k < n - 1 with a threshold meeting both bounds, or
 * n - 1 (all pairs: the complete graph, secagg_threshold) when none does.
 * At collusion 0.33 and dropout 0.2 that is all pairs up to 1,000 clients;
 * at 0.1 and 0.05, k = 62 for n = 100 and 68 for n = 1,000 (but secagg_plan
 * then still picks all pairs: see there). */
unsigned secagg_plus_degree(unsigned n, double collusion, double dropout);
/* Degree and threshold for a cohort of n in a federation of `federation`
 * sites (0: n; colluders: secagg_colluders): `requested` (0: all pairs up to
 * SECAGG_ALL_PAIRS_MAX clients, else the bound) must be at least
 * secagg_plus_degree; all pairs when k >= n - 1. -1 with the
 * reason when the requested degree is below the bound or no t fits. */
int secagg_plan(unsigned n, unsigned federation, unsigned requested, double dropout,
                double collusion, unsigned *k, unsigned *t, char *err, size_t errlen);

/* A k-regular graph on n nodes: nodes placed on a cycle in a random order
 * (from seed), each joined to its k/2 nearest on either side; k >= n - 1 is
 * the complete graph. adj[i * n + j] = 1 for neighbours (symmetric, zero
 * diagonal). -1 if k is odd and < n - 1, or n is 0. */
int secagg_graph(unsigned n, unsigned k, uint64_t seed, uint8_t *adj);

#endif
