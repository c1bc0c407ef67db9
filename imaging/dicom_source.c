/*
 * dicom_source.c - the configuration, labels CSV, salt and split shared by the
 * DICOM data sources (see dicom_source.h).
 */
#include "imaging/dicom_source.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imaging/dicom_prep.h"
#include "common/health.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/crypto.h"

static const char *const key_columns[] = {"AccessionNumber", "SOPInstanceUID", "file"};
static const char *const key_names[] = {"accession", "sop_uid", "file"};

/* ---- configuration ------------------------------------------------------------------ */

/* The shared keys as given; dicom_common_parse turns them into dicom_common_t. */
typedef struct {
    char labels[DATA_VALUE_MAX];
    char salt_file[DATA_VALUE_MAX];
    int key; /* dicom_label_key_t; -1: not given (the labels header picks) */
    double val_fraction;
    dicom_prep_t prep;
} common_conf_t;

static int parse_window(const char *v, void *field, char *err, size_t errlen)
{
    dicom_prep_t *p = field;
    if (strcmp(v, "auto") == 0) p->window = DICOM_WINDOW_AUTO;
    else if (strcmp(v, "minmax") == 0) p->window = DICOM_WINDOW_MINMAX;
    else {
        char c[64];
        const char *comma = strchr(v, ',');
        if (!comma || (size_t)(comma - v) >= sizeof c) goto bad;
        memcpy(c, v, (size_t)(comma - v));
        c[comma - v] = 0;
        if (util_parse_double(c, -1e9, 1e9, &p->center) < 0 ||
            util_parse_double(comma + 1, 1.0, 1e9, &p->width_w) < 0)
            goto bad;
        p->window = DICOM_WINDOW_FIXED;
    }
    return 0;
bad:
    util_seterr(err, errlen, "'window' must be auto, minmax or CENTER,WIDTH, got '%s'", v);
    return -1;
}

static int parse_label_key(const char *v, void *field, char *err, size_t errlen)
{
    for (int k = 0; k < 3; k++)
        if (strcmp(v, key_names[k]) == 0) return *(int *)field = k, 0;
    util_seterr(err, errlen, "'label_key' must be accession, sop_uid or file, got '%s'", v);
    return -1;
}

#define CC(f) offsetof(common_conf_t, f)
const conf_opt_t dicom_common_opts[] = {
    {"labels", CONF_STR, CC(labels), DATA_VALUE_MAX, 0, 0, NULL},
    {"label_key", CONF_CUSTOM, CC(key), 0, 0, 0, parse_label_key},
    {"val_fraction", CONF_DOUBLE, CC(val_fraction), 0, 0, 0.999999, NULL},
    {"height", CONF_INT, CC(prep.height), 0, 1, DICOM_PREP_MAX_SIDE, NULL},
    {"width", CONF_INT, CC(prep.width), 0, 1, DICOM_PREP_MAX_SIDE, NULL},
    {"window", CONF_CUSTOM, CC(prep), 0, 0, 0, parse_window},
    {"salt_file", CONF_STR, CC(salt_file), DATA_VALUE_MAX, 0, 0, NULL},
};
_Static_assert(sizeof dicom_common_opts / sizeof dicom_common_opts[0] == DICOM_COMMON_NOPTS,
               "DICOM_COMMON_NOPTS: one row per key");

