/*
 * partition.c - split a labelled data set across simulated hospitals.
 *
 * All randomness comes from one rng_t seeded once per call, so the result is a
 * pure function of (spec, labels, classes, sites, min_per_site, seed).
 */
#include "common/util.h"
#include "sim/partition.h"

#include "common/rng.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART_DIRICHLET_TRIES 1000
#define PART_MAX_CLASSES 256 /* labels are uint8_t */
#define PART_QUOTE_MAX 64    /* how much of a bad spec to echo back */

/* ---- parsing ------------------------------------------------------------- */

/* Non-empty run of ASCII digits only: no sign, no spaces, no trailing junk. */
static int part_all_digits(const char *p)
{
    if (*p == '\0')
        return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

int partition_parse(const char *text, part_spec_t *out, char *err, size_t errlen)
{
    if (text == NULL || out == NULL) {
        util_seterr(err, errlen, "partition: no spec given");
        return -1;
    }
    /* Echo at most PART_QUOTE_MAX bytes of the input in messages. */
    const int q = PART_QUOTE_MAX;
    part_spec_t spec = { PART_IID, 0.0, 0 };

    if (strcmp(text, "iid") == 0) {
        *out = spec;
        return 0;
    }
    if (strncmp(text, "dirichlet:", 10) == 0) {
        const char *num = text + 10;
        /* strtod would skip leading spaces and accept "inf"/"nan"; the first
         * character must start a plain number and the result must be finite. */
        char *end = NULL;
        double a = 0.0;
        int ok = (*num >= '0' && *num <= '9') || (*num == '.' && num[1] >= '0' && num[1] <= '9');
        if (ok) {
            errno = 0;
            a = strtod(num, &end);
            ok = end != num && *end == '\0' && errno == 0 && isfinite(a) && a > 0.0;
        }
        if (!ok) {
            util_seterr(err, errlen,
                     "partition \"%.*s\": dirichlet needs a finite alpha > 0, as in \"dirichlet:0.5\"",
                     q, text);
            return -1;
        }
        spec.kind = PART_DIRICHLET;
        spec.alpha = a;
        *out = spec;
        return 0;
    }
    if (strncmp(text, "classes:", 8) == 0) {
        const char *num = text + 8;
        long k = 0;
        int ok = part_all_digits(num) && strlen(num) <= 9; /* <= 9 digits fits an int */
        if (ok) {
            k = strtol(num, NULL, 10);
            ok = k >= 1;
        }
        if (!ok) {
            util_seterr(err, errlen,
                     "partition \"%.*s\": classes needs an integer K >= 1, as in \"classes:2\"",
                     q, text);
            return -1;
        }
        spec.kind = PART_CLASSES;
        spec.k = (int)k;
        *out = spec;
        return 0;
    }
    util_seterr(err, errlen,
             "partition \"%.*s\": unknown kind (expected \"iid\", \"dirichlet:ALPHA\" or \"classes:K\")",
             q, text);
    return -1;
}

/* ---- assignment ---------------------------------------------------------- */

/* Samples grouped by class: by_class[start[c] .. start[c+1]) are class c's
 * indices, in increasing order (counting sort, stable). */
typedef struct {
    int64_t *by_class;
    int64_t *start; /* classes + 1 entries */
} part_groups_t;

static int part_group(const uint8_t *labels, int64_t n, int classes, part_groups_t *g)
{
    g->by_class = malloc((size_t)n * sizeof *g->by_class);
    g->start = calloc((size_t)classes + 1, sizeof *g->start);
    int64_t *fill = calloc((size_t)classes, sizeof *fill);
    if (g->by_class == NULL || g->start == NULL || fill == NULL) {
        free(g->by_class);
        free(g->start);
        free(fill);
        g->by_class = g->start = NULL;
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        g->start[labels[i] + 1]++;
    for (int c = 0; c < classes; c++)
        g->start[c + 1] += g->start[c];
    for (int64_t i = 0; i < n; i++) {
        int c = labels[i];
        g->by_class[g->start[c] + fill[c]++] = i;
    }
    free(fill);
    return 0;
}

static void part_iid(rng_t *r, int64_t n, int sites, int64_t *scratch, int32_t *site_of)
{
    for (int64_t i = 0; i < n; i++)
        scratch[i] = i;
    rng_shuffle_i64(r, scratch, n);
    /* Dealing round-robin makes the sizes differ by at most one. */
    for (int64_t i = 0; i < n; i++)
        site_of[scratch[i]] = (int32_t)(i % sites);
}

/* p ~ Dirichlet(alpha, ..., alpha) over sites, via normalised gammas. */
static void part_dirichlet_draw(rng_t *r, double alpha, int sites, double *p)
{
    double sum = 0.0;
    for (int s = 0; s < sites; s++) {
        p[s] = rng_gamma(r, alpha);
        sum += p[s];
    }
    if (sum > 0.0 && isfinite(sum)) {
        for (int s = 0; s < sites; s++)
            p[s] /= sum;
        return;
    }
    /* Every gamma underflowed to 0 (only for tiny alpha). The Dirichlet's limit
     * as alpha -> 0 is all mass on one uniformly chosen site; use that. */
    int pick = (int)rng_below(r, (uint64_t)sites);
    for (int s = 0; s < sites; s++)
        p[s] = s == pick ? 1.0 : 0.0;
}

/* One attempt; fills site_of and size[]. */
static void part_dirichlet_once(rng_t *r, const part_groups_t *g, int classes, int sites,
                                double alpha, int64_t *scratch, double *p, int64_t *size,
                                int32_t *site_of)
{
    for (int s = 0; s < sites; s++)
        size[s] = 0;
    for (int c = 0; c < classes; c++) {
        int64_t m = g->start[c + 1] - g->start[c];
        if (m == 0)
            continue;
        memcpy(scratch, g->by_class + g->start[c], (size_t)m * sizeof *scratch);
        rng_shuffle_i64(r, scratch, m);
        part_dirichlet_draw(r, alpha, sites, p);
        /* Site s takes [floor(cum_{s-1} * m), floor(cum_s * m)); the last site
         * takes everything left so rounding never drops a sample. */
        double cum = 0.0;
        int64_t lo = 0;
        for (int s = 0; s < sites; s++) {
            int64_t hi;
            if (s == sites - 1) {
                hi = m;
            } else {
                cum += p[s];
                double x = floor(cum * (double)m);
                hi = x <= (double)lo ? lo : x >= (double)m ? m : (int64_t)x;
            }
            for (int64_t i = lo; i < hi; i++)
                site_of[scratch[i]] = (int32_t)s;
            size[s] += hi - lo;
            lo = hi;
        }
    }
}

static void part_classes(rng_t *r, const part_groups_t *g, int classes, int sites, int k,
                         int64_t *scratch, int32_t *holders, int32_t *site_of)
{
    for (int c = 0; c < classes; c++) {
        /* Sites holding class c, increasing. Site s holds (s*K + j) % classes
         * for j < K; since sites*K >= classes those values run over every
         * residue, so each class has at least one holder. */
        int nh = 0;
        for (int s = 0; s < sites; s++) {
            for (int j = 0; j < k; j++) {
                if ((int)(((int64_t)s * k + j) % classes) == c) {
                    holders[nh++] = s;
                    break;
                }
            }
        }
        int64_t m = g->start[c + 1] - g->start[c];
        memcpy(scratch, g->by_class + g->start[c], (size_t)m * sizeof *scratch);
        rng_shuffle_i64(r, scratch, m);
        for (int64_t i = 0; i < m; i++)
            site_of[scratch[i]] = holders[i % nh];
    }
}

int partition_assign(const part_spec_t *spec, const uint8_t *labels, int64_t n, int classes,
                     int sites, int64_t min_per_site, uint64_t seed, int32_t *site_of,
                     char *err, size_t errlen)
{
    if (spec == NULL || site_of == NULL || (labels == NULL && n > 0)) {
        util_seterr(err, errlen, "partition: missing spec, labels or output");
        return -1;
    }
    if (sites < 1) {
        util_seterr(err, errlen, "partition: sites must be >= 1, got %d", sites);
        return -1;
    }
    if (n < sites) {
        util_seterr(err, errlen, "partition: %lld samples cannot fill %d sites (need n >= sites)",
                 (long long)n, sites);
        return -1;
    }
    if ((uint64_t)n > SIZE_MAX / sizeof(int64_t)) {
        util_seterr(err, errlen, "partition: %lld samples is too many", (long long)n);
        return -1;
    }
    if (classes < 1 || classes > PART_MAX_CLASSES) {
        util_seterr(err, errlen, "partition: classes must be in 1..%d, got %d", PART_MAX_CLASSES,
                 classes);
        return -1;
    }
    if (min_per_site < 0) {
        util_seterr(err, errlen, "partition: min_per_site must be >= 0, got %lld",
                 (long long)min_per_site);
        return -1;
    }
    /* min_per_site > n / sites (integer division, so no overflow) means even
     * a perfectly even split cannot give every site that many. */
    if (min_per_site > n / sites) {
        util_seterr(err, errlen,
                 "partition: %lld samples over %d sites cannot give each site %lld",
                 (long long)n, sites, (long long)min_per_site);
        return -1;
    }
    switch (spec->kind) {
    case PART_IID:
        break;
    case PART_DIRICHLET:
        if (!(spec->alpha > 0.0) || !isfinite(spec->alpha)) {
            util_seterr(err, errlen, "partition: dirichlet alpha must be finite and > 0, got %g",
                     spec->alpha);
            return -1;
        }
        break;
    case PART_CLASSES:
        if (spec->k < 1 || spec->k > classes) {
            util_seterr(err, errlen, "partition: classes:%d needs 1 <= K <= classes (%d)", spec->k,
                     classes);
            return -1;
        }
        if ((int64_t)sites * spec->k < classes) {
            util_seterr(err, errlen,
                     "partition: classes:%d over %d sites holds only %lld class slots, "
                     "fewer than the %d classes",
                     spec->k, sites, (long long)sites * spec->k, classes);
            return -1;
        }
        break;
    default:
        util_seterr(err, errlen, "partition: unknown kind %d", (int)spec->kind);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] >= classes) {
            util_seterr(err, errlen, "partition: label %u at index %lld is not < classes (%d)",
                     (unsigned)labels[i], (long long)i, classes);
            return -1;
        }
    }

    rng_t r;
    rng_seed(&r, seed);
    int rc = -1;
    part_groups_t g = { NULL, NULL };
    int64_t *scratch = malloc((size_t)n * sizeof *scratch);
    int64_t *size = calloc((size_t)sites, sizeof *size);
    double *p = calloc((size_t)sites, sizeof *p);
    int32_t *holders = calloc((size_t)sites, sizeof *holders);
    int32_t *tmp = malloc((size_t)n * sizeof *tmp);
    if (scratch == NULL || size == NULL || p == NULL || holders == NULL || tmp == NULL ||
        part_group(labels, n, classes, &g) != 0) {
        util_seterr(err, errlen, "partition: out of memory for %lld samples", (long long)n);
        goto out;
    }

    /* Work in tmp and copy out only on success: a failed call leaves site_of
     * untouched. */
    switch (spec->kind) {
    case PART_IID:
        part_iid(&r, n, sites, scratch, tmp);
        break;
    case PART_CLASSES:
        part_classes(&r, &g, classes, sites, spec->k, scratch, holders, tmp);
        break;
    case PART_DIRICHLET: {
        int ok = 0;
        int64_t worst = 0;
        for (int t = 0; t < PART_DIRICHLET_TRIES && !ok; t++) {
            part_dirichlet_once(&r, &g, classes, sites, spec->alpha, scratch, p, size, tmp);
            ok = 1;
            worst = size[0];
            for (int s = 0; s < sites; s++) {
                if (size[s] < worst)
                    worst = size[s];
                if (size[s] < min_per_site)
                    ok = 0;
            }
        }
        if (!ok) {
            util_seterr(err, errlen,
                     "partition: no dirichlet:%g draw within %d tries gave every site >= %lld "
                     "samples (last draw's smallest site: %lld); raise alpha or lower the minimum",
                     spec->alpha, PART_DIRICHLET_TRIES, (long long)min_per_site,
                     (long long)worst);
            goto out;
        }
        break;
    }
    }

    /* min_per_site holds by construction for dirichlet; check it for the other
     * kinds too, so no caller ever gets a site below its minimum. */
    for (int s = 0; s < sites; s++)
        size[s] = 0;
    for (int64_t i = 0; i < n; i++)
        size[tmp[i]]++;
    for (int s = 0; s < sites; s++) {
        if (size[s] < min_per_site) {
            util_seterr(err, errlen, "partition: site %d gets %lld samples, fewer than %lld", s,
                     (long long)size[s], (long long)min_per_site);
            goto out;
        }
    }
    memcpy(site_of, tmp, (size_t)n * sizeof *site_of);
    rc = 0;
out:
    free(g.by_class);
    free(g.start);
    free(scratch);
    free(size);
    free(p);
    free(holders);
    free(tmp);
    return rc;
}
