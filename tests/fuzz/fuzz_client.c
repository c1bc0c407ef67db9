/*
 * fuzz_client.c - libFuzzer harness for a hospital client's side of secure
 * aggregation (client/secagg_client.c): the KEYS, SHARES_IN, UPLOAD and
 * UNMASK_REQ handlers behind sa_client_on_message.
 *
 * It #includes secagg_client.c (house style: reach the statics and the
 * secret state) and implements the three functions that file takes from
 * client/client.c, so neither LibTorch nor a socket is needed: client_send
 * encodes the message, decodes it again and checks it (below).
 *
 * The client is site 1 of a roster of three sites with Ed25519 identity keys;
 * the harness plays sites 0 and 2 (their keys, Shamir shares and share boxes
 * are made once). Randomness is reset at every input, so the client's
 * round keys are the same in every execution and harness-made messages
 * addressed to it stay valid.
 *
 * Input layout:
 *   byte 0  bits 0-1  how far to go with valid messages before the fuzzed
 *                     ones: 0 advertised, 1 + KEYS, 2 + SHARES_IN, 3 + UPLOAD
 *           bits 2-3  U1 in that KEYS: {0,1,2}, {0,1}, {1,2}, {2,1,0}
 *           bits 4-5  boxes in that SHARES_IN: every peer, all but the
 *                     first, all but the last, every peer in reverse order
 *           bit 6     fuzzed PLAN parameters and update follow: threshold
 *                     (2 bytes BE), clip and scale (8 bytes each, host
 *                     doubles), sample count (4 bytes BE), then up to
 *                     FZ_NUMEL floats of the delta (4 bytes each)
 *           bit 7     (unused)
 *   then up to FZ_MAX_MSGS control bytes:
 *           bit 7     synthetic: the next valid message for the client's
 *                     state (KEYS, SHARES_IN, UPLOAD, UNMASK_REQ; or a new
 *                     advertise when it has left the round); bits 0-1 pick
 *                     the U1/U2 variant as above, bit 2 makes the last
 *                     peer of U2 a dropped client in UNMASK_REQ
 *           bit 6     (without bit 7) advertise again (a new PLAN)
 *           else      a 2-byte big-endian length and message bytes for
 *                     msg_decode, then sa_client_on_message
 *
 * Checks beyond the sanitizers, on everything the client sends: it decodes;
 * SHARES boxes open for their addressee and the shares inside rebuild the
 * client's own b and s_sk (t of them, ours included); MASKED minus PRG(b)
 * and the pairwise masks (recomputed from the peers' side with the
 * coordinator's sign convention) is the fixed-point encoding of the update;
 * UNMASK reveals only what was asked, the peers' shares as received, never
 * both shares of one peer in a round; once masked, b, s_sk and c_sk are
 * wiped.
 *
 * Seeds: MEDFED_FUZZ_WRITE_SEEDS=dir fuzz_client writes valid inputs and exits.
 */
#include "client/secagg_client.c"

#include <math.h>

#include "tests/fuzz/fuzz_common.h"

#define FZ_NUMEL 16
#define FZ_SITES 3
#define FZ_SELF 1u
#define FZ_ROUND 7u
#define FZ_T 2u
#define FZ_MAX_MSGS 16
#define FZ_SEED 0x5eed5eedull

typedef struct {
    uint8_t id_pk[IDENTITY_PUBLICKEYBYTES], id_sk[IDENTITY_SECRETKEYBYTES];
    uint8_t c_pk[KA_PUBLICKEYBYTES], c_sk[KA_SECRETKEYBYTES];
    uint8_t s_pk[KA_PUBLICKEYBYTES], s_sk[KA_SECRETKEYBYTES];
    uint8_t adv[WIRE_ADVERTISE_BYTES];  /* signed for FZ_ROUND */
    /* the peer's shares (of its b and s_sk) for us, x = FZ_SELF + 1 */
    uint8_t sh_b[SHAMIR_SHAREBYTES], sh_s[SHAMIR_SHAREBYTES];
    uint8_t box[WIRE_BOX_BYTES];        /* them sealed to us, for our current c_pk */
} fz_peer_t;

