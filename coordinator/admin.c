/*
 * admin.c - the research lead's socket: `medfed status | clients | start |
 * pause | stop | export | watch` (tools/admin.c is the other end).
 *
 * A ROUTER socket with CURVE on admin_bind, ZAP domain "admin": only the
 * admin key from `medfed provision` gets in. A request is one to four short
 * text frames, [command, args...]; the reply is one JSON frame, and for
 * export a second frame with the safetensors bytes. `watch` subscribes the
 * caller to one line per phase until it stops renewing (every few seconds).
 *
 *   status          state, round, completed rounds, target, clients, last metrics
 *   clients         every registered site: live, last seen, samples, part in the round,
 *                   protocol and software version, training progress, certificate expiry
 *   start [N] [KEY=VALUE...]  run N more rounds (N "": `rounds` of the config), with
 *                   those settings changed first (coord_set); also unpauses
 *   pause           finish the round in flight, then start no new one
 *   stop            abandon the round in flight now; the model stays at the last round
 *   export [R]      the model after round R (default: the latest)
 *   watch           renew a subscription to phase events
 */
#include "coordinator/internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/json.h"
#include "common/util.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"
#include "proto/transport.h"

#define ADMIN_FRAMES 18 /* start, N and up to 16 KEY=VALUE */
#define ADMIN_FRAME_MAX COORD_SET_MAX
#define WATCHERS_MAX 16
#define WATCH_TTL 30.0 /* a watcher that has not renewed for this long is dropped */

typedef struct {
    uint8_t id[256];
    size_t id_len;
    double renewed;
} watcher_t;

struct admin {
    void *sock;
    watcher_t w[WATCHERS_MAX];
    int n_w;
};

void *admin_socket(struct admin *a) { return a->sock; }

struct admin *admin_open(coord_t *c)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->sock = zmq_socket(c->zctx, ZMQ_ROUTER);
    char err[512];
    uint8_t sk[CURVE_KEYBYTES];
    int64_t maxmsg = ADMIN_FRAMES * ADMIN_FRAME_MAX;
    int mandatory = 1, linger = 500;
    int ok = a->sock && keyfile_load(c->conf->curve_secret, sk, sizeof sk, err, sizeof err) == 0;
    if (!ok) {
        log_error("admin socket: %s", a->sock ? err : zmq_strerror(errno));
    } else {
        /* The domain after transport_curve_server, which sets the sites' one. */
        ok = transport_curve_server(a->sock, sk) == 0 &&
             zmq_setsockopt(a->sock, ZMQ_ZAP_DOMAIN, "admin", 5) == 0 &&
             zmq_setsockopt(a->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) == 0 &&
             zmq_setsockopt(a->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) == 0 &&
             zmq_setsockopt(a->sock, ZMQ_LINGER, &linger, sizeof linger) == 0;
        crypto_wipe(sk, sizeof sk);
        if (ok && zmq_bind(a->sock, c->conf->admin_bind) < 0) {
            log_error("admin socket: cannot bind %s: %s", c->conf->admin_bind, zmq_strerror(errno));
            ok = 0;
        }
    }
    if (!ok) {
        admin_close(&a);
        return NULL;
    }
    log_info("admin socket on %s (CURVE, admin key only)", c->conf->admin_bind);
    return a;
}

void admin_close(struct admin **ap)
{
    if (!ap || !*ap) return;
    if ((*ap)->sock) zmq_close((*ap)->sock);
    free(*ap);
    *ap = NULL;
}

