/*
 * medfed-client - the hospital client daemon.
 *
 *   medfed-client --config FILE [--check] [--die-at PHASE:ROUND]
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "client/client.h"
#include "client/data.h"
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
            "usage: medfed-client --config FILE [--check] [--die-at PHASE:ROUND]\n"
            "  --config FILE       INI config ([client] and [data] sections)\n"
            "  --check             validate the config and load the data, then exit\n"
            "  --die-at PHASE:R    testing: SIGKILL self at PHASE of round R (train, upload, eval,\n"
            "                      advertise, share, masked, unmask)\n");
}

static int parse_die_at(const char *s, client_die_at_t *d)
{
    const char *colon = strchr(s, ':');
    long long r = 1;
    size_t plen = colon ? (size_t)(colon - s) : strlen(s);
    if (plen == 0 || plen >= sizeof d->phase) return -1;
    memcpy(d->phase, s, plen);
    d->phase[plen] = '\0';
    static const char *const phases[] = {"train", "upload", "eval", "advertise", "share",
                                         "masked", "unmask"};
    int known = 0;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        known |= strcmp(d->phase, phases[i]) == 0;
    if (!known) return -1;
    if (colon && util_parse_int(colon + 1, 1, 1000000, &r) < 0) return -1;
    d->round = (unsigned)r;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},
        {"check", no_argument, 0, 'k'},
        {"die-at", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config = NULL;
    int check = 0;
    client_die_at_t die_at = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:kd:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'k': check = 1; break;
        case 'd':
            if (parse_die_at(optarg, &die_at) < 0) {
                fprintf(stderr, "medfed-client: --die-at wants PHASE[:ROUND], got '%s'\n", optarg);
                return 2;
            }
            break;
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
        return 2;
    }
    char prog[96];
    snprintf(prog, sizeof prog, "client[%s]", conf.site);
    log_init(prog, conf.log_level);

    if (check) {
        datasource_t *ds = datasource_open(&conf.data, err, sizeof err);
        if (!ds) {
            fprintf(stderr, "medfed-client: %s\n", err);
            return 1;
        }
        dataset_t tr = {0}, va = {0};
        int rc = 0;
        if (datasource_load(ds, DATA_TRAIN, &tr, err, sizeof err) < 0 ||
            datasource_load(ds, DATA_VAL, &va, err, sizeof err) < 0) {
            fprintf(stderr, "medfed-client: data: %s\n", err);
            rc = 1;
        } else {
            printf("{\"site\":");
            util_json_string(stdout, conf.site);
            printf(",\"source\":\"%s\",\"train\":%lld,\"val\":%lld,\"ok\":true}\n",
                   datasource_kind(ds), (long long)tr.n, (long long)va.n);
        }
        dataset_free(&tr);
        dataset_free(&va);
        datasource_destroy(&ds);
        return rc;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return client_run(&conf, &die_at);
}
