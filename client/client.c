/*
 * client.c - the client daemon's event loop.
 *
 * The coordinator drives; the client reacts. One handler per message type:
 *   WELCOME     -> remember our id
 *   PLAN        -> load the global model, train locally, send UPDATE (delta)
 *   EVAL        -> load the global model, evaluate on the val split, send EVAL_RESULT
 *   SHUTDOWN    -> exit 0
 *   ERROR       -> log; fatal codes (version, unknown client, full) exit
 * Between messages, and during training, a HEARTBEAT goes out every
 * `heartbeat` seconds so a long local epoch is never mistaken for a dropout.
 */
#include "client/client.h"
#include "client/internal.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "aggregation/metrics.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/crypto.h"
#include "model/model.h"
#include "proto/transport.h"

volatile sig_atomic_t client_stop = 0;


void client_maybe_die(const client_t *c, const char *phase, uint32_t round)
{
    if (c->die_at && c->die_at->phase[0] && strcmp(c->die_at->phase, phase) == 0 &&
        c->die_at->round == round) {
        log_warn("round=%u phase=%s event=die-at -> SIGKILL (fault injection)", round, phase);
        raise(SIGKILL);
    }
}

int client_send(client_t *c, const msg_t *m)
{
    long long n = transport_send(c->sock, NULL, m, c->out, 0);
    if (n < 0) {
        log_warn("send %s failed: %s", msg_type_name(m->type), zmq_strerror(errno));
        return -1;
    }
    c->last_sent = util_now();
    return 0;
}

void client_send_error(client_t *c, uint32_t round, msg_error_t code, const char *why)
{
    msg_t e;
    msg_error(&e, round, code, "%s", why);
    log_warn("round=%u error sent: %s", round, why);
    client_send(c, &e);
}

static void send_hello(client_t *c)
{
    msg_t m = {.type = MSG_HELLO, .version = WIRE_VERSION, .n_train = c->train.n,
               .n_val = c->val.n};
    util_strlcpy(m.site, c->conf->site, sizeof m.site);
    if (client_send(c, &m) == 0) log_debug("hello sent");
}

static void send_heartbeat(client_t *c)
{
    msg_t m = {.type = MSG_HEARTBEAT, .round = c->round, .phase = c->phase};
    transport_send(c->sock, NULL, &m, c->out, 1);
    c->last_sent = util_now();
}

/* Training progress: keep the coordinator informed, and stop on SIGTERM. */
static int on_progress(void *user, int epoch, int64_t images_done)
{
    (void)epoch;
    (void)images_done;
    client_t *c = user;
    if (util_now() - c->last_sent >= c->conf->heartbeat) send_heartbeat(c);
    return client_stop ? 1 : 0;
}

/* Makes sure c->model matches the spec in m and c->global holds version
 * m->model_version. Returns 0, or -1 after sending an ERROR. */
static int load_global(client_t *c, const msg_t *m)
{
    char err[MODEL_ERR_MAX];
    if (m->in_channels != (uint32_t)c->train.channels || m->height != (uint32_t)c->train.height ||
        m->width != (uint32_t)c->train.width) {
        snprintf(err, sizeof err, "local data is %dx%dx%d, model needs %ux%ux%u", c->train.channels,
                 c->train.height, c->train.width, m->in_channels, m->height, m->width);
        client_send_error(c, m->round, ERR_LOCAL, err);
        return -1;
    }
    const model_spec_t *have = c->model ? model_get_spec(c->model) : NULL;
    if (!have || strcmp(have->arch, m->arch) != 0 || have->classes != (int)m->classes ||
        have->in_channels != (int)m->in_channels || have->height != (int)m->height ||
        have->width != (int)m->width) {
        model_spec_t spec = {.in_channels = (int)m->in_channels, .height = (int)m->height,
                             .width = (int)m->width, .classes = (int)m->classes};
        util_strlcpy(spec.arch, m->arch, sizeof spec.arch);
        model_destroy(&c->model);
        free(c->global);
        free(c->work);
        free(c->masked_buf);
        c->global = c->work = NULL;
        c->masked_buf = NULL;
        c->have_global = 0;
        c->model = model_new(&spec, 0, err, sizeof err);
        if (!c->model) {
            client_send_error(c, m->round, ERR_LOCAL, err);
            return -1;
        }
        c->numel = model_numel(c->model);
        c->global = malloc(c->numel * sizeof(float));
        c->work = malloc(c->numel * sizeof(float));
        if (!c->global || !c->work) {
            client_send_error(c, m->round, ERR_LOCAL, "out of memory for the model");
            model_destroy(&c->model);
            return -1;
        }
        for (int64_t i = 0; i < c->train.n; i++) {
            if (c->train.y[i] < 0 || c->train.y[i] >= (int32_t)m->classes) {
                snprintf(err, sizeof err, "a local label is outside [0, %u)", m->classes);
                client_send_error(c, m->round, ERR_LOCAL, err);
                model_destroy(&c->model);
                return -1;
            }
        }
    }
    if (m->numel != c->numel) {
        snprintf(err, sizeof err, "model has %zu parameters here, coordinator says %llu", c->numel,
                 (unsigned long long)m->numel);
        client_send_error(c, m->round, ERR_WRONG_LENGTH, err);
        return -1;
    }
    if (m->present & MSG_HAS_VEC) {
        if (m->vec_len != c->numel * 4) {
            snprintf(err, sizeof err, "model vector has %zu bytes, expected %zu", m->vec_len,
                     c->numel * 4);
            client_send_error(c, m->round, ERR_WRONG_LENGTH, err);
            return -1;
        }
        memcpy(c->global, m->vec, m->vec_len); /* aligned copy out of the frame */
        c->global_version = m->model_version;
        c->have_global = 1;
    } else if (!c->have_global || c->global_version != m->model_version) {
        snprintf(err, sizeof err, "no copy of global model version %u here", m->model_version);
        client_send_error(c, m->round, ERR_LOCAL, err);
        return -1;
    }
    if (model_set_params(c->model, c->global, c->numel) < 0) {
        client_send_error(c, m->round, ERR_LOCAL, model_errmsg(c->model));
        return -1;
    }
    return 0;
}

