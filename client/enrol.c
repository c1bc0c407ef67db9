/*
 * enrol.c - `medfed-client enrol` (see enrol.h): the site's keys are made on
 * the site's machine, and only a certificate request and a fingerprint leave
 * it.
 *
 * Nothing existing is touched: every output path is checked first, and if
 * writing fails half-way the files this run wrote are removed, so a failed
 * enrolment can simply be run again. Secret keys go through keyfile_save
 * (0600, atomic) and are wiped on every path.
 */
#include "client/enrol.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"

#define PROG "medfed-client enrol"
#define PATH_CAP (PATH_MAX + 128)

enum { F_IDENTITY, F_CURVE, F_CSR, F_INI, F_COUNT };

typedef struct {
    const char *site, *coordinator;
    char dir[PATH_MAX];                 /* --out, absolute */
    char path[F_COUNT][PATH_CAP];
    int written[F_COUNT];
} enrol_t;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: medfed-client enrol --site NAME --out DIR [--coordinator tcp://HOST:PORT]\n"
        "  --site NAME          this site's name on the federation roster (letters, digits,\n"
        "                       '-', '_', '.'), as agreed with the research lead\n"
        "  --out DIR            where the keys go (created 0700; e.g. /etc/medfed)\n"
        "  --coordinator URL    the coordinator's endpoint, written into client.ini\n"
        "Makes identity.key and curve.key (0600; they never leave this machine), NAME.csr\n"
        "(send it to the research lead) and client.ini, and prints the fingerprint to read\n"
        "out to the lead over the phone. Existing files are never overwritten.\n");
}

/* Every function below returns 0, or -1 with err saying what and which file. */

/* DIR exists (made 0700 if it did not) and is absolute in e->dir; none of
 * the files enrol writes is there yet. */
static int prepare(enrol_t *e, const char *out, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(out, &st) != 0) {
        if (util_mkdirs(out, err, errlen) < 0) return -1;
        if (chmod(out, 0700) < 0) goto sys_err;
    }
    if (!realpath(out, e->dir)) goto sys_err;
    if (stat(e->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        util_seterr(err, errlen, "%s: not a directory", out);
        return -1;
    }
    const char *names[F_COUNT] = {"identity.key", "curve.key", NULL, "client.ini"};
    for (int i = 0; i < F_COUNT; i++) {
        const int n = names[i] ? snprintf(e->path[i], PATH_CAP, "%s/%s", e->dir, names[i])
                               : snprintf(e->path[i], PATH_CAP, "%s/%s.csr", e->dir, e->site);
        if (n < 0 || n >= PATH_CAP) {
            util_seterr(err, errlen, "%s: path too long", e->dir);
            return -1;
        }
        if (lstat(e->path[i], &st) == 0) {
            util_seterr(err, errlen, "%s exists: enrol never overwrites a site's keys or request "
                        "(this site is enrolled already; to start over, move the files away)",
                        e->path[i]);
            return -1;
        }
    }
    return 0;
sys_err:
    util_seterr(err, errlen, "%s: %s", out, strerror(errno));
    return -1;
}

static int write_public(enrol_t *e, int which, const char *text, size_t len, char *err,
                        size_t errlen)
{
    if (util_write_file_atomic(e->path[which], text, len, err, errlen) < 0) return -1;
    e->written[which] = 1;
    return 0;
}

/* The [client] section for the files enrol wrote and those the lead sends back. */
static int write_ini(enrol_t *e, char *err, size_t errlen)
{
    char text[4 * PATH_CAP + 2048];
    const char *d = e->dir;
    char coord[160];
    if (e->coordinator)
        snprintf(coord, sizeof coord, "coordinator = %s", e->coordinator);
    else
        snprintf(coord, sizeof coord, ";coordinator = tcp://HOST:7700");
    const int n = snprintf(text, sizeof text,
        "; written by medfed-client enrol for site '%s'. The keys were made on this\n"
        "; machine and must stay here, mode 0600. Complete this file when the research\n"
        "; lead's return kit arrives (%s.crt, ca.crt, coordinator.pub: copy them into\n"
        "; %s), then check it: medfed-client --config %s/client.ini --check\n"
        "[client]\n"
        "site = %s\n"
        "; the coordinator's endpoint, as the research lead gives it\n"
        "%s\n"
        "; this site's Ed25519 identity key; its certificate from the federation CA\n"
        "; (issued from %s.csr) and the CA's certificate, both from the return kit\n"
        "identity = %s/identity.key\n"
        "certificate = %s/%s.crt\n"
        "ca = %s/ca.crt\n"
        "; CURVE transport: this site's key, and the coordinator's public key: the 64\n"
        "; hex digits of the return kit's coordinator.pub (the daemon refuses to start\n"
        "; until it is set)\n"
        "curve_key = %s/curve.key\n"
        ";coordinator_key = \n"
        "threads = 2\n"
        "log_level = info\n"
        "\n"
        "[policy]\n"
        "; the federation's members this site accepts (NAME FINGERPRINT lines: the lead's\n"
        "; peers.txt); uncomment once each fingerprint is checked with its site by phone\n"
        ";peers = %s/peers.txt\n"
        "\n"
        "; [data]: where the images are (configs/client.ini, docs/PACS.md).\n",
        e->site, e->site, d, d, e->site, coord, e->site, d, d, e->site, d, d, d);
    if (n < 0 || (size_t)n >= sizeof text) {
        util_seterr(err, errlen, "%s: paths too long", e->path[F_INI]);
        return -1;
    }
    return write_public(e, F_INI, text, (size_t)n, err, errlen);
}

