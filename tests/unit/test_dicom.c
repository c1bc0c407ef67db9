/*
 * test_dicom.c - imaging/dicom_prep (windowing, MONOCHROME1, rescale, resize),
 * the DICOM worker over its pipe (good, truncated, garbage, burned-in, PNG, a
 * worker that aborts, hangs or is killed between images) and the folder data
 * source. The worker binary comes from $MEDFED_DICOM_WORKER (the Makefile sets
 * it); DICOM files are written here by a minimal explicit-VR writer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "imaging/imaging.h"
#include "imaging/dicom.h"
#include "imaging/dicom_prep.h"

/* ---- preprocessing ---------------------------------------------------------------- */

static dicom_raw_t raw8(const uint8_t *px, int rows, int cols)
{
    return (dicom_raw_t){.rows = rows, .cols = cols, .bits_allocated = 8, .bits_stored = 8,
                         .slope = 1.0, .intercept = 0.0, .data = px,
                         .len = (size_t)rows * (size_t)cols};
}

static const dicom_prep_t full_range = {.height = 16, .width = 16, .window = DICOM_WINDOW_FIXED,
                                        .center = 128, .width_w = 256};

/* With the window 128/256 and no resize, 8-bit pixels give the IDX floats bit for bit. */
static void test_prep_matches_idx_exactly(void **state)
{
    (void)state;
    uint8_t px[256];
    float want[256], got[256], inv[256];
    for (int i = 0; i < 256; i++) px[i] = (uint8_t)i;
    dataset_normalise_u8(px, 256, want);
    dicom_raw_t r = raw8(px, 16, 16);
    assert_int_equal(dicom_prep_run(&r, &full_range, got, NULL, 0), 0);
    assert_memory_equal(got, want, sizeof want);
    /* the file's own window (AUTO) gives the same */
    r.has_window = 1, r.center = 128, r.width = 256;
    dicom_prep_t autow = full_range;
    autow.window = DICOM_WINDOW_AUTO;
    assert_int_equal(dicom_prep_run(&r, &autow, got, NULL, 0), 0);
    assert_memory_equal(got, want, sizeof want);
    /* MONOCHROME1 of the inverted pixels: the same values again, exactly */
    uint8_t ipx[256];
    for (int i = 0; i < 256; i++) ipx[i] = (uint8_t)(255 - i);
    dicom_raw_t m1 = raw8(ipx, 16, 16);
    m1.monochrome1 = 1;
    assert_int_equal(dicom_prep_run(&m1, &full_range, inv, NULL, 0), 0);
    assert_memory_equal(inv, want, sizeof want);
}

static void test_prep_rescale_signed_16(void **state)
{
    (void)state;
    /* 12 bits stored, signed, with junk in the 4 unused bits: 0xF800 | 0x7FF = 2047,
     * 0xA800 (-2048), 0x0FFF (-1), 0x0000 (0); slope 2, intercept 100 */
    uint16_t px[4] = {0xF7FF, 0xA800, 0x0FFF, 0x0000};
    dicom_raw_t r = {.rows = 2, .cols = 2, .bits_allocated = 16, .bits_stored = 12,
                     .is_signed = 1, .slope = 2.0, .intercept = 100.0, .data = px,
                     .len = sizeof px};
    /* modality values 4194, -3996, 98, 100; window lo = 0, hi = 4194 */
    dicom_prep_t p = {.height = 2, .width = 2, .window = DICOM_WINDOW_FIXED,
                      .center = 2097.5, .width_w = 4195};
    float out[4];
    assert_int_equal(dicom_prep_run(&r, &p, out, NULL, 0), 0);
    assert_float_equal(out[0], 1.0f, 1e-6);
    assert_float_equal(out[1], -1.0f, 1e-6); /* clipped below the window */
    assert_float_equal(out[2], (98.0f / 4194.0f - 0.5f) / 0.5f, 1e-6);
    assert_float_equal(out[3], (100.0f / 4194.0f - 0.5f) / 0.5f, 1e-6);
}

