/* report.c - `medfed report`: see report.h. */
#include "tools/report.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/json.h"
#include "common/runrec.h"
#include "common/util.h"
#include "common/version.h"

/* ---- the run's rows ---------------------------------------------------------------- */

typedef struct {
    size_t n;
    json_t **row;          /* the parsed metrics rows, in file order */
    double *round, *acc, *loss, *auc, *train_loss, *secs, *train_secs, *rest_secs, *up_mb,
        *down_mb, *clip, *clipped;
    int *aborted;
    int any_secure, have_logs;
} run_t;

static double num(const json_t *row, const char *key)
{
    double v;
    return jx_number(row, key, &v) == 0 ? v : NAN;
}

static int has_values(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) return 1;
    return 0;
}

/* Each site's "N update values clipped" log lines (medfed-sim's logs/), summed
 * per round into r->clipped. 0 if the folder has no site logs. */
static int read_clipped(const char *dir, run_t *r)
{
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/logs", dir);
    DIR *d = opendir(path);
    if (!d) return 0;
    int logs = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "site-", 5) != 0 && strncmp(e->d_name, "swarm-", 6) != 0) continue;
        snprintf(path, sizeof path, "%s/logs/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        logs++;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            const char *p = strstr(line, "round=");
            unsigned round;
            unsigned long long count;
            int used = 0;
            if (!p || !strstr(p, " update values clipped") ||
                sscanf(p, "round=%u %llu update values clipped%n", &round, &count, &used) != 2 ||
                !used)
                continue;
            for (size_t i = 0; i < r->n; i++) /* an aborted round's values reached no model */
                if (r->round[i] == round && !r->aborted[i]) {
                    r->clipped[i] = (isfinite(r->clipped[i]) ? r->clipped[i] : 0) + (double)count;
                    break;
                }
        }
        free(line);
        fclose(f);
    }
    closedir(d);
    return logs > 0;
}

static int read_run(const char *dir, run_t *r, char *err, size_t errlen)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "r");
    if (!f) {
        util_seterr(err, errlen, "%s: cannot open (is %s a run's folder?)", path, dir);
        return -1;
    }
    size_t cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    while ((got = getline(&line, &line_cap, f)) > 0) {
        json_t *row = jx_loads_object(line, (size_t)got);
        if (!row) continue; /* a torn last line of a run in flight */
        if (r->n == cap) {
            cap = cap ? 2 * cap : 64;
            json_t **p = realloc(r->row, cap * sizeof *p);
            if (!p) {
                json_decref(row);
                break;
            }
            r->row = p;
        }
        r->row[r->n++] = row;
    }
    free(line);
    fclose(f);
    if (r->n == 0) {
        util_seterr(err, errlen, "%s: no rounds yet", path);
        return -1;
    }
    double **cols[] = {&r->round, &r->acc, &r->loss, &r->auc, &r->train_loss, &r->secs,
                       &r->train_secs, &r->rest_secs, &r->up_mb, &r->down_mb, &r->clip,
                       &r->clipped};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++)
        if (!(*cols[c] = malloc(r->n * sizeof(double)))) return -1;
    if (!(r->aborted = calloc(r->n, sizeof(int)))) return -1;
    for (size_t i = 0; i < r->n; i++) {
        const json_t *row = r->row[i];
        r->round[i] = num(row, "round");
        r->aborted[i] = jx_true(row, "aborted");
        r->acc[i] = num(row, "val_accuracy");
        r->loss[i] = num(row, "val_loss");
        r->auc[i] = num(row, "val_auc");
        r->train_loss[i] = num(row, "train_loss");
        r->secs[i] = num(row, "seconds");
        r->train_secs[i] = num(row, "train_seconds");
        r->rest_secs[i] = isfinite(r->secs[i]) && isfinite(r->train_secs[i])
                              ? fmax(0, r->secs[i] - r->train_secs[i])
                              : r->secs[i];
        r->up_mb[i] = num(row, "bytes_up") / 1e6;
        r->down_mb[i] = num(row, "bytes_down") / 1e6;
        r->clip[i] = jx_true(row, "secagg") ? num(row, "clip") : NAN;
        r->clipped[i] = NAN;
        r->any_secure |= jx_true(row, "secagg");
    }
    if (r->any_secure && read_clipped(dir, r)) {
        r->have_logs = 1;
        for (size_t i = 0; i < r->n; i++) /* a secure round whose sites logged none clipped none */
            if (!isfinite(r->clipped[i]) && isfinite(r->clip[i]) && !r->aborted[i]) r->clipped[i] = 0;
    }
    return 0;
}

static void free_run(run_t *r)
{
    for (size_t i = 0; i < r->n; i++) json_decref(r->row[i]);
    free(r->row);
    double *cols[] = {r->round, r->acc, r->loss, r->auc, r->train_loss, r->secs, r->train_secs,
                      r->rest_secs, r->up_mb, r->down_mb, r->clip, r->clipped};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) free(cols[c]);
    free(r->aborted);
}

/* ---- HTML ----------------------------------------------------------------------------- */

