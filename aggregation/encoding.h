/*
 * encoding.h - the width of a masked upload: how many bits of each element
 * travel, and how they are packed. Arithmetic only, no I/O.
 *
 * Every masked word is computed and summed as a uint32 (mod 2^32): the
 * fixed-point encoding, the PRG masks, the coordinator's accumulator. Only
 * the low w bits of each model element go on the wire. Because 2^w divides
 * 2^32, reduction mod 2^w commutes with every sum: masks that cancel mod
 * 2^32 cancel mod 2^w, so packing is the last step on a site and the
 * decoder's first (enc_signed) at the coordinator, and nothing in between
 * needs to know w.
 *
 * A masked vector on the wire (MASKED.vec, enc_masked_len bytes):
 *   numel elements, w bits each, packed little-endian (element i occupies
 *   bits i*w .. i*w + w - 1 of the byte string, bit 0 = the LSB of byte 0),
 *   zero bits only to fill the last byte; then the ENC_TAIL_WORDS full
 *   32-bit LE words: the weight n_k (a narrow width must never cap the total
 *   weight) and the weighted training loss n_k * loss_k in fixed point
 *   (secagg_encode_loss), so the coordinator learns only the weighted mean
 *   loss, as it learns only the weighted mean update.
 */
#ifndef MEDFED_ENCODING_H
#define MEDFED_ENCODING_H

#include <stddef.h>
#include <stdint.h>

#define ENC_BITS_MIN 8
#define ENC_BITS_MAX 32
#define ENC_WEIGHT_BYTES 4
#define ENC_TAIL_WORDS 2        /* at most, after the elements: n_k, then n_k * loss_k */
/* The tail of a round: both words when the plan carries a loss scale (every
 * site of the cohort speaks protocol 3), else n_k alone (protocol 2's layout). */
#define ENC_TAIL_V2 1

/* ceil(n * w / 8): n elements at w bits. */
size_t enc_packed_len(size_t n, unsigned w);
/* The bytes of a masked vector of numel elements at width w, its `tail` words included. */
size_t enc_masked_len(size_t numel, unsigned w, unsigned tail);

/* The width for a cohort of `cohort` sites whose values each need
 * upload_bits: upload_bits + ceil(log2(cohort)) + 1 (the sum of the cohort,
 * plus one bit of slack for stochastic rounding), within [ENC_BITS_MIN,
 * ENC_BITS_MAX]. */
unsigned enc_width(unsigned upload_bits, unsigned cohort);

/* Writes the low w bits of x[0..n) to out (enc_packed_len(n, w) bytes).
 * out may be (uint8_t *)x: packing in place never overwrites a word before
 * it is read. ENC_BITS_MIN <= w <= ENC_BITS_MAX (else abort). */
void enc_pack(const uint32_t *x, size_t n, unsigned w, uint8_t *out);
/* acc[i] += (element i of in) mod 2^32, for n elements of w bits packed as
 * enc_pack writes them (no alignment needed). The coordinator's hot path:
 * no temporary. */
void enc_unpack_add(const uint8_t *in, size_t n, unsigned w, uint32_t *acc);

/* A masked vector in place: y[0..numel) packed at w bits, then the `tail`
 * (1 or ENC_TAIL_WORDS) words y[numel..] as LE words. Returns
 * enc_masked_len(numel, w, tail), the bytes now at y. */
size_t enc_pack_masked(uint32_t *y, size_t numel, unsigned w, unsigned tail);
/* acc[0..numel + tail) += a masked vector of enc_masked_len(numel, w, tail) bytes. */
void enc_unpack_add_masked(const uint8_t *in, size_t numel, unsigned w, unsigned tail,
                           uint32_t *acc);

/* v mod 2^w read as a w-bit two's complement number. */
static inline int64_t enc_signed(uint32_t v, unsigned w)
{
    const int64_t sign = (int64_t)1 << (w - 1);
    const uint64_t mask = ((uint64_t)1 << w) - 1;
    return (int64_t)((v & mask) ^ (uint64_t)sign) - sign;
}

#endif
