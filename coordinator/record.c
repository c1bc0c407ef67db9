/* record.c - see record.h. */
#include "coordinator/record.h"

#include <math.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "common/runrec.h"
#include "common/util.h"
#include "common/version.h"

static int started; /* record_start ran in this process */

static json_t *model_json(const coord_t *c)
{
    char sha[65];
    json_t *m = json_pack("{s:s,s:I,s:I,s:{s:i,s:i,s:i},s:i,s:s}", "arch", c->arch, "params",
                          (json_int_t)c->numel, "tensors", (json_int_t)schema_count(c->schema),
                          "input", "channels", (int)c->in_ch, "height", (int)c->height, "width",
                          (int)c->width, "classes", (int)c->classes, "init", c->conf->init_model);
    jx_set(m, "init_sha256",
           runrec_file_sha256(c->conf->init_model, sha) == 0 ? json_string(sha) : json_null());
    return m;
}

static json_t *roster_json(const coord_t *c)
{
    if (!c->have_roster) return json_null();
    char sha[65];
    json_t *sites = json_array();
    for (int i = 0; i < c->roster.n; i++)
        json_array_append_new(sites, json_string(c->roster.site[i].name));
    json_t *r = json_pack("{s:s,s:i,s:o}", "path", c->conf->roster, "n", c->roster.n, "sites", sites);
    jx_set(r, "sha256", runrec_file_sha256(c->conf->roster, sha) == 0 ? json_string(sha) : json_null());
    return r;
}

/* The threat model and what it gives for the whole roster (a round's own
 * cohort, threshold and width are in its metrics row). */
static json_t *secagg_json(const coord_t *c)
{
    const coord_conf_t *k = c->conf;
    json_t *s = json_pack("{s:b,s:f,s:f,s:f,s:b,s:f,s:i,s:i,s:I}", "enabled", k->secagg,
                          "dropout", k->dropout, "collusion", k->collusion, "clip", k->clip,
                          "clip_auto", k->clip_auto, "clip_headroom", k->clip_headroom,
                          "upload_bits", k->upload_bits, "neighbors", k->neighbors,
                          "max_samples", (json_int_t)k->max_samples);
    unsigned n = c->have_roster ? (unsigned)c->roster.n : 0, deg, t;
    char err[256];
    if (k->secagg && n > 0) {
        jx_set(s, "federation_sites", json_integer(n));
        jx_set(s, "colluders", json_integer(secagg_colluders(n, n, k->collusion)));
        if (secagg_plan(n, n, (unsigned)k->neighbors, k->dropout, k->collusion, &deg, &t, err,
                        sizeof err) == 0) {
            jx_set(s, "threshold_all_sites", json_integer(t));
            jx_set(s, "degree_all_sites", json_integer(deg));
        } else {
            jx_set(s, "plan_all_sites", json_string(err));
        }
        jx_set(s, "upload_width_all_sites", json_integer(enc_width((unsigned)k->upload_bits, n)));
    }
    return s;
}

static void save(const coord_t *c, json_t *rec)
{
    char err[PATH_MAX + 128];
    if (runrec_save(c->conf->out_dir, rec, err, sizeof err) < 0)
        log_warn("record: %s not written: %s", RUNREC_FILE, err);
}

void record_start(const coord_t *c, int resumed)
{
    char now[32];
    jx_now_iso(now, sizeof now);
    json_t *rec = runrec_load(c->conf->out_dir);
    /* A record of this run (resumed), or one medfed-sim began for it (no
     * "config" yet), goes on; a previous run's is replaced. */
    if (rec && !resumed && json_object_get(rec, "config")) {
        json_decref(rec);
        rec = NULL;
    }
    if (!rec) rec = json_object();
    runrec_stamp(rec);
    if (!jx_string(rec, "started_at")) jx_set(rec, "started_at", json_string(now));
    jx_set(rec, "ended_at", json_null());
    jx_set(rec, "status", json_string("running"));
    jx_set(rec, "state_dir", json_string(c->conf->out_dir));
    jx_set(rec, "config", coord_conf_json(c->conf));
    jx_set(rec, "model", model_json(c));
    jx_set(rec, "roster", roster_json(c));
    jx_set(rec, "secure_aggregation", secagg_json(c));
    if (resumed) {
        json_t *list = json_object_get(rec, "resumed");
        if (!json_is_array(list)) jx_set(rec, "resumed", list = json_array());
        json_array_append_new(list, json_pack("{s:s,s:I,s:I,s:s}", "at", now, "after_round",
                                              (json_int_t)c->round, "model_version",
                                              (json_int_t)c->version, "git_commit",
                                              medfed_git_commit()));
    } else {
        jx_set(rec, "resumed", json_array());
        jx_set(rec, "overrides", json_array());
        jx_set(rec, "final", json_null());
    }
    save(c, rec);
    json_decref(rec);
    started = 1;
}

void record_settings(const coord_t *c, const char (*sets)[COORD_SET_MAX], int n)
{
    if (!started) return;
    char now[32];
    jx_now_iso(now, sizeof now);
    json_t *rec = runrec_load(c->conf->out_dir);
    if (!rec) rec = json_object();
    json_t *list = json_object_get(rec, "overrides"), *set = json_array();
    if (!json_is_array(list)) jx_set(rec, "overrides", list = json_array());
    for (int i = 0; i < n; i++) json_array_append_new(set, json_string(sets[i]));
    json_array_append_new(list, json_pack("{s:s,s:I,s:o}", "at", now, "before_round",
                                          (json_int_t)c->round + 1, "set", set));
    jx_set(rec, "config", coord_conf_json(c->conf));
    save(c, rec);
    json_decref(rec);
}

void record_end(const coord_t *c)
{
    if (!started) return;
    char now[32];
    jx_now_iso(now, sizeof now);
    json_t *rec = runrec_load(c->conf->out_dir);
    if (!rec) rec = json_object();
    int idle = c->state == ST_WAITING || c->state == ST_DONE;
    const char *status = c->round >= c->target && idle && !c->disk_error ? "complete"
                         : coord_stop                                   ? "stopped"
                                                                        : "failed";
    json_t *sites = json_array();
    for (int i = 0; i < c->n_clients; i++)
        json_array_append_new(sites, json_pack("{s:s,s:i,s:I,s:I}", "name", c->clients[i].site,
                                               "index", c->clients[i].index, "n_train",
                                               (json_int_t)c->clients[i].n_train, "n_val",
                                               (json_int_t)c->clients[i].n_val));
    jx_set(rec, "ended_at", json_string(now));
    jx_set(rec, "status", json_string(status));
    jx_set(rec, "target_rounds", json_integer(c->target));
    jx_set(rec, "sites", sites);
    json_t *fin = runrec_final(c->conf->out_dir);
    jx_set(rec, "final", fin ? fin : json_null());
    save(c, rec);
    json_decref(rec);
}
