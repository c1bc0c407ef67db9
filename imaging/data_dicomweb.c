/*
 * data_dicomweb.c - the "dicomweb" data source: images from a PACS over
 * DICOMweb (QIDO-RS search, WADO-RS retrieve), decoded in the worker process,
 * kept in a local tensor cache.
 *
 * One load does, in order:
 *   1. QIDO-RS /instances with the configured filters, paged (limit/offset),
 *      up to max_images; only four tags of each answer are read;
 *   2. per instance: no label for its AccessionNumber -> skipped unlabelled
 *      (never fetched); in the cache -> used; else a paced WADO-RS retrieve
 *      (multipart/related, one part), decoded by the worker, stored in the cache;
 *   3. a study goes to the validation split when a salted hash of its
 *      StudyInstanceUID falls under val_fraction (the same split every load).
 * Both splits are built by the first datasource_load; the second call hands
 * over the other. Every failure of one image is a skip with a reason, logged
 * with dicom_image_ref(); a PACS that cannot be reached fails the load with a
 * message naming the URL. Credentials are read from files only when needed
 * and wiped after the load; no tag value is ever logged.
 */
#include "imaging/data_dicomweb.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "imaging/dicom.h"
#include "imaging/dicom_source.h"
#include "imaging/dicomweb.h"
#include "imaging/tensor_cache.h"
#include "common/health.h"
#include "common/log.h"
#include "common/util.h"
#include "common/version.h"
#include "crypto/crypto.h"

#define DW_PAGE 100                         /* QIDO results per request */
#define DW_SEARCH_MAX_BYTES (64u << 20)     /* one QIDO answer */
#define DW_OBJECT_MAX_BYTES (512u << 20)    /* one WADO answer (the worker's limit) */
#define DW_SECRET_MAX 1024
#define DW_RETRIES 4                        /* after a 429 / 503 / transient error */
#define DW_BACKOFF_MAX 30.0
#define DW_TS_MAX 8                         /* distinct transfer syntaxes counted per load */

typedef enum { AUTH_NONE = 0, AUTH_BASIC, AUTH_TOKEN } dw_auth_t;

struct dw_source {
    char url[DATA_VALUE_MAX];
    char modality[65], body_part[65], study_description[129], date_from[9], date_to[9];
    int max_images;
    dw_auth_t auth;
    char username[256];
    char password_file[DATA_VALUE_MAX], token_file[DATA_VALUE_MAX], ca_file[DATA_VALUE_MAX];
    double rate, timeout;
    char cache_dir[DATA_VALUE_MAX];
    int cache_max_mb;
    uint64_t cache_max_bytes; /* cache_max_mb MiB */
    dicom_common_t common; /* prep, labels, salt, val_fraction: shared with the folder source */
    dataset_t split[2];
    int held[2];           /* split[i] built and not handed over yet */
    dicom_counts_t stats;
    /* per load */
    CURL *curl;
    struct curl_slist *headers;
    ratelimit_t pace;
    int unreachable;       /* the last request found no server (connect, resolve, time-outs) */
    struct {
        char uid[DICOMWEB_UID_MAX];
        size_t n;
    } ts[DW_TS_MAX];       /* transfer syntaxes retrieved, as the PACS sent them */
};

/* ---- configuration -------------------------------------------------------------- */

static const char *const auth_names[] = {"none", "basic", "token"};

static int parse_auth(const char *v, void *field, char *err, size_t errlen)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(v, auth_names[i]) == 0) return *(dw_auth_t *)field = (dw_auth_t)i, 0;
    util_seterr(err, errlen, "'auth' must be none, basic or token, got '%s'", v);
    return -1;
}

#define DW(f) offsetof(dw_source_t, f)
#define DW_STR(name, f) {name, CONF_STR, DW(f), sizeof(((dw_source_t *)0)->f), 0, 0, NULL}
const conf_opt_t dicomweb_opts[] = {
    DW_STR("url", url),
    DW_STR("modality", modality),
    DW_STR("body_part", body_part),
    DW_STR("study_description", study_description),
    DW_STR("date_from", date_from),
    DW_STR("date_to", date_to),
    {"max_images", CONF_INT, DW(max_images), 0, 1, 100000000, NULL},
    {"auth", CONF_CUSTOM, DW(auth), 0, 0, 0, parse_auth},
    DW_STR("username", username),
    DW_STR("password_file", password_file),
    DW_STR("token_file", token_file),
    DW_STR("ca_file", ca_file),
    {"max_requests_per_second", CONF_DOUBLE, DW(rate), 0, 0.01, 1000, NULL},
    {"timeout", CONF_DOUBLE, DW(timeout), 0, 1, 3600, NULL},
    DW_STR("cache_dir", cache_dir),
    {"cache_max_mb", CONF_INT, DW(cache_max_mb), 0, 1, 100000000, NULL},
};
_Static_assert(sizeof dicomweb_opts / sizeof dicomweb_opts[0] == DICOMWEB_NOPTS,
               "DICOMWEB_NOPTS: one row per key");

