/*
 * crypto.h - every cryptographic primitive secure aggregation uses. Only
 * crypto/ includes libsodium or OpenSSL headers; the rest of the project
 * sees fixed-size byte arrays and these functions.
 *
 * Conventions (libsodium's): sizes are *_BYTES constants; functions return 0
 * on success and -1 on failure and are warn_unused_result; attacker-supplied
 * input gives -1, programmer misuse (NULL, bad sizes) aborts. Every secret
 * temporary is wiped with sodium_memzero on every path.
 */
#ifndef MEDFED_CRYPTO_H
#define MEDFED_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define CRYPTO_WUR __attribute__((warn_unused_result))

/* ---- set-up and helpers ------------------------------------------------------ */

/* Call once per process before anything else (sodium_init). */
int crypto_init(void) CRYPTO_WUR;
void crypto_random(void *buf, size_t len);              /* CSPRNG */
void crypto_wipe(void *buf, size_t len);                /* sodium_memzero */
int crypto_equal(const void *a, const void *b, size_t len); /* constant time: 1 if equal */
/* Guarded memory for long-lived secrets (sodium_malloc / sodium_free). */
void *crypto_secure_alloc(size_t len);
void crypto_secure_free(void *p);
/* SHA-256, e.g. of a model vector for the round plan. */
#define CRYPTO_HASHBYTES 32
void crypto_sha256(uint8_t out[CRYPTO_HASHBYTES], const void *data, size_t len);

/* ---- key agreement: X25519 + KDF ------------------------------------------------ */

#define KA_PUBLICKEYBYTES 32
#define KA_SECRETKEYBYTES 32
#define KA_SEEDBYTES 32

int ka_keypair(uint8_t pk[KA_PUBLICKEYBYTES], uint8_t sk[KA_SECRETKEYBYTES]) CRYPTO_WUR;
/* Derives a 32-byte seed shared by the pair (a, b): X25519(sk, peer_pk), then
 * BLAKE2b keyed by the shared point over (context, round, min(a,b), max(a,b),
 * both public keys in the same canonical order). Both sides get the same
 * seed; different contexts ("mask", "share"), rounds or pairs give unrelated
 * seeds. -1 if the peer key is a low-order point (all-zero shared secret) or
 * my_id == peer_id. */
int ka_derive(uint8_t seed[KA_SEEDBYTES], const uint8_t sk[KA_SECRETKEYBYTES],
              const uint8_t my_pk[KA_PUBLICKEYBYTES], const uint8_t peer_pk[KA_PUBLICKEYBYTES],
              const char *context, uint32_t round, uint32_t my_id, uint32_t peer_id) CRYPTO_WUR;

/* ---- PRG: a 256-bit seed expanded to a uint32 mask vector -------------------------- */

#define PRG_SEEDBYTES 32
typedef enum { PRG_AES256CTR = 0, PRG_CHACHA20 = 1 } prg_alg_t;
/* The algorithm secure aggregation uses (picked by measurement, see prg.c). */
extern const prg_alg_t PRG_DEFAULT;

/* acc[i] += sign * mask[i] (mod 2^32) for i < n, where mask is the keystream
 * of the seed read as little-endian uint32 (zero nonce, counter from 0: each
 * seed is used for exactly one vector). sign is +1 or -1. Streams in chunks:
 * no allocation proportional to n. -1 only if OpenSSL fails (out of memory);
 * acc is then partly masked and must be discarded. */
int prg_add(prg_alg_t alg, const uint8_t seed[PRG_SEEDBYTES], uint32_t *acc, size_t n, int sign)
    CRYPTO_WUR;
/* acc += sum_s signs[s] * mask(seeds[s]): the same as nseeds prg_add calls,
 * computed chunk by chunk so acc crosses memory once, not nseeds times. */
int prg_add_many(prg_alg_t alg, const uint8_t (*seeds)[PRG_SEEDBYTES], const int *signs,
                 size_t nseeds, uint32_t *acc, size_t n) CRYPTO_WUR;
/* Writes the first n mask words (tests). */
int prg_expand(prg_alg_t alg, const uint8_t seed[PRG_SEEDBYTES], uint32_t *out, size_t n)
    CRYPTO_WUR;

/* ---- Shamir t-of-n sharing of a 32-byte secret over GF(2^61 - 1) ------------------- */

#define SHAMIR_SECRETBYTES 32
#define SHAMIR_SHAREBYTES 64     /* 8 field elements, 8 bytes LE each (32-bit limbs) */
#define SHAMIR_MAX_SHARES 65535

/* Splits secret into n shares at the distinct, non-zero x coordinates xs[];
 * any t of them reconstruct it, t-1 reveal nothing. 1 <= t <= n <=
 * SHAMIR_MAX_SHARES (else abort). -1 if an x is 0 (that share would be the
 * secret) or repeats. */
int shamir_split(const uint8_t secret[SHAMIR_SECRETBYTES], unsigned t, unsigned n,
                 const uint32_t *xs, uint8_t (*shares)[SHAMIR_SHAREBYTES]) CRYPTO_WUR;
/* Reconstructs from the first t of k >= t shares at distinct x coordinates;
 * shares after the first t are not read. -1 (secret zeroed) if k < t, an x
 * repeats or is 0, a share element is not a field element, or a
 * reconstructed 32-bit limb is out of range (shares that do not belong
 * together: a sanity check, not integrity). */
