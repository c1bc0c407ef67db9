/*
 * relay.c - a TCP relay that makes a loopback or veth path look like a WAN
 * link, for tests/wan/run.sh. This kernel has no netem: bandwidth and packet
 * loss are done in the kernel (htb and a cBPF drop filter on the veth, see
 * tests/wan/net.sh); latency, jitter, stalls and resets are done here.
 *
 *   relay --listen 127.0.0.1:7700 --connect 10.201.3.1:7700 [options]
 *
 * Each accepted connection gets its own upstream connection. Bytes read on
 * one side become chunks (at most --chunk bytes each, one read each); a chunk
 * is held until its due time, read time + the direction's one-way delay +
 * uniform jitter in [-J, +J], never before the chunk ahead of it (order is
 * kept: jitter delays, it does not reorder), then written out (a chunk per
 * write, so the receiver sees the stream cut where a WAN would cut it). At
 * most --window bytes wait per direction; past that the relay stops reading
 * and TCP's flow control pushes back on the sender, as a full window would.
 *
 * Options (times in ms unless said; "up" is from the accepted side towards
 * --connect, "down" the other way):
 *   --delay MS          one-way delay, both directions (0)
 *   --up-delay MS, --down-delay MS
 *   --jitter MS         uniform jitter around the delay (0)
 *   --chunk BYTES       largest chunk read and written at once (16384)
 *   --window BYTES      bytes held per direction before reading stops (4 MiB)
 *   --pause S:MIN:MAX   random stalls: per direction, every S seconds on average
 *                       (exponential), nothing is written for MIN..MAX ms
 *   --loss-stall P      what a lost TCP segment costs on a real path: each
 *                       1448-byte segment is "lost" with probability P, which
 *                       holds its chunk (and all behind it) one more round trip
 *                       (up + down delay), or 200 ms more (an RTO) one time in five
 *   --reset S           reset each connection (RST both ways) after S seconds on
 *                       average (exponential), mid-stream
 *   --cut-after BYTES   reset the first connection (RST both ways) once BYTES have
 *                       been written down it, once in the relay's life: a link lost
 *                       at a known point of a download (tests/integration). From
 *                       then on nothing passes, and the reset follows --cut-hold
 *                       MS later (500): an RST discards what the receiver's kernel
 *                       holds unread, so without the hold what arrives before the
 *                       cut would depend on how fast the receiver reads (CPU load)
 *   --connect-timeout MS  give up on the upstream connection (0: the kernel's)
 *   --seed N            random seed (1)
 * Signals: SIGUSR1 resets every open connection at once; SIGTERM/SIGINT exit.
 * One line on stderr per connection event.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RELAY_MAX_CONNS 64
#define RELAY_SEGMENT 1448 /* one TCP segment's payload on a 1500-byte MTU */
#define RELAY_RTO_S 0.2    /* Linux's minimum retransmission timeout */

typedef struct chunk {
    struct chunk *next;
    double due, read_at;
    size_t len, off;
    unsigned char data[];
} chunk_t;

/* One direction of one connection: src -> dst. */
typedef struct {
    chunk_t *head, *tail;
    size_t queued;
    double last_due;
    double pause_until, next_pause;
    int eof;          /* src closed its side: shut dst's write side once drained */
    int shut;         /* done that */
    unsigned long long bytes;
} dir_t;

typedef struct {
    int used, id;
    int fd[2];        /* 0: accepted side, 1: upstream */
    int connecting;
    double opened, next_reset;
    double cut_at;    /* --cut-after: silent until then, then reset (0: no cut) */
    dir_t dir[2];     /* 0: fd[0] -> fd[1] (up), 1: fd[1] -> fd[0] (down) */
} conn_t;

typedef struct {
    struct sockaddr_in listen_addr, connect_addr;
    double delay[2], jitter, window_bytes, chunk;
    double pause_mean, pause_min, pause_max;
    double loss, reset_mean, connect_timeout;
    double cut_after;     /* bytes down before the one cut (0: none) */
    double cut_hold;      /* seconds from the cut to the reset */
    unsigned long long seed;
} relay_opts_t;