/* A QIDO filter value goes into a URL: letters, digits and a few marks. */
static int filter_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("*?-_.^ ", *s)))
            return 0;
    return 1;
}

static int date_ok(const char *s)
{
    if (strlen(s) != 8) return 0;
    for (int i = 0; i < 8; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    int m = (s[4] - '0') * 10 + (s[5] - '0'), d = (s[6] - '0') * 10 + (s[7] - '0');
    return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

/* Opens a secret file: refused if it is not a regular file or group/other can
 * read it. Reads at most DW_SECRET_MAX - 1 bytes without the final newline. */
static int read_secret(const char *path, char out[DW_SECRET_MAX], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        util_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        util_seterr(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (sb.st_mode & 077) {
        util_seterr(err, errlen, "%s: readable by group or others (mode %03o): chmod 600 it",
                    path, (unsigned)(sb.st_mode & 0777));
        close(fd);
        return -1;
    }
    ssize_t n = read(fd, out, DW_SECRET_MAX);
    close(fd);
    if (n < 0 || n >= DW_SECRET_MAX) {
        crypto_wipe(out, DW_SECRET_MAX);
        util_seterr(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "too long");
        return -1;
    }
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) n--;
    out[n] = '\0';
    if (n == 0 || memchr(out, '\0', (size_t)n) || memchr(out, '\n', (size_t)n) ||
        memchr(out, '\r', (size_t)n)) {
        crypto_wipe(out, DW_SECRET_MAX);
        util_seterr(err, errlen, "%s: empty, or more than one line", path);
        return -1;
    }
    return 0;
}

void *dicomweb_open(const data_conf_t *c, char *err, size_t errlen)
{
    dw_source_t *s = calloc(1, sizeof *s);
    if (!s) {
        util_seterr(err, errlen, "out of memory");
        return NULL;
    }
    s->rate = 5;
    s->timeout = 60;
    s->max_images = 1000000;
    s->cache_max_mb = 1024;
    s->auth = AUTH_NONE;
    const char *v;
    if (data_conf_apply(c, dicomweb_opts, DICOMWEB_NOPTS, s, err, errlen) < 0) goto fail;
    s->cache_max_bytes = (uint64_t)s->cache_max_mb << 20;
    if (!s->url[0]) {
        util_seterr(err, errlen, "%s: [data] source dicomweb needs url (the DICOMweb root, "
                    "e.g. https://pacs.example:8042/dicom-web)", c->file);
        goto fail;
    }
    {
        int https = strncmp(s->url, "https://", 8) == 0;
        const char *host = s->url + (https ? 8 : 7);
        if (!https && strncmp(s->url, "http://", 7) != 0) {
            util_seterr(err, errlen, "%s:%d: url must start with http:// or https://", c->file,
                        data_conf_line(c, "url"));
            goto fail;
        }
        size_t hl = strcspn(host, "/?#");
        if (memchr(host, '@', hl) || strpbrk(s->url, "?#")) {
            util_seterr(err, errlen, "%s:%d: url must not hold credentials, a query or a "
                        "fragment (use auth, username, password_file)", c->file,
                        data_conf_line(c, "url"));
            goto fail;
        }
        size_t n = strlen(s->url);
        while (n > 0 && s->url[n - 1] == '/') s->url[--n] = '\0';
    }
    const char *filters[] = {"modality", "body_part", "study_description"};
    for (int i = 0; i < 3; i++)
        if ((v = data_conf_get(c, filters[i])) && (!*v || !filter_ok(v))) {
            util_seterr(err, errlen, "%s:%d: %s may hold letters, digits, spaces and * ? - _ . ^ only",
                        c->file, data_conf_line(c, filters[i]), filters[i]);
            goto fail;
        }
    const char *dates[] = {"date_from", "date_to"};
    for (int i = 0; i < 2; i++)
        if ((v = data_conf_get(c, dates[i])) && !date_ok(v)) {
            util_seterr(err, errlen, "%s:%d: %s must be a date YYYYMMDD", c->file,
                        data_conf_line(c, dates[i]), dates[i]);
            goto fail;
        }
    if (s->date_from[0] && s->date_to[0] && strcmp(s->date_from, s->date_to) > 0) {
        util_seterr(err, errlen, "%s:%d: date_from is after date_to", c->file,
                    data_conf_line(c, "date_to"));
        goto fail;
    }
    if (s->auth == AUTH_BASIC && (!s->username[0] || !s->password_file[0])) {
        util_seterr(err, errlen, "%s:%d: auth = basic needs username and password_file", c->file,
                    data_conf_line(c, "auth"));
        goto fail;
    }
    if (s->auth == AUTH_TOKEN && !s->token_file[0]) {
        util_seterr(err, errlen, "%s:%d: auth = token needs token_file", c->file,
                    data_conf_line(c, "auth"));
        goto fail;
    }
    if ((s->auth != AUTH_BASIC && (s->username[0] || s->password_file[0])) ||
        (s->auth != AUTH_TOKEN && s->token_file[0])) {
        util_seterr(err, errlen, "%s:%d: credentials given but auth = %s", c->file,
                    data_conf_line(c, "auth"), auth_names[s->auth]);
        goto fail;
    }
    if (strchr(s->username, ':')) {
        util_seterr(err, errlen, "%s:%d: username must not contain ':'", c->file,
                    data_conf_line(c, "username"));
        goto fail;
    }
    /* secrets: checked now (a bad file refuses to start), read again at each load */
    char secret[DW_SECRET_MAX];
    const char *sf = s->auth == AUTH_BASIC ? s->password_file : s->token_file;
    if (s->auth != AUTH_NONE) {
        if (read_secret(sf, secret, err, errlen) < 0) goto fail;
        crypto_wipe(secret, sizeof secret);
    }
    if (s->ca_file[0] && access(s->ca_file, R_OK) < 0) {
        util_seterr(err, errlen, "%s:%d: ca_file %s: %s", c->file, data_conf_line(c, "ca_file"),
                    s->ca_file, strerror(errno));
        goto fail;
    }
    if (dicom_common_parse(c, &s->common, err, errlen) < 0) goto fail;
    if (s->auth != AUTH_NONE && strncmp(s->url, "http://", 7) == 0) {
        const char *h = s->url + 7;
        if (strncmp(h, "127.", 4) != 0 && strncmp(h, "localhost", 9) != 0 && strncmp(h, "[::1]", 5) != 0)
            log_warn("dicomweb: credentials sent over plain http to %s: use https and ca_file",
                     s->url);
    }
    return s;
fail:
    dicomweb_close(s);
    return NULL;
}

void dicomweb_close(void *state)
{
    dw_source_t *s = state;
    if (!s) return;
    dataset_free(&s->split[0]);
    dataset_free(&s->split[1]);
    dicom_common_free(&s->common);
    free(s);
}

/* ---- HTTP -------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap, max;
    int over;
} dw_buf_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    dw_buf_t *b = user;
    size_t len = size * nmemb;
    if (len > b->max - b->n) {
        b->over = 1;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < b->n + len + 1) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->over = 1;
            return 0;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = 0; /* text answers are NUL-terminated for free */
    return len;
}

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

typedef enum { GET_OK = 0, GET_FAILED, GET_DOWN } get_result_t;

/* GET url (paced, retried on 429 / 503 / a timeout), body into b. On failure
 * why says what happened without quoting url (it may name an instance). */
static get_result_t http_get(dw_source_t *s, const char *url, const char *accept, dw_buf_t *b,
                             char *ctype, size_t ctypelen, char *why, size_t whylen)
{
    struct curl_slist *h = curl_slist_append(NULL, accept);
    for (struct curl_slist *x = s->headers; h && x; x = x->next) {
        struct curl_slist *t = curl_slist_append(h, x->data);
        if (!t) {
            curl_slist_free_all(h);
            h = NULL;
        } else {
            h = t;
        }
    }
    if (!h) {
        util_seterr(why, whylen, "out of memory");
        return GET_FAILED;
    }
    get_result_t res = GET_FAILED;
    for (int attempt = 0;; attempt++) {
        b->n = 0;
        b->over = 0;
        health_ping(); /* systemd's watchdog: a PACS pull is one long step */
        sleep_s(ratelimit_reserve(&s->pace, util_now()));
        curl_easy_setopt(s->curl, CURLOPT_URL, url);
        curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, b);
        CURLcode rc = curl_easy_perform(s->curl);
        long status = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
        double retry_after = -1;
        if (rc == CURLE_OK && status >= 200 && status < 300) {
            char *ct = NULL;
            curl_easy_getinfo(s->curl, CURLINFO_CONTENT_TYPE, &ct);
            util_strlcpy(ctype, ct ? ct : "", ctypelen);
            res = GET_OK;
            break;
        }
        int transient;
        s->unreachable = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                         rc == CURLE_OPERATION_TIMEDOUT || (rc == CURLE_OK && status >= 500);
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
            rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION) {
            util_seterr(why, whylen, "%s", curl_easy_strerror(rc));
            res = GET_DOWN; /* no server, or not the one we trust: retrying will not help */
            break;
        } else if (rc != CURLE_OK) {
            util_seterr(why, whylen, "%s", b->over ? "answer too large" : curl_easy_strerror(rc));
            transient = rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_RECV_ERROR ||
                        rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE;
        } else {
            util_seterr(why, whylen, "HTTP %ld", status);
            if (status == 401 || status == 403) {
                util_seterr(why, whylen, "HTTP %ld: the PACS refused the credentials", status);
                res = GET_DOWN;
                break;
            }
            transient = status == 429 || status == 503;
            curl_off_t ra = 0;
            if (curl_easy_getinfo(s->curl, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
                retry_after = (double)ra;
        }
        if (!transient || attempt == DW_RETRIES) break;
        double w = dicomweb_backoff(attempt + 1, retry_after, DW_BACKOFF_MAX);
        log_debug("dicomweb: %s, retry %d in %.1f s", why, attempt + 1, w);
        sleep_s(w);
    }
    /* the list holds the Authorization header: wipe before freeing */
    for (struct curl_slist *x = h; x; x = x->next) crypto_wipe(x->data, strlen(x->data));
    curl_slist_free_all(h);
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, NULL);
    return res;
}

