/*
 * checkpoint.h - a model_t to and from a safetensors file. The file carries
 * the model spec in its metadata (arch, in_channels, height, width, classes),
 * so a checkpoint alone is enough to rebuild and score the model.
 * Linked only into programs that also link the LibTorch shim.
 */
#ifndef MEDFED_CHECKPOINT_H
#define MEDFED_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "model/safetensors.h"

/* Writes m's schema, parameters and spec metadata (plus extra entries). */
int checkpoint_save(model_t *m, const char *path, const st_meta_t *extra, size_t n_extra,
                    char *err, size_t errlen);

/* The initial model of a run: built from spec and seed, saved to path with
 * metadata round 0 and the seed (medfed-init, medfed-swarm init); its
 * parameter count in *numel. */
int checkpoint_init(const model_spec_t *spec, uint64_t seed, const char *path, size_t *numel,
                    char *err, size_t errlen);

/* Rebuilds the model named in the file's metadata and loads its parameters;
 * the file's tensor names and shapes must match the architecture exactly. */
model_t *checkpoint_load(const char *path, char *err, size_t errlen);

#endif
