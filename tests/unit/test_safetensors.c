/*
 * test_safetensors.c - model/safetensors: schemas, round trips, files laid out
 * by other writers, corrupt files, atomic writes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/safetensors.h"

typedef struct {
    char dir[64];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/medfed-st-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

/* Removes the temp directory and everything in it. */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                rm_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    rm_tree(f->dir);
    free(f);
    return 0;
}

static void path_in(const fixture_t *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->dir, name);
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

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void put_file(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Writes a safetensors file by hand: u64 LE length (hlen_override if not
 * UINT64_MAX, else the padded header's), the header padded with spaces to 8,
 * then datalen bytes of data (floats 1, 2, 3, ... little-endian, truncated). */
static void write_raw(const char *path, const char *header, size_t datalen, uint64_t hlen_override)
{
    size_t h = strlen(header), padded = (h + 7) / 8 * 8;
    size_t total = 8 + padded + datalen;
    unsigned char *b = calloc(1, total);
    assert_non_null(b);
    uint64_t hl = hlen_override != UINT64_MAX ? hlen_override : padded;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hl >> (8 * i));
    memcpy(b + 8, header, h);
    memset(b + 8 + h, ' ', padded - h);
    for (size_t i = 0; i < datalen; i++) {
        float v = (float)(i / 4 + 1);
        uint32_t u;
        memcpy(&u, &v, 4);
        b[8 + padded + i] = (unsigned char)(u >> (8 * (i % 4)));
    }
    put_file(path, b, total);
    free(b);
}

/* Reads path expecting failure with a message containing want. */
static void expect_bad(const char *path, const char *want)
{
    schema_t *s = (schema_t *)1;
    float *d = (float *)1;
    st_meta_t meta[ST_META_MAX];
    size_t nm = 99;
    char err[512] = "";
    int rc = safetensors_read(path, &s, &d, meta, &nm, err, sizeof err);
    if (rc != -1)
        fail_msg("accepted a bad file, wanted error \"%s\"", want);
    assert_null(s);
    assert_null(d);
    assert_int_equal(nm, 0);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    /* Every message names the file. */
    assert_non_null(strstr(err, path));
}

/* ---- schema -------------------------------------------------------------- */

static void test_schema_basic(void **state)
{
    (void)state;
    schema_t *s = schema_new();
    assert_non_null(s);
    int64_t w[] = { 4, 3 }, b[] = { 4 }, z[] = { 2, 0, 5 };
    assert_int_equal(schema_add(s, "fc.weight", 2, w), 0);
    assert_int_equal(schema_add(s, "fc.bias", 1, b), 0);
    assert_int_equal(schema_add(s, "scalar", 0, NULL), 0);
    assert_int_equal(schema_add(s, "empty", 3, z), 0);
    assert_int_equal(schema_count(s), 4);
    assert_int_equal(schema_numel(s), 12 + 4 + 1 + 0);
    assert_int_equal(schema_offset(s, 0), 0);
    assert_int_equal(schema_offset(s, 1), 12);
    assert_int_equal(schema_offset(s, 2), 16);
    assert_int_equal(schema_offset(s, 3), 17);
    assert_string_equal(schema_name(s, 1), "fc.bias");
    assert_int_equal(schema_ndims(s, 0), 2);
    assert_int_equal(schema_shape(s, 0)[1], 3);
    assert_int_equal(schema_ndims(s, 2), 0);
    /* Out of range. */
    assert_null(schema_name(s, 4));
    assert_null(schema_shape(s, 4));
    assert_int_equal(schema_ndims(s, 4), -1);

    /* Rejections. */
    int64_t neg[] = { 2, -1 }, nine[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    int64_t huge[] = { INT64_MAX, INT64_MAX };
    char name[SCHEMA_NAME_MAX + 1];
    assert_int_equal(schema_add(s, "fc.bias", 1, b), -1);   /* duplicate */
    assert_int_equal(schema_add(s, "", 1, b), -1);
    assert_int_equal(schema_add(s, NULL, 1, b), -1);
    assert_int_equal(schema_add(s, "__metadata__", 1, b), -1);
    assert_int_equal(schema_add(s, "neg", 2, neg), -1);
    assert_int_equal(schema_add(s, "nine", 9, nine), -1);
    assert_int_equal(schema_add(s, "eight", 8, nine), 0);
    assert_int_equal(schema_add(s, "minus", -1, b), -1);
    assert_int_equal(schema_add(s, "noshape", 1, NULL), -1);
    assert_int_equal(schema_add(s, "huge", 2, huge), -1);
    assert_int_equal(schema_add(NULL, "x", 1, b), -1);
    memset(name, 'n', SCHEMA_NAME_MAX);
    name[SCHEMA_NAME_MAX] = '\0';
    assert_int_equal(schema_add(s, name, 1, b), -1); /* 128 chars: too long */
    name[SCHEMA_NAME_MAX - 1] = '\0';
    assert_int_equal(schema_add(s, name, 1, b), 0); /* 127 chars: fits */
    assert_int_equal(schema_count(s), 6);
    schema_destroy(&s);
    assert_null(s);
    schema_destroy(&s);
    schema_destroy(NULL);
}

static void test_schema_full_and_equal(void **state)
{
    (void)state;
    schema_t *a = schema_new(), *b = schema_new();
    int64_t one[] = { 1 }, two[] = { 2 };
    char name[32];
    for (int i = 0; i < SCHEMA_MAX_TENSORS; i++) {
        snprintf(name, sizeof name, "t%d", i);
        assert_int_equal(schema_add(a, name, 1, one), 0);
    }
    assert_int_equal(schema_add(a, "one-too-many", 1, one), -1);
    assert_int_equal(schema_count(a), SCHEMA_MAX_TENSORS);
    assert_int_equal(schema_numel(a), SCHEMA_MAX_TENSORS);
    schema_destroy(&a);

    a = schema_new();
    assert_int_equal(schema_add(a, "x", 1, one), 0);
    assert_int_equal(schema_add(a, "y", 1, two), 0);
    assert_int_equal(schema_add(b, "x", 1, one), 0);
    assert_false(schema_equal(a, b));
    assert_int_equal(schema_add(b, "y", 1, two), 0);
    assert_true(schema_equal(a, b));
    assert_false(schema_equal(a, NULL));
    schema_t *c = schema_new();
    assert_int_equal(schema_add(c, "y", 1, two), 0);
    assert_int_equal(schema_add(c, "x", 1, one), 0);
    assert_false(schema_equal(a, c)); /* order matters */
    schema_t *d = schema_new();
    assert_int_equal(schema_add(d, "x", 1, one), 0);
    int64_t two_by_one[] = { 2, 1 };
    assert_int_equal(schema_add(d, "y", 2, two_by_one), 0);
    assert_false(schema_equal(a, d)); /* same numel, other shape */
    schema_destroy(&a);
    schema_destroy(&b);
    schema_destroy(&c);
    schema_destroy(&d);
}

/* ---- round trip ---------------------------------------------------------- */

static schema_t *sample_schema(void)
{
    schema_t *s = schema_new();
    int64_t w[] = { 8, 1, 5, 5 }, b[] = { 8 }, odd[] = { 3 };
    assert_int_equal(schema_add(s, "conv1.weight", 4, w), 0);
    assert_int_equal(schema_add(s, "conv1.bias", 1, b), 0);
    assert_int_equal(schema_add(s, "bn.num\"quoted\"\\back\nline\ttab\x01/\xc3\xa9", 1, odd), 0);
    assert_int_equal(schema_add(s, "scalar", 0, NULL), 0);
    return s;
}

static void test_roundtrip(void **state)
{
    fixture_t *f = *state;
    char p1[256], p2[256], err[512] = "";
    path_in(f, "model.safetensors", p1, sizeof p1);
    path_in(f, "again.safetensors", p2, sizeof p2);
    schema_t *s = sample_schema();
    size_t n = schema_numel(s);
    float *data = malloc(n * sizeof *data);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (float)sin((double)i) * 1e3f;
    data[0] = -0.0f;
    data[1] = NAN;
    data[2] = INFINITY;
    data[3] = 1e-45f; /* denormal */
    st_meta_t meta[3];
    memset(meta, 0, sizeof meta);
    strcpy(meta[0].key, "round");
    strcpy(meta[0].value, "17");
    strcpy(meta[1].key, "note \"x\"");
    strcpy(meta[1].value, "a\\b\nc \xe2\x82\xac");
    strcpy(meta[2].key, "format");
    strcpy(meta[2].value, "pt");
    assert_int_equal(safetensors_write(p1, s, data, meta, 3, err, sizeof err), 0);

    schema_t *r = NULL;
    float *rd = NULL;
    st_meta_t rm[ST_META_MAX];
    size_t nrm = 0;
    assert_int_equal(safetensors_read(p1, &r, &rd, rm, &nrm, err, sizeof err), 0);
    assert_true(schema_equal(s, r));
    assert_memory_equal(data, rd, n * sizeof *data); /* bit-exact, NaN included */
    assert_int_equal(nrm, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(rm[i].key, meta[i].key);
        assert_string_equal(rm[i].value, meta[i].value);
    }
    assert_string_equal(st_meta_get(rm, nrm, "round"), "17");
    assert_string_equal(st_meta_get(rm, nrm, "note \"x\""), "a\\b\nc \xe2\x82\xac");
    assert_null(st_meta_get(rm, nrm, "missing"));
    assert_null(st_meta_get(NULL, 0, "round"));

    /* Layout: LE length, header a multiple of 8 and space padded, buffer
     * exactly the floats. */
    size_t len;
    unsigned char *b = slurp(p1, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(len, 8 + hl + 4 * n);
    assert_int_equal(b[8], '{');
    assert_memory_equal(b + 8 + hl, data, 4 * n); /* little-endian host */
    assert_non_null(memmem(b + 8, hl, "\"dtype\":\"F32\"", 13));

    /* Writing what was read gives the same bytes. */
    assert_int_equal(safetensors_write(p2, r, rd, rm, nrm, err, sizeof err), 0);
    size_t len2;
    unsigned char *b2 = slurp(p2, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(b, b2, len);

    /* Reading without metadata outputs works too. */
    schema_t *r2 = NULL;
    float *rd2 = NULL;
    assert_int_equal(safetensors_read(p1, &r2, &rd2, NULL, NULL, err, sizeof err), 0);
    assert_true(schema_equal(s, r2));

    /* Only the two files are in the directory: no temp files left. */
    assert_int_equal(count_entries(f->dir), 2);
    free(b);
    free(b2);
    free(data);
    free(rd);
    free(rd2);
    schema_destroy(&s);
    schema_destroy(&r);
    schema_destroy(&r2);
    unlink(p1);
    unlink(p2);
}

static void test_empty_and_zero_sized(void **state)
{
    fixture_t *f = *state;
    char p[256], err[512] = "";
    path_in(f, "empty.safetensors", p, sizeof p);
    schema_t *s = schema_new(), *r = NULL;
    float *d = NULL;
    assert_int_equal(safetensors_write(p, s, NULL, NULL, 0, err, sizeof err), 0);
    assert_int_equal(safetensors_read(p, &r, &d, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(schema_count(r), 0);
    assert_non_null(d);
    free(d);
    schema_destroy(&r);

    int64_t z[] = { 0, 3 }, one[] = { 2 };
    assert_int_equal(schema_add(s, "a", 1, one), 0);
    assert_int_equal(schema_add(s, "nothing", 2, z), 0);
    assert_int_equal(schema_add(s, "b", 1, one), 0);
    float v[4] = { 1, 2, 3, 4 };
    assert_int_equal(safetensors_write(p, s, v, NULL, 0, err, sizeof err), 0);
    assert_int_equal(safetensors_read(p, &r, &d, NULL, NULL, err, sizeof err), 0);
    assert_true(schema_equal(s, r));
    assert_memory_equal(d, v, sizeof v);
    free(d);
    schema_destroy(&r);
    schema_destroy(&s);
    unlink(p);
}

/* ---- other writers' layout ---------------------------------------------- */

static void test_python_layout(void **state)
{
    fixture_t *f = *state;
    char p[256], err[512] = "";
    path_in(f, "py.safetensors", p, sizeof p);
    /* Key order differs from offset order, metadata in the middle, odd
     * whitespace, escaped and raw UTF-8 names, padding with spaces. */
    const char *hdr =
        "{ \"a\\u00e9\" : {\"shape\":[1, 3], \"dtype\":\"F32\", \"data_offsets\":[8,20]},\n"
        "  \"__metadata__\": {\"format\": \"pt\", \"k\\/\\u20ac\": \"\\ud83d\\ude00\"},\r\n"
        "\t\"b\":{\"data_offsets\":[0,8],\"dtype\":\"F32\",\"shape\":[2]},"
        "\"c\xc3\xa9\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[20,24]}}   ";
    write_raw(p, hdr, 24, UINT64_MAX);
    schema_t *s = NULL;
    float *d = NULL;
    st_meta_t m[ST_META_MAX];
    size_t nm = 0;
    if (safetensors_read(p, &s, &d, m, &nm, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(schema_count(s), 3);
    assert_string_equal(schema_name(s, 0), "b");
    assert_string_equal(schema_name(s, 1), "a\xc3\xa9");
    assert_string_equal(schema_name(s, 2), "c\xc3\xa9");
    assert_int_equal(schema_ndims(s, 1), 2);
    assert_int_equal(schema_shape(s, 1)[1], 3);
    assert_int_equal(schema_ndims(s, 2), 0);
    assert_int_equal(schema_offset(s, 1), 2);
    const float want[] = { 1, 2, 3, 4, 5, 6 };
    assert_memory_equal(d, want, sizeof want);
    assert_int_equal(nm, 2);
    assert_string_equal(st_meta_get(m, nm, "format"), "pt");
    assert_string_equal(st_meta_get(m, nm, "k/\xe2\x82\xac"), "\xf0\x9f\x98\x80");
    free(d);
    schema_destroy(&s);

    /* Unpadded header (length not a multiple of 8) is fine as well. */
    const char *tight = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    size_t h = strlen(tight);
    unsigned char buf[128];
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, tight, h);
    float one = 1.5f;
    memcpy(buf + 8 + h, &one, 4);
    put_file(p, buf, 8 + h + 4);
    assert_int_equal(safetensors_read(p, &s, &d, NULL, NULL, err, sizeof err), 0);
    assert_true(d[0] == 1.5f);
    free(d);
    schema_destroy(&s);
    unlink(p);
}

/* ---- corrupt files ------------------------------------------------------- */

static void test_corrupt_headers(void **state)
{
    fixture_t *f = *state;
    char p[256];
    path_in(f, "bad.safetensors", p, sizeof p);
    static const struct {
        const char *header;
        size_t datalen;
        const char *want;
    } cases[] = {
        { "hello world", 0, "not valid safetensors JSON" },
        { "", 0, "does not start with '{'" },
        { "[1,2]", 0, "does not start with '{'" },
        { " {}", 0, "does not start with '{'" },
        { "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
          "tensor w: dtype F16 not supported" },
        { "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
          "tensor w: dtype BF16 not supported" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "overlap" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "does not match" },
        /* fewer elements than the span holds (the rest would be read as another tensor's) */
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "does not match" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,32]}}", 32, "does not match" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, "does not match" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
          "\"data_offsets\":[0,8]}}", 8, "does not match" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor w: missing data_offsets" },
        { "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing dtype" },
        { "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing shape" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "belong to no" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
          "duplicate tensor name" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "reversed" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
          "non-negative integer" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "fraction" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, "exponent" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, "leading zero" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999999999999999999]}}", 8,
          "too large" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, "expected a string" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}", 8, "expected a string" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,],\"data_offsets\":[0,8]}}", 8, "non-negative" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}x", 8,
          "unexpected data after" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}{}", 8,
          "unexpected data after" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "expected ',' or '}'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
          "unexpected key \"x\"" },
        { "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
          "duplicate key \"dtype\"" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, "more than 2" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, "needs 2 entries" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
          "more than 8" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, "expected '['" },
        { "{\"w\":[1]}", 0, "expected '{'" },
        { "{\"w\":{\"dtype\":F32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "expected a string" },
        { "{\"__metadata__\":{\"a\":1}}", 0, "not a string" },
        { "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "duplicate metadata key" },
        { "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__" },
        { "{\"w\\q\":{}}", 0, "unknown escape" },
        { "{\"w\\u0000\":{}}", 0, "\\u0000" },
        { "{\"w\\ud800\":{}}", 0, "surrogate" },
        { "{\"w\\udc00\":{}}", 0, "surrogate" },
        { "{\"w\\u12\":{}}", 0, "hex" },
        { "{\"w\xff\":{}}", 0, "UTF-8" },
        { "{\"w\xc0\xaf\":{}}", 0, "UTF-8" },
        { "{\"w\xed\xa0\x80\":{}}", 0, "UTF-8" },
        { "{\"w\x01\":{}}", 0, "control character" },
        { "{\"w", 0, "unterminated string" },
        { "{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "empty tensor name" },
        { "{\"w\" \"x\"}", 0, "expected ':'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]} \"v\":{}}", 8,
          "expected ',' or '}'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(p, cases[i].header, cases[i].datalen, UINT64_MAX);
        expect_bad(p, cases[i].want);
    }

    /* A tensor name of exactly SCHEMA_NAME_MAX bytes is one too many. */
    char hdr[512];
    char name[SCHEMA_NAME_MAX + 1];
    memset(name, 'n', SCHEMA_NAME_MAX);
    name[SCHEMA_NAME_MAX] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             name);
    write_raw(p, hdr, 4, UINT64_MAX);
    expect_bad(p, "too long");
    /* Too many metadata entries. */
    char big[8192] = "{\"__metadata__\":{";
    for (int i = 0; i <= ST_META_MAX; i++) {
        char kv[32];
        snprintf(kv, sizeof kv, "%s\"k%d\":\"v\"", i ? "," : "", i);
        strcat(big, kv);
    }
    strcat(big, "}}");
    write_raw(p, big, 0, UINT64_MAX);
    expect_bad(p, "more than 32 metadata");
    unlink(p);
}

static void test_corrupt_sizes(void **state)
{
    fixture_t *f = *state;
    char p[256], err[512];
    path_in(f, "model.safetensors", p, sizeof p);
    const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    /* Header length larger than the file. */
    write_raw(p, ok, 8, UINT64_C(99999999999));
    expect_bad(p, "header length 99999999999 exceeds file size 72");
    /* Header length just past the end. */
    write_raw(p, ok, 8, 65); /* file is 8 + 56 + 8 = 72 */
    expect_bad(p, "exceeds file size");
    /* Header length shorter than the JSON: cuts it. */
    write_raw(p, ok, 8, 16);
    expect_bad(p, "not valid safetensors JSON");
    /* Length field claims 2^64 - 1. */
    write_raw(p, ok, 8, UINT64_MAX - 1);
    expect_bad(p, "exceeds file size");
    /* Under 8 bytes. */
    put_file(p, "\x10\0\0", 3);
    expect_bad(p, "too short");
    put_file(p, "", 0);
    expect_bad(p, "too short");
    /* Header over ST_HEADER_MAX in a (sparse) file big enough to hold it. */
    write_raw(p, ok, 8, (uint64_t)ST_HEADER_MAX + 8);
    assert_int_equal(truncate(p, (off_t)ST_HEADER_MAX + 64), 0);
    expect_bad(p, "limit");
    /* A directory, a missing file. */
    expect_bad(f->dir, "not a regular file");
    char missing[256];
    path_in(f, "nope.safetensors", missing, sizeof missing);
    expect_bad(missing, "cannot open");
    /* NULL outputs. */
    schema_t *s;
    float *d;
    assert_int_equal(safetensors_read(p, NULL, &d, NULL, NULL, err, sizeof err), -1);
    assert_int_equal(safetensors_read(p, &s, NULL, NULL, NULL, NULL, 0), -1);
    unlink(p);
}

/* Every proper prefix of a valid file is rejected; ASan checks no read
 * strays past what the file holds. */
static void test_truncated_everywhere(void **state)
{
    fixture_t *f = *state;
    char good[256], p[256], err[512];
    path_in(f, "good.safetensors", good, sizeof good);
    path_in(f, "cut.safetensors", p, sizeof p);
    schema_t *s = sample_schema();
    float *data = calloc(schema_numel(s), sizeof *data);
    st_meta_t meta = { "k", "v" };
    assert_int_equal(safetensors_write(good, s, data, &meta, 1, err, sizeof err), 0);
    size_t len;
    unsigned char *b = slurp(good, &len);
    for (size_t cut = 0; cut < len; cut++) {
        put_file(p, b, cut);
        schema_t *r = NULL;
        float *d = NULL;
        if (safetensors_read(p, &r, &d, NULL, NULL, err, sizeof err) == 0)
            fail_msg("accepted a file cut to %zu of %zu bytes", cut, len);
        assert_null(r);
        assert_null(d);
    }
    /* One extra byte at the end is rejected too. */
    unsigned char *b2 = malloc(len + 1);
    memcpy(b2, b, len);
    b2[len] = 0;
    put_file(p, b2, len + 1);
    expect_bad(p, "belong to no tensor");
    free(b2);
    free(b);
    free(data);
    schema_destroy(&s);
    unlink(good);
    unlink(p);
}

/* Random byte flips in the header must never crash (run under ASan). */
static void test_header_mutations(void **state)
{
    fixture_t *f = *state;
    char good[256], p[256], err[512];
    path_in(f, "good.safetensors", good, sizeof good);
    path_in(f, "mut.safetensors", p, sizeof p);
    schema_t *s = sample_schema();
    float *data = calloc(schema_numel(s), sizeof *data);
    st_meta_t meta = { "key", "value" };
    assert_int_equal(safetensors_write(good, s, data, &meta, 1, err, sizeof err), 0);
    size_t len;
    unsigned char *b = slurp(good, &len);
    uint64_t x = 88172645463325252u;
    const unsigned char alphabet[] = "{}[],:\"\\0123456789 -.eu\x80\xff\x00";
    for (int iter = 0; iter < 3000; iter++) {
        unsigned char *m = malloc(len);
        memcpy(m, b, len);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            size_t pos = 8 + (size_t)(x % (len - 8));
            m[pos] = alphabet[(x >> 32) % (sizeof alphabet - 1)];
        }
        put_file(p, m, len);
        schema_t *r = NULL;
        float *d = NULL;
        if (safetensors_read(p, &r, &d, NULL, NULL, err, sizeof err) == 0) {
            assert_non_null(r);
            assert_non_null(d);
        } else {
            assert_null(r);
            assert_null(d);
            assert_true(strlen(err) > 0);
        }
        free(d);
        schema_destroy(&r);
        free(m);
    }
    free(b);
    free(data);
    schema_destroy(&s);
    unlink(good);
    unlink(p);
}

