/*
 * internal.h - what the files of crypto/ share and nobody else sees: the
 * misuse check and little-endian helpers. Not part of the public contract
 * (crypto.h); only the .c files of crypto/ include it.
 */
#ifndef MEDFED_CRYPTO_INTERNAL_H
#define MEDFED_CRYPTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Programmer misuse (a NULL pointer, t == 0, sign not +-1, ...) is a bug in
 * the caller, not something an attacker can cause, so it aborts instead of
 * returning -1: an error code for a bug would be ignored or, worse, be taken
 * for "bad peer input". Attacker-controlled input never reaches this.
 */
_Noreturn void crypto_misuse_(const char *file, int line, const char *what);
#define CRYPTO_REQUIRE(cond) \
    do { \
        if (!(cond)) crypto_misuse_(__FILE__, __LINE__, #cond); \
    } while (0)

/* Fixed byte order for everything that is hashed, signed or serialised, so
 * that hosts of either endianness agree. */
static inline void crypto_store32_le(uint8_t dst[4], uint32_t w)
{
    dst[0] = (uint8_t)w;
    dst[1] = (uint8_t)(w >> 8);
    dst[2] = (uint8_t)(w >> 16);
    dst[3] = (uint8_t)(w >> 24);
}

static inline uint32_t crypto_load32_le(const uint8_t src[4])
{
    return (uint32_t)src[0] | (uint32_t)src[1] << 8 | (uint32_t)src[2] << 16 |
           (uint32_t)src[3] << 24;
}

static inline void crypto_store64_le(uint8_t dst[8], uint64_t w)
{
    for (int i = 0; i < 8; i++) dst[i] = (uint8_t)(w >> (8 * i));
}

static inline uint64_t crypto_load64_le(const uint8_t src[8])
{
    uint64_t w = 0;
    for (int i = 7; i >= 0; i--) w = w << 8 | src[i];
    return w;
}

#endif
