#include "aggregation/encoding.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Eight elements of w bits are exactly w bytes: the kernels below work on
 * such groups, so every group starts on a byte, and each width gets its own
 * copy of them (w a constant: shifts and masks fold, w = 8, 16, 24, 32
 * become byte moves). The last, partial group goes through the same
 * streaming code one element at a time. */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline void put32le(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint64_t get64le(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
#else
static inline void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t get64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
#endif

size_t enc_packed_len(size_t n, unsigned w)
{
    assert(w >= ENC_BITS_MIN && w <= ENC_BITS_MAX);
    /* n / 8 groups of w bytes, then the rest: no overflow of n * w. */
    return n / 8 * w + (n % 8 * w + 7) / 8;
}

size_t enc_masked_len(size_t numel, unsigned w, unsigned tail)
{
    return enc_packed_len(numel, w) + tail * ENC_WEIGHT_BYTES;
}

unsigned enc_width(unsigned upload_bits, unsigned cohort)
{
    unsigned lg = 0;
    while (lg < 32 && ((uint64_t)1 << lg) < cohort) lg++;
    uint64_t w = (uint64_t)upload_bits + lg + 1;
    return w < ENC_BITS_MIN ? ENC_BITS_MIN : w > ENC_BITS_MAX ? ENC_BITS_MAX : (unsigned)w;
}

/* Appends the low w bits of each of x[0..k) to the bit stream at o, 32 bits
 * at a time, then the whole bytes left. In place (o at or below x's bytes)
 * is safe: after element j at most ceil((j + 1) * w / 8) <= 4 * (j + 1)
 * bytes are written, all below element j + 1. */
static inline __attribute__((always_inline)) void pack_run(const uint32_t *x, unsigned k,
                                                           const unsigned w, uint8_t *o)
{
    const uint64_t mask = ((uint64_t)1 << w) - 1;
    uint64_t buf = 0;
    unsigned nb = 0;
#pragma GCC unroll 8
    for (unsigned j = 0; j < k; j++) {
        buf |= ((uint64_t)x[j] & mask) << nb;
        nb += w;
        if (nb >= 32) {
            put32le(o, (uint32_t)buf);
            o += 4;
            buf >>= 32;
            nb -= 32;
        }
    }
    for (; nb > 0; nb = nb > 8 ? nb - 8 : 0) {
        *o++ = (uint8_t)buf;
        buf >>= 8;
    }
}

/* One group: element j starts at bit j * w of the group's w bytes; one
 * unaligned 64-bit load holds all of it (shift <= 7, w <= 32). Reads up to
 * 8 bytes past the group's start + floor(7w / 8): the caller keeps that
 * inside the buffer. */
static inline __attribute__((always_inline)) void unpack_group(const uint8_t *in, const unsigned w,
                                                               uint32_t *acc)
{
    const uint64_t mask = ((uint64_t)1 << w) - 1;
#pragma GCC unroll 8
    for (unsigned j = 0; j < 8; j++) {
        const unsigned bit = j * w;
        acc[j] += (uint32_t)((get64le(in + bit / 8) >> (bit % 8)) & mask);
    }
}

/* Element i of a packed stream of len bytes, one byte at a time (tails only). */
static uint32_t get_one(const uint8_t *in, size_t len, size_t i, unsigned w)
{
    const size_t bit = i / 8 * w * 8 + i % 8 * w; /* no overflow of i * w */
    uint64_t v = 0;
    for (size_t b = bit / 8, k = 0; k < 5 && b < len; b++, k++) v |= (uint64_t)in[b] << (8 * k);
    return (uint32_t)((v >> (bit % 8)) & (((uint64_t)1 << w) - 1));
}

#define ENC_WIDTHS(X)                                                                          \
    X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22)  \
    X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32)

void enc_pack(const uint32_t *x, size_t n, unsigned w, uint8_t *out)
{
    if (w < ENC_BITS_MIN || w > ENC_BITS_MAX) abort();
    const size_t groups = n / 8;
    switch (w) {
#define PACK_CASE(W)                                                                           \
    case W:                                                                                    \
        for (size_t g = 0; g < groups; g++) pack_run(x + 8 * g, 8, W, out + (size_t)W * g);  \
        break;
        ENC_WIDTHS(PACK_CASE)
#undef PACK_CASE
    }
    if (n % 8) pack_run(x + 8 * groups, (unsigned)(n % 8), w, out + w * groups);
}

void enc_unpack_add(const uint8_t *in, size_t n, unsigned w, uint32_t *acc)
{
    if (w < ENC_BITS_MIN || w > ENC_BITS_MAX) abort();
    const size_t len = enc_packed_len(n, w);
    /* Groups whose 64-bit loads stay inside the buffer: start + w + 8 <= len. */
    size_t fast = n / 8;
    while (fast > 0 && (fast - 1) * w + w + 8 > len) fast--;
    switch (w) {
#define UNPACK_CASE(W)                                                                         \
    case W:                                                                                    \
        for (size_t g = 0; g < fast; g++) unpack_group(in + (size_t)W * g, W, acc + 8 * g);   \
        break;
        ENC_WIDTHS(UNPACK_CASE)
#undef UNPACK_CASE
    }
    for (size_t i = 8 * fast; i < n; i++) acc[i] += get_one(in, len, i, w);
}

size_t enc_pack_masked(uint32_t *y, size_t numel, unsigned w, unsigned tail)
{
    assert(tail >= 1 && tail <= ENC_TAIL_WORDS);
    uint32_t words[ENC_TAIL_WORDS];
    memcpy(words, y + numel, tail * sizeof *words);
    const size_t len = enc_packed_len(numel, w);
    enc_pack(y, numel, w, (uint8_t *)y);
    for (size_t k = 0; k < tail; k++) put32le((uint8_t *)y + len + 4 * k, words[k]);
    return len + tail * ENC_WEIGHT_BYTES;
}

void enc_unpack_add_masked(const uint8_t *in, size_t numel, unsigned w, unsigned tail,
                           uint32_t *acc)
{
    assert(tail >= 1 && tail <= ENC_TAIL_WORDS);
    enc_unpack_add(in, numel, w, acc);
    enc_unpack_add(in + enc_packed_len(numel, w), tail, 32, acc + numel);
}
