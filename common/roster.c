#include "common/roster.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* 64 hex digits -> 32 bytes. */
static int parse_key(const char *hex, uint8_t out[32])
{
    if (strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int roster_load(const char *path, roster_t *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open roster", path);
        return -1;
    }
    char line[512];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char name[512] = "", key[512] = "", curve[512] = "", extra[8] = "";
        int n = sscanf(line, "%511s %511s %511s %7s", name, key, curve, extra);
        if (n <= 0 || name[0] == '#') continue;
        if (n == 4) {
            snprintf(err, errlen, "%s:%d: expected 'NAME [PUBKEY [CURVEKEY]]'", path, lineno);
            rc = -1;
        } else if (r->n == ROSTER_MAX) {
            snprintf(err, errlen, "%s:%d: more than %d sites", path, lineno, ROSTER_MAX);
            rc = -1;
        } else if (strlen(name) >= ROSTER_NAME_MAX) {
            snprintf(err, errlen, "%s:%d: site name longer than %d characters", path, lineno,
                     ROSTER_NAME_MAX - 1);
            rc = -1;
        } else if (roster_find(r, name) >= 0) {
            snprintf(err, errlen, "%s:%d: site '%s' listed twice", path, lineno, name);
            rc = -1;
        } else {
            roster_entry_t *e = &r->site[r->n];
            util_strlcpy(e->name, name, sizeof e->name);
            if (n >= 2 && parse_key(key, e->pk) < 0) {
                snprintf(err, errlen, "%s:%d: public key must be 64 hex digits", path, lineno);
                rc = -1;
                break;
            }
            e->has_pk = n >= 2;
            if (n >= 3 && parse_key(curve, e->curve_pk) < 0) {
                snprintf(err, errlen, "%s:%d: CURVE key must be 64 hex digits", path, lineno);
                rc = -1;
                break;
            }
            e->has_curve = n >= 3;
            r->n++;
        }
    }
    fclose(f);
    if (rc == 0 && r->n == 0) {
        snprintf(err, errlen, "%s: no sites in roster", path);
        rc = -1;
    }
    r->all_have_pk = r->all_have_curve = r->n > 0;
    for (int i = 0; i < r->n; i++) {
        r->all_have_pk &= r->site[i].has_pk;
        r->all_have_curve &= r->site[i].has_curve;
    }
    return rc;
}

int roster_find(const roster_t *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->site[i].name, name) == 0) return i;
    return -1;
}
