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

/* 1 if s is a valid site name: 1..63 of letters, digits, '-', '_', '.'. */
int cert_name_ok(const char *s);

#endif
