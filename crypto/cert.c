/*
 * cert.c - the federation CA and site certificates (X.509 with Ed25519 keys,
 * OpenSSL 3).
 *
 * Verification leans on X509_verify_cert with a store that holds only the
 * federation's CA (no system roots, no intermediates: depth 0) and strict
 * X.509 checks; on top of it the leaf must not be a CA, must allow
 * digitalSignature and must carry exactly one CN that is a site name. The
 * key comes out as the raw 32 bytes libsodium verifies signatures with.
 */
#include "crypto/cert.h"
#include "crypto/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/util.h"

#define CA_CN_PREFIX "medfed federation CA "
#define SKEW_SECONDS 3600L   /* notBefore an hour back: clocks of sites differ */
#define SERIAL_BYTES 16

struct cert_ca {
    X509 *cert;
    X509_STORE *store;
};

int cert_name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        const char c = s[n];
        if (n >= CERT_NAME_MAX - 1 ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return n > 0;
}

/* The first OpenSSL error on the queue, or fallback; clears the queue. */
static const char *ssl_reason(const char *fallback)
{
    static _Thread_local char buf[160];
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return fallback;
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

/* ---- building certificates ---------------------------------------------------------- */

static EVP_PKEY *private_key(const uint8_t sk[IDENTITY_SECRETKEYBYTES])
{
    /* libsodium's secret key is seed || pk; OpenSSL wants the 32-byte seed.
     * OpenSSL wipes its copy when the key is freed. */
    return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, sk, 32);
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return -1;
    const int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int random_serial(X509 *x)
{
    uint8_t raw[SERIAL_BYTES];
    crypto_random(raw, sizeof raw);
    raw[0] &= 0x7f;   /* positive */
    raw[0] |= 0x40;   /* and of full length */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    const int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

/* The fields every certificate shares: v3, serial, validity, subject CN,
 * issuer, key. */
static int fill_common(X509 *x, const char *cn, const X509_NAME *issuer, EVP_PKEY *key, int days)
{
    X509_NAME *subj = X509_get_subject_name(x);
    return X509_set_version(x, 2) == 1 && random_serial(x) == 0 &&
                   X509_gmtime_adj(X509_getm_notBefore(x), -SKEW_SECONDS) != NULL &&
                   X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) != NULL &&
                   X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8, (const unsigned char *)cn,
                                              -1, -1, 0) == 1 &&
                   X509_set_issuer_name(x, issuer ? issuer : subj) == 1 &&
                   X509_set_pubkey(x, key) == 1
               ? 0
               : -1;
}

/* Signs x with key (Ed25519: no separate digest) and writes its DER. */
static int sign_to_der(X509 *x, EVP_PKEY *key, uint8_t der[CERT_DER_MAX], size_t *der_len)
{
    if (X509_sign(x, key, NULL) <= 0) return -1;
    const int n = i2d_X509(x, NULL);
    if (n <= 0 || n > CERT_DER_MAX) return -1;
    uint8_t *p = der;
    if (i2d_X509(x, &p) != n) return -1;
    *der_len = (size_t)n;
    return 0;
}

