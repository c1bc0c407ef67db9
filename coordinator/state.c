/*
 * state.c - the coordinator's state directory, so that a crash loses at most
 * the round in flight.
 *
 *   DIR/metrics.jsonl              one row per finished round (fsync'd; a secure round
 *                                  committed but cut short in EVAL: a row without
 *                                  validation figures, written on resume)
 *   DIR/rounds/round-000012.safetensors   the model after round 12
 *   DIR/model.safetensors          the latest model (a copy, for tools)
 *   DIR/state.json                 {"format" (STATE_FORMAT), "software" (the medfed
 *                                  version that wrote it), "round", "version", "target",
 *                                  "paused", "arch", "numel", "started", "clip" (the next
 *                                  secure round's)}; a format newer than this build
 *                                  reads is refused with both versions named
 *   DIR/run.json                   the experiment record (record.c, common/runrec.h): not
 *                                  part of the commit, read by no restart but its own
 *
 * Every file is written whole to a temp file, fsync'd and renamed, so a kill
 * at any moment leaves the old file or the new one, never a part. The commit
 * order is: metrics row, round model, state.json; a secure round commits its
 * model and state.json before EVAL (the sites released their shares for the
 * old version once: the aggregate must not be lost) and its metrics row after.
 * state.json is the commit point: on start, metrics rows after its round
 * (written just before a crash) are dropped, and an orphan round file is
 * overwritten when the round runs again.
 */
#include "coordinator/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json.h"
#include "common/util.h"
#include "common/version.h"
#include "crypto/crypto.h"

/* The layout of state.json this build writes; 0: before it had a "format". */
#define STATE_FORMAT 1

void state_round_path(const coord_t *c, uint32_t version, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/rounds/round-%06u.safetensors", c->conf->out_dir, version);
}

static void path_of(const coord_t *c, const char *name, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", c->conf->out_dir, name);
}

static int state_write(const coord_t *c, uint32_t round, uint32_t version)
{
    char path[PATH_MAX + 32], err[512];
    path_of(c, "state.json", path, sizeof path);
    /* Compact ("round":3), the clip at full precision (a restart goes on with exactly it). */
    json_t *st = json_pack("{s:i,s:s,s:I,s:I,s:I,s:b,s:s,s:I,s:I,s:f}", "format", STATE_FORMAT,
                           "software", medfed_version(), "round", (json_int_t)round,
                           "version", (json_int_t)version, "target", (json_int_t)c->target,
                           "paused", c->paused, "arch", c->arch, "numel", (json_int_t)c->numel,
                           "started", (json_int_t)(c->started_round > round ? c->started_round : round),
                           "clip", c->clip);
    if (!st) util_seterr(err, sizeof err, "%s: cannot encode", path);
    int rc = st ? jx_write_atomic(path, st, JSON_COMPACT, err, sizeof err) : -1;
    json_decref(st);
    if (rc < 0) log_error("state: %s", err);
    return rc < 0 ? -1 : 0;
}

/* Target or pause changed: the committed round stays what it is. */
int state_save(const coord_t *c) { return state_write(c, c->committed_round, c->committed); }

/* Keeps the metrics rows of rounds <= last (rewritten atomically); *latest:
 * the highest round kept (0: none). */
static int trim_metrics(const coord_t *c, uint32_t last, uint32_t *latest, char *err, size_t errlen)
{
    *latest = 0;
    char path[PATH_MAX + 32];
    path_of(c, "metrics.jsonl", path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : (util_seterr(err, errlen, "%s: %s", path, strerror(errno)), -1);
    char *out = NULL, *line = NULL;
    size_t len = 0, cap = 0, dropped = 0;
    FILE *mem = open_memstream(&out, &len);
    if (!mem) {
        fclose(f);
        return -1;
    }
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        uint32_t r;
        json_t *row = jx_loads_object(line, (size_t)got); /* a torn or garbled row: NULL */
        if (row && jx_u32(row, "round", &r) == 0 && r <= last && strchr(line, '\n')) {
            fputs(line, mem);
            if (r > *latest) *latest = r;
        } else {
            dropped++;
        }
        json_decref(row);
    }
    free(line);
    fclose(f);
    fclose(mem);
    int rc = 0;
    if (dropped) {
        rc = util_write_file_atomic(path, out, len, err, errlen);
        if (rc == 0) log_info("state: dropped %zu metrics row(s) of unfinished rounds", dropped);
    }
    free(out);
    return rc;
}

/* Temp files of writes a kill interrupted (NAME.tmpXXXXXX from util_write_file_atomic,
 * .NAME.tmp-XXXXXX from safetensors_write): never a checkpoint. */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[PATH_MAX + 300];
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp");
        if (!t || (strlen(t) != 10 && !(strlen(t) == 11 && t[4] == '-'))) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) log_info("state: removed %s, left by an interrupted write", path);
    }
    closedir(d);
}