/* Reads, or creates with 0600, the site's salt. */
static int salt_load(const char *path, uint8_t salt[DICOM_SALTBYTES], char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        crypto_random(salt, DICOM_SALTBYTES);
        int bad = write(fd, salt, DICOM_SALTBYTES) != DICOM_SALTBYTES || fsync(fd) < 0;
        close(fd);
        if (bad) {
            util_seterr(err, errlen, "%s: cannot write the salt: %s", path, strerror(errno));
            unlink(path);
            return -1;
        }
        log_info("data: created salt file %s", path);
        return 0;
    }
    if (errno != EEXIST) {
        util_seterr(err, errlen, "%s: cannot create the salt: %s", path, strerror(errno));
        return -1;
    }
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        util_seterr(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    int rc = -1;
    if (!S_ISREG(st.st_mode) || st.st_size != DICOM_SALTBYTES)
        util_seterr(err, errlen, "%s: not a %d-byte salt file", path, DICOM_SALTBYTES);
    else if (st.st_mode & 077)
        util_seterr(err, errlen, "%s: readable or writable by others (chmod 600)", path);
    else if (read(fd, salt, DICOM_SALTBYTES) != DICOM_SALTBYTES)
        util_seterr(err, errlen, "%s: cannot read the salt", path);
    else rc = 0;
    close(fd);
    return rc;
}

/* ---- the labels CSV ------------------------------------------------------------------ */

/* Splits one line into at most max fields in place (fields separated by sep;
 * a field may be quoted with "" as an escaped quote). Returns the count, -1 if
 * malformed. */
static int csv_split(char *line, char sep_char, char **f, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max) return -1;
        while (*p == ' ' || *p == '\t') p++;
        char *out = p, *start = p;
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"' && p[1] == '"') *out++ = '"', p += 2;
                else if (*p == '"') { p++; break; }
                else *out++ = *p++;
            }
            while (*p == ' ' || *p == '\t') p++;
            if (*p && *p != sep_char) return -1;
        } else {
            while (*p && *p != sep_char) out++, p++;
            while (out > start && (out[-1] == ' ' || out[-1] == '\t')) out--;
        }
        char sep = *p;
        *out = 0;
        f[n++] = start;
        if (!sep) return n;
        p++;
    }
}

/* The header's separator: ';' (spreadsheets in locales with a decimal comma
 * export CSV so) when it has semicolons outside quotes and no comma, else ','. */
static char csv_separator(const char *header)
{
    int quoted = 0, commas = 0, semis = 0;
    for (const char *p = header; *p; p++) {
        if (*p == '"') quoted = !quoted;
        else if (!quoted) commas += *p == ',', semis += *p == ';';
    }
    return semis > 0 && commas == 0 ? ';' : ',';
}

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const dicom_label_row_t *)a)->key, ((const dicom_label_row_t *)b)->key);
}

const dicom_label_row_t *dicom_common_find(const dicom_common_t *s, const char *key)
{
    if (!key[0]) return NULL;
    dicom_label_row_t k = {.key = (char *)key};
    return bsearch(&k, s->rows, s->nrows, sizeof k, row_cmp);
}

#define CSV_FIELDS_MAX 64