static volatile sig_atomic_t relay_stop = 0, relay_reset_all = 0;
static uint64_t rng_state;
static conn_t conns[RELAY_MAX_CONNS];
static int next_id = 1;

static void on_signal(int sig)
{
    if (sig == SIGUSR1) relay_reset_all = 1;
    else relay_stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void say(const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld relay ", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* xorshift64*: reproducible, not cryptographic. */
static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static double exponential(double mean) { return -mean * log(1.0 - uniform()); }

static int parse_addr(const char *s, struct sockaddr_in *a)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: relay --listen HOST:PORT --connect HOST:PORT [--delay MS] [--up-delay MS]\n"
               "             [--down-delay MS] [--jitter MS] [--chunk BYTES] [--window BYTES]\n"
               "             [--pause S:MIN_MS:MAX_MS] [--loss-stall P] [--reset S]\n"
               "             [--connect-timeout MS] [--seed N] [--cut-after BYTES [--cut-hold MS]]\n"
               "SIGUSR1 resets every connection (see the comment atop tests/wan/relay.c)\n");
}

static int parse_args(int argc, char **argv, relay_opts_t *o)
{
    enum { O_LISTEN = 256, O_CONNECT, O_DELAY, O_UP, O_DOWN, O_JITTER, O_CHUNK, O_WINDOW,
           O_PAUSE, O_LOSS, O_RESET, O_CTIMEOUT, O_SEED, O_CUT, O_CUT_HOLD };
    static const struct option longopts[] = {
        {"listen", 1, 0, O_LISTEN}, {"connect", 1, 0, O_CONNECT}, {"delay", 1, 0, O_DELAY},
        {"up-delay", 1, 0, O_UP}, {"down-delay", 1, 0, O_DOWN}, {"jitter", 1, 0, O_JITTER},
        {"chunk", 1, 0, O_CHUNK}, {"window", 1, 0, O_WINDOW}, {"pause", 1, 0, O_PAUSE},
        {"loss-stall", 1, 0, O_LOSS}, {"reset", 1, 0, O_RESET},
        {"connect-timeout", 1, 0, O_CTIMEOUT}, {"seed", 1, 0, O_SEED},
        {"cut-after", 1, 0, O_CUT}, {"cut-hold", 1, 0, O_CUT_HOLD},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0},
    };
    int have_listen = 0, have_connect = 0, opt;
    double v;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case O_LISTEN: bad = parse_addr(optarg, &o->listen_addr); have_listen = 1; break;
        case O_CONNECT: bad = parse_addr(optarg, &o->connect_addr); have_connect = 1; break;
        case O_DELAY:
            bad = parse_num(optarg, 0, 60000, &v);
            o->delay[0] = o->delay[1] = v / 1000;
            break;
        case O_UP: bad = parse_num(optarg, 0, 60000, &v); o->delay[0] = v / 1000; break;
        case O_DOWN: bad = parse_num(optarg, 0, 60000, &v); o->delay[1] = v / 1000; break;
        case O_JITTER: bad = parse_num(optarg, 0, 60000, &v); o->jitter = v / 1000; break;
        case O_CHUNK: bad = parse_num(optarg, 1, 1 << 24, &o->chunk); break;
        case O_WINDOW: bad = parse_num(optarg, 1, 1 << 30, &o->window_bytes); break;
        case O_PAUSE: {
            double a, b, c;
            char x[3][32];
            bad = sscanf(optarg, "%31[^:]:%31[^:]:%31s", x[0], x[1], x[2]) != 3 ||
                  parse_num(x[0], 0.001, 1e6, &a) || parse_num(x[1], 0, 600000, &b) ||
                  parse_num(x[2], 0, 600000, &c) || c < b;
            o->pause_mean = a;
            o->pause_min = b / 1000;
            o->pause_max = c / 1000;
            break;
        }
        case O_LOSS: bad = parse_num(optarg, 0, 0.5, &o->loss); break;
        case O_RESET: bad = parse_num(optarg, 0.001, 1e6, &o->reset_mean); break;
        case O_CTIMEOUT: bad = parse_num(optarg, 0, 600000, &v); o->connect_timeout = v / 1000; break;
        case O_SEED: bad = parse_num(optarg, 0, 1e15, &v); o->seed = (unsigned long long)v; break;
        case O_CUT: bad = parse_num(optarg, 1, 1e15, &o->cut_after); break;
        case O_CUT_HOLD: bad = parse_num(optarg, 0, 600000, &v); o->cut_hold = v / 1000; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (bad) {
            fprintf(stderr, "relay: bad value '%s' for --%s\n", optarg, longopts[opt - O_LISTEN].name);
            return -1;
        }
    }
    if (optind != argc || !have_listen || !have_connect) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static void set_nonblock_nodelay(int fd)
{
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void dir_free(dir_t *d)
{
    while (d->head) {
        chunk_t *n = d->head->next;
        free(d->head);
        d->head = n;
    }
    d->tail = NULL;
    d->queued = 0;
}

static void schedule_pause(const relay_opts_t *o, dir_t *d, double now)
{
    d->next_pause = o->pause_mean > 0 ? now + exponential(o->pause_mean) : INFINITY;
}

/* Closes both sides; hard (RST) when asked, as a reset or a failure would. */
static void conn_close(conn_t *c, int hard, const char *why)
{
    struct linger lg = {1, 0};
    for (int i = 0; i < 2; i++) {
        if (c->fd[i] < 0) continue;
        if (hard) setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd[i]);
        c->fd[i] = -1;
    }
    say("conn=%d %s: %s after %.1f s, up %llu B, down %llu B", c->id, hard ? "reset" : "closed",
        why, now_s() - c->opened, c->dir[0].bytes, c->dir[1].bytes);
    dir_free(&c->dir[0]);
    dir_free(&c->dir[1]);
    c->used = 0;
}

