/*
 * dicom_decode.h - the decoders inside bin/medfed-dicom-worker: GDCM for DICOM
 * (imaging/dicom_gdcm.cpp, the only file that includes GDCM), libpng for PNG
 * (imaging/dicom_png.c). Never linked into the daemon.
 *
 * Each takes a whole file in memory and fills out: the keys whenever the
 * header could be read (also for a skipped image), and on DICOM_OK
 * prep->height * prep->width pixels into out->pixels, which the caller has
 * allocated. reason is a fixed phrase, never a tag value.
 */
#ifndef MEDFED_DICOM_DECODE_H
#define MEDFED_DICOM_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "imaging/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Silences GDCM's warnings and debug output (they may quote tag values). */
void dicom_gdcm_init(void);
dicom_status_t dicom_gdcm_decode(const uint8_t *buf, size_t len, const dicom_prep_t *prep,
                                 dicom_image_t *out, char *reason, size_t reasonlen);

#define DICOM_PNG_SIGBYTES 8
int dicom_png_is_png(const uint8_t *buf, size_t len);
/* 8- or 16-bit grayscale (with or without alpha, which is dropped); no keys. */
dicom_status_t dicom_png_decode(const uint8_t *buf, size_t len, const dicom_prep_t *prep,
                                dicom_image_t *out, char *reason, size_t reasonlen);

#ifdef __cplusplus
}
#endif

#endif