static void test_prep_minmax_and_auto(void **state)
{
    (void)state;
    uint8_t px[4] = {10, 15, 20, 12};
    dicom_raw_t r = raw8(px, 2, 2);
    dicom_prep_t p = {.height = 2, .width = 2, .window = DICOM_WINDOW_MINMAX};
    float out[4];
    assert_int_equal(dicom_prep_run(&r, &p, out, NULL, 0), 0);
    assert_float_equal(out[0], -1.0f, 1e-6);
    assert_float_equal(out[1], 0.0f, 1e-6);
    assert_float_equal(out[2], 1.0f, 1e-6);
    /* AUTO without a window in the file is min-max; MINMAX ignores the file's window */
    p.window = DICOM_WINDOW_AUTO;
    float out2[4];
    assert_int_equal(dicom_prep_run(&r, &p, out2, NULL, 0), 0);
    assert_memory_equal(out, out2, sizeof out);
    r.has_window = 1, r.center = 0.5, r.width = 1; /* a step at 0: everything bright */
    assert_int_equal(dicom_prep_run(&r, &p, out2, NULL, 0), 0);
    for (int i = 0; i < 4; i++) assert_float_equal(out2[i], 1.0f, 0);
    p.window = DICOM_WINDOW_MINMAX;
    assert_int_equal(dicom_prep_run(&r, &p, out2, NULL, 0), 0);
    assert_memory_equal(out, out2, sizeof out);
    /* a uniform image: all dark, no division by zero */
    uint8_t flat[4] = {7, 7, 7, 7};
    dicom_raw_t f = raw8(flat, 2, 2);
    assert_int_equal(dicom_prep_run(&f, &p, out, NULL, 0), 0);
    for (int i = 0; i < 4; i++) assert_float_equal(out[i], -1.0f, 0);
}

/* v in [0,1] of an output float */
static double unnorm(float x) { return x * 0.5 + 0.5; }

static void test_prep_resize(void **state)
{
    (void)state;
    /* 4x4 -> 2x2: means of 2x2 blocks */
    uint8_t px[16];
    for (int i = 0; i < 16; i++) px[i] = (uint8_t)(i * 17); /* 0..255 */
    dicom_raw_t r = raw8(px, 4, 4);
    dicom_prep_t p = {.height = 2, .width = 2, .window = DICOM_WINDOW_FIXED, .center = 128,
                      .width_w = 256};
    float out[16];
    assert_int_equal(dicom_prep_run(&r, &p, out, NULL, 0), 0);
    static const int blocks[4][4] = {{0, 1, 4, 5}, {2, 3, 6, 7}, {8, 9, 12, 13}, {10, 11, 14, 15}};
    for (int b = 0; b < 4; b++) {
        double m = 0;
        for (int k = 0; k < 4; k++) m += px[blocks[b][k]] / 255.0 / 4;
        assert_float_equal(unnorm(out[b]), m, 1e-6);
    }
    /* 1x3 -> 1x2: area weights 2/3, 1/3 and 1/3, 2/3 */
    uint8_t row[3] = {0, 255, 51};
    dicom_raw_t r3 = raw8(row, 1, 3);
    p.height = 1;
    assert_int_equal(dicom_prep_run(&r3, &p, out, NULL, 0), 0);
    assert_float_equal(unnorm(out[0]), (0 * 2 + 1.0) / 3, 1e-6);
    assert_float_equal(unnorm(out[1]), (1.0 + 0.2 * 2) / 3, 1e-6);
    /* 1x2 -> 1x4: bilinear between centres, clamped at the edges */
    uint8_t two[2] = {0, 255};
    dicom_raw_t r2 = raw8(two, 1, 2);
    p.width = 4;
    assert_int_equal(dicom_prep_run(&r2, &p, out, NULL, 0), 0);
    assert_float_equal(unnorm(out[0]), 0.0, 1e-6);
    assert_float_equal(unnorm(out[1]), 0.25, 1e-6);
    assert_float_equal(unnorm(out[2]), 0.75, 1e-6);
    assert_float_equal(unnorm(out[3]), 1.0, 1e-6);
    /* enlarge one axis, shrink the other: 2 rows x 4 cols -> 4 x 2 */
    uint8_t m[8] = {0, 0, 255, 255, 255, 255, 0, 0};
    dicom_raw_t rm = raw8(m, 2, 4);
    p.height = 4, p.width = 2;
    assert_int_equal(dicom_prep_run(&rm, &p, out, NULL, 0), 0);
    assert_float_equal(unnorm(out[0]), 0.0, 1e-6);
    assert_float_equal(unnorm(out[1]), 1.0, 1e-6);
    assert_float_equal(unnorm(out[2]), 0.25, 1e-6);
    assert_float_equal(unnorm(out[6]), 1.0, 1e-6);
    assert_float_equal(unnorm(out[7]), 0.0, 1e-6);
}

