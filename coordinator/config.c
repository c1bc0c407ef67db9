/*
 * config.c - the coordinator's settings: one table for the config file's
 * [coordinator] section and the command-line flags (same names, '-' for '_').
 */
#include "coordinator/coordinator.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/options.h"
#include "common/util.h"

static int parse_server_opt(const char *v, void *field, char *err, size_t errlen)
{
    if (fedavg_opt_parse(v, (server_opt_t *)field) == 0) return 0;
    util_seterr(err, errlen,
                "'server_opt' must be fedavg, fedavgm, fedadagrad, fedyogi or fedadam, got '%s'", v);
    return -1;
}

static int parse_lr_schedule(const char *v, void *field, char *err, size_t errlen)
{
    if (fedavg_lr_schedule_parse(v, (lr_schedule_t *)field) == 0) return 0;
    util_seterr(err, errlen, "'lr_schedule' must be constant, step or cosine, got '%s'", v);
    return -1;
}

#define F(f) offsetof(coord_conf_t, f)
#define STR(name, f) {name, CONF_STR, F(f), sizeof(((coord_conf_t *)0)->f), 0, 0, NULL}
#define NUM(name, kind, f, lo, hi) {name, kind, F(f), 0, lo, hi, NULL}
static const conf_opt_t coord_opts[] = {
    STR("bind", bind),
    STR("init", init_model),
    STR("state_dir", out_dir),
    STR("out", out_dir),
    STR("roster", roster),
    STR("curve_secret", curve_secret),
    STR("curve_key", curve_secret),
    STR("ca", ca),
    STR("admin_bind", admin_bind),
    STR("admin_key", admin_key),
    NUM("autostart", CONF_ONOFF, autostart, 0, 1),
    NUM("resume", CONF_ONOFF, resume, 0, 1),
    NUM("rounds", CONF_INT, rounds, 1, 100000),
    NUM("wait_for", CONF_INT, wait_for, 1, 1024),
    NUM("min_clients", CONF_INT, min_clients, 1, 1024),
    NUM("fraction", CONF_DOUBLE, fraction, 0.001, 1),
    NUM("local_epochs", CONF_INT, epochs, 0, 1000),
    NUM("batch", CONF_INT, batch, 1, 65536),
    NUM("lr", CONF_DOUBLE, lr, 1e-8, 10),
    NUM("momentum", CONF_DOUBLE, momentum, 0, 0.999),
    NUM("weight_decay", CONF_DOUBLE, weight_decay, 0, 0.1),
    {"server_opt", CONF_CUSTOM, F(server.opt), 0, 0, 0, parse_server_opt},
    NUM("server_lr", CONF_DOUBLE, server.lr, 1e-6, 100),
    NUM("server_momentum", CONF_DOUBLE, server.momentum, 0, 0.999),
    NUM("server_eta", CONF_DOUBLE, server.eta, 1e-8, 10),
    NUM("server_beta1", CONF_DOUBLE, server.beta1, 0, 0.9999),
    NUM("server_beta2", CONF_DOUBLE, server.beta2, 0, 0.9999),
    NUM("server_tau", CONF_DOUBLE, server.tau, 1e-12, 10),
    {"lr_schedule", CONF_CUSTOM, F(lr_schedule.kind), 0, 0, 0, parse_lr_schedule},
    NUM("lr_step_rounds", CONF_INT, lr_schedule.step_rounds, 1, 100000),
    NUM("lr_step_gamma", CONF_DOUBLE, lr_schedule.gamma, 1e-6, 1),
    NUM("lr_min", CONF_DOUBLE, lr_schedule.lr_min, 0, 10),
    NUM("prox_mu", CONF_DOUBLE, prox_mu, 0, 100),
    NUM("augment", CONF_ONOFF, augment, 0, 1),
    NUM("class_balanced", CONF_ONOFF, class_balanced, 0, 1),
    NUM("seed", CONF_U64, seed, 0, 9007199254740992.0),
    NUM("heartbeat_timeout", CONF_DOUBLE, heartbeat_timeout, 0.1, 86400),
    NUM("phase_timeout", CONF_DOUBLE, phase_timeout, 0.1, 604800),
    NUM("wait_timeout", CONF_DOUBLE, wait_timeout, 0.1, 604800),
    NUM("secagg", CONF_ONOFF, secagg, 0, 1),
    NUM("dropout", CONF_DOUBLE, dropout, 0, 0.99),
    NUM("collusion", CONF_DOUBLE, collusion, 0, 0.99),
    NUM("clip", CONF_DOUBLE, clip, 1e-6, 1e6),
    NUM("clip_auto", CONF_ONOFF, clip_auto, 0, 1),
    NUM("clip_headroom", CONF_DOUBLE, clip_headroom, 1, 1e6),
    NUM("upload_bits", CONF_INT, upload_bits, 1, 32),
    NUM("upload_slots", CONF_INT, upload_slots, 1, 1024),
    NUM("download_slots", CONF_INT, download_slots, 1, 1024),
    NUM("transfer_timeout", CONF_DOUBLE, transfer_timeout, 0.1, 604800),
    NUM("io_threads", CONF_INT, io_threads, 1, 64),
    NUM("max_samples", CONF_U64, max_samples, 1, 1099511627776.0),
    NUM("neighbors", CONF_INT, neighbors, 0, 1024),
    NUM("log_level", CONF_LEVEL, log_level, 0, 0),
};
#define N_OPTS (sizeof coord_opts / sizeof coord_opts[0])

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
    c->server = (fedavg_opts_t){.opt = SERVER_OPT_FEDAVG, .lr = 1.0};
    fedavg_opts_adaptive_defaults(&c->server);
    c->lr_schedule = (lr_sched_t){.kind = LR_CONSTANT, .step_rounds = 10, .gamma = 0.5, .lr_min = 0};
    c->prox_mu = 0;
    c->augment = 0;
    c->class_balanced = 0;
    c->secagg = 1;
    c->dropout = 0.2;
    c->collusion = 0.33;
    c->clip = 2.0;
    c->clip_auto = 1;
    c->clip_headroom = 4.0;
    /* w = 16 at 10 sites: half the bytes of an fp32 update, accuracy and
     * AUC within the 32-bit runs' own spread (README, the width table). */
    c->upload_bits = 11;
    /* In flight at once: enough that sites on their own slow links do not
     * wait in line (test-wan, hospital VPN: 2 and 1 made a round 8.9 s, 6 and
     * 6 made it 3.4 s), few enough that memory stays bounded at any N. */
    c->upload_slots = 4;
    c->download_slots = 8;
    c->transfer_timeout = 600;
    c->io_threads = 2;
    c->max_samples = 10000000;
    c->log_level = LOG_INFO;
    c->autostart = -1; /* decided in coord_conf_finish */
    c->resume = 1;
}

