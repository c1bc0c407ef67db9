/*
 * secagg_server.c - the coordinator's side of secure aggregation
 * (Bonawitz et al., CCS 2017), after each client's local training.
 *
 * U1 ⊇ U2 ⊇ U3 ⊇ U4 are the cohort members that got through each phase
 * (client_rec_t.sa.stage >= 1..4). The coordinator relays keys and
 * encrypted shares it cannot read, adds masked vectors into one O(model)
 * accumulator as they arrive, and at the end learns only
 * sum(n_k * delta_k) and sum(n_k) over U3.
 *
 *   state      event                 action                                   next
 *   TRAINING   ADVERTISE             on_advertise: with --ca, its certificate  TRAINING
 *                                    (CA, CN = roster name, key = roster key);
 *                                    verify the identity signature on (round,
 *                                    model hash, c_pk, s_pk, n_k); n_k within
 *                                    [1, min(HELLO, max_samples)]; stage 1
 *   TRAINING   all answered/dropped  send_keys: |U1| >= t, else abort;        SHARING
 *                                    KEYS (U1's signed keys + certs) to U1
 *   SHARING    SHARES                on_shares: one box per other U1 member,  SHARING
 *                                    stage 2
 *   SHARING    all answered/dropped  route_shares: |U2| >= t, else abort;     MASKING
 *                                    SHARES_IN (boxes from U2) to each of U2
 *   MASKING    READY                 sa_grant_uploads: UPLOAD to the next     MASKING
 *                                    ready clients, upload_slots at a time
 *   MASKING    MASKED                on_masked: length check, add to the      MASKING
 *                                    accumulator, stage 3, UPLOAD to the next
 *   MASKING    granted one dropped   sa_grant_uploads: UPLOAD to the next     MASKING
 *   MASKING    all answered/dropped  request_consistency: |U3| >= t, else     CONSIST
 *                                    abort; CONSIST_REQ (U3's ids) to U3
 *   CONSIST    CONSIST               on_consist: the site's signature on      CONSIST
 *                                    (round, model hash, U3), stage 4
 *   CONSIST    all answered/dropped  request_unmask: |U4| >= t, else abort;   UNMASKING
 *                                    UNMASK_REQ to U4: b-shares of U3,
 *                                    s-shares of U2 \ U3 (never both), with
 *                                    the neighbours' U3 signatures
 *   UNMASKING  UNMASK                on_unmask: exactly the requested shares,  UNMASKING
 *                                    stage 5
 *   UNMASKING  all answered/dropped  unmask: |U5| >= t, else abort;           EVALUATING
 *                                    rebuild b_u (u in U3) and s_sk (U2\U3),
 *                                    remove their masks, decode; the weight
 *                                    must be U3's signed sum of n_k and the
 *                                    mean within the clip range, else abort;
 *                                    FedAvg, commit the model, then EVAL
 *   any        message of a later    ERROR "out of phase" (coordinator.c)     same
 *              or earlier phase
 * A client dropped in any phase simply stops counting for the next sets; the
 * round goes on while each set keeps at least t members.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "coordinator/internal.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"

_Static_assert(WIRE_CERT_MAX == CERT_DER_MAX, "a certificate fits a KEYS record");

/* Stage a cohort member must reach to finish the phase of state st. */
static int stage_of(coord_state_t st)
{
    switch (st) {
    case ST_TRAINING: return 1;
    case ST_SHARING: return 2;
    case ST_MASKING: return 3;
    case ST_CONSIST: return 4;
    case ST_UNMASKING: return 5;
    default: return 0;
    }
}

int sa_handles(coord_state_t st, msg_type_t t)
{
    return (st == ST_TRAINING && t == MSG_ADVERTISE) || (st == ST_SHARING && t == MSG_SHARES) ||
           (st == ST_MASKING && (t == MSG_READY || t == MSG_MASKED)) ||
           (st == ST_CONSIST && t == MSG_CONSIST) || (st == ST_UNMASKING && t == MSG_UNMASK);
}

int sa_pending(const coord_t *c, const client_rec_t *k)
{
    return k->train == P_PENDING && k->sa.stage < stage_of(c->state);
}

static int members(const coord_t *c, int stage)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++)
        n += c->clients[i].train != P_IDLE && c->clients[i].sa.stage >= stage;
    return n;
}

/* Do clients[a] and clients[b] mask with each other this round? */
static int nb(const coord_t *c, const client_rec_t *a, const client_rec_t *b)
{
    size_t i = (size_t)(a - c->clients), j = (size_t)(b - c->clients), n = (size_t)c->adj_n;
    return a != b && c->adj && i < n && j < n && c->adj[i * n + j];
}

