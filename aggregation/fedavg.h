/*
 * fedavg.h - weighted federated averaging, accumulated as updates arrive.
 *
 * Memory is O(model): one double per parameter (the running sum of
 * n_k * delta_k, allocated on first use) plus the server optimiser's state,
 * however many clients report. Arithmetic only: no I/O, no sockets, no logging.
 *
 * After all updates of a round: delta = sum(n_k * delta_k) / sum(n_k), then
 *   fedavg  : global += server_lr * delta
 *   fedavgm : v = server_momentum * v + delta; global += server_lr * v
 * and the adaptive server optimisers of Reddi et al. 2021, "Adaptive
 * Federated Optimization" (Algorithm 2, no bias correction), with
 * m = beta1 * m + (1 - beta1) * delta and, elementwise,
 *   fedadagrad : v = v + delta^2
 *   fedyogi    : v = v - (1 - beta2) * delta^2 * sign(v - delta^2)
 *   fedadam    : v = beta2 * v + (1 - beta2) * delta^2
 * then global += eta * m / (sqrt(v) + tau). m starts at 0 and v at tau^2
 * (the paper's v_{-1} >= tau^2).
 */
#ifndef MEDFED_FEDAVG_H
#define MEDFED_FEDAVG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SERVER_OPT_FEDAVG = 0,
    SERVER_OPT_FEDAVGM,
    SERVER_OPT_FEDADAGRAD,
    SERVER_OPT_FEDYOGI,
    SERVER_OPT_FEDADAM
} server_opt_t;

/* Reddi et al.'s defaults (their Table / Appendix: beta1 0.9, beta2 0.99,
 * tau 1e-3; eta 10^-2 ... 10^-1.5 was their best on most tasks). */
#define FEDAVG_DEFAULT_ETA 0.01
#define FEDAVG_DEFAULT_BETA1 0.9
#define FEDAVG_DEFAULT_BETA2 0.99
#define FEDAVG_DEFAULT_TAU 1e-3

typedef struct {
    server_opt_t opt;
    double lr;        /* server learning rate, 1.0 = plain FedAvg (fedavg, fedavgm) */
    double momentum;  /* fedavgm only */
    double eta;       /* fedadagrad, fedyogi, fedadam: server step size */
    double beta1, beta2, tau;
} fedavg_opts_t;

/* Fills the adaptive optimisers' defaults into o (eta, beta1, beta2, tau). */
void fedavg_opts_adaptive_defaults(fedavg_opts_t *o);
/* 1 for fedadagrad, fedyogi and fedadam (they keep m and v). */
int fedavg_opt_adaptive(server_opt_t opt);

typedef struct fedavg fedavg_t;

fedavg_t *fedavg_new(size_t numel, const fedavg_opts_t *opts);
void fedavg_destroy(fedavg_t **f);
size_t fedavg_numel(const fedavg_t *f);

/* Starts a new round: clears the sum (keeps the optimiser state). */
void fedavg_begin(fedavg_t *f);

/* No parameter moves this far in one round. A larger value, finite or not, is
 * refused: a site sending 3e38 would overflow the average into infinity. */
#define FEDAVG_MAX_ABS 1e6

/* Adds one client's update, given as len bytes of little-endian float32 at
 * any alignment (straight from the wire). The whole update is checked first
 * (length == numel * 4, every value finite and within +-FEDAVG_MAX_ABS,
 * n_samples > 0) and nothing is added if any check fails: a bad update never
 * poisons the sum. */
int fedavg_add(fedavg_t *f, const uint8_t *le_f32, size_t len, int64_t n_samples, char *err,
               size_t errlen);

int64_t fedavg_weight(const fedavg_t *f);   /* sum of n_k this round */
int fedavg_count(const fedavg_t *f);        /* updates added this round */

/* Applies the averaged update to global (numel floats). -1 if nothing was
 * added this round (global untouched). */
int fedavg_apply(fedavg_t *f, float *global, char *err, size_t errlen);

/* Applies an already averaged update (secure aggregation decodes the mean
 * itself): the server optimiser step only; the per-round sum is never
 * allocated on this path. */
void fedavg_apply_mean(fedavg_t *f, float *global, const float *mean);

/* The local learning rate of round `round` (1-based) of a run of `rounds`:
 *   constant  lr
 *   step      lr * gamma^floor((round - 1) / step_rounds)
 *   cosine    lr_min + (lr - lr_min) * (1 + cos(pi * (round - 1) / rounds)) / 2
 * never below lr_min (nor above lr). */
typedef enum { LR_CONSTANT = 0, LR_STEP, LR_COSINE } lr_schedule_t;
typedef struct {
    lr_schedule_t kind;
    int step_rounds;   /* step: rounds between decays */
    double gamma;      /* step: the factor */
    double lr_min;     /* cosine: the floor (and every schedule's) */
} lr_sched_t;
double fedavg_lr_at(const lr_sched_t *s, double lr, uint32_t round, uint32_t rounds);
int fedavg_lr_schedule_parse(const char *s, lr_schedule_t *out);
const char *fedavg_lr_schedule_name(lr_schedule_t k);

/* Parses "fedavg" / "fedavgm" / "fedadagrad" / "fedyogi" / "fedadam". */
int fedavg_opt_parse(const char *s, server_opt_t *out);
const char *fedavg_opt_name(server_opt_t opt);

/* The optimiser's state, for checkpoints: the vectors it keeps (fedavgm: 1,
 * the velocity; adaptive: 2, m then v; fedavg: 0), each numel doubles.
 * fedavg_state returns vector k (NULL past the last); write into it to
 * restore a saved state. */
int fedavg_state_count(const fedavg_t *f);
double *fedavg_state(fedavg_t *f, int k);

#endif