static void on_plan(client_t *c, const msg_t *m)
{
    if (m->round <= c->last_plan_round) {
        char why[96];
        snprintf(why, sizeof why, "plan for round %u after round %u: stale or replayed", m->round,
                 c->last_plan_round);
        client_send_error(c, m->round, ERR_WRONG_ROUND, why);
        return;
    }
    c->last_plan_round = m->round;
    c->round = m->round;
    sa_client_reset(c); /* a new round: whatever the last one left is wiped */
    c->phase = PHASE_TRAIN;
    log_info("round=%u phase=train event=plan epochs=%u batch=%u lr=%g", m->round, m->epochs,
             m->batch, m->lr);
    client_maybe_die(c, "train", m->round);
    if (load_global(c, m) < 0) return;
    if (m->epochs > 1000 || m->batch < 1 || m->batch > 65536 ||
        !(m->lr > 0 && m->lr < 100) || !(m->momentum >= 0 && m->momentum < 1) ||
        !(m->weight_decay >= 0 && m->weight_decay < 1)) {
        client_send_error(c, m->round, ERR_MALFORMED, "hyper-parameters out of range");
        return;
    }
    model_train_opts_t opts = {
        .epochs = (int)m->epochs, .batch = (int)m->batch, .lr = (float)m->lr,
        .momentum = (float)m->momentum, .weight_decay = (float)m->weight_decay,
        .seed = m->seed + 0x9E3779B97F4A7C15ull * (c->client_id + 1),
        .progress = on_progress, .progress_user = c, .progress_every = 256,
    };
    model_data_t data = {c->train.x, c->train.y, c->train.n};
    model_result_t res = {0};
    double t0 = util_now();
    /* epochs = 0: no local training (protocol benchmarks): a zero update. */
    if (m->epochs > 0 && model_train(c->model, &data, &opts, &res) < 0) {
        client_send_error(c, m->round, ERR_LOCAL, model_errmsg(c->model));
        return;
    }
    double secs = util_now() - t0;
    if (model_get_params(c->model, c->work, c->numel) < 0) {
        client_send_error(c, m->round, ERR_LOCAL, model_errmsg(c->model));
        return;
    }
    for (size_t i = 0; i < c->numel; i++) c->work[i] -= c->global[i];
    if (m->present & MSG_HAS_SECAGG) {
        log_info("round=%u phase=train event=trained loss=%.4f train_s=%.2f", m->round,
                 res.train_loss, secs);
        sa_client_advertise(c, m, secs);
        return;
    }
    client_maybe_die(c, "upload", m->round);
    msg_t u = {.type = MSG_UPDATE, .round = m->round, .phase = PHASE_TRAIN,
               .n_samples = c->train.n, .loss_sum = res.train_loss, .train_seconds = secs,
               .vec = (const uint8_t *)c->work, .vec_len = c->numel * 4, .present = MSG_HAS_VEC};
    if (client_send(c, &u) == 0)
        log_info("round=%u phase=train event=update-sent n=%lld loss=%.4f train_s=%.2f",
                 m->round, (long long)c->train.n, res.train_loss, secs);
    c->phase = PHASE_NONE;
}

