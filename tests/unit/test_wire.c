/* Wire codec: round trips, and every kind of malformed input is refused with
 * a reason (never a crash: this file also runs under ASan/UBSan). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "proto/wire.h"

typedef struct {
    wire_buf_t *buf;
    wire_decoder_t *dec;
    msgpack_sbuffer sb;
    msgpack_packer pk;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    f->buf = wire_buf_new();
    f->dec = wire_decoder_new();
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    wire_buf_destroy(&f->buf);
    wire_decoder_destroy(&f->dec);
    msgpack_sbuffer_destroy(&f->sb);
    free(f);
    return 0;
}

static void pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static int decode_raw(fx_t *f, const void *p, size_t n, msg_t *m, char *err)
{
    return msg_decode(f->dec, p, n, m, err, 256);
}

/* Decodes what the test packed by hand into f->sb. */
static int decode_packed(fx_t *f, msg_t *m, char *err)
{
    return decode_raw(f, f->sb.data, f->sb.size, m, err);
}

static void test_roundtrip_update(void **state)
{
    fx_t *f = *state;
    float v[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-7f};
    msg_t m = {.type = MSG_UPDATE, .round = 7, .phase = PHASE_TRAIN, .n_samples = 470,
               .loss_sum = 0.25, .train_seconds = 1.5, .vec = (const uint8_t *)v,
               .vec_len = sizeof v, .present = MSG_HAS_VEC};
    msg_encode(&m, f->buf);
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.type, MSG_UPDATE);
    assert_int_equal(d.round, 7);
    assert_int_equal(d.phase, PHASE_TRAIN);
    assert_int_equal(d.n_samples, 470);
    assert_true(d.loss_sum == 0.25 && d.train_seconds == 1.5);
    assert_int_equal(d.vec_len, sizeof v);
    float back[5];
    memcpy(back, d.vec, sizeof back);
    assert_memory_equal(back, v, sizeof v);
    /* Vectors are bin, not arrays: the encoding is barely larger than the data. */
    assert_true(wire_buf_size(f->buf) < sizeof v + 96);
}

static void test_roundtrip_plan_without_vector(void **state)
{
    fx_t *f = *state;
    msg_t m = {.type = MSG_PLAN, .round = 3, .phase = PHASE_TRAIN, .arch = "resnet18",
               .in_channels = 3, .height = 32, .width = 32, .classes = 10, .numel = 11e6,
               .model_version = 2, .epochs = 2, .batch = 64, .lr = 0.05, .momentum = 0.9,
               .weight_decay = 5e-4, .seed = UINT64_MAX};
    msg_encode(&m, f->buf);
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_string_equal(d.arch, "resnet18");
    assert_int_equal(d.seed, UINT64_MAX);
    assert_int_equal(d.numel, 11000000);
    assert_int_equal(d.present & MSG_HAS_VEC, 0);
    assert_null(d.vec);
    assert_true(d.weight_decay == 5e-4);
    /* without MSG_HAS_LOCAL the recipe fields are not sent, and read as off */
    assert_int_equal(d.present & MSG_HAS_LOCAL, 0);
    assert_true(d.prox_mu == 0 && d.augment == 0 && d.class_balanced == 0);
    /* the local recipe (FedProx's mu, augmentation, class-balanced loss) and
     * the secure round's loss scale travel in the PLAN */
    m.prox_mu = 0.01;
    m.augment = 1;
    m.class_balanced = 1;
    m.threshold = 7;
    m.clip = 0.04;
    m.scale = 1234.5;
    m.bits = 16;
    m.loss_scale = 14253.25;
    m.present = MSG_HAS_LOCAL | MSG_HAS_SECAGG | MSG_HAS_LOSS;
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.present & (MSG_HAS_LOCAL | MSG_HAS_SECAGG | MSG_HAS_LOSS),
                     MSG_HAS_LOCAL | MSG_HAS_SECAGG | MSG_HAS_LOSS);
    assert_true(d.prox_mu == 0.01 && d.augment == 1 && d.class_balanced == 1);
    assert_true(d.loss_scale == 14253.25 && d.bits == 16);
}