/* s with & < > " ' escaped: text and attribute values alike. */
static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A JSON value as short text: strings bare, numbers as %g, null as an en dash. */
static void put_value(FILE *f, const json_t *v)
{
    char buf[64];
    if (!v || json_is_null(v)) fputs("&ndash;", f);
    else if (json_is_string(v)) esc(f, json_string_value(v));
    else if (json_is_true(v)) fputs("on", f);
    else if (json_is_false(v)) fputs("off", f);
    else if (json_is_integer(v)) fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v)) {
        snprintf(buf, sizeof buf, "%.6g", json_real_value(v));
        fputs(buf, f);
    } else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        esc(f, s);
        free(s);
    }
}

/* obj at a dotted path ("simulation.dataset.name"), or NULL. */
static const json_t *at(const json_t *obj, const char *path)
{
    char key[128];
    while (obj && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof key) return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        obj = json_object_get(obj, key);
        path += n + (path[n] == '.');
    }
    return obj;
}

/* One row of a key/value table; nothing when the record has no such value. */
static void kv(FILE *f, const json_t *rec, const char *label, const char *path)
{
    const json_t *v = at(rec, path);
    if (!v) return;
    fputs("<tr><th>", f);
    esc(f, label);
    fputs("</th><td>", f);
    put_value(f, v);
    fputs("</td></tr>\n", f);
}

static void kv_text(FILE *f, const char *label, const char *text)
{
    fputs("<tr><th>", f);
    esc(f, label);
    fputs("</th><td>", f);
    esc(f, text);
    fputs("</td></tr>\n", f);
}

/* ---- charts --------------------------------------------------------------------------- */

#define W 680.0
#define H 300.0
#define ML 72.0
#define MR 20.0
#define MT 36.0
#define MB 50.0
#define LEGEND_H 22.0

typedef struct {
    const char *label; /* the legend's name */
    const char *key;   /* data-series="..." */
    const double *y;   /* one value per row; NAN: none */
} series_t;

typedef struct {
    double lo, hi;
    int log;
    double ticks[32];
    int n_ticks;
    int decimals;
} yaxis_t;

static double nice_step(double range, int target)
{
    double raw = range / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/* A y axis over the series' values: nice round ticks (log: 1, 2, 5 x 10^k);
 * from_zero starts a linear axis at 0. */
static void y_axis(yaxis_t *a, const series_t *s, int ns, size_t n, int log_scale, int from_zero,
                   int stacked, int integer)
{
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double sum = 0;
        for (int k = 0; k < ns; k++) {
            double v = s[k].y[i];
            if (!isfinite(v) || (log_scale && v <= 0)) continue;
            if (stacked) sum += v;
            else lo = fmin(lo, v), hi = fmax(hi, v);
        }
        if (stacked) lo = fmin(lo, sum), hi = fmax(hi, sum);
    }
    if (!isfinite(lo)) lo = 0, hi = 1;
    memset(a, 0, sizeof *a);
    a->log = log_scale;
    if (log_scale) {
        a->lo = pow(10, floor(log10(lo)));
        a->hi = pow(10, ceil(log10(hi)));
        if (a->hi <= a->lo) a->hi = a->lo * 10;
        for (double d = a->lo; d <= a->hi * 1.0001 && a->n_ticks < 30; d *= 10)
            for (int m = 0; m < 3 && a->n_ticks < 30; m++) {
                double t = d * (m == 0 ? 1 : m == 1 ? 2 : 5);
                if (t <= a->hi * 1.0001) a->ticks[a->n_ticks++] = t;
            }
        a->decimals = -1; /* %g */
        return;
    }
    if (from_zero) lo = fmin(lo, 0);
    if (from_zero && hi <= 0) hi = 1; /* counts that are all zero */
    if (hi - lo < 1e-12) {
        double pad = fabs(hi) > 0 ? fabs(hi) * 0.05 : 0.5;
        lo -= pad;
        hi += pad;
        if (from_zero && lo < 0 && hi > 0) lo = 0;
    }
    double step = nice_step(hi - lo, 5);
    if (integer && step < 1) step = 1; /* counts */
    a->lo = floor(lo / step + 1e-9) * step;
    a->hi = ceil(hi / step - 1e-9) * step;
    for (double t = a->lo; t <= a->hi + step * 1e-6 && a->n_ticks < 30; t += step)
        a->ticks[a->n_ticks++] = fabs(t) < step * 1e-9 ? 0 : t;
    a->decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
}

static double y_px(const yaxis_t *a, double v, double top, double bottom)
{
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo))
                      : (v - a->lo) / (a->hi - a->lo);
    return bottom - t * (bottom - top);
}

static void tick_label(char *out, size_t len, const yaxis_t *a, double v)
{
    if (a->decimals < 0) snprintf(out, len, "%g", v);
    else snprintf(out, len, "%.*f", a->decimals, v);
}

/* The band of row i on the x axis: [x0, x0 + bw). */
static double band_w(size_t n) { return (W - ML - MR) / (double)(n ? n : 1); }
static double band_x(size_t i, size_t n) { return ML + band_w(n) * (double)i; }

