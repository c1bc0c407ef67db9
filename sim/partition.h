/*
 * partition.h - split a labelled data set across simulated hospitals.
 *
 *   iid            uniform random split, sizes differ by at most one
 *   dirichlet:A    per class, site shares drawn from Dirichlet(A) (label skew);
 *                  redrawn until every site has at least min_per_site samples
 *   classes:K      each site holds K classes (assigned round-robin so every class
 *                  is held by some site); a class's samples are split evenly
 *                  among the sites that hold it
 *
 * Every sample goes to exactly one site. Deterministic for a given seed.
 */
#ifndef MEDFED_PARTITION_H
#define MEDFED_PARTITION_H

#include <stddef.h>
#include <stdint.h>

typedef enum { PART_IID, PART_DIRICHLET, PART_CLASSES } part_kind_t;

typedef struct {
    part_kind_t kind;
    double alpha;  /* dirichlet */
    int k;         /* classes */
} part_spec_t;

/* Parses "iid", "dirichlet:0.5", "classes:2". */
int partition_parse(const char *text, part_spec_t *out, char *err, size_t errlen);

/* Writes site_of[i] in [0, sites) for each of the n samples. labels[i] must be
 * < classes. Fails (with a reason) when the request cannot be met: more sites
 * than samples, K > classes, sites*K < classes, or no Dirichlet draw within
 * 1000 tries giving every site min_per_site samples. */
int partition_assign(const part_spec_t *spec, const uint8_t *labels, int64_t n, int classes,
                     int sites, int64_t min_per_site, uint64_t seed, int32_t *site_of,
                     char *err, size_t errlen);

#endif
