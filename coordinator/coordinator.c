/*
 * coordinator.c - the round state machine.
 *
 * States:  WAITING  -> TRAINING  -> EVALUATING  -> (next round) ... -> DONE
 *
 * The protocol in one table (state, event -> action -> next state):
 *
 *   any         HELLO              register / refresh the site, WELCOME      same
 *   any         HEARTBEAT          mark the site alive                        same
 *   WAITING     tick, enough live  start_round: PLAN to the cohort            TRAINING
 *   TRAINING    UPDATE             on_update: check, add to the FedAvg sum    TRAINING
 *   TRAINING    ERROR from cohort  on_client_error: drop it from the round    TRAINING
 *   TRAINING    tick               silent / late cohort members dropped       TRAINING
 *   TRAINING    all answered       finish_training: FedAvg, EVAL to all live  EVALUATING
 *               (too few updates:  abort the round, model unchanged)          WAITING
 *   EVALUATING  EVAL_RESULT        on_eval_result: pool loss/accuracy/AUC     EVALUATING
 *   EVALUATING  tick               silent / late evaluators dropped           EVALUATING
 *   EVALUATING  all answered       finish_round: metrics, checkpoint          WAITING/DONE
 *   any         anything else      ERROR "unexpected" to the sender           same
 *
 * A bad message from one site costs that site its place in the round and an
 * ERROR reply; it never stops the round for the others.
 */
#include "coordinator/coordinator.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "aggregation/metrics.h"
#include "common/rng.h"
#include "common/util.h"
#include "model/safetensors.h"
#include "proto/transport.h"

volatile sig_atomic_t coord_stop = 0;

#define NO_VERSION UINT32_MAX

typedef enum { ST_WAITING, ST_TRAINING, ST_EVALUATING, ST_DONE } coord_state_t;
static const char *const state_names[] = {"waiting", "training", "evaluating", "done"};

/* Where one client stands in the current phase. */
typedef enum { P_IDLE, P_PENDING, P_DONE, P_DROPPED } part_t;

typedef struct {
    peer_id_t id;
    char site[WIRE_SITE_MAX];
    int index;             /* roster position, or registration order */
    int64_t n_train, n_val;
    double last_seen;
    int live;
    uint32_t has_version;  /* global model version this client holds */
    part_t train, eval;
} client_rec_t;

typedef struct {
    const coord_conf_t *conf;
    void *zctx, *sock;
    wire_buf_t *out;
    wire_decoder_t *dec;
    rng_t rng;

    /* the model */
    schema_t *schema;
    st_meta_t meta[ST_META_MAX];
    size_t n_meta;
    float *global;
    size_t numel;
    uint32_t version;      /* rounds applied to global */
    char arch[WIRE_ARCH_MAX];
    uint32_t in_ch, height, width, classes;
    fedavg_t *fedavg;

    /* registry */
    client_rec_t clients[COORD_MAX_CLIENTS];
    int n_clients;
    char roster[COORD_MAX_CLIENTS][WIRE_SITE_MAX];
    int n_roster;

    /* the round */
    coord_state_t state;
    uint32_t round;
    double phase_started, round_started, waiting_since;
    uint64_t bytes_up, bytes_down;
    double train_loss_sum, train_s_max;
    int64_t eval_n, eval_correct;
    double eval_loss;
    uint64_t hist[2 * WIRE_HIST_BINS];
    int evaluated;
    FILE *metrics;
} coord_t;

/* ---- sending ----------------------------------------------------------------- */

static void send_to(coord_t *c, client_rec_t *k, const peer_id_t *id, const msg_t *m)
{
    long long n = transport_send(c->sock, id ? id : &k->id, m, c->out, 1);
    if (n < 0) {
        log_warn("site=%s send %s failed: %s", k ? k->site : "?", msg_type_name(m->type),
                 zmq_strerror(errno));
        return;
    }
    c->bytes_down += (uint64_t)n;
}

static void reply_error(coord_t *c, client_rec_t *k, const peer_id_t *id, uint32_t round,
                        msg_error_t code, const char *why)
{
    msg_t e;
    msg_error(&e, round, code, "%s", why);
    send_to(c, k, id, &e);
}

/* Fills the model spec shared by PLAN and EVAL; the vector rides along only
 * when the client does not already hold this version. */
