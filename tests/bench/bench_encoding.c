/*
 * bench_encoding - the upload width's cost on one core: enc_pack (a site,
 * in place in its masked buffer, as the client does) and enc_unpack_add (the
 * coordinator's hot path, from an unaligned frame) of P elements at each
 * width, beside a plain memcpy of the same packed bytes. GB/s count packed
 * bytes (what travels); best of REPS. Prints one JSON object.
 *   bench_encoding PARAMS [REPS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "common/util.h"

static double best(double a, double b) { return a < b ? a : b; }

int main(int argc, char **argv)
{
    long long params = argc > 1 ? atoll(argv[1]) : 1659266, reps = argc > 2 ? atoll(argv[2]) : 7;
    if (params <= 0 || reps <= 0) return 2;
    const size_t n = (size_t)params;
    uint32_t *x = malloc((n + 1) * 4), *y = malloc((n + 1) * 4), *acc = malloc((n + 1) * 4);
    uint8_t *frame = malloc(n * 4 + 1), *copy = malloc(n * 4 + 1);
    if (!x || !y || !acc || !frame || !copy) return 1;
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i <= n; i++) { /* xorshift: words that do not compress into a pattern */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (uint32_t)s;
    }
    /* Page everything in before timing (a fresh buffer's faults are not packing). */
    memcpy(y, x, (n + 1) * 4);
    memset(acc, 0, (n + 1) * 4);
    memset(frame, 0, n * 4 + 1);
    memset(copy, 0, n * 4 + 1);
    static const unsigned widths[] = {8, 12, 16, 20, 24, 32, 13, 27};
    printf("{\"params\":%lld,\"reps\":%lld,\"unit\":\"GB/s of packed bytes, one core\",\"widths\":[",
           params, reps);
    for (size_t k = 0; k < sizeof widths / sizeof widths[0]; k++) {
        const unsigned w = widths[k];
        const size_t len = enc_packed_len(n, w);
        double t_pack = 1e9, t_unpack = 1e9, t_copy = 1e9;
        for (long long r = 0; r < reps; r++) {
            memcpy(y, x, n * 4);
            double t0 = util_now();
            enc_pack(y, n, w, (uint8_t *)y); /* in place, as a site packs */
            t_pack = best(t_pack, util_now() - t0);
            memcpy(frame + 1, y, len);       /* unaligned, as in a received frame */
            t0 = util_now();
            enc_unpack_add(frame + 1, n, w, acc);
            t_unpack = best(t_unpack, util_now() - t0);
            t0 = util_now();
            memcpy(copy + 1, frame + 1, len);
            t_copy = best(t_copy, util_now() - t0);
        }
        /* The coordinator's sum must still be what the sites packed: a wrong
         * kernel must not make a fast benchmark. */
        memset(acc, 0, n * 4);
        enc_unpack_add(frame + 1, n, w, acc);
        const uint32_t mask = w == 32 ? UINT32_MAX : (1u << w) - 1;
        for (size_t i = 0; i < n; i += 4099)
            if (acc[i] != (x[i] & mask)) {
                fprintf(stderr, "bench_encoding: width %u element %zu does not round-trip\n", w, i);
                return 1;
            }
        const double gb = (double)len / 1e9;
        printf("%s{\"bits\":%u,\"packed_bytes\":%zu,\"pack_gb_per_s\":%.2f,\"unpack_add_gb_per_s\":%.2f,"
               "\"memcpy_gb_per_s\":%.2f,\"pack_over_memcpy\":%.3f,\"unpack_add_over_memcpy\":%.3f}",
               k ? "," : "", w, len, gb / t_pack, gb / t_unpack, gb / t_copy, t_copy / t_pack,
               t_copy / t_unpack);
    }
    printf("]}\n");
    free(x);
    free(y);
    free(acc);
    free(frame);
    free(copy);
    return 0;
}
