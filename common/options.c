#include "common/options.h"

#include <ini.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/util.h"

static int name_eq(const char *key, const char *name)
{
    for (; *key && *name; key++, name++)
        if (*key != *name && !(*key == '_' && *name == '-')) return 0;
    return *key == *name;
}

int conf_find(const conf_opt_t *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (name_eq(t[i].name, name)) return (int)i;
    return -1;
}

static int parse_onoff(const char *v, int *out)
{
    static const char *const on[] = {"on", "yes", "true", "1"}, *const off[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, on[i]) == 0) return *out = 1, 0;
        if (strcmp(v, off[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

int conf_set(const conf_opt_t *o, void *base, const char *value, char *err, size_t errlen)
{
    char *field = (char *)base + o->off;
    long long iv;
    double dv;
    switch (o->kind) {
    case CONF_STR:
        if (util_strlcpy(field, value, o->size) < 0) {
            util_seterr(err, errlen, "'%s' is longer than %zu characters", o->name, o->size - 1);
            return -1;
        }
        return 0;
    case CONF_INT:
        if (util_parse_int(value, (long long)o->lo, (long long)o->hi, &iv) < 0) {
            util_seterr(err, errlen, "'%s' must be an integer in [%.15g, %.15g], got '%s'",
                        o->name, o->lo, o->hi, value);
            return -1;
        }
        *(int *)field = (int)iv;
        return 0;
    case CONF_DOUBLE:
        if (util_parse_double(value, o->lo, o->hi, &dv) < 0) {
            util_seterr(err, errlen, "'%s' must be a number in [%.15g, %.15g], got '%s'",
                        o->name, o->lo, o->hi, value);
            return -1;
        }
        *(double *)field = dv;
        return 0;
    case CONF_U64:
        if (util_parse_double(value, o->lo, o->hi, &dv) < 0 || dv != (double)(uint64_t)dv) {
            util_seterr(err, errlen, "'%s' must be a whole number in [%.15g, %.15g], got '%s'",
                        o->name, o->lo, o->hi, value);
            return -1;
        }
        *(uint64_t *)field = (uint64_t)dv;
        return 0;
    case CONF_LEVEL:
        if (log_level_parse(value, (log_level_t *)field) < 0) {
            util_seterr(err, errlen, "'%s' must be error, warn, info or debug, got '%s'", o->name,
                        value);
            return -1;
        }
        return 0;
    case CONF_ONOFF:
        if (parse_onoff(value, (int *)field) < 0) {
            util_seterr(err, errlen, "'%s' must be on or off, got '%s'", o->name, value);
            return -1;
        }
        return 0;
    case CONF_CUSTOM:
        return o->parse(value, field, err, errlen);
    }
    return -1;
}

typedef struct {
    const char *path, *section;
    const conf_opt_t *t;
    size_t n;
    void *base;
    conf_other_fn other;
    void *user;
    FILE *f;
    int line;
    unsigned char seen[256];
    char *err;
    size_t errlen;
} ini_state_t;

/* inih reads through this so that every key has its line number. */
static char *read_line(char *buf, int size, void *stream)
{
    ini_state_t *p = stream;
    char *r = fgets(buf, size, p->f);
    if (r) p->line++;
    return r;
}

static int on_entry(void *user, const char *section, const char *key, const char *value)
{
    ini_state_t *p = user;
    char why[512];
    if (!key) return 1; /* a section header on its own */
    if (strcmp(section, p->section) != 0) {
        if (p->other && p->other(p->user, section, key, value, p->line, why, sizeof why) == 0)
            return 1;
        if (p->other) util_seterr(p->err, p->errlen, "%s:%d: %s", p->path, p->line, why);
        else util_seterr(p->err, p->errlen, "%s:%d: unknown section [%s]", p->path, p->line, section);
        return 0;
    }
    int i = conf_find(p->t, p->n, key);
    if (i < 0 || strchr(key, '-')) {
        util_seterr(p->err, p->errlen, "%s:%d: unknown key '%s' in [%s]", p->path, p->line, key,
                    p->section);
        return 0;
    }
    if (i < (int)sizeof p->seen && p->seen[i]) {
        util_seterr(p->err, p->errlen, "%s:%d: '%s' given twice", p->path, p->line, key);
        return 0;
    }
    if (i < (int)sizeof p->seen) p->seen[i] = 1;
    if (conf_set(&p->t[i], p->base, value, why, sizeof why) < 0) {
        util_seterr(p->err, p->errlen, "%s:%d: %s", p->path, p->line, why);
        return 0;
    }
    return 1;
}

int conf_load_ini(const char *path, const char *section, const conf_opt_t *t, size_t n,
                  void *base, conf_other_fn other, void *user, char *err, size_t errlen)
{
    ini_state_t p = {.path = path, .section = section, .t = t, .n = n, .base = base,
                     .other = other, .user = user, .err = err, .errlen = errlen};
    if (errlen) err[0] = '\0';
    p.f = fopen(path, "r");
    if (!p.f) {
        util_seterr(err, errlen, "%s: cannot open config", path);
        return -1;
    }
    int rc = ini_parse_stream(read_line, &p, on_entry, &p);
    fclose(p.f);
    if (rc != 0) {
        if (!errlen || !err[0]) util_seterr(err, errlen, "%s:%d: syntax error", path, rc > 0 ? rc : 0);
        return -1;
    }
    return 0;
}

json_t *conf_to_json(const conf_opt_t *t, size_t n, const void *base,
                     json_t *(*custom)(const conf_opt_t *o, const void *field))
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++) {
        int alias = 0;
        for (size_t j = 0; j < i; j++) alias |= t[j].off == t[i].off && t[j].kind == t[i].kind;
        if (alias) continue;
        const char *field = (const char *)base + t[i].off;
        json_t *v = NULL;
        switch (t[i].kind) {
        case CONF_STR: v = json_string(field); break;
        case CONF_INT: v = json_integer(*(const int *)field); break;
        case CONF_DOUBLE: v = json_real(*(const double *)field); break;
        case CONF_U64: v = json_integer((json_int_t) * (const uint64_t *)field); break;
        case CONF_LEVEL: {
            unsigned l = (unsigned)*(const log_level_t *)field;
            v = l < 4 ? json_string(levels[l]) : json_integer(l);
            break;
        }
        case CONF_ONOFF: v = json_boolean(*(const int *)field); break;
        case CONF_CUSTOM: v = custom ? custom(&t[i], field) : NULL; break;
        }
        json_object_set_new(obj, t[i].name, v ? v : json_null());
    }
    return obj;
}