/* Both key pairs, saved; the request for them. The secret keys are wiped here. */
static int make_files(enrol_t *e, uint8_t id_pk[IDENTITY_PUBLICKEYBYTES], char *err,
                      size_t errlen)
{
    uint8_t id_sk[IDENTITY_SECRETKEYBYTES], curve_sk[CURVE_KEYBYTES], curve_pk[CURVE_KEYBYTES];
    char pem[CERT_PEM_MAX], why[256];
    size_t pem_len = 0;
    int rc = -1;
    if (identity_keypair(id_pk, id_sk) < 0 || curve_keypair(curve_pk, curve_sk) < 0) {
        util_seterr(err, errlen, "key generation failed");
        goto err;
    }
    if (identity_save_secret(e->path[F_IDENTITY], id_sk, err, errlen) < 0) goto err;
    e->written[F_IDENTITY] = 1;
    if (keyfile_save(e->path[F_CURVE], curve_sk, sizeof curve_sk, err, errlen) < 0) goto err;
    e->written[F_CURVE] = 1;
    if (cert_request_make(pem, &pem_len, e->site, id_sk, curve_pk, why, sizeof why) < 0) {
        util_seterr(err, errlen, "%s: %s", e->path[F_CSR], why);
        goto err;
    }
    if (write_public(e, F_CSR, pem, pem_len, err, errlen) < 0 || write_ini(e, err, errlen) < 0)
        goto err;
    rc = 0;
err:
    crypto_wipe(id_sk, sizeof id_sk);
    crypto_wipe(curve_sk, sizeof curve_sk);
    return rc;
}

int enrol_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"site", required_argument, 0, 's'},
        {"out", required_argument, 0, 'o'},
        {"coordinator", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static enrol_t e;
    memset(&e, 0, sizeof e);
    const char *out = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': e.site = optarg; break;
        case 'o': out = optarg; break;
        case 'c': e.coordinator = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !e.site || !out) {
        usage(stderr);
        return 2;
    }
    if (!cert_name_ok(e.site)) {
        fprintf(stderr, PROG ": --site '%.80s': use 1-63 letters, digits, '-', '_', '.'\n", e.site);
        return 2;
    }
    /* The daemon checks the whole endpoint when it loads client.ini. */
    if (e.coordinator && (strncmp(e.coordinator, "tcp://", 6) != 0 || strchr(e.coordinator, '\n'))) {
        fprintf(stderr, PROG ": --coordinator is tcp://HOST:PORT, got '%.200s'\n", e.coordinator);
        return 2;
    }
    char err[PATH_CAP + 256];
    uint8_t pk[IDENTITY_PUBLICKEYBYTES];
    if (crypto_init() < 0) {
        util_seterr(err, sizeof err, "crypto library failed to initialise");
        goto err;
    }
    if (prepare(&e, out, err, sizeof err) < 0) goto err;
    if (make_files(&e, pk, err, sizeof err) < 0) {
        /* Nothing half-made stays behind: enrol can simply run again. */
        for (int i = 0; i < F_COUNT; i++)
            if (e.written[i]) unlink(e.path[i]);
        goto err;
    }
    char fpr[IDENTITY_HEXBYTES], grouped[CERT_FPR_GROUPED_BYTES];
    identity_fingerprint(fpr, pk);
    cert_fingerprint_grouped(grouped, pk);
    printf("enrol: site %s: identity.key and curve.key in %s (mode 0600; they never leave "
           "this machine)\n"
           "enrol: send %s to the research lead (it holds no secret)\n"
           "enrol: %s: complete it when the lead's return kit arrives\n"
           "site:        %s\n"
           "fingerprint: %s\n"
           "read aloud:  %s\n"
           "Read the fingerprint to the research lead over the phone: `medfed provision "
           "--sign` shows the same one for this request.\n",
           e.site, e.dir, e.path[F_CSR], e.path[F_INI], e.site, fpr, grouped);
    return 0;
err:
    fprintf(stderr, PROG ": %s\n", err);
    return 1;
}