static void test_prep_rejects(void **state)
{
    (void)state;
    uint8_t px[4] = {0};
    float out[4];
    char why[128];
    dicom_prep_t p = {.height = 2, .width = 2};
    dicom_raw_t r = raw8(px, 2, 2);
    r.len = 3;
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
    r = raw8(px, 2, 2), r.bits_allocated = 32;
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
    r = raw8(px, 0, 2);
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
    r = raw8(px, 65535, 65535);
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
    r = raw8(px, 2, 2), r.slope = NAN;
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
    r = raw8(px, 2, 2);
    p.width = 0;
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
    p = (dicom_prep_t){.height = 2, .width = 2, .window = DICOM_WINDOW_FIXED, .width_w = 0.5};
    assert_int_equal(dicom_prep_run(&r, &p, out, why, sizeof why), -1);
}

static void test_image_ref(void **state)
{
    (void)state;
    uint8_t s1[16] = {1}, s2[16] = {2};
    char a[17], b[17], c[17];
    dicom_image_ref(s1, "ACC0000001", a);
    dicom_image_ref(s1, "ACC0000001", b);
    dicom_image_ref(s2, "ACC0000001", c);
    assert_int_equal(strlen(a), 16);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_equal(dicom_status_name(DICOM_SKIP_BURNED_IN), "burned_in_annotation");
    assert_string_equal(dicom_status_name(DICOM_SKIP_CRASH), "worker_crashed");
}

/* ---- a minimal DICOM writer (explicit VR little endian) ------------------------------ */

typedef struct {
    uint8_t b[8192];
    size_t n;
} buf_t;

static void put16(buf_t *b, uint16_t v) { b->b[b->n++] = (uint8_t)v, b->b[b->n++] = (uint8_t)(v >> 8); }
static void put32(buf_t *b, uint32_t v) { put16(b, (uint16_t)v), put16(b, (uint16_t)(v >> 16)); }

static void el(buf_t *b, uint16_t g, uint16_t e, const char *vr, const void *v, uint32_t len)
{
    uint32_t padded = len + (len & 1);
    put16(b, g), put16(b, e);
    b->b[b->n++] = (uint8_t)vr[0], b->b[b->n++] = (uint8_t)vr[1];
    if (!strcmp(vr, "OB") || !strcmp(vr, "OW")) put16(b, 0), put32(b, padded);
    else put16(b, (uint16_t)padded);
    memcpy(b->b + b->n, v, len);
    b->n += len;
    if (len & 1) b->b[b->n++] = (uint8_t)(!strcmp(vr, "UI") || !strcmp(vr, "OB") ? 0 : ' ');
}

static void el_str(buf_t *b, uint16_t g, uint16_t e, const char *vr, const char *s)
{
    el(b, g, e, vr, s, (uint32_t)strlen(s));
}

static void el_us(buf_t *b, uint16_t g, uint16_t e, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    el(b, g, e, "US", x, 2);
}

typedef struct {
    const char *photometric;
    int burned, samples, bits;
    const char *window; /* "C\\W" or NULL */
} dcm_opts_t;

#define TEST_ACCESSION "ACCCANARY01"
#define TEST_NAME "CANARY^PATIENT"

