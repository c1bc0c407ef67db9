#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

log_level_t log_threshold = LOG_INFO;
static char log_prog[32] = "medfed";
static int log_journal;        /* stderr is journald's stream: "<N>" prefixes, no clock */
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

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level == LOG_ERROR) memcpy(log_last, line, sizeof log_last);
    if (log_journal) { /* journald stamps the time and reads the priority prefix */
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