int cert_make_ca(uint8_t der[CERT_DER_MAX], size_t *der_len, const char *federation,
                 const uint8_t ca_sk[IDENTITY_SECRETKEYBYTES], int days, char *err, size_t errlen)
{
    CRYPTO_REQUIRE(der != NULL && der_len != NULL && federation != NULL && ca_sk != NULL);
    CRYPTO_REQUIRE(days >= 1 && days <= CERT_DAYS_MAX);
    *der_len = 0;
    char cn[CERT_NAME_MAX + sizeof CA_CN_PREFIX];
    if (!cert_name_ok(federation)) {
        util_seterr(err, errlen, "federation name '%.80s': use 1-63 letters, digits, '-', '_', '.'",
                    federation);
        return -1;
    }
    snprintf(cn, sizeof cn, "%s%s", CA_CN_PREFIX, federation);
    EVP_PKEY *key = private_key(ca_sk);
    X509 *x = X509_new();
    int rc = -1;
    if (key && x && fill_common(x, cn, NULL, key, days) == 0 &&
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
        add_ext(x, x, NID_subject_key_identifier, "hash") == 0 &&
        sign_to_der(x, key, der, der_len) == 0)
        rc = 0;
    else
        util_seterr(err, errlen, "cannot create the CA certificate: %s", ssl_reason("OpenSSL failed"));
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/* d2i with the whole input consumed: trailing bytes are refused. */
static X509 *parse_der(const uint8_t *in, size_t len)
{
    if (len == 0 || len > CERT_DER_MAX) return NULL;
    const unsigned char *p = in;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x && p != in + len) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

/* PEM ("-----BEGIN") or DER. */
static X509 *parse_any(const uint8_t *in, size_t len, char *err, size_t errlen)
{
    X509 *x = NULL;
    static const char pem_tag[] = "-----BEGIN CERTIFICATE-----";
    if (len > CERT_PEM_MAX) {
        util_seterr(err, errlen, "certificate too large (%zu bytes, at most %d)", len, CERT_PEM_MAX);
        return NULL;
    }
    if (len >= sizeof pem_tag - 1 && memcmp(in, pem_tag, sizeof pem_tag - 1) == 0) {
        BIO *b = BIO_new_mem_buf(in, (int)len);
        if (b) x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
    } else {
        x = parse_der(in, len);
    }
    ERR_clear_error();
    if (!x) util_seterr(err, errlen, "not an X.509 certificate (PEM or DER)");
    return x;
}

int cert_not_after(const uint8_t *in, size_t len, int64_t *not_after, char *err, size_t errlen)
{
    X509 *x = parse_any(in, len, err, errlen);
    if (!x) return -1;
    struct tm tm;
    const ASN1_TIME *t = X509_get0_notAfter(x);
    int ok = t && ASN1_TIME_to_tm(t, &tm) == 1;
    X509_free(x);
    ERR_clear_error();
    if (!ok) {
        util_seterr(err, errlen, "certificate has no readable expiry date");
        return -1;
    }
    *not_after = (int64_t)timegm(&tm);
    return 0;
}

int64_t cert_days_left(int64_t not_after)
{
    int64_t s = not_after - (int64_t)time(NULL);
    return s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
}

int cert_issue(uint8_t der[CERT_DER_MAX], size_t *der_len, const char *site,
               const uint8_t site_pk[IDENTITY_PUBLICKEYBYTES], const uint8_t *ca_der,
               size_t ca_len, const uint8_t ca_sk[IDENTITY_SECRETKEYBYTES], int days, char *err,
               size_t errlen)
{
    CRYPTO_REQUIRE(der != NULL && der_len != NULL && site != NULL && site_pk != NULL);
    CRYPTO_REQUIRE(ca_der != NULL && ca_sk != NULL);
    CRYPTO_REQUIRE(days != 0 && days >= -CERT_DAYS_MAX && days <= CERT_DAYS_MAX);
    *der_len = 0;
    if (!cert_name_ok(site)) {
        util_seterr(err, errlen, "site name '%.80s': use 1-63 letters, digits, '-', '_', '.'", site);
        return -1;
    }
    X509 *ca = parse_any(ca_der, ca_len, err, errlen);
    if (!ca) return -1;
    EVP_PKEY *key = private_key(ca_sk);
    EVP_PKEY *pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, site_pk,
                                                IDENTITY_PUBLICKEYBYTES);
    X509 *x = X509_new();
    int rc = -1;
    if (!key || !pub || !x) {
        util_seterr(err, errlen, "cannot issue a certificate: %s", ssl_reason("out of memory"));
    } else if (X509_check_private_key(ca, key) != 1) {
        ERR_clear_error();
        util_seterr(err, errlen, "the CA key does not belong to the CA certificate");
    } else if (fill_common(x, site, X509_get_subject_name(ca), pub, days) == 0 &&
               add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
               add_ext(x, ca, NID_key_usage, "critical,digitalSignature") == 0 &&
               add_ext(x, ca, NID_subject_key_identifier, "hash") == 0 &&
               add_ext(x, ca, NID_authority_key_identifier, "keyid:always") == 0 &&
               sign_to_der(x, key, der, der_len) == 0) {
        rc = 0;
    } else {
        util_seterr(err, errlen, "cannot issue a certificate for '%s': %s", site,
                    ssl_reason("OpenSSL failed"));
    }
    X509_free(x);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    X509_free(ca);
    return rc;
}

/* ---- the trust anchor ------------------------------------------------------------------ */

static int is_ed25519(X509 *x)
{
    const EVP_PKEY *k = X509_get0_pubkey(x);
    return k && EVP_PKEY_get_id(k) == EVP_PKEY_ED25519;
}

