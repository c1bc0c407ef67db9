/*
 * chaos_kill.c - sends SIGKILL to a process at a chosen moment, for the crash
 * drills (tests/chaos/run.sh). The moment is an anchor plus a delay:
 *
 *   chaos_kill PID time DELAY_US
 *       DELAY_US after start
 *   chaos_kill PID log FILE TEXT N DELAY_US
 *       DELAY_US after the N-th line of FILE (a log being written) that holds TEXT
 *   chaos_kill PID create DIR TEXT N DELAY_US
 *       DELAY_US after the N-th time an entry of DIR whose name holds TEXT is
 *       created (inotify): e.g. TEXT ".tmp" on the coordinator's rounds/ lands
 *       the kill inside a checkpoint's write, between the temp file's creation
 *       and its rename
 *   chaos_kill PID moved DIR TEXT N DELAY_US
 *       the same for an entry renamed into DIR (a temp file becoming the file)
 *   chaos_kill PID write DIR TEXT N DELAY_US
 *       the same for the N-th write to such an entry (one per write(2)): e.g. a
 *       site's released-shares record, appended and fsync'd before it reveals
 *
 * It reacts within microseconds (inotify, no polling), so short delays land
 * inside writes of a few milliseconds. No production hook is needed: the
 * program under test is the release build, watched from outside.
 *
 * Prints one line: "fired ANCHOR +MS ms" (the kill was sent), "gone" (PID
 * exited first: nothing to kill) or "timeout" (the anchor never came within
 * the limit, --timeout S, 300 by default). Exit 0 when it killed, 1 otherwise,
 * 2 on bad usage.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Running, not a zombie its parent has yet to reap (the drill waits for it
 * only after this program returns). */
static int alive(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno != EPERM) return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* "PID (COMM) STATE ..." */
    return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == 0 || *end || v < lo || v > hi) {
        fprintf(stderr, "chaos_kill: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: chaos_kill [--timeout S] PID time DELAY_US\n"
                    "       chaos_kill [--timeout S] PID log FILE TEXT N DELAY_US\n"
                    "       chaos_kill [--timeout S] PID create|moved|write DIR TEXT N DELAY_US\n");
    exit(2);
}

/* Sleeps delay_us (nanosleep, restarted on EINTR), then kills. */
static int fire(pid_t pid, const char *anchor, long delay_us, double t0)
{
    struct timespec d = {.tv_sec = delay_us / 1000000, .tv_nsec = (delay_us % 1000000) * 1000};
    while (nanosleep(&d, &d) < 0 && errno == EINTR) {}
    if (!alive(pid) || kill(pid, SIGKILL) < 0) {
        printf("gone\n");
        return 1;
    }
    printf("fired %s +%.3f ms\n", anchor, (now_s() - t0) * 1000.0);
    return 0;
}

/* Counts the lines of the log that hold text, reading what was appended since
 * the last call; carries a partial last line over. 1 once the n-th is seen. */
typedef struct {
    FILE *f;
    char line[8192];
    size_t len;
    long seen;
} log_scan_t;

static int log_scan(log_scan_t *s, const char *text, long n)
{
    int c;
    while ((c = getc(s->f)) != EOF) {
        if (c != '\n') {
            if (s->len < sizeof s->line - 1) s->line[s->len++] = (char)c;
            continue;
        }
        s->line[s->len] = 0;
        s->len = 0;
        if (strstr(s->line, text) && ++s->seen >= n) return 1;
    }
    clearerr(s->f);
    return 0;
}

int main(int argc, char **argv)
{
    double limit = 300;
    int a = 1;
    if (argc > 2 && strcmp(argv[1], "--timeout") == 0) {
        limit = (double)parse_long(argv[2], 1, 86400, "timeout");
        a = 3;
    }
    if (argc - a < 3) usage();
    pid_t pid = (pid_t)parse_long(argv[a], 1, INT_MAX, "pid");
    const char *mode = argv[a + 1];
    double t0 = now_s();
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (strcmp(mode, "time") == 0) {
        if (argc - a != 3) usage();
        long delay = parse_long(argv[a + 2], 0, 86400L * 1000000, "delay");
        /* Sleep in slices so that a target that exits early is not waited for. */
        while (delay > 0 && alive(pid)) {
            long slice = delay < 20000 ? delay : 20000;
            usleep((useconds_t)slice);
            delay -= slice;
        }
        if (!alive(pid)) {
            printf("gone\n");
            return 1;
        }
        return fire(pid, "time", 0, t0);
    }

    int is_log = strcmp(mode, "log") == 0;
    uint32_t events = is_log ? IN_MODIFY
                      : strcmp(mode, "create") == 0 ? IN_CREATE
                      : strcmp(mode, "moved") == 0 ? IN_MOVED_TO
                      : strcmp(mode, "write") == 0 ? IN_MODIFY
                      : 0;
    if (!events || argc - a != 6) usage();
    const char *where = argv[a + 2], *text = argv[a + 3];
    long n = parse_long(argv[a + 4], 1, 1000000, "count");
    long delay = parse_long(argv[a + 5], 0, 3600L * 1000000, "delay");
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0 || inotify_add_watch(fd, where, events) < 0) {
        fprintf(stderr, "chaos_kill: cannot watch %s: %s\n", where, strerror(errno));
        return 2;
    }
    log_scan_t scan = {0};
    if (is_log) {
        scan.f = fopen(where, "r");
        if (!scan.f) {
            fprintf(stderr, "chaos_kill: %s: %s\n", where, strerror(errno));
            return 2;
        }
        /* Lines written before the watch began count too. */
        if (log_scan(&scan, text, n)) return fire(pid, mode, delay, t0);
    }
    long seen = 0;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        double left = t0 + limit - now_s();
        if (left <= 0) {
            printf("timeout\n");
            return 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left > 0.1 ? 100 : (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) return 2;
        if (r <= 0) {
            if (!alive(pid)) {
                printf("gone\n");
                return 1;
            }
            continue;
        }
        ssize_t len = read(fd, buf, sizeof buf);
        if (len <= 0) continue;
        if (is_log) {
            if (log_scan(&scan, text, n)) return fire(pid, mode, delay, t0);
            continue;
        }
        for (char *q = buf; q < buf + len;) {
            const struct inotify_event *e = (const struct inotify_event *)q;
            q += sizeof *e + e->len;
            if (e->len && strstr(e->name, text) && ++seen >= n) return fire(pid, mode, delay, t0);
        }
    }
}
