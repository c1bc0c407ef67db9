/* common/health.c and log.c's journald fields, without a running systemd:
 *   - sd_notify: NOTIFY_SOCKET names a socket this test listens on; READY=1
 *     with the first status, STATUS= on each change, WATCHDOG=1 at a third of
 *     WATCHDOG_USEC and not more often, none for another WATCHDOG_PID;
 *   - journald: in a mount namespace of its own (root only, else skipped), a
 *     socket at /run/systemd/journal/socket receives each log line as an
 *     entry with MESSAGE, PRIORITY, ROUND, PHASE and SITE, and stderr gets
 *     nothing;
 *   - a stderr that is not the journal keeps the plain format. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/health.h"
#include "common/log.h"

static int listen_dgram(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The next datagram within ms milliseconds, NUL-terminated; "" if none came. */
static const char *next_msg(int fd, int ms, char *buf, size_t len)
{
    struct pollfd p = {fd, POLLIN, 0};
    buf[0] = '\0';
    if (poll(&p, 1, ms) <= 0) return buf;
    ssize_t n = recv(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static char dir[64];
static int notify_fd = -1;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/medfed-health-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/notify", dir);
    notify_fd = listen_dgram(path);
    if (notify_fd < 0) return -1;
    setenv("NOTIFY_SOCKET", path, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    close(notify_fd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_ready_status_watchdog(void **state)
{
    (void)state;
    char m[512];
    setenv("WATCHDOG_USEC", "300000", 1); /* pings at most every 100 ms */
    unsetenv("WATCHDOG_PID");
    health_init("st-marys");
    assert_int_equal(health_watchdog_usec(), 300000);

    health_tick(0, "loading data");
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m), "READY=1\nSTATUS=loading data");
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m), "WATCHDOG=1");
    /* nothing changed, and the next ping is not due yet: nothing sent */
    health_tick(0, "loading data");
    health_ping();
    assert_string_equal(next_msg(notify_fd, 50, m, sizeof m), "");

    /* a passing status (a PACS pull's progress) goes out as it is */
    health_status("loading data: %d of %d images", 1200, 20000);
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m),
                        "STATUS=loading data: 1200 of 20000 images");

    health_tick(3, "train");
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m), "STATUS=round 3: train");
    health_result("round 3 trained, loss %.4f, %d s", 0.25, 12);
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m),
                        "STATUS=round 3: train; last: round 3 trained, loss 0.2500, 12 s");
    assert_string_equal(next_msg(notify_fd, 50, m, sizeof m), "");

    sleep_ms(120);
    health_ping();
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m), "WATCHDOG=1");
    health_ping();
    assert_string_equal(next_msg(notify_fd, 50, m, sizeof m), "");

    health_stopping("done");
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m), "STOPPING=1\nSTATUS=stopping: done");

    uint32_t round;
    char phase[48], site[64];
    assert_int_equal(health_context(&round, phase, sizeof phase, site, sizeof site), 1);
    assert_int_equal(round, 3);
    assert_string_equal(phase, "train");
    assert_string_equal(site, "st-marys");
}

/* The watchdog is another process's (WATCHDOG_PID): no WATCHDOG=1 from us. */
static void test_watchdog_of_another_pid(void **state)
{
    (void)state;
    char m[512], pid[32];
    setenv("WATCHDOG_USEC", "300000", 1);
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    health_init(NULL);
    assert_int_equal(health_watchdog_usec(), 0);
    health_tick(1, "waiting");
    assert_string_equal(next_msg(notify_fd, 1000, m, sizeof m), "READY=1\nSTATUS=round 1: waiting");
    sleep_ms(120);
    health_ping();
    assert_string_equal(next_msg(notify_fd, 50, m, sizeof m), "");
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
}

/* Each field of an entry must be there ("KEY=VALUE" lines); returns 0 or a
 * code naming the first one missing. */
static int entry_has(const char *e, const char *const *fields, int code)
{
    for (int i = 0; fields[i]; i++) {
        char want[160];
        snprintf(want, sizeof want, "%s\n", fields[i]);
        const char *p = strstr(e, want);
        if (!p || (p != e && p[-1] != '\n')) {
            fprintf(stdout, "journal entry lacks '%s':\n%s\n", fields[i], e);
            fflush(stdout);
            return code + i;
        }
    }
    return 0;
}

