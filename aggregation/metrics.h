/*
 * metrics.h - evaluation arithmetic: ROC AUC, exact from scores or pooled
 * from per-site score histograms (so a federated AUC needs no per-image data
 * to leave a site).
 */
#ifndef MEDFED_METRICS_H
#define MEDFED_METRICS_H

#include <stdint.h>

/* Exact ROC AUC (ties count one half). NAN if either class is absent. */
double metrics_auc(const float *scores, const int32_t *labels, int64_t n);

/* Adds scores in [0,1] to histograms neg[bins], pos[bins] (label 1 = positive). */
void metrics_hist_add(uint32_t *neg, uint32_t *pos, int bins, const float *scores,
                      const int32_t *labels, int64_t n);

/* AUC from pooled histograms (pairs in the same bin count one half). NAN if
 * either class is absent. */
double metrics_auc_hist(const uint64_t *neg, const uint64_t *pos, int bins);

#endif
