/*
 * evil_coordinator - a malicious coordinator for tests/malicious/run.sh. It
 * holds the coordinator's CURVE key (and, for the Sybil attack, a kit the
 * federation CA minted), speaks the real codec over a real ROUTER socket to
 * real medfed-client daemons, behaves like the honest coordinator
 * (coordinator/secagg_server.c) up to the attack, deviates, and records what
 * the daemons sent.
 *
 *   evil_coordinator --bind EP --curve-secret FILE --init MODEL --sites A,B,C,D
 *                    --attack NAME --out TRANSCRIPT [--victim SITE] [--epochs N]
 *                    [--sybil-kit DIR] [--sybil-id ID] [--dump DIR] [--timeout S]
 *
 * Sites get ids in --sites order (site i is client i). Attacks:
 *   honest          one honest round: every site reveals, the unmasked sum is
 *                   written to DIR/unmasked-rR.bin (--dump) and its decoded
 *                   weight is the sum of the signed n_k
 *   threshold       PLAN with t = 1
 *   width           PLAN with an upload width that holds each site's own value but
 *                   not the cohort's sum (the aggregate would wrap)
 *   cohort-alone    KEYS to the victim holding only the victim
 *   cohort-pair     KEYS to the victim holding the victim and one other (t = 2)
 *   split-view      CONSIST_REQ: U3 with the victim to {victim, site 1}, U3 without
 *                   it to the rest; UNMASK_REQ relays all four signatures
 *   split-view-few  the same, each group getting only the signatures on its own view
 *   replay          an honest round, then a second aggregate of the same model
 *                   version without the victim (their difference would be its update)
 *   replay-restart  the same, with "RESTART SITE" (site 1) in the transcript between
 *                   the two: the second aggregate goes on after SITE's new HELLO
 *   near-replay     an honest round, then one without the victim on a model one
 *                   weight apart (a "new version") with the same training seed:
 *                   the difference of the two sums (--dump) is the victim's update
 *   graph-partial   KEYS to the victim: all pairs claimed over U1 = all four, three
 *                   key records sent (the coordinator picks who the victim shares with)
 *   graph-forged    U1 = all four, degree 2: the victim gets its non-neighbour in
 *                   the protocol's graph (wire_graph_input) instead of a neighbour
 *   graph-threshold the protocol's own graph of degree 2 among 4, with t = 1 in each
 *                   neighbourhood of 3 (below the site's policy)
 *   sybil           KEYS with one more signed key record: the --sybil-kit site's
 *                   (identity.key, identity.crt), as client --sybil-id (default:
 *                   after the real sites; an id of a real site replaces its record)
 *   twin            the same with a real site's kit as --sybil-kit: one site twice
 *   tampered-model  PLAN names the model by its SHA-256 (v4) and the chunks the
 *                   sites fetch carry other bytes (one weight changed)
 * After an attack every site gets one honest round on a new model version (the
 * daemons are still there and work), then SHUTDOWN.
 *
 * Transcript: one line per message received ("round=R site=S type=T ..."), a
 * "# " line per step, and one "PASS"/"FAIL" line per check. Exit 0 when all
 * checks passed, 1 when one failed, 2 on a usage or setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "aggregation/encoding.h"
#include "aggregation/secagg.h"
#include "common/util.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"
#include "model/safetensors.h"
#include "proto/transport.h"

#define EVIL_SITES_MAX 16
#define EVIL_COLLUSION 0.33 /* the sites' default [policy] max_collusion */
#define EVIL_CLIP 2.0

typedef struct {
    char name[WIRE_SITE_MAX];
    peer_id_t route;
    int welcomed;
    int64_t n_train;
    /* this round */
    uint32_t got;                   /* 1 << msg_type_t of each message received */
    uint8_t *stage;                 /* v4: the PARTs of its MASKED so far */
    size_t stage_len, stage_have;
    char error[WIRE_REASON_MAX];    /* the last ERROR's reason, "" if none */
    uint8_t adv[WIRE_ADVERTISE_BYTES];
    uint8_t cert[WIRE_CERT_MAX];
    size_t cert_len;
    uint8_t *boxes, *shares;        /* SHARES and UNMASK blobs */
    size_t boxes_len, shares_len;
    uint8_t sig[WIRE_SIG_BYTES];    /* CONSIST */
} site_t;

typedef struct {
    void *zctx, *sock;
    wire_buf_t *out;
    wire_decoder_t *dec;
    FILE *log;
    double timeout;
    int failures;
    /* the model */
    char arch[WIRE_ARCH_MAX];
    uint32_t in_ch, height, width, classes;
    size_t numel;
    float *global;
    uint32_t version;
    uint8_t model_hash[WIRE_HASH_BYTES];
    uint32_t epochs;
    uint64_t seed;                  /* of the next PLAN; 0: a fresh one each round */
    /* the round */
    uint32_t round;
    unsigned t;
    quant_t q;
    int narrow;                     /* the next PLAN: the width attack's */
    int plain;                      /* the next PLAN asks for a plaintext update (downgrade) */
    int bulk;                       /* the next PLAN names the model: sites FETCH it (v4) */
    int tamper;                     /* the chunks served differ from the model named */
    uint32_t *acc;                  /* masked sum of this round */
    int n;
    site_t site[EVIL_SITES_MAX];
    int victim;
    const char *dump;
    /* a site the federation CA certified and the coordinator controls */
    int have_sybil;
    uint32_t sybil_id;
    uint8_t sybil_sk[IDENTITY_SECRETKEYBYTES];
    uint8_t sybil_cert[WIRE_CERT_MAX];
    size_t sybil_cert_len;
    uint8_t sybil_adv[WIRE_ADVERTISE_BYTES]; /* this round's */
} evil_t;

#define ALL(e) ((1u << (e)->n) - 1)
#define BIT(i) (1u << (i))
#define GOT(s, type) (((s)->got >> (type)) & 1u)