static void test_roundtrip_hello_error_eval_result(void **state)
{
    fx_t *f = *state;
    msg_t m = {.type = MSG_HELLO, .site = "st-marys", .version = WIRE_VERSION, .n_train = 1,
               .n_val = -3};
    msg_encode(&m, f->buf);
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_string_equal(d.site, "st-marys");
    assert_int_equal(d.n_val, -3);

    msg_error(&m, 4, ERR_WRONG_LENGTH, "update has %d bytes", 12);
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.code, ERR_WRONG_LENGTH);
    assert_string_equal(d.reason, "update has 12 bytes");

    uint32_t hist[4] = {1, 2, 3, 4};
    m = (msg_t){.type = MSG_EVAL_RESULT, .round = 1, .n_samples = 10, .loss_sum = 2.5,
                .correct = 8};
    msg_encode(&m, f->buf); /* histogram is optional */
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.present & MSG_HAS_HIST, 0);
    m.hist = (const uint8_t *)hist;
    m.hist_len = sizeof hist;
    m.present = MSG_HAS_HIST;
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.hist_len, sizeof hist);
    assert_int_equal(d.correct, 8);
}

/* Packs an envelope with `extra` more fields to follow. */
static void envelope(fx_t *f, uint32_t type, uint32_t nextra)
{
    f->sb.size = 0;
    msgpack_pack_map(&f->pk, 3 + nextra);
    pstr(&f->pk, "type");
    msgpack_pack_uint32(&f->pk, type);
    pstr(&f->pk, "round");
    msgpack_pack_uint32(&f->pk, 1);
    pstr(&f->pk, "phase");
    msgpack_pack_uint32(&f->pk, 0);
}

static void expect_reject(fx_t *f, const char *needle)
{
    msg_t d;
    char err[256] = "";
    assert_int_equal(decode_packed(f, &d, err), -1);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_rejects_bad_envelopes(void **state)
{
    fx_t *f = *state;
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, "", 0, &d, err), -1);
    assert_int_equal(decode_raw(f, "\xc1", 1, &d, err), -1); /* never-used byte */

    f->sb.size = 0;
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_uint32(&f->pk, 1);
    expect_reject(f, "not a map");

    envelope(f, 99, 0);
    expect_reject(f, "unknown message type");
    envelope(f, 0, 0);
    expect_reject(f, "unknown message type");

    f->sb.size = 0; /* missing round and phase */
    msgpack_pack_map(&f->pk, 1);
    pstr(&f->pk, "type");
    msgpack_pack_uint32(&f->pk, MSG_HEARTBEAT);
    expect_reject(f, "envelope");

    envelope(f, MSG_HEARTBEAT, 1); /* a repeated envelope key */
    pstr(&f->pk, "round");
    msgpack_pack_uint32(&f->pk, 2);
    expect_reject(f, "envelope");

    f->sb.size = 0; /* round of the wrong type */
    msgpack_pack_map(&f->pk, 3);
    pstr(&f->pk, "type");
    msgpack_pack_uint32(&f->pk, MSG_HEARTBEAT);
    pstr(&f->pk, "round");
    msgpack_pack_int64(&f->pk, -1);
    pstr(&f->pk, "phase");
    msgpack_pack_uint32(&f->pk, 0);
    expect_reject(f, "round");

    f->sb.size = 0; /* a non-string key */
    msgpack_pack_map(&f->pk, 1);
    msgpack_pack_uint32(&f->pk, 1);
    msgpack_pack_uint32(&f->pk, 1);
    expect_reject(f, "key is not a string");

    envelope(f, MSG_HEARTBEAT, 0); /* trailing bytes */
    msgpack_pack_uint32(&f->pk, 5);
    expect_reject(f, "trailing");

    f->sb.size = 0;
    msgpack_pack_map(&f->pk, WIRE_MAX_FIELDS + 1);
    for (int i = 0; i <= WIRE_MAX_FIELDS; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        pstr(&f->pk, k);
        msgpack_pack_nil(&f->pk);
    }
    expect_reject(f, "too many fields");
}

