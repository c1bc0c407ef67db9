/*
 * runrec.h - the experiment record, run.json: what made a run's model, in the
 * run's folder (a simulation's output folder, a coordinator's state
 * directory; under medfed-sim they are one folder and both write it).
 *
 *   format             RUNREC_FORMAT: raised when a field changes meaning
 *   software           {name, version, git_commit, protocol}
 *   started_at         UTC, ISO 8601; ended_at (null while it runs)
 *   status             running | complete | stopped | failed
 *   config             every coordinator setting after defaults, file and flags
 *   model              {arch, params, tensors, input, classes, init, init_sha256}
 *   roster             {path, sha256, sites} (null without one)
 *   secure_aggregation {enabled, dropout, collusion, threshold, degree, ...}
 *   sites              each site the coordinator saw: name, n_train, n_val
 *   resumed            [{at, after_round}]: restarts of the coordinator
 *   final              the figures of metrics.jsonl (runrec_final)
 *   simulation         medfed-sim's own: flags, command line, dataset,
 *                      partition, seed, each site's share
 *
 * The coordinator owns every key but "simulation"; medfed-sim writes
 * "simulation" before the coordinator starts and the end after it exits.
 * Each writer reads the file, sets its keys and writes it back whole
 * (atomically), so neither loses the other's.
 */
#ifndef MEDFED_RUNREC_H
#define MEDFED_RUNREC_H

#include <stddef.h>

#include "common/json.h"

#define RUNREC_FORMAT 1
#define RUNREC_FILE "run.json"

/* DIR/run.json, or NULL when it is absent or not a JSON object. */
json_t *runrec_load(const char *dir);
/* rec to DIR/run.json atomically. 0 or -1 with err. */
int runrec_save(const char *dir, const json_t *rec, char *err, size_t errlen);
/* Sets format and software in rec. */
void runrec_stamp(json_t *rec);
/* {"name":"medfed","version","git_commit","protocol"}. */
json_t *runrec_software(void);
/* The final figures from DIR/metrics.jsonl: rounds (rows), completed_rounds,
 * aborted_rounds; round, val_accuracy, val_loss, val_auc, train_loss of the
 * last evaluated round; best_val_accuracy {round, value}; the totals of
 * seconds, train_seconds, bytes_up and bytes_down. NULL if it has no row. */
json_t *runrec_final(const char *dir);
/* SHA-256 of the file at path as 64 hex digits. -1 if it cannot be read. */
int runrec_file_sha256(const char *path, char hex[65]);

#endif
