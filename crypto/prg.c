/*
 * prg.c - expands a 32-byte seed into the uint32 mask vector of secure
 * aggregation, and adds or subtracts it into an accumulator.
 *
 * The mask is the raw keystream of a stream cipher keyed by the seed (zero
 * nonce / IV, counter from 0), read as little-endian uint32 words. A zero
 * nonce is safe because ka_derive makes every seed unique to one purpose,
 * round and pair, and each seed masks exactly one vector.
 *
 * Masks are as long as the model (millions of words) and a client applies
 * one per peer, so prg_add streams: it generates PRG_CHUNK_BYTES of
 * keystream into a stack buffer, folds it into acc, repeats, and wipes the
 * buffer at the end. No allocation grows with n and the buffer stays in L1.
 */
#include "crypto/crypto.h"
#include "crypto/internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

/*
 * AES-256-CTR, because it measured 2.6x faster. tests/bench/bench_prg, one
 * core of a 2-vCPU AMD EPYC VM (AES-NI, VAES, AVX-512), gcc 12 -O2, OpenSSL
 * 3.0, libsodium 1.0.18, best of 7, GB/s of mask added into acc:
 *     words        aes256ctr   chacha20
 *     1,000,000      6.98        2.36
 *     11,000,000     5.49-5.69   2.08-2.13   (ResNet-18 sized)
 *     16,777,216     5.55        2.12
 * For reference, `openssl speed -evp` on the same core (16 KiB blocks): raw
 * AES-256-CTR 8.3 GB/s, OpenSSL's ChaCha20 5.3 GB/s; libsodium 1.0.18's
 * ChaCha20 has SSSE3/AVX2 code but no AVX-512, hence its lower figure. On a
 * CPU without AES-NI ChaCha20 would win. The choice is a constant, not a
 * run-time probe, because every client of a round must expand a seed into
 * the same mask.
 */
const prg_alg_t PRG_DEFAULT = PRG_AES256CTR;

/* 8 KiB: large enough that the per-chunk cost (a cipher call) is noise,
 * small enough that the keystream stays in L1 while the accumulator streams
 * past it (measured ~8% faster than 16 KiB on 11M-word vectors, 8 KiB and
 * 16 KiB equal on small ones). A multiple of 64, so ChaCha20's block counter
 * advances by whole blocks between chunks. */
#define PRG_CHUNK_BYTES 8192
#define PRG_CHUNK_WORDS (PRG_CHUNK_BYTES / 4)

/* ---- keystream sources ------------------------------------------------------ */

typedef struct {
    prg_alg_t alg;
    const uint8_t *seed;
    EVP_CIPHER_CTX *evp; /* AES: keeps the 128-bit counter across chunks */
    uint64_t block;      /* ChaCha20: next 64-byte block number */
} keystream_t;

static int keystream_init(keystream_t *ks, prg_alg_t alg, const uint8_t seed[PRG_SEEDBYTES])
{
    ks->alg = alg;
    ks->seed = seed;
    ks->evp = NULL;
    ks->block = 0;
    if (alg == PRG_CHACHA20) return 0;

    static const uint8_t iv[16]; /* counter block 0 */
    ks->evp = EVP_CIPHER_CTX_new();
    if (ks->evp == NULL) return -1;
    if (EVP_EncryptInit_ex(ks->evp, EVP_aes_256_ctr(), NULL, seed, iv) != 1) {
        EVP_CIPHER_CTX_free(ks->evp); /* frees and cleanses the key schedule */
        ks->evp = NULL;
        return -1;
    }
    return 0;
}

/* Keystream = encryption of zeros. Read from this constant (out-of-place)
 * rather than zeroing the buffer each chunk: a memset per chunk costs ~5%. */
static const uint8_t zeros[PRG_CHUNK_BYTES];

/* The next len <= PRG_CHUNK_BYTES bytes of keystream. len is a multiple of
 * 64 except for the last call. */
static int keystream_next(keystream_t *ks, uint8_t *buf, size_t len)
{
    if (ks->alg == PRG_CHACHA20) {
        /* The original 64-bit-nonce ChaCha20 with a 64-bit block counter: no
         * 256 GiB limit as in the IETF variant, and for a zero nonce and
         * counter 0 its output is RFC 8439's test vector. */
        static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
        if (crypto_stream_chacha20_xor_ic(buf, zeros, len, nonce, ks->block, ks->seed) != 0)
            return -1;
        ks->block += len / 64;
        return 0;
    }
    int outl = 0;
    if (EVP_EncryptUpdate(ks->evp, buf, &outl, zeros, (int)len) != 1 || (size_t)outl != len)
        return -1;
    return 0;
}

static void keystream_done(keystream_t *ks)
{
    EVP_CIPHER_CTX_free(ks->evp); /* NULL-safe */
    ks->evp = NULL;
}

/* ---- folding a chunk into the output ------------------------------------------ */

typedef enum { FOLD_ADD, FOLD_SUB, FOLD_SET } fold_t;

/* restrict and a compile-time trip count let gcc -O2 vectorise the full-chunk
 * case (its default cost model refuses loops needing alias checks or an
 * epilogue); the tail chunk goes through the generic loop. */
