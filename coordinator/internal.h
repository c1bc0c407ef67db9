/*
 * internal.h - the coordinator's state, shared by the round engine
 * (coordinator.c) and the secure-aggregation phases (secagg_server.c).
 * Not a public API.
 */
#ifndef MEDFED_COORD_INTERNAL_H
#define MEDFED_COORD_INTERNAL_H

#include <stdio.h>

#include "aggregation/secagg.h"
#include "common/rng.h"
#include "common/roster.h"
#include "coordinator/coordinator.h"
#include "model/safetensors.h"
#include "proto/transport.h"

#define NO_VERSION UINT32_MAX

typedef enum {
    ST_WAITING,
    ST_TRAINING,     /* plaintext: UPDATEs; secure: training then ADVERTISE */
    ST_SHARING,      /* secure: SHARES */
    ST_MASKING,      /* secure: MASKED */
    ST_CONSIST,      /* secure: CONSIST (consistency round: signatures on U3) */
    ST_UNMASKING,    /* secure: UNMASK */
    ST_EVALUATING,
    ST_DONE
} coord_state_t;

/* Where one client stands in the current phase. */
typedef enum { P_IDLE, P_PENDING, P_DONE, P_DROPPED } part_t;

/* Secure aggregation: how far a cohort member got this round. Its U-set
 * membership is stage >= k: U1 advertised, U2 shared, U3 masked, U4 signed
 * U3 (consistency round), U5 unmasked. */
typedef struct {
    int stage;
    int ready;                           /* has its masked input computed */
    int granted;                         /* may upload its masked input now */
    uint8_t adv[WIRE_ADVERTISE_BYTES];  /* c_pk || s_pk || n_k || sig */
    int64_t weight;                      /* n_k, as the site signed it */
    uint8_t consist_sig[WIRE_SIG_BYTES]; /* its signature on U3 */
    uint8_t cert[WIRE_CERT_MAX];         /* its identity certificate (DER), relayed in KEYS */
    size_t cert_len;                     /* 0: none (roster mode) */
    uint8_t *boxes;                      /* its SHARES blob, |U1|-1 records */
    size_t boxes_len;
} sa_client_t;

typedef struct {
    peer_id_t id;
    char site[WIRE_SITE_MAX];
    int index;             /* roster position, or registration order */
    int64_t n_train, n_val;
    double last_seen;
    int live;
    int fd;                /* connection of its last message, -1 unknown */
    uint32_t has_version;  /* global model version this client holds */
    part_t train, eval;    /* train: in this round's cohort and still in it */
    int removed;           /* taken off the roster (SIGHUP): refused until it is back */
    sa_client_t sa;
} client_rec_t;

typedef struct {
    const coord_conf_t *conf;
    void *zctx, *sock, *monitor;
    struct zap *zap;           /* CURVE: admits roster keys only */
    char cur_user_id[96];      /* CURVE: "SITE/KEYHEX16", bound by ZAP to the current sender's key */
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
    roster_t roster;
    int have_roster;
    struct cert_ca *ca;        /* --ca: ADVERTISE must carry a certificate from this CA */
    int reindex;           /* roster re-read: renumber sites before the next round */

    /* the run, as the state directory records it (state.c) */
    uint32_t target;       /* run rounds until round == target */
    uint32_t committed;    /* model version of the last round saved in the state directory */
    uint32_t committed_round; /* and that round's number (aborted rounds count) */
    uint32_t started_round;   /* the last round id handed out (state.json "started"): a
                               * resumed run never reuses the id of a round cut short */
    int paused;            /* finish the round in flight, then start no new one */
    int64_t resumed_from;  /* model version this process resumed from, -1 if a new run */
    double started_at;
    int fresh;             /* no round started by this process yet */
    struct admin *admin;   /* the research lead's socket (admin.c), or NULL */
    coord_state_t seen_state; /* last state announced to watchers */
    uint32_t seen_round;
    double last_accuracy, last_auc; /* of the last completed round (NAN if none) */
    int last_participants;

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
    int participants;      /* updates in this round's aggregate */
    FILE *metrics;

    /* secure aggregation, this round */
    uint8_t model_hash[WIRE_HASH_BYTES]; /* SHA-256 of global: what the sites sign */
    uint32_t *u3;          /* consistency round: U3's ids ascending, n3 of them */
    size_t n3;
    uint64_t seed_salt;    /* 0 for a new run; fresh per process for a resumed one */
    unsigned threshold;
    unsigned degree;       /* SecAgg+ neighbours per client (n - 1: all pairs) */
    uint8_t *adj;          /* adj[i * adj_n + j]: clients[i], clients[j] mask together */
    int adj_n;             /* n_clients when the graph was built (later ones are not in it) */
    quant_t quant;
    int64_t max_weight;
    uint32_t *acc;         /* numel + 1 masked words, allocated for the masking phase only */
    int survivors;
} coord_t;

extern const char *const coord_state_names[];

/* coordinator.c: the pieces the secure phases reuse */
void coord_send(coord_t *c, client_rec_t *k, const peer_id_t *id, const msg_t *m);
void coord_reply_error(coord_t *c, client_rec_t *k, const peer_id_t *id, uint32_t round,
                       msg_error_t code, const char *why);
void coord_drop(coord_t *c, client_rec_t *k, const char *why);
void coord_abort_round(coord_t *c, const char *why);
/* Applies the mean delta to the global model (server optimiser), starts EVAL. */
void coord_apply_and_evaluate(coord_t *c, const float *avg);

/* Metadata for a model file of the current global model (arch, ..., round). */
size_t coord_model_meta(const coord_t *c, st_meta_t *meta);
int coord_live_count(const coord_t *c);
/* Abandons the round in flight (admin `stop`). */
void coord_stop_round(coord_t *c, const char *why);

/* state.c: the state directory */
int state_open(coord_t *c);
int state_peek(coord_t *c);
int state_save(coord_t *c);
int state_commit(coord_t *c, int model_changed);
/* model.safetensors (the latest model, for tools) := the committed round's file. */
int state_publish_latest(coord_t *c);
/* The model in memory back to the last committed round's (a round abandoned
 * after its aggregate was applied). */
int state_rollback(coord_t *c);
void state_round_path(const coord_t *c, uint32_t version, char *out, size_t outlen);

/* admin.c: the admin socket */
struct admin *admin_open(coord_t *c);
void *admin_socket(struct admin *a);
void admin_on_readable(coord_t *c);
/* Tells watchers what happened, one line. */
void admin_event(coord_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void admin_close(struct admin **a);

/* secagg_server.c */
/* Loads --ca (if given) into c->ca; sa_ca_free releases it (NULL-safe). */
int sa_load_ca(coord_t *c);
void sa_ca_free(coord_t *c);
int sa_round_setup(coord_t *c, int cohort, char *err, size_t errlen);
void sa_fill_plan(const coord_t *c, msg_t *plan);
int sa_handles(coord_state_t st, msg_type_t t);
void sa_on_message(coord_t *c, client_rec_t *k, const msg_t *m);
/* All cohort members answered (or dropped) the current secure phase. */
void sa_phase_complete(coord_t *c);
/* 1 if k still owes a message in the current secure phase. */
int sa_pending(const coord_t *c, const client_rec_t *k);
void sa_round_cleanup(coord_t *c);
/* MASKING: lets the next clients upload, at most upload_slots at a time. */
void sa_grant_uploads(coord_t *c);

#endif