/* libcurl calls this about once a second during a transfer, a stalled one too. */
static int on_xfer(void *u, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                   curl_off_t ulnow)
{
    (void)u, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    health_ping();
    return 0;
}

static int session_start(dw_source_t *s, char *err, size_t errlen)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            util_seterr(err, errlen, "libcurl initialisation failed");
            return -1;
        }
        global_done = 1;
    }
    s->curl = curl_easy_init();
    if (!s->curl) {
        util_seterr(err, errlen, "libcurl initialisation failed");
        return -1;
    }
    ratelimit_init(&s->pace, s->rate);
    CURL *c = s->curl;
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(s->timeout * 1000));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(s->timeout < 10 ? s->timeout * 1000 : 10000));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "medfed-client");
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    if (s->ca_file[0]) curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
    if (s->auth == AUTH_NONE) return 0;
    char secret[DW_SECRET_MAX];
    if (read_secret(s->auth == AUTH_BASIC ? s->password_file : s->token_file, secret, err,
                    errlen) < 0)
        return -1;
    int rc = 0;
    if (s->auth == AUTH_BASIC) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, s->username);
        curl_easy_setopt(c, CURLOPT_PASSWORD, secret);
    } else {
        char hdr[DW_SECRET_MAX + 32];
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", secret);
        s->headers = curl_slist_append(NULL, hdr);
        crypto_wipe(hdr, sizeof hdr);
        if (!s->headers) {
            util_seterr(err, errlen, "out of memory");
            rc = -1;
        }
    }
    crypto_wipe(secret, sizeof secret);
    return rc;
}

