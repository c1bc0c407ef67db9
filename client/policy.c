/*
 * policy.c - the hospital's own secure-aggregation rules and memory (policy.h).
 *
 * The released file is state_dir/released-SITE.
 * The peers file has the roster's line format ("NAME FINGERPRINT", 64 hex
 * digits, '#' comments), so roster_load reads it. The released file is one
 * header line and one record per line (128 hex digits: the version id and the
 * SHA-256 of the U3 the shares were released for), appended and fsync'd
 * (with its directory, the first time) before any share leaves the site.
 */
#include "client/policy.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregation/secagg.h"
#include "common/roster.h"
#include "common/util.h"
#include "common/version.h"

#define RELEASED_FORMAT 2
#define RELEASED_HEADER "medfed-released v2\n" /* the format's version: RELEASED_FORMAT */
#define RECORD_BYTES (2 * CRYPTO_HASHBYTES)   /* version id, U3 hash */
#define RECORD_LINE (2 * RECORD_BYTES + 1)

struct policy {
    int min_cohort;
    unsigned federation;                  /* sites colluders are a share of (0: unknown) */
    double max_collusion;
    roster_t *peers;                      /* NULL: no peers list */
    char path[PATH_MAX];                  /* state_dir/released */
    uint8_t (*released)[RECORD_BYTES];
    size_t n_released, cap_released;
};

static int state_dir_of(const client_conf_t *conf, char *out, size_t outlen)
{
    const char *env = getenv("STATE_DIRECTORY"); /* systemd's StateDirectory= */
    if (conf->state_dir[0]) return util_strlcpy(out, conf->state_dir, outlen);
    if (env && env[0] && !strchr(env, ':')) return util_strlcpy(out, env, outlen);
    char tmp[sizeof conf->data.file];
    memcpy(tmp, conf->data.file, sizeof tmp); /* the config file's path */
    return util_strlcpy(out, tmp[0] ? dirname(tmp) : ".", outlen);
}

static int add_record(policy_t *p, const uint8_t rec[RECORD_BYTES])
{
    if (p->n_released == p->cap_released) {
        size_t cap = p->cap_released ? 2 * p->cap_released : 64;
        void *n = realloc(p->released, cap * RECORD_BYTES);
        if (!n) return -1;
        p->released = n;
        p->cap_released = cap;
    }
    memcpy(p->released[p->n_released++], rec, RECORD_BYTES);
    return 0;
}

static int hexbyte(const char *s, uint8_t *out)
{
    unsigned v = 0;
    for (int i = 0; i < 2; i++) {
        char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else return -1;
    }
    *out = (uint8_t)v;
    return 0;
}

/* Reads state_dir/released (absent: nothing released yet). A torn last line
 * (a crash while appending, before the reveal) is ignored; anything else that
 * is not a record refuses the start: the file is the site's memory. */
static int load_released(policy_t *p, char *err, size_t errlen)
{
    size_t len;
    struct stat st;
    if (stat(p->path, &st) < 0 && errno == ENOENT) return 0;
    char *buf = util_read_file(p->path, (size_t)POLICY_RELEASED_MAX * RECORD_LINE + 64, &len, err,
                               errlen);
    if (!buf) return -1;
    size_t hl = sizeof RELEASED_HEADER - 1, off = hl;
    int rc = 0;
    if (len < hl && memcmp(buf, RELEASED_HEADER, len) == 0) {
        /* A crash while the file was first written, before any record (and
         * so before any reveal): nothing was released. */
        free(buf);
        if (truncate(p->path, 0) < 0) {
            snprintf(err, errlen, "%s: cannot cut a torn header: %s", p->path, strerror(errno));
            return -1;
        }
        return 0;
    }
    static const char tag[] = "medfed-released v";
    long long fmt;
    char num[12] = "";
    if (len > sizeof tag - 1 && memcmp(buf, tag, sizeof tag - 1) == 0) {
        const size_t n = strcspn(buf + sizeof tag - 1, "\n");
        snprintf(num, sizeof num, "%.*s", (int)(n < sizeof num - 1 ? n : sizeof num - 1),
                 buf + sizeof tag - 1);
    }
    if (num[0] && util_parse_int(num, 1, 1000000, &fmt) == 0 && fmt > RELEASED_FORMAT) {
        snprintf(err, errlen, "%s: written by a newer medfed (released-shares format v%lld; "
                 "this medfed %s reads v%d): run the newer medfed at this site", p->path, fmt,
                 medfed_version(), RELEASED_FORMAT);
        rc = -1;
    } else if (len < hl || memcmp(buf, RELEASED_HEADER, hl) != 0) {
        snprintf(err, errlen, "%s: not a medfed released-shares file", p->path);
        rc = -1;
    }
    for (int line = 2; rc == 0 && len - off >= RECORD_LINE; line++, off += RECORD_LINE) {
        uint8_t id[RECORD_BYTES];
        int ok = buf[off + RECORD_LINE - 1] == '\n';
        for (int i = 0; ok && i < RECORD_BYTES; i++) ok = hexbyte(buf + off + 2 * i, &id[i]) == 0;
        if (!ok) {
            snprintf(err, errlen, "%s:%d: not a 128-hex-digit record", p->path, line);
            rc = -1;
        } else if (add_record(p, id) < 0) {
            snprintf(err, errlen, "%s: out of memory", p->path);
            rc = -1;
        }
    }
    free(buf);
    /* A torn last line is a record that was never complete, so never acted
     * on: cut it, so that the next append starts a line of its own. */
    if (rc == 0 && off < len && truncate(p->path, (off_t)off) < 0) {
        snprintf(err, errlen, "%s: cannot cut a torn last line: %s", p->path, strerror(errno));
        rc = -1;
    }
    return rc;
}

