/*
 * wire.h - the one wire codec both daemons use.
 *
 * Every message is ONE msgpack map. Keys are short strings; "type", "round"
 * and "phase" are always present. Which other keys a message type requires or
 * allows is one table in wire.c (read it as the protocol's message list).
 * Large vectors travel as msgpack bin holding raw little-endian float32 (or
 * uint32) values; after decoding, msg_t.vec points INTO the input buffer at an
 * arbitrary alignment: copy it (memcpy) before reading it as floats.
 *
 * The decoder checks every type, every length and every field against the
 * table and never trusts a length from the wire: a bad message is rejected
 * with an error string naming the problem, and nothing is allocated for it
 * beyond msgpack's zone, which is bounded by the input size.
 *
 * Message flow of one plaintext FedAvg round (coordinator = C, client = K):
 *   K->C HELLO      site name, protocol version, sample counts
 *   C->K WELCOME    accepted (or ERROR and the connection is ignored)
 *   C->K PLAN       round, hyper-parameters, model spec, global model (bin,
 *                   omitted when the client already holds that version)
 *   K->C HEARTBEAT  while training, so a long epoch is not a dropout
 *   K->C UPDATE     round, sample count, model delta (bin f32)
 *   C->K EVAL       round, new global model version (bin, as for PLAN)
 *   K->C EVAL_RESULT  loss sum, correct count, score histograms (binary tasks)
 *   C->K SHUTDOWN   federation finished
 *   either ERROR    code + human-readable reason (never patient data)
 *   K->C PING / C->K PONG  reachability check (medfed-client --check), no registration
 * Secure aggregation adds its phases as new types with the same envelope.
 */
#ifndef MEDFED_WIRE_H
#define MEDFED_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Protocol versions: 2 signed weights, consistency round; 3 HELLO and PING
 * carry the site's software version ("sw"), WELCOME and PONG the
 * coordinator's, HEARTBEAT the site's training progress ("done" of "total"
 * images), PLAN the local recipe (MSG_HAS_LOCAL) and, in secure rounds whose
 * cohort all speak v3, the loss scale: MASKED then carries the weighted
 * training loss after n_k. A coordinator at WIRE_VERSION admits sites from
 * WIRE_VERSION_MIN (one behind) and speaks each its own form: nothing a v2
 * decoder would refuse goes to a v2 site (msg_fits_version), and a secure
 * round with a v2 site in its cohort uses the v2 masked layout (no loss word).
 * 4 moves the model in chunks (FETCH, CHUNK; MSG_HAS_BULK): a v2 or v3 site
 * is still sent PLAN and EVAL with the model inside. */
#define WIRE_VERSION 4
#define WIRE_VERSION_MIN 2
#define WIRE_SW_MAX 32          /* software version string, with NUL ("0.6.0") */
#define WIRE_SITE_MAX 64        /* site name, with NUL */
#define WIRE_ARCH_MAX 32
#define WIRE_REASON_MAX 256
#define WIRE_HIST_BINS 1000     /* score histogram bins for federated AUC */
#define WIRE_MAX_FIELDS 32

typedef enum {
    MSG_HELLO = 1,
    MSG_WELCOME,
    MSG_PLAN,
    MSG_HEARTBEAT,
    MSG_UPDATE,
    MSG_EVAL,
    MSG_EVAL_RESULT,
    MSG_SHUTDOWN,
    MSG_ERROR,
    /* secure aggregation (Bonawitz et al. 2017), after local training: */
    MSG_ADVERTISE,      /* K->C  blob = c_pk || s_pk || n_k || Ed25519 signature [|| cert] */
    MSG_KEYS,           /* C->K  blob = the key records (wire_keyrec_next) of the client's
                         *       neighbours and its own; u1 = all of U1 as (id, SHA-256 of
                         *       its ADVERTISE record), ascending; deg = graph degree */
    MSG_SHARES,         /* K->C  blob = one share box per peer (WIRE_BOXREC_BYTES each) */
    MSG_SHARES_IN,      /* C->K  blob = the boxes addressed to this client */
    MSG_MASKED,         /* K->C  vec = masked encoded update: numel packed elements, then
                         *       n_k and n_k * loss as uint32 LE (aggregation/encoding.h) */
    MSG_UNMASK_REQ,     /* C->K  blob = wire_unmaskreq: (id, kind) records, kind 0 survivor,
                         *       1 dropped, then the U3 signatures (id, sig) of the
                         *       consistency round */
    MSG_UNMASK,         /* K->C  blob = (id, kind, share) records */
    MSG_UPLOAD,         /* C->K  your turn to send MASKED (bounds the coordinator's memory) */
    MSG_READY,          /* K->C  masked input computed, waiting for UPLOAD */
    /* deployment checks (medfed-client --check), outside any round: */
    MSG_PING,           /* K->C  site, version: is the coordinator there, does it admit us? */
    MSG_PONG,           /* C->K  yes; the envelope's round is the coordinator's round */
    /* secure aggregation, consistency round (malicious-coordinator variant), after MASKED: */
    MSG_CONSIST_REQ,    /* C->K  blob = U3: the ids whose masked input is in the sum, ascending */
    MSG_CONSIST,        /* K->C  blob = our Ed25519 signature on (round, model hash, U3) */
    /* v4: the model in chunks (PLAN/EVAL carry its length and hash, "bl", "bh"): */
    MSG_FETCH,          /* K->C  model_ver, bh, off: send the model's bytes from off */
    MSG_CHUNK,          /* C->K  model_ver, bh, off, vec = at most WIRE_CHUNK_BYTES of them */
    MSG_PART,           /* K->C  bl, off, vec: a piece of the UPDATE or MASKED vector that
                         *       follows (sent then with bl and no vec: MSG_HAS_BULK) */
    MSG_TYPE_COUNT
} msg_type_t;