static fz_peer_t site[FZ_SITES]; /* [FZ_SELF]: only the identity keys are used */
static roster_t roster;
static client_conf_t cconf;
static client_t cl;
static float work0[FZ_NUMEL];
static wire_decoder_t *in_dec, *out_dec;
static wire_buf_t *syn_buf;

/* What the client has said this round (since its last ADVERTISE). */
static struct {
    uint8_t adv[WIRE_ADVERTISE_BYTES]; /* its keys */
    uint8_t b[PRG_SEEDBYTES];           /* its secrets, read when it shares them */
    uint8_t own_b_share[SHAMIR_SHAREBYTES];
    int shared;
    uint8_t revealed[FZ_SITES];         /* bit 0: b-share, bit 1: s-share */
} said;
static uint8_t boxes_for[KA_PUBLICKEYBYTES]; /* the c_pk site[].box is sealed for */
static int have_boxes;

/* Seeds each peer shares with the client's current keys (the same at every
 * input: randomness is reset), derived from the peer's side. */
static struct {
    int valid;
    uint8_t adv[64]; /* c_pk || s_pk they belong to */
    uint8_t share_key[FZ_SITES][SHAREBOX_KEYBYTES];
    uint8_t mask_seed[FZ_SITES][KA_SEEDBYTES];
    int ok[FZ_SITES]; /* 0: our key is unusable with this peer */
} pk_cache;

static void peer_keys(const uint8_t c_pk[KA_PUBLICKEYBYTES], const uint8_t s_pk[KA_PUBLICKEYBYTES])
{
    if (pk_cache.valid && memcmp(pk_cache.adv, c_pk, 32) == 0 &&
        memcmp(pk_cache.adv + 32, s_pk, 32) == 0)
        return;
    for (uint32_t p = 0; p < FZ_SITES; p++) {
        if (p == FZ_SELF) continue;
        pk_cache.ok[p] = ka_derive(pk_cache.share_key[p], site[p].c_sk, site[p].c_pk, c_pk, "share",
                                   FZ_ROUND, p, FZ_SELF) == 0 &&
                         ka_derive(pk_cache.mask_seed[p], site[p].s_sk, site[p].s_pk, s_pk, "mask",
                                   FZ_ROUND, p, FZ_SELF) == 0;
    }
    memcpy(pk_cache.adv, c_pk, 32);
    memcpy(pk_cache.adv + 32, s_pk, 32);
    pk_cache.valid = 1;
}

/* ---- client.c's part ---------------------------------------------------------------------- */

/* client_maybe_die: a no-op in internal.h, as the harness is no test-hooks build. */

static void observe(const msg_t *m);

int client_send(client_t *c, const msg_t *m)
{
    msg_encode(m, c->out);
    msg_t d;
    char err[512];
    if (msg_decode(out_dec, wire_buf_data(c->out), wire_buf_size(c->out), &d, err, sizeof err) < 0) {
        fprintf(stderr, "client sent a %s that does not decode: %s\n", msg_type_name(m->type), err);
        FZ_CHECK(!"outgoing message refused by msg_decode");
    }
    FZ_CHECK(d.type == m->type && d.round == m->round);
    observe(&d);
    c->last_sent = util_now();
    return 0;
}

void client_send_error(client_t *c, uint32_t round, msg_error_t code, const char *why)
{
    msg_t e;
    msg_error(&e, round, code, "%s", why);
    client_send(c, &e);
}

/* ---- checking what the client sends -------------------------------------------------------- */

static int pos_in(const sa_client_t *s, uint32_t id)
{
    for (unsigned i = 0; i < s->n1; i++)
        if (s->ids[i] == id) return (int)i;
    return -1;
}

