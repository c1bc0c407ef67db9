/*
 * record.h - the coordinator's part of the experiment record, run.json in the
 * state directory (common/runrec.h says what it holds). Two calls from the
 * round engine; a record that cannot be written is logged, never fatal.
 */
#ifndef MEDFED_COORD_RECORD_H
#define MEDFED_COORD_RECORD_H

#include "coordinator/internal.h"

/* The run starts (resumed: this process goes on with a run of the state
 * directory): settings, software, model, roster, secure aggregation. A record
 * medfed-sim wrote just before keeps its "simulation" and start time. */
void record_start(const coord_t *c, int resumed);
/* `medfed start --set` changed settings (coord_set): "overrides" gains
 * {"at", "before_round", "set": ["KEY=VALUE", ...]} and "config" becomes the
 * settings from then on. Nothing before record_start. */
void record_settings(const coord_t *c, const char (*sets)[COORD_SET_MAX], int n);
/* The run reached its target, or the process ends: end time, status
 * (complete, stopped, failed), the final figures and the sites seen. Nothing
 * before record_start. */
void record_end(const coord_t *c);

#endif
