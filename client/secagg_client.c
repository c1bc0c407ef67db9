/*
 * secagg_client.c - a hospital's side of secure aggregation (Bonawitz et
 * al., CCS 2017). The update never leaves the site in the clear: the
 * coordinator receives it masked by a self mask PRG(b_u) and by pairwise
 * masks PRG(s_uv) that cancel in the sum, and only ever gets shares that let
 * it remove the masks of clients that finished (b) or dropped (s_sk) — never
 * both for the same client.
 *
 * The coordinator is not trusted (DESIGN: threat model): every set, size
 * and threshold it announces is checked against the site's own policy
 * (client/policy.h) before anything derived from a secret leaves.
 *
 *   state       event        action                                        next
 *   (idle)      PLAN         check_plan: t, clip, scale in range; upload    (train)
 *                            width in [8, 32] and our own value fits it
 *   (trained)   PLAN done    advertise: fresh X25519 pairs c               ADVERTISED
 *                            (share encryption) and s (mask seeds), self-
 *                            mask seed b, sign (round, model hash, c_pk,
 *                            s_pk, n_k) with the identity key, ADVERTISE
 *                            (+ our certificate)
 *   ADVERTISED  KEYS         share_keys: verify every signature against    SHARED
 *                            the roster's key, or the key of the peer's
 *                            certificate (issued by our CA, CN not seen
 *                            twice); every peer on our peers list; the
 *                            cohort and t within our policy (min_cohort,
 *                            t > (n + colluders) / 2); the plan's upload
 *                            width holds the sum of U1's signed n_k;
 *                            Shamir-split b and s_sk t-of-|U1|, seal each
 *                            peer's pair, SHARES
 *   SHARED      SHARES_IN    masked_input: open the boxes (U2 = senders    READY
 *                            + self), encode n_k*delta in Z_2^32, add
 *                            PRG(b) and +-PRG(s_uv) for v in U2, pack
 *                            the elements at the plan's width, READY
 *   READY       UPLOAD       upload: MASKED (the coordinator paces these)   MASKED
 *   MASKED      CONSIST_REQ  consistency: U3 holds us, its members among   SIGNED
 *                            our peers are in U2 and at least t; not a
 *                            model version we released shares for with
 *                            another U3; sign (round, model hash, U3)
 *   SIGNED      UNMASK_REQ   unmask: at least t valid signatures from      (reset)
 *                            distinct U3 peers on exactly our U3; the
 *                            request asks b-shares for exactly our U3
 *                            peers and s-shares only outside it, none
 *                            twice; record the release (fsync), send the
 *                            shares, wipe everything
 *   any         out of order ERROR "out of phase"; nothing revealed        same
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "aggregation/secagg.h"
#include "client/internal.h"
#include "client/policy.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/crypto.h"

_Static_assert(WIRE_CERT_MAX == CERT_DER_MAX, "a certificate fits ADVERTISE");

typedef enum { SA_ADVERTISED = 1, SA_SHARED, SA_READY, SA_MASKED, SA_SIGNED } sa_state_t;

/* Everything secret lives in guarded memory and is wiped by sa_client_reset. */
struct sa_client {
    sa_state_t state;
    uint32_t round, self;
    unsigned t;
    quant_t q;
    int64_t weight;
    double loss_scale;    /* the plan's: n_k * loss travels as one more masked word */
    unsigned tail;        /* words after the elements: ENC_TAIL_WORDS, or ENC_TAIL_V2 */
    uint8_t c_pk[KA_PUBLICKEYBYTES], c_sk[KA_SECRETKEYBYTES];
    uint8_t s_pk[KA_PUBLICKEYBYTES], s_sk[KA_SECRETKEYBYTES];
    uint8_t b[PRG_SEEDBYTES];
    /* U1, from KEYS: ids and their public keys, indexed by position */
    unsigned n1;
    /* Sized for U1 when KEYS arrives (peers_alloc), all in one guarded block:
     * 300 KB for the 1024 a roster may name, a few KB for most
     * federations (the daemon holds this for a round, medfed-swarm once per
     * site it hosts). NULL before KEYS. */
    void *peers;
    size_t peers_len;
    uint32_t *ids;
    uint8_t (*c_pks)[KA_PUBLICKEYBYTES], (*s_pks)[KA_PUBLICKEYBYTES];
    uint8_t (*id_pks)[IDENTITY_PUBLICKEYBYTES]; /* their identity keys, checked */
    uint8_t (*advs)[WIRE_ADVERTISE_BYTES - WIRE_ADV_WEIGHT_OFF]; /* n_k || sig */
    uint8_t model_hash[WIRE_HASH_BYTES];   /* of the global model we trained from */
    uint8_t version_id[CRYPTO_HASHBYTES];  /* this federation + model version (policy.h) */
    uint8_t u3_hash[CRYPTO_HASHBYTES];     /* SHA-256 of the U3 list we signed */
    /* U3 as we signed it in the consistency round (all ids, ascending) */
    size_t n3;
    uint32_t u3[ROSTER_MAX];
    /* shares held for each U1 member (own shares at our own position) */
    uint8_t (*share_b)[SHAMIR_SHAREBYTES], (*share_s)[SHAMIR_SHAREBYTES];
    uint8_t *in_u2;
    uint8_t *y;           /* the packed masked input (c->masked_buf), waiting for UPLOAD */
    size_t y_len;         /* its bytes: enc_masked_len(numel, q.bits, tail) */
};

