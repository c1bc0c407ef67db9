/*
 * wire.c - msgpack codec for every medfed message.
 *
 * The field table below IS the protocol's message list: for each key, its
 * wire type, where it lives in msg_t, and which message types require or
 * allow it. Encoder and decoder are both driven by it, so they cannot drift.
 */
#include "proto/wire.h"

#include <assert.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T(x) (1u << (x))

typedef enum { F_U32, F_U64, F_I64, F_F64, F_STR, F_BIN } field_kind_t;

typedef struct {
    const char *key;
    field_kind_t kind;
    size_t off;        /* offset of the value in msg_t */
    size_t cap;        /* F_STR: buffer size; F_BIN: offset of the length */
    uint32_t required; /* T(type) mask */
    uint32_t optional; /* T(type) mask */
    uint32_t presence; /* MSG_HAS_* bit for optional bins, else 0 */
} field_t;

#define OFF(f) offsetof(msg_t, f)
#define SPEC_TYPES (T(MSG_PLAN) | T(MSG_EVAL))
#define BLOB_TYPES (T(MSG_ADVERTISE) | T(MSG_KEYS) | T(MSG_SHARES) | T(MSG_SHARES_IN) | \
                    T(MSG_UNMASK_REQ) | T(MSG_UNMASK) | T(MSG_CONSIST_REQ) | T(MSG_CONSIST))

#define SW_TYPES (T(MSG_HELLO) | T(MSG_PING) | T(MSG_WELCOME) | T(MSG_PONG))
/* The optional fields protocol version 3 added (none before it knows them). */
#define V3_PRESENCE (MSG_HAS_SW | MSG_HAS_PROGRESS | MSG_HAS_LOCAL | MSG_HAS_LOSS)
/* ... and version 4 (with its types FETCH and CHUNK). */
#define V4_PRESENCE MSG_HAS_BULK
#define BULK_TYPES (T(MSG_FETCH) | T(MSG_CHUNK))
#define V4_TYPES (BULK_TYPES | T(MSG_PART))
#define UPLOAD_TYPES (T(MSG_UPDATE) | T(MSG_MASKED))