static void test_rejects_bad_fields(void **state)
{
    fx_t *f = *state;
    envelope(f, MSG_UPDATE, 0);
    expect_reject(f, "missing field");

    envelope(f, MSG_HEARTBEAT, 1);
    pstr(&f->pk, "vec"); /* a field the type does not allow */
    msgpack_pack_bin(&f->pk, 0);
    expect_reject(f, "unexpected field 'vec'");

    envelope(f, MSG_HEARTBEAT, 1);
    pstr(&f->pk, "\x01weird");
    msgpack_pack_nil(&f->pk);
    expect_reject(f, "unexpected field '?weird'");

    envelope(f, MSG_HELLO, 4);
    pstr(&f->pk, "site");
    msgpack_pack_uint32(&f->pk, 5); /* wrong type */
    pstr(&f->pk, "version");
    msgpack_pack_uint32(&f->pk, 1);
    pstr(&f->pk, "n_train");
    msgpack_pack_uint32(&f->pk, 1);
    pstr(&f->pk, "n_val");
    msgpack_pack_uint32(&f->pk, 1);
    expect_reject(f, "'site': expected a string");

    /* The cap includes the NUL: a name of exactly WIRE_SITE_MAX bytes does not
     * fit (nor a longer one), one byte less does and arrives whole. */
    char longname[WIRE_SITE_MAX + 5];
    memset(longname, 'a', sizeof longname);
    const size_t lens[] = {WIRE_SITE_MAX + 4, WIRE_SITE_MAX, WIRE_SITE_MAX - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        const size_t len = lens[i];
        longname[len] = '\0';
        envelope(f, MSG_HELLO, 4);
        pstr(&f->pk, "site");
        pstr(&f->pk, longname);
        pstr(&f->pk, "version");
        msgpack_pack_uint32(&f->pk, 1);
        pstr(&f->pk, "n_train");
        msgpack_pack_uint32(&f->pk, 1);
        pstr(&f->pk, "n_val");
        msgpack_pack_uint32(&f->pk, 1);
        if (len >= WIRE_SITE_MAX) {
            expect_reject(f, "too long");
        } else {
            msg_t d;
            char err[256] = "";
            assert_int_equal(decode_packed(f, &d, err), 0);
            assert_int_equal(strlen(d.site), len);
            assert_memory_equal(d.site, longname, len);
        }
        longname[len] = 'a';
    }

    envelope(f, MSG_HELLO, 4);
    pstr(&f->pk, "site");
    msgpack_pack_str(&f->pk, 3);
    msgpack_pack_str_body(&f->pk, "a\0b", 3);
    pstr(&f->pk, "version");
    msgpack_pack_uint32(&f->pk, 1);
    pstr(&f->pk, "n_train");
    msgpack_pack_uint32(&f->pk, 1);
    pstr(&f->pk, "n_val");
    msgpack_pack_uint32(&f->pk, 1);
    expect_reject(f, "NUL");

    envelope(f, MSG_WELCOME, 2);
    pstr(&f->pk, "client_id");
    msgpack_pack_uint32(&f->pk, 1);
    pstr(&f->pk, "client_id");
    msgpack_pack_uint32(&f->pk, 2);
    expect_reject(f, "repeated");

    envelope(f, MSG_WELCOME, 1);
    pstr(&f->pk, "client_id");
    msgpack_pack_uint64(&f->pk, (uint64_t)UINT32_MAX + 1); /* does not fit u32 */
    expect_reject(f, "client_id");

    envelope(f, MSG_UPDATE, 4); /* vec as an array of floats: refused, bin only */
    pstr(&f->pk, "vec");
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_float(&f->pk, 1.0f);
    pstr(&f->pk, "n");
    msgpack_pack_int64(&f->pk, 1);
    pstr(&f->pk, "loss");
    msgpack_pack_double(&f->pk, 1);
    pstr(&f->pk, "train_s");
    msgpack_pack_double(&f->pk, 1);
    expect_reject(f, "nested");
}

