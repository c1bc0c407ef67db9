/*
 * dicom_worker_main.c - bin/medfed-dicom-worker: decodes one image per request
 * on stdin, answers on stdout (imaging/dicom_proto.h), until EOF. Started and
 * restarted by imaging/dicom.c; never run by hand. It prints no tag value, on
 * stdout or stderr: replies carry fixed phrases, GDCM's own messages are off.
 *
 * Test hook: with MEDFED_DICOM_WORKER_TEST=1 in its environment, a payload
 * that starts with "MEDFED-TEST-ABORT" makes it abort() (as GDCM does on some
 * files) and one that starts with "MEDFED-TEST-HANG" makes it hang.
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imaging/dicom_decode.h"
#include "imaging/dicom_prep.h"
#include "imaging/dicom_proto.h"
#include "common/util.h"
#include "common/version.h"

#define DICOM_WORKER_AS_LIMIT ((rlim_t)3 << 30) /* 3 GiB: the largest request needs < 2 */

/* 1 = read all, 0 = EOF before the first byte, -1 = error or EOF inside. */
static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (uint8_t *)buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return got == 0 && n == 0 ? 0 : -1;
        got += (size_t)n;
    }
    return 1;
}

static int write_full(int fd, const void *buf, size_t len)
{
    size_t put = 0;
    while (put < len) {
        ssize_t n = write(fd, (const uint8_t *)buf + put, len - put);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        put += (size_t)n;
    }
    return 0;
}

static void test_hook(const uint8_t *buf, size_t len)
{
    static const char abort_tag[] = "MEDFED-TEST-ABORT", hang_tag[] = "MEDFED-TEST-HANG";
    const char *on = getenv("MEDFED_DICOM_WORKER_TEST");
    if (!on || strcmp(on, "1") != 0) return;
    if (len >= sizeof abort_tag - 1 && memcmp(buf, abort_tag, sizeof abort_tag - 1) == 0) abort();
    if (len >= sizeof hang_tag - 1 && memcmp(buf, hang_tag, sizeof hang_tag - 1) == 0)
        for (;;) pause();
}

static int reply_fd = 1;

/* A forged length makes GDCM allocate what it says (4 GB for a 2 KB file):
 * cap the address space so that fails inside the worker, not on the host.
 * Under AddressSanitizer (terabytes of shadow memory) its allocator is
 * capped instead, with the same effect: the allocation fails, GDCM gives up. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=3072:allocator_may_return_null=1";
}
static void limit_memory(void) {}
#else
static void limit_memory(void)
{
    struct rlimit rl = {.rlim_cur = DICOM_WORKER_AS_LIMIT, .rlim_max = DICOM_WORKER_AS_LIMIT};
    setrlimit(RLIMIT_AS, &rl);
}
#endif

static int reply(dicom_status_t st, const char *reason, const dicom_image_t *img, size_t npix)
{
    size_t rl = strlen(reason), al = strlen(img->accession), sl = strlen(img->sop_uid);
    if (rl > DICOM_PROTO_REASON_MAX) rl = DICOM_PROTO_REASON_MAX;
    uint8_t h[DICOM_PROTO_REP_HEADER];
    dicom_proto_put32(h, DICOM_PROTO_REP);
    dicom_proto_put32(h + 4, (uint32_t)st);
    dicom_proto_put32(h + 8, (uint32_t)rl);
    dicom_proto_put32(h + 12, (uint32_t)al);
    dicom_proto_put32(h + 16, (uint32_t)sl);
    dicom_proto_put32(h + 20, (uint32_t)npix);
    if (write_full(reply_fd, h, sizeof h) < 0 || write_full(reply_fd, reason, rl) < 0 ||
        write_full(reply_fd, img->accession, al) < 0 || write_full(reply_fd, img->sop_uid, sl) < 0)
        return -1;
    return npix ? write_full(reply_fd, img->pixels, npix * sizeof(float)) : 0;
}

/* A request's header (dicom_proto.h): 0 with its kind, payload length and
 * preprocessing, or -1 when it is malformed. The parser
 * tests/fuzz/fuzz_dicom_proto.c runs. */
