/*
 * medfed-sim - a whole federation on one machine: partitions a data set
 * across N simulated hospitals, writes each one's own files and config, then
 * runs the coordinator and N client daemons as separate processes talking
 * over tcp on loopback, and shows progress as rounds complete.
 *
 * Outputs in --out DIR: metrics.jsonl, model.safetensors, init.safetensors,
 * roster.txt, sites/site-NN/ (that site's data and client.ini), logs/.
 *
 * --swarm, for scale: the sites are protocol-only clients, many per process
 * (medfed-swarm: the daemon's client code with a synthetic model of --params
 * parameters instead of LibTorch, and no images), each still with its own
 * keys, roster line, client.ini and [policy]; the coordinator is the real
 * one, CURVE and secure aggregation as configured.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aggregation/secagg.h"
#include "imaging/imaging.h"
#include "common/json.h"
#include "common/rng.h"
#include "common/runrec.h"
#include "common/util.h"
#include "common/version.h"
#include "coordinator/coordinator.h"
#include "crypto/crypto.h"
#include "sim/partition.h"

#define SIM_MAX_CLIENTS 256   /* daemons, a process each */
#define SIM_MAX_SWARM 1024    /* swarm sites: the roster's and the coordinator's limit */
#define SIM_SWARM_PARAMS 1000000

typedef struct {
    int clients, rounds, epochs, batch, threads;
    double lr, momentum, heartbeat_timeout;
    char dataset[32], partition[64], model[32], out[PATH_MAX], data_dir[PATH_MAX];
    char drop[512];
    long long seed, max_train, max_val;
    int min_clients;
    int secagg, curve;
    char dropout[32], collusion[32], neighbors[16];
    char upload_bits[8];  /* "": the coordinator's default */
    /* --coord-opt NAME=VALUE and the strategy flags (sim_coord_flags): --NAME
     * VALUE to the coordinator, checked against its settings table first */
    char coord_opt[40][2][64];
    int n_coord_opt;
    char config[PATH_MAX];    /* --config: a coordinator.ini whose keys the run takes */
    int centralised;          /* --centralised: one site holding every site's training data */
    int swarm, swarm_procs, hb_given;
    long long params;     /* --swarm: the synthetic model's size (0: not given) */
} sim_opts_t;

/* medfed-sim flags that are the coordinator's own settings (same names), for
 * the strategies and the recipe: passed on as --NAME VALUE. */
static const char *const sim_coord_flags[] = {
    "server-opt", "server-lr", "server-momentum", "server-eta", "server-beta1", "server-beta2",
    "server-tau", "prox-mu", "lr-schedule", "lr-step-rounds", "lr-step-gamma", "lr-min",
    "weight-decay", "fraction", "clip", "augment", "class-balanced",
};
#define SIM_COORD_FLAGS (sizeof sim_coord_flags / sizeof sim_coord_flags[0])

static volatile sig_atomic_t sim_interrupted = 0;
static void on_signal(int sig) { (void)sig; sim_interrupted = 1; }

static char bin_dir[PATH_MAX];

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "medfed-sim: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: medfed-sim [options]\n"
        "  --clients N            simulated hospitals (10; at most %d, --swarm %d)\n"
        "  --rounds R             federated rounds (20)\n"
        "  --dataset D            pneumoniamnist | fashion-mnist (pneumoniamnist)\n"
        "  --partition P          iid | dirichlet:ALPHA | classes:K (dirichlet:0.5)\n"
        "  --seed S               seed for partitioning, init and training (1)\n"
        "  --out DIR              output directory (runs/sim)\n"
        "  --model M              cnn | resnet18 (cnn)\n"
        "  --local-epochs E       local epochs per round (2); 0 = no training (benchmarks)\n"
        "  --batch B              local batch size (32)\n"
        "  --lr LR                local SGD learning rate (0.02)\n"
        "  --momentum M           local SGD momentum (0.9)\n"
        "  --threads T            LibTorch threads per client (1)\n"
        "  --min-clients M        fewer updates than this aborts a round (1)\n"
        "  --secagg on|off        secure aggregation (on): the coordinator learns only the sum\n"
        "  --dropout D            expected dropout share, for the threshold (0.2)\n"
        "  --collusion G          share of clients that may collude with the coordinator (0.33)\n"
        "  --curve on|off         CURVE-encrypted transport with ZAP roster check (on)\n"
        "  --neighbors K          SecAgg+ degree: mask with K neighbours (0: all pairs up to\n"
        "                         16 clients, O(log n) beyond)\n"
        "  --upload-bits B        bits per site value in the masked upload (the coordinator's\n"
        "                         upload_bits, 11); the width is B + ceil(log2 clients) + 1, at\n"
        "                         most 32 (16 bits at 10 clients; 27 and up: 32, 4 bytes a value)\n"
        "  --coord-opt NAME=VALUE passes --NAME VALUE to the coordinator (up to 8; e.g.\n"
        "                         upload_slots=2, io_threads=1: medfed-coordinator --help)\n"
        "  --server-opt O         fedavg | fedavgm | fedadagrad | fedyogi | fedadam (fedavg);\n"
        "                         --server-lr, --server-momentum (fedavgm), --server-eta,\n"
        "                         --server-beta1, --server-beta2, --server-tau (adaptive)\n"
        "  --prox-mu MU           FedProx: (MU/2)||w - w_global||^2 in the local loss (0: off)\n"
        "  --lr-schedule S        constant | step | cosine over the rounds (constant);\n"
        "                         --lr-step-rounds, --lr-step-gamma (step), --lr-min (floor)\n"
        "  --weight-decay WD      local SGD weight decay (0)\n"
        "  --fraction F           share of the live sites drawn per round (1)\n"
        "  --clip C               secure aggregation's first clip and ceiling (2.0)\n"
        "  --augment on|off       seeded small random affine on training images\n"
        "  --class-balanced on|off  cross-entropy weighted by each site's class frequencies\n"
        "                         (these are the coordinator's settings of the same names)\n"
        "  --config FILE          a coordinator.ini: its [coordinator] keys apply to the run\n"
        "                         (flags given here override them; the sim's sockets, files and\n"
        "                         keys stay the sim's)\n"
        "  --centralised          the reference: one site holding the union of the sites'\n"
        "                         training (and validation) data, plaintext FedAvg of one, same\n"
        "                         rounds, epochs and recipe: the same total compute\n"
        "  --drop C:PHASE[:R],..  kill client C at PHASE of round R (1); phases: train, upload,\n"
        "                         eval, and with secure aggregation advertise, share, masked, unmask\n"
        "                         (test build only: make test-bin, build/hooks/bin/medfed-sim)\n"
        "  --max-train N          use only the first N training images (all)\n"
        "  --max-val N            use only the first N validation images (all)\n"
        "  --heartbeat-timeout S  coordinator drops a client silent this long (10)\n"
        "  --data-dir DIR         where pneumoniamnist/ lives (<project>/data)\n"
        "  --swarm                protocol-only sites, many per process (medfed-swarm), up to\n"
        "                         %d: the real protocol, crypto and CURVE, a synthetic model\n"
        "                         (seeded updates; --local-epochs 0: zero updates), no images;\n"
        "                         the data, model and partition options do not apply\n"
        "  --params P             --swarm: the synthetic model's parameters (%d)\n"
        "  --swarm-procs N        --swarm: medfed-swarm processes the sites are split across (1)\n",
        SIM_MAX_CLIENTS, SIM_MAX_SWARM, SIM_MAX_SWARM, SIM_SWARM_PARAMS);
}

