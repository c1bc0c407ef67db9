/*
 * identity.c - a site's long-term Ed25519 identity: signing the per-round
 * key advertisement, and the secret key file on disk.
 *
 * Signatures stop a man-in-the-middle coordinator from substituting its own
 * X25519 keys for a site's (Bonawitz et al.'s "active" security): every
 * client checks each peer's advertised (c_pk, s_pk) against the peer's
 * enrolled identity key before deriving anything from them.
 */
#include "crypto/crypto.h"
#include "crypto/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

_Static_assert(IDENTITY_PUBLICKEYBYTES == crypto_sign_ed25519_PUBLICKEYBYTES, "pk size");
_Static_assert(IDENTITY_SECRETKEYBYTES == crypto_sign_ed25519_SECRETKEYBYTES, "sk size");
_Static_assert(IDENTITY_SIGBYTES == crypto_sign_ed25519_BYTES, "sig size");

/* The file: 128 hex digits and a newline. */
#define KEYFILE_MAX_KEY 64

/* ---- signing the advertisement ---------------------------------------------------- */

/* A fixed-length message (label, round, id, both keys) so that no two
 * different advertisements serialise to the same bytes, and the label keeps
 * these signatures from being valid for any other medfed message. */
#define ADV_LABEL "medfed-advertise-v1"
#define ADV_LABEL_LEN (sizeof ADV_LABEL - 1)
#define ADV_BYTES (ADV_LABEL_LEN + 8 + 2 * KA_PUBLICKEYBYTES)

static void advertisement(uint8_t msg[ADV_BYTES], uint32_t round, uint32_t id,
                          const uint8_t c_pk[KA_PUBLICKEYBYTES], const uint8_t s_pk[KA_PUBLICKEYBYTES])
{
    uint8_t *p = msg;
    memcpy(p, ADV_LABEL, ADV_LABEL_LEN);
    p += ADV_LABEL_LEN;
    crypto_store32_le(p, round);
    crypto_store32_le(p + 4, id);
    p += 8;
    memcpy(p, c_pk, KA_PUBLICKEYBYTES);
    memcpy(p + KA_PUBLICKEYBYTES, s_pk, KA_PUBLICKEYBYTES);
}

/* ---- any message, domain-separated ---------------------------------------------------- */

#define SIGN_PREFIX "medfed-"
#define SIGN_LABEL_MAX 64

static int labelled(crypto_sign_ed25519ph_state *st, const char *label, const void *msg, size_t len)
{
    size_t ll = strlen(label);
    CRYPTO_REQUIRE(ll > 0 && ll <= SIGN_LABEL_MAX);
    static const uint8_t zero = 0;
    crypto_sign_ed25519ph_init(st);
    crypto_sign_ed25519ph_update(st, (const uint8_t *)SIGN_PREFIX, sizeof SIGN_PREFIX - 1);
    crypto_sign_ed25519ph_update(st, (const uint8_t *)label, ll);
    crypto_sign_ed25519ph_update(st, &zero, 1);
    crypto_sign_ed25519ph_update(st, msg, len);
    return 0;
}

int identity_sign(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                  const char *label, const void *msg, size_t len)
{
    CRYPTO_REQUIRE(sig != NULL && sk != NULL && label != NULL && (msg != NULL || len == 0));
    crypto_sign_ed25519ph_state st;
    labelled(&st, label, msg, len);
    int rc = crypto_sign_ed25519ph_final_create(&st, sig, NULL, sk) == 0 ? 0 : -1;
    sodium_memzero(&st, sizeof st);
    if (rc < 0) sodium_memzero(sig, IDENTITY_SIGBYTES);
    return rc;
}

int identity_verify(const uint8_t sig[IDENTITY_SIGBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES],
                    const char *label, const void *msg, size_t len)
{
    CRYPTO_REQUIRE(sig != NULL && pk != NULL && label != NULL && (msg != NULL || len == 0));
    crypto_sign_ed25519ph_state st;
    labelled(&st, label, msg, len);
    /* const-cast: libsodium's verify takes a non-const signature pointer */
    uint8_t s[IDENTITY_SIGBYTES];
    memcpy(s, sig, sizeof s);
    return crypto_sign_ed25519ph_final_verify(&st, s, pk) == 0 ? 0 : -1;
}

void identity_fingerprint(char out[IDENTITY_HEXBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES])
{
    CRYPTO_REQUIRE(out != NULL && pk != NULL);
    uint8_t h[CRYPTO_HASHBYTES];
    crypto_sha256(h, pk, IDENTITY_PUBLICKEYBYTES);
    sodium_bin2hex(out, IDENTITY_HEXBYTES, h, sizeof h);
}

int identity_keypair(uint8_t pk[IDENTITY_PUBLICKEYBYTES], uint8_t sk[IDENTITY_SECRETKEYBYTES])
{
    CRYPTO_REQUIRE(pk != NULL && sk != NULL);
    return crypto_sign_ed25519_keypair(pk, sk) == 0 ? 0 : -1;
}

