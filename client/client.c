/*
 * client.c - the client daemon's event loop.
 *
 * The coordinator drives; the client reacts. One handler per message type:
 *   WELCOME     -> remember our id
 *   PLAN        -> load the global model, train locally, send UPDATE (delta)
 *   EVAL        -> load the global model, evaluate on the val split, send EVAL_RESULT
 *   SHUTDOWN    -> exit 0
 *   ERROR       -> log; NOT_REGISTERED: HELLO again; VERSION (a rolling
 *                  upgrade): HELLO again after version_retry s, doubling up
 *                  to 8x, never giving up; refusals (unknown client, full) exit 2
 * Between messages, and during training, a HEARTBEAT goes out every
 * `heartbeat` seconds so a long local epoch is never mistaken for a dropout.
 *
 * The connection, as a socket monitor reports it (one log line per change):
 *   handshake done   -> "connected" / "reconnected", HELLO (a restarted
 *                       coordinator has no registry; a new TCP connection
 *                       is a new peer to it anyway)
 *   disconnected     -> "coordinator unreachable, retrying with backoff";
 *                       the round we were in is abandoned (training stops,
 *                       secure-aggregation secrets are wiped): the
 *                       coordinator counts us as dropped from it
 *   connect retried  -> ZeroMQ retries, the interval doubling from 1 s up to
 *                       `reconnect_max`; ZMTP heartbeats declare a silent TCP
 *                       path dead after `link_timeout`
 *   CURVE key refused by the coordinator's ZAP handler -> exit 2
 */
#include "client/client.h"
#include "client/internal.h"
#include "client/policy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "aggregation/metrics.h"
#include "common/health.h"
#include "common/log.h"
#include "common/util.h"
#include "common/version.h"
#include "common/vecshare.h"
#include "crypto/crypto.h"
#include "model/model.h"
#include "proto/transport.h"

volatile sig_atomic_t client_stop = 0;


#ifdef MEDFED_TEST_HOOKS
int client_maybe_die(const client_t *c, const char *phase, uint32_t round)
{
    if (!c->die_at || !c->die_at->phase[0] || strcmp(c->die_at->phase, phase) != 0 ||
        c->die_at->round != round)
        return 0;
    if (c->die_at->stall) {
        log_warn("round=%u phase=%s event=stall-at -> sends nothing (fault injection)", round,
                 phase);
        return 1;
    }
    log_warn("round=%u phase=%s event=die-at -> SIGKILL (fault injection)", round, phase);
    /* "train": dying in training, after the site said it has the model; that
     * message leaves from ZeroMQ's I/O thread, given a moment (a site dying
     * before it may resume its download and keep its place, v4). */
    if (strcmp(phase, "train") == 0) nanosleep(&(struct timespec){.tv_nsec = 200000000}, NULL);
    raise(SIGKILL);
    return 1;
}
#endif

int client_send(client_t *c, const msg_t *m)
{
    /* No connection: fail at once rather than wait for one (ZMQ_IMMEDIATE). */
    long long n = transport_send(c->sock, NULL, m, c->out, !c->link_up);
    if (n < 0) {
        log_warn("send %s failed: %s", msg_type_name(m->type), zmq_strerror(errno));
        return -1;
    }
    c->last_sent = util_now();
    return 0;
}

int client_send_upload(client_t *c, const msg_t *m)
{
    if (c->proto < 4 || m->vec_len <= WIRE_CHUNK_BYTES) return client_send(c, m);
    /* v4: the vector in PARTs, then the message without it. Blocking sends:
     * ZeroMQ queues up to its high-water mark, then waits for the link. */
    for (size_t off = 0; off < m->vec_len; off += WIRE_CHUNK_BYTES) {
        size_t n = m->vec_len - off < WIRE_CHUNK_BYTES ? m->vec_len - off : WIRE_CHUNK_BYTES;
        msg_t p = {.type = MSG_PART, .round = m->round, .phase = m->phase, .offset = off,
                   .bulk_len = m->vec_len, .vec = m->vec + off, .vec_len = n,
                   .present = MSG_HAS_VEC};
        if (client_send(c, &p) < 0) return -1;
    }
    msg_t last = *m;
    last.bulk_len = m->vec_len;
    last.vec = NULL;
    last.vec_len = 0;
    last.present = (m->present & ~MSG_HAS_VEC) | MSG_HAS_BULK;
    return client_send(c, &last);
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
    msg_t m = {.type = MSG_HELLO, .version = c->proto, .n_train = c->train.n,
               .n_val = c->val.n};
    util_strlcpy(m.site, c->conf->site, sizeof m.site);
    if (c->proto >= 3) { /* a v2 coordinator knows no "sw" */
        util_strlcpy(m.sw, medfed_version(), sizeof m.sw);
        m.present |= MSG_HAS_SW;
    }
    c->last_hello = util_now();
    if (transport_send(c->sock, NULL, &m, c->out, 1) >= 0) {
        c->last_sent = c->last_hello;
        log_debug("hello sent");
    }
}

static void send_heartbeat(client_t *c)
{
    msg_t m = {.type = MSG_HEARTBEAT, .round = c->round, .phase = c->phase};
    if (c->proto >= 3 && c->phase == PHASE_TRAIN && c->train_total > 0) {
        m.done = c->train_done;
        m.total = c->train_total;
        m.present |= MSG_HAS_PROGRESS;
    }
    transport_send(c->sock, NULL, &m, c->out, 1);
    c->last_sent = util_now();
}

/* ---- the connection ---------------------------------------------------------- */

#define LINK_EVENTS (ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED | \
                     ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | \
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

/* Whatever round we were in is over for us: its secrets are wiped, and the
 * coordinator hears from us again only after a fresh HELLO. */
static void leave_round(client_t *c, const char *why)
{
    if (c->phase != PHASE_NONE || c->sa) {
        log_warn("round=%u phase=%s event=left-round reason=\"%s\"", c->round,
                 msg_phase_name(c->phase), why);
        c->round_lost = 1;
    }
    sa_client_reset(c);
    c->update_waiting = 0;
    client_drop_work(c);
    client_drop_upload(c);
    c->phase = PHASE_NONE;
    c->welcomed = 0;
    c->fetch.active = 0; /* what arrived stays, for the PLAN or EVAL sent again */
}