/* ---- data set ---------------------------------------------------------------------- */

static void dataset_paths(const sim_opts_t *o, int val, char *img, char *lab, size_t len)
{
    if (strcmp(o->dataset, "fashion-mnist") == 0) {
        const char *base = "/usr/share/datasets/fashion-mnist";
        snprintf(img, len, "%s/%s-images-idx3-ubyte.gz", base, val ? "t10k" : "train");
        snprintf(lab, len, "%s/%s-labels-idx1-ubyte.gz", base, val ? "t10k" : "train");
    } else {
        snprintf(img, len, "%s/pneumoniamnist/%s-images-idx3-ubyte.gz", o->data_dir,
                 val ? "val" : "train");
        snprintf(lab, len, "%s/pneumoniamnist/%s-labels-idx1-ubyte.gz", o->data_dir,
                 val ? "val" : "train");
    }
}

static void load_split(const sim_opts_t *o, int val, long long max, idx_set_t *set)
{
    char img[PATH_MAX + 64], lab[PATH_MAX + 64], err[1024];
    dataset_paths(o, val, img, lab, sizeof img);
    if (idx_load(img, lab, set, err, sizeof err) < 0) die("%s", err);
    if (max > 0 && max < set->n) set->n = max; /* a prefix: deterministic and enough for tests */
}

static int count_classes(const idx_set_t *s)
{
    int max = 0;
    for (int64_t i = 0; i < s->n; i++)
        if (s->labels[i] > max) max = s->labels[i];
    return max + 1;
}

/* Writes site k's share of set as <dir>/<prefix>-{images-idx3,labels-idx1}-ubyte.gz. */
static void write_share(const idx_set_t *set, const int32_t *site_of, int k, const char *dir,
                        const char *prefix, int64_t *count_out)
{
    int64_t *idx = malloc((size_t)set->n * sizeof *idx), n = 0;
    if (!idx) die("%s", "out of memory");
    for (int64_t i = 0; i < set->n; i++)
        if (site_of[i] == k) idx[n++] = i;
    char img[PATH_MAX + 64], lab[PATH_MAX + 64], err[1024];
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (idx_write(img, lab, set, idx, n, err, sizeof err) < 0) die("%s", err);
    free(idx);
    *count_out = n;
}

static void partition(const sim_opts_t *o, const part_spec_t *spec, const idx_set_t *set,
                      int classes, int64_t min_per_site, uint64_t seed, int32_t *site_of)
{
    char err[512];
    if (partition_assign(spec, set->labels, set->n, classes, o->clients, min_per_site, seed,
                         site_of, err, sizeof err) < 0)
        die("partition: %s", err);
}

/* ---- processes --------------------------------------------------------------------- */

