/* crypto/cert: a federation CA issues site certificates that verify against
 * it and only it; expired, tampered, foreign, mis-named and garbage
 * certificates are refused with a reason; PEM and DER both load. A site's
 * certificate request carries its keys to the CA; altered or mis-named
 * requests are refused. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h> /* base64 and raw Ed25519: to forge requests by hand */

#include "crypto/cert.h"
#include "crypto/crypto.h"

typedef struct {
    uint8_t sk[IDENTITY_SECRETKEYBYTES], pk[IDENTITY_PUBLICKEYBYTES];
    uint8_t der[CERT_DER_MAX];
    size_t len;
    cert_ca_t *ca;
} fed_t;

static void make_fed(fed_t *f, const char *name)
{
    char err[256];
    assert_int_equal(identity_keypair(f->pk, f->sk), 0);
    assert_int_equal(cert_make_ca(f->der, &f->len, name, f->sk, CERT_CA_DAYS, err, sizeof err), 0);
    f->ca = cert_ca_new(f->der, f->len, err, sizeof err);
    assert_non_null(f->ca);
}

static void issue(const fed_t *f, const char *site, const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                  int days, uint8_t der[CERT_DER_MAX], size_t *len)
{
    char err[256];
    assert_int_equal(cert_issue(der, len, site, pk, f->der, f->len, f->sk, days, err, sizeof err), 0);
    assert_true(*len > 100 && *len < 1024);
}

/* A site with its identity key and a certificate from f valid for days. */
typedef struct {
    uint8_t sk[IDENTITY_SECRETKEYBYTES], pk[IDENTITY_PUBLICKEYBYTES];
    uint8_t der[CERT_DER_MAX];
    size_t len;
} site_t;

static void make_site(const fed_t *f, const char *name, int days, site_t *s)
{
    assert_int_equal(identity_keypair(s->pk, s->sk), 0);
    issue(f, name, s->pk, days, s->der, &s->len);
}

static void test_issue_verify(void **state)
{
    (void)state;
    fed_t f;
    make_fed(&f, "province");
    site_t s;
    make_site(&f, "st-marys", CERT_SITE_DAYS, &s);
    const uint8_t *der = s.der, *pk = s.pk;
    const size_t len = s.len;
    uint8_t got[IDENTITY_PUBLICKEYBYTES];
    char name[CERT_NAME_MAX], err[256];
    assert_int_equal(cert_verify(f.ca, der, len, "st-marys", name, got, err, sizeof err), 0);
    assert_string_equal(name, "st-marys");
    assert_memory_equal(got, pk, IDENTITY_PUBLICKEYBYTES);
    assert_int_equal(cert_verify(f.ca, der, len, NULL, name, got, err, sizeof err), 0);

    /* PEM round trip; cert_to_der gives the same DER back. */
    char pem[CERT_PEM_MAX];
    size_t pem_len;
    assert_int_equal(cert_der_to_pem(pem, &pem_len, der, len, err, sizeof err), 0);
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
    assert_int_equal(cert_verify(f.ca, (const uint8_t *)pem, pem_len, "st-marys", name, got, err,
                                 sizeof err), 0);
    uint8_t der2[CERT_DER_MAX];
    size_t len2;
    assert_int_equal(cert_to_der(der2, &len2, (const uint8_t *)pem, pem_len, err, sizeof err), 0);
    assert_int_equal(len2, len);
    assert_memory_equal(der2, der, len);

    /* The CA loads from PEM too, and from a file. */
    assert_int_equal(cert_der_to_pem(pem, &pem_len, f.der, f.len, err, sizeof err), 0);
    cert_ca_t *ca2 = cert_ca_new((const uint8_t *)pem, pem_len, err, sizeof err);
    assert_non_null(ca2);
    assert_int_equal(cert_verify(ca2, der, len, "st-marys", name, got, err, sizeof err), 0);
    cert_ca_destroy(&ca2);
    assert_null(ca2);
    cert_ca_destroy(&ca2); /* NULL-safe */
    char path[] = "/tmp/medfed-test-ca-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, pem, pem_len), (ssize_t)pem_len);
    close(fd);
    ca2 = cert_ca_load(path, err, sizeof err);
    assert_non_null(ca2);
    assert_int_equal(cert_load_file(path, der2, &len2, err, sizeof err), 0);
    assert_int_equal(len2, f.len);
    cert_ca_destroy(&ca2);
    unlink(path);
    assert_null(cert_ca_load(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));

    /* The CA certificate itself is not a site certificate. */
    assert_int_equal(cert_verify(f.ca, f.der, f.len, NULL, name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "a CA certificate is not a site's")); /* refused for that, first */
    cert_ca_destroy(&f.ca);
}