static void session_end(dw_source_t *s)
{
    for (struct curl_slist *x = s->headers; x; x = x->next) crypto_wipe(x->data, strlen(x->data));
    curl_slist_free_all(s->headers);
    s->headers = NULL;
    if (s->curl) {
        curl_easy_setopt(s->curl, CURLOPT_PASSWORD, "");
        curl_easy_cleanup(s->curl);
    }
    s->curl = NULL;
}

/* ---- search ---------------------------------------------------------------------------- */

/* Appends name=value to q. Values were checked by filter_ok: they go in as
 * they are (Orthanc does not decode %2A into '*'), a space as %20. */
static int add_param(char *q, size_t qlen, const char *name, const char *value)
{
    if (!value || !value[0]) return 0;
    size_t n = strlen(q);
    int w = snprintf(q + n, qlen - n, "%s%s=", n ? "&" : "", name);
    if (w < 0 || (size_t)w >= qlen - n) return -1;
    n += (size_t)w;
    for (const char *v = value; *v; v++) {
        if (n + 4 > qlen) return -1;
        if (*v == ' ') memcpy(q + n, "%20", 3), n += 3;
        else q[n++] = *v;
    }
    q[n] = '\0';
    return 0;
}

static int search(dw_source_t *s, dicomweb_list_t *list, char *err, size_t errlen)
{
    dw_buf_t b = {.max = DW_SEARCH_MAX_BYTES};
    char filt[1024] = "", url[DATA_VALUE_MAX + 1200], range[20] = "";
    if (s->date_from[0] || s->date_to[0])
        snprintf(range, sizeof range, "%s-%s", s->date_from, s->date_to);
    if (add_param(filt, sizeof filt, "Modality", s->modality) < 0 ||
        add_param(filt, sizeof filt, "BodyPartExamined", s->body_part) < 0 ||
        add_param(filt, sizeof filt, "StudyDescription", s->study_description) < 0 ||
        add_param(filt, sizeof filt, "StudyDate", range) < 0 ||
        add_param(filt, sizeof filt, "includefield", "00080050") < 0) {
        util_seterr(err, errlen, "search filters too long");
        return -1;
    }
    size_t bad_total = 0;
    char first_sop[DICOM_KEY_MAX] = "";
    for (long long offset = 0; (long long)list->n < s->max_images;) {
        size_t before = list->n;
        long long limit = s->max_images - (long long)list->n;
        if (limit > DW_PAGE) limit = DW_PAGE;
        snprintf(url, sizeof url, "%s/instances?%s&limit=%lld&offset=%lld", s->url, filt, limit,
                 offset);
        char ct[128], why[256];
        get_result_t r = http_get(s, url, "Accept: application/dicom+json", &b, ct, sizeof ct, why,
                                  sizeof why);
        if (r != GET_OK) {
            util_seterr(err, errlen, "dicomweb: search at %s/instances failed: %s", s->url, why);
            free(b.p);
            return -1;
        }
        size_t entries, bad;
        if (dicomweb_qido_parse(b.n ? (const char *)b.p : "", b.n, list, &entries, &bad, why,
                                sizeof why) < 0) {
            util_seterr(err, errlen, "dicomweb: %s/instances: %s", s->url, why);
            free(b.p);
            return -1;
        }
        bad_total += bad;
        offset += (long long)entries;
        /* The end is an empty page (a PACS may cap pages below our limit). A
         * page that starts like the last one means the PACS ignores offset. */
        if (entries == 0) break;
        if (list->n > before) {
            if (first_sop[0] && strcmp(first_sop, list->v[before].sop_uid) == 0) {
                log_warn("dicomweb: the PACS returned the same page again (it ignores offset): "
                         "stopping the search at %zu images", before);
                list->n = before;
                break;
            }
            util_strlcpy(first_sop, list->v[before].sop_uid, sizeof first_sop);
        } else if (bad == entries && bad_total > (size_t)s->max_images) {
            break; /* page after page of unusable entries */
        }
    }
    free(b.p);
    if ((long long)list->n > s->max_images) list->n = (size_t)s->max_images;
    if (bad_total)
        log_warn("dicomweb: %zu search results without usable UIDs, skipped", bad_total);
    s->stats.skipped[DICOM_SKIP_FETCH] += bad_total;
    return 0;
}