int identity_sign_keys(uint8_t sig[IDENTITY_SIGBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES],
                       uint32_t round, uint32_t id, const uint8_t c_pk[KA_PUBLICKEYBYTES],
                       const uint8_t s_pk[KA_PUBLICKEYBYTES])
{
    CRYPTO_REQUIRE(sig != NULL && sk != NULL && c_pk != NULL && s_pk != NULL);
    uint8_t msg[ADV_BYTES];
    advertisement(msg, round, id, c_pk, s_pk);
    if (crypto_sign_ed25519_detached(sig, NULL, msg, sizeof msg, sk) != 0) {
        sodium_memzero(sig, IDENTITY_SIGBYTES);
        return -1;
    }
    return 0;
}

int identity_verify_keys(const uint8_t sig[IDENTITY_SIGBYTES],
                         const uint8_t pk[IDENTITY_PUBLICKEYBYTES], uint32_t round, uint32_t id,
                         const uint8_t c_pk[KA_PUBLICKEYBYTES],
                         const uint8_t s_pk[KA_PUBLICKEYBYTES])
{
    CRYPTO_REQUIRE(sig != NULL && pk != NULL && c_pk != NULL && s_pk != NULL);
    uint8_t msg[ADV_BYTES];
    advertisement(msg, round, id, c_pk, s_pk);
    /* libsodium also rejects small-order public keys and non-canonical
     * signatures here. */
    return crypto_sign_ed25519_verify_detached(sig, msg, sizeof msg, pk) == 0 ? 0 : -1;
}

void identity_pk_of(uint8_t pk[IDENTITY_PUBLICKEYBYTES], const uint8_t sk[IDENTITY_SECRETKEYBYTES])
{
    CRYPTO_REQUIRE(pk != NULL && sk != NULL);
    /* An Ed25519 secret key is seed || pk: this copies the second half. */
    (void)crypto_sign_ed25519_sk_to_pk(pk, sk);
}

/* ---- hex ---------------------------------------------------------------------------- */

void identity_pk_to_hex(char out[IDENTITY_HEXBYTES], const uint8_t pk[IDENTITY_PUBLICKEYBYTES])
{
    CRYPTO_REQUIRE(out != NULL && pk != NULL);
    sodium_bin2hex(out, IDENTITY_HEXBYTES, pk, IDENTITY_PUBLICKEYBYTES); /* lower case */
}

int identity_pk_from_hex(uint8_t pk[IDENTITY_PUBLICKEYBYTES], const char *hex)
{
    CRYPTO_REQUIRE(pk != NULL && hex != NULL);
    /* Exactly the canonical form (64 lower-case digits, nothing around
     * them), so one key has one spelling and rosters can compare strings. A
     * public key is public: branching on its characters leaks nothing. */
    size_t i = 0;
    for (; i < IDENTITY_HEXBYTES; i++) {
        const char c = hex[i];
        if (c == '\0' || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) break;
    }
    size_t binlen = 0;
    if (i != 2 * IDENTITY_PUBLICKEYBYTES || hex[i] != '\0' ||
        sodium_hex2bin(pk, IDENTITY_PUBLICKEYBYTES, hex, i, NULL, &binlen, NULL) != 0 ||
        binlen != IDENTITY_PUBLICKEYBYTES) {
        memset(pk, 0, IDENTITY_PUBLICKEYBYTES);
        return -1;
    }
    return 0;
}

/* ---- key files ------------------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen,
                                                          const char *fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        const ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Makes the rename durable. Best effort on the directory itself. */
static int fsync_dir_of(const char *path)
{
    char copy[PATH_MAX];
    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy) return -1;
    const int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    const int rc = fsync(fd);
    close(fd);
    return rc;
}

/*
 * Written to a fresh temp file next to path (mkstemp: O_CREAT|O_EXCL, mode
 * 0600, so no other user can open it between creation and fchmod), fsync'd,
 * then renamed over path: a crash or a full disk never leaves a truncated
 * key in place of a good one, and an old key file with loose permissions is
 * replaced rather than rewritten in place.
 */