typedef enum {
    PHASE_NONE = 0,
    PHASE_TRAIN,
    PHASE_EVAL,
    PHASE_ADVERTISE,
    PHASE_SHARE,
    PHASE_MASKED,
    PHASE_UNMASK,
    PHASE_CONSIST,
    PHASE_COUNT
} msg_phase_t;

typedef enum {
    ERR_MALFORMED = 1,     /* could not be decoded */
    ERR_UNEXPECTED,        /* valid message, wrong moment (out of phase) */
    ERR_WRONG_ROUND,       /* stale or replayed round id */
    ERR_WRONG_LENGTH,      /* vector length does not match the model */
    ERR_NONFINITE,         /* NaN or Inf in an update */
    ERR_UNKNOWN_CLIENT,    /* not registered / not on the roster */
    ERR_DUPLICATE,         /* second update for the same round */
    ERR_VERSION,           /* protocol version mismatch */
    ERR_LOCAL,             /* the sender failed locally (e.g. training error) */
    ERR_FULL,              /* federation full */
    ERR_SIGNATURE,         /* advertised keys not signed by the site's identity */
    ERR_PROTOCOL,          /* violates secure aggregation (bad record, bad set) */
    ERR_NOT_REGISTERED,    /* a message before HELLO (e.g. the coordinator restarted): say HELLO */
    ERR_MODEL_GONE         /* v4: FETCH for a model no longer served (the round went on) */
} msg_error_t;

/* Presence bits for optional fields (set by the decoder, read by the encoder). */
#define MSG_HAS_VEC (1u << 0)
#define MSG_HAS_HIST (1u << 1)
#define MSG_HAS_SECAGG (1u << 2)   /* PLAN: threshold, clip, scale, bits */
#define MSG_HAS_BLOB (1u << 3)
#define MSG_HAS_U1 (1u << 4)
#define MSG_HAS_SW (1u << 5)       /* v3: HELLO, PING, WELCOME, PONG: software version */
#define MSG_HAS_PROGRESS (1u << 6) /* v3: HEARTBEAT: training progress */
#define MSG_HAS_LOCAL (1u << 7)    /* v3: PLAN: prox_mu, augment, class_balanced */
#define MSG_HAS_LOSS (1u << 8)     /* v3: secure PLAN: the loss scale (MASKED's loss word) */
#define MSG_HAS_BULK (1u << 9)     /* v4: PLAN/EVAL: the model is fetched in chunks (bl, bh);
                                    * UPDATE/MASKED: the vector came before in PARTs (bl) */

/* v4 model transfer: the site asks for the model in chunks of at most this
 * many bytes, a few at a time (client.c's window), and keeps what it has
 * across a lost link: a PLAN or EVAL sent again for the same model (same
 * version and SHA-256) resumes at the first byte it lacks. Control messages
 * (heartbeats, PONGs, SHUTDOWN) pass between chunks. The other way, a
 * vector longer than a chunk (UPDATE, MASKED) goes as PARTs of at most this
 * size, then the message itself without it: CURVE encrypts each message
 * whole, so between v4 peers no message is larger than a chunk plus its
 * envelope (a v2/v3 site still gets the model inside PLAN and EVAL). */
#define WIRE_CHUNK_BYTES (1u << 20)

