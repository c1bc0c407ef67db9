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

/* Fault injection for tests and simulations, in test builds only
 * (-DMEDFED_TEST_HOOKS; a production build ignores it): the process kills
 * itself with SIGKILL when it reaches this phase of this round ("train": plan
 * received, before training; "upload": trained, before the update is sent;
 * "eval"; the secure-aggregation phases). */
typedef struct {
    char phase[16];
    unsigned round;
} client_die_at_t;

/* Set by the signal handler; the daemon finishes its current step and exits. */
extern volatile sig_atomic_t client_stop;

/* Runs until SHUTDOWN (returns 0), a signal (0), or a fatal error: 1, or 2
 * when the coordinator refuses this site for good (not on its roster, wrong
 * protocol version, CURVE key refused), which systemd is told not to restart
 * (RestartPreventExitStatus=2). A lost connection is not fatal: the daemon
 * reconnects with backoff, says HELLO again, and drops the round it was in. */
int client_run(const client_conf_t *conf, const client_die_at_t *die_at);

/* --check, part by part. Each returns 0, or -1 with the reason in why. */
/* The key files the config names (CURVE key, identity key, roster) load. */
int client_check_keys(const client_conf_t *conf, char *why, size_t whylen);
/* Connects as the daemon would (CURVE included), sends PING and waits up to
 * timeout seconds for PONG: the coordinator's round and the round trip. */
int client_check_coordinator(const client_conf_t *conf, double timeout, uint32_t *round,
                             double *rtt_ms, char *why, size_t whylen);

#endif