/* Members of U_stage in k's neighbourhood (k itself included if in it). */
static int near_members(const coord_t *c, const client_rec_t *k, int stage)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *v = &c->clients[i];
        n += v->train != P_IDLE && v->sa.stage >= stage && (v == k || nb(c, k, v));
    }
    return n;
}

static client_rec_t *by_index(coord_t *c, uint32_t index)
{
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].train != P_IDLE && (uint32_t)c->clients[i].index == index)
            return &c->clients[i];
    return NULL;
}

int sa_load_ca(coord_t *c)
{
    char err[PATH_MAX + 300];
    if (!c->conf->ca[0]) return 0;
    if (!c->conf->secagg || !c->have_roster) {
        log_error("--ca checks identity certificates in secure aggregation: it needs --secagg on "
                  "and a roster");
        return -1;
    }
    c->ca = cert_ca_load(c->conf->ca, err, sizeof err);
    if (!c->ca) {
        log_error("%s", err);
        return -1;
    }
    log_info("identity certificates: issued by the CA in %s", c->conf->ca);
    return 0;
}

void sa_ca_free(coord_t *c)
{
    cert_ca_destroy(&c->ca);
}

void sa_round_cleanup(coord_t *c)
{
    for (int i = 0; i < c->n_clients; i++) {
        sa_client_t *s = &c->clients[i].sa;
        if (s->boxes) crypto_wipe(s->boxes, s->boxes_len); /* revealed shares, in unmasking */
        free(s->boxes);
        s->boxes = NULL;
        s->boxes_len = 0;
        s->stage = 0;
        s->ready = 0;
        s->granted = 0;
    }
    free(c->acc); /* between rounds the coordinator holds just the model */
    c->acc = NULL;
    free(c->adj);
    c->adj = NULL;
    c->adj_n = 0;
    free(c->u3);
    c->u3 = NULL;
    c->n3 = 0;
}

/* Masked inputs arrive one model-sized message each; ZeroMQ allocates a
 * whole message as soon as its header arrives. Granting uploads a few at a
 * time keeps the coordinator at O(model) memory whatever the cohort size,
 * and costs little time: the uploads share one link anyway. Grants go in
 * the order clients report READY, so uploads overlap the others' masking. */
void sa_grant_uploads(coord_t *c)
{
    int active = 0;
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        active += k->train == P_PENDING && k->sa.stage == 2 && k->sa.granted;
    }
    for (int i = 0; i < c->n_clients && active < c->conf->upload_slots; i++) {
        client_rec_t *k = &c->clients[i];
        if (k->train != P_PENDING || k->sa.stage != 2 || !k->sa.ready || k->sa.granted) continue;
        msg_t m = {.type = MSG_UPLOAD, .round = c->round, .phase = PHASE_MASKED};
        coord_send(c, k, NULL, &m);
        k->sa.granted = 1;
        active++;
    }
}

int sa_round_setup(coord_t *c, int cohort, char *err, size_t errlen)
{
    sa_round_cleanup(c);
    /* The threshold applies within each client's neighbourhood (itself and
     * its `degree` neighbours); with all pairs that is the whole cohort. The
     * degree comes from the SecAgg+ bound (aggregation/secagg.h), never less. */
    /* Colluders are a share of the federation (the roster), not of the cohort. */
    if (secagg_plan((unsigned)cohort, c->have_roster ? (unsigned)c->roster.n : 0,
                    (unsigned)c->conf->neighbors, c->conf->dropout, c->conf->collusion,
                    &c->degree, &c->threshold, err, errlen) < 0)
        return -1;
    /* What every site signs its keys against: this model version. */
    crypto_sha256(c->model_hash, c->global, c->numel * sizeof *c->global);
    /* The weights bound: what the cohort reported at HELLO, each capped by
     * max_samples (a site's signed n_k must stay within both). */
    c->max_weight = 0;
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].train == P_PENDING)
            c->max_weight += c->clients[i].n_train < c->conf->max_samples ? c->clients[i].n_train
                                                                        : c->conf->max_samples;
    return secagg_quant_params(c->conf->clip, c->max_weight, (unsigned)cohort, &c->quant, err,
                               errlen);
}

void sa_fill_plan(const coord_t *c, msg_t *p)
{
    p->threshold = c->threshold;
    p->clip = c->quant.clip;
    p->scale = c->quant.scale;
    p->present |= MSG_HAS_SECAGG;
}