cert_ca_t *cert_ca_new(const uint8_t *in, size_t len, char *err, size_t errlen)
{
    CRYPTO_REQUIRE(in != NULL || len == 0);
    X509 *x = parse_any(in, len, err, errlen);
    if (!x) return NULL;
    cert_ca_t *ca = NULL;
    /* X509_check_ca: 1 for a v3 CA with keyCertSign; self-signed: issuer =
     * subject and the signature verifies with its own key. */
    if (X509_check_ca(x) != 1) {
        util_seterr(err, errlen, "the CA certificate is not a CA (basicConstraints CA:TRUE)");
    } else if (!is_ed25519(x)) {
        util_seterr(err, errlen, "the CA certificate's key is not Ed25519");
    } else if (X509_check_issued(x, x) != X509_V_OK ||
               X509_verify(x, X509_get0_pubkey(x)) != 1) {
        util_seterr(err, errlen, "the CA certificate is not self-signed");
    } else if (!(ca = OPENSSL_zalloc(sizeof *ca)) || !(ca->store = X509_STORE_new()) ||
               X509_STORE_add_cert(ca->store, x) != 1) {
        util_seterr(err, errlen, "cannot build the trust store: %s", ssl_reason("out of memory"));
        if (ca) X509_STORE_free(ca->store);
        OPENSSL_free(ca);
        ca = NULL;
    } else {
        ca->cert = x;
        x = NULL;
    }
    ERR_clear_error();
    X509_free(x);
    return ca;
}

cert_ca_t *cert_ca_load(const char *path, char *err, size_t errlen)
{
    CRYPTO_REQUIRE(path != NULL);
    size_t len = 0;
    char why[256];
    /* certificates are never larger than CERT_PEM_MAX */
    uint8_t *buf = (uint8_t *)util_read_file(path, CERT_PEM_MAX, &len, err, errlen);
    if (!buf) return NULL;
    cert_ca_t *ca = cert_ca_new(buf, len, why, sizeof why);
    if (!ca) util_seterr(err, errlen, "%s: %s", path, why);
    free(buf);
    return ca;
}

void cert_ca_destroy(cert_ca_t **ca)
{
    if (!ca || !*ca) return;
    X509_STORE_free((*ca)->store);
    X509_free((*ca)->cert);
    OPENSSL_free(*ca);
    *ca = NULL;
}

/* ---- verification -------------------------------------------------------------------- */

/* Exactly one CN, a valid site name, into name. */
static int common_name(const X509_NAME *subj, char name[CERT_NAME_MAX])
{
    const int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(subj, NID_commonName, i) >= 0) return -1;
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
    const int n = s ? ASN1_STRING_length(s) : -1;
    if (n <= 0 || n >= CERT_NAME_MAX) return -1;
    memcpy(name, ASN1_STRING_get0_data(s), (size_t)n);
    name[n] = '\0';
    /* An embedded NUL shortens the string: cert_name_ok sees the rest is missing. */
    return strlen(name) == (size_t)n && cert_name_ok(name) ? 0 : -1;
}

int cert_verify(const cert_ca_t *ca, const uint8_t *in, size_t len, const char *expect_name,
                char name[CERT_NAME_MAX], uint8_t pk[IDENTITY_PUBLICKEYBYTES], char *err,
                size_t errlen)
{
    CRYPTO_REQUIRE(ca != NULL && name != NULL && pk != NULL && (in != NULL || len == 0));
    name[0] = '\0';
    memset(pk, 0, IDENTITY_PUBLICKEYBYTES);
    X509 *x = parse_any(in, len, err, errlen);
    if (!x) return -1;
    int rc = -1;
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    size_t pklen = IDENTITY_PUBLICKEYBYTES;
    char cn[CERT_NAME_MAX];
    if (!ctx || X509_STORE_CTX_init(ctx, ca->store, x, NULL) != 1) {
        util_seterr(err, errlen, "cannot verify: %s", ssl_reason("out of memory"));
        goto out;
    }
    /* The leaf must be issued by the CA itself; strict DER and extension rules. */
    X509_STORE_CTX_set_depth(ctx, 1);
    X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT);
    if (X509_verify_cert(ctx) != 1) {
        const int e = X509_STORE_CTX_get_error(ctx);
        const char *why = X509_verify_cert_error_string(e);
        if (e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
            e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT || e == X509_V_ERR_CERT_SIGNATURE_FAILURE ||
            e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)
            util_seterr(err, errlen, "certificate not issued by the federation CA (%s)", why);
        else
            util_seterr(err, errlen, "certificate rejected: %s", why);
        goto out;
    }
    if (X509_check_ca(x) != 0) {
        util_seterr(err, errlen, "certificate rejected: a CA certificate is not a site's");
        goto out;
    }
    if (!(X509_get_extension_flags(x) & EXFLAG_KUSAGE) ||
        !(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE)) {
        util_seterr(err, errlen, "certificate rejected: key usage lacks digitalSignature");
        goto out;
    }
    if (!is_ed25519(x) ||
        EVP_PKEY_get_raw_public_key(X509_get0_pubkey(x), pk, &pklen) != 1 ||
        pklen != IDENTITY_PUBLICKEYBYTES) {
        util_seterr(err, errlen, "certificate rejected: the key is not Ed25519");
        goto out;
    }
    if (common_name(X509_get_subject_name(x), cn) < 0) {
        util_seterr(err, errlen, "certificate rejected: the subject needs one CN that is a site name");
        goto out;
    }
    if (expect_name && strcmp(cn, expect_name) != 0) {
        util_seterr(err, errlen, "certificate is for '%s', expected '%.64s'", cn, expect_name);
        goto out;
    }
    memcpy(name, cn, sizeof cn);
    rc = 0;