/* Every proper prefix of a valid message is refused; random corruption never
 * crashes and never yields a message that violates the table. */
static void test_truncation_and_corruption(void **state)
{
    fx_t *f = *state;
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)i;
    msg_t m = {.type = MSG_PLAN, .round = 2, .phase = PHASE_TRAIN, .arch = "cnn",
               .in_channels = 1, .height = 28, .width = 28, .classes = 2, .numel = 64,
               .model_version = 1, .epochs = 1, .batch = 32, .lr = 0.1, .vec = (uint8_t *)v,
               .vec_len = sizeof v, .present = MSG_HAS_VEC};
    msg_encode(&m, f->buf);
    size_t n = wire_buf_size(f->buf);
    uint8_t *copy = malloc(n);
    memcpy(copy, wire_buf_data(f->buf), n);
    msg_t d;
    char err[256];
    for (size_t len = 0; len < n; len++) {
        uint8_t *p = malloc(len ? len : 1); /* exact-size buffer: ASan sees any over-read */
        memcpy(p, copy, len);
        assert_int_equal(decode_raw(f, p, len, &d, err), -1);
        free(p);
    }
    rng_t r;
    rng_seed(&r, 42);
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t *p = malloc(n);
        memcpy(p, copy, n);
        int flips = 1 + (int)rng_below(&r, 4);
        for (int k = 0; k < flips; k++) p[rng_below(&r, n)] ^= (uint8_t)(1 + rng_below(&r, 255));
        if (decode_raw(f, p, n, &d, err) == 0) {
            accepted++;
            assert_true(d.type > 0 && d.type < MSG_TYPE_COUNT);
            if (d.present & MSG_HAS_VEC) assert_true(d.vec >= p && d.vec + d.vec_len <= p + n);
        }
        free(p);
    }
    assert_true(accepted < 20000); /* corruption is mostly caught */
    free(copy);
}

/* PING / PONG (medfed-client --check): PING needs the site and version, PONG
 * is the bare envelope; the new types sit at the end of the enum, so the
 * numbers of every older type are unchanged on the wire. */
static void test_roundtrip_ping_pong(void **state)
{
    fx_t *f = *state;
    assert_int_equal(MSG_READY, 18);
    assert_int_equal(MSG_PING, 19);
    assert_int_equal(MSG_PONG, 20);
    assert_int_equal(ERR_PROTOCOL, 12);
    assert_int_equal(ERR_NOT_REGISTERED, 13);
    msg_t m = {.type = MSG_PING, .site = "st-marys", .version = WIRE_VERSION};
    msg_encode(&m, f->buf);
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.type, MSG_PING);
    assert_string_equal(d.site, "st-marys");
    assert_int_equal(d.version, WIRE_VERSION);
    m = (msg_t){.type = MSG_PONG, .round = 42};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.type, MSG_PONG);
    assert_int_equal(d.round, 42);
    assert_string_equal(msg_type_name(MSG_PING), "PING");
    assert_string_equal(msg_type_name(MSG_PONG), "PONG");

    envelope(f, MSG_PING, 1); /* no version */
    pstr(&f->pk, "site");
    pstr(&f->pk, "x");
    expect_reject(f, "missing field 'version'");
    envelope(f, MSG_PONG, 1); /* PONG carries nothing else */
    pstr(&f->pk, "site");
    pstr(&f->pk, "x");
    expect_reject(f, "unexpected field 'site'");
}

