/*
 * secagg_server.c - the coordinator's side of secure aggregation
 * (Bonawitz et al., CCS 2017, with the consistency round of its
 * malicious-server variant), after each client's local training.
 *
 * U1 ⊇ U2 ⊇ U3 ⊇ U4 ⊇ U5 are the cohort members that got through each
 * phase (member_t.stage >= 1..5). The server relays keys and encrypted
 * shares it cannot read, adds masked vectors into one O(model) accumulator
 * as they arrive, and at the end learns only sum(n_k * delta_k) and
 * sum(n_k) over U3. It owns all of that state; the coordinator (round,
 * sites, sockets) sees an outcome per call (secagg_server.h).
 *
 *   phase      event                 action                                   next
 *   ADVERTISE  ADVERTISE             on_advertise: with a CA, its certificate  ADVERTISE
 *                                    (CA, CN = the site, key = roster key);
 *                                    verify the identity signature on (round,
 *                                    model hash, c_pk, s_pk, n_k); n_k within
 *                                    [1, min(HELLO, max_samples)]; stage 1
 *   ADVERTISE  none pending (step)   send_keys: |U1| >= t, else ABORT;        SHARING
 *                                    KEYS (U1's signed keys + certs) to U1
 *   SHARING    SHARES                on_shares: one box per other U1 member,  SHARING
 *                                    stage 2
 *   SHARING    none pending          route_shares: |U2| >= t, else ABORT;     MASKING
 *                                    SHARES_IN (boxes from U2) to each of U2
 *   MASKING    READY                 grant_uploads: UPLOAD to the next ready  MASKING
 *                                    members, upload_slots at a time
 *   MASKING    MASKED                on_masked: length check (numel elements  MASKING
 *                                    at the plan's width + the weight word),
 *                                    add to the accumulator, stage 3, UPLOAD
 *                                    to the next
 *   MASKING    step                  grant_uploads (a granted one dropped)    MASKING
 *   MASKING    none pending          request_consistency: |U3| >= t, else     CONSIST
 *                                    ABORT; CONSIST_REQ (U3's ids) to U3
 *   CONSIST    CONSIST               on_consist: the site's signature on      CONSIST
 *                                    (round, model hash, U3), stage 4
 *   CONSIST    none pending          request_unmask: |U4| >= t, else ABORT;   UNMASKING
 *                                    UNMASK_REQ to U4: b-shares of U3,
 *                                    s-shares of U2 \ U3 (never both), with
 *                                    the neighbours' U3 signatures
 *   UNMASKING  UNMASK                on_unmask: exactly the requested shares,  UNMASKING
 *                                    stage 5
 *   UNMASKING  none pending          unmask: |U5| >= t, else ABORT; rebuild   UNMASKED
 *                                    b_u (u in U3) and s_sk (U2 \ U3), remove
 *                                    their masks, decode; the weight must be
 *                                    U3's signed sum of n_k and the mean
 *                                    within the clip range, else ABORT; DONE
 *                                    with the mean
 *   any        a member's message    REFUSED (ERROR to it, it stays) when it  same
 *              of another round, or  is not its turn; DROPPED (ERROR, out of
 *              not its turn; a bad   the round) when the message breaks the
 *              record                protocol
 * A member dropped in any phase (secagg_server_drop) stops counting for the
 * next sets; the round goes on while each set keeps at least t members.
 */
#include "coordinator/secagg_server.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "aggregation/secagg.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/cert.h"

_Static_assert(WIRE_CERT_MAX == CERT_DER_MAX, "a certificate fits a KEYS record");
_Static_assert(WIRE_SHAREREC_BYTES == 8 + SHAMIR_SHAREBYTES, "an UNMASK record holds one share");

/* One cohort member and how far it got this round. */
typedef struct {
    int slot;
    uint32_t id;
    char site[WIRE_SITE_MAX];
    uint8_t pk[IDENTITY_PUBLICKEYBYTES];
    int64_t n_train;
    int stage;                           /* U-set membership: stage >= k is in Uk */
    int dropped;                         /* owes nothing more this round */
    int ready;                           /* has its masked input computed */
    int granted;                         /* may upload its masked input now */
    uint8_t adv[WIRE_ADVERTISE_BYTES];   /* c_pk || s_pk || n_k || sig */
    int64_t weight;                      /* n_k, as the site signed it */
    uint8_t consist_sig[WIRE_SIG_BYTES]; /* its signature on U3 */
    uint8_t *cert;                       /* its identity certificate (DER), relayed in KEYS */
    size_t cert_len;
    uint8_t *boxes;                      /* SHARES: its boxes; UNMASK: its share records */
    size_t boxes_len;
} member_t;

struct secagg_server {
    const coord_conf_t *conf;
    cert_ca_t *ca;             /* conf->ca: ADVERTISE must carry a certificate from it */
    size_t numel;
    sa_send_fn send;
    void *ctx;

    sa_phase_t phase;
    uint32_t round;
    uint8_t model_hash[WIRE_HASH_BYTES]; /* what every site signs its keys against */
    member_t *m;               /* the cohort, ascending id */
    int n;
    int of_slot[COORD_MAX_CLIENTS]; /* slot -> position in m, -1: not a member */
    unsigned threshold;
    unsigned degree;           /* neighbours per member (n - 1: all pairs) */
    uint8_t *adj;              /* adj[a * n + b]: members a and b mask together */
    uint32_t *u3;              /* consistency round: U3's ids ascending */
    size_t n3;
    quant_t quant;
    int64_t max_weight;
    double loss_scale;         /* of the weighted loss word (secagg_loss_scale); 0: none */
    unsigned tail;             /* words after the elements: ENC_TAIL_WORDS, or ENC_TAIL_V2
                                * when a member speaks protocol 2 (no loss word) */
    uint32_t *acc;             /* numel + ENC_TAIL_WORDS masked words, from MASKING to the end */
};