void sa_client_reset(client_t *c)
{
    if (!c->sa) return;
    if (c->sa->peers) {
        crypto_wipe(c->sa->peers, c->sa->peers_len);
        crypto_secure_free(c->sa->peers);
    }
    crypto_wipe(c->sa, sizeof *c->sa);
    crypto_secure_free(c->sa);
    c->sa = NULL;
}

static void fail(client_t *c, msg_error_t code, const char *why)
{
    uint32_t round = c->sa ? c->sa->round : c->round;
    log_warn("round=%u secagg: %s -> leaving this round", round, why);
    client_send_error(c, round, code, why);
    sa_client_reset(c);
}

static int position_of(const sa_client_t *s, uint32_t id)
{
    for (unsigned i = 0; i < s->n1; i++)
        if (s->ids[i] == id) return (int)i;
    return -1;
}

/* ---- the actions, in the table's order ------------------------------------------------ */

/* The plan's width; absent (0) is the 32-bit encoding of coordinators from before widths. */
static quant_t plan_quant(const msg_t *plan)
{
    return (quant_t){plan->clip, plan->scale, plan->bits ? plan->bits : ENC_BITS_MAX};
}

int sa_client_check_plan(client_t *c, const msg_t *plan)
{
    const quant_t q = plan_quant(plan);
    char why[256];
    if (plan->threshold < 1 || plan->threshold > ROSTER_MAX || !(plan->clip > 0) ||
        !(plan->scale > 0) || plan->scale > 4294967296.0) {
        snprintf(why, sizeof why, "secure aggregation parameters out of range");
    } else if (q.bits < ENC_BITS_MIN || q.bits > ENC_BITS_MAX) {
        snprintf(why, sizeof why, "plan: upload width %u bits is outside [%d, %d]", q.bits,
                 ENC_BITS_MIN, ENC_BITS_MAX);
    } else if ((plan->present & MSG_HAS_LOSS) && !secagg_loss_scale_ok(plan->loss_scale, c->train.n)) {
        snprintf(why, sizeof why, "plan: loss scale %g x our %lld samples does not fit a 32-bit "
                 "word", plan->loss_scale, (long long)c->train.n);
    } else if (!secagg_fits(&q, c->train.n, 1)) {
        /* The coordinator picks scale so that clip * scale * (sum of n_k) +
         * cohort < 2^(w-1) (secagg_quant_params); a plan breaking that for
         * our own n_k alone would wrap our own value, and overflow the
         * fixed-point encoding's int64 conversion at 32 bits. The whole
         * cohort's sum is checked at KEYS, where the signed n_k are known. */
        snprintf(why, sizeof why, "plan: clip %g x scale %g x our %lld samples does not fit %u-bit "
                 "upload words (need < 2^%u)", plan->clip, plan->scale, (long long)c->train.n,
                 q.bits, q.bits - 1);
    } else {
        return 0;
    }
    log_warn("round=%u secagg: %s -> refusing the plan", plan->round, why);
    client_send_error(c, plan->round, ERR_PROTOCOL, why);
    return -1;
}

void sa_client_advertise(client_t *c, const msg_t *plan, double train_seconds)
{
    sa_client_reset(c);
    if (!c->identity_sk || !c->policy || (!c->roster && !c->ca)) {
        client_send_error(c, plan->round, ERR_LOCAL,
                          "secure aggregation needs [client] identity and roster (or ca and "
                          "certificate) in the config");
        return;
    }
    if (sa_client_check_plan(c, plan) < 0) return;
    /* One aggregate per model version: a second one over a different cohort
     * would give the coordinator one site's update as the difference. The
     * check is at the consistency round, where U3 is known (policy.h). */
    uint8_t model_hash[WIRE_HASH_BYTES], version_id[CRYPTO_HASHBYTES];
    memcpy(model_hash, client_global_hash(c), sizeof model_hash); /* of the PLAN's model */
    policy_version_id(version_id, c->coordinator_pk, model_hash);
    if (policy_released(c->policy, version_id))
        log_info("round=%u secagg: model version %u was aggregated with us before: we reveal "
                 "again only for exactly the same survivors", plan->round, c->global_version);
    sa_client_t *s = crypto_secure_alloc(sizeof *s);
    if (!s) {
        client_send_error(c, plan->round, ERR_LOCAL, "out of guarded memory");
        return;
    }
    memset(s, 0, sizeof *s);
    memcpy(s->model_hash, model_hash, sizeof model_hash);
    memcpy(s->version_id, version_id, sizeof version_id);
    c->sa = s;
    s->round = plan->round;
    s->self = c->client_id;
    s->t = plan->threshold;
    s->q = plan_quant(plan);
    s->loss_scale = plan->loss_scale;
    /* The loss word travels when the plan gives its scale (a cohort that all
     * speak protocol 3); otherwise protocol 2's layout, n_k alone. */
    s->tail = (plan->present & MSG_HAS_LOSS) ? ENC_TAIL_WORDS : ENC_TAIL_V2;
    s->weight = c->train.n;
    uint8_t adv[WIRE_ADVERTISE_BYTES + WIRE_CERT_MAX];
    if (ka_keypair(s->c_pk, s->c_sk) < 0 || ka_keypair(s->s_pk, s->s_sk) < 0) {
        fail(c, ERR_LOCAL, "key generation failed");
        return;
    }
    crypto_random(s->b, sizeof s->b);
    memcpy(adv, s->c_pk, 32);
    memcpy(adv + 32, s->s_pk, 32);
    wire_put_u64(adv + WIRE_ADV_WEIGHT_OFF, (uint64_t)s->weight);
    uint8_t signed_msg[WIRE_ADV_SIGNED_BYTES];
    wire_adv_signed(signed_msg, s->round, s->self, s->model_hash, adv);
    if (identity_sign(adv + WIRE_ADV_SIG_OFF, c->identity_sk, "advertise-v2", signed_msg,
                      sizeof signed_msg) < 0) {
        fail(c, ERR_LOCAL, "signing failed");
        return;
    }
    if (c->cert_len) memcpy(adv + WIRE_ADVERTISE_BYTES, c->cert, c->cert_len);
    client_maybe_die(c, "advertise", s->round);
    msg_t m = {.type = MSG_ADVERTISE, .round = s->round, .phase = PHASE_ADVERTISE,
               .train_seconds = train_seconds, .blob = adv,
               .blob_len = WIRE_ADVERTISE_BYTES + c->cert_len,
               .present = MSG_HAS_BLOB};
    client_send(c, &m);
    s->state = SA_ADVERTISED;
    c->phase = PHASE_ADVERTISE;
    log_info("round=%u phase=advertise event=keys-sent t=%u", s->round, s->t);
}

