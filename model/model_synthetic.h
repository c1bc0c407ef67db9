/*
 * model_synthetic.h - what is particular to model_synthetic.c, the second
 * backend of model.h: plain C, no LibTorch, linked instead of model.cpp into
 * protocol-only clients (medfed-swarm), never into the daemon.
 *
 * A synthetic model is one tensor "weight" of P float32 parameters; its
 * architecture name carries P ("synthetic-1000000"), so a checkpoint alone
 * rebuilds it and the coordinator passes it on like any other name. It
 * learns a fixed task (parameters drawn towards a fixed target vector): a
 * round moves them by step = 1 - (1 - lr)^epochs of the way, plus seeded
 * noise (model_train's seed: every site's update differs, and the same call
 * gives the same bits). Evaluation never reads images: its figures follow
 * the distance to the target (accuracy 0.5 and AUC 0.5 at a random model).
 * A model keeps no private copy of its parameters: model_set_params shares
 * them within the process (vecshare.h) and model_get_params computes the
 * trained values on the fly, so a thousand models of one process hold the
 * global model once.
 */
#ifndef MEDFED_MODEL_SYNTHETIC_H
#define MEDFED_MODEL_SYNTHETIC_H

#include <stddef.h>

#include "model/model.h"

#define MODEL_SYNTHETIC_PREFIX "synthetic-"
#define MODEL_SYNTHETIC_MAX_PARAMS ((size_t)1 << 28) /* 1 GiB of float32 */

/* The spec of a synthetic model of params parameters: arch "synthetic-P",
 * 1x28x28 inputs (never read), 2 classes. -1 if params is 0 or above
 * MODEL_SYNTHETIC_MAX_PARAMS. */
int model_synthetic_spec(model_spec_t *spec, size_t params);

#endif