static int request_parse(const uint8_t h[DICOM_PROTO_REQ_HEADER], uint32_t *kind, uint32_t *plen,
                         dicom_prep_t *prep)
{
    *kind = dicom_proto_get32(h + 4);
    *plen = dicom_proto_get32(h + 40);
    *prep = (dicom_prep_t){
        .height = (int)dicom_proto_get32(h + 8), .width = (int)dicom_proto_get32(h + 12),
        .window = (dicom_window_t)dicom_proto_get32(h + 16),
        .center = dicom_proto_getf64(h + 24), .width_w = dicom_proto_getf64(h + 32),
    };
    if (dicom_proto_get32(h) != DICOM_PROTO_REQ || dicom_proto_get32(h + 8) > DICOM_PREP_MAX_SIDE ||
        dicom_proto_get32(h + 12) > DICOM_PREP_MAX_SIDE || dicom_proto_get32(h + 16) > 2 ||
        !dicom_prep_valid(prep) ||
        (*kind == DICOM_PROTO_PATH && (*plen < 1 || *plen > DICOM_PROTO_PATH_MAX)) ||
        (*kind == DICOM_PROTO_BYTES && *plen > DICOM_PROTO_BYTES_MAX) ||
        (*kind != DICOM_PROTO_PATH && *kind != DICOM_PROTO_BYTES))
        return -1;
    return 0;
}

/* One request: 1 answered, 0 EOF, -1 malformed request or dead pipe. */
static int serve_one(void)
{
    uint8_t h[DICOM_PROTO_REQ_HEADER];
    int r = read_full(0, h, sizeof h);
    if (r <= 0) return r;
    uint32_t kind, plen;
    dicom_prep_t prep;
    if (request_parse(h, &kind, &plen, &prep) < 0) {
        fprintf(stderr, "medfed-dicom-worker: malformed request\n");
        return -1;
    }
    uint8_t *payload = malloc((size_t)plen + 1);
    if (!payload || (plen && read_full(0, payload, plen) != 1)) {
        free(payload);
        return -1;
    }
    payload[plen] = 0;

    char reason[DICOM_PROTO_REASON_MAX + 1] = "";
    dicom_image_t img = {0};
    dicom_status_t st = DICOM_SKIP_MALFORMED;
    uint8_t *data = payload;
    size_t len = plen;
    if (kind == DICOM_PROTO_PATH) {
        if (memchr(payload, 0, plen)) {
            free(payload);
            return -1;
        }
        /* the reason stays generic: a file name may carry an identifier */
        char why[PATH_MAX + 128];
        data = (uint8_t *)util_read_file((const char *)payload, DICOM_PROTO_BYTES_MAX, &len, why,
                                         sizeof why);
        if (!data)
            util_seterr(reason, sizeof reason, "%s",
                        strstr(why, "larger than") ? "file too large" : "cannot read the file");
    }
    size_t npix = (size_t)prep.height * (size_t)prep.width;
    img.pixels = malloc(npix * sizeof *img.pixels);
    if (data && img.pixels) {
        test_hook(data, len);
        if (dicom_png_is_png(data, len))
            st = dicom_png_decode(data, len, &prep, &img, reason, sizeof reason);
        else st = dicom_gdcm_decode(data, len, &prep, &img, reason, sizeof reason);
    } else if (!img.pixels) {
        st = DICOM_SKIP_UNSUPPORTED;
        util_seterr(reason, sizeof reason, "out of memory");
    }
    if (st >= DICOM_STATUS_COUNT) st = DICOM_SKIP_MALFORMED;
    int rc = reply(st, st == DICOM_OK ? "" : reason, &img, st == DICOM_OK ? npix : 0);
    if (data != payload) free(data);
    free(payload);
    free(img.pixels);
    return rc < 0 ? -1 : 1;
}

int main(int argc, char **argv)
{
    if (medfed_version_flag(argc, argv, "medfed-dicom-worker")) return 0;
    if (argc != 1) {
        fprintf(stderr, "medfed-dicom-worker: started by medfed-client; takes no arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_DFL);
    /* Keep freed image buffers in the heap: the next image reuses the pages
     * instead of faulting in fresh ones (a third of the time on 2048^2 CRs). */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    limit_memory();
    /* Replies go to a private copy of stdout; fd 1 itself is /dev/null, so a
     * library that prints cannot corrupt the pipe. */
    reply_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (reply_fd < 0 || null < 0 || dup2(null, 1) < 0) {
        fprintf(stderr, "medfed-dicom-worker: cannot set up its descriptors\n");
        return 1;
    }
    close(null);
    dicom_gdcm_init();
    int r;
    while ((r = serve_one()) > 0) {}
    return r < 0 ? 1 : 0;
}
