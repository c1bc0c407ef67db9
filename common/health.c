/* health.c - see health.h. sd_notify() from libsystemd: a datagram to
 * $NOTIFY_SOCKET, nothing at all when it is unset. */
#include "common/health.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

static atomic_int h_inited;   /* health_init() was called */
static int h_notify;          /* NOTIFY_SOCKET is set */
static uint64_t h_wd_usec;    /* WatchdogSec, 0: none */
static atomic_uint_fast64_t h_next_ping; /* CLOCK_MONOTONIC usec of the next WATCHDOG=1 */

/* What the status line and the journald fields are made of. */
static pthread_mutex_t h_lock = PTHREAD_MUTEX_INITIALIZER;
static int h_ready;
static uint32_t h_round;
static char h_phase[48];
static char h_site[64];
static char h_result[200];

static uint64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void health_init(const char *site)
{
    pthread_mutex_lock(&h_lock);
    snprintf(h_site, sizeof h_site, "%s", site ? site : "");
    h_ready = 0;
    h_round = 0;
    h_phase[0] = h_result[0] = '\0';
    pthread_mutex_unlock(&h_lock);
    const char *ns = getenv("NOTIFY_SOCKET");
    h_notify = ns && ns[0];
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is us */
    h_wd_usec = sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
    atomic_store(&h_next_ping, 0);
    atomic_store(&h_inited, 1);
}

uint64_t health_watchdog_usec(void) { return h_wd_usec; }

/* The status line; h_lock held. */
static void status_line(char *out, size_t outlen)
{
    int n = h_round ? snprintf(out, outlen, "round %u: %s", h_round, h_phase)
                    : snprintf(out, outlen, "%s", h_phase);
    if (h_result[0] && n >= 0 && (size_t)n < outlen)
        snprintf(out + n, outlen - (size_t)n, "; last: %s", h_result);
}

void health_ping(void)
{
    if (!atomic_load(&h_inited) || !h_notify || !h_wd_usec) return;
    uint64_t now = now_usec(), due = atomic_load(&h_next_ping);
    if (now < due) return;
    /* one thread sends: the one that moves the deadline on */
    if (!atomic_compare_exchange_strong(&h_next_ping, &due, now + h_wd_usec / 3)) return;
    sd_notify(0, "WATCHDOG=1");
}

void health_tick(uint32_t round, const char *phase)
{
    if (!atomic_load(&h_inited)) return;
    char status[320];
    int send = 0, first = 0;
    pthread_mutex_lock(&h_lock);
    if (!h_ready || round != h_round || strncmp(phase, h_phase, sizeof h_phase - 1) != 0) {
        h_round = round;
        snprintf(h_phase, sizeof h_phase, "%s", phase);
        status_line(status, sizeof status);
        send = 1;
        first = !h_ready;
        h_ready = 1;
    }
    pthread_mutex_unlock(&h_lock);
    if (send && h_notify) {
        if (first) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
        else sd_notifyf(0, "STATUS=%s", status);
    }
    health_ping();
}

void health_result(const char *fmt, ...)
{
    if (!atomic_load(&h_inited)) return;
    char status[320];
    pthread_mutex_lock(&h_lock);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h_result, sizeof h_result, fmt, ap);
    va_end(ap);
    int ready = h_ready;
    status_line(status, sizeof status);
    pthread_mutex_unlock(&h_lock);
    if (ready && h_notify) sd_notifyf(0, "STATUS=%s", status);
}

void health_status(const char *fmt, ...)
{
    if (!atomic_load(&h_inited) || !h_notify) return;
    char status[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(status, sizeof status, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", status);
}

void health_stopping(const char *why)
{
    if (!atomic_load(&h_inited) || !h_notify) return;
    sd_notifyf(0, "STOPPING=1\nSTATUS=stopping: %s", why);
}

int health_context(uint32_t *round, char *phase, size_t phaselen, char *site, size_t sitelen)
{
    if (!atomic_load(&h_inited)) return 0;
    pthread_mutex_lock(&h_lock);
    *round = h_round;
    snprintf(phase, phaselen, "%s", h_phase);
    snprintf(site, sitelen, "%s", h_site);
    pthread_mutex_unlock(&h_lock);
    return 1;
}