/* Sends [id, json] (+ [data]) to one caller; -1 if it is gone. */
static int reply(struct admin *a, const uint8_t *id, size_t id_len, const char *json,
                 const void *data, size_t data_len)
{
    if (zmq_send(a->sock, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    if (zmq_send(a->sock, json, strlen(json), data ? ZMQ_SNDMORE : 0) < 0) return -1;
    if (data && zmq_send(a->sock, data, data_len, 0) < 0) return -1;
    return 0;
}

void admin_event(coord_t *c, const char *fmt, ...)
{
    struct admin *a = c->admin;
    if (!a || a->n_w == 0) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    double now = util_now();
    for (int i = 0; i < a->n_w;) {
        watcher_t *w = &a->w[i];
        if (now - w->renewed > WATCH_TTL || reply(a, w->id, w->id_len, line, NULL, 0) < 0) {
            a->w[i] = a->w[--a->n_w];
            continue;
        }
        i++;
    }
}

/* ---- the commands: each writes its JSON reply into a memstream ------------------------ */

/* The reply as one compact JSON text into f. */
static void put_json(FILE *f, json_t *v)
{
    char *s = v ? json_dumps(v, JX_COMPACT) : NULL;
    fputs(s ? s : "{\"ok\":false,\"error\":\"reply not encoded\"}", f);
    free(s);
    json_decref(v);
}

static void cmd_status(coord_t *c, FILE *f)
{
    int registered = 0;
    for (int i = 0; i < c->n_clients; i++) registered += !c->clients[i].removed;
    const char *state = coord_phase_name(c);
    if (c->state == ST_WAITING && c->round >= c->target) state = "idle";
    else if (c->state == ST_WAITING && c->paused) state = "paused";
    json_t *r = json_pack("{s:b,s:s,s:I,s:I,s:I,s:b,s:i,s:i,s:b}", "ok", 1, "state", state,
                          "round", (json_int_t)c->round, "completed", (json_int_t)c->committed,
                          "target", (json_int_t)c->target, "paused", c->paused, "live",
                          coord_live_count(c), "registered", registered, "secagg",
                          c->conf->secagg);
    jx_set(r, "resumed_from", c->resumed_from >= 0 ? json_integer(c->resumed_from) : json_null());
    jx_set(r, "uptime_s", jx_real(util_now() - c->started_at, 1));
    jx_set(r, "state_dir", json_string(c->conf->out_dir));
    jx_set(r, "last_participants", json_integer(c->last_participants));
    jx_set(r, "last_val_accuracy", jx_real(c->last_accuracy, 6));
    jx_set(r, "last_val_auc", jx_real(c->last_auc, 6));
    put_json(f, r);
}

static const char *const part_names[] = {"idle", "pending", "done", "dropped"};

static void cmd_clients(coord_t *c, FILE *f)
{
    double now = util_now();
    json_t *list = json_array();
    for (int i = 0; i < c->n_clients; i++) {
        const client_rec_t *k = &c->clients[i];
        json_t *one = json_pack("{s:s,s:i,s:b,s:b}", "site", k->site, "index", k->index, "live",
                                k->live, "removed", k->removed);
        jx_set(one, "last_seen_s", jx_real(now - k->last_seen, 1));
        jx_set(one, "n_train", json_integer(k->n_train));
        jx_set(one, "n_val", json_integer(k->n_val));
        jx_set(one, "train", json_string(part_names[k->train]));
        jx_set(one, "eval", json_string(part_names[k->eval]));
        /* Rolling upgrades: what each site runs; its training progress this round. */
        jx_set(one, "protocol", json_integer(k->proto));
        jx_set(one, "software", k->sw[0] ? json_string(k->sw) : json_null());
        jx_set(one, "progress", k->train == P_PENDING && k->total > 0 &&
                                        k->progress_round == c->round
                                    ? jx_real((double)k->done / (double)k->total, 4)
                                    : json_null());
        if (k->cert_not_after) {
            jx_set(one, "cert_not_after", json_integer((json_int_t)k->cert_not_after));
            jx_set(one, "cert_days_left", json_integer((json_int_t)cert_days_left(k->cert_not_after)));
        }
        json_array_append_new(list, one);
    }
    put_json(f, json_pack("{s:b,s:o}", "ok", 1, "clients", list));
}

static int parse_count(const char *s, long long lo, long long hi, long long *out)
{
    return s && util_parse_int(s, lo, hi, out) == 0 ? 0 : -1;
}

static void cmd_start(coord_t *c, const char *arg, char (*sets)[ADMIN_FRAME_MAX], int nsets,
                      FILE *f)
{
    long long n = c->conf->rounds;
    if (arg && arg[0] && parse_count(arg, 1, 100000, &n) < 0) {
        fprintf(f, "{\"ok\":false,\"error\":\"start: rounds must be 1..100000\"}");
        return;
    }
    char err[512];
    if (nsets > 0 && coord_set(c, sets, nsets, err, sizeof err) < 0) {
        fputs("{\"ok\":false,\"error\":", f);
        util_json_string(f, err);
        fputs("}", f);
        return;
    }
    if (!arg || !arg[0]) n = c->conf->rounds; /* a --set rounds=N counts */
    coord_run_more(c, (uint32_t)n);
    log_info("admin: start %lld rounds -> target round %u", n, c->target);
    fprintf(f, "{\"ok\":true,\"round\":%u,\"target\":%u}", c->round, c->target);
}

static void cmd_pause(coord_t *c, FILE *f)
{
    coord_pause(c);
    log_info("admin: pause (the round in flight finishes)");
    fprintf(f, "{\"ok\":true,\"round\":%u,\"state\":\"%s\"}", c->round, coord_phase_name(c));
}

static void cmd_stop(coord_t *c, FILE *f)
{
    log_info("admin: stop");
    coord_stop_run(c, "stopped by the admin");
    fprintf(f, "{\"ok\":true,\"round\":%u,\"completed\":%u}", c->round, c->committed);
}

/* Reads the round's model file; the caller frees *data. */
static void cmd_export(coord_t *c, const char *arg, FILE *f, uint8_t **data, size_t *len)
{
    long long r = c->committed;
    if (arg && parse_count(arg, 1, UINT32_MAX, &r) < 0) {
        fprintf(f, "{\"ok\":false,\"error\":\"export: round must be a positive integer\"}");
        return;
    }
    if (r > c->committed) { /* a round file not yet committed is not the run's model */
        fprintf(f, "{\"ok\":false,\"error\":\"export: round %lld has no committed model "
                   "(completed rounds: %u)\"}", r, c->committed);
        return;
    }
    char path[PATH_MAX + 64];
    state_round_path(c, (uint32_t)r, path, sizeof path);
    char err[PATH_MAX + 128];
    *data = r > 0 ? (uint8_t *)util_read_file(path, (size_t)1 << 34, len, err, sizeof err) : NULL;
    if (!*data) {
        fprintf(f, "{\"ok\":false,\"error\":\"no model saved for round %lld (completed rounds: "
                   "%u)\"}", r, c->committed);
    } else {
        log_info("admin: export round %lld (%zu bytes)", r, *len);
        fprintf(f, "{\"ok\":true,\"round\":%lld,\"bytes\":%zu}", r, *len);
    }
}

static void cmd_watch(coord_t *c, const uint8_t *id, size_t id_len, FILE *f)
{
    struct admin *a = c->admin;
    watcher_t *w = NULL;
    for (int i = 0; i < a->n_w; i++)
        if (a->w[i].id_len == id_len && memcmp(a->w[i].id, id, id_len) == 0) w = &a->w[i];
    if (!w && a->n_w < WATCHERS_MAX) {
        w = &a->w[a->n_w++];
        memcpy(w->id, id, id_len);
        w->id_len = id_len;
    }
    if (!w) {
        fprintf(f, "{\"ok\":false,\"error\":\"watch: %d watchers already\"}", WATCHERS_MAX);
        return;
    }
    w->renewed = util_now();
    fprintf(f, "{\"ok\":true,\"watching\":true,\"round\":%u,\"state\":\"%s\"}", c->round,
            coord_phase_name(c));
}

/* Reads one request: [id][frames...]; -1 if none is waiting. */
static int read_request(struct admin *a, uint8_t *id, size_t *id_len,
                        char frames[ADMIN_FRAMES][ADMIN_FRAME_MAX], int *n, int *bad)
{
    int more = 1, k = 0;
    *bad = 0;
    *n = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, a->sock, k == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            return k == 0 ? -1 : 0;
        }
        size_t len = zmq_msg_size(&m);
        const char *d = zmq_msg_data(&m);
        if (k == 0) {
            *id_len = len <= 256 ? len : 256;
            memcpy(id, d, *id_len);
            if (len > 256) *bad = 1;
        } else if (k - 1 < ADMIN_FRAMES && len < ADMIN_FRAME_MAX) {
            memcpy(frames[k - 1], d, len);
            frames[k - 1][len] = '\0';
            if (memchr(d, '\0', len)) *bad = 1;
            *n = k;
        } else {
            *bad = 1;
        }
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        k++;
    }
    if (*n == 0) *bad = 1;
    return 0;
}

