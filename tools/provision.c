/*
 * provision.c - `medfed provision`: makes the federation CA, the coordinator's
 * and the admin's keys and configs, signs the sites' certificate requests
 * (--sign: a site's keys never leave it), and for simulations and tests one
 * all-in-one kit per site (--roster; see provision.h for the layout).
 *
 * Every file is made only if it is missing, so the command is idempotent and
 * a second run with one more site in SITES.txt adds that site's kit and its
 * roster line and touches nothing else. The roster's line order is the
 * sites' ids: new sites are appended, never reordered. Secret keys go through
 * keyfile_save (0600, atomic) and are wiped after use; the CA key stays in
 * ca/, which no kit includes.
 */
#include "tools/provision.h"

#include <ctype.h>
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/roster.h"
#include "common/util.h"
#include "crypto/cert.h"
#include "crypto/crypto.h"

#define PROG "medfed provision"
#define PATH_CAP (PATH_MAX + 128)

typedef struct {
    const char *sites_file, *out, *endpoint, *admin_endpoint, *federation;
    const char *request, *ca_dir, *fingerprint;   /* --sign REQ --ca-dir DIR [--fingerprint] */
    const char *renew;                  /* --renew SITE --ca-dir DIR */
    const char *install;                /* --install-dir: where the kits' files will live */
    int days;
    char dir[PATH_MAX];                 /* out (--sign: above --ca-dir), absolute (config files
                                           name absolute paths) */
    uint8_t ca_der[CERT_DER_MAX];
    size_t ca_len;
    char ca_pem[CERT_PEM_MAX];
    size_t ca_pem_len;
    char coord_pk_hex[IDENTITY_HEXBYTES];
    int created;                        /* files written by this run */
} prov_t;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: medfed provision --out DIR --endpoint tcp://HOST:PORT [--admin-endpoint URL]\n"
        "                        [--federation NAME] [--days N] [--install-dir /etc/medfed]\n"
        "                        [--roster SITES.txt]\n"
        "       medfed provision --sign SITE.csr --ca-dir DIR/ca --out KITDIR\n"
        "                        [--fingerprint HEX] [--days N]\n"
        "       medfed provision --renew SITE --ca-dir DIR/ca --out KITDIR [--days N]\n"
        "  --out DIR               where the CA, the coordinator's and the admin's kits go\n"
        "                          (created 0700)\n"
        "  --sign FILE             a site's certificate request (medfed-client enrol): check\n"
        "                          it, print its fingerprint, issue its certificate, add it to\n"
        "                          DIR/coordinator/roster.txt and peers.txt, and write the\n"
        "                          site's return kit (NAME.crt ca.crt coordinator.pub) into\n"
        "                          KITDIR; the site's secret keys never come here\n"
        "  --renew SITE            re-issue SITE's certificate (same key, from the roster)\n"
        "                          before it expires: DIR/ca/issued/SITE.crt and KITDIR/SITE.crt\n"
        "                          (and DIR/sites/SITE/identity.crt when --roster made it);\n"
        "                          the site replaces its certificate file and restarts\n"
        "  --ca-dir DIR/ca         the CA that medfed provision made (DIR is its parent)\n"
        "  --fingerprint HEX       what the site read out over the phone: refuse another one\n"
        "  --roster FILE           SIMULATIONS AND TESTS ONLY: site names, one per line ('#'\n"
        "                          comments); makes every site's secret keys here\n"
        "  --endpoint URL          the coordinator's address as the sites reach it\n"
        "  --admin-endpoint URL    the coordinator's admin socket (tcp://127.0.0.1:7701)\n"
        "  --federation NAME       the CA's name: CN \"medfed federation CA NAME\" (medfed)\n"
        "  --days N                validity of new site certificates in days (%d)\n"
        "  --install-dir DIR       the configs name DIR/FILE for every key, certificate and\n"
        "                          roster (copy each kit's files into DIR on its machine);\n"
        "                          default: where the kit is made\n"
        "Existing files are never changed; run it again to add what is missing.\n"
        "Keep DIR/ca/ offline: its key signs every site's certificate.\n",
        CERT_SITE_DAYS);
}

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

/* ---- files ------------------------------------------------------------------------------ */

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* dir/name into out: dir is shorter than PATH_MAX and names are short. */
static char *join(char out[PATH_CAP], const char *dir, const char *name)
{
    const int n = snprintf(out, PATH_CAP, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_CAP) abort();
    return out;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        return fail("%s: exists and is not a directory", path);
    }
    return fail("%s: mkdir failed: %s", path, strerror(errno));
}

/* A public file (certificate, config, public key): written once, atomically. */
static int write_new(prov_t *p, const char *path, const void *data, size_t len)
{
    char err[PATH_CAP + 64];
    if (exists(path)) return 0;
    if (util_write_file_atomic(path, data, len, err, sizeof err) < 0) return fail("%s", err);
    p->created++;
    return 0;
}

static int read_text(const char *path, char *buf, size_t cap, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f) return fail("%s: cannot open: %s", path, strerror(errno));
    *len = fread(buf, 1, cap, f);
    const int bad = ferror(f) || *len == cap;
    fclose(f);
    if (bad) return fail("%s: unreadable or larger than %zu bytes", path, cap - 1);
    buf[*len] = '\0';
    return 0;
}

/* The secret key at path: loaded if the file is there, else made and saved.
 * pk gets its public half: Ed25519 if identity, else a CURVE (X25519) key. */
