/* crypto/cert: a federation CA issues site certificates that verify against
 * it and only it; expired, tampered, foreign, mis-named and garbage
 * certificates are refused with a reason; PEM and DER both load. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