policy_t *policy_new(const client_conf_t *conf, char *err, size_t errlen)
{
    policy_t *p = calloc(1, sizeof *p);
    char dir[PATH_MAX];
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->min_cohort = conf->min_cohort;
    p->max_collusion = conf->max_collusion;
    if (state_dir_of(conf, dir, sizeof dir) < 0 ||
        snprintf(p->path, sizeof p->path, "%s/released-%s", dir, conf->site) >= (int)sizeof p->path) {
        snprintf(err, errlen, "%s: [client] state_dir is too long", conf->data.file);
        goto fail;
    }
    if (conf->peers[0]) {
        p->peers = malloc(sizeof *p->peers);
        if (!p->peers) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (roster_load(conf->peers, p->peers, err, errlen) < 0) goto fail;
        for (int i = 0; i < p->peers->n; i++)
            if (!p->peers->site[i].has_pk) {
                snprintf(err, errlen, "%s: site '%s' has no fingerprint (NAME FINGERPRINT per line)",
                         conf->peers, p->peers->site[i].name);
                goto fail;
            }
    }
    if (load_released(p, err, errlen) < 0) goto fail;
    return p;
fail:
    policy_destroy(&p);
    return NULL;
}

void policy_destroy(policy_t **pp)
{
    if (!pp || !*pp) return;
    policy_t *p = *pp;
    free(p->peers);
    free(p->released);
    free(p);
    *pp = NULL;
}

int policy_has_peers(const policy_t *p)
{
    return p->peers != NULL;
}

int policy_peer_ok(const policy_t *p, const char *name, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                   char *why, size_t whylen)
{
    if (!p->peers) return 0;
    int i = roster_find(p->peers, name);
    if (i < 0) {
        snprintf(why, whylen, "policy: site '%s' is not on this site's peers list", name);
        return -1;
    }
    char fp[IDENTITY_HEXBYTES];
    uint8_t h[CRYPTO_HASHBYTES];
    crypto_sha256(h, pk, IDENTITY_PUBLICKEYBYTES);
    if (!crypto_equal(h, p->peers->site[i].pk, sizeof h)) {
        identity_fingerprint(fp, pk);
        snprintf(why, whylen, "policy: the key of site '%s' (fingerprint %.16s...) is not the one on "
                 "the peers list", name, fp);
        return -1;
    }
    return 0;
}

void policy_set_federation(policy_t *p, unsigned sites)
{
    p->federation = sites;
}

unsigned policy_federation(const policy_t *p)
{
    return p->peers ? (unsigned)p->peers->n : p->federation;
}

/* n sharing sites, c of them possibly colluding: n >= max(min_cohort, c + 2)
 * and t > (n + c) / 2. */
static int share_ok(const policy_t *p, unsigned n, unsigned c, unsigned t, const char *what,
                    char *why, size_t whylen)
{
    if (n < (unsigned)p->min_cohort) {
        snprintf(why, whylen, "policy: %u sites to share with%s, min_cohort is %d", n, what,
                 p->min_cohort);
        return -1;
    }
    if (n < c + 2) {
        snprintf(why, whylen, "policy: %u sites to share with%s, of which %u may collude "
                 "(max_collusion %.2f of the federation): fewer than two honest", n, what, c,
                 p->max_collusion);
        return -1;
    }
    unsigned need = (n + c) / 2 + 1;
    if (t < need) {
        snprintf(why, whylen, "policy: threshold %u for %u sites%s; max_collusion %.2f (%u "
                 "colluders) needs at least %u (more than half of the sites plus the colluders)",
                 t, n, what, p->max_collusion, c, need);
        return -1;
    }
    return 0;
}

int policy_cohort_ok(const policy_t *p, unsigned n, unsigned t, char *why, size_t whylen)
{
    unsigned c = secagg_colluders(n, policy_federation(p), p->max_collusion);
    if (share_ok(p, n, c, t, "", why, whylen) < 0) return -1;
    if (t > n) {
        snprintf(why, whylen, "policy: threshold %u exceeds the %u sites", t, n);
        return -1;
    }
    return 0;
}