/* ---- retrieve ---------------------------------------------------------------------------- */

/* Counts the transfer syntaxes the PACS sent (logged once the load is done). */
static void ts_count(dw_source_t *s, const char *uid)
{
    for (int i = 0; i < DW_TS_MAX; i++) {
        if (!s->ts[i].uid[0]) util_strlcpy(s->ts[i].uid, uid, sizeof s->ts[i].uid);
        if (strcmp(s->ts[i].uid, uid) == 0) {
            s->ts[i].n++;
            return;
        }
    }
}

static void ts_log(dw_source_t *s)
{
    char line[1024];
    size_t n = 0;
    for (int i = 0; i < DW_TS_MAX && s->ts[i].uid[0] && n < sizeof line - 200; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, "%s%s (%s) x%zu", i ? ", " : "",
                              dicomweb_transfer_syntax_name(s->ts[i].uid), s->ts[i].uid,
                              s->ts[i].n);
    if (n) log_info("dicomweb: transfer syntaxes as the PACS sent them: %s", line);
    memset(s->ts, 0, sizeof s->ts);
}

/* Fetches and decodes one instance. DICOM_OK with pixels in out; otherwise a
 * reason. *down is set when the PACS stopped answering altogether. */
static dicom_status_t fetch_one(dw_source_t *s, dicom_worker_t *w, const dicomweb_instance_t *in,
                                dw_buf_t *b, dicom_image_t *out, char *reason, size_t reasonlen,
                                int *down)
{
    char url[DATA_VALUE_MAX + 3 * DICOM_KEY_MAX + 64], ct[256];
    snprintf(url, sizeof url, "%s/studies/%s/series/%s/instances/%s", s->url, in->study_uid,
             in->series_uid, in->sop_uid);
    get_result_t r = http_get(s, url, DICOMWEB_ACCEPT_INSTANCE, b, ct, sizeof ct, reason,
                              reasonlen);
    if (r != GET_OK) {
        *down = r == GET_DOWN;
        return DICOM_SKIP_FETCH;
    }
    char boundary[DICOMWEB_BOUNDARY_MAX + 1];
    dicomweb_part_t part;
    size_t nparts;
    if (dicomweb_boundary(ct, boundary, reason, reasonlen) < 0 ||
        dicomweb_multipart_parse(b->p, b->n, boundary, DW_OBJECT_MAX_BYTES, &part, 1, &nparts,
                                 reason, reasonlen) < 0)
        return DICOM_SKIP_FETCH;
    if (part.content_type[0] && strncmp(part.content_type, "application/dicom", 17) != 0) {
        util_seterr(reason, reasonlen, "part is not application/dicom");
        return DICOM_SKIP_FETCH;
    }
    char ts[DICOMWEB_UID_MAX];
    if (dicomweb_transfer_syntax(part.data, part.len, ts) == 0) ts_count(s, ts);
    return dicom_worker_decode_mem(w, part.data, part.len, &s->common.prep, out, reason,
                                   reasonlen);
}