static void on_link_event(client_t *c, int event, uint32_t value)
{
    const char *ep = c->conf->coordinator;
    switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        if (c->link_up) return;
        c->link_up = 1;
        c->link_fd = -1; /* learnt from the first message on it */
        c->rx_grew_at = util_now();
        if (c->ever_up)
            log_info("event=reconnected coordinator=%s down_s=%.1f -> hello", ep,
                     util_now() - c->link_down_since);
        else
            log_info("event=connected coordinator=%s -> hello", ep);
        c->ever_up = 1;
        c->link_warned = 0;
        if (util_now() >= c->hello_not_before) send_hello(c); /* else after the back-off */
        return;
    case ZMQ_EVENT_DISCONNECTED:
        if (!c->link_up) return; /* a handshake that failed: reported below */
        c->link_up = 0;
        c->link_down_since = util_now();
        c->link_warned = 1;
        log_warn("event=disconnected coordinator %s unreachable, retrying with backoff "
                 "(up to %.0f s)", ep, c->conf->reconnect_max);
        leave_round(c, "connection to the coordinator lost");
        return;
    case ZMQ_EVENT_CONNECT_RETRIED:
        if (!c->link_warned) {
            c->link_warned = 1;
            if (!c->link_down_since) c->link_down_since = util_now();
            log_warn("event=unreachable coordinator %s unreachable, retrying with backoff "
                     "(up to %.0f s)", ep, c->conf->reconnect_max);
        }
        log_debug("event=retry next_attempt_ms=%u", value);
        return;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        log_error("the coordinator at %s refused this site's CURVE key (ZAP status %u): "
                  "is the site on its roster with this curve_key?", ep, value);
        c->exit_code = 2;
        return;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if (!c->link_warned) {
            c->link_warned = 1;
            log_warn("event=handshake-failed coordinator %s: check coordinator_key; retrying",
                     ep);
        }
        return;
    }
}

/* A path silent for link_timeout (nothing received: no message, no ZMTP
 * PONG, no byte of a message still arriving) is dead: drop the connection and
 * dial again, as ZeroMQ does when a connection closes. */
static void check_link(client_t *c)
{
    if (!c->link_up || !c->mon) return;
    double now = util_now();
    uint64_t rx;
    if (c->link_fd >= 0 && now - c->rx_checked_at >= 1.0 &&
        transport_fd_rx_bytes(c->link_fd, &rx) == 0) {
        if (rx != c->rx_bytes) c->rx_grew_at = now;
        c->rx_bytes = rx;
        c->rx_checked_at = now;
    }
    if (now - c->rx_grew_at <= c->conf->link_timeout) return;
    const char *ep = c->conf->coordinator;
    c->link_up = 0;
    c->link_down_since = now;
    c->link_warned = 1;
    log_warn("event=disconnected coordinator %s silent for %.0f s (nothing received), "
             "reconnecting with backoff (up to %.0f s)", ep, now - c->rx_grew_at,
             c->conf->reconnect_max);
    leave_round(c, "connection to the coordinator lost");
    if (zmq_disconnect(c->sock, ep) < 0 || zmq_connect(c->sock, ep) < 0)
        log_warn("reconnect to %s: %s", ep, zmq_strerror(errno));
}

/* Reads every waiting monitor event (non-blocking). */
static void poll_link(client_t *c)
{
    int event;
    uint32_t value;
    while (c->mon && transport_monitor_next(c->mon, &event, &value) == 0)
        on_link_event(c, event, value);
    check_link(c);
}

/* Training progress: keep the coordinator informed; stop on SIGTERM or when
 * the connection (and with it our place in the round) is lost. */
static int on_progress(void *user, int epoch, int64_t images_done)
{
    client_t *c = user;
    health_tick(c->round, "train");
    if (epoch >= 1 && images_done >= 0)
        c->train_done = (uint64_t)(epoch - 1) * (uint64_t)c->train.n + (uint64_t)images_done;
    poll_link(c);
    if (c->link_up && util_now() - c->last_sent >= c->conf->heartbeat) send_heartbeat(c);
    /* The coordinator sends a training site nothing but an ERROR or, as the
     * run ends, SHUTDOWN: look. SHUTDOWN stops the training and the daemon
     * (it would be lost with the connection that closes right after);
     * anything else waits for the event loop. */
    if (!c->has_held && transport_recv(c->sock, 0, &c->held, 1) == 0) {
        msg_t m;
        char err[256];
        if (msg_decode(c->dec, transport_frame_data(&c->held), c->held.bytes, &m, err,
                       sizeof err) == 0 && m.type == MSG_SHUTDOWN) {
            log_info("event=shutdown -> exit (during training)");
            transport_frame_close(&c->held);
            c->exit_code = 0;
        } else {
            c->has_held = 1;
        }
    }
    return client_stop || c->round_lost || c->exit_code >= 0;
}

/* Forgets the global model (the daemon frees its copy, a hosted client its
 * reference to the shared one). */
static void fetch_forget(client_t *c);

static void drop_global(client_t *c)
{
    fetch_forget(c); /* a daemon's fetch lands in global_buf */
    if (c->host) vecshare_put((const void **)&c->global);
    free(c->global_buf);
    c->global = c->global_buf = NULL;
    c->have_global = 0;
}

/* Makes sure c->model matches the spec in m (built anew, with its buffers,
 * when the architecture changes). Returns 0, or -1 after sending an ERROR. */
static int prepare_model(client_t *c, const msg_t *m)
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
        drop_global(c);
        free(c->work);
        free(c->masked_buf);
        c->work = NULL;
        c->masked_buf = NULL;
        c->model = model_new(&spec, 0, err, sizeof err);
        if (!c->model) {
            client_send_error(c, m->round, ERR_LOCAL, err);
            return -1;
        }
        c->numel = model_numel(c->model);
        /* A hosted client shares the global model and makes its work
         * buffer when it trains (client_drop_work). */
        if (!c->host) {
            c->global = c->global_buf = malloc(c->numel * sizeof(float));
            c->work = malloc(c->numel * sizeof(float));
        }
        if (!c->host && (!c->global_buf || !c->work)) {
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
    return 0;
}