static int ensure_key(prov_t *p, const char *path, int identity, uint8_t *pk)
{
    char err[PATH_CAP + 128];
    uint8_t sk[IDENTITY_SECRETKEYBYTES];
    const size_t sklen = identity ? IDENTITY_SECRETKEYBYTES : CURVE_KEYBYTES;
    int rc = -1;
    if (exists(path)) {
        if ((identity ? identity_load_secret(path, sk, err, sizeof err)
                      : keyfile_load(path, sk, sklen, err, sizeof err)) < 0) {
            fail("%s", err);
        } else if (identity) {
            identity_pk_of(pk, sk);
            rc = 0;
        } else {
            rc = curve_pk_of(pk, sk) == 0 ? 0 : fail("%s: not a CURVE key", path);
        }
    } else if ((identity ? identity_keypair(pk, sk) : curve_keypair(pk, sk)) < 0) {
        fail("key generation failed");
    } else if (keyfile_save(path, sk, sklen, err, sizeof err) < 0) {
        fail("%s", err);
    } else {
        p->created++;
        rc = 0;
    }
    crypto_wipe(sk, sizeof sk);
    return rc;
}

/* ---- SITES.txt ------------------------------------------------------------------------ */

static int read_sites(const char *path, char (*names)[ROSTER_NAME_MAX], int *n)
{
    FILE *f = fopen(path, "r");
    if (!f) return fail("%s: cannot open: %s", path, strerror(errno));
    char line[512];
    int lineno = 0, rc = 0;
    *n = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char name[512], extra[8];
        const int k = sscanf(line, "%511s %7s", name, extra);
        if (!strchr(line, '\n') && !feof(f))
            rc = fail("%s:%d: line too long", path, lineno);
        else if (k <= 0 || name[0] == '#')
            continue;
        else if (k > 1 && extra[0] != '#')
            rc = fail("%s:%d: one site name per line", path, lineno);
        else if (!cert_name_ok(name))
            rc = fail("%s:%d: site name '%.80s': use 1-63 letters, digits, '-', '_', '.'", path,
                      lineno, name);
        else if (*n == ROSTER_MAX)
            rc = fail("%s:%d: more than %d sites", path, lineno, ROSTER_MAX);
        else {
            for (int i = 0; i < *n; i++)
                if (strcmp(names[i], name) == 0) rc = fail("%s:%d: site '%s' listed twice", path, lineno, name);
            if (rc == 0) util_strlcpy(names[(*n)++], name, ROSTER_NAME_MAX);
        }
    }
    fclose(f);
    if (rc == 0 && *n == 0) rc = fail("%s: no site names", path);
    return rc;
}

/* ---- the parts of the kit ---------------------------------------------------------------- */

/* The CA certificate at crt into p (DER and PEM), checked as a CA. */
static int load_ca(prov_t *p, const char *crt)
{
    char err[PATH_CAP + 128];
    if (cert_load_file(crt, p->ca_der, &p->ca_len, err, sizeof err) < 0 ||
        cert_der_to_pem(p->ca_pem, &p->ca_pem_len, p->ca_der, p->ca_len, err, sizeof err) < 0)
        return fail("%s", err);
    cert_ca_t *ca = cert_ca_new(p->ca_der, p->ca_len, err, sizeof err);
    if (!ca) return fail("%s: %s", crt, err);
    cert_ca_destroy(&ca);
    return 0;
}

static int make_ca(prov_t *p)
{
    char dir[PATH_CAP], key[PATH_CAP], crt[PATH_CAP], err[PATH_CAP + 128];
    join(dir, p->dir, "ca");
    join(key, dir, "ca.key");
    join(crt, dir, "ca.crt");
    if (make_dir(dir) < 0) return -1;
    if (exists(key) != exists(crt))
        return fail("%s: one of ca.key and ca.crt is missing; restore it (a new CA would "
                    "invalidate every site's certificate)", dir);
    uint8_t pk[IDENTITY_PUBLICKEYBYTES];
    if (!exists(crt)) {
        uint8_t sk[IDENTITY_SECRETKEYBYTES];
        int rc = identity_keypair(pk, sk) == 0 &&
                         cert_make_ca(p->ca_der, &p->ca_len, p->federation, sk, CERT_CA_DAYS, err,
                                      sizeof err) == 0 &&
                         keyfile_save(key, sk, sizeof sk, err, sizeof err) == 0
                     ? 0
                     : -1;
        crypto_wipe(sk, sizeof sk);
        if (rc < 0) return fail("CA: %s", err);
        p->created++;
        if (cert_der_to_pem(p->ca_pem, &p->ca_pem_len, p->ca_der, p->ca_len, err, sizeof err) < 0)
            return fail("CA: %s", err);
        if (write_new(p, crt, p->ca_pem, p->ca_pem_len) < 0) return -1;
        printf("provision: federation CA \"medfed federation CA %s\" in %s\n", p->federation, dir);
    } else if (load_ca(p, crt) < 0) {
        return -1;
    }
    return 0;
}

