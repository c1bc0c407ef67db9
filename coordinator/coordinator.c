/*
 * coordinator.c - the round state machine.
 *
 * States:  WAITING  -> TRAINING  [-> AGGREGATING]  -> EVALUATING  -> (next round) ... -> DONE
 *
 * With secure aggregation the round after PLAN belongs to the secure-
 * aggregation server (secagg_server.h, its own table): TRAINING is its
 * ADVERTISE phase, AGGREGATING the phases after it. The coordinator hands it
 * each secure message and each drop, calls secagg_server_step on every tick,
 * and acts on the outcome: ERROR to a refused sender, drop a sender that
 * broke the protocol, abort the round, or (done) apply the mean, commit the
 * model and send EVAL.
 *
 * The protocol in one table (state, event -> action -> next state):
 *
 *   any         HELLO              register / refresh the site, WELCOME      same
 *   any         HEARTBEAT          mark the site alive                        same
 *   WAITING     tick, enough live  start_round: PLAN to the cohort            TRAINING
 *   TRAINING    UPDATE             on_update: check, add to the FedAvg sum    TRAINING
 *   TRAINING    ERROR from cohort  on_client_error: drop it from the round    TRAINING
 *   TRAINING    tick               silent / late cohort members dropped       TRAINING
 *   TRAINING/   ADVERTISE, SHARES, secagg_server_message -> on_secure_outcome  same
 *   AGGREGATING READY, MASKED,
 *               CONSIST, UNMASK
 *   TRAINING/   tick               secagg_server_step: the next phase once    AGGREGATING
 *   AGGREGATING                    no member owes this one; done: apply,      EVALUATING
 *                                  commit, EVAL (abort: model unchanged)      WAITING
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
#include "coordinator/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zmq.h>

#include "aggregation/metrics.h"
#include "common/health.h"
#include "common/check.h"
#include "common/json.h"
#include "common/util.h"
#include "common/version.h"
#include "coordinator/record.h"
#include "coordinator/zap.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"
#include "model/safetensors.h"
#include "proto/transport.h"

volatile sig_atomic_t coord_stop = 0;
volatile sig_atomic_t coord_reload = 0;

const char *const coord_state_names[] = {"waiting", "training", "aggregating", "evaluating",
                                         "done"};

static int in_training(coord_state_t s) { return s == ST_TRAINING || s == ST_AGGREGATING; }

const char *coord_phase_name(const coord_t *c)
{
    if (c->conf->secagg && in_training(c->state)) return secagg_server_phase_name(c->sa_phase);
    return coord_state_names[c->state];
}

/* ---- sending ----------------------------------------------------------------- */

/* The process's CPU seconds (all threads). */
static double process_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0) return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void coord_send(coord_t *c, client_rec_t *k, const peer_id_t *id, const msg_t *m)
{
    long long n = transport_send(c->sock, id ? id : &k->id, m, c->out, 1);
    if (n < 0) {
        log_warn("site=%s send %s failed: %s", k ? k->site : "?", msg_type_name(m->type),
                 zmq_strerror(errno));
        return;
    }
    c->bytes_down += (uint64_t)n;
}

void coord_reply_error(coord_t *c, client_rec_t *k, const peer_id_t *id, uint32_t round,
                        msg_error_t code, const char *why)
{
    msg_t e;
    msg_error(&e, round, code, "%s", why);
    coord_send(c, k, id, &e);
}

/* Frees k's staged upload (on_part). */
static void unstage(client_rec_t *k)
{
    free(k->stage);
    k->stage = NULL;
    k->stage_len = k->stage_have = 0;
}

#define SITE_SNDHWM 64

/* How the model goes with PLAN and EVAL to a site that does not hold this version. */
enum { SPEC_ONLY, SPEC_VEC, SPEC_BULK };

/* The SHA-256 of the global model as it stands: what a secure round's sites
 * sign their keys against, what a v4 PLAN/EVAL names for the fetch and a
 * FETCH must name. Computed once per model; whatever writes global in a
 * running coordinator calls global_changed() first (the model loaded at
 * start follows the global_changed() that sets the struct up). */
static const uint8_t *global_sha256(coord_t *c)
{
    if (c->global_sha_version != c->version) {
        crypto_sha256(c->global_sha, c->global, c->numel * sizeof *c->global);
        c->global_sha_version = c->version;
    }
    return c->global_sha;
}

static void global_changed(coord_t *c)
{
    c->global_sha_version = NO_VERSION;
}

/* Fills the model spec shared by PLAN and EVAL; SPEC_VEC adds the global
 * model itself, SPEC_BULK (v4) its length and SHA-256, for the site to fetch. */
static void fill_spec(coord_t *c, msg_t *m, int how)
{
    util_strlcpy(m->arch, c->arch, sizeof m->arch);
    m->in_channels = c->in_ch;
    m->height = c->height;
    m->width = c->width;
    m->classes = c->classes;
    m->numel = c->numel;
    m->model_version = c->version;
    if (how == SPEC_VEC) {
        m->vec = (const uint8_t *)c->global;
        m->vec_len = c->numel * 4;
        m->present |= MSG_HAS_VEC;
    } else if (how == SPEC_BULK) {
        m->bulk_len = c->numel * 4;
        m->bulk_hash = global_sha256(c);
        m->bulk_hash_len = WIRE_HASH_BYTES;
        m->present |= MSG_HAS_BULK;
    }
}

/* Sends m (PLAN or EVAL) to every client whose `want` part is P_PENDING,
 * encoding it at most twice (with and without the model) and sharing the
 * encoded bytes among all of them. Returns the number of clients sent to. */
/* Model-bearing sends waiting or in flight: none once every queued site
 * has acknowledged, dropped or gone. */
static void forget_sends(coord_t *c)
{
    for (int i = 0; i < c->n_clients; i++) c->clients[i].send_q = 0;
    transport_shared_release(&c->model_frame);
    transport_shared_release(&c->bulk_frame);
}

/* Sends the queued PLAN/EVAL with the model to the next sites, so that at
 * most download_slots are in flight: a site's send is done when it sends a
 * message of the phase (it says so as soon as it has the model). */
static void pump_sends(coord_t *c)
{
    if (!c->model_frame && !c->bulk_frame) return;
    int in_flight = 0, queued = 0, away = 0;
    double now = util_now();
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        /* Silent past transfer_timeout: a slow or stuck link; the site stays,
         * its slot goes to the next (only memory is at stake). */
        if (k->send_q == SEND_IN_FLIGHT && now - k->sent_at > c->conf->transfer_timeout) {
            log_warn("round=%u site=%s has not said it has the model %.0f s after it was sent: "
                     "sending the next site", c->round, k->site, now - k->sent_at);
            k->send_q = 0;
            k->fetching = 0;
        }
        in_flight += k->send_q == SEND_IN_FLIGHT;
        away += k->away_at > 0; /* the frame is sent again when it is back */
    }
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        if (k->send_q != SEND_QUEUED) continue;
        if (!k->live || (c->model_frame_eval ? k->eval : k->train) != P_PENDING) {
            k->send_q = 0;
            continue;
        }
        if (in_flight >= c->conf->download_slots) {
            queued++;
            continue;
        }
        int bulk = k->proto >= 4 && c->bulk_frame;
        long long n = transport_send_shared(c->sock, &k->id, bulk ? c->bulk_frame : c->model_frame);
        if (n < 0) {
            log_warn("site=%s send %s failed: %s", k->site, c->model_frame_eval ? "EVAL" : "PLAN",
                     zmq_strerror(errno));
            k->send_q = 0;
            continue;
        }
        c->bytes_down += (uint64_t)n;
        k->has_version = c->version;
        k->send_q = SEND_IN_FLIGHT;
        k->fetching = bulk;
        k->sent_at = util_now();
        in_flight++;
        log_debug("round=%u site=%s event=model-sent msg=%s in_flight=%d", c->round, k->site,
                  c->model_frame_eval ? "EVAL" : "PLAN", in_flight);
    }
    if (!in_flight && !queued && !away) forget_sends(c);
}

/* A message of the phase from k: a send in flight to it has arrived. */
static void send_acknowledged(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (k->send_q != SEND_IN_FLIGHT || m->round != c->round || m->type == MSG_FETCH) return;
    if (c->model_frame_eval && m->phase != PHASE_EVAL) return;
    k->send_q = 0;
    k->fetching = 0;
    pump_sends(c);
}

/* PLAN (train) or EVAL to the sites pending in it; the model goes with it to
 * those that do not hold this version, download_slots at a time. Returns the
 * number of sites sent to or queued. */
static int broadcast_spec(coord_t *c, msg_t *m, int train)
{
    shared_frame_t *small = NULL;
    int sent = 0;
    forget_sends(c);
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        k->away_at = 0;
        k->fetching = 0;
        k->fetched = 0;
        if ((train ? k->train : k->eval) != P_PENDING) continue;
        int how = k->has_version == c->version ? SPEC_ONLY : k->proto >= 4 ? SPEC_BULK : SPEC_VEC;
        shared_frame_t **f = how == SPEC_VEC ? &c->model_frame
                             : how == SPEC_BULK ? &c->bulk_frame : &small;
        if (!*f) {
            msg_t copy = *m;
            fill_spec(c, &copy, how);
            if (!(*f = transport_shared_new(&copy))) {
                log_error("out of memory encoding %s", msg_type_name(m->type));
                break;
            }
        }
        if (how != SPEC_ONLY) {
            k->send_q = SEND_QUEUED;
            sent++;
            continue;
        }
        long long n = transport_send_shared(c->sock, &k->id, small);
        if (n < 0) {
            log_warn("site=%s send %s failed: %s", k->site, msg_type_name(m->type),
                     zmq_strerror(errno));
            continue;
        }
        c->bytes_down += (uint64_t)n;
        sent++;
    }
    transport_shared_release(&small);
    c->model_frame_eval = !train;
    pump_sends(c);
    return sent;
}

/* FETCH (v4): the next chunk of the model a PLAN or EVAL named. Served to a
 * site the phase waits on, for the version served now, by its SHA-256: a
 * site holding part of an older or different model (a coordinator restarted
 * in between) is told so and starts over. What one site can have queued is
 * bounded by the socket's send high-water mark (SITE_SNDHWM). */
