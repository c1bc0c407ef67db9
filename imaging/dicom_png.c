/*
 * dicom_png.c - grayscale PNG for the worker (libpng from memory). 8- or 16-bit
 * gray, with or without alpha (dropped); palette and colour are unsupported.
 * AUTO windowing uses the type's full range (0..255, 0..65535), so an 8-bit
 * PNG gives the IDX source's floats exactly.
 */
#include "imaging/dicom_decode.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "imaging/dicom_prep.h"
#include "common/util.h"

int dicom_png_is_png(const uint8_t *buf, size_t len)
{
    return len >= DICOM_PNG_SIGBYTES && png_sig_cmp(buf, 0, DICOM_PNG_SIGBYTES) == 0;
}

typedef struct {
    const uint8_t *buf;
    size_t len, off;
} png_src_t;

static void png_read_mem(png_structp png, png_bytep out, png_size_t n)
{
    png_src_t *s = png_get_io_ptr(png);
    if (n > s->len - s->off) png_error(png, "truncated");
    memcpy(out, s->buf + s->off, n);
    s->off += n;
}

static void png_quiet(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_fail(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_longjmp(png, 1);
}

dicom_status_t dicom_png_decode(const uint8_t *buf, size_t len, const dicom_prep_t *prep,
                                dicom_image_t *out, char *reason, size_t reasonlen)
{
    png_src_t src = {buf, len, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, png_fail, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    /* volatile: assigned after setjmp and freed after a longjmp */
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rowp = NULL;
    dicom_status_t st = DICOM_SKIP_MALFORMED;
    util_seterr(reason, reasonlen, "not a readable PNG");
    if (!info) goto out;
    if (setjmp(png_jmpbuf(png))) goto out;
    png_set_user_limits(png, 65535, 65535);
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if ((type != PNG_COLOR_TYPE_GRAY && type != PNG_COLOR_TYPE_GRAY_ALPHA) ||
        (depth != 8 && depth != 16)) {
        st = DICOM_SKIP_UNSUPPORTED;
        util_seterr(reason, reasonlen, "PNG not 8- or 16-bit grayscale");
        goto out;
    }
    if (w < 1 || h < 1 || (uint64_t)w * h > DICOM_PREP_MAX_PIXELS) {
        st = DICOM_SKIP_UNSUPPORTED;
        util_seterr(reason, reasonlen, "image size out of range");
        goto out;
    }
    if (type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_strip_alpha(png);
    if (depth == 16) png_set_swap(png); /* PNG is big-endian; dicom_raw_t is host order */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * (size_t)(depth / 8)) goto out;
    pixels = malloc(rowbytes * h);
    rowp = malloc(h * sizeof *rowp);
    if (!pixels || !rowp) {
        st = DICOM_SKIP_UNSUPPORTED;
        util_seterr(reason, reasonlen, "out of memory");
        goto out;
    }
    for (png_uint_32 r = 0; r < h; r++) rowp[r] = pixels + r * rowbytes;
    png_read_image(png, rowp);
    dicom_raw_t raw = {
        .rows = (int)h, .cols = (int)w, .bits_allocated = depth, .bits_stored = depth,
        .slope = 1.0, .intercept = 0.0, .has_window = 1,
        /* the full range as a DICOM window: lo = 0, hi = 2^depth - 1 */
        .center = depth == 8 ? 128.0 : 32768.0, .width = depth == 8 ? 256.0 : 65536.0,
        .data = pixels, .len = rowbytes * h,
    };
    st = dicom_prep_run(&raw, prep, out->pixels, reason, reasonlen) == 0 ? DICOM_OK
                                                                         : DICOM_SKIP_UNSUPPORTED;
out:
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    free(pixels);
    free(rowp);
    return st;
}