/* A certificate for pk as PEM, issued with the CA key (loaded for this call only). */
static int issue_pem(prov_t *p, const char *site, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                     char pem[CERT_PEM_MAX], size_t *pem_len)
{
    char key[PATH_CAP], err[PATH_CAP + 128];
    uint8_t sk[IDENTITY_SECRETKEYBYTES], der[CERT_DER_MAX];
    size_t len = 0;
    join(key, p->dir, "ca/ca.key");
    int rc = identity_load_secret(key, sk, err, sizeof err) == 0 &&
                     cert_issue(der, &len, site, pk, p->ca_der, p->ca_len, sk, p->days, err,
                                sizeof err) == 0 &&
                     cert_der_to_pem(pem, pem_len, der, len, err, sizeof err) == 0
                 ? 0
                 : -1;
    crypto_wipe(sk, sizeof sk);
    return rc < 0 ? fail("%s: %s", site, err) : 0;
}

static int issue(prov_t *p, const char *site, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                 const char *path)
{
    char pem[CERT_PEM_MAX];
    size_t pem_len = 0;
    return issue_pem(p, site, pk, pem, &pem_len) < 0 ? -1 : write_new(p, path, pem, pem_len);
}

static int write_hexfile(prov_t *p, const char *path, const uint8_t pk[32])
{
    char hex[IDENTITY_HEXBYTES + 1];
    identity_pk_to_hex(hex, pk);
    hex[IDENTITY_HEXBYTES - 1] = '\n';
    hex[IDENTITY_HEXBYTES] = '\0';
    return write_new(p, path, hex, IDENTITY_HEXBYTES);
}

/* The coordinator's admin_bind for the admin endpoint tcp://HOST:PORT: an IP
 * address (127.0.0.1 above all: the admin socket then stays on the machine) is
 * bound as it is, "localhost" as 127.0.0.1; a host name is bound on every
 * interface (ZeroMQ binds addresses and interfaces, not names). */
static void admin_bind_of(const char *endpoint, char *out, size_t outlen)
{
    const char *host = endpoint + 6, *colon = strrchr(endpoint, ':'); /* endpoint_ok said so */
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(colon - host), host);
    unsigned char addr[16];
    const char *bind = "0.0.0.0";
    if (strcmp(name, "localhost") == 0) bind = "127.0.0.1";
    else if (inet_pton(AF_INET, name, addr) == 1) bind = name;
    else if (name[0] == '[' && strlen(name) > 2) { /* [v6] */
        char v6[256];
        snprintf(v6, sizeof v6, "%.*s", (int)strlen(name) - 2, name + 1);
        if (inet_pton(AF_INET6, v6, addr) == 1) bind = name;
    }
    snprintf(out, outlen, "tcp://%s%s", bind, colon);
}

static int make_coordinator(prov_t *p, uint8_t admin_pk[CURVE_KEYBYTES])
{
    char dir[PATH_CAP], path[PATH_CAP], text[4 * PATH_CAP];
    uint8_t pk[CURVE_KEYBYTES];
    join(dir, p->dir, "coordinator");
    join(path, dir, "curve.key");
    if (make_dir(dir) < 0 || ensure_key(p, path, 0, pk) < 0) return -1;
    identity_pk_to_hex(p->coord_pk_hex, pk);
    join(path, dir, "ca.crt");
    if (write_new(p, path, p->ca_pem, p->ca_pem_len) < 0) return -1;

    /* The admin's CURVE key pair: the coordinator admits only its public key. */
    char adir[PATH_CAP], admin_hex[IDENTITY_HEXBYTES];
    join(adir, p->dir, "admin");
    join(path, adir, "admin.key");
    if (make_dir(adir) < 0 || ensure_key(p, path, 0, admin_pk) < 0) return -1;
    identity_pk_to_hex(admin_hex, admin_pk);
    join(path, adir, "admin.pub");
    if (write_hexfile(p, path, admin_pk) < 0) return -1;
    join(path, adir, "coordinator.pub");
    if (write_hexfile(p, path, pk) < 0) return -1;

    /* With --install-dir the configs name the installed paths: keys and roster
     * there, the state under /var/lib/medfed-coordinator (the unit's StateDirectory). */
    const char *at = p->install ? p->install : dir, *admin_at = p->install ? p->install : adir;
    const char *state_at = p->install ? "/var/lib/medfed-coordinator" : dir;
    const char *bind_port = strrchr(p->endpoint, ':');
    char admin_bind[300];
    admin_bind_of(p->admin_endpoint, admin_bind, sizeof admin_bind);
    int n = snprintf(text, sizeof text,
        "; written by medfed provision: the coordinator of federation '%s'.\n"
        "; Paths: as given to medfed provision (--install-dir, else where the kit was made).\n"
        "[coordinator]\n"
        "; sites connect here (they were told %s)\n"
        "bind = tcp://0.0.0.0%s\n"
        "; every site: NAME ED25519-KEY CURVE-KEY (line order = site id); medfed provision\n"
        "; appends new sites, SIGHUP re-reads it\n"
        "roster = %s/roster.txt\n"
        "; CURVE transport: this secret key (0600); only roster keys are admitted\n"
        "curve_key = %s/curve.key\n"
        "; site identity certificates must be issued by this CA\n"
        "ca = %s/ca.crt\n"
        "; admin socket (CURVE): only this public key (%s/admin.pub) may use it; bound\n"
        "; where --admin-endpoint said the admin CLI reaches it (%s)\n"
        "admin_bind = %s\n"
        "admin_key = %s\n"
        "; rounds, checkpoints and state.json (resume after a crash) go here\n"
        "state_dir = %s/state\n"
        "; the initial model (medfed-init --out FILE)\n"
        "; init = %s/init.safetensors\n"
        "rounds = 10\n"
        "wait_for = 2\n"
        "min_clients = 2\n"
        "; secure aggregation: the coordinator learns only the sum\n"
        "secagg = on\n"
        "log_level = info\n",
        p->federation, p->endpoint, bind_port ? bind_port : ":7700", at, at, at, admin_at,
        p->admin_endpoint, admin_bind, admin_hex, state_at, state_at);
    join(path, dir, "coordinator.ini");
    if (n < 0 || (size_t)n >= sizeof text) return fail("%s: paths too long", path);
    if (write_new(p, path, text, (size_t)n) < 0) return -1;

    n = snprintf(text, sizeof text,
        "; written by medfed provision: the research lead's admin CLI (medfed status, ...)\n"
        "[admin]\n"
        "coordinator = %s\n"
        "; this admin's CURVE secret key (0600) and the coordinator's public key\n"
        "admin_key = %s/admin.key\n"
        "coordinator_key = %s\n",
        p->admin_endpoint, admin_at, p->coord_pk_hex);
    join(path, adir, "admin.ini");
    if (n < 0 || (size_t)n >= sizeof text) return fail("%s: paths too long", path);
    return write_new(p, path, text, (size_t)n);
}

