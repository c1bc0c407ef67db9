/*
 * log.h - one-line, levelled logs on stderr (journald reads stderr as is).
 *
 * Format: "<prog> LEVEL message". The caller never passes patient data, pixel
 * values or key material: log lines name sites, rounds, phases and sizes only.
 * A disabled level costs one integer compare. Under systemd (JOURNAL_STREAM
 * names stderr) each line goes to the journal as an entry of its own
 * (sd_journal_send), with the same text, no clock (journald adds one), its
 * PRIORITY (`journalctl -p warning`), and the fields ROUND, PHASE and SITE:
 * from the line's own "round=12", "phase=train", "site=" / "client=" words,
 * else from what the daemon last told health.h. So `journalctl ROUND=12`
 * lists round 12 and `journalctl SITE=st-marys` one site's lines on the
 * coordinator. Should the journal socket refuse, the line goes to stderr
 * with its syslog priority prefix, "<3>".."<7>". A stderr that is not the
 * journal (a file, a pipe, a terminal) gets the plain format, unchanged.
 */
#ifndef MEDFED_LOG_H
#define MEDFED_LOG_H

#include <stdarg.h>

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level_t;

extern log_level_t log_threshold;

void log_init(const char *prog, log_level_t level);
/* Parses "error", "warn", "info", "debug"; -1 if unknown. */
int log_level_parse(const char *s, log_level_t *out);
/* The message of the last ERROR line this thread wrote ("" if none): lets a
 * summary (medfed-client --check) give the reason a lower layer logged. */
const char *log_last_error(void);
/* Lines this thread writes name tag after the program: "<prog>[tag] LEVEL
 * message" (medfed-swarm: the site each thread runs). NULL or "" clears it. */
void log_set_thread_tag(const char *tag);
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(lvl, ...) do { if ((lvl) <= log_threshold) log_write((lvl), __VA_ARGS__); } while (0)
#define log_error(...) LOG_AT(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_WARN, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)

#endif