static void chart_open(FILE *f, const char *id, const char *title, double h)
{
    fprintf(f, "<figure class=\"chart\" id=\"chart-%s\">\n", id);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
               "height=\"%.0f\" role=\"img\" aria-labelledby=\"t-%s\">\n", W, h, W, h, id);
    fprintf(f, "<title id=\"t-%s\">", id);
    esc(f, title);
    fputs("</title>\n", f);
    fprintf(f, "<text class=\"title\" x=\"%.1f\" y=\"22\">", ML);
    esc(f, title);
    fputs("</text>\n", f);
}

static void chart_close(FILE *f, const char *desc)
{
    fputs("</svg>\n", f);
    if (desc) {
        fputs("<figcaption>", f);
        esc(f, desc);
        fputs("</figcaption>\n", f);
    }
    fputs("</figure>\n", f);
}

/* The axes: y ticks and grid lines, x ticks (round numbers, thinned to fit),
 * aborted rounds shaded, both axis labels. */
static void axes(FILE *f, const run_t *r, const yaxis_t *a, const char *xlabel,
                 const char *ylabel, double top, double bottom)
{
    char lab[32];
    size_t n = r->n, every = n > 20 ? (n + 19) / 20 : 1;
    double bw = band_w(n);
    for (size_t i = 0; i < n; i++)
        if (r->aborted[i])
            fprintf(f, "<rect class=\"aborted\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                       "height=\"%.1f\"><title>round %.0f aborted: model unchanged</title></rect>\n",
                    band_x(i, n), top, bw, bottom - top, r->round[i]);
    fputs("<g class=\"axis y-axis\">\n", f);
    for (int t = 0; t < a->n_ticks; t++) {
        double y = y_px(a, a->ticks[t], top, bottom);
        tick_label(lab, sizeof lab, a, a->ticks[t]);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                ML, W - MR, y, y, ML - 6, y + 4, lab);
    }
    fprintf(f, "<line class=\"domain\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n", ML, ML,
            top, bottom);
    fputs("</g>\n<g class=\"axis x-axis\">\n", f);
    fprintf(f, "<line class=\"domain\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n", ML,
            W - MR, bottom, bottom);
    for (size_t i = 0; i < n; i += every) {
        double x = band_x(i, n) + bw / 2;
        fprintf(f, "<line class=\"tickmark\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n",
                x, x, bottom, bottom + 4, x, bottom + 16, r->round[i]);
    }
    fputs("</g>\n", f);
    fprintf(f, "<text class=\"axis-label x-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
            ML + (W - ML - MR) / 2, bottom + 34);
    esc(f, xlabel);
    fprintf(f, "</text>\n<text class=\"axis-label y-label\" transform=\"translate(16 %.1f) "
               "rotate(-90)\" text-anchor=\"middle\">", (top + bottom) / 2);
    esc(f, ylabel);
    fputs("</text>\n", f);
}

static void legend(FILE *f, const char *const *labels, const char *const *classes, int n, double y)
{
    double x = ML;
    fputs("<g class=\"legend\">\n", f);
    for (int k = 0; k < n; k++) {
        fprintf(f, "<g class=\"legend-item\"><rect class=\"swatch %s\" x=\"%.1f\" y=\"%.1f\" "
                   "width=\"12\" height=\"12\"/><text x=\"%.1f\" y=\"%.1f\">", classes[k], x, y - 10,
                x + 17, y);
        esc(f, labels[k]);
        fputs("</text></g>\n", f);
        x += 17 + 7.0 * (double)strlen(labels[k]) + 22;
    }
    fputs("</g>\n", f);
}

static const char *const series_class[] = {"s0", "s1", "s2", "s3"};

/* A chart of series ends: their legend if there are several, the caption. */
static void series_end(FILE *f, const series_t *s, int ns, double h, const char *desc)
{
    if (ns > 1) {
        const char *labels[4], *classes[4];
        for (int k = 0; k < ns && k < 4; k++) labels[k] = s[k].label, classes[k] = series_class[k];
        legend(f, labels, classes, ns < 4 ? ns : 4, h - 8);
    }
    chart_close(f, desc);
}

/* Lines (one polyline per run of values, broken where a round has none) and
 * a point per value with its figure as a tooltip. */
enum { Y_LOG = 1, Y_FROM_ZERO = 2, Y_INTEGER = 4 };
static void line_chart(FILE *f, const run_t *r, const char *id, const char *title,
                       const char *ylabel, const series_t *s, int ns, int yflags,
                       const char *desc)
{
    double h = H + (ns > 1 ? LEGEND_H : 0), top = MT, bottom = H - MB;
    int log_scale = yflags & Y_LOG;
    yaxis_t a;
    y_axis(&a, s, ns, r->n, log_scale, yflags & Y_FROM_ZERO, 0, yflags & Y_INTEGER);
    chart_open(f, id, title, h);
    axes(f, r, &a, "round", ylabel, top, bottom);
    double bw = band_w(r->n);
    for (int k = 0; k < ns; k++) {
        fprintf(f, "<g class=\"series %s\" data-series=\"%s\">\n", series_class[k], s[k].key);
        int open = 0;
        for (size_t i = 0; i <= r->n; i++) {
            double v = i < r->n ? s[k].y[i] : NAN;
            int ok = isfinite(v) && !(log_scale && v <= 0);
            if (ok && !open) fputs("<polyline class=\"line\" points=\"", f), open = 1;
            if (ok) fprintf(f, "%.1f,%.1f ", band_x(i, r->n) + bw / 2, y_px(&a, v, top, bottom));
            if (!ok && open) fputs("\"/>\n", f), open = 0;
        }
        for (size_t i = 0; i < r->n; i++) {
            double v = s[k].y[i];
            if (!isfinite(v) || (log_scale && v <= 0)) continue;
            fprintf(f, "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\"><title>round %.0f: "
                       "%s %.6g</title></circle>\n",
                    band_x(i, r->n) + bw / 2, y_px(&a, v, top, bottom), r->round[i], s[k].label, v);
        }
        fputs("</g>\n", f);
    }
    series_end(f, s, ns, h, desc);
}

