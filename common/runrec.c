/* runrec.c - see runrec.h. */
#include "common/runrec.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/version.h"
#include "crypto/crypto.h"
#include "proto/wire.h"

static void path_in(const char *dir, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", dir, name);
}

json_t *runrec_load(const char *dir)
{
    char path[PATH_MAX + 32], err[PATH_MAX + 64];
    path_in(dir, RUNREC_FILE, path, sizeof path);
    return jx_load_file(path, (size_t)16 << 20, err, sizeof err);
}

int runrec_save(const char *dir, const json_t *rec, char *err, size_t errlen)
{
    char path[PATH_MAX + 32];
    path_in(dir, RUNREC_FILE, path, sizeof path);
    return jx_write_atomic(path, rec, JX_PRETTY, err, errlen);
}

json_t *runrec_software(void)
{
    return json_pack("{s:s,s:s,s:s,s:i}", "name", "medfed", "version", medfed_version(),
                     "git_commit", medfed_git_commit(), "protocol", WIRE_VERSION);
}

void runrec_stamp(json_t *rec)
{
    jx_set(rec, "format", json_integer(RUNREC_FORMAT));
    jx_set(rec, "software", runrec_software());
}

int runrec_file_sha256(const char *path, char hex[65])
{
    size_t len;
    char err[PATH_MAX + 64];
    char *data = util_read_file(path, (size_t)1 << 34, &len, err, sizeof err);
    if (!data) return -1;
    uint8_t h[CRYPTO_HASHBYTES];
    crypto_sha256(h, data, len);
    free(data);
    for (int i = 0; i < CRYPTO_HASHBYTES; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    return 0;
}

json_t *runrec_final(const char *dir)
{
    char path[PATH_MAX + 32];
    path_in(dir, "metrics.jsonl", path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long rows = 0, completed = 0, aborted = 0;
    double secs = 0, train_secs = 0, up = 0, down = 0, best = -1, best_round = 0;
    json_t *last = NULL; /* the last row with validation figures */
    while ((got = getline(&line, &cap, f)) > 0) {
        json_t *r = jx_loads_object(line, (size_t)got);
        if (!r) continue;
        double v, acc;
        rows++;
        if (jx_true(r, "aborted")) aborted++;
        else completed++;
        if (jx_number(r, "seconds", &v) == 0) secs += v;
        if (jx_number(r, "train_seconds", &v) == 0) train_secs += v;
        if (jx_number(r, "bytes_up", &v) == 0) up += v;
        if (jx_number(r, "bytes_down", &v) == 0) down += v;
        if (jx_number(r, "val_accuracy", &acc) == 0) {
            json_decref(last);
            last = json_incref(r);
            if (acc > best) {
                best = acc;
                jx_number(r, "round", &best_round);
            }
        }
        json_decref(r);
    }
    free(line);
    fclose(f);
    if (!rows) {
        json_decref(last);
        return NULL;
    }
    json_t *fin = json_pack("{s:i,s:i,s:i}", "rounds", (int)rows, "completed_rounds",
                            (int)completed, "aborted_rounds", (int)aborted);
    static const char *const keys[] = {"round", "val_accuracy", "val_loss", "val_auc", "train_loss"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = last ? json_object_get(last, keys[i]) : NULL;
        jx_set(fin, keys[i], v ? json_incref(v) : json_null());
    }
    jx_set(fin, "best_val_accuracy",
           best >= 0 ? json_pack("{s:i,s:f}", "round", (int)best_round, "value", best) : json_null());
    jx_set(fin, "seconds", jx_real(secs, 3));
    jx_set(fin, "train_seconds", jx_real(train_secs, 3));
    jx_set(fin, "bytes_up", json_integer((json_int_t)up));
    jx_set(fin, "bytes_down", json_integer((json_int_t)down));
    json_decref(last);
    return fin;
}
