/*
 * policy.h - the hospital's own rules for secure aggregation, enforced by its
 * daemon whatever the coordinator announces, and what the site must remember
 * across restarts to keep them.
 *
 *   peers         the members this site agreed to ([policy] peers): a relayed
 *                 key or certificate of any other site is refused, so neither
 *                 the coordinator nor the federation CA can add members
 *   min_cohort    fewest sites (our neighbourhood, ourselves included) to
 *                 share with
 *   threshold     t > (n + floor(max_collusion * n)) / 2 for the n sites we
 *                 share with (secagg_min_threshold)
 *   released      the model versions this site has released unmask shares
 *                 for, each with the set of survivors U3 of that aggregate
 *                 (state_dir/released-SITE): never again for one version with
 *                 another U3, so no coordinator gets two sums over different
 *                 cohorts of updates trained from the same model (their
 *                 difference would be one site's update). The same U3 again
 *                 (a coordinator restarted before it committed the aggregate,
 *                 every site back) gives a sum over the same sites: allowed.
 *
 * Nothing here logs; callers name the rule in their ERROR and log line.
 */
#ifndef MEDFED_CLIENT_POLICY_H
#define MEDFED_CLIENT_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "client/config.h"
#include "crypto/crypto.h"

#define POLICY_PEERS_MAX 1024
#define POLICY_RELEASED_MAX 1000000

typedef struct policy policy_t;

/* Reads [policy] and state_dir of conf; loads the peers file and the
 * released records. NULL with a reason ("file:line: ...") on error. */
policy_t *policy_new(const client_conf_t *conf, char *err, size_t errlen);
void policy_destroy(policy_t **p);

/* Whether a peers list is configured. */
int policy_has_peers(const policy_t *p);
/* 0 if site `name` with identity key pk is on the peers list (or no list is
 * configured); -1 with a reason otherwise. */
int policy_peer_ok(const policy_t *p, const char *name, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                   char *why, size_t whylen);
/* The size of the federation the colluders are a share of: the peers list
 * when configured, else what the daemon sets (its roster), else 0 (then the
 * announced cohort, and the daemon warns). */
void policy_set_federation(policy_t *p, unsigned sites);
unsigned policy_federation(const policy_t *p);
/* 0 if n sites (ourselves included) with threshold t meet the policy: with
 * c = floor(max_collusion * federation) colluders, n >= max(min_cohort,
 * c + 2) and t > (n + c) / 2; -1 with the rule that failed. */
int policy_cohort_ok(const policy_t *p, unsigned n, unsigned t, char *why, size_t whylen);

/* The same for SecAgg+: a neighbourhood of k + 1 in a random k-regular
 * graph over n; k >= n - 1 is all pairs (policy_cohort_ok). Otherwise t must
 * meet the SecAgg+ security bound for our max_collusion
 * (secagg_plus_threshold) and the neighbourhood min_cohort. */
int policy_graph_ok(const policy_t *p, unsigned n, unsigned k, unsigned t, char *why,
                    size_t whylen);

/* The record of one model version of one federation: SHA-256 over the
 * coordinator's CURVE public key (32 zero bytes without CURVE) and the
 * model's hash. */
void policy_version_id(uint8_t id[CRYPTO_HASHBYTES], const uint8_t coordinator_pk[32],
                       const uint8_t model_hash[CRYPTO_HASHBYTES]);
/* 1 if shares were released for this version (with any U3). */
int policy_released(const policy_t *p, const uint8_t id[CRYPTO_HASHBYTES]);
/* For version id and the hash of a U3: 0 never released for the version, 1
 * released for it with this U3, -1 released for it with another U3 only
 * (refuse). */
int policy_release_check(const policy_t *p, const uint8_t id[CRYPTO_HASHBYTES],
                         const uint8_t u3[CRYPTO_HASHBYTES]);
/* Records a release for (version, U3), durably (append + fsync) before the
 * caller reveals anything; nothing to do if that pair is recorded. -1 with a
 * reason if it cannot be made durable: then reveal nothing. */
int policy_record_release(policy_t *p, const uint8_t id[CRYPTO_HASHBYTES],
                          const uint8_t u3[CRYPTO_HASHBYTES], char *err, size_t errlen);
/* The released-records file (for logs). */
const char *policy_state_file(const policy_t *p);

#endif