/* Round files after the committed version: a kill between a round file's
 * rename and the state.json that commits it leaves one. The round counts as
 * cut short and its id is never reused, so nothing would replace the file, and
 * `medfed export` must never hand out a model the run did not commit. */
static void remove_uncommitted_rounds(const char *dir, uint32_t committed)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[PATH_MAX + 300];
    int removed = 0;
    while ((e = readdir(d))) {
        unsigned v;
        int end = 0;
        if (sscanf(e->d_name, "round-%u.safetensors%n", &v, &end) != 1 ||
            e->d_name[end] != '\0' || v <= committed)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) {
            log_warn("state: removed %s: round %u was cut short before its commit (the run's "
                     "model is round %u's)", path, v, committed);
            removed = 1;
        }
    }
    closedir(d);
    if (removed) util_fsync_dir_of(path);
}

int state_load_model(const coord_t *c, uint32_t version, float *into)
{
    char path[PATH_MAX + 64], err[512];
    schema_t *s = NULL;
    float *w = NULL;
    st_meta_t meta[ST_META_MAX];
    size_t nmeta = 0;
    if (version == 0) snprintf(path, sizeof path, "%s", c->conf->init_model);
    else state_round_path(c, version, path, sizeof path);
    if (safetensors_read(path, &s, &w, meta, &nmeta, err, sizeof err) < 0 ||
        schema_numel(s) != c->numel) {
        log_error("state: round %u's model: %s", version,
                  s ? "parameter count differs from the initial model" : err);
        schema_destroy(&s);
        free(w);
        return -1;
    }
    memcpy(into, w, c->numel * sizeof *w);
    schema_destroy(&s);
    free(w);
    return 0;
}

/* Reads state.json (path) into *r and the model it names into weights. */
static int read_state(const coord_t *c, const char *path, state_run_t *r, float *weights)
{
    char err[512];
    size_t len;
    char *text = util_read_file(path, 4096, &len, err, sizeof err);
    uint32_t round = 0, version = 0, target = 0, numel = 0, started = 0;
    if (!text) {
        log_error("state: %s", err);
        return -1;
    }
    json_t *st = jx_loads_object(text, len);
    uint32_t format = 0; /* absent: written before formats were numbered (format 0) */
    double f;
    if (st && jx_number(st, "format", &f) == 0 && jx_u32(st, "format", &format) < 0)
        format = UINT32_MAX; /* not a count: refused below */
    if (format > STATE_FORMAT) {
        const char *sw = jx_string(st, "software");
        char swt[64] = "";
        if (sw) snprintf(swt, sizeof swt, " (medfed %.32s)", sw);
        free(text);
        json_decref(st);
        log_error("state: %s was written by a newer medfed%s in state format %u; this "
                  "coordinator (medfed %s) reads format %d and older: run the newer medfed, "
                  "or start a new run elsewhere", path, swt, format, medfed_version(), STATE_FORMAT);
        return -1;
    }
    free(text);
    int ok = st && jx_u32(st, "round", &round) == 0 && jx_u32(st, "version", &version) == 0 &&
             jx_u32(st, "target", &target) == 0 && jx_u32(st, "numel", &numel) == 0 &&
             version <= round;
    int paused = jx_true(st, "paused");
    if (jx_u32(st, "started", &started) < 0 || started < round) started = round;
    double clip = 0; /* absent in older state files: the configured clip */
    if (jx_number(st, "clip", &clip) < 0 || !(clip > 0) || !isfinite(clip)) clip = 0;
    json_decref(st);
    if (!ok) {
        log_error("state: %s is not a state file this coordinator wrote (start with "
                  "--resume off to begin a new run in this directory)", path);
        return -1;
    }
    if (numel != c->numel) {
        log_error("state: %s is a run of a model with %u parameters, the initial model has "
                  "%zu", path, numel, c->numel);
        return -1;
    }
    if (version > 0 && state_load_model(c, version, weights) < 0) return -1;
    *r = (state_run_t){.resumed = 1, .round = round, .version = version, .committed_round = round,
                       .started = started, .target = target, .paused = paused, .clip = clip};
    return 0;
}

/* --check: what a start would resume from, writing nothing. 1 = a run to
 * resume, 0 = a new run, -1 = a state directory it could not use. */
int state_peek(const coord_t *c, state_run_t *r, float *weights)
{
    char path[PATH_MAX + 32];
    memset(r, 0, sizeof *r);
    path_of(c, "state.json", path, sizeof path);
    if (!c->conf->resume || access(path, F_OK) != 0) return 0;
    return read_state(c, path, r, weights) < 0 ? -1 : 1;
}

