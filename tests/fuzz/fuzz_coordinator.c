/*
 * fuzz_coordinator.c - libFuzzer harness for the coordinator's round state
 * machine: dispatch() (every message handler, plaintext and secure
 * aggregation) and tick() (deadlines, dropouts, phase completion).
 *
 * Like the other harnesses it #includes the code under test to reach its
 * statics: the round engine (coordinator.c) and the secure-aggregation
 * server it drives (secagg_server.c, its own state behind coord_t.sa). The
 * harness names the round by one of 8 states, the coordinator's state with
 * a secure round's TRAINING/AGGREGATING split into the server's phases
 * (fz_state()): WAITING, TRAINING (plaintext UPDATEs, or secure training
 * and ADVERTISE), SHARING, MASKING, CONSIST, UNMASKING, EVALUATING, DONE.
 * The coordinator is built once, without files: a 16-parameter
 * model, a roster of three sites with Ed25519 identity keys, a ROUTER bound
 * to inproc:// with ROUTER_MANDATORY, and one DEALER per site connected under
 * the site's fake peer id. Everything the coordinator sends is received
 * there and must decode (a send to the unknown fourth peer fails with
 * EHOSTUNREACH, as it would for a vanished client).
 *
 * Protocol v2: each site signs its ADVERTISE record (c_pk, s_pk, n_k) with
 * identity_sign "advertise-v2" over wire_adv_signed() and the SHA-256 of the
 * global model, and in the consistency round (CONSIST) signs U3
 * ("consistency-v1" over wire_consist_signed()).
 *
 * Each input first puts the coordinator in a plausible mid-round state, then
 * delivers up to FZ_MAX_MSGS messages:
 *   byte 0  bits 0-2  state: 0 WAITING, 1 TRAINING, 2 SHARING, 3 MASKING,
 *                     4 UNMASKING, 5 EVALUATING, 6 DONE, 7 CONSIST
 *           bit 3     only sites 0 and 1 registered (site 2 may HELLO)
 *           bit 4     10 classes (else 2: EVAL_RESULT carries histograms)
 *           bit 5     upload_slots = 2 (else 1)
 *           bit 6     this is the federation's last round
 *           bit 7     plaintext FedAvg (secure aggregation off)
 *   byte 1  bits 0-5  2 bits per site: how far it got in this phase (preset())
 *           bit 6     max_samples = FZ_CAP: site 2 (n_train 200) signs an n_k
 *                     above it and must be refused
 *           bit 7     site 0 lies: its masked input encodes n_train - 1, its
 *                     ADVERTISE signs n_train (the round must be aborted)
 *   then per message a control byte:
 *           bits 0-1  sender: site 0-2's connection, 3: an unknown peer
 *           bit 2     tick() before (and what it sent read), bit 3: tick() after
 *           bit 4     the phase (and wait) deadline has passed
 *           bit 5     every other site has been silent past the heartbeat timeout
 *           bits 4+5  instead: the sender's connection closed (on_disconnect)
 *           bit 6     fuzzed message: the harness signs for the sender (the
 *                     fuzzer cannot forge Ed25519): an ADVERTISE's record as
 *                     it stands (any n_k), a CONSIST's 64 bytes as the
 *                     signature on the coordinator's U3, or a CONSIST whose
 *                     blob is an id list as the signature on that list (a
 *                     split view); synthetic: the sender reports an ERROR
 *           bit 7     synthetic: the message an honest sender would send now,
 *                     made by the harness (no bytes follow); else a 2-byte
 *                     big-endian length and that many bytes for msg_decode
 *
 * Checks beyond the sanitizers: every outgoing frame decodes and is a type
 * the coordinator may send; the coordinator and the server agree (a secure
 * round's TRAINING is the server's ADVERTISE phase and AGGREGATING one of
 * sharing..unmasking, c->sa_phase is the server's phase, no phase is open
 * outside the round, the server's cohort is the coordinator's and a member
 * is dropped exactly when the coordinator dropped it); the accumulator is
 * one O(model) vector while masked inputs are summed (none otherwise), and
 * changes only when one member's masked input is accepted into U3, which is
 * then numel elements packed at the plan's width (22 bits here) and the
 * 32-bit weight word; at most
 * upload_slots grants are outstanding, and after a tick in MASKING at least
 * one while someone still owes its masked input; an accepted ADVERTISE is
 * signed by the site's roster key for this round and model and its n_k lies
 * in [1, min(n_train at HELLO, max_samples)]; every CONSIST_REQ of a round
 * carries the same U3 (at least t sites, those that masked); an accepted
 * CONSIST is the site's valid signature on that U3; an UNMASK_REQ goes only
 * to a site whose signature is in it, carries at least t valid signatures on
 * the U3 the harness saw (checked against the roster keys, not the
 * coordinator's records), asks b-shares exactly for U3 and at least t of
 * them, and never both kinds for one site; a model update is only applied
 * when the sum's decoded weight (unmasked by the harness with the sites' own
 * secrets) is the sum of U3's signed n_k; and when every message of an input
 * was synthetic (honest clients, any dropouts), a model update applied by
 * unmasking (or plaintext FedAvg) equals the weighted mean of the
 * contributing sites' deltas.
 *
 * Seeds: MEDFED_FUZZ_WRITE_SEEDS=dir fuzz_coordinator writes valid inputs
 * (each phase's message from each site; forged, inflated-n_k and capped
 * ADVERTISEs; bad, borrowed and split-view CONSISTs; full rounds, also with
 * a lying site and under the cap; dropouts in every phase) and exits.
 */
#include "coordinator/coordinator.c"
#include "coordinator/secagg_server.c"

#include <ftw.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz_common.h"

#define FZ_NUMEL 16
#define FZ_SITES 3
#define FZ_ROUND 5u        /* the round of every preset */
#define FZ_T 2u            /* the threshold for a cohort of 3 at the default threat model */
#define FZ_MAX_MSGS 24
#define FZ_STRANGER FZ_SITES
#define FZ_BLOB_MAX (FZ_SITES * (WIRE_BOXREC_BYTES + WIRE_SHAREREC_BYTES)) /* >= any blob here */
#define FZ_CAP 160         /* max_samples under byte 1 bit 6 */

/* The round as the harness names it (the checks compare these): the
 * coordinator's state, a secure round's split by the server's phase. */
typedef enum {
    FZ_WAITING,
    FZ_TRAINING,   /* plaintext: UPDATEs; secure: SA_ADVERTISE */
    FZ_SHARING,    /* SA_SHARING */
    FZ_MASKING,    /* SA_MASKING */
    FZ_CONSIST,    /* SA_CONSIST */
    FZ_UNMASKING,  /* SA_UNMASKING */
    FZ_EVALUATING,
    FZ_DONE
} fz_state_t;
static const char *const fz_state_names[] = {"waiting", "training", "sharing", "masking",
                                             "consistency", "unmasking", "evaluating", "done"};

/* ---- the world: three sites and their secrets ------------------------------------------- */

typedef struct {
    uint8_t id_pk[IDENTITY_PUBLICKEYBYTES], id_sk[IDENTITY_SECRETKEYBYTES];
    uint8_t c_pk[KA_PUBLICKEYBYTES], c_sk[KA_SECRETKEYBYTES];
    uint8_t s_pk[KA_PUBLICKEYBYTES], s_sk[KA_SECRETKEYBYTES];
    uint8_t b[PRG_SEEDBYTES];
    /* Shamir shares (t = FZ_T, x = holder + 1) of b and s_sk, by holder */
    uint8_t sh_b[FZ_SITES][SHAMIR_SHAREBYTES], sh_s[FZ_SITES][SHAMIR_SHAREBYTES];
    float delta[FZ_NUMEL];
    int64_t n_train, n_val;
} fz_site_t;

static const char *const site_name[FZ_SITES] = {"site-a", "site-b", "site-c"};
static fz_site_t site[FZ_SITES];
static peer_id_t peer[FZ_SITES + 1]; /* the sites' connections, then a stranger */
#define FZ_FD(sender) (100 + (sender))  /* their (fake) socket fds */

/* What depends on the round: signed keys, share boxes, pairwise mask seeds. */
typedef struct {
    int valid;
    uint32_t round;
    uint8_t hash[WIRE_HASH_BYTES];                      /* the model the keys are signed for */
    uint8_t adv[FZ_SITES][WIRE_ADVERTISE_BYTES];
    uint8_t box[FZ_SITES][FZ_SITES][WIRE_BOX_BYTES];   /* box[u][v]: u's shares for v */
    uint8_t mask[FZ_SITES][FZ_SITES][KA_SEEDBYTES];    /* s_uv */
} fz_round_keys_t;
static fz_round_keys_t round_keys[2]; /* FZ_ROUND, and the latest other round */