static void on_fetch(coord_t *c, client_rec_t *k, const msg_t *m)
{
    char why[160];
    uint64_t total = (uint64_t)c->numel * 4;
    int pending = (in_training(c->state) && k->train == P_PENDING) ||
                  (c->state == ST_EVALUATING && k->eval == P_PENDING);
    if (!pending) { /* only a site the phase waits on needs the model now */
        snprintf(why, sizeof why, "FETCH: this site has no part in the %s phase",
                 coord_phase_name(c));
        coord_reply_error(c, k, NULL, m->round, ERR_MODEL_GONE, why);
        return;
    }
    if (m->bulk_hash_len != WIRE_HASH_BYTES) {
        coord_reply_error(c, k, NULL, m->round, ERR_MALFORMED, "FETCH: the model hash is not 32 bytes");
        return;
    }
    if (m->model_version != c->version ||
        memcmp(m->bulk_hash, global_sha256(c), WIRE_HASH_BYTES) != 0) {
        snprintf(why, sizeof why, "FETCH: model version %u with that SHA-256 is not served now "
                 "(the global model is version %u)", m->model_version, c->version);
        log_warn("site=%s %s", k->site, why);
        coord_reply_error(c, k, NULL, m->round, ERR_MODEL_GONE, why);
        return;
    }
    if (m->offset >= total) {
        snprintf(why, sizeof why, "FETCH: offset %llu is past the model's %llu bytes",
                 (unsigned long long)m->offset, (unsigned long long)total);
        coord_reply_error(c, k, NULL, m->round, ERR_WRONG_LENGTH, why);
        return;
    }
    uint64_t len = total - m->offset < WIRE_CHUNK_BYTES ? total - m->offset : WIRE_CHUNK_BYTES;
    msg_t ch = {.type = MSG_CHUNK, .round = m->round, .model_version = c->version,
                .bulk_hash = global_sha256(c), .bulk_hash_len = WIRE_HASH_BYTES,
                .offset = m->offset, .vec = (const uint8_t *)c->global + m->offset,
                .vec_len = (size_t)len, .present = MSG_HAS_VEC};
    coord_send(c, k, NULL, &ch);
    k->fetched += len;
    /* A fetch under way is progress: its download slot stays while chunks
     * are asked for (pump_sends frees one silent for transfer_timeout). */
    if (k->send_q == SEND_IN_FLIGHT) k->sent_at = util_now();
}

/* PART (v4): the next piece of the UPDATE or MASKED vector of a site granted
 * its upload, kept until the message itself comes (take_parts). Only a
 * granted site may send them (at most upload_slots at once, so what is
 * staged stays bounded whatever the number of sites), in order, within the
 * length a vector of this model can have. */
static void on_part(coord_t *c, client_rec_t *k, const msg_t *m)
{
    char why[200] = "";
    int i = (int)(k - c->clients);
    int up = c->conf->secagg ? secagg_server_granted(c->sa, i) : k->up_granted;
    int granted = in_training(c->state) && k->train == P_PENDING && m->round == c->round && up;
    uint64_t most = (uint64_t)c->numel * 4 + 64; /* a float vector, or packed words + tail */
    if (!granted) {
        snprintf(why, sizeof why, "PART without an upload granted to this site (coordinator is %s)",
                 coord_phase_name(c));
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, why);
        coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, why);
        return;
    }
    if (m->bulk_len == 0 || m->bulk_len > most || (k->stage && m->bulk_len != k->stage_len))
        snprintf(why, sizeof why, "PART of a %llu-byte vector (this model's are at most %llu)",
                 (unsigned long long)m->bulk_len, (unsigned long long)most);
    else if (m->offset != k->stage_have || m->vec_len == 0 || m->vec_len > WIRE_CHUNK_BYTES ||
             m->vec_len > m->bulk_len - m->offset)
        snprintf(why, sizeof why, "PART at offset %llu with %zu bytes; expected offset %llu, at "
                 "most %u bytes", (unsigned long long)m->offset, m->vec_len,
                 (unsigned long long)k->stage_have, WIRE_CHUNK_BYTES);
    else if (!k->stage && !(k->stage = malloc(m->bulk_len)))
        snprintf(why, sizeof why, "the coordinator has no memory for this upload");
    if (why[0]) {
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, why);
        coord_reply_error(c, k, NULL, c->round, ERR_WRONG_LENGTH, why);
        coord_drop(c, k, why);
        return;
    }
    k->stage_len = m->bulk_len;
    memcpy(k->stage + k->stage_have, m->vec, m->vec_len);
    k->stage_have += m->vec_len;
}

/* UPDATE or MASKED after its PARTs (v4): *whole is m with the staged vector.
 * 0, or -1 after rejecting it (the parts do not make the length it names). */
static int take_parts(coord_t *c, client_rec_t *k, const msg_t *m, msg_t *whole)
{
    if (!k->stage || k->stage_have != k->stage_len || m->bulk_len != k->stage_len) {
        char why[200];
        snprintf(why, sizeof why, "%s names a %llu-byte vector; its PARTs brought %llu bytes",
                 msg_type_name(m->type), (unsigned long long)m->bulk_len,
                 (unsigned long long)k->stage_have);
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, why);
        coord_reply_error(c, k, NULL, c->round, ERR_WRONG_LENGTH, why);
        if (in_training(c->state) && k->train == P_PENDING) coord_drop(c, k, why);
        unstage(k);
        return -1;
    }
    *whole = *m;
    whole->vec = k->stage;
    whole->vec_len = (size_t)k->stage_len;
    whole->present |= MSG_HAS_VEC;
    return 0;
}

/* May k, lost while fetching the phase's model, keep its place and resume?
 * Only before it has the model: nothing of this round has left it yet. */
static int fetch_resumable(const coord_t *c, const client_rec_t *k)
{
    if (!k->fetching) return 0;
    if (c->state == ST_EVALUATING) return k->eval == P_PENDING;
    return c->state == ST_TRAINING && k->train == P_PENDING &&
           (!c->conf->secagg || c->sa_phase == SA_ADVERTISE);
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

int coord_live_count(const coord_t *c)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++) n += c->clients[i].live;
    return n;
}

void coord_drop(coord_t *c, client_rec_t *k, const char *why)
{
    unstage(k);
    if (in_training(c->state) && k->train == P_PENDING) {
        k->train = P_DROPPED;
        if (c->sa) secagg_server_drop(c->sa, (int)(k - c->clients));
    }
    if (c->state == ST_EVALUATING && k->eval == P_PENDING) k->eval = P_DROPPED;
    log_warn("round=%u phase=%s client=%s event=dropped reason=\"%s\"", c->round,
             coord_phase_name(c), k->site, why);
}

/* CURVE: was the current message sent over a connection whose key (bound by
 * ZAP as "SITE/KEYHEX16") is site's key on the roster as it is now? A key
 * replaced or removed by SIGHUP stops working on connections already open. */
static int sender_is(const coord_t *c, const char *site)
{
    if (!c->conf->curve_secret[0]) return 1;
    size_t n = strlen(site);
    const char *uid = c->cur_user_id;
    int i = roster_find(&c->roster, site);
    if (i < 0 || strncmp(uid, site, n) != 0 || uid[n] != '/') return 0;
    char hex[17];
    for (int j = 0; j < 8; j++) snprintf(hex + 2 * j, 3, "%02x", c->roster.site[i].curve_pk[j]);
    return strcmp(uid + n + 1, hex) == 0;
}

/* The software version a HELLO or PING carries (v3), if it is one: letters,
 * digits and . + ~ - only (it goes to logs and `medfed clients`); else "". */
static const char *hello_sw(const msg_t *m)
{
    if (!(m->present & MSG_HAS_SW) || !m->sw[0]) return "";
    for (const char *p = m->sw; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '.' || *p == '+' || *p == '~' || *p == '-'))
            return "";
    return m->sw;
}

/* May this HELLO's or PING's sender take part? Its protocol version (one
 * behind ours is spoken too), its site name against its CURVE key and the
 * roster. Returns the site's roster index (-1 without a roster), or -2 after
 * replying ERROR. */
static int admit(coord_t *c, const peer_id_t *from, const msg_t *m)
{
    char why[200];
    if (m->version < WIRE_VERSION_MIN || m->version > WIRE_VERSION) {
        const char *sw = hello_sw(m)[0] ? hello_sw(m) : "an older release";
        if (m->version < WIRE_VERSION_MIN)
            snprintf(why, sizeof why, "this site speaks protocol version %u (medfed %s), the "
                     "coordinator (medfed %s) speaks %u to %u: upgrade medfed at this site",
                     m->version, sw, medfed_version(), WIRE_VERSION_MIN, WIRE_VERSION);
        else
            snprintf(why, sizeof why, "this site speaks protocol version %u (medfed %s), the "
                     "coordinator (medfed %s) speaks %u to %u: upgrade the coordinator first",
                     m->version, sw, medfed_version(), WIRE_VERSION_MIN, WIRE_VERSION);
        log_warn("site=%s refused: %s", m->site, why);
        coord_reply_error(c, NULL, from, 0, ERR_VERSION, why);
        return -2;
    }
    if (!sender_is(c, m->site)) {
        snprintf(why, sizeof why, "site name '%s' does not match its transport key", m->site);
        log_warn("refused: %s (key bound to '%s')", why, c->cur_user_id);
        coord_reply_error(c, NULL, from, 0, ERR_UNKNOWN_CLIENT, why);
        return -2;
    }
    int index = -1;
    if (c->have_roster) {
        index = roster_find(&c->roster, m->site);
        if (index < 0) {
            snprintf(why, sizeof why, "site '%s' is not on the federation roster", m->site);
            log_warn("refused: %s", why);
            coord_reply_error(c, NULL, from, 0, ERR_UNKNOWN_CLIENT, why);
            return -2;
        }
    }
    return index;
}

/* PING (medfed-client --check): an admitted site learns the coordinator is
 * up and its round; nothing is registered. */
static void on_ping(coord_t *c, const peer_id_t *from, const msg_t *m)
{
    if (admit(c, from, m) == -2) return;
    log_info("site=%s event=ping round=%u protocol=%u", m->site, c->round, m->version);
    msg_t p = {.type = MSG_PONG, .round = c->round};
    if (m->version >= 3) { /* a v2 site's decoder knows no "sw" */
        util_strlcpy(p.sw, medfed_version(), sizeof p.sw);
        p.present |= MSG_HAS_SW;
    }
    coord_send(c, NULL, from, &p);
}