static void fill_spec(coord_t *c, client_rec_t *k, msg_t *m)
{
    util_strlcpy(m->arch, c->arch, sizeof m->arch);
    m->in_channels = c->in_ch;
    m->height = c->height;
    m->width = c->width;
    m->classes = c->classes;
    m->numel = c->numel;
    m->model_version = c->version;
    if (k->has_version != c->version) {
        m->vec = (const uint8_t *)c->global;
        m->vec_len = c->numel * 4;
        m->present |= MSG_HAS_VEC;
        k->has_version = c->version;
    }
}

/* ---- registry ------------------------------------------------------------------ */

static client_rec_t *find_by_id(coord_t *c, const peer_id_t *id)
{
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].id.len == id->len && memcmp(c->clients[i].id.data, id->data, id->len) == 0)
            return &c->clients[i];
    return NULL;
}

static client_rec_t *find_by_site(coord_t *c, const char *site)
{
    for (int i = 0; i < c->n_clients; i++)
        if (strcmp(c->clients[i].site, site) == 0) return &c->clients[i];
    return NULL;
}

static int live_count(const coord_t *c)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++) n += c->clients[i].live;
    return n;
}

static void drop(coord_t *c, client_rec_t *k, const char *why)
{
    if (c->state == ST_TRAINING && k->train == P_PENDING) k->train = P_DROPPED;
    if (c->state == ST_EVALUATING && k->eval == P_PENDING) k->eval = P_DROPPED;
    log_warn("round=%u phase=%s client=%s event=dropped reason=\"%s\"", c->round,
             state_names[c->state], k->site, why);
}

static void on_hello(coord_t *c, const peer_id_t *from, const msg_t *m)
{
    char why[160];
    if (m->version != WIRE_VERSION) {
        snprintf(why, sizeof why, "protocol version %u, coordinator speaks %u", m->version,
                 WIRE_VERSION);
        log_warn("site=%s refused: %s", m->site, why);
        reply_error(c, NULL, from, 0, ERR_VERSION, why);
        return;
    }
    int index = -1;
    if (c->n_roster > 0) {
        for (int i = 0; i < c->n_roster; i++)
            if (strcmp(c->roster[i], m->site) == 0) index = i;
        if (index < 0) {
            snprintf(why, sizeof why, "site '%s' is not on the federation roster", m->site);
            log_warn("refused: %s", why);
            reply_error(c, NULL, from, 0, ERR_UNKNOWN_CLIENT, why);
            return;
        }
    }
    if (m->n_train < 0 || m->n_val < 0) {
        reply_error(c, NULL, from, 0, ERR_MALFORMED, "negative sample count");
        return;
    }
    client_rec_t *k = find_by_site(c, m->site);
    if (!k) {
        if (c->n_clients == COORD_MAX_CLIENTS) {
            reply_error(c, NULL, from, 0, ERR_FULL, "federation is full");
            return;
        }
        k = &c->clients[c->n_clients];
        memset(k, 0, sizeof *k);
        util_strlcpy(k->site, m->site, sizeof k->site);
        k->index = index >= 0 ? index : c->n_clients;
        c->n_clients++;
        log_info("site=%s index=%d event=registered n_train=%lld n_val=%lld", k->site, k->index,
                 (long long)m->n_train, (long long)m->n_val);
    } else if (k->id.len != from->len || memcmp(k->id.data, from->data, from->len) != 0) {
        /* Same site on a new connection: a restarted daemon. It lost any
         * round it was in, and its model copy. */
        log_info("site=%s event=reconnected", k->site);
        if (k->train == P_PENDING || k->eval == P_PENDING) drop(c, k, "reconnected mid-round");
    }
    k->id = *from;
    k->n_train = m->n_train;
    k->n_val = m->n_val;
    k->has_version = NO_VERSION;
    k->live = 1;
    k->last_seen = util_now();
    msg_t w = {.type = MSG_WELCOME, .round = c->round, .client_id = (uint32_t)k->index};
    send_to(c, k, NULL, &w);
}

/* ---- phases ---------------------------------------------------------------------- */