int keyfile_save(const char *path, const uint8_t *sk, size_t len, char *err, size_t errlen)
{
    CRYPTO_REQUIRE(path != NULL && sk != NULL && len > 0 && len <= KEYFILE_MAX_KEY);

    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >= (int)sizeof tmp) {
        set_err(err, errlen, "%s: path too long", path);
        return -1;
    }
    const int fd = mkstemp(tmp);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    /* mkstemp already uses 0600; fchmod says so explicitly, whatever libc. */
    if (fchmod(fd, 0600) != 0) {
        set_err(err, errlen, "%s: chmod 600 failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }

    char text[2 * KEYFILE_MAX_KEY + 2]; /* + newline, + NUL from sodium_bin2hex */
    sodium_bin2hex(text, 2 * len + 1, sk, len);
    text[2 * len] = '\n';
    int rc = write_all(fd, (const uint8_t *)text, 2 * len + 1);
    sodium_memzero(text, sizeof text);
    if (rc != 0 || fsync(fd) != 0) {
        set_err(err, errlen, "%s: write failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0) {
        set_err(err, errlen, "%s: close failed: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "%s: rename failed: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (fsync_dir_of(path) != 0) {
        set_err(err, errlen, "%s: fsync of directory failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Reads at most cap bytes; returns the count, or -1. */
static ssize_t read_upto(int fd, uint8_t *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        const ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int keyfile_load(const char *path, uint8_t *sk, size_t len, char *err, size_t errlen)
{
    CRYPTO_REQUIRE(path != NULL && sk != NULL && len > 0 && len <= KEYFILE_MAX_KEY);
    sodium_memzero(sk, len);
    const size_t hex = 2 * len, bytes = hex + 1;

    /* O_NONBLOCK: a FIFO planted at path must not hang the daemon; it is
     * then refused as not a regular file. */
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    /* fstat on the open descriptor, not stat on the name: what is checked is
     * what is read. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    /* Like ssh: a key that group or others could read (or write) may
     * already be known to someone else. Refuse rather than warn. */
    if ((st.st_mode & 077) != 0) {
        set_err(err, errlen, "key file %s is %s by others (mode %04o); chmod 600 %s", path,
                (st.st_mode & 044) ? "readable" : "writable", (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }

    /* One byte more than expected, to notice a file that is too long. */
    uint8_t text[2 * KEYFILE_MAX_KEY + 2];
    const ssize_t got = read_upto(fd, text, bytes + 1);
    const int read_errno = errno;
    close(fd);
    int rc = -1;
    size_t binlen = 0;
    const char *end = NULL;
    if (got < 0) {
        set_err(err, errlen, "%s: read failed: %s", path, strerror(read_errno));
    } else if ((size_t)got != bytes || text[hex] != '\n') {
        set_err(err, errlen, "%s: wrong length (%zd bytes; expected %zu hex digits and a newline)",
                path, got, hex);
    } else if (sodium_hex2bin(sk, len, (const char *)text, hex, NULL, &binlen, &end) != 0 ||
               binlen != len || end != (const char *)text + hex) {
        /* sodium_hex2bin runs in time independent of the digits' values. */
        set_err(err, errlen, "%s: not a hex-encoded key", path);
    } else {
        rc = 0;
    }
    sodium_memzero(text, sizeof text);
    if (rc != 0) sodium_memzero(sk, len);
    return rc;
}

int identity_save_secret(const char *path, const uint8_t sk[IDENTITY_SECRETKEYBYTES], char *err,
                         size_t errlen)
{
    return keyfile_save(path, sk, IDENTITY_SECRETKEYBYTES, err, errlen);
}

int identity_load_secret(const char *path, uint8_t sk[IDENTITY_SECRETKEYBYTES], char *err,
                         size_t errlen)
{
    int rc = keyfile_load(path, sk, IDENTITY_SECRETKEYBYTES, err, errlen);
    if (rc == 0) {
        /* sk = seed || pk. Recompute pk from the seed: a flipped bit in the
         * file would otherwise sign with a key no peer has enrolled, and the
         * failure would show up far away as "bad signature". */
        uint8_t seed[crypto_sign_ed25519_SEEDBYTES], pk[IDENTITY_PUBLICKEYBYTES],
            sk2[IDENTITY_SECRETKEYBYTES];
        if (crypto_sign_ed25519_sk_to_seed(seed, sk) != 0 ||
            crypto_sign_ed25519_seed_keypair(pk, sk2, seed) != 0 ||
            sodium_memcmp(sk2, sk, IDENTITY_SECRETKEYBYTES) != 0) {
            set_err(err, errlen, "%s: corrupt key (public half does not match the seed)", path);
            rc = -1;
        }
        sodium_memzero(seed, sizeof seed);
        sodium_memzero(sk2, sizeof sk2);
    }
    if (rc != 0) sodium_memzero(sk, IDENTITY_SECRETKEYBYTES);
    return rc;
}

/* ---- transport keys: CURVE (X25519, as ZeroMQ's CURVE uses) ----------------------- */

int curve_keypair(uint8_t pk[CURVE_KEYBYTES], uint8_t sk[CURVE_KEYBYTES])
{
    CRYPTO_REQUIRE(pk != NULL && sk != NULL);
    return crypto_box_keypair(pk, sk) == 0 ? 0 : -1;
}

int curve_pk_of(uint8_t pk[CURVE_KEYBYTES], const uint8_t sk[CURVE_KEYBYTES])
{
    CRYPTO_REQUIRE(pk != NULL && sk != NULL);
    return crypto_scalarmult_base(pk, sk) == 0 ? 0 : -1;
}
