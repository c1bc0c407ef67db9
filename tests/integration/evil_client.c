/*
 * evil_client - a misbehaving participant for integration tests. It speaks
 * the real wire codec over a real socket, registers, and when the plan
 * arrives answers with a bad update, then reports the coordinator's reply.
 *
 *   evil_client ENDPOINT SITE MODE [KIT_DIR]
 *   MODE: wrong-length | long | huge | nan | garbage | stale-round | duplicate   (plaintext)
 *         ready-hold: says READY at once, heartbeats, never sends its update
 *                     (plaintext; exit 0 once told UPLOAD and then SHUTDOWN)
 *         forge | out-of-phase | stale-advertise                  (secure aggregation)
 *         inflate-hello | inflate-cap      (secure aggregation, with the site's KIT_DIR)
 * With KIT_DIR (a site's kit from medfed provision: curve.key, coordinator.pub,
 * identity.key, identity.crt) it connects with CURVE as that site, and its
 * ADVERTISE is validly signed with the site's identity key, certificate
 * attached: inflate-hello signs n_k = its HELLO n_train + 1, inflate-cap says
 * HELLO n_train = 10^9 and signs that, above the coordinator's max_samples.
 * Exit 0 when the coordinator answered with the expected ERROR code.
 *
 *   evil_client ENDPOINT SITE curve-intruder COORDINATOR_PUBKEY_HEX
 * connects with a fresh CURVE key that no roster lists and says HELLO. Exit 0
 * only when, seen from this side, the handshake was refused (ZAP) and nothing
 * came back within 5 s: no connection, no reply.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/util.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"
#include "proto/transport.h"

#define INFLATED_HELLO 1000000000LL

/* The site kit: CURVE keys, identity key and certificate. */
typedef struct {
    uint8_t curve_sk[32], curve_pk[32], coord_pk[32];
    uint8_t id_sk[IDENTITY_SECRETKEYBYTES];
    uint8_t cert[CERT_DER_MAX];
    size_t cert_len;
} kit_t;

static int load_kit(const char *dir, kit_t *k)
{
    char path[4096], err[4200], *hex = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/coordinator.pub", dir);
    if (crypto_init() < 0 || !(hex = util_read_file(path, 200, &len, err, sizeof err))) goto bad;
    hex[strcspn(hex, "\r\n")] = '\0';
    if (identity_pk_from_hex(k->coord_pk, hex) < 0) {
        snprintf(err, sizeof err, "%s: not a key", path);
        goto bad;
    }
    free(hex);
    hex = NULL;
    snprintf(path, sizeof path, "%s/curve.key", dir);
    if (keyfile_load(path, k->curve_sk, 32, err, sizeof err) < 0 ||
        curve_pk_of(k->curve_pk, k->curve_sk) < 0)
        goto bad;
    snprintf(path, sizeof path, "%s/identity.key", dir);
    if (identity_load_secret(path, k->id_sk, err, sizeof err) < 0) goto bad;
    snprintf(path, sizeof path, "%s/identity.crt", dir);
    if (cert_load_file(path, k->cert, &k->cert_len, err, sizeof err) < 0) goto bad;
    return 0;
bad:
    free(hex);
    fprintf(stderr, "evil_client: %s\n", err);
    return -1;
}

/* ADVERTISE as the honest client builds it, signed by the site, but with weight n_k. */
static size_t signed_advertise(const kit_t *k, const msg_t *plan, uint32_t id, uint64_t n_k,
                               uint8_t *adv)
{
    uint8_t sk[KA_SECRETKEYBYTES], hash[WIRE_HASH_BYTES], msg[WIRE_ADV_SIGNED_BYTES];
    if (ka_keypair(adv, sk) < 0 || ka_keypair(adv + 32, sk) < 0) return 0;
    crypto_wipe(sk, sizeof sk);
    if (plan->present & MSG_HAS_BULK) /* v4: the model's SHA-256, as the PLAN names it */
        memcpy(hash, plan->bulk_hash, sizeof hash);
    else
        crypto_sha256(hash, plan->vec, plan->vec_len); /* the model it was sent */
    wire_put_u64(adv + WIRE_ADV_WEIGHT_OFF, n_k);
    wire_adv_signed(msg, plan->round, id, hash, adv);
    if (identity_sign(adv + WIRE_ADV_SIG_OFF, k->id_sk, "advertise-v2", msg, sizeof msg) < 0)
        return 0;
    memcpy(adv + WIRE_ADVERTISE_BYTES, k->cert, k->cert_len);
    return WIRE_ADVERTISE_BYTES + k->cert_len;
}