static void on_accept(const relay_opts_t *o, int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) return;
    conn_t *c = NULL;
    for (int i = 0; i < RELAY_MAX_CONNS && !c; i++)
        if (!conns[i].used) c = &conns[i];
    if (!c) {
        say("refused a connection: %d already open", RELAY_MAX_CONNS);
        close(fd);
        return;
    }
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->id = next_id++;
    c->fd[0] = fd;
    c->opened = now_s();
    set_nonblock_nodelay(fd);
    c->fd[1] = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd[1] < 0) {
        conn_close(c, 1, "no upstream socket");
        return;
    }
    set_nonblock_nodelay(c->fd[1]);
    if (connect(c->fd[1], (const struct sockaddr *)&o->connect_addr, sizeof o->connect_addr) < 0 &&
        errno != EINPROGRESS) {
        say("conn=%d upstream connect failed: %s", c->id, strerror(errno));
        conn_close(c, 1, "upstream unreachable");
        return;
    }
    c->connecting = 1;
    c->next_reset = o->reset_mean > 0 ? c->opened + exponential(o->reset_mean) : INFINITY;
    for (int d = 0; d < 2; d++) schedule_pause(o, &c->dir[d], c->opened);
    say("conn=%d accepted", c->id);
}

static void on_connected(conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        say("conn=%d upstream connect failed: %s", c->id, strerror(err));
        conn_close(c, 1, "upstream unreachable");
        return;
    }
    c->connecting = 0;
    say("conn=%d upstream connected in %.0f ms", c->id, (now_s() - c->opened) * 1000);
}

/* A loss stall for n bytes just read: 0, one round trip, or an RTO more. */
static double loss_stall(const relay_opts_t *o, ssize_t n)
{
    if (o->loss <= 0 || uniform() >= 1 - pow(1 - o->loss, ceil((double)n / RELAY_SEGMENT))) return 0;
    return o->delay[0] + o->delay[1] + (uniform() < 0.2 ? RELAY_RTO_S : 0);
}

/* Reads what d's source has into its queue: into the last chunk when that was
 * read within the last millisecond and has room (packets of one burst share a
 * chunk and a due time), else into a new chunk. -1 when the connection is gone. */
