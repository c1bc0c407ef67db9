/*
 * provision.c - `medfed provision`: makes the federation CA, the coordinator's
 * and the admin's keys and configs, and one kit per site (see provision.h for
 * the layout).
 *
 * Every file is made only if it is missing, so the command is idempotent and
 * a second run with one more site in SITES.txt adds that site's kit and its
 * roster line and touches nothing else. The roster's line order is the
 * sites' ids: new sites are appended, never reordered. Secret keys go through
 * keyfile_save (0600, atomic) and are wiped after use; the CA key stays in
 * ca/, which no kit includes.
 */
#include "tools/provision.h"

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
    const char *install;                /* --install-dir: where the kits' files will live */
    int days;
    char dir[PATH_MAX];                 /* out, absolute (config files name absolute paths) */
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
        "usage: medfed provision --roster SITES.txt --out DIR --endpoint tcp://HOST:PORT\n"
        "                        [--admin-endpoint tcp://HOST:PORT] [--federation NAME] [--days N]\n"
        "                        [--install-dir /etc/medfed]\n"
        "  --roster FILE           site names, one per line ('#' comments)\n"
        "  --out DIR               where the CA and the kits go (created 0700)\n"
        "  --endpoint URL          the coordinator's address as the sites reach it\n"
        "  --admin-endpoint URL    the coordinator's admin socket (tcp://127.0.0.1:7701)\n"
        "  --federation NAME       the CA's name: CN \"medfed federation CA NAME\" (medfed)\n"
        "  --days N                validity of new site certificates in days (%d)\n"
        "  --install-dir DIR       the configs name DIR/FILE for every key, certificate and\n"
        "                          roster (copy each kit's files into DIR on its machine);\n"
        "                          default: where the kit is made\n"
        "Run it again with more sites to add their kits; existing files are never changed.\n"
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
    } else {
        if (cert_load_file(crt, p->ca_der, &p->ca_len, err, sizeof err) < 0 ||
            cert_der_to_pem(p->ca_pem, &p->ca_pem_len, p->ca_der, p->ca_len, err, sizeof err) < 0)
            return fail("%s", err);
        cert_ca_t *ca = cert_ca_new(p->ca_der, p->ca_len, err, sizeof err);
        if (!ca) return fail("%s: %s", crt, err);
        cert_ca_destroy(&ca);
    }
    return 0;
}

/* Issues a certificate for pk with the CA key (loaded for this call only). */
static int issue(prov_t *p, const char *site, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                 const char *path)
{
    char key[PATH_CAP], err[PATH_CAP + 128], pem[CERT_PEM_MAX];
    uint8_t sk[IDENTITY_SECRETKEYBYTES], der[CERT_DER_MAX];
    size_t len = 0, pem_len = 0;
    join(key, p->dir, "ca/ca.key");
    int rc = identity_load_secret(key, sk, err, sizeof err) == 0 &&
                     cert_issue(der, &len, site, pk, p->ca_der, p->ca_len, sk, p->days, err,
                                sizeof err) == 0 &&
                     cert_der_to_pem(pem, &pem_len, der, len, err, sizeof err) == 0
                 ? 0
                 : -1;
    crypto_wipe(sk, sizeof sk);
    if (rc < 0) return fail("%s: %s", site, err);
    return write_new(p, path, pem, pem_len);
}

static int write_hexfile(prov_t *p, const char *path, const uint8_t pk[32])
{
    char hex[IDENTITY_HEXBYTES + 1];
    identity_pk_to_hex(hex, pk);
    hex[IDENTITY_HEXBYTES - 1] = '\n';
    hex[IDENTITY_HEXBYTES] = '\0';
    return write_new(p, path, hex, IDENTITY_HEXBYTES);
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
    const char *admin_port = strrchr(p->admin_endpoint, ':');
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
        "; admin socket (CURVE): only this public key (%s/admin.pub) may use it\n"
        "admin_bind = tcp://0.0.0.0%s\n"
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
        admin_port ? admin_port : ":7701", admin_hex, state_at, state_at);
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