static void check_shares(const msg_t *m)
{
    const sa_client_t *s = cl.sa;
    FZ_CHECK(s != NULL && s->n1 >= 1);
    FZ_CHECK(m->blob_len == (size_t)(s->n1 - 1) * WIRE_BOXREC_BYTES);
    uint32_t xs[FZ_SITES];
    uint8_t b_sh[FZ_SITES][SHAMIR_SHAREBYTES], s_sh[FZ_SITES][SHAMIR_SHAREBYTES];
    unsigned k = 0;
    int own = pos_in(s, s->self);
    FZ_CHECK(own >= 0);
    xs[k] = s->self + 1;
    memcpy(b_sh[k], s->share_b[own], SHAMIR_SHAREBYTES);
    memcpy(s_sh[k], s->share_s[own], SHAMIR_SHAREBYTES);
    k++;
    uint8_t seen[FZ_SITES] = {0};
    FZ_CHECK(s->round == FZ_ROUND && s->self == FZ_SELF);
    peer_keys(s->c_pk, s->s_pk);
    for (size_t r = 0; r < m->blob_len; r += WIRE_BOXREC_BYTES) {
        uint32_t to = wire_get_u32(m->blob + r);
        FZ_CHECK(to < FZ_SITES && to != s->self && !seen[to]++ && pos_in(s, to) >= 0);
        uint8_t plain[SHAREBOX_PLAINBYTES];
        FZ_CHECK(pk_cache.ok[to]);
        FZ_CHECK(sharebox_open(plain, m->blob + r + 4, pk_cache.share_key[to], s->round, s->self,
                               to) == 0);
        xs[k] = to + 1;
        memcpy(b_sh[k], plain, SHAMIR_SHAREBYTES);
        memcpy(s_sh[k], plain + SHAMIR_SHAREBYTES, SHAMIR_SHAREBYTES);
        k++;
    }
    if (k >= s->t) { /* any t shares rebuild the secrets */
        uint8_t secret[32];
        FZ_CHECK(shamir_combine(s->t, k, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])b_sh, secret) == 0);
        FZ_CHECK(memcmp(secret, s->b, 32) == 0);
        FZ_CHECK(shamir_combine(s->t, k, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])s_sh, secret) == 0);
        FZ_CHECK(memcmp(secret, s->s_sk, 32) == 0);
    }
    memcpy(said.b, s->b, sizeof said.b);
    memcpy(said.own_b_share, s->share_b[own], SHAMIR_SHAREBYTES);
    said.shared = 1;
}

static void check_masked(const msg_t *m)
{
    const sa_client_t *s = cl.sa;
    FZ_CHECK(s != NULL && said.shared);
    FZ_CHECK(m->vec_len == (cl.numel + 1) * 4);
    uint32_t x[FZ_NUMEL + 1];
    memcpy(x, m->vec, sizeof x);
    FZ_CHECK(prg_add(PRG_DEFAULT, said.b, x, FZ_NUMEL + 1, -1) == 0);
    peer_keys(s->c_pk, s->s_pk);
    for (unsigned i = 0; i < s->n1; i++) {
        uint32_t v = s->ids[i];
        if (!s->in_u2[i] || v == s->self) continue;
        /* the seed as v derives it, removed with the coordinator's sign convention */
        FZ_CHECK(v < FZ_SITES && pk_cache.ok[v]);
        FZ_CHECK(prg_add(PRG_DEFAULT, pk_cache.mask_seed[v], x, FZ_NUMEL + 1,
                         s->self < v ? -1 : +1) == 0);
    }
    FZ_CHECK(x[FZ_NUMEL] == (uint32_t)s->weight);
    double k = (double)s->weight * s->q.scale, c = s->q.clip;
    for (int j = 0; j < FZ_NUMEL; j++) {
        double d = cl.work[j];
        d = !(d <= c) ? c : d < -c ? -c : d;
        double v = floor(d * k);
        if (!(fabs(v) < 4e18)) continue; /* beyond what the encoding can hold */
        uint32_t lo = (uint32_t)(int64_t)v, hi = (uint32_t)((int64_t)v + 1);
        if (x[j] != lo && x[j] != hi) {
            fprintf(stderr, "value %d: unmasked word %u, expected %u or %u\n", j, x[j], lo, hi);
            FZ_CHECK(!"masked input does not unmask to the encoded update");
        }
    }
}