/* Record layouts inside secure-aggregation blobs (all integers LE). */
/* ADVERTISE: c_pk (32), s_pk (32), n_k (u64: the sample count this site's
 * update is weighted by), signature (64) over wire_adv_signed(). */
#define WIRE_ADV_WEIGHT_OFF 64
#define WIRE_ADV_SIG_OFF 72
#define WIRE_ADVERTISE_BYTES (WIRE_ADV_SIG_OFF + 64)
#define WIRE_HASH_BYTES 32                             /* SHA-256 of the global model */
/* ADVERTISE may append the site's X.509 identity certificate (DER, at most
 * WIRE_CERT_MAX bytes) after those fixed fields. A KEYS record is variable
 * length: id, advertise, cert length (u32), cert (0 bytes: none). */
#define WIRE_CERT_MAX 2048                             /* CERT_DER_MAX */
#define WIRE_KEYREC_MIN (4 + WIRE_ADVERTISE_BYTES + 4) /* a record without a certificate */
#define WIRE_KEYREC_MAX (WIRE_KEYREC_MIN + WIRE_CERT_MAX)
#define WIRE_BOX_BYTES 144                             /* SHAREBOX_BYTES */
#define WIRE_BOXREC_BYTES (4 + WIRE_BOX_BYTES)         /* peer id, box */
#define WIRE_REQREC_BYTES 8                            /* id, kind */
#define WIRE_SHAREREC_BYTES (8 + 64)                   /* id, kind, Shamir share */
#define WIRE_SIGREC_BYTES (4 + 64)                     /* id, Ed25519 signature */
#define WIRE_SIG_BYTES 64
#define WIRE_U1REC_BYTES (4 + 32)                      /* id, SHA-256 of its ADVERTISE record */
#define WIRE_MAX_RECORDS 65536

static inline uint32_t wire_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void wire_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint64_t wire_get_u64(const uint8_t *p)
{
    return (uint64_t)wire_get_u32(p) | (uint64_t)wire_get_u32(p + 4) << 32;
}
static inline void wire_put_u64(uint8_t *p, uint64_t v)
{
    wire_put_u32(p, (uint32_t)v);
    wire_put_u32(p + 4, (uint32_t)(v >> 32));
}

/* What a site signs in ADVERTISE (identity_sign label "advertise-v2"): round,
 * its id, the hash of the global model it trained from, and the first
 * WIRE_ADV_SIG_OFF bytes of the record (both public keys and n_k). Binding the
 * model hash and n_k means a coordinator can neither move the keys to another
 * model version nor change the weight a site claimed. */
#define WIRE_ADV_SIGNED_BYTES (8 + WIRE_HASH_BYTES + WIRE_ADV_SIG_OFF)
void wire_adv_signed(uint8_t out[WIRE_ADV_SIGNED_BYTES], uint32_t round, uint32_t id,
                     const uint8_t model_hash[WIRE_HASH_BYTES], const uint8_t *adv);

/* What a U3 member signs in the consistency round (label "consistency-v1"):
 * round, model hash, |U3| and U3's ids ascending. out has room for
 * wire_consist_signed_len(n) bytes; returns that length. */
size_t wire_consist_signed_len(size_t n);
size_t wire_consist_signed(uint8_t *out, uint32_t round, const uint8_t model_hash[WIRE_HASH_BYTES],
                           const uint32_t *ids, size_t n);
/* The neighbour graph's seed input (SecAgg+): "medfed-graph-v1", round,
 * model hash, degree and the U1 list as sent in KEYS. Both sides hash it
 * (SHA-256) and seed secagg_graph with its first 8 bytes, so the graph comes
 * from the sites' signed keys, not from the operator. out has room for
 * wire_graph_input_len(u1_len); returns that length. */
size_t wire_graph_input_len(size_t u1_len);
size_t wire_graph_input(uint8_t *out, uint32_t round, const uint8_t model_hash[WIRE_HASH_BYTES],
                        uint32_t degree, const uint8_t *u1, size_t u1_len);

/* A U3 list (CONSIST_REQ): n u32 ids, strictly ascending, n <= max. -1 if the
 * length is not a multiple of 4, n is 0 or above max, or the ids are not
 * strictly ascending. */
int wire_idlist_parse(const uint8_t *blob, size_t len, size_t max, uint32_t *ids, size_t *n);

/* UNMASK_REQ: u32 nreq, nreq (id, kind) records (WIRE_REQREC_BYTES), then
 * (id, signature) records (WIRE_SIGREC_BYTES) to the end. */
