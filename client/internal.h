/*
 * internal.h - the client daemon's state, shared by its event loop
 * (client.c) and its side of secure aggregation (secagg_client.c).
 */
#ifndef MEDFED_CLIENT_INTERNAL_H
#define MEDFED_CLIENT_INTERNAL_H

#include <stdlib.h>

#include "client/client.h"
#include "common/roster.h"
#include "crypto/cert.h"
#include "model/model.h"
#include "proto/transport.h"

typedef struct sa_client sa_client_t;

/* v4: the model a PLAN or EVAL named by length and SHA-256 (MSG_HAS_BULK),
 * fetched in chunks a few at a time. What has arrived is kept across a lost
 * link: the coordinator sends the PLAN or EVAL again when the site is back,
 * and the fetch resumes at the first byte missing (client.c, fetch_model). */
typedef struct {
    int active;             /* FETCHes are out; the message waits in msg */
    msg_t msg;              /* that PLAN or EVAL (its borrowed pointers cleared) */
    uint8_t hash[32];       /* the model's SHA-256, as announced */
    uint32_t version;
    uint64_t total, have, asked; /* bytes: the model's, received (a prefix), asked for */
    uint8_t *buf;           /* where they land: the daemon's global_buf, or a hosted
                             * site's own buffer until the model is whole */
    uint64_t resumed_at;    /* the offset the last attempt started at */
    uint64_t received;      /* chunk bytes received for this model, all attempts */
    double started;
} fetch_t;

typedef struct {
    const client_conf_t *conf;
    const client_die_at_t *die_at;
    const client_host_t *host; /* NULL: the daemon; else a site of medfed-swarm (client.h) */
    void *zctx, *sock;
    wire_buf_t *out;
    wire_decoder_t *dec;
    dataset_t train, val;

    model_t *model;
    const float *global;    /* the coordinator's model, version global_version: global_buf,
                             * or hosted, a copy shared in the process (vecshare.h) */
    float *global_buf;      /* the daemon's own copy; NULL when hosted */
    float *work;            /* scratch: trained parameters, then the delta */
    float *scores;          /* evaluation scores, val.n */
    size_t numel;
    uint32_t global_version;
    int have_global;
    uint8_t global_hash[32]; /* SHA-256 of global (client_global_hash): the model version */
    int global_hash_stale;   /* global changed since global_hash was computed */
    fetch_t fetch;           /* v4: the model on its way in chunks */

    uint32_t client_id;
    int welcomed;
    uint32_t last_plan_round, last_eval_round;
    double last_sent, last_hello;
    uint32_t round, phase;  /* what we are doing now, for heartbeats */
    /* a plaintext update trained and waiting for the coordinator's UPLOAD
     * (it takes uploads a few at a time: its memory stays O(model)) */
    int update_waiting;
    double update_loss, update_secs;

    /* the connection to the coordinator, as the socket monitor reports it */
    void *mon;              /* NULL: no monitor, the link is assumed up */
    int link_up;            /* a connection has completed its handshake */
    int ever_up;
    int link_warned;        /* "unreachable" logged for this outage */
    int round_lost;         /* the link dropped mid-round: abandon the round's work */
    int exit_code;          /* >= 0: a fatal link event, leave with this status */
    double link_down_since;
    /* liveness: the connection's received-byte count (TCP_INFO), looked at
     * once a second; the link is dead when it has not grown for link_timeout
     * (check_link). A model arriving slowly is progress, unlike ZMTP's own
     * timeout, which waits for a PONG queued behind the whole message. */
    int link_fd;            /* the TCP connection messages arrive on, -1 unknown */
    uint64_t rx_bytes;
    double rx_checked_at, rx_grew_at;
    /* A message that arrived during local training (on_progress read it to see
     * whether it is SHUTDOWN): the event loop handles it next. */
    wire_frame_t held;
    int has_held;

    /* rolling upgrades and progress (protocol version 3) */
    uint32_t proto;         /* the protocol version this site speaks (conf, else WIRE_VERSION) */
    double hello_not_before; /* the coordinator refused our version: no HELLO before this */
    double version_backoff; /* s: the next wait after a version refusal (doubles) */
    double version_backoff_max; /* 8 x [client] version_retry */
    uint64_t train_done, train_total; /* images of this round's local training, for heartbeats */

    /* secure aggregation */
    const roster_t *roster; /* NULL when not configured; roster_buf, or the host's */
    roster_t *roster_buf;   /* the one this client loaded */
    cert_ca_t *ca;          /* with certificates: the federation CA; else NULL */
    uint8_t *cert;          /* our identity certificate (DER), cert_len bytes; NULL without */
    size_t cert_len;
    uint8_t *identity_sk;   /* Ed25519, guarded memory; NULL when not configured */
    sa_client_t *sa;        /* this round's secrets, NULL between rounds */
    uint32_t *masked_buf;   /* numel + ENC_TAIL_WORDS words for the masked input, reused */
    struct policy *policy;  /* the site's own rules and released-shares memory (policy.h) */
    uint8_t coordinator_pk[32]; /* pinned CURVE key (zeros without CURVE): names the federation */
} client_t;

/* Fault injection (--die-at), in test builds only (-DMEDFED_TEST_HOOKS): SIGKILL
 * self at this phase of the round. A production build compiles it to nothing. */
#ifdef MEDFED_TEST_HOOKS
int client_maybe_die(const client_t *c, const char *phase, uint32_t round);
#else
static inline int client_maybe_die(const client_t *c, const char *phase, uint32_t round)
{
    (void)c;
    (void)phase;
    (void)round;
    return 0;
}
#endif
/* A hosted client frees model-sized buffers as soon as the round is past
 * them: the delta once encoded, the masked input and the encode buffer once
 * sent. The daemon keeps them (a fresh buffer costs page faults each round). */
static inline void client_drop_work(client_t *c)
{
    if (!c->host) return;
    free(c->work);
    c->work = NULL;
}
static inline void client_drop_upload(client_t *c)
{
    if (!c->host) return;
    free(c->masked_buf);
    c->masked_buf = NULL;
    free(wire_buf_release(c->out));
}

int client_send(client_t *c, const msg_t *m);
/* UPDATE or MASKED: over one chunk (v4), its vector goes first in PARTs. */
int client_send_upload(client_t *c, const msg_t *m);
/* SHA-256 of the global model, computed once per received model. */
const uint8_t *client_global_hash(client_t *c);
void client_send_error(client_t *c, uint32_t round, msg_error_t code, const char *why);

/* secagg_client.c: the plan's secure-aggregation parameters against our
 * own rules (threshold range, upload width, our value fits the width);
 * before training. 0, or -1 after an ERROR naming the rule. */
int sa_client_check_plan(client_t *c, const msg_t *plan);
/* After local training, c->work holds the delta. */
void sa_client_advertise(client_t *c, const msg_t *plan, double train_seconds);
/* KEYS, SHARES_IN, UNMASK_REQ. */
void sa_client_on_message(client_t *c, const msg_t *m);
/* With [client] ca and certificate: loads both, checks our certificate
 * (issued by the CA, CN = our site, key = pk). Logs the reason on failure. */
int sa_client_load_cert(client_t *c, const uint8_t pk[IDENTITY_PUBLICKEYBYTES]);
void sa_client_free_cert(client_t *c);
/* Wipes and frees this round's secrets (NULL-safe). */
void sa_client_reset(client_t *c);

#endif
