/*
 * medfed-eval - scores a saved model on IDX files and prints one JSON object:
 *   {"n":524,"accuracy":0.91,"loss":0.25,"auc":0.97}     (auc for binary tasks)
 *
 *   medfed-eval --model FILE --images IDX.gz --labels IDX.gz [--threads T] [--batch B]
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "aggregation/metrics.h"
#include "imaging/imaging.h"
#include "common/json.h"
#include "common/util.h"
#include "common/version.h"
#include "model/checkpoint.h"

int main(int argc, char **argv)
{
    if (medfed_version_flag(argc, argv, "medfed-eval")) return 0;
    static const struct option longopts[] = {
        {"model", 1, 0, 'm'}, {"images", 1, 0, 'i'}, {"labels", 1, 0, 'l'},
        {"threads", 1, 0, 't'}, {"batch", 1, 0, 'b'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *model_path = NULL, *images = NULL, *labels = NULL;
    long long threads = 2, batch = 256;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': model_path = optarg; break;
        case 'i': images = optarg; break;
        case 'l': labels = optarg; break;
        case 't':
            if (util_parse_int(optarg, 1, 256, &threads) < 0) goto bad;
            break;
        case 'b':
            if (util_parse_int(optarg, 1, 65536, &batch) < 0) goto bad;
            break;
        case 'h':
            printf("usage: medfed-eval --model FILE --images IDX.gz --labels IDX.gz "
                   "[--threads T] [--batch B]\n");
            return 0;
        default: goto bad;
        }
    }
    if (!model_path || !images || !labels || optind != argc) goto bad;
    model_set_threads((int)threads);
    char err[1024];
    model_t *m = checkpoint_load(model_path, err, sizeof err);
    if (!m) {
        fprintf(stderr, "medfed-eval: %s\n", err);
        return 1;
    }
    idx_set_t set;
    if (idx_load(images, labels, &set, err, sizeof err) < 0) {
        fprintf(stderr, "medfed-eval: %s\n", err);
        model_destroy(&m);
        return 1;
    }
    const model_spec_t *sp = model_get_spec(m);
    int rc = 1;
    size_t per = (size_t)set.rows * (size_t)set.cols;
    float *x = malloc((size_t)set.n * per * sizeof *x);
    int32_t *y = malloc((size_t)set.n * sizeof *y);
    float *scores = malloc((size_t)set.n * sizeof *scores);
    if (!x || !y || !scores) goto out;
    if (sp->in_channels != 1 || sp->height != set.rows || sp->width != set.cols) {
        fprintf(stderr, "medfed-eval: images are 1x%dx%d, model wants %dx%dx%d\n", set.rows,
                set.cols, sp->in_channels, sp->height, sp->width);
        goto out;
    }
    dataset_normalise_u8(set.pixels, (size_t)set.n * per, x);
    for (int64_t i = 0; i < set.n; i++) y[i] = set.labels[i];
    model_data_t data = {x, y, set.n};
    model_result_t res;
    if (model_evaluate(m, &data, (int)batch, &res, scores) < 0) {
        fprintf(stderr, "medfed-eval: %s\n", model_errmsg(m));
        goto out;
    }
    json_t *r = json_pack("{s:I}", "n", (json_int_t)res.n);
    jx_set(r, "accuracy", jx_real((double)res.correct / (double)res.n, 6));
    jx_set(r, "loss", jx_real(res.loss_sum / (double)res.n, 6));
    if (sp->classes == 2) jx_set(r, "auc", jx_real(metrics_auc(scores, y, set.n), 6));
    jx_write_line(stdout, r);
    json_decref(r);
    rc = 0;
out:
    free(x);
    free(y);
    free(scores);
    idx_free(&set);
    model_destroy(&m);
    return rc;
bad:
    fprintf(stderr, "medfed-eval: bad arguments (try --help)\n");
    return 2;
}