typedef struct {
    const uint8_t *reqs;  /* nreq records */
    size_t nreq;
    const uint8_t *sigs;  /* nsig records */
    size_t nsig;
} wire_unmaskreq_t;
/* -1 if truncated, a count does not fit or the signature part is not whole records. */
int wire_unmaskreq_parse(const uint8_t *blob, size_t len, wire_unmaskreq_t *r);
size_t wire_unmaskreq_len(size_t nreq, size_t nsig);
/* Writes the header (nreq); the caller writes the records after it at
 * out + 4 and out + 4 + nreq * WIRE_REQREC_BYTES. */
void wire_unmaskreq_put_header(uint8_t *out, size_t nreq);

/* The fixed-size records, one codec each: *_put writes a record at out and
 * returns its length; *_get reads one at rec (the caller has checked that
 * the blob holds whole records). */
/* SHARES / SHARES_IN: (peer id, share box): to whom in SHARES, from whom in SHARES_IN. */
typedef struct {
    uint32_t id;
    const uint8_t *box;          /* WIRE_BOX_BYTES */
} wire_boxrec_t;
size_t wire_boxrec_put(uint8_t *out, uint32_t id, const uint8_t box[WIRE_BOX_BYTES]);
wire_boxrec_t wire_boxrec_get(const uint8_t *rec);
/* UNMASK_REQ's requests: (id, kind), kind 0 = b-share (a survivor), 1 = s-share (dropped). */
typedef struct {
    uint32_t id, kind;
} wire_reqrec_t;
size_t wire_reqrec_put(uint8_t *out, uint32_t id, uint32_t kind);
wire_reqrec_t wire_reqrec_get(const uint8_t *rec);
/* UNMASK: (id, kind, Shamir share). */
typedef struct {
    uint32_t id, kind;
    const uint8_t *share;        /* 64 bytes (SHAMIR_SHAREBYTES) */
} wire_sharerec_t;
size_t wire_sharerec_put(uint8_t *out, uint32_t id, uint32_t kind, const uint8_t share[64]);
wire_sharerec_t wire_sharerec_get(const uint8_t *rec);
/* UNMASK_REQ's signatures: (id, its consistency signature on U3). */
typedef struct {
    uint32_t id;
    const uint8_t *sig;          /* WIRE_SIG_BYTES */
} wire_sigrec_t;
size_t wire_sigrec_put(uint8_t *out, uint32_t id, const uint8_t sig[WIRE_SIG_BYTES]);
wire_sigrec_t wire_sigrec_get(const uint8_t *rec);
/* KEYS' U1 list: (id, SHA-256 of its ADVERTISE record). */
typedef struct {
    uint32_t id;
    const uint8_t *adv_hash;     /* WIRE_HASH_BYTES */
} wire_u1rec_t;
size_t wire_u1rec_put(uint8_t *out, uint32_t id, const uint8_t adv_hash[WIRE_HASH_BYTES]);
wire_u1rec_t wire_u1rec_get(const uint8_t *rec);
/* CONSIST_REQ: U3's ids (ascending), 4 bytes each; returns n * 4. */
size_t wire_idlist_put(uint8_t *out, const uint32_t *ids, size_t n);
/* ADVERTISE: the signed sample count n_k of a record. */
static inline uint64_t wire_adv_weight(const uint8_t *adv) { return wire_get_u64(adv + WIRE_ADV_WEIGHT_OFF); }

/* One KEYS record, pointing into the blob. */
typedef struct {
    uint32_t id;
    const uint8_t *adv;          /* WIRE_ADVERTISE_BYTES */
    const uint8_t *cert;         /* cert_len bytes; NULL when cert_len is 0 */
    size_t cert_len;
} wire_keyrec_t;

/* Reads the record at *off of blob[0..len) and advances *off past it. -1 if
 * it is truncated or its certificate is longer than WIRE_CERT_MAX (every
 * length is checked against what is left before it is used). */
int wire_keyrec_next(const uint8_t *blob, size_t len, size_t *off, wire_keyrec_t *r);
/* Writes one record at out (room for WIRE_KEYREC_MIN + cert_len bytes);
 * returns its length. cert_len <= WIRE_CERT_MAX (else abort). */
size_t wire_keyrec_put(uint8_t *out, uint32_t id, const uint8_t adv[WIRE_ADVERTISE_BYTES],
                       const uint8_t *cert, size_t cert_len);