static void on_eval(client_t *c, const msg_t *m)
{
    if (m->round < c->last_eval_round || (m->round == c->last_eval_round && m->round != 0)) {
        client_send_error(c, m->round, ERR_WRONG_ROUND, "evaluation request is stale or replayed");
        return;
    }
    c->last_eval_round = m->round;
    c->round = m->round;
    c->phase = PHASE_EVAL;
    client_maybe_die(c, "eval", m->round);
    if (load_global(c, m) < 0) return;
    model_result_t res = {0};
    uint32_t hist[2 * WIRE_HIST_BINS];
    memset(hist, 0, sizeof hist);
    if (c->val.n > 0) {
        model_data_t data = {c->val.x, c->val.y, c->val.n};
        if (model_evaluate(c->model, &data, 256, &res, c->scores) < 0) {
            client_send_error(c, m->round, ERR_LOCAL, model_errmsg(c->model));
            return;
        }
        if (m->classes == 2)
            metrics_hist_add(hist, hist + WIRE_HIST_BINS, WIRE_HIST_BINS, c->scores, c->val.y,
                             c->val.n);
    }
    msg_t r = {.type = MSG_EVAL_RESULT, .round = m->round, .phase = PHASE_EVAL,
               .n_samples = res.n, .loss_sum = res.loss_sum, .correct = res.correct};
    if (m->classes == 2) {
        r.hist = (const uint8_t *)hist;
        r.hist_len = sizeof hist;
        r.present |= MSG_HAS_HIST;
    }
    if (client_send(c, &r) == 0)
        log_info("round=%u phase=eval event=result-sent n=%lld", m->round, (long long)res.n);
    c->phase = PHASE_NONE;
}

/* Returns 1 to stop the loop (with *rc set), 0 to go on. */
static int dispatch(client_t *c, const msg_t *m, int *rc)
{
    switch (m->type) {
    case MSG_WELCOME:
        if (c->roster && roster_find(c->roster, c->conf->site) != (int)m->client_id) {
            log_error("coordinator gave id %u, our roster says %d: roster files differ",
                      m->client_id, roster_find(c->roster, c->conf->site));
            *rc = 2;
            return 1;
        }
        c->client_id = m->client_id;
        c->welcomed = 1;
        log_info("event=welcome client_id=%u", m->client_id);
        return 0;
    case MSG_PLAN: on_plan(c, m); return 0;
    case MSG_EVAL: on_eval(c, m); return 0;
    case MSG_KEYS: case MSG_SHARES_IN: case MSG_UPLOAD: case MSG_UNMASK_REQ:
        sa_client_on_message(c, m);
        return 0;
    case MSG_SHUTDOWN:
        log_info("event=shutdown -> exit");
        *rc = 0;
        return 1;
    case MSG_ERROR:
        log_warn("round=%u coordinator error %u: %s", m->round, m->code, m->reason);
        if (m->code == ERR_VERSION || m->code == ERR_FULL || m->code == ERR_UNKNOWN_CLIENT) {
            *rc = 2;
            return 1;
        }
        return 0;
    default:
        log_warn("unexpected %s from coordinator, ignored", msg_type_name(m->type));
        return 0;
    }
}

static int load_data(client_t *c)
{
    char err[1024];
    datasource_t *ds = datasource_open(&c->conf->data, err, sizeof err);
    if (!ds) {
        log_error("%s", err);
        return -1;
    }
    int rc = -1;
    if (datasource_load(ds, DATA_TRAIN, &c->train, err, sizeof err) < 0 ||
        datasource_load(ds, DATA_VAL, &c->val, err, sizeof err) < 0) {
        log_error("data: %s", err);
        goto out;
    }
    if (c->train.n == 0) {
        log_error("data: the training split is empty");
        goto out;
    }
    if (c->val.n > 0 && (c->val.channels != c->train.channels ||
                         c->val.height != c->train.height || c->val.width != c->train.width)) {
        log_error("data: validation images are not the size of the training images");
        goto out;
    }
    c->scores = malloc((size_t)(c->val.n ? c->val.n : 1) * sizeof(float));
    if (!c->scores) goto out;
    log_info("data: source=%s train=%lld val=%lld size=%dx%dx%d", datasource_kind(ds),
             (long long)c->train.n, (long long)c->val.n, c->train.channels, c->train.height,
             c->train.width);
    rc = 0;
out:
    datasource_destroy(&ds);
    return rc;
}