static void check_unmask(const msg_t *m)
{
    const sa_client_t *s = cl.sa;
    FZ_CHECK(s != NULL && said.shared);
    FZ_CHECK(m->blob_len % WIRE_SHAREREC_BYTES == 0);
    for (size_t r = 0; r < m->blob_len; r += WIRE_SHAREREC_BYTES) {
        const uint8_t *rec = m->blob + r;
        uint32_t id = wire_get_u32(rec), kind = wire_get_u32(rec + 4);
        int pos = pos_in(s, id);
        FZ_CHECK(id < FZ_SITES && pos >= 0 && s->in_u2[pos] && kind <= 1);
        FZ_CHECK(!(said.revealed[id] & (1u << (kind ^ 1)))); /* never both shares of one client */
        said.revealed[id] |= (uint8_t)(1u << kind);
        if (id == s->self) {
            FZ_CHECK(kind == 0);
            FZ_CHECK(memcmp(rec + 8, said.own_b_share, SHAMIR_SHAREBYTES) == 0);
        } else {
            FZ_CHECK(memcmp(rec + 8, kind == 0 ? site[id].sh_b : site[id].sh_s,
                            SHAMIR_SHAREBYTES) == 0);
        }
    }
}

static void observe(const msg_t *m)
{
    switch (m->type) {
    case MSG_ADVERTISE:
        FZ_CHECK(m->blob_len == WIRE_ADVERTISE_BYTES);
        memset(&said, 0, sizeof said); /* a new round of secrets */
        memcpy(said.adv, m->blob, WIRE_ADVERTISE_BYTES);
        break;
    case MSG_SHARES: check_shares(m); break;
    case MSG_READY: FZ_CHECK(m->round == FZ_ROUND); break;
    case MSG_MASKED: check_masked(m); break;
    case MSG_UNMASK: check_unmask(m); break;
    case MSG_ERROR: break;
    default: FZ_CHECK(!"the client sent a message type it never should");
    }
}

/* After every step: the secret state is consistent. */
static void check_state(void)
{
    const sa_client_t *s = cl.sa;
    if (!s) return;
    FZ_CHECK(s->state >= SA_ADVERTISED && s->state <= SA_MASKED);
    FZ_CHECK(s->n1 <= (unsigned)roster.n);
    if (s->state >= SA_READY) {
        FZ_CHECK(sodium_is_zero(s->b, sizeof s->b));
        FZ_CHECK(sodium_is_zero(s->s_sk, sizeof s->s_sk));
        FZ_CHECK(sodium_is_zero(s->c_sk, sizeof s->c_sk));
    }
    if (s->state == SA_READY) FZ_CHECK(s->y != NULL && s->y_words == cl.numel + 1);
    if (s->state == SA_MASKED) FZ_CHECK(s->y == NULL);
}

/* ---- the harness's side: valid messages for the client --------------------------------------- */

static const uint32_t u1_variant[4][FZ_SITES] = {{0, 1, 2}, {0, 1, 9}, {1, 2, 9}, {2, 1, 0}};

static size_t keys_blob(int variant, uint8_t *out)
{
    size_t off = 0;
    for (int i = 0; i < FZ_SITES; i++) {
        uint32_t id = u1_variant[variant][i];
        if (id >= FZ_SITES) continue;
        off += wire_keyrec_put(out + off, id, id == FZ_SELF ? said.adv : site[id].adv, NULL, 0);
    }
    return off;
}