static void reject(coord_t *c, client_rec_t *k, msg_error_t code, const char *why)
{
    log_warn("round=%u phase=%s client=%s rejected: %s", c->round, coord_state_names[c->state],
             k->site, why);
    coord_reply_error(c, k, NULL, c->round, code, why);
    coord_drop(c, k, why);
}

/* ---- the actions, in the table's order ------------------------------------------------ */

static void on_advertise(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->blob_len < WIRE_ADVERTISE_BYTES || m->blob_len - WIRE_ADVERTISE_BYTES > WIRE_CERT_MAX) {
        reject(c, k, ERR_PROTOCOL, "advertised keys have the wrong size");
        return;
    }
    const uint8_t *sig = m->blob + WIRE_ADV_SIG_OFF;
    const uint8_t *cert = m->blob + WIRE_ADVERTISE_BYTES;
    const uint64_t weight = wire_get_u64(m->blob + WIRE_ADV_WEIGHT_OFF);
    const size_t cert_len = m->blob_len - WIRE_ADVERTISE_BYTES;
    /* With a CA the certificate must name this roster site and its key;
     * without one a certificate is relayed unchecked (its peers check it). */
    /* By name: a SIGHUP may have re-read the roster while this round runs
     * (sites are renumbered only between rounds). */
    int r = roster_find(&c->roster, k->site);
    if (r < 0) {
        reject(c, k, ERR_UNKNOWN_CLIENT, "this site is no longer on the roster");
        return;
    }
    const roster_entry_t *e = &c->roster.site[r];
    if (c->ca) {
        char name[CERT_NAME_MAX], why[300], line[400];
        uint8_t pk[IDENTITY_PUBLICKEYBYTES];
        if (cert_len == 0) {
            reject(c, k, ERR_SIGNATURE, "no identity certificate (this federation has a CA)");
            return;
        }
        if (cert_verify(c->ca, cert, cert_len, e->name, name, pk, why, sizeof why) < 0) {
            snprintf(line, sizeof line, "identity certificate: %s", why);
            reject(c, k, ERR_SIGNATURE, line);
            return;
        }
        if (!crypto_equal(pk, e->pk, sizeof pk)) {
            reject(c, k, ERR_SIGNATURE, "identity certificate: its key is not the roster's key");
            return;
        }
    }
    uint8_t signed_msg[WIRE_ADV_SIGNED_BYTES];
    wire_adv_signed(signed_msg, c->round, (uint32_t)k->index, c->model_hash, m->blob);
    if (identity_verify(sig, e->pk, "advertise-v2", signed_msg, sizeof signed_msg) < 0) {
        reject(c, k, ERR_SIGNATURE, "advertised keys are not signed by this site's identity key "
               "for this round and model");
        return;
    }
    /* A site's weight: signed, at least 1, at most what it reported at HELLO
     * (the fixed-point scale was chosen from that) and max_samples. */
    if (weight < 1 || weight > (uint64_t)k->n_train || weight > (uint64_t)c->conf->max_samples) {
        char why[200];
        snprintf(why, sizeof why, "signed sample count %llu is outside [1, min(%lld reported at "
                 "HELLO, max_samples %lld)]", (unsigned long long)weight, (long long)k->n_train,
                 (long long)c->conf->max_samples);
        reject(c, k, ERR_PROTOCOL, why);
        return;
    }
    k->sa.weight = (int64_t)weight;
    memcpy(k->sa.adv, m->blob, WIRE_ADVERTISE_BYTES);
    memcpy(k->sa.cert, cert, cert_len);
    k->sa.cert_len = cert_len;
    k->sa.stage = 1;
    if (isfinite(m->train_seconds) && m->train_seconds > c->train_s_max)
        c->train_s_max = m->train_seconds;
    log_debug("round=%u phase=advertise client=%s event=keys-verified", c->round, k->site);
}

/* U1 in ascending index order (positions in the graph) and its KEYS list:
 * (id, SHA-256 of its ADVERTISE record) per member. */
static int u1_list(coord_t *c, int *pos, uint8_t *u1)
{
    int n1 = 0;
    for (int i = 0; i < c->n_clients; i++) {
        if (c->clients[i].train == P_IDLE || c->clients[i].sa.stage < 1) continue;
        int j = n1++;
        for (; j > 0 && c->clients[pos[j - 1]].index > c->clients[i].index; j--) pos[j] = pos[j - 1];
        pos[j] = i;
    }
    for (int a = 0; a < n1; a++) {
        const client_rec_t *v = &c->clients[pos[a]];
        wire_put_u32(u1 + (size_t)a * WIRE_U1REC_BYTES, (uint32_t)v->index);
        crypto_sha256(u1 + (size_t)a * WIRE_U1REC_BYTES + 4, v->sa.adv, WIRE_ADVERTISE_BYTES);
    }
    return n1;
}

