/*
 * options.h - one table per program describes its settings: the name (an INI
 * key; the command-line flag is the same name with '-' for '_'), how the
 * value is parsed and checked, and where it is stored. The config file and
 * the flags go through the same table, so they cannot disagree.
 */
#ifndef MEDFED_OPTIONS_H
#define MEDFED_OPTIONS_H

#include <stddef.h>

typedef enum {
    CONF_STR,     /* copied, at most size - 1 characters */
    CONF_INT,     /* int in [lo, hi] */
    CONF_DOUBLE,  /* double in [lo, hi] */
    CONF_U64,     /* uint64_t in [lo, hi] */
    CONF_LEVEL,   /* log_level_t: error|warn|info|debug */
    CONF_ONOFF,   /* int: on|off|yes|no|true|false|1|0 */
    CONF_CUSTOM   /* parse() stores it */
} conf_kind_t;

typedef struct {
    const char *name;
    conf_kind_t kind;
    size_t off;       /* offset of the field in the settings struct */
    size_t size;      /* CONF_STR capacity */
    double lo, hi;    /* numeric bounds */
    /* CONF_CUSTOM: 0 if value is good; else -1 with a reason in err. */
    int (*parse)(const char *value, void *field, char *err, size_t errlen);
} conf_opt_t;

/* Row of name in the table (a '-' in name matches '_'), or -1. */
int conf_find(const conf_opt_t *t, size_t n, const char *name);

/* Parses value into base's field. On error -1, err = "'name' must be ...". */
int conf_set(const conf_opt_t *o, void *base, const char *value, char *err, size_t errlen);

/* Reads an INI file: section must be `section` (other sections go to
 * other(user, section, key, value, line, err) if given, else are errors).
 * Unknown keys, repeated keys and bad values are "file:line: reason". */
typedef int (*conf_other_fn)(void *user, const char *section, const char *key,
                             const char *value, int line, char *err, size_t errlen);
int conf_load_ini(const char *path, const char *section, const conf_opt_t *t, size_t n,
                  void *base, conf_other_fn other, void *user, char *err, size_t errlen);

/* Every setting of the table with its value in base, as a JSON object (common/json.h:
 * a json_t *), in table order: strings, numbers, on/off as true/false, the log
 * level by name. A field under two names (an alias) appears once, under the
 * first. custom(row, field) gives a CONF_CUSTOM value (NULL: null). */
struct json_t;
struct json_t *conf_to_json(const conf_opt_t *t, size_t n, const void *base,
                            struct json_t *(*custom)(const conf_opt_t *o, const void *field));

#endif