static void note(evil_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(evil_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", e->log);
    vfprintf(e->log, fmt, ap);
    fputc('\n', e->log);
    fflush(e->log);
    va_end(ap);
}

static void check(evil_t *e, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(evil_t *e, int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(ok ? "PASS " : "FAIL ", e->log);
    vfprintf(e->log, fmt, ap);
    fputc('\n', e->log);
    fflush(e->log);
    va_end(ap);
    e->failures += !ok;
}

static void send_to(evil_t *e, int i, const msg_t *m)
{
    if (transport_send(e->sock, &e->site[i].route, m, e->out, 0) < 0)
        note(e, "send %s to %s failed: %s", msg_type_name(m->type), e->site[i].name,
             zmq_strerror(errno));
}

/* ---- receiving --------------------------------------------------------------------------- */

static int site_by_route(const evil_t *e, const peer_id_t *id)
{
    for (int i = 0; i < e->n; i++)
        if (e->site[i].welcomed && e->site[i].route.len == id->len &&
            memcmp(e->site[i].route.data, id->data, id->len) == 0)
            return i;
    return -1;
}

static void on_hello(evil_t *e, const peer_id_t *from, const msg_t *m)
{
    for (int i = 0; i < e->n; i++) {
        site_t *s = &e->site[i];
        if (strcmp(s->name, m->site) != 0) continue;
        s->route = *from;
        s->welcomed = 1;
        s->n_train = m->n_train;
        fprintf(e->log, "round=%u site=%s type=HELLO n_train=%lld\n", e->round, s->name,
                (long long)m->n_train);
        msg_t w = {.type = MSG_WELCOME, .round = e->round, .client_id = (uint32_t)i};
        send_to(e, i, &w);
        return;
    }
    fprintf(e->log, "round=%u site=%s type=HELLO (not one of ours: ignored)\n", e->round, m->site);
}

static uint8_t *copy_blob(const msg_t *m, size_t *len)
{
    uint8_t *p = malloc(m->blob_len + 1);
    if (p) memcpy(p, m->blob, m->blob_len);
    *len = p ? m->blob_len : 0;
    return p;
}

/* Records one message of site s for the current round. */
static void on_message(evil_t *e, int i, const msg_t *m)
{
    site_t *s = &e->site[i];
    if (m->type == MSG_HEARTBEAT) return;
    if (m->type == MSG_PART) { /* v4: staged as coordinator.c's on_part, in order */
        if (m->offset == 0) {
            free(s->stage);
            s->stage = malloc(m->bulk_len ? m->bulk_len : 1);
            s->stage_len = s->stage ? m->bulk_len : 0;
            s->stage_have = 0;
        }
        if (s->stage && m->bulk_len == s->stage_len && m->offset == s->stage_have &&
            m->vec_len <= s->stage_len - s->stage_have) {
            memcpy(s->stage + s->stage_have, m->vec, m->vec_len);
            s->stage_have += m->vec_len;
        }
        return;
    }
    msg_t whole;
    if (m->type == MSG_MASKED && (m->present & MSG_HAS_BULK)) { /* after its PARTs */
        whole = *m;
        if (s->stage && s->stage_have == s->stage_len && m->bulk_len == s->stage_len) {
            whole.vec = s->stage;
            whole.vec_len = s->stage_len;
        }
        m = &whole;
    }
    if (m->type == MSG_FETCH) { /* the model in chunks, as coordinator.c's on_fetch */
        uint64_t total = (uint64_t)e->numel * 4;
        if (m->offset >= total) return;
        size_t len = total - m->offset < WIRE_CHUNK_BYTES ? (size_t)(total - m->offset)
                                                          : WIRE_CHUNK_BYTES;
        uint8_t *bytes = malloc(len);
        if (!bytes) exit(2);
        memcpy(bytes, (const uint8_t *)e->global + m->offset, len);
        if (e->tamper && m->offset + len == total) bytes[len - 2] ^= 0x40; /* the last weight */
        msg_t ch = {.type = MSG_CHUNK, .round = m->round, .model_version = e->version,
                    .bulk_hash = e->model_hash, .bulk_hash_len = WIRE_HASH_BYTES,
                    .offset = m->offset, .vec = bytes, .vec_len = len, .present = MSG_HAS_VEC};
        send_to(e, i, &ch);
        free(bytes);
        return;
    }
    fprintf(e->log, "round=%u site=%s type=%s", m->round, s->name, msg_type_name(m->type));
    if (m->type == MSG_ERROR) fprintf(e->log, " code=%u reason=\"%s\"", m->code, m->reason);
    if (m->type == MSG_UNMASK) {
        fputs(" shares=", e->log);
        for (size_t r = 0; r + WIRE_SHAREREC_BYTES <= m->blob_len; r += WIRE_SHAREREC_BYTES)
            fprintf(e->log, "%s%u:%s", r ? "," : "", wire_get_u32(m->blob + r),
                    wire_get_u32(m->blob + r + 4) == 0 ? "b" : "s");
    }
    fputc('\n', e->log);
    fflush(e->log);
    if (m->round != e->round) return;
    s->got |= 1u << m->type;
    switch (m->type) {
    case MSG_ERROR: util_strlcpy(s->error, m->reason, sizeof s->error); break;
    case MSG_ADVERTISE:
        if (m->blob_len >= WIRE_ADVERTISE_BYTES &&
            m->blob_len - WIRE_ADVERTISE_BYTES <= WIRE_CERT_MAX) {
            memcpy(s->adv, m->blob, WIRE_ADVERTISE_BYTES);
            s->cert_len = m->blob_len - WIRE_ADVERTISE_BYTES;
            memcpy(s->cert, m->blob + WIRE_ADVERTISE_BYTES, s->cert_len);
        }
        break;
    case MSG_SHARES:
        free(s->boxes);
        s->boxes = copy_blob(m, &s->boxes_len);
        break;
    case MSG_MASKED:
        if (m->vec_len == enc_masked_len(e->numel, e->q.bits, ENC_TAIL_WORDS))
            enc_unpack_add_masked(m->vec, e->numel, e->q.bits, ENC_TAIL_WORDS, e->acc);
        free(s->stage); /* (m->vec may have pointed into it) */
        s->stage = NULL;
        s->stage_len = s->stage_have = 0;
        break;
    case MSG_CONSIST:
        if (m->blob_len == WIRE_SIG_BYTES) memcpy(s->sig, m->blob, WIRE_SIG_BYTES);
        break;
    case MSG_UNMASK:
        free(s->shares);
        s->shares = copy_blob(m, &s->shares_len);
        break;
    default: break;
    }
}

/* Receives for at most `seconds`; returns early once done(e, arg) holds. */
static void pump(evil_t *e, double seconds, int (*done)(evil_t *, uint32_t, int), uint32_t mask,
                 int type)
{
    double deadline = util_now() + seconds;
    while (!(done && done(e, mask, type))) {
        double left = deadline - util_now();
        if (left <= 0) break;
        zmq_pollitem_t pi = {e->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, (long)(left * 1000) + 1) <= 0) continue;
        wire_frame_t fr;
        if (transport_recv(e->sock, 1, &fr, 1) < 0) continue;
        msg_t m;
        char err[256];
        if (msg_decode(e->dec, transport_frame_data(&fr), fr.bytes, &m, err, sizeof err) < 0) {
            note(e, "undecodable message: %s", err);
        } else if (m.type == MSG_HELLO) {
            on_hello(e, &fr.from, &m);
        } else {
            int i = site_by_route(e, &fr.from);
            if (i >= 0) on_message(e, i, &m);
            else note(e, "%s from an unknown peer", msg_type_name(m.type));
        }
        transport_frame_close(&fr);
    }
}

/* Every site in mask sent `type` or an ERROR this round. */
static int answered(evil_t *e, uint32_t mask, int type)
{
    for (int i = 0; i < e->n; i++)
        if ((mask & BIT(i)) && !GOT(&e->site[i], type) && !GOT(&e->site[i], MSG_ERROR)) return 0;
    return 1;
}

static int all_welcomed(evil_t *e, uint32_t mask, int type)
{
    (void)type;
    for (int i = 0; i < e->n; i++)
        if ((mask & BIT(i)) && !e->site[i].welcomed) return 0;
    return 1;
}

/* Waits for `type` from every site in mask; returns the mask of those that sent it. */
static uint32_t await(evil_t *e, uint32_t mask, msg_type_t type)
{
    pump(e, e->timeout, answered, mask, (int)type);
    uint32_t got = 0;
    for (int i = 0; i < e->n; i++)
        if ((mask & BIT(i)) && GOT(&e->site[i], type)) got |= BIT(i);
    return got;
}

/* ---- the honest coordinator's messages, each with the attack's freedom --------------------- */

/* PLAN (threshold t) of the current model version to the sites in mask. */
static void send_plan(evil_t *e, uint32_t mask, unsigned t)
{
    e->round++;
    e->t = t;
    int64_t max_weight = 0;
    unsigned cohort = 0;
    for (int i = 0; i < e->n; i++) {
        site_t *s = &e->site[i];
        free(s->boxes);
        free(s->shares);
        s->boxes = s->shares = NULL;
        s->boxes_len = s->shares_len = 0;
        s->got = 0;
        s->error[0] = '\0';
        if (mask & BIT(i)) {
            max_weight += s->n_train;
            cohort++;
        }
    }
    char err[256];
    if (secagg_quant_params(EVIL_CLIP, max_weight + 1000, cohort + 1, 32, &e->q, err,
                            sizeof err) < 0) {
        note(e, "quantisation: %s", err);
        exit(2);
    }
    quant_t wire_q = e->q;
    if (e->narrow) { /* the least width that holds every site's own value: not their sum */
        int64_t own = 0;
        for (int i = 0; i < e->n; i++)
            if ((mask & BIT(i)) && e->site[i].n_train > own) own = e->site[i].n_train;
        for (wire_q.bits = ENC_BITS_MIN; wire_q.bits < 32 && !secagg_fits(&wire_q, own, 1);)
            wire_q.bits++;
        check(e, !secagg_fits(&wire_q, max_weight, cohort), "the %u-bit width wraps the sum of "
              "%lld samples", wire_q.bits, (long long)max_weight);
    }
    memset(e->acc, 0, (e->numel + ENC_TAIL_WORDS) * 4);
    crypto_sha256(e->model_hash, e->global, e->numel * sizeof *e->global);
    msg_t p = {.type = MSG_PLAN, .round = e->round, .phase = PHASE_TRAIN, .epochs = e->epochs,
               .batch = 32, .lr = 0.01, .momentum = 0.9,
               .seed = e->seed ? e->seed : 1000u + e->round,
               .in_channels = e->in_ch, .height = e->height, .width = e->width,
               .classes = e->classes, .numel = e->numel, .model_version = e->version,
               .vec = (const uint8_t *)e->global, .vec_len = e->numel * 4, .threshold = t,
               .clip = wire_q.clip, .scale = wire_q.scale, .bits = wire_q.bits,
               .loss_scale = secagg_loss_scale(max_weight + 1000, cohort + 1),
               .present = MSG_HAS_VEC | (e->plain ? 0 : MSG_HAS_SECAGG | MSG_HAS_LOSS)};
    util_strlcpy(p.arch, e->arch, sizeof p.arch);
    if (e->bulk) { /* v4: the model's length and hash; the sites fetch it */
        p.present = (p.present & ~MSG_HAS_VEC) | MSG_HAS_BULK;
        p.vec = NULL;
        p.vec_len = 0;
        p.bulk_len = (uint64_t)e->numel * 4;
        p.bulk_hash = e->model_hash;
        p.bulk_hash_len = WIRE_HASH_BYTES;
    }
    for (int i = 0; i < e->n; i++)
        if (mask & BIT(i)) send_to(e, i, &p);
    note(e, "round %u: PLAN of model version %u (hash %02x%02x%02x%02x...) t=%u to %#x", e->round,
         e->version, e->model_hash[0], e->model_hash[1], e->model_hash[2], e->model_hash[3], t,
         mask);
}

/* The Sybil's keys for this round, signed with its identity key. */
static void sybil_advertise(evil_t *e)
{
    uint8_t *adv = e->sybil_adv, c_sk[KA_SECRETKEYBYTES], s_sk[KA_SECRETKEYBYTES];
    uint8_t msg[WIRE_ADV_SIGNED_BYTES];
    if (ka_keypair(adv, c_sk) < 0 || ka_keypair(adv + 32, s_sk) < 0) exit(2);
    wire_put_u64(adv + WIRE_ADV_WEIGHT_OFF, 100);
    wire_adv_signed(msg, e->round, e->sybil_id, e->model_hash, adv);
    if (identity_sign(adv + WIRE_ADV_SIG_OFF, e->sybil_sk, "advertise-v2", msg, sizeof msg) < 0)
        exit(2);
    crypto_wipe(c_sk, sizeof c_sk);
    crypto_wipe(s_sk, sizeof s_sk);
}

/* The ADVERTISE record of client j (the Sybil's under its id when with_sybil). */
static const uint8_t *adv_of(const evil_t *e, uint32_t j, int with_sybil)
{
    return with_sybil && j == e->sybil_id ? e->sybil_adv : e->site[j].adv;
}

/* KEYS's U1 list for the sites in u1 (and the Sybil): (id, SHA-256 of its
 * ADVERTISE record), ascending. Returns its length. */
static size_t u1_list(const evil_t *e, uint32_t u1, int with_sybil, uint8_t *out)
{
    size_t off = 0;
    for (uint32_t j = 0; j <= (uint32_t)e->n; j++) {
        if (!(with_sybil && j == e->sybil_id) && !(j < (uint32_t)e->n && (u1 & BIT(j)))) continue;
        wire_put_u32(out + off, j);
        crypto_sha256(out + off + 4, adv_of(e, j, with_sybil), WIRE_ADVERTISE_BYTES);
        off += WIRE_U1REC_BYTES;
    }
    return off;
}

/* The protocol's neighbour graph over the U1 list (as the clients compute it). */
static int protocol_graph(const evil_t *e, const uint8_t *u1, size_t u1_len, uint32_t degree,
                          uint8_t *adj)
{
    size_t len = wire_graph_input_len(u1_len);
    uint8_t *in = malloc(len), h[CRYPTO_HASHBYTES];
    if (!in) return -1;
    wire_graph_input(in, e->round, e->model_hash, degree, u1, u1_len);
    crypto_sha256(h, in, len);
    free(in);
    return secagg_graph((unsigned)(u1_len / WIRE_U1REC_BYTES), degree, wire_get_u64(h), adj);
}

/* KEYS to the sites in `to`: the key records of the sites in `of`, the U1 list
 * of those in u1 (the Sybil in both with with_sybil) and the graph's degree
 * (UINT32_MAX: all pairs). */
static void send_keys_as(evil_t *e, uint32_t to, uint32_t of, uint32_t u1, int with_sybil,
                         uint32_t degree)
{
    uint8_t *blob = malloc((size_t)(e->n + 1) * WIRE_KEYREC_MAX);
    uint8_t list[(EVIL_SITES_MAX + 1) * WIRE_U1REC_BYTES];
    size_t off = 0;
    if (!blob) exit(2);
    if (with_sybil) sybil_advertise(e);
    for (uint32_t j = 0; j <= (uint32_t)e->n; j++) {
        if (with_sybil && j == e->sybil_id)
            off += wire_keyrec_put(blob + off, j, e->sybil_adv, e->sybil_cert, e->sybil_cert_len);
        else if (j < (uint32_t)e->n && (of & BIT(j)))
            off += wire_keyrec_put(blob + off, j, e->site[j].adv, e->site[j].cert,
                                   e->site[j].cert_len);
    }
    size_t list_len = u1_list(e, u1, with_sybil, list);
    if (degree == UINT32_MAX) degree = (uint32_t)(list_len / WIRE_U1REC_BYTES) - 1;
    msg_t m = {.type = MSG_KEYS, .round = e->round, .phase = PHASE_SHARE, .blob = blob,
               .blob_len = off, .u1 = list, .u1_len = list_len, .degree = degree,
               .present = MSG_HAS_BLOB | MSG_HAS_U1};
    for (int i = 0; i < e->n; i++)
        if (to & BIT(i)) send_to(e, i, &m);
    free(blob);
    note(e, "KEYS with the records of %#x%s, U1 %#x, degree %u to %#x", of,
         with_sybil ? " and the Sybil" : "", u1, degree, to);
}

/* KEYS as the honest coordinator sends them with all pairs: U1 = the records sent. */
static void send_keys(evil_t *e, uint32_t to, uint32_t of, int with_sybil)
{
    send_keys_as(e, to, of, of, with_sybil, UINT32_MAX);
}

/* SHARES_IN: to each site in mask, the boxes addressed to it by the others in mask. */
static void send_shares_in(evil_t *e, uint32_t mask)
{
    uint8_t *blob = malloc((size_t)e->n * WIRE_BOXREC_BYTES + 1);
    if (!blob) exit(2);
    for (int v = 0; v < e->n; v++) {
        if (!(mask & BIT(v))) continue;
        size_t off = 0;
        for (int u = 0; u < e->n; u++) {
            const site_t *s = &e->site[u];
            if (u == v || !(mask & BIT(u))) continue;
            for (size_t r = 0; r + WIRE_BOXREC_BYTES <= s->boxes_len; r += WIRE_BOXREC_BYTES) {
                if (wire_get_u32(s->boxes + r) != (uint32_t)v) continue;
                wire_put_u32(blob + off, (uint32_t)u);
                memcpy(blob + off + 4, s->boxes + r + 4, WIRE_BOX_BYTES);
                off += WIRE_BOXREC_BYTES;
            }
        }
        msg_t m = {.type = MSG_SHARES_IN, .round = e->round, .phase = PHASE_MASKED, .blob = blob,
                   .blob_len = off, .present = MSG_HAS_BLOB};
        send_to(e, v, &m);
    }
    free(blob);
}

static void send_upload(evil_t *e, uint32_t mask)
{
    msg_t m = {.type = MSG_UPLOAD, .round = e->round, .phase = PHASE_MASKED};
    for (int i = 0; i < e->n; i++)
        if (mask & BIT(i)) send_to(e, i, &m);
}

/* CONSIST_REQ with the view U3 = u3 to the sites in `to`. */
static void send_consist(evil_t *e, uint32_t to, uint32_t u3)
{
    uint8_t blob[4 * EVIL_SITES_MAX];
    size_t n = 0;
    for (int i = 0; i < e->n; i++)
        if (u3 & BIT(i)) wire_put_u32(blob + 4 * n++, (uint32_t)i);
    msg_t m = {.type = MSG_CONSIST_REQ, .round = e->round, .phase = PHASE_CONSIST, .blob = blob,
               .blob_len = 4 * n, .present = MSG_HAS_BLOB};
    for (int i = 0; i < e->n; i++)
        if (to & BIT(i)) send_to(e, i, &m);
    note(e, "CONSIST_REQ with U3 = %#x to %#x", u3, to);
}

/* UNMASK_REQ to the sites in `to`: b-shares of u3, s-shares of u2 \ u3, and the
 * CONSIST signatures of the sites in `sigs`. */
static void send_unmask_req(evil_t *e, uint32_t to, uint32_t u2, uint32_t u3, uint32_t sigs)
{
    uint8_t *blob = malloc(wire_unmaskreq_len((size_t)e->n, (size_t)e->n));
    size_t nreq = 0, off = 4;
    if (!blob) exit(2);
    for (int u = 0; u < e->n; u++) {
        if (!(u2 & BIT(u))) continue;
        wire_put_u32(blob + off, (uint32_t)u);
        wire_put_u32(blob + off + 4, (u3 & BIT(u)) ? 0 : 1);
        off += WIRE_REQREC_BYTES;
        nreq++;
    }
    wire_unmaskreq_put_header(blob, nreq);
    for (int u = 0; u < e->n; u++) {
        if (!(sigs & BIT(u))) continue;
        wire_put_u32(blob + off, (uint32_t)u);
        memcpy(blob + off + 4, e->site[u].sig, WIRE_SIG_BYTES);
        off += WIRE_SIGREC_BYTES;
    }
    msg_t m = {.type = MSG_UNMASK_REQ, .round = e->round, .phase = PHASE_UNMASK, .blob = blob,
               .blob_len = off, .present = MSG_HAS_BLOB};
    for (int i = 0; i < e->n; i++)
        if (to & BIT(i)) send_to(e, i, &m);
    free(blob);
    note(e, "UNMASK_REQ (b of %#x, s of %#x, signatures of %#x) to %#x", u3, u2 & ~u3, sigs, to);
}

/* ---- what the coordinator can get out of the shares it was given -------------------------- */

/* Shares of `kind` (0: b, 1: s_sk) for client `target` that the sites sent. */
static unsigned shares_of(const evil_t *e, uint32_t target, uint32_t kind, uint32_t *xs,
                          uint8_t (*sh)[SHAMIR_SHAREBYTES])
{
    unsigned k = 0;
    for (int i = 0; i < e->n; i++) {
        const site_t *s = &e->site[i];
        for (size_t r = 0; r + WIRE_SHAREREC_BYTES <= s->shares_len; r += WIRE_SHAREREC_BYTES) {
            const uint8_t *rec = s->shares + r;
            if (wire_get_u32(rec) != target || wire_get_u32(rec + 4) != kind) continue;
            if (xs) {
                xs[k] = (uint32_t)i + 1;
                memcpy(sh[k], rec + 8, SHAMIR_SHAREBYTES);
            }
            k++;
        }
    }
    return k;
}

/* Removes the self masks of u3 from the masked sum (no one dropped: the
 * pairwise masks cancel), writes it to --dump and decodes it. 0 if every b
 * was rebuilt and the decoded weight is the sum of u3's signed n_k. */
static int unmask_sum(evil_t *e, uint32_t u3)
{
    uint32_t xs[EVIL_SITES_MAX];
    uint8_t sh[EVIL_SITES_MAX][SHAMIR_SHAREBYTES], b[PRG_SEEDBYTES];
    int64_t signed_weight = 0;
    for (int u = 0; u < e->n; u++) {
        if (!(u3 & BIT(u))) continue;
        unsigned k = shares_of(e, (uint32_t)u, 0, xs, sh);
        if (shamir_combine(e->t, k, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])sh, b) < 0 ||
            prg_add(PRG_DEFAULT, b, e->acc, e->numel + ENC_TAIL_WORDS, -1) < 0) {
            note(e, "cannot rebuild b of %s from %u shares", e->site[u].name, k);
            return -1;
        }
        signed_weight += (int64_t)wire_get_u64(e->site[u].adv + WIRE_ADV_WEIGHT_OFF);
    }
    char path[4096], err[256];
    if (e->dump) {
        snprintf(path, sizeof path, "%s/unmasked-r%u.bin", e->dump, e->round);
        if (util_write_file_atomic(path, e->acc, (e->numel + ENC_TAIL_WORDS) * 4, err, sizeof err) < 0)
            note(e, "%s", err);
    }
    float *avg = malloc(e->numel * sizeof *avg);
    int64_t weight = 0;
    int rc = avg && secagg_decode(e->acc, e->numel, &e->q, signed_weight + 1000, avg, &weight, err,
                                  sizeof err) == 0 ? 0 : -1;
    free(avg);
    note(e, "round %u: unmasked sum of %#x, decoded weight %lld, signed %lld", e->round, u3,
         (long long)weight, (long long)signed_weight);
    return rc == 0 && weight == signed_weight ? 0 : -1;
}

