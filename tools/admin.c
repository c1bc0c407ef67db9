#include "tools/admin.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "common/json.h"
#include "common/options.h"
#include "common/util.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"
#include "proto/transport.h"
#include "proto/wire.h"

typedef struct {
    char coordinator[256];
    char admin_key[1024];
    char coordinator_key[80];
} admin_conf_t;

#define A(f) offsetof(admin_conf_t, f)
static const conf_opt_t admin_opts[] = {
    {"coordinator", CONF_STR, A(coordinator), sizeof(((admin_conf_t *)0)->coordinator), 0, 0, NULL},
    {"admin_key", CONF_STR, A(admin_key), sizeof(((admin_conf_t *)0)->admin_key), 0, 0, NULL},
    {"coordinator_key", CONF_STR, A(coordinator_key), sizeof(((admin_conf_t *)0)->coordinator_key),
     0, 0, NULL},
};

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    void *zctx, *sock;
    const char *endpoint;
} conn_t;

static int conn_open(conn_t *k, const admin_conf_t *conf, const char *path)
{
    uint8_t sk[CURVE_KEYBYTES], pk[CURVE_KEYBYTES], server[CURVE_KEYBYTES];
    char err[512];
    if (keyfile_load(conf->admin_key, sk, sizeof sk, err, sizeof err) < 0) {
        fprintf(stderr, "medfed: %s\n", err);
        return -1;
    }
    k->endpoint = conf->coordinator;
    k->zctx = zmq_ctx_new();
    k->sock = k->zctx ? zmq_socket(k->zctx, ZMQ_DEALER) : NULL;
    int linger = 0, immediate = 1, sndtimeo = 10000;
    int ok = k->sock && identity_pk_from_hex(server, conf->coordinator_key) == 0 &&
             curve_pk_of(pk, sk) == 0 && transport_curve_client(k->sock, server, pk, sk) == 0;
    crypto_wipe(sk, sizeof sk);
    if (!ok) {
        fprintf(stderr, "medfed: %s: coordinator_key must be 64 hex digits\n", path);
        return -1;
    }
    zmq_setsockopt(k->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(k->sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    zmq_setsockopt(k->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    if (zmq_connect(k->sock, conf->coordinator) < 0) {
        fprintf(stderr, "medfed: cannot connect to %s: %s\n", conf->coordinator, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

static void conn_close(conn_t *k)
{
    if (k->sock) zmq_close(k->sock);
    if (k->zctx) zmq_ctx_term(k->zctx);
}

/* [cmd, arg, sets...]: start's KEY=VALUE overrides follow its rounds ("" = the default). */
static int send_request(conn_t *k, const char *cmd, const char *arg, char **sets, int nsets)
{
    if (nsets > 0 && !arg) arg = "";
    int ok = zmq_send(k->sock, cmd, strlen(cmd), arg ? ZMQ_SNDMORE : 0) >= 0 &&
             (!arg || zmq_send(k->sock, arg, strlen(arg), nsets ? ZMQ_SNDMORE : 0) >= 0);
    for (int i = 0; ok && i < nsets; i++)
        ok = zmq_send(k->sock, sets[i], strlen(sets[i]), i + 1 < nsets ? ZMQ_SNDMORE : 0) >= 0;
    if (!ok) {
        fprintf(stderr, "medfed: %s is not reachable (%s): is the coordinator running, and is "
                        "this the admin key it was provisioned with?\n",
                k->endpoint, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* Receives one reply: frame 1 as a string (caller frees), frame 2 into *data. */
static char *recv_reply(conn_t *k, int timeout_ms, uint8_t **data, size_t *data_len)
{
    zmq_pollitem_t pi = {k->sock, 0, ZMQ_POLLIN, 0};
    int n;
    do n = zmq_poll(&pi, 1, timeout_ms);
    while (n < 0 && errno == EINTR && !interrupted);
    if (n <= 0) return NULL;
    char *text = NULL;
    for (int part = 0, more = 1; more; part++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, k->sock, 0) < 0) {
            zmq_msg_close(&m);
            free(text);
            return NULL;
        }
        size_t len = zmq_msg_size(&m);
        if (part == 0) {
            text = malloc(len + 1);
            if (text) {
                memcpy(text, zmq_msg_data(&m), len);
                text[len] = '\0';
            }
        } else if (part == 1 && data) {
            *data = malloc(len ? len : 1);
            if (*data) memcpy(*data, zmq_msg_data(&m), len);
            *data_len = len;
        }
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    return text;
}

/* ---- reading a reply: the few fields the human-readable output needs ------------------- */

static json_t *reply_json(const char *j) { return jx_loads_object(j, strlen(j)); }

static int reply_ok(const char *j)
{
    json_t *r = reply_json(j);
    int ok = jx_true(r, "ok");
    json_decref(r);
    return ok;
}

/* obj[key] as a number, 0 when absent. */
static double num_or_0(const json_t *obj, const char *key)
{
    double v = 0;
    jx_number(obj, key, &v);
    return v;
}

static const char *str_or_empty(const json_t *obj, const char *key)
{
    const char *s = jx_string(obj, key);
    return s ? s : "";
}

static void print_status(const char *text)
{
    json_t *j = reply_json(text);
    double from, acc, auc;
    printf("state:    %s, round %.0f (%.0f completed, target %.0f)\n", str_or_empty(j, "state"),
           num_or_0(j, "round"), num_or_0(j, "completed"), num_or_0(j, "target"));
    printf("clients:  %.0f live of %.0f registered; secure aggregation %s\n", num_or_0(j, "live"),
           num_or_0(j, "registered"), jx_true(j, "secagg") ? "on" : "off");
    if (jx_number(j, "resumed_from", &from) == 0)
        printf("resumed:  from round %.0f (the last completed before the restart)\n", from);
    if (jx_number(j, "last_val_accuracy", &acc) == 0) {
        printf("last:     %.0f participants, val accuracy %.4f", num_or_0(j, "last_participants"),
               acc);
        if (jx_number(j, "last_val_auc", &auc) == 0) printf(", AUC %.4f", auc);
        printf("\n");
    }
    json_decref(j);
}

static void print_clients(const char *text)
{
    json_t *j = reply_json(text), *one;
    size_t i;
    printf("%-24s %5s %5s %10s %8s %8s  %-8s %-9s %5s  %s\n", "SITE", "ID", "LIVE", "LAST SEEN",
           "TRAIN", "VAL", "ROUND", "SOFTWARE", "PROTO", "PROGRESS");
    int warned = 0, older = 0;
    json_array_foreach(json_object_get(j, "clients"), i, one) {
        const char *site = str_or_empty(one, "site"), *sw = str_or_empty(one, "software");
        char progress[16] = "-";
        double frac, days, proto = num_or_0(one, "protocol");
        if (jx_number(one, "progress", &frac) == 0)
            snprintf(progress, sizeof progress, "%.0f%%", 100 * frac);
        printf("%-24s %5.0f %5s %9.0fs %8.0f %8.0f  %-8s %-9s %5.0f  %s%s\n", site,
               num_or_0(one, "index"), jx_true(one, "live") ? "yes" : "no",
               num_or_0(one, "last_seen_s"), num_or_0(one, "n_train"), num_or_0(one, "n_val"),
               str_or_empty(one, "train"), sw[0] ? sw : "<0.6", proto, progress,
               jx_true(one, "removed") ? " (removed)" : "");
        if (jx_number(one, "cert_days_left", &days) == 0 && days < CERT_WARN_DAYS) {
            if (!warned++) fputc('\n', stderr);
            fprintf(stderr, "warning: %s's certificate %s %.0f days: renew it with medfed "
                    "provision --renew %s --ca-dir DIR/ca --out KITDIR\n", site,
                    days < 0 ? "expired" : "expires in", days < 0 ? -days : days, site);
        }
        if (proto > 0 && proto < WIRE_VERSION) older = (int)proto;
    }
    if (older)
        printf("(sites with protocol %d < %d run an older medfed: the coordinator speaks "
               "their version until they are upgraded)\n", older, WIRE_VERSION);
    json_decref(j);
}

static int watch(conn_t *k, int until_idle)
{
    double renewed = -1e9;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    while (!interrupted) {
        double now = util_now();
        if (now - renewed >= 5.0) {
            if (send_request(k, "watch", NULL, NULL, 0) < 0) return 1;
            renewed = now;
        }
        char *line = recv_reply(k, 1000, NULL, NULL);
        if (!line) continue;
        if (line[0] == '{') {
            if (!reply_ok(line)) {
                fprintf(stderr, "medfed: %s\n", line);
                free(line);
                return 1;
            }
        } else {
            char ts[32];
            time_t t = time(NULL);
            strftime(ts, sizeof ts, "%H:%M:%S", localtime(&t));
            printf("%s %s\n", ts, line);
            fflush(stdout);
            if (until_idle && strstr(line, "phase=idle")) {
                free(line);
                return 0;
            }
        }
        free(line);
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: medfed COMMAND [--config ADMIN.ini] [options]\n"
               "  status [--json]              where the run stands\n"
               "  clients [--json]             every registered site: software and protocol\n"
               "                               version, training progress, certificate expiry\n"
               "  start [--rounds N] [--set KEY=VALUE ...]\n"
               "                               run N more rounds (default: the config's rounds),\n"
               "                               with coordinator.ini settings changed first (the\n"
               "                               recipe and server optimiser; between rounds)\n"
               "  pause                        finish the round in flight, then wait\n"
               "  stop                         abandon the round in flight now\n"
               "  export [--round R] --out F   the model after round R (default: latest)\n"
               "  watch [--until-idle]         one line per phase, live (Ctrl-C ends)\n"
               "--config defaults to $MEDFED_ADMIN_CONFIG, else /etc/medfed/admin.ini\n");
}

int admin_main(int argc, char **argv)
{
    const char *cmd = argv[0], *config = getenv("MEDFED_ADMIN_CONFIG"), *arg = NULL, *out = NULL;
    int json = 0, until_idle = 0, nsets = 0;
    char *sets[16];
    if (!config) config = "/etc/medfed/admin.ini";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--config") == 0 && has_next) config = argv[++i];
        else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--until-idle") == 0 && strcmp(cmd, "watch") == 0) until_idle = 1;
        else if (strcmp(a, "--rounds") == 0 && has_next && strcmp(cmd, "start") == 0) arg = argv[++i];
        else if (strcmp(a, "--set") == 0 && has_next && strcmp(cmd, "start") == 0) {
            const char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq || eq == kv || strlen(kv) >= 256 || nsets >= 16) {
                fprintf(stderr, "medfed start: --set wants KEY=VALUE (at most 16, 255 characters "
                                "each), got '%s'\n", kv);
                return 2;
            }
            sets[nsets++] = (char *)kv;
        }
        else if (strcmp(a, "--round") == 0 && has_next && strcmp(cmd, "export") == 0) arg = argv[++i];
        else if (strcmp(a, "--out") == 0 && has_next && strcmp(cmd, "export") == 0) out = argv[++i];
        else {
            fprintf(stderr, "medfed %s: unexpected argument '%s'\n", cmd, a);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "export") == 0 && !out) {
        fprintf(stderr, "medfed export: --out FILE is required\n");
        return 2;
    }
    admin_conf_t conf = {0};
    char err[1024];
    if (conf_load_ini(config, "admin", admin_opts, sizeof admin_opts / sizeof admin_opts[0], &conf,
                      NULL, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "medfed: %s\n", err);
        return 2;
    }
    if (!conf.coordinator[0] || !conf.admin_key[0] || !conf.coordinator_key[0]) {
        fprintf(stderr, "medfed: %s: [admin] needs coordinator, admin_key and coordinator_key\n",
                config);
        return 2;
    }
    if (crypto_init() < 0) return 1;
    conn_t k = {0};
    int rc = 1;
    if (conn_open(&k, &conf, config) < 0) goto out;
    if (strcmp(cmd, "watch") == 0) {
        rc = watch(&k, until_idle);
        goto out;
    }
    if (send_request(&k, cmd, arg, sets, nsets) < 0) goto out;
    uint8_t *data = NULL;
    size_t data_len = 0;
    char *reply = recv_reply(&k, strcmp(cmd, "export") == 0 ? 120000 : 10000, &data, &data_len);
    if (!reply) {
        fprintf(stderr, "medfed: no answer from %s: is the coordinator running, and is this the "
                        "admin key it was provisioned with?\n", conf.coordinator);
        goto out;
    }
    if (!reply_ok(reply)) {
        fprintf(stderr, "medfed %s: %s\n", cmd, reply);
    } else if (out) {
        if (!data || util_write_file_atomic(out, data, data_len, err, sizeof err) < 0)
            fprintf(stderr, "medfed export: %s\n", data ? err : "no model in the reply");
        else {
            printf("wrote %s (%zu bytes)\n", out, data_len);
            rc = 0;
        }
    } else {
        if (json) printf("%s\n", reply);
        else if (strcmp(cmd, "status") == 0) print_status(reply);
        else if (strcmp(cmd, "clients") == 0) print_clients(reply);
        else printf("%s\n", reply);
        rc = 0;
    }
    free(reply);
    free(data);
out:
    conn_close(&k);
    return rc;
}
