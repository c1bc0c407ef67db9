/*
 * data_idx.h - the IDX file format (MNIST layout), gzip-compressed or raw.
 *
 * images: big-endian magic 0x00000803, count, rows, cols, then count*rows*cols
 * uint8; labels: magic 0x00000801, count, then count uint8. Every header field
 * is checked against caps and against the bytes actually present.
 */
#ifndef MEDFED_DATA_IDX_H
#define MEDFED_DATA_IDX_H

#include <stddef.h>
#include <stdint.h>

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