/* The roster line of a site: "NAME ED25519-KEY CURVE-KEY\n". */
#define ROSTER_LINE_MAX (ROSTER_NAME_MAX + 2 * IDENTITY_HEXBYTES + 4)
static void roster_line(char line[ROSTER_LINE_MAX], const char *site,
                        const uint8_t id_pk[IDENTITY_PUBLICKEYBYTES],
                        const uint8_t curve_pk[CURVE_KEYBYTES])
{
    char id_hex[IDENTITY_HEXBYTES], curve_hex[IDENTITY_HEXBYTES];
    identity_pk_to_hex(id_hex, id_pk);
    identity_pk_to_hex(curve_hex, curve_pk);
    /* site is a checked site name: the line always fits */
    snprintf(line, ROSTER_LINE_MAX, "%.*s %s %s\n", ROSTER_NAME_MAX - 1, site, id_hex, curve_hex);
}

/* One site's kit; its roster line into line. */
static int make_site(prov_t *p, const char *site, char line[ROSTER_LINE_MAX])
{
    char dir[PATH_CAP], path[PATH_CAP], text[4 * PATH_CAP];
    uint8_t id_pk[IDENTITY_PUBLICKEYBYTES], curve_pk[CURVE_KEYBYTES];
    char sites[PATH_CAP];
    join(dir, join(sites, p->dir, "sites"), site);
    if (make_dir(dir) < 0) return -1;
    join(path, dir, "identity.key");
    if (ensure_key(p, path, 1, id_pk) < 0) return -1;
    join(path, dir, "curve.key");
    if (ensure_key(p, path, 0, curve_pk) < 0) return -1;
    join(path, dir, "identity.crt");
    if (!exists(path) && issue(p, site, id_pk, path) < 0) return -1;
    join(path, dir, "ca.crt");
    if (write_new(p, path, p->ca_pem, p->ca_pem_len) < 0) return -1;
    uint8_t coord_pk[CURVE_KEYBYTES];
    if (identity_pk_from_hex(coord_pk, p->coord_pk_hex) < 0) return fail("internal: coordinator key");
    join(path, dir, "coordinator.pub");
    if (write_hexfile(p, path, coord_pk) < 0) return -1;

    const char *at = p->install ? p->install : dir; /* where the files will be */
    const int n = snprintf(text, sizeof text,
        "; written by medfed provision: site '%s' of federation '%s'.\n"
        "; Paths: as given to medfed provision (--install-dir, else where the kit was\n"
        "; made). Key files must stay mode 0600.\n"
        "[client]\n"
        "site = %s\n"
        "coordinator = %s\n"
        "; this site's Ed25519 identity key and its certificate from the federation CA\n"
        "identity = %s/identity.key\n"
        "certificate = %s/identity.crt\n"
        "ca = %s/ca.crt\n"
        "; CURVE transport: this site's key; the coordinator's public key (coordinator.pub)\n"
        "curve_key = %s/curve.key\n"
        "coordinator_key = %s\n"
        "threads = 2\n"
        "log_level = info\n"
        "\n"
        "; The site's data (uncomment and point at the files; see imaging/data.c):\n"
        "; [data]\n"
        "; source = idx\n"
        "; train_images = /srv/medfed/train-images-idx3-ubyte.gz\n"
        "; train_labels = /srv/medfed/train-labels-idx1-ubyte.gz\n"
        "; val_images = /srv/medfed/val-images-idx3-ubyte.gz\n"
        "; val_labels = /srv/medfed/val-labels-idx1-ubyte.gz\n",
        site, p->federation, site, p->endpoint, at, at, at, at, p->coord_pk_hex);
    join(path, dir, "client.ini");
    if (n < 0 || (size_t)n >= sizeof text) return fail("%s: paths too long", path);
    if (write_new(p, path, text, (size_t)n) < 0) return -1;

    roster_line(line, site, id_pk, curve_pk);
    return 0;
}

/* coordinator/roster.txt into r (empty if there is none yet). */
static int load_roster(prov_t *p, roster_t *r)
{
    char path[PATH_CAP], err[PATH_CAP + 128];
    join(path, p->dir, "coordinator/roster.txt");
    memset(r, 0, sizeof *r);
    if (exists(path) && roster_load(path, r, err, sizeof err) < 0) return fail("%s", err);
    return 0;
}

