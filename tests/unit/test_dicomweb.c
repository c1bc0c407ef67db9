/*
 * test_dicomweb.c - imaging/dicomweb (QIDO JSON subset, multipart/related,
 * pacing) and imaging/tensor_cache (round trip, damaged entries, eviction).
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

#include "imaging/dicom_source.h"
#include "imaging/dicomweb.h"
#include "imaging/tensor_cache.h"

/* ---- QIDO JSON ------------------------------------------------------------------ */

#define INST(st, se, sop, acc)                                                                \
    "{\"0020000D\":{\"vr\":\"UI\",\"Value\":[\"" st "\"]},"                                    \
    "\"0020000E\":{\"vr\":\"UI\",\"Value\":[\"" se "\"]},"                                     \
    "\"00080018\":{\"vr\":\"UI\",\"Value\":[\"" sop "\"]},"                                    \
    "\"00080050\":{\"vr\":\"SH\",\"Value\":[\"" acc "\"]},"                                    \
    "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"DOE^JOHN\"}]},"                 \
    "\"00280010\":{\"vr\":\"US\",\"Value\":[28, -1.5e3, true, null]}}"

static void test_qido_good(void **state)
{
    (void)state;
    const char *j = " [ " INST("1.2.3", "1.2.3.4", "1.2.3.4.5", "ACC001") ",\n"
                    INST("1.2.3", "1.2.3.4", "1.2.3.4.6", "ACC002") ",\n"
                    "{\"0020000D\":{\"vr\":\"UI\",\"Value\":[\"1.2\"]}} ] \n";
    dicomweb_list_t l = {0};
    size_t entries, unusable;
    char err[256];
    assert_int_equal(dicomweb_qido_parse(j, strlen(j), &l, &entries, &unusable, err, sizeof err), 0);
    assert_int_equal(entries, 3);
    assert_int_equal(unusable, 1); /* no series / SOP UID */
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0].study_uid, "1.2.3");
    assert_string_equal(l.v[0].series_uid, "1.2.3.4");
    assert_string_equal(l.v[1].sop_uid, "1.2.3.4.6");
    assert_string_equal(l.v[1].accession, "ACC002");
    /* pages append */
    assert_int_equal(dicomweb_qido_parse("[]", 2, &l, &entries, &unusable, err, sizeof err), 0);
    assert_int_equal(entries, 0);
    assert_int_equal(dicomweb_qido_parse("", 0, &l, &entries, &unusable, err, sizeof err), 0);
    assert_int_equal(l.n, 2);
    dicomweb_list_free(&l);
}

static void test_qido_bad_values(void **state)
{
    (void)state;
    /* a UID with letters, a UID too long, an escaped accession: unusable or dropped */
    const char *j = "[" INST("1.2.x", "1.2", "1.3", "A") "," INST(
        "1.2", "1.2", "1.00000000001111111111222222222233333333334444444444555555555566666", "A")
                    "," INST("1.2", "1.2", "1.4", "A\\u0000B") "," INST("1..2", "1.2", "1.5", "A")
                    "]";
    dicomweb_list_t l = {0};
    size_t entries, unusable;
    char err[256];
    assert_int_equal(dicomweb_qido_parse(j, strlen(j), &l, &entries, &unusable, err, sizeof err), 0);
    assert_int_equal(entries, 4);
    assert_int_equal(unusable, 3);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].sop_uid, "1.4");
    assert_string_equal(l.v[0].accession, ""); /* not usable as a key */
    dicomweb_list_free(&l);
}

static void test_qido_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "{}",
        "[",
        "[{",
        "[{\"0020000D\"}]",
        "[{\"0020000D\":{\"Value\":[\"1.2\"]}",
        "[{\"a\":1,}]",
        "[{\"a\":01}]",
        "[{\"a\":\"x\\q\"}]",
        "[{\"a\":\"x\ny\"}]",
        "[{\"a\":tru}]",
        "[] x",
        "[1]",
        "[{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]",
        "[{\"a\":\"unterminated",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dicomweb_list_t l = {0};
        size_t entries, unusable;
        char err[256] = "";
        assert_int_equal(dicomweb_qido_parse(bad[i], strlen(bad[i]), &l, &entries, &unusable,
                                             err, sizeof err), -1);
        assert_true(strlen(err) > 0);
        assert_int_equal(l.n, 0);
        dicomweb_list_free(&l);
    }
    /* not NUL-terminated: the scanner stops at len */
    const char *j = "[" INST("1.2", "1.2", "1.3", "A") "]";
    dicomweb_list_t l = {0};
    size_t entries, unusable;
    char err[256];
    assert_int_equal(dicomweb_qido_parse(j, strlen(j) - 1, &l, &entries, &unusable, err, sizeof err), -1);
    dicomweb_list_free(&l);
}