/* The peers' share boxes for our current keys (sealed once per key). */
static void seal_boxes(void)
{
    const uint8_t *c_pk = said.adv;
    if (have_boxes && memcmp(boxes_for, c_pk, KA_PUBLICKEYBYTES) == 0) return;
    peer_keys(said.adv, said.adv + 32);
    for (uint32_t p = 0; p < FZ_SITES; p++) {
        if (p == FZ_SELF) continue;
        if (!pk_cache.ok[p]) {
            memset(site[p].box, 0, WIRE_BOX_BYTES); /* our key is unusable: so be it */
            continue;
        }
        uint8_t plain[SHAREBOX_PLAINBYTES];
        memcpy(plain, site[p].sh_b, SHAMIR_SHAREBYTES);
        memcpy(plain + SHAMIR_SHAREBYTES, site[p].sh_s, SHAMIR_SHAREBYTES);
        FZ_CHECK(sharebox_seal(site[p].box, plain, pk_cache.share_key[p], FZ_ROUND, p, FZ_SELF) == 0);
    }
    memcpy(boxes_for, c_pk, KA_PUBLICKEYBYTES);
    have_boxes = 1;
}

/* Boxes from the peers in the client's U1, per variant. */
static size_t shares_in_blob(int variant, uint8_t *out)
{
    uint32_t peers[FZ_SITES];
    unsigned n = 0;
    if (cl.sa)
        for (unsigned i = 0; i < cl.sa->n1; i++)
            if (cl.sa->ids[i] != FZ_SELF && cl.sa->ids[i] < FZ_SITES) peers[n++] = cl.sa->ids[i];
    if (n == 0) { /* not in a round: the usual U1 */
        peers[n++] = 0;
        peers[n++] = 2;
    }
    unsigned from = variant == 1 ? 1 : 0, to = variant == 2 ? n - 1 : n;
    seal_boxes();
    size_t off = 0;
    for (unsigned i = from; i < to; i++) {
        uint32_t p = peers[variant == 3 ? n - 1 - i : i];
        wire_put_u32(out + off, p);
        memcpy(out + off + 4, site[p].box, WIRE_BOX_BYTES);
        off += WIRE_BOXREC_BYTES;
    }
    return off;
}

static size_t unmask_req_blob(int drop_last, uint8_t *out)
{
    size_t off = 0;
    if (!cl.sa) return 0;
    size_t last_peer = SIZE_MAX;
    for (unsigned i = 0; i < cl.sa->n1; i++) {
        if (!cl.sa->in_u2[i]) continue;
        if (cl.sa->ids[i] != FZ_SELF) last_peer = off;
        wire_put_u32(out + off, cl.sa->ids[i]);
        wire_put_u32(out + off + 4, 0);
        off += WIRE_REQREC_BYTES;
    }
    if (drop_last && last_peer != SIZE_MAX) wire_put_u32(out + last_peer + 4, 1);
    return off;
}

/* The next valid message for the client's state; 0 if there is none (not in a round). */
static int next_message(int variant, int drop_last, msg_t *m)
{
    static uint8_t blob[FZ_SITES * (WIRE_KEYREC_MIN + WIRE_BOXREC_BYTES)];
    if (!cl.sa) return 0;
    *m = (msg_t){.round = FZ_ROUND, .blob = blob, .present = MSG_HAS_BLOB};
    switch (cl.sa->state) {
    case SA_ADVERTISED:
        m->type = MSG_KEYS;
        m->phase = PHASE_SHARE;
        m->blob_len = keys_blob(variant, blob);
        break;
    case SA_SHARED:
        m->type = MSG_SHARES_IN;
        m->phase = PHASE_MASKED;
        m->blob_len = shares_in_blob(variant, blob);
        break;
    case SA_READY:
        *m = (msg_t){.type = MSG_UPLOAD, .round = FZ_ROUND, .phase = PHASE_MASKED};
        break;
    case SA_MASKED:
        m->type = MSG_UNMASK_REQ;
        m->phase = PHASE_UNMASK;
        m->blob_len = unmask_req_blob(drop_last, blob);
        break;
    }
    return 1;
}

static void deliver(const uint8_t *bytes, size_t len)
{
    msg_t m;
    char err[512];
    if (msg_decode(in_dec, bytes, len, &m, err, sizeof err) == 0) sa_client_on_message(&cl, &m);
    check_state();
}

