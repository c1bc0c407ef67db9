/*
 * dicom.c - the daemon's side of the DICOM worker (see dicom.h and the wire in
 * dicom_proto.h). The worker is spawned with posix_spawn (safe in a process
 * with LibTorch threads) on one end of a socketpair, which is its stdin and
 * stdout; writes use MSG_NOSIGNAL so a dead worker is an error, not SIGPIPE.
 * Anything unexpected from the worker (EOF, a bad length, silence past the
 * per-image timeout) kills it; the image is DICOM_SKIP_CRASH and the next
 * request starts a fresh worker.
 */
#include "imaging/dicom.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imaging/dicom_prep.h"
#include "imaging/dicom_proto.h"
#include "common/health.h"
#include "common/util.h"
#include "crypto/crypto.h"

extern char **environ;

#define DICOM_WORKER_NAME "medfed-dicom-worker"

struct dicom_worker {
    char path[PATH_MAX];
    pid_t pid;   /* 0: not running */
    int fd;      /* our end of the socketpair, -1 when not running */
    int timeout_ms;
    unsigned restarts;
};

const char *dicom_status_name(dicom_status_t s)
{
    static const char *const names[DICOM_STATUS_COUNT] = {
        [DICOM_OK] = "ok",
        [DICOM_SKIP_BURNED_IN] = "burned_in_annotation",
        [DICOM_SKIP_MALFORMED] = "malformed",
        [DICOM_SKIP_UNSUPPORTED] = "unsupported",
        [DICOM_SKIP_CRASH] = "worker_crashed",
        [DICOM_SKIP_UNLABELLED] = "unlabelled",
        [DICOM_SKIP_FETCH] = "fetch_failed",
    };
    return (unsigned)s < DICOM_STATUS_COUNT ? names[s] : "unknown";
}

void dicom_image_ref(const uint8_t salt[16], const char *key, char out[17])
{
    size_t kl = strlen(key);
    uint8_t h[CRYPTO_HASHBYTES], *m = malloc(16 + 1 + kl);
    if (!m) {
        memcpy(out, "0000000000000000", 17);
        return;
    }
    memcpy(m, salt, 16);
    m[16] = 'r'; /* domain: log references (data_folder.c's split hash uses 's') */
    memcpy(m + 17, key, kl);
    crypto_sha256(h, m, 17 + kl);
    free(m);
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* ---- the process ---------------------------------------------------------------- */

static void worker_kill(dicom_worker_t *w)
{
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    w->pid = 0;
}

static int worker_spawn(dicom_worker_t *w, char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        util_seterr(err, errlen, "dicom worker: socketpair: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* dup2 clears close-on-exec on the copies; everything else is closed */
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    char *argv[] = {(char *)DICOM_WORKER_NAME, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, w->path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        util_seterr(err, errlen, "dicom worker: cannot start %s: %s", w->path, strerror(rc));
        return -1;
    }
    w->pid = pid;
    w->fd = sv[0];
    return 0;
}

/* $MEDFED_DICOM_WORKER; else the worker next to this executable (the build
 * tree's bin/, `make install`'s PREFIX/bin); else PREFIX/lib/medfed/ for an
 * executable in PREFIX/bin (the Debian packages: /usr/bin/medfed-client and
 * /usr/lib/medfed/medfed-dicom-worker). When neither exists, the first. */
static int worker_find(char *out, size_t outlen, char *err, size_t errlen)
{
    const char *env = getenv("MEDFED_DICOM_WORKER");
    if (env && *env) {
        if (util_strlcpy(out, env, outlen) < 0) goto toolong;
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        util_seterr(err, errlen, "dicom worker: cannot read /proc/self/exe");
        return -1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    const char *dir = slash ? self : ".";
    if (snprintf(out, outlen, "%s/%s", dir, DICOM_WORKER_NAME) >= (int)outlen) goto toolong;
    if (access(out, X_OK) == 0) return 0;
    size_t dl = strlen(dir);
    if (dl >= 4 && strcmp(dir + dl - 4, "/bin") == 0) {
        char lib[PATH_MAX];
        if (snprintf(lib, sizeof lib, "%.*s/lib/medfed/%s", (int)(dl - 4), dir,
                     DICOM_WORKER_NAME) < (int)sizeof lib &&
            access(lib, X_OK) == 0) {
            if (util_strlcpy(out, lib, outlen) < 0) goto toolong;
            return 0;
        }
    }
    return 0;
toolong:
    util_seterr(err, errlen, "dicom worker: path too long");
    return -1;
}

dicom_worker_t *dicom_worker_start(char *err, size_t errlen)
{
    dicom_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        util_seterr(err, errlen, "out of memory");
        return NULL;
    }
    w->fd = -1;
    w->timeout_ms = DICOM_WORKER_TIMEOUT_MS;
    if (worker_find(w->path, sizeof w->path, err, errlen) < 0) goto fail;
    if (access(w->path, X_OK) < 0) {
        util_seterr(err, errlen, "dicom worker: %s: %s", w->path, strerror(errno));
        goto fail;
    }
    if (worker_spawn(w, err, errlen) < 0) goto fail;
    return w;
fail:
    free(w);
    return NULL;
}

void dicom_worker_stop(dicom_worker_t **wp)
{
    if (!wp || !*wp) return;
    dicom_worker_t *w = *wp;
    if (w->fd >= 0) {
        close(w->fd); /* EOF: the worker exits; give it a moment */
        w->fd = -1;
        for (int i = 0; i < 100 && w->pid > 0; i++) {
            pid_t r = waitpid(w->pid, NULL, WNOHANG);
            if (r == w->pid || (r < 0 && errno != EINTR)) w->pid = 0;
            else usleep(10000);
        }
    }
    worker_kill(w);
    free(w);
    *wp = NULL;
}

void dicom_worker_set_timeout(dicom_worker_t *w, int ms) { w->timeout_ms = ms > 0 ? ms : 1; }
int dicom_worker_pid(const dicom_worker_t *w) { return (int)w->pid; }
unsigned dicom_worker_restarts(const dicom_worker_t *w) { return w->restarts; }

/* ---- one exchange ------------------------------------------------------------------ */

static int wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        double left = deadline - util_now();
        if (left <= 0) return -1;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)(left * 1000.0) + 1);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return -1;
    }
}