static int stage_of(sa_phase_t p)
{
    switch (p) {
    case SA_ADVERTISE: return 1;
    case SA_SHARING: return 2;
    case SA_MASKING: return 3;
    case SA_CONSIST: return 4;
    case SA_UNMASKING: return 5;
    default: return 0;
    }
}

const char *secagg_server_phase_name(sa_phase_t p)
{
    static const char *const names[] = {"idle", "training", "sharing", "masking",
                                        "consistency", "unmasking", "unmasked"};
    return p <= SA_UNMASKED ? names[p] : "?";
}

/* ---- set-up and queries ---------------------------------------------------------------- */

secagg_server_t *secagg_server_new(const coord_conf_t *conf, size_t numel, sa_send_fn send,
                                   void *ctx, char *err, size_t errlen)
{
    secagg_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        util_seterr(err, errlen, "out of memory");
        return NULL;
    }
    s->conf = conf;
    s->numel = numel;
    s->send = send;
    s->ctx = ctx;
    for (int i = 0; i < COORD_MAX_CLIENTS; i++) s->of_slot[i] = -1;
    if (conf->ca[0] && !(s->ca = cert_ca_load(conf->ca, err, errlen))) {
        free(s);
        return NULL;
    }
    return s;
}

int secagg_server_has_ca(const secagg_server_t *s) { return s && s->ca; }

static void forget_members(secagg_server_t *s)
{
    for (int a = 0; a < s->n; a++) {
        s->of_slot[s->m[a].slot] = -1;
        free(s->m[a].cert);
    }
    free(s->m);
    s->m = NULL;
    s->n = 0;
}

void secagg_server_free(secagg_server_t **sp)
{
    if (!sp || !*sp) return;
    secagg_server_end(*sp);
    forget_members(*sp);
    cert_ca_destroy(&(*sp)->ca);
    free(*sp);
    *sp = NULL;
}

void secagg_server_end(secagg_server_t *s)
{
    for (int a = 0; a < s->n; a++) {
        member_t *v = &s->m[a];
        if (v->boxes) crypto_wipe(v->boxes, v->boxes_len); /* revealed shares, in unmasking */
        free(v->boxes);
        v->boxes = NULL;
        v->boxes_len = 0;
    }
    free(s->acc); /* between rounds the coordinator holds just the model */
    s->acc = NULL;
    free(s->adj);
    s->adj = NULL;
    free(s->u3);
    s->u3 = NULL;
    s->n3 = 0;
    s->phase = SA_IDLE; /* stages stay until the next begin: the round's metrics read them */
}

static int member_of(const secagg_server_t *s, int slot)
{
    return slot >= 0 && slot < COORD_MAX_CLIENTS ? s->of_slot[slot] : -1;
}

