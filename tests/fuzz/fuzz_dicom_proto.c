/*
 * fuzz_dicom_proto.c - libFuzzer harness for the pipe between the client
 * daemon and its DICOM worker (imaging/dicom_proto.h): the daemon's reply
 * parser (reply_read in imaging/dicom.c: what a worker that a hostile file has
 * taken over may send back) and the worker's request parser (request_parse in
 * imaging/dicom_worker_main.c). Both files are included, to reach their
 * statics; the worker's main is renamed and its decoders (GDCM, libpng) are
 * replaced by refusing stand-ins: they are not the protocol, and no input
 * reaches them (the harness parses requests, it never serves one).
 *
 * Byte 0 picks the mode (mod 3):
 *   0 reply: bytes 1 and 2 give the image size the daemon asked for (height
 *     and width, 1 + b % 16 each); the rest is the worker's reply, written
 *     into a socketpair whose far end is then shut (EOF after it), read by
 *     reply_read. Checks: a refusal names why and leaves no pixels; an
 *     accepted reply has a status below DICOM_STATUS_COUNT, a reason of at
 *     most DICOM_PROTO_REASON_MAX, keys shorter than DICOM_KEY_MAX, each
 *     string and the pixels as the stream holds them, pixels exactly when the
 *     status is DICOM_OK, and took exactly its header, three strings and
 *     pixels from the stream (the rest is still there).
 *   1 requests: the rest is the stream the worker reads; each header goes
 *     through request_parse, then its payload is skipped (a path holding a
 *     NUL ends the stream, as serve_one does). Checks: an accepted header has
 *     its kind, sizes, window and payload length within the protocol's limits
 *     and a valid preprocessing, and writing its fields again as the daemon
 *     does gives the same 44 bytes (but the reserved word).
 *   2 round trip: the rest draws a request (size, window, kind, payload
 *     length) and a reply (status, reason, accession, SOP UID, pixels). The
 *     request as exchange() writes it parses to the same fields when they are
 *     valid; the reply written by the worker's own reply() is read back by
 *     reply_read to the same fields and pixel bytes.
 *
 * Seeds: MEDFED_FUZZ_WRITE_SEEDS=dir writes one valid input per mode.
 */
#define main medfed_dicom_worker_main
#include "imaging/dicom_worker_main.c"
#undef main
#include "imaging/dicom.c"
#include "imaging/dicom_prep.c"
#include "tests/fuzz/fuzz_common.h"

#include <sys/socket.h>

#define SIDE_MAX 16 /* the image the harness asks for: up to 16 x 16 */

/* ---- the worker's decoders: not the protocol, never reached -------------------------------- */

void dicom_gdcm_init(void) {}

dicom_status_t dicom_gdcm_decode(const uint8_t *buf, size_t len, const dicom_prep_t *prep,
                                 dicom_image_t *out, char *reason, size_t reasonlen)
{
    (void)buf, (void)len, (void)prep, (void)out;
    util_seterr(reason, reasonlen, "not decoded in the pipe-protocol harness");
    return DICOM_SKIP_UNSUPPORTED;
}

int dicom_png_is_png(const uint8_t *buf, size_t len)
{
    (void)buf, (void)len;
    return 0;
}

dicom_status_t dicom_png_decode(const uint8_t *buf, size_t len, const dicom_prep_t *prep,
                                dicom_image_t *out, char *reason, size_t reasonlen)
{
    return dicom_gdcm_decode(buf, len, prep, out, reason, reasonlen);
}

/* ---- helpers -------------------------------------------------------------------------------- */

/* A socketpair holding bytes, its writing end shut: sv[0] reads them, then EOF. */
static int stream_of(const uint8_t *p, size_t n, int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    size_t put = 0;
    while (put < n) {
        ssize_t w = send(sv[1], p + put, n - put, MSG_NOSIGNAL | MSG_DONTWAIT);
        FZ_CHECK(w > 0); /* inputs are far below the socket buffer */
        put += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR);
    return 0;
}

/* What is left to read on fd (until EOF). */
static size_t drain(int fd)
{
    uint8_t buf[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) n += (size_t)r;
    return n;
}

static int terminated(const char *s, size_t cap) { return memchr(s, 0, cap) != NULL; }

/* The request header as exchange() in imaging/dicom.c writes it. */
static void request_header(uint8_t h[DICOM_PROTO_REQ_HEADER], uint32_t kind, const dicom_prep_t *p,
                           uint32_t len)
{
    memset(h, 0, DICOM_PROTO_REQ_HEADER);
    dicom_proto_put32(h, DICOM_PROTO_REQ);
    dicom_proto_put32(h + 4, kind);
    dicom_proto_put32(h + 8, (uint32_t)p->height);
    dicom_proto_put32(h + 12, (uint32_t)p->width);
    dicom_proto_put32(h + 16, (uint32_t)p->window);
    dicom_proto_putf64(h + 24, p->center);
    dicom_proto_putf64(h + 32, p->width_w);
    dicom_proto_put32(h + 40, len);
}

