/*
 * fuzz_client.c - libFuzzer harness for a hospital client's side of secure
 * aggregation (client/secagg_client.c), protocol v2: the KEYS, SHARES_IN,
 * UPLOAD, CONSIST_REQ and UNMASK_REQ handlers behind sa_client_on_message,
 * the advertise that opens a round, and the site policy (client/policy.c)
 * with its released-shares record.
 *
 * It #includes secagg_client.c and policy.c (house style: reach the statics
 * and the secret state) and implements the three functions that file takes
 * from client/client.c, so neither LibTorch nor a socket is needed:
 * client_send encodes the message, decodes it again and checks it (below).
 *
 * The client is site 1 of a roster of three sites with Ed25519 identity keys;
 * the harness plays sites 0 and 2 and the coordinator. The peers sign
 * advertise-v2 records (keys, n_k) over the SHA-256 of the client's global
 * model, and the U3 lists of the consistency round, with their identity
 * keys. Randomness is reset at every input, so the client's round keys are
 * the same in every execution and harness-made messages addressed to it stay
 * valid. The policy's state_dir is a temp dir made once (removed at exit);
 * the released record is removed and the policy reloaded at every input.
 *
 * Input layout:
 *   byte 0  bits 0-1  how far to go with valid messages before the fuzzed
 *                     ones: 0 advertised, 1 + KEYS, 2 + SHARES_IN, 3 + UPLOAD
 *           bits 2-3  U1 in that KEYS: {0,1,2}, {0,1}, {1,2}, {2,1,0}
 *           bits 4-5  boxes in that SHARES_IN: every peer, all but the
 *                     first, all but the last, every peer in reverse order
 *           bit 6     fuzzed PLAN parameters and update follow: threshold
 *                     (2 bytes BE), clip and scale (8 bytes each, host
 *                     doubles), sample count (4 bytes BE), upload width
 *                     (1 byte, 0: absent), then up to FZ_NUMEL floats of
 *                     the delta (4 bytes each)
 *           bit 7     strict policy: min_cohort 3, max_collusion 0.34 (t = 3
 *                     for three sites); else min_cohort 2, max_collusion 0.33
 *   then up to FZ_MAX_MSGS control bytes:
 *           bit 7     synthetic: the next valid message for the client's
 *                     state, or a new advertise when it has left the round;
 *                     bits 0-1 pick the variant: U1 (KEYS) and U2
 *                     (SHARES_IN) as above; U3 (CONSIST_REQ): U2, U2 without
 *                     its last peer, ourselves only, all of U1; the signers
 *                     (UNMASK_REQ): every U3 member, all but us, only us,
 *                     every one and a repeated record. Bits 2-5 tamper with
 *                     UNMASK_REQ: 1 a peer signs another U3 (a split view),
 *                     2 the last signature is relabelled to a non-signer,
 *                     3 both shares of a peer asked, 4 the last peer's kind
 *                     flipped, 5 our own b-share not asked, 6 only ours
 *                     asked, 7 a peer's signature made with another key,
 *                     8 a peer's share asked twice (same kind), 9 a share
 *                     of a client outside U2 asked
 *           bit 6     (without bit 7) advertise again; bits 0-1: 0 same
 *                     model, 1 the next model version, 2 restart the daemon
 *                     (reload the policy from its file) first, 3 both
 *           else      a 2-byte big-endian length and message bytes for
 *                     msg_decode, then sa_client_on_message
 *
 * Checks beyond the sanitizers, on everything the client sends, against the
 * harness's own record of the messages the client answered (not the
 * client's state):
 *  - ADVERTISE: signed advertise-v2 over our model hash and n_k; only under
 *    a plan whose upload width w (absent: 32) is in [8, 32] and holds our
 *    own value: clip * scale * n_k + 1 < 2^(w-1).
 *  - SHARES: only after a KEYS whose every key is signed by its roster key
 *    for this round and model, that holds us, with n >= min_cohort and
 *    secagg_min_threshold(n, max_collusion) <= t <= n, and whose signed n_k
 *    sum fits the width (clip * scale * sum + n < 2^(w-1)); the boxes open
 *    for their addressee and any t shares rebuild b and s_sk.
 *  - MASKED is numel elements packed at w bits and the 32-bit weight word;
 *    minus PRG(b) and the pairwise masks of the U2 the harness sent, it is
 *    the fixed-point encoding of the update mod 2^w (the weight mod 2^32);
 *    once masked, b, s_sk and c_sk are wiped.
 *  - CONSIST: a valid signature on the U3 it was sent, which holds us, at
 *    least t of U1, and no U1 member outside U2; for a model version it
 *    released shares for, only that release's U3.
 *  - UNMASK ("at least t"): only after it signed U3, only in answer to a
 *    request carrying at least t valid signatures on exactly that U3 from
 *    distinct U1 members in it, asking b-shares for at least t survivors
 *    (ourselves included), b exactly for U3 and s only outside it, within
 *    U2; never both shares of one peer in a round; for one model version
 *    never with two different U3s (one aggregate per version: the same
 *    survivors again are allowed), also across a restart; the shares are the
 *    ones received.
 *  - Liveness: a synthetic message that the rules above allow is answered
 *    (KEYS -> SHARES, SHARES_IN -> READY, UPLOAD -> MASKED, CONSIST_REQ ->
 *    CONSIST, UNMASK_REQ -> UNMASK), so an over-strict client fails too.
 *
 * Seeds: MEDFED_FUZZ_WRITE_SEEDS=dir fuzz_client writes valid inputs and exits.
 */
#include "client/policy.c"
#include "client/secagg_client.c"

#include <math.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_common.h"

#define FZ_NUMEL 16
#define FZ_SITES 3
#define FZ_SELF 1u
#define FZ_ROUND 7u
#define FZ_T 2u
#define FZ_MAX_MSGS 16
#define FZ_SEED 0x5eed5eedull
#define FZ_MODELS 4          /* model versions one input can move through */
#define FZ_OUTSIDER 0x7fffffffu /* an id on no roster */

