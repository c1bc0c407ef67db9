/*
 * roster.h - the federation roster: one site per line,
 * "NAME [PUBKEY [CURVEKEY]]": PUBKEY is the site's Ed25519 identity key and
 * CURVEKEY its ZeroMQ CURVE transport key, each as 64 hex digits. A site's
 * index (its id in every protocol message) is its position among the sites.
 * '#' starts a comment line. Errors are reported as "file:line: reason".
 */
#ifndef MEDFED_ROSTER_H
#define MEDFED_ROSTER_H

#include <stddef.h>
#include <stdint.h>

#define ROSTER_NAME_MAX 64
#define ROSTER_MAX 1024

typedef struct {
    char name[ROSTER_NAME_MAX];
    uint8_t pk[32];
    int has_pk;
    uint8_t curve_pk[32];
    int has_curve;
} roster_entry_t;

typedef struct {
    roster_entry_t site[ROSTER_MAX];
    int n;
    int all_have_pk;
    int all_have_curve;
} roster_t;

int roster_load(const char *path, roster_t *r, char *err, size_t errlen);
/* Index of name, or -1. */
int roster_find(const roster_t *r, const char *name);

#endif