/* Appends lines (whole "NAME KEY CURVE\n" lines) to coordinator/roster.txt,
 * made with its header if it is missing; earlier lines keep their order. */
static int append_roster(prov_t *p, const char *lines, size_t add)
{
    char path[PATH_CAP], err[PATH_CAP + 128];
    static char text[ROSTER_MAX * 200 + 4096];
    size_t len = 0;
    join(path, p->dir, "coordinator/roster.txt");
    if (exists(path)) {
        if (read_text(path, text, sizeof text, &len) < 0) return -1;
        if (len > 0 && text[len - 1] != '\n') text[len++] = '\n';
    } else {
        len = (size_t)snprintf(text, sizeof text,
                               "# federation roster: NAME ED25519-KEY CURVE-KEY; a site's id is "
                               "its line among the sites. Written by medfed provision.\n");
    }
    if (len + add >= sizeof text) return fail("%s: too large", path);
    memcpy(text + len, lines, add);
    if (util_write_file_atomic(path, text, len + add, err, sizeof err) < 0) return fail("%s", err);
    p->created++;
    return 0;
}

/* Adds the sites that are not on coordinator/roster.txt yet, in SITES.txt order. */
static int update_roster(prov_t *p, char (*names)[ROSTER_NAME_MAX], int n)
{
    static roster_t roster;
    static char text[ROSTER_MAX * 200];
    size_t len = 0;
    char path[PATH_CAP];
    join(path, p->dir, "coordinator/roster.txt");
    if (load_roster(p, &roster) < 0) return -1;
    int added = 0;
    for (int i = 0; i < n; i++) {
        char line[ROSTER_LINE_MAX];
        /* A site on the roster keeps its kit as it is, even if it was moved
         * away from here: new keys would no longer match its roster line. */
        if (roster_find(&roster, names[i]) >= 0) continue;
        if (make_site(p, names[i], line) < 0) return -1;
        if (roster.n + added >= ROSTER_MAX) return fail("%s: more than %d sites", path, ROSTER_MAX);
        const size_t l = strlen(line);
        if (len + l >= sizeof text) return fail("%s: too large", path);
        memcpy(text + len, line, l);
        len += l;
        added++;
        printf("provision: site %s: kit in %s/sites/%s\n", names[i], p->dir, names[i]);
    }
    for (int i = 0; i < roster.n; i++) {
        int listed = 0;
        for (int j = 0; j < n; j++) listed |= strcmp(roster.site[i].name, names[j]) == 0;
        if (!listed)
            fprintf(stderr, PROG ": warning: site '%s' is on %s but not in %s; left as is\n",
                    roster.site[i].name, path, p->sites_file);
    }
    return added == 0 ? 0 : append_roster(p, text, len);
}

/* ---- peers.txt: the member list a hospital pins --------------------------------------- */

/* "NAME FINGERPRINT" for every site on the roster, the format of a site's
 * [policy] peers file, into text. */
static int peers_text(prov_t *p, char *text, size_t cap, size_t *len)
{
    static roster_t roster;
    if (load_roster(p, &roster) < 0) return -1;
    int n = snprintf(text, cap,
        "# The federation's members: NAME FINGERPRINT (SHA-256 of the site's Ed25519 identity\n"
        "# key, as medfed-client enrol printed it). Written by medfed provision from the roster.\n"
        "# A hospital uses it as [policy] peers = FILE once it has checked each fingerprint\n"
        "# with that site by phone.\n");
    *len = (size_t)n;
    for (int i = 0; i < roster.n; i++) {
        if (!roster.site[i].has_pk) continue; /* a name-only line pins nothing */
        char fpr[IDENTITY_HEXBYTES];
        identity_fingerprint(fpr, roster.site[i].pk);
        n = snprintf(text + *len, cap - *len, "%s %s\n", roster.site[i].name, fpr);
        if (n < 0 || (size_t)n >= cap - *len) return fail("peers.txt: too many sites");
        *len += (size_t)n;
    }
    return 0;
}

/* path holds exactly data: written (atomically) if it is missing or differs. */
static int write_current(prov_t *p, const char *path, const char *data, size_t len)
{
    static char old[ROSTER_MAX * 200 + 4096];
    size_t old_len = 0;
    char err[PATH_CAP + 64];
    if (exists(path) && read_text(path, old, sizeof old, &old_len) == 0 && old_len == len &&
        memcmp(old, data, len) == 0)
        return 0;
    if (util_write_file_atomic(path, data, len, err, sizeof err) < 0) return fail("%s", err);
    p->created++;
    return 0;
}

/* coordinator/peers.txt and admin/peers.txt follow the roster. */
static int write_peers(prov_t *p)
{
    static char text[ROSTER_MAX * (ROSTER_NAME_MAX + IDENTITY_HEXBYTES + 2) + 512];
    char path[PATH_CAP], dir[PATH_CAP];
    size_t len = 0;
    if (peers_text(p, text, sizeof text, &len) < 0) return -1;
    static const char *const dirs[] = {"coordinator", "admin"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (write_current(p, join(path, join(dir, p->dir, dirs[i]), "peers.txt"), text, len) < 0)
            return -1;
    return 0;
}

/* ---- --sign: a site's certificate request ------------------------------------------------ */

/* A fingerprint as read out ("53c2 ca23 ...": spaces, ':' and case ignored)
 * as 64 lower-case hex digits. */
static int parse_fingerprint(const char *s, char out[IDENTITY_HEXBYTES])
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == ':') continue;
        if (!isxdigit((unsigned char)*s) || n == IDENTITY_HEXBYTES - 1) return -1;
        out[n++] = (char)tolower((unsigned char)*s);
    }
    out[n] = '\0';
    return n == IDENTITY_HEXBYTES - 1 ? 0 : -1;
}

