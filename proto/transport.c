#include "proto/transport.h"

#include <errno.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifdef MEDFED_TEST_HOOKS
/* Test builds only: with MEDFED_TEST_SEND_DUMP=FILE every payload frame this
 * process sends is appended to FILE, so integration tests can check what leaves
 * a site. */
static void send_dump(const void *p, size_t n)
{
    static const char *path;
    static int looked;
    if (!looked) {
        path = getenv("MEDFED_TEST_SEND_DUMP");
        looked = 1;
    }
    if (!path) return;
    FILE *f = fopen(path, "ab");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}
#else
static inline void send_dump(const void *p, size_t n)
{
    (void)p;
    (void)n;
}
#endif

long long transport_send(void *sock, const peer_id_t *to, const msg_t *m, wire_buf_t *buf,
                         int dontwait)
{
    msg_encode(m, buf);
    int flags = dontwait ? ZMQ_DONTWAIT : 0;
    if (to && zmq_send(sock, to->data, to->len, flags | ZMQ_SNDMORE) < 0) return -1;
    size_t n = wire_buf_size(buf);
    if (zmq_send(sock, wire_buf_data(buf), n, flags) < 0) return -1;
    send_dump(wire_buf_data(buf), n);
    return (long long)n;
}

struct shared_frame {
    _Atomic int refs;
    size_t len;
    char *data;   /* taken from a msgpack sbuffer: encoded once, never copied */
};

shared_frame_t *transport_shared_new(const msg_t *m)
{
    wire_buf_t *b = wire_buf_new();
    shared_frame_t *f = malloc(sizeof *f);
    if (!b || !f) {
        wire_buf_destroy(&b);
        free(f);
        return NULL;
    }
    msg_encode(m, b);
    atomic_init(&f->refs, 1);
    f->len = wire_buf_size(b);
    f->data = wire_buf_release(b);
    wire_buf_destroy(&b);
    return f;
}

static void shared_unref(shared_frame_t *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1) {
        free(f->data);
        free(f);
    }
}

/* Called by ZeroMQ's I/O thread once a peer's copy is on the wire. */
static void shared_free_fn(void *data, void *hint)
{
    (void)data;
    shared_unref(hint);
}

long long transport_send_shared(void *sock, const peer_id_t *to, shared_frame_t *f)
{
    if (zmq_send(sock, to->data, to->len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0) return -1;
    zmq_msg_t msg;
    atomic_fetch_add(&f->refs, 1);
    if (zmq_msg_init_data(&msg, f->data, f->len, shared_free_fn, f) < 0) {
        shared_unref(f);
        return -1;
    }
    if (zmq_msg_send(&msg, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg); /* runs shared_free_fn */
        return -1;
    }
    send_dump(f->data, f->len);
    return (long long)f->len;
}

int transport_fd_rx_bytes(int fd, uint64_t *bytes)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
        return -1;
    *bytes = ti.tcpi_bytes_received;
    return 0;
}

void transport_shared_release(shared_frame_t **f)
{
    if (!f || !*f) return;
    shared_unref(*f);
    *f = NULL;
}

static void drain(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t junk;
        zmq_msg_init(&junk);
        zmq_msg_recv(&junk, sock, 0);
        zmq_msg_close(&junk);
    }
}

static int has_more(void *sock)
{
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    return more;
}

int transport_recv(void *sock, int is_router, wire_frame_t *frame, int dontwait)
{
    memset(frame, 0, sizeof *frame);
    int flags = dontwait ? ZMQ_DONTWAIT : 0;
    zmq_msg_t *m = malloc(sizeof *m);
    if (!m) return -1;
    zmq_msg_init(m);
    if (is_router) {
        if (zmq_msg_recv(m, sock, flags) < 0) {
            int e = errno;
            zmq_msg_close(m);
            free(m);
            errno = e;
            return -1;
        }
        size_t idlen = zmq_msg_size(m);
        if (idlen > TRANSPORT_ID_MAX || !has_more(sock)) {
            zmq_msg_close(m);
            free(m);
            drain(sock);
            errno = EPROTO;
            return -1;
        }
        memcpy(frame->from.data, zmq_msg_data(m), idlen);
        frame->from.len = idlen;
        zmq_msg_close(m);
        zmq_msg_init(m);
        flags = 0; /* the rest of a multipart message is already here */
    }
    if (zmq_msg_recv(m, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(m);
        free(m);
        errno = e;
        return -1;
    }
    if (has_more(sock)) { /* medfed messages are exactly one payload frame */
        zmq_msg_close(m);
        free(m);
        drain(sock);
        errno = EPROTO;
        return -1;
    }
    frame->frame = m;
    frame->bytes = zmq_msg_size(m);
    frame->srcfd = zmq_msg_get(m, ZMQ_SRCFD);
    const char *uid = zmq_msg_gets(m, "User-Id");
    if (uid) snprintf(frame->user_id, sizeof frame->user_id, "%s", uid);
    return 0;
}

const void *transport_frame_data(const wire_frame_t *frame)
{
    return zmq_msg_data((zmq_msg_t *)frame->frame);
}

void transport_frame_close(wire_frame_t *frame)
{
    if (frame->frame) {
        zmq_msg_close(frame->frame);
        free(frame->frame);
        frame->frame = NULL;
    }
}

void *transport_monitor_open_events(void *zctx, void *sock, const char *name, int events)
{
    char ep[128];
    snprintf(ep, sizeof ep, "inproc://monitor-%s", name);
    if (zmq_socket_monitor(sock, ep, events) < 0) return NULL;
    void *mon = zmq_socket(zctx, ZMQ_PAIR);
    if (!mon) return NULL;
    int linger = 0;
    zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(mon, ep) < 0) {
        zmq_close(mon);
        return NULL;
    }
    return mon;
}

void *transport_monitor_open(void *zctx, void *sock, const char *name)
{
    return transport_monitor_open_events(zctx, sock, name, ZMQ_EVENT_DISCONNECTED);
}

int transport_monitor_next(void *mon, int *event, uint32_t *value)
{
    /* Frame 1: u16 event + u32 value; frame 2: the endpoint. */
    uint8_t ev[6];
    int n = zmq_recv(mon, ev, sizeof ev, ZMQ_DONTWAIT);
    drain(mon);
    if (n != 6) return -1;
    uint16_t e;
    memcpy(&e, ev, 2);
    memcpy(value, ev + 2, 4);
    *event = e;
    return 0;
}

int transport_monitor_read(void *mon)
{
    int event;
    uint32_t value;
    while (transport_monitor_next(mon, &event, &value) == 0)
        if (event == ZMQ_EVENT_DISCONNECTED) return (int)value;
    return -1;
}

int transport_curve_server(void *sock, const uint8_t secret[32])
{
    int on = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &on, sizeof on) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 32) < 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "medfed", 6) < 0)
        return -1;
    return 0;
}

int transport_curve_client(void *sock, const uint8_t server_public[32], const uint8_t public_[32],
                           const uint8_t secret[32])
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, 32) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public_, 32) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 32) < 0)
        return -1;
    return 0;
}

void transport_peer_str(const peer_id_t *id, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < id->len && o + 3 < outlen && i < 8; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%02x", id->data[i]);
    if (outlen) out[o < outlen ? o : outlen - 1] = '\0';
}