/* The member with site id `id`, or -1 (m is in ascending id order). */
static int by_id(const secagg_server_t *s, uint32_t id)
{
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->m[mid].id == id) return mid;
        if (s->m[mid].id < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Members of U_stage. */
static int members(const secagg_server_t *s, int stage)
{
    int n = 0;
    for (int a = 0; a < s->n; a++) n += s->m[a].stage >= stage;
    return n;
}

/* Do members a and b mask with each other this round? */
static int nb(const secagg_server_t *s, int a, int b)
{
    return a != b && s->adj && s->adj[(size_t)a * (size_t)s->n + (size_t)b];
}

/* Members of U_stage in a's neighbourhood (a itself included if in it). */
static int near_members(const secagg_server_t *s, int a, int stage)
{
    int n = 0;
    for (int b = 0; b < s->n; b++) n += s->m[b].stage >= stage && (b == a || nb(s, a, b));
    return n;
}

sa_phase_t secagg_server_phase(const secagg_server_t *s) { return s->phase; }
unsigned secagg_server_threshold(const secagg_server_t *s) { return s->threshold; }
unsigned secagg_server_degree(const secagg_server_t *s) { return s->degree; }
unsigned secagg_server_bits(const secagg_server_t *s) { return s->quant.bits; }
double secagg_server_clip(const secagg_server_t *s) { return s->quant.clip; }
int secagg_server_count(const secagg_server_t *s, sa_phase_t p) { return members(s, stage_of(p)); }

int secagg_server_pending(const secagg_server_t *s, int slot)
{
    int a = member_of(s, slot);
    return a >= 0 && !s->m[a].dropped && s->m[a].stage < stage_of(s->phase);
}

int secagg_server_granted(const secagg_server_t *s, int slot)
{
    int a = member_of(s, slot);
    return a >= 0 && s->phase == SA_MASKING && !s->m[a].dropped && s->m[a].granted &&
           s->m[a].stage == 2;
}

int secagg_server_in_u3(const secagg_server_t *s, int slot)
{
    int a = member_of(s, slot);
    return a >= 0 && s->m[a].stage >= 3;
}

int secagg_server_accepts(const secagg_server_t *s, msg_type_t t)
{
    sa_phase_t p = s->phase;
    return (p == SA_ADVERTISE && t == MSG_ADVERTISE) || (p == SA_SHARING && t == MSG_SHARES) ||
           (p == SA_MASKING && (t == MSG_READY || t == MSG_MASKED)) ||
           (p == SA_CONSIST && t == MSG_CONSIST) || (p == SA_UNMASKING && t == MSG_UNMASK);
}

void secagg_server_drop(secagg_server_t *s, int slot)
{
    int a = member_of(s, slot);
    if (a >= 0) s->m[a].dropped = 1;
}

static int by_member_id(const void *x, const void *y)
{
    uint32_t a = ((const member_t *)x)->id, b = ((const member_t *)y)->id;
    return (a > b) - (a < b);
}

int secagg_server_begin(secagg_server_t *s, uint32_t round, const uint8_t model_hash[WIRE_HASH_BYTES],
                        const sa_member_t *members_in, int n, unsigned federation, double clip,
                        char *err, size_t errlen)
{
    secagg_server_end(s);
    forget_members(s);
    s->round = round;
    memcpy(s->model_hash, model_hash, WIRE_HASH_BYTES);
    if (n < 0 || n > COORD_MAX_CLIENTS || !(s->m = calloc((size_t)(n ? n : 1), sizeof *s->m))) {
        util_seterr(err, errlen, "out of memory for the cohort");
        return -1;
    }
    s->n = n;
    /* The weights bound: what the cohort reported at HELLO, each capped by
     * max_samples (a site's signed n_k must stay within both). */
    s->max_weight = 0;
    s->tail = ENC_TAIL_WORDS;
    for (int a = 0; a < n; a++) {
        if (members_in[a].v2) s->tail = ENC_TAIL_V2;
        member_t *v = &s->m[a];
        v->slot = members_in[a].slot;
        v->id = members_in[a].id;
        util_strlcpy(v->site, members_in[a].site, sizeof v->site);
        memcpy(v->pk, members_in[a].pk, IDENTITY_PUBLICKEYBYTES);
        v->n_train = members_in[a].n_train;
        s->max_weight += v->n_train < s->conf->max_samples ? v->n_train : s->conf->max_samples;
    }
    qsort(s->m, (size_t)n, sizeof *s->m, by_member_id);
    for (int a = 0; a < n; a++) s->of_slot[s->m[a].slot] = a;
    /* The threshold applies within each member's neighbourhood (itself and
     * its `degree` neighbours); with all pairs that is the whole cohort. The
     * degree comes from the SecAgg+ bound (aggregation/secagg.h), never less.
     * Colluders are a share of the federation (the roster), not of the cohort. */
    if (secagg_plan((unsigned)n, federation, (unsigned)s->conf->neighbors, s->conf->dropout,
                    s->conf->collusion, &s->degree, &s->threshold, err, errlen) < 0)
        return -1;
    /* The upload width: each site's value gets upload_bits, the cohort's sum
     * ceil(log2 n) more (sum(n_k) <= n * max(n_k)), rounding one more; the
     * scale then fills the width without letting the sum wrap. */
    if (secagg_quant_params(clip, s->max_weight, (unsigned)n,
                            enc_width((unsigned)s->conf->upload_bits, (unsigned)n), &s->quant, err,
                            errlen) < 0)
        return -1;
    s->loss_scale = s->tail == ENC_TAIL_WORDS ? secagg_loss_scale(s->max_weight, (unsigned)n) : 0;
    s->phase = SA_ADVERTISE;
    return 0;
}

void secagg_server_fill_plan(const secagg_server_t *s, msg_t *p)
{
    p->threshold = s->threshold;
    p->clip = s->quant.clip;
    p->scale = s->quant.scale;
    p->bits = s->quant.bits;
    p->present |= MSG_HAS_SECAGG;
    if (s->tail == ENC_TAIL_WORDS) { /* a cohort that all speak protocol 3 */
        p->loss_scale = s->loss_scale;
        p->present |= MSG_HAS_LOSS;
    }
}

static void send_to(secagg_server_t *s, int a, msg_type_t type, uint32_t phase, const uint8_t *blob,
                    size_t len)
{
    msg_t m = {.type = type, .round = s->round, .phase = phase, .blob = blob, .blob_len = len,
               .present = blob ? MSG_HAS_BLOB : 0};
    s->send(s->ctx, s->m[a].slot, &m);
}

/* The sender broke the protocol: it is out of the round. */
static void drop_sender(secagg_server_t *s, int a, msg_error_t code, const char *why,
                        sa_outcome_t *out)
{
    s->m[a].dropped = 1;
    out->status = SA_DROPPED;
    out->code = code;
    util_strlcpy(out->why, why, sizeof out->why);
}

static void abort_round(sa_outcome_t *out, const char *why)
{
    out->status = SA_ABORT;
    util_strlcpy(out->why, why, sizeof out->why);
}

/* ---- the actions, in the table's order ------------------------------------------------ */

static void on_advertise(secagg_server_t *s, int a, const msg_t *m, sa_outcome_t *out)
{
    member_t *k = &s->m[a];
    if (m->blob_len < WIRE_ADVERTISE_BYTES || m->blob_len - WIRE_ADVERTISE_BYTES > WIRE_CERT_MAX) {
        drop_sender(s, a, ERR_PROTOCOL, "advertised keys have the wrong size", out);
        return;
    }
    const uint8_t *sig = m->blob + WIRE_ADV_SIG_OFF;
    const uint8_t *cert = m->blob + WIRE_ADVERTISE_BYTES;
    const uint64_t weight = wire_adv_weight(m->blob);
    const size_t cert_len = m->blob_len - WIRE_ADVERTISE_BYTES;
    /* With a CA the certificate must name this site and its roster key;
     * without one a certificate is relayed unchecked (its peers check it). */
    if (s->ca) {
        char name[CERT_NAME_MAX], why[300], line[400];
        uint8_t pk[IDENTITY_PUBLICKEYBYTES];
        if (cert_len == 0) {
            drop_sender(s, a, ERR_SIGNATURE, "no identity certificate (this federation has a CA)",
                        out);
            return;
        }
        if (cert_verify(s->ca, cert, cert_len, k->site, name, pk, why, sizeof why) < 0) {
            snprintf(line, sizeof line, "identity certificate: %s", why);
            drop_sender(s, a, ERR_SIGNATURE, line, out);
            return;
        }
        if (!crypto_equal(pk, k->pk, sizeof pk)) {
            drop_sender(s, a, ERR_SIGNATURE, "identity certificate: its key is not the roster's key",
                        out);
            return;
        }
    }
    uint8_t signed_msg[WIRE_ADV_SIGNED_BYTES];
    wire_adv_signed(signed_msg, s->round, k->id, s->model_hash, m->blob);
    if (identity_verify(sig, k->pk, "advertise-v2", signed_msg, sizeof signed_msg) < 0) {
        drop_sender(s, a, ERR_SIGNATURE, "advertised keys are not signed by this site's identity "
                    "key for this round and model", out);
        return;
    }
    /* A site's weight: signed, at least 1, at most what it reported at HELLO
     * (the fixed-point scale was chosen from that) and max_samples. */
    if (weight < 1 || weight > (uint64_t)k->n_train || weight > (uint64_t)s->conf->max_samples) {
        char why[200];
        snprintf(why, sizeof why, "signed sample count %llu is outside [1, min(%lld reported at "
                 "HELLO, max_samples %lld)]", (unsigned long long)weight, (long long)k->n_train,
                 (long long)s->conf->max_samples);
        drop_sender(s, a, ERR_PROTOCOL, why, out);
        return;
    }
    if (cert_len && !k->cert && !(k->cert = malloc(WIRE_CERT_MAX))) {
        drop_sender(s, a, ERR_LOCAL, "coordinator out of memory", out);
        return;
    }
    k->weight = (int64_t)weight;
    memcpy(k->adv, m->blob, WIRE_ADVERTISE_BYTES);
    if (cert_len) memcpy(k->cert, cert, cert_len);
    k->cert_len = cert_len;
    k->stage = 1;
    log_debug("round=%u phase=advertise client=%s event=keys-verified", s->round, k->site);
}

/* U1's KEYS list, (id, SHA-256 of its ADVERTISE record) per member in
 * ascending id; pos[] gets their positions in m (the graph's order). */
static int u1_list(const secagg_server_t *s, int *pos, uint8_t *u1)
{
    int n1 = 0;
    for (int a = 0; a < s->n; a++) {
        if (s->m[a].stage < 1) continue;
        uint8_t h[CRYPTO_HASHBYTES];
        crypto_sha256(h, s->m[a].adv, WIRE_ADVERTISE_BYTES);
        wire_u1rec_put(u1 + (size_t)n1 * WIRE_U1REC_BYTES, s->m[a].id, h);
        pos[n1++] = a;
    }
    return n1;
}

static void send_keys(secagg_server_t *s, sa_outcome_t *out)
{
    int n = s->n, n1 = members(s, 1);
    if (n1 < (int)s->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d clients advertised keys, threshold is %u", n1,
                 s->threshold);
        abort_round(out, why);
        return;
    }
    size_t cap = 1;
    for (int a = 0; a < n; a++)
        if (s->m[a].stage >= 1) cap += WIRE_KEYREC_MIN + s->m[a].cert_len;
    const size_t u1_len = (size_t)n1 * WIRE_U1REC_BYTES;
    unsigned k_deg = s->degree < (unsigned)(n1 - 1) ? s->degree : (unsigned)(n1 - 1);
    int *pos = malloc((size_t)(n1 ? n1 : 1) * sizeof *pos);
    uint8_t *u1 = malloc(u1_len ? u1_len : 1);
    uint8_t *blob = malloc(cap);
    /* SecAgg+: the neighbour graph over U1, seeded by the hash of U1's signed
     * keys (wire_graph_input): every client recomputes its neighbourhood. */
    uint8_t *g = malloc((size_t)(n1 ? n1 : 1) * (size_t)(n1 ? n1 : 1));
    size_t in_len = wire_graph_input_len(u1_len);
    uint8_t *in = malloc(in_len), h[CRYPTO_HASHBYTES];
    free(s->adj);
    s->adj = calloc((size_t)(n ? n : 1) * (size_t)(n ? n : 1), 1);
    int ok = pos && g && s->adj && blob && u1 && in;
    if (ok) {
        u1_list(s, pos, u1);
        wire_graph_input(in, s->round, s->model_hash, k_deg, u1, u1_len);
        crypto_sha256(h, in, in_len);
        ok = secagg_graph((unsigned)n1, k_deg, wire_get_u64(h), g) == 0;
    }
    free(in);
    if (ok)
        for (int a = 0; a < n1; a++)
            for (int b = 0; b < n1; b++)
                s->adj[(size_t)pos[a] * (size_t)n + (size_t)pos[b]] = g[(size_t)a * (size_t)n1 + (size_t)b];
    free(g);
    free(pos);
    if (!ok) {
        free(blob);
        free(u1);
        abort_round(out, "out of memory for the neighbour graph");
        return;
    }
    /* Each member gets the signed keys of its neighbours and its own. */
    for (int a = 0; a < n; a++) {
        if (s->m[a].dropped || s->m[a].stage < 1) continue;
        size_t off = 0;
        for (int b = 0; b < n; b++) {
            const member_t *v = &s->m[b];
            if (v->stage < 1 || (b != a && !nb(s, a, b))) continue;
            off += wire_keyrec_put(blob + off, v->id, v->adv, v->cert, v->cert_len);
        }
        msg_t m = {.type = MSG_KEYS, .round = s->round, .phase = PHASE_SHARE, .blob = blob,
                   .blob_len = off, .u1 = u1, .u1_len = u1_len, .degree = k_deg,
                   .present = MSG_HAS_BLOB | MSG_HAS_U1};
        s->send(s->ctx, s->m[a].slot, &m);
    }
    free(blob);
    free(u1);
    s->phase = SA_SHARING;
    log_info("round=%u phase=advertise event=keys-relayed U1=%d degree=%u t=%u bits=%u -> sharing",
             s->round, n1, k_deg, s->threshold, s->quant.bits);
}