/* The identity key of the sender of record r, into pk: from its certificate
 * (issued by our CA; a site name not seen before in this list, ours only
 * for our own id) or from the roster. why on failure. */
static int peer_key(client_t *c, const wire_keyrec_t *r, char (*names)[CERT_NAME_MAX],
                    uint8_t pk[IDENTITY_PUBLICKEYBYTES], char *why, size_t whylen)
{
    const sa_client_t *s = c->sa;
    if (!c->ca) {
        memcpy(pk, c->roster->site[r->id].pk, IDENTITY_PUBLICKEYBYTES);
        return policy_peer_ok(c->policy, c->roster->site[r->id].name, pk, why, whylen);
    }
    char name[CERT_NAME_MAX], err[256];
    if (r->cert_len == 0) {
        snprintf(why, whylen, "a relayed key comes without its site's certificate");
        return -1;
    }
    if (cert_verify(c->ca, r->cert, r->cert_len, r->id == s->self ? c->conf->site : NULL, name, pk,
                    err, sizeof err) < 0) {
        snprintf(why, whylen, "relayed certificate of client %u: %s", r->id, err);
        return -1;
    }
    for (unsigned i = 0; i < s->n1; i++)
        if (strcmp(names[i], name) == 0 || (r->id != s->self && strcmp(name, c->conf->site) == 0)) {
            snprintf(why, whylen, "the key list carries site '%s' twice", name);
            return -1;
        }
    memcpy(names[s->n1], name, sizeof name);
    /* The CA vouches for the name; only our peers list says it is a member. */
    return policy_peer_ok(c->policy, name, pk, why, whylen);
}