static void test_wrong_ca(void **state)
{
    (void)state;
    fed_t a, b;
    make_fed(&a, "north");
    make_fed(&b, "south");
    site_t s;
    uint8_t got[IDENTITY_PUBLICKEYBYTES];
    char name[CERT_NAME_MAX], err[256];
    make_site(&b, "site-a", 30, &s);
    assert_int_equal(cert_verify(a.ca, s.der, s.len, "site-a", name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "not issued by the federation CA"));
    assert_string_equal(name, "");
    /* Issuing with a CA key that does not match the CA certificate. */
    assert_int_equal(cert_issue(s.der, &s.len, "site-a", s.pk, a.der, a.len, b.sk, 30, err,
                                sizeof err), -1);
    assert_non_null(strstr(err, "does not belong"));
    cert_ca_destroy(&a.ca);
    cert_ca_destroy(&b.ca);
}

static void test_tampered(void **state)
{
    (void)state;
    fed_t f;
    make_fed(&f, "fed");
    site_t s, other;
    uint8_t got[IDENTITY_PUBLICKEYBYTES], bad[CERT_DER_MAX];
    char name[CERT_NAME_MAX], err[256];
    make_site(&f, "site-b", 30, &s);
    /* Every single-byte flip is refused (a parse error or a failed check). */
    for (size_t i = 0; i < s.len; i++) {
        memcpy(bad, s.der, s.len);
        bad[i] ^= 0x01;
        assert_int_equal(cert_verify(f.ca, bad, s.len, "site-b", name, got, err, sizeof err), -1);
    }
    /* The key swapped for another one: the signature no longer verifies. */
    make_site(&f, "site-x", 30, &other);
    uint8_t *at = memmem(s.der, s.len, s.pk, sizeof s.pk);
    assert_non_null(at);
    memcpy(bad, s.der, s.len);
    memcpy(bad + (at - s.der), other.pk, sizeof other.pk);
    assert_int_equal(cert_verify(f.ca, bad, s.len, NULL, name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "not issued by the federation CA"));
    /* Trailing bytes and truncation. */
    memcpy(bad, s.der, s.len);
    bad[s.len] = 0;
    assert_int_equal(cert_verify(f.ca, bad, s.len + 1, NULL, name, got, err, sizeof err), -1);
    assert_int_equal(cert_verify(f.ca, s.der, s.len - 1, NULL, name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "not an X.509 certificate"));
    cert_ca_destroy(&f.ca);
}

static void test_expired(void **state)
{
    (void)state;
    fed_t f;
    make_fed(&f, "fed");
    site_t s;
    uint8_t got[IDENTITY_PUBLICKEYBYTES];
    char name[CERT_NAME_MAX], err[256];
    make_site(&f, "site-c", -1, &s);
    assert_int_equal(cert_verify(f.ca, s.der, s.len, "site-c", name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "expired"));
    cert_ca_destroy(&f.ca);
}

