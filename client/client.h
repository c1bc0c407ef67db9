/*
 * client.h - the hospital client daemon: one DEALER connection out to the
 * coordinator, local training and evaluation on this site's data only.
 */
#ifndef MEDFED_CLIENT_H
#define MEDFED_CLIENT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "client/config.h"
#include "common/roster.h"

/* Fault injection for tests and simulations, in test builds only
 * (-DMEDFED_TEST_HOOKS; a production build ignores it): the process kills
 * itself with SIGKILL when it reaches this phase of this round ("train": plan
 * received, before training; "upload": trained, before the update is sent;
 * "eval"; the secure-aggregation phases). */
typedef struct {
    char phase[16];
    unsigned round;
    int stall;      /* --stall-at: instead of dying, do nothing there (a silent
                     * site that still heartbeats); "masked-upload" only */
} client_die_at_t;

/* Set by the signal handler; the daemon finishes its current step and exits. */
extern volatile sig_atomic_t client_stop;

/* Runs until SHUTDOWN (returns 0), a signal (0), or a fatal error: 1, or 2
 * when the coordinator refuses this site for good (not on its roster, wrong
 * protocol version, CURVE key refused), which systemd is told not to restart
 * (RestartPreventExitStatus=2). A lost connection is not fatal: the daemon
 * reconnects with backoff, says HELLO again, and drops the round it was in. */
int client_run(const client_conf_t *conf, const client_die_at_t *die_at);

/* A host that runs many sites in one process: medfed-swarm, a simulation
 * tool, never the daemon. It gives each client what the daemon makes for
 * itself; the client, so that a thousand fit on one machine, holds the
 * global model once per process (common/vecshare.h) and frees its
 * model-sized buffers as soon as the round is past them. */
typedef struct {
    void *zctx;             /* the process's ZeroMQ context (the client never terminates it) */
    const roster_t *roster; /* the federation roster, shared read-only; NULL: conf->roster */
    dataset_t train, val;   /* the site's samples instead of [data]; x may be NULL for a
                             * model that reads no images. The client takes them over. */
    /* CPU turns: at most so many of the host's clients handle a message at
     * once. turn_take returns 0 once it is this client's turn, -1 after
     * timeout seconds without one (the client heartbeats, since it is alive
     * and only queued, and asks again); turn_give ends the turn. NULL: none. */
    int (*turn_take)(void *user, double timeout);
    void (*turn_give)(void *user);
    void *user;
} client_host_t;

/* client_run for one site of a host: the same protocol, crypto and socket
 * (CURVE included), on the host's context, roster, samples and turns; no
 * --die-at (it would kill the whole process). Takes host->train and
 * host->val (zeroed). Same exit codes. */
int client_run_hosted(const client_conf_t *conf, client_host_t *host);

/* --check, part by part. Each returns 0, or -1 with the reason in why. */
/* The key files the config names (CURVE key, identity key, roster) load. */
int client_check_keys(const client_conf_t *conf, char *why, size_t whylen);
/* Connects as the daemon would (CURVE included), sends PING and waits up to
 * timeout seconds for PONG: the coordinator's round, the round trip and its
 * software version (v3; "" from an older coordinator). */
int client_check_coordinator(const client_conf_t *conf, double timeout, uint32_t *round,
                             double *rtt_ms, char sw[WIRE_SW_MAX], char *why, size_t whylen);

#endif
