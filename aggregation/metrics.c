#include "aggregation/metrics.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float s;
    int32_t y;
} scored_t;

static int cmp_scored(const void *a, const void *b)
{
    float x = ((const scored_t *)a)->s, y = ((const scored_t *)b)->s;
    return (x > y) - (x < y);
}

double metrics_auc(const float *scores, const int32_t *labels, int64_t n)
{
    if (n <= 0) return NAN;
    scored_t *v = malloc((size_t)n * sizeof *v);
    if (!v) return NAN;
    for (int64_t i = 0; i < n; i++) v[i] = (scored_t){scores[i], labels[i] == 1};
    qsort(v, (size_t)n, sizeof *v, cmp_scored);
    /* Mann-Whitney U with mid-ranks for ties. */
    double rank_sum_pos = 0;
    int64_t npos = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && v[j].s == v[i].s) j++;
        double mid = (double)(i + j + 1) / 2.0; /* ranks i+1..j */
        for (int64_t k = i; k < j; k++)
            if (v[k].y) {
                rank_sum_pos += mid;
                npos++;
            }
        i = j;
    }
    free(v);
    int64_t nneg = n - npos;
    if (npos == 0 || nneg == 0) return NAN;
    return (rank_sum_pos - (double)npos * (double)(npos + 1) / 2.0) / ((double)npos * (double)nneg);
}

void metrics_hist_add(uint32_t *neg, uint32_t *pos, int bins, const float *scores,
                      const int32_t *labels, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float s = scores[i];
        int b = isfinite(s) ? (int)(s * (float)bins) : 0;
        if (b < 0) b = 0;
        if (b >= bins) b = bins - 1;
        if (labels[i] == 1) pos[b]++;
        else neg[b]++;
    }
}

double metrics_auc_hist(const uint64_t *neg, const uint64_t *pos, int bins)
{
    double below = 0, npos = 0, nneg = 0, u = 0;
    for (int b = 0; b < bins; b++) {
        u += (double)pos[b] * (below + 0.5 * (double)neg[b]);
        below += (double)neg[b];
        npos += (double)pos[b];
        nneg += (double)neg[b];
    }
    if (npos == 0 || nneg == 0) return NAN;
    return u / (npos * nneg);
}
