/*
 * data_dump.c - loads both splits of a [data] section given as KEY=VALUE
 * arguments and writes them as raw files, for integration tests that compare
 * what a source decoded with a reference (IDX, pydicom):
 *   PREFIX-train-x.f32, PREFIX-train-y.i32, PREFIX-val-x.f32, PREFIX-val-y.i32
 * and one JSON line on stdout: {"train":N,"val":N,"height":H,"width":W,<stats>}.
 * usage: data_dump PREFIX KEY=VALUE...   (log_level=LEVEL sets the log level)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/imaging.h"
#include "common/log.h"

static int write_raw(const char *prefix, const char *name, const void *p, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s-%s", prefix, name);
    FILE *f = fopen(path, "wb");
    int ok = f && (len == 0 || fwrite(p, 1, len, f) == len);
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: data_dump PREFIX KEY=VALUE...\n");
        return 2;
    }
    log_init("data_dump", LOG_INFO);
    data_conf_t conf = {0};
    snprintf(conf.file, sizeof conf.file, "argv");
    char err[1024];
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) return 2;
        *eq = 0;
        if (strcmp(argv[i], "log_level") == 0) { /* not a [data] key */
            log_level_t l;
            if (log_level_parse(eq + 1, &l) < 0) return 2;
            log_init("data_dump", l);
            continue;
        }
        if (data_conf_set(&conf, argv[i], eq + 1, i, err, sizeof err) < 0) {
            fprintf(stderr, "data_dump: %s\n", err);
            return 2;
        }
    }
    datasource_t *ds = datasource_open(&conf, err, sizeof err);
    if (!ds) {
        fprintf(stderr, "data_dump: %s\n", err);
        return 1;
    }
    dataset_t d[2] = {{0}, {0}};
    int rc = 0;
    static const char *const names[2][2] = {{"train-x.f32", "train-y.i32"},
                                            {"val-x.f32", "val-y.i32"}};
    for (int s = 0; s < 2 && rc == 0; s++) {
        if (datasource_load(ds, (data_split_t)s, &d[s], err, sizeof err) < 0) {
            fprintf(stderr, "data_dump: %s\n", err);
            rc = 1;
            break;
        }
        size_t per = (size_t)d[s].channels * (size_t)d[s].height * (size_t)d[s].width;
        if (write_raw(argv[1], names[s][0], d[s].x, (size_t)d[s].n * per * sizeof(float)) < 0 ||
            write_raw(argv[1], names[s][1], d[s].y, (size_t)d[s].n * sizeof(int32_t)) < 0)
            rc = 1;
    }
    if (rc == 0) {
        data_stats_t st;
        datasource_stats(ds, &st);
        printf("{\"train\":%lld,\"val\":%lld,\"height\":%d,\"width\":%d,", (long long)d[0].n,
               (long long)d[1].n, d[0].height, d[0].width);
        data_stats_json(&st, stdout);
        printf("}\n");
    }
    dataset_free(&d[0]);
    dataset_free(&d[1]);
    datasource_destroy(&ds);
    return rc;
}
