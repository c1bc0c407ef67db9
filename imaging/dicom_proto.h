/*
 * dicom_proto.h - the pipe between the daemon (imaging/dicom.c) and
 * bin/medfed-dicom-worker (imaging/dicom_worker_main.c). Both ends are the same
 * build on the same host; integer fields are little-endian all the same, the
 * pixels are the host's f32, and every length is checked against the limits
 * below before anything is allocated.
 *
 * One request, one reply, in order:
 *
 *   request  u32 magic DICOM_PROTO_REQ, u32 kind (DICOM_PROTO_PATH | DICOM_PROTO_BYTES),
 *            u32 height, u32 width, u32 window (dicom_window_t), u32 0,
 *            f64 center, f64 width_w, u32 payload length, payload
 *            (a file path without NUL, or the bytes of a file)
 *   reply    u32 magic DICOM_PROTO_REP, u32 status (dicom_status_t), u32 reason length,
 *            u32 accession length, u32 sop uid length, u32 pixel count,
 *            reason, accession, sop uid, pixel count f32
 *            (pixel count is height * width when status is DICOM_OK, else 0)
 *
 * The worker exits on EOF or on a malformed request; the daemon treats a
 * malformed reply as a crash.
 */
#ifndef MEDFED_DICOM_PROTO_H
#define MEDFED_DICOM_PROTO_H

#include <stdint.h>
#include <string.h>

#define DICOM_PROTO_REQ 0x3151444du /* "MDQ1" */
#define DICOM_PROTO_REP 0x3152444du /* "MDR1" */
#define DICOM_PROTO_PATH 1u
#define DICOM_PROTO_BYTES 2u
#define DICOM_PROTO_REQ_HEADER 44
#define DICOM_PROTO_REP_HEADER 24
#define DICOM_PROTO_PATH_MAX 4096
#define DICOM_PROTO_BYTES_MAX (512u << 20) /* largest file or PACS object decoded */
#define DICOM_PROTO_REASON_MAX 200

static inline void dicom_proto_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t dicom_proto_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void dicom_proto_putf64(uint8_t *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    dicom_proto_put32(p, (uint32_t)v);
    dicom_proto_put32(p + 4, (uint32_t)(v >> 32));
}

static inline double dicom_proto_getf64(const uint8_t *p)
{
    uint64_t v = (uint64_t)dicom_proto_get32(p) | (uint64_t)dicom_proto_get32(p + 4) << 32;
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

#endif