static void start_round(coord_t *c)
{
    c->round++;
    c->round_started = c->phase_started = util_now();
    c->bytes_up = c->bytes_down = 0;
    c->train_loss_sum = 0;
    c->train_s_max = 0;
    fedavg_begin(c->fedavg);

    /* Cohort: a random fraction of the live clients (all of them by default). */
    int live[COORD_MAX_CLIENTS], n = 0;
    for (int i = 0; i < c->n_clients; i++) {
        c->clients[i].train = c->clients[i].eval = P_IDLE;
        if (c->clients[i].live) live[n++] = i;
    }
    int want = (int)ceil(c->conf->fraction * n);
    if (want < 1) want = 1;
    for (int i = 0; i < n - 1; i++) { /* partial Fisher-Yates */
        int j = i + (int)rng_below(&c->rng, (uint64_t)(n - i));
        int t = live[i];
        live[i] = live[j];
        live[j] = t;
    }
    uint64_t round_seed = c->conf->seed * 1000003ull + c->round;
    for (int i = 0; i < want && i < n; i++) {
        client_rec_t *k = &c->clients[live[i]];
        k->train = P_PENDING;
        msg_t p = {.type = MSG_PLAN, .round = c->round, .phase = PHASE_TRAIN,
                   .epochs = (uint32_t)c->conf->epochs, .batch = (uint32_t)c->conf->batch,
                   .lr = c->conf->lr, .momentum = c->conf->momentum,
                   .weight_decay = c->conf->weight_decay, .seed = round_seed};
        fill_spec(c, k, &p);
        send_to(c, k, NULL, &p);
    }
    c->state = ST_TRAINING;
    log_info("round=%u phase=train event=plan-sent cohort=%d live=%d -> training", c->round,
             want < n ? want : n, n);
}

static int count(const coord_t *c, int train, part_t p)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++)
        n += (train ? c->clients[i].train : c->clients[i].eval) == p;
    return n;
}

static void write_metrics(coord_t *c, int aborted)
{
    FILE *f = c->metrics;
    double secs = util_now() - c->round_started;
    int accepted = fedavg_count(c->fedavg);
    fprintf(f, "{\"round\":%u,\"participants\":%d,\"cohort\":%d,\"aborted\":%s,\"secagg\":false,",
            c->round, accepted, accepted + count(c, 1, P_DROPPED), aborted ? "true" : "false");
    fputs("\"dropped\":[", f);
    int first = 1;
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].train == P_DROPPED) {
            fprintf(f, "%s%d", first ? "" : ",", c->clients[i].index);
            first = 0;
        }
    fputs("],\"dropped_sites\":[", f);
    first = 1;
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].train == P_DROPPED) {
            fputs(first ? "" : ",", f);
            util_json_string(f, c->clients[i].site);
            first = 0;
        }
    fputs("],", f);
    if (!aborted && c->eval_n > 0) {
        double auc = c->classes == 2 ? metrics_auc_hist(c->hist, c->hist + WIRE_HIST_BINS,
                                                        WIRE_HIST_BINS)
                                     : NAN;
        fprintf(f, "\"val_n\":%lld,\"val_accuracy\":%.6f,\"val_loss\":%.6f,", (long long)c->eval_n,
                (double)c->eval_correct / (double)c->eval_n, c->eval_loss / (double)c->eval_n);
        if (isfinite(auc)) fprintf(f, "\"val_auc\":%.6f,", auc);
        else fputs("\"val_auc\":null,", f);
        fprintf(f, "\"evaluators\":%d,", c->evaluated);
    } else {
        fputs("\"val_n\":0,\"val_accuracy\":null,\"val_loss\":null,\"val_auc\":null,", f);
    }
    if (accepted > 0)
        fprintf(f, "\"train_loss\":%.6f,", c->train_loss_sum / (double)fedavg_weight(c->fedavg));
    fprintf(f, "\"train_seconds\":%.3f,\"seconds\":%.3f,\"bytes_up\":%llu,\"bytes_down\":%llu}\n",
            c->train_s_max, secs, (unsigned long long)c->bytes_up,
            (unsigned long long)c->bytes_down);
    fflush(f);
}

static int save_model(coord_t *c)
{
    char path[PATH_MAX + 32], err[512];
    snprintf(path, sizeof path, "%s/model.safetensors", c->conf->out_dir);
    st_meta_t meta[ST_META_MAX];
    size_t n = 0;
    for (size_t i = 0; i < c->n_meta && n < ST_META_MAX - 1; i++)
        if (strcmp(c->meta[i].key, "round") != 0) meta[n++] = c->meta[i];
    util_strlcpy(meta[n].key, "round", sizeof meta[n].key);
    snprintf(meta[n].value, sizeof meta[n].value, "%u", c->version);
    n++;
    if (safetensors_write(path, c->schema, c->global, meta, n, err, sizeof err) < 0) {
        log_error("checkpoint: %s", err);
        return -1;
    }
    return 0;
}