/* KEYS records are variable length: every length is checked before use. */
static void test_keyrecs(void **state)
{
    (void)state;
    static uint8_t blob[3 * WIRE_KEYREC_MAX], adv[WIRE_ADVERTISE_BYTES], cert[WIRE_CERT_MAX];
    for (size_t i = 0; i < sizeof adv; i++) adv[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof cert; i++) cert[i] = (uint8_t)(i * 7);
    size_t len = wire_keyrec_put(blob, 4, adv, NULL, 0);
    assert_int_equal(len, WIRE_KEYREC_MIN);
    len += wire_keyrec_put(blob + len, 9, adv, cert, 400);
    len += wire_keyrec_put(blob + len, 2, adv, cert, WIRE_CERT_MAX);
    wire_keyrec_t r;
    size_t off = 0;
    assert_int_equal(wire_keyrec_next(blob, len, &off, &r), 0);
    assert_int_equal(r.id, 4);
    assert_int_equal(r.cert_len, 0);
    assert_null(r.cert);
    assert_memory_equal(r.adv, adv, sizeof adv);
    assert_int_equal(wire_keyrec_next(blob, len, &off, &r), 0);
    assert_int_equal(r.id, 9);
    assert_int_equal(r.cert_len, 400);
    assert_memory_equal(r.cert, cert, 400);
    assert_int_equal(wire_keyrec_next(blob, len, &off, &r), 0);
    assert_int_equal(r.cert_len, WIRE_CERT_MAX);
    assert_int_equal(off, len);
    assert_int_equal(wire_keyrec_next(blob, len, &off, &r), -1); /* nothing left */

    /* Every truncation of the second record is refused, and off stays put. */
    const size_t second = WIRE_KEYREC_MIN;
    for (size_t cut = second; cut < second + WIRE_KEYREC_MIN + 400; cut++) {
        off = second;
        assert_int_equal(wire_keyrec_next(blob, cut, &off, &r), -1);
        assert_int_equal(off, second);
    }
    /* A certificate length beyond the cap or beyond the blob (no wrap-around). */
    static const uint32_t bad_lens[] = {WIRE_CERT_MAX + 1, 0xFFFFFFFFu, 0xFFFFFFFFu - 3};
    for (size_t i = 0; i < sizeof bad_lens / sizeof bad_lens[0]; i++) {
        wire_put_u32(blob + 4 + WIRE_ADVERTISE_BYTES, bad_lens[i]);
        off = 0;
        assert_int_equal(wire_keyrec_next(blob, len, &off, &r), -1);
    }
    off = len + 1; /* an offset past the end */
    assert_int_equal(wire_keyrec_next(blob, len, &off, &r), -1);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(msg_type_name(MSG_UPDATE), "UPDATE");
    assert_string_equal(msg_type_name((msg_type_t)77), "?");
    assert_string_equal(msg_phase_name(PHASE_EVAL), "eval");
}


/* The consistency round's records: the U3 list must be strictly ascending
 * and bounded; UNMASK_REQ's counts are checked against what is there. */