/* The request's keys against the roster: 1 if the site is on it with these
 * very keys, 0 if it is not on it, -1 (refused) if its name has other keys
 * or its keys belong to another site. */
static int roster_check(prov_t *p, const char *name, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                        const uint8_t curve_pk[CURVE_KEYBYTES])
{
    static roster_t roster;
    char path[PATH_CAP];
    join(path, p->dir, "coordinator/roster.txt");
    if (load_roster(p, &roster) < 0) return -1;
    const int at = roster_find(&roster, name);
    for (int i = 0; i < roster.n; i++) {
        const roster_entry_t *e = &roster.site[i];
        const int same_id = e->has_pk && crypto_equal(e->pk, pk, IDENTITY_PUBLICKEYBYTES);
        const int same_curve = e->has_curve && crypto_equal(e->curve_pk, curve_pk, CURVE_KEYBYTES);
        if (i == at && !(same_id && same_curve))
            return fail("site '%s' is already on %s with another key: refused (to replace a "
                        "site's keys, delete its line first)", name, path);
        if (i != at && (same_id || same_curve))
            return fail("the keys in this request are already on %s as site '%s': refused",
                        path, e->name);
    }
    return at >= 0 ? 1 : 0;
}

/* The site's certificate, kept in ca/issued/NAME.crt: the one issued before
 * for this key (so that signing the same request twice gives the same
 * certificate), else a new one. */
static int site_certificate(prov_t *p, const char *name, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                            char pem[CERT_PEM_MAX], size_t *pem_len)
{
    char dir[PATH_CAP], crt[PATH_CAP], file[CERT_NAME_MAX + 8], err[PATH_CAP + 128];
    join(dir, p->dir, "ca/issued");
    snprintf(file, sizeof file, "%s.crt", name);
    join(crt, dir, file);
    if (make_dir(dir) < 0) return -1;
    if (!exists(crt))
        return issue_pem(p, name, pk, pem, pem_len) < 0 ? -1 : write_new(p, crt, pem, *pem_len);
    uint8_t der[CERT_DER_MAX], got[IDENTITY_PUBLICKEYBYTES];
    size_t len = 0;
    char cn[CERT_NAME_MAX];
    cert_ca_t *ca = cert_ca_new(p->ca_der, p->ca_len, err, sizeof err);
    int rc = ca && cert_load_file(crt, der, &len, err, sizeof err) == 0 &&
                     cert_verify(ca, der, len, name, cn, got, err, sizeof err) == 0 &&
                     cert_der_to_pem(pem, pem_len, der, len, err, sizeof err) == 0
                 ? 0
                 : fail("%s: %s (move it away to issue a new one)", crt, err);
    if (rc == 0 && !crypto_equal(got, pk, sizeof got))
        rc = fail("%s: issued for another key of site '%s': refused", crt, name);
    cert_ca_destroy(&ca);
    return rc;
}

/* A public file of the return kit: written if missing, kept if the same,
 * refused if different (a kit is never silently changed). */
static int write_kit_file(prov_t *p, const char *path, const char *data, size_t len)
{
    char old[CERT_PEM_MAX + 1];
    size_t old_len = 0;
    if (!exists(path)) return write_new(p, path, data, len);
    if (read_text(path, old, sizeof old, &old_len) < 0) return -1;
    if (old_len == len && memcmp(old, data, len) == 0) return 0;
    return fail("%s exists with other content: refused (move it away first)", path);
}

/* A directory made 0700 if missing, its absolute path into abs. */
static int open_dir(const char *path, char abs[PATH_MAX])
{
    char err[PATH_CAP + 128];
    if (!exists(path) && (util_mkdirs(path, err, sizeof err) < 0 || chmod(path, 0700) < 0))
        return fail("%s: cannot create: %s", path, err);
    if (!realpath(path, abs)) return fail("%s: %s", path, strerror(errno));
    return 0;
}