static void on_shares(secagg_server_t *s, int a, const msg_t *m, sa_outcome_t *out)
{
    int peers = near_members(s, a, 1) - 1; /* its U1 neighbours */
    if (m->blob_len != (size_t)peers * WIRE_BOXREC_BYTES) {
        drop_sender(s, a, ERR_PROTOCOL, "share boxes: expected one per advertised neighbour", out);
        return;
    }
    /* Each box goes to a distinct neighbour in U1. */
    uint8_t seen[COORD_MAX_CLIENTS] = {0};
    for (int r = 0; r < peers; r++) {
        wire_boxrec_t rec = wire_boxrec_get(m->blob + (size_t)r * WIRE_BOXREC_BYTES);
        int v = by_id(s, rec.id);
        if (v < 0 || !nb(s, a, v) || s->m[v].stage < 1 || seen[v]++) {
            drop_sender(s, a, ERR_PROTOCOL, "share box addressed to a non-neighbour, or twice", out);
            return;
        }
    }
    member_t *k = &s->m[a];
    k->boxes = malloc(m->blob_len ? m->blob_len : 1);
    if (!k->boxes) {
        drop_sender(s, a, ERR_LOCAL, "coordinator out of memory", out);
        return;
    }
    memcpy(k->boxes, m->blob, m->blob_len);
    k->boxes_len = m->blob_len;
    k->stage = 2;
}

