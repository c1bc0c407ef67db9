/*
 * fuzz_wire.c - libFuzzer harness for the wire codec (proto/wire.c).
 *
 * Every input goes to msg_decode, which must either refuse it with a
 * NUL-terminated reason or accept it with a well-formed msg_t (type and phase
 * in range, strings terminated inside their buffers, vec/hist/blob/u1 pointing
 * inside the input). An accepted message is re-encoded with msg_encode and
 * decoded again: the second decode must succeed and give the same message
 * field for field (encoder and decoder agree), and encoding that must give
 * the same bytes again (the encoding is a fixed point).
 *
 * Seeds: MEDFED_FUZZ_WRITE_SEEDS=dir fuzz_wire writes one valid message of
 * every type (made with msg_encode) into dir and exits.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "tests/fuzz/fuzz_common.h"

static wire_decoder_t *dec_a, *dec_b;
static wire_buf_t *buf_a, *buf_b;

static int inside(const uint8_t *p, size_t len, const uint8_t *base, size_t size)
{
    if (len == 0) return 1;
    return p != NULL && p >= base && len <= size && (size_t)(p - base) <= size - len;
}

/* What any accepted message must look like; base/size: the decoded bytes. */
static void check_shape(const msg_t *m, const uint8_t *base, size_t size)
{
    FZ_CHECK(m->type > 0 && m->type < MSG_TYPE_COUNT);
    FZ_CHECK(m->phase < PHASE_COUNT);
    FZ_CHECK(memchr(m->site, '\0', sizeof m->site) != NULL);
    FZ_CHECK(memchr(m->arch, '\0', sizeof m->arch) != NULL);
    FZ_CHECK(memchr(m->reason, '\0', sizeof m->reason) != NULL);
    FZ_CHECK(inside(m->vec, m->vec_len, base, size));
    FZ_CHECK(inside(m->hist, m->hist_len, base, size));
    FZ_CHECK(inside(m->blob, m->blob_len, base, size));
    FZ_CHECK(inside(m->u1, m->u1_len, base, size));
    FZ_CHECK(inside(m->bulk_hash, m->bulk_hash_len, base, size));
    FZ_CHECK(memchr(m->sw, '\0', sizeof m->sw) != NULL);
    const uint32_t v3 = MSG_HAS_SW | MSG_HAS_PROGRESS | MSG_HAS_LOCAL | MSG_HAS_LOSS;
    const int v4_type = m->type == MSG_FETCH || m->type == MSG_CHUNK || m->type == MSG_PART;
    FZ_CHECK((m->present & ~(MSG_HAS_VEC | MSG_HAS_HIST | MSG_HAS_SECAGG | MSG_HAS_BLOB |
                             MSG_HAS_U1 | v3 | MSG_HAS_BULK)) == 0);
    /* What a v2 decoder refuses is exactly the v3 and v4 fields and types,
     * and a v3 decoder the v4 ones. */
    char why[128];
    FZ_CHECK((msg_fits_version(m, 2, why, sizeof why) < 0) ==
             (v4_type || (m->present & (v3 | MSG_HAS_BULK)) != 0));
    FZ_CHECK((msg_fits_version(m, 3, why, sizeof why) < 0) ==
             (v4_type || (m->present & MSG_HAS_BULK) != 0));
    FZ_CHECK(msg_fits_version(m, WIRE_VERSION, why, sizeof why) == 0);
}

