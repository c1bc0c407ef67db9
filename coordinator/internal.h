/*
 * internal.h - the coordinator's state, shared by the round engine
 * (coordinator.c), the admin socket (admin.c) and the state directory
 * (state.c). Secure aggregation keeps its own state (secagg_server.h).
 * Not a public API.
 */
#ifndef MEDFED_COORD_INTERNAL_H
#define MEDFED_COORD_INTERNAL_H

/* metrics.jsonl rows carry "format": this number (a reader of a newer one is told). */
#define METRICS_FORMAT 1

#include <stdio.h>

#include "aggregation/secagg.h"
#include "common/rng.h"
#include "common/roster.h"
#include "coordinator/coordinator.h"
#include "coordinator/secagg_server.h"
#include "model/safetensors.h"
#include "proto/transport.h"

#define NO_VERSION UINT32_MAX
enum { SEND_QUEUED = 1, SEND_IN_FLIGHT = 2 }; /* client_rec_t.send_q */

/* The round, as the coordinator keeps it. A secure round's TRAINING is its
 * ADVERTISE phase and AGGREGATING the phases after it (the secure-
 * aggregation server's, secagg_server.h); coord_phase_name names them. */
typedef enum {
    ST_WAITING,
    ST_TRAINING,     /* plaintext: UPDATEs; secure: training then ADVERTISE */
    ST_AGGREGATING,  /* secure: sharing, masking, consistency, unmasking */
    ST_EVALUATING,
    ST_DONE
} coord_state_t;

/* Where one client stands in the current phase. */
typedef enum { P_IDLE, P_PENDING, P_DONE, P_DROPPED } part_t;

typedef struct {
    peer_id_t id;
    char site[WIRE_SITE_MAX];
    int index;             /* roster position, or registration order */
    int64_t n_train, n_val;
    double last_seen;
    double lost_at;        /* when its connection was last lost (0: never) */
    int told_bye;          /* back from a lost link as the run ended: 1 told SHUTDOWN,
                            * its connection (bye_fd) still open; 2 that one closed */
    int bye_fd;
    int live;
    int fd;                /* connection of its last message, -1 unknown */
    uint32_t has_version;  /* global model version this client holds */
    part_t train, eval;    /* train: in this round's cohort and still in it */
    int up_ready, up_granted; /* plaintext: trained and waiting / may send its UPDATE */
    double granted_at, sent_at; /* granted_at: upload granted (police_uploads), 0 if not */
    uint64_t granted_rx;        /* its connection's byte count then */
    uint64_t rx_bytes;     /* bytes its connection (fd) had received, looked at once a second */
    double rx_checked_at, rx_grew_at; /* ... then, and when that count last grew (silent()) */
    int send_q;            /* the phase's model-bearing PLAN/EVAL: SEND_QUEUED, SEND_IN_FLIGHT
                            * (sent, not yet acknowledged by a message of the phase), or 0 */
    int fetching;          /* v4: sent the phase's PLAN/EVAL naming the model (bulk), not yet
                            * acknowledged: it fetches the model in chunks */
    double away_at;        /* lost while fetching: keeps its place in the phase until
                            * heartbeat_timeout after this, to resume the fetch (0: not away) */
    uint64_t fetched;      /* chunk bytes sent to it in this phase */
    uint8_t *stage;        /* v4: the PARTs of its UPDATE or MASKED vector so far (on_part), at
                            * most upload_slots sites at once; freed once the message is in */
    uint64_t stage_len, stage_have;
    int removed;           /* taken off the roster (SIGHUP): refused until it is back */
    uint32_t proto;        /* protocol version of its HELLO (WIRE_VERSION_MIN..WIRE_VERSION):
                            * it is sent only what a decoder of that version accepts */
    char sw[WIRE_SW_MAX];  /* its software version (v3 HELLO), "" if it did not say */
    uint64_t done, total;  /* training progress of its last HEARTBEAT (v3), in progress_round */
    uint32_t progress_round;
    int64_t cert_not_after; /* its identity certificate's expiry (from ADVERTISE), 0 unknown */
} client_rec_t;