static void deliver_msg(const msg_t *m)
{
    msg_encode(m, syn_buf);
    deliver(wire_buf_data(syn_buf), wire_buf_size(syn_buf));
}

static msg_t plan;

static void advertise(void)
{
    sa_client_advertise(&cl, &plan, 1.0);
    check_state();
}

/* ---- set-up, once ----------------------------------------------------------------------------- */

static void world_init(void)
{
    fz_crypto_init();
    uint32_t xs[FZ_SITES] = {1, 2, 3};
    for (uint32_t u = 0; u < FZ_SITES; u++) {
        fz_peer_t *p = &site[u];
        FZ_CHECK(identity_keypair(p->id_pk, p->id_sk) == 0);
        snprintf(roster.site[u].name, sizeof roster.site[u].name, "site-%c", 'a' + u);
        memcpy(roster.site[u].pk, p->id_pk, sizeof p->id_pk);
        roster.site[u].has_pk = 1;
        if (u == FZ_SELF) continue;
        uint8_t b[PRG_SEEDBYTES], sb[FZ_SITES][SHAMIR_SHAREBYTES], ss[FZ_SITES][SHAMIR_SHAREBYTES];
        FZ_CHECK(ka_keypair(p->c_pk, p->c_sk) == 0 && ka_keypair(p->s_pk, p->s_sk) == 0);
        crypto_random(b, sizeof b);
        FZ_CHECK(shamir_split(b, FZ_T, FZ_SITES, xs, sb) == 0);
        FZ_CHECK(shamir_split(p->s_sk, FZ_T, FZ_SITES, xs, ss) == 0);
        memcpy(p->sh_b, sb[FZ_SELF], SHAMIR_SHAREBYTES);
        memcpy(p->sh_s, ss[FZ_SELF], SHAMIR_SHAREBYTES);
        memcpy(p->adv, p->c_pk, 32);
        memcpy(p->adv + 32, p->s_pk, 32);
        FZ_CHECK(identity_sign_keys(p->adv + 64, p->id_sk, FZ_ROUND, u, p->c_pk, p->s_pk) == 0);
    }
    roster.n = FZ_SITES;
    roster.all_have_pk = 1;

    snprintf(cconf.site, sizeof cconf.site, "site-b");
    cl.conf = &cconf;
    cl.out = wire_buf_new();
    cl.dec = wire_decoder_new();
    cl.numel = FZ_NUMEL;
    cl.work = malloc(FZ_NUMEL * sizeof *cl.work);
    cl.client_id = FZ_SELF;
    cl.roster = &roster;
    cl.identity_sk = crypto_secure_alloc(IDENTITY_SECRETKEYBYTES);
    in_dec = wire_decoder_new();
    out_dec = wire_decoder_new();
    syn_buf = wire_buf_new();
    FZ_CHECK(cl.out && cl.dec && cl.work && cl.identity_sk && in_dec && out_dec && syn_buf);
    memcpy(cl.identity_sk, site[FZ_SELF].id_sk, IDENTITY_SECRETKEYBYTES);
    for (int j = 0; j < FZ_NUMEL; j++) work0[j] = (float)((j * 5) % 11 - 5) * 0.3f;
}

static void reset_plan(void)
{
    plan = (msg_t){.type = MSG_PLAN, .round = FZ_ROUND, .phase = PHASE_TRAIN,
                   .threshold = FZ_T, .clip = 2.0, .scale = 1000.0, .present = MSG_HAS_SECAGG};
    cl.train.n = 100;
    cl.round = FZ_ROUND;
    memcpy(cl.work, work0, sizeof work0);
}

/* ---- seeds --------------------------------------------------------------------------------- */

static void run_input(const uint8_t *data, size_t size);

