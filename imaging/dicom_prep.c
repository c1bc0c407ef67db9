#include "imaging/dicom_prep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

int dicom_prep_valid(const dicom_prep_t *prep)
{
    if (prep->height < 1 || prep->height > DICOM_PREP_MAX_SIDE || prep->width < 1 ||
        prep->width > DICOM_PREP_MAX_SIDE)
        return 0;
    switch (prep->window) {
    case DICOM_WINDOW_AUTO:
    case DICOM_WINDOW_MINMAX: return 1;
    case DICOM_WINDOW_FIXED: return isfinite(prep->center) && isfinite(prep->width_w) &&
                                    prep->width_w >= 1.0;
    }
    return 0;
}

int dicom_prep_check(const dicom_raw_t *raw, char *reason, size_t reasonlen)
{
    if (raw->rows < 1 || raw->cols < 1 ||
        (uint64_t)raw->rows * (uint64_t)raw->cols > DICOM_PREP_MAX_PIXELS) {
        util_seterr(reason, reasonlen, "image size out of range");
        return -1;
    }
    if (raw->bits_allocated != 8 && raw->bits_allocated != 16) {
        util_seterr(reason, reasonlen, "bits allocated not 8 or 16");
        return -1;
    }
    if (raw->bits_stored < 1 || raw->bits_stored > raw->bits_allocated) {
        util_seterr(reason, reasonlen, "bits stored out of range");
        return -1;
    }
    size_t need = (size_t)raw->rows * (size_t)raw->cols * (size_t)(raw->bits_allocated / 8);
    if (!raw->data || raw->len < need) {
        util_seterr(reason, reasonlen, "pixel data shorter than the image");
        return -1;
    }
    if (!isfinite(raw->slope) || !isfinite(raw->intercept) || raw->slope == 0.0) {
        util_seterr(reason, reasonlen, "rescale slope or intercept invalid");
        return -1;
    }
    return 0;
}

/* The stored word of pixel i (8 or 16 bits as allocated). */
static uint32_t word_at(const dicom_raw_t *raw, size_t i)
{
    if (raw->bits_allocated == 8) return ((const uint8_t *)raw->data)[i];
    uint16_t u;
    memcpy(&u, (const uint8_t *)raw->data + 2 * i, sizeof u);
    return u;
}

/* Step 1 and 2: the modality value of a stored word. */
static double modality_value(const dicom_raw_t *raw, uint32_t s)
{
    uint32_t mask = raw->bits_stored >= 32 ? 0xffffffffu : (1u << raw->bits_stored) - 1u;
    s &= mask;
    int64_t v = s;
    if (raw->is_signed && (s >> (raw->bits_stored - 1)) & 1u) v -= (int64_t)1 << raw->bits_stored;
    return raw->slope * (double)v + raw->intercept;
}

/* Step 3: the window as lo..hi in modality values. seen[w] says whether the
 * word w occurs in the image (for min-max). */
static void window_bounds(const dicom_raw_t *raw, const dicom_prep_t *prep, const uint8_t *seen,
                          double *lo, double *hi)
{
    double c = 0, w = 0;
    int have = 0;
    if (prep->window == DICOM_WINDOW_FIXED) {
        c = prep->center, w = prep->width_w, have = 1;
    } else if (prep->window == DICOM_WINDOW_AUTO && raw->has_window && isfinite(raw->center) &&
               isfinite(raw->width) && raw->width >= 1.0) {
        c = raw->center, w = raw->width, have = 1;
    }
    if (have) {
        *lo = c - 0.5 - (w - 1.0) / 2.0;
        *hi = c - 0.5 + (w - 1.0) / 2.0;
        return;
    }
    double mn = INFINITY, mx = -INFINITY;
    for (uint32_t w = 0; w < 1u << raw->bits_allocated; w++) {
        if (!seen[w]) continue;
        double x = modality_value(raw, w);
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    }
    *lo = mn, *hi = mx;
}

static float window_value(double x, double lo, double hi, int mono1)
{
    double v;
    if (hi > lo) v = mono1 ? (hi - x) / (hi - lo) : (x - lo) / (hi - lo);
    else v = (x > lo) != (mono1 != 0) ? 1.0 : 0.0; /* a width of 1: a step */
    if (v < 0.0) v = 0.0;
    if (v > 1.0) v = 1.0;
    return (float)v;
}

/* Step 4, one axis: output o takes count[o] source samples from first[o] on,
 * with weights w[o * maxk + k]. */
typedef struct {
    int *first, *count;
    double *w;
    int maxk;
} axis_t;

static void axis_free(axis_t *a)
{
    free(a->first);
    free(a->count);
    free(a->w);
}