/* ---- rounds ------------------------------------------------------------------------------ */

/* The sites on the daemons' peers lists: what their max_collusion is a share of. */
static unsigned federation_sites;

/* The least t the daemons' policy accepts for n sharing sites: colluders are
 * counted against the federation, not the cohort (secagg_colluders). */
static unsigned safe_t(unsigned n)
{
    return (n + secagg_colluders(n, federation_sites, EVIL_COLLUSION)) / 2 + 1;
}

static unsigned count(uint32_t mask)
{
    return (unsigned)__builtin_popcount(mask);
}

/* The honest protocol for the sites in mask up to and including MASKED;
 * returns who got through. */
static uint32_t up_to_masked(evil_t *e, uint32_t mask)
{
    send_plan(e, mask, safe_t(count(mask)));
    uint32_t u1 = await(e, mask, MSG_ADVERTISE);
    send_keys(e, u1, u1, 0);
    uint32_t u2 = await(e, u1, MSG_SHARES);
    send_shares_in(e, u2);
    uint32_t ready = await(e, u2, MSG_READY);
    send_upload(e, ready);
    return await(e, ready, MSG_MASKED);
}

/* One honest round of the sites in mask; 0 if every one revealed and the sum
 * decodes to the signed weight. */
static int honest_round(evil_t *e, uint32_t mask)
{
    uint32_t u3 = up_to_masked(e, mask);
    send_consist(e, u3, u3);
    uint32_t u4 = await(e, u3, MSG_CONSIST);
    send_unmask_req(e, u4, u3, u3, u4);
    uint32_t u5 = await(e, u4, MSG_UNMASK);
    if (u5 != mask) {
        note(e, "honest round %u: %#x of %#x revealed", e->round, u5, mask);
        return -1;
    }
    return unmask_sum(e, u3);
}

