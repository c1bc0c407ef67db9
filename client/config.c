#include "client/config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/options.h"
#include "common/util.h"

/* One row per key of [client] (common/options.h). */
#define C(f) offsetof(client_conf_t, f)
#define STR(name, f) {name, CONF_STR, C(f), sizeof(((client_conf_t *)0)->f), 0, 0, NULL}
static const conf_opt_t client_opts[] = {
    STR("site", site),
    STR("coordinator", coordinator),
    {"threads", CONF_INT, C(threads), 0, 1, 256, NULL},
    {"log_level", CONF_LEVEL, C(log_level), 0, 0, 0, NULL},
    {"heartbeat", CONF_DOUBLE, C(heartbeat), 0, 0.05, 3600, NULL},
    STR("identity", identity),
    STR("roster", roster),
    STR("ca", ca),
    STR("certificate", certificate),
    STR("curve_key", curve_key),
    STR("coordinator_key", coordinator_key),
    {"reconnect_max", CONF_DOUBLE, C(reconnect_max), 0, 1, 3600, NULL},
    {"link_timeout", CONF_DOUBLE, C(link_timeout), 0, 2, 3600, NULL},
    STR("state_dir", state_dir),
    {"protocol_version", CONF_INT, C(protocol), 0, 1, WIRE_VERSION, NULL},
    {"version_retry", CONF_DOUBLE, C(version_retry), 0, 0.5, 86400, NULL},
};

/* [policy]: the hospital's rules for secure aggregation. */
static int policy_set(client_conf_t *c, const char *key, const char *value, int line, char *err,
                      size_t errlen)
{
    long long v;
    double d;
    if (strcmp(key, "peers") == 0) {
        if (util_strlcpy(c->peers, value, sizeof c->peers) < 0) goto bad;
        return 0;
    }
    if (strcmp(key, "min_cohort") == 0) {
        if (util_parse_int(value, 2, 1024, &v) < 0) goto bad;
        c->min_cohort = (int)v;
        return 0;
    }
    if (strcmp(key, "max_collusion") == 0) {
        if (util_parse_double(value, 0, 0.99, &d) < 0) goto bad;
        c->max_collusion = d;
        return 0;
    }
    if (strcmp(key, "secure_aggregation") == 0) {
        if (strcmp(value, "required") == 0) c->plaintext_ok = 0;
        else if (strcmp(value, "optional") == 0) c->plaintext_ok = 1;
        else goto bad;
        return 0;
    }
    (void)line;
    snprintf(err, errlen, "unknown key '%s' in [policy] (peers, min_cohort, max_collusion, "
             "secure_aggregation)", key);
    return -1;
bad:
    snprintf(err, errlen, "[policy] %s: bad value '%s' (min_cohort 2..1024, max_collusion 0..0.99, "
             "secure_aggregation required|optional, peers a path)", key, value);
    return -1;
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

/* [data] goes to the data source as given (it checks its own keys). */
static int on_other(void *user, const char *section, const char *key, const char *value,
                    int line, char *err, size_t errlen)
{
    client_conf_t *c = user;
    if (strcmp(section, "policy") == 0) return policy_set(c, key, value, line, err, errlen);
    if (strcmp(section, "data") != 0) {
        snprintf(err, errlen, "unknown section [%s]", section);
        return -1;
    }
    return data_conf_set(&c->data, key, value, line, err, errlen);
}

int client_conf_load(const char *path, client_conf_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->threads = 1;
    c->log_level = LOG_INFO;
    c->heartbeat = 1.0;
    c->reconnect_max = 60;
    c->link_timeout = 60;
    c->min_cohort = 3;
    c->max_collusion = 0.33;
    c->protocol = WIRE_VERSION;
    c->version_retry = 300;
    util_strlcpy(c->data.file, path, sizeof c->data.file);

    if (conf_load_ini(path, "client", client_opts, sizeof client_opts / sizeof client_opts[0], c,
                      on_other, c, err, errlen) < 0)
        return -1;
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