void admin_on_readable(coord_t *c)
{
    struct admin *a = c->admin;
    for (int budget = 0; budget < 16; budget++) {
        uint8_t id[256];
        size_t id_len;
        char fr[ADMIN_FRAMES][ADMIN_FRAME_MAX];
        int n, bad;
        if (read_request(a, id, &id_len, fr, &n, &bad) < 0) return;
        char *json = NULL;
        size_t json_len = 0;
        uint8_t *data = NULL;
        size_t data_len = 0;
        FILE *f = open_memstream(&json, &json_len);
        if (!f) return;
        const char *cmd = n > 0 ? fr[0] : "", *arg = n > 1 ? fr[1] : NULL;
        if (bad) fputs("{\"ok\":false,\"error\":\"malformed request\"}", f);
        else if (strcmp(cmd, "status") == 0) cmd_status(c, f);
        else if (strcmp(cmd, "clients") == 0) cmd_clients(c, f);
        else if (strcmp(cmd, "start") == 0) cmd_start(c, arg, fr + 2, n > 2 ? n - 2 : 0, f);
        else if (strcmp(cmd, "pause") == 0) cmd_pause(c, f);
        else if (strcmp(cmd, "stop") == 0) cmd_stop(c, f);
        else if (strcmp(cmd, "export") == 0) cmd_export(c, arg, f, &data, &data_len);
        else if (strcmp(cmd, "watch") == 0) cmd_watch(c, id, id_len, f);
        else {
            char why[ADMIN_FRAME_MAX + 96];
            snprintf(why, sizeof why,
                     "unknown command '%s' (status, clients, start, pause, stop, export, watch)", cmd);
            fputs("{\"ok\":false,\"error\":", f);
            util_json_string(f, why);
            fputs("}", f);
        }
        fclose(f);
        if (bad) log_warn("admin: malformed request refused");
        if (reply(a, id, id_len, json, data, data_len) < 0)
            log_warn("admin: reply to %s failed: %s", cmd, zmq_strerror(errno));
        free(json);
        free(data);
    }
}