static void send_keys(coord_t *c)
{
    int n = c->n_clients, pos[COORD_MAX_CLIENTS];
    size_t cap = 1;
    for (int i = 0; i < n; i++)
        if (c->clients[i].train != P_IDLE && c->clients[i].sa.stage >= 1)
            cap += WIRE_KEYREC_MIN + c->clients[i].sa.cert_len;
    uint8_t *u1 = malloc((size_t)(n ? n : 1) * WIRE_U1REC_BYTES);
    uint8_t *blob = malloc(cap);
    int n1 = u1 ? u1_list(c, pos, u1) : 0;
    const size_t u1_len = (size_t)n1 * WIRE_U1REC_BYTES;
    unsigned k_deg = c->degree < (unsigned)(n1 - 1) ? c->degree : (unsigned)(n1 - 1);
    /* SecAgg+: the neighbour graph over U1, seeded by the hash of U1's signed
     * keys (wire_graph_input): every client recomputes its neighbourhood. */
    uint8_t *g = malloc((size_t)(n1 ? n1 : 1) * (size_t)(n1 ? n1 : 1));
    size_t in_len = wire_graph_input_len(u1_len);
    uint8_t *in = malloc(in_len), h[CRYPTO_HASHBYTES];
    free(c->adj);
    c->adj = calloc((size_t)n * (size_t)n, 1);
    c->adj_n = n;
    int ok = g && c->adj && blob && u1 && in;
    if (ok) {
        wire_graph_input(in, c->round, c->model_hash, k_deg, u1, u1_len);
        crypto_sha256(h, in, in_len);
        ok = secagg_graph((unsigned)n1, k_deg, wire_get_u64(h), g) == 0;
    }
    free(in);
    if (!ok) {
        free(g);
        free(blob);
        free(u1);
        coord_abort_round(c, "out of memory for the neighbour graph");
        return;
    }
    for (int a = 0; a < n1; a++)
        for (int b = 0; b < n1; b++) c->adj[(size_t)pos[a] * n + pos[b]] = g[(size_t)a * n1 + b];
    free(g);
    /* Each client gets the signed keys of its neighbours and its own. */
    for (int i = 0; i < n; i++) {
        client_rec_t *k = &c->clients[i];
        if (k->train != P_PENDING || k->sa.stage < 1) continue;
        size_t off = 0;
        for (int j = 0; j < n; j++) {
            client_rec_t *v = &c->clients[j];
            if (v->train == P_IDLE || v->sa.stage < 1 || (v != k && !nb(c, k, v))) continue;
            off += wire_keyrec_put(blob + off, (uint32_t)v->index, v->sa.adv, v->sa.cert,
                                   v->sa.cert_len);
        }
        msg_t m = {.type = MSG_KEYS, .round = c->round, .phase = PHASE_SHARE, .blob = blob,
                   .blob_len = off, .u1 = u1, .u1_len = u1_len, .degree = k_deg,
                   .present = MSG_HAS_BLOB | MSG_HAS_U1};
        coord_send(c, k, NULL, &m);
    }
    free(blob);
    free(u1);
    c->state = ST_SHARING;
    c->phase_started = util_now();
    log_info("round=%u phase=advertise event=keys-relayed U1=%d degree=%u t=%u -> sharing",
             c->round, n1, k_deg, c->threshold);
}

static void on_shares(coord_t *c, client_rec_t *k, const msg_t *m)
{
    int peers = near_members(c, k, 1) - 1; /* its U1 neighbours */
    if (m->blob_len != (size_t)peers * WIRE_BOXREC_BYTES) {
        reject(c, k, ERR_PROTOCOL, "share boxes: expected one per advertised neighbour");
        return;
    }
    /* Each box goes to a distinct neighbour in U1. */
    uint8_t seen[COORD_MAX_CLIENTS] = {0};
    for (int r = 0; r < peers; r++) {
        uint32_t to = wire_get_u32(m->blob + (size_t)r * WIRE_BOXREC_BYTES);
        client_rec_t *v = to < COORD_MAX_CLIENTS ? by_index(c, to) : NULL;
        if (!v || !nb(c, k, v) || v->sa.stage < 1 || seen[to]++) {
            reject(c, k, ERR_PROTOCOL, "share box addressed to a non-neighbour, or twice");
            return;
        }
    }
    k->sa.boxes = malloc(m->blob_len);
    if (!k->sa.boxes) {
        reject(c, k, ERR_LOCAL, "coordinator out of memory");
        return;
    }
    memcpy(k->sa.boxes, m->blob, m->blob_len);
    k->sa.boxes_len = m->blob_len;
    k->sa.stage = 2;
}

