#include "client/config.h"

#include <ini.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

/* One row per option of [client]: name, and how to store it. */
typedef enum { OPT_STR, OPT_INT, OPT_DOUBLE, OPT_LEVEL } opt_kind_t;

typedef struct {
    const char *name;
    opt_kind_t kind;
    size_t off;
    size_t size;     /* OPT_STR capacity */
    double lo, hi;   /* numeric bounds */
} opt_t;

#define COFF(f) offsetof(client_conf_t, f)
static const opt_t client_opts[] = {
    {"site", OPT_STR, COFF(site), WIRE_SITE_MAX, 0, 0},
    {"coordinator", OPT_STR, COFF(coordinator), 256, 0, 0},
    {"threads", OPT_INT, COFF(threads), 0, 1, 256},
    {"log_level", OPT_LEVEL, COFF(log_level), 0, 0, 0},
    {"heartbeat", OPT_DOUBLE, COFF(heartbeat), 0, 0.05, 3600},
    {"identity", OPT_STR, COFF(identity), 512, 0, 0},
    {"roster", OPT_STR, COFF(roster), 512, 0, 0},
    {"ca", OPT_STR, COFF(ca), 512, 0, 0},
    {"certificate", OPT_STR, COFF(certificate), 512, 0, 0},
    {"curve_key", OPT_STR, COFF(curve_key), 512, 0, 0},
    {"coordinator_key", OPT_STR, COFF(coordinator_key), 80, 0, 0},
    {"reconnect_max", OPT_DOUBLE, COFF(reconnect_max), 0, 1, 3600},
    {"link_timeout", OPT_DOUBLE, COFF(link_timeout), 0, 2, 3600},
};

typedef struct {
    client_conf_t *conf;
    FILE *f;
    int line;
    char *err;
    size_t errlen;
    unsigned seen;   /* bit per client_opts row */
} parse_t;

/* inih reads through this so that we know the line of every key. */
static char *read_line(char *buf, int size, void *stream)
{
    parse_t *p = stream;
    char *r = fgets(buf, size, p->f);
    if (r) p->line++;
    return r;
}

static int site_name_ok(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static int set_client_opt(parse_t *p, const char *name, const char *value)
{
    const char *file = p->conf->data.file;
    for (size_t i = 0; i < sizeof client_opts / sizeof client_opts[0]; i++) {
        const opt_t *o = &client_opts[i];
        if (strcmp(o->name, name) != 0) continue;
        if (p->seen & (1u << i)) {
            snprintf(p->err, p->errlen, "%s:%d: '%s' given twice", file, p->line, name);
            return 0;
        }
        p->seen |= 1u << i;
        char *field = (char *)p->conf + o->off;
        long long iv;
        double dv;
        switch (o->kind) {
        case OPT_STR:
            if (util_strlcpy(field, value, o->size) < 0) {
                snprintf(p->err, p->errlen, "%s:%d: '%s' is longer than %zu characters", file,
                         p->line, name, o->size - 1);
                return 0;
            }
            return 1;
        case OPT_INT:
            if (util_parse_int(value, (long long)o->lo, (long long)o->hi, &iv) < 0) {
                snprintf(p->err, p->errlen, "%s:%d: '%s' must be an integer in [%g, %g], got '%s'",
                         file, p->line, name, o->lo, o->hi, value);
                return 0;
            }
            *(int *)field = (int)iv;
            return 1;
        case OPT_DOUBLE:
            if (util_parse_double(value, o->lo, o->hi, &dv) < 0) {
                snprintf(p->err, p->errlen, "%s:%d: '%s' must be a number in [%g, %g], got '%s'",
                         file, p->line, name, o->lo, o->hi, value);
                return 0;
            }
            *(double *)field = dv;
            return 1;
        case OPT_LEVEL:
            if (log_level_parse(value, (log_level_t *)field) < 0) {
                snprintf(p->err, p->errlen,
                         "%s:%d: log_level must be error, warn, info or debug, got '%s'", file,
                         p->line, value);
                return 0;
            }
            return 1;
        }
    }
    snprintf(p->err, p->errlen, "%s:%d: unknown key '%s' in [client]", file, p->line, name);
    return 0;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    parse_t *p = user;
    if (!name) return 1; /* a section header on its own */
    if (strcmp(section, "client") == 0) return set_client_opt(p, name, value);
    if (strcmp(section, "data") == 0) {
        char why[256];
        if (data_conf_set(&p->conf->data, name, value, p->line, why, sizeof why) < 0) {
            snprintf(p->err, p->errlen, "%s:%d: %s", p->conf->data.file, p->line, why);
            return 0;
        }
        return 1;
    }
    snprintf(p->err, p->errlen, "%s:%d: unknown section [%s]", p->conf->data.file, p->line, section);
    return 0;
}

int client_conf_load(const char *path, client_conf_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->threads = 1;
    c->log_level = LOG_INFO;
    c->heartbeat = 1.0;
    c->reconnect_max = 60;
    c->link_timeout = 60;
    util_strlcpy(c->data.file, path, sizeof c->data.file);

    parse_t p = {.conf = c, .err = err, .errlen = errlen};
    err[0] = '\0';
    p.f = fopen(path, "r");
    if (!p.f) {
        snprintf(err, errlen, "%s: cannot open config", path);
        return -1;
    }
    int rc = ini_parse_stream(read_line, &p, on_entry, &p);
    fclose(p.f);
    if (rc != 0) {
        if (!err[0]) snprintf(err, errlen, "%s:%d: syntax error", path, rc > 0 ? rc : 0);
        return -1;
    }
    /* Whole-file checks. */
    if (!c->site[0]) {
        snprintf(err, errlen, "%s: [client] site is required", path);
        return -1;
    }
    if (!site_name_ok(c->site)) {
        snprintf(err, errlen, "%s: [client] site '%s' may only use letters, digits, '-', '_', '.'",
                 path, c->site);
        return -1;
    }
    if (!c->ca[0] != !c->certificate[0]) {
        snprintf(err, errlen, "%s: [client] ca and certificate go together", path);
        return -1;
    }
    if (!c->curve_key[0] != !c->coordinator_key[0]) {
        snprintf(err, errlen, "%s: [client] curve_key and coordinator_key go together", path);
        return -1;
    }
    if (!c->coordinator[0]) {
        snprintf(err, errlen, "%s: [client] coordinator endpoint is required", path);
        return -1;
    }
    if (strncmp(c->coordinator, "tcp://", 6) != 0 && strncmp(c->coordinator, "ipc://", 6) != 0 &&
        strncmp(c->coordinator, "inproc://", 9) != 0) {
        snprintf(err, errlen, "%s: [client] coordinator must be tcp://HOST:PORT, got '%s'", path,
                 c->coordinator);
        return -1;
    }
    return 0;
}
