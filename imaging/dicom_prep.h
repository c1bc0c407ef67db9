/*
 * dicom_prep.h - stored pixel values to a model input: plain arithmetic, no
 * I/O, no DICOM library. The worker (imaging/dicom_worker_main.c) fills a
 * dicom_raw_t from GDCM or libpng and calls dicom_prep_run(); unit tests call
 * it directly.
 *
 * The pipeline, in the order of the DICOM display pipeline:
 *   1. stored value: masked to BitsStored, sign-extended when signed;
 *   2. modality LUT: x = slope * stored + intercept;
 *   3. VOI window to v in [0, 1] (the DICOM linear function, PS3.3 C.11.2.1.2):
 *      lo = c - 0.5 - (w - 1) / 2, hi = c - 0.5 + (w - 1) / 2,
 *      v = (x - lo) / (hi - lo) clipped; MONOCHROME1 gives v = (hi - x) / (hi - lo)
 *      so that high values are bright as in MONOCHROME2;
 *      AUTO: the file's first window if it has a valid one, else the image's
 *      min..max (a PNG's AUTO window is its type's full range, 0..255 or 0..65535);
 *   4. resize to height x width, each axis on its own: area averaging when
 *      shrinking, bilinear (pixel centres, edges clamped) when enlarging, a copy
 *      when the size is the same;
 *   5. normalise like the IDX source: out = (v - 0.5f) / 0.5f in float.
 * With a window mapping 0..255 onto 0..1 (c = 128, w = 256) and no resize, an
 * 8-bit image gives bit for bit the floats of dataset_normalise_u8().
 */
#ifndef MEDFED_DICOM_PREP_H
#define MEDFED_DICOM_PREP_H

#include <stddef.h>
#include <stdint.h>

#include "imaging/dicom.h"

#define DICOM_PREP_MAX_SIDE 1024           /* model input height / width */
#define DICOM_PREP_MAX_PIXELS (1u << 26)   /* rows * cols of a decoded image */

typedef struct {
    int rows, cols;
    int bits_allocated;   /* 8 or 16 */
    int bits_stored;      /* 1..bits_allocated */
    int is_signed;        /* PixelRepresentation 1 */
    int monochrome1;      /* MONOCHROME1: low values are bright */
    double slope, intercept;
    int has_window;       /* the file's first WindowCenter / WindowWidth */
    double center, width;
    const void *data;     /* rows * cols * bits_allocated / 8 bytes, little-endian */
    size_t len;
} dicom_raw_t;

/* Checks the size and depth fields of raw (0, or -1 with a reason). */
int dicom_prep_check(const dicom_raw_t *raw, char *reason, size_t reasonlen);

/* Runs the pipeline into out (prep->height * prep->width floats). Returns 0, or
 * -1 with a reason (a bad raw or prep, out of memory). */
int dicom_prep_run(const dicom_raw_t *raw, const dicom_prep_t *prep, float *out, char *reason,
                   size_t reasonlen);

/* The model-input size is sane: 1..DICOM_PREP_MAX_SIDE each, FIXED width >= 1. */
int dicom_prep_valid(const dicom_prep_t *prep);

#endif
