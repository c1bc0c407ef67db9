/*
 * data_dicomweb.h - the `dicomweb` data source: a row in imaging/data.c's
 * sources[]; the keys and what a load does are in data_dicomweb.c.
 */
#ifndef MEDFED_DATA_DICOMWEB_H
#define MEDFED_DATA_DICOMWEB_H

#include "imaging/imaging.h"

typedef struct dw_source dw_source_t;

extern const char *const dicomweb_keys[];
void *dicomweb_open(const data_conf_t *c, char *err, size_t errlen);
int dicomweb_load(void *state, data_split_t split, dataset_t *out, char *err, size_t errlen);
void dicomweb_close(void *state);
void dicomweb_stats(const void *state, data_stats_t *out);

#endif