/* Masked inputs arrive one model-sized message each; ZeroMQ allocates a
 * whole message as soon as its header arrives. Granting uploads a few at a
 * time keeps the coordinator at O(model) memory whatever the cohort size,
 * and costs little time: the uploads share one link anyway. */
static void grant_uploads(secagg_server_t *s)
{
    int active = 0;
    for (int a = 0; a < s->n; a++) {
        const member_t *k = &s->m[a];
        active += !k->dropped && k->stage == 2 && k->granted;
    }
    for (int a = 0; a < s->n && active < s->conf->upload_slots; a++) {
        member_t *k = &s->m[a];
        if (k->dropped || k->stage != 2 || !k->ready || k->granted) continue;
        send_to(s, a, MSG_UPLOAD, PHASE_MASKED, NULL, 0);
        k->granted = 1;
        active++;
    }
}

static void route_shares(secagg_server_t *s, sa_outcome_t *out)
{
    int n2 = members(s, 2);
    if (n2 < (int)s->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d clients shared keys, threshold is %u", n2, s->threshold);
        abort_round(out, why);
        return;
    }
    /* Each box to its recipient, in one pass over the boxes (bucketed by
     * recipient: a scan of every sender per recipient was O(n^2 k), 0.5-0.9 s
     * of the coordinator's round at 1,000 sites). Boxes were checked at
     * SHARES: each goes to a distinct neighbour, never the sender. */
    size_t *start = calloc((size_t)s->n + 1, sizeof *start), *fill = calloc((size_t)s->n, sizeof *fill);
    uint8_t *blob = NULL;
    if (start && fill) {
        for (int b = 0; b < s->n; b++)
            for (size_t r = 0; s->m[b].stage >= 2 && r < s->m[b].boxes_len; r += WIRE_BOXREC_BYTES) {
                int v = by_id(s, wire_boxrec_get(s->m[b].boxes + r).id);
                if (v >= 0) start[v + 1]++;
            }
        for (int a = 0; a < s->n; a++) start[a + 1] += start[a];
        blob = malloc((start[s->n] ? start[s->n] : 1) * WIRE_BOXREC_BYTES);
    }
    if (!blob) {
        free(start);
        free(fill);
        abort_round(out, "out of memory");
        return;
    }
    for (int b = 0; b < s->n; b++) {
        const member_t *u = &s->m[b];
        for (size_t r = 0; u->stage >= 2 && r < u->boxes_len; r += WIRE_BOXREC_BYTES) {
            wire_boxrec_t rec = wire_boxrec_get(u->boxes + r);
            int v = by_id(s, rec.id);
            if (v < 0) continue;
            wire_boxrec_put(blob + (start[v] + fill[v]++) * WIRE_BOXREC_BYTES, u->id, rec.box);
        }
    }
    for (int a = 0; a < s->n; a++) {
        const member_t *v = &s->m[a];
        if (v->dropped || v->stage < 2) continue;
        send_to(s, a, MSG_SHARES_IN, PHASE_MASKED, blob + start[a] * WIRE_BOXREC_BYTES,
                fill[a] * WIRE_BOXREC_BYTES);
    }
    free(start);
    free(fill);
    free(blob);
    free(s->acc);
    s->acc = calloc(s->numel + ENC_TAIL_WORDS, sizeof *s->acc);
    if (!s->acc) {
        abort_round(out, "out of memory for the masked sum");
        return;
    }
    s->phase = SA_MASKING;
    grant_uploads(s);
    log_info("round=%u phase=share event=shares-routed U2=%d -> masking", s->round, n2);
}