/* A 4x4 CR image with pixels px (16 values; 8- or 16-bit per opts). */
static void make_dicom(buf_t *b, const uint16_t *px, const dcm_opts_t *o)
{
    memset(b, 0, sizeof *b);
    b->n = 128;
    memcpy(b->b + b->n, "DICM", 4);
    b->n += 4;
    buf_t meta = {.n = 0};
    uint8_t ver[2] = {0, 1};
    el(&meta, 0x0002, 0x0001, "OB", ver, 2);
    el_str(&meta, 0x0002, 0x0002, "UI", "1.2.840.10008.5.1.4.1.1.1");
    el_str(&meta, 0x0002, 0x0003, "UI", "1.2.3.4.5.6.7");
    el_str(&meta, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1");
    uint8_t gl[4] = {(uint8_t)meta.n, (uint8_t)(meta.n >> 8), 0, 0};
    el(b, 0x0002, 0x0000, "UL", gl, 4);
    memcpy(b->b + b->n, meta.b, meta.n);
    b->n += meta.n;
    el_str(b, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.1");
    el_str(b, 0x0008, 0x0018, "UI", "1.2.3.4.5.6.7");
    el_str(b, 0x0008, 0x0050, "SH", TEST_ACCESSION);
    el_str(b, 0x0008, 0x0060, "CS", "CR");
    el_str(b, 0x0010, 0x0010, "PN", TEST_NAME);
    el_us(b, 0x0028, 0x0002, (uint16_t)o->samples);
    el_str(b, 0x0028, 0x0004, "CS", o->photometric);
    el_us(b, 0x0028, 0x0010, 4);
    el_us(b, 0x0028, 0x0011, 4);
    el_us(b, 0x0028, 0x0100, (uint16_t)o->bits);
    el_us(b, 0x0028, 0x0101, (uint16_t)o->bits);
    el_us(b, 0x0028, 0x0102, (uint16_t)(o->bits - 1));
    el_us(b, 0x0028, 0x0103, 0);
    if (o->burned) el_str(b, 0x0028, 0x0301, "CS", "YES");
    if (o->window) {
        char c[32], *w;
        snprintf(c, sizeof c, "%s", o->window);
        w = strchr(c, '\\');
        *w++ = 0;
        el_str(b, 0x0028, 0x1050, "DS", c);
        el_str(b, 0x0028, 0x1051, "DS", w);
    }
    uint8_t pix[16 * 3 * 2];
    size_t len = 0;
    for (int i = 0; i < 16 * o->samples; i++) {
        uint16_t v = px[i % 16];
        if (o->bits == 8) pix[len++] = (uint8_t)v;
        else pix[len++] = (uint8_t)v, pix[len++] = (uint8_t)(v >> 8);
    }
    el(b, 0x7fe0, 0x0010, o->bits == 8 ? "OB" : "OW", pix, (uint32_t)len);
}

static const uint16_t px16[16] = {0, 17, 34, 51, 68, 85, 102, 119,
                                  136, 153, 170, 187, 204, 221, 238, 255};
static const dcm_opts_t plain = {"MONOCHROME2", 0, 1, 8, "128\\256"};
static const dicom_prep_t prep44 = {.height = 4, .width = 4, .window = DICOM_WINDOW_AUTO};

static void expect_plain(const float *got)
{
    uint8_t p8[16];
    float want[16];
    for (int i = 0; i < 16; i++) p8[i] = (uint8_t)px16[i];
    dataset_normalise_u8(p8, 16, want);
    assert_memory_equal(got, want, sizeof want);
}

/* ---- the worker ----------------------------------------------------------------------- */

static int worker_setup(void **state)
{
    if (!getenv("MEDFED_DICOM_WORKER")) {
        fprintf(stderr, "test_dicom: set MEDFED_DICOM_WORKER (make unit-test does)\n");
        return -1;
    }
    setenv("MEDFED_DICOM_WORKER_TEST", "1", 1);
    char err[256] = "";
    dicom_worker_t *w = dicom_worker_start(err, sizeof err);
    if (!w) {
        fprintf(stderr, "test_dicom: %s\n", err);
        return -1;
    }
    *state = w;
    return 0;
}

static int worker_teardown(void **state)
{
    dicom_worker_t *w = *state;
    dicom_worker_stop(&w);
    assert_null(w);
    return 0;
}

static dicom_status_t decode(dicom_worker_t *w, const buf_t *b, dicom_image_t *img, char *why)
{
    return dicom_worker_decode_mem(w, b->b, b->n, &prep44, img, why, 256);
}

static void test_worker_decodes(void **state)
{
    dicom_worker_t *w = *state;
    buf_t b;
    dicom_image_t img;
    char why[256];
    make_dicom(&b, px16, &plain);
    assert_int_equal(decode(w, &b, &img, why), DICOM_OK);
    assert_string_equal(img.accession, TEST_ACCESSION);
    assert_string_equal(img.sop_uid, "1.2.3.4.5.6.7");
    expect_plain(img.pixels);
    free(img.pixels);
    /* MONOCHROME1 of inverted pixels, 16-bit: the same floats */
    uint16_t inv[16];
    for (int i = 0; i < 16; i++) inv[i] = (uint16_t)(255 - px16[i]);
    dcm_opts_t m1 = {"MONOCHROME1", 0, 1, 16, "128\\256"};
    make_dicom(&b, inv, &m1);
    assert_int_equal(decode(w, &b, &img, why), DICOM_OK);
    expect_plain(img.pixels);
    free(img.pixels);
}

static void test_worker_skips(void **state)
{
    dicom_worker_t *w = *state;
    int pid = dicom_worker_pid(w);
    buf_t b;
    dicom_image_t img;
    char why[256];
    /* truncated inside the pixel data */
    make_dicom(&b, px16, &plain);
    b.n -= 6;
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_MALFORMED);
    assert_null(img.pixels);
    assert_string_equal(img.accession, TEST_ACCESSION); /* the header was readable */
    /* not DICOM */
    for (size_t i = 0; i < 1000; i++) b.b[i] = (uint8_t)(i * 7919u >> 3);
    b.n = 1000;
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_MALFORMED);
    assert_int_equal(dicom_worker_decode_mem(w, b.b, 0, &prep44, &img, why, sizeof why),
                     DICOM_SKIP_MALFORMED);
    /* burned-in annotation, colour */
    dcm_opts_t o = plain;
    o.burned = 1;
    make_dicom(&b, px16, &o);
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_BURNED_IN);
    o = plain, o.samples = 3, o.photometric = "RGB";
    make_dicom(&b, px16, &o);
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_UNSUPPORTED);
    assert_null(strstr(why, TEST_ACCESSION));
    assert_null(strstr(why, "CANARY"));
    /* a file that is not there */
    assert_int_equal(dicom_worker_decode_file(w, "/nonexistent/x.dcm", &prep44, &img, why,
                                              sizeof why),
                     DICOM_SKIP_MALFORMED);
    /* none of that needed a new worker */
    assert_int_equal(dicom_worker_pid(w), pid);
    assert_int_equal(dicom_worker_restarts(w), 0);
    /* a forged pixel data length (4 GB in a small file): refused, not allocated */
    make_dicom(&b, px16, &plain);
    b.b[b.n - 16 - 4] = 0xf0, b.b[b.n - 16 - 3] = b.b[b.n - 16 - 2] = b.b[b.n - 16 - 1] = 0xff;
