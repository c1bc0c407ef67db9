/*
 * cert.h - the federation's X.509 certificates (OpenSSL behind a plain C
 * header: nothing here names an OpenSSL type).
 *
 * A federation has one CA: an Ed25519 key and a self-signed certificate
 * (CN "medfed federation CA NAME", CA:TRUE, keyCertSign). Each site holds a
 * certificate for its Ed25519 identity public key (CN = site name, CA:FALSE,
 * digitalSignature, random serial) issued by that CA. A peer that holds only
 * the CA certificate can then check any site's identity: adding a site needs
 * no change to the other sites' files.
 *
 * Conventions: certificates are passed around as DER bytes (at most
 * CERT_DER_MAX); PEM is for files. Functions return 0 / -1 and are
 * warn_unused_result; -1 writes a human-readable reason into err ("certificate
 * has expired", "not issued by the federation CA"). Bad input (bytes from a
 * file or the wire) gives -1; programmer misuse (NULL, sizes) aborts. The CA
 * secret key is the 64-byte libsodium Ed25519 secret key (identity.key
 * format), never copied beyond the call.
 */
#ifndef MEDFED_CERT_H
#define MEDFED_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

#define CERT_DER_MAX 2048       /* an Ed25519 certificate is ~400 bytes */
#define CERT_PEM_MAX 4096
#define CERT_NAME_MAX 64        /* CN with NUL: a site name (letters, digits, - _ .) */
#define CERT_CA_DAYS 3650
#define CERT_SITE_DAYS 1095
#define CERT_DAYS_MAX 36500

/* The CA certificate for ca_sk: self-signed, CN "medfed federation CA <federation>",
 * valid from an hour ago for days days (1..CERT_DAYS_MAX). DER into der, *der_len
 * its length. */
int cert_make_ca(uint8_t der[CERT_DER_MAX], size_t *der_len, const char *federation,
                 const uint8_t ca_sk[IDENTITY_SECRETKEYBYTES], int days, char *err,
                 size_t errlen) CRYPTO_WUR;

/* A site certificate: CN site, key site_pk, issued by the CA certificate
 * ca_der (its subject becomes the issuer) and signed with ca_sk, which must be
 * that certificate's key. Valid from an hour ago for days days; days may be
 * negative (-CERT_DAYS_MAX..CERT_DAYS_MAX, not 0) to make an already expired
 * certificate for tests. site must be a valid site name. */
int cert_issue(uint8_t der[CERT_DER_MAX], size_t *der_len, const char *site,
               const uint8_t site_pk[IDENTITY_PUBLICKEYBYTES], const uint8_t *ca_der,
               size_t ca_len, const uint8_t ca_sk[IDENTITY_SECRETKEYBYTES], int days, char *err,
               size_t errlen) CRYPTO_WUR;

/* A trust anchor: one CA certificate, checked on load (parses, CA:TRUE,
 * Ed25519, self-signed). Opaque; destroy with cert_ca_destroy (NULL-safe,
 * sets *ca to NULL). */
typedef struct cert_ca cert_ca_t;
/* in: DER or PEM bytes. NULL with err set on failure. */
cert_ca_t *cert_ca_new(const uint8_t *in, size_t len, char *err, size_t errlen);
/* Reads a PEM or DER file (at most CERT_PEM_MAX bytes). */
cert_ca_t *cert_ca_load(const char *path, char *err, size_t errlen);
void cert_ca_destroy(cert_ca_t **ca);

/* Verifies a site certificate (DER or PEM bytes) against ca: the chain (only
 * that CA, no intermediates), the signature, the validity dates (now), a leaf
 * that is not a CA and may sign (digitalSignature), an Ed25519 key and one
 * CN that is a valid site name. If expect_name is not NULL the CN must equal
 * it. On success writes the CN into name and the raw Ed25519 key into pk. */
int cert_verify(const cert_ca_t *ca, const uint8_t *in, size_t len, const char *expect_name,
                char name[CERT_NAME_MAX], uint8_t pk[IDENTITY_PUBLICKEYBYTES], char *err,
                size_t errlen) CRYPTO_WUR;