int policy_graph_ok(const policy_t *p, unsigned n, unsigned k, unsigned t, char *why,
                    size_t whylen)
{
    if (k + 1 >= n) return policy_cohort_ok(p, n, t, why, whylen);
    /* We cannot check who else is in U1: every colluder of the federation
     * may be in our neighbourhood, so the all-pairs rule applies within it,
     * and the SecAgg+ bound on top. */
    unsigned c = secagg_colluders(n, policy_federation(p), p->max_collusion);
    if (share_ok(p, k + 1, c, t, " (our neighbourhood)", why, whylen) < 0) return -1;
    unsigned need = secagg_plus_threshold(n, k, p->max_collusion);
    unsigned floor_t = (k + 1 + c) / 2 + 1;
    if (!need) {
        snprintf(why, whylen, "policy: degree %u among %u sites is below what max_collusion %.2f "
                 "allows at any threshold (SecAgg+ bound, security 2^-%d)", k, n,
                 p->max_collusion, SECAGG_SIGMA);
        return -1;
    }
    if (need < floor_t) need = floor_t;
    if (t < need || t > k + 1) {
        snprintf(why, whylen, "policy: threshold %u for neighbourhoods of %u among %u sites; "
                 "max_collusion %.2f needs %u..%u (SecAgg+ bound, security 2^-%d)", t, k + 1, n,
                 p->max_collusion, need, k + 1, SECAGG_SIGMA);
        return -1;
    }
    return 0;
}

void policy_version_id(uint8_t id[CRYPTO_HASHBYTES], const uint8_t coordinator_pk[32],
                       const uint8_t model_hash[CRYPTO_HASHBYTES])
{
    uint8_t buf[32 + CRYPTO_HASHBYTES];
    memcpy(buf, coordinator_pk, 32);
    memcpy(buf + 32, model_hash, CRYPTO_HASHBYTES);
    crypto_sha256(id, buf, sizeof buf);
}

int policy_released(const policy_t *p, const uint8_t id[CRYPTO_HASHBYTES])
{
    for (size_t i = 0; i < p->n_released; i++)
        if (memcmp(p->released[i], id, CRYPTO_HASHBYTES) == 0) return 1;
    return 0;
}

int policy_release_check(const policy_t *p, const uint8_t id[CRYPTO_HASHBYTES],
                         const uint8_t u3[CRYPTO_HASHBYTES])
{
    int seen = 0;
    for (size_t i = 0; i < p->n_released; i++) {
        if (memcmp(p->released[i], id, CRYPTO_HASHBYTES) != 0) continue;
        if (memcmp(p->released[i] + CRYPTO_HASHBYTES, u3, CRYPTO_HASHBYTES) == 0) return 1;
        seen = 1;
    }
    return seen ? -1 : 0;
}

int policy_record_release(policy_t *p, const uint8_t id[CRYPTO_HASHBYTES],
                          const uint8_t u3[CRYPTO_HASHBYTES], char *err, size_t errlen)
{
    uint8_t rec[RECORD_BYTES];
    memcpy(rec, id, CRYPTO_HASHBYTES);
    memcpy(rec + CRYPTO_HASHBYTES, u3, CRYPTO_HASHBYTES);
    if (policy_release_check(p, id, u3) == 1) return 0; /* recorded already */
    if (p->n_released >= POLICY_RELEASED_MAX) {
        snprintf(err, errlen, "%s: full (%d records)", p->path, POLICY_RELEASED_MAX);
        return -1;
    }
    struct stat st;
    int fresh = stat(p->path, &st) < 0 || st.st_size == 0;
    int fd = open(p->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s (set [client] state_dir to a writable directory)",
                 p->path, strerror(errno));
        return -1;
    }
    char line[sizeof RELEASED_HEADER + RECORD_LINE];
    size_t len = 0;
    if (fresh) {
        memcpy(line, RELEASED_HEADER, sizeof RELEASED_HEADER - 1);
        len = sizeof RELEASED_HEADER - 1;
    }
    for (int i = 0; i < RECORD_BYTES; i++) {
        static const char hex[] = "0123456789abcdef";
        line[len++] = hex[rec[i] >> 4];
        line[len++] = hex[rec[i] & 15];
    }
    line[len++] = '\n';
    int ok = write(fd, line, len) == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (ok && fresh) ok = util_fsync_dir_of(p->path) == 0;
    if (!ok) {
        snprintf(err, errlen, "%s: cannot record the release: %s", p->path, strerror(saved));
        return -1;
    }
    if (add_record(p, rec) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

const char *policy_state_file(const policy_t *p)
{
    return p->path;
}