/* ---- writing: arguments and atomicity ----------------------------------- */

static void test_write_errors(void **state)
{
    fixture_t *f = *state;
    char p[256], err[512];
    path_in(f, "w.safetensors", p, sizeof p);
    schema_t *s = sample_schema();
    size_t n = schema_numel(s);
    float *data = calloc(n, sizeof *data);
    st_meta_t meta[ST_META_MAX + 1];
    memset(meta, 0, sizeof meta);

    assert_int_equal(safetensors_write(p, s, NULL, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "no data"));
    assert_int_equal(safetensors_write(NULL, s, data, NULL, 0, err, sizeof err), -1);
    assert_int_equal(safetensors_write(p, NULL, data, NULL, 0, err, sizeof err), -1);
    assert_int_equal(safetensors_write(p, s, data, NULL, 1, err, sizeof err), -1);
    assert_int_equal(safetensors_write(p, s, data, meta, ST_META_MAX + 1, err, sizeof err), -1);
    strcpy(meta[0].key, "k");
    strcpy(meta[1].key, "k");
    assert_int_equal(safetensors_write(p, s, data, meta, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate metadata key"));
    memset(meta[1].key, 'x', ST_META_KEY_MAX); /* no NUL */
    assert_int_equal(safetensors_write(p, s, data, meta, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL"));
    strcpy(meta[1].key, "bad\xff");
    assert_int_equal(safetensors_write(p, s, data, meta, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "UTF-8"));
    /* Trailing slash: no file name. */
    char dirpath[256];
    snprintf(dirpath, sizeof dirpath, "%s/", f->dir);
    assert_int_equal(safetensors_write(dirpath, s, data, NULL, 0, err, sizeof err), -1);
    /* Nothing was created. */
    assert_int_equal(count_entries(f->dir), 0);
    /* A bare file name goes to the current directory: not tested to keep the
     * working tree clean. NULL err is allowed. */
    assert_int_equal(safetensors_write(p, s, NULL, NULL, 0, NULL, 0), -1);
    free(data);
    schema_destroy(&s);
}

static void test_atomic_write(void **state)
{
    fixture_t *f = *state;
    char p[256], sub[256], err[512] = "";
    path_in(f, "model.safetensors", p, sizeof p);
    schema_t *s = sample_schema();
    size_t n = schema_numel(s);
    float *data = calloc(n, sizeof *data);
    for (size_t i = 0; i < n; i++)
        data[i] = (float)i;

    /* Directory that does not exist. */
    char nodir[256];
    path_in(f, "no/such/dir/model.safetensors", nodir, sizeof nodir);
    assert_int_equal(safetensors_write(nodir, s, data, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, nodir));
    assert_non_null(strstr(err, "temp file"));
    assert_int_equal(count_entries(f->dir), 0);

    /* A good file in place, then failures that must leave it alone. */
    assert_int_equal(safetensors_write(p, s, data, NULL, 0, err, sizeof err), 0);
    size_t len0;
    unsigned char *orig = slurp(p, &len0);

    /* Late failure: rename onto an existing directory fails after the temp
     * file has been fully written; the temp file must go. */
    path_in(f, "adir", sub, sizeof sub);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(safetensors_write(sub, s, data, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "rename"));
    assert_int_equal(count_entries(f->dir), 2); /* model.safetensors, adir */
    rmdir(sub);

    /* Mid-write failure: a file size limit makes write() fail with EFBIG
     * halfway through a bigger model; the old file must survive intact. */
    schema_t *big = schema_new();
    int64_t shape[] = { 100000 };
    assert_int_equal(schema_add(big, "big", 1, shape), 0);
    float *bigdata = calloc(100000, sizeof *bigdata);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 65536;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = safetensors_write(p, big, bigdata, NULL, 0, err, sizeof err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "write failed"));
    size_t len1;
    unsigned char *now = slurp(p, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(orig, now, len0);
    assert_int_equal(count_entries(f->dir), 1);

    /* And a successful overwrite replaces it. */
    assert_int_equal(safetensors_write(p, big, bigdata, NULL, 0, err, sizeof err), 0);
    schema_t *r = NULL;
    float *d = NULL;
    assert_int_equal(safetensors_read(p, &r, &d, NULL, NULL, err, sizeof err), 0);
    assert_true(schema_equal(r, big));
    assert_int_equal(count_entries(f->dir), 1);

    free(d);
    schema_destroy(&r);
    free(orig);
    free(now);
    free(bigdata);
    free(data);
    schema_destroy(&big);
    schema_destroy(&s);
    unlink(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_basic),
        cmocka_unit_test(test_schema_full_and_equal),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_zero_sized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_python_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_mutations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
