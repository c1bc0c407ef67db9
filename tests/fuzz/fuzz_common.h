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
/* Stand-ins that behave exactly as what they replace, so that the harnesses
 * spend their time in medfed's code rather than in libsodium's curve
 * arithmetic and page tables (the client harness ran 3.5x faster):
 *  - identity_verify, identity_sign (Ed25519 signatures are deterministic),
 *    crypto_scalarmult and crypto_scalarmult_base (X25519) are pure
 *    functions of their inputs. Their results are memoised under the
 *    BLAKE2b-256 of every input byte, with lengths and the function's name,
 *    so an input seen before gives the stored answer and a new one, however
 *    close, is computed. Every call still reads all of its arguments, as
 *    the real one does (both in libsodium, which is not instrumented).
 *  - crypto_secure_alloc/free (sodium_malloc: guard pages, mlock, two
 *    mprotect calls per allocation) become malloc with a length word, and
 *    the free still wipes. ASan's redzones check every byte on both sides,
 *    which a guard page does for one side only. */
int __real_identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                           const char *label, const void *msg, size_t len);
int __real_identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                         const char *label, const void *msg, size_t len);
int __real_crypto_scalarmult(unsigned char *q, const unsigned char *n, const unsigned char *p);
int __real_crypto_scalarmult_base(unsigned char *q, const unsigned char *n);
int __wrap_identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                           const char *label, const void *msg, size_t len);
int __wrap_identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                         const char *label, const void *msg, size_t len);
int __wrap_crypto_scalarmult(unsigned char *q, const unsigned char *n, const unsigned char *p);
int __wrap_crypto_scalarmult_base(unsigned char *q, const unsigned char *n);
void *__wrap_crypto_secure_alloc(size_t len);
void __wrap_crypto_secure_free(void *p);

#define FZ_MEMO_SLOTS 8192 /* direct-mapped; a power of two */
typedef struct {
    uint8_t key[32]; /* the BLAKE2b-256 of the call (fz_memo_key); all zero: empty */
    int rc;
    uint8_t out[64]; /* what the call wrote: a signature or a point */
} fz_memo_t;
static fz_memo_t fz_memo[FZ_MEMO_SLOTS];

/* The key of a call: the function's name, then each argument with its length
 * (NULL ends the list). */
static void fz_memo_key(uint8_t key[32], const char *fn, ...)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)fn, strlen(fn) + 1);
    va_list ap;
    va_start(ap, fn);
    for (const void *arg; (arg = va_arg(ap, const void *)) != NULL;) {
        uint64_t len = va_arg(ap, size_t);
        crypto_generichash_update(&st, (const uint8_t *)&len, sizeof len);
        if (len) crypto_generichash_update(&st, arg, len);
    }
    va_end(ap);
    crypto_generichash_final(&st, key, 32);
}

static fz_memo_t *fz_memo_slot(const uint8_t key[32])
{
    uint32_t slot;
    memcpy(&slot, key, sizeof slot);
    return &fz_memo[slot & (FZ_MEMO_SLOTS - 1)];
}

/* The stored answer: rc, and outlen bytes into out. 0: never seen. */
static int fz_memo_get(const uint8_t key[32], int *rc, void *out, size_t outlen)
{
    const fz_memo_t *e = fz_memo_slot(key);
    if (memcmp(e->key, key, 32) != 0) return 0;
    *rc = e->rc;
    if (outlen) memcpy(out, e->out, outlen);
    return 1;
}

static int fz_memo_put(const uint8_t key[32], int rc, const void *out, size_t outlen)
{
    fz_memo_t *e = fz_memo_slot(key);
    memcpy(e->key, key, 32);
    e->rc = rc;
    if (outlen) memcpy(e->out, out, outlen);
    return rc;
}

int __wrap_identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                           const char *label, const void *msg, size_t len)
{
    uint8_t key[32];
    int rc;
    fz_memo_key(key, "identity_verify", sig, (size_t)IDENTITY_SIGBYTES, pk, (size_t)IDENTITY_PUBLICKEYBYTES,
                label, strlen(label), msg, len, NULL);
    if (fz_memo_get(key, &rc, NULL, 0)) return rc;
    return fz_memo_put(key, __real_identity_verify(sig, pk, label, msg, len), NULL, 0);
}

int __wrap_identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                         const char *label, const void *msg, size_t len)
{
    uint8_t key[32];
    int rc;
    fz_memo_key(key, "identity_sign", sk, (size_t)IDENTITY_SECRETKEYBYTES, label, strlen(label), msg, len,
                NULL);
    if (fz_memo_get(key, &rc, sig, IDENTITY_SIGBYTES)) return rc;
    rc = __real_identity_sign(sig, sk, label, msg, len);
    return fz_memo_put(key, rc, sig, IDENTITY_SIGBYTES);
}

int __wrap_crypto_scalarmult(unsigned char *q, const unsigned char *n, const unsigned char *p)
{
    uint8_t key[32];
    int rc;
    fz_memo_key(key, "crypto_scalarmult", n, (size_t)crypto_scalarmult_SCALARBYTES, p,
                (size_t)crypto_scalarmult_BYTES, NULL);
    if (fz_memo_get(key, &rc, q, crypto_scalarmult_BYTES)) return rc;
    rc = __real_crypto_scalarmult(q, n, p);
    return fz_memo_put(key, rc, q, crypto_scalarmult_BYTES);
}

int __wrap_crypto_scalarmult_base(unsigned char *q, const unsigned char *n)
{
    uint8_t key[32];
    int rc;
    fz_memo_key(key, "crypto_scalarmult_base", n, (size_t)crypto_scalarmult_SCALARBYTES, NULL);
    if (fz_memo_get(key, &rc, q, crypto_scalarmult_BYTES)) return rc;
    rc = __real_crypto_scalarmult_base(q, n);
    return fz_memo_put(key, rc, q, crypto_scalarmult_BYTES);
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
