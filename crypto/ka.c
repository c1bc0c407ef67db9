/*
 * ka.c - pairwise key agreement: X25519, then a keyed BLAKE2b that binds the
 * shared point to its purpose (context), the round and the pair.
 *
 * Why a KDF at all: the raw X25519 output is a curve point, not a uniform
 * key, and the same key pair may serve several purposes in one round ("mask"
 * seeds for the PRG, "share" keys for the share boxes). Hashing in the
 * context, the round and both identities makes every (purpose, round, pair)
 * seed independent, so no seed is ever used twice (a PRG seed is used for
 * exactly one vector, a sharebox key for one round of one pair).
 */
#include "crypto/crypto.h"
#include "crypto/internal.h"

#include <string.h>

#include <sodium.h>

int ka_keypair(uint8_t pk[KA_PUBLICKEYBYTES], uint8_t sk[KA_SECRETKEYBYTES])
{
    CRYPTO_REQUIRE(pk != NULL && sk != NULL);
    randombytes_buf(sk, KA_SECRETKEYBYTES);
    if (crypto_scalarmult_base(pk, sk) != 0) {
        /* Only possible for a zero scalar after clamping: never with random
         * bytes, but the result is checked rather than assumed. */
        sodium_memzero(sk, KA_SECRETKEYBYTES);
        return -1;
    }
    return 0;
}

int ka_derive(uint8_t seed[KA_SEEDBYTES], const uint8_t sk[KA_SECRETKEYBYTES],
              const uint8_t my_pk[KA_PUBLICKEYBYTES], const uint8_t peer_pk[KA_PUBLICKEYBYTES],
              const char *context, uint32_t round, uint32_t my_id, uint32_t peer_id)
{
    CRYPTO_REQUIRE(seed != NULL && sk != NULL && my_pk != NULL && peer_pk != NULL);
    CRYPTO_REQUIRE(context != NULL);

    /* A pair needs two distinct members; ids come from the roster the
     * coordinator sends, so this is input, not a bug: -1. */
    if (my_id == peer_id) {
        sodium_memzero(seed, KA_SEEDBYTES);
        return -1;
    }

    uint8_t shared[crypto_scalarmult_BYTES];
    /* libsodium returns -1 when the peer key is of small order (the product
     * is the all-zero point); the explicit zero check below is the same test
     * again, kept so the property does not rest on one library version. */
    if (crypto_scalarmult(shared, sk, peer_pk) != 0 || sodium_is_zero(shared, sizeof shared)) {
        sodium_memzero(shared, sizeof shared);
        sodium_memzero(seed, KA_SEEDBYTES);
        return -1;
    }

    /* Canonical order, by id, so that u deriving with v and v deriving with u
     * hash byte-identical input. */
    const int i_am_low = my_id < peer_id;
    const uint32_t lo_id = i_am_low ? my_id : peer_id;
    const uint32_t hi_id = i_am_low ? peer_id : my_id;
    const uint8_t *lo_pk = i_am_low ? my_pk : peer_pk;
    const uint8_t *hi_pk = i_am_low ? peer_pk : my_pk;

    /* The context is length-prefixed so that no (context, rest) pair can
     * collide with another by moving bytes across the boundary. */
    const size_t ctx_len = strlen(context);
    CRYPTO_REQUIRE(ctx_len <= UINT32_MAX);
    uint8_t hdr[4];
    uint8_t ids[12];
    crypto_store32_le(hdr, (uint32_t)ctx_len);
    crypto_store32_le(ids, round);
    crypto_store32_le(ids + 4, lo_id);
    crypto_store32_le(ids + 8, hi_id);

    crypto_generichash_state st;
    int rc = crypto_generichash_init(&st, shared, sizeof shared, KA_SEEDBYTES);
    rc |= crypto_generichash_update(&st, hdr, sizeof hdr);
    rc |= crypto_generichash_update(&st, (const uint8_t *)context, ctx_len);
    rc |= crypto_generichash_update(&st, ids, sizeof ids);
    rc |= crypto_generichash_update(&st, lo_pk, KA_PUBLICKEYBYTES);
    rc |= crypto_generichash_update(&st, hi_pk, KA_PUBLICKEYBYTES);
    rc |= crypto_generichash_final(&st, seed, KA_SEEDBYTES);

    /* The state holds the key (the shared point) in its buffered block. */
    sodium_memzero(&st, sizeof st);
    sodium_memzero(shared, sizeof shared);
    if (rc != 0) {
        sodium_memzero(seed, KA_SEEDBYTES);
        return -1;
    }
    return 0;
}