static void test_consistency_records(void **state)
{
    (void)state;
    uint8_t blob[64];
    uint32_t ids[8];
    size_t n = 0;
    for (uint32_t i = 0; i < 4; i++) wire_put_u32(blob + 4 * i, 3 * i + 1);
    assert_int_equal(wire_idlist_parse(blob, 16, 8, ids, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[3], 10);
    assert_int_equal(wire_idlist_parse(blob, 16, 3, ids, &n), -1);  /* above max */
    assert_int_equal(wire_idlist_parse(blob, 15, 8, ids, &n), -1);  /* not whole ids */
    assert_int_equal(wire_idlist_parse(blob, 0, 8, ids, &n), -1);   /* empty */
    wire_put_u32(blob + 8, 4);                                       /* 1, 4, 4, 10 */
    assert_int_equal(wire_idlist_parse(blob, 16, 8, ids, &n), -1);  /* repeated */
    wire_put_u32(blob + 8, 2);                                       /* 1, 4, 2, 10 */
    assert_int_equal(wire_idlist_parse(blob, 16, 8, ids, &n), -1);  /* descending */

    /* UNMASK_REQ: 2 requests, 1 signature record */
    uint8_t req[4 + 2 * WIRE_REQREC_BYTES + WIRE_SIGREC_BYTES];
    memset(req, 0, sizeof req);
    assert_int_equal(wire_unmaskreq_len(2, 1), sizeof req);
    wire_unmaskreq_put_header(req, 2);
    wire_unmaskreq_t r;
    assert_int_equal(wire_unmaskreq_parse(req, sizeof req, &r), 0);
    assert_int_equal(r.nreq, 2);
    assert_int_equal(r.nsig, 1);
    assert_ptr_equal(r.sigs, req + 4 + 2 * WIRE_REQREC_BYTES);
    assert_int_equal(wire_unmaskreq_parse(req, sizeof req - 1, &r), -1); /* torn signature */
    assert_int_equal(wire_unmaskreq_parse(req, 3, &r), -1);
    wire_unmaskreq_put_header(req, 3); /* claims more requests than there are bytes */
    assert_int_equal(wire_unmaskreq_parse(req, 4 + 2 * WIRE_REQREC_BYTES, &r), -1);
    wire_put_u32(req, 0xFFFFFFFFu);
    assert_int_equal(wire_unmaskreq_parse(req, sizeof req, &r), -1);
    /* Any count against any length: accepted only when the requests and whole
     * signature records fill the blob exactly; a count larger than the
     * payload is refused whatever the remainder's size. */
    uint8_t big[4 + 8 * WIRE_REQREC_BYTES + 3 * WIRE_SIGREC_BYTES];
    memset(big, 0, sizeof big);
    for (uint32_t claim = 0; claim <= 40; claim++) {
        for (size_t len = 4; len <= sizeof big; len++) {
            wire_put_u32(big, claim);
            const int rc = wire_unmaskreq_parse(big, len, &r);
            const size_t need = 4 + (size_t)claim * WIRE_REQREC_BYTES;
            if (need > len) {
                assert_int_equal(rc, -1);
            } else if ((len - need) % WIRE_SIGREC_BYTES == 0) {
                assert_int_equal(rc, 0);
                assert_int_equal(r.nreq, claim);
                assert_int_equal(4 + r.nreq * WIRE_REQREC_BYTES + r.nsig * WIRE_SIGREC_BYTES, len);
            } else {
                assert_int_equal(rc, -1);
            }
        }
    }

    /* What is signed binds round, model hash and every id, in order. */
    uint8_t h[WIRE_HASH_BYTES] = {1}, a[128], b[128];
    uint32_t u3[3] = {0, 2, 5}, v3[3] = {0, 2, 6};
    size_t la = wire_consist_signed(a, 7, h, u3, 3), lb = wire_consist_signed(b, 7, h, v3, 3);
    assert_int_equal(la, wire_consist_signed_len(3));
    assert_int_equal(la, lb);
    assert_memory_not_equal(a, b, la);
    lb = wire_consist_signed(b, 8, h, u3, 3);
    assert_memory_not_equal(a, b, la);
    assert_int_not_equal(wire_consist_signed_len(2), la); /* a shorter list is another message */

    uint8_t adv[WIRE_ADVERTISE_BYTES], sa[WIRE_ADV_SIGNED_BYTES], sb[WIRE_ADV_SIGNED_BYTES];
    memset(adv, 9, sizeof adv);
    wire_put_u64(adv + WIRE_ADV_WEIGHT_OFF, 500);
    wire_adv_signed(sa, 3, 1, h, adv);
    wire_put_u64(adv + WIRE_ADV_WEIGHT_OFF, 500000000);
    wire_adv_signed(sb, 3, 1, h, adv);
    assert_memory_not_equal(sa, sb, sizeof sa); /* the weight is signed */
    assert_int_equal(wire_get_u64(adv + WIRE_ADV_WEIGHT_OFF), 500000000);
}

/* Protocol version 3: HELLO / PING / WELCOME / PONG may carry the software
 * version, HEARTBEAT the training progress; both optional (a v2 peer's
 * messages still decode), and msg_fits_version says what a v2 decoder would
 * refuse, so that a v2 site is sent none of it. */
static void test_v3_fields(void **state)
{
    fx_t *f = *state;
    assert_int_equal(WIRE_VERSION, 4);
    assert_int_equal(WIRE_VERSION_MIN, 2);
    msg_t m = {.type = MSG_HELLO, .site = "st-marys", .version = 3, .n_train = 5,
               .sw = "0.6.0", .present = MSG_HAS_SW};
    msg_encode(&m, f->buf);
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_string_equal(d.sw, "0.6.0");
    assert_true(d.present & MSG_HAS_SW);
    assert_int_equal(msg_fits_version(&d, 3, err, sizeof err), 0);
    assert_int_equal(msg_fits_version(&d, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "'sw'"));

    m = (msg_t){.type = MSG_HELLO, .site = "old", .version = 2}; /* a v2 HELLO */
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.present & MSG_HAS_SW, 0);
    assert_int_equal(msg_fits_version(&d, 2, err, sizeof err), 0);

    m = (msg_t){.type = MSG_HEARTBEAT, .round = 4, .phase = PHASE_TRAIN, .done = 640,
                .total = 2000, .present = MSG_HAS_PROGRESS};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_true(d.present & MSG_HAS_PROGRESS);
    assert_int_equal(d.done, 640);
    assert_int_equal(d.total, 2000);
    assert_int_equal(msg_fits_version(&d, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "HEARTBEAT"));
    m.present = 0; /* a v2 heartbeat: the bare envelope */
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.present & MSG_HAS_PROGRESS, 0);

    m = (msg_t){.type = MSG_WELCOME, .client_id = 2, .sw = "0.6.0", .present = MSG_HAS_SW};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_string_equal(d.sw, "0.6.0");
    assert_int_equal(msg_fits_version(&d, 2, err, sizeof err), -1);

    /* "sw" is refused where it does not belong, and when too long. */
    envelope(f, MSG_HEARTBEAT, 1);
    pstr(&f->pk, "sw"); pstr(&f->pk, "0.6.0");
    assert_int_equal(decode_packed(f, &d, err), -1);
    assert_non_null(strstr(err, "unexpected field 'sw'"));
    envelope(f, MSG_HELLO, 5);
    pstr(&f->pk, "site"); pstr(&f->pk, "x");
    pstr(&f->pk, "version"); msgpack_pack_uint32(&f->pk, 3);
    pstr(&f->pk, "n_train"); msgpack_pack_int64(&f->pk, 1);
    pstr(&f->pk, "n_val"); msgpack_pack_int64(&f->pk, 1);
    pstr(&f->pk, "sw"); pstr(&f->pk, "0123456789012345678901234567890123456789");
    assert_int_equal(decode_packed(f, &d, err), -1);
    assert_non_null(strstr(err, "'sw'"));
}