typedef struct {
    const coord_conf_t *conf;  /* &conf_live in a running coordinator */
    coord_conf_t conf_live;    /* the settings now: the config, then medfed start --set */
    void *zctx, *sock, *monitor;
    struct zap *zap;           /* CURVE: admits roster keys only */
    char cur_user_id[96];      /* CURVE: "SITE/KEYHEX16", bound by ZAP to the current sender's key */
    wire_buf_t *out;
    /* PLAN/EVAL with the model, encoded once, sent to download_slots sites at
     * a time (pump_sends): CURVE encrypts each site's copy whole, so sending
     * to every site at once held one ciphertext of the model per site. */
    shared_frame_t *model_frame;
    /* v4 sites: the same PLAN/EVAL naming the model by length and SHA-256;
     * they fetch it in chunks (on_fetch), from the slot's grant until they
     * say they have it, and resume after a lost link */
    shared_frame_t *bulk_frame;
    uint8_t global_sha[WIRE_HASH_BYTES]; /* SHA-256 of global (global_sha256()) */
    uint32_t global_sha_version;          /* the version it is of; NO_VERSION: none */
    int model_frame_eval;  /* the frame is an EVAL (else a PLAN) */
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
    int reindex;           /* roster re-read: renumber sites before the next round */

    /* the run, as the state directory records it (state.c) */
    uint32_t target;       /* run rounds until round == target */
    uint32_t committed;    /* model version of the last round saved in the state directory */
    uint32_t committed_round; /* and that round's number (aborted rounds count) */
    uint32_t started_round;   /* the last round id handed out (state.json "started"): a
                               * resumed run never reuses the id of a round cut short */
    int paused;            /* finish the round in flight, then start no new one */
    double clip;           /* the next secure round's clip (clip_auto: from the last
                            * aggregate; state.json "clip", so a restart keeps it) */
    int disk_error;        /* a write the run depends on failed (halt_on_disk_error) */
    int64_t resumed_from;  /* model version this process resumed from, -1 if a new run */
    double started_at;
    int fresh;             /* no round started by this process yet */
    int told_inadmissible; /* logged that the live sites cannot make a secure round */
    struct admin *admin;   /* the research lead's socket (admin.c), or NULL */
    coord_state_t seen_state; /* last state announced to watchers */
    sa_phase_t seen_sa_phase;
    uint32_t seen_round;
    double last_accuracy, last_auc; /* of the last completed round (NAN if none) */
    double progress_event_at;  /* last training-progress line to watchers */
    int last_participants;

    /* the round */
    coord_state_t state;
    uint32_t round;
    double phase_started, round_started, waiting_since;
    double round_cpu_started; /* the process's CPU seconds at the round's start */
    double half_done_at;   /* when half the phase's sites had answered (0: not yet) */
    double straggler_phase; /* phase_started of the phase whose stragglers were named */
    uint64_t bytes_up, bytes_down;
    double train_loss_sum, train_s_max;
    double train_loss;     /* the round's weighted mean training loss, NAN until known */
    int64_t eval_n, eval_correct;
    double eval_loss;
    uint64_t hist[2 * WIRE_HIST_BINS];
    int evaluated;
    int participants;      /* updates in this round's aggregate */
    FILE *metrics;

    /* secure aggregation (secagg_server.c owns its state) */
    secagg_server_t *sa;
    sa_phase_t sa_phase;   /* the server's phase when last looked at */
    uint64_t seed_salt;    /* 0 for a new run; fresh per process for a resumed one */
    int survivors;         /* |U5| of this round's aggregate */
} coord_t;

extern const char *const coord_state_names[];
/* The phase in words: the state, or in a secure round the server's phase. */
const char *coord_phase_name(const coord_t *c);

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
/* The research lead's commands (admin.c), each saved in state.json:
 * run n more rounds from the current one; finish the round in flight and
 * start no new one; abandon the round in flight and run no more. */
void coord_run_more(coord_t *c, uint32_t n);
/* medfed start --set KEY=VALUE ...: the settings of the rounds to come,
 * between rounds only; unknown keys and keys fixed for the coordinator's
 * life (coord_conf_runtime) are refused, and then nothing changes. A new
 * server optimiser starts from zero. -1 with the reason. */
#define COORD_SET_MAX 256
int coord_set(coord_t *c, char (*sets)[COORD_SET_MAX], int n, char *err, size_t errlen);
void coord_pause(coord_t *c);
void coord_stop_run(coord_t *c, const char *why);

/* state.c: the state directory. It reads the coordinator and writes only
 * files and what it is given to fill. */
typedef struct {
    int resumed;              /* a run was found and read */
    uint32_t round;           /* the last round id handed out and closed */
    uint32_t version;         /* the committed model version (0: the initial model) */
    uint32_t committed_round;
    uint32_t started;         /* state.json "started" */
    uint32_t target;
    int paused;
    double clip;              /* state.json "clip" (0: not recorded) */
    FILE *metrics;            /* state_open: metrics.jsonl, open for appending */
} state_run_t;
/* Opens (creates) the state directory; with a run to resume, *r and the
 * model into weights. -1 on failure (logged). */
int state_open(const coord_t *c, state_run_t *r, float *weights);
/* --check: what a start would resume from, writing nothing. 1 = a run to
 * resume (in *r), 0 = a new run, -1 = a state directory it could not use. */
int state_peek(const coord_t *c, state_run_t *r, float *weights);
/* state.json := the coordinator's run (target or pause changed). */
int state_save(const coord_t *c);
/* A round ended: its metrics row made durable, with model_changed the model
 * of version c->version written, then state.json (the commit point). The
 * caller records the commit on success. */
int state_commit(const coord_t *c, int model_changed);
/* The server optimiser's state saved with model `version` (server-opt.bin,
 * written by state_commit) into f; -1 (logged, f's state from zero) when
 * there is none that fits. */
int state_load_server_opt(const coord_t *c, uint32_t version, fedavg_t *f);
/* model.safetensors (the latest model, for tools) := the committed round's file. */
int state_publish_latest(const coord_t *c);
/* The model after round version (0: the initial model) into `into`. */
int state_load_model(const coord_t *c, uint32_t version, float *into);
void state_round_path(const coord_t *c, uint32_t version, char *out, size_t outlen);

/* admin.c: the admin socket */
struct admin *admin_open(coord_t *c);
void *admin_socket(struct admin *a);
void admin_on_readable(coord_t *c);
/* Tells watchers what happened, one line. */
void admin_event(coord_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void admin_close(struct admin **a);

#endif
