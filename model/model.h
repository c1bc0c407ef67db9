/*
 * model.h - the C face of the LibTorch training shim.
 *
 * Conventions (read these first):
 *  - Every object is an opaque pointer made by *_new() and freed by *_destroy(&p),
 *    which is NULL-safe and sets p to NULL.
 *  - Functions return 0 on success and -1 on error; the reason is then in
 *    model_errmsg(m) (or in the caller's err buffer for model_new()).
 *    No C++ exception ever crosses this header.
 *  - Pointers passed in are borrowed: the shim never keeps them after the call
 *    returns, and never frees them. Strings returned are owned by the model and
 *    live as long as it does.
 *  - Parameters travel as ONE flat float32 vector in schema order (trainable
 *    parameters and floating-point buffers such as batch-norm running
 *    statistics, in the order of the module's named_parameters() followed by
 *    named_buffers()). Integer buffers (num_batches_tracked) are not part of it.
 *  - Deterministic: for the same spec, seed, data and thread count, the same
 *    calls give bit-identical parameters.
 *
 * Nothing else in the project includes a C++ header; this file is plain C11.
 */
#ifndef MEDFED_MODEL_H
#define MEDFED_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_ARCH_MAX 32      /* longest architecture name, with NUL */
#define MODEL_ERR_MAX 256      /* longest error message, with NUL */
#define MODEL_MAX_DIMS 8       /* most dimensions of any tensor in a schema */

typedef struct model model_t;

/* What to build. arch is "cnn" (the FedAvg-paper CNN: two 5x5 conv + pool
 * blocks, 512-unit dense layer) or "resnet18" (ResNet-18; for inputs smaller
 * than 64 pixels the stem is a 3x3 stride-1 conv without max-pool). */
typedef struct {
    char arch[MODEL_ARCH_MAX];
    int in_channels;   /* 1..16 */
    int height;        /* 8..512 */
    int width;         /* 8..512 */
    int classes;       /* 2..1000 */
} model_spec_t;

/* A labelled data set in memory, borrowed for the duration of one call.
 * x: n * in_channels * height * width float32 values, already normalised by
 * the data source; y: n labels in [0, classes). */
typedef struct {
    const float *x;
    const int32_t *y;
    int64_t n;
} model_data_t;

/* Called during training after every progress_every images (and at the end
 * of each epoch). Return 0 to go on, non-zero to stop training early (the
 * call then fails with "training stopped by caller"). */
typedef int (*model_progress_fn)(void *user, int epoch, int64_t images_done);

typedef struct {
    int epochs;            /* >= 1 */
    int batch;             /* >= 1 */
    float lr;              /* > 0 */
    float momentum;        /* [0, 1) */
    float weight_decay;    /* >= 0 */
    uint64_t seed;         /* shuffling order (and dropout, if any) */
    model_progress_fn progress;  /* may be NULL */
    void *progress_user;
    int64_t progress_every;      /* images between calls; 0 = once per epoch */
    /* FedProx (Li et al. 2020): (prox_mu / 2) ||w - w_start||^2 is added to
     * the loss, w_start the parameters at the call's start; 0 = off. */
    float prox_mu;               /* >= 0 */
    /* 1: each training image drawn gets a small random affine (rotation
     * within +-10 degrees, scale 0.9..1.1, translation within +-1/16 of the
     * side), drawn from the seed like the order; 0: none. */
    int augment;
    /* 1: cross-entropy weighted by n / (classes * n_c), the counts of this
     * call's data (a class absent from it weighs 0); 0: unweighted. */
    int class_balanced;
} model_train_opts_t;

typedef struct {
    int64_t n;           /* images evaluated */
    double loss_sum;     /* sum of per-image cross-entropy (nats) */
    int64_t correct;     /* images whose arg-max equals the label */
    double train_loss;   /* model_train only: mean loss over the last epoch */
} model_result_t;

/* Sets the intra-op thread count for the whole process (LibTorch's default
 * in 1.13 is 1). threads >= 1. */
void model_set_threads(int threads);

/* Builds a model with weights initialised from seed. Returns NULL on error
 * with the reason in err (if err is not NULL). Caller destroys. */
model_t *model_new(const model_spec_t *spec, uint64_t seed, char *err, size_t errlen);
void model_destroy(model_t **m);

const char *model_errmsg(const model_t *m);
const model_spec_t *model_get_spec(const model_t *m);

/* Schema: number of tensors, total float count, and each tensor's name and
 * shape. model_tensor_shape() writes up to MODEL_MAX_DIMS sizes and returns
 * the number of dimensions, or -1 if i is out of range. */
size_t model_num_tensors(const model_t *m);
size_t model_numel(const model_t *m);
const char *model_tensor_name(const model_t *m, size_t i);
int model_tensor_shape(const model_t *m, size_t i, int64_t shape[MODEL_MAX_DIMS]);

/* Copies all parameters out to / in from a flat vector of exactly n floats
 * (n must equal model_numel). set_params rejects non-finite values. */
int model_get_params(model_t *m, float *out, size_t n);
int model_set_params(model_t *m, const float *in, size_t n);

/* Local training: SGD with momentum (fresh optimiser state each call), mini
 * batches drawn in a seeded random order. res may be NULL. */
int model_train(model_t *m, const model_data_t *data, const model_train_opts_t *opts,
                model_result_t *res);

/* Evaluation in eval mode. If scores is not NULL it receives n values: for
 * binary tasks (classes == 2) the softmax probability of class 1, otherwise
 * the probability of the predicted class. */
int model_evaluate(model_t *m, const model_data_t *data, int batch, model_result_t *res,
                   float *scores);

#ifdef __cplusplus
}
#endif
#endif