static int sign_request(prov_t *p)
{
    char name[CERT_NAME_MAX], err[PATH_CAP + 256], path[PATH_CAP], kit[PATH_MAX];
    char fpr[IDENTITY_HEXBYTES], grouped[CERT_FPR_GROUPED_BYTES], want[IDENTITY_HEXBYTES];
    uint8_t pk[IDENTITY_PUBLICKEYBYTES], curve_pk[CURVE_KEYBYTES];
    if (p->fingerprint && parse_fingerprint(p->fingerprint, want) < 0)
        return fail("--fingerprint: 64 hex digits (spaces allowed), got '%.100s'", p->fingerprint);
    if (cert_request_load_file(p->request, name, pk, curve_pk, err, sizeof err) < 0)
        return fail("%s", err);
    identity_fingerprint(fpr, pk);
    cert_fingerprint_grouped(grouped, pk);
    printf("provision: certificate request %s: signature ok\n"
           "site:        %s\n"
           "fingerprint: %s\n"
           "read aloud:  %s\n",
           p->request, name, fpr, grouped);
    if (p->fingerprint && strcmp(want, fpr) != 0)
        return fail("%s: its fingerprint is not the one the site read out (%s): do not sign it; "
                    "call the site back on a number you know", p->request, want);
    if (!p->fingerprint)
        printf("provision: check this fingerprint with the site by phone before you send the "
               "kit (--fingerprint HEX checks it for you)\n");

    /* The lead's tree: the CA, the coordinator's roster, its public key. */
    join(path, p->dir, "ca/ca.crt");
    if (load_ca(p, path) < 0) return -1;
    char coord_hex[IDENTITY_HEXBYTES + 1];
    uint8_t coord_pk[CURVE_KEYBYTES];
    size_t len = 0;
    join(path, p->dir, "admin/coordinator.pub");
    if (read_text(path, coord_hex, sizeof coord_hex, &len) < 0) return -1;
    if (len > 0 && coord_hex[len - 1] == '\n') coord_hex[len - 1] = '\0';
    if (identity_pk_from_hex(coord_pk, coord_hex) < 0)
        return fail("%s: not a public key (64 hex digits)", path);
    const int on = roster_check(p, name, pk, curve_pk);
    if (on < 0) return -1;

    char pem[CERT_PEM_MAX], file[CERT_NAME_MAX + 8];
    size_t pem_len = 0;
    if (site_certificate(p, name, pk, pem, &pem_len) < 0 || open_dir(p->out, kit) < 0) return -1;
    snprintf(file, sizeof file, "%s.crt", name);
    coord_hex[IDENTITY_HEXBYTES - 1] = '\n';
    if (write_kit_file(p, join(path, kit, file), pem, pem_len) < 0 ||
        write_kit_file(p, join(path, kit, "ca.crt"), p->ca_pem, p->ca_pem_len) < 0 ||
        write_kit_file(p, join(path, kit, "coordinator.pub"), coord_hex, IDENTITY_HEXBYTES) < 0)
        return -1;
    if (!on) {
        char line[ROSTER_LINE_MAX];
        roster_line(line, name, pk, curve_pk);
        if (append_roster(p, line, strlen(line)) < 0) return -1;
        printf("provision: site %s added to %s/coordinator/roster.txt\n", name, p->dir);
    } else {
        printf("provision: site %s is on the roster with these keys already\n", name);
    }
    if (write_peers(p) < 0) return -1;
    printf("provision: return kit for %s in %s: %s ca.crt coordinator.pub (no secret key)\n"
           "provision: copy roster.txt to the coordinator and reload it (SIGHUP); send "
           "%s/admin/peers.txt to every site once the members are enrolled\n",
           name, kit, file, p->dir);
    return 0;
}

/* ---- --renew: a site's certificate again, before it expires ---------------------------- */

/* Replaces path with data (atomically); prints the old certificate's expiry. */
static int replace_cert(const char *path, const char *pem, size_t len)
{
    char err[PATH_CAP + 128];
    uint8_t der[CERT_DER_MAX];
    size_t der_len = 0;
    int64_t t;
    if (exists(path) && cert_load_file(path, der, &der_len, err, sizeof err) == 0 &&
        cert_not_after(der, der_len, &t, err, sizeof err) == 0)
        printf("provision: %s %s %lld days; replaced\n", path,
               cert_days_left(t) < 0 ? "expired" : "expires in",
               (long long)(cert_days_left(t) < 0 ? -cert_days_left(t) : cert_days_left(t)));
    if (util_write_file_atomic(path, pem, len, err, sizeof err) < 0) return fail("%s", err);
    return 0;
}

static int renew_site(prov_t *p)
{
    static roster_t roster;
    char path[PATH_CAP], kit[PATH_MAX], file[CERT_NAME_MAX + 8], err[PATH_CAP + 128];
    if (!cert_name_ok(p->renew)) return fail("--renew: '%.100s' is not a site name", p->renew);
    join(path, p->dir, "ca/ca.crt");
    if (load_ca(p, path) < 0 || load_roster(p, &roster) < 0) return -1;
    const int at = roster_find(&roster, p->renew);
    if (at < 0 || !roster.site[at].has_pk)
        return fail("site '%s' is not on %s/coordinator/roster.txt with an identity key: "
                    "nothing to renew (a new site enrols: medfed provision --sign)",
                    p->renew, p->dir);
    char pem[CERT_PEM_MAX];
    size_t pem_len = 0;
    if (issue_pem(p, p->renew, roster.site[at].pk, pem, &pem_len) < 0) return -1;
    int64_t t = 0;
    uint8_t der[CERT_DER_MAX];
    size_t der_len = 0;
    if (cert_to_der(der, &der_len, (const uint8_t *)pem, pem_len, err, sizeof err) < 0 ||
        cert_not_after(der, der_len, &t, err, sizeof err) < 0)
        return fail("%s", err);
    snprintf(file, sizeof file, "%s.crt", p->renew);
    char issued[PATH_CAP];
    join(issued, p->dir, "ca/issued");
    if (make_dir(issued) < 0 || replace_cert(join(path, issued, file), pem, pem_len) < 0 ||
        open_dir(p->out, kit) < 0 || replace_cert(join(path, kit, file), pem, pem_len) < 0 ||
        write_kit_file(p, join(path, kit, "ca.crt"), p->ca_pem, p->ca_pem_len) < 0)
        return -1;
    char sites[PATH_CAP], own[PATH_CAP];
    join(own, join(sites, p->dir, "sites"), p->renew);
    if (exists(join(path, own, "identity.crt")) && replace_cert(path, pem, pem_len) < 0) return -1;
    printf("provision: new certificate for %s, same key, valid %lld days (%d asked); in %s/%s\n"
           "provision: the site copies it over its [client] certificate file and restarts "
           "medfed-client; its roster line and peers' pins stay as they are\n",
           p->renew, (long long)cert_days_left(t), p->days, kit, file);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

static int endpoint_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    long long port;
    return strncmp(s, "tcp://", 6) == 0 && colon && colon > s + 6 &&
           util_parse_int(colon + 1, 1, 65535, &port) == 0;
}

