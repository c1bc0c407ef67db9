/*
 * medfed-client - the hospital client daemon.
 *
 *   medfed-client --config FILE [--check]
 *
 * A test build (make test-bin: -DMEDFED_TEST_HOOKS) also takes --die-at
 * PHASE:ROUND and --stall-at PHASE:ROUND; a production build has neither.
 *
 *   medfed-client enrol --site NAME --out DIR [--coordinator URL]   (enrol.h)
 *
 * Exit status: 0 done (SHUTDOWN or SIGTERM/SIGINT); 1 failure (systemd
 * restarts it); 2 bad config or usage, or the coordinator refuses this site
 * for good: not on its roster, federation full (systemd does not restart it:
 * RestartPreventExitStatus=2). A refused protocol version is not for good:
 * the daemon asks again later (client.c).
 * --check reports each step as it ends (--json: one JSON object on stdout) and
 * exits 0 (all good) or 1.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "client/client.h"
#include "imaging/imaging.h"
#include "client/enrol.h"
#include "common/health.h"
#include "common/check.h"
#include "common/log.h"
#include "common/util.h"
#include "common/version.h"

static void on_signal(int sig)
{
    (void)sig;
    client_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: medfed-client --config FILE [--check [--json]]\n"
            "  --config FILE       INI config ([client] and [data] sections)\n"
            "  --check             check config, key files, certificates, data and the\n"
            "                      coordinator (PING), each step reported as it ends; exit 0\n"
            "                      if all is well, else 1\n"
            "  --json              with --check: one JSON object on stdout instead\n"
            "  --version           print the version and exit\n"
            "       medfed-client enrol --site NAME --out DIR   (this site's keys and its\n"
            "                      certificate request, made here; enrol --help)\n");
#ifdef MEDFED_TEST_HOOKS
    fputs("  --die-at PHASE:R    test build: SIGKILL self at PHASE of round R (train, upload,\n"
          "                      eval, advertise, share, masked, masked-upload,\n"
          "                      consistency, unmask)\n"
          "  --stall-at PHASE:R  test build: at PHASE of round R send nothing, keep\n"
          "                      heartbeating (masked-upload: granted, never uploads)\n",
          f);
#endif
}

#ifdef MEDFED_TEST_HOOKS
static int parse_die_at(const char *s, client_die_at_t *d)
{
    const char *colon = strchr(s, ':');
    long long r = 1;
    size_t plen = colon ? (size_t)(colon - s) : strlen(s);
    if (plen == 0 || plen >= sizeof d->phase) return -1;
    memcpy(d->phase, s, plen);
    d->phase[plen] = '\0';
    static const char *const phases[] = {"train", "upload", "eval", "advertise", "share",
                                         "masked", "masked-upload", "consistency", "unmask"};
    int known = 0;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        known |= strcmp(d->phase, phases[i]) == 0;
    if (!known) return -1;
    if (colon && util_parse_int(colon + 1, 1, 1000000, &r) < 0) return -1;
    d->round = (unsigned)r;
    return 0;
}
#endif

/* --check's "data" step: the data loads, and what it holds. A first pull from
 * a PACS can take long: the step says so before it starts (the data source
 * logs its progress). */
static void check_data(check_t *k, const client_conf_t *conf)
{
    char err[1024];
    dataset_t tr = {0}, va = {0};
    check_begin(k, "data", "loading the [data] source (a first pull from a PACS logs its "
                "progress below)");
    datasource_t *ds = datasource_open(&conf->data, err, sizeof err);
    if (!ds || datasource_load(ds, DATA_TRAIN, &tr, err, sizeof err) < 0 ||
        datasource_load(ds, DATA_VAL, &va, err, sizeof err) < 0) {
        check_step(k, "data", json_pack("{s:b,s:s}", "ok", 0, "reason", err), CHECK_FAIL, "%s",
                   err);
        goto out;
    }
    data_stats_t st;
    datasource_stats(ds, &st);
    json_t *skipped = json_object();
    long long n_skipped = data_stats_skipped(&st, NULL);
    for (size_t i = 0; i < st.nskipped; i++)
        json_object_set_new(skipped, st.skipped[i].reason, json_integer(st.skipped[i].n));
    json_t *v = json_pack("{s:s,s:I,s:I,s:[i,i,i],s:I,s:I,s:I,s:o,s:b}", "source",
                          datasource_kind(ds), "train", (json_int_t)tr.n, "val", (json_int_t)va.n,
                          "size", tr.channels, tr.height, tr.width, "found", (json_int_t)st.found,
                          "labelled", (json_int_t)st.labelled, "decoded", (json_int_t)st.decoded,
                          "skipped", skipped, "ok", tr.n > 0);
    if (tr.n == 0) {
        json_object_set_new(v, "reason", json_string("the training split is empty"));
        check_step(k, "data", v, CHECK_FAIL, "%s: the training split is empty",
                   datasource_kind(ds));
    } else {
        check_step(k, "data", v, CHECK_OK,
                   "%s: %lld training and %lld validation images of %dx%dx%d (found %lld, "
                   "labelled %lld, decoded %lld, skipped %lld)",
                   datasource_kind(ds), (long long)tr.n, (long long)va.n, tr.channels, tr.height,
                   tr.width, (long long)st.found, (long long)st.labelled, (long long)st.decoded,
                   n_skipped);
    }
out:
    dataset_free(&tr);
    dataset_free(&va);
    datasource_destroy(&ds);
}