static pid_t spawn(const char *log_path, char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static int run_wait(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, STDOUT_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("%s", "cannot find a free loopback port");
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- progress ---------------------------------------------------------------------- */

/* A number of a metrics row; NAN when absent or null. */
static double row_num(const json_t *row, const char *key)
{
    double v;
    return jx_number(row, key, &v) == 0 ? v : NAN;
}

static void print_round(const json_t *row, int rounds)
{
    double acc = row_num(row, "val_accuracy"), auc = row_num(row, "val_auc");
    char acc_s[16] = "     -", auc_s[16] = "     -";
    if (!isnan(acc)) snprintf(acc_s, sizeof acc_s, "%.4f", acc);
    if (!isnan(auc)) snprintf(auc_s, sizeof auc_s, "%.4f", auc);
    printf("round %3.0f/%d  sites %2.0f  %s  val_acc %s  val_auc %s  %.1f s  up %.1f MB  "
           "down %.1f MB\n",
           row_num(row, "round"), rounds, row_num(row, "participants"),
           jx_true(row, "aborted") ? "ABORTED" : "ok     ", acc_s, auc_s, row_num(row, "seconds"),
           row_num(row, "bytes_up") / 1e6, row_num(row, "bytes_down") / 1e6);
    fflush(stdout);
}

/* ---- main -------------------------------------------------------------------------- */

static void parse_args(int argc, char **argv, sim_opts_t *o)
{
    enum { O_CLIENTS = 256, O_ROUNDS, O_DATASET, O_PART, O_SEED, O_OUT, O_MODEL, O_EPOCHS,
           O_BATCH, O_LR, O_MOM, O_THREADS, O_DROP, O_MAXTR, O_MAXVAL, O_HB, O_DATADIR, O_MIN,
           O_SECAGG, O_DROPOUT, O_COLLUSION, O_NEIGHBORS, O_CURVE, O_UPLOAD_BITS,
           O_SWARM, O_PARAMS, O_SWARM_PROCS, O_COORD_OPT, O_CONFIG, O_CENTRAL, O_PASS };
    static const struct option base_opts[] = {
        {"clients", 1, 0, O_CLIENTS}, {"rounds", 1, 0, O_ROUNDS}, {"dataset", 1, 0, O_DATASET},
        {"partition", 1, 0, O_PART}, {"seed", 1, 0, O_SEED}, {"out", 1, 0, O_OUT},
        {"model", 1, 0, O_MODEL}, {"local-epochs", 1, 0, O_EPOCHS}, {"batch", 1, 0, O_BATCH},
        {"lr", 1, 0, O_LR}, {"momentum", 1, 0, O_MOM}, {"threads", 1, 0, O_THREADS},
        {"drop", 1, 0, O_DROP}, {"max-train", 1, 0, O_MAXTR}, {"max-val", 1, 0, O_MAXVAL},
        {"heartbeat-timeout", 1, 0, O_HB}, {"data-dir", 1, 0, O_DATADIR},
        {"min-clients", 1, 0, O_MIN}, {"secagg", 1, 0, O_SECAGG}, {"dropout", 1, 0, O_DROPOUT},
        {"collusion", 1, 0, O_COLLUSION}, {"neighbors", 1, 0, O_NEIGHBORS},
        {"curve", 1, 0, O_CURVE}, {"upload-bits", 1, 0, O_UPLOAD_BITS},
        {"swarm", 0, 0, O_SWARM}, {"params", 1, 0, O_PARAMS},
        {"swarm-procs", 1, 0, O_SWARM_PROCS}, {"coord-opt", 1, 0, O_COORD_OPT},
        {"config", 1, 0, O_CONFIG}, {"centralised", 0, 0, O_CENTRAL},
        {"help", 0, 0, 'h'},
    };
    /* ... and the coordinator's own settings (sim_coord_flags), O_PASS + i */
    struct option longopts[sizeof base_opts / sizeof base_opts[0] + SIM_COORD_FLAGS + 1];
    memcpy(longopts, base_opts, sizeof base_opts);
    for (size_t i = 0; i < SIM_COORD_FLAGS; i++)
        longopts[sizeof base_opts / sizeof base_opts[0] + i] =
            (struct option){sim_coord_flags[i], 1, 0, O_PASS + (int)i};
    longopts[sizeof base_opts / sizeof base_opts[0] + SIM_COORD_FLAGS] = (struct option){0, 0, 0, 0};
    static coord_conf_t scratch; /* checks the values the coordinator will be given */
    coord_conf_defaults(&scratch);
    int opt;
    long long v;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case O_CLIENTS: bad = util_parse_int(optarg, 1, SIM_MAX_SWARM, &v); o->clients = (int)v; break;
        case O_ROUNDS: bad = util_parse_int(optarg, 1, 100000, &v); o->rounds = (int)v; break;
        case O_DATASET: bad = util_strlcpy(o->dataset, optarg, sizeof o->dataset); break;
        case O_PART: bad = util_strlcpy(o->partition, optarg, sizeof o->partition); break;
        case O_SEED: bad = util_parse_int(optarg, 0, 1LL << 52, &o->seed); break;
        case O_OUT: bad = util_strlcpy(o->out, optarg, sizeof o->out); break;
        case O_MODEL: bad = util_strlcpy(o->model, optarg, sizeof o->model); break;
        case O_EPOCHS: bad = util_parse_int(optarg, 0, 1000, &v); o->epochs = (int)v; break;
        case O_BATCH: bad = util_parse_int(optarg, 1, 65536, &v); o->batch = (int)v; break;
        case O_LR: bad = util_parse_double(optarg, 1e-8, 10, &o->lr); break;
        case O_MOM: bad = util_parse_double(optarg, 0, 0.999, &o->momentum); break;
        case O_THREADS: bad = util_parse_int(optarg, 1, 256, &v); o->threads = (int)v; break;
#ifdef MEDFED_TEST_HOOKS
        case O_DROP: bad = util_strlcpy(o->drop, optarg, sizeof o->drop); break;
#else
        case O_DROP: /* the clients of a production build cannot be killed on cue */
            fprintf(stderr, "medfed-sim: --drop needs the test build, whose clients can be killed on "
                            "cue: make test-bin, then build/hooks/bin/medfed-sim ...\n");
            exit(2);
#endif
        case O_MAXTR: bad = util_parse_int(optarg, 1, 1LL << 40, &o->max_train); break;
        case O_MAXVAL: bad = util_parse_int(optarg, 1, 1LL << 40, &o->max_val); break;
        case O_HB:
            bad = util_parse_double(optarg, 0.1, 86400, &o->heartbeat_timeout);
            o->hb_given = 1;
            break;
        case O_DATADIR: bad = util_strlcpy(o->data_dir, optarg, sizeof o->data_dir); break;
        case O_MIN: bad = util_parse_int(optarg, 1, SIM_MAX_SWARM, &v); o->min_clients = (int)v; break;
        case O_SECAGG:
            bad = strcmp(optarg, "on") && strcmp(optarg, "off");
            o->secagg = strcmp(optarg, "on") == 0;
            break;
        case O_DROPOUT: {
            double d;
            bad = util_parse_double(optarg, 0, 0.99, &d) || util_strlcpy(o->dropout, optarg, sizeof o->dropout);
            break;
        }
        case O_COLLUSION: {
            double d;
            bad = util_parse_double(optarg, 0, 0.99, &d) || util_strlcpy(o->collusion, optarg, sizeof o->collusion);
            break;
        }
        case O_CURVE:
            bad = strcmp(optarg, "on") && strcmp(optarg, "off");
            o->curve = strcmp(optarg, "on") == 0;
            break;
        case O_NEIGHBORS:
            bad = util_parse_int(optarg, 0, 1024, &v) || util_strlcpy(o->neighbors, optarg, sizeof o->neighbors);
            break;
        case O_UPLOAD_BITS:
            bad = util_parse_int(optarg, 1, 32, &v) ||
                  util_strlcpy(o->upload_bits, optarg, sizeof o->upload_bits);
            break;
        case O_SWARM: o->swarm = 1; break;
        case O_PARAMS: bad = util_parse_int(optarg, 1, 1LL << 28, &o->params); break;
        case O_COORD_OPT: {
            const char *eq = strchr(optarg, '=');
            bad = !eq || eq == optarg || o->n_coord_opt >= 40 || (size_t)(eq - optarg) >= 64 ||
                  strlen(eq + 1) >= 64;
            if (!bad) {
                snprintf(o->coord_opt[o->n_coord_opt][0], 64, "--%.*s", (int)(eq - optarg), optarg);
                snprintf(o->coord_opt[o->n_coord_opt][1], 64, "%s", eq + 1);
                o->n_coord_opt++;
            }
            break;
        }
        case O_SWARM_PROCS: bad = util_parse_int(optarg, 1, 64, &v); o->swarm_procs = (int)v; break;
        case O_CONFIG: break; /* read before the flags (sim_config_defaults) */
        case O_CENTRAL: o->centralised = 1; break;
        case 'h': usage(stdout); exit(0);
        default:
            if (opt < O_PASS || opt >= O_PASS + (int)SIM_COORD_FLAGS) {
                usage(stderr);
                exit(2);
            }
            char why[256];
            if (coord_conf_set(&scratch, sim_coord_flags[opt - O_PASS], optarg, why, sizeof why) < 0) {
                fprintf(stderr, "medfed-sim: --%s: %s\n", sim_coord_flags[opt - O_PASS], why);
                exit(2);
            }
            bad = o->n_coord_opt >= 40;
            if (!bad) {
                snprintf(o->coord_opt[o->n_coord_opt][0], 64, "--%s", sim_coord_flags[opt - O_PASS]);
                snprintf(o->coord_opt[o->n_coord_opt][1], 64, "%s", optarg);
                o->n_coord_opt++;
            }
            break;
        }
        if (bad) {
            fprintf(stderr, "medfed-sim: bad value '%s' for an option (try --help)\n", optarg);
            exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
    if (strcmp(o->dataset, "pneumoniamnist") && strcmp(o->dataset, "fashion-mnist"))
        die("unknown --dataset '%s' (pneumoniamnist | fashion-mnist)", o->dataset);
    if (strcmp(o->model, "cnn") && strcmp(o->model, "resnet18"))
        die("unknown --model '%s' (cnn | resnet18)", o->model);
    char what[96];
    snprintf(what, sizeof what, "%d clients", o->clients);
    if (!o->swarm && o->clients > SIM_MAX_CLIENTS)
        die("%s: a process each is too many above 256; use --swarm", what);
    if (!o->swarm && (o->params || o->swarm_procs))
        die("%s go with --swarm", "--params and --swarm-procs");
    if (o->swarm && o->drop[0])
        die("%s", "--drop kills a site's process, and swarm sites share one: not with --swarm");
    if (o->centralised && o->swarm) die("%s", "--centralised trains real models: not with --swarm");
    if (o->centralised) {
        /* The reference: one site with every image, the same rounds and
         * local epochs (so the same images seen, the same compute), the
         * same recipe; FedAvg of one site is its own model (no secure
         * aggregation of one, no server optimiser, no proximal term). */
        o->clients = 1;
        util_strlcpy(o->partition, "iid", sizeof o->partition);
        o->secagg = 0;
        o->min_clients = 1;
        static const char *const central_fixed[][2] = {
            {"--server-opt", "fedavg"}, {"--server-lr", "1"}, {"--prox-mu", "0"}, {"--fraction", "1"}};
        for (size_t i = 0; i < sizeof central_fixed / sizeof central_fixed[0] && o->n_coord_opt < 40; i++) {
            snprintf(o->coord_opt[o->n_coord_opt][0], 64, "%s", central_fixed[i][0]);
            snprintf(o->coord_opt[o->n_coord_opt][1], 64, "%s", central_fixed[i][1]);
            o->n_coord_opt++;
        }
    }
    if (!o->swarm_procs) o->swarm_procs = 1;
    if (o->swarm_procs > o->clients) o->swarm_procs = o->clients;
    if (!o->params) o->params = SIM_SWARM_PARAMS;
    /* A site waits its turn for a CPU in a swarm (it heartbeats meanwhile),
     * but the coordinator itself is slower to read heartbeats among a
     * thousand uploads: a minute before a silent site counts as dropped. */
    if (o->swarm && !o->hb_given) o->heartbeat_timeout = 60;
}

/* --config FILE, read before the flags: the file's settings become the
 * run's defaults for what the sim itself passes (rounds, epochs, lr, the
 * threat model, ...), and the coordinator reads the file first, so every
 * other key of it applies too; flags given to the sim override both. */
static void sim_config_defaults(int argc, char **argv, sim_opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) path = argv[i] + 9;
        if (!path) continue;
        static coord_conf_t f;
        char err[1024];
        coord_conf_defaults(&f);
        if (coord_conf_load(path, &f, err, sizeof err) < 0) die("--config: %s", err);
        if (util_strlcpy(o->config, path, sizeof o->config) < 0) die("--config: %s", "path too long");
        o->rounds = f.rounds;
        o->epochs = f.epochs;
        o->batch = f.batch;
        o->lr = f.lr;
        o->momentum = f.momentum;
        o->seed = (long long)f.seed;
        o->min_clients = f.min_clients;
        o->secagg = f.secagg;
        o->heartbeat_timeout = f.heartbeat_timeout;
        snprintf(o->dropout, sizeof o->dropout, "%.17g", f.dropout);
        snprintf(o->collusion, sizeof o->collusion, "%.17g", f.collusion);
        snprintf(o->neighbors, sizeof o->neighbors, "%d", f.neighbors);
        snprintf(o->upload_bits, sizeof o->upload_bits, "%d", f.upload_bits);
    }
}