static void on_masked(secagg_server_t *s, int a, const msg_t *m, sa_outcome_t *out)
{
    const size_t len = enc_masked_len(s->numel, s->quant.bits, s->tail);
    if (m->vec_len != len) {
        char why[128];
        snprintf(why, sizeof why, "masked input has %zu bytes, expected %zu (%u-bit elements)",
                 m->vec_len, len, s->quant.bits);
        drop_sender(s, a, ERR_WRONG_LENGTH, why, out);
        return;
    }
    if (!s->m[a].granted) {
        drop_sender(s, a, ERR_UNEXPECTED, "masked input sent before its upload was granted", out);
        return;
    }
    enc_unpack_add_masked(m->vec, s->numel, s->quant.bits, s->tail, s->acc);
    s->m[a].stage = 3;
    grant_uploads(s);
    log_debug("round=%u phase=masked client=%s event=added", s->round, s->m[a].site);
}

/* MASKING done: every U3 member is asked to sign U3 (Bonawitz et al.'s
 * consistency round). A client reveals shares only after t signatures on
 * its own view of U3, so showing different sites different U3s gets nothing. */
static void request_consistency(secagg_server_t *s, sa_outcome_t *out)
{
    int n3 = members(s, 3);
    if (n3 < (int)s->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d masked inputs, threshold is %u", n3, s->threshold);
        abort_round(out, why);
        return;
    }
    free(s->u3);
    s->n3 = 0;
    s->u3 = malloc((size_t)(n3 ? n3 : 1) * sizeof *s->u3);
    uint8_t *blob = malloc((size_t)(n3 ? n3 : 1) * 4);
    if (!s->u3 || !blob) {
        free(blob);
        abort_round(out, "out of memory");
        return;
    }
    for (int a = 0; a < s->n; a++) /* m is in ascending id order */
        if (s->m[a].stage >= 3) s->u3[s->n3++] = s->m[a].id;
    size_t len = wire_idlist_put(blob, s->u3, s->n3);
    for (int a = 0; a < s->n; a++)
        if (!s->m[a].dropped && s->m[a].stage >= 3)
            send_to(s, a, MSG_CONSIST_REQ, PHASE_CONSIST, blob, len);
    free(blob);
    s->phase = SA_CONSIST;
    log_info("round=%u phase=masked event=consistency-requested U3=%d dropped=%d -> consistency",
             s->round, n3, members(s, 2) - n3);
}

static void on_consist(secagg_server_t *s, int a, const msg_t *m, sa_outcome_t *out)
{
    if (m->blob_len != WIRE_SIG_BYTES) {
        drop_sender(s, a, ERR_PROTOCOL, "consistency: expected one signature", out);
        return;
    }
    size_t len = wire_consist_signed_len(s->n3);
    uint8_t *msg = malloc(len);
    if (!msg) {
        drop_sender(s, a, ERR_LOCAL, "coordinator out of memory", out);
        return;
    }
    wire_consist_signed(msg, s->round, s->model_hash, s->u3, s->n3);
    int ok = identity_verify(m->blob, s->m[a].pk, "consistency-v1", msg, len) == 0;
    free(msg);
    if (!ok) {
        drop_sender(s, a, ERR_SIGNATURE, "consistency: the signature is not this site's on U3", out);
        return;
    }
    memcpy(s->m[a].consist_sig, m->blob, WIRE_SIG_BYTES);
    s->m[a].stage = 4;
}

/* Each signer is asked about its own neighbourhood in U2 (itself included):
 * b-shares of U3 members, s-shares of the rest, never both; the request
 * carries the U3 signatures of its neighbours so that it can check them. */
static void request_unmask(secagg_server_t *s, sa_outcome_t *out)
{
    int n4 = members(s, 4);
    if (n4 < (int)s->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d clients signed U3, threshold is %u", n4, s->threshold);
        abort_round(out, why);
        return;
    }
    int n2 = members(s, 2);
    uint8_t *blob = malloc(wire_unmaskreq_len((size_t)n2, (size_t)n4));
    if (!blob) {
        abort_round(out, "out of memory");
        return;
    }
    for (int a = 0; a < s->n; a++) {
        if (s->m[a].dropped || s->m[a].stage < 4) continue;
        size_t nreq = 0, off = 4;
        for (int b = 0; b < s->n; b++) {
            const member_t *u = &s->m[b];
            if (u->stage < 2 || (b != a && !nb(s, a, b))) continue;
            off += wire_reqrec_put(blob + off, u->id, u->stage >= 3 ? 0 : 1); /* survivor : dropped */
            nreq++;
        }
        wire_unmaskreq_put_header(blob, nreq);
        for (int b = 0; b < s->n; b++) {
            const member_t *u = &s->m[b];
            if (u->stage < 4 || (b != a && !nb(s, a, b))) continue;
            off += wire_sigrec_put(blob + off, u->id, u->consist_sig);
        }
        send_to(s, a, MSG_UNMASK_REQ, PHASE_UNMASK, blob, off);
    }
    free(blob);
    s->phase = SA_UNMASKING;
    log_info("round=%u phase=consistency event=unmask-requested U3=%d U4=%d -> unmasking",
             s->round, members(s, 3), n4);
}

