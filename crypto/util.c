/*
 * util.c - process set-up and the small helpers of crypto.h: CSPRNG, wiping,
 * constant-time comparison, guarded memory, SHA-256, and the misuse abort.
 */
#include "crypto/crypto.h"
#include "crypto/internal.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <sodium.h>

_Noreturn void crypto_misuse_(const char *file, int line, const char *what)
{
    /* Nothing secret in the message: it names a source line and a condition. */
    fprintf(stderr, "medfed crypto: misuse at %s:%d: %s\n", file, line, what);
    abort();
}

int crypto_init(void)
{
    /* sodium_init: 0 first time, 1 if already done (fine, idempotent), -1 if
     * no entropy source. It also picks the CPU-specific implementations. */
    return sodium_init() < 0 ? -1 : 0;
}

void crypto_random(void *buf, size_t len)
{
    CRYPTO_REQUIRE(buf != NULL || len == 0);
    randombytes_buf(buf, len);
}

void crypto_wipe(void *buf, size_t len)
{
    CRYPTO_REQUIRE(buf != NULL || len == 0);
    sodium_memzero(buf, len);
}

int crypto_equal(const void *a, const void *b, size_t len)
{
    CRYPTO_REQUIRE((a != NULL && b != NULL) || len == 0);
    if (len == 0) return 1;
    /* sodium_memcmp: time depends on len only, 0 when equal. */
    return sodium_memcmp(a, b, len) == 0;
}

void *crypto_secure_alloc(size_t len)
{
    /* Guard pages, mlock, canary; NULL on failure (the caller decides). */
    return sodium_malloc(len);
}

void crypto_secure_free(void *p)
{
    sodium_free(p); /* wipes, unlocks; NULL is fine */
}

void crypto_sha256(uint8_t out[CRYPTO_HASHBYTES], const void *data, size_t len)
{
    CRYPTO_REQUIRE(out != NULL);
    CRYPTO_REQUIRE(data != NULL || len == 0);
    /* OpenSSL rather than libsodium's crypto_hash_sha256: this hashes whole
     * model vectors (tens of MB) and OpenSSL uses the SHA extensions (several
     * times faster than libsodium's portable C). It only fails on out-of-
     * memory inside OpenSSL; with a void contract that can only abort. */
    unsigned int outlen = 0;
    static const uint8_t empty[1];
    if (EVP_Digest(len ? data : empty, len, out, &outlen, EVP_sha256(), NULL) != 1 ||
        outlen != CRYPTO_HASHBYTES) {
        fprintf(stderr, "medfed crypto: SHA-256 failed\n");
        abort();
    }
}
