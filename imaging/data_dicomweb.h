/*
 * data_dicomweb.h - the `dicomweb` data source: a row in imaging/data.c's
 * sources[]; the keys and what a load does are in data_dicomweb.c.
 */
#ifndef MEDFED_DATA_DICOMWEB_H
#define MEDFED_DATA_DICOMWEB_H

#include "imaging/imaging.h"

typedef struct dw_source dw_source_t;

/* Its own keys (url, filters, auth, pacing, cache); dicom_common_opts holds the shared ones. */
extern const conf_opt_t dicomweb_opts[];
#define DICOMWEB_NOPTS 16
void *dicomweb_open(const data_conf_t *c, char *err, size_t errlen);
int dicomweb_load(void *state, data_split_t split, dataset_t *out, char *err, size_t errlen);
void dicomweb_close(void *state);
void dicomweb_stats(const void *state, data_stats_t *out);

#endif