static void next_round_or_done(coord_t *c)
{
    if ((int)c->round >= c->conf->rounds) {
        c->state = ST_DONE;
        log_info("round=%u event=federation-complete -> done", c->round);
    } else {
        c->state = ST_WAITING;
        c->waiting_since = util_now();
    }
}

static void finish_round(coord_t *c)
{
    write_metrics(c, 0);
    save_model(c);
    log_info("round=%u phase=eval event=round-complete participants=%d val_n=%lld acc=%.4f "
             "-> %s",
             c->round, fedavg_count(c->fedavg), (long long)c->eval_n,
             c->eval_n ? (double)c->eval_correct / (double)c->eval_n : 0.0,
             (int)c->round >= c->conf->rounds ? "done" : "waiting");
    next_round_or_done(c);
}

static void finish_training(coord_t *c)
{
    char err[256];
    int accepted = fedavg_count(c->fedavg);
    if (accepted < c->conf->min_clients || fedavg_apply(c->fedavg, c->global, err, sizeof err) < 0) {
        log_warn("round=%u phase=train event=abort accepted=%d min=%d -> model unchanged",
                 c->round, accepted, c->conf->min_clients);
        write_metrics(c, 1);
        next_round_or_done(c);
        return;
    }
    c->version = c->round;
    c->eval_n = c->eval_correct = 0;
    c->eval_loss = 0;
    c->evaluated = 0;
    memset(c->hist, 0, sizeof c->hist);
    c->phase_started = util_now();
    c->state = ST_EVALUATING;
    int sent = 0;
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        if (!k->live) continue;
        k->eval = P_PENDING;
        msg_t e = {.type = MSG_EVAL, .round = c->round, .phase = PHASE_EVAL};
        fill_spec(c, k, &e);
        send_to(c, k, NULL, &e);
        sent++;
    }
    log_info("round=%u phase=train event=aggregated updates=%d weight=%lld -> evaluating (%d sites)",
             c->round, accepted, (long long)fedavg_weight(c->fedavg), sent);
    if (sent == 0) finish_round(c);
}

/* ---- message handlers -------------------------------------------------------------- */

static void on_update(coord_t *c, client_rec_t *k, const msg_t *m)
{
    char err[256];
    if (m->round != c->round) {
        snprintf(err, sizeof err, "update for round %u during round %u", m->round, c->round);
        log_warn("site=%s rejected: %s", k->site, err);
        reply_error(c, k, NULL, c->round, ERR_WRONG_ROUND, err);
        return;
    }
    if (k->train == P_DONE) {
        log_warn("site=%s rejected: second update for round %u", k->site, c->round);
        reply_error(c, k, NULL, c->round, ERR_DUPLICATE, "update already received this round");
        return;
    }
    if (k->train != P_PENDING) {
        log_warn("site=%s rejected: not in the cohort of round %u", k->site, c->round);
        reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "not in this round's cohort");
        return;
    }
    if (!isfinite(m->loss_sum) || !isfinite(m->train_seconds) || m->n_samples > k->n_train) {
        snprintf(err, sizeof err, "update claims %lld samples of %lld or a non-finite loss",
                 (long long)m->n_samples, (long long)k->n_train);
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, err);
        reply_error(c, k, NULL, c->round, ERR_MALFORMED, err);
        drop(c, k, err);
        return;
    }
    if (fedavg_add(c->fedavg, m->vec, m->vec_len, m->n_samples, err, sizeof err) < 0) {
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, err);
        reply_error(c, k, NULL, c->round,
                    m->vec_len != c->numel * 4 ? ERR_WRONG_LENGTH : ERR_NONFINITE, err);
        drop(c, k, err);
        return;
    }
    k->train = P_DONE;
    c->train_loss_sum += m->loss_sum * (double)m->n_samples;
    if (m->train_seconds > c->train_s_max) c->train_s_max = m->train_seconds;
    log_info("round=%u phase=train client=%s event=update n=%lld -> %d/%d", c->round, k->site,
             (long long)m->n_samples, fedavg_count(c->fedavg),
             fedavg_count(c->fedavg) + count(c, 1, P_PENDING));
}

