#include "coordinator/zap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/log.h"

struct zap {
    void *sock;
    roster_t roster;          /* a copy: SIGHUP swaps it under the lock */
    pthread_mutex_t lock;
    uint8_t admin_pk[32];
    int has_admin;
    pthread_t thread;
    _Atomic int stop;
};

static void send_reply(void *sock, const char *req_id, size_t req_id_len, const char *code,
                       const char *text, const char *user)
{
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, req_id, req_id_len, ZMQ_SNDMORE);
    zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

/* One request: version, request id, domain, address, identity, mechanism,
 * then the mechanism's credentials (CURVE: the client's 32-byte key). */
static void serve_one(zap_t *z)
{
    char frames[6][256];
    int len[6] = {0}, n = 0, more = 1;
    uint8_t key[32];
    int key_len = -1;
    while (more) {
        char buf[256];
        int r = zmq_recv(z->sock, buf, sizeof buf, 0);
        if (r < 0) return;
        if (n < 6) {
            len[n] = r < (int)sizeof buf ? r : (int)sizeof buf;
            memcpy(frames[n], buf, (size_t)len[n]);
        } else if (n == 6 && r == 32) {
            memcpy(key, buf, 32);
            key_len = 32;
        }
        n++;
        size_t sz = sizeof more;
        zmq_getsockopt(z->sock, ZMQ_RCVMORE, &more, &sz);
    }
    if (n < 6) return; /* not a ZAP request: REP needs no reply to nothing */
    char address[64] = "?";
    snprintf(address, sizeof address, "%.*s", len[3] < 63 ? len[3] : 63, frames[3]);
    int is_curve = len[5] == 5 && memcmp(frames[5], "CURVE", 5) == 0;
    int admin_domain = len[2] == 5 && memcmp(frames[2], "admin", 5) == 0;
    if (admin_domain) {
        if (is_curve && key_len == 32 && z->has_admin && memcmp(key, z->admin_pk, 32) == 0) {
            log_debug("zap: admin connected from %s", address);
            send_reply(z->sock, frames[1], (size_t)len[1], "200", "OK", "admin");
        } else {
            log_warn("zap: refused admin connection from %s: not the admin key", address);
            send_reply(z->sock, frames[1], (size_t)len[1], "400", "not the admin key", "");
        }
        return;
    }
    int site = -1;
    char name[ROSTER_NAME_MAX] = "";
    pthread_mutex_lock(&z->lock);
    if (is_curve && key_len == 32)
        for (int i = 0; i < z->roster.n; i++)
            if (z->roster.site[i].has_curve && memcmp(z->roster.site[i].curve_pk, key, 32) == 0) {
                site = i;
                memcpy(name, z->roster.site[i].name, sizeof name);
            }
    pthread_mutex_unlock(&z->lock);
    if (site < 0) {
        char hex[17] = "";
        for (int i = 0; key_len == 32 && i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
        log_warn("zap: refused connection from %s: %s%s%s", address,
                 is_curve ? "CURVE key " : "mechanism is not CURVE",
                 is_curve ? hex : "", is_curve ? "... is not on the federation roster" : "");
        send_reply(z->sock, frames[1], (size_t)len[1], "400", "not on the roster", "");
        return;
    }
    /* The key's first 8 bytes go with the name: after SIGHUP the coordinator
     * can tell a connection made with a key the roster no longer lists. */
    char user[ROSTER_NAME_MAX + 20];
    int at = snprintf(user, sizeof user, "%s/", name);
    for (int i = 0; i < 8; i++) at += snprintf(user + at, sizeof user - (size_t)at, "%02x", key[i]);
    log_debug("zap: admitted %s as %s", address, name);
    send_reply(z->sock, frames[1], (size_t)len[1], "200", "OK", user);
}

static void *run(void *arg)
{
    zap_t *z = arg;
    while (!z->stop) {
        zmq_pollitem_t pi = {z->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, 100) > 0) serve_one(z);
    }
    return NULL;
}

void zap_set_roster(zap_t *z, const roster_t *roster)
{
    pthread_mutex_lock(&z->lock);
    z->roster = *roster;
    pthread_mutex_unlock(&z->lock);
}

zap_t *zap_start(void *zctx, const roster_t *roster, const uint8_t admin_pk[32])
{
    zap_t *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    z->roster = *roster;
    pthread_mutex_init(&z->lock, NULL);
    if (admin_pk) {
        memcpy(z->admin_pk, admin_pk, 32);
        z->has_admin = 1;
    }
    z->sock = zmq_socket(zctx, ZMQ_REP);
    int linger = 0;
    if (!z->sock || zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_bind(z->sock, "inproc://zeromq.zap.01") < 0 ||
        pthread_create(&z->thread, NULL, run, z) != 0) {
        if (z->sock) zmq_close(z->sock);
        free(z);
        return NULL;
    }
    return z;
}

void zap_stop(zap_t **zp)
{
    if (!zp || !*zp) return;
    zap_t *z = *zp;
    z->stop = 1;
    pthread_join(z->thread, NULL);
    zmq_close(z->sock);
    pthread_mutex_destroy(&z->lock);
    free(z);
    *zp = NULL;
}
