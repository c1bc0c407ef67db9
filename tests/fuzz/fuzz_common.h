/*
 * fuzz_common.h - what the libFuzzer harnesses share. Each harness is its own
 * program and includes this file exactly once (it holds definitions).
 *
 *  - Logging: the harnesses link everything but common/log.c and define the
 *    log API here. The threshold is DEBUG, so every log statement's arguments
 *    are evaluated and formatted (a bad pointer in a log line is found), but
 *    the line is dropped unless MEDFED_FUZZ_LOG=1 is set (thousands of
 *    execs/s would otherwise spend their time writing stderr).
 *  - Randomness: libsodium's randombytes is replaced by a seeded generator
 *    that each harness resets at the start of every input. Key pairs, Shamir
 *    coefficients and dither are then a function of the input alone, so a
 *    crash reproduces, and seeds written once stay valid (a client's keys
 *    are the same in every run). Harness only: never do this in a daemon.
 *  - Input framing: a cursor over the fuzz input, and the seed writer.
 */
#ifndef MEDFED_FUZZ_COMMON_H
#define MEDFED_FUZZ_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "common/log.h"
#include "crypto/crypto.h"
#include "proto/wire.h"

/* Not every harness uses every helper. */
#define FZ_UNUSED __attribute__((unused))

/* ---- failing ---------------------------------------------------------------------- */

/* A broken invariant is a crash for libFuzzer: abort with the reason. */
FZ_UNUSED __attribute__((noreturn)) static void fz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "fuzz invariant failed at %s:%d: %s\n", file, line, what);
    abort();
}
#define FZ_CHECK(cond) \
    do { \
        if (!(cond)) fz_fail(__FILE__, __LINE__, #cond); \
    } while (0)

/* ---- logging (replaces common/log.c) -------------------------------------------------- */

log_level_t log_threshold = LOG_DEBUG;
FZ_UNUSED static int fz_log_on = -1;

void log_init(const char *prog, log_level_t level)
{
    (void)prog;
    (void)level; /* the harness keeps DEBUG: every statement runs */
}

int log_level_parse(const char *s, log_level_t *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    return -1;
}

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (fz_log_on < 0) fz_log_on = getenv("MEDFED_FUZZ_LOG") != NULL;
    if (fz_log_on) fprintf(stderr, "fuzz %s %s\n", level <= LOG_WARN ? "WARN" : "INFO", line);
}

const char *log_last_error(void) { return ""; }

/* ---- deterministic randomness ----------------------------------------------------------- */

FZ_UNUSED static uint64_t fz_rng_state;

FZ_UNUSED static void fz_rng_reset(uint64_t seed) { fz_rng_state = seed; }

FZ_UNUSED static uint64_t fz_rng_next(void) /* splitmix64 */
{
    uint64_t z = (fz_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

FZ_UNUSED static const char *fz_rb_name(void) { return "medfed-fuzz-deterministic"; }
FZ_UNUSED static uint32_t fz_rb_random(void) { return (uint32_t)(fz_rng_next() >> 32); }
FZ_UNUSED static void fz_rb_buf(void *const buf, const size_t size)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < size; i += 8) {
        uint64_t r = fz_rng_next();
        size_t n = size - i < 8 ? size - i : 8;
        memcpy(p + i, &r, n);
    }
}
FZ_UNUSED static randombytes_implementation fz_randombytes = {
    fz_rb_name, fz_rb_random, NULL, NULL, fz_rb_buf, NULL,
};

/* Once, before anything uses libsodium. */
FZ_UNUSED static void fz_crypto_init(void)
{
    fz_rng_reset(0x6d65646665642d66ull);
    if (randombytes_set_implementation(&fz_randombytes) != 0 || crypto_init() < 0) {
        fprintf(stderr, "fuzz: libsodium set-up failed\n");
        abort();
    }
}

/* ---- crypto at fuzzing speed (the harnesses link with -Wl,--wrap=...) -------------------- */
/* Two stand-ins, each behaving exactly as what it replaces, so that the
 * harnesses spend their time in medfed's code rather than in libsodium's
 * field arithmetic and page tables (the client harness ran 2.5x faster):
 *  - identity_verify and identity_sign are pure functions of their inputs
 *    (Ed25519 signatures are deterministic). Their results are memoised under
 *    the BLAKE2b-256 of every input byte, so an input seen before gives the
 *    stored answer and a new one, however close, is computed. Every call
 *    still reads all of its arguments (ASan sees a bad pointer or length).
 *  - crypto_secure_alloc/free (sodium_malloc: guard pages, mlock, two
 *    mprotect calls per allocation) become malloc with a length word, and
 *    the free still wipes. ASan's redzones check every byte on both sides,
 *    which a guard page does for one side only. */
int __real_identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                           const char *label, const void *msg, size_t len);
int __real_identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                         const char *label, const void *msg, size_t len);
int __wrap_identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                           const char *label, const void *msg, size_t len);
int __wrap_identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                         const char *label, const void *msg, size_t len);
void *__wrap_crypto_secure_alloc(size_t len);
void __wrap_crypto_secure_free(void *p);

#define FZ_MEMO_SLOTS 4096 /* direct-mapped; a power of two */
typedef struct {
    uint8_t key[32]; /* BLAKE2b-256 of the call's inputs; all zero: empty */
    int rc;
    uint8_t sig[IDENTITY_SIGBYTES]; /* identity_sign's output */
} fz_memo_t;
static fz_memo_t fz_memo_verify[FZ_MEMO_SLOTS], fz_memo_sign[FZ_MEMO_SLOTS];