/* A new model version: what a real coordinator has after a round. */
static void next_version(evil_t *e)
{
    e->version++;
    e->global[e->version % e->numel] += 1e-3f;
}

/* Each site in mask refused: it did not send `type` and its ERROR names `rule`. */
static void expect_refused(evil_t *e, uint32_t mask, msg_type_t type, const char *rule,
                           const char *what)
{
    for (int i = 0; i < e->n; i++) {
        if (!(mask & BIT(i))) continue;
        const site_t *s = &e->site[i];
        int ok = !GOT(s, type) && GOT(s, MSG_ERROR) && strstr(s->error, rule);
        check(e, ok, "%s: %s sent %s, error \"%s\" (want no %s and an error naming \"%s\")", what,
              s->name, GOT(s, type) ? msg_type_name(type) : "nothing", s->error, msg_type_name(type),
              rule);
    }
}

/* No share of any kind for the victim reached the coordinator this round. */
static void expect_no_victim_share(evil_t *e, const char *what)
{
    unsigned b = shares_of(e, (uint32_t)e->victim, 0, NULL, NULL);
    unsigned s = shares_of(e, (uint32_t)e->victim, 1, NULL, NULL);
    check(e, b == 0 && s == 0, "%s: the coordinator holds %u b-shares and %u s-shares of %s's "
          "masks (t = %u)", what, b, s, e->site[e->victim].name, e->t);
}

