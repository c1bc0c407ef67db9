/*
 * test_idx.c - imaging/data_idx: IDX files, gzip and raw, good and bad.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "imaging/imaging.h"

typedef struct {
    char dir[64];
    char img[128], lab[128];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/medfed-idx-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->img, sizeof f->img, "%s/images-idx3-ubyte.gz", f->dir);
    snprintf(f->lab, sizeof f->lab, "%s/labels-idx1-ubyte.gz", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    DIR *d = opendir(f->dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char p[512];
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Writes header fields then body bytes (value i % 251), raw or gzip. */
static void put_idx(const char *path, int gz, const uint32_t *fields, int nfields,
                    size_t body_len)
{
    size_t len = 4 * (size_t)nfields + body_len;
    unsigned char *b = malloc(len ? len : 1);
    assert_non_null(b);
    for (int i = 0; i < nfields; i++)
        be32(b + 4 * i, fields[i]);
    for (size_t i = 0; i < body_len; i++)
        b[4 * (size_t)nfields + i] = (unsigned char)(i % 251);
    if (gz) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, b, (unsigned)len), (int)len);
        assert_int_equal(gzclose(g), Z_OK);
    } else {
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(b, 1, len, fp), len);
        assert_int_equal(fclose(fp), 0);
    }
    free(b);
}

static void put_images(const char *path, int gz, uint32_t magic, uint32_t n, uint32_t rows,
                       uint32_t cols, size_t body_len)
{
    const uint32_t h[] = { magic, n, rows, cols };
    put_idx(path, gz, h, 4, body_len);
}

static void put_labels(const char *path, int gz, uint32_t magic, uint32_t n, size_t body_len)
{
    const uint32_t h[] = { magic, n };
    put_idx(path, gz, h, 2, body_len);
}

static void expect_bad(const fixture_t *f, const char *want)
{
    idx_set_t s;
    char err[512] = "";
    memset(&s, 0xab, sizeof s);
    if (idx_load(f->img, f->lab, &s, err, sizeof err) != -1)
        fail_msg("accepted bad files, wanted \"%s\"", want);
    assert_null(s.pixels);
    assert_null(s.labels);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.rows, 0);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void make_set(idx_set_t *s, int64_t n, int rows, int cols)
{
    s->n = n;
    s->rows = rows;
    s->cols = cols;
    s->pixels = malloc((size_t)n * rows * cols);
    s->labels = malloc((size_t)n);
    assert_non_null(s->pixels);
    assert_non_null(s->labels);
    for (int64_t i = 0; i < n * rows * cols; i++)
        s->pixels[i] = (uint8_t)(i * 7 + i / 13);
    for (int64_t i = 0; i < n; i++)
        s->labels[i] = (uint8_t)(i % 3);
}

/* ---- good files ---------------------------------------------------------- */

static void test_roundtrip_gz(void **state)
{
    fixture_t *f = *state;
    idx_set_t s, r;
    char err[512] = "";
    make_set(&s, 50, 5, 7);
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    assert_int_equal(count_entries(f->dir), 2); /* no temp files left */

    /* gzip on disk. */
    FILE *fp = fopen(f->img, "rb");
    assert_non_null(fp);
    assert_int_equal(fgetc(fp), 0x1f);
    assert_int_equal(fgetc(fp), 0x8b);
    fclose(fp);

    if (idx_load(f->img, f->lab, &r, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(r.n, 50);
    assert_int_equal(r.rows, 5);
    assert_int_equal(r.cols, 7);
    assert_memory_equal(r.pixels, s.pixels, 50 * 35);
    assert_memory_equal(r.labels, s.labels, 50);
    idx_free(&r);
    assert_null(r.pixels);

    /* A subset, with a repeat and out of order. */
    const int64_t sub[] = { 49, 0, 7, 7, 23 };
    assert_int_equal(idx_write(f->img, f->lab, &s, sub, 5, err, sizeof err), 0);
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_memory_equal(r.pixels + i * 35, s.pixels + sub[i] * 35, 35);
        assert_int_equal(r.labels[i], s.labels[sub[i]]);
    }
    idx_free(&r);

    /* Empty subset: a valid file with zero images. */
    assert_int_equal(idx_write(f->img, f->lab, &s, sub, 0, err, sizeof err), 0);
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 0);
    assert_int_equal(r.rows, 5);
    idx_free(&r);
    assert_int_equal(count_entries(f->dir), 2);
    idx_free(&s);
    idx_free(&s); /* idempotent */
    idx_free(NULL);
}