/* Bars per round: stacked (one bar, the series on top of each other) or side by side. */
static void bar_chart(FILE *f, const run_t *r, const char *id, const char *title,
                      const char *ylabel, const series_t *s, int ns, int stacked,
                      const char *desc)
{
    double h = H + (ns > 1 ? LEGEND_H : 0), top = MT, bottom = H - MB;
    yaxis_t a;
    y_axis(&a, s, ns, r->n, 0, 1, stacked, 0);
    chart_open(f, id, title, h);
    axes(f, r, &a, "round", ylabel, top, bottom);
    double bw = band_w(r->n), pad = bw * 0.15, inner = bw - 2 * pad;
    for (int k = 0; k < ns; k++) {
        fprintf(f, "<g class=\"series %s\" data-series=\"%s\">\n", series_class[k], s[k].key);
        for (size_t i = 0; i < r->n; i++) {
            double v = s[k].y[i];
            if (!isfinite(v)) continue;
            double base = 0;
            for (int j = 0; stacked && j < k; j++)
                if (isfinite(s[j].y[i])) base += s[j].y[i];
            double y0 = y_px(&a, base, top, bottom), y1 = y_px(&a, base + v, top, bottom);
            double x = band_x(i, r->n) + pad + (stacked ? 0 : inner / ns * k);
            double w = stacked ? inner : inner / ns;
            fprintf(f, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\">"
                       "<title>round %.0f: %s %.6g</title></rect>\n",
                    x, y1, w > 0.5 ? w : 0.5, fmax(y0 - y1, 0), r->round[i], s[k].label, v);
        }
        fputs("</g>\n", f);
    }
    series_end(f, s, ns, h, desc);
}

/* ---- participation ----------------------------------------------------------------- */

enum { CELL_ABSENT, CELL_INCLUDED, CELL_DROPPED, CELL_PICKED };
static const char *const cell_class[] = {"absent", "included", "dropped", "picked"};
static const char *const cell_words[] = {"absent (not picked or not connected)",
                                         "included in the aggregate", "dropped",
                                         "picked, not aggregated"};

typedef struct {
    char **name;
    size_t n, cap;
} names_t;

static int names_find(const names_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->name[i], name) == 0) return (int)i;
    return -1;
}

static void names_add(names_t *s, const char *name)
{
    if (!name || names_find(s, name) >= 0) return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **p = realloc(s->name, cap * sizeof *p);
        if (!p) return;
        s->name = p;
        s->cap = cap;
    }
    if ((s->name[s->n] = strdup(name))) s->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The name of a site in a row's index list: the roster's index-th site, else "#index". */
static const char *index_name(const json_t *rec, const json_t *idx, char *buf, size_t len)
{
    json_int_t i = json_integer_value(idx);
    const json_t *sites = at(rec, "roster.sites");
    const char *s = json_string_value(json_array_get(sites, (size_t)i));
    if (s) return s;
    snprintf(buf, len, "#%" JSON_INTEGER_FORMAT, i);
    return buf;
}

/* Is the site in the row's list: by name (KEY_sites), or by index (KEY) in rows
 * written before the names were. -1: the row says nothing either way. */
static int row_lists(const json_t *rec, const json_t *row, const char *key, const char *site)
{
    char k[64], buf[32];
    size_t i;
    const json_t *v;
    snprintf(k, sizeof k, "%s_sites", key);
    const json_t *names = json_object_get(row, k), *idx = json_object_get(row, key);
    if (json_is_array(names)) {
        json_array_foreach(names, i, v) {
            if (json_is_string(v) && strcmp(json_string_value(v), site) == 0) return 1;
        }
        return 0;
    }
    if (!json_is_array(idx)) return -1;
    json_array_foreach(idx, i, v) {
        if (strcmp(index_name(rec, v, buf, sizeof buf), site) == 0) return 1;
    }
    return 0;
}

