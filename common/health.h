/*
 * health.h - what systemd sees of a daemon (medfed-client, medfed-coordinator):
 * readiness, a status line and the watchdog, over sd_notify (Type=notify).
 *
 * Under systemd (NOTIFY_SOCKET set) the first health_tick() sends READY=1;
 * every tick that changes the round or the phase, and every health_result(),
 * sends STATUS=, the line `systemctl status` shows:
 *     "round 12: masked-input; last: round 11, 8 sites, accuracy 0.9412"
 * and health_tick() / health_ping() send WATCHDOG=1 at most every third of
 * WatchdogSec (WATCHDOG_USEC), so a loop that stops turning for WatchdogSec
 * gets the daemon killed and restarted. Each costs a clock read when nothing
 * is due, and nothing at all outside systemd or before health_init().
 *
 * health_tick() also tells log.c the round and phase (health_context): under
 * journald every log line carries ROUND=, PHASE= and SITE= fields (log.h), so
 * `journalctl ROUND=12` lists round 12. health.c uses nothing of log.c (the
 * fuzz harnesses link it with a log stand-in).
 *
 * The daemon's threads other than its event loop only call health_ping()
 * (a long blocking step: a training epoch, a PACS pull).
 */
#ifndef MEDFED_HEALTH_H
#define MEDFED_HEALTH_H

#include <stddef.h>
#include <stdint.h>

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID; site (NULL for the
 * coordinator) becomes every journald line's SITE=. Call once, in main. */
void health_init(const char *site);

/* The event loop's hook: READY=1 the first time, STATUS= when round or
 * phase changed, WATCHDOG=1 when due. round 0: none yet. */
void health_tick(uint32_t round, const char *phase);

/* The last result for the status line ("round 11, 8 sites, accuracy 0.9412"). */
void health_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A passing status line of long work (a first PACS pull: "loading data: 1200 of
 * 20000 images (6%), ..."), sent as it is; the next health_tick() that changes
 * round or phase, or health_result(), replaces it. Any thread. */
void health_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1 when due; callable from any thread. */
void health_ping(void);

/* STOPPING=1 and a last status: the daemon is shutting down. */
void health_stopping(const char *why);

/* The watchdog period the service manager asked for, in microseconds (0: none). */
uint64_t health_watchdog_usec(void);

/* For log.c's journald fields: the site given to health_init() and the round
 * and phase of the last health_tick() ("" and 0 when none). Returns 0 when
 * health_init() was never called (nothing to add). */
int health_context(uint32_t *round, char *phase, size_t phaselen, char *site, size_t sitelen);

#endif