/* "1:train:2,3:eval" -> die_at[client] = "train:2" */
static void parse_drops(const sim_opts_t *o, char die_at[][32])
{
    char buf[512];
    util_strlcpy(buf, o->drop, sizeof buf);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        long long c;
        if (!colon) die("--drop wants CLIENT:PHASE[:ROUND], got '%s'", tok);
        *colon = '\0';
        if (util_parse_int(tok, 0, o->clients - 1, &c) < 0)
            die("--drop: client '%s' is not one of the simulated clients", tok);
        util_strlcpy(die_at[c], colon + 1, 32);
    }
}

/* A process of the run, for messages: site-NN, or swarm-K. */
static const char *proc_name(const sim_opts_t *o, int k, char *buf, size_t len)
{
    snprintf(buf, len, o->swarm ? "swarm-%d" : "site-%02d", k);
    return buf;
}

/* The swarm processes: sites split into swarm_procs contiguous blocks, each
 * block one medfed-swarm with that many sites' client.ini, its CPU turns a
 * share of the machine's (logs/swarm-K.log). */
static void spawn_swarm(const sim_opts_t *o, const char *prog, pid_t *pids)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    char slots[24], log_path[PATH_MAX + 64];
    snprintf(slots, sizeof slots, "%ld", cpus > o->swarm_procs ? cpus / o->swarm_procs : 1);
    for (int p = 0; p < o->swarm_procs; p++) {
        int first = (int)((long long)o->clients * p / o->swarm_procs);
        int end = (int)((long long)o->clients * (p + 1) / o->swarm_procs);
        char **argv = calloc((size_t)(end - first) + 4, sizeof *argv);
        if (!argv) die("%s", "out of memory");
        int na = 0;
        argv[na++] = (char *)prog;
        argv[na++] = "--slots";
        argv[na++] = slots;
        for (int k = first; k < end; k++) {
            char ini[PATH_MAX + 64];
            snprintf(ini, sizeof ini, "%s/sites/site-%02d/client.ini", o->out, k);
            if (!(argv[na++] = strdup(ini))) die("%s", "out of memory");
        }
        snprintf(log_path, sizeof log_path, "%s/logs/swarm-%d.log", o->out, p);
        pids[p] = spawn(log_path, argv);
        for (int i = 3; i < na; i++) free(argv[i]);
        free(argv);
    }
}

/* A thousand sites' connections (and a swarm's sockets) need more file
 * descriptors than the usual soft limit: raise it to the hard one, for the
 * coordinator and the swarm, which inherit it. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- the experiment record (common/runrec.h): the simulation's part ------------------ */

