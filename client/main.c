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
 * for good (systemd does not restart it: RestartPreventExitStatus=2).
 * --check prints one JSON object on stdout and exits 0 (all good) or 1.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "client/client.h"
#include "client/data.h"
#include "client/enrol.h"
#include "common/health.h"
#include "common/log.h"
#include "common/util.h"

static void on_signal(int sig)
{
    (void)sig;
    client_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: medfed-client --config FILE [--check]\n"
            "  --config FILE       INI config ([client] and [data] sections)\n"
            "  --check             check config, key files, data and the coordinator (PING),\n"
            "                      print a JSON summary, exit 0 if all is well, else 1\n"
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

/* --check's "data" member: the data loads, and what it holds. Returns 0 or -1. */
static int check_data(const client_conf_t *conf)
{
    char err[1024];
    dataset_t tr = {0}, va = {0};
    datasource_t *ds = datasource_open(&conf->data, err, sizeof err);
    int rc = -1, printed = 0;
    if (!ds) goto out;
    if (datasource_load(ds, DATA_TRAIN, &tr, err, sizeof err) < 0 ||
        datasource_load(ds, DATA_VAL, &va, err, sizeof err) < 0)
        goto out;
    data_stats_t st;
    datasource_stats(ds, &st);
    printf("{\"source\":\"%s\",\"train\":%lld,\"val\":%lld,\"size\":[%d,%d,%d],",
           datasource_kind(ds), (long long)tr.n, (long long)va.n, tr.channels, tr.height, tr.width);
    data_stats_json(&st, stdout); /* found, labelled, decoded, skipped by reason */
    printed = 1;
    if (tr.n == 0) {
        printf(",\"ok\":false,\"reason\":\"the training split is empty\"}");
        goto out;
    }
    printf(",\"ok\":true}");
    rc = 0;
out:
    if (!printed) {
        printf("{\"ok\":false,\"reason\":");
        util_json_string(stdout, err);
        putchar('}');
    }
    dataset_free(&tr);
    dataset_free(&va);
    datasource_destroy(&ds);
    return rc;
}

/* --check: every part runs even when an earlier one failed; one JSON object. */
static int run_check(const client_conf_t *conf)
{
    char why[1024];
    int ok = 1;
    printf("{\"site\":");
    util_json_string(stdout, conf->site);
    printf(",\"config\":\"ok\",\"transport\":\"%s\",\"keys\":",
           conf->curve_key[0] ? "curve" : "plaintext");
    if (client_check_keys(conf, why, sizeof why) == 0) {
        printf("\"ok\"");
    } else {
        util_json_string(stdout, why);
        ok = 0;
    }
    printf(",\"data\":");
    fflush(stdout);
    if (check_data(conf) < 0) ok = 0;
    printf(",\"coordinator\":{\"endpoint\":");
    util_json_string(stdout, conf->coordinator);
    uint32_t round = 0;
    double rtt_ms = 0;
    if (client_check_coordinator(conf, 10.0, &round, &rtt_ms, why, sizeof why) == 0) {
        printf(",\"reachable\":true,\"round\":%u,\"rtt_ms\":%.1f}", round, rtt_ms);
    } else {
        printf(",\"reachable\":false,\"reason\":");
        util_json_string(stdout, why);
        putchar('}');
        ok = 0;
    }
    printf(",\"ok\":%s}\n", ok ? "true" : "false");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "enrol") == 0) return enrol_main(argc - 1, argv + 1);
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},
        {"check", no_argument, 0, 'k'},
#ifdef MEDFED_TEST_HOOKS
        {"die-at", required_argument, 0, 'd'},
        {"stall-at", required_argument, 0, 's'},
#endif
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config = NULL;
    int check = 0;
    client_die_at_t die_at = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:kh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'k': check = 1; break;
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
        printf("{\"config\":");
        util_json_string(stdout, err);
        printf(",\"ok\":false}\n");
        return 1;
    }
    char prog[96];
    snprintf(prog, sizeof prog, "client[%s]", conf.site);
    log_init(prog, conf.log_level);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (check) return run_check(&conf);
    health_init(conf.site); /* sd_notify and journald fields under systemd */
    int rc = client_run(&conf, &die_at);
    health_stopping(rc == 0 ? "done" : "failed");
    return rc;
}
