/*
 * json.h - the few things every JSON file medfed reads or writes needs, over
 * jansson (Debian's libjansson): reals printed as the old writers printed
 * them, one compact line per row, whole files written atomically, typed
 * getters that say "absent" for a missing, null or mistyped field.
 */
#ifndef MEDFED_JSON_H
#define MEDFED_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Compact ("a":1,"b":2), reals with 12 significant digits: with jx_real's
 * rounding, 0.954198 stays 0.954198, not 0.95419799999999999. */
#define JX_COMPACT (JSON_COMPACT | JSON_REAL_PRECISION(12))
/* Indented, for files people read (run.json). */
#define JX_PRETTY (JSON_INDENT(2) | JSON_REAL_PRECISION(12))

/* v rounded to `decimals` places (a metrics row's "%.6f"); null if v is not finite. */
json_t *jx_real(double v, int decimals);
/* A string; null for NULL. */
json_t *jx_str(const char *s);

/* Sets key to value in obj, taking the reference (a NULL value is not set). */
void jx_set(json_t *obj, const char *key, json_t *value);

/* One compact line, '\n' included, to f (one fputs: a buffered FILE writes it
 * whole). 0 or -1. */
int jx_write_line(FILE *f, const json_t *v);
/* v to path atomically (util_write_file_atomic), '\n' at the end. */
int jx_write_atomic(const char *path, const json_t *v, size_t flags, char *err, size_t errlen);

/* A JSON object from text (NULL unless it parses whole as an object). */
json_t *jx_loads_object(const char *text, size_t len);
/* The JSON object in path, at most max bytes. NULL and err "PATH: reason". */
json_t *jx_load_file(const char *path, size_t max, char *err, size_t errlen);

/* obj[key] as a finite number (integer or real). -1 if absent, null or not one. */
int jx_number(const json_t *obj, const char *key, double *out);
/* obj[key] as an unsigned 32-bit integer. -1 if absent or not such a number. */
int jx_u32(const json_t *obj, const char *key, uint32_t *out);
/* obj[key] as a string, or NULL. */
const char *jx_string(const json_t *obj, const char *key);
/* 1 if obj[key] is true, 0 otherwise. */
int jx_true(const json_t *obj, const char *key);

/* "2026-12-04T20:43:04Z": the wall-clock time now, UTC. */
void jx_now_iso(char *out, size_t len);

#endif
