/*
 * dicom_source.h - what the DICOM data sources (folder, dicomweb) share: the
 * [data] keys for preprocessing, the labels CSV, the site's salt and the
 * train/validation split.
 *
 *   labels = /srv/labels.csv         header line naming a key column
 *                                    (AccessionNumber, SOPInstanceUID or file) and a
 *                                    `label` column (integer); optional `split`
 *                                    column (train | val | empty); separated by ','
 *                                    or, when the header has no comma, by ';' (a
 *                                    spreadsheet's export); a UTF-8 byte order mark
 *                                    and CRLF line ends are fine
 *   label_key = accession            accession | sop_uid | file (default: the first of
 *                                    those columns the header has)
 *   val_fraction = 0.1               rows without a split: val when the salted hash
 *                                    of the key falls below it; in [0, 1)
 *   height = 28, width = 28          model input
 *   window = auto                    auto | minmax | CENTER,WIDTH (see dicom_prep.h)
 *   salt_file = <labels dir>/.medfed-salt   16 random bytes, created 0600 on first
 *                                    use; refused when group or others may read it
 *
 * The keys of the labels list stay in memory: messages give line numbers,
 * never a key.
 */
#ifndef MEDFED_DICOM_SOURCE_H
#define MEDFED_DICOM_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "imaging/imaging.h"
#include "imaging/dicom.h"

#define DICOM_SALTBYTES 16
#define DICOM_LABELS_MAX_BYTES (256u << 20) /* of the labels CSV */
#define DICOM_LABEL_MAX 1000000

/* The shared keys, as a settings table (common/options.h): a DICOM source's
 * row in data.c's sources[] names it beside its own. */
extern const conf_opt_t dicom_common_opts[];
#define DICOM_COMMON_NOPTS 7

typedef enum { DICOM_LABEL_ACCESSION = 0, DICOM_LABEL_SOP_UID, DICOM_LABEL_FILE } dicom_label_key_t;

typedef struct {
    char *key;
    int32_t label;
    int split; /* -1: by hash, DATA_TRAIN, DATA_VAL */
    int line;
} dicom_label_row_t;

typedef struct {
    dicom_prep_t prep;
    double val_fraction;
    uint8_t salt[DICOM_SALTBYTES];
    dicom_label_key_t key;
    dicom_label_row_t *rows; /* sorted by key */
    size_t nrows;
} dicom_common_t;

/* Reads the shared keys of c, the labels CSV (required) and the salt (created
 * if missing). Errors are "file:line: reason". dicom_common_free on both paths. */
int dicom_common_parse(const data_conf_t *c, dicom_common_t *d, char *err, size_t errlen);
void dicom_common_free(dicom_common_t *d);

/* The labels row of an image's key, or NULL (also for ""). */
const dicom_label_row_t *dicom_common_find(const dicom_common_t *d, const char *key);

/* DATA_TRAIN or DATA_VAL: the row's split column, else the salted hash of its key. */
int dicom_common_split(const dicom_common_t *d, const dicom_label_row_t *r);

/* A DICOM source's counts: what data_stats_t reports, with the skipped ones
 * by dicom_status_t ([DICOM_OK] stays 0). */
typedef struct {
    int64_t found, labelled, decoded;
    int64_t skipped[DICOM_STATUS_COUNT];
} dicom_counts_t;

/* c as data_stats_t: every reason of dicom_status_name, in that order, each
 * with its count (0 included). */
void dicom_counts_stats(const dicom_counts_t *c, data_stats_t *out);

/* Progress of a long load (a first PACS pull of 20,000 images takes over an
 * hour): one log line every `every` seconds (DICOM_PROGRESS_SECONDS in the
 * sources): "WHAT: N of TOTAL images (P%), R images/s, about M min left". */
#define DICOM_PROGRESS_SECONDS 5.0
typedef struct {
    const char *what;
    size_t total;
    double every, t0, last;
    int lines;               /* lines logged so far */
} dicom_progress_t;
void dicom_progress_start(dicom_progress_t *p, const char *what, size_t total, double every);
/* done images of total are through (decoded, cached or skipped). Formats the
 * line into line (when not NULL) and logs it when `every` has passed since
 * the last one; returns 1 when it logged. */
int dicom_progress_update(dicom_progress_t *p, size_t done, double now, char *line,
                          size_t linelen);

#endif