static int recv_msg(void *sock, wire_decoder_t *dec, wire_frame_t *fr, msg_t *m, int timeout_ms)
{
    zmq_pollitem_t pi = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&pi, 1, timeout_ms) <= 0) return -1;
    if (transport_recv(sock, 0, fr, 0) < 0) return -1;
    char err[256];
    if (msg_decode(dec, transport_frame_data(fr), fr->bytes, m, err, sizeof err) < 0) {
        fprintf(stderr, "evil_client: cannot decode: %s\n", err);
        transport_frame_close(fr);
        return -1;
    }
    return 0;
}

static int curve_intruder(const char *endpoint, const char *site, const char *server_hex)
{
    uint8_t server_pk[32];
    for (int i = 0; i < 32; i++) {
        unsigned b;
        if (strlen(server_hex) != 64 || sscanf(server_hex + 2 * i, "%2x", &b) != 1) return 2;
        server_pk[i] = (uint8_t)b;
    }
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) < 0) return 2;
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pk, 32) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 41) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 41) < 0 ||
        zmq_socket_monitor(sock, "inproc://intruder-monitor",
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) < 0)
        return 2;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    if (zmq_connect(mon, "inproc://intruder-monitor") < 0 || zmq_connect(sock, endpoint) < 0) return 2;
    wire_buf_t *buf = wire_buf_new();
    msg_t hello = {.type = MSG_HELLO, .version = WIRE_VERSION, .n_train = 100, .n_val = 0};
    util_strlcpy(hello.site, site, sizeof hello.site);
    transport_send(sock, NULL, &hello, buf, 1);
    int refused = 0, admitted = 0, replies = 0;
    double deadline = util_now() + 5;
    while (util_now() < deadline) {
        zmq_pollitem_t pi[2] = {{sock, 0, ZMQ_POLLIN, 0}, {mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(pi, 2, 100) <= 0) continue;
        if (pi[0].revents & ZMQ_POLLIN) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, sock, 0) >= 0) replies++;
            zmq_msg_close(&msg);
        }
        if (pi[1].revents & ZMQ_POLLIN) {
            zmq_msg_t ev, addr;
            zmq_msg_init(&ev);
            zmq_msg_init(&addr);
            if (zmq_msg_recv(&ev, mon, 0) >= 6 && zmq_msg_recv(&addr, mon, 0) >= 0) {
                uint16_t e;
                memcpy(&e, zmq_msg_data(&ev), sizeof e);
                refused |= e == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
                admitted |= e == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
            }
            zmq_msg_close(&ev);
            zmq_msg_close(&addr);
        }
    }
    printf("evil_client: CURVE handshake %s, %d message(s) received\n",
           admitted ? "completed" : refused ? "refused by ZAP" : "never finished", replies);
    wire_buf_destroy(&buf);
    zmq_close(mon);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return refused && !admitted && replies == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[3], "curve-intruder") == 0)
        return curve_intruder(argv[1], argv[2], argv[4]);
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: evil_client ENDPOINT SITE MODE [KIT_DIR]\n");
        return 2;
    }
    const char *mode = argv[3];
    static kit_t kit;
    if (argc == 5 && load_kit(argv[4], &kit) < 0) return 2;
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 500;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (argc == 5 && transport_curve_client(sock, kit.coord_pk, kit.curve_pk, kit.curve_sk) < 0)
        return 2;
    if (zmq_connect(sock, argv[1]) < 0) return 2;
    wire_buf_t *buf = wire_buf_new();
    wire_decoder_t *dec = wire_decoder_new();
    msg_t hello = {.type = MSG_HELLO, .version = WIRE_VERSION, .n_train = 100, .n_val = 0};
    if (strcmp(mode, "inflate-cap") == 0) hello.n_train = INFLATED_HELLO;
    uint32_t my_id = 0;
    util_strlcpy(hello.site, argv[2], sizeof hello.site);
    transport_send(sock, NULL, &hello, buf, 0);

    int rc = 1, granted = 0;
    size_t part_numel = 0;
    uint32_t want = 0, round = 0;
    double deadline = util_now() + 60;
    wire_frame_t fr;
    msg_t m;
    while (util_now() < deadline) {
        if (recv_msg(sock, dec, &fr, &m, 1000) < 0) {
            msg_t hb = {.type = MSG_HEARTBEAT, .round = round, .phase = PHASE_TRAIN};
            transport_send(sock, NULL, &hb, buf, 1);
            continue;
        }
        if (m.type == MSG_WELCOME) {
            my_id = m.client_id;
        } else if (m.type == MSG_PLAN && (m.present & MSG_HAS_SECAGG)) {
            /* Secure aggregation: misbehave in the advertise phase. */
            uint8_t adv[WIRE_ADVERTISE_BYTES + CERT_DER_MAX];
            for (size_t i = 0; i < WIRE_ADVERTISE_BYTES; i++) adv[i] = (uint8_t)(i * 7 + 1);
            msg_t a = {.type = MSG_ADVERTISE, .round = m.round, .phase = PHASE_ADVERTISE,
                       .train_seconds = 0.1, .blob = adv, .blob_len = WIRE_ADVERTISE_BYTES,
                       .present = MSG_HAS_BLOB};
            uint32_t masked[4] = {1, 2, 3, 4};
            if (strncmp(mode, "inflate-", 8) == 0) {
                /* a valid signature on a weight it may not claim */
                uint64_t n_k = (uint64_t)hello.n_train + (strcmp(mode, "inflate-hello") == 0);
                int named = (m.present & MSG_HAS_VEC) ||
                            ((m.present & MSG_HAS_BULK) && m.bulk_hash_len == WIRE_HASH_BYTES);
                a.blob_len = argc == 5 && named ? signed_advertise(&kit, &m, my_id, n_k, adv) : 0;
                if (a.blob_len == 0) {
                    fprintf(stderr, "evil_client: %s needs KIT_DIR and a plan with the model\n",
                            mode);
                    return 2;
                }
                want = ERR_PROTOCOL;
            } else if (strcmp(mode, "forge") == 0) {
                want = ERR_SIGNATURE; /* keys signed by a key that is not this site's */
            } else if (strcmp(mode, "stale-advertise") == 0) {
                a.round = m.round - 1;
                want = ERR_WRONG_ROUND;
            } else if (strcmp(mode, "out-of-phase") == 0) {
                a = (msg_t){.type = MSG_MASKED, .round = m.round, .phase = PHASE_MASKED,
                            .vec = (const uint8_t *)masked, .vec_len = sizeof masked,
                            .present = MSG_HAS_VEC};
                want = ERR_UNEXPECTED;
            } else {
                fprintf(stderr, "evil_client: mode %s needs --secagg off\n", mode);
                return 2;
            }
            transport_send(sock, NULL, &a, buf, 0);
            printf("evil_client: sent a %s message for round %u\n", mode, m.round);
        } else if (m.type == MSG_PLAN && strcmp(mode, "fetch-unasked") == 0) {
            /* Leaves the round (an ERROR: the coordinator drops it), then asks
             * for the model the PLAN named, hash and all: no longer its to fetch. */
            if (!(m.present & MSG_HAS_BULK)) return 2;
            uint8_t hash[WIRE_HASH_BYTES];
            memcpy(hash, m.bulk_hash, sizeof hash);
            msg_t e;
            msg_error(&e, m.round, ERR_LOCAL, "leaving this round");
            transport_send(sock, NULL, &e, buf, 0);
            msg_t q = {.type = MSG_FETCH, .round = m.round, .model_version = m.model_version,
                       .bulk_hash = hash, .bulk_hash_len = sizeof hash};
            for (int i = 0; i < 8; i++) {
                q.offset = (uint64_t)i << 20;
                transport_send(sock, NULL, &q, buf, 0);
            }
            want = ERR_MODEL_GONE;
            printf("evil_client: left round %u, then 8 FETCHes of its model\n", m.round);
        } else if (m.type == MSG_PLAN && strncmp(mode, "part-", 5) == 0) {
            /* v4 uploads in PARTs: one before any UPLOAD (part-ungranted), or
             * READY and, once granted, bad PARTs (part-gap, part-short) */
            round = m.round;
            part_numel = (size_t)m.numel;
            if (strcmp(mode, "part-ungranted") == 0) {
                static uint8_t zeros[4096];
                msg_t p = {.type = MSG_PART, .round = m.round, .phase = PHASE_TRAIN,
                           .bulk_len = part_numel * 4, .vec = zeros, .vec_len = sizeof zeros,
                           .present = MSG_HAS_VEC};
                transport_send(sock, NULL, &p, buf, 0);
                want = ERR_UNEXPECTED;
            } else {
                msg_t r = {.type = MSG_READY, .round = m.round, .phase = PHASE_TRAIN};
                transport_send(sock, NULL, &r, buf, 0);
                want = ERR_WRONG_LENGTH;
            }
            printf("evil_client: %s for round %u\n", mode, m.round);
        } else if (m.type == MSG_UPLOAD && strncmp(mode, "part-", 5) == 0) {
            uint8_t *zeros = calloc(1, WIRE_CHUNK_BYTES);
            if (!zeros) return 2;
            msg_t p = {.type = MSG_PART, .round = m.round, .phase = PHASE_TRAIN,
                       .bulk_len = part_numel * 4, .vec = zeros, .vec_len = WIRE_CHUNK_BYTES,
                       .present = MSG_HAS_VEC};
            transport_send(sock, NULL, &p, buf, 0);
            if (strcmp(mode, "part-gap") == 0) { /* the second chunk skipped */
                p.offset = 2 * WIRE_CHUNK_BYTES;
                transport_send(sock, NULL, &p, buf, 0);
            } else { /* part-short: the update names more than its parts brought */
                msg_t u = {.type = MSG_UPDATE, .round = m.round, .phase = PHASE_TRAIN,
                           .n_samples = 100, .loss_sum = 0.5, .train_seconds = 0.1,
                           .bulk_len = part_numel * 4, .present = MSG_HAS_BULK};
                transport_send(sock, NULL, &u, buf, 0);
            }
            free(zeros);
            printf("evil_client: granted: sent %s for round %u\n", mode, m.round);
        } else if (m.type == MSG_PLAN && strcmp(mode, "ready-hold") == 0) {
            round = m.round; /* heartbeats of this round from now on: alive, never done */
            msg_t r = {.type = MSG_READY, .round = m.round, .phase = PHASE_TRAIN};
            transport_send(sock, NULL, &r, buf, 0);
            printf("evil_client: READY for round %u, no update will follow\n", m.round);
        } else if (m.type == MSG_EVAL && strcmp(mode, "ready-hold") == 0) {
            msg_t r = {.type = MSG_EVAL_RESULT, .round = m.round, .phase = PHASE_EVAL};
            transport_send(sock, NULL, &r, buf, 0); /* no validation images: n = 0 */
        } else if (m.type == MSG_UPLOAD) {
            granted = 1;
            printf("evil_client: told UPLOAD for round %u: holding the slot\n", m.round);
        } else if (m.type == MSG_PLAN) {
            size_t numel = (size_t)m.numel;
            float *v = calloc(numel + 1, sizeof *v);
            msg_t u = {.type = MSG_UPDATE, .round = m.round, .phase = PHASE_TRAIN,
                       .n_samples = 100, .loss_sum = 0.5, .train_seconds = 0.1,
                       .vec = (const uint8_t *)v, .vec_len = numel * 4, .present = MSG_HAS_VEC};
            if (strcmp(mode, "wrong-length") == 0) {
                u.vec_len = (numel - 1) * 4;
                want = ERR_WRONG_LENGTH;
            } else if (strcmp(mode, "long") == 0) {
                u.vec_len = (numel + 1) * 4; /* one float more than the model */
                want = ERR_WRONG_LENGTH;
            } else if (strcmp(mode, "huge") == 0) {
                for (size_t i = 0; i < numel; i++) v[i] = 3e38f; /* finite; the average is not */
                want = ERR_NONFINITE;
            } else if (strcmp(mode, "nan") == 0) {
                v[numel / 2] = NAN;
                want = ERR_NONFINITE;
            } else if (strcmp(mode, "stale-round") == 0) {
                u.round = m.round - 1;
                want = ERR_WRONG_ROUND;
            } else if (strcmp(mode, "duplicate") == 0) {
                transport_send(sock, NULL, &u, buf, 0); /* first one is fine */
                want = ERR_DUPLICATE;
            } else if (strcmp(mode, "garbage") == 0) {
                want = ERR_MALFORMED;
            } else {
                fprintf(stderr, "evil_client: unknown mode %s\n", mode);
                return 2;
            }
            if (want == ERR_MALFORMED) {
                static const char junk[] = "\x85\xa4type\x05\xa5round"; /* truncated map */
                zmq_send(sock, junk, sizeof junk - 1, 0);
            } else {
                transport_send(sock, NULL, &u, buf, 0);
            }
            printf("evil_client: sent a %s update for round %u\n", mode, m.round);
            free(v);
        } else if (m.type == MSG_ERROR && want) {
            printf("evil_client: coordinator replied ERROR %u: %s\n", m.code, m.reason);
            rc = m.code == want ? 0 : 1;
            transport_frame_close(&fr);
            break;
        } else if (m.type == MSG_SHUTDOWN) {
            if (strcmp(mode, "ready-hold") == 0) rc = !granted;
            transport_frame_close(&fr);
            break;
        }
        transport_frame_close(&fr);
    }
    wire_buf_destroy(&buf);
    wire_decoder_destroy(&dec);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    crypto_wipe(&kit, sizeof kit);
    fflush(stdout);
    return rc;
}