int coord_conf_known(const char *name) { return conf_find(coord_opts, N_OPTS, name) >= 0; }

/* What a run may change (medfed start --set): the hyper-parameters of the
 * rounds. Everything else (sockets, keys, files, the roster, the threat
 * model's slots and timeouts) is the coordinator's for its life. */
static const char *const runtime_opts[] = {
    "rounds", "min_clients", "fraction", "local_epochs", "batch", "lr", "momentum",
    "weight_decay", "server_opt", "server_lr", "server_momentum", "server_eta", "server_beta1",
    "server_beta2", "server_tau", "lr_schedule", "lr_step_rounds", "lr_step_gamma", "lr_min",
    "prox_mu", "augment", "class_balanced", "clip", "clip_auto", "clip_headroom",
};

int coord_conf_runtime(const char *name)
{
    int i = conf_find(coord_opts, N_OPTS, name);
    if (i < 0) return 0;
    for (size_t k = 0; k < sizeof runtime_opts / sizeof runtime_opts[0]; k++)
        if (strcmp(coord_opts[i].name, runtime_opts[k]) == 0) return 1;
    return 0;
}

int coord_conf_set(coord_conf_t *c, const char *name, const char *value, char *err, size_t errlen)
{
    int i = conf_find(coord_opts, N_OPTS, name);
    if (i < 0) {
        util_seterr(err, errlen, "unknown setting '%s'", name);
        return -1;
    }
    return conf_set(&coord_opts[i], c, value, err, errlen);
}

/* server_opt by name: the name fedavg_opt_parse reads as this value. */
static json_t *custom_json(const conf_opt_t *o, const void *field)
{
    static const char *const names[] = {"fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi",
                                        "fedadagrad"};
    if (o->parse != parse_server_opt) return NULL;
    server_opt_t want = *(const server_opt_t *)field, v;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (fedavg_opt_parse(names[i], &v) == 0 && v == want) return json_string(names[i]);
    return json_integer(want);
}

json_t *coord_conf_json(const coord_conf_t *c) { return conf_to_json(coord_opts, N_OPTS, c, custom_json); }

int coord_conf_load(const char *path, coord_conf_t *c, char *err, size_t errlen)
{
    return conf_load_ini(path, "coordinator", coord_opts, N_OPTS, c, NULL, NULL, err, errlen);
}

int coord_conf_finish(coord_conf_t *c, char *err, size_t errlen)
{
    if (!c->init_model[0]) {
        util_seterr(err, errlen, "the initial model is required (init = FILE, or --init FILE)");
        return -1;
    }
    if (c->min_clients > c->wait_for) c->wait_for = c->min_clients;
    if (c->admin_bind[0] && !c->admin_key[0]) {
        util_seterr(err, errlen, "admin_bind needs admin_key (the admin's CURVE public key)");
        return -1;
    }
    if (c->admin_bind[0] && !c->curve_secret[0]) {
        util_seterr(err, errlen, "admin_bind needs curve_key: the admin socket is CURVE only");
        return -1;
    }
    if (c->autostart < 0) c->autostart = !c->admin_bind[0];
    return 0;
}