#if defined(__SANITIZE_ADDRESS__) /* ASan's operator new dies instead of throwing */
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_CRASH);
#else
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_MALFORMED);
#endif
}

static void test_worker_crash_recovery(void **state)
{
    dicom_worker_t *w = *state;
    buf_t good, b;
    dicom_image_t img;
    char why[256];
    make_dicom(&good, px16, &plain);
    assert_int_equal(decode(w, &good, &img, why), DICOM_OK);
    free(img.pixels);
    unsigned r0 = dicom_worker_restarts(w);
    /* the worker aborts on an image (as GDCM does on some files) */
    memset(&b, 0, sizeof b);
    memcpy(b.b, "MEDFED-TEST-ABORT", 17);
    b.n = 64;
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_CRASH);
    assert_string_equal(why, "worker crashed");
    assert_int_equal(decode(w, &good, &img, why), DICOM_OK);
    expect_plain(img.pixels);
    free(img.pixels);
    assert_int_equal(dicom_worker_restarts(w), r0 + 1);
    /* killed between two images: the next image is decoded all the same */
    int pid = dicom_worker_pid(w);
    assert_true(pid > 0);
    kill(pid, SIGKILL);
    usleep(20000);
    assert_int_equal(decode(w, &good, &img, why), DICOM_OK);
    free(img.pixels);
    assert_int_not_equal(dicom_worker_pid(w), pid);
    /* hangs: killed at the timeout */
    dicom_worker_set_timeout(w, 300);
    memcpy(b.b, "MEDFED-TEST-HANG", 16);
    assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_CRASH);
    assert_string_equal(why, "worker timed out");
    dicom_worker_set_timeout(w, DICOM_WORKER_TIMEOUT_MS);
    assert_int_equal(decode(w, &good, &img, why), DICOM_OK);
    free(img.pixels);
}

/* Workers that answer nonsense: the daemon's side checks every length and
 * treats a bad reply as a crash; it never allocates what a reply claims. */