typedef struct {
    float *x;
    int32_t *y;
    uint8_t *val;
    size_t n, cap;
} dw_acc_t;

static int acc_push(dw_acc_t *a, const float *px, size_t per, int32_t y, int val)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        float *x = realloc(a->x, cap * per * sizeof *x);
        if (x) a->x = x;
        int32_t *yy = realloc(a->y, cap * sizeof *yy);
        if (yy) a->y = yy;
        uint8_t *v = realloc(a->val, cap);
        if (v) a->val = v;
        if (!x || !yy || !v) return -1;
        a->cap = cap;
    }
    memcpy(a->x + a->n * per, px, per * sizeof *px);
    a->y[a->n] = y;
    a->val[a->n] = (uint8_t)val;
    a->n++;
    return 0;
}

static int build_split(const dw_acc_t *a, size_t per, int want_val, const dicom_prep_t *prep,
                       dataset_t *out)
{
    memset(out, 0, sizeof *out);
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++) n += a->val[i] == want_val;
    out->x = malloc((n ? n : 1) * per * sizeof *out->x);
    out->y = malloc((n ? n : 1) * sizeof *out->y);
    if (!out->x || !out->y) {
        dataset_free(out);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->val[i] != want_val) continue;
        memcpy(out->x + k * per, a->x + i * per, per * sizeof *out->x);
        out->y[k++] = a->y[i];
    }
    out->n = (int64_t)n;
    out->channels = 1;
    out->height = prep->height;
    out->width = prep->width;
    return 0;
}

static void skip(dw_source_t *s, dicom_status_t st, const char *uid, const char *reason)
{
    char ref[17];
    dicom_image_ref(s->common.salt, uid, ref);
    s->stats.skipped[st]++;
    log_info("dicomweb: image %s skipped (%s): %s", ref, dicom_status_name(st), reason);
}

/* ---- the last search, kept with the cache -------------------------------------------
 * After a load the cache directory gets an index of what was loaded: one line
 * per image, "ENTRY-NAME LABEL VAL" (the salted entry name, no identifier). A
 * daemon restarted while the PACS is unreachable trains from it. */

#define DW_INDEX_MAGIC "medfed-dicomweb-index 1\n"

typedef struct {
    char (*name)[TENSOR_CACHE_KEYHEX + 1];
    int32_t *label;
    uint8_t *val;
    size_t n, cap;
} dw_index_t;

static int index_push(dw_index_t *x, const char *name, int32_t label, int val)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        void *a = realloc(x->name, cap * sizeof *x->name);
        if (a) x->name = a;
        void *b = realloc(x->label, cap * sizeof *x->label);
        if (b) x->label = b;
        void *c = realloc(x->val, cap);
        if (c) x->val = c;
        if (!a || !b || !c) return -1;
        x->cap = cap;
    }
    util_strlcpy(x->name[x->n], name, sizeof x->name[x->n]);
    x->label[x->n] = label;
    x->val[x->n] = (uint8_t)val;
    x->n++;
    return 0;
}

static void index_free(dw_index_t *x)
{
    free(x->name);
    free(x->label);
    free(x->val);
    memset(x, 0, sizeof *x);
}