/* Position of id in KEYS' U1 list (ascending), or -1. */
static long u1_find(const msg_t *m, uint32_t id)
{
    size_t lo = 0, hi = m->u1_len / WIRE_U1REC_BYTES;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t v = wire_u1rec_get(m->u1 + mid * WIRE_U1REC_BYTES).id;
        if (v == id) return (long)mid;
        if (v < id) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* SecAgg+: our neighbourhood is the one the protocol's graph gives, not the
 * operator's choice. The graph is seeded by the hash of U1's signed keys
 * (wire_graph_input); every record we were given must be in U1 with the
 * hash of exactly the keys we got; with all pairs we must have all of U1.
 * Then the degree and threshold against our policy. 0, or -1 with why. */
static int check_graph(client_t *c, const msg_t *m, char *why, size_t whylen)
{
    sa_client_t *s = c->sa;
    const size_t n = m->u1_len / WIRE_U1REC_BYTES;
    int rc = -1;
    if (m->u1_len % WIRE_U1REC_BYTES || n == 0 || n > ROSTER_MAX) {
        snprintf(why, whylen, "the U1 list has a bad length");
        return -1;
    }
    for (size_t i = 1; i < n; i++)
        if (wire_u1rec_get(m->u1 + i * WIRE_U1REC_BYTES).id <=
            wire_u1rec_get(m->u1 + (i - 1) * WIRE_U1REC_BYTES).id) {
            snprintf(why, whylen, "the U1 list is not in ascending order");
            return -1;
        }
    /* Members we cannot check must at least be possible ones. */
    const unsigned fed = policy_federation(c->policy);
    if ((c->roster && wire_u1rec_get(m->u1 + (n - 1) * WIRE_U1REC_BYTES).id >= (uint32_t)c->roster->n) ||
        (fed && n > fed)) {
        snprintf(why, whylen, "policy: the U1 list names %zu sites or an id beyond the %u of the "
                 "federation", n, fed);
        return -1;
    }
    long me = u1_find(m, s->self);
    const unsigned k = m->degree;
    if (me < 0 || (k + 1 < n && (k & 1 || k == 0))) {
        snprintf(why, whylen, "the U1 list leaves us out, or the degree %u is not a graph's", k);
        return -1;
    }
    uint8_t h[CRYPTO_HASHBYTES];
    for (unsigned i = 0; i < s->n1; i++) {
        long p = u1_find(m, s->ids[i]);
        uint8_t adv[WIRE_ADVERTISE_BYTES];
        memcpy(adv, s->c_pks[i], 32);
        memcpy(adv + 32, s->s_pks[i], 32);
        memcpy(adv + WIRE_ADV_WEIGHT_OFF, s->advs[i], WIRE_ADVERTISE_BYTES - WIRE_ADV_WEIGHT_OFF);
        crypto_sha256(h, adv, sizeof adv);
        if (p < 0 || !crypto_equal(h, wire_u1rec_get(m->u1 + (size_t)p * WIRE_U1REC_BYTES).adv_hash,
                                   sizeof h)) {
            snprintf(why, whylen, "client %u's keys are not the ones the U1 list was hashed from",
                     s->ids[i]);
            return -1;
        }
    }
    if (k + 1 >= n) {
        if (s->n1 != n) {
            snprintf(why, whylen, "all pairs, but %u of the %zu U1 members' keys were sent", s->n1, n);
            return -1;
        }
        return policy_graph_ok(c->policy, (unsigned)n, k, s->t, why, whylen);
    }
    size_t in_len = wire_graph_input_len(m->u1_len);
    uint8_t *in = malloc(in_len), *adj = malloc(n * n);
    if (!in || !adj) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    wire_graph_input(in, s->round, s->model_hash, k, m->u1, m->u1_len);
    crypto_sha256(h, in, in_len);
    if (secagg_graph((unsigned)n, k, wire_get_u64(h), adj) < 0) {
        snprintf(why, whylen, "no graph of degree %u on %zu clients", k, n);
        goto out;
    }
    unsigned mine = 0;
    for (size_t j = 0; j < n; j++) mine += adj[(size_t)me * n + j];
    for (unsigned i = 0; i < s->n1; i++) {
        long p = u1_find(m, s->ids[i]);
        if (s->ids[i] != s->self && !adj[(size_t)me * n + (size_t)p]) {
            snprintf(why, whylen, "client %u is not our neighbour in the protocol's graph", s->ids[i]);
            goto out;
        }
    }
    if (mine + 1 != s->n1) {
        snprintf(why, whylen, "the graph gives us %u neighbours, the key list %u", mine, s->n1 - 1);
        goto out;
    }
    rc = policy_graph_ok(c->policy, (unsigned)n, k, s->t, why, whylen);
out:
    free(in);
    free(adj);
    return rc;
}

/* U1's arrays for n members, zeroed, in one guarded block. -1: out of memory. */
static int peers_alloc(sa_client_t *s, unsigned n)
{
    const size_t per = sizeof *s->ids + sizeof *s->c_pks + sizeof *s->s_pks + sizeof *s->id_pks +
                       sizeof *s->advs + sizeof *s->share_b + sizeof *s->share_s + sizeof *s->in_u2;
    /* sodium_malloc ends the block at its guard page, so the block starts
     * aligned only if its length is a multiple of the alignment. */
    const size_t len = (per * n + 15) & ~(size_t)15;
    uint8_t *p = crypto_secure_alloc(len);
    if (!p) return -1;
    memset(p, 0, len);
    s->peers = p;
    s->peers_len = len;
    s->ids = (uint32_t *)(void *)p; /* first: the one array wider than a byte */
    p += n * sizeof *s->ids;
    s->c_pks = (void *)p;
    p += n * sizeof *s->c_pks;
    s->s_pks = (void *)p;
    p += n * sizeof *s->s_pks;
    s->id_pks = (void *)p;
    p += n * sizeof *s->id_pks;
    s->advs = (void *)p;
    p += n * sizeof *s->advs;
    s->share_b = (void *)p;
    p += n * sizeof *s->share_b;
    s->share_s = (void *)p;
    p += n * sizeof *s->share_s;
    s->in_u2 = p;
    return 0;
}

/* Reads KEYS into U1 (ids and keys by position). 0, or an error code and why. */
static int read_keys(client_t *c, const msg_t *m, char (*names)[CERT_NAME_MAX], char *why,
                     size_t whylen)
{
    sa_client_t *s = c->sa;
    const uint32_t max_id = c->roster ? (uint32_t)c->roster->n : ROSTER_MAX;
    int found_self = 0;
    unsigned records = 0;
    for (size_t off = 0; off < m->blob_len; records++) {
        wire_keyrec_t r;
        if (wire_keyrec_next(m->blob, m->blob_len, &off, &r) < 0 || records == max_id) {
            snprintf(why, whylen, "key list has a bad length or too many records");
            return ERR_PROTOCOL;
        }
    }
    /* Once per round: KEYS is taken only in SA_ADVERTISED (sa_client_on_message). */
    if (peers_alloc(s, records ? records : 1) < 0) {
        snprintf(why, whylen, "out of guarded memory");
        return ERR_LOCAL;
    }
    for (size_t off = 0; off < m->blob_len;) {
        wire_keyrec_t r;
        uint8_t pk[IDENTITY_PUBLICKEYBYTES];
        if (wire_keyrec_next(m->blob, m->blob_len, &off, &r) < 0 || s->n1 == max_id) {
            snprintf(why, whylen, "key list has a bad length or too many records");
            return ERR_PROTOCOL;
        }
        const uint8_t *c_pk = r.adv, *s_pk = r.adv + 32, *sig = r.adv + WIRE_ADV_SIG_OFF;
        if (r.id >= max_id || position_of(s, r.id) >= 0) {
            snprintf(why, whylen, "key list names an unknown client or one twice");
            return ERR_PROTOCOL;
        }
        /* The coordinator relays keys; only the roster or the CA says whose they are. */
        if (peer_key(c, &r, names, pk, why, whylen) < 0)
            return strncmp(why, "policy:", 7) == 0 ? ERR_PROTOCOL : ERR_SIGNATURE;
        uint8_t signed_msg[WIRE_ADV_SIGNED_BYTES];
        wire_adv_signed(signed_msg, s->round, r.id, s->model_hash, r.adv);
        if (identity_verify(sig, pk, "advertise-v2", signed_msg, sizeof signed_msg) < 0) {
            snprintf(why, whylen, "a relayed key is not signed by its site's identity key");
            return ERR_SIGNATURE;
        }
        if (r.id == s->self) {
            if (!crypto_equal(c_pk, s->c_pk, 32) || !crypto_equal(s_pk, s->s_pk, 32)) {
                snprintf(why, whylen, "the key list carries other keys under our id");
                return ERR_PROTOCOL;
            }
            found_self = 1;
        }
        s->ids[s->n1] = r.id;
        memcpy(s->advs[s->n1], r.adv + WIRE_ADV_WEIGHT_OFF, WIRE_ADVERTISE_BYTES - WIRE_ADV_WEIGHT_OFF);
        memcpy(s->id_pks[s->n1], pk, sizeof pk);
        memcpy(s->c_pks[s->n1], c_pk, 32);
        memcpy(s->s_pks[s->n1], s_pk, 32);
        s->n1++;
    }
    if (!found_self) {
        snprintf(why, whylen, "the key list does not include us");
        return ERR_PROTOCOL;
    }
    /* The graph, the cohort and the threshold, against the site's own rules. */
    if (check_graph(c, m, why, whylen) < 0) return ERR_PROTOCOL;
    /* The upload width must hold the sum of what the sites signed (all of
     * U1 with all pairs, our neighbourhood in a SecAgg+ graph), before any
     * share leaves: a narrower one wraps the aggregate, our update with it. */
    int64_t weights = 0;
    for (unsigned i = 0; i < s->n1; i++) {
        const uint64_t nk = wire_get_u64(s->advs[i]);
        weights = nk > (uint64_t)(INT64_MAX - weights) ? INT64_MAX : weights + (int64_t)nk;
    }
    if (!secagg_fits(&s->q, weights, s->n1)) {
        snprintf(why, whylen, "plan: %u-bit upload words cannot hold the sum of %u sites' %lld "
                 "signed samples at clip %g x scale %g (need < 2^%u)", s->q.bits, s->n1,
                 (long long)weights, s->q.clip, s->q.scale, s->q.bits - 1);
        return ERR_PROTOCOL;
    }
    return 0;
}

static void share_keys(client_t *c, const msg_t *m)
{
    sa_client_t *s = c->sa;
    client_maybe_die(c, "share", s->round);
    char (*names)[CERT_NAME_MAX] = c->ca ? calloc(ROSTER_MAX, CERT_NAME_MAX) : NULL;
    char why[400];
    const int code = c->ca && !names ? ERR_LOCAL : read_keys(c, m, names, why, sizeof why);
    free(names);
    if (code != 0) {
        fail(c, (msg_error_t)code, code == ERR_LOCAL ? "out of memory" : why);
        return;
    }
    /* Shamir over U1 at x = id + 1. */
    uint32_t xs[ROSTER_MAX];
    for (unsigned i = 0; i < s->n1; i++) xs[i] = s->ids[i] + 1;
    uint8_t (*sb)[SHAMIR_SHAREBYTES] = crypto_secure_alloc(2 * s->n1 * SHAMIR_SHAREBYTES);
    uint8_t *blob = malloc((s->n1 - 1) * WIRE_BOXREC_BYTES + 1);
    if (!sb || !blob) {
        crypto_secure_free(sb);
        free(blob);
        fail(c, ERR_LOCAL, "out of memory");
        return;
    }
    uint8_t (*ss)[SHAMIR_SHAREBYTES] = sb + s->n1;
    int ok = shamir_split(s->b, s->t, s->n1, xs, sb) == 0 &&
             shamir_split(s->s_sk, s->t, s->n1, xs, ss) == 0;
    size_t off = 0;
    uint8_t plain[SHAREBOX_PLAINBYTES], key[SHAREBOX_KEYBYTES], box[WIRE_BOX_BYTES];
    for (unsigned i = 0; ok && i < s->n1; i++) {
        if (s->ids[i] == s->self) { /* keep our own shares */
            memcpy(s->share_b[i], sb[i], SHAMIR_SHAREBYTES);
            memcpy(s->share_s[i], ss[i], SHAMIR_SHAREBYTES);
            continue;
        }
        memcpy(plain, sb[i], SHAMIR_SHAREBYTES);
        memcpy(plain + SHAMIR_SHAREBYTES, ss[i], SHAMIR_SHAREBYTES);
        ok = ka_derive(key, s->c_sk, s->c_pk, s->c_pks[i], "share", s->round, s->self,
                       s->ids[i]) == 0 &&
             sharebox_seal(box, plain, key, s->round, s->self, s->ids[i]) == 0;
        off += wire_boxrec_put(blob + off, s->ids[i], box);
    }
    crypto_wipe(plain, sizeof plain);
    crypto_wipe(key, sizeof key);
    crypto_wipe(sb, 2 * s->n1 * SHAMIR_SHAREBYTES);
    crypto_secure_free(sb);
    if (!ok) {
        free(blob);
        fail(c, ERR_PROTOCOL, "a peer key is unusable (low-order point)");
        return;
    }
    msg_t out = {.type = MSG_SHARES, .round = s->round, .phase = PHASE_SHARE, .blob = blob,
                 .blob_len = off, .present = MSG_HAS_BLOB};
    client_send(c, &out);
    free(blob);
    s->state = SA_SHARED;
    c->phase = PHASE_SHARE;
    log_info("round=%u phase=share event=shares-sent U1=%u", s->round, s->n1);
}

#ifdef MEDFED_TEST_HOOKS
/* Test builds only: the encoded (unmasked) update, for tests of the exact sum. */
static void dump_encoded(const client_t *c, const uint32_t *x, size_t words)
{
    const char *dir = getenv("MEDFED_TEST_DUMP_DIR"); /* tests only: the encoded update */
    if (!dir) return;
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/encoded-%s-r%u.bin", dir, c->conf->site, c->sa->round);
    if (util_write_file_atomic(path, x, words * 4, err, sizeof err) < 0) log_warn("%s", err);
}
#endif

static void masked_input(client_t *c, const msg_t *m)
{
    sa_client_t *s = c->sa;
    client_maybe_die(c, "masked", s->round);
    size_t n = m->blob_len / WIRE_BOXREC_BYTES;
    if (m->blob_len % WIRE_BOXREC_BYTES || n + 1 < s->t || n >= s->n1) {
        fail(c, ERR_PROTOCOL, "share boxes: bad length or fewer than t clients");
        return;
    }
    uint8_t plain[SHAREBOX_PLAINBYTES], key[SHAREBOX_KEYBYTES];
    int ok = 1;
    for (size_t r = 0; ok && r < n; r++) {
        const wire_boxrec_t rec = wire_boxrec_get(m->blob + r * WIRE_BOXREC_BYTES);
        const uint32_t from = rec.id;
        int pos = position_of(s, from);
        if (pos < 0 || from == s->self || s->in_u2[pos]) {
            ok = 0;
            break;
        }
        ok = ka_derive(key, s->c_sk, s->c_pk, s->c_pks[pos], "share", s->round, s->self, from) ==
                 0 &&
             sharebox_open(plain, rec.box, key, s->round, from, s->self) == 0;
        if (ok) {
            memcpy(s->share_b[pos], plain, SHAMIR_SHAREBYTES);
            memcpy(s->share_s[pos], plain + SHAMIR_SHAREBYTES, SHAMIR_SHAREBYTES);
            s->in_u2[pos] = 1;
        }
    }
    crypto_wipe(plain, sizeof plain);
    crypto_wipe(key, sizeof key);
    if (!ok) {
        fail(c, ERR_PROTOCOL, "a share box is from outside U1, repeated, or does not open");
        return;
    }
    s->in_u2[position_of(s, s->self)] = 1;

    /* y = encode(n_k * delta) || n_k || n_k * loss + PRG(b) + sum_v sign(u, v) PRG(s_uv). */
    size_t words = c->numel + s->tail;
    /* One buffer, kept across rounds (a fresh model-sized buffer costs page
     * faults every round): the dither words are drawn into it and the
     * encoding overwrites each in place. */
    if (!c->masked_buf &&
        !(c->masked_buf = malloc((c->numel + ENC_TAIL_WORDS) * sizeof *c->masked_buf))) {
        fail(c, ERR_LOCAL, "out of memory");
        return;
    }
    uint32_t *y = c->masked_buf;
    uint8_t seed[PRG_SEEDBYTES];
    crypto_random(seed, sizeof seed);
    ok = prg_expand(PRG_DEFAULT, seed, y, c->numel) == 0;
    size_t clipped = secagg_encode(c->work, c->numel, s->weight, &s->q, y, y);
    if (s->tail == ENC_TAIL_WORDS)
        y[c->numel + 1] = secagg_encode_loss(c->update_loss, s->weight, s->loss_scale);
    client_drop_work(c); /* hosted: the delta is in y now */
    if (clipped) log_warn("round=%u %zu update values clipped to +-%g", s->round, clipped, s->q.clip);
#ifdef MEDFED_TEST_HOOKS
    dump_encoded(c, y, words);
#endif
    /* All masks in one pass over y: the self mask and one per U2 peer. */
    uint8_t (*seeds)[PRG_SEEDBYTES] = crypto_secure_alloc((s->n1 + 1) * PRG_SEEDBYTES);
    int *signs = malloc((s->n1 + 1) * sizeof *signs);
    size_t nseeds = 0;
    ok = ok && seeds && signs;
    if (ok) {
        memcpy(seeds[nseeds], s->b, PRG_SEEDBYTES);
        signs[nseeds++] = +1;
    }
    for (unsigned i = 0; ok && i < s->n1; i++) {
        if (!s->in_u2[i] || s->ids[i] == s->self) continue;
        ok = ka_derive(seeds[nseeds], s->s_sk, s->s_pk, s->s_pks[i], "mask", s->round, s->self,
                       s->ids[i]) == 0;
        signs[nseeds++] = s->self < s->ids[i] ? +1 : -1;
    }
    ok = ok && prg_add_many(PRG_DEFAULT, (const uint8_t(*)[PRG_SEEDBYTES])seeds, signs, nseeds, y,
                            words) == 0;
    if (seeds) {
        crypto_wipe(seeds, (s->n1 + 1) * PRG_SEEDBYTES);
        crypto_secure_free(seeds);
    }
    free(signs);
    crypto_wipe(seed, sizeof seed);
    /* The mask secrets are no longer needed here: the coordinator rebuilds
     * what it may from shares. */
    crypto_wipe(s->b, sizeof s->b);
    crypto_wipe(s->s_sk, sizeof s->s_sk);
    crypto_wipe(s->c_sk, sizeof s->c_sk);
    if (!ok) {
        crypto_wipe(y, words * sizeof *y); /* the encoded update, unmasked or partly masked */
        fail(c, ERR_PROTOCOL, "mask derivation failed");
        return;
    }
    /* Only the low w bits of each element travel. The masks are uniform
     * 32-bit words, and 2^w divides 2^32 (every residue mod 2^w has 2^(32-w)
     * preimages), so each reduced mask is uniform mod 2^w: the packed words
     * hide the update as the full ones did, and they still cancel in the sum. */
    s->y_len = enc_pack_masked(y, c->numel, s->q.bits, s->tail);
    s->y = (uint8_t *)y;
    s->state = SA_READY;
    c->phase = PHASE_MASKED;
    msg_t ready = {.type = MSG_READY, .round = s->round, .phase = PHASE_MASKED};
    client_send(c, &ready);
    log_info("round=%u phase=masked event=masked-input-ready", s->round);
}

static void upload(client_t *c, const msg_t *m)
{
    (void)m;
    sa_client_t *s = c->sa;
    if (client_maybe_die(c, "masked-upload", s->round)) return; /* test builds: --stall-at */
    msg_t out = {.type = MSG_MASKED, .round = s->round, .phase = PHASE_MASKED,
                 .vec = s->y, .vec_len = s->y_len, .present = MSG_HAS_VEC};
    client_send_upload(c, &out);
    s->y = NULL; /* the buffer is the client's, reused next round */
    client_drop_upload(c); /* hosted: freed (zmq_send copied it) */
    s->state = SA_MASKED;
    log_info("round=%u phase=masked event=masked-input-sent", s->round);
}

/* Position of id in our signed U3, or -1 (binary search: U3 is ascending). */
static int in_u3(const sa_client_t *s, uint32_t id)
{
    size_t lo = 0, hi = s->n3;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->u3[mid] == id) return (int)mid;
        if (s->u3[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* The bytes a U3 member signs: (round, model hash, U3). Caller frees. */
static uint8_t *consist_message(const sa_client_t *s, size_t *len)
{
    uint8_t *msg = malloc(wire_consist_signed_len(s->n3));
    if (msg) *len = wire_consist_signed(msg, s->round, s->model_hash, s->u3, s->n3);
    return msg;
}

static void consistency(client_t *c, const msg_t *m)
{
    sa_client_t *s = c->sa;
    client_maybe_die(c, "consistency", s->round);
    if (wire_idlist_parse(m->blob, m->blob_len, ROSTER_MAX, s->u3, &s->n3) < 0) {
        fail(c, ERR_PROTOCOL, "consistency: the U3 list is empty, too long or not ascending");
        return;
    }
    /* U3 must hold us; of our peers, only U2 members can be in it, and at
     * least t of our neighbourhood must be, or unmasking could not succeed
     * without revealing below the threshold. */
    unsigned ours = 0;
    for (size_t i = 0; i < s->n3; i++) {
        int pos = position_of(s, s->u3[i]);
        if (pos >= 0 && !s->in_u2[pos]) {
            fail(c, ERR_PROTOCOL, "consistency: U3 names a client that never shared keys with us");
            return;
        }
        ours += pos >= 0;
    }
    if (in_u3(s, s->self) < 0 || ours < s->t) {
        fail(c, ERR_PROTOCOL, "consistency: U3 leaves us out or has fewer than t of our peers");
        return;
    }
    crypto_sha256(s->u3_hash, m->blob, m->blob_len); /* the ids, ascending, as sent */
    if (policy_release_check(c->policy, s->version_id, s->u3_hash) < 0) {
        fail(c, ERR_PROTOCOL, "policy: this site released unmask shares for this model version "
             "with other survivors; a second aggregate over another cohort would expose one "
             "site's update: nothing signed");
        return;
    }
    size_t len = 0;
    uint8_t *msg = consist_message(s, &len), sig[WIRE_SIG_BYTES];
    if (!msg || identity_sign(sig, c->identity_sk, "consistency-v1", msg, len) < 0) {
        free(msg);
        fail(c, ERR_LOCAL, "consistency: signing failed");
        return;
    }
    free(msg);
    msg_t out = {.type = MSG_CONSIST, .round = s->round, .phase = PHASE_CONSIST, .blob = sig,
                 .blob_len = sizeof sig, .present = MSG_HAS_BLOB};
    client_send(c, &out);
    s->state = SA_SIGNED;
    c->phase = PHASE_CONSIST;
    log_info("round=%u phase=consistency event=u3-signed U3=%zu ours=%u", s->round, s->n3, ours);
}

/* At least t valid signatures on exactly our U3, from distinct U3 members
 * whose identity keys we checked in KEYS. 0, or -1 with why. */
static int check_signatures(const sa_client_t *s, const wire_unmaskreq_t *r, char *why,
                            size_t whylen)
{
    size_t len = 0;
    uint8_t *msg = consist_message(s, &len), seen[ROSTER_MAX] = {0};
    unsigned valid = 0;
    if (!msg) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < r->nsig; i++) {
        const wire_sigrec_t rec = wire_sigrec_get(r->sigs + i * WIRE_SIGREC_BYTES);
        int pos = position_of(s, rec.id);
        if (pos < 0 || in_u3(s, s->ids[pos]) < 0 || seen[pos]++) continue; /* not counted */
        if (identity_verify(rec.sig, s->id_pks[pos], "consistency-v1", msg, len) < 0) {
            free(msg);
            snprintf(why, whylen, "consistency: the signature relayed for client %u does not "
                     "sign our view of U3 (a split view): nothing revealed", s->ids[pos]);
            return -1;
        }
        valid++;
    }
    free(msg);
    if (valid < s->t) {
        snprintf(why, whylen, "consistency: %u valid signatures on our view of U3, threshold is "
                 "%u: nothing revealed", valid, s->t);
        return -1;
    }
    return 0;
}

static void unmask(client_t *c, const msg_t *m)
{
    sa_client_t *s = c->sa;
    client_maybe_die(c, "unmask", s->round);
    wire_unmaskreq_t r;
    char why[300];
    if (wire_unmaskreq_parse(m->blob, m->blob_len, &r) < 0 || r.nreq > s->n1) {
        fail(c, ERR_PROTOCOL, "unmask request has a bad length");
        return;
    }
    if (check_signatures(s, &r, why, sizeof why) < 0) {
        fail(c, ERR_PROTOCOL, why);
        return;
    }
    /* Check the whole request before revealing anything: b-shares exactly for
     * the U3 members we signed, s-shares only for U2 members outside it. */
    uint8_t asked[ROSTER_MAX] = {0};
    unsigned survivors = 0;
    int self_survives = 0;
    for (size_t i = 0; i < r.nreq; i++) {
        const wire_reqrec_t req = wire_reqrec_get(r.reqs + i * WIRE_REQREC_BYTES);
        const uint32_t id = req.id, kind = req.kind;
        int pos = position_of(s, id);
        if (pos < 0 || !s->in_u2[pos] || asked[pos] || kind > 1 ||
            kind != (in_u3(s, id) >= 0 ? 0u : 1u)) {
            fail(c, ERR_PROTOCOL, "unmask request names a client outside U2, twice, or asks for "
                 "the share U3 does not allow");
            return;
        }
        asked[pos] = 1; /* one kind per client: never both shares of the same peer */
        survivors += kind == 0;
        self_survives |= id == s->self;
    }
    if (survivors < s->t || !self_survives) {
        fail(c, ERR_PROTOCOL, "unmask request has fewer than t survivors");
        return;
    }
    /* Remember the release before it happens: after a crash or a restart
     * this site never releases shares for this model version again. */
    if (policy_record_release(c->policy, s->version_id, s->u3_hash, why, sizeof why) < 0) {
        fail(c, ERR_LOCAL, why);
        return;
    }
    uint8_t *blob = malloc(r.nreq * WIRE_SHAREREC_BYTES + 1);
    if (!blob) {
        fail(c, ERR_LOCAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < r.nreq; i++) {
        const wire_reqrec_t req = wire_reqrec_get(r.reqs + i * WIRE_REQREC_BYTES);
        int pos = position_of(s, req.id);
        wire_sharerec_put(blob + i * WIRE_SHAREREC_BYTES, req.id, req.kind,
                          req.kind == 0 ? s->share_b[pos] : s->share_s[pos]);
    }
    msg_t out = {.type = MSG_UNMASK, .round = s->round, .phase = PHASE_UNMASK, .blob = blob,
                 .blob_len = r.nreq * WIRE_SHAREREC_BYTES, .present = MSG_HAS_BLOB};
    client_send(c, &out);
    crypto_wipe(blob, r.nreq * WIRE_SHAREREC_BYTES);
    free(blob);
    log_info("round=%u phase=unmask event=shares-revealed survivors=%u dropped=%zu", s->round,
             survivors, r.nreq - survivors);
    sa_client_reset(c);
    c->phase = PHASE_NONE;
}

void sa_client_on_message(client_t *c, const msg_t *m)
{
    static const struct {
        msg_type_t type;
        sa_state_t state;
        void (*action)(client_t *, const msg_t *);
    } table[] = {
        {MSG_KEYS, SA_ADVERTISED, share_keys},
        {MSG_SHARES_IN, SA_SHARED, masked_input},
        {MSG_UPLOAD, SA_READY, upload},
        {MSG_CONSIST_REQ, SA_MASKED, consistency},
        {MSG_UNMASK_REQ, SA_SIGNED, unmask},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (table[i].type != m->type) continue;
        if (!c->sa || c->sa->round != m->round || c->sa->state != table[i].state) {
            char why[128];
            snprintf(why, sizeof why, "%s for round %u is out of phase here", msg_type_name(m->type),
                     m->round);
            log_warn("%s: ignored", why);
            client_send_error(c, m->round, ERR_UNEXPECTED, why);
            return;
        }
        table[i].action(c, m);
        return;
    }
}

/* ---- the site's certificate -------------------------------------------------------------- */

int sa_client_load_cert(client_t *c, const uint8_t pk[IDENTITY_PUBLICKEYBYTES])
{
    const client_conf_t *cf = c->conf;
    char err[1200], name[CERT_NAME_MAX];
    uint8_t cert_pk[IDENTITY_PUBLICKEYBYTES];
    c->ca = cert_ca_load(cf->ca, err, sizeof err);
    c->cert = malloc(WIRE_CERT_MAX);
    if (!c->ca || !c->cert) {
        log_error("%s", c->ca ? "out of memory" : err);
        return -1;
    }
    if (cert_load_file(cf->certificate, c->cert, &c->cert_len, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    if (cert_verify(c->ca, c->cert, c->cert_len, cf->site, name, cert_pk, err, sizeof err) < 0) {
        log_error("%s: %s (ca %s)", cf->certificate, err, cf->ca);
        return -1;
    }
    if (!crypto_equal(cert_pk, pk, sizeof cert_pk)) {
        log_error("%s: the certificate is not for the key in %s", cf->certificate, cf->identity);
        return -1;
    }
    log_info("identity: certificate for '%s' from the federation CA", name);
    return 0;
}

void sa_client_free_cert(client_t *c)
{
    cert_ca_destroy(&c->ca);
    free(c->cert);
    c->cert = NULL;
    c->cert_len = 0;
}