static int same_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Doubles compare by bit pattern: NaN payloads and -0.0 must survive too. */
static int same_f64(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void check_same(const msg_t *a, const msg_t *b)
{
    FZ_CHECK(a->type == b->type);
    FZ_CHECK(a->round == b->round);
    FZ_CHECK(a->phase == b->phase);
    FZ_CHECK(a->present == b->present);
    FZ_CHECK(strcmp(a->site, b->site) == 0);
    FZ_CHECK(a->version == b->version);
    FZ_CHECK(a->n_train == b->n_train && a->n_val == b->n_val);
    FZ_CHECK(strcmp(a->sw, b->sw) == 0 && a->done == b->done && a->total == b->total);
    FZ_CHECK(a->client_id == b->client_id);
    FZ_CHECK(strcmp(a->arch, b->arch) == 0);
    FZ_CHECK(a->in_channels == b->in_channels && a->height == b->height &&
             a->width == b->width && a->classes == b->classes);
    FZ_CHECK(a->epochs == b->epochs && a->batch == b->batch);
    FZ_CHECK(same_f64(a->lr, b->lr) && same_f64(a->momentum, b->momentum) &&
             same_f64(a->weight_decay, b->weight_decay));
    FZ_CHECK(a->seed == b->seed);
    FZ_CHECK(a->model_version == b->model_version && a->numel == b->numel);
    FZ_CHECK(same_bytes(a->vec, a->vec_len, b->vec, b->vec_len));
    FZ_CHECK(a->n_samples == b->n_samples);
    FZ_CHECK(same_f64(a->loss_sum, b->loss_sum));
    FZ_CHECK(a->correct == b->correct);
    FZ_CHECK(same_f64(a->train_seconds, b->train_seconds));
    FZ_CHECK(same_bytes(a->hist, a->hist_len, b->hist, b->hist_len));
    FZ_CHECK(a->threshold == b->threshold);
    FZ_CHECK(same_f64(a->clip, b->clip) && same_f64(a->scale, b->scale) && a->bits == b->bits);
    FZ_CHECK(same_bytes(a->blob, a->blob_len, b->blob, b->blob_len));
    FZ_CHECK(same_bytes(a->u1, a->u1_len, b->u1, b->u1_len));
    FZ_CHECK(a->degree == b->degree);
    FZ_CHECK(a->code == b->code);
    FZ_CHECK(strcmp(a->reason, b->reason) == 0);
}

/* ---- seeds ------------------------------------------------------------------------------ */

static void write_seeds(void)
{
    static uint8_t vec[17 * 4], hist[2 * WIRE_HIST_BINS * 4], blob[1024];
    for (size_t i = 0; i < sizeof vec; i++) vec[i] = (uint8_t)(i * 37 + 1);
    for (size_t i = 0; i < sizeof hist; i += 4) wire_put_u32(hist + i, (uint32_t)(i % 7 == 0));
    for (size_t i = 0; i < sizeof blob; i++) blob[i] = (uint8_t)(i * 11 + 3);
    /* Every type the codec knows, with its fields filled in where it has any. */
    for (int t = 1; t < MSG_TYPE_COUNT; t++) {
        size_t blob_len = 0;
        switch (t) {
        case MSG_ADVERTISE: blob_len = WIRE_ADVERTISE_BYTES; break;
        case MSG_KEYS: blob_len = 3 * WIRE_KEYREC_MIN; break;
        case MSG_SHARES: case MSG_SHARES_IN: blob_len = 2 * WIRE_BOXREC_BYTES; break;
        case MSG_UNMASK_REQ: blob_len = 3 * WIRE_REQREC_BYTES; break;
        case MSG_UNMASK: blob_len = 3 * WIRE_SHAREREC_BYTES; break;
        default: break;
        }
        msg_t m = {.type = (msg_type_t)t, .round = 3, .phase = PHASE_TRAIN};
        switch (m.type) {
        case MSG_HELLO:
            strcpy(m.site, "site-a");
            m.version = WIRE_VERSION;
            m.n_train = 470;
            m.n_val = 52;
            strcpy(m.sw, "0.6.0"); /* v3 */
            m.present = MSG_HAS_SW;
            break;
        case MSG_WELCOME:
            m.client_id = 2;
            strcpy(m.sw, "0.6.0");
            m.present = MSG_HAS_SW;
            break;
        case MSG_HEARTBEAT: /* v3: training progress */
            m.done = 640;
            m.total = 2000;
            m.present = MSG_HAS_PROGRESS;
            break;
        case MSG_PLAN:
        case MSG_EVAL:
            strcpy(m.arch, "cnn");
            m.in_channels = 1;
            m.height = m.width = 28;
            m.classes = 2;
            m.numel = 16;
            m.model_version = 2;
            m.vec = vec;
            m.vec_len = 64;
            m.present = MSG_HAS_VEC;
            if (m.type == MSG_PLAN) {
                m.epochs = 2;
                m.batch = 32;
                m.lr = 0.02;
                m.momentum = 0.9;
                m.weight_decay = 1e-4;
                m.seed = 1000004;
                m.threshold = 2;
                m.clip = 2.0;
                m.scale = 1000.0;
                m.bits = 20;
                m.present |= MSG_HAS_SECAGG;
            }
            break;
        case MSG_UPDATE:
            m.n_samples = 470;
            m.loss_sum = 0.25;
            m.train_seconds = 1.5;
            m.vec = vec;
            m.vec_len = 64;
            m.present = MSG_HAS_VEC;
            break;
        case MSG_EVAL_RESULT:
            m.n_samples = 52;
            m.loss_sum = 20.5;
            m.correct = 40;
            m.hist = hist;
            m.hist_len = sizeof hist;
            m.present = MSG_HAS_HIST;
            break;
        case MSG_ERROR:
            m.code = ERR_PROTOCOL;
            strcpy(m.reason, "share boxes: bad length");
            break;
        case MSG_MASKED:
            m.vec = vec;
            m.vec_len = sizeof vec;
            m.present = MSG_HAS_VEC;
            break;
        case MSG_ADVERTISE: m.train_seconds = 2.0; /* fall through */
        case MSG_KEYS:
            if (m.type == MSG_KEYS) { /* SecAgg+: all of U1 and the graph's degree */
                m.u1 = blob + 512;
                m.u1_len = 3 * WIRE_U1REC_BYTES;
                m.degree = 2;
                m.present |= MSG_HAS_U1;
            }
            /* fall through */
        default:
            if (blob_len) {
                m.blob = blob;
                m.blob_len = blob_len;
                m.present |= MSG_HAS_BLOB;
            }
            break;
        }
        fz_seed_t s = {.n = 0};
        wire_buf_t *b = wire_buf_new();
        FZ_CHECK(b != NULL);
        msg_encode(&m, b);
        fz_seed_bytes(&s, wire_buf_data(b), wire_buf_size(b));
        wire_buf_destroy(&b);
        char name[64];
        snprintf(name, sizeof name, "seed-%02d-%s", (int)m.type, msg_type_name(m.type));
        fz_seed_write(name, &s);
    }
    /* An ERROR spelled the long way: map16, uint32/uint16/uint8 integers, str8. */
    static const uint8_t longform[] = {
        0xde, 0x00, 0x05, 0xa4, 't', 'y', 'p', 'e', 0xce, 0, 0, 0, MSG_ERROR,
        0xa5, 'r', 'o', 'u', 'n', 'd', 0xcd, 0x01, 0x00, 0xa5, 'p', 'h', 'a', 's', 'e', 0xcc, 0x02,
        0xa4, 'c', 'o', 'd', 'e', 0x09};
    fz_seed_t s = {.n = 0};
    fz_seed_bytes(&s, longform, sizeof longform);
    static const uint8_t reason[] = {0xa6, 'r', 'e', 'a', 's', 'o', 'n', 0xd9, 0x03, 'b', 'a', 'd'};
    fz_seed_bytes(&s, reason, sizeof reason);
    fz_seed_write("seed-longform-ERROR", &s);
}

/* ---- libFuzzer ---------------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dec_a = wire_decoder_new();
    dec_b = wire_decoder_new();
    buf_a = wire_buf_new();
    buf_b = wire_buf_new();
    if (!dec_a || !dec_b || !buf_a || !buf_b) abort();
    if (fz_seed_dir()) {
        write_seeds();
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msg_t a, b;
    char err[256];
    memset(err, 0x55, sizeof err);
    if (msg_decode(dec_a, data, size, &a, err, sizeof err) < 0) {
        FZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        return 0;
    }
    check_shape(&a, data, size);

    msg_encode(&a, buf_a);
    const uint8_t *enc = wire_buf_data(buf_a);
    size_t enc_len = wire_buf_size(buf_a);
    if (msg_decode(dec_b, enc, enc_len, &b, err, sizeof err) < 0) {
        fprintf(stderr, "re-encoded %s does not decode: %s\n", msg_type_name(a.type), err);
        FZ_CHECK(!"msg_encode output refused by msg_decode");
    }
    check_shape(&b, enc, enc_len);
    check_same(&a, &b);

    msg_encode(&b, buf_b);
    FZ_CHECK(same_bytes(enc, enc_len, wire_buf_data(buf_b), wire_buf_size(buf_b)));
    return 0;
}
