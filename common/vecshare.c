/*
 * vecshare.c - a short list of reference-counted, read-only vectors, looked
 * up by a fingerprint of sampled words and confirmed with a full memcmp
 * (two different models with equal samples are two entries, never one).
 * The list is short: the global models that sites of this process still
 * hold (one, two while a new version spreads).
 */
#include "common/vecshare.h"

#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VECSHARE_SAMPLES 256 /* 8-byte words fingerprinted, spread over the vector */

typedef struct entry {
    struct entry *next;
    size_t bytes;
    uint64_t print;
    long refs;
    void *data;
} entry_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *entries;

static uint64_t fingerprint(const uint8_t *p, size_t bytes)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ bytes;
    size_t words = bytes / 8, step = words > VECSHARE_SAMPLES ? words / VECSHARE_SAMPLES : 1;
    for (size_t i = 0; i < words; i += step) {
        uint64_t w;
        memcpy(&w, p + i * 8, 8);
        h = (h ^ w) * UINT64_C(0x100000001b3);
    }
    for (size_t i = words * 8; i < bytes; i++) h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

const void *vecshare_get(const void *data, size_t bytes)
{
    if (!data || bytes == 0) return NULL;
    const uint64_t print = fingerprint(data, bytes);
    pthread_mutex_lock(&lock);
    for (entry_t *e = entries; e; e = e->next) {
        if (e->bytes == bytes && e->print == print && memcmp(e->data, data, bytes) == 0) {
            e->refs++;
            pthread_mutex_unlock(&lock);
            return e->data;
        }
    }
    entry_t *e = malloc(sizeof *e);
    void *copy = aligned_alloc(16, (bytes + 15) / 16 * 16);
    if (!e || !copy) {
        pthread_mutex_unlock(&lock);
        free(e);
        free(copy);
        return NULL;
    }
    memcpy(copy, data, bytes);
    *e = (entry_t){.next = entries, .bytes = bytes, .print = print, .refs = 1, .data = copy};
    entries = e;
    pthread_mutex_unlock(&lock);
    return copy;
}

void vecshare_put(const void **p)
{
    if (!p || !*p) return;
    int found = 0;
    pthread_mutex_lock(&lock);
    for (entry_t **at = &entries; *at; at = &(*at)->next) {
        entry_t *e = *at;
        if (e->data != *p) continue;
        found = 1;
        if (--e->refs == 0) {
            *at = e->next;
            free(e->data);
            free(e);
        }
        break;
    }
    pthread_mutex_unlock(&lock);
    assert(found && "vecshare_put of a pointer vecshare_get did not return");
    (void)found;
    *p = NULL;
}

size_t vecshare_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&lock);
    for (const entry_t *e = entries; e; e = e->next) n++;
    pthread_mutex_unlock(&lock);
    return n;
}