/* The memo key of (what, key, label, msg, sig): every byte, with lengths. */
static fz_memo_t *fz_memo_find(fz_memo_t *table, uint8_t key[32], const uint8_t *k, size_t klen,
                               const char *label, const void *msg, size_t len, const uint8_t *sig)
{
    crypto_generichash_state st;
    uint64_t n[2] = {strlen(label), len};
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)n, sizeof n);
    crypto_generichash_update(&st, k, klen);
    crypto_generichash_update(&st, (const uint8_t *)label, n[0]);
    if (len) crypto_generichash_update(&st, msg, len);
    if (sig) crypto_generichash_update(&st, sig, IDENTITY_SIGBYTES);
    crypto_generichash_final(&st, key, 32);
    uint32_t slot;
    memcpy(&slot, key, sizeof slot);
    fz_memo_t *e = &table[slot & (FZ_MEMO_SLOTS - 1)];
    return memcmp(e->key, key, 32) == 0 ? e : NULL;
}

static fz_memo_t *fz_memo_slot(fz_memo_t *table, const uint8_t key[32])
{
    uint32_t slot;
    memcpy(&slot, key, sizeof slot);
    fz_memo_t *e = &table[slot & (FZ_MEMO_SLOTS - 1)];
    memcpy(e->key, key, 32);
    return e;
}

int __wrap_identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                           const char *label, const void *msg, size_t len)
{
    uint8_t key[32];
    const fz_memo_t *e = fz_memo_find(fz_memo_verify, key, pk, IDENTITY_PUBLICKEYBYTES, label, msg, len, sig);
    if (e) return e->rc;
    int rc = __real_identity_verify(sig, pk, label, msg, len);
    fz_memo_slot(fz_memo_verify, key)->rc = rc;
    return rc;
}

int __wrap_identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                         const char *label, const void *msg, size_t len)
{
    uint8_t key[32];
    const fz_memo_t *e = fz_memo_find(fz_memo_sign, key, sk, IDENTITY_SECRETKEYBYTES, label, msg, len, NULL);
    if (e) {
        memcpy(sig, e->sig, IDENTITY_SIGBYTES);
        return e->rc;
    }
    int rc = __real_identity_sign(sig, sk, label, msg, len);
    fz_memo_t *s = fz_memo_slot(fz_memo_sign, key);
    s->rc = rc;
    memcpy(s->sig, sig, IDENTITY_SIGBYTES);
    return rc;
}

void *__wrap_crypto_secure_alloc(size_t len)
{
    if (len > SIZE_MAX - 16) return NULL;
    uint8_t *p = malloc(16 + len);
    if (!p) return NULL;
    memcpy(p, &len, sizeof len);
    return p + 16;
}

void __wrap_crypto_secure_free(void *p)
{
    if (!p) return;
    uint8_t *base = (uint8_t *)p - 16;
    size_t len;
    memcpy(&len, base, sizeof len);
    sodium_memzero(p, len);
    free(base);
}

/* ---- input cursor ------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in_t;

FZ_UNUSED static int fz_u8(fz_in_t *in, uint8_t *out)
{
    if (in->n == 0) return -1;
    *out = *in->p++;
    in->n--;
    return 0;
}

/* Up to want bytes (fewer at the end of the input). */
FZ_UNUSED static const uint8_t *fz_take(fz_in_t *in, size_t want, size_t *got)
{
    *got = want < in->n ? want : in->n;
    const uint8_t *p = in->p;
    in->p += *got;
    in->n -= *got;
    return p;
}

/* A message of the input: 2-byte big-endian length, then that many bytes. */
FZ_UNUSED static const uint8_t *fz_frame(fz_in_t *in, size_t *len)
{
    uint8_t hi, lo;
    if (fz_u8(in, &hi) < 0 || fz_u8(in, &lo) < 0) {
        *len = 0;
        return NULL;
    }
    return fz_take(in, (size_t)hi << 8 | lo, len);
}

/* ---- seed writer ---------------------------------------------------------------------------- */

/* A seed under construction: header bytes, then control bytes and framed messages. */
typedef struct {
    uint8_t data[65536];
    size_t n;
} fz_seed_t;

FZ_UNUSED static void fz_seed_byte(fz_seed_t *s, uint8_t b)
{
    FZ_CHECK(s->n < sizeof s->data);
    s->data[s->n++] = b;
}

FZ_UNUSED static void fz_seed_bytes(fz_seed_t *s, const void *p, size_t len)
{
    FZ_CHECK(len <= sizeof s->data - s->n);
    memcpy(s->data + s->n, p, len);
    s->n += len;
}

/* Appends ctl, then m encoded with msg_encode and framed. */
FZ_UNUSED static void fz_seed_msg(fz_seed_t *s, uint8_t ctl, const msg_t *m)
{
    static wire_buf_t *b;
    if (!b) b = wire_buf_new();
    FZ_CHECK(b != NULL);
    msg_encode(m, b);
    size_t len = wire_buf_size(b);
    FZ_CHECK(len <= 0xffff);
    fz_seed_byte(s, ctl);
    fz_seed_byte(s, (uint8_t)(len >> 8));
    fz_seed_byte(s, (uint8_t)len);
    fz_seed_bytes(s, wire_buf_data(b), len);
}

/* Seeds go to $MEDFED_FUZZ_WRITE_SEEDS/<name> when that is set (the harness then
 * exits without fuzzing): `make fuzz` regenerates each corpus this way. */
FZ_UNUSED static const char *fz_seed_dir(void) { return getenv("MEDFED_FUZZ_WRITE_SEEDS"); }

FZ_UNUSED static void fz_seed_write(const char *name, const fz_seed_t *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", fz_seed_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s->data, 1, s->n, f) != s->n || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write seed %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

#endif