static void on_eval_result(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->round != c->round || k->eval != P_PENDING) {
        reply_error(c, k, NULL, c->round, ERR_WRONG_ROUND, "evaluation result not expected");
        return;
    }
    int binary = c->classes == 2;
    if (m->n_samples < 0 || m->n_samples > k->n_val || m->correct < 0 ||
        m->correct > m->n_samples || !isfinite(m->loss_sum) || m->loss_sum < 0 ||
        (binary && (m->present & MSG_HAS_HIST) && m->hist_len != sizeof(uint32_t) * 2 * WIRE_HIST_BINS)) {
        log_warn("round=%u site=%s rejected: inconsistent evaluation result", c->round, k->site);
        reply_error(c, k, NULL, c->round, ERR_MALFORMED, "inconsistent evaluation result");
        drop(c, k, "inconsistent evaluation result");
        return;
    }
    if (binary && (m->present & MSG_HAS_HIST)) {
        uint64_t total = 0;
        uint32_t h[2 * WIRE_HIST_BINS];
        memcpy(h, m->hist, sizeof h);
        for (int i = 0; i < 2 * WIRE_HIST_BINS; i++) total += h[i];
        if (total != (uint64_t)m->n_samples) {
            reply_error(c, k, NULL, c->round, ERR_MALFORMED, "histogram does not sum to n");
            drop(c, k, "histogram does not sum to n");
            return;
        }
        for (int i = 0; i < 2 * WIRE_HIST_BINS; i++) c->hist[i] += h[i];
    }
    k->eval = P_DONE;
    c->eval_n += m->n_samples;
    c->eval_correct += m->correct;
    c->eval_loss += m->loss_sum;
    c->evaluated++;
}

static void on_client_error(coord_t *c, client_rec_t *k, const msg_t *m)
{
    char why[WIRE_REASON_MAX + 32];
    snprintf(why, sizeof why, "client reported error %u: %s", m->code, m->reason);
    if ((c->state == ST_TRAINING && k->train == P_PENDING) ||
        (c->state == ST_EVALUATING && k->eval == P_PENDING))
        drop(c, k, why);
    else
        log_warn("site=%s %s", k->site, why);
}

/* ---- dispatch: the table above, as code ------------------------------------------------ */

static void dispatch(coord_t *c, const peer_id_t *from, const msg_t *m)
{
    if (m->type == MSG_HELLO) {
        on_hello(c, from, m);
        return;
    }
    client_rec_t *k = find_by_id(c, from);
    if (!k) {
        char who[24];
        transport_peer_str(from, who, sizeof who);
        log_warn("peer=%s sent %s before HELLO: refused", who, msg_type_name(m->type));
        reply_error(c, NULL, from, c->round, ERR_UNKNOWN_CLIENT, "say HELLO first");
        return;
    }
    k->last_seen = util_now();
    if (!k->live) {
        log_info("site=%s event=alive-again", k->site);
        k->live = 1;
    }
    switch (m->type) {
    case MSG_HEARTBEAT: return;
    case MSG_ERROR: on_client_error(c, k, m); return;
    case MSG_UPDATE:
        if (c->state == ST_TRAINING) on_update(c, k, m);
        else reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "no training phase is open");
        return;
    case MSG_EVAL_RESULT:
        if (c->state == ST_EVALUATING) on_eval_result(c, k, m);
        else reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "no evaluation phase is open");
        return;
    default:
        log_warn("site=%s sent %s, which only the coordinator sends", k->site,
                 msg_type_name(m->type));
        reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "message type not accepted here");
        return;
    }
}