static void on_hello(coord_t *c, const peer_id_t *from, const msg_t *m)
{
    int index = admit(c, from, m);
    if (index == -2) return;
    /* Bounded like fedavg_add's n_samples: sums over the cohort (the secure
     * aggregation weight bound, the pooled validation count) cannot overflow. */
    if (m->n_train < 0 || m->n_val < 0 || m->n_train > (int64_t)1 << 40 ||
        m->n_val > (int64_t)1 << 40) {
        coord_reply_error(c, NULL, from, 0, ERR_MALFORMED, "sample count out of range");
        return;
    }
    client_rec_t *k = find_by_site(c, m->site);
    if (!k) {
        if (c->n_clients == COORD_MAX_CLIENTS) {
            coord_reply_error(c, NULL, from, 0, ERR_FULL, "federation is full");
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
        /* Lost while fetching (or its old connection's close is not seen
         * yet): it keeps its place and resumes. */
        if ((k->away_at > 0 || k->live) && m->version >= 4 && fetch_resumable(c, k) &&
            c->bulk_frame) {
            log_info("round=%u site=%s event=fetch-resume: back %.1f s after its link was lost "
                     "mid-download -> %s again, it resumes the model where it stopped", c->round,
                     k->site, k->away_at > 0 ? util_now() - k->away_at : 0.0,
                     c->state == ST_EVALUATING ? "EVAL" : "PLAN");
            k->send_q = SEND_QUEUED; /* sent after WELCOME, below */
        } else if (k->train == P_PENDING || k->eval == P_PENDING) {
            coord_drop(c, k, "reconnected mid-round");
        }
        k->away_at = 0;
    }
    k->id = *from;
    k->n_train = m->n_train;
    k->n_val = m->n_val;
    k->has_version = NO_VERSION;
    k->live = 1;
    k->last_seen = util_now();
    const char *sw = hello_sw(m);
    if (k->proto != m->version || strcmp(k->sw, sw) != 0)
        log_info("site=%s event=hello protocol=%u software=%s%s", k->site, m->version,
                 sw[0] ? sw : "?",
                 m->version < WIRE_VERSION ? " (an older protocol version: spoken)" : "");
    k->proto = m->version;
    util_strlcpy(k->sw, sw, sizeof k->sw);
    k->done = k->total = 0;
    msg_t w = {.type = MSG_WELCOME, .round = c->round, .client_id = (uint32_t)k->index};
    if (k->proto >= 3) { /* a v2 site's decoder knows no "sw" */
        util_strlcpy(w.sw, medfed_version(), sizeof w.sw);
        w.present |= MSG_HAS_SW;
    }
    coord_send(c, k, NULL, &w);
    if (k->send_q == SEND_QUEUED) pump_sends(c);
}

/* ---- secure aggregation: the server's outcomes ------------------------------------------ */

static void sa_send(void *ctx, int slot, const msg_t *m)
{
    coord_t *c = ctx;
    coord_send(c, &c->clients[slot], NULL, m);
}

/* The server moved to another phase: its deadline starts now. */
static void sync_phase(coord_t *c)
{
    sa_phase_t p = secagg_server_phase(c->sa);
    if (p == c->sa_phase) return;
    c->sa_phase = p;
    c->phase_started = util_now();
    if (p >= SA_SHARING && p <= SA_UNMASKING && c->state == ST_TRAINING) c->state = ST_AGGREGATING;
}

static void finish_secure(coord_t *c, const sa_outcome_t *o);

/* What the server made of a message from k (NULL: of a step). */
static void on_secure_outcome(coord_t *c, client_rec_t *k, const sa_outcome_t *o)
{
    sync_phase(c);
    switch (o->status) {
    case SA_OK: break;
    case SA_REFUSED:
        log_warn("round=%u site=%s rejected: %s", c->round, k ? k->site : "?", o->why);
        if (k) coord_reply_error(c, k, NULL, c->round, o->code, o->why);
        break;
    case SA_DROPPED:
        log_warn("round=%u phase=%s client=%s rejected: %s", c->round, coord_phase_name(c),
                 k ? k->site : "?", o->why);
        if (k) {
            coord_reply_error(c, k, NULL, c->round, o->code, o->why);
            coord_drop(c, k, o->why);
        }
        break;
    case SA_ABORT: coord_abort_round(c, o->why); break;
    case SA_DONE: finish_secure(c, o); break;
    }
}

/* ---- phases ---------------------------------------------------------------------- */

static void halt_on_disk_error(coord_t *c, const char *what);

/* Hands this round's cohort to the secure-aggregation server; -1 after
 * aborting the round when the plan breaks the threshold rules. */
static int secure_round_setup(coord_t *c)
{
    static sa_member_t cohort[COORD_MAX_CLIENTS];
    char err[512];
    int n = 0;
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        if (k->train != P_PENDING) continue;
        int r = roster_find(&c->roster, k->site);
        if (r < 0) {
            snprintf(err, sizeof err, "site %s is in the cohort but not on the roster", k->site);
            coord_abort_round(c, err);
            return -1;
        }
        cohort[n++] = (sa_member_t){.slot = i, .id = (uint32_t)k->index, .site = k->site,
                                    .pk = c->roster.site[r].pk, .n_train = k->n_train,
                                    .v2 = k->proto > 0 && k->proto < 3};
    }
    if (secagg_server_begin(c->sa, c->round, global_sha256(c), cohort, n, (unsigned)c->roster.n,
                            c->clip, err, sizeof err) < 0) {
        coord_abort_round(c, err);
        return -1;
    }
    c->sa_phase = secagg_server_phase(c->sa);
    return 0;
}

/* The cohort a round over `live` sites draws: a fraction of them, at least one. */
static int cohort_size(const coord_t *c, int live)
{
    int want = (int)ceil(c->conf->fraction * live);
    if (want < 1) want = 1;
    return want < live ? want : live;
}

/* 1 if a round over `live` sites can run: in secure mode the cohort must admit
 * a threshold (secagg_plan). A round the plan refuses would abort at once and
 * the next would start a tick later, burning every remaining round while a site
 * is away; such a round waits instead, as the first round waits for wait_for. */
static int round_admissible(const coord_t *c, int live, char *why, size_t len)
{
    if (live <= 0) {
        util_seterr(why, len, "no site is connected");
        return 0;
    }
    if (!c->conf->secagg) return 1;
    unsigned k, t;
    return secagg_plan((unsigned)cohort_size(c, live), (unsigned)c->roster.n,
                       (unsigned)c->conf->neighbors, c->conf->dropout, c->conf->collusion, &k,
                       &t, why, len) == 0;
}

static void start_round(coord_t *c)
{
    c->fresh = 0;
    c->told_inadmissible = 0;
    c->round++;
    /* Recorded before anything of the round is sent: a restart never reuses
     * this id (state.c). */
    c->started_round = c->round;
    if (state_save(c) < 0) {
        /* Without that record a restart could run this id again: no round
         * starts until the state directory takes writes. */
        c->round--;
        c->started_round = c->round;
        halt_on_disk_error(c, "its id could not be recorded in state.json");
        return;
    }
    /* Cohort and graph draws depend on (seed, round) only: a resumed run draws as
     * an uninterrupted one would. */
    rng_seed(&c->rng, (c->conf->seed ^ 0xC00Dull) + 0x9E3779B97F4A7C15ull * c->round);
    c->round_started = c->phase_started = util_now();
    c->round_cpu_started = process_cpu_seconds();
    c->bytes_up = c->bytes_down = 0;
    c->train_loss_sum = 0;
    c->train_loss = NAN;
    c->train_s_max = 0;
    fedavg_begin(c->fedavg);

    /* Cohort: a random fraction of the live clients (all of them by default). */
    int live[COORD_MAX_CLIENTS], n = 0;
    for (int i = 0; i < c->n_clients; i++) {
        c->clients[i].train = c->clients[i].eval = P_IDLE;
        if (c->clients[i].live) live[n++] = i;
    }
    /* In site-id order, so that the draw depends on (seed, round) and the
     * live set only, not on the order in which the sites connected. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && c->clients[live[j - 1]].index > c->clients[live[j]].index; j--) {
            int t = live[j];
            live[j] = live[j - 1];
            live[j - 1] = t;
        }
    for (int i = 0; i < n - 1; i++) { /* partial Fisher-Yates */
        int j = i + (int)rng_below(&c->rng, (uint64_t)(n - i));
        int t = live[i];
        live[i] = live[j];
        live[j] = t;
    }
    int cohort = cohort_size(c, n);
    for (int i = 0; i < c->n_clients; i++) {
        c->clients[i].up_ready = c->clients[i].up_granted = 0;
        unstage(&c->clients[i]);
    }
    for (int i = 0; i < cohort; i++) c->clients[live[i]].train = P_PENDING;
    c->participants = 0;
    c->survivors = 0;
    c->state = ST_TRAINING;
    if (c->conf->secagg && secure_round_setup(c) < 0) return;
    /* A resumed run trains with fresh seeds: a round cut short by a crash is
     * never re-run as it was (sites also refuse a second aggregate of one
     * model version, client/policy.h). */
    if (c->resumed_from >= 0 && c->seed_salt == 0)
        while (c->seed_salt == 0) crypto_random(&c->seed_salt, sizeof c->seed_salt);
    uint64_t round_seed = (c->conf->seed * 1000003ull + c->round) ^ c->seed_salt;
    msg_t p = {.type = MSG_PLAN, .round = c->round, .phase = PHASE_TRAIN,
               .epochs = (uint32_t)c->conf->epochs, .batch = (uint32_t)c->conf->batch,
               .lr = fedavg_lr_at(&c->conf->lr_schedule, c->conf->lr, c->round, c->target),
               .momentum = c->conf->momentum, .weight_decay = c->conf->weight_decay,
               .seed = round_seed, .prox_mu = c->conf->prox_mu,
               .augment = (uint32_t)c->conf->augment,
               .class_balanced = (uint32_t)c->conf->class_balanced, .present = MSG_HAS_LOCAL};
    /* One PLAN frame goes to the whole cohort: with a protocol-2 site in it,
     * the round is spoken in protocol 2 (no local recipe, no loss word). */
    int v2 = 0;
    for (int i = 0; i < c->n_clients; i++)
        v2 |= c->clients[i].train == P_PENDING && c->clients[i].proto > 0 && c->clients[i].proto < 3;
    if (v2) {
        p.present &= ~MSG_HAS_LOCAL;
        if (c->conf->prox_mu > 0 || c->conf->augment || c->conf->class_balanced)
            log_warn("round=%u a site of the cohort speaks protocol 2: this round runs without "
                     "prox_mu, augment and class_balanced", c->round);
    }
    if (c->conf->secagg) secagg_server_fill_plan(c->sa, &p);
    broadcast_spec(c, &p, 1);
    log_info("round=%u phase=train event=plan-sent cohort=%d live=%d secagg=%s t=%u lr=%g "
             "prox_mu=%g augment=%u class_balanced=%u -> training",
             c->round, cohort, n, c->conf->secagg ? "on" : "off",
             c->conf->secagg ? secagg_server_threshold(c->sa) : 0, p.lr, p.prox_mu, p.augment,
             p.class_balanced);
}

static int count(const coord_t *c, int train, part_t p)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++)
        n += (train ? c->clients[i].train : c->clients[i].eval) == p;
    return n;
}

/* Cohort members that still owe a message in the current training phase. */
static int training_pending(const coord_t *c)
{
    int n = 0;
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        if (k->train != P_PENDING) continue;
        n += c->conf->secagg ? secagg_server_pending(c->sa, i) : 1;
    }
    return n;
}

/* The round's metrics row: one compact JSON line (common/json.h). Sites by roster
 * index ("included", "dropped") and by name: "cohort_sites" (picked for the
 * round), "included_sites" (their update is in the aggregate), "dropped_sites"
 * (dropped while training); a registered site in none of them was absent. */
