/*
 * fuzz_dicomweb.c - libFuzzer harness for what a PACS sends back
 * (imaging/dicomweb.c, included so its statics are reached): the QIDO-RS JSON
 * scanner, the multipart/related parser and the Content-Type boundary reader.
 *
 * The first input byte picks the parser; the rest is copied into a buffer of
 * exactly its size (no terminator), so any read past the end is an ASan report.
 * Checks: a refusal leaves a message and appends nothing; an accepted search
 * gives UIDs of digits and dots, printable accession numbers; every accepted
 * part lies inside the body and within the size limit.
 *
 * Seeds: MEDFED_FUZZ_WRITE_SEEDS=dir writes one valid input per parser.
 */
#include "imaging/dicomweb.c"
#include "tests/fuzz/fuzz_common.h"

#define PART_MAX 4096

static void seed(const char *name, uint8_t which, const char *text, size_t len)
{
    fz_seed_t s = {.n = 0};
    fz_seed_byte(&s, which);
    fz_seed_bytes(&s, (const uint8_t *)text, len);
    fz_seed_write(name, &s);
}

static void write_seeds(void)
{
    static const char qido[] =
        "[{\"0020000D\":{\"vr\":\"UI\",\"Value\":[\"1.2.3\"]},\"0020000E\":{\"vr\":\"UI\","
        "\"Value\":[\"1.2.3.4\"]},\"00080018\":{\"vr\":\"UI\",\"Value\":[\"1.2.3.4.5\"]},"
        "\"00080050\":{\"vr\":\"SH\",\"Value\":[\"ACC1\"]},\"00100010\":{\"vr\":\"PN\","
        "\"Value\":[{\"Alphabetic\":\"A^B\"}]},\"00280010\":{\"vr\":\"US\",\"Value\":[28]}}]";
    static const char multi[] = "--XYZ\r\nContent-Type: application/dicom\r\nContent-Length: 4\r\n"
                                "\r\nDICM\r\n--XYZ\r\n\r\nab\r\n--XYZ--\r\n";
    static const char ctype[] = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    seed("seed-qido", 0, qido, sizeof qido - 1);
    seed("seed-multipart", 1, multi, sizeof multi - 1);
    seed("seed-boundary", 2, ctype, sizeof ctype - 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (fz_seed_dir()) {
        write_seeds();
        exit(0);
    }
    return 0;
}

static int all_in(const char *s, const char *set)
{
    return s[strspn(s, set)] == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t which = data[0] % 3;
    size_t len = size - 1;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return 0;
    memcpy(buf, data + 1, len);
    char err[256];
    memset(err, 0x55, sizeof err);
    if (which == 0) {
        dicomweb_list_t l = {0};
        size_t entries, unusable;
        if (dicomweb_qido_parse((const char *)buf, len, &l, &entries, &unusable, err, sizeof err) < 0) {
            FZ_CHECK(memchr(err, '\0', sizeof err) && err[0]);
            FZ_CHECK(l.n == 0);
        } else {
            FZ_CHECK(l.n + unusable == entries);
            for (size_t i = 0; i < l.n; i++) {
                FZ_CHECK(all_in(l.v[i].study_uid, "0123456789.") && l.v[i].study_uid[0]);
                FZ_CHECK(all_in(l.v[i].series_uid, "0123456789.") && l.v[i].series_uid[0]);
                FZ_CHECK(all_in(l.v[i].sop_uid, "0123456789.") && l.v[i].sop_uid[0]);
                for (const char *p = l.v[i].accession; *p; p++) FZ_CHECK(*p >= 0x20 && *p < 0x7f);
            }
        }
        dicomweb_list_free(&l);
    } else if (which == 1) {
        dicomweb_part_t parts[4];
        size_t n = 0;
        if (dicomweb_multipart_parse(buf, len, "XYZ", PART_MAX, parts, 4, &n, err, sizeof err) < 0) {
            FZ_CHECK(memchr(err, '\0', sizeof err) && err[0]);
        } else {
            FZ_CHECK(n >= 1 && n <= 4);
            for (size_t i = 0; i < n; i++) {
                FZ_CHECK(parts[i].data >= buf && parts[i].len <= PART_MAX);
                FZ_CHECK((size_t)(parts[i].data - buf) + parts[i].len <= len);
                FZ_CHECK(memchr(parts[i].content_type, '\0', sizeof parts[i].content_type));
            }
        }
    } else {
        char *ct = malloc(len + 1);
        char b[DICOMWEB_BOUNDARY_MAX + 1];
        if (ct) {
            memcpy(ct, buf, len);
            ct[len] = '\0';
            if (dicomweb_boundary(ct, b, err, sizeof err) == 0)
                FZ_CHECK(strlen(b) >= 1 && strlen(b) <= DICOMWEB_BOUNDARY_MAX);
            free(ct);
        }
    }
    free(buf);
    return 0;
}
