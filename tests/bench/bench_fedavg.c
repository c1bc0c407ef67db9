/*
 * bench_fedavg - coordinator-side FedAvg accumulation speed: N updates of P
 * float32 parameters, given unaligned as they sit in received frames, added
 * into the weighted sum. Prints one JSON object.
 *   bench_fedavg PARAMS CLIENTS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregation/fedavg.h"
#include "common/util.h"

int main(int argc, char **argv)
{
    long long params = argc > 1 ? atoll(argv[1]) : 11000000, clients = argc > 2 ? atoll(argv[2]) : 10;
    if (params <= 0 || clients <= 0) return 2;
    size_t bytes = (size_t)params * 4;
    uint8_t *frame = malloc(bytes + 1); /* +1: unaligned like a msgpack bin */
    float *global = calloc((size_t)params, sizeof *global);
    if (!frame || !global) return 1;
    for (size_t i = 0; i < bytes + 1; i++) frame[i] = (uint8_t)(i * 13 % 61); /* finite floats */
    fedavg_opts_t o = {.opt = SERVER_OPT_FEDAVG, .lr = 1.0};
    fedavg_t *f = fedavg_new((size_t)params, &o);
    char err[256];
    fedavg_begin(f);
    fedavg_add(f, frame + 1, bytes, 1, err, sizeof err); /* warm the pages */
    fedavg_begin(f);
    double t0 = util_now();
    for (long long c = 0; c < clients; c++)
        if (fedavg_add(f, frame + 1, bytes, 100 + c, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    double t_add = util_now() - t0;
    t0 = util_now();
    fedavg_apply(f, global, err, sizeof err);
    double t_apply = util_now() - t0;
    printf("{\"params\":%lld,\"clients\":%lld,\"add_seconds\":%.4f,\"accumulate_gb_per_s\":%.3f,"
           "\"apply_seconds\":%.4f}\n",
           params, clients, t_add, (double)bytes * (double)clients / t_add / 1e9, t_apply);
    fedavg_destroy(&f);
    free(frame);
    free(global);
    return 0;
}