/* Makes len bytes, as they arrived, this site's global model of that version.
 * Hosted, they are shared with the host's other sites (one copy); else they
 * go to global_buf, unless they landed there already (a fetch). hash: their
 * SHA-256 when known, else NULL (computed when first needed). -1, the error
 * sent: out of memory. */
static int install_global(client_t *c, uint32_t round, const void *bytes, size_t len,
                          uint32_t version, const uint8_t hash[CRYPTO_HASHBYTES])
{
    if (c->host) {
        const float *shared = vecshare_get(bytes, len);
        if (!shared) {
            client_send_error(c, round, ERR_LOCAL, "out of memory for the model");
            return -1;
        }
        vecshare_put((const void **)&c->global);
        c->global = shared;
    } else if ((const void *)c->global_buf != bytes) {
        memcpy(c->global_buf, bytes, len); /* aligned copy out of the frame */
    }
    if (hash) memcpy(c->global_hash, hash, CRYPTO_HASHBYTES);
    c->global_hash_stale = hash == NULL;
    c->global_version = version;
    c->have_global = 1;
    return 0;
}

/* Makes sure c->model matches the spec in m and c->global holds version
 * m->model_version. Returns 0, or -1 after sending an ERROR. */
static int load_global(client_t *c, const msg_t *m)
{
    char err[MODEL_ERR_MAX];
    if (prepare_model(c, m) < 0) return -1;
    if (m->present & MSG_HAS_VEC) {
        fetch_forget(c); /* global_buf is overwritten */
        if (m->vec_len != c->numel * 4) {
            snprintf(err, sizeof err, "model vector has %zu bytes, expected %zu", m->vec_len,
                     c->numel * 4);
            client_send_error(c, m->round, ERR_WRONG_LENGTH, err);
            return -1;
        }
        if (install_global(c, m->round, m->vec, m->vec_len, m->model_version, NULL) < 0) return -1;
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

/* ---- v4: the model in chunks ------------------------------------------------ */

/* Chunks asked for at once: enough to keep a long fat link busy (4 MiB in
 * flight), few enough that heartbeats and SHUTDOWN are never far behind. */
#define FETCH_WINDOW 4

static void fetch_forget(client_t *c)
{
    if (c->host) free(c->fetch.buf);
    memset(&c->fetch, 0, sizeof c->fetch);
}

/* Asks for the next chunks, up to FETCH_WINDOW outstanding. */
static void fetch_more(client_t *c)
{
    fetch_t *f = &c->fetch;
    while (f->asked < f->total && f->asked - f->have < (uint64_t)FETCH_WINDOW * WIRE_CHUNK_BYTES) {
        msg_t q = {.type = MSG_FETCH, .round = f->msg.round, .model_version = f->version,
                   .bulk_hash = f->hash, .bulk_hash_len = sizeof f->hash, .offset = f->asked};
        if (client_send(c, &q) < 0) return;
        f->asked += f->total - f->asked < WIRE_CHUNK_BYTES ? f->total - f->asked : WIRE_CHUNK_BYTES;
    }
}

/* A PLAN or EVAL that names its model by length and SHA-256 (v4): 1 if we
 * hold that model, 0 while it is being fetched (the message is handled again
 * once it is whole), -1 after an ERROR. What an earlier attempt received for
 * the same model (same version and hash) is kept: the fetch resumes there. */
static int fetch_model(client_t *c, const msg_t *m)
{
    if (!(m->present & MSG_HAS_BULK) || (m->present & MSG_HAS_VEC)) return 1;
    fetch_t *f = &c->fetch;
    if (m->bulk_hash_len != sizeof f->hash || m->bulk_len != (uint64_t)c->numel * 4) {
        char err[160];
        snprintf(err, sizeof err, "model announced as %llu bytes with a %zu-byte hash, expected "
                 "%zu bytes and a 32-byte SHA-256", (unsigned long long)m->bulk_len,
                 m->bulk_hash_len, c->numel * 4);
        client_send_error(c, m->round, ERR_WRONG_LENGTH, err);
        return -1;
    }
    if (c->have_global && c->global_version == m->model_version &&
        memcmp(client_global_hash(c), m->bulk_hash, sizeof f->hash) == 0)
        return 1;
    int same = f->buf && f->total == m->bulk_len && f->version == m->model_version &&
               memcmp(f->hash, m->bulk_hash, sizeof f->hash) == 0;
    if (!same) {
        fetch_forget(c);
        if (c->host) {
            f->buf = malloc(m->bulk_len);
        } else {
            f->buf = (uint8_t *)c->global_buf;
            c->have_global = 0; /* global_buf is being overwritten */
        }
        if (!f->buf) {
            client_send_error(c, m->round, ERR_LOCAL, "out of memory for the model");
            return -1;
        }
        f->total = m->bulk_len;
        f->version = m->model_version;
        memcpy(f->hash, m->bulk_hash, sizeof f->hash);
    }
    f->msg = *m;
    /* Handled again once the model is whole and held (as version
     * model_version, its hash checked here): no second fetch. */
    f->msg.bulk_hash = NULL; /* borrowed from the frame */
    f->msg.bulk_hash_len = 0;
    f->msg.present &= ~MSG_HAS_BULK;
    f->active = 1;
    f->asked = f->have;
    f->resumed_at = f->have;
    f->started = util_now();
    if (f->have)
        log_info("round=%u event=model-fetch-resumed version=%u have=%llu of %llu bytes", m->round,
                 f->version, (unsigned long long)f->have, (unsigned long long)f->total);
    else
        log_debug("round=%u event=model-fetch version=%u bytes=%llu", m->round, f->version,
                  (unsigned long long)f->total);
    fetch_more(c);
    return 0;
}

static void on_plan(client_t *c, const msg_t *m);
static void on_eval(client_t *c, const msg_t *m);

/* CHUNK: the next bytes of the model being fetched. When it is whole and its
 * SHA-256 is the one announced, the PLAN or EVAL that named it goes on. */
static void on_chunk(client_t *c, const msg_t *m)
{
    fetch_t *f = &c->fetch;
    if (!f->active || m->model_version != f->version || m->bulk_hash_len != sizeof f->hash ||
        memcmp(m->bulk_hash, f->hash, sizeof f->hash) != 0 || m->offset < f->have) {
        log_debug("a chunk of no fetch under way (version %u, offset %llu): ignored",
                  m->model_version, (unsigned long long)m->offset);
        return;
    }
    if (m->offset != f->have || m->vec_len == 0 || m->vec_len > WIRE_CHUNK_BYTES ||
        m->vec_len > f->total - f->have) {
        char why[160];
        snprintf(why, sizeof why, "model chunk at offset %llu with %zu bytes; expected offset "
                 "%llu, at most %llu bytes", (unsigned long long)m->offset, m->vec_len,
                 (unsigned long long)f->have, (unsigned long long)(f->total - f->have));
        log_warn("round=%u %s: fetch abandoned", f->msg.round, why);
        client_send_error(c, f->msg.round, ERR_WRONG_LENGTH, why);
        fetch_forget(c);
        return;
    }
    memcpy(f->buf + f->have, m->vec, m->vec_len);
    f->have += m->vec_len;
    f->received += m->vec_len;
    if (f->have < f->total) {
        fetch_more(c);
        return;
    }
    uint8_t h[CRYPTO_HASHBYTES];
    crypto_sha256(h, f->buf, f->total);
    if (memcmp(h, f->hash, sizeof h) != 0) {
        const char *why = "the model's bytes do not match the SHA-256 its PLAN/EVAL announced";
        log_warn("round=%u %s: fetch abandoned", f->msg.round, why);
        client_send_error(c, f->msg.round, ERR_PROTOCOL, why);
        fetch_forget(c);
        return;
    }
    if (install_global(c, f->msg.round, f->buf, f->total, f->version, h) < 0) {
        fetch_forget(c);
        return;
    }
    msg_t next = f->msg;
    log_info("round=%u event=model-received version=%u bytes=%llu received=%llu resumed_at=%llu "
             "fetch_s=%.2f", next.round, f->version, (unsigned long long)f->total,
             (unsigned long long)f->received, (unsigned long long)f->resumed_at,
             util_now() - f->started);
    if (!c->host) f->buf = NULL; /* global_buf: not ours to free */
    fetch_forget(c);
    if (next.type == MSG_PLAN) on_plan(c, &next);
    else on_eval(c, &next);
}

/* The training seed: the plan's seed, this site and the model it trains
 * from, hashed. Runs stay reproducible (same plan, same model: same seed),
 * but no coordinator can replay a site's training on a perturbed copy of a
 * model (a "new" version) to difference two aggregates: any other model
 * gives an unrelated shuffle. */
const uint8_t *client_global_hash(client_t *c)
{
    if (c->global_hash_stale) {
        crypto_sha256(c->global_hash, c->global, c->numel * sizeof *c->global);
        c->global_hash_stale = 0;
    }
    return c->global_hash;
}

static uint64_t training_seed(client_t *c, const msg_t *m)
{
    uint8_t in[8 + WIRE_SITE_MAX + CRYPTO_HASHBYTES] = {0}, h[CRYPTO_HASHBYTES];
    for (int i = 0; i < 8; i++) in[i] = (uint8_t)(m->seed >> (8 * i));
    memcpy(in + 8, c->conf->site, strnlen(c->conf->site, WIRE_SITE_MAX - 1));
    memcpy(in + 8 + WIRE_SITE_MAX, client_global_hash(c), CRYPTO_HASHBYTES);
    crypto_sha256(h, in, sizeof in);
    uint64_t s = 0;
    for (int i = 0; i < 8; i++) s |= (uint64_t)h[i] << (8 * i);
    return s;
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
    /* A plan we would refuse after training is refused before it. A plan
     * for a plaintext update is a request for this site's raw update: the
     * coordinator alone must not be able to ask for it. */
    if (!(m->present & MSG_HAS_SECAGG) && !c->conf->plaintext_ok) {
        const char *why = "policy: this site sends only masked updates ([policy] "
                          "secure_aggregation = required); the plan asks for a plaintext update";
        log_error("round=%u %s: refused", m->round, why);
        client_send_error(c, m->round, ERR_PROTOCOL, why);
        c->phase = PHASE_NONE;
        return;
    }
    if ((m->present & MSG_HAS_SECAGG) && sa_client_check_plan(c, m) < 0) return;
    /* v4: the model first (this PLAN comes back here once it is whole). The
     * round is not ours until then: a PLAN sent again after a lost link
     * resumes the fetch rather than being refused as a replay. */
    if (prepare_model(c, m) < 0 || fetch_model(c, m) <= 0) return;
    c->last_plan_round = m->round;
    c->round = m->round;
    c->round_lost = 0;
    c->update_waiting = 0; /* a plaintext update of an earlier round is not sent now */
    sa_client_reset(c); /* a new round: whatever the last one left is wiped */
    c->phase = PHASE_TRAIN;
    log_info("round=%u phase=train event=plan epochs=%u batch=%u lr=%g prox_mu=%g augment=%u "
             "class_balanced=%u", m->round, m->epochs, m->batch, m->lr, m->prox_mu, m->augment,
             m->class_balanced);
    if (load_global(c, m) < 0) return;
    send_heartbeat(c); /* we have the plan: the coordinator sends the next site its model */
    /* (after that: a site that dies before it says it has the model may
     * come back and resume it, v4, and keep its place in the round) */
    client_maybe_die(c, "train", m->round);
    if (m->epochs > 1000 || m->batch < 1 || m->batch > 65536 ||
        !(m->lr > 0 && m->lr < 100) || !(m->momentum >= 0 && m->momentum < 1) ||
        !(m->weight_decay >= 0 && m->weight_decay < 1) ||
        !(m->prox_mu >= 0 && m->prox_mu <= 100) || m->augment > 1 || m->class_balanced > 1) {
        client_send_error(c, m->round, ERR_MALFORMED, "hyper-parameters out of range");
        return;
    }
    model_train_opts_t opts = {
        .epochs = (int)m->epochs, .batch = (int)m->batch, .lr = (float)m->lr,
        .momentum = (float)m->momentum, .weight_decay = (float)m->weight_decay,
        .seed = training_seed(c, m),
        .progress = on_progress, .progress_user = c, .progress_every = m->batch,
        .prox_mu = (float)m->prox_mu, .augment = (int)m->augment,
        .class_balanced = (int)m->class_balanced,
    };
    model_data_t data = {c->train.x, c->train.y, c->train.n};
    model_result_t res = {0};
    double t0 = util_now();
    c->train_done = 0;
    c->train_total = (uint64_t)m->epochs * (uint64_t)c->train.n;
    /* epochs = 0: no local training (protocol benchmarks): a zero update. */
    if (m->epochs > 0 && model_train(c->model, &data, &opts, &res) < 0) {
        if (client_stop || c->round_lost || c->exit_code >= 0) {
            log_info("round=%u phase=train event=training-stopped", m->round);
            return; /* the coordinator sees the connection go, or has already */
        }
        client_send_error(c, m->round, ERR_LOCAL, model_errmsg(c->model));
        return;
    }
    double secs = util_now() - t0;
    if (!c->work && !(c->work = malloc(c->numel * sizeof *c->work))) { /* hosted */
        client_send_error(c, m->round, ERR_LOCAL, "out of memory for the update");
        return;
    }
    if (model_get_params(c->model, c->work, c->numel) < 0) {
        client_send_error(c, m->round, ERR_LOCAL, model_errmsg(c->model));
        return;
    }
    for (size_t i = 0; i < c->numel; i++) c->work[i] -= c->global[i];
    health_result("round %u trained, loss %.4f, %.0f s", m->round, res.train_loss, secs);
    c->update_loss = res.train_loss; /* secure rounds mask n_k * loss with the update */
    if (m->present & MSG_HAS_SECAGG) {
        log_info("round=%u phase=train event=trained loss=%.4f train_s=%.2f", m->round,
                 res.train_loss, secs);
        sa_client_advertise(c, m, secs);
        return;
    }
    /* The delta waits in work until the coordinator says UPLOAD. */
    c->update_waiting = 1;
    c->update_secs = secs;
    msg_t ready = {.type = MSG_READY, .round = m->round, .phase = PHASE_TRAIN};
    if (client_send(c, &ready) == 0)
        log_info("round=%u phase=train event=trained loss=%.4f train_s=%.2f -> waiting for upload",
                 m->round, res.train_loss, secs);
}

/* UPLOAD of a plaintext round: our turn to send the update. */
static void on_plain_upload(client_t *c, const msg_t *m)
{
    if (!c->update_waiting || m->round != c->round) {
        client_send_error(c, m->round, ERR_UNEXPECTED, "no update is waiting for this round");
        return;
    }
    c->update_waiting = 0;
    client_maybe_die(c, "upload", m->round);
    msg_t u = {.type = MSG_UPDATE, .round = m->round, .phase = PHASE_TRAIN,
               .n_samples = c->train.n, .loss_sum = c->update_loss,
               .train_seconds = c->update_secs, .vec = (const uint8_t *)c->work,
               .vec_len = c->numel * 4, .present = MSG_HAS_VEC};
    if (client_send_upload(c, &u) == 0)
        log_info("round=%u phase=train event=update-sent n=%lld loss=%.4f train_s=%.2f",
                 m->round, (long long)c->train.n, c->update_loss, c->update_secs);
    client_drop_work(c);
    client_drop_upload(c);
    c->phase = PHASE_NONE;
}

static void on_eval(client_t *c, const msg_t *m)
{
    if (m->round < c->last_eval_round || (m->round == c->last_eval_round && m->round != 0)) {
        client_send_error(c, m->round, ERR_WRONG_ROUND, "evaluation request is stale or replayed");
        return;
    }
    if (prepare_model(c, m) < 0 || fetch_model(c, m) <= 0) return; /* v4: the model first */
    c->last_eval_round = m->round;
    c->round = m->round;
    c->phase = PHASE_EVAL;
    client_maybe_die(c, "eval", m->round);
    if (load_global(c, m) < 0) return;
    send_heartbeat(c); /* we have the model: the next site's download starts */
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
    health_result("round %u evaluated, accuracy %.4f on %lld", m->round,
                  res.n ? (double)res.correct / (double)res.n : 0.0, (long long)res.n);
    /* The next round signs and seeds with this model's hash: computed now,
     * while the coordinator gathers the other sites' results. */
    client_global_hash(c);
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
        c->version_backoff = c->version_backoff_max / 8;
        /* A new session: a restarted coordinator counts rounds from its own
         * start (or checkpoint), so replay protection restarts from its round. */
        if (c->last_plan_round > m->round) c->last_plan_round = m->round;
        if (c->last_eval_round >= m->round) c->last_eval_round = m->round ? m->round - 1 : 0;
        log_info("event=welcome client_id=%u round=%u protocol=%u coordinator_software=%s",
                 m->client_id, m->round, c->proto, (m->present & MSG_HAS_SW) ? m->sw : "?");
        return 0;
    case MSG_PLAN: on_plan(c, m); return 0;
    case MSG_EVAL: on_eval(c, m); return 0;
    case MSG_CHUNK: on_chunk(c, m); return 0;
    case MSG_UPLOAD:
        if (m->phase == PHASE_TRAIN) on_plain_upload(c, m);
        else sa_client_on_message(c, m);
        return 0;
    case MSG_KEYS: case MSG_SHARES_IN: case MSG_CONSIST_REQ: case MSG_UNMASK_REQ:
        sa_client_on_message(c, m);
        return 0;
    case MSG_SHUTDOWN:
        log_info("event=shutdown -> exit");
        *rc = 0;
        return 1;
    case MSG_ERROR:
        if (m->code == ERR_VERSION) {
            /* A rolling upgrade: the coordinator (or this site) is not upgraded
             * yet. Ask again later, waiting longer each time; never give up. */
            double wait = c->version_backoff;
            c->hello_not_before = util_now() + wait;
            c->version_backoff = wait * 2 < c->version_backoff_max ? wait * 2 : c->version_backoff_max;
            log_error("event=version-refused the coordinator refuses this site's protocol "
                      "version %u (medfed %s): %s; asking again in %.0f s", c->proto,
                      medfed_version(), m->reason, wait);
            return 0;
        }
        if (m->code == ERR_FULL || m->code == ERR_UNKNOWN_CLIENT) {
            log_error("the coordinator refuses this site (error %u: %s): not retrying", m->code,
                      m->reason);
            *rc = 2;
            return 1;
        }
        if (m->code == ERR_NOT_REGISTERED) {
            /* It does not know us (restarted, or we were lost): HELLO again,
             * unless one is already on its way. */
            if (c->welcomed) {
                log_warn("event=not-registered the coordinator lost this site -> hello");
                leave_round(c, "coordinator lost our registration");
            }
            if (util_now() - c->last_hello >= 1.0) send_hello(c);
            return 0;
        }
        log_warn("round=%u coordinator error %u: %s", m->round, m->code, m->reason);
        /* ERR_MODEL_GONE: a FETCH came too late (the phase went on without
         * us). Nothing to undo: it may answer an earlier fetch's requests
         * while a newer one runs, and the next PLAN or EVAL replaces a fetch
         * that can no longer finish (or resumes it, for the same model). */
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
    /* The site's own rules, and what it released before (policy.h). */
    c->policy = policy_new(cf, err, sizeof err);
    if (!c->policy) {
        log_error("%s", err);
        return -1;
    }
    if (cf->coordinator_key[0] && identity_pk_from_hex(c->coordinator_pk, cf->coordinator_key) < 0) {
        log_error("%s: coordinator_key must be 64 lower-case hex digits", cf->data.file);
        return -1;
    }
    if (cf->ca[0] && !policy_has_peers(c->policy))
        log_warn("%s: no [policy] peers list: any site the federation CA certifies counts as a "
                 "member; pin the members you agreed to with peers = FILE", cf->data.file);
    log_info("policy: secure_aggregation=%s min_cohort=%d max_collusion=%.2f peers=%s "
             "released-shares record %s", cf->plaintext_ok ? "optional" : "required",
             cf->min_cohort, cf->max_collusion, cf->peers[0] ? cf->peers : "(roster/CA)",
             policy_state_file(c->policy));
    /* Certificates: peers are checked against the CA, no roster needed. */
    if (cf->ca[0] && sa_client_load_cert(c, pk) < 0) return -1;
    if (!cf->roster[0]) return 0;
    if (c->host && c->host->roster) { /* the host read it once for all its sites */
        c->roster = c->host->roster;
    } else {
        c->roster = c->roster_buf = malloc(sizeof *c->roster_buf);
        if (!c->roster_buf) return -1;
        if (roster_load(cf->roster, c->roster_buf, err, sizeof err) < 0) {
            log_error("%s", err);
            return -1;
        }
    }
    policy_set_federation(c->policy, (unsigned)c->roster->n); /* colluders: a share of it */
    int me = roster_find(c->roster, c->conf->site);
    if (me < 0 || !c->roster->site[me].has_pk || !crypto_equal(pk, c->roster->site[me].pk, sizeof pk)) {
        log_error("%s: site '%s' is missing from the roster or its key differs from %s",
                  c->conf->roster, c->conf->site, c->conf->identity);
        return -1;
    }
    return 0;
}

/* CURVE on sock (before connect): our key from curve_key, the coordinator's
 * pinned public key. Logs the reason and returns -1 on failure. */
static int curve_setup(void *sock, const client_conf_t *conf)
{
    uint8_t sk[CURVE_KEYBYTES], pk[CURVE_KEYBYTES], server[CURVE_KEYBYTES];
    char err[512];
    if (keyfile_load(conf->curve_key, sk, sizeof sk, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    int ok = identity_pk_from_hex(server, conf->coordinator_key) == 0 &&
             curve_pk_of(pk, sk) == 0 && transport_curve_client(sock, server, pk, sk) == 0;
    crypto_wipe(sk, sizeof sk);
    if (!ok) {
        log_error("%s: coordinator_key must be 64 lower-case hex digits", conf->data.file);
        return -1;
    }
    return 0;
}

/* The DEALER to the coordinator, with its reconnect and liveness settings
 * and (when configured) CURVE; not yet connected. NULL after logging why. */
static void *open_socket(void *zctx, const client_conf_t *conf, int reconnect_ms)
{
    void *sock = zmq_socket(zctx, ZMQ_DEALER);
    if (!sock) return NULL;
    int linger = 2000, immediate = 1, sndtimeo = 60000;
    int reconnect_max_ms = (int)(conf->reconnect_max * 1000);
    int hb_timeout = (int)(conf->link_timeout * 1000), hb_ivl = hb_timeout / 3;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms);
    if (reconnect_max_ms < reconnect_ms) reconnect_max_ms = reconnect_ms;
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL_MAX, &reconnect_max_ms, sizeof reconnect_max_ms);
    /* ZMTP PINGs both ways: the coordinator's PONGs keep a quiet link's byte
     * count growing, and the TTL tells the coordinator to give up on us after
     * link_timeout. Our side's own verdict is check_link's: ZMTP's timeout
     * would wait for a PONG queued behind a model arriving slowly (seen: a
     * 0.9 Mbit/s link never finished a 6.6 MB download), so it is set far out. */
    int zmtp_timeout = hb_timeout < INT_MAX / 16 ? hb_timeout * 16 : INT_MAX;
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &zmtp_timeout, sizeof zmtp_timeout);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_TTL, &hb_timeout, sizeof hb_timeout);
    if (conf->curve_key[0] && curve_setup(sock, conf) < 0) {
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

static void client_init_versions(client_t *c)
{
    c->proto = c->conf->protocol > 0 ? (uint32_t)c->conf->protocol : WIRE_VERSION;
    c->version_backoff = c->conf->version_retry > 0 ? c->conf->version_retry : 300;
    c->version_backoff_max = 8 * c->version_backoff;
    if (c->proto != WIRE_VERSION)
        log_warn("protocol version pinned to %u (this build speaks up to %u)", c->proto,
                 WIRE_VERSION);
}

/* Everything client_run and the checks hold, wiped and freed (secrets in
 * guarded memory go through sa_client_reset and crypto_secure_free). */
static void client_free(client_t *c)
{
    if (c->has_held) transport_frame_close(&c->held);
    c->has_held = 0;
    if (c->mon) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->mon);
    }
    if (c->sock) zmq_close(c->sock);
    if (c->zctx && !c->host) zmq_ctx_term(c->zctx); /* a host's context is the host's */
    wire_buf_destroy(&c->out);
    wire_decoder_destroy(&c->dec);
    sa_client_reset(c);
    free(c->masked_buf);
    if (c->identity_sk) crypto_secure_free(c->identity_sk);
    sa_client_free_cert(c);
    policy_destroy(&c->policy);
    free(c->roster_buf);
    model_destroy(&c->model);
    drop_global(c);
    fetch_forget(c);
    free(c->work);
    free(c->scores);
    dataset_free(&c->train);
    dataset_free(&c->val);
}