static void test_worker_bad_replies(void **state)
{
    (void)state;
    char real[4096], script[64], err[256];
    snprintf(real, sizeof real, "%s", getenv("MEDFED_DICOM_WORKER"));
    static const char *const fakes[] = {
        "exec cat\n",                                       /* echoes the request */
        "head -c 44 >/dev/null; printf 'MDR1\\000\\000\\000\\000\\377\\377\\377\\377'; exec sleep 5\n",
        /* status OK but a pixel count that is not height * width */
        "head -c 44 >/dev/null; printf 'MDR1\\000\\000\\000\\000\\000\\000\\000\\000"
        "\\000\\000\\000\\000\\000\\000\\000\\000\\377\\377\\377\\017'; exec sleep 5\n",
        "exit 3\n",                                         /* dies at once */
    };
    buf_t b;
    make_dicom(&b, px16, &plain);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
        snprintf(script, sizeof script, "/tmp/medfed-fake-worker-XXXXXX");
        int fd = mkstemp(script);
        assert_true(fd >= 0);
        FILE *f = fdopen(fd, "w");
        fprintf(f, "#!/bin/sh\n%s", fakes[i]);
        fclose(f);
        chmod(script, 0700);
        setenv("MEDFED_DICOM_WORKER", script, 1);
        dicom_worker_t *w = dicom_worker_start(err, sizeof err);
        assert_non_null(w);
        dicom_worker_set_timeout(w, 500);
        dicom_image_t img;
        char why[256];
        assert_int_equal(decode(w, &b, &img, why), DICOM_SKIP_CRASH);
        assert_null(img.pixels);
        dicom_worker_stop(&w);
        unlink(script);
    }
    setenv("MEDFED_DICOM_WORKER", real, 1);
}

/* A 4x4 grayscale PNG of px16 (depth 8, or 16 with each value times 257),
 * written by hand (zlib for IDAT, crc32). */
static size_t make_png(uint8_t *out, int depth)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(out, sig, 8);
    n = 8;
    int bpp = depth / 8, stride = 1 + 4 * bpp;
    uint8_t raw[4 * 9], z[256];
    for (int r = 0; r < 4; r++) {
        raw[r * stride] = 0; /* filter: none */
        for (int c = 0; c < 4; c++)
            for (int k = 0; k < bpp; k++) /* 16-bit: v * 257, big-endian = v, v */
                raw[r * stride + 1 + c * bpp + k] = (uint8_t)px16[r * 4 + c];
    }
    uLongf zl = sizeof z;
    assert_int_equal(compress(z, &zl, raw, (uLong)(4 * stride)), Z_OK);
    uint8_t ihdr[13] = {0, 0, 0, 4, 0, 0, 0, 4, (uint8_t)depth, 0, 0, 0, 0};
    const struct { const char *type; const uint8_t *d; size_t len; } chunks[] = {
        {"IHDR", ihdr, 13}, {"IDAT", z, zl}, {"IEND", NULL, 0}};
    for (int i = 0; i < 3; i++) {
        size_t len = chunks[i].len;
        out[n++] = (uint8_t)(len >> 24), out[n++] = (uint8_t)(len >> 16);
        out[n++] = (uint8_t)(len >> 8), out[n++] = (uint8_t)len;
        memcpy(out + n, chunks[i].type, 4);
        if (len) memcpy(out + n + 4, chunks[i].d, len);
        uLong crc = crc32(0, out + n, (uInt)(4 + len));
        n += 4 + len;
        out[n++] = (uint8_t)(crc >> 24), out[n++] = (uint8_t)(crc >> 16);
        out[n++] = (uint8_t)(crc >> 8), out[n++] = (uint8_t)crc;
    }
    return n;
}

static void test_worker_png(void **state)
{
    dicom_worker_t *w = *state;
    uint8_t png[512];
    size_t n = make_png(png, 8);
    dicom_image_t img;
    char why[256];
    assert_int_equal(dicom_worker_decode_mem(w, png, n, &prep44, &img, why, sizeof why), DICOM_OK);
    assert_string_equal(img.accession, "");
    expect_plain(img.pixels);
    free(img.pixels);
    /* 16-bit: v * 257 over 0..65535 is v over 0..255 (to float rounding) */
    size_t n16 = make_png(png, 16);
    assert_int_equal(dicom_worker_decode_mem(w, png, n16, &prep44, &img, why, sizeof why),
                     DICOM_OK);
    for (int i = 0; i < 16; i++)
        assert_float_equal(img.pixels[i], (px16[i] / 255.0f - 0.5f) / 0.5f, 1e-6);
    free(img.pixels);
    assert_int_equal(dicom_worker_decode_mem(w, png, n - 20, &prep44, &img, why, sizeof why),
                     DICOM_SKIP_MALFORMED);
}