static void route_shares(coord_t *c)
{
    int n2 = members(c, 2);
    if (n2 < (int)c->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d clients shared keys, threshold is %u", n2, c->threshold);
        coord_abort_round(c, why);
        return;
    }
    uint8_t *blob = malloc((size_t)n2 * WIRE_BOXREC_BYTES);
    if (!blob) {
        coord_abort_round(c, "out of memory");
        return;
    }
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *v = &c->clients[i];
        if (v->train != P_PENDING || v->sa.stage < 2) continue;
        size_t off = 0;
        for (int j = 0; j < c->n_clients; j++) {
            client_rec_t *u = &c->clients[j];
            if (u == v || u->train == P_IDLE || u->sa.stage < 2) continue;
            for (size_t r = 0; r < u->sa.boxes_len; r += WIRE_BOXREC_BYTES) {
                if (wire_get_u32(u->sa.boxes + r) != (uint32_t)v->index) continue;
                wire_put_u32(blob + off, (uint32_t)u->index);
                memcpy(blob + off + 4, u->sa.boxes + r + 4, WIRE_BOX_BYTES);
                off += WIRE_BOXREC_BYTES;
            }
        }
        msg_t m = {.type = MSG_SHARES_IN, .round = c->round, .phase = PHASE_MASKED, .blob = blob,
                   .blob_len = off, .present = MSG_HAS_BLOB};
        coord_send(c, v, NULL, &m);
    }
    free(blob);
    free(c->acc);
    c->acc = calloc(c->numel + 1, sizeof *c->acc);
    if (!c->acc) {
        coord_abort_round(c, "out of memory for the masked sum");
        return;
    }
    c->state = ST_MASKING;
    c->phase_started = util_now();
    sa_grant_uploads(c);
    log_info("round=%u phase=share event=shares-routed U2=%d -> masking", c->round, n2);
}

static void on_masked(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->vec_len != (c->numel + 1) * 4) {
        char why[128];
        snprintf(why, sizeof why, "masked input has %zu bytes, expected %zu", m->vec_len,
                 (c->numel + 1) * 4);
        reject(c, k, ERR_WRONG_LENGTH, why);
        return;
    }
    if (!k->sa.granted) {
        reject(c, k, ERR_UNEXPECTED, "masked input sent before its upload was granted");
        return;
    }
    secagg_add_le(c->acc, m->vec, c->numel + 1);
    k->sa.stage = 3;
    sa_grant_uploads(c);
    log_debug("round=%u phase=masked client=%s event=added", c->round, k->site);
}

/* MASKING done: every U3 member is asked to sign U3 (Bonawitz et al.'s
 * consistency round). A client reveals shares only after t signatures on
 * its own view of U3, so showing different sites different U3s gets nothing. */
static void request_consistency(coord_t *c)
{
    int n3 = members(c, 3);
    if (n3 < (int)c->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d masked inputs, threshold is %u", n3, c->threshold);
        coord_abort_round(c, why);
        return;
    }
    free(c->u3);
    c->n3 = 0;
    c->u3 = malloc((size_t)n3 * sizeof *c->u3);
    uint8_t *blob = malloc((size_t)n3 * 4);
    if (!c->u3 || !blob) {
        free(blob);
        coord_abort_round(c, "out of memory");
        return;
    }
    for (int i = 0; i < c->n_clients; i++) /* by index, ascending (insertion sort: small n) */
        if (c->clients[i].train != P_IDLE && c->clients[i].sa.stage >= 3) {
            uint32_t id = (uint32_t)c->clients[i].index;
            size_t j = c->n3++;
            for (; j > 0 && c->u3[j - 1] > id; j--) c->u3[j] = c->u3[j - 1];
            c->u3[j] = id;
        }
    for (size_t i = 0; i < c->n3; i++) wire_put_u32(blob + 4 * i, c->u3[i]);
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *v = &c->clients[i];
        if (v->train != P_PENDING || v->sa.stage < 3) continue;
        msg_t m = {.type = MSG_CONSIST_REQ, .round = c->round, .phase = PHASE_CONSIST, .blob = blob,
                   .blob_len = c->n3 * 4, .present = MSG_HAS_BLOB};
        coord_send(c, v, NULL, &m);
    }
    free(blob);
    c->state = ST_CONSIST;
    c->phase_started = util_now();
    log_info("round=%u phase=masked event=consistency-requested U3=%d dropped=%d -> consistency",
             c->round, n3, members(c, 2) - n3);
}