static coord_conf_t conf;
static coord_t g;
static quant_t quant0;
static float global0[FZ_NUMEL];
static void *dealer[FZ_SITES];
static wire_decoder_t *in_dec, *out_dec;
static wire_buf_t *syn_buf;
static int honest; /* every message dispatched in this input was synthetic */
static int liar;   /* byte 1 bit 7: site 0's masked input claims n_train - 1 */

/* The secure-aggregation server's record of the client in slot i (its
 * position in g.clients), or NULL: not a member of the server's cohort. */
static member_t *mem(int i)
{
    int a = member_of(g.sa, i);
    FZ_CHECK(a < g.sa->n);
    return a >= 0 ? &g.sa->m[a] : NULL;
}

/* How far client i got in this secure round (a non-member: 0). */
static int stage(int i)
{
    const member_t *v = mem(i);
    return v ? v->stage : 0;
}

/* The harness's name for the round (the coordinator's state and, in a
 * secure round, the server's phase), checking that the two agree: a secure
 * round's TRAINING is SA_ADVERTISE and AGGREGATING sharing..unmasking. */
static fz_state_t fz_state(void)
{
    int secure = g.conf->secagg;
    switch (g.state) {
    case ST_WAITING: return FZ_WAITING;
    case ST_EVALUATING: return FZ_EVALUATING;
    case ST_DONE: return FZ_DONE;
    case ST_TRAINING:
        FZ_CHECK(!secure || g.sa->phase == SA_ADVERTISE);
        return FZ_TRAINING;
    case ST_AGGREGATING:
        FZ_CHECK(secure);
        switch (g.sa->phase) {
        case SA_SHARING: return FZ_SHARING;
        case SA_MASKING: return FZ_MASKING;
        case SA_CONSIST: return FZ_CONSIST;
        case SA_UNMASKING: return FZ_UNMASKING;
        default: break;
        }
        fprintf(stderr, "coordinator aggregating while the server is %s\n",
                secagg_server_phase_name(g.sa->phase));
        FZ_CHECK(!"AGGREGATING outside the server's sharing..unmasking");
        break;
    }
    FZ_CHECK(!"coordinator state out of range");
    return FZ_DONE;
}

/* The round as the harness saw it go out: the model hash (of g.global when
 * PLAN left, or of the preset's model) and the U3 of its CONSIST_REQs. */
static struct {
    uint32_t round;
    uint8_t hash[WIRE_HASH_BYTES];
    uint32_t u3_round; /* the round u3 belongs to; 0: none seen */
    size_t n3;
    uint32_t u3[FZ_SITES];
} seen;

/* The signed advertise-v2 record of a site: c_pk || s_pk || n_k || sig. */
static void sign_adv(uint8_t adv[WIRE_ADVERTISE_BYTES], int u, uint32_t round,
                     const uint8_t hash[WIRE_HASH_BYTES])
{
    uint8_t msg[WIRE_ADV_SIGNED_BYTES];
    wire_adv_signed(msg, round, (uint32_t)u, hash, adv);
    FZ_CHECK(identity_sign(adv + WIRE_ADV_SIG_OFF, site[u].id_sk, "advertise-v2", msg,
                           sizeof msg) == 0);
}