/* ---- the attacks -------------------------------------------------------------------------- */

static void attack_threshold(evil_t *e)
{
    send_plan(e, ALL(e), 1);
    uint32_t u1 = await(e, ALL(e), MSG_ADVERTISE);
    send_keys(e, u1, u1, 0);
    await(e, u1, MSG_SHARES);
    expect_refused(e, ALL(e), MSG_SHARES, "policy: threshold 1", "t = 1");
}

/* downgrade: a PLAN without secure aggregation asks each site for its raw
 * update; a site whose policy requires secure aggregation sends none. */
static void attack_downgrade(evil_t *e)
{
    e->plain = 1;
    send_plan(e, ALL(e), safe_t(count(ALL(e))));
    e->plain = 0;
    await(e, ALL(e), MSG_UPDATE);
    expect_refused(e, ALL(e), MSG_UPDATE, "secure_aggregation = required",
                   "a plan for a plaintext update");
}

/* tampered-model: the model fetched in chunks is not the one the PLAN named
 * (a coordinator that shows each site a different model, or a corrupted
 * transfer): no site trains on it or advertises, each names the mismatch. */
static void attack_tampered_model(evil_t *e)
{
    e->bulk = e->tamper = 1;
    send_plan(e, ALL(e), safe_t(count(ALL(e))));
    await(e, ALL(e), MSG_ADVERTISE);
    e->bulk = e->tamper = 0;
    expect_refused(e, ALL(e), MSG_ADVERTISE, "do not match the SHA-256",
                   "a model whose bytes differ from the SHA-256 its PLAN named");
}

