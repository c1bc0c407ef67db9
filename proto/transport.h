/*
 * transport.h - sending and receiving medfed messages over ZeroMQ.
 *
 * The coordinator's ROUTER sees [identity][payload]; a client's DEALER sees
 * [payload]. Both sides count payload bytes here, at the socket layer, for
 * the bytes_up / bytes_down metrics.
 */
#ifndef MEDFED_TRANSPORT_H
#define MEDFED_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/wire.h"

#define TRANSPORT_ID_MAX 256

typedef struct {
    uint8_t data[TRANSPORT_ID_MAX];
    size_t len;
} peer_id_t;

/* A received message: keeps the frame alive while msg points into it. */
typedef struct {
    void *frame;        /* zmq_msg_t, opaque here */
    peer_id_t from;     /* ROUTER only */
    size_t bytes;       /* payload size */
    int srcfd;          /* the TCP connection it came on (matches disconnect events) */
    char user_id[96];   /* CURVE: what the ZAP handler bound to the peer's key ("SITE/KEYHEX16") */
} wire_frame_t;

/* Encodes m into buf and sends it; to is NULL on a DEALER. Returns bytes sent
 * or -1 (errno from zmq). Non-blocking when dontwait is set. */
long long transport_send(void *sock, const peer_id_t *to, const msg_t *m, wire_buf_t *buf,
                         int dontwait);

/* One encoded message sent to many peers without a copy per peer: ZeroMQ
 * references the buffer (zmq_msg_init_data) and the last peer's send frees
 * it. A broadcast of a 44 MB model to 50 sites holds one copy, not 50. */
typedef struct shared_frame shared_frame_t;
shared_frame_t *transport_shared_new(const msg_t *m);
/* Returns bytes sent or -1. The frame stays valid for the caller. */
long long transport_send_shared(void *sock, const peer_id_t *to, shared_frame_t *f);
/* Drops the caller's reference (NULL-safe, sets *f to NULL). */
void transport_shared_release(shared_frame_t **f);
/* Bytes received so far on a TCP connection (the fd ZeroMQ reports as a
 * message's source, ZMQ_SRCFD): a transfer in progress shows as growth here
 * long before its message is whole. -1 if fd is not a TCP socket. */
int transport_fd_rx_bytes(int fd, uint64_t *bytes);

/* Receives one message (blocking unless dontwait). Returns 0 and fills frame
 * (release with transport_frame_close), -1 with errno EAGAIN if nothing is
 * waiting, or -1 on a broken multipart envelope (the frames are drained). */
int transport_recv(void *sock, int is_router, wire_frame_t *frame, int dontwait);
const void *transport_frame_data(const wire_frame_t *frame);
void transport_frame_close(wire_frame_t *frame);

/* Disconnect notification: a monitor on sock reports each closed
 * connection's fd, so a crashed peer is noticed at once, not at its
 * heartbeat timeout. transport_monitor_open returns the socket to poll;
 * transport_monitor_read returns the fd of a closed connection or -1. */
void *transport_monitor_open(void *zctx, void *sock, const char *name);
int transport_monitor_read(void *mon);
/* The general form: a monitor for any ZMQ_EVENT_* mask (name must be unique
 * in zctx), and the next event waiting on it (0, or -1 if none). */
void *transport_monitor_open_events(void *zctx, void *sock, const char *name, int events);
int transport_monitor_next(void *mon, int *event, uint32_t *value);

/* CURVE on a socket (before bind/connect). Keys are raw 32-byte X25519.
 * The server side authenticates clients through ZAP (coordinator/zap.c). */
int transport_curve_server(void *sock, const uint8_t secret[32]);
int transport_curve_client(void *sock, const uint8_t server_public[32], const uint8_t public_[32],
                           const uint8_t secret[32]);

/* Short printable form of a peer id for logs. */
void transport_peer_str(const peer_id_t *id, char *out, size_t outlen);

#endif