int shamir_combine(unsigned t, unsigned k, const uint32_t *xs,
                   const uint8_t (*shares)[SHAMIR_SHAREBYTES], uint8_t secret[SHAMIR_SECRETBYTES])
    CRYPTO_WUR;

/* ---- share boxes: AEAD between two clients, relayed by the coordinator ------------- */

#define SHAREBOX_KEYBYTES 32
#define SHAREBOX_PLAINBYTES (2 * SHAMIR_SHAREBYTES)       /* share of b_u, share of s_sk */
#define SHAREBOX_BYTES (SHAREBOX_PLAINBYTES + 16)         /* + Poly1305 tag */

/* XChaCha20-Poly1305 with associated data (round, from, to) and a nonce
 * derived from it; the key comes from ka_derive(..., "share", ...) and is
 * unique per round and pair, so the nonce never repeats under one key.
 * open returns -1 on any tampering, mis-routing or replay into another round. */
int sharebox_seal(uint8_t out[SHAREBOX_BYTES], const uint8_t plain[SHAREBOX_PLAINBYTES],
                  const uint8_t key[SHAREBOX_KEYBYTES], uint32_t round, uint32_t from, uint32_t to)
    CRYPTO_WUR;
int sharebox_open(uint8_t plain[SHAREBOX_PLAINBYTES], const uint8_t in[SHAREBOX_BYTES],
                  const uint8_t key[SHAREBOX_KEYBYTES], uint32_t round, uint32_t from, uint32_t to)
    CRYPTO_WUR;

/* ---- long-term identity: Ed25519 ----------------------------------------------------- */

#define IDENTITY_PUBLICKEYBYTES 32
#define IDENTITY_SECRETKEYBYTES 64
#define IDENTITY_SIGBYTES 64
#define IDENTITY_HEXBYTES (2 * IDENTITY_PUBLICKEYBYTES + 1)

int identity_keypair(uint8_t pk[IDENTITY_PUBLICKEYBYTES], uint8_t sk[IDENTITY_SECRETKEYBYTES])
    CRYPTO_WUR;
/* Signs / verifies the advertised keys of one round:
 * "medfed-advertise-v1" || round || id || c_pk || s_pk. */
int identity_sign_keys(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                       uint32_t round, uint32_t id, const uint8_t c_pk[KA_PUBLICKEYBYTES],
                       const uint8_t s_pk[KA_PUBLICKEYBYTES]) CRYPTO_WUR;
int identity_verify_keys(const uint8_t sig[IDENTITY_SIGBYTES],
                         const uint8_t pk[IDENTITY_PUBLICKEYBYTES], uint32_t round, uint32_t id,
                         const uint8_t c_pk[KA_PUBLICKEYBYTES],
                         const uint8_t s_pk[KA_PUBLICKEYBYTES]) CRYPTO_WUR;
/* Key files. The secret key file holds the 64-byte key as 128 hex digits and a
 * newline, mode 0600; load refuses a file that group or others can read
 * ("key file key.sec is readable by others (mode 0644); chmod 600 key.sec"), a wrong length
 * or non-hex content. Public keys travel as 64 lower-case hex digits. */
int identity_save_secret(const char *path, const uint8_t sk[IDENTITY_SECRETKEYBYTES], char *err,
                         size_t errlen) CRYPTO_WUR;
int identity_load_secret(const char *path, uint8_t sk[IDENTITY_SECRETKEYBYTES], char *err,
                         size_t errlen) CRYPTO_WUR;
void identity_pk_to_hex(char out[IDENTITY_HEXBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES]);
int identity_pk_from_hex(uint8_t pk[IDENTITY_PUBLICKEYBYTES], const char *hex) CRYPTO_WUR;
/* Public key of a secret key. */
void identity_pk_of(uint8_t pk[IDENTITY_PUBLICKEYBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES]);
/* A site's fingerprint, as its peers pin it ([policy] peers): the SHA-256 of
 * its Ed25519 identity public key, 64 lower-case hex digits. It names the key,
 * not one certificate, so a renewed certificate keeps it. */
void identity_fingerprint(char out[IDENTITY_HEXBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES]);
/* Domain-separated signature of any message: Ed25519 over
 * "medfed-" || label || 0x00 || msg. label names what is signed (e.g.
 * "advertise-v2", "consistency-v1") so that no signature made for one medfed
 * message is valid for another. */
int identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                  const char *label, const void *msg, size_t len) CRYPTO_WUR;
int identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                    const char *label, const void *msg, size_t len) CRYPTO_WUR;

/* Any secret key of len <= 64 bytes as a key file: 2*len hex digits and a
 * newline, mode 0600, written atomically; loading refuses files others can
 * read, wrong lengths and non-hex content (identity keys use these). */
int keyfile_save(const char *path, const uint8_t *key, size_t len, char *err, size_t errlen)
    CRYPTO_WUR;
int keyfile_load(const char *path, uint8_t *key, size_t len, char *err, size_t errlen) CRYPTO_WUR;

/* ---- transport keys: ZeroMQ CURVE (X25519) ------------------------------------------ */

#define CURVE_KEYBYTES 32
int curve_keypair(uint8_t pk[CURVE_KEYBYTES], uint8_t sk[CURVE_KEYBYTES]) CRYPTO_WUR;
int curve_pk_of(uint8_t pk[CURVE_KEYBYTES], const uint8_t sk[CURVE_KEYBYTES]) CRYPTO_WUR;

#endif