/* ---- 0: a reply, as the daemon reads it ------------------------------------------------------ */

static void fuzz_reply(fz_in_t *in)
{
    uint8_t hb = 0, wb = 0;
    fz_u8(in, &hb);
    fz_u8(in, &wb);
    size_t want = (size_t)(1 + hb % SIDE_MAX) * (size_t)(1 + wb % SIDE_MAX);
    int sv[2];
    if (stream_of(in->p, in->n, sv) < 0) return;
    dicom_image_t out;
    memset(&out, 0, sizeof out); /* as exchange() does */
    uint32_t st = 0xffffffffu;
    char why[DICOM_PROTO_REASON_MAX + 1];
    const char *bad = reply_read(sv[0], want, util_now() + 5, &out, &st, why);
    if (bad) {
        FZ_CHECK(bad[0] != 0);
        FZ_CHECK(out.pixels == NULL);
        FZ_CHECK(st == 0xffffffffu);
    } else {
        FZ_CHECK(st < DICOM_STATUS_COUNT);
        FZ_CHECK(in->n >= DICOM_PROTO_REP_HEADER);
        uint32_t rl = dicom_proto_get32(in->p + 8), al = dicom_proto_get32(in->p + 12);
        uint32_t sl = dicom_proto_get32(in->p + 16), np = dicom_proto_get32(in->p + 20);
        FZ_CHECK(rl <= DICOM_PROTO_REASON_MAX && al < DICOM_KEY_MAX && sl < DICOM_KEY_MAX);
        FZ_CHECK(strlen(why) <= rl && memcmp(why, in->p + DICOM_PROTO_REP_HEADER, rl) == 0);
        FZ_CHECK(terminated(out.accession, DICOM_KEY_MAX) && strlen(out.accession) <= al &&
                 memcmp(out.accession, in->p + DICOM_PROTO_REP_HEADER + rl, al) == 0);
        FZ_CHECK(terminated(out.sop_uid, DICOM_KEY_MAX) && strlen(out.sop_uid) <= sl &&
                 memcmp(out.sop_uid, in->p + DICOM_PROTO_REP_HEADER + rl + al, sl) == 0);
        FZ_CHECK((st == DICOM_OK) == (out.pixels != NULL));
        FZ_CHECK(np == (st == DICOM_OK ? want : 0));
        size_t took = DICOM_PROTO_REP_HEADER + rl + al + sl + (size_t)np * sizeof(float);
        FZ_CHECK(took <= in->n && drain(sv[0]) == in->n - took);
        if (out.pixels) FZ_CHECK(memcmp(out.pixels, in->p + took - np * sizeof(float), np * sizeof(float)) == 0);
    }
    free(out.pixels);
    close(sv[0]);
    close(sv[1]);
}

/* ---- 1: requests, as the worker reads them -------------------------------------------------- */

static void fuzz_requests(fz_in_t *in)
{
    while (in->n >= DICOM_PROTO_REQ_HEADER) {
        size_t got;
        const uint8_t *h = fz_take(in, DICOM_PROTO_REQ_HEADER, &got);
        uint32_t kind = 7, plen = 7;
        dicom_prep_t prep;
        if (request_parse(h, &kind, &plen, &prep) < 0) return; /* the worker exits */
        FZ_CHECK(kind == DICOM_PROTO_PATH || kind == DICOM_PROTO_BYTES);
        FZ_CHECK(kind == DICOM_PROTO_PATH ? plen >= 1 && plen <= DICOM_PROTO_PATH_MAX
                                          : plen <= DICOM_PROTO_BYTES_MAX);
        FZ_CHECK(prep.height >= 1 && prep.height <= DICOM_PREP_MAX_SIDE);
        FZ_CHECK(prep.width >= 1 && prep.width <= DICOM_PREP_MAX_SIDE);
        FZ_CHECK((unsigned)prep.window <= DICOM_WINDOW_FIXED && dicom_prep_valid(&prep));
        uint8_t again[DICOM_PROTO_REQ_HEADER];
        request_header(again, kind, &prep, plen);
        FZ_CHECK(memcmp(again, h, 20) == 0 && memcmp(again + 24, h + 24, 20) == 0);
        const uint8_t *payload = fz_take(in, plen, &got);
        if (got < plen) return;                                          /* EOF inside: exits */
        if (kind == DICOM_PROTO_PATH && memchr(payload, 0, plen)) return; /* refused: exits */
    }
}