/* The index file of this search and preprocessing (same salted naming as entries). */
static void index_path(const dw_source_t *s, const tensor_cache_t *cache, char *out, size_t len)
{
    char name[TENSOR_CACHE_KEYHEX + 1], what[DATA_VALUE_MAX + 512];
    snprintf(what, sizeof what, "search|%s|%s|%s|%s|%s|%s|%lld", s->url, s->modality,
             s->body_part, s->study_description, s->date_from, s->date_to,
             (long long)s->max_images);
    tensor_cache_key(cache, what, &s->common.prep, name);
    snprintf(out, len, "%s/index-%.16s", s->cache_dir, name);
}

static void index_save(const dw_source_t *s, const tensor_cache_t *cache, const dw_index_t *x)
{
    char path[DATA_VALUE_MAX + 64], err[512];
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return;
    fputs(DW_INDEX_MAGIC, f);
    for (size_t i = 0; i < x->n; i++)
        fprintf(f, "%s %d %d\n", x->name[i], (int)x->label[i], (int)x->val[i]);
    fclose(f);
    index_path(s, cache, path, sizeof path);
    if (util_write_file_atomic(path, text, len, err, sizeof err) < 0 || chmod(path, 0600) < 0)
        log_warn("dicomweb: cannot keep the search index: %s", err);
    free(text);
}