static void participation_chart(FILE *f, const run_t *r, const json_t *rec)
{
    names_t sites = {0};
    size_t i, j;
    const json_t *v, *one;
    /* The roster's order, then any other name the rows give, sorted. */
    json_array_foreach(at(rec, "roster.sites"), i, v) names_add(&sites, json_string_value(v));
    size_t fixed = sites.n;
    json_array_foreach(at(rec, "simulation.sites"), i, one) names_add(&sites, jx_string(one, "name"));
    static const char *const lists[] = {"cohort_sites", "included_sites", "dropped_sites"};
    char buf[32];
    for (i = 0; i < r->n; i++) {
        for (size_t l = 0; l < 3; l++)
            json_array_foreach(json_object_get(r->row[i], lists[l]), j, v)
                names_add(&sites, json_string_value(v));
        json_array_foreach(json_object_get(r->row[i], "included"), j, v)
            names_add(&sites, index_name(rec, v, buf, sizeof buf));
        json_array_foreach(json_object_get(r->row[i], "dropped"), j, v)
            names_add(&sites, index_name(rec, v, buf, sizeof buf));
    }
    if (sites.n > fixed) qsort(sites.name + fixed, sites.n - fixed, sizeof *sites.name, cmp_str);
    size_t longest = 4;
    for (i = 0; i < sites.n; i++) longest = strlen(sites.name[i]) > longest ? strlen(sites.name[i]) : longest;
    double ml = 30 + 6.6 * (double)(longest > 24 ? 24 : longest);
    double row_h = sites.n <= 24 ? 20 : sites.n <= 40 ? 16 : sites.n <= 200 ? 4 : 800.0 / (double)sites.n;
    double top = MT, bottom = top + row_h * (double)(sites.n ? sites.n : 1);
    double h = bottom + MB + LEGEND_H, cw = (W - ml - MR) / (double)r->n;
    chart_open(f, "participation", "Participation: site x round", h);
    int counts[4] = {0};
    fputs("<g class=\"cells\">\n", f);
    for (size_t s = 0; s < sites.n; s++) {
        for (i = 0; i < r->n; i++) {
            const json_t *row = r->row[i];
            int in = row_lists(rec, row, "included", sites.name[s]);
            int dropped = row_lists(rec, row, "dropped", sites.name[s]);
            int picked = row_lists(rec, row, "cohort", sites.name[s]);
            int st = in == 1 ? CELL_INCLUDED : dropped == 1 ? CELL_DROPPED
                     : picked == 1 ? CELL_PICKED : CELL_ABSENT;
            counts[st]++;
            fprintf(f, "<rect class=\"cell %s\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                       "data-round=\"%.0f\" data-site=\"", cell_class[st], ml + cw * (double)i,
                    top + row_h * (double)s, cw > 2 ? cw - 1 : cw, row_h > 2 ? row_h - 1 : row_h,
                    r->round[i]);
            esc(f, sites.name[s]);
            fputs("\"><title>", f);
            esc(f, sites.name[s]);
            fprintf(f, ", round %.0f: %s%s%s</title></rect>\n", r->round[i], cell_words[st],
                    in == 1 && dropped == 1 ? " (dropped after its upload)" : "",
                    r->aborted[i] ? " (round aborted)" : "");
        }
    }
    fputs("</g>\n<g class=\"axis y-axis\">\n", f);
    for (size_t s = 0; s < sites.n && row_h >= 10; s++) {
        fprintf(f, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", ml - 6,
                top + row_h * (double)s + row_h - 4);
        esc(f, sites.name[s]);
        fputs("</text>\n", f);
    }
    fputs("</g>\n<g class=\"axis x-axis\">\n", f);
    size_t every = r->n > 20 ? (r->n + 19) / 20 : 1;
    for (i = 0; i < r->n; i += every)
        fprintf(f, "<text class=\"tick%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n",
                r->aborted[i] ? " aborted-round" : "", ml + cw * ((double)i + 0.5), bottom + 16,
                r->round[i]);
    fputs("</g>\n", f);
    fprintf(f, "<text class=\"axis-label x-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">"
               "round</text>\n", ml + (W - ml - MR) / 2, bottom + 34);
    fprintf(f, "<text class=\"axis-label y-label\" transform=\"translate(16 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\">site</text>\n", (top + bottom) / 2);
    const char *labels[4], *classes[4];
    static const char *const short_words[] = {"absent", "included", "dropped", "picked, not aggregated"};
    for (int k = 0; k < 4; k++) labels[k] = short_words[(k + 1) % 4], classes[k] = cell_class[(k + 1) % 4];
    legend(f, labels, classes, 4, h - 8);
    char desc[256];
    snprintf(desc, sizeof desc,
             "%zu sites x %zu rounds: %d included, %d dropped, %d picked but not aggregated, "
             "%d absent. Hover a cell for the site and round.",
             sites.n, r->n, counts[CELL_INCLUDED], counts[CELL_DROPPED], counts[CELL_PICKED],
             counts[CELL_ABSENT]);
    chart_close(f, desc);
    for (i = 0; i < sites.n; i++) free(sites.name[i]);
    free(sites.name);
}

/* ---- the page ------------------------------------------------------------------------- */

