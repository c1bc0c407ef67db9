/*
 * medfed-swarm - many protocol-only sites in one process, for tests of
 * scale (medfed-sim --swarm runs it; a simulation tool, never deployed).
 *
 *   medfed-swarm [--slots N] [--io-threads N] [--stack-kib K] [--log-level L] CONFIG...
 *   medfed-swarm init --params P [--seed S] --out FILE
 *
 * Each CONFIG is one site's client.ini, as for medfed-client, and each site
 * runs the daemon's own event loop (client_run_hosted) in a thread of its
 * own: the real protocol, secure aggregation, identity keys and CURVE
 * socket, on one ZeroMQ context shared by the process. What differs from
 * the daemon: the model is model_synthetic.c (no LibTorch; a seeded update
 * of the model's size), and the site's [data] section names no images:
 *
 *   [data]
 *   source = synthetic   ; medfed-swarm only (medfed-client refuses it)
 *   train = 612          ; training samples: the site's weight n_k
 *   val = 122            ; validation samples (labels drawn from the site name)
 *
 * At most --slots sites (default: the online CPUs) handle a message at once;
 * the others wait their turn and heartbeat meanwhile, so a thousand sites on
 * two cores neither starve the coordinator nor look dead to it. The global
 * model is held once per process and per-round buffers only while the round
 * needs them (client.h, client_host_t).
 *
 * `init` writes the initial model of P parameters the coordinator starts
 * from (checkpoint_init over the synthetic backend, as medfed-init does over
 * LibTorch's).
 *
 * Exit status: 0 when every site ended with 0 (SHUTDOWN or a signal), 1 if
 * any failed, 2 for bad usage or a bad config.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "client/client.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/json.h"
#include "common/util.h"
#include "common/version.h"
#include "crypto/crypto.h"
#include "model/checkpoint.h"
#include "model/model_synthetic.h"

#if defined(__SANITIZE_ADDRESS__)
#define SWARM_STACK_KIB 2048 /* the sanitizers' redzones need room */
#else
#define SWARM_STACK_KIB 256
#endif
#define SWARM_MAX_SITES 4096
#define SWARM_MAX_SAMPLES 10000000

typedef struct {
    client_conf_t conf;
    client_host_t host;
    pthread_t thread;
    int started, rc;
} site_t;

static sem_t slots;

static void on_signal(int sig)
{
    (void)sig;
    client_stop = 1;
}

static int turn_take(void *user, double timeout)
{
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_nsec * 1e-9 + timeout;
    ts.tv_sec += (time_t)end;
    ts.tv_nsec = (long)((end - (double)(time_t)end) * 1e9);
    while (sem_timedwait(&slots, &ts) < 0)
        if (errno != EINTR) return -1;
    return 0;
}

static void turn_give(void *user)
{
    (void)user;
    sem_post(&slots);
}

static void *site_main(void *arg)
{
    site_t *s = arg;
    log_set_thread_tag(s->conf.site);
    s->rc = client_run_hosted(&s->conf, &s->host);
    return NULL;
}

/* A [data] count of the site's config: "file:line: ..." on error. */
static int data_count(const client_conf_t *c, const char *key, long long lo, int64_t *out,
                      char *err, size_t errlen)
{
    long long v;
    for (size_t i = 0; i < c->data.n; i++) {
        if (strcmp(c->data.opt[i].key, key) != 0) continue;
        if (util_parse_int(c->data.opt[i].value, lo, SWARM_MAX_SAMPLES, &v) < 0) {
            snprintf(err, errlen, "%s:%d: [data] %s must be a count in [%lld, %d]", c->data.file,
                     c->data.opt[i].line, key, lo, SWARM_MAX_SAMPLES);
            return -1;
        }
        *out = v;
        return 0;
    }
    snprintf(err, errlen, "%s: [data] %s is missing (source = synthetic wants train and val)",
             c->data.file, key);
    return -1;
}

/* The site's samples: no images (the synthetic model reads none), labels
 * drawn from the site's name, so each site has its own. */
