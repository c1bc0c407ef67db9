/*
 * vecshare.h - read-only vectors shared by content within one process.
 *
 * For a host that runs many sites in one process (medfed-swarm): every site
 * holds the same global model, and a thousand private copies of a
 * million-parameter model are 4 GB. A site asks for a shared copy of the
 * bytes it received; if the process already holds those exact bytes
 * (compared in full, not by hash) it gets that copy, else a new one. Copies
 * are reference-counted and freed with their last holder. Thread-safe.
 *
 * Never used by the daemon, which keeps its own copy.
 */
#ifndef MEDFED_VECSHARE_H
#define MEDFED_VECSHARE_H

#include <stddef.h>

/* A shared copy of data (bytes long, > 0), 16-byte aligned: the caller holds
 * one reference and must not write through it. NULL when out of memory. */
const void *vecshare_get(const void *data, size_t bytes);
/* Drops the caller's reference (NULL-safe, sets *p to NULL). */
void vecshare_put(const void **p);
/* Copies held now (each counted once, however many holders), for tests. */
size_t vecshare_count(void);

#endif