static int axis_build(axis_t *a, int src, int dst)
{
    double scale = (double)src / (double)dst;
    a->maxk = dst < src ? (int)ceil(scale) + 1 : 2;
    a->first = calloc((size_t)dst, sizeof *a->first);
    a->count = calloc((size_t)dst, sizeof *a->count);
    a->w = calloc((size_t)dst * (size_t)a->maxk, sizeof *a->w);
    if (!a->first || !a->count || !a->w) return -1;
    for (int o = 0; o < dst; o++) {
        double *w = a->w + (size_t)o * (size_t)a->maxk;
        if (dst == src) {
            a->first[o] = o, a->count[o] = 1, w[0] = 1.0;
        } else if (dst < src) { /* area: the source interval [o*scale, (o+1)*scale) */
            double s0 = o * scale, s1 = (o + 1) * scale;
            int j0 = (int)floor(s0), j1 = (int)ceil(s1) - 1;
            if (j1 > src - 1) j1 = src - 1;
            if (j1 - j0 + 1 > a->maxk) j1 = j0 + a->maxk - 1;
            a->first[o] = j0;
            a->count[o] = j1 - j0 + 1;
            for (int j = j0; j <= j1; j++) {
                double lo = j > s0 ? j : s0, hi = j + 1 < s1 ? j + 1 : s1;
                w[j - j0] = hi > lo ? (hi - lo) / scale : 0.0;
            }
        } else { /* bilinear between pixel centres, clamped at the edges */
            double x = (o + 0.5) * scale - 0.5;
            if (x < 0) x = 0;
            if (x > src - 1) x = src - 1;
            int j0 = (int)floor(x);
            int j1 = j0 + 1 < src ? j0 + 1 : j0;
            double f = x - j0;
            a->first[o] = j0;
            a->count[o] = j1 > j0 ? 2 : 1;
            w[0] = j1 > j0 ? 1.0 - f : 1.0;
            w[1] = j1 > j0 ? f : 0.0;
        }
    }
    return 0;
}

static float axis_apply(const axis_t *a, int o, const float *src, size_t stride)
{
    const double *w = a->w + (size_t)o * (size_t)a->maxk;
    double acc = 0.0;
    for (int k = 0; k < a->count[o]; k++) acc += w[k] * src[(size_t)(a->first[o] + k) * stride];
    return (float)acc;
}

int dicom_prep_run(const dicom_raw_t *raw, const dicom_prep_t *prep, float *out, char *reason,
                   size_t reasonlen)
{
    if (!dicom_prep_valid(prep)) {
        util_seterr(reason, reasonlen, "preprocessing parameters invalid");
        return -1;
    }
    if (dicom_prep_check(raw, reason, reasonlen) < 0) return -1;
    size_t rows = (size_t)raw->rows, cols = (size_t)raw->cols, n = rows * cols;
    size_t H = (size_t)prep->height, W = (size_t)prep->width;
    int rc = -1;
    axis_t ax = {0}, ay = {0};
    float *v = malloc(n * sizeof *v);
    float *tmp = malloc(rows * W * sizeof *tmp);
    /* Steps 1-3 depend on the stored word only: one table of 256 or 65536 */
    size_t nwords = (size_t)1 << raw->bits_allocated;
    float *lut = malloc(nwords * sizeof *lut);
    uint8_t *seen = calloc(nwords, 1);
    if (!v || !tmp || !lut || !seen || axis_build(&ax, raw->cols, prep->width) < 0 ||
        axis_build(&ay, raw->rows, prep->height) < 0) {
        util_seterr(reason, reasonlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) seen[word_at(raw, i)] = 1;
    double lo, hi;
    window_bounds(raw, prep, seen, &lo, &hi);
    for (size_t w = 0; w < nwords; w++)
        lut[w] = window_value(modality_value(raw, (uint32_t)w), lo, hi, raw->monochrome1);
    for (size_t i = 0; i < n; i++) v[i] = lut[word_at(raw, i)];
    for (size_t r = 0; r < rows; r++)
        for (size_t o = 0; o < W; o++) tmp[r * W + o] = axis_apply(&ax, (int)o, v + r * cols, 1);
    for (size_t o = 0; o < H; o++)
        for (size_t c = 0; c < W; c++) {
            float x = axis_apply(&ay, (int)o, tmp + c, W);
            out[o * W + c] = (x - 0.5f) / 0.5f;
        }
    rc = 0;
out:
    axis_free(&ax);
    axis_free(&ay);
    free(v);
    free(tmp);
    free(lut);
    free(seen);
    return rc;
}