out:
    if (rc != 0) memset(pk, 0, IDENTITY_PUBLICKEYBYTES);
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_free(x);
    return rc;
}

/* ---- encodings ------------------------------------------------------------------------ */

int cert_der_to_pem(char pem[CERT_PEM_MAX], size_t *pem_len, const uint8_t *der, size_t der_len,
                    char *err, size_t errlen)
{
    CRYPTO_REQUIRE(pem != NULL && pem_len != NULL && der != NULL);
    *pem_len = 0;
    X509 *x = parse_der(der, der_len);
    BIO *b = x ? BIO_new(BIO_s_mem()) : NULL;
    char *data = NULL;
    long n = 0;
    int rc = -1;
    if (!x) {
        util_seterr(err, errlen, "not a DER certificate");
    } else if (!b || PEM_write_bio_X509(b, x) != 1 || (n = BIO_get_mem_data(b, &data)) <= 0 ||
               n >= CERT_PEM_MAX) {
        util_seterr(err, errlen, "cannot write PEM: %s", ssl_reason("out of memory"));
    } else {
        memcpy(pem, data, (size_t)n);
        pem[n] = '\0';
        *pem_len = (size_t)n;
        rc = 0;
    }
    ERR_clear_error();
    BIO_free(b);
    X509_free(x);
    return rc;
}

int cert_to_der(uint8_t der[CERT_DER_MAX], size_t *der_len, const uint8_t *in, size_t len,
                char *err, size_t errlen)
{
    CRYPTO_REQUIRE(der != NULL && der_len != NULL && (in != NULL || len == 0));
    *der_len = 0;
    X509 *x = parse_any(in, len, err, errlen);
    if (!x) return -1;
    const int n = i2d_X509(x, NULL);
    uint8_t *p = der;
    int rc = -1;
    if (n <= 0 || n > CERT_DER_MAX || i2d_X509(x, &p) != n) {
        util_seterr(err, errlen, "certificate larger than %d bytes", CERT_DER_MAX);
    } else {
        *der_len = (size_t)n;
        rc = 0;
    }
    ERR_clear_error();
    X509_free(x);
    return rc;
}

int cert_load_file(const char *path, uint8_t der[CERT_DER_MAX], size_t *der_len, char *err,
                   size_t errlen)
{
    CRYPTO_REQUIRE(path != NULL && der != NULL && der_len != NULL);
    size_t len = 0;
    char why[256];
    *der_len = 0;
    uint8_t *buf = (uint8_t *)util_read_file(path, CERT_PEM_MAX, &len, err, errlen);
    if (!buf) return -1;
    int rc = cert_to_der(der, der_len, buf, len, why, sizeof why);
    free(buf);
    if (rc < 0) util_seterr(err, errlen, "%s: %s", path, why);
    return rc < 0 ? -1 : 0;
}

/* ---- certificate requests ------------------------------------------------------------- */