static void on_unmask(secagg_server_t *s, int a, const msg_t *m, sa_outcome_t *out)
{
    int asked = near_members(s, a, 2);
    if (m->blob_len != (size_t)asked * WIRE_SHAREREC_BYTES) {
        drop_sender(s, a, ERR_PROTOCOL, "unmask: expected one share per requested client", out);
        return;
    }
    uint8_t seen[COORD_MAX_CLIENTS] = {0};
    for (int r = 0; r < asked; r++) {
        wire_sharerec_t rec = wire_sharerec_get(m->blob + (size_t)r * WIRE_SHAREREC_BYTES);
        int u = by_id(s, rec.id);
        if (u < 0 || s->m[u].stage < 2 || (u != a && !nb(s, a, u)) || seen[u]++ ||
            rec.kind != (s->m[u].stage >= 3 ? 0u : 1u)) {
            drop_sender(s, a, ERR_PROTOCOL, "unmask: a share that was not requested", out);
            return;
        }
    }
    member_t *k = &s->m[a];
    uint8_t *keep = malloc(m->blob_len ? m->blob_len : 1); /* its share boxes are no longer needed */
    if (!keep) {
        drop_sender(s, a, ERR_LOCAL, "coordinator out of memory", out);
        return;
    }
    free(k->boxes);
    k->boxes = keep;
    memcpy(k->boxes, m->blob, m->blob_len);
    k->boxes_len = m->blob_len;
    k->stage = 5;
}

/* Rebuilds the secret of site `target` (kind 0: b, 1: s_sk) from the first
 * t responders' shares. */
static int rebuild(const secagg_server_t *s, uint32_t target, uint32_t kind, uint8_t secret[32])
{
    unsigned t = s->threshold, k = 0;
    uint32_t *xs = malloc(t * sizeof *xs);
    uint8_t (*sh)[SHAMIR_SHAREBYTES] = malloc(t * sizeof *sh);
    int rc = -1;
    if (!xs || !sh) goto out;
    for (int a = 0; a < s->n && k < t; a++) {
        const member_t *v = &s->m[a];
        if (v->stage < 5) continue;
        for (size_t r = 0; r < v->boxes_len; r += WIRE_SHAREREC_BYTES) {
            wire_sharerec_t rec = wire_sharerec_get(v->boxes + r);
            if (rec.id != target || rec.kind != kind) continue;
            xs[k] = v->id + 1;
            memcpy(sh[k], rec.share, SHAMIR_SHAREBYTES);
            k++;
            break;
        }
    }
    rc = shamir_combine(t, k, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])sh, secret);
out:
    if (sh) crypto_wipe(sh, t * sizeof *sh);
    free(sh);
    free(xs);
    return rc;
}

#ifdef MEDFED_TEST_HOOKS
/* Test builds only: the unmasked sum, for tests of the exact sum. */
static void dump_sum(const secagg_server_t *s)
{
    const char *dir = getenv("MEDFED_TEST_DUMP_DIR");
    if (!dir) return;
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/unmasked-r%u.bin", dir, s->round);
    if (util_write_file_atomic(path, s->acc, (s->numel + s->tail) * 4, err, sizeof err) < 0)
        log_warn("%s", err);
}
#endif