static int pump_in(const relay_opts_t *o, conn_t *c, int d, double now)
{
    dir_t *q = &c->dir[d];
    chunk_t *k = q->tail;
    size_t cap = (size_t)o->chunk;
    int fresh = !(k && k->off == 0 && k->len < cap && now - k->read_at < 0.001);
    if (fresh && !(k = malloc(sizeof *k + cap))) return -1;
    size_t at = fresh ? 0 : k->len;
    ssize_t n = read(c->fd[d], k->data + at, cap - at);
    if (n <= 0) {
        if (fresh) free(k);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        if (n < 0) {
            say("conn=%d %s side: %s", c->id, d ? "upstream" : "accepted", strerror(errno));
            return -1;
        }
        q->eof = 1;
        return 0;
    }
    q->queued += (size_t)n;
    double stall = loss_stall(o, n);
    if (!fresh) {
        k->len += (size_t)n;
        k->due += stall;
        if (k->due > q->last_due) q->last_due = k->due;
        return 0;
    }
    k->next = NULL;
    k->len = (size_t)n;
    k->off = 0;
    k->read_at = now;
    double due = now + o->delay[d] + stall;
    if (o->jitter > 0) due += (2 * uniform() - 1) * o->jitter;
    if (due < q->last_due) due = q->last_due; /* never overtake the chunk ahead */
    q->last_due = due;
    k->due = due;
    if (q->tail) q->tail->next = k;
    else q->head = k;
    q->tail = k;
    return 0;
}

/* Writes the chunks that are due to d's sink, never taking d's byte count past
 * cap (--cut-after: the cut falls on its byte, however much is queued); -1
 * when the connection is gone. */