static void write_metrics(coord_t *c, int aborted)
{
    double secs = util_now() - c->round_started;
    int cohort = 0;
    for (int i = 0; i < c->n_clients; i++) cohort += c->clients[i].train != P_IDLE;
    json_t *row = json_object(), *included = json_array(), *dropped = json_array(),
           *cohort_sites = json_array(), *included_sites = json_array(),
           *dropped_sites = json_array();
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        if (k->train == P_IDLE) continue;
        int in = !aborted && (c->conf->secagg ? secagg_server_in_u3(c->sa, i) : k->train == P_DONE);
        json_array_append_new(cohort_sites, json_string(k->site));
        if (in) json_array_append_new(included, json_integer(k->index));
        if (in) json_array_append_new(included_sites, json_string(k->site));
        if (k->train == P_DROPPED) json_array_append_new(dropped, json_integer(k->index));
        if (k->train == P_DROPPED) json_array_append_new(dropped_sites, json_string(k->site));
    }
    jx_set(row, "round", json_integer(c->round));
    jx_set(row, "format", json_integer(METRICS_FORMAT));
    jx_set(row, "participants", json_integer(aborted ? 0 : c->participants));
    jx_set(row, "cohort", json_integer(cohort));
    jx_set(row, "aborted", json_boolean(aborted));
    jx_set(row, "secagg", json_boolean(c->conf->secagg));
    if (c->conf->secagg) {
        jx_set(row, "threshold", json_integer(secagg_server_threshold(c->sa)));
        jx_set(row, "neighbors", json_integer(secagg_server_degree(c->sa)));
        jx_set(row, "bits", json_integer(secagg_server_bits(c->sa)));
        jx_set(row, "clip", json_real(secagg_server_clip(c->sa)));
        jx_set(row, "survivors", json_integer(c->survivors));
        jx_set(row, "included", included);
    } else {
        json_decref(included);
    }
    jx_set(row, "dropped", dropped);
    jx_set(row, "dropped_sites", dropped_sites);
    jx_set(row, "cohort_sites", cohort_sites);
    jx_set(row, "included_sites", included_sites);
    if (!aborted && c->eval_n > 0) {
        double auc = c->classes == 2 ? metrics_auc_hist(c->hist, c->hist + WIRE_HIST_BINS,
                                                        WIRE_HIST_BINS)
                                     : NAN;
        jx_set(row, "val_n", json_integer(c->eval_n));
        jx_set(row, "val_accuracy", jx_real((double)c->eval_correct / (double)c->eval_n, 6));
        jx_set(row, "val_loss", jx_real(c->eval_loss / (double)c->eval_n, 6));
        jx_set(row, "val_auc", jx_real(auc, 6));
        jx_set(row, "evaluators", json_integer(c->evaluated));
    } else {
        jx_set(row, "val_n", json_integer(0));
        jx_set(row, "val_accuracy", json_null());
        jx_set(row, "val_loss", json_null());
        jx_set(row, "val_auc", json_null());
    }
    /* Plaintext: the mean of the sites' reported losses; secure: decoded from
     * the masked sum of n_k * loss_k (the coordinator sees no site's own). */
    if (c->participants > 0 && !aborted && isfinite(c->train_loss))
        jx_set(row, "train_loss", jx_real(c->train_loss, 6));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* What the round cost the coordinator: CPU (all its threads, ZeroMQ's
     * I/O threads included) and the process's peak resident memory so far. */
    jx_set(row, "train_seconds", jx_real(c->train_s_max, 3));
    jx_set(row, "seconds", jx_real(secs, 3));
    jx_set(row, "bytes_up", json_integer((json_int_t)c->bytes_up));
    jx_set(row, "bytes_down", json_integer((json_int_t)c->bytes_down));
    jx_set(row, "coordinator_cpu_s", jx_real(process_cpu_seconds() - c->round_cpu_started, 3));
    jx_set(row, "coordinator_peak_rss_kb", json_integer(ru.ru_maxrss));
    if (jx_write_line(c->metrics, row) < 0) log_error("round=%u metrics row not written", c->round);
    json_decref(row);
    fflush(c->metrics);
}

size_t coord_model_meta(const coord_t *c, st_meta_t *meta)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_meta && n < ST_META_MAX - 1; i++)
        if (strcmp(c->meta[i].key, "round") != 0) meta[n++] = c->meta[i];
    util_strlcpy(meta[n].key, "round", sizeof meta[n].key);
    snprintf(meta[n].value, sizeof meta[n].value, "%u", c->version);
    return n + 1;
}

/* The latest model, for tools (every round's own file is in rounds/). */
static int save_model(coord_t *c)
{
    char path[PATH_MAX + 32], err[512];
    snprintf(path, sizeof path, "%s/model.safetensors", c->conf->out_dir);
    st_meta_t meta[ST_META_MAX];
    size_t n = coord_model_meta(c, meta);
    if (safetensors_write(path, c->schema, c->global, meta, n, err, sizeof err) < 0) {
        log_error("checkpoint: %s", err);
        return -1;
    }
    return 0;
}

/* The state directory (state.c) ---------------------------------------------------------- */

/* Commits the round (state_commit) and records it. */
static int commit(coord_t *c, int model_changed)
{
    if (state_commit(c, model_changed) < 0) return -1;
    c->committed = model_changed ? c->version : c->committed;
    c->committed_round = c->round;
    return 0;
}

/* Was this round's model committed already (a secure round, before EVAL)? */
static int committed_this_round(const coord_t *c)
{
    return c->committed == c->version && c->committed_round == c->round;
}

/* The model in memory back to the last committed round's (a round abandoned
 * after its aggregate was applied). */
static int rollback(coord_t *c)
{
    if (c->version == c->committed) return 0;
    global_changed(c);
    if (state_load_model(c, c->committed, c->global) < 0) return -1;
    c->version = c->committed;
    /* The SHA-256 of the weights now in memory (tests compare it with the
     * tensor bytes of that round's file, as for a resume). */
    const uint8_t *mh = global_sha256(c);
    log_info("state: model back to round %u's (sha256 %02x%02x%02x%02x%02x%02x%02x%02x)",
             c->committed, mh[0], mh[1], mh[2], mh[3], mh[4], mh[5], mh[6], mh[7]);
    return 0;
}

/* The state directory refused a write that a round depends on: pause (the
 * lead sees it in `medfed status` and the log; `medfed start` tries again);
 * a run without an admin socket ends, with an error. */
static void halt_on_disk_error(coord_t *c, const char *what)
{
    log_error("round=%u state directory %s: %s -> paused, no new round starts", c->round,
              c->conf->out_dir, what);
    c->paused = 1;
    c->disk_error = 1;
    admin_event(c, "round=%u event=state-write-failed reason=\"%s\" -> paused", c->round, what);
}

/* A run read from the state directory becomes this process's. */
static void resume_from(coord_t *c, const state_run_t *r)
{
    c->round = r->round;
    c->version = c->committed = r->version;
    c->committed_round = r->committed_round;
    c->started_round = r->started;
    c->target = r->target;
    c->paused = r->paused;
    c->resumed_from = (int64_t)r->version;
    /* The clip the run had reached; a lowered ceiling still holds. */
    if (c->conf->clip_auto && r->clip > 0 && r->clip < c->conf->clip) c->clip = r->clip;
    if (r->version > 0) state_load_server_opt(c, r->version, c->fedavg);
}

/* More rounds to run now? */
static int want_round(const coord_t *c) { return !c->paused && c->round < c->target; }

static void next_round_or_done(coord_t *c)
{
    c->state = ST_WAITING;
    c->waiting_since = util_now();
    if (c->round >= c->target) {
        log_info("round=%u event=federation-complete -> %s", c->round,
                 c->admin ? "idle (medfed start runs more)" : "done");
        if (!c->admin) c->state = ST_DONE;
        record_end(c);
    }
}

static void finish_round(coord_t *c)
{
    write_metrics(c, 0);
    c->last_participants = c->participants;
    c->last_accuracy = c->eval_n ? (double)c->eval_correct / (double)c->eval_n : NAN;
    c->last_auc = c->classes == 2 && c->eval_n
                      ? metrics_auc_hist(c->hist, c->hist + WIRE_HIST_BINS, WIRE_HIST_BINS)
                      : NAN;
    /* model.safetensors becomes the round's file (a hard link: no second write);
     * where links are not possible, a copy. A secure round's model was
     * committed before EVAL (coord_apply_and_evaluate): only state.json now. */
    int model_written = committed_this_round(c);
    if (commit(c, !model_written) < 0 || state_publish_latest(c) < 0) save_model(c);
    admin_event(c, "round=%u phase=complete participants=%d val_accuracy=%.4f val_auc=%.4f",
                c->round, c->participants, isfinite(c->last_accuracy) ? c->last_accuracy : 0.0,
                isfinite(c->last_auc) ? c->last_auc : 0.0);
    health_result("round %u, %d sites, accuracy %.4f", c->round, c->participants,
                  isfinite(c->last_accuracy) ? c->last_accuracy : 0.0);
    log_info("round=%u phase=eval event=round-complete participants=%d val_n=%lld acc=%.4f "
             "-> %s",
             c->round, c->participants, (long long)c->eval_n,
             c->eval_n ? (double)c->eval_correct / (double)c->eval_n : 0.0,
             c->round >= c->target ? "done" : "waiting");
    next_round_or_done(c);
}

static void start_eval(coord_t *c)
{
    c->version = c->round;
    c->eval_n = c->eval_correct = 0;
    c->eval_loss = 0;
    c->evaluated = 0;
    memset(c->hist, 0, sizeof c->hist);
    c->phase_started = util_now();
    c->state = ST_EVALUATING;
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].live) c->clients[i].eval = P_PENDING;
    msg_t e = {.type = MSG_EVAL, .round = c->round, .phase = PHASE_EVAL};
    int sent = broadcast_spec(c, &e, 0);
    log_info("round=%u phase=train event=aggregated updates=%d -> evaluating (%d sites)", c->round,
             c->participants, sent);
    if (sent == 0) finish_round(c);
}

void coord_abort_round(coord_t *c, const char *why)
{
    log_warn("round=%u phase=%s event=abort reason=\"%s\" -> model unchanged", c->round,
             coord_phase_name(c), why);
    write_metrics(c, 1);
    if (rollback(c) < 0) log_error("round=%u the model could not be rolled back", c->round);
    commit(c, 0);
    admin_event(c, "round=%u phase=aborted reason=\"%s\"", c->round, why);
    health_result("round %u aborted: %s", c->round, why);
    if (c->sa) secagg_server_end(c->sa);
    c->sa_phase = SA_IDLE;
    next_round_or_done(c);
}

static void stop_round(coord_t *c, const char *why)
{
    /* A secure round in EVAL has its aggregate committed (the sites released
     * their shares for the old model once): it ends there, evaluated as far
     * as it got, rather than being rolled back. */
    if (c->state == ST_EVALUATING && committed_this_round(c)) {
        log_info("round=%u phase=evaluating event=stopped (%s) -> the committed model stands", c->round,
                 why);
        finish_round(c);
        return;
    }
    if (c->state != ST_WAITING && c->state != ST_DONE) coord_abort_round(c, why);
}

void coord_run_more(coord_t *c, uint32_t n)
{
    c->target = c->round + n;
    c->paused = 0;
    c->waiting_since = util_now();
    state_save(c);
}

