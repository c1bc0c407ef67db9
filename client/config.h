/*
 * config.h - the client daemon's INI config file.
 *
 *   [client]
 *   site = st-marys            ; name shown to the coordinator (no patient data)
 *   coordinator = tcp://coordinator.example.org:7700
 *   threads = 2                ; LibTorch intra-op threads
 *   log_level = info           ; error | warn | info | debug
 *   heartbeat = 1.0            ; seconds between heartbeats
 *   identity = /etc/medfed/identity.key   ; Ed25519 key, mode 0600 (secure aggregation)
 *   roster = /etc/medfed/roster.txt       ; every site's name and identity public key
 *   ca = /etc/medfed/ca.crt               ; or, instead of roster: the federation CA and
 *   certificate = /etc/medfed/identity.crt ; this site's certificate (medfed provision)
 *   curve_key = /etc/medfed/curve.key     ; CURVE transport secret key, mode 0600
 *   coordinator_key = 64 hex digits       ; the coordinator's CURVE public key
 *   reconnect_max = 60         ; seconds: reconnect backoff doubles from 1 s up to this
 *   link_timeout = 60          ; seconds without a transport-level heartbeat answer
 *                              ; before the connection is declared dead
 *   protocol_version = 3       ; the protocol this site speaks (default: the newest it
 *                              ; knows); pin one version lower to test a rolling upgrade
 *   version_retry = 300        ; seconds: a coordinator that refuses this site's
 *                              ; protocol version is asked again after this, doubling
 *                              ; up to 8x (logged); the daemon never gives up
 *   state_dir = /var/lib/medfed ; what this site must remember across restarts (the
 *                              ; model versions it released unmask shares for,
 *                              ; in released-SITE); default $STATE_DIRECTORY
 *                              ; (systemd), else this file's directory
 *   [policy]                   ; the hospital's own rules: no coordinator can relax them
 *   peers = /etc/medfed/peers.txt ; the members this site agreed to: NAME FINGERPRINT
 *                              ; per line (medfed-client enrol prints a site's
 *                              ; fingerprint); keys of anyone else are refused
 *   min_cohort = 3             ; never share with fewer sites than this
 *   max_collusion = 0.33       ; share of sites that may collude with the
 *                              ; coordinator; the threshold must exceed
 *                              ; (cohort + colluders) / 2
 *   secure_aggregation = required ; (default) a plan for a plaintext update is
 *                              ; refused: only masked updates leave the site;
 *                              ; optional: plaintext FedAvg too (simulations)
 *   [data]
 *   source = idx               ; then the source's own keys (see imaging/data.c)
 *
 * Parsed with libinih; every error is reported as "file:line: reason" and the
 * daemon refuses to start.
 */
#ifndef MEDFED_CLIENT_CONFIG_H
#define MEDFED_CLIENT_CONFIG_H

#include "imaging/imaging.h"
#include "common/log.h"
#include "proto/wire.h"

typedef struct {
    char site[WIRE_SITE_MAX];
    char coordinator[256];
    int threads;
    log_level_t log_level;
    double heartbeat;
    char identity[512];          /* Ed25519 secret key file (0600), for secure aggregation */
    char roster[512];            /* federation roster: NAME PUBKEY per line */
    char ca[512];                /* federation CA certificate: peers' certificates checked */
    char certificate[512];       /* this site's identity certificate (PEM or DER) */
    char curve_key[512];         /* CURVE secret key file (0600): encrypted transport */
    char coordinator_key[80];    /* the coordinator's CURVE public key, 64 hex digits */
    double reconnect_max;        /* s: ceiling of the reconnect backoff (from 1 s, doubling) */
    double link_timeout;         /* s: a silent TCP path is dead after this (ZMTP heartbeats) */
    char state_dir[512];         /* where released-shares records live ("" = default) */
    int protocol;                /* protocol version spoken (0 = WIRE_VERSION) */
    double version_retry;        /* s: first back-off after a protocol-version refusal */
    /* [policy]: the site's own secure-aggregation rules */
    char peers[512];             /* NAME FINGERPRINT per line; "" = roster / CA only */
    int min_cohort;              /* fewest sites (neighbourhood, self included) to share with */
    double max_collusion;        /* share of the cohort assumed to collude with the coordinator */
    int plaintext_ok;            /* [policy] secure_aggregation = optional (default required) */
    data_conf_t data;
} client_conf_t;

int client_conf_load(const char *path, client_conf_t *c, char *err, size_t errlen);

#endif
