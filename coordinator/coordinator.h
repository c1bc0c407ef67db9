/*
 * coordinator.h - the research lead's coordinator: a ROUTER socket, the
 * registry of hospital clients, and the round state machine. It works on flat
 * float32 vectors and schemas only: it never links LibTorch and never sees an
 * image.
 */
#ifndef MEDFED_COORDINATOR_H
#define MEDFED_COORDINATOR_H

#include <limits.h>
#include <signal.h>
#include <stdint.h>

#include "aggregation/fedavg.h"
#include "common/log.h"

#define COORD_MAX_CLIENTS 1024

typedef struct {
    char bind[256];              /* tcp://127.0.0.1:7700 */
    char init_model[PATH_MAX];   /* safetensors with arch metadata (medfed-init) */
    char out_dir[PATH_MAX];      /* the state directory: metrics.jsonl, model.safetensors,
                                    rounds/round-N.safetensors, state.json (resume) */
    char roster[PATH_MAX];       /* optional: one site name per line; index = line order */
    char curve_secret[PATH_MAX]; /* CURVE server key file: encrypted transport + ZAP roster check */
    int rounds;
    int wait_for;                /* start round 1 once this many clients registered */
    int min_clients;             /* fewer accepted updates than this aborts a round */
    double fraction;             /* share of live clients picked per round */
    int epochs, batch;
    double lr, momentum, weight_decay;
    uint64_t seed;
    double heartbeat_timeout;    /* a client silent this long is dropped */
    double phase_timeout;        /* deadline of one phase */
    double wait_timeout;         /* give up waiting for clients after this long */
    fedavg_opts_t server;
    /* the local recipe, sent in each PLAN */
    lr_sched_t lr_schedule;      /* the local lr over the run's rounds (fedavg_lr_at) */
    double prox_mu;              /* FedProx: (mu / 2) ||w - w_global||^2 added to the local loss */
    int augment;                 /* seeded small random affine on training images */
    int class_balanced;          /* cross-entropy weighted by the site's inverse class frequency */
    int secagg;                  /* secure aggregation on (default) */
    double dropout, collusion;   /* threat model: expected shares of the cohort */
    double clip;                 /* secure aggregation: delta values clipped to [-clip, clip];
                                    with clip_auto the first round's clip and the ceiling */
    int clip_auto;               /* later rounds: clip from the last aggregate (secagg_next_clip) */
    double clip_headroom;        /* clip_auto: next clip = headroom x max |mean update| */
    int upload_bits;             /* secure aggregation: bits per site value; the upload width
                                    adds ceil(log2(cohort)) + 1 (aggregation/encoding.h) */
    int neighbors;               /* SecAgg+ degree; 0 = from the cohort size */
    int upload_slots;            /* masked inputs in flight at once: memory = slots x model */
    int download_slots;          /* PLAN/EVAL with the model in flight at once */
    double transfer_timeout;     /* a site sent the model says it has it within this, else its
                                    slot goes to the next; one told UPLOAD (plaintext) sends its
                                    update within this, else it is dropped */
    int io_threads;              /* ZeroMQ I/O threads (CURVE encrypts and decrypts there) */
    int64_t max_samples;         /* the most one site's signed weight n_k may claim */
    log_level_t log_level;
    char ca[PATH_MAX];           /* federation CA: site identity certificates are checked */
    char admin_bind[256];        /* admin socket (CURVE, admin key only); "" = none */
    char admin_key[PATH_MAX];    /* the admin's CURVE public key: 64 hex digits or a file */
    int autostart;               /* run `rounds` at once (default: without an admin socket) */
    int resume;                  /* continue from state.json in out_dir if there is one (on) */
} coord_conf_t;

void coord_conf_defaults(coord_conf_t *c);
/* Reads [coordinator] of an INI file over c (defaults first). "file:line: reason". */
int coord_conf_load(const char *path, coord_conf_t *c, char *err, size_t errlen);
/* Sets one setting by INI key or flag name (run-time flags override the file). */
int coord_conf_set(coord_conf_t *c, const char *name, const char *value, char *err, size_t errlen);
/* 1 if name is a setting. */
int coord_conf_known(const char *name);
/* Every setting and its value, by INI key (run.json's "config"): a json_t *. */
struct json_t *coord_conf_json(const coord_conf_t *c);
/* 1 if name is a setting that `medfed start --set` may change between runs
 * (the recipe and the server optimiser); 0 for those fixed for the
 * coordinator's life (sockets, keys, files, the state directory, ...). */
int coord_conf_runtime(const char *name);
/* Cross-field checks after everything is read. */
int coord_conf_finish(coord_conf_t *c, char *err, size_t errlen);

extern volatile sig_atomic_t coord_stop;
extern volatile sig_atomic_t coord_reload; /* SIGHUP: re-read the roster */

/* Runs the whole federation. 0 when every round ran, non-zero on error. */
int coord_run(const coord_conf_t *conf);
/* --check: the config, model, roster, CA certificate, keys and state directory,
 * each step reported as it ends (json: one JSON object on stdout instead,
 * common/check.h); writes nothing. 0 if all is well, else 1. */
int coord_check(const coord_conf_t *conf, int json);

#endif
