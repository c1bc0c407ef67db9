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
 */
#ifndef MEDFED_FEDAVG_H
#define MEDFED_FEDAVG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { SERVER_OPT_FEDAVG = 0, SERVER_OPT_FEDAVGM } server_opt_t;

typedef struct {
    server_opt_t opt;
    double lr;        /* server learning rate, 1.0 = plain FedAvg */
    double momentum;  /* fedavgm only */
} fedavg_opts_t;

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

/* Parses "fedavg" / "fedavgm". */
int fedavg_opt_parse(const char *s, server_opt_t *out);

#endif