int provision_main(int argc, char **argv)
{
    enum { O_ROSTER = 256, O_OUT, O_ENDPOINT, O_ADMIN, O_FED, O_DAYS, O_INSTALL, O_SIGN, O_CA_DIR,
           O_FPR, O_RENEW };
    static const struct option longopts[] = {
        {"roster", 1, 0, O_ROSTER}, {"out", 1, 0, O_OUT}, {"endpoint", 1, 0, O_ENDPOINT},
        {"admin-endpoint", 1, 0, O_ADMIN}, {"federation", 1, 0, O_FED}, {"days", 1, 0, O_DAYS},
        {"install-dir", 1, 0, O_INSTALL}, {"sign", 1, 0, O_SIGN}, {"ca-dir", 1, 0, O_CA_DIR},
        {"fingerprint", 1, 0, O_FPR}, {"renew", 1, 0, O_RENEW},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0},
    };
    static prov_t p;
    static char names[ROSTER_MAX][ROSTER_NAME_MAX];
    memset(&p, 0, sizeof p);
    p.admin_endpoint = "tcp://127.0.0.1:7701";
    p.federation = "medfed";
    p.days = CERT_SITE_DAYS;
    long long v;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_ROSTER: p.sites_file = optarg; break;
        case O_OUT: p.out = optarg; break;
        case O_ENDPOINT: p.endpoint = optarg; break;
        case O_ADMIN: p.admin_endpoint = optarg; break;
        case O_INSTALL:
            if (optarg[0] != '/') {
                fprintf(stderr, PROG ": --install-dir must be an absolute path, got '%s'\n", optarg);
                return 2;
            }
            p.install = optarg;
            break;
        case O_FED: p.federation = optarg; break;
        case O_SIGN: p.request = optarg; break;
        case O_CA_DIR: p.ca_dir = optarg; break;
        case O_FPR: p.fingerprint = optarg; break;
        case O_RENEW: p.renew = optarg; break;
        case O_DAYS:
            if (util_parse_int(optarg, 1, CERT_DAYS_MAX, &v) < 0) {
                fprintf(stderr, PROG ": --days must be in [1, %d], got '%s'\n", CERT_DAYS_MAX, optarg);
                return 2;
            }
            p.days = (int)v;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const int with_ca = p.request || p.renew;
    if (optind != argc || !p.out || (p.request && p.renew) ||
        (with_ca ? !p.ca_dir || p.sites_file || p.endpoint || (p.renew && p.fingerprint)
                 : !p.endpoint || p.ca_dir || p.fingerprint)) {
        usage(stderr);
        return 2;
    }
    if (with_ca) {
        /* The lead's tree is the folder that holds ca/. */
        char *slash;
        if (crypto_init() < 0) return fail("crypto library failed to initialise"), 1;
        if (!realpath(p.ca_dir, p.dir)) return fail("%s: %s", p.ca_dir, strerror(errno)), 1;
        if ((slash = strrchr(p.dir, '/')) == p.dir) return fail("%s: no folder above it", p.ca_dir), 1;
        *slash = '\0';
        return (p.renew ? renew_site(&p) : sign_request(&p)) < 0 ? 1 : 0;
    }
    if (!endpoint_ok(p.endpoint) || !endpoint_ok(p.admin_endpoint)) {
        fprintf(stderr, PROG ": endpoints are tcp://HOST:PORT, got '%s'\n",
                endpoint_ok(p.endpoint) ? p.admin_endpoint : p.endpoint);
        return 2;
    }
    if (!cert_name_ok(p.federation)) {
        fprintf(stderr, PROG ": --federation: use 1-63 letters, digits, '-', '_', '.'\n");
        return 2;
    }
    if (crypto_init() < 0) return fail("crypto library failed to initialise"), 1;
    int n = 0;
    if (p.sites_file) {
        fprintf(stderr, PROG ": warning: --roster makes every site's secret keys on this machine: "
                        "for simulations and tests only; real sites enrol themselves "
                        "(medfed-client enrol, then medfed provision --sign)\n");
        if (read_sites(p.sites_file, names, &n) < 0) return 1;
    }
    char sites[PATH_CAP];
    if (open_dir(p.out, p.dir) < 0) return 1;
    join(sites, p.dir, "sites");
    uint8_t admin_pk[CURVE_KEYBYTES];
    if (make_ca(&p) < 0 || make_coordinator(&p, admin_pk) < 0 ||
        (p.sites_file && (make_dir(sites) < 0 || update_roster(&p, names, n) < 0)) ||
        write_peers(&p) < 0)
        return 1;
    printf("provision: %d sites, %d files written in %s%s\n", n, p.created, p.dir,
           p.created ? "" : " (nothing was missing)");
    if (!p.sites_file)
        printf("provision: next, each site runs medfed-client enrol and sends you its request: "
               "medfed provision --sign SITE.csr --ca-dir %s/ca --out KITDIR\n", p.dir);
    return 0;
}