/* ---- the folder source ----------------------------------------------------------------- */

static char tmpdir[64];

static void write_file(const char *name, const void *p, size_t len, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    fclose(f);
    chmod(path, mode);
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static datasource_t *open_folder(const char *extra_key, const char *extra_value, char *err)
{
    data_conf_t c = {0};
    char path[128], labels[128];
    snprintf(c.file, sizeof c.file, "test.ini");
    snprintf(path, sizeof path, "%s/images", tmpdir);
    snprintf(labels, sizeof labels, "%s/labels.csv", tmpdir);
    data_conf_set(&c, "source", "folder", 2, err, 256);
    data_conf_set(&c, "path", path, 3, err, 256);
    data_conf_set(&c, "labels", labels, 4, err, 256);
    data_conf_set(&c, "height", "4", 5, err, 256);
    data_conf_set(&c, "width", "4", 6, err, 256);
    if (extra_key) data_conf_set(&c, extra_key, extra_value, 7, err, 256);
    return datasource_open(&c, err, 256);
}

static void test_folder_source(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/medfed-dicom-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char sub[128];
    snprintf(sub, sizeof sub, "%s/images", tmpdir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof sub, "%s/images/PATIENT_NAME_DIR", tmpdir);
    mkdir(sub, 0700);
    buf_t b;
    make_dicom(&b, px16, &plain);
    write_file("images/a.dcm", b.b, b.n, 0644);
    write_file("images/PATIENT_NAME_DIR/noext", b.b, b.n, 0644); /* found by its preamble */
    write_file("images/notes.txt", "hello", 5, 0644);              /* not a candidate */
    /* cut inside the file meta group: GDCM 3.0.21 asserts on this one */
    write_file("images/broken.dcm", b.b, 200, 0644);
    uint8_t png[512];
    size_t pn = make_png(png, 8);
    write_file("images/x.png", png, pn, 0644);
    const char *csv = "AccessionNumber,label,split\n" TEST_ACCESSION ",1,val\n";
    write_file("labels.csv", csv, strlen(csv), 0644);

    char err[256] = "";
    datasource_t *ds = open_folder(NULL, NULL, err);
    assert_non_null(ds);
    dataset_t tr, va;
    assert_int_equal(datasource_load(ds, DATA_TRAIN, &tr, err, sizeof err), 0);
    assert_int_equal(datasource_load(ds, DATA_VAL, &va, err, sizeof err), 0);
    assert_int_equal(tr.n, 0);
    assert_int_equal(va.n, 2); /* a.dcm and noext share the accession: both labelled */
    assert_int_equal(va.height, 4);
    assert_int_equal(va.y[0], 1);
    expect_plain(va.x);
    data_stats_t st;
    datasource_stats(ds, &st);
    assert_int_equal(st.found, 4);
    assert_int_equal(st.labelled, 2);
    assert_int_equal(st.decoded, 2);
    assert_int_equal(data_stats_skipped(&st, "malformed") +
                         data_stats_skipped(&st, "worker_crashed"), 1);
    assert_int_equal(data_stats_skipped(&st, "unlabelled"), 1); /* the PNG: no accession */
    assert_int_equal(data_stats_skipped(&st, NULL), 2);
    /* the source lists every reason it knows, counted or not, in dicom_status_t order */
    assert_int_equal(st.nskipped, DICOM_STATUS_COUNT - 1);
    assert_string_equal(st.skipped[DICOM_SKIP_CRASH - 1].reason, "worker_crashed");
    char *js = NULL;
    size_t jl = 0;
    FILE *f = open_memstream(&js, &jl);
    data_stats_json(&st, f);
    fclose(f);
    assert_non_null(strstr(js, "\"found\":4,\"labelled\":2,\"decoded\":2,\"skipped\":{"));
    assert_non_null(strstr(js, "\"unlabelled\":1"));
    free(js);
    dataset_free(&tr);
    dataset_free(&va);
    datasource_destroy(&ds);

    /* the salt was created 0600; label by file name: the PNG */
    char salt[128];
    struct stat sst;
    snprintf(salt, sizeof salt, "%s/.medfed-salt", tmpdir);
    assert_int_equal(stat(salt, &sst), 0);
    assert_int_equal(sst.st_mode & 0777, 0600);
    const char *csv2 = "file,label\nx.png,3\n";
    write_file("labels.csv", csv2, strlen(csv2), 0644);
    ds = open_folder("val_fraction", "0", err);
    assert_non_null(ds);
    assert_int_equal(datasource_load(ds, DATA_TRAIN, &tr, err, sizeof err), 0);
    assert_int_equal(tr.n, 1);
    assert_int_equal(tr.y[0], 3);
    expect_plain(tr.x);
    dataset_free(&tr);
    datasource_destroy(&ds);

    /* a spreadsheet's export: UTF-8 byte order mark, ';' separators, CRLF */
    const char *csv3 = "\xef\xbb\xbf" "AccessionNumber;label;split\r\n" TEST_ACCESSION ";1;val\r\n";
    write_file("labels.csv", csv3, strlen(csv3), 0644);
    ds = open_folder(NULL, NULL, err);
    assert_non_null(ds);
    assert_int_equal(datasource_load(ds, DATA_VAL, &va, err, sizeof err), 0);
    assert_int_equal(va.n, 2);
    assert_int_equal(va.y[0], 1);
    dataset_free(&va);
    datasource_destroy(&ds);
    /* a quoted ';' in a comma-separated header does not make it ';'-separated */
    const char *csv4 = "AccessionNumber,label,\"note; free text\"\n" TEST_ACCESSION ",1,x\n";
    write_file("labels.csv", csv4, strlen(csv4), 0644);
    ds = open_folder("val_fraction", "0", err);
    assert_non_null(ds);
    assert_int_equal(datasource_load(ds, DATA_TRAIN, &tr, err, sizeof err), 0);
    assert_int_equal(tr.n, 2);
    dataset_free(&tr);
    datasource_destroy(&ds);

    /* config errors name the line, and never a key from the labels */
    assert_null(open_folder("window", "40", err));
    assert_non_null(strstr(err, "test.ini:7: 'window' must be auto, minmax or CENTER,WIDTH"));
    /* the keys are the folder's table and the shared DICOM one: nothing else */
    assert_null(open_folder("colour", "blue", err));
    assert_string_equal(err, "test.ini:7: unknown key 'colour' for data source folder");
    assert_null(open_folder("max_images", "5", err)); /* dicomweb's */
    assert_non_null(strstr(err, "test.ini:7: unknown key 'max_images'"));
    assert_null(open_folder("val_fraction", "1", err));
    assert_string_equal(err, "test.ini:7: 'val_fraction' must be a number in [0, 0.999999], "
                             "got '1'");
    assert_null(open_folder("label_key", "mrn", err));
    assert_string_equal(err, "test.ini:7: 'label_key' must be accession, sop_uid or file, "
                             "got 'mrn'");
    const char *dup = "AccessionNumber,label\n" TEST_ACCESSION ",1\n" TEST_ACCESSION ",0\n";
    write_file("labels.csv", dup, strlen(dup), 0644);
    assert_null(open_folder(NULL, NULL, err));
    assert_non_null(strstr(err, "labels.csv:3:"));
    assert_null(strstr(err, TEST_ACCESSION));
    /* a salt others can read is refused */
    write_file("labels.csv", csv, strlen(csv), 0644);
    chmod(salt, 0644);
    assert_null(open_folder(NULL, NULL, err));
    assert_non_null(strstr(err, "salt"));
    rm_tree(tmpdir);
}

int main(void)
{
    const struct CMUnitTest prep[] = {
        cmocka_unit_test(test_prep_matches_idx_exactly),
        cmocka_unit_test(test_prep_rescale_signed_16),
        cmocka_unit_test(test_prep_minmax_and_auto),
        cmocka_unit_test(test_prep_resize),
        cmocka_unit_test(test_prep_rejects),
        cmocka_unit_test(test_image_ref),
    };
    const struct CMUnitTest worker[] = {
        cmocka_unit_test(test_worker_decodes),
        cmocka_unit_test(test_worker_skips),
        cmocka_unit_test(test_worker_crash_recovery),
        cmocka_unit_test(test_worker_png),
        cmocka_unit_test(test_worker_bad_replies),
        cmocka_unit_test(test_folder_source),
    };
    int failed = cmocka_run_group_tests(prep, NULL, NULL);
    failed += cmocka_run_group_tests(worker, worker_setup, worker_teardown);
    return failed ? 1 : 0;
}
