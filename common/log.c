#include "common/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
/* CODE_FILE= would name this file for every line: left out */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "common/health.h"

log_level_t log_threshold = LOG_INFO;
static char log_prog[32] = "medfed";
static int log_journal;        /* stderr is journald's stream: native entries with fields */
static _Thread_local char log_last[1024]; /* the last ERROR line, for summaries (--check) */
static _Thread_local char log_tag[72];    /* "[tag]" or "" */

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char level_prio[] = {'3', '4', '6', '7'}; /* syslog err, warning, info, debug */

/* systemd sets JOURNAL_STREAM=DEV:INODE when stderr is connected to the
 * journal; a redirected stderr (a file, a pipe) keeps the plain format. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0) return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *prog, log_level_t level)
{
    if (prog) snprintf(log_prog, sizeof log_prog, "%s", prog);
    log_threshold = level;
    log_journal = stderr_is_journal();
}

const char *log_last_error(void)
{
    return log_last;
}

int log_level_parse(const char *s, log_level_t *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void log_set_thread_tag(const char *tag)
{
    if (tag && tag[0]) snprintf(log_tag, sizeof log_tag, "[%.64s]", tag);
    else log_tag[0] = '\0';
}

/* The value of "key=VALUE" in line (key at the start or after a space, VALUE
 * up to the next space), or 0. */
static int line_field(const char *line, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);
    for (const char *p = line; (p = strstr(p, key)) != NULL; p += kl) {
        if (p != line && p[-1] != ' ') continue;
        size_t n = strcspn(p + kl, " ");
        if (n == 0 || n >= outlen) continue;
        memcpy(out, p + kl, n);
        out[n] = '\0';
        return 1;
    }
    return 0;
}

/* One journal entry: MESSAGE (the line as journald's stream would have it),
 * PRIORITY, SYSLOG_IDENTIFIER, and ROUND / PHASE / SITE from the line's own
 * round= phase= site= client= words, else from the daemon's state
 * (health_context). Returns sd_journal_sendv's result (< 0: not sent). */
static int journal_send(log_level_t level, const char *line)
{
    char msg[1200], prio[16], ident[64], f_round[80], f_phase[80], f_site[80];
    char v[64], phase[48] = "", site[64] = "";
    uint32_t round = 0;
    health_context(&round, phase, sizeof phase, site, sizeof site);
    struct iovec iov[6];
    int n = 0;
#define FIELD(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), \
                         iov[n].iov_base = buf, iov[n].iov_len = strlen(buf), n++)
    FIELD(msg, "MESSAGE=%s%s %s %s", log_prog, log_tag, level_names[level], line);
    FIELD(prio, "PRIORITY=%c", level_prio[level]);
    FIELD(ident, "SYSLOG_IDENTIFIER=%s", program_invocation_short_name);
    if (line_field(line, "round=", v, sizeof v) && strspn(v, "0123456789") == strlen(v))
        FIELD(f_round, "ROUND=%s", v);
    else if (round)
        FIELD(f_round, "ROUND=%u", round);
    if (line_field(line, "phase=", v, sizeof v) || (phase[0] && snprintf(v, sizeof v, "%s", phase)))
        FIELD(f_phase, "PHASE=%s", v);
    if (line_field(line, "site=", v, sizeof v) || line_field(line, "client=", v, sizeof v) ||
        (site[0] && snprintf(v, sizeof v, "%s", site)))
        FIELD(f_site, "SITE=%s", v);
#undef FIELD
    return sd_journal_sendv(iov, n);
}

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level == LOG_ERROR) memcpy(log_last, line, sizeof log_last);
    if (log_journal) { /* journald stamps the time */
        if (journal_send(level, line) >= 0) return;
        /* no journal socket after all: its stream reads the priority prefix */
        fprintf(stderr, "<%c>%s%s %s %s\n", level_prio[level], log_prog, log_tag,
                level_names[level], line);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    /* One fprintf per line so lines from several processes do not interleave. */
    fprintf(stderr, "%02d:%02d:%02d.%03ld %s%s %s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, log_prog, log_tag, level_names[level], line);
}