static void on_consist(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->blob_len != WIRE_SIG_BYTES) {
        reject(c, k, ERR_PROTOCOL, "consistency: expected one signature");
        return;
    }
    int r = roster_find(&c->roster, k->site);
    size_t len = wire_consist_signed_len(c->n3);
    uint8_t *msg = malloc(len);
    if (!msg) {
        reject(c, k, ERR_LOCAL, "coordinator out of memory");
        return;
    }
    wire_consist_signed(msg, c->round, c->model_hash, c->u3, c->n3);
    int ok = r >= 0 && identity_verify(m->blob, c->roster.site[r].pk, "consistency-v1", msg, len) == 0;
    free(msg);
    if (!ok) {
        reject(c, k, ERR_SIGNATURE, "consistency: the signature is not this site's on U3");
        return;
    }
    memcpy(k->sa.consist_sig, m->blob, WIRE_SIG_BYTES);
    k->sa.stage = 4;
}

/* Each signer is asked about its own neighbourhood in U2 (itself included):
 * b-shares of U3 members, s-shares of the rest, never both; the request
 * carries the U3 signatures of its neighbours so that it can check them. */
static void request_unmask(coord_t *c)
{
    int n4 = members(c, 4);
    if (n4 < (int)c->threshold) {
        char why[96];
        snprintf(why, sizeof why, "only %d clients signed U3, threshold is %u", n4, c->threshold);
        coord_abort_round(c, why);
        return;
    }
    int n2 = members(c, 2);
    uint8_t *blob = malloc(wire_unmaskreq_len((size_t)n2, (size_t)n4));
    if (!blob) {
        coord_abort_round(c, "out of memory");
        return;
    }
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *v = &c->clients[i];
        if (v->train != P_PENDING || v->sa.stage < 4) continue;
        size_t nreq = 0, off = 4;
        for (int j = 0; j < c->n_clients; j++) {
            client_rec_t *u = &c->clients[j];
            if (u->train == P_IDLE || u->sa.stage < 2 || (u != v && !nb(c, v, u))) continue;
            wire_put_u32(blob + off, (uint32_t)u->index);
            wire_put_u32(blob + off + 4, u->sa.stage >= 3 ? 0 : 1); /* survivor : dropped */
            off += WIRE_REQREC_BYTES;
            nreq++;
        }
        wire_unmaskreq_put_header(blob, nreq);
        for (int j = 0; j < c->n_clients; j++) {
            client_rec_t *u = &c->clients[j];
            if (u->train == P_IDLE || u->sa.stage < 4 || (u != v && !nb(c, v, u))) continue;
            wire_put_u32(blob + off, (uint32_t)u->index);
            memcpy(blob + off + 4, u->sa.consist_sig, WIRE_SIG_BYTES);
            off += WIRE_SIGREC_BYTES;
        }
        msg_t m = {.type = MSG_UNMASK_REQ, .round = c->round, .phase = PHASE_UNMASK, .blob = blob,
                   .blob_len = off, .present = MSG_HAS_BLOB};
        coord_send(c, v, NULL, &m);
    }
    free(blob);
    c->state = ST_UNMASKING;
    c->phase_started = util_now();
    log_info("round=%u phase=consistency event=unmask-requested U3=%d U4=%d -> unmasking",
             c->round, members(c, 3), n4);
}

static void on_unmask(coord_t *c, client_rec_t *k, const msg_t *m)
{
    int asked = near_members(c, k, 2);
    if (m->blob_len != (size_t)asked * WIRE_SHAREREC_BYTES) {
        reject(c, k, ERR_PROTOCOL, "unmask: expected one share per requested client");
        return;
    }
    uint8_t seen[COORD_MAX_CLIENTS] = {0};
    for (int r = 0; r < asked; r++) {
        const uint8_t *rec = m->blob + (size_t)r * WIRE_SHAREREC_BYTES;
        uint32_t id = wire_get_u32(rec), kind = wire_get_u32(rec + 4);
        client_rec_t *u = id < COORD_MAX_CLIENTS ? by_index(c, id) : NULL;
        if (!u || u->sa.stage < 2 || (u != k && !nb(c, k, u)) || seen[id]++ ||
            kind != (u->sa.stage >= 3 ? 0u : 1u)) {
            reject(c, k, ERR_PROTOCOL, "unmask: a share that was not requested");
            return;
        }
    }
    k->sa.boxes = realloc(k->sa.boxes, m->blob_len); /* its share boxes are no longer needed */
    if (!k->sa.boxes) {
        k->sa.boxes_len = 0;
        reject(c, k, ERR_LOCAL, "coordinator out of memory");
        return;
    }
    memcpy(k->sa.boxes, m->blob, m->blob_len);
    k->sa.boxes_len = m->blob_len;
    k->sa.stage = 5;
}