static void unmask(secagg_server_t *s, sa_outcome_t *out)
{
    int n5 = members(s, 5);
    char why[200];
    if (n5 < (int)s->threshold) {
        snprintf(why, sizeof why, "only %d clients sent unmasking shares, threshold is %u", n5,
                 s->threshold);
        abort_round(out, why);
        return;
    }
    /* Gather every mask to remove, then remove them all in one pass. */
    int n2 = members(s, 2), n3 = members(s, 3);
    size_t cap = (size_t)n3 + (size_t)(n2 - n3) * (size_t)n3, nseeds = 0; /* an upper bound */
    uint8_t (*seeds)[PRG_SEEDBYTES] = crypto_secure_alloc((cap ? cap : 1) * PRG_SEEDBYTES);
    int *signs = malloc((cap ? cap : 1) * sizeof *signs);
    uint8_t secret[32];
    int ok = seeds && signs;
    for (int a = 0; ok && a < s->n; a++) {
        const member_t *u = &s->m[a];
        if (u->stage < 2) continue;
        if (u->stage >= 3) { /* survivor: remove its self mask */
            ok = rebuild(s, u->id, 0, seeds[nseeds]) == 0;
            signs[nseeds++] = -1;
            continue;
        }
        /* dropped after sharing: remove the pairwise masks survivors added for it */
        ok = rebuild(s, u->id, 1, secret) == 0;
        for (int b = 0; ok && b < s->n; b++) {
            const member_t *v = &s->m[b];
            if (v->stage < 3 || !nb(s, a, b)) continue;
            ok = ka_derive(seeds[nseeds], secret, u->adv + 32, v->adv + 32, "mask", s->round, u->id,
                           v->id) == 0;
            signs[nseeds++] = v->id < u->id ? -1 : +1; /* minus what v added */
        }
    }
    ok = ok && prg_add_many(PRG_DEFAULT, (const uint8_t(*)[PRG_SEEDBYTES])seeds, signs, nseeds,
                            s->acc, s->numel + s->tail) == 0;
    crypto_wipe(secret, sizeof secret);
    if (seeds) {
        crypto_wipe(seeds, (cap ? cap : 1) * PRG_SEEDBYTES);
        crypto_secure_free(seeds);
    }
    free(signs);
    if (!ok) {
        abort_round(out, "unmasking failed: fewer than t consistent shares for some client");
        return;
    }
#ifdef MEDFED_TEST_HOOKS
    dump_sum(s);
#endif
    /* Decoded in place: the masked sum's words become the mean delta (the
     * loss word, after the weight, is read first). */
    const uint32_t loss_word = s->tail == ENC_TAIL_WORDS ? s->acc[s->numel + 1] : 0;
    float *avg = (float *)s->acc;
    int64_t weight;
    if (secagg_decode(s->acc, s->numel, &s->quant, s->max_weight, avg, &weight, why,
                      sizeof why) < 0) {
        abort_round(out, why);
        return;
    }
    /* The decoded weight must be exactly what U3 signed, and the mean of
     * clipped values must lie in the clip range: a site whose input was not
     * a valid encoding (or a sum tampered with) shows here, and the round is
     * abandoned rather than the model moved by it. */
    int64_t signed_weight = 0;
    for (int a = 0; a < s->n; a++)
        if (s->m[a].stage >= 3) signed_weight += s->m[a].weight;
    if (weight != signed_weight) {
        snprintf(why, sizeof why, "decoded total weight %lld is not the %lld the U3 sites signed: "
                 "a masked input was not a valid encoding", (long long)weight,
                 (long long)signed_weight);
        abort_round(out, why);
        return;
    }
    const double bound = s->quant.clip + (double)(n3 + 1) / (s->quant.scale * (double)weight);
    for (size_t i = 0; i < s->numel; i++)
        if (!(fabs((double)avg[i]) <= bound)) {
            snprintf(why, sizeof why, "decoded mean update element %zu is %g, outside the clip "
                     "range +-%g: a masked input was not a valid encoding", i, (double)avg[i],
                     s->quant.clip);
            abort_round(out, why);
            return;
        }
    log_info("round=%u phase=unmask event=unmasked U3=%d U5=%d weight=%lld", s->round, n3, n5,
             (long long)weight);
    for (int a = 0; a < s->n; a++) { /* the shares are spent */
        member_t *v = &s->m[a];
        if (v->boxes) crypto_wipe(v->boxes, v->boxes_len);
        free(v->boxes);
        v->boxes = NULL;
        v->boxes_len = 0;
    }
    s->phase = SA_UNMASKED;
    out->status = SA_DONE;
    out->mean = avg;
    out->weight = weight;
    out->train_loss = s->tail == ENC_TAIL_WORDS ? secagg_decode_loss(loss_word, weight, s->loss_scale)
                                                : NAN; /* a protocol-2 cohort sends no loss word */
    out->participants = n3;
    out->survivors = n5;
}

/* ---- the table's entry points ------------------------------------------------------------ */

void secagg_server_message(secagg_server_t *s, int slot, const msg_t *m, sa_outcome_t *out)
{
    memset(out, 0, sizeof *out);
    int a = member_of(s, slot);
    if (m->round != s->round) {
        out->status = SA_REFUSED;
        out->code = ERR_WRONG_ROUND;
        snprintf(out->why, sizeof out->why, "%s for round %u during round %u",
                 msg_type_name(m->type), m->round, s->round);
        return;
    }
    if (a < 0 || s->m[a].dropped || s->m[a].stage >= stage_of(s->phase)) {
        out->status = SA_REFUSED;
        out->code = a >= 0 && !s->m[a].dropped ? ERR_DUPLICATE : ERR_UNEXPECTED;
        util_strlcpy(out->why, "not expected from this client in this phase", sizeof out->why);
        return;
    }
    switch (m->type) {
    case MSG_ADVERTISE: on_advertise(s, a, m, out); break;
    case MSG_SHARES: on_shares(s, a, m, out); break;
    case MSG_READY:
        if (s->m[a].ready) {
            out->status = SA_REFUSED;
            out->code = ERR_DUPLICATE;
            util_strlcpy(out->why, "READY already received", sizeof out->why);
            break;
        }
        s->m[a].ready = 1;
        grant_uploads(s);
        break;
    case MSG_MASKED: on_masked(s, a, m, out); break;
    case MSG_CONSIST: on_consist(s, a, m, out); break;
    case MSG_UNMASK: on_unmask(s, a, m, out); break;
    default: break;
    }
}

void secagg_server_step(secagg_server_t *s, sa_outcome_t *out)
{
    memset(out, 0, sizeof *out);
    if (s->phase == SA_MASKING) grant_uploads(s); /* a granted member may have dropped */
    int stage = stage_of(s->phase);
    if (!stage) return;
    for (int a = 0; a < s->n; a++)
        if (!s->m[a].dropped && s->m[a].stage < stage) return; /* someone still owes it */
    switch (s->phase) {
    case SA_ADVERTISE: send_keys(s, out); break;
    case SA_SHARING: route_shares(s, out); break;
    case SA_MASKING: request_consistency(s, out); break;
    case SA_CONSIST: request_unmask(s, out); break;
    case SA_UNMASKING: unmask(s, out); break;
    default: break;
    }
}