static void test_large_images(void **state)
{
    /* Items bigger than the writer's staging buffer, and a body bigger than
     * the reader's first allocation. */
    fixture_t *f = *state;
    idx_set_t s, r;
    char err[512] = "";
    make_set(&s, 20, 300, 300);
    const int64_t sub[] = { 19, 3, 3, 0 };
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    assert_memory_equal(r.pixels, s.pixels, 20 * 90000);
    idx_free(&r);
    assert_int_equal(idx_write(f->img, f->lab, &s, sub, 4, err, sizeof err), 0);
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(r.pixels + i * 90000, s.pixels + sub[i] * 90000, 90000);
    idx_free(&r);
    idx_free(&s);
}

static void test_raw_readable(void **state)
{
    fixture_t *f = *state;
    idx_set_t r;
    char err[512] = "";
    put_images(f->img, 0, 0x803, 3, 2, 4, 24);
    put_labels(f->lab, 0, 0x801, 3, 3);
    if (idx_load(f->img, f->lab, &r, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.rows, 2);
    assert_int_equal(r.cols, 4);
    for (int i = 0; i < 24; i++)
        assert_int_equal(r.pixels[i], i);
    assert_int_equal(r.labels[2], 2);
    idx_free(&r);
    /* Mixed: gzip images, raw labels. */
    put_images(f->img, 1, 0x803, 3, 2, 4, 24);
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    idx_free(&r);
}

/* ---- bad files ----------------------------------------------------------- */

static void test_bad_magic(void **state)
{
    fixture_t *f = *state;
    put_labels(f->lab, 1, 0x801, 3, 3);
    put_images(f->img, 1, 0x801, 3, 2, 2, 12);
    expect_bad(f, "bad magic 0x00000801");
    expect_bad(f, "label file");
    put_images(f->img, 1, 0x0803 | 0x10000, 3, 2, 2, 12);
    expect_bad(f, "bad magic");
    put_images(f->img, 0, 0x803, 3, 2, 2, 12);
    put_labels(f->lab, 0, 0x803, 3, 3);
    expect_bad(f, "image file");
    /* Same file for both. */
    put_labels(f->lab, 0, 0x801, 3, 3);
    idx_set_t s;
    char err[256];
    assert_int_equal(idx_load(f->img, f->img, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "bad magic"));
}

static void test_truncated(void **state)
{
    fixture_t *f = *state;
    char want[256];
    put_labels(f->lab, 1, 0x801, 10, 10);
    /* Complete gzip stream, too little data in it. */
    put_images(f->img, 1, 0x803, 10, 4, 4, 50);
    snprintf(want, sizeof want, "%s: truncated: expected 160 pixel bytes, got 50", f->img);
    expect_bad(f, want);
    /* Raw. */
    put_images(f->img, 0, 0x803, 10, 4, 4, 159);
    expect_bad(f, "truncated: expected 160 pixel bytes, got 159");
    /* Labels short. */
    put_images(f->img, 0, 0x803, 10, 4, 4, 160);
    put_labels(f->lab, 0, 0x801, 10, 9);
    expect_bad(f, "truncated: expected 10 label bytes, got 9");
    /* Header itself short. */
    put_labels(f->lab, 0, 0x801, 10, 10);
    FILE *fp = fopen(f->img, "wb");
    fwrite("\0\0\x08\x03\0\0", 1, 6, fp);
    fclose(fp);
    expect_bad(f, "truncated header: expected 16 bytes, got 6");
    fp = fopen(f->img, "wb");
    fclose(fp);
    expect_bad(f, "truncated header: expected 16 bytes, got 0");

    /* A gzip file cut in the middle of its compressed stream. */
    idx_set_t s;
    char err[512] = "";
    make_set(&s, 200, 28, 28);
    for (int64_t i = 0; i < 200 * 784; i++)
        s.pixels[i] = (uint8_t)((i * 2654435761u) >> 13); /* poorly compressible */
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    idx_free(&s);
    struct stat st;
    assert_int_equal(stat(f->img, &st), 0);
    assert_int_equal(truncate(f->img, st.st_size / 2), 0);
    expect_bad(f, "truncated: expected 156800 pixel bytes");
    /* Cut inside the 8-byte gzip trailer: all data is there, but the stream
     * never finishes. */
    make_set(&s, 200, 28, 28);
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    assert_int_equal(stat(f->img, &st), 0);
    assert_int_equal(truncate(f->img, st.st_size - 1), 0);
    expect_bad(f, "truncated gzip stream");
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    assert_int_equal(truncate(f->img, st.st_size - 8), 0);
    expect_bad(f, "truncated gzip stream");
    /* A wrong CRC in the trailer. */
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    fp = fopen(f->img, "r+b");
    assert_non_null(fp);
    fseek(fp, -8, SEEK_END);
    int c = fgetc(fp);
    fseek(fp, -8, SEEK_END);
    fputc(c ^ 0x55, fp);
    fclose(fp);
    expect_bad(f, "incorrect data check");
    idx_free(&s);
}

static void test_count_mismatch(void **state)
{
    fixture_t *f = *state;
    put_images(f->img, 1, 0x803, 10, 3, 3, 90);
    put_labels(f->lab, 1, 0x801, 9, 9);
    char want[512];
    snprintf(want, sizeof want, "%s has 10 images but %s has 9 labels", f->img, f->lab);
    expect_bad(f, want);
}

static void test_absurd_dims(void **state)
{
    fixture_t *f = *state;
    put_labels(f->lab, 1, 0x801, 10, 10);
    put_images(f->img, 1, 0x803, 10, 0, 28, 0);
    expect_bad(f, "image size 0x28 outside 1..4096");
    put_images(f->img, 1, 0x803, 10, 28, 5000, 0);
    expect_bad(f, "image size 28x5000");
    put_images(f->img, 1, 0x803, 10, 0xffffffffu, 0xffffffffu, 0);
    expect_bad(f, "outside 1..4096");
    put_images(f->img, 1, 0x803, 20000000, 28, 28, 0);
    expect_bad(f, "image count 20000000 exceeds");
    put_images(f->img, 1, 0x803, 0xffffffffu, 28, 28, 0);
    expect_bad(f, "exceeds the limit");
    /* The largest legal claim with no data behind it fails as truncated
     * without allocating the claim (10^7 * 4096^2 bytes). */
    put_images(f->img, 1, 0x803, IDX_MAX_COUNT, IDX_MAX_SIDE, IDX_MAX_SIDE, 100);
    put_labels(f->lab, 1, 0x801, IDX_MAX_COUNT, 0);
    expect_bad(f, "truncated: expected 167772160000000 pixel bytes, got 100");
}

static void test_trailing_garbage(void **state)
{
    fixture_t *f = *state;
    put_images(f->img, 1, 0x803, 4, 2, 2, 17);
    put_labels(f->lab, 1, 0x801, 4, 4);
    expect_bad(f, "trailing garbage after the 16 pixel bytes");
    put_images(f->img, 0, 0x803, 4, 2, 2, 1000);
    expect_bad(f, "trailing garbage");
    put_images(f->img, 0, 0x803, 4, 2, 2, 16);
    put_labels(f->lab, 0, 0x801, 4, 5);
    expect_bad(f, "trailing garbage after the 4 label bytes");
}

static void test_missing_and_args(void **state)
{
    fixture_t *f = *state;
    idx_set_t s;
    char err[512] = "";
    put_images(f->img, 1, 0x803, 1, 1, 1, 1);
    put_labels(f->lab, 1, 0x801, 1, 1);
    char nope[256];
    snprintf(nope, sizeof nope, "%s/nope.gz", f->dir);
    assert_int_equal(idx_load(nope, f->lab, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_non_null(strstr(err, nope));
    assert_int_equal(idx_load(f->img, nope, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, nope));
    assert_null(s.pixels);
    assert_int_equal(idx_load(NULL, f->lab, &s, err, sizeof err), -1);
    assert_int_equal(idx_load(f->img, f->lab, NULL, err, sizeof err), -1);
    assert_int_equal(idx_load(nope, f->lab, &s, NULL, 0), -1);
    assert_int_equal(idx_load(f->img, f->lab, &s, NULL, 0), 0);
    assert_int_equal(s.n, 1);
    idx_free(&s);
}

static void test_write_errors(void **state)
{
    fixture_t *f = *state;
    idx_set_t s;
    char err[512] = "";
    make_set(&s, 10, 2, 2);
    assert_int_equal(idx_write(f->img, f->lab, &s, NULL, 0, err, sizeof err), 0);
    assert_int_equal(count_entries(f->dir), 2);

    /* Errors leave the existing files alone and no temp files behind. */
    const int64_t bad_sub[] = { 0, 10 };
    assert_int_equal(idx_write(f->img, f->lab, &s, bad_sub, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "subset[1] = 10"));
    const int64_t neg_sub[] = { -1 };
    assert_int_equal(idx_write(f->img, f->lab, &s, neg_sub, 1, err, sizeof err), -1);
    assert_int_equal(idx_write(f->img, f->lab, &s, bad_sub, -1, err, sizeof err), -1);
    assert_int_equal(idx_write(f->img, f->img, &s, NULL, 0, err, sizeof err), -1);
    assert_int_equal(idx_write(NULL, f->lab, &s, NULL, 0, err, sizeof err), -1);
    assert_int_equal(idx_write(f->img, f->lab, NULL, NULL, 0, err, sizeof err), -1);
    idx_set_t bad = s;
    bad.rows = 0;
    assert_int_equal(idx_write(f->img, f->lab, &bad, NULL, 0, err, sizeof err), -1);
    bad = s;
    bad.pixels = NULL;
    assert_int_equal(idx_write(f->img, f->lab, &bad, NULL, 0, err, sizeof err), -1);
    /* Labels into a missing directory: the images must not be replaced
     * either (both temp files are written before either rename). */
    char nodir[256];
    snprintf(nodir, sizeof nodir, "%s/no/such/labels.gz", f->dir);
    const int64_t one[] = { 3 };
    assert_int_equal(idx_write(f->img, nodir, &s, one, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, nodir));
    assert_int_equal(count_entries(f->dir), 2);
    idx_set_t r;
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 10);
    assert_memory_equal(r.pixels, s.pixels, 40);
    idx_free(&r);
    /* Images onto a directory: rename fails after both temps were written. */
    char sub[256];
    snprintf(sub, sizeof sub, "%s/adir", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(idx_write(sub, f->lab, &s, one, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "rename"));
    assert_int_equal(count_entries(f->dir), 3);
    rmdir(sub);
    assert_int_equal(idx_load(f->img, f->lab, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 10);
    idx_free(&r);
    idx_free(&s);
}

/* ---- the real data set --------------------------------------------------- */

/* Finds dir/<name> for the PneumoniaMNIST files: $MEDFED_DATA (the data root
 * or the pneumoniamnist folder itself), then data/ relative to the working
 * directory and up to three levels above it. */
static int find_data(const char *name, char *out, size_t n)
{
    const char *env = getenv("MEDFED_DATA");
    char cand[8][512];
    int k = 0;
    if (env != NULL && env[0] != '\0') {
        snprintf(cand[k++], sizeof cand[0], "%s/pneumoniamnist/%s", env, name);
        snprintf(cand[k++], sizeof cand[0], "%s/%s", env, name);
    }
    const char *up[] = { ".", "..", "../..", "../../.." };
    for (int i = 0; i < 4; i++)
        snprintf(cand[k++], sizeof cand[0], "%s/data/pneumoniamnist/%s", up[i], name);
    for (int i = 0; i < k; i++) {
        size_t len = strlen(cand[i]);
        if (len < n && access(cand[i], R_OK) == 0) {
            memcpy(out, cand[i], len + 1);
            return 0;
        }
    }
    return -1;
}

static void check_real(const char *split, int64_t n, int64_t zeros, int64_t ones)
{
    char img[512], lab[512], name[64], err[512] = "";
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", split);
    if (find_data(name, img, sizeof img) != 0) {
        print_message("skipping: %s not found under $MEDFED_DATA or data/pneumoniamnist "
                      "(relative to the working directory or up to 3 levels above)\n",
                      name);
        skip();
    }
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", split);
    assert_int_equal(find_data(name, lab, sizeof lab), 0);
    idx_set_t s;
    if (idx_load(img, lab, &s, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(s.n, n);
    assert_int_equal(s.rows, 28);
    assert_int_equal(s.cols, 28);
    int64_t c[256] = { 0 };
    for (int64_t i = 0; i < s.n; i++)
        c[s.labels[i]]++;
    assert_int_equal(c[0], zeros);
    assert_int_equal(c[1], ones);
    /* Real X-rays: neither blank nor saturated. */
    double mean = 0;
    for (int64_t i = 0; i < s.n * 784; i++)
        mean += s.pixels[i];
    mean /= (double)(s.n * 784);
    assert_true(mean > 30 && mean < 225);
    idx_free(&s);
}

static void test_real_train(void **state)
{
    (void)state;
    check_real("train", 4708, 1214, 3494);
}

static void test_real_val(void **state)
{
    (void)state;
    check_real("val", 524, 135, 389);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_gz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_readable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absurd_dims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailing_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
        cmocka_unit_test(test_real_train),
        cmocka_unit_test(test_real_val),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