int coord_set(coord_t *c, char (*sets)[COORD_SET_MAX], int n, char *err, size_t errlen)
{
    if (c->state == ST_TRAINING || c->state == ST_AGGREGATING || c->state == ST_EVALUATING) {
        util_seterr(err, errlen, "round %u is in flight (%s): settings change between rounds; "
                    "pause, wait for it to finish, then start with --set", c->round,
                    coord_phase_name(c));
        return -1;
    }
    static coord_conf_t next; /* large (paths): not on the stack */
    next = c->conf_live;
    for (int i = 0; i < n; i++) {
        char *eq = strchr(sets[i], '='), key[64];
        if (!eq || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof key) {
            util_seterr(err, errlen, "--set wants KEY=VALUE, got '%s'", sets[i]);
            return -1;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
        if (!coord_conf_known(key)) {
            util_seterr(err, errlen, "unknown setting '%s' (the keys of coordinator.ini)", key);
            return -1;
        }
        if (!coord_conf_runtime(key)) {
            util_seterr(err, errlen, "'%s' is fixed for the coordinator's life: change it in "
                        "coordinator.ini and restart the coordinator", key);
            return -1;
        }
        if (coord_conf_set(&next, key, eq + 1, err, errlen) < 0) return -1;
    }
    if (memcmp(&next.server, &c->conf_live.server, sizeof next.server) != 0) {
        /* Another server optimiser (or its parameters): its state starts from zero. */
        fedavg_t *f = fedavg_new(c->numel, &next.server);
        if (!f) {
            util_seterr(err, errlen, "out of memory for the server optimiser");
            return -1;
        }
        fedavg_destroy(&c->fedavg);
        c->fedavg = f;
        log_info("server optimiser now %s: its state starts from zero",
                 fedavg_opt_name(next.server.opt));
    }
    if (next.clip != c->conf_live.clip) c->clip = next.clip;
    c->conf_live = next;
    for (int i = 0; i < n; i++) log_info("admin: set %s", sets[i]);
    record_settings(c, (const char (*)[COORD_SET_MAX])sets, n); /* run.json: "overrides" */
    return 0;
}

void coord_pause(coord_t *c)
{
    c->paused = 1;
    state_save(c);
}

void coord_stop_run(coord_t *c, const char *why)
{
    stop_round(c, why);
    c->target = c->round;
    c->paused = 0;
    state_save(c);
}

void coord_apply_and_evaluate(coord_t *c, const float *avg)
{
    global_changed(c);
    fedavg_apply_mean(c->fedavg, c->global, avg);
    /* The sites released their shares for this model version once: commit
     * the aggregate before anything else can fail, so that a restart resumes
     * from it instead of asking them for a second aggregate of the old
     * version (which they refuse). */
    c->version = c->round;
    if (commit(c, 1) < 0) {
        /* The aggregate lives in memory only: evaluate it, but start no
         * round (and without an admin socket end the run with an error)
         * until the state directory takes writes again. */
        log_error("round=%u the aggregated model could not be committed before evaluation",
                  c->round);
        halt_on_disk_error(c, "the aggregated model could not be committed");
    }
    start_eval(c);
}

/* Secure aggregation's outcome: the mean over U3, its sum unmasked. */
static void finish_secure(coord_t *c, const sa_outcome_t *o)
{
    c->participants = o->participants;
    /* The next round's clip: from the aggregate alone, committed with it. */
    if (c->conf->clip_auto) {
        double next = secagg_next_clip(o->mean, c->numel, c->conf->clip_headroom, c->conf->clip);
        log_info("round=%u clip=%g -> next clip %g (%g x max |mean update|)", c->round,
                 secagg_server_clip(c->sa), next, c->conf->clip_headroom);
        c->clip = next;
    }
    c->survivors = o->survivors;
    c->train_loss = o->train_loss;
    if (!isfinite(o->train_loss))
        log_warn("round=%u the unmasked training-loss word is not a valid sum: no train_loss",
                 c->round);
    /* Who is still pending got through every phase: its update is in. */
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].train == P_PENDING) c->clients[i].train = P_DONE;
    coord_apply_and_evaluate(c, o->mean);
    secagg_server_end(c->sa); /* the masked sum and the shares go */
    c->sa_phase = SA_IDLE;
}

/* Plaintext FedAvg: the sum was built as updates arrived. */
static void finish_training(coord_t *c)
{
    char err[256], why[320];
    c->participants = fedavg_count(c->fedavg);
    if (c->participants < c->conf->min_clients) {
        snprintf(why, sizeof why, "%d updates, fewer than --min-clients %d", c->participants,
                 c->conf->min_clients);
        coord_abort_round(c, why);
        return;
    }
    global_changed(c);
    if (fedavg_apply(c->fedavg, c->global, err, sizeof err) < 0) {
        coord_abort_round(c, err);
        return;
    }
    c->train_loss = c->train_loss_sum / (double)fedavg_weight(c->fedavg);
    start_eval(c);
}

/* ---- message handlers -------------------------------------------------------------- */

/* Plaintext: UPLOAD to the next trained sites, upload_slots at a time, so
 * that at most that many updates are on their way in (each is a model-size
 * message; all at once they were one model per site in the coordinator). */
static void grant_plain_uploads(coord_t *c)
{
    if (c->conf->secagg || c->state != ST_TRAINING) return;
    int active = 0;
    for (int i = 0; i < c->n_clients; i++)
        active += c->clients[i].train == P_PENDING && c->clients[i].up_granted;
    for (int i = 0; i < c->n_clients && active < c->conf->upload_slots; i++) {
        client_rec_t *k = &c->clients[i];
        if (k->train != P_PENDING || !k->up_ready || k->up_granted) continue;
        msg_t g = {.type = MSG_UPLOAD, .round = c->round, .phase = PHASE_TRAIN};
        coord_send(c, k, NULL, &g); /* a failed send: the site is gone, and dropped */
        k->up_granted = 1;
        active++;
    }
}

static void on_plain_ready(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->round != c->round || k->train != P_PENDING || k->up_ready) {
        coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "READY not expected");
        return;
    }
    k->up_ready = 1;
    grant_plain_uploads(c);
}

static void on_update(coord_t *c, client_rec_t *k, const msg_t *m)
{
    char err[256];
    if (m->round != c->round) {
        snprintf(err, sizeof err, "update for round %u during round %u", m->round, c->round);
        log_warn("site=%s rejected: %s", k->site, err);
        coord_reply_error(c, k, NULL, c->round, ERR_WRONG_ROUND, err);
        return;
    }
    if (k->train == P_DONE) {
        log_warn("site=%s rejected: second update for round %u", k->site, c->round);
        coord_reply_error(c, k, NULL, c->round, ERR_DUPLICATE, "update already received this round");
        return;
    }
    if (k->train != P_PENDING) {
        log_warn("site=%s rejected: not in the cohort of round %u", k->site, c->round);
        coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "not in this round's cohort");
        return;
    }
    if (!isfinite(m->loss_sum) || !isfinite(m->train_seconds) || m->n_samples > k->n_train) {
        snprintf(err, sizeof err, "update claims %lld samples of %lld or a non-finite loss",
                 (long long)m->n_samples, (long long)k->n_train);
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, err);
        coord_reply_error(c, k, NULL, c->round, ERR_MALFORMED, err);
        coord_drop(c, k, err);
        return;
    }
    if (fedavg_add(c->fedavg, m->vec, m->vec_len, m->n_samples, err, sizeof err) < 0) {
        log_warn("round=%u site=%s rejected: %s", c->round, k->site, err);
        coord_reply_error(c, k, NULL, c->round,
                    m->vec_len != c->numel * 4 ? ERR_WRONG_LENGTH : ERR_NONFINITE, err);
        coord_drop(c, k, err);
        return;
    }
    k->train = P_DONE;
    c->train_loss_sum += m->loss_sum * (double)m->n_samples;
    if (m->train_seconds > c->train_s_max) c->train_s_max = m->train_seconds;
    log_info("round=%u phase=train client=%s event=update n=%lld -> %d/%d", c->round, k->site,
             (long long)m->n_samples, fedavg_count(c->fedavg),
             fedavg_count(c->fedavg) + training_pending(c));
}

static void on_eval_result(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (m->round != c->round || k->eval != P_PENDING) {
        coord_reply_error(c, k, NULL, c->round, ERR_WRONG_ROUND, "evaluation result not expected");
        return;
    }
    int binary = c->classes == 2;
    if (m->n_samples < 0 || m->n_samples > k->n_val || m->correct < 0 ||
        m->correct > m->n_samples || !isfinite(m->loss_sum) || m->loss_sum < 0 ||
        (binary && (m->present & MSG_HAS_HIST) && m->hist_len != sizeof(uint32_t) * 2 * WIRE_HIST_BINS)) {
        log_warn("round=%u site=%s rejected: inconsistent evaluation result", c->round, k->site);
        coord_reply_error(c, k, NULL, c->round, ERR_MALFORMED, "inconsistent evaluation result");
        coord_drop(c, k, "inconsistent evaluation result");
        return;
    }
    if (binary && (m->present & MSG_HAS_HIST)) {
        uint64_t total = 0;
        uint32_t h[2 * WIRE_HIST_BINS];
        memcpy(h, m->hist, sizeof h);
        for (int i = 0; i < 2 * WIRE_HIST_BINS; i++) total += h[i];
        if (total != (uint64_t)m->n_samples) {
            coord_reply_error(c, k, NULL, c->round, ERR_MALFORMED, "histogram does not sum to n");
            coord_drop(c, k, "histogram does not sum to n");
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
    if ((in_training(c->state) && k->train == P_PENDING) ||
        (c->state == ST_EVALUATING && k->eval == P_PENDING))
        coord_drop(c, k, why);
    else
        log_warn("site=%s %s", k->site, why);
}

/* The expiry of the certificate a site advertises with (the secure-aggregation
 * server checks the certificate itself): `medfed clients` warns ahead of it. */
static void note_cert_expiry(client_rec_t *k, const msg_t *m)
{
    int64_t t;
    char err[128];
    if (m->blob_len > WIRE_ADVERTISE_BYTES &&
        cert_not_after(m->blob + WIRE_ADVERTISE_BYTES, m->blob_len - WIRE_ADVERTISE_BYTES, &t, err,
                       sizeof err) == 0)
        k->cert_not_after = t;
}

/* HEARTBEAT: alive (dispatch noted it); a v3 site training says how far it
 * is, which `medfed clients` shows and watchers get every few seconds. */
static void on_heartbeat(coord_t *c, client_rec_t *k, const msg_t *m)
{
    if (!(m->present & MSG_HAS_PROGRESS) || m->total == 0 || m->done > m->total) return;
    k->done = m->done;
    k->total = m->total;
    k->progress_round = m->round;
    double now = util_now();
    if (!in_training(c->state) || now - c->progress_event_at < 5.0) return;
    c->progress_event_at = now;
    char line[400];
    size_t n = 0;
    for (int i = 0; i < c->n_clients && n + 40 < sizeof line; i++) {
        const client_rec_t *q = &c->clients[i];
        if (q->train != P_PENDING || q->total == 0 || q->progress_round != c->round) continue;
        n += (size_t)snprintf(line + n, sizeof line - n, " %s=%.0f%%", q->site,
                              100.0 * (double)q->done / (double)q->total);
    }
    if (n) admin_event(c, "round=%u phase=train progress%s", c->round, line);
}

/* ---- dispatch: the table above, as code ------------------------------------------------ */

static void dispatch(coord_t *c, const peer_id_t *from, int fd, const msg_t *m)
{
    if (m->type == MSG_HELLO) {
        on_hello(c, from, m);
        client_rec_t *h = find_by_id(c, from);
        if (h) h->fd = fd;
        return;
    }
    if (m->type == MSG_PING) {
        on_ping(c, from, m);
        return;
    }
    client_rec_t *k = find_by_id(c, from);
    if (!k) {
        char who[24];
        transport_peer_str(from, who, sizeof who);
        log_warn("peer=%s sent %s before HELLO: refused", who, msg_type_name(m->type));
        coord_reply_error(c, NULL, from, c->round, ERR_NOT_REGISTERED, "say HELLO first");
        return;
    }
    if (k->removed) {
        coord_reply_error(c, k, NULL, c->round, ERR_UNKNOWN_CLIENT,
                          "this site was removed from the federation roster");
        return;
    }
    if (!sender_is(c, k->site)) {
        log_warn("site=%s refused: this connection's key is no longer the site's key on the roster",
                 k->site);
        coord_reply_error(c, k, NULL, c->round, ERR_UNKNOWN_CLIENT,
                          "this connection's key is no longer the site's key on the roster");
        return;
    }
    if (k->away_at > 0) {
        /* Lost mid-download, its place kept until it says HELLO again: what
         * still arrives from the connection that closed is stale (a FETCH
         * to nowhere); it must not make the site look alive, or its place
         * would never expire (tick). */
        log_debug("site=%s %s from its closed connection: ignored", k->site,
                  msg_type_name(m->type));
        return;
    }
    k->last_seen = util_now();
    k->fd = fd;
    send_acknowledged(c, k, m);
    if (!k->live) {
        log_info("site=%s event=alive-again", k->site);
        k->live = 1;
    }
    msg_t whole; /* UPDATE or MASKED whose vector came in PARTs (v4) */
    if ((m->type == MSG_UPDATE || m->type == MSG_MASKED) && (m->present & MSG_HAS_BULK)) {
        if (take_parts(c, k, m, &whole) < 0) return;
        m = &whole;
    }
    switch (m->type) {
    case MSG_HEARTBEAT: on_heartbeat(c, k, m); return;
    case MSG_FETCH: on_fetch(c, k, m); return;
    case MSG_PART: on_part(c, k, m); return;
    case MSG_ERROR: on_client_error(c, k, m); return;
    case MSG_UPDATE:
        if (c->state == ST_TRAINING && !c->conf->secagg) on_update(c, k, m);
        else coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED,
                               c->conf->secagg ? "secure aggregation is on: plaintext updates refused"
                                               : "no training phase is open");
        unstage(k);
        return;
    case MSG_ADVERTISE: case MSG_SHARES: case MSG_READY: case MSG_MASKED: case MSG_CONSIST:
    case MSG_UNMASK:
        if (m->type == MSG_READY && !c->conf->secagg && c->state == ST_TRAINING) {
            on_plain_ready(c, k, m);
        } else if (c->conf->secagg && in_training(c->state) && secagg_server_accepts(c->sa, m->type)) {
            if (m->type == MSG_ADVERTISE) note_cert_expiry(k, m);
            sa_outcome_t o;
            secagg_server_message(c->sa, (int)(k - c->clients), m, &o);
            if (o.status == SA_OK && m->type == MSG_ADVERTISE && isfinite(m->train_seconds) &&
                m->train_seconds > c->train_s_max)
                c->train_s_max = m->train_seconds;
            on_secure_outcome(c, k, &o);
        } else {
            char why[96];
            snprintf(why, sizeof why, "%s is out of phase (coordinator is %s)",
                     msg_type_name(m->type), coord_phase_name(c));
            log_warn("round=%u site=%s rejected: %s", c->round, k->site, why);
            coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, why);
        }
        unstage(k); /* a MASKED from PARTs is in the sum, or refused */
        return;
    case MSG_EVAL_RESULT:
        if (c->state == ST_EVALUATING) on_eval_result(c, k, m);
        else coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "no evaluation phase is open");
        return;
    default:
        log_warn("site=%s sent %s, which only the coordinator sends", k->site,
                 msg_type_name(m->type));
        coord_reply_error(c, k, NULL, c->round, ERR_UNEXPECTED, "message type not accepted here");
        return;
    }
}

