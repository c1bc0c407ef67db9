/*
 * bench_train.c - training throughput through the C shim.
 *
 *   bench_train ARCH THREADS IMAGES
 *
 * Trains one epoch over IMAGES random (seeded) 1x28x28 images, 2 classes,
 * batch 32, lr 0.01, momentum 0.9, after a warm-up epoch of 64 images, and
 * prints one JSON object:
 *
 *   {"arch":"cnn","threads":1,"images":2000,"seconds":...,"images_per_s":...}
 *
 * tests/bench/torch_ref.py does the same in Python on the same LibTorch, so
 * the two numbers side by side show what the shim costs.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/model.h"

enum { CHANNELS = 1, SIDE = 28, CLASSES = 2, BATCH = 32, WARMUP = 64 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: seeded data without depending on libc's rand(). */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static long parse_long(const char *s, const char *what, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bench_train: %s must be an integer in [%ld, %ld], got \"%s\"\n", what,
                lo, hi, s);
        exit(2);
    }
    return v;
}

static int train(model_t *m, const float *x, const int32_t *y, int64_t n, uint64_t seed)
{
    model_data_t data = {x, y, n};
    model_train_opts_t o;
    memset(&o, 0, sizeof o);
    o.epochs = 1;
    o.batch = BATCH;
    o.lr = 0.01f;
    o.momentum = 0.9f;
    o.seed = seed;
    if (model_train(m, &data, &o, NULL) != 0) {
        fprintf(stderr, "bench_train: model_train: %s\n", model_errmsg(m));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_train cnn|resnet18 THREADS IMAGES\n");
        return 2;
    }
    const char *arch = argv[1];
    int threads = (int)parse_long(argv[2], "THREADS", 1, 1024);
    int64_t images = parse_long(argv[3], "IMAGES", 1, 10000000);
    model_set_threads(threads);

    model_spec_t spec;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.arch, sizeof spec.arch, "%s", arch);
    spec.in_channels = CHANNELS;
    spec.height = SIDE;
    spec.width = SIDE;
    spec.classes = CLASSES;
    char err[MODEL_ERR_MAX];
    model_t *m = model_new(&spec, 1, err, sizeof err);
    if (m == NULL) {
        fprintf(stderr, "bench_train: %s\n", err);
        return 1;
    }

    const int64_t n = images > WARMUP ? images : WARMUP;
    const size_t pixels = (size_t)CHANNELS * SIDE * SIDE;
    float *x = malloc((size_t)n * pixels * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    if (x == NULL || y == NULL) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    uint64_t s = 1;
    for (size_t i = 0; i < (size_t)n * pixels; i++) /* uniform in [-1, 1) */
        x[i] = (float)(next_u64(&s) >> 40) / (float)(1 << 23) - 1.0f;
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)(next_u64(&s) % CLASSES);

    int rc = 1;
    if (train(m, x, y, WARMUP, 1) == 0) {
        double t0 = now_s();
        if (train(m, x, y, images, 2) == 0) {
            double seconds = now_s() - t0;
            printf("{\"arch\":\"%s\",\"threads\":%d,\"images\":%lld,\"seconds\":%.4f,"
                   "\"images_per_s\":%.2f}\n",
                   arch, threads, (long long)images, seconds, (double)images / seconds);
            rc = 0;
        }
    }
    free(x);
    free(y);
    model_destroy(&m);
    return rc;
}