/* DER -> PEM text (NUL-terminated; *pem_len without the NUL). */
int cert_der_to_pem(char pem[CERT_PEM_MAX], size_t *pem_len, const uint8_t *der, size_t der_len,
                    char *err, size_t errlen) CRYPTO_WUR;
/* PEM or DER bytes -> DER (one certificate, nothing after it). */
int cert_to_der(uint8_t der[CERT_DER_MAX], size_t *der_len, const uint8_t *in, size_t len,
                char *err, size_t errlen) CRYPTO_WUR;
/* Reads a certificate file (PEM or DER, at most CERT_PEM_MAX bytes) as DER. */
int cert_load_file(const char *path, uint8_t der[CERT_DER_MAX], size_t *der_len, char *err,
                   size_t errlen) CRYPTO_WUR;

/* The certificate's notAfter (PEM or DER bytes) as Unix seconds into *not_after. */
int cert_not_after(const uint8_t *in, size_t len, int64_t *not_after, char *err,
                   size_t errlen) CRYPTO_WUR;
/* Days from now to not_after, rounded down (negative: expired). */
int64_t cert_days_left(int64_t not_after);
/* Certificates that expire within this many days are warned about (--check,
 * medfed clients); `medfed provision --renew SITE` re-issues one. */
#define CERT_WARN_DAYS 30

/* 1 if s is a valid site name: 1..63 of letters, digits, '-', '_', '.'. */
int cert_name_ok(const char *s);

/* ---- certificate requests: a site enrols itself ------------------------------------
 *
 * A site makes its keys on its own machine and sends the research lead a
 * PKCS#10 request: subject CN = the site name and nothing else, its Ed25519
 * identity public key, signed with that key (the sender holds it), and its
 * CURVE transport public key as a requested extension (OID CERT_CURVE_OID,
 * an OCTET STRING of CURVE_KEYBYTES), so that the lead writes the roster line
 * from the request alone. The lead never sees a secret key. */
#define CERT_CURVE_OID "2.25.896513372005276479165770186998922527" /* a UUID OID */
/* What a site reads out over the phone: its identity_fingerprint in 16
 * groups of 4 hex digits separated by spaces (NUL-terminated). */
#define CERT_FPR_GROUPED_BYTES (IDENTITY_HEXBYTES + 15)

/* The request of site (a valid site name) for the key pair of sk, carrying
 * curve_pk; PEM text ("-----BEGIN CERTIFICATE REQUEST-----", NUL-terminated)
 * into pem, *pem_len without the NUL. */
int cert_request_make(char pem[CERT_PEM_MAX], size_t *pem_len, const char *site,
                      const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                      const uint8_t curve_pk[CURVE_KEYBYTES], char *err, size_t errlen) CRYPTO_WUR;
/* Checks a request (PEM or DER bytes, at most CERT_PEM_MAX): it parses with
 * nothing after it, is v1, holds an Ed25519 key whose signature over the
 * request verifies, a subject of exactly one CN that is a site name (equal to
 * expect_name unless that is NULL) and exactly one CURVE key extension. On
 * success writes the CN into name, the Ed25519 key into pk and the CURVE key
 * into curve_pk. */
int cert_request_verify(const uint8_t *in, size_t len, const char *expect_name,
                        char name[CERT_NAME_MAX], uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                        uint8_t curve_pk[CURVE_KEYBYTES], char *err, size_t errlen) CRYPTO_WUR;
/* The same for a file; err names the file. */
int cert_request_load_file(const char *path, char name[CERT_NAME_MAX],
                           uint8_t pk[IDENTITY_PUBLICKEYBYTES], uint8_t curve_pk[CURVE_KEYBYTES],
                           char *err, size_t errlen) CRYPTO_WUR;
/* pk's fingerprint grouped for reading aloud: "1a2b 3c4d ... (16 groups)". */
void cert_fingerprint_grouped(char out[CERT_FPR_GROUPED_BYTES],
                              const uint8_t pk[IDENTITY_PUBLICKEYBYTES]);

#endif