static const field_t fields[] = {
    /* key        kind   where               cap / len             required                              optional */
    {"site",      F_STR, OFF(site),          WIRE_SITE_MAX,        T(MSG_HELLO) | T(MSG_PING), 0, 0},
    {"version",   F_U32, OFF(version),       0,                    T(MSG_HELLO) | T(MSG_PING), 0, 0},
    {"n_train",   F_I64, OFF(n_train),       0,                    T(MSG_HELLO), 0, 0},
    {"n_val",     F_I64, OFF(n_val),         0,                    T(MSG_HELLO), 0, 0},
    {"sw",        F_STR, OFF(sw),            WIRE_SW_MAX,          0, SW_TYPES, MSG_HAS_SW},
    {"done",      F_U64, OFF(done),          0,                    0, T(MSG_HEARTBEAT), MSG_HAS_PROGRESS},
    {"total",     F_U64, OFF(total),         0,                    0, T(MSG_HEARTBEAT), MSG_HAS_PROGRESS},
    {"client_id", F_U32, OFF(client_id),     0,                    T(MSG_WELCOME), 0, 0},
    {"arch",      F_STR, OFF(arch),          WIRE_ARCH_MAX,        SPEC_TYPES, 0, 0},
    {"in_ch",     F_U32, OFF(in_channels),   0,                    SPEC_TYPES, 0, 0},
    {"height",    F_U32, OFF(height),        0,                    SPEC_TYPES, 0, 0},
    {"width",     F_U32, OFF(width),         0,                    SPEC_TYPES, 0, 0},
    {"classes",   F_U32, OFF(classes),       0,                    SPEC_TYPES, 0, 0},
    {"numel",     F_U64, OFF(numel),         0,                    SPEC_TYPES, 0, 0},
    {"model_ver", F_U32, OFF(model_version), 0,                    SPEC_TYPES | BULK_TYPES, 0, 0},
    {"bl",        F_U64, OFF(bulk_len),      0,                    T(MSG_PART), SPEC_TYPES | UPLOAD_TYPES, MSG_HAS_BULK},
    {"bh",        F_BIN, OFF(bulk_hash),     OFF(bulk_hash_len),   BULK_TYPES, SPEC_TYPES, MSG_HAS_BULK},
    {"off",       F_U64, OFF(offset),        0,                    V4_TYPES, 0, 0},
    {"epochs",    F_U32, OFF(epochs),        0,                    T(MSG_PLAN), 0, 0},
    {"batch",     F_U32, OFF(batch),         0,                    T(MSG_PLAN), 0, 0},
    {"lr",        F_F64, OFF(lr),            0,                    T(MSG_PLAN), 0, 0},
    {"momentum",  F_F64, OFF(momentum),      0,                    T(MSG_PLAN), 0, 0},
    {"wd",        F_F64, OFF(weight_decay),  0,                    T(MSG_PLAN), 0, 0},
    {"seed",      F_U64, OFF(seed),          0,                    T(MSG_PLAN), 0, 0},
    {"vec",       F_BIN, OFF(vec),           OFF(vec_len),         T(MSG_CHUNK) | T(MSG_PART), SPEC_TYPES | UPLOAD_TYPES, MSG_HAS_VEC},
    {"n",         F_I64, OFF(n_samples),     0,                    T(MSG_UPDATE) | T(MSG_EVAL_RESULT), 0, 0},
    {"loss",      F_F64, OFF(loss_sum),      0,                    T(MSG_UPDATE) | T(MSG_EVAL_RESULT), 0, 0},
    {"train_s",   F_F64, OFF(train_seconds), 0,                    T(MSG_UPDATE) | T(MSG_ADVERTISE), 0, 0},
    {"correct",   F_I64, OFF(correct),       0,                    T(MSG_EVAL_RESULT), 0, 0},
    {"hist",      F_BIN, OFF(hist),          OFF(hist_len),        0, T(MSG_EVAL_RESULT), MSG_HAS_HIST},
    {"t",         F_U32, OFF(threshold),     0,                    0, T(MSG_PLAN), MSG_HAS_SECAGG},
    {"clip",      F_F64, OFF(clip),          0,                    0, T(MSG_PLAN), MSG_HAS_SECAGG},
    {"scale",     F_F64, OFF(scale),         0,                    0, T(MSG_PLAN), MSG_HAS_SECAGG},
    {"bits",      F_U32, OFF(bits),          0,                    0, T(MSG_PLAN), MSG_HAS_SECAGG},
    {"lscale",    F_F64, OFF(loss_scale),    0,                    0, T(MSG_PLAN), MSG_HAS_LOSS},
    {"mu",        F_F64, OFF(prox_mu),       0,                    0, T(MSG_PLAN), MSG_HAS_LOCAL},
    {"aug",       F_U32, OFF(augment),       0,                    0, T(MSG_PLAN), MSG_HAS_LOCAL},
    {"cbal",      F_U32, OFF(class_balanced), 0,                   0, T(MSG_PLAN), MSG_HAS_LOCAL},
    {"blob",      F_BIN, OFF(blob),          OFF(blob_len),        BLOB_TYPES, 0, MSG_HAS_BLOB},
    {"u1",        F_BIN, OFF(u1),            OFF(u1_len),          T(MSG_KEYS), 0, MSG_HAS_U1},
    {"deg",       F_U32, OFF(degree),        0,                    T(MSG_KEYS), 0, 0},
    {"code",      F_U32, OFF(code),          0,                    T(MSG_ERROR), 0, 0},
    {"reason",    F_STR, OFF(reason),        WIRE_REASON_MAX,      T(MSG_ERROR), 0, 0},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static const char *const type_names[MSG_TYPE_COUNT] = {
    "?", "HELLO", "WELCOME", "PLAN", "HEARTBEAT", "UPDATE", "EVAL", "EVAL_RESULT",
    "SHUTDOWN", "ERROR", "ADVERTISE", "KEYS", "SHARES", "SHARES_IN", "MASKED", "UNMASK_REQ",
    "UNMASK", "UPLOAD", "READY", "PING", "PONG", "CONSIST_REQ", "CONSIST", "FETCH", "CHUNK", "PART",
};

static const char *const phase_names[PHASE_COUNT] = {"none", "train", "eval", "advertise",
                                                     "share", "masked", "unmask",
                                                     "consistency"};

const char *msg_type_name(msg_type_t t)
{
    return (t > 0 && t < MSG_TYPE_COUNT) ? type_names[t] : "?";
}

const char *msg_phase_name(uint32_t p)
{
    return p < PHASE_COUNT ? phase_names[p] : "?";
}

int msg_fits_version(const msg_t *m, uint32_t version, char *err, size_t errlen)
{
    if (version < 4 && (T(m->type) & V4_TYPES)) {
        snprintf(err, errlen, "%s: unknown message type (protocol version %u has no such type)",
                 msg_type_name(m->type), version);
        return -1;
    }
    uint32_t newer = (version < 3 ? V3_PRESENCE : 0) | (version < 4 ? V4_PRESENCE : 0);
    if (!(m->present & newer)) return 0;
    for (size_t j = 0; j < N_FIELDS; j++) {
        if ((fields[j].presence & newer & m->present) &&
            (fields[j].optional & T(m->type))) {
            snprintf(err, errlen, "%s: unexpected field '%s' (protocol version %u has no such "
                     "field)", msg_type_name(m->type), fields[j].key, version);
            return -1;
        }
    }
    return 0;
}

void msg_error(msg_t *m, uint32_t round, msg_error_t code, const char *fmt, ...)
{
    memset(m, 0, sizeof *m);
    m->type = MSG_ERROR;
    m->round = round;
    m->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->reason, sizeof m->reason, fmt, ap);
    va_end(ap);
}

