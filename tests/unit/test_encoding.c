/* The upload width: pack / unpack-add at every width against a bit-by-bit
 * reference, in place and at odd offsets, the sum commuting with the
 * reduction mod 2^w, sign extension at the edges, the width rule. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "aggregation/encoding.h"
#include "common/rng.h"

static uint32_t low(uint32_t v, unsigned w) { return w == 32 ? v : v & ((1u << w) - 1); }

/* The layout written out bit by bit: element i's bit b at stream bit i*w + b. */
static void ref_pack(const uint32_t *x, size_t n, unsigned w, uint8_t *out)
{
    memset(out, 0, enc_packed_len(n, w));
    for (size_t i = 0; i < n; i++)
        for (unsigned b = 0; b < w; b++)
            if (x[i] >> b & 1) out[(i * w + b) / 8] |= (uint8_t)(1u << ((i * w + b) % 8));
}

static void test_packed_len(void **state)
{
    (void)state;
    assert_int_equal(enc_packed_len(0, 20), 0);
    assert_int_equal(enc_packed_len(1, 20), 3);
    assert_int_equal(enc_packed_len(8, 20), 20);
    assert_int_equal(enc_packed_len(9, 9), 11);  /* 81 bits */
    assert_int_equal(enc_packed_len(7, 32), 28);
    /* the elements, then n_k and n_k * loss as whole words */
    assert_int_equal(enc_masked_len(1659266, 32, ENC_TAIL_WORDS), (1659266 + 2) * 4);
    assert_int_equal(enc_masked_len(1659266, 20, ENC_TAIL_WORDS), 4148165 + 8);
    assert_int_equal(enc_masked_len(1659266, 20, ENC_TAIL_V2), 4148165 + 4); /* protocol 2 */
    /* no overflow of n * w for any n a size_t holds */
    assert_int_equal(enc_packed_len(SIZE_MAX / 32 * 8, 32), SIZE_MAX / 32 * 32);
}

/* Every width, every tail length 0..17 past whole groups, at byte offsets 0..3
 * of the output (a frame's bin is never aligned): pack equals the bit-by-bit
 * layout, writes nothing past its length, and unpack-add gets x back. */
static void test_round_trip_every_width(void **state)
{
    (void)state;
    enum { MAXN = 64 + 17 };
    rng_t r;
    rng_seed(&r, 15);
    uint32_t x[MAXN], acc[MAXN];
    uint8_t got[MAXN * 4 + 16], want[MAXN * 4 + 16];
    for (unsigned w = ENC_BITS_MIN; w <= ENC_BITS_MAX; w++)
        for (size_t n = 0; n < MAXN; n += n < 24 ? 1 : 13)
            for (unsigned off = 0; off < 4; off++) {
                for (size_t i = 0; i < n; i++) x[i] = (uint32_t)rng_next(&r);
                const size_t len = enc_packed_len(n, w);
                memset(got, 0xA5, sizeof got);
                enc_pack(x, n, w, got + off);
                ref_pack(x, n, w, want);
                if (len) assert_memory_equal(got + off, want, len);
                for (size_t b = 0; b < off; b++) assert_int_equal(got[b], 0xA5);
                for (size_t b = off + len; b < sizeof got; b++) assert_int_equal(got[b], 0xA5);
                for (size_t i = 0; i < n; i++) acc[i] = (uint32_t)i;
                enc_unpack_add(got + off, n, w, acc);
                for (size_t i = 0; i < n; i++) assert_int_equal(acc[i], (uint32_t)i + low(x[i], w));
            }
}

/* A site packs its masked input in its own buffer: the same bytes as a
 * separate output, and the weight and loss words whole after the elements. */