/* One site's kit; its roster line into line. */
static int make_site(prov_t *p, const char *site, char *line, size_t linecap)
{
    char dir[PATH_CAP], path[PATH_CAP], text[4 * PATH_CAP];
    char id_hex[IDENTITY_HEXBYTES], curve_hex[IDENTITY_HEXBYTES];
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
        "; The site's data (uncomment and point at the files; see client/data.c):\n"
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

    identity_pk_to_hex(id_hex, id_pk);
    identity_pk_to_hex(curve_hex, curve_pk);
    const int l = snprintf(line, linecap, "%s %s %s\n", site, id_hex, curve_hex);
    return l > 0 && (size_t)l < linecap ? 0 : fail("%s: roster line too long", site);
}

/* Adds the sites that are not on coordinator/roster.txt yet, in SITES.txt order. */
static int update_roster(prov_t *p, char (*names)[ROSTER_NAME_MAX], int n)
{
    char path[PATH_CAP], err[PATH_CAP + 128];
    join(path, p->dir, "coordinator/roster.txt");
    static roster_t roster;
    static char text[ROSTER_MAX * 200 + 4096];
    size_t len = 0;
    memset(&roster, 0, sizeof roster);
    if (exists(path)) {
        if (roster_load(path, &roster, err, sizeof err) < 0) return fail("%s", err);
        if (read_text(path, text, sizeof text, &len) < 0) return -1;
        if (len > 0 && text[len - 1] != '\n') text[len++] = '\n';
    } else {
        len = (size_t)snprintf(text, sizeof text,
                               "# federation roster: NAME ED25519-KEY CURVE-KEY; a site's id is "
                               "its line among the sites. Written by medfed provision.\n");
    }
    int added = 0;
    for (int i = 0; i < n; i++) {
        char line[ROSTER_NAME_MAX + 2 * IDENTITY_HEXBYTES + 4];
        /* A site on the roster keeps its kit as it is, even if it was moved
         * away from here: new keys would no longer match its roster line. */
        if (roster_find(&roster, names[i]) >= 0) continue;
        if (make_site(p, names[i], line, sizeof line) < 0) return -1;
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
    if (added == 0) return 0;
    if (util_write_file_atomic(path, text, len, err, sizeof err) < 0) return fail("%s", err);
    p->created++;
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
    enum { O_ROSTER = 256, O_OUT, O_ENDPOINT, O_ADMIN, O_FED, O_DAYS, O_INSTALL };
    static const struct option longopts[] = {
        {"roster", 1, 0, O_ROSTER}, {"out", 1, 0, O_OUT}, {"endpoint", 1, 0, O_ENDPOINT},
        {"admin-endpoint", 1, 0, O_ADMIN}, {"federation", 1, 0, O_FED}, {"days", 1, 0, O_DAYS},
        {"install-dir", 1, 0, O_INSTALL},
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
    if (optind != argc || !p.sites_file || !p.out || !p.endpoint) {
        usage(stderr);
        return 2;
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
    if (read_sites(p.sites_file, names, &n) < 0) return 1;
    char err[PATH_CAP + 128], sites[PATH_CAP];
    if (!exists(p.out) && (util_mkdirs(p.out, err, sizeof err) < 0 || chmod(p.out, 0700) < 0))
        return fail("%s: cannot create: %s", p.out, err), 1;
    if (!realpath(p.out, p.dir)) return fail("%s: %s", p.out, strerror(errno)), 1;
    join(sites, p.dir, "sites");
    uint8_t admin_pk[CURVE_KEYBYTES];
    if (make_ca(&p) < 0 || make_coordinator(&p, admin_pk) < 0 || make_dir(sites) < 0 ||
        update_roster(&p, names, n) < 0)
        return 1;
    printf("provision: %d sites, %d files written in %s%s\n", n, p.created, p.dir,
           p.created ? "" : " (nothing was missing)");
    return 0;
}