/* ---- secure-aggregation records ------------------------------------------------- */

int wire_keyrec_next(const uint8_t *blob, size_t len, size_t *off, wire_keyrec_t *r)
{
    assert(blob != NULL || len == 0);
    memset(r, 0, sizeof *r);
    if (*off > len || len - *off < WIRE_KEYREC_MIN) return -1;
    const uint8_t *p = blob + *off;
    const uint32_t cert_len = wire_get_u32(p + 4 + WIRE_ADVERTISE_BYTES);
    if (cert_len > WIRE_CERT_MAX || len - *off - WIRE_KEYREC_MIN < cert_len) return -1;
    r->id = wire_get_u32(p);
    r->adv = p + 4;
    r->cert = cert_len ? p + WIRE_KEYREC_MIN : NULL;
    r->cert_len = cert_len;
    *off += WIRE_KEYREC_MIN + cert_len;
    return 0;
}

size_t wire_keyrec_put(uint8_t *out, uint32_t id, const uint8_t adv[WIRE_ADVERTISE_BYTES],
                       const uint8_t *cert, size_t cert_len)
{
    assert(cert_len <= WIRE_CERT_MAX && (cert != NULL || cert_len == 0));
    wire_put_u32(out, id);
    memcpy(out + 4, adv, WIRE_ADVERTISE_BYTES);
    wire_put_u32(out + 4 + WIRE_ADVERTISE_BYTES, (uint32_t)cert_len);
    if (cert_len) memcpy(out + WIRE_KEYREC_MIN, cert, cert_len);
    return WIRE_KEYREC_MIN + cert_len;
}

size_t wire_boxrec_put(uint8_t *out, uint32_t id, const uint8_t box[WIRE_BOX_BYTES])
{
    wire_put_u32(out, id);
    memcpy(out + 4, box, WIRE_BOX_BYTES);
    return WIRE_BOXREC_BYTES;
}

wire_boxrec_t wire_boxrec_get(const uint8_t *rec)
{
    return (wire_boxrec_t){.id = wire_get_u32(rec), .box = rec + 4};
}

size_t wire_reqrec_put(uint8_t *out, uint32_t id, uint32_t kind)
{
    wire_put_u32(out, id);
    wire_put_u32(out + 4, kind);
    return WIRE_REQREC_BYTES;
}

wire_reqrec_t wire_reqrec_get(const uint8_t *rec)
{
    return (wire_reqrec_t){.id = wire_get_u32(rec), .kind = wire_get_u32(rec + 4)};
}

size_t wire_sharerec_put(uint8_t *out, uint32_t id, uint32_t kind, const uint8_t share[64])
{
    wire_put_u32(out, id);
    wire_put_u32(out + 4, kind);
    memcpy(out + 8, share, 64);
    return WIRE_SHAREREC_BYTES;
}

