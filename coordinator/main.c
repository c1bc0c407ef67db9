/*
 * medfed-coordinator - runs a federation of hospital clients.
 *
 *   medfed-coordinator --init MODEL.safetensors --out DIR [options]
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "coordinator/coordinator.h"

static void on_signal(int sig)
{
    (void)sig;
    coord_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: medfed-coordinator --init FILE --out DIR [options]\n"
        "  --bind ENDPOINT          ZeroMQ endpoint to listen on (tcp://127.0.0.1:7700)\n"
        "  --init FILE              initial model (safetensors from medfed-init)\n"
        "  --out DIR                metrics.jsonl and model.safetensors go here\n"
        "  --roster FILE            sites, one per line: NAME [IDENTITY-KEY [CURVE-KEY]] (hex)\n"
        "  --curve-secret FILE      CURVE transport: this secret key (0600); only roster keys\n"
        "                           are admitted (ZAP), each bound to its site name\n"
        "  --rounds R               rounds to run (10)\n"
        "  --wait-for N             start once N clients are connected (1)\n"
        "  --min-clients M          a round needs M accepted updates, else it is aborted (1)\n"
        "  --fraction F             share of live clients picked each round (1.0)\n"
        "  --local-epochs E --batch B --lr LR --momentum M --weight-decay WD\n"
        "                           local training sent to clients (2, 32, 0.02, 0.9, 0);\n"
        "                           --local-epochs 0 sends zero updates (protocol benchmarks)\n"
        "  --server-opt fedavg|fedavgm --server-lr LR --server-momentum M\n"
        "  --seed S                 cohort choice and training seeds (1)\n"
        "  --heartbeat-timeout S    drop a client silent this long (30)\n"
        "  --phase-timeout S        deadline of each phase (3600)\n"
        "  --wait-timeout S         give up waiting for clients (600)\n"
        "  --secagg on|off          secure aggregation: the coordinator learns only the sum (on)\n"
        "  --dropout D              expected share of the cohort lost per round (0.2)\n"
        "  --collusion G            share of clients that may collude with the coordinator (0.2)\n"
        "                           (t is derived from both; unsafe settings are refused)\n"
        "  --clip C                 secure aggregation clips update values to [-C, C] (2.0)\n"
        "  --neighbors K            SecAgg+: each client masks with K neighbours (0: all pairs\n"
        "                           up to 16 clients, O(log n) beyond)\n"
        "  --upload-slots K         masked inputs in flight at once (1): memory ~ (2 + K) x model\n"
        "  --log-level L            error|warn|info|debug (info)\n");
}

#define NUM(opt, lo, hi, dst)                                                             \
    do {                                                                                  \
        double v_;                                                                        \
        if (util_parse_double(optarg, lo, hi, &v_) < 0) {                                 \
            fprintf(stderr, "medfed-coordinator: --%s must be in [%g, %g], got '%s'\n", opt, \
                    (double)(lo), (double)(hi), optarg);                                  \
            return 2;                                                                     \
        }                                                                                 \
        dst = v_;                                                                         \
    } while (0)

int main(int argc, char **argv)
{
    enum { O_BIND = 256, O_INIT, O_OUT, O_ROSTER, O_ROUNDS, O_WAIT, O_MIN, O_FRAC, O_EPOCHS,
           O_BATCH, O_LR, O_MOM, O_WD, O_SOPT, O_SLR, O_SMOM, O_SEED, O_HB, O_PHASE, O_WAITT,
           O_LOG, O_SECAGG, O_DROPOUT, O_COLLUSION, O_CLIP, O_SLOTS, O_NEIGHBORS, O_CURVE };
    static const struct option longopts[] = {
        {"bind", 1, 0, O_BIND}, {"init", 1, 0, O_INIT}, {"out", 1, 0, O_OUT},
        {"roster", 1, 0, O_ROSTER}, {"rounds", 1, 0, O_ROUNDS}, {"wait-for", 1, 0, O_WAIT},
        {"min-clients", 1, 0, O_MIN}, {"fraction", 1, 0, O_FRAC},
        {"local-epochs", 1, 0, O_EPOCHS}, {"batch", 1, 0, O_BATCH}, {"lr", 1, 0, O_LR},
        {"momentum", 1, 0, O_MOM}, {"weight-decay", 1, 0, O_WD}, {"server-opt", 1, 0, O_SOPT},
        {"server-lr", 1, 0, O_SLR}, {"server-momentum", 1, 0, O_SMOM}, {"seed", 1, 0, O_SEED},
        {"heartbeat-timeout", 1, 0, O_HB}, {"phase-timeout", 1, 0, O_PHASE},
        {"wait-timeout", 1, 0, O_WAITT}, {"log-level", 1, 0, O_LOG}, {"help", 0, 0, 'h'},
        {"secagg", 1, 0, O_SECAGG}, {"dropout", 1, 0, O_DROPOUT},
        {"collusion", 1, 0, O_COLLUSION}, {"clip", 1, 0, O_CLIP},
        {"upload-slots", 1, 0, O_SLOTS}, {"neighbors", 1, 0, O_NEIGHBORS},
        {"curve-secret", 1, 0, O_CURVE},
        {0, 0, 0, 0},
    };
    static coord_conf_t conf;
    coord_conf_defaults(&conf);
    int opt;
    double d;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_BIND: util_strlcpy(conf.bind, optarg, sizeof conf.bind); break;
        case O_INIT: util_strlcpy(conf.init_model, optarg, sizeof conf.init_model); break;
        case O_OUT: util_strlcpy(conf.out_dir, optarg, sizeof conf.out_dir); break;
        case O_ROSTER: util_strlcpy(conf.roster, optarg, sizeof conf.roster); break;
        case O_CURVE: util_strlcpy(conf.curve_secret, optarg, sizeof conf.curve_secret); break;
        case O_ROUNDS: NUM("rounds", 1, 100000, d); conf.rounds = (int)d; break;
        case O_WAIT: NUM("wait-for", 1, 1024, d); conf.wait_for = (int)d; break;
        case O_MIN: NUM("min-clients", 1, 1024, d); conf.min_clients = (int)d; break;
        case O_FRAC: NUM("fraction", 0.001, 1, conf.fraction); break;
        case O_EPOCHS: NUM("local-epochs", 0, 1000, d); conf.epochs = (int)d; break;
        case O_BATCH: NUM("batch", 1, 65536, d); conf.batch = (int)d; break;
        case O_LR: NUM("lr", 1e-8, 10, conf.lr); break;
        case O_MOM: NUM("momentum", 0, 0.999, conf.momentum); break;
        case O_WD: NUM("weight-decay", 0, 0.1, conf.weight_decay); break;
        case O_SOPT:
            if (fedavg_opt_parse(optarg, &conf.server.opt) < 0) {
                fprintf(stderr, "medfed-coordinator: --server-opt is fedavg or fedavgm, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case O_SLR: NUM("server-lr", 1e-6, 100, conf.server.lr); break;
        case O_SMOM: NUM("server-momentum", 0, 0.999, conf.server.momentum); break;
        case O_SEED: NUM("seed", 0, 9007199254740992.0, d); conf.seed = (uint64_t)d; break;
        case O_HB: NUM("heartbeat-timeout", 0.1, 86400, conf.heartbeat_timeout); break;
        case O_PHASE: NUM("phase-timeout", 0.1, 604800, conf.phase_timeout); break;
        case O_WAITT: NUM("wait-timeout", 0.1, 604800, conf.wait_timeout); break;
        case O_LOG:
            if (log_level_parse(optarg, &conf.log_level) < 0) {
                fprintf(stderr, "medfed-coordinator: unknown --log-level '%s'\n", optarg);
                return 2;
            }
            break;
        case O_SECAGG:
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                fprintf(stderr, "medfed-coordinator: --secagg is on or off, got '%s'\n", optarg);
                return 2;
            }
            conf.secagg = strcmp(optarg, "on") == 0;
            break;
        case O_DROPOUT: NUM("dropout", 0, 0.99, conf.dropout); break;
        case O_COLLUSION: NUM("collusion", 0, 0.99, conf.collusion); break;
        case O_CLIP: NUM("clip", 1e-6, 1e6, conf.clip); break;
        case O_SLOTS: NUM("upload-slots", 1, 1024, d); conf.upload_slots = (int)d; break;
        case O_NEIGHBORS: NUM("neighbors", 0, 1024, d); conf.neighbors = (int)d; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !conf.init_model[0]) {
        usage(stderr);
        return 2;
    }
    if (conf.min_clients > conf.wait_for) conf.wait_for = conf.min_clients;
    log_init("coordinator", conf.log_level);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return coord_run(&conf);
}