/* ---- multipart ------------------------------------------------------------------------ */

static void test_boundary(void **state)
{
    (void)state;
    char b[DICOMWEB_BOUNDARY_MAX + 1], err[128];
    assert_int_equal(dicomweb_boundary("multipart/related; type=\"application/dicom\"; boundary=abc123",
                                       b, err, sizeof err), 0);
    assert_string_equal(b, "abc123");
    assert_int_equal(dicomweb_boundary("Multipart/Related;boundary=\"a b\";type=x", b, err, sizeof err), 0);
    assert_string_equal(b, "a b");
    assert_int_equal(dicomweb_boundary("application/dicom", b, err, sizeof err), -1);
    assert_int_equal(dicomweb_boundary("multipart/related; type=x", b, err, sizeof err), -1);
    assert_int_equal(dicomweb_boundary("multipart/related; boundary=\"unterminated", b, err, sizeof err), -1);
    char longb[200];
    snprintf(longb, sizeof longb, "multipart/related; boundary=%0100d", 0);
    assert_int_equal(dicomweb_boundary(longb, b, err, sizeof err), -1);
}

static void test_multipart_good(void **state)
{
    (void)state;
    const char body[] = "preamble\r\n--XYZ\r\nContent-Type: application/dicom\r\n"
                        "Content-Length: 5\r\n\r\nAB\0DE\r\n--XYZ\r\n"
                        "Content-Type: Application/DICOM\r\n\r\n--XY\r\n\r\n--XYZ--\r\n";
    dicomweb_part_t parts[4];
    size_t n;
    char err[128];
    assert_int_equal(dicomweb_multipart_parse((const uint8_t *)body, sizeof body - 1, "XYZ", 100,
                                              parts, 4, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(parts[0].len, 5);
    assert_memory_equal(parts[0].data, "AB\0DE", 5);
    assert_string_equal(parts[0].content_type, "application/dicom");
    assert_int_equal(parts[1].len, 6);
    assert_memory_equal(parts[1].data, "--XY\r\n", 6);
    assert_string_equal(parts[1].content_type, "application/dicom");
    /* no preamble, no part headers */
    const char b2[] = "--b\r\n\r\nhello\r\n--b--";
    assert_int_equal(dicomweb_multipart_parse((const uint8_t *)b2, sizeof b2 - 1, "b", 100, parts,
                                              4, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(parts[0].len, 5);
}

static void expect_bad(const char *body, size_t len, size_t max_part, size_t max_parts,
                       const char *why)
{
    dicomweb_part_t parts[4];
    size_t n;
    char err[128] = "";
    assert_int_equal(dicomweb_multipart_parse((const uint8_t *)body, len, "XYZ", max_part, parts,
                                              max_parts, &n, err, sizeof err), -1);
    if (!strstr(err, why)) fail_msg("expected '%s' in '%s'", why, err);
}

static void test_multipart_bad(void **state)
{
    (void)state;
    const char good[] = "--XYZ\r\nContent-Type: application/dicom\r\n\r\n0123456789\r\n--XYZ--";
    size_t gl = sizeof good - 1;
    /* truncated at every length: never accepted, never read past len */
    for (size_t cut = 0; cut < gl - 2; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, good, cut);
        dicomweb_part_t parts[4];
        size_t n;
        char err[128];
        assert_int_equal(dicomweb_multipart_parse((const uint8_t *)copy, cut, "XYZ", 100, parts, 4,
                                                  &n, err, sizeof err), -1);
        free(copy);
    }
    expect_bad("no boundary here", 16, 100, 4, "without its boundary");
    expect_bad(good, gl, 9, 4, "over the limit");
    const char two[] = "--XYZ\r\n\r\na\r\n--XYZ\r\n\r\nb\r\n--XYZ--";
    expect_bad(two, sizeof two - 1, 100, 1, "more than 1 parts");
    const char clen[] = "--XYZ\r\nContent-Length: 4\r\n\r\nabc\r\n--XYZ--";
    expect_bad(clen, sizeof clen - 1, 100, 4, "Content-Length");
    const char nohdr[] = "--XYZ\r\nno colon line\r\n\r\nabc\r\n--XYZ--";
    expect_bad(nohdr, sizeof nohdr - 1, 100, 4, "malformed header");
    const char empty[] = "--XYZ--";
    expect_bad(empty, sizeof empty - 1, 100, 4, "no part");
    const char junk[] = "--XYZjunk\r\n\r\nabc\r\n--XYZ--";
    expect_bad(junk, sizeof junk - 1, 100, 4, "truncated after a boundary");
    /* a header block that never ends */
    size_t hl = DICOMWEB_PART_HEADERS_MAX + 64;
    char *big = malloc(hl);
    memset(big, 'h', hl);
    memcpy(big, "--XYZ\r\nX: ", 10);
    expect_bad(big, hl, 100, 4, "header block");
    free(big);
}

/* ---- pacing ----------------------------------------------------------------------------- */

static void test_ratelimit(void **state)
{
    (void)state;
    ratelimit_t r;
    ratelimit_init(&r, 5);
    assert_true(ratelimit_reserve(&r, 100.0) == 0.0);
    double w = ratelimit_reserve(&r, 100.0);
    assert_true(w > 0.199 && w < 0.201);
    w = ratelimit_reserve(&r, 100.1); /* third at 100.4 */
    assert_true(w > 0.299 && w < 0.301);
    /* after a long idle there is no burst credit beyond one request */
    assert_true(ratelimit_reserve(&r, 200.0) == 0.0);
    w = ratelimit_reserve(&r, 200.0);
    assert_true(w > 0.199 && w < 0.201);
    /* 0 = unlimited */
    ratelimit_init(&r, 0);
    assert_true(ratelimit_reserve(&r, 1.0) == 0.0 && ratelimit_reserve(&r, 1.0) == 0.0);
    /* back-off */
    assert_true(dicomweb_backoff(1, -1, 30) == 0.5);
    assert_true(dicomweb_backoff(3, -1, 30) == 2.0);
    assert_true(dicomweb_backoff(20, -1, 30) == 30.0);
    assert_true(dicomweb_backoff(1, 7, 30) == 7.0);
    assert_true(dicomweb_backoff(1, 3600, 30) == 30.0);
}

/* ---- tensor cache ------------------------------------------------------------------------ */

typedef struct {
    char dir[64];
    char cache[96];
} cache_fx_t;

static int cache_setup(void **state)
{
    cache_fx_t *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/medfed-tc-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->cache, sizeof f->cache, "%s/a/cache", f->dir);
    *state = f;
    return 0;
}

static int cache_teardown(void **state)
{
    cache_fx_t *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static const uint8_t SALT[TENSOR_CACHE_SALTBYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static void fill(float *x, size_t n, float seed)
{
    for (size_t i = 0; i < n; i++) x[i] = seed + (float)i * 0.001f;
}

static void test_cache_round_trip(void **state)
{
    cache_fx_t *f = *state;
    char err[256];
    dicom_prep_t prep = {.height = 8, .width = 6, .window = DICOM_WINDOW_AUTO};
    tensor_cache_t *c = tensor_cache_open(f->cache, 0, SALT, err, sizeof err);
    assert_non_null(c);
    struct stat sb;
    assert_int_equal(stat(f->cache, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    float in[48], out[48];
    fill(in, 48, 1.0f);
    assert_int_equal(tensor_cache_get(c, "1.2.3", &prep, out), 0);
    assert_int_equal(tensor_cache_put(c, "1.2.3", &prep, in, err, sizeof err), 0);
    assert_int_equal(tensor_cache_get(c, "1.2.3", &prep, out), 1);
    assert_memory_equal(in, out, sizeof in);
    /* other prep parameters, other salt: other entries */
    dicom_prep_t prep2 = prep;
    prep2.window = DICOM_WINDOW_MINMAX;
    assert_int_equal(tensor_cache_get(c, "1.2.3", &prep2, out), 0);
    char k1[TENSOR_CACHE_KEYHEX + 1], k2[TENSOR_CACHE_KEYHEX + 1];
    tensor_cache_key(c, "1.2.3", &prep, k1);
    tensor_cache_close(&c);
    assert_null(c);
    uint8_t salt2[TENSOR_CACHE_SALTBYTES] = {0};
    c = tensor_cache_open(f->cache, 0, salt2, err, sizeof err);
    tensor_cache_key(c, "1.2.3", &prep, k2);
    assert_string_not_equal(k1, k2);
    tensor_cache_close(&c);
    /* reopened: the entry is there, private, and holds no identifier */
    c = tensor_cache_open(f->cache, 0, SALT, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(tensor_cache_get(c, "1.2.3", &prep, out), 1);
    assert_memory_equal(in, out, sizeof in);
    char p[256];
    snprintf(p, sizeof p, "%s/%s", f->cache, k1);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    tensor_cache_stats_t st;
    tensor_cache_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 1);
    tensor_cache_close(&c);
    /* a cache directory others can read is refused */
    assert_int_equal(chmod(f->cache, 0755), 0);
    c = tensor_cache_open(f->cache, 0, SALT, err, sizeof err);
    assert_null(c);
    assert_non_null(strstr(err, "chmod 700"));
}

static void test_cache_corrupt(void **state)
{
    cache_fx_t *f = *state;
    char err[256], k[TENSOR_CACHE_KEYHEX + 1], p[256];
    dicom_prep_t prep = {.height = 4, .width = 4};
    float in[16], out[16];
    fill(in, 16, 2.0f);
    tensor_cache_t *c = tensor_cache_open(f->cache, 0, SALT, err, sizeof err);
    assert_non_null(c);
    const char *uids[] = {"1.1", "1.2", "1.3"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tensor_cache_put(c, uids[i], &prep, in, err, sizeof err), 0);
    /* 1.1: a flipped pixel bit; 1.2: truncated; 1.3: header damaged */
    tensor_cache_key(c, "1.1", &prep, k);
    snprintf(p, sizeof p, "%s/%s", f->cache, k);
    FILE *fp = fopen(p, "r+b");
    assert_non_null(fp);
    fseek(fp, 40, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, 40, SEEK_SET);
    fputc(ch ^ 1, fp);
    fclose(fp);
    tensor_cache_key(c, "1.2", &prep, k);
    snprintf(p, sizeof p, "%s/%s", f->cache, k);
    assert_int_equal(truncate(p, 30), 0);
    tensor_cache_key(c, "1.3", &prep, k);
    snprintf(p, sizeof p, "%s/%s", f->cache, k);
    fp = fopen(p, "r+b");
    fputc('X', fp);
    fclose(fp);
    for (int i = 0; i < 3; i++) assert_int_equal(tensor_cache_get(c, uids[i], &prep, out), 0);
    tensor_cache_stats_t st;
    tensor_cache_stats(c, &st);
    assert_int_equal(st.corrupt, 3);
    assert_int_equal(st.entries, 0);
    assert_int_equal(access(p, F_OK), -1); /* deleted */
    /* refetched and stored again */
    assert_int_equal(tensor_cache_put(c, "1.3", &prep, in, err, sizeof err), 0);
    assert_int_equal(tensor_cache_get(c, "1.3", &prep, out), 1);
    /* another prep size reading an entry name is impossible, but a header that
     * disagrees with the prep is a miss too */
    tensor_cache_close(&c);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_cache_eviction(void **state)
{
    cache_fx_t *f = *state;
    char err[256];
    dicom_prep_t prep = {.height = 16, .width = 16}; /* 24 + 1024 bytes per entry */
    float in[256], out[256];
    fill(in, 256, 3.0f);
    const uint64_t entry = 24 + 1024;
    tensor_cache_t *c = tensor_cache_open(f->cache, 5 * entry, SALT, err, sizeof err);
    assert_non_null(c);
    char uid[32];
    for (int i = 0; i < 5; i++) {
        snprintf(uid, sizeof uid, "2.%d", i);
        assert_int_equal(tensor_cache_put(c, uid, &prep, in, err, sizeof err), 0);
        usleep(2000); /* distinct mtimes */
    }
    assert_int_equal(count_files(f->cache), 5);
    /* 2.0 used recently: 2.1 and 2.2 are the oldest */
    assert_int_equal(tensor_cache_get(c, "2.0", &prep, out), 1);
    usleep(2000);
    for (int i = 5; i < 7; i++) {
        snprintf(uid, sizeof uid, "2.%d", i);
        assert_int_equal(tensor_cache_put(c, uid, &prep, in, err, sizeof err), 0);
        usleep(2000);
    }
    tensor_cache_stats_t st;
    tensor_cache_stats(c, &st);
    assert_int_equal(st.evicted, 2);
    assert_true(st.bytes <= 5 * entry);
    assert_int_equal(count_files(f->cache), 5);
    assert_int_equal(tensor_cache_get(c, "2.1", &prep, out), 0);
    assert_int_equal(tensor_cache_get(c, "2.2", &prep, out), 0);
    assert_int_equal(tensor_cache_get(c, "2.0", &prep, out), 1);
    assert_int_equal(tensor_cache_get(c, "2.6", &prep, out), 1);
    tensor_cache_close(&c);
    /* reopened with a smaller cap: the next put evicts down to it, oldest first */
    c = tensor_cache_open(f->cache, 2 * entry, SALT, err, sizeof err);
    assert_non_null(c);
    tensor_cache_stats(c, &st);
    assert_int_equal(st.entries, 5);
    assert_int_equal(tensor_cache_put(c, "2.9", &prep, in, err, sizeof err), 0);
    assert_int_equal(count_files(f->cache), 2);
    assert_int_equal(tensor_cache_get(c, "2.9", &prep, out), 1);
    assert_int_equal(tensor_cache_get(c, "2.6", &prep, out), 1); /* the newest before */
    tensor_cache_close(&c);
}

/* ---- transfer syntax of a retrieved instance, progress of a pull ------------------- */

/* A Part 10 header: preamble, "DICM", (0002,0001) OB, (0002,0010) UI ts. */
static size_t part10(uint8_t *b, const char *ts)
{
    memset(b, 0, 128);
    memcpy(b + 128, "DICM", 4);
    size_t o = 132;
    const uint8_t ver[] = {0x02, 0x00, 0x01, 0x00, 'O', 'B', 0, 0, 2, 0, 0, 0, 0, 1};
    memcpy(b + o, ver, sizeof ver);
    o += sizeof ver;
    size_t n = strlen(ts), padded = n + (n & 1);
    const uint8_t hdr[] = {0x02, 0x00, 0x10, 0x00, 'U', 'I', (uint8_t)padded, 0};
    memcpy(b + o, hdr, sizeof hdr);
    o += sizeof hdr;
    memcpy(b + o, ts, n);
    if (n & 1) b[o + n] = 0;
    return o + padded;
}

static void test_transfer_syntax(void **state)
{
    (void)state;
    assert_non_null(strstr(DICOMWEB_ACCEPT_INSTANCE, "; transfer-syntax=*"));
    uint8_t b[512];
    char uid[DICOMWEB_UID_MAX];
    size_t n = part10(b, "1.2.840.10008.1.2.4.90");
    assert_int_equal(dicomweb_transfer_syntax(b, n, uid), 0);
    assert_string_equal(uid, "1.2.840.10008.1.2.4.90");
    assert_string_equal(dicomweb_transfer_syntax_name(uid), "JPEG 2000 lossless");
    n = part10(b, "1.2.840.10008.1.2.1"); /* odd length: padded with NUL */
    assert_int_equal(dicomweb_transfer_syntax(b, n, uid), 0);
    assert_string_equal(uid, "1.2.840.10008.1.2.1");
    assert_string_equal(dicomweb_transfer_syntax_name("1.2.3"), "other");
    /* every cut of the header is refused: nothing past len is read, even
     * where the buffer goes on (the bytes after the cut are the valid rest) */
    for (size_t cut = 0; cut < n; cut++) assert_int_equal(dicomweb_transfer_syntax(b, cut, uid), -1);
    /* not Part 10; a length past the end; a UID with a letter */
    b[128] = 'X';
    assert_int_equal(dicomweb_transfer_syntax(b, n, uid), -1);
    n = part10(b, "1.2.840.10008.1.2.5");
    b[132 + 14 + 6] = 200;
    assert_int_equal(dicomweb_transfer_syntax(b, n, uid), -1);
    n = part10(b, "1.2.840.10008.1.2.x");
    assert_int_equal(dicomweb_transfer_syntax(b, n, uid), -1);
}

static void test_progress(void **state)
{
    (void)state;
    dicom_progress_t p;
    char line[256];
    dicom_progress_start(&p, "dicomweb", 20000, 5.0);
    p.t0 = p.last = 1000.0; /* a clock of the test's own */
    assert_int_equal(dicom_progress_update(&p, 10, 1001.0, line, sizeof line), 0);
    /* 1200 of 20000 after 250 s: 4.8 images/s, 18800 left: 65 min */
    assert_int_equal(dicom_progress_update(&p, 1200, 1250.0, line, sizeof line), 1);
    assert_string_equal(line, "dicomweb: 1200 of 20000 images (6%), 4.8 images/s, about 65 min left");
    assert_int_equal(dicom_progress_update(&p, 1210, 1252.0, line, sizeof line), 0);
    assert_int_equal(dicom_progress_update(&p, 19990, 1255.0, line, sizeof line), 1);
    assert_non_null(strstr(line, "about 0 s left"));
    assert_int_equal(p.lines, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qido_good),
        cmocka_unit_test(test_qido_bad_values),
        cmocka_unit_test(test_qido_malformed),
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_multipart_good),
        cmocka_unit_test(test_multipart_bad),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_transfer_syntax),
        cmocka_unit_test(test_progress),
        cmocka_unit_test_setup_teardown(test_cache_round_trip, cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_cache_corrupt, cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_cache_eviction, cache_setup, cache_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