int state_open(const coord_t *c, state_run_t *r, float *weights)
{
    char path[PATH_MAX + 32], err[512];
    uint32_t latest = 0, lost_round = 0;
    int evaluation_lost = 0;
    memset(r, 0, sizeof *r);
    if (util_mkdirs(c->conf->out_dir, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    path_of(c, "rounds", path, sizeof path);
    if (util_mkdirs(path, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    remove_stale_temps(path);
    remove_stale_temps(c->conf->out_dir);
    path_of(c, "state.json", path, sizeof path);
    int have_state = access(path, F_OK) == 0;
    const char *mode = "w";
    if (have_state && c->conf->resume) {
        if (read_state(c, path, r, weights) < 0) return -1;
        path_of(c, "rounds", path, sizeof path);
        remove_uncommitted_rounds(path, r->version);
        if (trim_metrics(c, r->round, &latest, err, sizeof err) < 0) {
            log_error("state: %s", err);
            return -1;
        }
        mode = "a";
        /* A secure round's model is committed before its evaluation: a
         * restart during EVAL leaves it without a metrics row. */
        evaluation_lost = r->version == r->round && r->round > 0 && latest < r->round;
        /* A round cut short by the restart keeps its id (the next is a fresh
         * one: no round is run twice under one id) and does not count
         * toward the target. */
        if (r->started > r->round) {
            lost_round = r->started;
            r->target += r->started - r->round;
            r->round = r->committed_round = r->started; /* as an aborted round's commit */
        }
        /* The SHA-256 of the weights it resumed with (the tensor bytes of
         * rounds/round-N.safetensors): tests compare it with that file. */
        uint8_t mh[CRYPTO_HASHBYTES];
        crypto_sha256(mh, weights, c->numel * sizeof *weights);
        log_info("state: resuming in %s after round %u (model of round %u, sha256 "
                 "%02x%02x%02x%02x%02x%02x%02x%02x), target %u rounds%s",
                 c->conf->out_dir, r->round, r->version, mh[0], mh[1], mh[2], mh[3], mh[4], mh[5],
                 mh[6], mh[7], r->target, r->paused ? ", paused" : "");
    } else if (have_state) {
        /* The old run's round files would be mistaken for this run's. */
        char old[PATH_MAX + 32], aside[PATH_MAX + 64];
        path_of(c, "rounds", old, sizeof old);
        snprintf(aside, sizeof aside, "%s.previous-%lld", old, (long long)util_now());
        if (state_write(c, 0, 0) < 0 || rename(old, aside) < 0 ||
            util_mkdirs(old, err, sizeof err) < 0) {
            log_error("state: cannot set the previous run aside in %s", c->conf->out_dir);
            return -1;
        }
        log_warn("state: resume off: a new run in %s (the previous run's models are in %s)",
                 c->conf->out_dir, aside);
    }
    path_of(c, "metrics.jsonl", path, sizeof path);
    FILE *metrics = r->metrics = fopen(path, mode);
    if (!metrics) {
        log_error("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (lost_round) {
        json_t *row = json_pack("{s:I,s:i,s:b,s:b,s:i,s:n,s:n,s:n,s:s}", "round",
                                (json_int_t)lost_round, "format", METRICS_FORMAT, "aborted", 1, "secagg", c->conf->secagg, "participants", 0,
                                "val_accuracy", "val_loss", "val_auc", "note",
                                "cut short by a coordinator restart");
        jx_write_line(metrics, row);
        json_decref(row);
        fflush(metrics);
        fsync(fileno(metrics));
        log_info("state: round %u was cut short by the restart; the next round is %u", lost_round,
                 lost_round + 1);
    }
    if (evaluation_lost) {
        json_t *row = json_pack("{s:I,s:i,s:b,s:b,s:b,s:n,s:n,s:n,s:n,s:s}", "round",
                                (json_int_t)r->round, "format", METRICS_FORMAT, "aborted", 0, "evaluated", 0, "secagg", c->conf->secagg,
                                "participants", "val_accuracy", "val_loss", "val_auc", "note",
                                "aggregated and committed; its evaluation was cut short by a "
                                "coordinator restart");
        jx_write_line(metrics, row);
        json_decref(row);
        fflush(metrics);
        fsync(fileno(metrics));
        log_info("state: round %u was committed but not evaluated: metrics row written without "
                 "validation figures", r->round);
    }
    return 0;
}

int state_publish_latest(const coord_t *c)
{
    char round[PATH_MAX + 64], tmp[PATH_MAX + 64], latest[PATH_MAX + 32];
    state_round_path(c, c->committed, round, sizeof round);
    path_of(c, ".model.safetensors.tmp-latest" /* stale ones: remove_stale_temps */, tmp, sizeof tmp);
    path_of(c, "model.safetensors", latest, sizeof latest);
    unlink(tmp);
    if (link(round, tmp) < 0) return -1;
    if (rename(tmp, latest) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* A round ended (complete or aborted): its metrics row is written; make it durable. */
/* server-opt.bin: the server optimiser's state after the committed model
 * (fedavgm's velocity, the adaptive optimisers' m and v), written with each
 * model it produced, before state.json commits that model:
 *   "MFSOPT01", u32 optimiser, u32 model version, u64 numel, u32 vectors,
 *   then the vectors (numel doubles each, little-endian). */
#define OPT_MAGIC "MFSOPT01"
#define OPT_HEADER (8 + 4 + 4 + 8 + 4)

static int save_server_opt(const coord_t *c)
{
    const int k = fedavg_state_count(c->fedavg);
    if (k == 0) return 0;
    const size_t body = (size_t)k * c->numel * sizeof(double);
    uint8_t *buf = malloc(OPT_HEADER + body);
    char path[PATH_MAX + 64], err[512];
    if (!buf) {
        log_error("checkpoint: out of memory for the server optimiser's state");
        return -1;
    }
    memcpy(buf, OPT_MAGIC, 8);
    wire_put_u32(buf + 8, (uint32_t)c->conf->server.opt);
    wire_put_u32(buf + 12, c->version);
    wire_put_u64(buf + 16, c->numel);
    wire_put_u32(buf + 24, (uint32_t)k);
    for (int v = 0; v < k; v++)
        memcpy(buf + OPT_HEADER + (size_t)v * c->numel * sizeof(double),
               fedavg_state(c->fedavg, v), c->numel * sizeof(double));
    path_of(c, "server-opt.bin", path, sizeof path);
    int rc = util_write_file_atomic(path, buf, OPT_HEADER + body, err, sizeof err);
    if (rc < 0) log_error("checkpoint: %s", err);
    free(buf);
    return rc;
}

int state_load_server_opt(const coord_t *c, uint32_t version, fedavg_t *f)
{
    const int k = fedavg_state_count(f);
    if (k == 0) return 0;
    char path[PATH_MAX + 64];
    path_of(c, "server-opt.bin", path, sizeof path);
    const size_t want = OPT_HEADER + (size_t)k * c->numel * sizeof(double);
    FILE *in = fopen(path, "rb");
    uint8_t head[OPT_HEADER];
    const char *why = NULL;
    if (!in) why = "no server-opt.bin";
    else if (fread(head, 1, sizeof head, in) != sizeof head || memcmp(head, OPT_MAGIC, 8) != 0)
        why = "server-opt.bin is not one";
    else if (wire_get_u32(head + 8) != (uint32_t)c->conf->server.opt)
        why = "server-opt.bin is another optimiser's";
    else if (wire_get_u32(head + 12) != version)
        why = "server-opt.bin is of another model version";
    else if (wire_get_u64(head + 16) != c->numel || wire_get_u32(head + 24) != (uint32_t)k)
        why = "server-opt.bin does not fit the model";
    for (int v = 0; !why && v < k; v++)
        if (fread(fedavg_state(f, v), sizeof(double), c->numel, in) != c->numel)
            why = "server-opt.bin is truncated";
    if (in) fclose(in);
    if (why) {
        /* what was read in part is not a state: start again from zero */
        fedavg_t *fresh = fedavg_new(c->numel, &c->conf->server);
        for (int v = 0; fresh && v < k; v++)
            memcpy(fedavg_state(f, v), fedavg_state(fresh, v), c->numel * sizeof(double));
        fedavg_destroy(&fresh);
        log_warn("state: %s: the server optimiser (%s) starts again from zero", why,
                 fedavg_opt_name(c->conf->server.opt));
        return -1;
    }
    log_info("state: the server optimiser's state (%s) resumed with model %u (%zu bytes)",
             fedavg_opt_name(c->conf->server.opt), version, want);
    return 0;
}

int state_commit(const coord_t *c, int model_changed)
{
    char path[PATH_MAX + 64], err[512];
    fflush(c->metrics);
    fsync(fileno(c->metrics));
    uint32_t version = model_changed ? c->version : c->committed;
    if (model_changed) {
        st_meta_t meta[ST_META_MAX];
        size_t n = coord_model_meta(c, meta);
        state_round_path(c, c->version, path, sizeof path);
        if (safetensors_write(path, c->schema, c->global, meta, n, err, sizeof err) < 0) {
            log_error("checkpoint: %s", err);
            return -1;
        }
        if (save_server_opt(c) < 0) return -1;
    }
    return state_write(c, c->round, version);
}