/* ---- 2: both ends written by the code that writes them -------------------------------------- */

static void fuzz_round_trip(fz_in_t *in)
{
    uint8_t b[8] = {0};
    size_t got;
    const uint8_t *p = fz_take(in, sizeof b, &got);
    memcpy(b, p, got);
    dicom_prep_t prep = {.height = 1 + b[0] % SIDE_MAX, .width = 1 + b[1] % SIDE_MAX,
                         .window = (dicom_window_t)(b[2] % 3)};
    uint32_t kind = b[3] & 1 ? DICOM_PROTO_PATH : DICOM_PROTO_BYTES;
    uint32_t plen = (uint32_t)b[4] << 8 | b[5];
    p = fz_take(in, 16, &got);
    uint8_t dbl[16] = {0};
    memcpy(dbl, p, got);
    prep.center = dicom_proto_getf64(dbl);
    prep.width_w = dicom_proto_getf64(dbl + 8);

    /* The request: accepted with the same fields exactly when they are valid. */
    uint8_t h[DICOM_PROTO_REQ_HEADER];
    request_header(h, kind, &prep, plen);
    uint32_t k2, l2;
    dicom_prep_t p2;
    int valid = dicom_prep_valid(&prep) &&
                (kind == DICOM_PROTO_BYTES || (plen >= 1 && plen <= DICOM_PROTO_PATH_MAX));
    int parsed = request_parse(h, &k2, &l2, &p2) == 0;
    FZ_CHECK(parsed == valid);
    if (parsed)
        FZ_CHECK(k2 == kind && l2 == plen && p2.height == prep.height && p2.width == prep.width &&
                 p2.window == prep.window && memcmp(&p2.center, &prep.center, sizeof p2.center) == 0 &&
                 memcmp(&p2.width_w, &prep.width_w, sizeof p2.width_w) == 0);

    /* The reply, by the worker's reply(), read back by the daemon. */
    dicom_status_t st = (dicom_status_t)(b[6] % DICOM_STATUS_COUNT);
    char reason[DICOM_PROTO_REASON_MAX + 40] = "";
    dicom_image_t img = {0};
    size_t rl = b[7] % sizeof reason;
    p = fz_take(in, rl, &got);
    for (size_t i = 0; i < got; i++) reason[i] = (char)(p[i] ? p[i] : 'r');
    reason[got] = 0;
    uint8_t kl = 0;
    fz_u8(in, &kl);
    p = fz_take(in, kl % DICOM_KEY_MAX, &got);
    for (size_t i = 0; i < got; i++) img.accession[i] = (char)(p[i] ? p[i] : 'a');
    fz_u8(in, &kl);
    p = fz_take(in, kl % DICOM_KEY_MAX, &got);
    for (size_t i = 0; i < got; i++) img.sop_uid[i] = (char)(p[i] ? p[i] : 's');
    size_t npix = (size_t)prep.height * (size_t)prep.width;
    float pixels[SIDE_MAX * SIDE_MAX] = {0};
    p = fz_take(in, npix * sizeof(float), &got);
    memcpy(pixels, p, got);
    img.pixels = pixels;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return;
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    reply_fd = sv[1];
    FZ_CHECK(reply(st, st == DICOM_OK ? "" : reason, &img, st == DICOM_OK ? npix : 0) == 0);
    reply_fd = -1;
    shutdown(sv[1], SHUT_WR);
    dicom_image_t out;
    memset(&out, 0, sizeof out);
    uint32_t st2 = 0;
    char why[DICOM_PROTO_REASON_MAX + 1];
    const char *bad = reply_read(sv[0], npix, util_now() + 5, &out, &st2, why);
    FZ_CHECK(bad == NULL);
    FZ_CHECK(st2 == (uint32_t)st && strcmp(out.accession, img.accession) == 0 &&
             strcmp(out.sop_uid, img.sop_uid) == 0);
    if (st == DICOM_OK) {
        FZ_CHECK(why[0] == 0 && out.pixels && memcmp(out.pixels, pixels, npix * sizeof(float)) == 0);
    } else {
        FZ_CHECK(!out.pixels && strncmp(why, reason, DICOM_PROTO_REASON_MAX) == 0 &&
                 strlen(why) == (strlen(reason) < DICOM_PROTO_REASON_MAX ? strlen(reason)
                                                                         : DICOM_PROTO_REASON_MAX));
    }
    FZ_CHECK(drain(sv[0]) == 0);
    free(out.pixels);
    close(sv[0]);
    close(sv[1]);
}

/* ---- seeds ---------------------------------------------------------------------------------- */