/* In the child: a private /run with a journal socket, stderr a file that
 * JOURNAL_STREAM names. 77: cannot (not root), skipped. */
static int journal_child(void)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") < 0)
        return 77;
    if (mkdir("/run/systemd", 0755) < 0 || mkdir("/run/systemd/journal", 0755) < 0) return 2;
    int j = listen_dgram("/run/systemd/journal/socket");
    if (j < 0) return 3;
    char errpath[128];
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    int e = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    struct stat st;
    if (e < 0 || dup2(e, 2) < 0 || fstat(2, &st) < 0) return 4;
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    unsetenv("NOTIFY_SOCKET");

    log_init("client[st-marys]", LOG_INFO);
    health_init("st-marys");
    health_tick(12, "train");
    char m[4096];
    int rc;
    /* the line's own words */
    log_info("round=12 phase=train event=plan epochs=%d", 1);
    static const char *const a[] = {
        "MESSAGE=client[st-marys] INFO round=12 phase=train event=plan epochs=1", "PRIORITY=6",
        "ROUND=12", "PHASE=train", "SITE=st-marys", NULL};
    if ((rc = entry_has(next_msg(j, 1000, m, sizeof m), a, 10))) return rc;
    /* no words: the daemon's state */
    log_warn("data: %d images skipped", 3);
    static const char *const b[] = {"MESSAGE=client[st-marys] WARN data: 3 images skipped",
                                    "PRIORITY=4", "ROUND=12", "PHASE=train", "SITE=st-marys",
                                    NULL};
    if ((rc = entry_has(next_msg(j, 1000, m, sizeof m), b, 20))) return rc;
    /* a coordinator's line names the site it is about (client=) */
    log_error("round=13 phase=masked-input client=st-judes dropped");
    static const char *const c[] = {"PRIORITY=3", "ROUND=13", "PHASE=masked-input",
                                    "SITE=st-judes", NULL};
    if ((rc = entry_has(next_msg(j, 1000, m, sizeof m), c, 30))) return rc;
    /* "client_id=" is not "client=", "around=" is not "round=" */
    health_init(NULL);
    health_tick(0, "waiting");
    log_info("event=welcome client_id=4 around=9");
    next_msg(j, 1000, m, sizeof m);
    if (strstr(m, "ROUND=") || strstr(m, "SITE=") || !strstr(m, "PHASE=waiting\n")) {
        fprintf(stdout, "unexpected fields:\n%s\n", m);
        fflush(stdout);
        return 40;
    }
    /* and nothing went to stderr */
    fflush(stderr);
    if (fstat(2, &st) < 0 || st.st_size != 0) return 41;
    return 0;
}

static void test_journal_fields(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(journal_child());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) skip(); /* no mount namespace here (not root) */
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Not the journal's stream (another JOURNAL_STREAM): "HH:MM:SS.mmm prog LEVEL msg". */
static void test_plain_format_unchanged(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char errpath[128];
        snprintf(errpath, sizeof errpath, "%s/plain", dir);
        int e = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (e < 0 || dup2(e, 2) < 0) _exit(2);
        setenv("JOURNAL_STREAM", "1:1", 1);
        unsetenv("NOTIFY_SOCKET");
        log_init("coordinator", LOG_INFO);
        health_init(NULL);
        health_tick(7, "evaluating");
        log_info("round=7 phase=eval event=round-complete");
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char path[128], line[256] = "";
    snprintf(path, sizeof path, "%s/plain", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    int hh, mm, ss, ms, n = 0;
    assert_int_equal(sscanf(line, "%2d:%2d:%2d.%3d %n", &hh, &mm, &ss, &ms, &n), 4);
    assert_string_equal(line + n, "coordinator INFO round=7 phase=eval event=round-complete\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_status_watchdog),
        cmocka_unit_test(test_watchdog_of_another_pid),
        cmocka_unit_test(test_journal_fields),
        cmocka_unit_test(test_plain_format_unchanged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