static void test_pack_in_place(void **state)
{
    (void)state;
    enum { N = 1001 };
    rng_t r;
    rng_seed(&r, 16);
    uint32_t *y = malloc((N + 2) * 4), *x = malloc((N + 2) * 4), *acc = calloc(N + 2, 4);
    uint8_t *sep = malloc(N * 4);
    assert_non_null(y);
    assert_non_null(x);
    assert_non_null(acc);
    assert_non_null(sep);
    for (unsigned w = ENC_BITS_MIN; w <= ENC_BITS_MAX; w++) {
        for (size_t i = 0; i < N; i++) x[i] = (uint32_t)rng_next(&r);
        x[N] = 0x80000001u; /* a weight above any narrow width */
        x[N + 1] = 0xFEDCBA98u; /* the weighted loss word */
        memcpy(y, x, (N + 2) * 4);
        enc_pack(x, N, w, sep);
        assert_int_equal(enc_pack_masked(y, N, w, ENC_TAIL_WORDS), enc_masked_len(N, w, ENC_TAIL_WORDS));
        assert_memory_equal(y, sep, enc_packed_len(N, w));
        memset(acc, 0, (N + 2) * 4);
        enc_unpack_add_masked((const uint8_t *)y, N, w, ENC_TAIL_WORDS, acc);
        for (size_t i = 0; i < N; i++) assert_int_equal(acc[i], low(x[i], w));
        assert_int_equal(acc[N], 0x80000001u);
        assert_int_equal(acc[N + 1], 0xFEDCBA98u);
        /* protocol 2's layout: n_k alone after the elements; the next word untouched */
        memcpy(y, x, (N + 2) * 4);
        assert_int_equal(enc_pack_masked(y, N, w, ENC_TAIL_V2), enc_masked_len(N, w, ENC_TAIL_V2));
        memset(acc, 0, (N + 2) * 4);
        enc_unpack_add_masked((const uint8_t *)y, N, w, ENC_TAIL_V2, acc);
        for (size_t i = 0; i < N; i++) assert_int_equal(acc[i], low(x[i], w));
        assert_int_equal(acc[N], 0x80000001u);
        assert_int_equal(acc[N + 1], 0);
    }
    free(y);
    free(x);
    free(acc);
    free(sep);
}

/* What makes the narrow width sound: the coordinator adds the packed (reduced)
 * words mod 2^32 and removes the masks mod 2^32; reduced at the end, that is
 * the sum of the unreduced words mod 2^w. */
static void test_sum_commutes_with_reduction(void **state)
{
    (void)state;
    enum { N = 77, SITES = 9 };
    rng_t r;
    rng_seed(&r, 17);
    for (unsigned w = ENC_BITS_MIN; w <= ENC_BITS_MAX; w++) {
        uint32_t acc[N] = {0}, plain[N] = {0}, y[N];
        uint8_t packed[N * 4];
        for (int k = 0; k < SITES; k++) {
            for (size_t i = 0; i < N; i++) y[i] = (uint32_t)rng_next(&r);
            for (size_t i = 0; i < N; i++) plain[i] += y[i];
            enc_pack(y, N, w, packed);
            enc_unpack_add(packed, N, w, acc);
        }
        for (size_t i = 0; i < N; i++) assert_int_equal(low(acc[i], w), low(plain[i], w));
    }
}

static void test_signed_edges(void **state)
{
    (void)state;
    for (unsigned w = ENC_BITS_MIN; w <= ENC_BITS_MAX; w++) {
        const int64_t top = ((int64_t)1 << (w - 1)) - 1;
        assert_int_equal(enc_signed(0, w), 0);
        assert_int_equal(enc_signed((uint32_t)top, w), top);
        assert_int_equal(enc_signed((uint32_t)(top + 1), w), -top - 1);
        assert_int_equal(enc_signed(UINT32_MAX, w), -1);      /* -1 at every width */
        assert_int_equal(enc_signed((uint32_t)-5, w), -5);    /* high bits ignored */
        assert_int_equal(enc_signed((uint32_t)(top + 1) * 2 + 3, w), 3); /* 2^w + 3 */
    }
    assert_int_equal(enc_signed(0x7FFFFFFFu, 32), INT32_MAX);
    assert_int_equal(enc_signed(0x80000000u, 32), INT32_MIN);
    assert_int_equal(enc_signed(0x80u, 8), -128);
    assert_int_equal(enc_signed(0x17Fu, 8), 127);
}

static void test_width_rule(void **state)
{
    (void)state;
    assert_int_equal(enc_width(27, 10), 32); /* 27 + 4 + 1 */
    assert_int_equal(enc_width(15, 10), 20);
    assert_int_equal(enc_width(15, 16), 20);
    assert_int_equal(enc_width(15, 17), 21);
    assert_int_equal(enc_width(15, 1), 16);
    assert_int_equal(enc_width(3, 10), 8);
    assert_int_equal(enc_width(1, 2), ENC_BITS_MIN);  /* raised to the least width */
    assert_int_equal(enc_width(32, 1024), ENC_BITS_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_len),
        cmocka_unit_test(test_round_trip_every_width),
        cmocka_unit_test(test_pack_in_place),
        cmocka_unit_test(test_sum_commutes_with_reduction),
        cmocka_unit_test(test_signed_edges),
        cmocka_unit_test(test_width_rule),
    };
    return cmocka_run_group_tests_name("encoding", tests, NULL, NULL);
}