static int in_ids(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

/* Site u's consistency signature on the list ids. */
static void sign_u3(uint8_t sig[WIRE_SIG_BYTES], int u, uint32_t round,
                    const uint8_t hash[WIRE_HASH_BYTES], const uint32_t *ids, size_t n)
{
    size_t len = wire_consist_signed_len(n);
    uint8_t *msg = malloc(len);
    FZ_CHECK(msg != NULL);
    wire_consist_signed(msg, round, hash, ids, n);
    FZ_CHECK(identity_sign(sig, site[u].id_sk, "consistency-v1", msg, len) == 0);
    free(msg);
}

static int verify_u3(const uint8_t sig[WIRE_SIG_BYTES], int u, uint32_t round,
                     const uint8_t hash[WIRE_HASH_BYTES], const uint32_t *ids, size_t n)
{
    size_t len = wire_consist_signed_len(n);
    uint8_t *msg = malloc(len);
    FZ_CHECK(msg != NULL);
    wire_consist_signed(msg, round, hash, ids, n);
    int ok = identity_verify(sig, site[u].id_pk, "consistency-v1", msg, len) == 0;
    free(msg);
    return ok;
}

/* Keys signed for round and the model seen going out for it. */
static const fz_round_keys_t *keys_for(uint32_t round)
{
    fz_round_keys_t *r = &round_keys[round == FZ_ROUND ? 0 : 1];
    if (r->valid && r->round == round && memcmp(r->hash, seen.hash, WIRE_HASH_BYTES) == 0)
        return r;
    for (int u = 0; u < FZ_SITES; u++) {
        fz_site_t *s = &site[u];
        memcpy(r->adv[u], s->c_pk, 32);
        memcpy(r->adv[u] + 32, s->s_pk, 32);
        wire_put_u64(r->adv[u] + WIRE_ADV_WEIGHT_OFF, (uint64_t)s->n_train);
        sign_adv(r->adv[u], u, round, seen.hash);
        for (int v = 0; v < FZ_SITES; v++) {
            if (v == u) continue;
            uint8_t key[SHAREBOX_KEYBYTES], plain[SHAREBOX_PLAINBYTES];
            FZ_CHECK(ka_derive(key, s->c_sk, s->c_pk, site[v].c_pk, "share", round, (uint32_t)u,
                               (uint32_t)v) == 0);
            memcpy(plain, s->sh_b[v], SHAMIR_SHAREBYTES);
            memcpy(plain + SHAMIR_SHAREBYTES, s->sh_s[v], SHAMIR_SHAREBYTES);
            FZ_CHECK(sharebox_seal(r->box[u][v], plain, key, round, (uint32_t)u, (uint32_t)v) == 0);
            FZ_CHECK(ka_derive(r->mask[u][v], s->s_sk, s->s_pk, site[v].s_pk, "mask", round,
                               (uint32_t)u, (uint32_t)v) == 0);
        }
    }
    r->round = round;
    memcpy(r->hash, seen.hash, WIRE_HASH_BYTES);
    r->valid = 1;
    return r;
}

/* Site u's masked input for the set u2 (bit v: site v in U2), packed in y
 * at q's width as a site sends it; returns its length in bytes. */
static size_t masked_input(int u, unsigned u2, uint32_t round, const quant_t *q,
                           uint32_t y[FZ_NUMEL + ENC_TAIL_WORDS])
{
    const fz_round_keys_t *r = keys_for(round);
    uint32_t dither[FZ_NUMEL];
    crypto_random(dither, sizeof dither);
    secagg_encode(site[u].delta, FZ_NUMEL, site[u].n_train - (liar && u == 0), q, dither, y);
    y[FZ_NUMEL + 1] = secagg_encode_loss(0.25, site[u].n_train, g.sa->loss_scale);
    FZ_CHECK(prg_add(PRG_DEFAULT, site[u].b, y, FZ_NUMEL + ENC_TAIL_WORDS, +1) == 0);
    for (int v = 0; v < FZ_SITES; v++)
        if (v != u && (u2 >> v & 1))
            FZ_CHECK(prg_add(PRG_DEFAULT, r->mask[u][v], y, FZ_NUMEL + ENC_TAIL_WORDS, u < v ? +1 : -1) == 0);
    return enc_pack_masked(y, FZ_NUMEL, q->bits, ENC_TAIL_WORDS);
}

/* Bit i set: registered site i is in the round and got to stage >= `min_stage`. */
static unsigned u_set(int min_stage)
{
    unsigned set = 0;
    for (int i = 0; i < g.n_clients; i++) {
        const client_rec_t *k = &g.clients[i];
        if (k->train != P_IDLE && stage(i) >= min_stage && k->index >= 0 && k->index < FZ_SITES)
            set |= 1u << k->index;
    }
    return set;
}

/* SHARES blob of site u: one box for each other member of u1. */
static size_t shares_blob(int u, unsigned u1, uint32_t round, uint8_t *out)
{
    const fz_round_keys_t *r = keys_for(round);
    size_t off = 0;
    for (int v = 0; v < FZ_SITES; v++) {
        if (v == u || !(u1 >> v & 1)) continue;
        wire_put_u32(out + off, (uint32_t)v);
        memcpy(out + off + 4, r->box[u][v], WIRE_BOX_BYTES);
        off += WIRE_BOXREC_BYTES;
    }
    return off;
}

/* UNMASK blob of site v: b-shares of u3, s-shares of u2 \ u3 (what it was asked). */
static size_t unmask_blob(int v, unsigned u2, unsigned u3, uint8_t *out)
{
    size_t off = 0;
    for (int u = 0; u < FZ_SITES; u++) {
        if (!(u2 >> u & 1)) continue;
        uint32_t kind = (u3 >> u & 1) ? 0 : 1;
        wire_put_u32(out + off, (uint32_t)u);
        wire_put_u32(out + off + 4, kind);
        memcpy(out + off + 8, kind == 0 ? site[u].sh_b[v] : site[u].sh_s[v], SHAMIR_SHAREBYTES);
        off += WIRE_SHAREREC_BYTES;
    }
    return off;
}

/* ---- set-up, once ----------------------------------------------------------------------- */

static void peer_set(peer_id_t *p, const char *name)
{
    memset(p, 0, sizeof *p);
    p->len = strlen(name);
    memcpy(p->data, name, p->len);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void out_dir_remove(void)
{
    nftw(conf.out_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void world_init(void)
{
    fz_crypto_init();
    uint32_t xs[FZ_SITES];
    int64_t weight = 0;
    for (int u = 0; u < FZ_SITES; u++) {
        fz_site_t *s = &site[u];
        FZ_CHECK(identity_keypair(s->id_pk, s->id_sk) == 0);
        FZ_CHECK(ka_keypair(s->c_pk, s->c_sk) == 0);
        FZ_CHECK(ka_keypair(s->s_pk, s->s_sk) == 0);
        crypto_random(s->b, sizeof s->b);
        for (int j = 0; j < FZ_NUMEL; j++)
            s->delta[j] = (float)((((u + 1) * (j + 3)) % 7) - 3) * 0.125f;
        s->n_train = 100 + 50 * u;
        s->n_val = 40 + 10 * u;
        weight += s->n_train;
        xs[u] = (uint32_t)u + 1;
        peer_set(&peer[u], site_name[u]);
        roster_entry_t *e = &g.roster.site[u];
        snprintf(e->name, sizeof e->name, "%s", site_name[u]);
        memcpy(e->pk, s->id_pk, sizeof e->pk);
        e->has_pk = 1;
    }
    peer_set(&peer[FZ_STRANGER], "stranger");
    g.roster.n = FZ_SITES;
    g.roster.all_have_pk = 1;
    g.have_roster = 1;
    for (int u = 0; u < FZ_SITES; u++) {
        uint8_t sb[FZ_SITES][SHAMIR_SHAREBYTES], ss[FZ_SITES][SHAMIR_SHAREBYTES];
        FZ_CHECK(shamir_split(site[u].b, FZ_T, FZ_SITES, xs, sb) == 0);
        FZ_CHECK(shamir_split(site[u].s_sk, FZ_T, FZ_SITES, xs, ss) == 0);
        memcpy(site[u].sh_b, sb, sizeof sb);
        memcpy(site[u].sh_s, ss, sizeof ss);
    }

    coord_conf_defaults(&conf);
    conf.secagg = 1;
    /* finish_round commits to the state directory (with fsync): a temp dir,
     * on tmpfs when there is one, removed at exit. */
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(conf.out_dir, sizeof conf.out_dir, "%s/medfed-fuzz-coord.XXXXXX", tmp ? tmp : "/tmp");
    FZ_CHECK(mkdtemp(conf.out_dir) != NULL);
    atexit(out_dir_remove);
    char err[256];
    unsigned t;
    FZ_CHECK(secagg_threshold(FZ_SITES, conf.dropout, conf.collusion, &t, err, sizeof err) == 0);
    FZ_CHECK(t == FZ_T);
    /* A width that is not a whole number of bytes, with precision enough
     * for the honest-update check (1e-5): 19 + ceil(log2 3) + 1 = 22 bits. */
    conf.upload_bits = 19;
    FZ_CHECK(secagg_quant_params(conf.clip, weight, FZ_SITES,
                                 enc_width((unsigned)conf.upload_bits, FZ_SITES), &quant0, err,
                                 sizeof err) == 0);
    FZ_CHECK(quant0.bits == 22);
    for (int j = 0; j < FZ_NUMEL; j++) global0[j] = 0.25f * (float)j - 1.0f;
    crypto_sha256(seen.hash, global0, sizeof global0);
    keys_for(FZ_ROUND);

    g.conf = &conf;
    rng_seed(&g.rng, 1);
    g.numel = FZ_NUMEL;
    g.global = malloc(sizeof global0);
    /* A schema and rounds/, so that commits (a round's model file, then
     * state.json) succeed as they do in a deployment. */
    g.schema = schema_new();
    const int64_t shape[1] = {FZ_NUMEL};
    FZ_CHECK(g.schema && schema_add(g.schema, "w", 1, shape) == 0);
    char rounds[PATH_MAX + 16];
    snprintf(rounds, sizeof rounds, "%s/rounds", conf.out_dir);
    FZ_CHECK(mkdir(rounds, 0700) == 0);
    g.fedavg = fedavg_new(FZ_NUMEL, &conf.server);
    snprintf(g.arch, sizeof g.arch, "cnn");
    g.in_ch = 1;
    g.height = g.width = 28;
    g.classes = 2;
    g.metrics = fopen("/dev/null", "w");
    g.out = wire_buf_new();
    g.dec = wire_decoder_new();
    in_dec = wire_decoder_new();
    out_dec = wire_decoder_new();
    syn_buf = wire_buf_new();
    FZ_CHECK(g.global && g.fedavg && g.metrics && g.out && g.dec && in_dec && out_dec && syn_buf);
    /* The secure-aggregation server, as load_roster makes it. It stays for
     * every input: the coordinator only uses it while conf.secagg is on. */
    g.sa = secagg_server_new(&conf, FZ_NUMEL, sa_send, &g, err, sizeof err);
    if (!g.sa) fprintf(stderr, "secagg_server_new: %s\n", err);
    FZ_CHECK(g.sa != NULL);
    g.sa_phase = SA_IDLE;

    /* The ROUTER as coord_run sets it up, and a DEALER per site. */
    g.zctx = zmq_ctx_new();
    g.sock = zmq_socket(g.zctx, ZMQ_ROUTER);
    FZ_CHECK(g.zctx && g.sock);
    int mandatory = 1, linger = 0, hwm = 0;
    int64_t maxmsg = FZ_NUMEL * 4 + 65536;
    zmq_setsockopt(g.sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(g.sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    zmq_setsockopt(g.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(g.sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    FZ_CHECK(zmq_bind(g.sock, "inproc://medfed-fuzz-coordinator") == 0);
    for (int u = 0; u < FZ_SITES; u++) {
        dealer[u] = zmq_socket(g.zctx, ZMQ_DEALER);
        FZ_CHECK(dealer[u] != NULL);
        zmq_setsockopt(dealer[u], ZMQ_ROUTING_ID, peer[u].data, peer[u].len);
        zmq_setsockopt(dealer[u], ZMQ_LINGER, &linger, sizeof linger);
        FZ_CHECK(zmq_connect(dealer[u], "inproc://medfed-fuzz-coordinator") == 0);
        FZ_CHECK(zmq_send(dealer[u], "hi", 2, 0) == 2);
    }
    /* Once the ROUTER has read a frame from each, it routes to their ids. */
    for (int u = 0; u < FZ_SITES; u++) {
        wire_frame_t fr;
        FZ_CHECK(transport_recv(g.sock, 1, &fr, 0) == 0);
        transport_frame_close(&fr);
    }
}

/* ---- per input: a plausible state ----------------------------------------------------------- */

static void add_eval(client_rec_t *k)
{
    const fz_site_t *s = &site[k->index];
    g.eval_n += s->n_val;
    g.eval_correct += s->n_val / 2;
    g.eval_loss += 0.5 * (double)s->n_val;
    g.evaluated++;
}

/* Byte 0 bits 0-2 (the committed corpus depends on this order). */
static const fz_state_t preset_state[8] = {
    FZ_WAITING, FZ_TRAINING, FZ_SHARING, FZ_MASKING, FZ_UNMASKING, FZ_EVALUATING, FZ_DONE, FZ_CONSIST,
};

/* The server's cohort for a preset secure round: clients 0..n-1, each its
 * own slot and site id (members in ascending id, as secagg_server_begin
 * sorts them), nothing reached yet. */
static void preset_members(int n, uint32_t round)
{
    secagg_server_t *s = g.sa;
    s->m = calloc((size_t)n, sizeof *s->m);
    FZ_CHECK(s->m != NULL);
    s->n = n;
    s->round = round;
    memcpy(s->model_hash, seen.hash, WIRE_HASH_BYTES);
    s->max_weight = 0;
    for (int a = 0; a < n; a++) {
        member_t *v = &s->m[a];
        const client_rec_t *k = &g.clients[a];
        v->slot = a;
        v->id = (uint32_t)k->index;
        snprintf(v->site, sizeof v->site, "%s", k->site);
        memcpy(v->pk, g.roster.site[k->index].pk, IDENTITY_PUBLICKEYBYTES);
        v->n_train = k->n_train;
        s->max_weight += v->n_train < conf.max_samples ? v->n_train : conf.max_samples;
        s->of_slot[a] = a;
    }
    /* All pairs, as send_keys builds it for a cohort this small (SecAgg+
     * neighbourhoods only start above 16 clients). */
    s->degree = (unsigned)(n > 0 ? n - 1 : 0);
    s->adj = calloc((size_t)n * (size_t)n + 1, 1);
    FZ_CHECK(s->adj != NULL);
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) s->adj[a * n + b] = a != b;
}

static void preset(uint8_t h0, uint8_t h1)
{
    fz_state_t st = preset_state[h0 & 7];
    int nsites = (h0 & 0x08) ? 2 : FZ_SITES;
    int plain = (h0 & 0x80) != 0;
    if (plain && st >= FZ_SHARING && st <= FZ_UNMASKING) st = FZ_TRAINING;
    conf.secagg = !plain;
    conf.upload_slots = (h0 & 0x20) ? 2 : 1;
    conf.rounds = (h0 & 0x40) ? (int)FZ_ROUND : 1000;
    conf.max_samples = (h1 & 0x40) ? FZ_CAP : 10000000;
    liar = (h1 & 0x80) != 0;
    g.target = (uint32_t)conf.rounds;
    g.paused = 0;
    g.disk_error = 0;

    /* the last input's round: share boxes, masked sum, graph, U3, cohort */
    secagg_server_end(g.sa);
    forget_members(g.sa);
    double now = util_now();
    g.state = st == FZ_WAITING ? ST_WAITING
              : st == FZ_TRAINING ? ST_TRAINING
              : st == FZ_EVALUATING ? ST_EVALUATING
              : st == FZ_DONE ? ST_DONE
                              : ST_AGGREGATING;
    g.round = st == FZ_WAITING ? FZ_ROUND - 1 : FZ_ROUND;
    g.version = st >= FZ_EVALUATING ? g.round : g.round - 1;
    /* committed: the previous round, or this one for a secure round in EVAL
     * (its model was committed before EVAL went out) */
    g.committed = !plain && st == FZ_EVALUATING ? g.round : g.round - 1;
    g.committed_round = g.committed;
    g.started_round = g.round;
    g.phase_started = g.round_started = g.waiting_since = now;
    g.bytes_up = g.bytes_down = 0;
    g.train_loss_sum = g.train_s_max = 0;
    g.eval_n = g.eval_correct = 0;
    g.eval_loss = 0;
    memset(g.hist, 0, sizeof g.hist);
    g.evaluated = g.participants = g.survivors = 0;
    g.classes = (h0 & 0x10) ? 10 : 2;
    g.sa->threshold = FZ_T;
    g.sa->quant = quant0;
    g.sa->tail = ENC_TAIL_WORDS; /* a cohort that all speak protocol 3 */
    g.sa->max_weight = 0;
    memcpy(g.global, global0, sizeof global0);
    crypto_sha256(seen.hash, global0, sizeof global0);
    global_changed(&g);
    seen.round = g.round;
    seen.u3_round = 0;
    seen.n3 = 0;
    fedavg_begin(g.fedavg);
    rng_seed(&g.rng, 7);
    g.n_clients = nsites;
    for (int i = 0; i < FZ_SITES; i++) {
        client_rec_t *k = &g.clients[i];
        memset(k, 0, sizeof *k);
        k->id = peer[i];
        snprintf(k->site, sizeof k->site, "%s", site_name[i]);
        k->index = i;
        k->n_train = site[i].n_train;
        k->n_val = site[i].n_val;
        k->last_seen = now;
        k->fd = FZ_FD(i);
        k->live = 1;
        k->has_version = g.version;
    }
    /* A secure round in flight (or evaluated: its stages stay until the
     * next round) has the server's cohort: every registered site. */
    int secure_round = !plain && st >= FZ_TRAINING && st <= FZ_EVALUATING;
    if (secure_round) preset_members(nsites, g.round);

    /* Secure phases: (train, stage) by role. Stage k = got through phase k
     * (1 advertised, 2 shared, 3 masked, 4 signed U3, 5 unmasked); dropped
     * members keep the stage they reached. */
    static const struct {
        part_t train;
        int stage;
    } secure[5][4] = {
        /* TRAINING  */ {{P_PENDING, 0}, {P_PENDING, 1}, {P_DROPPED, 0}, {P_DROPPED, 1}},
        /* SHARING   */ {{P_PENDING, 1}, {P_PENDING, 2}, {P_DROPPED, 1}, {P_DROPPED, 0}},
        /* MASKING   */ {{P_PENDING, 2}, {P_PENDING, 3}, {P_DROPPED, 2}, {P_DROPPED, 1}},
        /* CONSIST   */ {{P_PENDING, 3}, {P_PENDING, 4}, {P_DROPPED, 3}, {P_DROPPED, 2}},
        /* UNMASKING */ {{P_PENDING, 4}, {P_PENDING, 5}, {P_DROPPED, 3}, {P_DROPPED, 2}},
    };
    const fz_round_keys_t *rk = keys_for(FZ_ROUND);
    for (int i = 0; i < nsites; i++) {
        client_rec_t *k = &g.clients[i];
        member_t *v = secure_round ? mem(i) : NULL;
        int role = (h1 >> (2 * i)) & 3;
        switch (st) {
        case FZ_WAITING:
            k->live = role != 3;
            break;
        case FZ_TRAINING:
        case FZ_SHARING:
        case FZ_MASKING:
        case FZ_CONSIST:
        case FZ_UNMASKING:
            if (plain) { /* pending, updated, dropped, not in the cohort */
                static const part_t parts[4] = {P_PENDING, P_DONE, P_DROPPED, P_IDLE};
                char err[256];
                k->train = parts[role];
                if (k->train == P_DONE) {
                    FZ_CHECK(fedavg_add(g.fedavg, (const uint8_t *)site[i].delta,
                                        sizeof site[i].delta, k->n_train, err, sizeof err) == 0);
                    g.train_loss_sum += 0.5 * (double)k->n_train;
                }
            } else {
                FZ_CHECK(v != NULL);
                k->train = secure[st - FZ_TRAINING][role].train;
                v->stage = secure[st - FZ_TRAINING][role].stage;
                v->dropped = k->train == P_DROPPED;
                if (v->stage >= 1) {
                    memcpy(v->adv, rk->adv[i], WIRE_ADVERTISE_BYTES);
                    v->weight = k->n_train;
                }
            }
            break;
        case FZ_EVALUATING: /* evaluation pending, done, dropped; or the site went silent */
            k->train = P_DONE; /* secure: finish_secure marks the survivors done */
            if (v) { /* unmasked: all through, the shares spent */
                v->stage = 5;
                v->ready = v->granted = 1;
                memcpy(v->adv, rk->adv[i], WIRE_ADVERTISE_BYTES);
                v->weight = k->n_train;
            }
            k->eval = role == 0 ? P_PENDING : role == 1 ? P_DONE : role == 2 ? P_DROPPED : P_IDLE;
            k->live = role != 3;
            if (role == 1) add_eval(k);
            g.participants++;
            break;
        default: break;
        }
    }
    if (plain || st < FZ_TRAINING || st > FZ_UNMASKING) { /* no secure phase open */
        g.sa->phase = SA_IDLE;
        g.sa_phase = SA_IDLE;
        return;
    }
    static const sa_phase_t phase_of[] = {
        [FZ_TRAINING] = SA_ADVERTISE, [FZ_SHARING] = SA_SHARING, [FZ_MASKING] = SA_MASKING,
        [FZ_CONSIST] = SA_CONSIST,    [FZ_UNMASKING] = SA_UNMASKING,
    };
    g.sa->phase = g.sa_phase = phase_of[st];
    if (st == FZ_TRAINING) return;

    unsigned u1 = u_set(1), u2 = u_set(2), u3 = u_set(3);
    if (st >= FZ_CONSIST) { /* U3 as request_consistency sent it, and its signers' signatures */
        g.sa->u3 = malloc(FZ_SITES * sizeof *g.sa->u3);
        FZ_CHECK(g.sa->u3 != NULL);
        g.sa->n3 = 0;
        for (int i = 0; i < nsites; i++)
            if (u3 >> i & 1) g.sa->u3[g.sa->n3++] = (uint32_t)i;
        memcpy(seen.u3, g.sa->u3, g.sa->n3 * sizeof *g.sa->u3);
        seen.n3 = g.sa->n3;
        seen.u3_round = g.round;
        for (int i = 0; i < nsites; i++)
            if (stage(i) >= 4)
                sign_u3(mem(i)->consist_sig, i, g.round, seen.hash, g.sa->u3, g.sa->n3);
    }
    for (int i = 0; i < nsites; i++) {
        member_t *v = mem(i);
        uint8_t blob[FZ_BLOB_MAX];
        size_t len = 0;
        if (v->stage >= 5) len = unmask_blob(i, u2, u3, blob);
        else if (v->stage >= 2) len = shares_blob(i, u1, FZ_ROUND, blob);
        else continue;
        v->boxes = malloc(len ? len : 1);
        FZ_CHECK(v->boxes != NULL);
        memcpy(v->boxes, blob, len);
        v->boxes_len = len;
    }
    if (st == FZ_SHARING) return;
    g.sa->acc = calloc(FZ_NUMEL + ENC_TAIL_WORDS, sizeof *g.sa->acc);
    FZ_CHECK(g.sa->acc != NULL);
    for (int i = 0; i < nsites; i++) {
        if (!(u3 >> i & 1)) continue;
        uint32_t y[FZ_NUMEL + ENC_TAIL_WORDS];
        masked_input(i, u2, FZ_ROUND, &g.sa->quant, y);
        enc_unpack_add_masked((const uint8_t *)y, FZ_NUMEL, g.sa->quant.bits, g.sa->tail, g.sa->acc);
        mem(i)->ready = 1;
        mem(i)->granted = 1;
    }
    if (st == FZ_MASKING) grant_uploads(g.sa);
}

/* ---- per message ------------------------------------------------------------------------------ */

/* The message an honest `sender` sends in the coordinator's current state. */
static void drain(void);

static void synthetic(int sender, int alt, msg_t *m)
{
    static uint8_t blob[FZ_BLOB_MAX];
    drain(); /* what went out so far: the model hash and U3 of this round */
    static uint32_t y[FZ_NUMEL + ENC_TAIL_WORDS];
    static uint8_t hist[2 * WIRE_HIST_BINS * 4];
    memset(m, 0, sizeof *m);
    m->round = g.round;
    int u = sender == FZ_STRANGER ? 0 : sender;
    if (sender == FZ_STRANGER && !alt) {
        m->type = MSG_HEARTBEAT; /* refused: it never said HELLO */
        return;
    }
    if (alt && sender != FZ_STRANGER) {
        msg_error(m, g.round, ERR_LOCAL, "training failed (fuzz)");
        return;
    }
    switch (sender == FZ_STRANGER ? FZ_WAITING : fz_state()) {
    case FZ_WAITING:
    case FZ_DONE: /* (or a site's restarted daemon) */
        m->type = MSG_HELLO;
        snprintf(m->site, sizeof m->site, "%s", site_name[u]);
        m->version = WIRE_VERSION;
        m->n_train = site[u].n_train;
        m->n_val = site[u].n_val;
        break;
    case FZ_TRAINING:
        if (!g.conf->secagg) {
            *m = (msg_t){.type = MSG_UPDATE, .round = g.round, .phase = PHASE_TRAIN,
                         .n_samples = site[u].n_train, .loss_sum = 0.5, .train_seconds = 1.0,
                         .vec = (const uint8_t *)site[u].delta, .vec_len = sizeof site[u].delta,
                         .present = MSG_HAS_VEC};
            break;
        }
        memcpy(blob, keys_for(g.round)->adv[u], WIRE_ADVERTISE_BYTES);
        *m = (msg_t){.type = MSG_ADVERTISE, .round = g.round, .phase = PHASE_ADVERTISE,
                     .train_seconds = 1.0, .blob = blob, .blob_len = WIRE_ADVERTISE_BYTES,
                     .present = MSG_HAS_BLOB};
        break;
    case FZ_SHARING:
        *m = (msg_t){.type = MSG_SHARES, .round = g.round, .phase = PHASE_SHARE, .blob = blob,
                     .blob_len = shares_blob(u, u_set(1), g.round, blob), .present = MSG_HAS_BLOB};
        break;
    case FZ_MASKING:
        if (!mem(u) || !mem(u)->ready) { /* an honest client says READY, then waits for UPLOAD */
            *m = (msg_t){.type = MSG_READY, .round = g.round, .phase = PHASE_MASKED};
            break;
        }
        *m = (msg_t){.type = MSG_MASKED, .round = g.round, .phase = PHASE_MASKED,
                     .vec = (const uint8_t *)y, .present = MSG_HAS_VEC};
        m->vec_len = masked_input(u, u_set(2), g.round, &g.sa->quant, y);
        break;
    case FZ_CONSIST: /* it signs the U3 it was sent */
        sign_u3(blob, u, g.round, seen.hash, seen.u3, seen.u3_round == g.round ? seen.n3 : 0);
        *m = (msg_t){.type = MSG_CONSIST, .round = g.round, .phase = PHASE_CONSIST, .blob = blob,
                     .blob_len = WIRE_SIG_BYTES, .present = MSG_HAS_BLOB};
        break;
    case FZ_UNMASKING:
        *m = (msg_t){.type = MSG_UNMASK, .round = g.round, .phase = PHASE_UNMASK, .blob = blob,
                     .blob_len = unmask_blob(u, u_set(2), u_set(3), blob),
                     .present = MSG_HAS_BLOB};
        break;
    case FZ_EVALUATING: {
        int64_t n = site[u].n_val;
        *m = (msg_t){.type = MSG_EVAL_RESULT, .round = g.round, .phase = PHASE_EVAL,
                     .n_samples = n, .correct = n / 2, .loss_sum = 0.5 * (double)n};
        if (g.classes == 2) {
            memset(hist, 0, sizeof hist);
            wire_put_u32(hist + 4 * 100, (uint32_t)(n / 2));
            wire_put_u32(hist + 4 * (WIRE_HIST_BINS + 900), (uint32_t)(n - n / 2));
            m->hist = hist;
            m->hist_len = sizeof hist;
            m->present = MSG_HAS_HIST;
        }
        break;
    }
    }
}

/* What coord_run does with one received frame. */
static void deliver(int sender, const uint8_t *bytes, size_t len, int sign)
{
    const peer_id_t *from = &peer[sender];
    static uint8_t signed_adv[WIRE_ADVERTISE_BYTES + WIRE_CERT_MAX], sig[WIRE_SIG_BYTES];
    msg_t m;
    char err[512];
    g.bytes_up += len;
    if (msg_decode(in_dec, bytes, len, &m, err, sizeof err) < 0) {
        client_rec_t *k = find_by_id(&g, from);
        coord_reply_error(&g, k, from, g.round, ERR_MALFORMED, err);
        if (k && ((in_training(g.state) && k->train == P_PENDING) ||
                  (g.state == ST_EVALUATING && k->eval == P_PENDING)))
            coord_drop(&g, k, "malformed message");
        return;
    }
    client_rec_t *k = sign ? find_by_id(&g, from) : NULL;
    if (k && (k->index < 0 || k->index >= FZ_SITES)) k = NULL;
    if (k && m.type == MSG_ADVERTISE && m.blob_len >= WIRE_ADVERTISE_BYTES &&
        m.blob_len <= sizeof signed_adv) { /* its record as it stands, any n_k */
        memcpy(signed_adv, m.blob, m.blob_len);
        sign_adv(signed_adv, k->index, g.round, seen.hash);
        m.blob = signed_adv;
    }
    if (k && m.type == MSG_CONSIST && m.present & MSG_HAS_BLOB) {
        uint32_t ids[16];
        size_t n;
        if (m.blob_len == WIRE_SIG_BYTES && seen.u3_round == g.round) {
            sign_u3(sig, k->index, g.round, seen.hash, seen.u3, seen.n3);
            m.blob = sig;
        } else if (wire_idlist_parse(m.blob, m.blob_len, 16, ids, &n) == 0) { /* a split view */
            sign_u3(sig, k->index, g.round, seen.hash, ids, n);
            m.blob = sig;
            m.blob_len = WIRE_SIG_BYTES;
        }
    }
    dispatch(&g, from, FZ_FD(sender), &m);
}

/* The weight word of the masked sum, unmasked with the sites' own secrets as
 * the coordinator should (b of U3, the pairwise masks of U2 \ U3 with U3),
 * and *signed_w, the sum of U3's signed n_k. -1 when a member's keys are not
 * the harness's (a fuzzed ADVERTISE the oracle signed). */
static int64_t true_weight(int64_t *signed_w)
{
    const fz_round_keys_t *r = keys_for(g.round);
    uint32_t x[FZ_NUMEL + ENC_TAIL_WORDS];
    memcpy(x, g.sa->acc, sizeof x);
    *signed_w = 0;
    for (int i = 0; i < g.n_clients; i++) {
        const client_rec_t *u = &g.clients[i];
        const member_t *mu = mem(i);
        if (u->train == P_IDLE || !mu || mu->stage < 2) continue;
        if (memcmp(mu->adv, r->adv[u->index], 64) != 0) return -1;
        if (mu->stage >= 3) {
            FZ_CHECK(prg_add(PRG_DEFAULT, site[u->index].b, x, FZ_NUMEL + ENC_TAIL_WORDS, -1) == 0);
            *signed_w += (int64_t)wire_get_u64(mu->adv + WIRE_ADV_WEIGHT_OFF);
            continue;
        }
        for (int j = 0; j < g.n_clients; j++) {
            const client_rec_t *v = &g.clients[j];
            if (v->train == P_IDLE || stage(j) < 3 ||
                !nb(g.sa, member_of(g.sa, i), member_of(g.sa, j)))
                continue;
            FZ_CHECK(prg_add(PRG_DEFAULT, r->mask[v->index][u->index], x, FZ_NUMEL + ENC_TAIL_WORDS,
                             v->index < u->index ? -1 : +1) == 0);
        }
    }
    return (int64_t)x[FZ_NUMEL];
}

/* tick(), checking the model update when it happens: always that its weight
 * is what U3 signed, and with honest clients only its value. */
static void checked_tick(void)
{
    fz_state_t before = fz_state();
    uint32_t version = g.version;
    float global[FZ_NUMEL];
    double want[FZ_NUMEL] = {0}, w = 0;
    memcpy(global, g.global, sizeof global);
    int secure = g.conf->secagg;
    int64_t signed_w = 0, true_w = -1;
    if (secure && before == FZ_UNMASKING && g.sa->acc) true_w = true_weight(&signed_w);
    for (int i = 0; i < g.n_clients; i++) {
        const client_rec_t *k = &g.clients[i];
        int in = secure ? (k->train != P_IDLE && stage(i) >= 3) : k->train == P_DONE;
        if (!in) continue;
        const fz_site_t *s = &site[k->index];
        for (int j = 0; j < FZ_NUMEL; j++) want[j] += (double)s->n_train * s->delta[j];
        w += (double)s->n_train;
    }
    tick(&g);
    if (before == FZ_MASKING && fz_state() == FZ_MASKING) {
        int owed = 0, granted = 0;
        for (int i = 0; i < g.n_clients; i++) {
            const client_rec_t *k = &g.clients[i];
            const member_t *v = mem(i);
            if (k->train != P_PENDING || !v || v->stage != 2 || !v->ready) continue;
            owed++;
            granted += v->granted;
        }
        /* a READY client waiting while nobody may upload: the phase would stall */
        FZ_CHECK(owed == 0 || granted > 0);
    }
    if (g.version == version) return;
    FZ_CHECK(before == (secure ? FZ_UNMASKING : FZ_TRAINING));
    if (secure && true_w >= 0 && true_w != signed_w) {
        fprintf(stderr, "decoded weight %lld, U3 signed %lld\n", (long long)true_w,
                (long long)signed_w);
        FZ_CHECK(!"a round whose decoded weight is not the signed sum was applied");
    }
    if (!honest) return;
    FZ_CHECK(w > 0);
    for (int j = 0; j < FZ_NUMEL; j++) {
        double expect = (double)global[j] + want[j] / w;
        if (fabs((double)g.global[j] - expect) > 1e-5) {
            fprintf(stderr, "model update %d: %.9g, expected %.9g (from %.9g)\n", j,
                    (double)g.global[j], expect, (double)global[j]);
            FZ_CHECK(!"aggregate differs from the weighted mean of the honest updates");
        }
    }
}

static void check_state(void)
{
    FZ_CHECK(g.state >= ST_WAITING && g.state <= ST_DONE);
    FZ_CHECK(g.n_clients >= 0 && g.n_clients <= FZ_SITES);
    fz_state_t st = fz_state(); /* the coordinator's state agrees with the server's phase */
    int secure = g.conf->secagg;
    if (secure) {
        /* the phase whose deadline the coordinator keeps is the server's, and
         * no secure phase stays open once the coordinator left the round */
        FZ_CHECK(g.sa_phase == g.sa->phase);
        if (!in_training(g.state)) FZ_CHECK(g.sa->phase == SA_IDLE);
    }
    /* one O(model) accumulator while masked inputs are summed, none otherwise */
    if (secure && st >= FZ_MASKING && st <= FZ_UNMASKING) FZ_CHECK(g.sa->acc != NULL);
    if (st < FZ_MASKING || st > FZ_UNMASKING) FZ_CHECK(g.sa->acc == NULL);
    /* the server's cohort: distinct slots, ascending ids, of_slot its inverse */
    FZ_CHECK(g.sa->n >= 0 && g.sa->n <= FZ_SITES);
    for (int a = 0; a < g.sa->n; a++) {
        const member_t *v = &g.sa->m[a];
        FZ_CHECK(v->slot >= 0 && v->slot < FZ_SITES && g.sa->of_slot[v->slot] == a);
        FZ_CHECK(a == 0 || g.sa->m[a - 1].id < v->id);
        FZ_CHECK(v->stage >= 0 && v->stage <= 5);
    }
    int active = 0;
    for (int i = 0; i < g.n_clients; i++) {
        const client_rec_t *k = &g.clients[i];
        const member_t *v = mem(i);
        FZ_CHECK(k->index >= 0 && k->index < FZ_SITES);
        FZ_CHECK(stage(i) >= 0 && stage(i) <= 5);
        active += k->train == P_PENDING && v && v->stage == 2 && v->granted;
        /* in a secure round the server's cohort is the coordinator's, and a
         * member is out of it exactly when the coordinator dropped it */
        if (secure && in_training(g.state)) {
            FZ_CHECK((v != NULL) == (k->train != P_IDLE));
            FZ_CHECK(!v || v->dropped == (k->train == P_DROPPED));
            FZ_CHECK(!v || v->id == (uint32_t)k->index);
        }
    }
    if (st == FZ_MASKING) FZ_CHECK(active <= g.conf->upload_slots);
}

/* What a dispatch accepted: an ADVERTISE signed by the site's roster key for
 * this round and model with n_k in [1, min(n_train, max_samples)], n_train
 * as the round began (the member's, not a later HELLO's); a
 * CONSIST that is the site's valid signature on the U3 it was sent. */
static void check_accepted(const int *stage_before, uint32_t round_before)
{
    if (!g.conf->secagg || g.round != round_before) return;
    for (int i = 0; i < g.n_clients; i++) {
        const client_rec_t *k = &g.clients[i];
        const member_t *v = mem(i);
        if (!v) continue; /* a non-member's stage is 0 */
        if (v->stage >= 1 && stage_before[i] < 1) {
            uint8_t msg[WIRE_ADV_SIGNED_BYTES];
            wire_adv_signed(msg, g.round, (uint32_t)k->index, seen.hash, v->adv);
            FZ_CHECK(identity_verify(v->adv + WIRE_ADV_SIG_OFF, site[k->index].id_pk,
                                     "advertise-v2", msg, sizeof msg) == 0);
            uint64_t n_k = wire_get_u64(v->adv + WIRE_ADV_WEIGHT_OFF);
            FZ_CHECK(v->weight >= 0 && (uint64_t)v->weight == n_k);
            /* against the n_train the round began with (the width was sized
             * for it): a HELLO since then does not move the bound */
            FZ_CHECK(n_k >= 1 && n_k <= (uint64_t)v->n_train && n_k <= (uint64_t)conf.max_samples);
        }
        if (v->stage >= 4 && stage_before[i] < 4) {
            FZ_CHECK(seen.u3_round == g.round);
            FZ_CHECK(verify_u3(v->consist_sig, k->index, g.round, seen.hash, seen.u3, seen.n3));
        }
    }
}

/* An accepted masked input is FZ_NUMEL elements at the plan's 22-bit width
 * and the 32-bit tail words (weight, weighted loss). */
static void check_masked_len(const uint8_t *bytes, size_t len)
{
    static wire_decoder_t *d;
    if (!d) FZ_CHECK((d = wire_decoder_new()) != NULL);
    msg_t m;
    char err[512];
    FZ_CHECK(msg_decode(d, bytes, len, &m, err, sizeof err) == 0 && m.type == MSG_MASKED);
    FZ_CHECK(m.vec_len == (FZ_NUMEL * 22 + 7) / 8 + 4 * ENC_TAIL_WORDS);
}

/* deliver(), checking that each masked input is added to the sum once: the
 * sum changes only when one member's MASKED is accepted (it enters U3). */
static void checked_deliver(int sender, const uint8_t *bytes, size_t len, int sign)
{
    uint32_t acc_before[FZ_NUMEL + ENC_TAIL_WORDS];
    int stage_before[FZ_SITES] = {0};
    const uint32_t *acc = g.sa->acc;
    uint32_t round_before = g.round;
    sa_phase_t phase_before = g.sa->phase;
    if (acc) memcpy(acc_before, acc, sizeof acc_before);
    for (int i = 0; i < g.n_clients; i++) stage_before[i] = stage(i);
    deliver(sender, bytes, len, sign);
    for (int i = 0; i < g.n_clients && i < FZ_SITES; i++)
        if (stage_before[i] < 3 && stage(i) >= 3 && g.round == round_before) check_masked_len(bytes, len);
    if (!acc || g.sa->acc != acc || g.round != round_before || g.sa->phase != phase_before ||
        memcmp(acc_before, acc, sizeof acc_before) == 0)
        return;
    int entered = 0;
    for (int i = 0; i < g.n_clients && i < FZ_SITES; i++)
        entered += stage_before[i] < 3 && stage(i) >= 3;
    if (entered != 1) {
        fprintf(stderr, "masked sum changed by %s from sender %d; %d members entered U3\n",
                sign ? "a signed message" : "a message", sender, entered);
        FZ_CHECK(!"the masked sum changed without exactly one masked input accepted");
    }
}

static void step(uint8_t ctl, fz_in_t *in)
{
    int sender = ctl & 3;
    double now = util_now();
    int stage_before[FZ_SITES] = {0};
    uint32_t round_before = g.round;
    for (int i = 0; i < g.n_clients; i++) stage_before[i] = stage(i);
    if ((ctl & 0x30) == 0x30) {
        on_disconnect(&g, FZ_FD(sender));
    } else if (ctl & 0x10) {
        g.phase_started = now - conf.phase_timeout - 1;
        g.waiting_since = now - conf.wait_timeout - 1;
    } else if (ctl & 0x20) {
        for (int i = 0; i < g.n_clients; i++)
            if (sender == FZ_STRANGER || g.clients[i].id.len != peer[sender].len ||
                memcmp(g.clients[i].id.data, peer[sender].data, peer[sender].len) != 0)
                g.clients[i].last_seen = now - conf.heartbeat_timeout - 1;
    }
    if (ctl & 0x04) {
        checked_tick();
        drain(); /* what the tick sent (a CONSIST_REQ: the U3 a signed reply may name) */
    }
    if (ctl & 0x80) {
        msg_t m;
        synthetic(sender, (ctl & 0x40) != 0, &m);
        msg_encode(&m, syn_buf);
        checked_deliver(sender, wire_buf_data(syn_buf), wire_buf_size(syn_buf), 0);
    } else {
        size_t len;
        const uint8_t *bytes = fz_frame(in, &len);
        if (!bytes) return;
        char err[512];
        msg_t probe;
        if (msg_decode(out_dec, bytes, len, &probe, err, sizeof err) == 0) honest = 0;
        checked_deliver(sender, bytes, len, (ctl & 0x40) != 0);
    }
    check_accepted(stage_before, round_before);
    check_state();
    if (ctl & 0x08) checked_tick();
    check_state();
    drain();
}

/* A secure-aggregation request the coordinator sent to site `to`. */
static void check_out(int to, const msg_t *m)
{
    uint32_t ids[FZ_SITES + 1];
    size_t n = 0;
    switch (m->type) {
    case MSG_PLAN: /* a round starts: the model its sites sign */
        if (m->round != seen.round) {
            seen.round = m->round;
            crypto_sha256(seen.hash, g.global, sizeof global0);
            seen.u3_round = 0;
        }
        break;
    case MSG_CONSIST_REQ: /* the same U3 to every member, at least t, the recipient in it */
        FZ_CHECK(wire_idlist_parse(m->blob, m->blob_len, FZ_SITES, ids, &n) == 0);
        FZ_CHECK(n >= FZ_T && n >= g.sa->threshold);
        FZ_CHECK(in_ids(ids, n, (uint32_t)to));
        if (seen.u3_round == m->round) {
            FZ_CHECK(n == seen.n3 && memcmp(ids, seen.u3, n * sizeof *ids) == 0);
        } else {
            memcpy(seen.u3, ids, n * sizeof *ids);
            seen.n3 = n;
            seen.u3_round = m->round;
        }
        break;
    case MSG_UNMASK_REQ: {
        /* only after t sites signed the U3 the harness saw, the recipient among them */
        wire_unmaskreq_t r;
        FZ_CHECK(seen.u3_round == m->round);
        FZ_CHECK(wire_unmaskreq_parse(m->blob, m->blob_len, &r) == 0);
        unsigned valid = 0, signers = 0;
        for (size_t i = 0; i < r.nsig; i++) {
            const uint8_t *rec = r.sigs + i * WIRE_SIGREC_BYTES;
            uint32_t id = wire_get_u32(rec);
            if (id >= FZ_SITES || !in_ids(seen.u3, seen.n3, id) || (signers >> id & 1)) continue;
            if (!verify_u3(rec + 4, (int)id, m->round, seen.hash, seen.u3, seen.n3)) continue;
            signers |= 1u << id;
            valid++;
        }
        if (valid < FZ_T || valid < g.sa->threshold || !(signers >> to & 1)) {
            fprintf(stderr, "UNMASK_REQ to site %d with %u valid U3 signatures (t = %u)\n", to,
                    valid, g.sa->threshold);
            FZ_CHECK(!"an unmask request without t signatures on U3");
        }
        /* b-shares exactly for U3 (at least t of them), s-shares outside it, never both */
        unsigned asked = 0, survivors = 0;
        for (size_t i = 0; i < r.nreq; i++) {
            uint32_t id = wire_get_u32(r.reqs + i * WIRE_REQREC_BYTES);
            uint32_t kind = wire_get_u32(r.reqs + i * WIRE_REQREC_BYTES + 4);
            FZ_CHECK(id < FZ_SITES && !(asked >> id & 1));
            FZ_CHECK(kind == (in_ids(seen.u3, seen.n3, id) ? 0u : 1u));
            asked |= 1u << id;
            survivors += kind == 0;
        }
        FZ_CHECK(survivors >= FZ_T && (asked >> to & 1));
        break;
    }
    default: break;
    }
}

/* Everything the coordinator sent must decode, and be a coordinator's message. */
static void drain(void)
{
    for (int u = 0; u < FZ_SITES; u++) {
        for (;;) {
            zmq_msg_t fr;
            zmq_msg_init(&fr);
            if (zmq_msg_recv(&fr, dealer[u], ZMQ_DONTWAIT) < 0) {
                int e = errno;
                zmq_msg_close(&fr);
                if (e == EINTR) continue; /* libFuzzer's timer (-timeout) */
                if (e != EAGAIN) fprintf(stderr, "zmq_msg_recv: %s\n", zmq_strerror(e));
                FZ_CHECK(e == EAGAIN);
                break;
            }
            msg_t m;
            char err[512];
            if (msg_decode(out_dec, zmq_msg_data(&fr), zmq_msg_size(&fr), &m, err, sizeof err) < 0) {
                fprintf(stderr, "coordinator sent a frame that does not decode: %s\n", err);
                FZ_CHECK(!"outgoing message refused by msg_decode");
            }
            FZ_CHECK(m.type != MSG_HELLO && m.type != MSG_HEARTBEAT && m.type != MSG_UPDATE &&
                     m.type != MSG_EVAL_RESULT && m.type != MSG_ADVERTISE &&
                     m.type != MSG_SHARES && m.type != MSG_READY && m.type != MSG_MASKED &&
                     m.type != MSG_CONSIST && m.type != MSG_UNMASK);
            check_out(u, &m);
            zmq_msg_close(&fr);
        }
    }
}

/* ---- seeds -------------------------------------------------------------------------------------- */

/* Synthetic messages (ctl bit 7), then each state's messages as bytes. */
static void write_seeds(void)
{
    char name[64];
    fz_seed_t s;
    /* One message of each phase from each site, encoded: mutations start here. */
    for (int st = 0; st < 8; st++) {
        for (int plain = 0; plain < 2; plain++) {
            if (plain && ((st >= 2 && st <= 4) || st == 7)) continue;
            uint8_t h0 = (uint8_t)(st | (plain ? 0x80 : 0));
            for (int u = 0; u < FZ_SITES; u++) {
                fz_rng_reset(1);
                preset(h0, 0);
                msg_t m;
                synthetic(u, 0, &m);
                s.n = 0;
                fz_seed_byte(&s, h0);
                fz_seed_byte(&s, 0);
                fz_seed_msg(&s, (uint8_t)(u | 0x08), &m);
                snprintf(name, sizeof name, "msg-%s%s-%s", plain ? "plain-" : "",
                         fz_state_names[preset_state[st]], site_name[u]);
                fz_seed_write(name, &s);
                drain();
            }
        }
    }
    /* ADVERTISE: forged (bad signature), and signed by the oracle with n_k as
     * HELLO said, one above it, 0, and one above max_samples (byte 1 bit 6). */
    static const struct {
        const char *name;
        int sender, sign;
        int64_t n_k;
        uint8_t h1;
    } adv[] = {
        {"advertise-forged", 0, 0, 100, 0},        {"advertise-oracle-signed", 0, 1, 100, 0},
        {"advertise-nk-above-hello", 0, 1, 101, 0}, {"advertise-nk-zero", 0, 1, 0, 0},
        {"advertise-nk-above-cap", 2, 1, FZ_CAP + 1, 0x40},
    };
    for (size_t i = 0; i < sizeof adv / sizeof adv[0]; i++) {
        fz_rng_reset(1);
        preset(1, adv[i].h1);
        msg_t m;
        synthetic(adv[i].sender, 0, &m);
        uint8_t blob[WIRE_ADVERTISE_BYTES];
        memcpy(blob, m.blob, sizeof blob);
        if (adv[i].sign) wire_put_u64(blob + WIRE_ADV_WEIGHT_OFF, (uint64_t)adv[i].n_k);
        else blob[0] ^= 1;
        m.blob = blob;
        s.n = 0;
        fz_seed_byte(&s, 1);
        fz_seed_byte(&s, adv[i].h1);
        fz_seed_msg(&s, (uint8_t)(adv[i].sender | 0x08 | (adv[i].sign ? 0x40 : 0)), &m);
        fz_seed_write(adv[i].name, &s);
        drain();
    }
    /* MASKED of another length than the plan's width gives (the 32-bit
     * length, a byte short, a byte long) after site 0's READY:
     * refused, never summed. */
    static const size_t masked_len[] = {(FZ_NUMEL + ENC_TAIL_WORDS) * 4, (FZ_NUMEL * 22 + 7) / 8 + 7,
                                        (FZ_NUMEL * 22 + 7) / 8 + 9};
    for (size_t i = 0; i < sizeof masked_len / sizeof masked_len[0]; i++) {
        static uint8_t vec[(FZ_NUMEL + ENC_TAIL_WORDS) * 4];
        memset(vec, 0x5a, sizeof vec);
        fz_rng_reset(1);
        preset(3, 0);
        msg_t m = {.type = MSG_MASKED, .round = g.round, .phase = PHASE_MASKED, .vec = vec,
                   .vec_len = masked_len[i], .present = MSG_HAS_VEC};
        s.n = 0;
        fz_seed_byte(&s, 3);
        fz_seed_byte(&s, 0);
        fz_seed_byte(&s, 0x80); /* site 0's READY: its upload is granted */
        fz_seed_msg(&s, 0x08, &m);
        snprintf(name, sizeof name, "masked-length-%zu", masked_len[i]);
        fz_seed_write(name, &s);
        drain();
    }
    /* CONSIST: a bad signature, another site's signature, and (oracle) a
     * signature on another U3 than the coordinator's. */
    for (int v = 0; v < 3; v++) {
        fz_rng_reset(1);
        preset(7, 0);
        msg_t m;
        synthetic(v == 1 ? 1 : 0, 0, &m);
        uint8_t blob[WIRE_SIG_BYTES], ids[8];
        memcpy(blob, m.blob, sizeof blob);
        if (v == 0) blob[5] ^= 0x20;
        m.blob = blob;
        if (v == 2) {
            wire_put_u32(ids, 0);
            wire_put_u32(ids + 4, 1);
            m.blob = ids;
            m.blob_len = sizeof ids;
        }
        s.n = 0;
        fz_seed_byte(&s, 7);
        fz_seed_byte(&s, 0);
        fz_seed_msg(&s, (uint8_t)(0x08 | (v == 2 ? 0x40 : 0)), &m);
        static const char *const names[3] = {"consist-bad-signature", "consist-other-site",
                                             "consist-split-view"};
        fz_seed_write(names[v], &s);
        drain();
    }
    /* Whole rounds from WAITING: tick, then every phase's messages from all
     * three (ADVERTISE, SHARES, READY, MASKED, CONSIST, UNMASK, EVAL_RESULT),
     * a tick after each phase; the same with site 0 lying about its weight in
     * its masked input, and with max_samples below two sites' n_k. */
    static const struct {
        const char *name;
        uint8_t h0, h1;
    } rounds[] = {
        {"round-secure", 0, 0}, {"round-plain", 0x80, 0}, {"round-liar", 0, 0x80},
        {"round-cap", 0, 0x40},
    };
    for (size_t i = 0; i < sizeof rounds / sizeof rounds[0]; i++) {
        s.n = 0;
        fz_seed_byte(&s, rounds[i].h0);
        fz_seed_byte(&s, rounds[i].h1);
        fz_seed_byte(&s, 0x80 | 0x08 | FZ_STRANGER); /* tick: start_round */
        int phases = rounds[i].h0 & 0x80 ? 2 : 7;
        for (int p = 0; p < phases; p++)
            for (int u = 0; u < FZ_SITES; u++)
                fz_seed_byte(&s, (uint8_t)(0x80 | u | (u == FZ_SITES - 1 ? 0x08 : 0)));
        fz_seed_byte(&s, 0x80 | 0x08 | FZ_STRANGER); /* tick: the next round */
        fz_seed_write(rounds[i].name, &s);
    }
    /* Dropouts: site 2 fails (ERROR) in one secure phase; the others finish the round. */
    for (int drop = 1; drop <= 6; drop++) {
        s.n = 0;
        fz_seed_byte(&s, 0);
        fz_seed_byte(&s, 0);
        fz_seed_byte(&s, 0x80 | 0x08 | FZ_STRANGER);
        for (int p = 1; p <= 7; p++) {
            int last = p > drop ? 1 : 2;
            for (int u = 0; u <= last; u++)
                fz_seed_byte(&s, (uint8_t)(0x80 | u | (u == last ? 0x08 : 0) |
                                           (u == 2 && p == drop ? 0x40 : 0)));
        }
        snprintf(name, sizeof name, "dropout-phase%d", drop);
        fz_seed_write(name, &s);
    }
    /* Presets in CONSIST and UNMASKING: signers, dropped after masking or after
     * sharing; each site answers, then a tick. */
    static const uint8_t roles[] = {0x30, 0x20, 0x04, 0x00, 0x10};
    for (int st = 4; st <= 7; st += 3)
        for (size_t i = 0; i < sizeof roles; i++) {
            s.n = 0;
            fz_seed_byte(&s, (uint8_t)st);
            fz_seed_byte(&s, roles[i]);
            for (int u = 0; u < FZ_SITES; u++) fz_seed_byte(&s, (uint8_t)(0x80 | u));
            fz_seed_byte(&s, 0x80 | 0x08 | FZ_STRANGER);
            if (st == 7) { /* then the unmasking */
                for (int u = 0; u < FZ_SITES; u++) fz_seed_byte(&s, (uint8_t)(0x80 | u));
                fz_seed_byte(&s, 0x80 | 0x08 | FZ_STRANGER);
            }
            snprintf(name, sizeof name, "%s-roles-%02x", st == 4 ? "unmask" : "consist", roles[i]);
            fz_seed_write(name, &s);
        }
    /* Deadline and heartbeat paths. */
    for (int st = 0; st < 8; st++) {
        s.n = 0;
        fz_seed_byte(&s, (uint8_t)st);
        fz_seed_byte(&s, 0);
        fz_seed_byte(&s, 0x80 | 0x10 | 0x08 | 0);
        fz_seed_byte(&s, 0x80 | 0x20 | 0x08 | 1);
        snprintf(name, sizeof name, "deadline-%s", fz_state_names[preset_state[st]]);
        fz_seed_write(name, &s);
    }
}

/* ---- libFuzzer ------------------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    world_init();
    if (fz_seed_dir()) {
        write_seeds();
        drain();
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    uint8_t h0 = 0, h1 = 0;
    fz_u8(&in, &h0);
    fz_u8(&in, &h1);
    fz_rng_reset(1);
    preset(h0, h1);
    check_state();
    honest = 1;
    uint8_t ctl;
    for (int i = 0; i < FZ_MAX_MSGS && fz_u8(&in, &ctl) == 0; i++) step(ctl, &in);
    drain();
    return 0;
}