static int labels_load(dicom_common_t *s, const char *path, const char *key_opt, char *err,
                       size_t errlen)
{
    size_t len;
    int rc = -1;
    char *buf = util_read_file(path, DICOM_LABELS_MAX_BYTES, &len, err, errlen);
    if (!buf) return -1;
    if (memchr(buf, 0, len)) {
        util_seterr(err, errlen, "%s: not a text file", path);
        goto out;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    s->rows = calloc(lines, sizeof *s->rows);
    if (!s->rows) {
        util_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    int kcol = -1, lcol = -1, scol = -1, ncols = 0, lineno = 0;
    char sep = ',';
    char *f_[CSV_FIELDS_MAX];
    for (char *line = buf, *next; line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r') line[--ll] = 0;
        if (lineno == 1 && (unsigned char)line[0] == 0xef && (unsigned char)line[1] == 0xbb &&
            (unsigned char)line[2] == 0xbf)
            line += 3; /* a UTF-8 byte order mark from a spreadsheet */
        if (!line[0]) continue;
        if (!ncols) sep = csv_separator(line);
        int nf = csv_split(line, sep, f_, CSV_FIELDS_MAX);
        if (nf < 0) {
            util_seterr(err, errlen, "%s:%d: malformed CSV line", path, lineno);
            goto out;
        }
        if (!ncols) { /* the header */
            int kc[3] = {-1, -1, -1};
            for (int i = 0; i < nf; i++) {
                if (strcmp(f_[i], "label") == 0) lcol = i;
                if (strcmp(f_[i], "split") == 0) scol = i;
                for (int k = 0; k < 3; k++)
                    if (strcmp(f_[i], key_columns[k]) == 0) kc[k] = i;
            }
            for (int k = 2; k >= 0 && !key_opt; k--) /* the first present */
                if (kc[k] >= 0) s->key = (dicom_label_key_t)k;
            kcol = kc[s->key];
            if (kcol < 0 || lcol < 0) {
                util_seterr(err, errlen,
                            "%s:%d: header needs a label column and a %s column", path, lineno,
                            key_opt ? key_columns[s->key]
                                    : "AccessionNumber, SOPInstanceUID or file");
                goto out;
            }
            ncols = nf;
            continue;
        }
        if (nf != ncols) {
            util_seterr(err, errlen, "%s:%d: %d fields, the header has %d", path, lineno, nf,
                        ncols);
            goto out;
        }
        dicom_label_row_t *r = &s->rows[s->nrows];
        long long lab;
        if (!f_[kcol][0]) {
            util_seterr(err, errlen, "%s:%d: empty key", path, lineno);
            goto out;
        }
        if (util_parse_int(f_[lcol], 0, DICOM_LABEL_MAX, &lab) < 0) {
            util_seterr(err, errlen, "%s:%d: label is not an integer in 0..%d", path, lineno,
                        DICOM_LABEL_MAX);
            goto out;
        }
        r->split = -1;
        if (scol >= 0 && strcmp(f_[scol], "train") == 0) r->split = DATA_TRAIN;
        else if (scol >= 0 && strcmp(f_[scol], "val") == 0) r->split = DATA_VAL;
        else if (scol >= 0 && f_[scol][0]) {
            util_seterr(err, errlen, "%s:%d: split is not train, val or empty", path, lineno);
            goto out;
        }
        r->label = (int32_t)lab;
        r->line = lineno;
        r->key = strdup(f_[kcol]);
        if (!r->key) {
            util_seterr(err, errlen, "%s: out of memory", path);
            goto out;
        }
        s->nrows++;
    }
    if (!ncols) {
        util_seterr(err, errlen, "%s: empty (no header line)", path);
        goto out;
    }
    qsort(s->rows, s->nrows, sizeof *s->rows, row_cmp);
    for (size_t i = 1; i < s->nrows; i++)
        if (strcmp(s->rows[i - 1].key, s->rows[i].key) == 0) {
            /* no key in the message: it is a patient identifier */
            int a = s->rows[i - 1].line, b = s->rows[i].line;
            util_seterr(err, errlen, "%s:%d: key repeats line %d", path, a > b ? a : b,
                        a > b ? b : a);
            goto out;
        }
    rc = 0;
out:
    free(buf);
    return rc;
}


void dicom_common_free(dicom_common_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nrows; i++) free(s->rows[i].key);
    free(s->rows);
    s->rows = NULL;
    s->nrows = 0;
    crypto_wipe(s->salt, sizeof s->salt);
}

int dicom_common_parse(const data_conf_t *c, dicom_common_t *s, char *err, size_t errlen)
{
    common_conf_t cc = {.key = -1, .val_fraction = 0.1,
                        .prep = {.height = 28, .width = 28, .window = DICOM_WINDOW_AUTO}};
    memset(s, 0, sizeof *s);
    if (data_conf_apply(c, dicom_common_opts, DICOM_COMMON_NOPTS, &cc, err, errlen) < 0)
        return -1;
    const char *labels = cc.labels;
    if (!labels[0]) {
        util_seterr(err, errlen, "%s: [data] source %s needs labels (a CSV file)", c->file,
                    data_conf_get(c, "source"));
        return -1;
    }
    if (crypto_init() < 0) {
        util_seterr(err, errlen, "crypto_init failed");
        return -1;
    }
    s->val_fraction = cc.val_fraction;
    s->prep = cc.prep;
    /* not given: the header picks the best it has */
    s->key = cc.key < 0 ? DICOM_LABEL_FILE : (dicom_label_key_t)cc.key;
    const char *key_opt = cc.key < 0 ? NULL : key_names[cc.key];
    if (labels_load(s, labels, key_opt, err, errlen) < 0) goto fail;
    char saltp[PATH_MAX];
    if (cc.salt_file[0]) {
        util_strlcpy(saltp, cc.salt_file, sizeof saltp);
    } else {
        const char *slash = strrchr(labels, '/');
        int dl = slash ? (int)(slash - labels) : 1;
        if (snprintf(saltp, sizeof saltp, "%.*s/.medfed-salt", dl, slash ? labels : ".") >=
            (int)sizeof saltp) {
            util_seterr(err, errlen, "%s: salt path too long", c->file);
            goto fail;
        }
    }
    if (salt_load(saltp, s->salt, err, errlen) < 0) goto fail;
    return 0;
fail:
    dicom_common_free(s);
    return -1;
}

/* ---- counts ------------------------------------------------------------------------------ */

void dicom_counts_stats(const dicom_counts_t *c, data_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->found = c->found;
    out->labelled = c->labelled;
    out->decoded = c->decoded;
    for (int i = DICOM_OK + 1; i < DICOM_STATUS_COUNT && out->nskipped < DATA_SKIP_REASONS_MAX; i++)
        out->skipped[out->nskipped++] =
            (data_skip_t){dicom_status_name((dicom_status_t)i), c->skipped[i]};
}

/* ---- the split ---------------------------------------------------------------------------- */

int dicom_common_split(const dicom_common_t *s, const dicom_label_row_t *r)
{
    if (r->split >= 0) return r->split;
    size_t kl = strlen(r->key);
    uint8_t h[CRYPTO_HASHBYTES], *m = malloc(DICOM_SALTBYTES + 1 + kl);
    if (!m) return DATA_TRAIN;
    memcpy(m, s->salt, DICOM_SALTBYTES);
    m[DICOM_SALTBYTES] = 's'; /* domain: splits (dicom_image_ref uses 'r') */
    memcpy(m + DICOM_SALTBYTES + 1, r->key, kl);
    crypto_sha256(h, m, DICOM_SALTBYTES + 1 + kl);
    free(m);
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | h[i];
    return (double)(u >> 11) * 0x1p-53 < s->val_fraction ? DATA_VAL : DATA_TRAIN;
}

/* ---- progress of a long load ------------------------------------------------------------ */

void dicom_progress_start(dicom_progress_t *p, const char *what, size_t total, double every)
{
    *p = (dicom_progress_t){.what = what, .total = total, .every = every};
    p->t0 = p->last = util_now();
}

int dicom_progress_update(dicom_progress_t *p, size_t done, double now, char *line,
                          size_t linelen)
{
    char buf[256];
    if (!line) line = buf, linelen = sizeof buf;
    const double dt = now - p->t0, rate = dt > 0 ? (double)done / dt : 0;
    const double left = rate > 0 && p->total > done ? (double)(p->total - done) / rate : 0;
    int n = snprintf(line, linelen, "%s: %zu of %zu images (%.0f%%), %.1f images/s", p->what,
                     done, p->total, p->total ? 100.0 * (double)done / (double)p->total : 100.0,
                     rate);
    if (n > 0 && (size_t)n < linelen && done < p->total && rate > 0) {
        if (left >= 90) snprintf(line + n, linelen - (size_t)n, ", about %.0f min left", left / 60);
        else snprintf(line + n, linelen - (size_t)n, ", about %.0f s left", left);
    }
    if (now - p->last < p->every) return 0;
    p->last = now;
    p->lines++;
    log_info("%s", line);
    health_status("loading data: %s", line); /* what `systemctl status` shows meanwhile */
    return 1;
}