static int synthetic_split(const char *site, int split, int64_t n, const model_spec_t *spec,
                           dataset_t *d)
{
    uint64_t seed = 1469598103934665603ull;
    for (const char *p = site; *p; p++) seed = (seed ^ (uint8_t)*p) * 1099511628211ull;
    rng_t r;
    rng_seed(&r, seed + (uint64_t)split);
    *d = (dataset_t){.n = n, .channels = spec->in_channels, .height = spec->height,
                     .width = spec->width};
    d->y = malloc((size_t)(n > 0 ? n : 1) * sizeof *d->y);
    if (!d->y) return -1;
    for (int64_t i = 0; i < n; i++) d->y[i] = (int32_t)rng_below(&r, (uint64_t)spec->classes);
    return 0;
}

static int load_site(site_t *s, const char *path, const model_spec_t *spec, char *err,
                     size_t errlen)
{
    if (client_conf_load(path, &s->conf, err, errlen) < 0) return -1;
    const char *source = data_conf_get(&s->conf.data, "source");
    if (!source || strcmp(source, "synthetic") != 0) {
        snprintf(err, errlen, "%s: [data] source must be synthetic (no images in a swarm)", path);
        return -1;
    }
    for (size_t i = 0; i < s->conf.data.n; i++) {
        const data_opt_t *o = &s->conf.data.opt[i];
        if (strcmp(o->key, "source") && strcmp(o->key, "train") && strcmp(o->key, "val")) {
            snprintf(err, errlen, "%s:%d: unknown key '%s' for data source synthetic (train, val)",
                     path, o->line, o->key);
            return -1;
        }
    }
    int64_t ntr, nva;
    if (data_count(&s->conf, "train", 1, &ntr, err, errlen) < 0 ||
        data_count(&s->conf, "val", 0, &nva, err, errlen) < 0)
        return -1;
    if (synthetic_split(s->conf.site, 0, ntr, spec, &s->host.train) < 0 ||
        synthetic_split(s->conf.site, 1, nva, spec, &s->host.val) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: medfed-swarm [options] CONFIG...   (one client.ini per site)\n"
            "  --slots N        sites handling a message at once (the online CPUs)\n"
            "  --io-threads N   ZeroMQ I/O threads of the shared context (2)\n"
            "  --stack-kib K    stack of each site's thread (%d)\n"
            "  --log-level L    error | warn | info | debug (info)\n"
            "       medfed-swarm init --params P [--seed S] --out FILE\n"
            "                   the initial synthetic model of P parameters\n",
            SWARM_STACK_KIB);
}

static int init_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"params", 1, 0, 'p'}, {"seed", 1, 0, 's'}, {"out", 1, 0, 'o'}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    long long params = 0, seed = 1;
    const char *out = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (util_parse_int(optarg, 1, (long long)MODEL_SYNTHETIC_MAX_PARAMS, &params) < 0)
                goto bad;
            break;
        case 's':
            if (util_parse_int(optarg, 0, 1LL << 53, &seed) < 0) goto bad;
            break;
        case 'o': out = optarg; break;
        case 'h': usage(stdout); return 0;
        default: goto bad;
        }
    }
    if (!params || !out || optind != argc) goto bad;
    model_spec_t spec;
    char err[512];
    model_synthetic_spec(&spec, (size_t)params);
    size_t numel;
    if (checkpoint_init(&spec, (uint64_t)seed, out, &numel, err, sizeof err) < 0) {
        fprintf(stderr, "medfed-swarm init: %s\n", err);
        return 1;
    }
    json_t *r = json_pack("{s:s,s:s,s:I}", "out", out, "arch", spec.arch, "params", (json_int_t)numel);
    jx_write_line(stdout, r);
    json_decref(r);
    return 0;
bad:
    fprintf(stderr, "medfed-swarm init: bad arguments (--params P [--seed S] --out FILE)\n");
    return 2;
}

/* One thread per site on one ZeroMQ context; returns when every site has
 * ended: 0 if each ended with 0, else 1. */