typedef struct {
    uint8_t id_pk[IDENTITY_PUBLICKEYBYTES], id_sk[IDENTITY_SECRETKEYBYTES];
    uint8_t c_pk[KA_PUBLICKEYBYTES], c_sk[KA_SECRETKEYBYTES];
    uint8_t s_pk[KA_PUBLICKEYBYTES], s_sk[KA_SECRETKEYBYTES];
    int64_t n_k;
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
static char state_dir[256];

/* Model versions: the global model, its hash, and the peers' advertise-v2
 * records signed for it (made once per version). */
static struct {
    int valid;
    float global[FZ_NUMEL];
    uint8_t hash[WIRE_HASH_BYTES];
    uint8_t adv[FZ_SITES][WIRE_ADVERTISE_BYTES];
} model[FZ_MODELS];
static unsigned mv;                  /* the client's current model version */
/* This input: the U3 the client released shares with, per model version. */
static struct {
    int done;
    size_t n3;
    uint32_t u3[ROSTER_MAX];
} released[FZ_MODELS];
static int strict;                   /* the input's policy (byte 0 bit 7) */
static msg_t plan;                   /* the input's PLAN */

/* What the client has been sent and has said this round (since its last
 * ADVERTISE), as the harness saw it. */
static struct {
    uint8_t adv[WIRE_ADVERTISE_BYTES]; /* its keys */
    unsigned t;                         /* the threshold it advertised under */
    uint8_t b[PRG_SEEDBYTES];           /* its secrets, read when it shares them */
    uint8_t own_b_share[SHAMIR_SHAREBYTES];
    int shared;
    unsigned n1;                        /* U1: the KEYS it answered */
    uint32_t u1[FZ_SITES];
    unsigned u2;                        /* bit id: U2, the SHARES_IN it answered, and us */
    int signed_u3;                      /* U3: the CONSIST_REQ it answered */
    size_t n3;
    uint32_t u3[ROSTER_MAX];
    uint8_t self_sig[WIRE_SIG_BYTES];   /* its signature on U3 */
    uint8_t revealed[FZ_SITES];         /* bit 0: b-share, bit 1: s-share */
} said;
static const msg_t *cur_in;     /* the message being handled */
static unsigned sent_types;     /* bit type: sent while handling it */
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

static void model_init(unsigned v)
{
    if (model[v].valid) return;
    for (int j = 0; j < FZ_NUMEL; j++) model[v].global[j] = 0.01f * (float)(j + 1) + (float)v;
    crypto_sha256(model[v].hash, model[v].global, sizeof model[v].global);
    for (uint32_t u = 0; u < FZ_SITES; u++) {
        if (u == FZ_SELF) continue;
        uint8_t *adv = model[v].adv[u], msg[WIRE_ADV_SIGNED_BYTES];
        memcpy(adv, site[u].c_pk, 32);
        memcpy(adv + 32, site[u].s_pk, 32);
        wire_put_u64(adv + WIRE_ADV_WEIGHT_OFF, (uint64_t)site[u].n_k);
        wire_adv_signed(msg, FZ_ROUND, u, model[v].hash, adv);
        FZ_CHECK(identity_sign(adv + WIRE_ADV_SIG_OFF, site[u].id_sk, "advertise-v2", msg,
                               sizeof msg) == 0);
    }
    model[v].valid = 1;
}

/* ---- the policy under test: state_dir is ours ------------------------------------------- */

static void state_dir_remove(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/released-%s", state_dir, cconf.site);
    unlink(path);
    rmdir(state_dir);
}

/* A daemon start: the policy as policy_new reads it (with the released file). */
static void policy_load(void)
{
    char err[512];
    policy_destroy(&cl.policy);
    cconf.min_cohort = strict ? 3 : 2;
    cconf.max_collusion = strict ? 0.34 : 0.33;
    cl.policy = policy_new(&cconf, err, sizeof err);
    if (!cl.policy) fprintf(stderr, "fuzz: policy_new: %s\n", err);
    FZ_CHECK(cl.policy != NULL);
}

/* A fresh site: nothing released. */
static void policy_reset(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/released-%s", state_dir, cconf.site);
    FZ_CHECK(unlink(path) == 0 || errno == ENOENT);
    policy_load();
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

/* The harness's masked inputs are far below a chunk: client.c sends them
 * whole too (its PARTs are the integration tests'). */
int client_send_upload(client_t *c, const msg_t *m)
{
    FZ_CHECK(m->vec_len <= WIRE_CHUNK_BYTES);
    return client_send(c, m);
}

void client_send_error(client_t *c, uint32_t round, msg_error_t code, const char *why)
{
    msg_t e;
    msg_error(&e, round, code, "%s", why);
    client_send(c, &e);
}

/* As client.c: the hash of the model the client holds, computed once per
 * received model (the harness sets it with the model, never stale). */
const uint8_t *client_global_hash(client_t *c)
{
    if (c->global_hash_stale) {
        crypto_sha256(c->global_hash, c->global, c->numel * sizeof *c->global);
        c->global_hash_stale = 0;
    }
    return c->global_hash;
}

/* ---- the rules, as the harness reads them ----------------------------------------------------- */

static int in_list(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

static int said_u1(uint32_t id) { return in_list(said.u1, said.n1, id); }
static int said_u3(uint32_t id) { return said.signed_u3 && in_list(said.u3, said.n3, id); }

/* The plan's upload width (absent: 32) holds `sites` values whose weights
 * sum to `weight`, each rounded up by at most 1: w in [8, 32] and
 * clip * scale * weight + sites <= 2^(w-1) - 1. */
static unsigned plan_bits(void) { return plan.bits ? plan.bits : 32; }
static int width_holds(double weight, unsigned sites)
{
    const unsigned w = plan_bits();
    return w >= 8 && w <= 32 && plan.clip * plan.scale * weight + sites <= ldexp(1.0, (int)w - 1) - 1;
}

/* The cohort rule of the site's policy: n >= min_cohort and
 * secagg_min_threshold(n, max_collusion) <= t <= n. */
static int cohort_ok(unsigned n, unsigned t)
{
    return n >= (unsigned)cconf.min_cohort && t >= secagg_min_threshold(n, cconf.max_collusion) &&
           t <= n;
}

/* KEYS: every record a roster member's key signed for this round and model,
 * none twice, ours among them with our keys, the cohort within our policy,
 * the sum of their signed n_k within the plan's width. */
static int keys_ok(const msg_t *m, uint32_t *ids, unsigned *n)
{
    *n = 0;
    int self = 0;
    double weights = 0;
    for (size_t off = 0; off < m->blob_len;) {
        wire_keyrec_t r;
        if (wire_keyrec_next(m->blob, m->blob_len, &off, &r) < 0 || *n == FZ_SITES ||
            r.id >= FZ_SITES || in_list(ids, *n, r.id))
            return 0;
        uint8_t msg[WIRE_ADV_SIGNED_BYTES];
        wire_adv_signed(msg, FZ_ROUND, r.id, model[mv].hash, r.adv);
        if (identity_verify(r.adv + WIRE_ADV_SIG_OFF, site[r.id].id_pk, "advertise-v2", msg,
                            sizeof msg) < 0)
            return 0;
        if (r.id == FZ_SELF) {
            if (memcmp(r.adv, said.adv, 64) != 0) return 0;
            self = 1;
        }
        weights += (double)wire_adv_weight(r.adv);
        ids[(*n)++] = r.id;
    }
    return self && cohort_ok(*n, said.t) && width_holds(weights, *n);
}

/* SHARES_IN: boxes from distinct other U1 members that open for us, and
 * with us at least t. Sets *u2. */
static int shares_in_ok(const msg_t *m, unsigned *u2)
{
    *u2 = 1u << FZ_SELF;
    size_t n = m->blob_len / WIRE_BOXREC_BYTES;
    if (m->blob_len % WIRE_BOXREC_BYTES || n + 1 < said.t || n >= said.n1) return 0;
    peer_keys(said.adv, said.adv + 32);
    for (size_t r = 0; r < n; r++) {
        const uint8_t *rec = m->blob + r * WIRE_BOXREC_BYTES;
        uint32_t from = wire_get_u32(rec);
        uint8_t plain[SHAREBOX_PLAINBYTES];
        if (from == FZ_SELF || !said_u1(from) || (*u2 >> from & 1) || !pk_cache.ok[from] ||
            sharebox_open(plain, rec + 4, pk_cache.share_key[from], FZ_ROUND, from, FZ_SELF) < 0)
            return 0;
        *u2 |= 1u << from;
    }
    return 1;
}

/* This model version was never released, or with exactly the list u3. */
static int same_release(const uint32_t *u3, size_t n3)
{
    return !released[mv].done ||
           (released[mv].n3 == n3 && memcmp(released[mv].u3, u3, n3 * sizeof *u3) == 0);
}

/* CONSIST_REQ: a U3 (ascending) that holds us, at least t of U1, and no
 * U1 member outside U2; for a released model version, that release's U3. */
static int consist_ok(const msg_t *m, uint32_t *u3, size_t *n3)
{
    if (wire_idlist_parse(m->blob, m->blob_len, ROSTER_MAX, u3, n3) < 0 || !same_release(u3, *n3))
        return 0;
    unsigned ours = 0;
    for (size_t i = 0; i < *n3; i++) {
        if (!said_u1(u3[i])) continue;
        if (!(said.u2 >> u3[i] & 1)) return 0;
        ours++;
    }
    return in_list(u3, *n3, FZ_SELF) && ours >= said.t;
}

/* Valid signatures on our U3 from distinct U1 members in U3; *bad: one of
 * those records does not verify. */
static unsigned u3_signatures(const wire_unmaskreq_t *r, int *bad)
{
    size_t len = wire_consist_signed_len(said.n3);
    uint8_t *msg = malloc(len);
    FZ_CHECK(msg != NULL);
    wire_consist_signed(msg, FZ_ROUND, model[mv].hash, said.u3, said.n3);
    unsigned valid = 0, seen = 0;
    *bad = 0;
    for (size_t i = 0; i < r->nsig; i++) {
        const uint8_t *rec = r->sigs + i * WIRE_SIGREC_BYTES;
        uint32_t id = wire_get_u32(rec);
        if (!said_u1(id) || !said_u3(id) || (seen >> id & 1)) continue;
        seen |= 1u << id;
        if (identity_verify(rec + 4, site[id].id_pk, "consistency-v1", msg, len) == 0) valid++;
        else *bad = 1;
    }
    free(msg);
    return valid;
}

/* UNMASK_REQ, as the client's rules read: at least t valid signatures on our
 * U3 and no bad one among the counted; b-shares exactly for U3 members,
 * s-shares only for U2 members outside it, none twice; at least t
 * survivors, we among them. */
static int unmask_ok(const msg_t *m, const char **why)
{
    wire_unmaskreq_t r;
    int bad;
    if (!said.signed_u3 || wire_unmaskreq_parse(m->blob, m->blob_len, &r) < 0) {
        *why = "no U3 signed, or a malformed request";
        return 0;
    }
    if (u3_signatures(&r, &bad) < said.t || bad) {
        *why = "fewer than t valid signatures on our U3";
        return 0;
    }
    unsigned asked = 0, survivors = 0;
    for (size_t i = 0; i < r.nreq; i++) {
        uint32_t id = wire_get_u32(r.reqs + i * WIRE_REQREC_BYTES);
        uint32_t kind = wire_get_u32(r.reqs + i * WIRE_REQREC_BYTES + 4);
        if (id >= FZ_SITES || !(said.u2 >> id & 1) || (asked >> id & 1) ||
            kind != (said_u3(id) ? 0u : 1u)) {
            *why = "a share outside U2, twice, or of the kind U3 does not allow";
            return 0;
        }
        asked |= 1u << id;
        survivors += kind == 0;
    }
    if (survivors < said.t || !(asked >> FZ_SELF & 1)) {
        *why = "fewer than t survivors";
        return 0;
    }
    return 1;
}

/* ---- checking what the client sends -------------------------------------------------------- */

static int pos_in(const sa_client_t *s, uint32_t id)
{
    for (unsigned i = 0; i < s->n1; i++)
        if (s->ids[i] == id) return (int)i;
    return -1;
}

static void check_advertise(const msg_t *m)
{
    FZ_CHECK(m->blob_len == WIRE_ADVERTISE_BYTES);
    uint8_t msg[WIRE_ADV_SIGNED_BYTES];
    wire_adv_signed(msg, FZ_ROUND, FZ_SELF, model[mv].hash, m->blob);
    FZ_CHECK(identity_verify(m->blob + WIRE_ADV_SIG_OFF, site[FZ_SELF].id_pk, "advertise-v2", msg,
                             sizeof msg) == 0);
    FZ_CHECK(wire_get_u64(m->blob + WIRE_ADV_WEIGHT_OFF) == (uint64_t)cl.train.n);
    FZ_CHECK(width_holds((double)cl.train.n, 1));
    memset(&said, 0, sizeof said); /* a new round of secrets */
    memcpy(said.adv, m->blob, WIRE_ADVERTISE_BYTES);
    said.t = plan.threshold;
}

static void check_shares(const msg_t *m)
{
    const sa_client_t *s = cl.sa;
    FZ_CHECK(cur_in && cur_in->type == MSG_KEYS);
    FZ_CHECK(keys_ok(cur_in, said.u1, &said.n1)); /* signed keys, and the policy's cohort */
    FZ_CHECK(s != NULL && s->n1 == said.n1);
    FZ_CHECK(m->blob_len == (size_t)(said.n1 - 1) * WIRE_BOXREC_BYTES);
    uint32_t xs[FZ_SITES];
    uint8_t b_sh[FZ_SITES][SHAMIR_SHAREBYTES], s_sh[FZ_SITES][SHAMIR_SHAREBYTES];
    unsigned k = 0;
    int own = pos_in(s, FZ_SELF);
    FZ_CHECK(own >= 0);
    xs[k] = FZ_SELF + 1;
    memcpy(b_sh[k], s->share_b[own], SHAMIR_SHAREBYTES);
    memcpy(s_sh[k], s->share_s[own], SHAMIR_SHAREBYTES);
    k++;
    uint8_t seen[FZ_SITES] = {0};
    FZ_CHECK(s->round == FZ_ROUND && s->self == FZ_SELF);
    peer_keys(said.adv, said.adv + 32);
    for (size_t r = 0; r < m->blob_len; r += WIRE_BOXREC_BYTES) {
        uint32_t to = wire_get_u32(m->blob + r);
        FZ_CHECK(to < FZ_SITES && to != FZ_SELF && !seen[to]++ && said_u1(to));
        uint8_t plain[SHAREBOX_PLAINBYTES];
        FZ_CHECK(pk_cache.ok[to]);
        FZ_CHECK(sharebox_open(plain, m->blob + r + 4, pk_cache.share_key[to], FZ_ROUND, FZ_SELF,
                               to) == 0);
        xs[k] = to + 1;
        memcpy(b_sh[k], plain, SHAMIR_SHAREBYTES);
        memcpy(s_sh[k], plain + SHAMIR_SHAREBYTES, SHAMIR_SHAREBYTES);
        k++;
    }
    FZ_CHECK(k >= said.t); /* cohort_ok: t <= n */
    uint8_t secret[32];    /* any t shares rebuild the secrets */
    FZ_CHECK(shamir_combine(said.t, k, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])b_sh, secret) == 0);
    FZ_CHECK(memcmp(secret, s->b, 32) == 0);
    FZ_CHECK(shamir_combine(said.t, k, xs, (const uint8_t(*)[SHAMIR_SHAREBYTES])s_sh, secret) == 0);
    FZ_CHECK(memcmp(secret, s->s_sk, 32) == 0);
    memcpy(said.b, s->b, sizeof said.b);
    memcpy(said.own_b_share, s->share_b[own], SHAMIR_SHAREBYTES);
    said.shared = 1;
}

static void check_ready(void)
{
    unsigned u2;
    FZ_CHECK(said.shared && cur_in && cur_in->type == MSG_SHARES_IN);
    FZ_CHECK(shares_in_ok(cur_in, &u2));
    said.u2 = u2;
}

static void check_masked(const msg_t *m)
{
    const sa_client_t *s = cl.sa;
    FZ_CHECK(s != NULL && said.shared && said.u2);
    const unsigned w = plan_bits();
    FZ_CHECK(s->q.bits == w);
    FZ_CHECK(m->vec_len == (FZ_NUMEL * w + 7) / 8 + 4 * ENC_TAIL_WORDS);
    uint32_t x[FZ_NUMEL + ENC_TAIL_WORDS] = {0};
    enc_unpack_add_masked(m->vec, FZ_NUMEL, w, ENC_TAIL_WORDS, x);
    FZ_CHECK(prg_add(PRG_DEFAULT, said.b, x, FZ_NUMEL + ENC_TAIL_WORDS, -1) == 0);
    peer_keys(said.adv, said.adv + 32);
    for (uint32_t v = 0; v < FZ_SITES; v++) {
        if (!(said.u2 >> v & 1) || v == FZ_SELF) continue;
        /* the seed as v derives it, removed with the coordinator's sign convention */
        FZ_CHECK(pk_cache.ok[v]);
        FZ_CHECK(prg_add(PRG_DEFAULT, pk_cache.mask_seed[v], x, FZ_NUMEL + ENC_TAIL_WORDS,
                         FZ_SELF < v ? -1 : +1) == 0);
    }
    FZ_CHECK(x[FZ_NUMEL] == (uint32_t)s->weight && s->weight == cl.train.n);
    /* the weighted training loss word, at the plan's loss scale */
    FZ_CHECK(x[FZ_NUMEL + 1] == secagg_encode_loss(cl.update_loss, s->weight, s->loss_scale));
    double k = (double)s->weight * s->q.scale, c = s->q.clip;
    const uint32_t mask = w == 32 ? UINT32_MAX : (1u << w) - 1;
    for (int j = 0; j < FZ_NUMEL; j++) {
        double d = cl.work[j];
        d = !(d <= c) ? c : d < -c ? -c : d;
        double v = floor(d * k);
        if (!(fabs(v) < 4e18)) continue; /* beyond what the encoding can hold */
        uint32_t lo = (uint32_t)(int64_t)v, hi = (uint32_t)((int64_t)v + 1);
        if (((x[j] ^ lo) & mask) && ((x[j] ^ hi) & mask)) {
            fprintf(stderr, "value %d: unmasked word %u, expected %u or %u\n", j, x[j], lo, hi);
            FZ_CHECK(!"masked input does not unmask to the encoded update");
        }
    }
}

static void check_consist(const msg_t *m)
{
    FZ_CHECK(said.shared && said.u2 && !said.signed_u3);
    FZ_CHECK(cur_in && cur_in->type == MSG_CONSIST_REQ);
    FZ_CHECK(consist_ok(cur_in, said.u3, &said.n3)); /* us, >= t of U1, U1 members in U2 */
    FZ_CHECK(m->blob_len == WIRE_SIG_BYTES);
    size_t len = wire_consist_signed_len(said.n3);
    uint8_t *msg = malloc(len);
    FZ_CHECK(msg != NULL);
    wire_consist_signed(msg, FZ_ROUND, model[mv].hash, said.u3, said.n3);
    FZ_CHECK(identity_verify(m->blob, site[FZ_SELF].id_pk, "consistency-v1", msg, len) == 0);
    free(msg);
    memcpy(said.self_sig, m->blob, WIRE_SIG_BYTES);
    said.signed_u3 = 1;
}

static void check_unmask(const msg_t *m)
{
    FZ_CHECK(said.shared && said.signed_u3);
    FZ_CHECK(cur_in && cur_in->type == MSG_UNMASK_REQ);
    /* at least t, whatever the coordinator says: the policy's cohort ... */
    FZ_CHECK(cohort_ok(said.n1, said.t));
    wire_unmaskreq_t r;
    FZ_CHECK(wire_unmaskreq_parse(cur_in->blob, cur_in->blob_len, &r) == 0);
    /* ... t valid signatures on the U3 it signed ... */
    int bad;
    FZ_CHECK(u3_signatures(&r, &bad) >= said.t);
    /* ... and everything else the request must satisfy */
    const char *why = "";
    if (!unmask_ok(cur_in, &why)) {
        fprintf(stderr, "the client revealed shares for a request with %s\n", why);
        FZ_CHECK(!"shares revealed for a request the rules refuse");
    }
    /* one aggregate per model version: another release only with the same U3 */
    if (released[mv].done) {
        FZ_CHECK(same_release(said.u3, said.n3));
    } else {
        released[mv].done = 1;
        released[mv].n3 = said.n3;
        memcpy(released[mv].u3, said.u3, said.n3 * sizeof *said.u3);
    }
    FZ_CHECK(m->blob_len == r.nreq * WIRE_SHAREREC_BYTES);
    unsigned survivors = 0;
    for (size_t i = 0; i < r.nreq; i++) {
        const uint8_t *rec = m->blob + i * WIRE_SHAREREC_BYTES;
        uint32_t id = wire_get_u32(rec), kind = wire_get_u32(rec + 4);
        FZ_CHECK(id == wire_get_u32(r.reqs + i * WIRE_REQREC_BYTES) &&
                 kind == wire_get_u32(r.reqs + i * WIRE_REQREC_BYTES + 4));
        FZ_CHECK(id < FZ_SITES && (said.u2 >> id & 1) && kind == (said_u3(id) ? 0u : 1u));
        FZ_CHECK(!(said.revealed[id] & (1u << (kind ^ 1)))); /* never both shares of one client */
        said.revealed[id] |= (uint8_t)(1u << kind);
        survivors += kind == 0;
        if (id == FZ_SELF) {
            FZ_CHECK(kind == 0);
            FZ_CHECK(memcmp(rec + 8, said.own_b_share, SHAMIR_SHAREBYTES) == 0);
        } else {
            FZ_CHECK(memcmp(rec + 8, kind == 0 ? site[id].sh_b : site[id].sh_s,
                            SHAMIR_SHAREBYTES) == 0);
        }
    }
    FZ_CHECK(survivors >= said.t && (said.revealed[FZ_SELF] & 1));
}

static void observe(const msg_t *m)
{
    FZ_CHECK(m->type < 32);
    sent_types |= 1u << m->type;
    switch (m->type) {
    case MSG_ADVERTISE: check_advertise(m); break;
    case MSG_SHARES: check_shares(m); break;
    case MSG_READY:
        FZ_CHECK(m->round == FZ_ROUND);
        check_ready();
        break;
    case MSG_MASKED: check_masked(m); break;
    case MSG_CONSIST: check_consist(m); break;
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
    FZ_CHECK(s->state >= SA_ADVERTISED && s->state <= SA_SIGNED);
    FZ_CHECK(s->n1 <= (unsigned)roster.n);
    if (s->state >= SA_READY) {
        FZ_CHECK(sodium_is_zero(s->b, sizeof s->b));
        FZ_CHECK(sodium_is_zero(s->s_sk, sizeof s->s_sk));
        FZ_CHECK(sodium_is_zero(s->c_sk, sizeof s->c_sk));
    }
    if (s->state == SA_READY)
        FZ_CHECK(s->y != NULL && s->y_len == enc_masked_len(cl.numel, s->q.bits, ENC_TAIL_WORDS));
    if (s->state >= SA_MASKED) FZ_CHECK(s->y == NULL);
}

/* ---- the harness's side: valid messages for the client --------------------------------------- */

static const uint32_t u1_variant[4][FZ_SITES] = {{0, 1, 2}, {0, 1, 9}, {1, 2, 9}, {2, 1, 0}};

static size_t keys_blob(int variant, uint8_t *out)
{
    size_t off = 0;
    for (int i = 0; i < FZ_SITES; i++) {
        uint32_t id = u1_variant[variant][i];
        if (id >= FZ_SITES) continue;
        off += wire_keyrec_put(out + off, id, id == FZ_SELF ? said.adv : model[mv].adv[id], NULL, 0);
    }
    return off;
}

/* SecAgg+ KEYS: all of U1 as (id, SHA-256 of its ADVERTISE record), ascending. */
static size_t keys_u1(int variant, uint8_t *out)
{
    size_t n = 0;
    for (uint32_t id = 0; id < FZ_SITES; id++) {
        if (!in_list(u1_variant[variant], FZ_SITES, id)) continue;
        wire_put_u32(out + n * WIRE_U1REC_BYTES, id);
        crypto_sha256(out + n * WIRE_U1REC_BYTES + 4, id == FZ_SELF ? said.adv : model[mv].adv[id],
                      WIRE_ADVERTISE_BYTES);
        n++;
    }
    return n;
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
    for (unsigned i = 0; i < said.n1; i++)
        if (said.u1[i] != FZ_SELF) peers[n++] = said.u1[i];
    if (n == 0) { /* it answered no KEYS: the usual U1 */
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

/* U3 for CONSIST_REQ: U2, U2 without its last peer, ourselves only, U1. */
static size_t consist_req_blob(int variant, uint8_t *out)
{
    unsigned u2 = said.u2 ? said.u2 : 7u, u1 = 0, set;
    for (unsigned i = 0; i < said.n1; i++) u1 |= 1u << said.u1[i];
    switch (variant) {
    case 1:
        set = u2;
        for (int v = FZ_SITES - 1; v >= 0; v--)
            if ((unsigned)v != FZ_SELF && (set >> v & 1)) {
                set &= ~(1u << v);
                break;
            }
        break;
    case 2: set = 1u << FZ_SELF; break;
    case 3: set = u1 ? u1 : 7u; break;
    default: set = u2; break;
    }
    size_t n = 0;
    for (uint32_t v = 0; v < FZ_SITES; v++)
        if (set >> v & 1) wire_put_u32(out + 4 * n++, v);
    return 4 * n;
}

/* Site `id`'s signature on the list ids. */
static void sign_u3(uint8_t sig[WIRE_SIG_BYTES], const uint8_t *sk, const uint32_t *ids, size_t n)
{
    size_t len = wire_consist_signed_len(n);
    uint8_t *msg = malloc(len);
    FZ_CHECK(msg != NULL);
    wire_consist_signed(msg, FZ_ROUND, model[mv].hash, ids, n);
    FZ_CHECK(identity_sign(sig, sk, "consistency-v1", msg, len) == 0);
    free(msg);
}

/* UNMASK_REQ: b-shares of U3, s-shares of U2 \ U3, and the U3 members'
 * signatures (ours as the client sent it), per signer subset and tamper. */
static size_t unmask_req_blob(int subset, int tamper, uint8_t *out)
{
    uint8_t *p = out + 4;
    size_t nreq = 0;
    uint32_t last_peer = FZ_SITES, first_peer = FZ_SITES;
    for (uint32_t id = 0; id < FZ_SITES; id++) {
        if (!(said.u2 >> id & 1)) continue;
        if (id != FZ_SELF) {
            last_peer = id;
            if (first_peer == FZ_SITES) first_peer = id;
        }
    }
    for (uint32_t id = 0; id < FZ_SITES; id++) {
        if (!(said.u2 >> id & 1)) continue;
        if ((tamper == 5 && id == FZ_SELF) || (tamper == 6 && id != FZ_SELF)) continue;
        uint32_t kind = said_u3(id) ? 0 : 1;
        if (tamper == 4 && id == last_peer) kind ^= 1;
        wire_put_u32(p, id);
        wire_put_u32(p + 4, kind);
        p += WIRE_REQREC_BYTES;
        nreq++;
    }
    if ((tamper == 3 || tamper == 8) && first_peer < FZ_SITES) {
        wire_put_u32(p, first_peer);
        wire_put_u32(p + 4, (uint32_t)(said_u3(first_peer) ? 0 : 1) ^ (tamper == 3));
        p += WIRE_REQREC_BYTES;
        nreq++;
    }
    if (tamper == 9) { /* a U1 member that sent us no shares, or an outsider */
        uint32_t other = FZ_OUTSIDER;
        for (unsigned i = 0; i < said.n1; i++)
            if (!(said.u2 >> said.u1[i] & 1)) other = said.u1[i];
        wire_put_u32(p, other);
        wire_put_u32(p + 4, 1);
        p += WIRE_REQREC_BYTES;
        nreq++;
    }
    wire_unmaskreq_put_header(out, nreq);
    uint8_t *first_sig = NULL, *last_sig = NULL;
    int tampered = 0;
    for (size_t i = 0; said.signed_u3 && i < said.n3; i++) {
        uint32_t id = said.u3[i];
        if (id >= FZ_SITES || !said_u1(id)) continue;
        if ((subset == 1 && id == FZ_SELF) || (subset == 2 && id != FZ_SELF)) continue;
        wire_put_u32(p, id);
        if (id == FZ_SELF) {
            memcpy(p + 4, said.self_sig, WIRE_SIG_BYTES);
        } else if (tamper == 1 && !tampered) { /* a split view: it signed another U3 */
            uint32_t other[ROSTER_MAX + 1];
            memcpy(other, said.u3, said.n3 * sizeof *other);
            other[said.n3] = FZ_OUTSIDER;
            sign_u3(p + 4, site[id].id_sk, other, said.n3 + (said.u3[said.n3 - 1] < FZ_OUTSIDER));
            tampered = 1;
        } else if (tamper == 7 && !tampered) { /* signed with a key not its own */
            sign_u3(p + 4, site[FZ_SITES - 1 - id].id_sk, said.u3, said.n3);
            tampered = 1;
        } else {
            sign_u3(p + 4, site[id].id_sk, said.u3, said.n3);
        }
        if (!first_sig) first_sig = p;
        last_sig = p;
        p += WIRE_SIGREC_BYTES;
    }
    if (tamper == 2 && last_sig) { /* relabelled: a U1 member outside U3, or an outsider */
        uint32_t other = FZ_OUTSIDER;
        for (unsigned i = 0; i < said.n1; i++)
            if (!said_u3(said.u1[i])) other = said.u1[i];
        wire_put_u32(last_sig, other);
    }
    if (subset == 3 && first_sig) {
        memcpy(p, first_sig, WIRE_SIGREC_BYTES);
        p += WIRE_SIGREC_BYTES;
    }
    return (size_t)(p - out);
}

/* The next valid message for the client's state; 0 if there is none (not in
 * a round). *expect: what the rules say the client answers (0: nothing). */
static int next_message(int variant, int tamper, msg_t *m, msg_type_t *expect)
{
    static uint8_t blob[4 + ROSTER_MAX * 4 + FZ_SITES * (WIRE_KEYREC_MIN + WIRE_BOXREC_BYTES) +
                        4 * FZ_SITES * WIRE_SIGREC_BYTES];
    static uint8_t u1[FZ_SITES * WIRE_U1REC_BYTES];
    uint32_t ids[ROSTER_MAX];
    unsigned n, u2;
    size_t n3;
    const char *why;
    if (!cl.sa) return 0;
    *m = (msg_t){.round = FZ_ROUND, .blob = blob, .present = MSG_HAS_BLOB};
    *expect = 0;
    switch (cl.sa->state) {
    case SA_ADVERTISED:
        m->type = MSG_KEYS;
        m->phase = PHASE_SHARE;
        m->blob_len = keys_blob(variant, blob);
        n = (unsigned)keys_u1(variant, u1);
        m->u1 = u1;
        m->u1_len = n * WIRE_U1REC_BYTES;
        m->degree = n - 1; /* all pairs */
        m->present |= MSG_HAS_U1;
        if (keys_ok(m, ids, &n)) *expect = MSG_SHARES;
        break;
    case SA_SHARED:
        m->type = MSG_SHARES_IN;
        m->phase = PHASE_MASKED;
        m->blob_len = shares_in_blob(variant, blob);
        if (shares_in_ok(m, &u2)) *expect = MSG_READY;
        break;
    case SA_READY:
        *m = (msg_t){.type = MSG_UPLOAD, .round = FZ_ROUND, .phase = PHASE_MASKED};
        *expect = MSG_MASKED;
        break;
    case SA_MASKED:
        m->type = MSG_CONSIST_REQ;
        m->phase = PHASE_CONSIST;
        m->blob_len = consist_req_blob(variant, blob);
        if (consist_ok(m, ids, &n3)) *expect = MSG_CONSIST;
        break;
    case SA_SIGNED:
        m->type = MSG_UNMASK_REQ;
        m->phase = PHASE_UNMASK;
        m->blob_len = unmask_req_blob(variant, tamper, blob);
        if (unmask_ok(m, &why)) *expect = MSG_UNMASK;
        break;
    }
    return 1;
}

static void deliver(const uint8_t *bytes, size_t len)
{
    msg_t m;
    char err[512];
    if (msg_decode(in_dec, bytes, len, &m, err, sizeof err) == 0) {
        cur_in = &m;
        sa_client_on_message(&cl, &m);
        cur_in = NULL;
    }
    check_state();
}

/* A synthetic message: if the rules allow it, the client must answer. */
static void deliver_msg(const msg_t *m, msg_type_t expect)
{
    msg_encode(m, syn_buf);
    sent_types = 0;
    deliver(wire_buf_data(syn_buf), wire_buf_size(syn_buf));
    if (expect && !(sent_types >> expect & 1)) {
        fprintf(stderr, "the client did not answer a valid %s with %s\n", msg_type_name(m->type),
                msg_type_name(expect));
        FZ_CHECK(!"a valid message went unanswered");
    }
}

static void advertise(void)
{
    memset(&said, 0, sizeof said);
    cl.global = model[mv].global;
    memcpy(cl.global_hash, model[mv].hash, sizeof cl.global_hash); /* as client_global_hash does */
    cl.global_hash_stale = 0;
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
        p->n_k = 100 + 50 * (int64_t)u;
    }
    roster.n = FZ_SITES;
    roster.all_have_pk = 1;
    for (unsigned v = 0; v < FZ_MODELS; v++) model_init(v);

    /* The site's state_dir: one temp dir for the whole run, removed at exit
     * (tmpfs when there is one: the record is fsync'd at every release). */
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(state_dir, sizeof state_dir, "%s/medfed-fuzz-client.XXXXXX", tmp ? tmp : "/tmp");
    FZ_CHECK(mkdtemp(state_dir) != NULL);
    snprintf(cconf.site, sizeof cconf.site, "site-b");
    snprintf(cconf.state_dir, sizeof cconf.state_dir, "%s", state_dir);
    atexit(state_dir_remove);
    policy_load();

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
                   .threshold = FZ_T, .clip = 2.0, .scale = 1000.0, .bits = 24, .loss_scale = 100.0,
                   .present = MSG_HAS_SECAGG | MSG_HAS_LOSS};
    cl.train.n = 100;
    cl.round = FZ_ROUND;
    memcpy(cl.work, work0, sizeof work0);
}

/* ---- seeds --------------------------------------------------------------------------------- */

static void run_input(const uint8_t *data, size_t size);

/* Runs the seed so far, then appends the next valid message, encoded. */
static void seed_next_msg(fz_seed_t *s, int variant, int tamper)
{
    msg_t m;
    msg_type_t expect;
    run_input(s->data, s->n);
    FZ_CHECK(next_message(variant, tamper, &m, &expect));
    fz_seed_msg(s, 0, &m);
    sa_client_reset(&cl);
}

/* The fuzzed PLAN parameters (byte 0 bit 6), in the input's layout. */
static void seed_plan(fz_seed_t *s, unsigned t, double clip, double scale, uint32_t n, uint8_t bits)
{
    uint8_t p[2 + 8 + 8 + 4 + 1];
    p[0] = (uint8_t)(t >> 8);
    p[1] = (uint8_t)t;
    memcpy(p + 2, &clip, 8);
    memcpy(p + 10, &scale, 8);
    for (int i = 0; i < 4; i++) p[18 + i] = (uint8_t)(n >> (24 - 8 * i));
    p[22] = bits;
    fz_seed_bytes(s, p, sizeof p);
}

static void write_seeds(void)
{
    char name[64];
    fz_seed_t s;
    /* Each handler's valid message, encoded, after the header's valid prefix;
     * the U1 / U2 variants (bits 2-5) in a few combinations. */
    static const char *const stage[4] = {"keys", "shares-in", "upload", "consist-req"};
    static const uint8_t variants[4] = {0x00, 0x04, 0x38, 0x1c};
    for (int mode = 0; mode < 4; mode++) {
        for (int v = 0; v < 4; v++) {
            s.n = 0;
            fz_seed_byte(&s, (uint8_t)(mode | variants[v]));
            seed_next_msg(&s, mode == 3 ? v : (variants[v] >> (mode == 1 ? 4 : 2)) & 3, 0);
            snprintf(name, sizeof name, "msg-%s-v%d", stage[mode], v);
            fz_seed_write(name, &s);
        }
    }
    /* UNMASK_REQ with its signatures, each signer subset and tamper; the
     * tampering also after a peer dropped before SHARES_IN (U2 < U1). */
    for (int drop = 0; drop < 2; drop++)
        for (int sub = 0; sub < 4; sub++)
            for (int tamper = 0; tamper < 10; tamper += sub ? 9 : 1) {
                if (drop && sub) continue;
                s.n = 0;
                fz_seed_byte(&s, drop ? 0x23 : 3);
                fz_seed_byte(&s, 0x80); /* CONSIST_REQ */
                seed_next_msg(&s, sub, tamper);
                snprintf(name, sizeof name, "msg-unmask-req-%ss%d-t%d", drop ? "drop-" : "", sub,
                         tamper);
                fz_seed_write(name, &s);
            }
    /* Whole rounds with synthetic messages: U3 variants, then UNMASK_REQ
     * signers and tampering, then a second round on the same model (allowed
     * with the first release's U3 only) or on the next model version, for
     * some after a restart. */
    for (int v = 0; v < 16; v++) {
        s.n = 0;
        fz_seed_byte(&s, 0);
        fz_seed_byte(&s, (uint8_t)(0x80 | (v & 3)));        /* KEYS: U1 */
        fz_seed_byte(&s, (uint8_t)(0x80 | ((v >> 2) & 3))); /* SHARES_IN: U2 */
        fz_seed_byte(&s, 0x80);                             /* UPLOAD */
        fz_seed_byte(&s, (uint8_t)(0x80 | ((v >> 3) & 1))); /* CONSIST_REQ: U3 = U2 or less */
        fz_seed_byte(&s, (uint8_t)(0x80 | (v & 3) | ((v >> 1) & 7) << 2)); /* UNMASK_REQ */
        fz_seed_byte(&s, (uint8_t)(0x40 | (v & 3))); /* advertise again */
        for (int i = 0; i < 5; i++) fz_seed_byte(&s, 0x80);
        snprintf(name, sizeof name, "round-v%d", v);
        fz_seed_write(name, &s);
    }
    /* One model version twice: a release with U3 = {0, 1} (site 2 dropped
     * after sharing), then a second round (after a restart for some) asking
     * to sign {0, 1, 2} (refused) or {0, 1} again (allowed). */
    for (int v = 0; v < 4; v++) {
        s.n = 0;
        fz_seed_byte(&s, 0);
        for (int i = 0; i < 3; i++) fz_seed_byte(&s, 0x80);
        fz_seed_byte(&s, 0x81); /* CONSIST_REQ: U2 without its last peer */
        fz_seed_byte(&s, 0x80); /* UNMASK_REQ */
        fz_seed_byte(&s, (uint8_t)(0x40 | (v & 2)));
        for (int i = 0; i < 3; i++) fz_seed_byte(&s, 0x80);
        fz_seed_byte(&s, (uint8_t)(0x80 | (v & 1)));
        fz_seed_byte(&s, 0x80);
        snprintf(name, sizeof name, "round-same-version-%s%s", v & 1 ? "same-u3" : "other-u3",
                 v & 2 ? "-restart" : "");
        fz_seed_write(name, &s);
    }
    /* The strict policy (min_cohort 3, t 3): refused at t = 2, a round at t = 3. */
    for (int t = 2; t <= 3; t++) {
        s.n = 0;
        fz_seed_byte(&s, 0x80 | 0x40);
        seed_plan(&s, (unsigned)t, 2.0, 1000.0, 100, 24);
        fz_seed_bytes(&s, work0, sizeof work0);
        for (int i = 0; i < 5; i++) fz_seed_byte(&s, 0x80);
        snprintf(name, sizeof name, "round-strict-t%d", t);
        fz_seed_write(name, &s);
    }
    /* Rounds under other plan parameters (threshold 3, clip 0.5, scale 2^20,
     * n 7: U1's signed n_k sum to 307, 1.6e8 at full weight) at upload
     * widths: 29 holds the sum; 0 is absent (32); 25 holds our value but
     * not the sum (refused at KEYS); 22 not even ours, 7 and 33 are no
     * width (refused at PLAN). */
    static const uint8_t widths[] = {29, 0, 25, 22, 7, 33};
    for (size_t k = 0; k < sizeof widths; k++) {
        s.n = 0;
        fz_seed_byte(&s, 0x40);
        seed_plan(&s, 3, 0.5, 1048576.0, 7, widths[k]);
        for (int j = 0; j < FZ_NUMEL; j++) {
            float w = (float)j * 0.1f - 0.8f;
            fz_seed_bytes(&s, &w, 4);
        }
        for (int i = 0; i < 5; i++) fz_seed_byte(&s, 0x80);
        snprintf(name, sizeof name, k ? "round-plan-w%u" : "round-plan", widths[k]);
        fz_seed_write(name, &s);
    }
}

/* ---- libFuzzer --------------------------------------------------------------------------------- */

static void run_input(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    uint8_t h0 = 0;
    fz_u8(&in, &h0);
    reset_plan();
    mv = 0;
    for (unsigned v = 0; v < FZ_MODELS; v++) released[v].done = 0;
    memset(&said, 0, sizeof said);
    strict = (h0 & 0x80) != 0;
    policy_reset();
    if (h0 & 0x40) {
        size_t got;
        const uint8_t *p = fz_take(&in, 2 + 8 + 8 + 4 + 1, &got);
        if (got == 23) {
            plan.threshold = (uint32_t)p[0] << 8 | p[1];
            memcpy(&plan.clip, p + 2, 8);
            memcpy(&plan.scale, p + 10, 8);
            cl.train.n = (int64_t)((uint32_t)p[18] << 24 | (uint32_t)p[19] << 16 |
                                   (uint32_t)p[20] << 8 | p[21]);
            plan.bits = p[22];
        }
        const uint8_t *w = fz_take(&in, sizeof work0, &got);
        memcpy(cl.work, w, got);
    }
    fz_rng_reset(FZ_SEED);
    advertise();
    int mode = h0 & 3;
    msg_t m;
    msg_type_t expect;
    for (int i = 1;
         i <= mode && next_message(i == 1 ? (h0 >> 2) & 3 : i == 2 ? (h0 >> 4) & 3 : 0, 0, &m, &expect);
         i++)
        deliver_msg(&m, expect);
    uint8_t ctl;
    for (int i = 0; i < FZ_MAX_MSGS && fz_u8(&in, &ctl) == 0; i++) {
        if (ctl & 0x80) {
            if (next_message(ctl & 3, (ctl >> 2) & 15, &m, &expect)) deliver_msg(&m, expect);
            else advertise();
        } else if (ctl & 0x40) {
            if (ctl & 2) { /* the daemon restarts: only the policy's file remains */
                sa_client_reset(&cl);
                policy_load();
            }
            if ((ctl & 1) && mv + 1 < FZ_MODELS) mv++;
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