/* Training from the cache alone: -1 if there is no usable index. */
static int load_offline(dw_source_t *s, tensor_cache_t *cache, dw_acc_t *acc, float *px,
                        size_t per)
{
    char path[DATA_VALUE_MAX + 64], line[256];
    index_path(s, cache, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    const size_t tag = sizeof DW_INDEX_MAGIC - 3; /* "medfed-dicomweb-index " */
    const int have = fgets(line, sizeof line, f) != NULL;
    int ok = have && strcmp(line, DW_INDEX_MAGIC) == 0;
    if (have && !ok && strncmp(line, DW_INDEX_MAGIC, tag) == 0) {
        /* another medfed's format: say which, rather than "damaged" */
        const int n = (int)strcspn(line + tag, "\n");
        fclose(f);
        log_warn("dicomweb: the search index %s has format %.*s, this medfed %s reads format 1: "
                 "not used", path, n < 8 ? n : 8, line + tag, medfed_version());
        return -1;
    }
    size_t missing = 0;
    while (ok && fgets(line, sizeof line, f)) {
        char name[TENSOR_CACHE_KEYHEX + 1];
        int label, val;
        if (sscanf(line, "%64[0-9a-f] %d %d", name, &label, &val) != 3 ||
            strlen(name) != TENSOR_CACHE_KEYHEX || (val != 0 && val != 1)) {
            ok = 0;
            break;
        }
        s->stats.found++;
        s->stats.labelled++;
        if (!tensor_cache_get_named(cache, name, &s->common.prep, px)) {
            missing++;
            s->stats.skipped[DICOM_SKIP_FETCH]++;
            continue;
        }
        s->stats.decoded++;
        if (acc_push(acc, px, per, label, val) < 0) ok = 0;
    }
    fclose(f);
    if (!ok) {
        log_warn("dicomweb: the search index in the cache is damaged: not used");
        return -1;
    }
    if (missing) log_warn("dicomweb: %zu images of the last search are no longer cached", missing);
    return 0;
}

static int load_all(dw_source_t *s, char *err, size_t errlen)
{
    dicomweb_list_t list = {0};
    dw_acc_t acc = {0};
    dw_index_t index = {0};
    dw_buf_t b = {.max = DW_OBJECT_MAX_BYTES};
    dicom_worker_t *w = NULL;
    tensor_cache_t *cache = NULL;
    const dicom_prep_t *prep = &s->common.prep;
    size_t per = (size_t)prep->height * (size_t)prep->width;
    float *px = malloc(per * sizeof *px);
    int rc = -1;
    memset(&s->stats, 0, sizeof s->stats);
    if (!px) {
        util_seterr(err, errlen, "out of memory");
        return -1;
    }
    if (s->cache_dir[0]) {
        cache = tensor_cache_open(s->cache_dir, s->cache_max_bytes, s->common.salt, err, errlen);
        if (!cache) goto out;
    }
    if (session_start(s, err, errlen) < 0) goto out;
    double t0 = util_now();
    int offline = 0;
    if (search(s, &list, err, errlen) < 0) {
        /* The PACS is down: the images of the last search, if they are cached. */
        if (!cache || !s->unreachable) goto out;
        memset(&s->stats, 0, sizeof s->stats);
        if (load_offline(s, cache, &acc, px, per) < 0) goto out;
        log_warn("%s; training from the %zu cached images of the last search", err, acc.n);
        offline = 1;
    }
    if (!offline) {
        s->stats.found = (int64_t)list.n + s->stats.skipped[DICOM_SKIP_FETCH];
        log_info("dicomweb: %zu instances match at %s (%.1f s)", list.n, s->url, util_now() - t0);
    }
    size_t fetched = 0, cached = 0;
    dicom_progress_t prog;
    dicom_progress_start(&prog, "dicomweb", list.n, DICOM_PROGRESS_SECONDS);
    for (size_t i = 0; i < list.n; i++) {
        dicom_progress_update(&prog, i, util_now(), NULL, 0);
        const dicomweb_instance_t *in = &list.v[i];
        /* the key from the search; an accession number the search did not
         * return is read from the file once fetched */
        const char *key = s->common.key == DICOM_LABEL_SOP_UID ? in->sop_uid : in->accession;
        const dicom_label_row_t *row = dicom_common_find(&s->common, key);
        if (key[0] && !row) {
            skip(s, DICOM_SKIP_UNLABELLED, in->sop_uid, "no label");
            continue;
        }
        if (row) s->stats.labelled++;
        if (cache && row && tensor_cache_get(cache, in->sop_uid, prep, px)) {
            cached++;
        } else {
            if (!w && !(w = dicom_worker_start(err, errlen))) goto out;
            dicom_image_t img = {0};
            char reason[256] = "";
            int down = 0;
            dicom_status_t st = fetch_one(s, w, in, &b, &img, reason, sizeof reason, &down);
            if (down) {
                util_seterr(err, errlen, "dicomweb: %s stopped answering: %s", s->url, reason);
                goto out;
            }
            if (st != DICOM_OK) {
                skip(s, st, in->sop_uid, reason);
                continue;
            }
            fetched++;
            if (!row && !(row = dicom_common_find(&s->common, img.accession))) {
                free(img.pixels);
                skip(s, DICOM_SKIP_UNLABELLED, in->sop_uid, "no label");
                continue;
            }
            if (!key[0]) s->stats.labelled++;
            memcpy(px, img.pixels, per * sizeof *px);
            free(img.pixels);
            char cerr[256];
            if (cache && tensor_cache_put(cache, in->sop_uid, prep, px, cerr, sizeof cerr) < 0)
                log_warn("dicomweb: cache: %s", cerr);
        }
        s->stats.decoded++;
        int val = dicom_common_split(&s->common, row) == DATA_VAL;
        char name[TENSOR_CACHE_KEYHEX + 1];
        if (cache) tensor_cache_key(cache, in->sop_uid, prep, name);
        if (acc_push(&acc, px, per, row->label, val) < 0 ||
            (cache && index_push(&index, name, row->label, val) < 0)) {
            util_seterr(err, errlen, "out of memory after %zu images", acc.n);
            goto out;
        }
    }
    if (cache && !offline) index_save(s, cache, &index);
    ts_log(s);
    if (build_split(&acc, per, 0, prep, &s->split[DATA_TRAIN]) < 0 ||
        build_split(&acc, per, 1, prep, &s->split[DATA_VAL]) < 0) {
        dataset_free(&s->split[DATA_TRAIN]);
        util_seterr(err, errlen, "out of memory for %zu images", acc.n);
        goto out;
    }
    s->held[DATA_TRAIN] = s->held[DATA_VAL] = 1;
    double dt = util_now() - t0;
    log_info("dicomweb: %zu images (%lld train, %lld val): %zu fetched, %zu from cache, "
             "%zu skipped, %.1f s",
             acc.n, (long long)s->split[DATA_TRAIN].n, (long long)s->split[DATA_VAL].n, fetched,
             offline ? acc.n : cached,
             offline ? (size_t)s->stats.skipped[DICOM_SKIP_FETCH] : list.n - acc.n, dt);
    rc = 0;
out:
    session_end(s);
    dicom_worker_stop(&w);
    tensor_cache_close(&cache);
    dicomweb_list_free(&list);
    index_free(&index);
    free(acc.x);
    free(acc.y);
    free(acc.val);
    free(b.p);
    free(px);
    return rc;
}

int dicomweb_load(void *state, data_split_t split, dataset_t *out, char *err, size_t errlen)
{
    dw_source_t *s = state;
    memset(out, 0, sizeof *out);
    if (!s->held[split]) {
        dataset_free(&s->split[0]);
        dataset_free(&s->split[1]);
        s->held[0] = s->held[1] = 0;
        if (load_all(s, err, errlen) < 0) return -1;
    }
    *out = s->split[split];
    memset(&s->split[split], 0, sizeof s->split[split]);
    s->held[split] = 0;
    return 0;
}

void dicomweb_stats(const void *state, data_stats_t *out)
{
    const dw_source_t *s = state;
    dicom_counts_stats(&s->stats, out);
}