/* Hosted: waits for a CPU turn (client_host_t); a site that is only queued
 * still heartbeats. 0 with the turn (or without turns), -1 when stopping. */
static int take_turn(client_t *c)
{
    if (!c->host || !c->host->turn_take) return 0;
    while (c->host->turn_take(c->host->user, c->conf->heartbeat) != 0) {
        if (client_stop) return -1;
        poll_link(c);
        if (c->link_up && c->welcomed) send_heartbeat(c);
    }
    return 0;
}

static void give_turn(client_t *c)
{
    if (c->host && c->host->turn_give) c->host->turn_give(c->host->user);
}

/* One message from the coordinator, if one is waiting. 1 to stop the loop
 * (with *rc set), 0 to go on. */
static int handle_message(client_t *c, int *rc)
{
    wire_frame_t fr;
    if (c->has_held) { /* read during training (on_progress) */
        fr = c->held;
        c->has_held = 0;
    } else if (transport_recv(c->sock, 0, &fr, 1) < 0) {
        if (errno != EAGAIN) log_warn("dropped a malformed frame from the coordinator");
        return 0;
    }
    c->rx_grew_at = util_now();
    if (fr.srcfd >= 0 && fr.srcfd != c->link_fd) {
        c->link_fd = fr.srcfd;
        c->rx_checked_at = 0;
        transport_fd_rx_bytes(c->link_fd, &c->rx_bytes);
    }
    msg_t m;
    char err[256];
    int stop = 0;
    if (msg_decode(c->dec, transport_frame_data(&fr), fr.bytes, &m, err, sizeof err) < 0 ||
        msg_fits_version(&m, c->proto, err, sizeof err) < 0) /* pinned: refuse as that version */
        log_warn("malformed message from the coordinator: %s", err);
    else
        stop = dispatch(c, &m, rc);
    transport_frame_close(&fr);
    return stop;
}

