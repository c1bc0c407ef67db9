#include "common/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

log_level_t log_threshold = LOG_INFO;
static char log_prog[32] = "medfed";

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_init(const char *prog, log_level_t level)
{
    if (prog) snprintf(log_prog, sizeof log_prog, "%s", prog);
    log_threshold = level;
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

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    /* One fprintf per line so lines from several processes do not interleave. */
    fprintf(stderr, "%02d:%02d:%02d.%03ld %s %s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, log_prog, level_names[level], line);
}