/* Every flag after defaults (the coordinator records its own settings beside). */
static json_t *sim_flags_json(const sim_opts_t *o)
{
    json_t *f = json_object(), *copt = json_object();
    for (int i = 0; i < o->n_coord_opt; i++) /* "--name" -> name */
        jx_set(copt, o->coord_opt[i][0] + 2, json_string(o->coord_opt[i][1]));
    jx_set(f, "clients", json_integer(o->clients));
    jx_set(f, "rounds", json_integer(o->rounds));
    jx_set(f, "dataset", json_string(o->dataset));
    jx_set(f, "partition", json_string(o->partition));
    jx_set(f, "seed", json_integer(o->seed));
    jx_set(f, "model", json_string(o->model));
    jx_set(f, "local_epochs", json_integer(o->epochs));
    jx_set(f, "batch", json_integer(o->batch));
    jx_set(f, "lr", json_real(o->lr));
    jx_set(f, "momentum", json_real(o->momentum));
    jx_set(f, "threads", json_integer(o->threads));
    jx_set(f, "min_clients", json_integer(o->min_clients));
    jx_set(f, "secagg", json_boolean(o->secagg));
    jx_set(f, "dropout", json_real(atof(o->dropout)));
    jx_set(f, "collusion", json_real(atof(o->collusion)));
    jx_set(f, "curve", json_boolean(o->curve));
    jx_set(f, "neighbors", json_integer(atoi(o->neighbors)));
    jx_set(f, "upload_bits", o->upload_bits[0] ? json_integer(atoi(o->upload_bits)) : json_null());
    jx_set(f, "coord_opt", copt);
    jx_set(f, "drop", o->drop[0] ? json_string(o->drop) : json_null());
    jx_set(f, "max_train", o->max_train ? json_integer(o->max_train) : json_null());
    jx_set(f, "max_val", o->max_val ? json_integer(o->max_val) : json_null());
    jx_set(f, "heartbeat_timeout", json_real(o->heartbeat_timeout));
    jx_set(f, "out", json_string(o->out));
    jx_set(f, "data_dir", json_string(o->data_dir));
    jx_set(f, "swarm", json_boolean(o->swarm));
    jx_set(f, "params", o->swarm ? json_integer(o->params) : json_null());
    jx_set(f, "swarm_procs", o->swarm ? json_integer(o->swarm_procs) : json_null());
    /* The reference run, and a coordinator.ini the run took its defaults from
     * (its keys, after the flags, are in the coordinator's "config"). */
    jx_set(f, "centralised", json_boolean(o->centralised));
    jx_set(f, "config", o->config[0] ? json_string(o->config) : json_null());
    return f;
}

static void sim_record_save(const sim_opts_t *o, json_t *rec)
{
    char err[PATH_MAX + 128];
    if (runrec_save(o->out, rec, err, sizeof err) < 0)
        fprintf(stderr, "medfed-sim: record not written: %s\n", err);
}

/* A new record (a previous run's in this folder is replaced): the flags as
 * given and after defaults. */
static void sim_record_start(const sim_opts_t *o, int argc, char **argv)
{
    char now[32];
    jx_now_iso(now, sizeof now);
    json_t *rec = json_object(), *cmd = json_array();
    for (int i = 0; i < argc; i++) json_array_append_new(cmd, json_string(argv[i]));
    runrec_stamp(rec);
    jx_set(rec, "started_at", json_string(now));
    jx_set(rec, "ended_at", json_null());
    jx_set(rec, "status", json_string("running"));
    jx_set(rec, "simulation", json_pack("{s:o,s:o,s:s}", "flags", sim_flags_json(o),
                                        "command_line", cmd, "started_at", now));
    sim_record_save(o, rec);
    json_decref(rec);
}

/* The data as split: the data set, the partition and its seeds, each site's share. */
static void sim_record_data(const sim_opts_t *o, json_t *dataset, json_t *sites, unsigned sa_k,
                            unsigned sa_t)
{
    json_t *rec = runrec_load(o->out), *sim = json_object_get(rec, "simulation");
    if (!json_is_object(sim)) {
        json_decref(dataset);
        json_decref(sites);
        json_decref(rec);
        return;
    }
    jx_set(sim, "dataset", dataset);
    jx_set(sim, "partition", o->swarm ? json_null() /* no data to split */
                                      : json_pack("{s:s,s:I,s:I}", "spec", o->partition, "seed",
                                                  (json_int_t)o->seed, "val_seed",
                                                  (json_int_t)o->seed + 7777));
    jx_set(sim, "seed", json_integer(o->seed));
    jx_set(sim, "sites", sites);
    jx_set(sim, "secure_aggregation",
           o->secagg ? json_pack("{s:i,s:i}", "threshold", (int)sa_t, "degree", (int)sa_k)
                     : json_null());
    sim_record_save(o, rec);
    json_decref(rec);
}

/* The run is over: the simulation's end, its outcome, the final figures. */
static void sim_record_end(const sim_opts_t *o, int coord_status, int clients_failed, double secs)
{
    char now[32];
    jx_now_iso(now, sizeof now);
    json_t *rec = runrec_load(o->out), *sim = json_object_get(rec, "simulation");
    if (!json_is_object(sim)) {
        json_decref(rec);
        return;
    }
    jx_set(sim, "ended_at", json_string(now));
    jx_set(sim, "seconds", jx_real(secs, 3));
    jx_set(sim, "coordinator_status", json_integer(coord_status));
    jx_set(sim, "clients_failed", json_integer(clients_failed));
    const char *status = jx_string(rec, "status");
    if (sim_interrupted) status = "stopped";
    else if (coord_status != 0 || clients_failed) status = "failed";
    else if (!status || strcmp(status, "running") == 0) status = "complete";
    jx_set(rec, "status", json_string(status));
    jx_set(rec, "ended_at", json_string(now));
    json_t *fin = runrec_final(o->out);
    jx_set(rec, "final", fin ? fin : json_null());
    sim_record_save(o, rec);
    json_decref(rec);
}