wire_sharerec_t wire_sharerec_get(const uint8_t *rec)
{
    return (wire_sharerec_t){.id = wire_get_u32(rec), .kind = wire_get_u32(rec + 4), .share = rec + 8};
}

size_t wire_sigrec_put(uint8_t *out, uint32_t id, const uint8_t sig[WIRE_SIG_BYTES])
{
    wire_put_u32(out, id);
    memcpy(out + 4, sig, WIRE_SIG_BYTES);
    return WIRE_SIGREC_BYTES;
}

wire_sigrec_t wire_sigrec_get(const uint8_t *rec)
{
    return (wire_sigrec_t){.id = wire_get_u32(rec), .sig = rec + 4};
}

wire_u1rec_t wire_u1rec_get(const uint8_t *rec)
{
    return (wire_u1rec_t){.id = wire_get_u32(rec), .adv_hash = rec + 4};
}

size_t wire_u1rec_put(uint8_t *out, uint32_t id, const uint8_t adv_hash[WIRE_HASH_BYTES])
{
    wire_put_u32(out, id);
    memcpy(out + 4, adv_hash, WIRE_HASH_BYTES);
    return WIRE_U1REC_BYTES;
}

size_t wire_idlist_put(uint8_t *out, const uint32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) wire_put_u32(out + 4 * i, ids[i]);
    return n * 4;
}

void wire_adv_signed(uint8_t out[WIRE_ADV_SIGNED_BYTES], uint32_t round, uint32_t id,
                     const uint8_t model_hash[WIRE_HASH_BYTES], const uint8_t *adv)
{
    wire_put_u32(out, round);
    wire_put_u32(out + 4, id);
    memcpy(out + 8, model_hash, WIRE_HASH_BYTES);
    memcpy(out + 8 + WIRE_HASH_BYTES, adv, WIRE_ADV_SIG_OFF);
}

#define GRAPH_LABEL "medfed-graph-v1"

size_t wire_graph_input_len(size_t u1_len)
{
    return sizeof GRAPH_LABEL - 1 + 4 + WIRE_HASH_BYTES + 4 + u1_len;
}

size_t wire_graph_input(uint8_t *out, uint32_t round, const uint8_t model_hash[WIRE_HASH_BYTES],
                        uint32_t degree, const uint8_t *u1, size_t u1_len)
{
    uint8_t *p = out;
    memcpy(p, GRAPH_LABEL, sizeof GRAPH_LABEL - 1);
    p += sizeof GRAPH_LABEL - 1;
    wire_put_u32(p, round);
    memcpy(p + 4, model_hash, WIRE_HASH_BYTES);
    wire_put_u32(p + 4 + WIRE_HASH_BYTES, degree);
    p += 8 + WIRE_HASH_BYTES;
    if (u1_len) memcpy(p, u1, u1_len);
    return wire_graph_input_len(u1_len);
}

size_t wire_consist_signed_len(size_t n)
{
    return 4 + WIRE_HASH_BYTES + 4 + 4 * n;
}

size_t wire_consist_signed(uint8_t *out, uint32_t round, const uint8_t model_hash[WIRE_HASH_BYTES],
                           const uint32_t *ids, size_t n)
{
    assert(n <= WIRE_MAX_RECORDS);
    wire_put_u32(out, round);
    memcpy(out + 4, model_hash, WIRE_HASH_BYTES);
    wire_put_u32(out + 4 + WIRE_HASH_BYTES, (uint32_t)n);
    for (size_t i = 0; i < n; i++) wire_put_u32(out + 8 + WIRE_HASH_BYTES + 4 * i, ids[i]);
    return wire_consist_signed_len(n);
}

int wire_idlist_parse(const uint8_t *blob, size_t len, size_t max, uint32_t *ids, size_t *n)
{
    if (len % 4 || len == 0 || len / 4 > max) return -1;
    *n = len / 4;
    for (size_t i = 0; i < *n; i++) {
        ids[i] = wire_get_u32(blob + 4 * i);
        if (i && ids[i] <= ids[i - 1]) return -1;
    }
    return 0;
}