/* Secure aggregation needs the site's identity key and the federation roster. */
static int load_identity(client_t *c)
{
    char err[512];
    if (crypto_init() < 0) {
        log_error("crypto library failed to initialise");
        return -1;
    }
    const client_conf_t *cf = c->conf;
    if (!cf->identity[0] && !cf->roster[0] && !cf->ca[0]) return 0;
    if (!cf->identity[0] || (!cf->roster[0] && !cf->ca[0])) {
        log_error("%s: [client] identity goes with roster, or with ca and certificate",
                  cf->data.file);
        return -1;
    }
    c->identity_sk = crypto_secure_alloc(IDENTITY_SECRETKEYBYTES);
    if (!c->identity_sk) return -1;
    if (identity_load_secret(cf->identity, c->identity_sk, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    uint8_t pk[IDENTITY_PUBLICKEYBYTES];
    identity_pk_of(pk, c->identity_sk);
    /* Certificates: peers are checked against the CA, no roster needed. */
    if (cf->ca[0] && sa_client_load_cert(c, pk) < 0) return -1;
    if (!cf->roster[0]) return 0;
    c->roster = malloc(sizeof *c->roster);
    if (!c->roster) return -1;
    if (roster_load(cf->roster, c->roster, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    int me = roster_find(c->roster, c->conf->site);
    if (me < 0 || !c->roster->site[me].has_pk || !crypto_equal(pk, c->roster->site[me].pk, sizeof pk)) {
        log_error("%s: site '%s' is missing from the roster or its key differs from %s",
                  c->conf->roster, c->conf->site, c->conf->identity);
        return -1;
    }
    return 0;
}

int client_run(const client_conf_t *conf, const client_die_at_t *die_at)
{
    client_t c = {.conf = conf, .die_at = die_at};
    int rc = 1;
    model_set_threads(conf->threads);
    if (load_data(&c) < 0 || load_identity(&c) < 0) goto out;

    c.zctx = zmq_ctx_new();
    c.sock = zmq_socket(c.zctx, ZMQ_DEALER);
    c.out = wire_buf_new();
    c.dec = wire_decoder_new();
    if (!c.zctx || !c.sock || !c.out || !c.dec) goto out;
    int linger = 2000, immediate = 1, sndtimeo = 60000;
    zmq_setsockopt(c.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c.sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    zmq_setsockopt(c.sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    if (conf->curve_key[0]) {
        uint8_t sk[CURVE_KEYBYTES], pk[CURVE_KEYBYTES], server[CURVE_KEYBYTES];
        char err[512];
        if (keyfile_load(conf->curve_key, sk, sizeof sk, err, sizeof err) < 0) {
            log_error("%s", err);
            goto out;
        }
        int ok = identity_pk_from_hex(server, conf->coordinator_key) == 0 &&
                 curve_pk_of(pk, sk) == 0 && transport_curve_client(c.sock, server, pk, sk) == 0;
        crypto_wipe(sk, sizeof sk);
        if (!ok) {
            log_error("%s: coordinator_key must be 64 lower-case hex digits", conf->data.file);
            goto out;
        }
        log_info("transport: CURVE");
    }
    if (zmq_connect(c.sock, conf->coordinator) < 0) {
        log_error("cannot connect to %s: %s", conf->coordinator, zmq_strerror(errno));
        goto out;
    }
    log_info("site=%s connecting to %s", conf->site, conf->coordinator);

    double last_hello = -1e9;
    while (!client_stop) {
        double now = util_now();
        if (!c.welcomed && now - last_hello >= 2.0) {
            send_hello(&c);
            last_hello = now;
        } else if (c.welcomed && now - c.last_sent >= conf->heartbeat) {
            send_heartbeat(&c);
        }
        zmq_pollitem_t pi = {c.sock, 0, ZMQ_POLLIN, 0};
        long timeout_ms = (long)(conf->heartbeat * 1000);
        if (!c.welcomed && timeout_ms > 500) timeout_ms = 500;
        int n = zmq_poll(&pi, 1, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("poll failed: %s", zmq_strerror(errno));
            goto out;
        }
        if (n == 0) continue;
        wire_frame_t fr;
        if (transport_recv(c.sock, 0, &fr, 1) < 0) {
            if (errno != EAGAIN) log_warn("dropped a malformed frame from the coordinator");
            continue;
        }
        msg_t m;
        char err[256];
        if (msg_decode(c.dec, transport_frame_data(&fr), fr.bytes, &m, err, sizeof err) < 0) {
            log_warn("malformed message from the coordinator: %s", err);
            transport_frame_close(&fr);
            continue;
        }
        int stop = dispatch(&c, &m, &rc);
        transport_frame_close(&fr);
        if (stop) goto out;
    }
    log_info("signal received -> exit");
    rc = 0;
out:
    if (c.sock) zmq_close(c.sock);
    if (c.zctx) zmq_ctx_term(c.zctx);
    wire_buf_destroy(&c.out);
    wire_decoder_destroy(&c.dec);
    sa_client_reset(&c);
    free(c.masked_buf);
    if (c.identity_sk) crypto_secure_free(c.identity_sk);
    sa_client_free_cert(&c);
    free(c.roster);
    model_destroy(&c.model);
    free(c.global);
    free(c.work);
    free(c.scores);
    dataset_free(&c.train);
    dataset_free(&c.val);
    return rc;
}