int main(int argc, char **argv)
{
    if (medfed_version_flag(argc, argv, "medfed-sim")) return 0;
    sim_opts_t o = {.clients = 10, .rounds = 20, .epochs = 2, .batch = 32, .threads = 1,
                    .lr = 0.02, .momentum = 0.9, .heartbeat_timeout = 10, .seed = 1,
                    .min_clients = 1, .secagg = 1, .dropout = "0.2", .collusion = "0.33",
                    .neighbors = "0", .curve = 1};
    strcpy(o.dataset, "pneumoniamnist");
    strcpy(o.partition, "dirichlet:0.5");
    strcpy(o.model, "cnn");
    strcpy(o.out, "runs/sim");

    /* Sibling binaries and the project's data/ are found from our own path. */
    ssize_t n = readlink("/proc/self/exe", bin_dir, sizeof bin_dir - 1);
    if (n <= 0) die("%s", "cannot find my own executable");
    bin_dir[n] = '\0';
    *strrchr(bin_dir, '/') = '\0';
    /* <project>/bin, <project>/build-asan/bin for the sanitizer build, or
     * <project>/build/hooks/bin for the test build. */
    static const char *const up_data[] = {"../data", "../../data", "../../../data"};
    for (size_t up = 0; up < sizeof up_data / sizeof up_data[0]; up++) {
        struct stat st;
        snprintf(o.data_dir, sizeof o.data_dir, "%.4000s/%s", bin_dir, up_data[up]);
        if (stat(o.data_dir, &st) == 0 && S_ISDIR(st.st_mode)) break;
    }
    sim_config_defaults(argc, argv, &o);
    parse_args(argc, argv, &o);

    part_spec_t spec;
    char err[1024];
    if (crypto_init() < 0) die("%s", "crypto library failed to initialise");
    if (partition_parse(o.partition, &spec, err, sizeof err) < 0) die("%s", err);
    /* Settings the coordinator would refuse every round are refused now. */
    unsigned sa_k, sa_t;
    if (o.secagg && secagg_plan((unsigned)o.clients, (unsigned)o.clients, (unsigned)atoi(o.neighbors),
                                atof(o.dropout), atof(o.collusion), &sa_k, &sa_t, err, sizeof err) < 0)
        die("%s", err);
    static char die_at[SIM_MAX_CLIENTS][32];
    parse_drops(&o, die_at);

    char path[PATH_MAX + 128], dir[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/logs", o.out);
    if (util_mkdirs(dir, err, sizeof err) < 0) die("%s", err);
    sim_record_start(&o, argc, argv);

    /* 1. Data: split train and val across the sites, each site its own files
     * (a swarm site gets sample counts only, drawn from the seed). */
    idx_set_t train = {0}, val = {0};
    int classes = 2;
    int32_t *site_tr = NULL, *site_va = NULL;
    rng_t counts;
    rng_seed(&counts, (uint64_t)o.seed ^ 0x5A4Du);
    if (!o.swarm) {
        load_split(&o, 0, o.max_train, &train);
        load_split(&o, 1, o.max_val, &val);
        classes = count_classes(&train);
        site_tr = malloc((size_t)train.n * sizeof(int32_t));
        site_va = malloc((size_t)val.n * sizeof(int32_t));
        if (!site_tr || !site_va) die("%s", "out of memory");
        int64_t min_tr = train.n / (o.clients * 10);
        partition(&o, &spec, &train, classes, min_tr > 8 ? 8 : (min_tr < 1 ? 1 : min_tr),
                  (uint64_t)o.seed, site_tr);
        partition(&o, &spec, &val, classes, 1, (uint64_t)o.seed + 7777, site_va);
    }

    snprintf(path, sizeof path, "%s/roster.txt", o.out);
    FILE *roster = fopen(path, "w");
    if (!roster) die("cannot write %s", path);
    int port = free_port();
    /* The coordinator's CURVE key: sites pin its public half in their config. */
    char coord_key_path[PATH_MAX + 32], coord_pk_hex[IDENTITY_HEXBYTES] = "";
    snprintf(coord_key_path, sizeof coord_key_path, "%s/coordinator.key", o.out);
    if (o.curve) {
        uint8_t cpk[CURVE_KEYBYTES], csk[CURVE_KEYBYTES];
        if (curve_keypair(cpk, csk) < 0 || keyfile_save(coord_key_path, csk, sizeof csk, err, sizeof err) < 0)
            die("curve: %s", err);
        crypto_wipe(csk, sizeof csk);
        identity_pk_to_hex(coord_pk_hex, cpk);
    }
    if (o.swarm)
        printf("medfed-sim: %d protocol-only hospitals in %d medfed-swarm process%s, synthetic "
               "model of %lld parameters, %d rounds, secure aggregation %s (degree %u, t = %u)\n",
               o.clients, o.swarm_procs, o.swarm_procs > 1 ? "es" : "", o.params, o.rounds,
               o.secagg ? "on" : "off", o.secagg ? sa_k : 0, o.secagg ? sa_t : 0);
    else
        printf("medfed-sim: %d hospitals, %s (%lld train / %lld val images, %d classes), partition "
               "%s, %d rounds, model %s, secure aggregation %s\n",
               o.clients, o.dataset, (long long)train.n, (long long)val.n, classes, o.partition,
               o.rounds, o.model, o.secagg ? "on" : "off");
    json_t *sites_rec = json_array(); /* run.json: each site's share */
    int64_t total_tr = 0, total_va = 0;
    for (int k = 0; k < o.clients; k++) {
        snprintf(dir, sizeof dir, "%s/sites/site-%02d", o.out, k);
        if (util_mkdirs(dir, err, sizeof err) < 0) die("%s", err);
        int64_t ntr, nva;
        char site_name[32];
        snprintf(site_name, sizeof site_name, "site-%02d", k);
        json_t *site_rec = json_pack("{s:s}", "name", site_name);
        if (o.swarm) { /* sites of different sizes: the weights n_k differ */
            ntr = 100 + (int64_t)rng_below(&counts, 901);
            nva = ntr / 5;
        } else {
            write_share(&train, site_tr, k, dir, "train", &ntr);
            write_share(&val, site_va, k, dir, "val", &nva);
            int64_t pos = 0;
            for (int64_t i = 0; i < train.n; i++) pos += site_tr[i] == k && train.labels[i] == 1;
            printf("  site-%02d  train %5lld  val %4lld%s", k, (long long)ntr, (long long)nva,
                   classes == 2 ? "" : "\n");
            if (classes == 2)
                printf("  (label 1: %4.1f%%)\n", ntr ? 100.0 * (double)pos / (double)ntr : 0);
            if (classes == 2)
                jx_set(site_rec, "train_label1_share",
                       jx_real(ntr ? (double)pos / (double)ntr : 0, 4));
        }
        jx_set(site_rec, "train", json_integer(ntr));
        jx_set(site_rec, "val", json_integer(nva));
        total_tr += ntr;
        total_va += nva;
        json_array_append_new(sites_rec, site_rec);
        /* Each site's identity key: it signs the site's secure-aggregation keys. */
        uint8_t pk[IDENTITY_PUBLICKEYBYTES], sk[IDENTITY_SECRETKEYBYTES];
        char hex[IDENTITY_HEXBYTES], key_path[PATH_MAX + 96];
        snprintf(key_path, sizeof key_path, "%s/identity.key", dir);
        if (identity_keypair(pk, sk) < 0 || identity_save_secret(key_path, sk, err, sizeof err) < 0)
            die("identity: %s", err);
        crypto_wipe(sk, sizeof sk);
        identity_pk_to_hex(hex, pk);
        /* Its CURVE transport key: the roster's third column, checked by ZAP. */
        char curve_path[PATH_MAX + 96], curve_hex[IDENTITY_HEXBYTES] = "";
        snprintf(curve_path, sizeof curve_path, "%s/curve.key", dir);
        if (o.curve) {
            uint8_t cpk[CURVE_KEYBYTES], csk[CURVE_KEYBYTES];
            if (curve_keypair(cpk, csk) < 0 || keyfile_save(curve_path, csk, sizeof csk, err, sizeof err) < 0)
                die("curve: %s", err);
            crypto_wipe(csk, sizeof csk);
            identity_pk_to_hex(curve_hex, cpk);
        }
        fprintf(roster, "site-%02d %s%s%s\n", k, hex, o.curve ? " " : "", curve_hex);
        snprintf(path, sizeof path, "%s/client.ini", dir);
        FILE *f = fopen(path, "w");
        if (!f) die("cannot write %s", path);
        fprintf(f,
                "; written by medfed-sim\n[client]\nsite = site-%02d\ncoordinator = "
                "tcp://127.0.0.1:%d\nthreads = %d\nheartbeat = %s\n"
                "; secure aggregation: this site's identity key and the federation roster\n"
                "identity = %s\nroster = %s/roster.txt\n\n"
                "; the site's own rules: here every site shares the simulation's threat model\n"
                "[policy]\nmax_collusion = %s\nsecure_aggregation = %s\n\n[data]\n",
                k, port, o.threads, o.swarm ? "2" : "0.5", key_path, o.out, o.collusion,
                o.secagg ? "required" : "optional");
        if (o.swarm) /* a thousand sites' heartbeats: one each 2 s is 500 a second */
            fprintf(f, "; medfed-swarm: no images, the synthetic model reads none\n"
                       "source = synthetic\ntrain = %lld\nval = %lld\n",
                    (long long)ntr, (long long)nva);
        else
            fprintf(f, "source = idx\ntrain_images = %s/train-images-idx3-ubyte.gz\n"
                       "train_labels = %s/train-labels-idx1-ubyte.gz\n"
                       "val_images = %s/val-images-idx3-ubyte.gz\n"
                       "val_labels = %s/val-labels-idx1-ubyte.gz\n",
                    dir, dir, dir, dir);
        if (o.curve)
            fprintf(f, "\n[client]\n; CURVE transport: this site's key, the coordinator's public key\n"
                       "curve_key = %s\ncoordinator_key = %s\n", curve_path, coord_pk_hex);
        fclose(f);
    }
    fclose(roster);
    json_t *dataset_rec = json_pack("{s:s,s:I,s:I,s:i}", "name", o.swarm ? "synthetic" : o.dataset,
                                    "train", (json_int_t)total_tr, "val", (json_int_t)total_va,
                                    "classes", classes);
    if (!o.swarm) {
        char img[PATH_MAX + 64], lab[PATH_MAX + 64];
        dataset_paths(&o, 0, img, lab, sizeof img);
        jx_set(dataset_rec, "train_images", json_string(img));
        dataset_paths(&o, 1, img, lab, sizeof img);
        jx_set(dataset_rec, "val_images", json_string(img));
    }
    sim_record_data(&o, dataset_rec, sites_rec, o.secagg ? sa_k : 0, o.secagg ? sa_t : 0);
    idx_free(&train);
    idx_free(&val);
    free(site_tr);
    free(site_va);

    /* 2. The initial model: the coordinator starts from it, never links LibTorch. */
    char init[PATH_MAX + 64], prog[PATH_MAX + 32], seed_s[32], classes_s[16];
    snprintf(init, sizeof init, "%s/init.safetensors", o.out);
    snprintf(prog, sizeof prog, "%s/medfed-init", bin_dir);
    snprintf(seed_s, sizeof seed_s, "%lld", o.seed);
    snprintf(classes_s, sizeof classes_s, "%d", classes);
    char *init_argv[] = {prog, "--arch", o.model, "--in-channels", "1", "--size", "28x28",
                         "--classes", classes_s, "--seed", seed_s, "--out", init, NULL};
    char swarm_prog[PATH_MAX + 32], params_s[24];
    snprintf(swarm_prog, sizeof swarm_prog, "%s/medfed-swarm", bin_dir);
    snprintf(params_s, sizeof params_s, "%lld", o.params);
    char *swarm_init_argv[] = {swarm_prog, "init", "--params", params_s, "--seed", seed_s,
                               "--out", init, NULL};
    if (run_wait(o.swarm ? swarm_init_argv : init_argv) != 0)
        die("%s failed", o.swarm ? "medfed-swarm init" : "medfed-init");

    /* 3. Coordinator and clients, as separate processes. */
    if (o.swarm) raise_fd_limit();
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char bind[64], rounds_s[16], n_s[16], min_s[16], ep_s[16], batch_s[16], lr_s[32], mom_s[32],
        hb_s[32], roster_path[PATH_MAX + 32], log_path[PATH_MAX + 64], coord[PATH_MAX + 32];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", port);
    snprintf(rounds_s, sizeof rounds_s, "%d", o.rounds);
    snprintf(n_s, sizeof n_s, "%d", o.clients);
    snprintf(min_s, sizeof min_s, "%d", o.min_clients);
    snprintf(ep_s, sizeof ep_s, "%d", o.epochs);
    snprintf(batch_s, sizeof batch_s, "%d", o.batch);
    snprintf(lr_s, sizeof lr_s, "%g", o.lr);
    snprintf(mom_s, sizeof mom_s, "%g", o.momentum);
    snprintf(hb_s, sizeof hb_s, "%g", o.heartbeat_timeout);
    snprintf(roster_path, sizeof roster_path, "%s/roster.txt", o.out);
    snprintf(coord, sizeof coord, "%s/medfed-coordinator", bin_dir);
    /* A new run each time: fresh data, keys and initial model (never resume). */
    char *coord_base[] = {"--bind", bind, "--init", init, "--out", o.out, "--resume", "off",
                          "--roster", roster_path, "--rounds", rounds_s, "--wait-for", n_s,
                          "--min-clients", min_s, "--local-epochs", ep_s, "--batch", batch_s,
                          "--lr", lr_s, "--momentum", mom_s, "--seed", seed_s,
                          "--heartbeat-timeout", hb_s, "--wait-timeout", "120",
                          "--secagg", o.secagg ? "on" : "off", "--dropout", o.dropout,
                          "--collusion", o.collusion, "--neighbors", o.neighbors, NULL};
    char *coord_argv[160];
    size_t na = 0;
    coord_argv[na++] = coord;
    if (o.config[0]) { /* first: everything after it overrides the file */
        coord_argv[na++] = "--config";
        coord_argv[na++] = o.config;
        coord_argv[na++] = "--admin-bind"; /* the sim's coordinator runs its rounds itself */
        coord_argv[na++] = "";
        coord_argv[na++] = "--autostart";
        coord_argv[na++] = "on";
    }
    for (size_t i = 0; coord_base[i]; i++) coord_argv[na++] = coord_base[i];
    if (o.upload_bits[0]) {
        coord_argv[na++] = "--upload-bits";
        coord_argv[na++] = o.upload_bits;
    }
    for (int i = 0; i < o.n_coord_opt; i++) { /* last: they override the above */
        coord_argv[na++] = o.coord_opt[i][0];
        coord_argv[na++] = o.coord_opt[i][1];
    }
    if (o.curve) {
        coord_argv[na++] = "--curve-secret";
        coord_argv[na++] = coord_key_path;
    }
    coord_argv[na] = NULL;
    snprintf(log_path, sizeof log_path, "%s/logs/coordinator.log", o.out);
    /* A previous run's rows: the coordinator (resume off) starts the file again,
     * but following it from here could print them first as this run's. */
    char old_metrics[PATH_MAX + 32];
    snprintf(old_metrics, sizeof old_metrics, "%s/metrics.jsonl", o.out);
    if (unlink(old_metrics) < 0 && errno != ENOENT)
        fprintf(stderr, "medfed-sim: %s: %s\n", old_metrics, strerror(errno));
    double t0 = util_now();
    pid_t coord_pid = spawn(log_path, coord_argv);

    /* The processes: a daemon per site, or the swarm's few (pids[k], named by proc_name). */
    static pid_t pids[SIM_MAX_CLIENTS];
    const int nproc = o.swarm ? o.swarm_procs : o.clients;
    int clients_failed = 0; /* a client that crashed or failed without being told to */
    char client_prog[PATH_MAX + 32];
    snprintf(client_prog, sizeof client_prog, "%s/medfed-client", bin_dir);
    if (o.swarm) spawn_swarm(&o, swarm_prog, pids);
    for (int k = 0; !o.swarm && k < o.clients; k++) {
        char ini[PATH_MAX + 64];
        snprintf(ini, sizeof ini, "%s/sites/site-%02d/client.ini", o.out, k);
        snprintf(log_path, sizeof log_path, "%s/logs/site-%02d.log", o.out, k);
#ifdef MEDFED_TEST_HOOKS
        char *cargv[] = {client_prog, "--config", ini, die_at[k][0] ? "--die-at" : NULL,
                         die_at[k], NULL};
#else
        char *cargv[] = {client_prog, "--config", ini, NULL}; /* --drop is refused above */
#endif
        pids[k] = spawn(log_path, cargv);
    }

    /* 4. Follow metrics.jsonl until the coordinator exits. */
    char metrics_path[PATH_MAX + 32];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", o.out);
    long offset = 0;
    int coord_status = -1, alive = nproc;
    struct rusage coord_usage = {0}, usage;
    long swarm_rss_kb = 0; /* the largest medfed-swarm process's peak */
    char *line = NULL, name[32];
    size_t line_cap = 0;
    ssize_t got;
    json_t *last = NULL; /* the last metrics row */
    while (coord_status < 0) {
        if (sim_interrupted) {
            kill(coord_pid, SIGTERM);
            for (int k = 0; k < nproc; k++)
                if (pids[k] > 0) kill(pids[k], SIGTERM);
        }
        int st;
        if (wait4(coord_pid, &st, WNOHANG, &coord_usage) == coord_pid)
            coord_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        for (int k = 0; k < nproc; k++) {
            if (pids[k] > 0 && wait4(pids[k], &st, WNOHANG, &usage) == pids[k]) {
                printf("  %s exited (%s %d)\n", proc_name(&o, k, name, sizeof name),
                       WIFEXITED(st) ? "status" : "signal",
                       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) &&
                    !(!o.swarm && die_at[k][0] && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
                    clients_failed++;
                if (usage.ru_maxrss > swarm_rss_kb) swarm_rss_kb = usage.ru_maxrss;
                pids[k] = 0;
                alive--;
            }
        }
        FILE *f = fopen(metrics_path, "r");
        if (f) {
            fseek(f, offset, SEEK_SET);
            while ((got = getline(&line, &line_cap, f)) > 0 && line[got - 1] == '\n') {
                offset = ftell(f);
                json_t *row = jx_loads_object(line, (size_t)got);
                if (!row) continue;
                print_round(row, o.rounds);
                json_decref(last);
                last = row;
            }
            fclose(f);
        }
        if (coord_status < 0) {
            struct timespec ts = {0, 200 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }

    /* 5. Clients leave on SHUTDOWN; anything still running after 10 s (a
     * swarm: 30 s, its sites leave one by one) is stopped. */
    const double grace = o.swarm ? 30 : 10;
    double t_end = util_now() + grace;
    while (alive > 0 && util_now() < t_end) {
        for (int k = 0; k < nproc; k++) {
            int st;
            if (pids[k] > 0 && wait4(pids[k], &st, WNOHANG, &usage) == pids[k]) {
                pids[k] = 0;
                alive--;
                if (usage.ru_maxrss > swarm_rss_kb) swarm_rss_kb = usage.ru_maxrss;
                if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) &&
                    !(!o.swarm && die_at[k][0] && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
                    printf("  %s exited (%s %d)\n", proc_name(&o, k, name, sizeof name),
                           WIFEXITED(st) ? "status" : "signal",
                           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                    clients_failed++;
                }
            }
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int k = 0; k < nproc; k++)
        if (pids[k] > 0) {
            /* Not counted as a failure: a daemon that missed SHUTDOWN is
             * merely idle (seen rarely under heavy load; see its log). */
            printf("  %s still running %.0f s after the federation ended: stopped\n",
                   proc_name(&o, k, name, sizeof name), grace);
            kill(pids[k], SIGKILL);
            waitpid(pids[k], NULL, 0);
        }
    double secs = util_now() - t0;
    char summary[PATH_MAX + 32];
    snprintf(summary, sizeof summary, "%s/summary.json", o.out);
    json_t *sum = json_object();
    jx_set(sum, "clients", json_integer(o.clients));
    jx_set(sum, "rounds", json_integer(o.rounds));
    jx_set(sum, "secagg", json_boolean(o.secagg));
    jx_set(sum, "seconds", jx_real(secs, 3));
    jx_set(sum, "coordinator_status", json_integer(coord_status));
    jx_set(sum, "coordinator_peak_rss_kb", json_integer(coord_usage.ru_maxrss));
    jx_set(sum, "coordinator_cpu_seconds",
           jx_real((double)coord_usage.ru_utime.tv_sec + (double)coord_usage.ru_utime.tv_usec * 1e-6 +
                       (double)coord_usage.ru_stime.tv_sec + (double)coord_usage.ru_stime.tv_usec * 1e-6,
                   3));
    if (o.swarm) {
        jx_set(sum, "swarm_procs", json_integer(o.swarm_procs));
        jx_set(sum, "params", json_integer(o.params));
        jx_set(sum, "swarm_peak_rss_kb", json_integer(swarm_rss_kb));
    }
    if (jx_write_atomic(summary, sum, JX_COMPACT, err, sizeof err) < 0)
        fprintf(stderr, "medfed-sim: %s\n", err);
    json_decref(sum);
    sim_record_end(&o, coord_status, clients_failed, secs);
    if (coord_status != 0) {
        fprintf(stderr, "medfed-sim: coordinator exited with status %d; see %s/logs/\n",
                coord_status, o.out);
        return 1;
    }
    if (clients_failed) {
        fprintf(stderr, "medfed-sim: %d client(s) failed; see %s/logs/\n", clients_failed, o.out);
        return 1;
    }
    printf("done in %.1f s: final val_accuracy %.4f", secs, row_num(last, "val_accuracy"));
    double auc = row_num(last, "val_auc");
    if (!isnan(auc)) printf(", val_auc %.4f", auc);
    printf("\nmodel: %s/model.safetensors  metrics: %s  logs: %s/logs/\n", o.out, metrics_path,
           o.out);
    printf("record: %s/run.json  report: medfed report %s\n", o.out, o.out);
    json_decref(last);
    free(line);
    return 0;
}