/* What the daemon is doing, for systemd's status line (health.h). */
static const char *activity(const client_t *c)
{
    if (!c->link_up) return "connecting to the coordinator";
    if (!c->welcomed) return "saying hello";
    return c->phase == PHASE_NONE ? "idle, waiting for a round" : msg_phase_name(c->phase);
}

/* The connection and the event loop, once the site's data is in c. */
static int run(client_t *c)
{
    const client_conf_t *conf = c->conf;
    int rc = 1;
    if (load_identity(c) < 0) goto out;

    c->zctx = c->host ? c->host->zctx : zmq_ctx_new();
    c->out = wire_buf_new();
    c->dec = wire_decoder_new();
    if (!c->zctx || !c->out || !c->dec) goto out;
    c->sock = open_socket(c->zctx, conf, 1000);
    if (!c->sock) goto out;
    if (conf->curve_key[0]) log_info("transport: CURVE");
    char mon_name[WIRE_SITE_MAX + 8] = "client"; /* unique in a shared context */
    if (c->host) snprintf(mon_name, sizeof mon_name, "client-%s", conf->site);
    c->mon = transport_monitor_open_events(c->zctx, c->sock, mon_name, LINK_EVENTS);
    if (!c->mon) {
        log_warn("no connection monitor: reconnects are noticed by the coordinator's replies");
        c->link_up = 1;
    }
    if (zmq_connect(c->sock, conf->coordinator) < 0) {
        log_error("cannot connect to %s: %s", conf->coordinator, zmq_strerror(errno));
        goto out;
    }
    log_info("site=%s connecting to %s", conf->site, conf->coordinator);

    c->last_hello = -1e9;
    while (!client_stop && c->exit_code < 0) {
        poll_link(c);
        health_tick(c->round, activity(c));
        double now = util_now();
        if (c->link_up && !c->welcomed && now - c->last_hello >= 2.0 && now >= c->hello_not_before)
            send_hello(c); /* the first, or no WELCOME came back */
        else if (c->link_up && c->welcomed && now - c->last_sent >= conf->heartbeat)
            send_heartbeat(c);
        zmq_pollitem_t pi[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->mon, 0, ZMQ_POLLIN, 0}};
        long timeout_ms = (long)(conf->heartbeat * 1000);
        if (!c->welcomed && timeout_ms > 500) timeout_ms = 500;
        long wd_ms = (long)(health_watchdog_usec() / 3000); /* systemd's, a third */
        if (wd_ms > 0 && timeout_ms > wd_ms) timeout_ms = wd_ms;
        if (c->has_held) timeout_ms = 0;
        int n = zmq_poll(pi, c->mon ? 2 : 1, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("poll failed: %s", zmq_strerror(errno));
            goto out;
        }
        if ((!c->has_held && !(pi[0].revents & ZMQ_POLLIN)) || take_turn(c) < 0) continue;
        int stop = handle_message(c, &rc);
        give_turn(c);
        if (stop) goto out;
    }
    if (c->exit_code >= 0) {
        rc = c->exit_code;
    } else {
        log_info("signal received -> exit");
        rc = 0;
    }
    int linger = 0; /* nothing is worth waiting for now */
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
out:
    client_free(c);
    return rc;
}