int wire_unmaskreq_parse(const uint8_t *blob, size_t len, wire_unmaskreq_t *r)
{
    memset(r, 0, sizeof *r);
    if (len < 4) return -1;
    const size_t nreq = wire_get_u32(blob);
    if (nreq > WIRE_MAX_RECORDS || (len - 4) / WIRE_REQREC_BYTES < nreq) return -1;
    const size_t rest = len - 4 - nreq * WIRE_REQREC_BYTES;
    if (rest % WIRE_SIGREC_BYTES) return -1;
    r->reqs = blob + 4;
    r->nreq = nreq;
    r->sigs = blob + 4 + nreq * WIRE_REQREC_BYTES;
    r->nsig = rest / WIRE_SIGREC_BYTES;
    return 0;
}

size_t wire_unmaskreq_len(size_t nreq, size_t nsig)
{
    return 4 + nreq * WIRE_REQREC_BYTES + nsig * WIRE_SIGREC_BYTES;
}

void wire_unmaskreq_put_header(uint8_t *out, size_t nreq)
{
    assert(nreq <= WIRE_MAX_RECORDS);
    wire_put_u32(out, (uint32_t)nreq);
}

/* ---- encode ---------------------------------------------------------------- */

struct wire_buf {
    msgpack_sbuffer sb;
};

wire_buf_t *wire_buf_new(void)
{
    wire_buf_t *b = calloc(1, sizeof *b);
    if (b) msgpack_sbuffer_init(&b->sb);
    return b;
}

void wire_buf_destroy(wire_buf_t **b)
{
    if (!b || !*b) return;
    msgpack_sbuffer_destroy(&(*b)->sb);
    free(*b);
    *b = NULL;
}

const void *wire_buf_data(const wire_buf_t *b) { return b->sb.data; }
size_t wire_buf_size(const wire_buf_t *b) { return b->sb.size; }
char *wire_buf_release(wire_buf_t *b) { return msgpack_sbuffer_release(&b->sb); }

static int field_in_message(const field_t *f, const msg_t *m)
{
    uint32_t bit = T(m->type);
    if (f->required & bit) return 1;
    if (f->optional & bit) return f->presence ? (m->present & f->presence) != 0 : 1;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

int msg_encode(const msg_t *m, wire_buf_t *b)
{
    assert(m->type > 0 && m->type < MSG_TYPE_COUNT);
    b->sb.size = 0; /* reuse the allocation */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->sb, msgpack_sbuffer_write);

    uint32_t count = 3;
    for (size_t i = 0; i < N_FIELDS; i++) count += (uint32_t)field_in_message(&fields[i], m);
    msgpack_pack_map(&pk, count);
    pack_str(&pk, "type");
    msgpack_pack_uint32(&pk, (uint32_t)m->type);
    pack_str(&pk, "round");
    msgpack_pack_uint32(&pk, m->round);
    pack_str(&pk, "phase");
    msgpack_pack_uint32(&pk, m->phase);

    const char *base = (const char *)m;
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field_t *f = &fields[i];
        if (!field_in_message(f, m)) continue;
        pack_str(&pk, f->key);
        const void *p = base + f->off;
        switch (f->kind) {
        case F_U32: msgpack_pack_uint32(&pk, *(const uint32_t *)p); break;
        case F_U64: msgpack_pack_uint64(&pk, *(const uint64_t *)p); break;
        case F_I64: msgpack_pack_int64(&pk, *(const int64_t *)p); break;
        case F_F64: msgpack_pack_double(&pk, *(const double *)p); break;
        case F_STR: pack_str(&pk, (const char *)p); break;
        case F_BIN: {
            const uint8_t *ptr = *(const uint8_t *const *)p;
            size_t len = *(const size_t *)(base + f->cap);
            assert(len <= UINT32_MAX && (ptr || len == 0));
            msgpack_pack_bin(&pk, len);
            msgpack_pack_bin_body(&pk, ptr, len);
            break;
        }
        }
    }
    return 0;
}

/* ---- decode ---------------------------------------------------------------- */

struct wire_decoder {
    msgpack_unpacked up;
};

wire_decoder_t *wire_decoder_new(void)
{
    wire_decoder_t *d = calloc(1, sizeof *d);
    if (d) msgpack_unpacked_init(&d->up);
    return d;
}

void wire_decoder_destroy(wire_decoder_t **d)
{
    if (!d || !*d) return;
    msgpack_unpacked_destroy(&(*d)->up);
    free(*d);
    *d = NULL;
}

static int key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