static int run_sites(site_t *sites, int n, unsigned n_slots, int io_threads, size_t stack)
{
    void *zctx = zmq_ctx_new();
    /* A DEALER and a monitor pair per site, and headroom. */
    if (!zctx || zmq_ctx_set(zctx, ZMQ_IO_THREADS, io_threads) < 0 ||
        zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, 4 * n + 64) < 0 || sem_init(&slots, 0, n_slots) < 0) {
        log_error("cannot set up the ZeroMQ context for %d sites: %s", n, zmq_strerror(errno));
        if (zctx) zmq_ctx_term(zctx);
        return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack);
    log_info("swarm: %d sites, %u slots, %d I/O threads, %zu KiB stacks", n, n_slots, io_threads,
             stack / 1024);
    double t0 = util_now();
    int started = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        site_t *s = &sites[i];
        s->host.zctx = zctx;
        s->host.turn_take = turn_take;
        s->host.turn_give = turn_give;
        s->rc = 1;
        if (pthread_create(&s->thread, &attr, site_main, s) != 0) {
            log_error("cannot start the thread of site %s (%d started): stopping", s->conf.site,
                      started);
            client_stop = 1;
            break;
        }
        s->started = 1;
        started++;
    }
    pthread_attr_destroy(&attr);
    for (int i = 0; i < n; i++) {
        site_t *s = &sites[i];
        if (s->started) pthread_join(s->thread, NULL);
        if (s->rc != 0) {
            failed++;
            log_warn("site=%s exited with status %d", s->conf.site, s->rc);
        }
    }
    zmq_ctx_term(zctx);
    sem_destroy(&slots);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    log_info("swarm: %d sites done in %.1f s, %d failed, peak_rss_kb=%ld", n, util_now() - t0,
             failed, ru.ru_maxrss);
    return failed || started < n ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (medfed_version_flag(argc, argv, "medfed-swarm")) return 0;
    if (argc >= 2 && strcmp(argv[1], "init") == 0) return init_main(argc - 1, argv + 1);
    static const struct option longopts[] = {
        {"slots", 1, 0, 's'}, {"io-threads", 1, 0, 'i'}, {"stack-kib", 1, 0, 'k'},
        {"log-level", 1, 0, 'l'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0},
    };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long long n_slots = cpus > 0 ? cpus : 1, io_threads = 2, stack_kib = SWARM_STACK_KIB;
    log_level_t level = LOG_INFO;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 's': bad = util_parse_int(optarg, 1, SWARM_MAX_SITES, &n_slots); break;
        case 'i': bad = util_parse_int(optarg, 1, 64, &io_threads); break;
        case 'k': bad = util_parse_int(optarg, 64, 1 << 20, &stack_kib); break;
        case 'l': bad = log_level_parse(optarg, &level); break;
        case 'h': usage(stdout); return 0;
        default: bad = 1;
        }
        if (bad) {
            usage(stderr);
            return 2;
        }
    }
    int n = argc - optind;
    if (n < 1 || n > SWARM_MAX_SITES) {
        usage(stderr);
        return 2;
    }
    log_init("medfed-swarm", level);
    if (crypto_init() < 0) {
        log_error("crypto library failed to initialise");
        return 1;
    }
    model_spec_t spec;
    model_synthetic_spec(&spec, 1); /* the input shape and classes of every synthetic model */
    site_t *sites = calloc((size_t)n, sizeof *sites);
    roster_t *roster = calloc(1, sizeof *roster);
    char err[1024];
    int rc = 1;
    if (!sites || !roster) {
        log_error("out of memory for %d sites", n);
        goto out;
    }
    rc = 2;
    for (int i = 0; i < n; i++) {
        if (load_site(&sites[i], argv[optind + i], &spec, err, sizeof err) < 0) {
            log_error("%s", err);
            goto out;
        }
    }
    /* The roster, read once for every site that names the same file. */
    const char *roster_path = sites[0].conf.roster;
    if (roster_path[0] && roster_load(roster_path, roster, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (roster_path[0] && strcmp(sites[i].conf.roster, roster_path) == 0)
            sites[i].host.roster = roster;
    rc = run_sites(sites, n, (unsigned)n_slots, (int)io_threads, (size_t)stack_kib * 1024);
out:
    for (int i = 0; sites && i < n; i++) { /* what a site that never started still holds */
        dataset_free(&sites[i].host.train);
        dataset_free(&sites[i].host.val);
    }
    free(roster);
    free(sites);
    return rc;
}