static void attack_width(evil_t *e)
{
    e->narrow = 1;
    send_plan(e, ALL(e), safe_t(count(ALL(e))));
    e->narrow = 0;
    uint32_t u1 = await(e, ALL(e), MSG_ADVERTISE);
    send_keys(e, u1, u1, 0);
    await(e, u1, MSG_SHARES);
    expect_refused(e, ALL(e), MSG_SHARES, "upload words cannot hold the sum", "a width the sum wraps");
}

static void attack_cohort(evil_t *e, int pair)
{
    uint32_t victim = BIT(e->victim), other = BIT((e->victim + 1) % e->n);
    /* t is the threshold rule's own for the key list the victim gets: only
     * min_cohort stands in the way. */
    send_plan(e, ALL(e), pair ? 2 : 1);
    uint32_t u1 = await(e, ALL(e), MSG_ADVERTISE);
    send_keys(e, victim, u1 & (victim | (pair ? other : 0)), 0);
    await(e, victim, MSG_SHARES);
    expect_refused(e, victim, MSG_SHARES, "policy:", pair ? "keys of 2" : "keys of 1");
    check(e, strstr(e->site[e->victim].error, "min_cohort") != NULL, "the error names min_cohort: "
          "\"%s\"", e->site[e->victim].error);
}

/* Group A = {victim, next} sees U3 with the victim, group B (the rest) without
 * it: A would reveal b_victim, B s_victim. */
static void attack_split_view(evil_t *e, int few)
{
    uint32_t all = ALL(e), a = BIT(e->victim) | BIT((e->victim + 1) % e->n), b = all & ~a;
    uint32_t u3 = up_to_masked(e, all);
    if (u3 != all) {
        check(e, 0, "split view: the honest phases did not complete (%#x masked)", u3);
        return;
    }
    send_consist(e, a, all);
    send_consist(e, b, all & ~BIT(e->victim));
    uint32_t u4 = await(e, all, MSG_CONSIST);
    check(e, u4 == all, "split view: every site signed its own view of U3 (%#x)", u4);
    if (few) { /* only the signatures on the group's own view: fewer than t */
        send_unmask_req(e, a, all, all, a);
        send_unmask_req(e, b, all, all & ~BIT(e->victim), b);
    } else {   /* every signature, so that each group has t "from U3" */
        send_unmask_req(e, a, all, all, all);
        send_unmask_req(e, b, all, all & ~BIT(e->victim), all);
    }
    await(e, all, MSG_UNMASK);
    expect_refused(e, all, MSG_UNMASK, few ? "valid signatures on our view of U3" : "split view",
                   few ? "split view, own-view signatures" : "split view, all signatures");
    expect_no_victim_share(e, "split view");
}

/* An honest round, then a second aggregate of the same model version over
 * the others (after one of them restarted, with `restart`): the difference of
 * the two sums would be the victim's update. The sites may run the version
 * again, but must not sign (nor reveal for) another U3 for it. */
static void attack_replay(evil_t *e, int restart)
{
    check(e, honest_round(e, ALL(e)) == 0, "replay: the first aggregate of model version %u "
          "completed", e->version);
    int r = (e->victim + 1) % e->n;
    if (restart) {
        e->site[r].welcomed = 0;
        note(e, "RESTART %s", e->site[r].name);
        pump(e, 60, all_welcomed, BIT(r), 0);
        check(e, e->site[r].welcomed, "replay: %s came back after its restart", e->site[r].name);
    }
    uint32_t others = ALL(e) & ~BIT(e->victim);
    uint32_t u3 = up_to_masked(e, others);
    send_consist(e, u3, u3);
    await(e, u3, MSG_CONSIST);
    send_unmask_req(e, u3, u3, u3, u3); /* whatever signatures there are */
    await(e, u3, MSG_UNMASK);
    check(e, u3 == others, "replay: the others took part up to their masked inputs (%#x)", u3);
    expect_refused(e, others, MSG_CONSIST, "policy: this site released unmask shares for this "
                   "model version with other survivors", restart ? "the same model version, "
                   "another U3, after a restart" : "the same model version, another U3");
    for (int i = 0; i < e->n; i++)
        check(e, !GOT(&e->site[i], MSG_UNMASK), "replay: %s revealed nothing for the second "
              "aggregate", e->site[i].name);
}

/* Two aggregates from (nearly) one model and one training seed, the second
 * without the victim: their difference is the victim's update. The sites
 * should not take part in the second. */
static void attack_near_replay(evil_t *e)
{
    e->seed = 4242;
    check(e, honest_round(e, ALL(e)) == 0, "near replay: the first aggregate completed");
    e->global[0] = nextafterf(e->global[0], 1.0f);
    e->version++;
    uint32_t others = ALL(e) & ~BIT(e->victim);
    send_plan(e, others, safe_t(count(others)));
    uint32_t u1 = await(e, others, MSG_ADVERTISE);
    check(e, u1 == 0, "near replay: the sites refused a second aggregate from a model one ulp "
          "away trained with the same seed (%#x advertised)", u1);
    if (u1 != others) return;
    send_keys(e, u1, u1, 0);
    uint32_t u2 = await(e, u1, MSG_SHARES);
    send_shares_in(e, u2);
    uint32_t ready = await(e, u2, MSG_READY);
    send_upload(e, ready);
    uint32_t u3 = await(e, ready, MSG_MASKED);
    send_consist(e, u3, u3);
    uint32_t u4 = await(e, u3, MSG_CONSIST);
    send_unmask_req(e, u4, u3, u3, u4);
    if (await(e, u4, MSG_UNMASK) == u3) unmask_sum(e, u3);
    e->seed = 0;
}

