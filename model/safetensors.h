/*
 * safetensors.h - model schemas and the safetensors file format (F32 only).
 *
 * Plain C, no LibTorch: the coordinator, the evaluation tool and the client all
 * use it. A schema is the ordered list of (name, shape) that gives meaning to a
 * flat float32 parameter vector; tensor i occupies the floats
 * [schema_offset(i), schema_offset(i) + numel(i)) of that vector.
 *
 * Files are written atomically: temp file in the same directory, fsync, rename,
 * fsync of the directory. A reader never sees a truncated file under the final
 * name. Reading checks every length against the file size before using it.
 */
#ifndef MEDFED_SAFETENSORS_H
#define MEDFED_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SCHEMA_NAME_MAX 128        /* longest tensor name, with NUL */
#define SCHEMA_MAX_DIMS 8
#define SCHEMA_MAX_TENSORS 4096
#define ST_META_KEY_MAX 64
#define ST_META_VALUE_MAX 256
#define ST_META_MAX 32
#define ST_HEADER_MAX (16u << 20)  /* refuse JSON headers above 16 MiB */

typedef struct schema schema_t;

schema_t *schema_new(void);
void schema_destroy(schema_t **s);
/* Appends a tensor. -1 if the name is empty/too long/duplicate, ndims out of
 * [0, SCHEMA_MAX_DIMS], a dimension < 0, or the table is full. */
int schema_add(schema_t *s, const char *name, int ndims, const int64_t *shape);
size_t schema_count(const schema_t *s);
size_t schema_numel(const schema_t *s);          /* total floats */
const char *schema_name(const schema_t *s, size_t i);
int schema_ndims(const schema_t *s, size_t i);
const int64_t *schema_shape(const schema_t *s, size_t i);
size_t schema_offset(const schema_t *s, size_t i); /* in floats */
/* 1 if same names, shapes and order. */
int schema_equal(const schema_t *a, const schema_t *b);

/* String metadata stored in the file's "__metadata__" object. */
typedef struct {
    char key[ST_META_KEY_MAX];
    char value[ST_META_VALUE_MAX];
} st_meta_t;

/* Writes data (schema_numel(s) floats, little-endian F32) to path atomically.
 * Tensors are stored in schema order. */
int safetensors_write(const char *path, const schema_t *s, const float *data,
                      const st_meta_t *meta, size_t n_meta, char *err, size_t errlen);

/* Reads a file written by safetensors_write or by any other F32-only
 * safetensors writer. On success *s and *data are new (caller frees with
 * schema_destroy and free); tensors are returned in the order of their data
 * offsets; up to ST_META_MAX metadata entries go into meta (may be NULL) and
 * their count into *n_meta. Any other dtype, overlapping/out-of-range offsets,
 * malformed JSON, or a size mismatch is an error naming the problem. */
int safetensors_read(const char *path, schema_t **s, float **data,
                     st_meta_t *meta, size_t *n_meta, char *err, size_t errlen);

/* Value of key in meta, or NULL. */
const char *st_meta_get(const st_meta_t *meta, size_t n_meta, const char *key);

#endif