void cert_fingerprint_grouped(char out[CERT_FPR_GROUPED_BYTES],
                              const uint8_t pk[IDENTITY_PUBLICKEYBYTES])
{
    CRYPTO_REQUIRE(out != NULL && pk != NULL);
    char hex[IDENTITY_HEXBYTES];
    identity_fingerprint(hex, pk);
    size_t o = 0;
    for (size_t i = 0; i < IDENTITY_HEXBYTES - 1; i++) {
        if (i > 0 && i % 4 == 0) out[o++] = ' ';
        out[o++] = hex[i];
    }
    out[o] = '\0';
}

/* The CURVE key extension: extnValue is the DER of an OCTET STRING of the key. */
static X509_EXTENSION *curve_extension(const uint8_t curve_pk[CURVE_KEYBYTES])
{
    ASN1_OBJECT *obj = OBJ_txt2obj(CERT_CURVE_OID, 1);
    ASN1_OCTET_STRING *inner = ASN1_OCTET_STRING_new(), *outer = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    uint8_t der[CURVE_KEYBYTES + 2];
    uint8_t *p = der;
    if (obj && inner && outer && ASN1_OCTET_STRING_set(inner, curve_pk, CURVE_KEYBYTES) == 1 &&
        i2d_ASN1_OCTET_STRING(inner, NULL) == (int)sizeof der &&
        i2d_ASN1_OCTET_STRING(inner, &p) == (int)sizeof der &&
        ASN1_OCTET_STRING_set(outer, der, sizeof der) == 1)
        ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, outer);
    ASN1_OCTET_STRING_free(outer);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(obj);
    return ext;
}

int cert_request_make(char pem[CERT_PEM_MAX], size_t *pem_len, const char *site,
                      const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                      const uint8_t curve_pk[CURVE_KEYBYTES], char *err, size_t errlen)
{
    CRYPTO_REQUIRE(pem != NULL && pem_len != NULL && site != NULL && sk != NULL &&
                   curve_pk != NULL);
    *pem_len = 0;
    if (!cert_name_ok(site)) {
        util_seterr(err, errlen, "site name '%.80s': use 1-63 letters, digits, '-', '_', '.'", site);
        return -1;
    }
    EVP_PKEY *key = private_key(sk);
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *ext = curve_extension(curve_pk);
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    int rc = -1;
    if (key && req && exts && ext && b && X509_REQ_set_version(req, 0) == 1 &&
        X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                                   (const unsigned char *)site, -1, -1, 0) == 1 &&
        X509_REQ_set_pubkey(req, key) == 1 && sk_X509_EXTENSION_push(exts, ext) > 0) {
        ext = NULL; /* the stack owns it */
        if (X509_REQ_add_extensions(req, exts) == 1 && X509_REQ_sign(req, key, NULL) > 0 &&
            PEM_write_bio_X509_REQ(b, req) == 1 && (n = BIO_get_mem_data(b, &data)) > 0 &&
            n < CERT_PEM_MAX) {
            memcpy(pem, data, (size_t)n);
            pem[n] = '\0';
            *pem_len = (size_t)n;
            rc = 0;
        }
    }
    if (rc < 0)
        util_seterr(err, errlen, "cannot make the certificate request for '%s': %s", site,
                    ssl_reason("OpenSSL failed"));
    ERR_clear_error();
    BIO_free(b);
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    EVP_PKEY_free(key); /* OpenSSL wipes its copy of the seed */
    return rc;
}

/* PEM ("-----BEGIN") or DER with nothing after it. */
static X509_REQ *parse_request(const uint8_t *in, size_t len)
{
    X509_REQ *req = NULL;
    static const char pem_tag[] = "-----BEGIN";
    if (len >= sizeof pem_tag - 1 && memcmp(in, pem_tag, sizeof pem_tag - 1) == 0) {
        BIO *b = BIO_new_mem_buf(in, (int)len);
        if (b) req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
        BIO_free(b);
    } else if (len > 0) {
        const unsigned char *p = in;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (req && p != in + len) {
            X509_REQ_free(req);
            req = NULL;
        }
    }
    ERR_clear_error();
    return req;
}