/* The victim's neighbourhood chosen by the coordinator, not by the protocol:
 * "partial": all pairs claimed over U1, the victim sent only three of the four
 * key records; "forged": degree 2, the victim sent its protocol non-neighbour
 * instead of one of its neighbours; "threshold": the protocol's own graph of
 * degree 2 among 4 with t = 1 in neighbourhoods of 3, below the site's policy. */
static void attack_graph(evil_t *e, const char *how)
{
    uint32_t all = ALL(e), victim = BIT(e->victim);
    send_plan(e, all, strcmp(how, "threshold") == 0 ? 1 : 3);
    uint32_t u1 = await(e, all, MSG_ADVERTISE);
    if (u1 != all) {
        check(e, 0, "graph: not every site advertised (%#x)", u1);
        return;
    }
    if (strcmp(how, "partial") == 0) {
        send_keys_as(e, victim, all & ~BIT((e->victim + 3) % e->n), all, 0, UINT32_MAX);
        await(e, victim, MSG_SHARES);
        expect_refused(e, victim, MSG_SHARES, "all pairs, but 3 of the 4 U1 members' keys",
                       "all pairs claimed, a key withheld");
        return;
    }
    uint8_t list[EVIL_SITES_MAX * WIRE_U1REC_BYTES], adj[EVIL_SITES_MAX * EVIL_SITES_MAX];
    size_t len = u1_list(e, all, 0, list);
    if (protocol_graph(e, list, len, 2, adj) < 0) exit(2);
    uint32_t nbrs = 0;
    for (int j = 0; j < e->n; j++)
        if (adj[e->victim * e->n + j]) nbrs |= BIT(j);
    uint32_t other = all & ~nbrs & ~victim, one = nbrs & (~nbrs + 1); /* lowest neighbour */
    note(e, "the protocol's graph of degree 2 gives %s the neighbours %#x", e->site[e->victim].name,
         nbrs);
    if (strcmp(how, "forged") == 0) {
        send_keys_as(e, victim, victim | (nbrs & ~one) | other, all, 0, 2);
        await(e, victim, MSG_SHARES);
        expect_refused(e, victim, MSG_SHARES, "is not our neighbour in the protocol's graph",
                       "a neighbourhood off the protocol's graph");
    } else {
        send_keys_as(e, victim, victim | nbrs, all, 0, 2);
        await(e, victim, MSG_SHARES);
        expect_refused(e, victim, MSG_SHARES, "policy: threshold 1 for 3 sites (our neighbourhood)",
                       "the protocol's graph, t = 1 in neighbourhoods of 3");
    }
}

static void attack_sybil(evil_t *e)
{
    unsigned n1 = (unsigned)e->n + (e->sybil_id >= (uint32_t)e->n);
    send_plan(e, ALL(e), safe_t(n1));
    uint32_t u1 = await(e, ALL(e), MSG_ADVERTISE);
    send_keys(e, u1, u1, 1);
    await(e, u1, MSG_SHARES);
    expect_refused(e, BIT(e->victim), MSG_SHARES, "policy:", "a CA-certified site off the peers list");
    check(e, strstr(e->site[e->victim].error, "peers list") != NULL, "the error names the peers "
          "list: \"%s\"", e->site[e->victim].error);
}

/* twin: the sybil attack with a real site's kit (on every peers list): the
 * key list then carries that site twice. */
static void attack_twin(evil_t *e)
{
    send_plan(e, ALL(e), safe_t((unsigned)e->n + 1));
    uint32_t u1 = await(e, ALL(e), MSG_ADVERTISE);
    send_keys(e, u1, u1, 1);
    await(e, u1, MSG_SHARES);
    expect_refused(e, ALL(e), MSG_SHARES, "the key list carries site", "a real site's kit twice");
}

/* ---- setup -------------------------------------------------------------------------------- */

static int meta_u32(const st_meta_t *meta, size_t n, const char *key, uint32_t *out)
{
    const char *v = st_meta_get(meta, n, key);
    char *end;
    unsigned long x = v ? strtoul(v, &end, 10) : 0;
    if (!v || *end || x == 0 || x > 100000) return -1;
    *out = (uint32_t)x;
    return 0;
}

static int load_model(evil_t *e, const char *path)
{
    char err[512];
    schema_t *s = NULL;
    st_meta_t meta[ST_META_MAX];
    size_t n_meta = 0;
    if (safetensors_read(path, &s, &e->global, meta, &n_meta, err, sizeof err) < 0) {
        fprintf(stderr, "evil_coordinator: %s\n", err);
        return -1;
    }
    e->numel = schema_numel(s);
    schema_destroy(&s);
    const char *arch = st_meta_get(meta, n_meta, "arch");
    if (!arch || util_strlcpy(e->arch, arch, sizeof e->arch) < 0 ||
        meta_u32(meta, n_meta, "in_channels", &e->in_ch) < 0 ||
        meta_u32(meta, n_meta, "height", &e->height) < 0 ||
        meta_u32(meta, n_meta, "width", &e->width) < 0 ||
        meta_u32(meta, n_meta, "classes", &e->classes) < 0) {
        fprintf(stderr, "evil_coordinator: %s: not a medfed-init model\n", path);
        return -1;
    }
    e->acc = calloc(e->numel + ENC_TAIL_WORDS, sizeof *e->acc);
    return e->acc ? 0 : -1;
}