static const char *const css =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
    "margin:24px auto;max-width:1440px;padding:0 16px;color:#1a1a1a;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid "
    "#ddd;padding-bottom:4px}.sub{color:#555;margin:0 0 12px}"
    "table{border-collapse:collapse;margin:4px 0 12px}th,td{text-align:left;padding:3px 10px;"
    "border-bottom:1px solid #eee;vertical-align:top}th{font-weight:600;color:#333;white-space:nowrap}"
    "td{font-variant-numeric:tabular-nums;word-break:break-all}"
    ".cols{display:flex;flex-wrap:wrap;gap:8px 40px}.cols>div{flex:1 1 420px;min-width:0}"
    ".cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;"
    "padding:8px 14px;min-width:130px}.card .v{font-size:22px;font-weight:600}.card .k{color:#555;"
    "font-size:12px}.status-complete{color:#087f5b}.status-failed,.status-stopped{color:#c92a2a}"
    ".status-running{color:#a06800}.note{color:#555}"
    ".charts{display:flex;flex-wrap:wrap;gap:16px}figure.chart{margin:0;border:1px solid #e3e3e3;"
    "border-radius:6px;padding:6px}figure.chart svg{display:block;max-width:100%;height:auto}"
    "figcaption{color:#555;font-size:12px;max-width:660px;padding:0 6px 4px}"
    "svg text{font:12px system-ui,'DejaVu Sans',sans-serif;fill:#333}svg .title{font-size:14px;"
    "font-weight:600;fill:#1a1a1a}svg .axis-label{font-size:12px;fill:#333}"
    "svg .grid{stroke:#eee}svg .domain,svg .tickmark{stroke:#888}svg .tick{fill:#555;font-size:11px}"
    "svg .aborted{fill:#fde2e2}svg .aborted-round{fill:#c92a2a;font-weight:600}"
    "svg .line{fill:none;stroke-width:2}svg .s0{stroke:#0072B2;fill:#0072B2}"
    "svg .s1{stroke:#D55E00;fill:#D55E00}svg .s2{stroke:#009E73;fill:#009E73}"
    "svg .s3{stroke:#CC79A7;fill:#CC79A7}svg .series .line{fill:none}"
    "svg .bar{stroke:none}svg .swatch{stroke:none}"
    "svg .included{fill:#009E73}svg .dropped{fill:#D55E00}svg .picked{fill:#E69F00}"
    "svg .absent{fill:#e8e8e8}details{margin:6px 0}summary{cursor:pointer;color:#0b5cad}"
    "pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:480px}";

static void card(FILE *f, const char *key, const char *value)
{
    fputs("<div class=\"card\"><div class=\"v\">", f);
    esc(f, value);
    fputs("</div><div class=\"k\">", f);
    esc(f, key);
    fputs("</div></div>\n", f);
}

static void fmt_num(char *out, size_t len, double v, const char *fmt)
{
    if (isfinite(v)) snprintf(out, len, fmt, v);
    else snprintf(out, len, "-");
}

/* A figure of one round: "0.9542" over "validation accuracy, round 20". */
static void round_card(FILE *f, const char *what, double round, double value)
{
    char key[96], v[32];
    snprintf(key, sizeof key, "%s, round %.0f", what, round);
    fmt_num(v, sizeof v, value, "%.4f");
    card(f, key, v);
}

static void final_figures(FILE *f, const run_t *r)
{
    char v[64];
    size_t last = r->n, best = r->n, done = 0, aborted = 0;
    double secs = 0, train = 0, up = 0, down = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (isfinite(r->acc[i])) {
            last = i;
            if (best == r->n || r->acc[i] > r->acc[best]) best = i;
        }
        aborted += r->aborted[i];
        done += !r->aborted[i];
        if (isfinite(r->secs[i])) secs += r->secs[i];
        if (isfinite(r->train_secs[i])) train += r->train_secs[i];
        if (isfinite(r->up_mb[i])) up += r->up_mb[i];
        if (isfinite(r->down_mb[i])) down += r->down_mb[i];
    }
    fputs("<h2 id=\"final\">Final figures</h2>\n<div class=\"cards\">\n", f);
    char key[96];
    if (last < r->n) {
        round_card(f, "validation accuracy", r->round[last], r->acc[last]);
        round_card(f, "validation AUC", r->round[last], r->auc[last]);
        round_card(f, "validation loss", r->round[last], r->loss[last]);
        round_card(f, "training loss", r->round[last], r->train_loss[last]);
        snprintf(key, sizeof key, "best validation accuracy (round %.0f)", r->round[best]);
        fmt_num(v, sizeof v, r->acc[best], "%.4f");
        card(f, key, v);
    } else {
        card(f, "validation accuracy", "no round evaluated");
    }
    snprintf(v, sizeof v, "%zu", done);
    snprintf(key, sizeof key, "rounds completed (%zu aborted)", aborted);
    card(f, key, v);
    fmt_num(v, sizeof v, secs, "%.1f s");
    snprintf(key, sizeof key, "time in rounds (training: %.1f s)", train);
    card(f, key, v);
    snprintf(v, sizeof v, "%.1f / %.1f MB", up, down);
    card(f, "bytes up / down", v);
    fputs("</div>\n", f);
}

