/*
 * bench_data.c - times loading a [data] section given as KEY=VALUE arguments
 * (the same keys as medfed-client's [data]; see tests/integration/data_dump.c).
 * Each repetition opens the source, loads both splits and closes it again, so
 * a DICOM source's worker start and a DICOMweb search are counted, and a
 * second repetition of a dicomweb source reads what the first one cached.
 * Prints one JSON line:
 *   {"images":N,"seconds":[s1,...],"images_per_s":[r1,...],<stats of the last>}
 * usage: bench_data REPS KEY=VALUE...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imaging/imaging.h"
#include "common/log.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 0;
    if (argc < 3 || reps < 1 || reps > 100) {
        fprintf(stderr, "usage: bench_data REPS KEY=VALUE...\n");
        return 2;
    }
    log_init("bench_data", LOG_WARN);
    data_conf_t conf = {0};
    snprintf(conf.file, sizeof conf.file, "argv");
    char err[1024];
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) return 2;
        *eq = 0;
        if (data_conf_set(&conf, argv[i], eq + 1, i, err, sizeof err) < 0) {
            fprintf(stderr, "bench_data: %s\n", err);
            return 2;
        }
    }
    double secs[100];
    int64_t images = -1;
    data_stats_t st;
    memset(&st, 0, sizeof st);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        datasource_t *ds = datasource_open(&conf, err, sizeof err);
        if (!ds) {
            fprintf(stderr, "bench_data: %s\n", err);
            return 1;
        }
        int64_t n = 0;
        for (int s = 0; s < 2; s++) {
            dataset_t d = {0};
            if (datasource_load(ds, (data_split_t)s, &d, err, sizeof err) < 0) {
                fprintf(stderr, "bench_data: %s\n", err);
                datasource_destroy(&ds);
                return 1;
            }
            n += d.n;
            dataset_free(&d);
        }
        datasource_stats(ds, &st);
        datasource_destroy(&ds);
        secs[r] = now() - t0;
        if (images >= 0 && n != images) {
            fprintf(stderr, "bench_data: repetition %d loaded %lld images, not %lld\n", r + 1,
                    (long long)n, (long long)images);
            return 1;
        }
        images = n;
    }
    if (images <= 0) {
        fprintf(stderr, "bench_data: no images loaded\n");
        return 1;
    }
    printf("{\"images\":%lld,\"seconds\":[", (long long)images);
    for (int r = 0; r < reps; r++) printf("%s%.6f", r ? "," : "", secs[r]);
    printf("],\"images_per_s\":[");
    for (int r = 0; r < reps; r++) printf("%s%.1f", r ? "," : "", (double)images / secs[r]);
    printf("],");
    data_stats_json(&st, stdout);
    printf("}\n");
    return 0;
}
