/*
 * data_folder.h - the `folder` data source: a directory tree of DICOM (and
 * grayscale PNG) files plus a labels CSV, decoded by the DICOM worker. A row
 * in imaging/data.c's sources[]; see data_folder.c for the keys.
 */
#ifndef MEDFED_DATA_FOLDER_H
#define MEDFED_DATA_FOLDER_H

#include "imaging/imaging.h"

/* Its own keys (path); dicom_common_opts holds the shared ones. */
extern const conf_opt_t data_folder_opts[];
#define DATA_FOLDER_NOPTS 1
void *data_folder_open(const data_conf_t *c, char *err, size_t errlen);
int data_folder_load(void *state, data_split_t split, dataset_t *out, char *err, size_t errlen);
void data_folder_close(void *state);
void data_folder_stats(const void *state, data_stats_t *out);

#endif