/* Time-driven transitions: liveness, deadlines, phase completion. */
static void tick(coord_t *c)
{
    double now = util_now();
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        if (k->live && now - k->last_seen > c->conf->heartbeat_timeout) {
            k->live = 0;
            k->has_version = NO_VERSION;
            if (k->train == P_PENDING || k->eval == P_PENDING) drop(c, k, "silent past heartbeat timeout");
            else log_warn("site=%s event=lost (silent past heartbeat timeout)", k->site);
        }
    }
    int late = now - c->phase_started > c->conf->phase_timeout;
    switch (c->state) {
    case ST_WAITING: {
        int live = live_count(c);
        int need = c->round == 0 ? c->conf->wait_for : c->conf->min_clients;
        if (live >= need && live > 0) start_round(c);
        else if (now - c->waiting_since > c->conf->wait_timeout) {
            log_error("only %d of %d clients after %.0f s: giving up", live, need,
                      c->conf->wait_timeout);
            c->state = ST_DONE;
        }
        break;
    }
    case ST_TRAINING:
        for (int i = 0; late && i < c->n_clients; i++)
            if (c->clients[i].train == P_PENDING) drop(c, &c->clients[i], "phase deadline passed");
        if (count(c, 1, P_PENDING) == 0) finish_training(c);
        break;
    case ST_EVALUATING:
        for (int i = 0; late && i < c->n_clients; i++)
            if (c->clients[i].eval == P_PENDING) drop(c, &c->clients[i], "phase deadline passed");
        if (count(c, 0, P_PENDING) == 0) finish_round(c);
        break;
    case ST_DONE: break;
    }
}

/* ---- set-up ------------------------------------------------------------------------- */

