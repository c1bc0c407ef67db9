/*
 * secagg_server.h - the coordinator's side of secure aggregation, as one
 * transition table with its own state (secagg_server.c). Not a public API.
 *
 * The coordinator keeps the round (waiting, training, evaluating) and its
 * sites; the server keeps what secure aggregation needs of one round: the
 * threshold, the neighbour graph, the members' keys, shares and signatures
 * and the masked sum. It talks back through one send function and an
 * outcome per call, never by touching the coordinator's state:
 *
 *   secagg_server_begin     a new round: the cohort, the model hash
 *   secagg_server_message   a member's ADVERTISE, SHARES, READY, MASKED,
 *                           CONSIST or UNMASK
 *   secagg_server_drop      a member is gone (silent, late, disconnected)
 *   secagg_server_step      grants uploads; when no member owes a message,
 *                           runs the phase transition
 *   secagg_server_end       wipes and frees the round
 *
 * Members are named by the coordinator's slot (its client index); the
 * server never reads the coordinator's records.
 */
#ifndef MEDFED_COORD_SECAGG_SERVER_H
#define MEDFED_COORD_SECAGG_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/coordinator.h"
#include "crypto/crypto.h"
#include "proto/wire.h"

typedef struct secagg_server secagg_server_t;

/* The phases of one secure round, in order. IDLE: no round. */
typedef enum {
    SA_IDLE,
    SA_ADVERTISE, /* training, then ADVERTISE (U1) */
    SA_SHARING,   /* SHARES (U2) */
    SA_MASKING,   /* READY / UPLOAD / MASKED (U3) */
    SA_CONSIST,   /* CONSIST: signatures on U3 (U4) */
    SA_UNMASKING, /* UNMASK (U5) */
    SA_UNMASKED   /* the aggregate is out (SA_DONE was returned) */
} sa_phase_t;

typedef enum {
    SA_OK,      /* accepted, or nothing to do yet */
    SA_REFUSED, /* the message is refused: ERROR (code, why) to its sender, which stays */
    SA_DROPPED, /* the sender is out of the round: ERROR (code, why) to it */
    SA_DONE,    /* the aggregate: mean, weight, participants, survivors */
    SA_ABORT    /* the round cannot complete (why); the model must not change */
} sa_status_t;

typedef struct {
    sa_status_t status;
    msg_error_t code;
    char why[320];
    const float *mean;  /* SA_DONE: numel floats, valid until secagg_server_end */
    int64_t weight;     /* SA_DONE: sum of U3's signed n_k */
    double train_loss;  /* SA_DONE: U3's weighted mean training loss (NAN: not a valid sum) */
    int participants;   /* SA_DONE: |U3| */
    int survivors;      /* SA_DONE: |U5| */
} sa_outcome_t;

/* One cohort member, as the coordinator knows it at the round's start. */
typedef struct {
    int slot;                               /* the coordinator's handle for it */
    uint32_t id;                            /* its site id (roster position) */
    const char *site;                       /* its name, for logs */
    const uint8_t *pk;                      /* its identity key (roster) */
    int64_t n_train;                        /* reported at HELLO */
    int v2;                                 /* speaks protocol 2: the round uses its masked
                                             * layout, n_k alone after the elements */
} sa_member_t;

/* Sends m to the member in slot (KEYS, SHARES_IN, UPLOAD, CONSIST_REQ, UNMASK_REQ). */
typedef void (*sa_send_fn)(void *ctx, int slot, const msg_t *m);

/* Loads conf->ca (if set). NULL with err on failure. */
secagg_server_t *secagg_server_new(const coord_conf_t *conf, size_t numel, sa_send_fn send,
                                   void *ctx, char *err, size_t errlen);
void secagg_server_free(secagg_server_t **s);
int secagg_server_has_ca(const secagg_server_t *s);

/* Starts round `round` over members[0..n) (n <= COORD_MAX_CLIENTS, distinct
 * slots below COORD_MAX_CLIENTS); federation is the roster's size (colluders
 * are a share of it); clip is this round's (the coordinator's clip rule).
 * -1 with err when the plan breaks the threshold rules. */
int secagg_server_begin(secagg_server_t *s, uint32_t round, const uint8_t model_hash[WIRE_HASH_BYTES],
                        const sa_member_t *members, int n, unsigned federation, double clip,
                        char *err, size_t errlen);
/* PLAN's secure-aggregation fields (threshold, clip, scale, the upload width). */
void secagg_server_fill_plan(const secagg_server_t *s, msg_t *plan);

/* Does message type t belong to the current phase? */
int secagg_server_accepts(const secagg_server_t *s, msg_type_t t);
void secagg_server_message(secagg_server_t *s, int slot, const msg_t *m, sa_outcome_t *out);
/* The member in slot is out of the round (idempotent; not a member: nothing). */
void secagg_server_drop(secagg_server_t *s, int slot);
void secagg_server_step(secagg_server_t *s, sa_outcome_t *out);
void secagg_server_end(secagg_server_t *s);

sa_phase_t secagg_server_phase(const secagg_server_t *s);
const char *secagg_server_phase_name(sa_phase_t p);
/* Does the member in slot owe a message in the current phase? */
int secagg_server_pending(const secagg_server_t *s, int slot);
/* Is the member in slot granted its upload and still owing its masked input? */
int secagg_server_granted(const secagg_server_t *s, int slot);
/* Did the member in slot upload its masked input (is it in U3)? */
int secagg_server_in_u3(const secagg_server_t *s, int slot);
unsigned secagg_server_threshold(const secagg_server_t *s);
unsigned secagg_server_degree(const secagg_server_t *s);
/* The round's upload width and clip (as in its PLAN). */
unsigned secagg_server_bits(const secagg_server_t *s);
double secagg_server_clip(const secagg_server_t *s);
/* The number of members that reached phase p's stage (|U1| for SA_ADVERTISE, ...). */
int secagg_server_count(const secagg_server_t *s, sa_phase_t p);

#endif
