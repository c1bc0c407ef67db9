/*
 * client.h - the hospital client daemon: one DEALER connection out to the
 * coordinator, local training and evaluation on this site's data only.
 */
#ifndef MEDFED_CLIENT_H
#define MEDFED_CLIENT_H

#include <signal.h>

#include "client/config.h"

/* Fault injection for tests and simulations: the process kills itself with
 * SIGKILL when it reaches this phase of this round ("train": plan received,
 * before training; "upload": trained, before the update is sent; "eval"). */
typedef struct {
    char phase[16];
    unsigned round;
} client_die_at_t;

/* Set by the signal handler; the daemon finishes its current step and exits. */
extern volatile sig_atomic_t client_stop;

/* Runs until SHUTDOWN (returns 0), a signal (0), or a fatal error (non-zero). */
int client_run(const client_conf_t *conf, const client_die_at_t *die_at);

#endif