static void record_section(FILE *f, const json_t *rec, const char *dir)
{
    fputs("<h2 id=\"record\">Experiment record</h2>\n", f);
    if (!rec) {
        fputs("<p class=\"note\">No run.json in ", f);
        esc(f, dir);
        fputs(": a run from before the experiment record; only its metrics are shown.</p>\n", f);
        return;
    }
    fputs("<div class=\"cols\"><div><table>\n", f);
    kv(f, rec, "status", "status");
    kv(f, rec, "started", "started_at");
    kv(f, rec, "ended", "ended_at");
    kv(f, rec, "record format", "format");
    const json_t *sw = json_object_get(rec, "software");
    if (sw) {
        char t[256];
        snprintf(t, sizeof t, "medfed %s, commit %s, protocol %" JSON_INTEGER_FORMAT,
                 jx_string(sw, "version") ? jx_string(sw, "version") : "?",
                 jx_string(sw, "git_commit") ? jx_string(sw, "git_commit") : "?",
                 json_integer_value(json_object_get(sw, "protocol")));
        kv_text(f, "software", t);
    }
    kv(f, rec, "dataset", "simulation.dataset.name");
    kv(f, rec, "training images", "simulation.dataset.train");
    kv(f, rec, "validation images", "simulation.dataset.val");
    kv(f, rec, "classes", "model.classes");
    kv(f, rec, "partition", "simulation.partition.spec");
    kv(f, rec, "partition seed", "simulation.partition.seed");
    kv(f, rec, "seed (cohorts, training)", "config.seed");
    kv(f, rec, "model", "model.arch");
    kv(f, rec, "parameters", "model.params");
    kv(f, rec, "initial model sha256", "model.init_sha256");
    fputs("</table></div><div><table>\n", f);
    kv(f, rec, "rounds", "config.rounds");
    kv(f, rec, "local epochs", "config.local_epochs");
    kv(f, rec, "batch", "config.batch");
    kv(f, rec, "learning rate", "config.lr");
    kv(f, rec, "momentum", "config.momentum");
    kv(f, rec, "weight decay", "config.weight_decay");
    kv(f, rec, "server optimiser", "config.server_opt");
    kv(f, rec, "server learning rate", "config.server_lr");
    kv(f, rec, "fraction of sites per round", "config.fraction");
    kv(f, rec, "secure aggregation", "secure_aggregation.enabled");
    kv(f, rec, "expected dropout", "secure_aggregation.dropout");
    kv(f, rec, "collusion", "secure_aggregation.collusion");
    kv(f, rec, "threshold t (all sites)", "secure_aggregation.threshold_all_sites");
    kv(f, rec, "upload bits", "secure_aggregation.upload_bits");
    kv(f, rec, "clip (first round)", "secure_aggregation.clip");
    kv(f, rec, "clip auto", "secure_aggregation.clip_auto");
    kv(f, rec, "roster sites", "roster.n");
    kv(f, rec, "roster sha256", "roster.sha256");
    fputs("</table></div></div>\n", f);
    const json_t *sites = at(rec, "simulation.sites"), *one;
    size_t i;
    if (json_array_size(sites)) {
        fputs("<details><summary>Each site's share of the data</summary><table>\n<tr><th>site</th>"
              "<th>training images</th><th>validation images</th><th>label 1 share (training)"
              "</th></tr>\n", f);
        json_array_foreach(sites, i, one) {
            fputs("<tr><td>", f);
            put_value(f, json_object_get(one, "name"));
            fputs("</td><td>", f);
            put_value(f, json_object_get(one, "train"));
            fputs("</td><td>", f);
            put_value(f, json_object_get(one, "val"));
            fputs("</td><td>", f);
            put_value(f, json_object_get(one, "train_label1_share"));
            fputs("</td></tr>\n", f);
        }
        fputs("</table></details>\n", f);
    }
    const json_t *conf = json_object_get(rec, "config"), *v;
    const char *key;
    if (conf) {
        fputs("<details><summary>Every coordinator setting (after defaults, file and flags)"
              "</summary><table>\n", f);
        json_object_foreach((json_t *)conf, key, v) kv(f, conf, key, key);
        fputs("</table></details>\n", f);
    }
    char *all = json_dumps(rec, JX_PRETTY);
    fputs("<details><summary>run.json, whole</summary><pre>", f);
    esc(f, all);
    fputs("</pre></details>\n", f);
    free(all);
}

static int write_report(FILE *f, const char *dir, const json_t *rec, const run_t *r)
{
    const char *status = jx_string(rec, "status");
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<title>medfed run report: ", f);
    esc(f, dir);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>medfed run report</h1>\n"
               "<p class=\"sub\">", css);
    esc(f, dir);
    fprintf(f, " &middot; %zu rounds", r->n);
    if (status) {
        fprintf(f, " &middot; <span class=\"status-%s\">", status);
        esc(f, status);
        fputs("</span>", f);
    }
    fprintf(f, " &middot; made by medfed %s</p>\n", medfed_version());
    record_section(f, rec, dir);
    final_figures(f, r);

    fputs("<h2 id=\"charts\">Per round</h2>\n<div class=\"charts\">\n", f);
    /* The charts left out, each with the reason. */
    char *left_out = NULL;
    size_t left_len = 0;
    FILE *lf = open_memstream(&left_out, &left_len);
    if (!lf) return -1;