static int pump_out(conn_t *c, int d, double now, unsigned long long cap)
{
    dir_t *q = &c->dir[d];
    int dst = c->fd[1 - d];
    while (q->head && q->head->due <= now && now >= q->pause_until && q->bytes < cap) {
        chunk_t *k = q->head;
        size_t want = k->len - k->off;
        if (cap - q->bytes < want) want = (size_t)(cap - q->bytes);
        ssize_t n = write(dst, k->data + k->off, want);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            say("conn=%d %s side: %s", c->id, d ? "accepted" : "upstream", strerror(errno));
            return -1;
        }
        k->off += (size_t)n;
        q->bytes += (unsigned long long)n;
        if (k->off < k->len) return 0;
        q->queued -= k->len;
        q->head = k->next;
        if (!q->head) q->tail = NULL;
        free(k);
    }
    if (q->eof && !q->head && !q->shut) {
        shutdown(dst, SHUT_WR);
        q->shut = 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    relay_opts_t o = {.chunk = 16384, .window_bytes = 4 << 20, .seed = 1, .cut_hold = 0.5};
    if (parse_args(argc, argv, &o) < 0) return 2;
    rng_state = o.seed * 0x9E3779B97F4A7C15ULL + 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (const struct sockaddr *)&o.listen_addr, sizeof o.listen_addr) < 0 ||
        listen(lfd, 16) < 0) {
        fprintf(stderr, "relay: cannot listen: %s\n", strerror(errno));
        return 1;
    }
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    say("listening; delay up %.0f ms down %.0f ms jitter %.0f ms chunk %.0f window %.0f "
        "pause %g s:%.0f-%.0f ms loss-stall %g reset %g s",
        o.delay[0] * 1000, o.delay[1] * 1000, o.jitter * 1000, o.chunk, o.window_bytes,
        o.pause_mean, o.pause_min * 1000, o.pause_max * 1000, o.loss, o.reset_mean);

    struct pollfd pfd[1 + 2 * RELAY_MAX_CONNS];
    int owner[1 + 2 * RELAY_MAX_CONNS], side[1 + 2 * RELAY_MAX_CONNS];
    while (!relay_stop) {
        double now = now_s();
        if (relay_reset_all) {
            relay_reset_all = 0;
            for (int i = 0; i < RELAY_MAX_CONNS; i++)
                if (conns[i].used) conn_close(&conns[i], 1, "reset on signal");
        }
        /* Timers: random resets, the start and end of random stalls, due chunks. */
        double wake = now + 1;
        for (int i = 0; i < RELAY_MAX_CONNS; i++) {
            conn_t *c = &conns[i];
            if (!c->used) continue;
            if (now >= c->next_reset) {
                conn_close(c, 1, "random mid-stream reset");
                continue;
            }
            if (c->connecting && o.connect_timeout > 0 && now - c->opened > o.connect_timeout) {
                conn_close(c, 1, "upstream connect timed out");
                continue;
            }
            if (c->next_reset < wake) wake = c->next_reset;
            if (c->cut_at > 0 && c->cut_at < wake) wake = c->cut_at;
            for (int d = 0; d < 2 && !c->connecting; d++) {
                dir_t *q = &c->dir[d];
                if (now >= q->next_pause) {
                    q->pause_until = now + o.pause_min + uniform() * (o.pause_max - o.pause_min);
                    schedule_pause(&o, q, now);
                }
                if (q->next_pause < wake) wake = q->next_pause;
                if (q->pause_until > now && q->pause_until < wake) wake = q->pause_until;
                if (q->head && q->head->due > now && q->head->due < wake) wake = q->head->due;
            }
        }
        int n = 0;
        pfd[n] = (struct pollfd){lfd, POLLIN, 0};
        owner[n++] = -1;
        for (int i = 0; i < RELAY_MAX_CONNS; i++) {
            conn_t *c = &conns[i];
            if (!c->used) continue;
            for (int s = 0; s < 2; s++) {
                dir_t *in = &c->dir[s], *out = &c->dir[1 - s]; /* read s into in; write out's chunks to s */
                short ev = 0;
                if (c->cut_at > 0) {
                    /* cut: nothing passes until the reset */
                } else if (c->connecting) {
                    if (s == 1) ev = POLLOUT;
                    else if (!in->eof && in->queued < o.window_bytes) ev = POLLIN;
                } else {
                    if (!in->eof && in->queued < o.window_bytes) ev |= POLLIN;
                    if (out->head && out->head->due <= now && now >= out->pause_until) ev |= POLLOUT;
                }
                /* Nothing wanted: leave it out, or a closed side's POLLHUP spins. */
                pfd[n] = (struct pollfd){ev ? c->fd[s] : -1, ev, 0};
                owner[n] = i;
                side[n++] = s;
            }
        }
        int ms = (int)ceil((wake - now) * 1000);
        if (ms < 0) ms = 0;
        if (poll(pfd, (nfds_t)n, ms) < 0 && errno != EINTR) {
            fprintf(stderr, "relay: poll: %s\n", strerror(errno));
            return 1;
        }
        now = now_s();
        if (pfd[0].revents & POLLIN) on_accept(&o, lfd);
        for (int j = 1; j < n; j++) {
            conn_t *c = &conns[owner[j]];
            int s = side[j];
            if (!c->used || c->fd[s] != pfd[j].fd || !pfd[j].revents) continue;
            if (c->connecting && s == 1) {
                on_connected(c);
                continue;
            }
            if ((pfd[j].revents & (POLLIN | POLLHUP | POLLERR)) && pump_in(&o, c, s, now) < 0) {
                conn_close(c, 1, "a side failed");
                continue;
            }
        }
        /* Everything due goes out, on every connection (POLLOUT or not: a
         * socket with room takes it now, one without says EAGAIN). */
        for (int i = 0; i < RELAY_MAX_CONNS; i++) {
            conn_t *c = &conns[i];
            if (!c->used || c->connecting) continue;
            if (c->cut_at > 0) {
                if (now >= c->cut_at) conn_close(c, 1, "cut");
                continue;
            }
            const unsigned long long cap = o.cut_after > 0 ? (unsigned long long)o.cut_after : ULLONG_MAX;
            if (pump_out(c, 0, now, ULLONG_MAX) < 0 || pump_out(c, 1, now, cap) < 0) {
                conn_close(c, 1, "a side failed");
                continue;
            }
            if (o.cut_after > 0 && (double)c->dir[1].bytes >= o.cut_after) {
                say("conn=%d cut after %llu bytes down (--cut-after): silent for %.0f ms, then a "
                    "reset", c->id, c->dir[1].bytes, o.cut_hold * 1000);
                o.cut_after = 0; /* once */
                c->cut_at = now + o.cut_hold + 1e-9;
                continue;
            }
            if (c->dir[0].shut && c->dir[1].shut) conn_close(c, 0, "both sides finished");
        }
    }
    for (int i = 0; i < RELAY_MAX_CONNS; i++)
        if (conns[i].used) conn_close(&conns[i], 0, "relay stopping");
    close(lfd);
    return 0;
}
