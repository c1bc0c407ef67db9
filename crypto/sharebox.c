/*
 * sharebox.c - the AEAD box a client puts its shares for a peer in; the
 * coordinator relays it but can neither read nor alter it.
 *
 * XChaCha20-Poly1305 (IETF). The key is ka_derive(..., "share", round, u, v):
 * one key per round and unordered pair, shared by both directions. The nonce
 * is (round, from, to), so the two directions of a pair never share a nonce,
 * and the key changes every round anyway: no (key, nonce) repeats without
 * any nonce state. The same triple is the associated data, so a box opened
 * with the wrong round, sender or recipient fails authentication - the
 * coordinator cannot re-route or replay a box into another round.
 */
#include "crypto/crypto.h"
#include "crypto/internal.h"

#include <string.h>

#include <sodium.h>

#define HDR_BYTES 12 /* round || from || to, little-endian u32 each */

/* The nonce is the header padded with zeros: 12 bytes are already unique per
 * (key, direction), and the 24-byte XChaCha nonce has room to spare. */
static void header(uint8_t hdr[HDR_BYTES], uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES],
                   uint32_t round, uint32_t from, uint32_t to)
{
    crypto_store32_le(hdr, round);
    crypto_store32_le(hdr + 4, from);
    crypto_store32_le(hdr + 8, to);
    memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    memcpy(nonce, hdr, HDR_BYTES);
}

int sharebox_seal(uint8_t out[SHAREBOX_BYTES], const uint8_t plain[SHAREBOX_PLAINBYTES],
                  const uint8_t key[SHAREBOX_KEYBYTES], uint32_t round, uint32_t from, uint32_t to)
{
    CRYPTO_REQUIRE(out != NULL && plain != NULL && key != NULL);
    _Static_assert(SHAREBOX_KEYBYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key size");
    _Static_assert(SHAREBOX_BYTES == SHAREBOX_PLAINBYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES,
                   "box size");

    uint8_t hdr[HDR_BYTES], nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    header(hdr, nonce, round, from, to);
    unsigned long long outlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(out, &outlen, plain, SHAREBOX_PLAINBYTES, hdr,
                                                   sizeof hdr, NULL, nonce, key) != 0 ||
        outlen != SHAREBOX_BYTES) {
        sodium_memzero(out, SHAREBOX_BYTES);
        return -1;
    }
    return 0;
}

int sharebox_open(uint8_t plain[SHAREBOX_PLAINBYTES], const uint8_t in[SHAREBOX_BYTES],
                  const uint8_t key[SHAREBOX_KEYBYTES], uint32_t round, uint32_t from, uint32_t to)
{
    CRYPTO_REQUIRE(plain != NULL && in != NULL && key != NULL);

    uint8_t hdr[HDR_BYTES], nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    header(hdr, nonce, round, from, to);
    unsigned long long plainlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &plainlen, NULL, in, SHAREBOX_BYTES, hdr,
                                                   sizeof hdr, nonce, key) != 0 ||
        plainlen != SHAREBOX_PLAINBYTES) {
        /* Never leave unauthenticated bytes for a caller that ignores -1. */
        sodium_memzero(plain, SHAREBOX_PLAINBYTES);
        return -1;
    }
    return 0;
}