#define LEAVE(...) fprintf(lf, __VA_ARGS__)
    series_t acc = {"validation accuracy", "val_accuracy", r->acc};
    if (has_values(r->acc, r->n))
        line_chart(f, r, "accuracy", "Validation accuracy", "accuracy", &acc, 1, 0,
                   "The pooled validation split of every site, after each round's aggregate.");
    else LEAVE("<li>validation accuracy: no round was evaluated</li>");
    series_t loss[2] = {{"validation loss", "val_loss", r->loss},
                        {"training loss", "train_loss", r->train_loss}};
    int train = has_values(r->train_loss, r->n);
    if (has_values(r->loss, r->n) || train)
        line_chart(f, r, "loss", "Loss (cross-entropy)", "mean loss", loss, train ? 2 : 1, 0,
                   train ? "Validation: pooled over the sites' validation splits. Training: the "
                           "sample-weighted mean of the sites' local training loss."
                         : "Validation, pooled over the sites' validation splits.");
    if (!train)
        LEAVE("<li>training loss: these rows carry none (%s)</li>",
              r->any_secure ? "a secure round tells the coordinator only the sum of the updates"
                            : "not recorded");
    series_t auc = {"validation AUC", "val_auc", r->auc};
    if (has_values(r->auc, r->n))
        line_chart(f, r, "auc", "Validation AUC (ROC)", "AUC", &auc, 1, 0,
                   "From the pooled score histograms the sites report (two classes).");
    else LEAVE("<li>validation AUC: defined for two classes, and no round has one</li>");
    series_t secs[2] = {{"training (slowest site)", "train_seconds", r->train_secs},
                        {"the rest: transfers, aggregation, evaluation", "other_seconds",
                         r->rest_secs}};
    if (has_values(r->secs, r->n))
        bar_chart(f, r, "seconds", "Seconds per round", "seconds", secs, 2, 1,
                  "A round's wall time at the coordinator: the slowest site's local training, "
                  "and everything else.");
    series_t bytes[2] = {{"up (sites to coordinator)", "bytes_up", r->up_mb},
                         {"down (coordinator to sites)", "bytes_down", r->down_mb}};
    if (has_values(r->up_mb, r->n))
        bar_chart(f, r, "bytes", "Traffic per round", "megabytes", bytes, 2, 0,
                  "Bytes the coordinator received and sent in the round, all sites together.");
    participation_chart(f, r, rec);
    series_t clip = {"clip bound", "clip", r->clip};
    if (has_values(r->clip, r->n))
        line_chart(f, r, "clip", "Clip bound per round (secure aggregation)", "clip (log scale)",
                   &clip, 1, Y_LOG,
                   "Each update value is clipped to [-clip, clip] before it is encoded.");
    else LEAVE("<li>clip bound: no secure round (plaintext rounds are not clipped)</li>");
    series_t clipped = {"values clipped", "clipped", r->clipped};
    if (r->have_logs && has_values(r->clipped, r->n))
        line_chart(f, r, "clipped", "Values clipped per round", "values clipped", &clipped, 1,
                   Y_FROM_ZERO | Y_INTEGER,
                   "Summed over the sites, from their logs in this folder (the coordinator does "
                   "not learn it; each site logs its own count).");
    else if (r->any_secure)
        LEAVE("<li>values clipped: only the sites know it, and their logs are not in this "
              "folder</li>");
    fputs("</div>\n", f);
#undef LEAVE
    fclose(lf);
    if (left_len) fprintf(f, "<h2 id=\"not-shown\">Not shown</h2>\n<ul class=\"note\">%s</ul>\n", left_out);
    free(left_out);
    fputs("</body>\n</html>\n", f);
    return ferror(f) ? -1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: medfed report RUN_DIR [--out FILE.html]\n"
               "  RUN_DIR   a simulation's output folder (medfed-sim --out) or a coordinator's\n"
               "            state directory: its metrics.jsonl, run.json and, if there, logs/\n"
               "  --out F   where the report goes (RUN_DIR/report.html): one HTML file,\n"
               "            charts inline (SVG), nothing fetched, no script\n");
}

int report_main(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strncmp(argv[i], "--out=", 6) == 0) out = argv[i] + 6;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "medfed report: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    char path[PATH_MAX + 32], err[PATH_MAX + 128];
    if (!out) {
        snprintf(path, sizeof path, "%s/report.html", dir);
        out = path;
    }
    run_t r;
    if (read_run(dir, &r, err, sizeof err) < 0) {
        fprintf(stderr, "medfed report: %s\n", err);
        free_run(&r);
        return 1;
    }
    json_t *rec = runrec_load(dir);
    char *html = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&html, &len);
    int rc = f ? write_report(f, dir, rec, &r) : -1;
    if (f) fclose(f);
    if (rc == 0 && util_write_file_atomic(out, html, len, err, sizeof err) < 0) {
        fprintf(stderr, "medfed report: %s\n", err);
        rc = -1;
    } else if (rc == 0) {
        printf("wrote %s (%zu rounds, %zu bytes)\n", out, r.n, len);
    }
    free(html);
    json_decref(rec);
    free_run(&r);
    return rc == 0 ? 0 : 1;
}