/* --check: every step runs even when an earlier one failed, each reported
 * as it ends; a person's report, or one JSON object with --json. */
static int run_check(const client_conf_t *conf, const char *path, int json)
{
    char why[1024], title[1024];
    snprintf(title, sizeof title, "medfed-client %s --check: site %s, config %s",
             medfed_version(), conf->site, path);
    check_t *k = check_new(title, json);
    if (!k) return 1;
    json_object_set_new(check_root(k), "site", json_string(conf->site));
    json_object_set_new(check_root(k), "config", json_string("ok"));
    json_object_set_new(check_root(k), "transport",
                        json_string(conf->curve_key[0] ? "curve" : "plaintext"));
    const uint32_t proto = conf->protocol > 0 ? (uint32_t)conf->protocol : WIRE_VERSION;
    check_step(k, "version", json_pack("{s:s,s:s,s:i}", "software", medfed_version(), "commit",
                                       medfed_git_commit(), "protocol", (int)proto),
               CHECK_OK, "medfed %s (commit %s), protocol version %u%s", medfed_version(),
               medfed_git_commit(), proto, proto != WIRE_VERSION ? " (pinned)" : "");
    check_step(k, "config", NULL, CHECK_OK, "%s parsed; transport %s", path,
               conf->curve_key[0] ? "CURVE" : "plaintext (no curve_key)");
    if (client_check_keys(conf, why, sizeof why) == 0)
        check_step(k, "keys", json_string("ok"), CHECK_OK, "key files load%s%s",
                   conf->identity[0] ? ": identity" : "", conf->curve_key[0] ? ", CURVE" : "");
    else
        check_step(k, "keys", json_string(why), CHECK_FAIL, "%s", why);
    if (conf->certificate[0]) {
        char hint[160];
        snprintf(hint, sizeof hint, "ask the research lead for a new one (medfed provision "
                 "--renew %s)", conf->site);
        check_certificate(k, "certificate", conf->certificate, hint);
        check_certificate(k, "ca_certificate", conf->ca,
                          "the federation CA must be renewed by the research lead");
    }
    check_data(k, conf);
    check_begin(k, "coordinator", "%s: PING (up to 10 s)", conf->coordinator);
    uint32_t round = 0;
    double rtt_ms = 0;
    char sw[WIRE_SW_MAX];
    if (client_check_coordinator(conf, 10.0, &round, &rtt_ms, sw, why, sizeof why) == 0) {
        json_t *v = json_pack("{s:s,s:b,s:i,s:f}", "endpoint", conf->coordinator, "reachable", 1,
                              "round", (int)round, "rtt_ms", rtt_ms);
        json_object_set_new(v, "software", sw[0] ? json_string(sw) : json_null());
        check_step(k, "coordinator", v, CHECK_OK,
                   "%s answers (medfed %s, round %u, %.1f ms); this site is admitted",
                   conf->coordinator, sw[0] ? sw : "older than 0.6", round, rtt_ms);
    } else {
        check_step(k, "coordinator", json_pack("{s:s,s:b,s:s}", "endpoint", conf->coordinator,
                                               "reachable", 0, "reason", why),
                   CHECK_FAIL, "%s: %s", conf->coordinator, why);
    }
    return check_finish(&k);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "enrol") == 0) return enrol_main(argc - 1, argv + 1);
    if (medfed_version_flag(argc, argv, "medfed-client")) return 0;
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},
        {"check", no_argument, 0, 'k'},
        {"json", no_argument, 0, 'j'},
#ifdef MEDFED_TEST_HOOKS
        {"die-at", required_argument, 0, 'd'},
        {"stall-at", required_argument, 0, 's'},
#endif
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config = NULL;
    int check = 0, json = 0;
    client_die_at_t die_at = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:kh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'k': check = 1; break;
        case 'j': json = 1; break;
#ifdef MEDFED_TEST_HOOKS
        case 'd': case 's':
            if (parse_die_at(optarg, &die_at) < 0) {
                fprintf(stderr, "medfed-client: --%s wants PHASE[:ROUND], got '%s'\n",
                        opt == 'd' ? "die-at" : "stall-at", optarg);
                return 2;
            }
            die_at.stall = opt == 's';
            break;
#endif
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config || optind != argc) {
        usage(stderr);
        return 2;
    }
    static client_conf_t conf;
    char err[1024];
    if (client_conf_load(config, &conf, err, sizeof err) < 0) {
        fprintf(stderr, "medfed-client: %s\n", err);
        if (!check) return 2;
        check_t *k = check_new("medfed-client --check", json);
        if (k) check_step(k, "config", json_string(err), CHECK_FAIL, "%s", err);
        return k ? check_finish(&k) : 1;
    }
    char prog[96];
    snprintf(prog, sizeof prog, "client[%s]", conf.site);
    log_init(prog, conf.log_level);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (check) return run_check(&conf, config, json);
    health_init(conf.site); /* sd_notify and journald fields under systemd */
    int rc = client_run(&conf, &die_at);
    health_stopping(rc == 0 ? "done" : "failed");
    return rc;
}