static void write_seeds(void)
{
    char name[64];
    fz_seed_t s;
    /* Each handler's valid message, encoded, after the header's valid prefix;
     * the U1 / U2 variants (bits 2-5) in a few combinations. */
    static const char *const stage[4] = {"keys", "shares-in", "upload", "unmask-req"};
    static const uint8_t variants[4] = {0x00, 0x04, 0x38, 0x1c};
    for (int mode = 0; mode < 4; mode++) {
        for (int v = 0; v < 4; v++) {
            uint8_t h0 = (uint8_t)(mode | variants[v]);
            s.n = 0;
            fz_seed_byte(&s, h0);
            run_input(s.data, s.n); /* puts the client where the fuzzed message lands */
            msg_t m;
            if (next_message((variants[v] >> (mode == 1 ? 4 : 2)) & 3, v & 1, &m)) {
                fz_seed_msg(&s, 0, &m);
                snprintf(name, sizeof name, "msg-%s-v%d", stage[mode], v);
                fz_seed_write(name, &s);
            }
            sa_client_reset(&cl);
        }
    }
    /* Whole rounds with synthetic messages, and again after a re-advertise. */
    for (int v = 0; v < 8; v++) {
        s.n = 0;
        fz_seed_byte(&s, 0);
        for (int i = 0; i < 4; i++) fz_seed_byte(&s, (uint8_t)(0x80 | v));
        if (v == 7) {
            fz_seed_byte(&s, 0x40);
            for (int i = 0; i < 4; i++) fz_seed_byte(&s, 0x80);
        }
        snprintf(name, sizeof name, "round-v%d", v);
        fz_seed_write(name, &s);
    }
    /* A round under other plan parameters (threshold 3, clip 0.5, scale 2^20, n 7). */
    s.n = 0;
    fz_seed_byte(&s, 0x40);
    uint8_t p[2 + 8 + 8 + 4];
    double clip = 0.5, scale = 1048576.0;
    p[0] = 0;
    p[1] = 3;
    memcpy(p + 2, &clip, 8);
    memcpy(p + 10, &scale, 8);
    p[18] = p[19] = p[20] = 0;
    p[21] = 7;
    fz_seed_bytes(&s, p, sizeof p);
    for (int j = 0; j < FZ_NUMEL; j++) {
        float w = (float)j * 0.1f - 0.8f;
        fz_seed_bytes(&s, &w, 4);
    }
    for (int i = 0; i < 4; i++) fz_seed_byte(&s, 0x80);
    fz_seed_write("round-plan", &s);
}

/* ---- libFuzzer --------------------------------------------------------------------------------- */

static void run_input(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    uint8_t h0 = 0;
    fz_u8(&in, &h0);
    reset_plan();
    if (h0 & 0x40) {
        size_t got;
        const uint8_t *p = fz_take(&in, 2 + 8 + 8 + 4, &got);
        if (got == 22) {
            plan.threshold = (uint32_t)p[0] << 8 | p[1];
            memcpy(&plan.clip, p + 2, 8);
            memcpy(&plan.scale, p + 10, 8);
            cl.train.n = (int64_t)((uint32_t)p[18] << 24 | (uint32_t)p[19] << 16 |
                                   (uint32_t)p[20] << 8 | p[21]);
        }
        const uint8_t *w = fz_take(&in, sizeof work0, &got);
        memcpy(cl.work, w, got);
    }
    fz_rng_reset(FZ_SEED);
    advertise();
    int mode = h0 & 3;
    msg_t m;
    for (int i = 1; i <= mode && next_message(i == 1 ? (h0 >> 2) & 3 : (h0 >> 4) & 3, 0, &m); i++)
        deliver_msg(&m);
    uint8_t ctl;
    for (int i = 0; i < FZ_MAX_MSGS && fz_u8(&in, &ctl) == 0; i++) {
        if (ctl & 0x80) {
            if (next_message(ctl & 3, (ctl & 4) != 0, &m)) deliver_msg(&m);
            else advertise();
        } else if (ctl & 0x40) {
            advertise();
        } else {
            size_t len;
            const uint8_t *bytes = fz_frame(&in, &len);
            if (!bytes) break;
            deliver(bytes, len);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    world_init();
    if (fz_seed_dir()) {
        write_seeds();
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_input(data, size);
    sa_client_reset(&cl);
    return 0;
}