static int meta_u32(coord_t *c, const char *key, uint32_t lo, uint32_t hi, uint32_t *out)
{
    const char *v = st_meta_get(c->meta, c->n_meta, key);
    long long x;
    if (!v || util_parse_int(v, lo, hi, &x) < 0) {
        log_error("%s: metadata '%s' missing or out of range", c->conf->init_model, key);
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static int load_model(coord_t *c)
{
    char err[512];
    if (safetensors_read(c->conf->init_model, &c->schema, &c->global, c->meta, &c->n_meta, err,
                         sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    c->numel = schema_numel(c->schema);
    const char *arch = st_meta_get(c->meta, c->n_meta, "arch");
    if (!arch || util_strlcpy(c->arch, arch, sizeof c->arch) < 0) {
        log_error("%s: metadata 'arch' missing (make it with medfed-init)", c->conf->init_model);
        return -1;
    }
    if (meta_u32(c, "in_channels", 1, 16, &c->in_ch) < 0 ||
        meta_u32(c, "height", 1, 4096, &c->height) < 0 ||
        meta_u32(c, "width", 1, 4096, &c->width) < 0 ||
        meta_u32(c, "classes", 2, 100000, &c->classes) < 0)
        return -1;
    for (size_t i = 0; i < c->numel; i++)
        if (!isfinite(c->global[i])) {
            log_error("%s: parameter %zu is not finite", c->conf->init_model, i);
            return -1;
        }
    c->fedavg = fedavg_new(c->numel, &c->conf->server);
    if (!c->fedavg) return -1;
    log_info("model: arch=%s params=%zu tensors=%zu input=%ux%ux%u classes=%u", c->arch, c->numel,
             schema_count(c->schema), c->in_ch, c->height, c->width, c->classes);
    return 0;
}

static int load_roster(coord_t *c)
{
    if (!c->conf->roster[0]) return 0;
    FILE *f = fopen(c->conf->roster, "r");
    if (!f) {
        log_error("%s: cannot open roster", c->conf->roster);
        return -1;
    }
    char line[256];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#') continue;
        if (c->n_roster == COORD_MAX_CLIENTS || strlen(line) >= WIRE_SITE_MAX) {
            log_error("%s:%d: site name too long or roster too large", c->conf->roster, lineno);
            rc = -1;
            break;
        }
        for (int i = 0; i < c->n_roster; i++)
            if (strcmp(c->roster[i], line) == 0) {
                log_error("%s:%d: site '%s' listed twice", c->conf->roster, lineno, line);
                rc = -1;
            }
        util_strlcpy(c->roster[c->n_roster++], line, WIRE_SITE_MAX);
    }
    fclose(f);
    return rc;
}

void coord_conf_defaults(coord_conf_t *c)
{
    memset(c, 0, sizeof *c);
    util_strlcpy(c->bind, "tcp://127.0.0.1:7700", sizeof c->bind);
    util_strlcpy(c->out_dir, ".", sizeof c->out_dir);
    c->rounds = 10;
    c->wait_for = 1;
    c->min_clients = 1;
    c->fraction = 1.0;
    c->epochs = 2;
    c->batch = 32;
    c->lr = 0.02;
    c->momentum = 0.9;
    c->weight_decay = 0.0;
    c->seed = 1;
    c->heartbeat_timeout = 30;
    c->phase_timeout = 3600;
    c->wait_timeout = 600;
    c->server = (fedavg_opts_t){SERVER_OPT_FEDAVG, 1.0, 0.0};
    c->log_level = LOG_INFO;
}

int coord_run(const coord_conf_t *conf)
{
    static coord_t c; /* large (registry): not on the stack */
    memset(&c, 0, sizeof c);
    c.conf = conf;
    int rc = 1;
    char err[512], path[PATH_MAX + 32];
    rng_seed(&c.rng, conf->seed ^ 0xC00Dull);
    if (load_roster(&c) < 0 || load_model(&c) < 0) goto out;
    if (util_mkdirs(conf->out_dir, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out;
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", conf->out_dir);
    c.metrics = fopen(path, "w");
    if (!c.metrics) {
        log_error("%s: cannot create", path);
        goto out;
    }
    c.zctx = zmq_ctx_new();
    c.sock = zmq_socket(c.zctx, ZMQ_ROUTER);
    c.out = wire_buf_new();
    c.dec = wire_decoder_new();
    if (!c.zctx || !c.sock || !c.out || !c.dec) goto out;
    /* Bound every message before it is allocated: the model plus headroom. */
    int64_t maxmsg = (int64_t)c.numel * 4 + 65536;
    int mandatory = 1, linger = 1000, hwm = 0;
    zmq_setsockopt(c.sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(c.sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    zmq_setsockopt(c.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c.sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_bind(c.sock, conf->bind) < 0) {
        log_error("cannot bind %s: %s", conf->bind, zmq_strerror(errno));
        goto out;
    }
    log_info("listening on %s, %d rounds, waiting for %d clients", conf->bind, conf->rounds,
             conf->wait_for);
    c.state = ST_WAITING;
    c.waiting_since = util_now();
    double last_tick = 0;
    while (c.state != ST_DONE && !coord_stop) {
        zmq_pollitem_t pi = {c.sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&pi, 1, 100);
        if (n < 0 && errno != EINTR) {
            log_error("poll failed: %s", zmq_strerror(errno));
            goto out;
        }
        /* Drain what is waiting, then run timers. */
        for (int budget = 0; n > 0 && budget < 64; budget++) {
            wire_frame_t fr;
            if (transport_recv(c.sock, 1, &fr, 1) < 0) {
                if (errno == EAGAIN) break;
                log_warn("dropped a frame with a broken envelope");
                continue;
            }
            c.bytes_up += fr.bytes;
            msg_t m;
            if (msg_decode(c.dec, transport_frame_data(&fr), fr.bytes, &m, err, sizeof err) < 0) {
                client_rec_t *k = find_by_id(&c, &fr.from);
                log_warn("round=%u client=%s malformed message: %s", c.round, k ? k->site : "?", err);
                reply_error(&c, k, &fr.from, c.round, ERR_MALFORMED, err);
                if (k && ((c.state == ST_TRAINING && k->train == P_PENDING) ||
                          (c.state == ST_EVALUATING && k->eval == P_PENDING)))
                    drop(&c, k, "malformed message");
            } else {
                dispatch(&c, &fr.from, &m);
            }
            transport_frame_close(&fr);
            if (c.state == ST_DONE) break;
        }
        double now = util_now();
        if (now - last_tick >= 0.05 || n == 0) {
            tick(&c);
            last_tick = now;
        }
    }
    if (c.state == ST_DONE && (int)c.round >= conf->rounds) rc = 0;
    if (coord_stop) log_info("signal received -> stopping");
    /* Tell every site the federation is over. */
    for (int i = 0; i < c.n_clients; i++) {
        msg_t s = {.type = MSG_SHUTDOWN, .round = c.round};
        if (c.clients[i].live) send_to(&c, &c.clients[i], NULL, &s);
    }
    if (save_model(&c) < 0) rc = 1;
out:
    if (c.sock) zmq_close(c.sock);
    if (c.zctx) zmq_ctx_term(c.zctx);
    if (c.metrics) fclose(c.metrics);
    wire_buf_destroy(&c.out);
    wire_decoder_destroy(&c.dec);
    fedavg_destroy(&c.fedavg);
    schema_destroy(&c.schema);
    free(c.global);
    return rc;
}