static int send_all(int fd, const void *buf, size_t len, double deadline)
{
    size_t put = 0;
    while (put < len) {
        if (wait_fd(fd, POLLOUT, deadline) < 0) return -1;
        ssize_t n = send(fd, (const uint8_t *)buf + put, len - put, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return -1;
        put += (size_t)n;
    }
    return 0;
}

static int recv_all(int fd, void *buf, size_t len, double deadline)
{
    size_t got = 0;
    while (got < len) {
        if (wait_fd(fd, POLLIN, deadline) < 0) return -1;
        ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

/* Restarts a worker that is not running or has died since the last image. */
static int worker_ensure(dicom_worker_t *w)
{
    if (w->pid > 0) {
        pid_t r;
        do r = waitpid(w->pid, NULL, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == 0) return 0;    /* still running */
        if (r > 0) w->pid = 0;   /* reaped: worker_kill has nothing to kill */
    }
    worker_kill(w);
    w->restarts++;
    char err[256];
    return worker_spawn(w, err, sizeof err);
}

static dicom_status_t crashed(dicom_worker_t *w, const char *why, char *reason, size_t reasonlen)
{
    worker_kill(w);
    util_seterr(reason, reasonlen, "%s", why);
    return DICOM_SKIP_CRASH;
}

/* Reads one reply (dicom_proto.h) from fd by the deadline, for an image of
 * want pixels: NULL when it came whole and well-formed (*status, the worker's
 * reason in why, out's accession and SOP UID, and its pixels when DICOM_OK:
 * the caller frees them), else what went wrong, the worker to be treated as
 * crashed (out holds no pixels). The parser tests/fuzz/fuzz_dicom_proto.c runs. */
static const char *reply_read(int fd, size_t want, double deadline, dicom_image_t *out,
                              uint32_t *status, char why[DICOM_PROTO_REASON_MAX + 1])
{
    uint8_t r[DICOM_PROTO_REP_HEADER];
    if (recv_all(fd, r, sizeof r, deadline) < 0)
        return util_now() >= deadline ? "worker timed out" : "worker crashed";
    uint32_t st = dicom_proto_get32(r + 4), rl = dicom_proto_get32(r + 8);
    uint32_t al = dicom_proto_get32(r + 12), sl = dicom_proto_get32(r + 16);
    uint32_t np = dicom_proto_get32(r + 20);
    if (dicom_proto_get32(r) != DICOM_PROTO_REP || st >= DICOM_STATUS_COUNT ||
        rl > DICOM_PROTO_REASON_MAX || al >= DICOM_KEY_MAX || sl >= DICOM_KEY_MAX ||
        np != (st == DICOM_OK ? want : 0))
        return "worker reply malformed";
    if (recv_all(fd, why, rl, deadline) < 0 || recv_all(fd, out->accession, al, deadline) < 0 ||
        recv_all(fd, out->sop_uid, sl, deadline) < 0)
        return "worker crashed";
    why[rl] = out->accession[al] = out->sop_uid[sl] = 0;
    if (st == DICOM_OK) {
        out->pixels = malloc(want * sizeof *out->pixels);
        if (!out->pixels) {
            memset(out, 0, sizeof *out);
            return "out of memory";
        }
        if (recv_all(fd, out->pixels, want * sizeof *out->pixels, deadline) < 0) {
            free(out->pixels);
            memset(out, 0, sizeof *out);
            return "worker crashed";
        }
    }
    *status = st;
    return NULL;
}

static dicom_status_t exchange(dicom_worker_t *w, uint32_t kind, const uint8_t *payload,
                               size_t len, const dicom_prep_t *prep, dicom_image_t *out,
                               char *reason, size_t reasonlen)
{
    memset(out, 0, sizeof *out);
    util_seterr(reason, reasonlen, "%s", "");
    health_ping(); /* a folder of 20,000 images is one long step for the daemon */
    if (!dicom_prep_valid(prep)) {
        util_seterr(reason, reasonlen, "preprocessing parameters invalid");
        return DICOM_SKIP_UNSUPPORTED;
    }
    if (kind == DICOM_PROTO_PATH && len == 0) {
        util_seterr(reason, reasonlen, "empty path");
        return DICOM_SKIP_MALFORMED;
    }
    if (len > (kind == DICOM_PROTO_PATH ? DICOM_PROTO_PATH_MAX : DICOM_PROTO_BYTES_MAX)) {
        util_seterr(reason, reasonlen, "too large");
        return DICOM_SKIP_UNSUPPORTED;
    }
    if (worker_ensure(w) < 0) {
        util_seterr(reason, reasonlen, "worker cannot be started");
        return DICOM_SKIP_CRASH;
    }
    double deadline = util_now() + w->timeout_ms / 1000.0;
    uint8_t h[DICOM_PROTO_REQ_HEADER] = {0};
    dicom_proto_put32(h, DICOM_PROTO_REQ);
    dicom_proto_put32(h + 4, kind);
    dicom_proto_put32(h + 8, (uint32_t)prep->height);
    dicom_proto_put32(h + 12, (uint32_t)prep->width);
    dicom_proto_put32(h + 16, (uint32_t)prep->window);
    dicom_proto_putf64(h + 24, prep->center);
    dicom_proto_putf64(h + 32, prep->width_w);
    dicom_proto_put32(h + 40, (uint32_t)len);
    if (send_all(w->fd, h, sizeof h, deadline) < 0 || send_all(w->fd, payload, len, deadline) < 0)
        return crashed(w, util_now() >= deadline ? "worker timed out" : "worker crashed", reason,
                       reasonlen);

    uint32_t st;
    char why[DICOM_PROTO_REASON_MAX + 1];
    const char *bad = reply_read(w->fd, (size_t)prep->height * (size_t)prep->width, deadline, out,
                                 &st, why);
    if (bad) return crashed(w, bad, reason, reasonlen);
    if (st != DICOM_OK) util_seterr(reason, reasonlen, "%s", why);
    return (dicom_status_t)st;
}

dicom_status_t dicom_worker_decode_file(dicom_worker_t *w, const char *path,
                                        const dicom_prep_t *prep, dicom_image_t *out,
                                        char *reason, size_t reasonlen)
{
    return exchange(w, DICOM_PROTO_PATH, (const uint8_t *)path, strlen(path), prep, out, reason,
                    reasonlen);
}

dicom_status_t dicom_worker_decode_mem(dicom_worker_t *w, const uint8_t *buf, size_t len,
                                       const dicom_prep_t *prep, dicom_image_t *out,
                                       char *reason, size_t reasonlen)
{
    return exchange(w, DICOM_PROTO_BYTES, buf, len, prep, out, reason, reasonlen);
}