static void test_name_mismatch(void **state)
{
    (void)state;
    fed_t f;
    make_fed(&f, "fed");
    site_t s;
    uint8_t got[IDENTITY_PUBLICKEYBYTES], der[CERT_DER_MAX];
    size_t len;
    char name[CERT_NAME_MAX], err[256];
    make_site(&f, "site-d", 30, &s);
    assert_int_equal(cert_verify(f.ca, s.der, s.len, "site-e", name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "is for 'site-d', expected 'site-e'"));
    /* Names that are not site names are not issued. */
    static const char *const bad_names[] = {"bad name", "", "a/b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        assert_int_equal(cert_issue(der, &len, bad_names[i], s.pk, f.der, f.len, f.sk, 30, err,
                                    sizeof err), -1);
        assert_int_equal(cert_make_ca(der, &len, bad_names[i], f.sk, 30, err, sizeof err), -1);
    }
    assert_true(cert_name_ok("St_Marys-2.x"));
    assert_false(cert_name_ok("a b"));
    cert_ca_destroy(&f.ca);
}

static void test_garbage(void **state)
{
    (void)state;
    fed_t f;
    make_fed(&f, "fed");
    uint8_t got[IDENTITY_PUBLICKEYBYTES], junk[CERT_PEM_MAX + 8];
    char name[CERT_NAME_MAX], err[256];
    crypto_random(junk, sizeof junk);
    assert_int_equal(cert_verify(f.ca, junk, 0, NULL, name, got, err, sizeof err), -1);
    assert_int_equal(cert_verify(f.ca, junk, 300, NULL, name, got, err, sizeof err), -1);
    assert_int_equal(cert_verify(f.ca, junk, sizeof junk, NULL, name, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "too large"));
    static const char fake_pem[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_int_equal(cert_verify(f.ca, (const uint8_t *)fake_pem, sizeof fake_pem - 1, NULL, name,
                                 got, err, sizeof err), -1);
    assert_null(cert_ca_new(junk, 300, err, sizeof err));
    assert_null(cert_ca_new(junk, 0, err, sizeof err));
    /* A site certificate is not a CA. */
    site_t s;
    make_site(&f, "site-f", 30, &s);
    assert_null(cert_ca_new(s.der, s.len, err, sizeof err));
    assert_non_null(strstr(err, "not a CA"));
    uint8_t out[CERT_DER_MAX];
    size_t out_len;
    char pem[CERT_PEM_MAX];
    assert_int_equal(cert_to_der(out, &out_len, junk, 200, err, sizeof err), -1);
    assert_int_equal(cert_der_to_pem(pem, &out_len, junk, 200, err, sizeof err), -1);
    cert_ca_destroy(&f.ca);
}

/* ---- certificate requests (site enrolment) ---------------------------------------- */

typedef struct {
    uint8_t sk[IDENTITY_SECRETKEYBYTES], pk[IDENTITY_PUBLICKEYBYTES];
    uint8_t curve_sk[CURVE_KEYBYTES], curve_pk[CURVE_KEYBYTES];
    char pem[CERT_PEM_MAX];
    size_t pem_len;
    uint8_t der[CERT_DER_MAX]; /* the request's DER, decoded from the PEM */
    size_t len;
} request_t;

static void make_request(const char *site, request_t *r)
{
    char err[256];
    assert_int_equal(identity_keypair(r->pk, r->sk), 0);
    assert_int_equal(curve_keypair(r->curve_pk, r->curve_sk), 0);
    assert_int_equal(cert_request_make(r->pem, &r->pem_len, site, r->sk, r->curve_pk, err,
                                       sizeof err), 0);
    /* The base64 between the PEM lines is the DER. */
    const char *b = strchr(r->pem, '\n'), *e = strstr(r->pem, "-----END");
    assert_non_null(b);
    assert_non_null(e);
    assert_int_equal(sodium_base642bin(r->der, sizeof r->der, b + 1, (size_t)(e - b - 1), "\n",
                                       &r->len, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
    assert_true(r->len > 100 && r->len < 512);
}

/* The length of a DER element's header at p; its body length into *body. */
static size_t der_header(const uint8_t *p, size_t *body)
{
    if (p[1] < 0x80) {
        *body = p[1];
        return 2;
    }
    const size_t n = p[1] & 0x7f;
    *body = 0;
    for (size_t i = 0; i < n; i++) *body = *body << 8 | p[2 + i];
    return 2 + n;
}

/* Re-signs a request's DER with sk after an edit of the same length: Ed25519
 * over the CertificationRequestInfo (the outer SEQUENCE's first element), the
 * signature being the last 64 bytes. What a rogue with the key could send. */
static void resign(uint8_t *der, size_t len, const uint8_t sk[IDENTITY_SECRETKEYBYTES])
{
    size_t outer, info;
    const size_t h = der_header(der, &outer);
    const size_t ih = der_header(der + h, &info);
    assert_int_equal(h + outer, len);
    assert_int_equal(crypto_sign_ed25519_detached(der + len - 64, NULL, der + h, ih + info, sk), 0);
}

static void test_request_round_trip(void **state)
{
    (void)state;
    request_t r;
    make_request("st-marys", &r);
    assert_non_null(strstr(r.pem, "-----BEGIN CERTIFICATE REQUEST-----"));
    char name[CERT_NAME_MAX], err[256];
    uint8_t pk[IDENTITY_PUBLICKEYBYTES], curve[CURVE_KEYBYTES];
    /* PEM and DER, with and without an expected name. */
    assert_int_equal(cert_request_verify((const uint8_t *)r.pem, r.pem_len, "st-marys", name, pk,
                                         curve, err, sizeof err), 0);
    assert_string_equal(name, "st-marys");
    assert_memory_equal(pk, r.pk, sizeof pk);
    assert_memory_equal(curve, r.curve_pk, sizeof curve);
    assert_int_equal(cert_request_verify(r.der, r.len, NULL, name, pk, curve, err, sizeof err), 0);
    assert_memory_equal(curve, r.curve_pk, sizeof curve);
    /* Re-signing the untouched request gives an accepted one (resign is right). */
    resign(r.der, r.len, r.sk);
    assert_int_equal(cert_request_verify(r.der, r.len, NULL, name, pk, curve, err, sizeof err), 0);

    /* The lead issues a certificate for the key in the request; it verifies. */
    fed_t f;
    make_fed(&f, "fed");
    uint8_t der[CERT_DER_MAX], got[IDENTITY_PUBLICKEYBYTES];
    size_t len;
    issue(&f, name, pk, 30, der, &len);
    assert_int_equal(cert_verify(f.ca, der, len, "st-marys", name, got, err, sizeof err), 0);
    assert_memory_equal(got, r.pk, sizeof got);
    cert_ca_destroy(&f.ca);

    /* The fingerprint read out over the phone: identity_fingerprint in 16 groups. */
    char fpr[IDENTITY_HEXBYTES], grouped[CERT_FPR_GROUPED_BYTES], joined[IDENTITY_HEXBYTES];
    identity_fingerprint(fpr, r.pk);
    cert_fingerprint_grouped(grouped, r.pk);
    assert_int_equal(strlen(grouped), 64 + 15);
    size_t n = 0;
    for (size_t i = 0; grouped[i]; i++) {
        if (i % 5 == 4) assert_int_equal(grouped[i], ' ');
        else joined[n++] = grouped[i];
    }
    joined[n] = '\0';
    assert_string_equal(joined, fpr);
    /* Files: a request loads from disk. */
    char path[] = "/tmp/test_cert_req.XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, r.pem, r.pem_len), (ssize_t)r.pem_len);
    close(fd);
    assert_int_equal(cert_request_load_file(path, name, pk, curve, err, sizeof err), 0);
    assert_memory_equal(pk, r.pk, sizeof pk);
    unlink(path);
    assert_int_equal(cert_request_load_file(path, name, pk, curve, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
}

static void test_request_tampered(void **state)
{
    (void)state;
    request_t r, other;
    uint8_t bad[CERT_DER_MAX], pk[IDENTITY_PUBLICKEYBYTES], curve[CURVE_KEYBYTES];
    char name[CERT_NAME_MAX], err[256];
    make_request("northgate", &r);
    make_request("riverside", &other);
    /* Every single-byte flip is refused, and nothing leaks into the outputs. */
    for (size_t i = 0; i < r.len; i++) {
        memcpy(bad, r.der, r.len);
        bad[i] ^= 0x01;
        assert_int_equal(cert_request_verify(bad, r.len, NULL, name, pk, curve, err, sizeof err), -1);
        assert_string_equal(name, "");
    }
    /* Another site's identity key or CURVE key swapped in: the signature fails. */
    const uint8_t *swaps[][2] = {{r.pk, other.pk}, {r.curve_pk, other.curve_pk}};
    for (size_t k = 0; k < 2; k++) {
        uint8_t *at = memmem(r.der, r.len, swaps[k][0], 32);
        assert_non_null(at);
        memcpy(bad, r.der, r.len);
        memcpy(bad + (at - r.der), swaps[k][1], 32);
        assert_int_equal(cert_request_verify(bad, r.len, NULL, name, pk, curve, err, sizeof err), -1);
        assert_non_null(strstr(err, "signature does not verify"));
    }
    /* Trailing bytes, truncation, garbage, a certificate instead of a request. */
    memcpy(bad, r.der, r.len);
    bad[r.len] = 0;
    assert_int_equal(cert_request_verify(bad, r.len + 1, NULL, name, pk, curve, err, sizeof err), -1);
    assert_int_equal(cert_request_verify(r.der, r.len - 1, NULL, name, pk, curve, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a certificate request"));
    uint8_t junk[CERT_PEM_MAX + 1];
    crypto_random(junk, sizeof junk);
    assert_int_equal(cert_request_verify(junk, 0, NULL, name, pk, curve, err, sizeof err), -1);
    assert_int_equal(cert_request_verify(junk, 300, NULL, name, pk, curve, err, sizeof err), -1);
    assert_int_equal(cert_request_verify(junk, sizeof junk, NULL, name, pk, curve, err, sizeof err), -1);
    assert_non_null(strstr(err, "too large"));
    fed_t f;
    make_fed(&f, "fed");
    assert_int_equal(cert_request_verify(f.der, f.len, NULL, name, pk, curve, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a certificate request"));
    cert_ca_destroy(&f.ca);
}

static void test_request_wrong_cn(void **state)
{
    (void)state;
    request_t r;
    uint8_t pk[IDENTITY_PUBLICKEYBYTES], curve[CURVE_KEYBYTES];
    char name[CERT_NAME_MAX], err[256], pem[CERT_PEM_MAX];
    size_t pem_len;
    make_request("site-aa", &r);
    /* Another site's name than expected. */
    assert_int_equal(cert_request_verify(r.der, r.len, "site-ab", name, pk, curve, err, sizeof err), -1);
    assert_non_null(strstr(err, "is for 'site-aa', expected 'site-ab'"));
    /* A CN that is no site name, validly signed by the key holder. */
    static const char *const bad_cns[] = {"site aa", "site/aa", "../etc"};
    for (size_t i = 0; i < sizeof bad_cns / sizeof bad_cns[0]; i++) {
        uint8_t bad[CERT_DER_MAX];
        memcpy(bad, r.der, r.len);
        uint8_t *at = memmem(bad, r.len, "site-aa", 7);
        assert_non_null(at);
        memcpy(at, bad_cns[i], 7);
        resign(bad, r.len, r.sk);
        assert_int_equal(cert_request_verify(bad, r.len, NULL, name, pk, curve, err, sizeof err), -1);
        assert_non_null(strstr(err, "one CN that is a site name"));
        assert_string_equal(name, "");
    }
    /* Requests are not made for names that are not site names. */
    static const char *const bad_names[] = {"bad name", "", "a/b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        assert_int_equal(cert_request_make(pem, &pem_len, bad_names[i], r.sk, r.curve_pk, err,
                                           sizeof err), -1);
        assert_non_null(strstr(err, "site name"));
    }
}

int main(void)
{
    if (crypto_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_verify),
        cmocka_unit_test(test_wrong_ca),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_name_mismatch),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_tampered),
        cmocka_unit_test(test_request_wrong_cn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
