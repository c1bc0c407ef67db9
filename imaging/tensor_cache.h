/*
 * tensor_cache.h - preprocessed images on local disk, so that a daemon
 * restart does not fetch them from the PACS again.
 *
 * An entry is one image's float32 pixels (after windowing and resizing),
 * named by a salted hash of its SOPInstanceUID and the preprocessing
 * parameters: the name reveals nothing without the site's salt, and changing
 * the image size or window gives new entries. Files hold no identifier.
 *
 *   directory  created 0700 (an existing one readable by others is refused)
 *   entry      0600, written atomically (temp, fsync, rename), with a header
 *              (magic, version, size, CRC-32): a damaged entry reads as a
 *              miss, is deleted, and the caller fetches the image again
 *   size cap   after a put, the least recently used entries (by mtime; a hit
 *              refreshes it) are deleted until the total is under the cap
 */
#ifndef MEDFED_TENSOR_CACHE_H
#define MEDFED_TENSOR_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "imaging/dicom.h"

#define TENSOR_CACHE_SALTBYTES 16
#define TENSOR_CACHE_KEYHEX 64 /* hex characters of an entry name */

typedef struct tensor_cache tensor_cache_t;

/* Opens (creating) dir with a size cap in bytes (0 = no cap). NULL + err. */
tensor_cache_t *tensor_cache_open(const char *dir, uint64_t max_bytes,
                                  const uint8_t salt[TENSOR_CACHE_SALTBYTES], char *err,
                                  size_t errlen);
void tensor_cache_close(tensor_cache_t **c);

/* The entry name for an image: hex of SHA-256(salt, uid, prep). */
void tensor_cache_key(const tensor_cache_t *c, const char *uid, const dicom_prep_t *prep,
                      char out[TENSOR_CACHE_KEYHEX + 1]);

/* Reads an entry of prep->height * prep->width floats into pixels.
 * 1 = hit, 0 = miss (absent, or damaged: then deleted). */
int tensor_cache_get(tensor_cache_t *c, const char *uid, const dicom_prep_t *prep, float *pixels);
/* The same by entry name (as tensor_cache_key gives it). */
int tensor_cache_get_named(tensor_cache_t *c, const char *name, const dicom_prep_t *prep,
                           float *pixels);

/* Stores an entry, then evicts down to the cap. 0 or -1 + err (the caller
 * goes on without caching). */
int tensor_cache_put(tensor_cache_t *c, const char *uid, const dicom_prep_t *prep,
                     const float *pixels, char *err, size_t errlen);

/* Totals, for logs and tests. */
typedef struct {
    uint64_t bytes, entries;
    uint64_t hits, misses, corrupt, evicted;
} tensor_cache_stats_t;
void tensor_cache_stats(const tensor_cache_t *c, tensor_cache_stats_t *out);

#endif
