/*
 * imaging.h - the imaging data path's one interface: where a hospital's images
 * come from (the data sources) and the IDX files of the simulations.
 *
 * A data source is opened from the [data] section of the client config
 * (key/value pairs) and loads each split into memory as normalised float32
 * tensors. Sources are one table in data.c: adding DICOM folders or DICOMweb
 * means adding a row and a file, nothing else changes. Each source declares
 * its keys as settings tables (common/options.h), which datasource_open
 * checks the section against. A source never logs image content or
 * identifiers: only counts and file names it was given.
 */
#ifndef MEDFED_IMAGING_H
#define MEDFED_IMAGING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/options.h"

#define DATA_KEY_MAX 64
#define DATA_VALUE_MAX 1024
#define DATA_MAX_OPTS 32

typedef enum { DATA_TRAIN = 0, DATA_VAL = 1 } data_split_t;

/* One split in memory: x holds n * channels * height * width floats. */
typedef struct {
    float *x;
    int32_t *y;
    int64_t n;
    int channels, height, width;
} dataset_t;

/* The [data] section as given, with line numbers for error messages. */
typedef struct {
    char key[DATA_KEY_MAX];
    char value[DATA_VALUE_MAX];
    int line;
} data_opt_t;

typedef struct {
    char file[512];        /* config file, for messages */
    data_opt_t opt[DATA_MAX_OPTS];
    size_t n;
} data_conf_t;

/* Adds key=value (a repeated key or a full table is an error). */
int data_conf_set(data_conf_t *c, const char *key, const char *value, int line, char *err,
                  size_t errlen);
const char *data_conf_get(const data_conf_t *c, const char *key);
/* The line of key in the config file, 0 when not given. */
int data_conf_line(const data_conf_t *c, const char *key);

/* A data source declares its keys as a settings table (common/options.h):
 * sets each key of c that table t names into base; the others are left to
 * other tables. A bad value is "file:line: 'key' must be ...". */
int data_conf_apply(const data_conf_t *c, const conf_opt_t *t, size_t n, void *base, char *err,
                    size_t errlen);

typedef struct datasource datasource_t;

/* Opens the source named by "source" (default "idx"), checking its keys:
 * an unknown key is an error "file:line: unknown key 'x' for data source idx". */
datasource_t *datasource_open(const data_conf_t *conf, char *err, size_t errlen);
void datasource_destroy(datasource_t **ds);
const char *datasource_kind(const datasource_t *ds);

/* Loads one split. A source without a validation split returns n = 0 for
 * DATA_VAL. Caller frees with dataset_free. */
int datasource_load(datasource_t *ds, data_split_t split, dataset_t *out, char *err,
                    size_t errlen);
void dataset_free(dataset_t *d);

/* What the loads so far found and kept. found = decoded + the sum of skipped;
 * labelled counts images whose key has a label (decoded or not). Sources
 * without their own counts (idx) report found = labelled = decoded = images
 * loaded and no reasons. The reasons an image was skipped are the source's
 * own (the DICOM sources list every reason they know, counted or not): a
 * name and a count each, in the source's order. */
#define DATA_SKIP_REASONS_MAX 16
typedef struct {
    const char *reason; /* static string */
    int64_t n;
} data_skip_t;

typedef struct {
    int64_t found, labelled, decoded;
    data_skip_t skipped[DATA_SKIP_REASONS_MAX];
    size_t nskipped;
} data_stats_t;

void datasource_stats(const datasource_t *ds, data_stats_t *out);
/* The count under reason (0 when the source has no such reason); NULL: all skipped. */
int64_t data_stats_skipped(const data_stats_t *s, const char *reason);
/* Writes "found":N,"labelled":N,"decoded":N,"skipped":{"<reason>":N,...}
 * (every reason of the source, no braces around the whole) to f. */
void data_stats_json(const data_stats_t *s, FILE *f);

/* Converts uint8 pixels to the model's input scale: (p / 255 - 0.5) / 0.5. */
void dataset_normalise_u8(const uint8_t *pixels, size_t count, float *out);

/* ---- IDX files ------------------------------------------------------------------------
 * The IDX file format (MNIST layout), gzip-compressed or raw (data_idx.c).
 *
 * images: big-endian magic 0x00000803, count, rows, cols, then count*rows*cols
 * uint8; labels: magic 0x00000801, count, then count uint8. Every header field
 * is checked against caps and against the bytes actually present.
 */
#define IDX_MAX_COUNT 10000000     /* refuse files claiming more images */
#define IDX_MAX_SIDE 4096

typedef struct {
    uint8_t *pixels;   /* n * rows * cols */
    uint8_t *labels;   /* n */
    int64_t n;
    int rows, cols;
} idx_set_t;

/* Loads both files; counts must agree. On error out is left zeroed. */
int idx_load(const char *images_path, const char *labels_path, idx_set_t *out,
             char *err, size_t errlen);
/* Writes the images/labels selected by subset (indices into set; all of set if
 * subset is NULL) as gzip IDX files, each atomically (temp + rename). */
int idx_write(const char *images_path, const char *labels_path, const idx_set_t *set,
              const int64_t *subset, int64_t nsubset, char *err, size_t errlen);
void idx_free(idx_set_t *set);


#endif