/* Exactly one CURVE key extension: its 32 bytes into curve_pk. */
static int request_curve_key(X509_REQ *req, uint8_t curve_pk[CURVE_KEYBYTES])
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    ASN1_OBJECT *obj = OBJ_txt2obj(CERT_CURVE_OID, 1);
    int found = 0, rc = -1;
    for (int i = 0; obj && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_cmp(X509_EXTENSION_get_object(ext), obj) != 0) continue;
        found++;
        const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
        const unsigned char *p = ASN1_STRING_get0_data(v);
        const long n = ASN1_STRING_length(v);
        ASN1_OCTET_STRING *inner = d2i_ASN1_OCTET_STRING(NULL, &p, n);
        if (found == 1 && inner && p == ASN1_STRING_get0_data(v) + n &&
            ASN1_STRING_length(inner) == CURVE_KEYBYTES) {
            memcpy(curve_pk, ASN1_STRING_get0_data(inner), CURVE_KEYBYTES);
            rc = 0;
        } else {
            rc = -1;
        }
        ASN1_OCTET_STRING_free(inner);
    }
    ASN1_OBJECT_free(obj);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    ERR_clear_error();
    return found == 1 ? rc : -1;
}

int cert_request_verify(const uint8_t *in, size_t len, const char *expect_name,
                        char name[CERT_NAME_MAX], uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                        uint8_t curve_pk[CURVE_KEYBYTES], char *err, size_t errlen)
{
    CRYPTO_REQUIRE(name != NULL && pk != NULL && curve_pk != NULL && (in != NULL || len == 0));
    name[0] = '\0';
    memset(pk, 0, IDENTITY_PUBLICKEYBYTES);
    memset(curve_pk, 0, CURVE_KEYBYTES);
    if (len > CERT_PEM_MAX) {
        util_seterr(err, errlen, "certificate request too large (%zu bytes, at most %d)", len,
                    CERT_PEM_MAX);
        return -1;
    }
    X509_REQ *req = parse_request(in, len);
    if (!req) {
        util_seterr(err, errlen, "not a certificate request (PKCS#10, PEM or DER)");
        return -1;
    }
    int rc = -1;
    EVP_PKEY *key = X509_REQ_get0_pubkey(req);
    const X509_NAME *subj = X509_REQ_get_subject_name(req);
    size_t pklen = IDENTITY_PUBLICKEYBYTES;
    uint8_t zero[CURVE_KEYBYTES] = {0};
    char cn[CERT_NAME_MAX];
    if (X509_REQ_get_version(req) != 0) {
        util_seterr(err, errlen, "certificate request rejected: not PKCS#10 version 1");
    } else if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519 ||
               EVP_PKEY_get_raw_public_key(key, pk, &pklen) != 1 ||
               pklen != IDENTITY_PUBLICKEYBYTES) {
        util_seterr(err, errlen, "certificate request rejected: the key is not Ed25519");
    } else if (X509_REQ_verify(req, key) != 1) {
        util_seterr(err, errlen, "certificate request rejected: its signature does not verify "
                                 "(altered, or not signed with the key it carries)");
    } else if (X509_NAME_entry_count(subj) != 1 || common_name(subj, cn) < 0) {
        util_seterr(err, errlen, "certificate request rejected: the subject must be one CN that is "
                                 "a site name (1-63 letters, digits, '-', '_', '.')");
    } else if (expect_name && strcmp(cn, expect_name) != 0) {
        util_seterr(err, errlen, "certificate request is for '%s', expected '%.64s'", cn,
                    expect_name);
    } else if (request_curve_key(req, curve_pk) < 0 ||
               crypto_equal(curve_pk, zero, sizeof zero)) {
        util_seterr(err, errlen, "certificate request rejected: it needs exactly one CURVE key "
                                 "(extension " CERT_CURVE_OID ", 32 bytes)");
    } else {
        memcpy(name, cn, sizeof cn);
        rc = 0;
    }
    if (rc != 0) {
        memset(pk, 0, IDENTITY_PUBLICKEYBYTES);
        memset(curve_pk, 0, CURVE_KEYBYTES);
    }
    ERR_clear_error();
    X509_REQ_free(req);
    return rc;
}

int cert_request_load_file(const char *path, char name[CERT_NAME_MAX],
                           uint8_t pk[IDENTITY_PUBLICKEYBYTES], uint8_t curve_pk[CURVE_KEYBYTES],
                           char *err, size_t errlen)
{
    CRYPTO_REQUIRE(path != NULL);
    size_t len = 0;
    char why[256];
    uint8_t *buf = (uint8_t *)util_read_file(path, CERT_PEM_MAX, &len, err, errlen);
    if (!buf) return -1;
    const int rc = cert_request_verify(buf, len, NULL, name, pk, curve_pk, why, sizeof why);
    free(buf);
    if (rc < 0) util_seterr(err, errlen, "%s: %s", path, why);
    return rc < 0 ? -1 : 0;
}