int client_run(const client_conf_t *conf, const client_die_at_t *die_at)
{
    client_t c = {.conf = conf, .die_at = die_at, .exit_code = -1};
    client_init_versions(&c);
    model_set_threads(conf->threads);
    health_tick(0, "loading data"); /* READY=1: a first PACS pull can take an hour */
    if (load_data(&c) < 0) {
        client_free(&c);
        return 1;
    }
    return run(&c);
}

int client_run_hosted(const client_conf_t *conf, client_host_t *host)
{
    client_t c = {.conf = conf, .host = host, .exit_code = -1};
    client_init_versions(&c);
    c.train = host->train;
    c.val = host->val;
    memset(&host->train, 0, sizeof host->train);
    memset(&host->val, 0, sizeof host->val);
    c.scores = malloc((size_t)(c.val.n > 0 ? c.val.n : 1) * sizeof *c.scores);
    if (!c.scores || c.train.n <= 0) {
        log_error("data: %s", c.scores ? "the training split is empty" : "out of memory");
        client_free(&c);
        return 1;
    }
    log_info("data: given by the host, train=%lld val=%lld size=%dx%dx%d", (long long)c.train.n,
             (long long)c.val.n, c.train.channels, c.train.height, c.train.width);
    return run(&c);
}

/* ---- --check -------------------------------------------------------------------- */