/* Rebuilds the secret of client `target` (kind 0: b, 1: s_sk) from the
 * first t responders' shares. */
static int rebuild(coord_t *c, uint32_t target, uint32_t kind, uint8_t secret[32])
{
    unsigned t = c->threshold, k = 0;
    uint32_t *xs = malloc(t * sizeof *xs);
    uint8_t (*sh)[SHAMIR_SHAREBYTES] = malloc(t * sizeof *sh);
    int rc = -1;
    if (!xs || !sh) goto out;
    for (int i = 0; i < c->n_clients && k < t; i++) {
        client_rec_t *v = &c->clients[i];
        if (v->train == P_IDLE || v->sa.stage < 5) continue;
        for (size_t r = 0; r < v->sa.boxes_len; r += WIRE_SHAREREC_BYTES) {
            const uint8_t *rec = v->sa.boxes + r;
            if (wire_get_u32(rec) != target || wire_get_u32(rec + 4) != kind) continue;
            xs[k] = (uint32_t)v->index + 1;
            memcpy(sh[k], rec + 8, SHAMIR_SHAREBYTES);
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
static void dump_sum(const coord_t *c)
{
    const char *dir = getenv("MEDFED_TEST_DUMP_DIR"); /* tests only: the unmasked sum */
    if (!dir) return;
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/unmasked-r%u.bin", dir, c->round);
    if (util_write_file_atomic(path, c->acc, (c->numel + 1) * 4, err, sizeof err) < 0)
        log_warn("%s", err);
}
#endif

static void unmask(coord_t *c)
{
    int n5 = members(c, 5);
    char why[200];
    if (n5 < (int)c->threshold) {
        snprintf(why, sizeof why, "only %d clients sent unmasking shares, threshold is %u", n5,
                 c->threshold);
        coord_abort_round(c, why);
        return;
    }
    /* Gather every mask to remove, then remove them all in one pass. */
    int n2 = members(c, 2), n3 = members(c, 3);
    size_t cap = (size_t)n3 + (size_t)(n2 - n3) * (size_t)n3, nseeds = 0; /* an upper bound */
    uint8_t (*seeds)[PRG_SEEDBYTES] = crypto_secure_alloc((cap ? cap : 1) * PRG_SEEDBYTES);
    int *signs = malloc((cap ? cap : 1) * sizeof *signs);
    uint8_t secret[32];
    int ok = seeds && signs;
    for (int i = 0; ok && i < c->n_clients; i++) {
        client_rec_t *u = &c->clients[i];
        if (u->train == P_IDLE || u->sa.stage < 2) continue;
        if (u->sa.stage >= 3) { /* survivor: remove its self mask */
            ok = rebuild(c, (uint32_t)u->index, 0, seeds[nseeds]) == 0;
            signs[nseeds++] = -1;
            continue;
        }
        /* dropped after sharing: remove the pairwise masks survivors added for it */
        ok = rebuild(c, (uint32_t)u->index, 1, secret) == 0;
        for (int j = 0; ok && j < c->n_clients; j++) {
            client_rec_t *v = &c->clients[j];
            if (v->train == P_IDLE || v->sa.stage < 3 || !nb(c, u, v)) continue;
            ok = ka_derive(seeds[nseeds], secret, u->sa.adv + 32, v->sa.adv + 32, "mask", c->round,
                           (uint32_t)u->index, (uint32_t)v->index) == 0;
            signs[nseeds++] = v->index < u->index ? -1 : +1; /* minus what v added */
        }
    }
    ok = ok && prg_add_many(PRG_DEFAULT, (const uint8_t(*)[PRG_SEEDBYTES])seeds, signs, nseeds,
                            c->acc, c->numel + 1) == 0;
    crypto_wipe(secret, sizeof secret);
    if (seeds) {
        crypto_wipe(seeds, (cap ? cap : 1) * PRG_SEEDBYTES);
        crypto_secure_free(seeds);
    }
    free(signs);
    if (!ok) {
        coord_abort_round(c, "unmasking failed: fewer than t consistent shares for some client");
        return;
    }
#ifdef MEDFED_TEST_HOOKS
    dump_sum(c);
#endif
    /* Decoded in place: the masked sum's words become the mean delta. */
    float *avg = (float *)c->acc;
    int64_t weight;
    if (secagg_decode(c->acc, c->numel, &c->quant, c->max_weight, avg, &weight, why,
                      sizeof why) < 0) {
        coord_abort_round(c, why);
        return;
    }
    /* The decoded weight must be exactly what U3 signed, and the mean of
     * clipped values must lie in the clip range: a site whose input was not
     * a valid encoding (or a sum tampered with) shows here, and the round is
     * abandoned rather than the model moved by it. */
    int64_t signed_weight = 0;
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].train != P_IDLE && c->clients[i].sa.stage >= 3)
            signed_weight += c->clients[i].sa.weight;
    if (weight != signed_weight) {
        snprintf(why, sizeof why, "decoded total weight %lld is not the %lld the U3 sites signed: "
                 "a masked input was not a valid encoding", (long long)weight,
                 (long long)signed_weight);
        coord_abort_round(c, why);
        return;
    }
    const double bound = c->quant.clip + (double)(members(c, 3) + 1) / (c->quant.scale * (double)weight);
    for (size_t i = 0; i < c->numel; i++)
        if (!(fabs((double)avg[i]) <= bound)) {
            snprintf(why, sizeof why, "decoded mean update element %zu is %g, outside the clip "
                     "range +-%g: a masked input was not a valid encoding", i, (double)avg[i],
                     c->quant.clip);
            coord_abort_round(c, why);
            return;
        }
    c->participants = members(c, 3);
    c->survivors = n5;
    log_info("round=%u phase=unmask event=unmasked U3=%d U5=%d weight=%lld", c->round,
             c->participants, n5, (long long)weight);
    for (int i = 0; i < c->n_clients; i++) { /* free shares now; stages stay for metrics */
        if (c->clients[i].sa.boxes) crypto_wipe(c->clients[i].sa.boxes, c->clients[i].sa.boxes_len);
        free(c->clients[i].sa.boxes);
        c->clients[i].sa.boxes = NULL;
        c->clients[i].sa.boxes_len = 0;
    }
    coord_apply_and_evaluate(c, avg);
    free(c->acc);
    c->acc = NULL;
}

void sa_on_message(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->round != c->round) {
        char why[96];
        snprintf(why, sizeof why, "%s for round %u during round %u", msg_type_name(m->type),
                 m->round, c->round);
        log_warn("site=%s rejected: %s", k->site, why);
        coord_reply_error(c, k, NULL, c->round, ERR_WRONG_ROUND, why);
        return;
    }
    if (k->train != P_PENDING || k->sa.stage >= stage_of(c->state)) {
        log_warn("round=%u site=%s rejected: %s not expected from it now", c->round, k->site,
                 msg_type_name(m->type));
        coord_reply_error(c, k, NULL, c->round, k->train == P_PENDING ? ERR_DUPLICATE : ERR_UNEXPECTED,
                          "not expected from this client in this phase");
        return;
    }
    switch (m->type) {
    case MSG_ADVERTISE: on_advertise(c, k, m); break;
    case MSG_SHARES: on_shares(c, k, m); break;
    case MSG_READY:
        if (k->sa.ready) {
            coord_reply_error(c, k, NULL, c->round, ERR_DUPLICATE, "READY already received");
            break;
        }
        k->sa.ready = 1;
        sa_grant_uploads(c);
        break;
    case MSG_MASKED: on_masked(c, k, m); break;
    case MSG_CONSIST: on_consist(c, k, m); break;
    case MSG_UNMASK: on_unmask(c, k, m); break;
    default: break;
    }
}

void sa_phase_complete(coord_t *c)
{
    switch (c->state) {
    case ST_TRAINING: {
        int n1 = members(c, 1);
        if (n1 < (int)c->threshold) {
            char why[96];
            snprintf(why, sizeof why, "only %d clients advertised keys, threshold is %u", n1,
                     c->threshold);
            coord_abort_round(c, why);
        } else {
            send_keys(c);
        }
        break;
    }
    case ST_SHARING: route_shares(c); break;
    case ST_MASKING: request_consistency(c); break;
    case ST_CONSIST: request_unmask(c); break;
    case ST_UNMASKING: unmask(c); break;
    default: break;
    }
}