/* A client is gone: silent too long, or its connection closed. One whose
 * connection closed while it fetched the phase's model (closed: a reset, a
 * VPN re-established; a silent one is not known to come back) may resume. */
static void lose(coord_t *c, client_rec_t *k, const char *why, int closed)
{
    k->live = 0;
    k->lost_at = util_now();
    k->fd = -1;
    k->has_version = NO_VERSION;
    unstage(k);
    if (closed && fetch_resumable(c, k)) {
        /* Its place waits heartbeat_timeout for it (tick); its download
         * slot goes to the next site now. */
        log_warn("round=%u site=%s event=lost-mid-download (%s) after %.1f MB: keeps its place "
                 "for %.0f s to resume", c->round, k->site, why, (double)k->fetched / 1e6,
                 c->conf->heartbeat_timeout);
        k->away_at = k->lost_at;
        k->send_q = 0;
        pump_sends(c);
    } else if (k->train == P_PENDING || k->eval == P_PENDING) {
        coord_drop(c, k, why);
    } else {
        log_warn("site=%s event=lost (%s)", k->site, why);
    }
}

static void on_disconnect(coord_t *c, int fd)
{
    for (int i = 0; i < c->n_clients; i++)
        if (c->clients[i].live && c->clients[i].fd == fd) lose(c, &c->clients[i], "connection closed", 1);
}

/* ---- the roster, re-read on SIGHUP -------------------------------------------------- */

/* Between rounds: every site's id becomes its position on the new roster. A
 * site whose id changed is told with a new WELCOME. */
static void reindex_sites(coord_t *c)
{
    c->reindex = 0;
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        int index = roster_find(&c->roster, k->site);
        if (index < 0 || index == k->index) continue;
        log_info("site=%s event=renumbered index=%d -> %d", k->site, k->index, index);
        k->index = index;
        /* Also to a site marked lost: it may still be connected, and would
         * otherwise sign with its old id. A send to a gone peer just fails. */
        msg_t w = {.type = MSG_WELCOME, .round = c->round, .client_id = (uint32_t)index};
        coord_send(c, k, NULL, &w);
    }
}

static void reload_roster(coord_t *c)
{
    static roster_t fresh; /* large */
    char err[512] = "";
    coord_reload = 0;
    if (!c->conf->roster[0]) {
        log_warn("SIGHUP: no roster file to re-read");
        return;
    }
    if (roster_load(c->conf->roster, &fresh, err, sizeof err) < 0 ||
        (c->conf->secagg && !fresh.all_have_pk) || (c->zap && !fresh.all_have_curve)) {
        log_error("SIGHUP: roster not changed: %s",
                  err[0] ? err : "a site lacks its identity or CURVE key");
        return;
    }
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        int gone = roster_find(&fresh, k->site) < 0;
        if (gone && !k->removed) {
            log_warn("site=%s event=removed-from-roster -> refused from now on", k->site);
            if (k->live)
                coord_reply_error(c, k, NULL, c->round, ERR_UNKNOWN_CLIENT,
                                  "this site was removed from the federation roster");
            k->removed = 1;
            if (k->live) {
                k->live = 0;
                if (k->train == P_PENDING || k->eval == P_PENDING)
                    coord_drop(c, k, "removed from the roster");
            }
        } else if (!gone && k->removed) {
            k->removed = 0;
        }
    }
    c->roster = fresh;
    if (c->zap) zap_set_roster(c->zap, &c->roster);
    c->reindex = 1;
    log_info("SIGHUP: roster re-read: %d sites", c->roster.n);
}

/* Is k silent past the heartbeat timeout? Its messages say it is alive, and
 * so do bytes arriving on its connection: a site uploading an update over a
 * slow link sends no message until the update is whole (its heartbeats
 * queue behind it), but its connection's received-byte count grows. Slow is
 * alive; silent is not. */
static int silent(coord_t *c, client_rec_t *k, double now)
{
    /* The byte count, looked at once a second: when it last grew. (Compared
     * only with the count at its last message, bytes that came after that
     * message but before the link died counted as progress once, and a dead
     * site was dropped only at twice the timeout; seen in test-wan.) */
    uint64_t rx;
    if (now - k->rx_checked_at >= 1.0 && transport_fd_rx_bytes(k->fd, &rx) == 0) {
        if (rx != k->rx_bytes) k->rx_grew_at = now;
        k->rx_bytes = rx;
        k->rx_checked_at = now;
    }
    double heard = k->last_seen > k->rx_grew_at ? k->last_seen : k->rx_grew_at;
    return now - heard > c->conf->heartbeat_timeout;
}

/* A site told UPLOAD (its update, or in secure mode its masked input) holds
 * one of upload_slots that the others queue for. One that has not sent it
 * within transfer_timeout is dropped, unless its connection moved at least
 * UPLOAD_PROGRESS_MIN bytes since the grant (or the last extension): a slow
 * link still uploading gets another transfer_timeout, so the deadline follows
 * the link's measured rate rather than a fixed figure. Heartbeats are far
 * below that (about 100 bytes every few seconds). */
#define UPLOAD_PROGRESS_MIN (1u << 20)

static void police_uploads(coord_t *c, double now)
{
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        int granted = in_training(c->state) && k->live && k->train == P_PENDING &&
                      (c->conf->secagg ? secagg_server_granted(c->sa, i) : k->up_granted);
        if (!granted) {
            k->granted_at = 0;
            continue;
        }
        uint64_t rx = 0;
        int have_rx = transport_fd_rx_bytes(k->fd, &rx) == 0;
        if (k->granted_at == 0) { /* granted since the last tick */
            k->granted_at = now;
            k->granted_rx = rx;
            continue;
        }
        if (now - k->granted_at <= c->conf->transfer_timeout) continue;
        if (have_rx && rx - k->granted_rx >= UPLOAD_PROGRESS_MIN) {
            log_info("site=%s upload still arriving (%.1f MB in the last %.0f s): another "
                     "transfer_timeout", k->site, (double)(rx - k->granted_rx) / 1e6,
                     now - k->granted_at);
            k->granted_at = now;
            k->granted_rx = rx;
            continue;
        }
        coord_drop(c, k, "nothing uploaded within transfer_timeout of its UPLOAD");
        k->granted_at = 0;
    }
}

/* A phase that waits on a few sites long after the others answered says who
 * they are, once per phase: past max(5 s, twice the time half the sites took). */
static void name_stragglers(coord_t *c, double now)
{
    int train = in_training(c->state), owing = 0, total = 0;
    if (!train && c->state != ST_EVALUATING) return;
    if (c->straggler_phase == c->phase_started) return; /* named already */
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        part_t p = train ? k->train : k->eval;
        if (p == P_IDLE) continue;
        total++;
        owing += p == P_PENDING && (!train || !c->conf->secagg || secagg_server_pending(c->sa, i));
    }
    if (c->half_done_at < c->phase_started) c->half_done_at = 0; /* a new phase */
    if (!c->half_done_at && 2 * owing <= total) c->half_done_at = now;
    double wait = c->half_done_at - c->phase_started;
    if (!owing || !c->half_done_at || now - c->half_done_at < (2 * wait > 5 ? 2 * wait : 5)) return;
    c->straggler_phase = c->phase_started;
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        if ((train ? k->train : k->eval) != P_PENDING ||
            (train && c->conf->secagg && !secagg_server_pending(c->sa, i)))
            continue;
        log_warn("round=%u phase=%s waiting on site=%s: %d of %d sites still owe this phase, "
                 "%.0f s after half of them answered (last heard %.0f s ago)", c->round,
                 coord_phase_name(c), k->site, owing, total, now - c->half_done_at,
                 now - k->last_seen);
    }
}