typedef struct {
    msg_type_t type;
    uint32_t round;
    uint32_t phase;
    uint32_t present;               /* MSG_HAS_* */

    /* HELLO */
    char site[WIRE_SITE_MAX];
    uint32_t version;
    int64_t n_train, n_val;
    char sw[WIRE_SW_MAX];           /* v3, optional (MSG_HAS_SW): the sender's software version */

    /* HEARTBEAT (v3, optional: MSG_HAS_PROGRESS): local training, images done of total */
    uint64_t done, total;

    /* WELCOME */
    uint32_t client_id;

    /* PLAN / EVAL (model spec and hyper-parameters) */
    char arch[WIRE_ARCH_MAX];
    uint32_t in_channels, height, width, classes;
    uint32_t epochs, batch;
    double lr, momentum, weight_decay;
    uint64_t seed;
    uint32_t model_version;         /* round that produced the global model */
    uint64_t numel;                 /* floats in the model vector */

    /* v4: PLAN / EVAL (MSG_HAS_BULK): the model's length in bytes and its
     * SHA-256, fetched in chunks; FETCH / CHUNK: the same hash and a byte
     * offset; PART: offset and total length; UPDATE / MASKED (MSG_HAS_BULK):
     * the length of the vector its PARTs carried */
    uint64_t bulk_len;
    const uint8_t *bulk_hash;       /* WIRE_HASH_BYTES, checked by the handlers */
    size_t bulk_hash_len;
    uint64_t offset;

    /* PLAN / EVAL / UPDATE / CHUNK / PART: raw little-endian float32 vector
     * (MASKED: packed words) */
    const uint8_t *vec;
    size_t vec_len;                 /* bytes */

    /* UPDATE / EVAL_RESULT */
    int64_t n_samples;
    double loss_sum;                /* UPDATE: mean train loss; EVAL_RESULT: sum */
    int64_t correct;
    double train_seconds;           /* UPDATE: wall time of local training */
    /* EVAL_RESULT: 2 * WIRE_HIST_BINS uint32 LE: negatives' then positives' score histogram */
    const uint8_t *hist;
    size_t hist_len;

    /* PLAN (secure aggregation): threshold t and fixed-point parameters */
    uint32_t threshold;
    double clip, scale;
    /* the upload width w of MASKED's elements (aggregation/encoding.h);
     * optional: 0 (absent, a coordinator from before widths) means 32 */
    uint32_t bits;
    /* the fixed-point scale of the weighted training loss word (secagg_encode_loss) */
    double loss_scale;
    /* PLAN (MSG_HAS_LOCAL): the local recipe beyond SGD's hyper-parameters:
     * FedProx's mu (0: off), augmentation (0 off, 1 small random affine),
     * class-balanced loss (0 off, 1 on) */
    double prox_mu;
    uint32_t augment, class_balanced;

    /* secure-aggregation records; length a multiple of the type's record size */
    const uint8_t *blob;
    size_t blob_len;
    /* KEYS (SecAgg+): the whole of U1 and the neighbour graph's degree */
    const uint8_t *u1;
    size_t u1_len;
    uint32_t degree;

    /* ERROR */
    uint32_t code;
    char reason[WIRE_REASON_MAX];
} msg_t;

typedef struct wire_buf wire_buf_t;

/* A growable, reusable encode buffer (large vectors: reuse it, page faults
 * on a fresh 44 MB buffer cost ~14 ms). */
wire_buf_t *wire_buf_new(void);
void wire_buf_destroy(wire_buf_t **b);
const void *wire_buf_data(const wire_buf_t *b);
size_t wire_buf_size(const wire_buf_t *b);
/* Takes the encoded bytes out of b (caller frees them with free()); b is
 * left empty and reusable. */
char *wire_buf_release(wire_buf_t *b);

/* Encodes m into b (replacing its contents). Programmer errors (a type out of
 * range) abort; returns 0. */
int msg_encode(const msg_t *m, wire_buf_t *b);

/* Decodes one message from buf. The result borrows buf (vec/hist) and the
 * decoder's zone: keep both alive while m is used; wire_decoder_t holds the zone. */
typedef struct wire_decoder wire_decoder_t;
wire_decoder_t *wire_decoder_new(void);
void wire_decoder_destroy(wire_decoder_t **d);
int msg_decode(wire_decoder_t *d, const void *buf, size_t len, msg_t *m, char *err,
               size_t errlen);

/* Would a decoder of protocol version `version` accept m? 0, or -1 with the
 * field it would refuse named in err (a v2 site is sent no v3 field; a site
 * pinned to v2 refuses one as a v2 build would). */
int msg_fits_version(const msg_t *m, uint32_t version, char *err, size_t errlen);

const char *msg_type_name(msg_type_t t);
const char *msg_phase_name(uint32_t phase);

/* Fills an ERROR message. */
void msg_error(msg_t *m, uint32_t round, msg_error_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