static void write_seeds(void)
{
    fz_seed_t s = {.n = 0};
    /* a DICOM_OK reply for 2 x 2 pixels, with an accession and a SOP UID */
    uint8_t h[DICOM_PROTO_REQ_HEADER];
    fz_seed_byte(&s, 0);
    fz_seed_byte(&s, 1);
    fz_seed_byte(&s, 1);
    dicom_proto_put32(h, DICOM_PROTO_REP);
    dicom_proto_put32(h + 4, DICOM_OK);
    dicom_proto_put32(h + 8, 0);
    dicom_proto_put32(h + 12, 4);
    dicom_proto_put32(h + 16, 7);
    dicom_proto_put32(h + 20, 4);
    fz_seed_bytes(&s, h, DICOM_PROTO_REP_HEADER);
    fz_seed_bytes(&s, "ACC11.2.3.4", 11);
    float px[4] = {-1, 0, 0.5f, 1};
    fz_seed_bytes(&s, px, sizeof px);
    fz_seed_write("seed-reply-ok", &s);
    /* a skip with its reason */
    s.n = 0;
    fz_seed_byte(&s, 0);
    fz_seed_byte(&s, 27);
    fz_seed_byte(&s, 27);
    dicom_proto_put32(h + 4, DICOM_SKIP_UNSUPPORTED);
    dicom_proto_put32(h + 8, 6);
    dicom_proto_put32(h + 12, 0);
    dicom_proto_put32(h + 16, 0);
    dicom_proto_put32(h + 20, 0);
    fz_seed_bytes(&s, h, DICOM_PROTO_REP_HEADER);
    fz_seed_bytes(&s, "colour", 6);
    fz_seed_write("seed-reply-skip", &s);
    /* a skip at every limit: the longest reason and keys */
    s.n = 0;
    fz_seed_byte(&s, 0);
    fz_seed_byte(&s, 0);
    fz_seed_byte(&s, 0);
    dicom_proto_put32(h + 4, DICOM_SKIP_MALFORMED);
    dicom_proto_put32(h + 8, DICOM_PROTO_REASON_MAX);
    dicom_proto_put32(h + 12, DICOM_KEY_MAX - 1);
    dicom_proto_put32(h + 16, DICOM_KEY_MAX - 1);
    dicom_proto_put32(h + 20, 0);
    fz_seed_bytes(&s, h, DICOM_PROTO_REP_HEADER);
    for (int i = 0; i < DICOM_PROTO_REASON_MAX + 2 * (DICOM_KEY_MAX - 1); i++)
        fz_seed_byte(&s, (uint8_t)('0' + i % 10));
    fz_seed_write("seed-reply-limits", &s);
    /* two requests: bytes, then a path */
    s.n = 0;
    fz_seed_byte(&s, 1);
    dicom_prep_t prep = {.height = 28, .width = 28, .window = DICOM_WINDOW_FIXED, .center = 128,
                         .width_w = 256};
    request_header(h, DICOM_PROTO_BYTES, &prep, 4);
    fz_seed_bytes(&s, h, sizeof h);
    fz_seed_bytes(&s, "DICM", 4);
    prep.window = DICOM_WINDOW_AUTO;
    request_header(h, DICOM_PROTO_PATH, &prep, 9);
    fz_seed_bytes(&s, h, sizeof h);
    fz_seed_bytes(&s, "/x/a.dcm", 9);
    fz_seed_write("seed-requests", &s);
    /* a round trip: 3 x 2, FIXED, a reply with everything */
    s.n = 0;
    fz_seed_byte(&s, 2);
    uint8_t b[8] = {2, 1, 2, 0, 0, 12, DICOM_OK, 0};
    fz_seed_bytes(&s, b, sizeof b);
    uint8_t dbl[16];
    dicom_proto_putf64(dbl, 40.0);
    dicom_proto_putf64(dbl + 8, 400.0);
    fz_seed_bytes(&s, dbl, sizeof dbl);
    fz_seed_byte(&s, 3);
    fz_seed_bytes(&s, "ACC", 3);
    fz_seed_byte(&s, 5);
    fz_seed_bytes(&s, "1.2.3", 5);
    float px6[6] = {1, 2, 3, 4, 5, 6};
    fz_seed_bytes(&s, px6, sizeof px6);
    fz_seed_write("seed-round-trip", &s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    if (fz_seed_dir()) {
        write_seeds();
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    fz_in_t in = {data + 1, size - 1};
    switch (data[0] % 3) {
    case 0: fuzz_reply(&in); break;
    case 1: fuzz_requests(&in); break;
    default: fuzz_round_trip(&in); break;
    }
    return 0;
}