/* Protocol version 4: PLAN and EVAL may name the model by length and
 * SHA-256 (MSG_HAS_BULK) instead of carrying it; FETCH asks for a chunk,
 * CHUNK carries one. None of it goes to a v2 or v3 decoder. */
static void test_v4_chunks(void **state)
{
    fx_t *f = *state;
    uint8_t h[WIRE_HASH_BYTES];
    for (size_t i = 0; i < sizeof h; i++) h[i] = (uint8_t)(i * 7 + 1);
    msg_t m = {.type = MSG_PLAN, .round = 3, .phase = PHASE_TRAIN, .arch = "cnn", .numel = 10,
               .model_version = 2, .epochs = 1, .batch = 8, .lr = 0.1, .bulk_len = 40,
               .bulk_hash = h, .bulk_hash_len = sizeof h, .present = MSG_HAS_BULK};
    msg_encode(&m, f->buf);
    msg_t d;
    char err[256];
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_true(d.present & MSG_HAS_BULK);
    assert_false(d.present & MSG_HAS_VEC);
    assert_int_equal(d.bulk_len, 40);
    assert_int_equal(d.bulk_hash_len, sizeof h);
    assert_memory_equal(d.bulk_hash, h, sizeof h);
    assert_int_equal(msg_fits_version(&d, 4, err, sizeof err), 0);
    assert_int_equal(msg_fits_version(&d, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "'bl'"));

    uint8_t bytes[24];
    memset(bytes, 0xab, sizeof bytes);
    m = (msg_t){.type = MSG_CHUNK, .round = 3, .model_version = 2, .bulk_hash = h,
                .bulk_hash_len = sizeof h, .offset = 16, .vec = bytes, .vec_len = sizeof bytes,
                .present = MSG_HAS_VEC};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.type, MSG_CHUNK);
    assert_int_equal(d.offset, 16);
    assert_int_equal(d.vec_len, sizeof bytes);
    assert_memory_equal(d.vec, bytes, sizeof bytes);
    assert_int_equal(msg_fits_version(&d, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "CHUNK"));

    m = (msg_t){.type = MSG_FETCH, .round = 3, .model_version = 2, .bulk_hash = h,
                .bulk_hash_len = sizeof h, .offset = 1u << 20};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.offset, 1u << 20);
    assert_int_equal(msg_fits_version(&d, 4, err, sizeof err), 0);

    /* An upload's vector in PARTs, then the message naming its length. */
    m = (msg_t){.type = MSG_PART, .round = 3, .phase = PHASE_MASKED, .offset = 8, .bulk_len = 32,
                .vec = bytes, .vec_len = 16, .present = MSG_HAS_VEC};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_int_equal(d.type, MSG_PART);
    assert_int_equal(d.offset, 8);
    assert_int_equal(d.bulk_len, 32);
    assert_int_equal(d.vec_len, 16);
    assert_int_equal(msg_fits_version(&d, 3, err, sizeof err), -1);
    m = (msg_t){.type = MSG_MASKED, .round = 3, .phase = PHASE_MASKED, .bulk_len = 32,
                .present = MSG_HAS_BULK};
    msg_encode(&m, f->buf);
    assert_int_equal(decode_raw(f, wire_buf_data(f->buf), wire_buf_size(f->buf), &d, err), 0);
    assert_true(d.present & MSG_HAS_BULK);
    assert_false(d.present & MSG_HAS_VEC);
    assert_int_equal(d.bulk_len, 32);
    assert_int_equal(msg_fits_version(&d, 3, err, sizeof err), -1);

    /* A FETCH without its offset, or a CHUNK without its bytes, is refused. */
    envelope(f, MSG_FETCH, 2);
    pstr(&f->pk, "model_ver"); msgpack_pack_uint32(&f->pk, 2);
    pstr(&f->pk, "bh"); msgpack_pack_bin(&f->pk, sizeof h); msgpack_pack_bin_body(&f->pk, h, sizeof h);
    assert_int_equal(decode_packed(f, &d, err), -1);
    assert_non_null(strstr(err, "missing field 'off'"));
    envelope(f, MSG_CHUNK, 3);
    pstr(&f->pk, "model_ver"); msgpack_pack_uint32(&f->pk, 2);
    pstr(&f->pk, "bh"); msgpack_pack_bin(&f->pk, sizeof h); msgpack_pack_bin_body(&f->pk, h, sizeof h);
    pstr(&f->pk, "off"); msgpack_pack_uint64(&f->pk, 0);
    assert_int_equal(decode_packed(f, &d, err), -1);
    assert_non_null(strstr(err, "missing field 'vec'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_plan_without_vector, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_hello_error_eval_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejects_bad_envelopes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejects_bad_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_and_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_ping_pong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v3_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v4_chunks, setup, teardown),
        cmocka_unit_test(test_keyrecs),
        cmocka_unit_test(test_consistency_records),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