static void set_why(char *why, size_t whylen, const char *fallback)
{
    const char *last = log_last_error();
    snprintf(why, whylen, "%s", last[0] ? last : fallback);
}

int client_check_keys(const client_conf_t *conf, char *why, size_t whylen)
{
    client_t c = {.conf = conf};
    int rc = load_identity(&c);
    if (rc == 0 && conf->curve_key[0]) {
        c.zctx = zmq_ctx_new();
        c.sock = c.zctx ? open_socket(c.zctx, conf, 1000) : NULL;
        if (!c.sock) rc = -1;
    }
    if (rc < 0) set_why(why, whylen, "the key files could not be loaded");
    client_free(&c);
    return rc;
}

int client_check_coordinator(const client_conf_t *conf, double timeout, uint32_t *round,
                             double *rtt_ms, char sw[WIRE_SW_MAX], char *why, size_t whylen)
{
    client_t c = {.conf = conf};
    client_init_versions(&c);
    sw[0] = '\0';
    int rc = -1, failed_connects = 0, closed_in_handshake = 0;
    double t0 = util_now(), sent_at = 0;
    snprintf(why, whylen, "no answer within %.0f s", timeout);
    c.zctx = zmq_ctx_new();
    c.out = wire_buf_new();
    c.dec = wire_decoder_new();
    c.sock = c.zctx ? open_socket(c.zctx, conf, 250) : NULL;
    if (!c.out || !c.dec || !c.sock) {
        set_why(why, whylen, "cannot set up the socket");
        goto out;
    }
    int linger = 0;
    zmq_setsockopt(c.sock, ZMQ_LINGER, &linger, sizeof linger);
    c.mon = transport_monitor_open_events(c.zctx, c.sock, "check", LINK_EVENTS);
    if (!c.mon || zmq_connect(c.sock, conf->coordinator) < 0) {
        snprintf(why, whylen, "cannot connect to %s: %s", conf->coordinator, zmq_strerror(errno));
        goto out;
    }
    msg_t ping = {.type = MSG_PING, .version = c.proto};
    util_strlcpy(ping.site, conf->site, sizeof ping.site);
    if (c.proto >= 3) {
        util_strlcpy(ping.sw, medfed_version(), sizeof ping.sw);
        ping.present |= MSG_HAS_SW;
    }
    while (!client_stop && util_now() - t0 < timeout) {
        zmq_pollitem_t pi[2] = {{c.sock, 0, ZMQ_POLLIN, 0}, {c.mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(pi, 2, 100) < 0 && errno != EINTR) break;
        int event;
        uint32_t value;
        while (transport_monitor_next(c.mon, &event, &value) == 0) {
            if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && !sent_at) {
                if (transport_send(c.sock, NULL, &ping, c.out, 1) >= 0) sent_at = util_now();
                c.link_up = 1;
            } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
                snprintf(why, whylen, "the coordinator refused this site's CURVE key (ZAP "
                         "status %u): is the site on its roster with this curve_key?", value);
                goto out;
            } else if (event == ZMQ_EVENT_CONNECT_RETRIED && ++failed_connects >= 3) {
                snprintf(why, whylen, "cannot connect to %s (refused or unreachable)",
                         conf->coordinator);
                goto out;
            } else if ((event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                        event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
                        (event == ZMQ_EVENT_DISCONNECTED && !c.link_up)) &&
                       ++closed_in_handshake >= 3) {
                snprintf(why, whylen, "the connection to %s fails during the handshake "
                         "(is coordinator_key right? does it speak CURVE?)", conf->coordinator);
                goto out;
            }
        }
        wire_frame_t fr;
        if (!(pi[0].revents & ZMQ_POLLIN) || transport_recv(c.sock, 0, &fr, 1) < 0) continue;
        msg_t m;
        char err[256];
        int ok = msg_decode(c.dec, transport_frame_data(&fr), fr.bytes, &m, err, sizeof err);
        if (ok == 0) ok = msg_fits_version(&m, c.proto, err, sizeof err);
        if (ok < 0) {
            snprintf(why, whylen, "malformed answer: %s", err);
        } else if (m.type == MSG_PONG) {
            *round = m.round;
            *rtt_ms = (util_now() - sent_at) * 1000;
            if (m.present & MSG_HAS_SW) util_strlcpy(sw, m.sw, WIRE_SW_MAX);
            rc = 0;
        } else if (m.type == MSG_ERROR) {
            snprintf(why, whylen, "the coordinator refuses this site (error %u): %s", m.code,
                     m.reason);
        } else {
            snprintf(why, whylen, "unexpected %s in answer to PING", msg_type_name(m.type));
        }
        transport_frame_close(&fr);
        goto out;
    }
out:
    client_free(&c);
    return rc;
}
