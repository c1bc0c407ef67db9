/*
 * zap.h - the coordinator's ZAP handler (ZeroMQ RFC 27): with CURVE on, a
 * connection is admitted only if its public key is on the federation
 * roster, and the site's name is bound to it as the ZMQ User-Id, so a site
 * cannot speak under another's name. On the admin socket (ZAP domain
 * "admin") only the admin's key is admitted, as User-Id "admin". Runs in its own thread on
 * inproc://zeromq.zap.01 of the coordinator's context.
 */
#ifndef MEDFED_ZAP_H
#define MEDFED_ZAP_H

#include <stdint.h>

#include "common/roster.h"

typedef struct zap zap_t;

/* Starts the handler with a copy of roster; admin_pk may be NULL (no admin socket). */
zap_t *zap_start(void *zctx, const roster_t *roster, const uint8_t admin_pk[32]);
/* SIGHUP: the roster to admit from now on (copied). */
void zap_set_roster(zap_t *z, const roster_t *roster);
void zap_stop(zap_t **z);

#endif