static int get_u64(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max) return -1;
    *out = o->via.u64;
    return 0;
}

/* Decodes one field value into m; returns a static reason on failure. */
static const char *decode_value(const field_t *f, const msgpack_object *v, msg_t *m)
{
    char *base = (char *)m;
    void *p = base + f->off;
    uint64_t u;
    switch (f->kind) {
    case F_U32:
        if (get_u64(v, UINT32_MAX, &u) < 0) return "expected an unsigned 32-bit integer";
        *(uint32_t *)p = (uint32_t)u;
        return NULL;
    case F_U64:
        if (get_u64(v, UINT64_MAX, &u) < 0) return "expected an unsigned integer";
        *(uint64_t *)p = u;
        return NULL;
    case F_I64:
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            if (v->via.u64 > (uint64_t)INT64_MAX) return "integer out of range";
            *(int64_t *)p = (int64_t)v->via.u64;
        } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            *(int64_t *)p = v->via.i64;
        } else {
            return "expected an integer";
        }
        return NULL;
    case F_F64:
        if (v->type != MSGPACK_OBJECT_FLOAT64 && v->type != MSGPACK_OBJECT_FLOAT32)
            return "expected a float";
        *(double *)p = v->via.f64;
        return NULL;
    case F_STR:
        if (v->type != MSGPACK_OBJECT_STR) return "expected a string";
        if (v->via.str.size >= f->cap) return "string too long";
        if (memchr(v->via.str.ptr, '\0', v->via.str.size)) return "string contains NUL";
        memcpy(p, v->via.str.ptr, v->via.str.size);
        ((char *)p)[v->via.str.size] = '\0';
        return NULL;
    case F_BIN:
        if (v->type != MSGPACK_OBJECT_BIN) return "expected bin";
        *(const uint8_t **)p = (const uint8_t *)v->via.bin.ptr;
        *(size_t *)(base + f->cap) = v->via.bin.size;
        return NULL;
    }
    return "bad field kind";
}

/* Size of the scalar at p (header + payload), or 0 if it is a container, an
 * ext, a never-used byte, or runs past end. Containers are refused before
 * msgpack-c sees them: it sizes its zone from the count a peer declares. */
static size_t scalar_size(const uint8_t *p, const uint8_t *end)
{
    size_t left = (size_t)(end - p), hdr, body = 0;
    uint8_t b = p[0];
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 1;
    if ((b & 0xe0) == 0xa0) { hdr = 1; body = b & 0x1f; }           /* fixstr */
    else switch (b) {
    case 0xcc: case 0xd0: return left >= 2 ? 2 : 0;
    case 0xcd: case 0xd1: return left >= 3 ? 3 : 0;
    case 0xca: case 0xce: case 0xd2: return left >= 5 ? 5 : 0;
    case 0xcb: case 0xcf: case 0xd3: return left >= 9 ? 9 : 0;
    case 0xc4: case 0xd9: hdr = 2; break;                            /* bin8 / str8 */
    case 0xc5: case 0xda: hdr = 3; break;                            /* bin16 / str16 */
    case 0xc6: case 0xdb: hdr = 5; break;                            /* bin32 / str32 */
    default: return 0;                                                /* containers, ext, 0xc1 */
    }
    if (left < hdr) return 0;
    if ((b & 0xe0) != 0xa0) {
        body = 0;
        for (size_t i = 1; i < hdr; i++) body = (body << 8) | p[i];
    }
    if (body > left - hdr) return 0;
    return hdr + body;
}

/* Checks the shape (one flat map of scalars, every length inside the
 * buffer) without allocating anything. */
static int prescan(const uint8_t *p, size_t len, char *err, size_t errlen)
{
    const uint8_t *end = p + len;
    if (len == 0) {
        snprintf(err, errlen, "empty message");
        return -1;
    }
    size_t n, hdr;
    if ((p[0] & 0xf0) == 0x80) { n = p[0] & 0x0f; hdr = 1; }
    else if (p[0] == 0xde && len >= 3) { n = ((size_t)p[1] << 8) | p[2]; hdr = 3; }
    else if (p[0] == 0xdf && len >= 5) {
        n = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) | ((size_t)p[3] << 8) | p[4];
        hdr = 5;
    } else {
        snprintf(err, errlen, "message is not a map");
        return -1;
    }
    if (n > WIRE_MAX_FIELDS) {
        snprintf(err, errlen, "too many fields (%zu)", n);
        return -1;
    }
    p += hdr;
    for (size_t i = 0; i < 2 * n; i++) {
        size_t s = p < end ? scalar_size(p, end) : 0;
        if (s == 0) {
            snprintf(err, errlen, "field %zu: truncated, nested or unsupported value", i / 2);
            return -1;
        }
        p += s;
    }
    if (p != end) {
        snprintf(err, errlen, "%zu trailing bytes after the message", (size_t)(end - p));
        return -1;
    }
    return 0;
}

