/*
 * bench_aead - single-core speed of the authenticated encryptions a bulk
 * payload could travel under (issue 11): XSalsa20-Poly1305, what libzmq's
 * CURVE runs on every message (crypto_secretbox), against libsodium's
 * AES-256-GCM (AES-NI) and XChaCha20-Poly1305 (IETF) and OpenSSL's AES-256-GCM
 * (EVP: AES-NI with VAES where the CPU has it), sealing and opening 1 MiB
 * messages, the size of a v4 chunk. Prints one JSON object; GB/s counts plaintext bytes, 1 GB =
 * 1e9 bytes. The algorithms alternate over REPS repetitions and the best is
 * reported for each, so that a noisy neighbour hurts all of them alike.
 *   bench_aead [MIB]      (default 256 MiB per repetition)
 * A benchmark of the libraries' primitives, so it calls them itself.
 */
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define REPS 5
#define MSG (1u << 20)

enum { XSALSA, AESGCM, XCHACHA, OSSL_GCM, N_ALGS };
static const char *const names[N_ALGS] = {"xsalsa20poly1305_curve", "aes256gcm_libsodium",
                                          "xchacha20poly1305_libsodium", "aes256gcm_openssl"};

/* OpenSSL's AES-256-GCM, one message sealed then opened; 0 or -1. */
static int ossl_gcm(EVP_CIPHER_CTX *x, uint8_t *pt, uint8_t *ct, const uint8_t *key,
                    const uint8_t *iv)
{
    int n = 0, f = 0;
    uint8_t tag[16];
    if (EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, key, iv) != 1 ||
        EVP_EncryptUpdate(x, ct, &n, pt, MSG) != 1 || EVP_EncryptFinal_ex(x, ct + n, &f) != 1 ||
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
        return -1;
    if (EVP_DecryptInit_ex(x, EVP_aes_256_gcm(), NULL, key, iv) != 1 ||
        EVP_DecryptUpdate(x, pt, &n, ct, MSG) != 1 ||
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
        EVP_DecryptFinal_ex(x, pt + n, &f) != 1)
        return -1;
    return 0;
}

/* Seals and opens `count` MiB messages; seconds, or -1 on a failure. */
static double run(int alg, uint8_t *pt, uint8_t *ct, long long count)
{
    static uint8_t key[32], nonce[24];
    unsigned long long clen = 0, mlen = 0;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    if (!x) return -1;
    const double t0 = util_now();
    for (long long i = 0; i < count; i++) {
        nonce[0] = (uint8_t)i;
        int bad = 0;
        switch (alg) {
        case XSALSA:
            bad = crypto_secretbox_easy(ct, pt, MSG, nonce, key) != 0 ||
                  crypto_secretbox_open_easy(pt, ct, MSG + crypto_secretbox_MACBYTES, nonce,
                                             key) != 0;
            break;
        case AESGCM:
            bad = crypto_aead_aes256gcm_encrypt(ct, &clen, pt, MSG, NULL, 0, NULL, nonce, key) != 0 ||
                  crypto_aead_aes256gcm_decrypt(pt, &mlen, NULL, ct, clen, NULL, 0, nonce, key) != 0;
            break;
        case OSSL_GCM: bad = ossl_gcm(x, pt, ct, key, nonce) != 0; break;
        default:
            bad = crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &clen, pt, MSG, NULL, 0, NULL,
                                                             nonce, key) != 0 ||
                  crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &mlen, NULL, ct, clen, NULL, 0,
                                                             nonce, key) != 0;
        }
        if (bad) {
            EVP_CIPHER_CTX_free(x);
            return -1;
        }
    }
    double s = util_now() - t0;
    EVP_CIPHER_CTX_free(x);
    return s;
}

int main(int argc, char **argv)
{
    long long mib = 256;
    if (argc > 1 && util_parse_int(argv[1], 1, 1 << 20, &mib) != 0) {
        fprintf(stderr, "usage: bench_aead [MIB]\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;
    int have_aes = crypto_aead_aes256gcm_is_available();
    uint8_t *pt = calloc(1, MSG), *ct = calloc(1, MSG + 64);
    if (!pt || !ct) return 1;
    double best[N_ALGS] = {0};
    for (int r = 0; r < REPS; r++) {
        for (int a = 0; a < N_ALGS; a++) {
            if (a == AESGCM && !have_aes) continue;
            double s = run(a, pt, ct, mib);
            if (s < 0) {
                fprintf(stderr, "bench_aead: %s failed\n", names[a]);
                return 1;
            }
            double gbps = (double)mib * MSG / s / 1e9;
            if (gbps > best[a]) best[a] = gbps;
        }
    }
    printf("{\"message_bytes\": %u, \"seal_and_open_gb_per_s\": {", MSG);
    for (int a = 0; a < N_ALGS; a++)
        printf("%s\"%s\": %.3f", a ? ", " : "", names[a], best[a]);
    printf("}, \"aes256gcm_available\": %s}\n", have_aes ? "true" : "false");
    free(pt);
    free(ct);
    return 0;
}
