/*
 * dicomweb.h - the parts of DICOMweb the client speaks, without the network:
 * the QIDO-RS JSON subset, the multipart/related body of a WADO-RS response,
 * and the request pacing that keeps a clinical PACS responsive.
 *
 * Everything here is input from a server: every length is checked, a bad
 * answer is an error code with a message that never quotes the input (it may
 * carry identifiers), nothing aborts. imaging/data_dicomweb.c adds libcurl.
 */
#ifndef MEDFED_DICOMWEB_H
#define MEDFED_DICOMWEB_H

#include <stddef.h>
#include <stdint.h>

#include "imaging/dicom.h"

/* ---- QIDO-RS: the DICOM JSON subset we read ----------------------------------- */

#define DICOMWEB_JSON_MAX_DEPTH 16

/* One instance from a search. UIDs are checked to be UIDs (digits and dots);
 * accession is printable ASCII or "" when the server did not return it. */
typedef struct {
    char study_uid[DICOM_KEY_MAX];  /* 0020000D */
    char series_uid[DICOM_KEY_MAX]; /* 0020000E */
    char sop_uid[DICOM_KEY_MAX];    /* 00080018 */
    char accession[DICOM_KEY_MAX];  /* 00080050 */
} dicomweb_instance_t;

/* A growable list of instances. */
typedef struct {
    dicomweb_instance_t *v;
    size_t n, cap;
} dicomweb_list_t;

void dicomweb_list_free(dicomweb_list_t *l);

/* Parses one QIDO-RS response (a JSON array of objects; an empty body is an
 * empty array) and appends its usable entries to l. *entries gets the number
 * of objects on the page (for paging), *unusable the objects without the
 * three UIDs or with malformed ones (they are counted, not appended). Returns
 * 0, or -1 with err set when the text is not JSON of that shape. */
int dicomweb_qido_parse(const char *json, size_t len, dicomweb_list_t *l, size_t *entries,
                        size_t *unusable, char *err, size_t errlen);

/* ---- WADO-RS: multipart/related ------------------------------------------------- */

#define DICOMWEB_BOUNDARY_MAX 70     /* RFC 2046 */
#define DICOMWEB_PART_HEADERS_MAX 8192
#define DICOMWEB_CTYPE_MAX 128

typedef struct {
    const uint8_t *data; /* points into the body */
    size_t len;
    char content_type[DICOMWEB_CTYPE_MAX]; /* the part's Content-Type, lower case, "" if none */
} dicomweb_part_t;

/* Reads the boundary parameter of a Content-Type header value such as
 * 'multipart/related; type="application/dicom"; boundary=abc'. 0 or -1. */
int dicomweb_boundary(const char *content_type, char out[DICOMWEB_BOUNDARY_MAX + 1], char *err,
                      size_t errlen);

/* Splits a multipart body into at most max_parts parts, each at most
 * max_part_bytes long. Checks the opening delimiter, every part's header
 * block, a Content-Length header against the part's real length, and the
 * closing delimiter. 0 with *nparts set, or -1 with err set. */
int dicomweb_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                             size_t max_part_bytes, dicomweb_part_t *parts, size_t max_parts,
                             size_t *nparts, char *err, size_t errlen);

/* WADO-RS retrieval's Accept header: the instance as the PACS stores it
 * (transfer-syntax=*), compressed or not; the worker (GDCM) decodes the
 * uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000 and RLE syntaxes. Without
 * it a PACS transcodes every compressed image to Explicit VR Little Endian. */
#define DICOMWEB_ACCEPT_INSTANCE \
    "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*"

/* The Transfer Syntax UID (0002,0010) of a DICOM Part 10 file's meta header
 * into uid (NUL-terminated, trailing padding removed). 0, or -1 when data is
 * no Part 10 file or has no such element in its meta group. Reads only
 * within data[0..len). */
#define DICOMWEB_UID_MAX 65
int dicomweb_transfer_syntax(const uint8_t *data, size_t len, char uid[DICOMWEB_UID_MAX]);
/* A short name for a transfer syntax UID ("JPEG 2000 lossless", ...), or "other". */
const char *dicomweb_transfer_syntax_name(const char *uid);

/* ---- pacing ----------------------------------------------------------------------- */

/* Requests are spaced at least 1/per_second apart (no bursts). */
typedef struct {
    double interval;
    double next; /* earliest time of the next request; 0 = none made yet */
} ratelimit_t;

void ratelimit_init(ratelimit_t *r, double per_second);
/* Books the next request at time now: returns how long to wait first (>= 0). */
double ratelimit_reserve(ratelimit_t *r, double now);

/* Seconds to wait before retry number attempt (1, 2, ...) after a 429/503:
 * the server's Retry-After (seconds, -1 if absent) capped at max_wait, else
 * 0.5 s doubled each attempt, capped at max_wait. */
double dicomweb_backoff(int attempt, double retry_after, double max_wait);

#endif
