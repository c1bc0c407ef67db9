/*
 * dicom.h - decoding one DICOM image into a model input, in a worker process.
 *
 * GDCM aborts on some malformed files, so decoding never runs inside the
 * daemon: dicom_worker_start() starts bin/medfed-dicom-worker (found next to
 * the running executable, else in ../lib/medfed/ from a .../bin/ executable,
 * as the Debian package installs it, or $MEDFED_DICOM_WORKER) and talks to it
 * over a socketpair (imaging/dicom_proto.h). A worker that dies is
 * restarted and the image is skipped with reason "worker crashed"; the daemon
 * goes on.
 *
 * What comes back is pixels, already preprocessed (rescale slope/intercept,
 * MONOCHROME1 inverted, windowed, resized, normalised like the IDX source), and
 * the two keys a labels list may use. The keys stay in memory to find a label:
 * they are never logged and never leave the site. Logs name an image by
 * dicom_image_ref(), a salted hash.
 */
#ifndef MEDFED_DICOM_H
#define MEDFED_DICOM_H

#include <stddef.h>
#include <stdint.h>

#define DICOM_KEY_MAX 65   /* AccessionNumber (16) and UIDs (64) fit */

/* Why an image was not used. Names (dicom_status_name) are the JSON keys of
 * `medfed-client --check`'s "skipped" object. */
typedef enum {
    DICOM_OK = 0,
    DICOM_SKIP_BURNED_IN,   /* "burned_in_annotation" */
    DICOM_SKIP_MALFORMED,   /* "malformed": not DICOM, truncated, bad tags */
    DICOM_SKIP_UNSUPPORTED, /* "unsupported": colour, multi-frame, odd bit depth, codec */
    DICOM_SKIP_CRASH,       /* "worker_crashed": the decoder died on it */
    DICOM_SKIP_UNLABELLED,  /* "unlabelled": no row in the labels list */
    DICOM_SKIP_FETCH,       /* "fetch_failed": the PACS did not deliver it */
    DICOM_STATUS_COUNT
} dicom_status_t;

const char *dicom_status_name(dicom_status_t s);

typedef enum { DICOM_WINDOW_AUTO = 0, DICOM_WINDOW_MINMAX, DICOM_WINDOW_FIXED } dicom_window_t;

/* Preprocessing, from the [data] section. */
typedef struct {
    int height, width;      /* model input; default 28 x 28 */
    dicom_window_t window;  /* AUTO: the file's window if it has one, else min-max */
    double center, width_w; /* for DICOM_WINDOW_FIXED */
} dicom_prep_t;

typedef struct {
    char accession[DICOM_KEY_MAX]; /* AccessionNumber, "" if absent */
    char sop_uid[DICOM_KEY_MAX];   /* SOPInstanceUID, "" if absent */
    float *pixels;                 /* height * width values in [-1, 1]; caller frees */
} dicom_image_t;

typedef struct dicom_worker dicom_worker_t;

dicom_worker_t *dicom_worker_start(char *err, size_t errlen);
void dicom_worker_stop(dicom_worker_t **w);

/* Per-image timeout (default DICOM_WORKER_TIMEOUT_MS): past it the worker is
 * killed and restarted. The pid and the restart count are for tests and logs. */
#define DICOM_WORKER_TIMEOUT_MS 30000
void dicom_worker_set_timeout(dicom_worker_t *w, int ms);
int dicom_worker_pid(const dicom_worker_t *w);
unsigned dicom_worker_restarts(const dicom_worker_t *w);

/* Decodes a file, or bytes fetched from a PACS. On DICOM_OK, out->pixels is
 * set; otherwise reason says why in words that contain no tag value. The keys
 * are filled whenever the worker could read the header, also for a skipped
 * image (e.g. burned-in annotation). An image the worker dies on, or takes
 * longer than the timeout for, is DICOM_SKIP_CRASH; the next call starts a
 * fresh worker. */
dicom_status_t dicom_worker_decode_file(dicom_worker_t *w, const char *path,
                                        const dicom_prep_t *prep, dicom_image_t *out,
                                        char *reason, size_t reasonlen);
dicom_status_t dicom_worker_decode_mem(dicom_worker_t *w, const uint8_t *buf, size_t len,
                                       const dicom_prep_t *prep, dicom_image_t *out,
                                       char *reason, size_t reasonlen);

/* A short salted hash of key (16 hex characters) for log lines: the same image
 * gives the same reference at one site, and the reference reveals nothing. */
void dicom_image_ref(const uint8_t salt[16], const char *key, char out[17]);

#endif