static int load_sybil(evil_t *e, const char *dir)
{
    char path[4096], err[1024];
    snprintf(path, sizeof path, "%s/identity.key", dir);
    if (identity_load_secret(path, e->sybil_sk, err, sizeof err) < 0) goto bad;
    snprintf(path, sizeof path, "%s/identity.crt", dir);
    if (cert_load_file(path, e->sybil_cert, &e->sybil_cert_len, err, sizeof err) < 0) goto bad;
    e->have_sybil = 1;
    return 0;
bad:
    fprintf(stderr, "evil_coordinator: %s\n", err);
    return -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: evil_coordinator --bind EP --curve-secret FILE --init MODEL "
            "--sites A,B,... --attack NAME --out TRANSCRIPT [--victim SITE] [--epochs N] "
            "[--sybil-kit DIR] [--sybil-id ID] [--dump DIR] [--timeout S]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bind", required_argument, 0, 'b'},   {"curve-secret", required_argument, 0, 'k'},
        {"init", required_argument, 0, 'i'},   {"sites", required_argument, 0, 's'},
        {"attack", required_argument, 0, 'a'}, {"out", required_argument, 0, 'o'},
        {"victim", required_argument, 0, 'v'}, {"epochs", required_argument, 0, 'E'},
        {"sybil-kit", required_argument, 0, 'S'}, {"sybil-id", required_argument, 0, 'I'},
        {"dump", required_argument, 0, 'd'},   {"timeout", required_argument, 0, 't'},
        {0, 0, 0, 0},
    };
    static evil_t ev = {.timeout = 30, .victim = -1, .sybil_id = UINT32_MAX};
    evil_t *e = &ev;
    const char *bind = NULL, *key = NULL, *init = NULL, *sites = NULL, *attack = NULL;
    const char *out = NULL, *victim = NULL, *sybil = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'b': bind = optarg; break;
        case 'k': key = optarg; break;
        case 'i': init = optarg; break;
        case 's': sites = optarg; break;
        case 'a': attack = optarg; break;
        case 'o': out = optarg; break;
        case 'v': victim = optarg; break;
        case 'E': e->epochs = (uint32_t)atoi(optarg); break;
        case 'S': sybil = optarg; break;
        case 'I': e->sybil_id = (uint32_t)atoi(optarg); break;
        case 'd': e->dump = optarg; break;
        case 't': e->timeout = atof(optarg); break;
        default: usage(); return 2;
        }
    }
    if (!bind || !key || !init || !sites || !attack || !out) {
        usage();
        return 2;
    }
    char list[1024];
    util_strlcpy(list, sites, sizeof list);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && e->n < EVIL_SITES_MAX;
         tok = strtok_r(NULL, ",", &save))
        util_strlcpy(e->site[e->n++].name, tok, WIRE_SITE_MAX);
    federation_sites = (unsigned)e->n;
    e->victim = 0;
    for (int i = 0; victim && i < e->n; i++)
        if (strcmp(e->site[i].name, victim) == 0) e->victim = i;
    if (e->sybil_id == UINT32_MAX) e->sybil_id = (uint32_t)e->n;
    uint8_t sk[32];
    char err[1024];
    if (crypto_init() < 0 || load_model(e, init) < 0 || (sybil && load_sybil(e, sybil) < 0))
        return 2;
    if (keyfile_load(key, sk, sizeof sk, err, sizeof err) < 0) {
        fprintf(stderr, "evil_coordinator: %s\n", err);
        return 2;
    }
    if (!(e->log = fopen(out, "w"))) {
        fprintf(stderr, "evil_coordinator: %s: %s\n", out, strerror(errno));
        return 2;
    }
    e->zctx = zmq_ctx_new();
    e->sock = zmq_socket(e->zctx, ZMQ_ROUTER);
    int linger = 1000;
    zmq_setsockopt(e->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (transport_curve_server(e->sock, sk) < 0 || zmq_bind(e->sock, bind) < 0) {
        fprintf(stderr, "evil_coordinator: cannot bind %s: %s\n", bind, zmq_strerror(errno));
        return 2;
    }
    crypto_wipe(sk, sizeof sk);
    e->out = wire_buf_new();
    e->dec = wire_decoder_new();

    note(e, "attack %s on %d sites, victim %s", attack, e->n, e->site[e->victim].name);
    pump(e, 120, all_welcomed, ALL(e), 0);
    if (!all_welcomed(e, ALL(e), 0)) {
        check(e, 0, "not every site said HELLO");
        return 1;
    }
    int health = 1;
    if (strcmp(attack, "honest") == 0) {
        check(e, honest_round(e, ALL(e)) == 0, "honest: every site revealed; the unmasked sum "
              "decodes to the signed weight");
        health = 0;
    } else if (strcmp(attack, "threshold") == 0) {
        attack_threshold(e);
    } else if (strcmp(attack, "downgrade") == 0) {
        attack_downgrade(e);
    } else if (strcmp(attack, "width") == 0) {
        attack_width(e);
    } else if (strcmp(attack, "tampered-model") == 0) {
        attack_tampered_model(e);
    } else if (strcmp(attack, "cohort-alone") == 0 || strcmp(attack, "cohort-pair") == 0) {
        attack_cohort(e, strcmp(attack, "cohort-pair") == 0);
    } else if (strcmp(attack, "split-view") == 0 || strcmp(attack, "split-view-few") == 0) {
        attack_split_view(e, strcmp(attack, "split-view-few") == 0);
    } else if (strcmp(attack, "replay") == 0 || strcmp(attack, "replay-restart") == 0) {
        attack_replay(e, strcmp(attack, "replay-restart") == 0);
    } else if (strncmp(attack, "graph-", 6) == 0) {
        attack_graph(e, attack + 6);
    } else if (strcmp(attack, "near-replay") == 0) {
        attack_near_replay(e);
    } else if (strcmp(attack, "sybil") == 0 && e->have_sybil) {
        attack_sybil(e);
    } else if (strcmp(attack, "twin") == 0 && e->have_sybil) {
        attack_twin(e);
    } else {
        usage();
        return 2;
    }
    /* The daemons are still there, and still take part in an honest round. */
    if (health) {
        next_version(e);
        check(e, honest_round(e, ALL(e)) == 0, "after the attack: every site took part in an "
              "honest round of model version %u", e->version);
    }
    msg_t bye = {.type = MSG_SHUTDOWN, .round = e->round};
    for (int i = 0; i < e->n; i++)
        if (e->site[i].welcomed) send_to(e, i, &bye);
    /* As the coordinator does: give the SHUTDOWN messages time to leave. */
    int shutdown_linger = 5000;
    zmq_setsockopt(e->sock, ZMQ_LINGER, &shutdown_linger, sizeof shutdown_linger);
    pump(e, 0.5, NULL, 0, 0);
    note(e, "%d failed checks", e->failures);
    fclose(e->log);
    for (int i = 0; i < e->n; i++) {
        free(e->site[i].boxes);
        free(e->site[i].shares);
    }
    free(e->global);
    free(e->acc);
    crypto_wipe(e->sybil_sk, sizeof e->sybil_sk);
    wire_buf_destroy(&e->out);
    wire_decoder_destroy(&e->dec);
    zmq_close(e->sock);
    zmq_ctx_term(e->zctx);
    return e->failures ? 1 : 0;
}