static void fold(fold_t op, uint32_t *restrict out, const uint32_t *restrict ks, size_t m)
{
    switch (op) {
    case FOLD_ADD:
        for (size_t i = 0; i < m; i++) out[i] += ks[i];
        break;
    case FOLD_SUB:
        for (size_t i = 0; i < m; i++) out[i] -= ks[i];
        break;
    case FOLD_SET:
        memcpy(out, ks, m * sizeof *out);
        break;
    }
}

static void fold_full(fold_t op, uint32_t *restrict out, const uint32_t *restrict ks)
{
    switch (op) {
    case FOLD_ADD:
        for (size_t i = 0; i < PRG_CHUNK_WORDS; i++) out[i] += ks[i];
        break;
    case FOLD_SUB:
        for (size_t i = 0; i < PRG_CHUNK_WORDS; i++) out[i] -= ks[i];
        break;
    case FOLD_SET:
        memcpy(out, ks, PRG_CHUNK_BYTES);
        break;
    }
}

static int prg_run(prg_alg_t alg, const uint8_t seed[PRG_SEEDBYTES], uint32_t *out, size_t n,
                   fold_t op)
{
    CRYPTO_REQUIRE(alg == PRG_AES256CTR || alg == PRG_CHACHA20);
    CRYPTO_REQUIRE(seed != NULL);
    CRYPTO_REQUIRE(out != NULL || n == 0);
    CRYPTO_REQUIRE(n <= SIZE_MAX / 4);

    keystream_t ks;
    if (keystream_init(&ks, alg, seed) != 0) return -1;

    /* Declared as words (so aligned for them), filled as bytes. */
    uint32_t buf[PRG_CHUNK_WORDS];
    int rc = 0;
    for (size_t done = 0; done < n;) {
        const size_t m = n - done < PRG_CHUNK_WORDS ? n - done : PRG_CHUNK_WORDS;
        if (keystream_next(&ks, (uint8_t *)buf, m * 4) != 0) {
            rc = -1;
            break;
        }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* Native words already are the little-endian reading. */
#else
        for (size_t i = 0; i < m; i++) buf[i] = crypto_load32_le((const uint8_t *)&buf[i]);
#endif
        if (m == PRG_CHUNK_WORDS)
            fold_full(op, out + done, buf);
        else
            fold(op, out + done, buf, m);
        done += m;
    }
    /* The keystream is the mask: with the masked vector it would reveal x. */
    sodium_memzero(buf, sizeof buf);
    /* A failure (only OpenSSL running out of memory) leaves acc half-masked:
     * the caller must discard it. prg_expand's output would be a partial
     * mask, so it is wiped. */
    if (rc != 0 && op == FOLD_SET) sodium_memzero(out, n * sizeof *out);
    keystream_done(&ks);
    return rc;
}

int prg_add(prg_alg_t alg, const uint8_t seed[PRG_SEEDBYTES], uint32_t *acc, size_t n, int sign)
{
    CRYPTO_REQUIRE(sign == 1 || sign == -1);
    return prg_run(alg, seed, acc, n, sign == 1 ? FOLD_ADD : FOLD_SUB);
}

int prg_expand(prg_alg_t alg, const uint8_t seed[PRG_SEEDBYTES], uint32_t *out, size_t n)
{
    return prg_run(alg, seed, out, n, FOLD_SET);
}

int prg_add_many(prg_alg_t alg, const uint8_t (*seeds)[PRG_SEEDBYTES], const int *signs,
                 size_t nseeds, uint32_t *acc, size_t n)
{
    CRYPTO_REQUIRE(alg == PRG_AES256CTR || alg == PRG_CHACHA20);
    CRYPTO_REQUIRE((seeds != NULL && signs != NULL) || nseeds == 0);
    CRYPTO_REQUIRE(acc != NULL || n == 0);
    CRYPTO_REQUIRE(n <= SIZE_MAX / 4);
    for (size_t s = 0; s < nseeds; s++) CRYPTO_REQUIRE(signs[s] == 1 || signs[s] == -1);
    if (nseeds == 0) return 0;

    keystream_t *ks = calloc(nseeds, sizeof *ks);
    if (!ks) return -1;
    size_t opened = 0;
    int rc = 0;
    for (; opened < nseeds; opened++)
        if (keystream_init(&ks[opened], alg, seeds[opened]) != 0) {
            rc = -1;
            break;
        }
    /* Chunk-major: each 8 KiB piece of acc takes all the masks while it is in
     * L1, instead of one full pass over acc per mask (memory traffic / nseeds). */
    uint32_t buf[PRG_CHUNK_WORDS];
    for (size_t done = 0; rc == 0 && done < n;) {
        const size_t m = n - done < PRG_CHUNK_WORDS ? n - done : PRG_CHUNK_WORDS;
        for (size_t s = 0; s < nseeds; s++) {
            if (keystream_next(&ks[s], (uint8_t *)buf, m * 4) != 0) {
                rc = -1;
                break;
            }
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
            for (size_t i = 0; i < m; i++) buf[i] = crypto_load32_le((const uint8_t *)&buf[i]);
#endif
            fold_t op = signs[s] == 1 ? FOLD_ADD : FOLD_SUB;
            if (m == PRG_CHUNK_WORDS) fold_full(op, acc + done, buf);
            else fold(op, acc + done, buf, m);
        }
        done += m;
    }
    sodium_memzero(buf, sizeof buf);
    for (size_t s = 0; s < opened; s++) keystream_done(&ks[s]);
    free(ks);
    return rc;
}