int msg_decode(wire_decoder_t *d, const void *buf, size_t len, msg_t *m, char *err,
               size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (prescan(buf, len, err, errlen) < 0) return -1;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(&d->up, buf, len, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err, errlen, "not a complete msgpack object (%zu bytes)", len);
        return -1;
    }
    if (off != len) {
        snprintf(err, errlen, "%zu trailing bytes after the message", len - off);
        return -1;
    }
    const msgpack_object *root = &d->up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "message is not a map");
        return -1;
    }
    const msgpack_object_map *map = &root->via.map;
    if (map->size > WIRE_MAX_FIELDS) {
        snprintf(err, errlen, "too many fields (%u)", map->size);
        return -1;
    }

    /* The envelope first: the table's requirements depend on the type. */
    int have_type = 0, have_round = 0, have_phase = 0;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key, *v = &map->ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR) {
            snprintf(err, errlen, "field %u: key is not a string", i);
            return -1;
        }
        uint64_t u;
        if (key_is(k, "type")) {
            if (get_u64(v, MSG_TYPE_COUNT - 1, &u) < 0 || u == 0) {
                snprintf(err, errlen, "field 'type': unknown message type");
                return -1;
            }
            m->type = (msg_type_t)u;
            have_type++;
        } else if (key_is(k, "round")) {
            if (get_u64(v, UINT32_MAX, &u) < 0) {
                snprintf(err, errlen, "field 'round': expected an unsigned 32-bit integer");
                return -1;
            }
            m->round = (uint32_t)u;
            have_round++;
        } else if (key_is(k, "phase")) {
            if (get_u64(v, PHASE_COUNT - 1, &u) < 0) {
                snprintf(err, errlen, "field 'phase': unknown phase");
                return -1;
            }
            m->phase = (uint32_t)u;
            have_phase++;
        }
    }
    if (have_type != 1 || have_round != 1 || have_phase != 1) {
        snprintf(err, errlen, "envelope needs exactly one each of 'type', 'round', 'phase'");
        return -1;
    }

    uint32_t seen[N_FIELDS] = {0};
    uint32_t bit = T(m->type);
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key, *v = &map->ptr[i].val;
        if (key_is(k, "type") || key_is(k, "round") || key_is(k, "phase")) continue;
        size_t j;
        for (j = 0; j < N_FIELDS; j++)
            if (key_is(k, fields[j].key)) break;
        if (j == N_FIELDS || !((fields[j].required | fields[j].optional) & bit)) {
            /* Print the key safely: bounded and only printable bytes. */
            char shown[33];
            size_t n = k->via.str.size < 32 ? k->via.str.size : 32;
            for (size_t c = 0; c < n; c++) {
                char ch = k->via.str.ptr[c];
                shown[c] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
            }
            shown[n] = '\0';
            snprintf(err, errlen, "%s: unexpected field '%s'", msg_type_name(m->type), shown);
            return -1;
        }
        if (seen[j]++) {
            snprintf(err, errlen, "%s: field '%s' repeated", msg_type_name(m->type), fields[j].key);
            return -1;
        }
        const char *why = decode_value(&fields[j], v, m);
        if (!why) m->present |= fields[j].presence;
        if (why) {
            snprintf(err, errlen, "%s: field '%s': %s", msg_type_name(m->type), fields[j].key, why);
            return -1;
        }
    }
    for (size_t j = 0; j < N_FIELDS; j++) {
        if ((fields[j].required & bit) && !seen[j]) {
            snprintf(err, errlen, "%s: missing field '%s'", msg_type_name(m->type), fields[j].key);
            return -1;
        }
    }
    return 0;
}