/* Time-driven transitions: liveness, deadlines, phase completion. */
static void tick(coord_t *c)
{
    double now = util_now();
    for (int i = 0; i < c->n_clients; i++) {
        client_rec_t *k = &c->clients[i];
        if (k->live && silent(c, k, now)) lose(c, k, "silent past heartbeat timeout", 0);
        if (!k->live && k->away_at > 0 && now - k->away_at > c->conf->heartbeat_timeout) {
            k->away_at = 0;
            k->fetching = 0;
            if (k->train == P_PENDING || k->eval == P_PENDING)
                coord_drop(c, k, "lost mid-download and not back within heartbeat_timeout");
        }
    }
    name_stragglers(c, now);
    pump_sends(c); /* a site dropped or gone frees its slot */
    police_uploads(c, now);
    grant_plain_uploads(c); /* and so does an update received or refused */
    int late = now - c->phase_started > c->conf->phase_timeout;
    switch (c->state) {
    case ST_WAITING: {
        if (c->reindex) reindex_sites(c);
        if (!want_round(c)) {
            if (!c->admin) c->state = ST_DONE; /* nothing left to run, and no one to ask */
            break;
        }
        int live = coord_live_count(c);
        /* The first round of this process (a new run, or a restart whose sites
         * are reconnecting) waits for wait_for sites; later ones need min_clients. */
        int need = c->fresh ? c->conf->wait_for : c->conf->min_clients;
        char why[256];
        int admissible = round_admissible(c, live, why, sizeof why);
        if (!admissible && live >= need && !c->told_inadmissible) {
            log_warn("round=%u %d live sites cannot make a secure round (%s): waiting for more",
                     c->round + 1, live, why);
            c->told_inadmissible = 1;
        }
        if (live >= need && admissible) start_round(c);
        else if (now - c->waiting_since > c->conf->wait_timeout) {
            if (c->admin && c->fresh && live >= c->conf->min_clients && admissible) {
                log_warn("round=%u only %d of %d clients after %.0f s: starting with them",
                         c->round, live, need, c->conf->wait_timeout);
                start_round(c);
            } else if (c->admin) { /* deployed: waits for the hospitals as long as it takes */
                if (live >= need)
                    log_warn("round=%u %d live sites cannot make a secure round after %.0f s "
                             "(%s): still waiting", c->round, live, c->conf->wait_timeout, why);
                else
                    log_warn("round=%u only %d of %d clients after %.0f s: still waiting",
                             c->round, live, need, c->conf->wait_timeout);
                c->waiting_since = now;
            } else {
                if (live >= need)
                    log_error("%d live sites cannot make a secure round after %.0f s (%s): "
                              "giving up", live, c->conf->wait_timeout, why);
                else
                    log_error("only %d of %d clients after %.0f s: giving up", live, need,
                              c->conf->wait_timeout);
                c->state = ST_DONE;
            }
        }
        break;
    }
    case ST_TRAINING: case ST_AGGREGATING:
        for (int i = 0; late && i < c->n_clients; i++) {
            client_rec_t *k = &c->clients[i];
            if (k->train == P_PENDING && (!c->conf->secagg || secagg_server_pending(c->sa, i)))
                coord_drop(c, k, "phase deadline passed");
        }
        if (c->conf->secagg) {
            sa_outcome_t o; /* grants uploads; the next phase once no member owes this one */
            secagg_server_step(c->sa, &o);
            on_secure_outcome(c, NULL, &o);
        } else if (training_pending(c) == 0) {
            finish_training(c);
        }
        break;
    case ST_EVALUATING:
        for (int i = 0; late && i < c->n_clients; i++)
            if (c->clients[i].eval == P_PENDING) coord_drop(c, &c->clients[i], "phase deadline passed");
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
    char err[PATH_MAX + 300];
    if (c->conf->roster[0]) {
        if (roster_load(c->conf->roster, &c->roster, err, sizeof err) < 0) {
            log_error("%s", err);
            return -1;
        }
        c->have_roster = 1;
    }
    if (c->conf->secagg && (!c->have_roster || !c->roster.all_have_pk)) {
        log_error("secure aggregation needs a roster with every site's identity public key "
                  "(--roster FILE, lines 'NAME PUBKEY'); or run with --secagg off");
        return -1;
    }
    if (c->conf->ca[0] && (!c->conf->secagg || !c->have_roster)) {
        log_error("--ca checks identity certificates in secure aggregation: it needs --secagg on "
                  "and a roster");
        return -1;
    }
    if (!c->conf->secagg) return 0;
    c->sa = secagg_server_new(c->conf, c->numel, sa_send, c, err, sizeof err);
    if (!c->sa) {
        log_error("%s", err);
        return -1;
    }
    if (c->conf->ca[0]) log_info("identity certificates: issued by the CA in %s", c->conf->ca);
    return 0;
}

/* The admin's CURVE public key: 64 hex digits, or a file holding them. */
static int load_admin_key(const char *v, uint8_t pk[32])
{
    char hex[80] = "";
    if (identity_pk_from_hex(pk, v) == 0) return 0;
    FILE *f = fopen(v, "r");
    if (f) {
        if (!fgets(hex, sizeof hex, f)) hex[0] = '\0';
        fclose(f);
        hex[strcspn(hex, " \r\n")] = '\0';
        if (identity_pk_from_hex(pk, hex) == 0) return 0;
    }
    log_error("admin_key: '%s' is neither 64 hex digits nor a file holding them", v);
    return -1;
}

/* Tells the watchers about each new phase, one line each. */
static void announce(coord_t *c)
{
    if (c->state == c->seen_state && c->round == c->seen_round && c->sa_phase == c->seen_sa_phase)
        return;
    c->seen_state = c->state;
    c->seen_sa_phase = c->sa_phase;
    c->seen_round = c->round;
    if (!c->admin) return;
    int cohort = 0;
    for (int i = 0; i < c->n_clients; i++) cohort += c->clients[i].train != P_IDLE;
    if (c->state == ST_WAITING && c->round >= c->target)
        admin_event(c, "round=%u phase=idle completed=%u val_accuracy=%.4f", c->round, c->version,
                    isfinite(c->last_accuracy) ? c->last_accuracy : 0.0);
    else
        admin_event(c, "round=%u phase=%s cohort=%d live=%d", c->round, coord_phase_name(c), cohort,
                    coord_live_count(c));
}

/* "KEY":{"ok":false,"reason":...} from the last logged error. */
static void check_fail(check_t *k, const char *key)
{
    const char *why = log_last_error();
    check_step(k, key, json_pack("{s:b,s:s}", "ok", 0, "reason", why), CHECK_FAIL, "%s", why);
}

int coord_check(const coord_conf_t *conf, int json)
{
    static coord_t c;
    memset(&c, 0, sizeof c);
    c.conf = conf;
    c.resumed_from = -1;
    global_changed(&c);
    c.clip = conf->clip;
    char title[256];
    snprintf(title, sizeof title, "medfed-coordinator %s --check (writes nothing)",
             medfed_version());
    check_t *k = check_new(title, json);
    if (!k) return 1;
    json_object_set_new(check_root(k), "config", json_string("ok"));
    check_step(k, "version", json_pack("{s:s,s:s,s:i,s:i}", "software", medfed_version(),
                                       "commit", medfed_git_commit(), "protocol", WIRE_VERSION,
                                       "protocol_min", WIRE_VERSION_MIN),
               CHECK_OK, "medfed %s (commit %s); admits sites of protocol version %d and %d",
               medfed_version(), medfed_git_commit(), WIRE_VERSION_MIN, WIRE_VERSION);
    if (load_model(&c) == 0)
        check_step(k, "model", json_pack("{s:b,s:s,s:I}", "ok", 1, "arch", c.arch, "params",
                                         (json_int_t)c.numel),
                   CHECK_OK, "%s: %s, %zu parameters", conf->init_model, c.arch, c.numel);
    else
        check_fail(k, "model");
    if (load_roster(&c) == 0)
        check_step(k, "roster", json_pack("{s:b,s:i,s:b}", "ok", 1, "sites", c.roster.n,
                                          "certificates", conf->ca[0] != 0),
                   CHECK_OK, "%d sites%s", c.roster.n,
                   conf->ca[0] ? "; site certificates checked against the CA" : "");
    else
        check_fail(k, "roster");
    if (conf->ca[0])
        check_certificate(k, "ca_certificate", conf->ca,
                          "make a new federation CA and re-issue every site's certificate");
    if (conf->curve_secret[0]) {
        uint8_t sk[CURVE_KEYBYTES];
        char err[512];
        if (keyfile_load(conf->curve_secret, sk, sizeof sk, err, sizeof err) == 0) {
            crypto_wipe(sk, sizeof sk);
            check_step(k, "transport", json_pack("{s:b,s:b}", "ok", 1, "curve", 1), CHECK_OK,
                       "CURVE, key %s", conf->curve_secret);
        } else {
            log_error("%s", err);
            check_fail(k, "transport");
        }
    } else {
        check_step(k, "transport", json_pack("{s:b,s:b}", "ok", 1, "curve", 0), CHECK_OK,
                   "plaintext (no curve_key): for tests on one machine only");
    }
    uint8_t admin_pk[32];
    if (!conf->admin_bind[0])
        check_step(k, "admin", json_pack("{s:b,s:n}", "ok", 1, "socket"), CHECK_OK,
                   "no admin socket (admin_bind unset)");
    else if (load_admin_key(conf->admin_key, admin_pk) == 0)
        check_step(k, "admin", json_pack("{s:b,s:s}", "ok", 1, "socket", conf->admin_bind),
                   CHECK_OK, "admin socket %s (CURVE, the admin key only)", conf->admin_bind);
    else
        check_fail(k, "admin");
    state_run_t run;
    int st = c.global ? state_peek(&c, &run, c.global) : -1;
    if (st == 1) resume_from(&c, &run);
    if (st == 1)
        check_step(k, "state", json_pack("{s:b,s:s,s:i,s:i,s:i}", "ok", 1, "dir", conf->out_dir,
                                         "resumes_after_round", (int)c.round, "completed",
                                         (int)c.committed, "target", (int)c.target),
                   CHECK_OK, "%s: resumes after round %u (%u completed, target %u)",
                   conf->out_dir, c.round, c.committed, c.target);
    else if (st == 0)
        check_step(k, "state", json_pack("{s:b,s:s,s:b}", "ok", 1, "dir", conf->out_dir,
                                         "new_run", 1),
                   CHECK_OK, "%s: a new run starts here", conf->out_dir);
    else if (c.global)
        check_fail(k, "state");
    secagg_server_free(&c.sa);
    schema_destroy(&c.schema);
    free(c.global);
    fedavg_destroy(&c.fedavg);
    return check_finish(&k);
}

int coord_run(const coord_conf_t *conf)
{
    static coord_t c; /* large (registry): not on the stack */
    memset(&c, 0, sizeof c);
    c.conf_live = *conf; /* medfed start --set changes the run's settings (coord_set) */
    c.conf = &c.conf_live;
    conf = c.conf;
    int rc = 1;
    char err[512];
    rng_seed(&c.rng, conf->seed ^ 0xC00Dull);
    c.resumed_from = -1;
    global_changed(&c);
    c.clip = conf->clip;
    c.fresh = 1;
    c.started_at = util_now();
    c.last_accuracy = c.last_auc = NAN;
    c.target = conf->autostart ? (uint32_t)conf->rounds : 0;
    if (load_model(&c) < 0 || load_roster(&c) < 0) goto out;
    if (conf->secagg && crypto_init() < 0) goto out;
    state_run_t run;
    if (state_open(&c, &run, c.global) < 0) goto out;
    c.metrics = run.metrics;
    if (run.resumed) resume_from(&c, &run);
    if (state_save(&c) < 0) goto out;
    if (conf->autostart && c.target < (uint32_t)conf->rounds)
        c.target = (uint32_t)conf->rounds; /* the config or command line says how far */
    if (c.paused && !conf->admin_bind[0]) {
        log_warn("state: the run was paused; without an admin socket it goes on");
        c.paused = 0;
    }
    if (c.round >= c.target && !conf->admin_bind[0])
        log_info("state: round %u of %u already ran: nothing to do (--resume off starts a new run)",
                 c.round, c.target);
    record_start(&c, run.resumed);
    c.zctx = zmq_ctx_new();
    /* CURVE encrypts and decrypts in ZeroMQ's I/O threads, one connection
     * per thread at a time: one thread was the coordinator's wall. */
    if (c.zctx) zmq_ctx_set(c.zctx, ZMQ_IO_THREADS, conf->io_threads);
    c.sock = zmq_socket(c.zctx, ZMQ_ROUTER);
    c.out = wire_buf_new();
    c.dec = wire_decoder_new();
    if (!c.zctx || !c.sock || !c.out || !c.dec) goto out;
    /* Bound every message before it is allocated: the model plus headroom. */
    int64_t maxmsg = (int64_t)c.numel * 4 + 65536;
    /* What the coordinator queues for one site: this many messages, past
     * which a send to it fails (ROUTER_MANDATORY) rather than grow without
     * bound. An honest site has at most a few: the phase's message and
     * FETCH_WINDOW (4) model chunks; a site asking for chunks it never reads
     * is held to 64 MiB. */
    int mandatory = 1, linger = 1000, hwm = SITE_SNDHWM;
    zmq_setsockopt(c.sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(c.sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    zmq_setsockopt(c.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c.sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    /* What one site can queue in the coordinator: this many messages (each
     * at most maxmsg); past it ZeroMQ stops reading that connection. An
     * honest site has at most a few in flight (heartbeats, one of the phase). */
    int rcvhwm = 16;
    zmq_setsockopt(c.sock, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    if (conf->curve_secret[0]) {
        uint8_t sk[CURVE_KEYBYTES];
        if (!c.have_roster || !c.roster.all_have_curve) {
            log_error("CURVE needs a roster with every site's CURVE key (third column)");
            goto out;
        }
        if (keyfile_load(conf->curve_secret, sk, sizeof sk, err, sizeof err) < 0) {
            log_error("%s", err);
            goto out;
        }
        int rc_curve = transport_curve_server(c.sock, sk);
        crypto_wipe(sk, sizeof sk);
        uint8_t admin_pk[32];
        if (conf->admin_key[0] && load_admin_key(conf->admin_key, admin_pk) < 0) goto out;
        c.zap = zap_start(c.zctx, &c.roster, conf->admin_key[0] ? admin_pk : NULL);
        if (rc_curve < 0 || !c.zap) {
            log_error("cannot enable CURVE: %s", zmq_strerror(errno));
            goto out;
        }
        log_info("transport: CURVE, %d sites on the roster", c.roster.n);
        if (c.conf->wait_for > (int)c.roster.n)
            log_warn("wait_for = %d, but the roster has %d sites: a run's first round starts "
                     "only after wait_timeout (%.0f s)", c.conf->wait_for, c.roster.n,
                     c.conf->wait_timeout);
    } else {
        log_warn("transport: plaintext (no --curve-secret): for loopback tests only");
    }
    c.monitor = transport_monitor_open(c.zctx, c.sock, "coordinator");
    if (!c.monitor) log_warn("no disconnect monitor: dead clients are noticed by heartbeat only");
    if (zmq_bind(c.sock, conf->bind) < 0) {
        log_error("cannot bind %s: %s", conf->bind, zmq_strerror(errno));
        goto out;
    }
    if (conf->admin_bind[0] && !(c.admin = admin_open(&c))) goto out;
    log_info("listening on %s, %s, waiting for %d clients", conf->bind,
             c.target > c.round ? "running" : "idle until `medfed start`", conf->wait_for);
    c.state = ST_WAITING;
    c.seen_state = ST_WAITING;
    c.seen_round = c.round;
    c.waiting_since = util_now();
    while (c.state != ST_DONE && !coord_stop) {
        /* Only the sockets there are: an item with a NULL socket is file
         * descriptor 0, and a closed or /dev/null stdin is always readable
         * (the loop would spin: seen as 3,400 polls a second while idle). */
        zmq_pollitem_t pi[3] = {{c.sock, 0, ZMQ_POLLIN, 0}};
        int np = 1, mon_i = -1, adm_i = -1;
        if (c.monitor) pi[mon_i = np++] = (zmq_pollitem_t){c.monitor, 0, ZMQ_POLLIN, 0};
        if (c.admin) pi[adm_i = np++] = (zmq_pollitem_t){admin_socket(c.admin), 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(pi, np, 100);
        if (n > 0 && mon_i >= 0 && (pi[mon_i].revents & ZMQ_POLLIN)) {
            int fd;
            while ((fd = transport_monitor_read(c.monitor)) >= 0) on_disconnect(&c, fd);
        }
        if (n > 0 && adm_i >= 0 && (pi[adm_i].revents & ZMQ_POLLIN)) admin_on_readable(&c);
        if (coord_reload) reload_roster(&c);
        n = n > 0 && (pi[0].revents & ZMQ_POLLIN);
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
                coord_reply_error(&c, k, &fr.from, c.round, ERR_MALFORMED, err);
                if (k && ((in_training(c.state) && k->train == P_PENDING) ||
                          (c.state == ST_EVALUATING && k->eval == P_PENDING)))
                    coord_drop(&c, k, "malformed message");
            } else {
                memcpy(c.cur_user_id, fr.user_id, sizeof c.cur_user_id);
                dispatch(&c, &fr.from, fr.srcfd, &m);
            }
            transport_frame_close(&fr);
            if (c.state == ST_DONE) break;
        }
        tick(&c); /* O(clients): cheap enough to run after every wake-up */
        announce(&c);
        health_tick(c.round, coord_phase_name(&c)); /* systemd: status line, watchdog */
    }
    if (c.state == ST_DONE && c.round >= c.target && !c.disk_error) rc = 0;
    if (coord_stop) {
        log_info("signal received -> stopping (state is saved: a restart resumes after round %u)",
                 c.round);
        if (c.admin) rc = 0;
    }
    /* Without an admin socket the run is the process: tell every site it is
     * over. A deployed coordinator leaves the sites waiting for its restart. */
    for (int i = 0; !c.admin && i < c.n_clients; i++) {
        msg_t s = {.type = MSG_SHUTDOWN, .round = c.round};
        if (c.clients[i].live) coord_send(&c, &c.clients[i], NULL, &s);
    }
    /* Stay until the sites have gone (each closes its connection on
     * SHUTDOWN), at most 5 s, saying SHUTDOWN again each second: closing
     * first could cut a connection before its SHUTDOWN was read (seen:
     * a site left retrying for ever). A site whose link dropped in the last
     * heartbeat_timeout is likely reconnecting: stay for it too, and answer
     * whatever a peer that is not live sends (its HELLO) with SHUTDOWN. */
    for (double t0 = util_now(), last = t0; !c.admin && c.monitor && util_now() - t0 < 5;) {
        int live = 0, returning = 0;
        for (int i = 0; i < c.n_clients; i++) {
            const client_rec_t *k = &c.clients[i];
            live += k->live;
            returning += (!k->live && !k->removed && !k->told_bye && k->lost_at > 0 &&
                          t0 - k->lost_at < c.conf->heartbeat_timeout) ||
                         k->told_bye == 1; /* told: stay until it closes, or SHUTDOWN is lost */
        }
        if (!live && !returning) break;
        zmq_pollitem_t pi[2] = {{c.sock, 0, ZMQ_POLLIN, 0}, {c.monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(pi, 2, 100) > 0) {
            int fd;
            if (pi[1].revents & ZMQ_POLLIN)
                while ((fd = transport_monitor_read(c.monitor)) >= 0)
                    for (int i = 0; i < c.n_clients; i++) { /* gone, as asked: no warning */
                        if (c.clients[i].live && c.clients[i].fd == fd) c.clients[i].live = 0;
                        if (c.clients[i].told_bye == 1 && c.clients[i].bye_fd == fd)
                            c.clients[i].told_bye = 2;
                    }
            wire_frame_t fr;
            while ((pi[0].revents & ZMQ_POLLIN) && transport_recv(c.sock, 1, &fr, 1) == 0) {
                /* Late heartbeats and results: the run is over. A peer that is
                 * not live (a site back from a dropped link) hears it now. */
                client_rec_t *k = find_by_id(&c, &fr.from);
                if (!k || !k->live) {
                    msg_t s = {.type = MSG_SHUTDOWN, .round = c.round};
                    coord_send(&c, NULL, &fr.from, &s);
                    char site[WIRE_SITE_MAX]; /* ZAP bound the key as "SITE/KEYHEX16" */
                    snprintf(site, sizeof site, "%.*s", (int)strcspn(fr.user_id, "/"), fr.user_id);
                    client_rec_t *b = site[0] ? find_by_site(&c, site) : NULL;
                    if (b && !b->told_bye) {
                        b->told_bye = 1;
                        b->bye_fd = fr.srcfd;
                    }
                    log_info("site=%s event=shutdown-on-return (it reconnected as the run ended)",
                             site[0] ? site : "?");
                }
                transport_frame_close(&fr);
            }
        }
        if (util_now() - last >= 1) {
            last = util_now();
            for (int i = 0; i < c.n_clients; i++) {
                msg_t s = {.type = MSG_SHUTDOWN, .round = c.round};
                if (c.clients[i].live) coord_send(&c, &c.clients[i], NULL, &s);
            }
        }
    }
    /* Every finished round is already saved; a deployed coordinator leaves the
     * state directory exactly as the last commit made it. */
    if (!c.admin && c.version > 0 && save_model(&c) < 0) rc = 1;
    /* Give the SHUTDOWN messages time to leave: under load the default 1 s
     * linger was seen to drop one, leaving that daemon waiting. */
    int shutdown_linger = 5000;
    zmq_setsockopt(c.sock, ZMQ_LINGER, &shutdown_linger, sizeof shutdown_linger);
out:
    record_end(&c);
    for (int i = 0; i < c.n_clients; i++) unstage(&c.clients[i]);
    admin_close(&c.admin);
    if (c.monitor) {
        zmq_socket_monitor(c.sock, NULL, 0);
        zmq_close(c.monitor);
    }
    if (c.sock) zmq_close(c.sock);
    zap_stop(&c.zap);
    if (c.zctx) zmq_ctx_term(c.zctx);
    forget_sends(&c); /* after the context: ZeroMQ holds references until then */
    if (c.metrics) fclose(c.metrics);
    wire_buf_destroy(&c.out);
    wire_decoder_destroy(&c.dec);
    fedavg_destroy(&c.fedavg);
    secagg_server_free(&c.sa);
    schema_destroy(&c.schema);
    free(c.global);
    return rc;
}
