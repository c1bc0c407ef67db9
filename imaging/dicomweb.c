/*
 * dicomweb.c - QIDO-RS JSON subset, multipart/related, request pacing.
 *
 * The JSON scanner is a strict recursive-descent reader over a bounded
 * buffer: it validates the whole text (RFC 8259 grammar, depth at most
 * DICOMWEB_JSON_MAX_DEPTH) and keeps only four string values per object.
 * No error message quotes the input.
 */
#include "imaging/dicomweb.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

/* ---- JSON ------------------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t len, pos;
    const char *why; /* first error */
} jscan_t;

static int jfail(jscan_t *j, const char *why)
{
    if (!j->why) j->why = why;
    return -1;
}

static void jws(jscan_t *j)
{
    while (j->pos < j->len &&
           (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' || j->s[j->pos] == '\n' || j->s[j->pos] == '\r'))
        j->pos++;
}

static int jpeek(jscan_t *j)
{
    jws(j);
    return j->pos < j->len ? (unsigned char)j->s[j->pos] : -1;
}

static int jexpect(jscan_t *j, char c)
{
    if (jpeek(j) != (unsigned char)c) return jfail(j, "unexpected character");
    j->pos++;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads a string. If out is not NULL, copies it (outlen includes the NUL);
 * *fits = 0 if it was longer or held a \u escape / control character (such a
 * value is never a UID or an accession number we can use). */
static int jstring(jscan_t *j, char *out, size_t outlen, int *fits)
{
    if (jexpect(j, '"') < 0) return -1;
    size_t o = 0;
    if (fits) *fits = 1;
    while (j->pos < j->len) {
        unsigned char c = (unsigned char)j->s[j->pos++];
        if (c == '"') {
            if (out) out[o < outlen ? o : outlen - 1] = '\0';
            return 0;
        }
        if (c < 0x20) return jfail(j, "control character in string");
        if (c == '\\') {
            if (j->pos >= j->len) break;
            char e = j->s[j->pos++];
            if (e == 'u') {
                if (j->len - j->pos < 4) break;
                for (int k = 0; k < 4; k++)
                    if (hexval((unsigned char)j->s[j->pos + k]) < 0) return jfail(j, "bad \\u escape");
                j->pos += 4;
                if (fits) *fits = 0;
                continue;
            }
            static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
            const char *p = strchr(esc_in, e);
            if (!p || e == '\0') return jfail(j, "bad escape");
            c = (unsigned char)esc_out[p - esc_in];
            if (c < 0x20 && fits) *fits = 0;
        }
        if (out) {
            if (o + 1 < outlen) out[o++] = (char)c;
            else if (fits) *fits = 0;
        }
    }
    return jfail(j, "unterminated string");
}

static int jnumber(jscan_t *j)
{
    size_t p = j->pos;
    if (p < j->len && j->s[p] == '-') p++;
    if (p >= j->len || !isdigit((unsigned char)j->s[p])) return jfail(j, "bad number");
    if (j->s[p] == '0') p++;
    else while (p < j->len && isdigit((unsigned char)j->s[p])) p++;
    if (p < j->len && j->s[p] == '.') {
        p++;
        if (p >= j->len || !isdigit((unsigned char)j->s[p])) return jfail(j, "bad number");
        while (p < j->len && isdigit((unsigned char)j->s[p])) p++;
    }
    if (p < j->len && (j->s[p] == 'e' || j->s[p] == 'E')) {
        p++;
        if (p < j->len && (j->s[p] == '+' || j->s[p] == '-')) p++;
        if (p >= j->len || !isdigit((unsigned char)j->s[p])) return jfail(j, "bad number");
        while (p < j->len && isdigit((unsigned char)j->s[p])) p++;
    }
    j->pos = p;
    return 0;
}

static int jliteral(jscan_t *j, const char *lit)
{
    size_t n = strlen(lit);
    if (j->len - j->pos < n || memcmp(j->s + j->pos, lit, n) != 0) return jfail(j, "bad literal");
    j->pos += n;
    return 0;
}

static int jskip(jscan_t *j, int depth);

static int jskip_container(jscan_t *j, int depth, char open, char close)
{
    if (depth >= DICOMWEB_JSON_MAX_DEPTH) return jfail(j, "nested too deeply");
    if (jexpect(j, open) < 0) return -1;
    if (jpeek(j) == (unsigned char)close) {
        j->pos++;
        return 0;
    }
    for (;;) {
        if (open == '{') {
            if (jstring(j, NULL, 0, NULL) < 0 || jexpect(j, ':') < 0) return -1;
        }
        if (jskip(j, depth + 1) < 0) return -1;
        int c = jpeek(j);
        j->pos++;
        if (c == ',') continue;
        if (c == (unsigned char)close) return 0;
        return jfail(j, "expected ',' or end of container");
    }
}

static int jskip(jscan_t *j, int depth)
{
    int c = jpeek(j);
    switch (c) {
    case '{': return jskip_container(j, depth, '{', '}');
    case '[': return jskip_container(j, depth, '[', ']');
    case '"': return jstring(j, NULL, 0, NULL);
    case 't': return jliteral(j, "true");
    case 'f': return jliteral(j, "false");
    case 'n': return jliteral(j, "null");
    default: return jnumber(j);
    }
}

/* The attribute object {"vr": "UI", "Value": ["1.2.3"]}: copies Value[0] if it is
 * a string that fits, else leaves out empty. depth is the object's depth. */
static int jattribute(jscan_t *j, int depth, char *out, size_t outlen)
{
    out[0] = '\0';
    if (depth >= DICOMWEB_JSON_MAX_DEPTH) return jfail(j, "nested too deeply");
    if (jpeek(j) != '{') return jskip(j, depth);
    j->pos++;
    if (jpeek(j) == '}') {
        j->pos++;
        return 0;
    }
    for (;;) {
        char key[8];
        int fits;
        if (jstring(j, key, sizeof key, &fits) < 0 || jexpect(j, ':') < 0) return -1;
        if (fits && strcmp(key, "Value") == 0 && jpeek(j) == '[') {
            j->pos++;
            int first = 1;
            if (jpeek(j) == ']') j->pos++;
            else
                for (;;) {
                    if (first && jpeek(j) == '"') {
                        if (jstring(j, out, outlen, &fits) < 0) return -1;
                        if (!fits) out[0] = '\0';
                    } else if (jskip(j, depth + 2) < 0) {
                        return -1;
                    }
                    first = 0;
                    int c = jpeek(j);
                    j->pos++;
                    if (c == ',') continue;
                    if (c == ']') break;
                    return jfail(j, "expected ',' or ']'");
                }
        } else if (jskip(j, depth + 1) < 0) {
            return -1;
        }
        int c = jpeek(j);
        j->pos++;
        if (c == ',') continue;
        if (c == '}') return 0;
        return jfail(j, "expected ',' or '}'");
    }
}

static int is_uid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isdigit((unsigned char)s[i]) || (s[i] == '.' && s[i + 1] != '.'))) return 0;
    return 1;
}

static int is_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
    return 1;
}

static int list_push(dicomweb_list_t *l, const dicomweb_instance_t *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        dicomweb_instance_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *e;
    return 0;
}

void dicomweb_list_free(dicomweb_list_t *l)
{
    if (!l) return;
    free(l->v);
    memset(l, 0, sizeof *l);
}

int dicomweb_qido_parse(const char *json, size_t len, dicomweb_list_t *l, size_t *entries,
                        size_t *unusable, char *err, size_t errlen)
{
    jscan_t j = {json, len, 0, NULL};
    *entries = 0;
    *unusable = 0;
    size_t start_n = l->n;
    if (jpeek(&j) == -1) return 0; /* empty body: no matches (204) */
    if (jexpect(&j, '[') < 0) goto malformed;
    if (jpeek(&j) == ']') {
        j.pos++;
    } else {
        for (;;) {
            dicomweb_instance_t e;
            memset(&e, 0, sizeof e);
            if (jexpect(&j, '{') < 0) goto malformed;
            if (jpeek(&j) == '}') {
                j.pos++;
            } else {
                for (;;) {
                    char tag[9];
                    int fits;
                    if (jstring(&j, tag, sizeof tag, &fits) < 0 || jexpect(&j, ':') < 0)
                        goto malformed;
                    char *dst = NULL;
                    if (fits && strcasecmp(tag, "0020000D") == 0) dst = e.study_uid;
                    else if (fits && strcasecmp(tag, "0020000E") == 0) dst = e.series_uid;
                    else if (fits && strcasecmp(tag, "00080018") == 0) dst = e.sop_uid;
                    else if (fits && strcasecmp(tag, "00080050") == 0) dst = e.accession;
                    if (dst ? jattribute(&j, 2, dst, DICOM_KEY_MAX) < 0 : jskip(&j, 2) < 0)
                        goto malformed;
                    int c = jpeek(&j);
                    j.pos++;
                    if (c == ',') continue;
                    if (c == '}') break;
                    jfail(&j, "expected ',' or '}'");
                    goto malformed;
                }
            }
            (*entries)++;
            if (is_uid(e.study_uid) && is_uid(e.series_uid) && is_uid(e.sop_uid)) {
                if (!is_printable(e.accession)) e.accession[0] = '\0';
                if (list_push(l, &e) < 0) {
                    util_seterr(err, errlen, "out of memory for the instance list");
                    l->n = start_n;
                    return -1;
                }
            } else {
                (*unusable)++;
            }
            int c = jpeek(&j);
            j.pos++;
            if (c == ',') continue;
            if (c == ']') break;
            jfail(&j, "expected ',' or ']'");
            goto malformed;
        }
    }
    if (jpeek(&j) != -1) {
        jfail(&j, "trailing data");
        goto malformed;
    }
    return 0;
malformed:
    util_seterr(err, errlen, "search answer is not a DICOM JSON array: %s at byte %zu",
                j.why ? j.why : "unexpected end", j.pos);
    l->n = start_n;
    return -1;
}

/* ---- multipart/related ------------------------------------------------------------ */

int dicomweb_boundary(const char *ct, char out[DICOMWEB_BOUNDARY_MAX + 1], char *err,
                      size_t errlen)
{
    if (!ct || strncasecmp(ct, "multipart/related", 17) != 0) {
        util_seterr(err, errlen, "answer is not multipart/related");
        return -1;
    }
    const char *p = ct + 17;
    while ((p = strchr(p, ';')) != NULL) {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        if (strncasecmp(p, "boundary=", 9) != 0) continue;
        p += 9;
        size_t n = 0;
        if (*p == '"') {
            p++;
            while (p[n] && p[n] != '"') n++;
            if (p[n] != '"') break;
        } else {
            while (p[n] && p[n] != ';' && p[n] != ' ' && p[n] != '\t' && p[n] != '\r' && p[n] != '\n') n++;
        }
        if (n == 0 || n > DICOMWEB_BOUNDARY_MAX) break;
        memcpy(out, p, n);
        out[n] = '\0';
        return 0;
    }
    util_seterr(err, errlen, "multipart answer without a valid boundary");
    return -1;
}

/* Parses the part's header block [h, h + n) (lines separated by CRLF). */
static int part_headers(const uint8_t *h, size_t n, dicomweb_part_t *part, long long *clen)
{
    *clen = -1;
    part->content_type[0] = '\0';
    size_t pos = 0;
    while (pos < n) {
        const uint8_t *eol = memmem(h + pos, n - pos, "\r\n", 2);
        size_t ll = eol ? (size_t)(eol - (h + pos)) : n - pos;
        const char *line = (const char *)h + pos;
        char buf[256];
        if (ll < sizeof buf) {
            memcpy(buf, line, ll);
            buf[ll] = '\0';
            if (memchr(buf, '\0', ll)) return -1;
            char *colon = strchr(buf, ':');
            if (!colon) return -1;
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t') v++;
            char *end = v + strlen(v);
            while (end > v && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
            if (strcasecmp(buf, "Content-Type") == 0) {
                size_t k = 0;
                for (; v[k] && k + 1 < sizeof part->content_type; k++)
                    part->content_type[k] = (char)tolower((unsigned char)v[k]);
                part->content_type[k] = '\0';
            } else if (strcasecmp(buf, "Content-Length") == 0) {
                if (util_parse_int(v, 0, (long long)1 << 40, clen) < 0) return -1;
            }
        } else if (!memchr(line, ':', ll)) {
            return -1; /* a long line must still be a header */
        }
        pos += ll + 2;
    }
    return 0;
}

int dicomweb_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                             size_t max_part_bytes, dicomweb_part_t *parts, size_t max_parts,
                             size_t *nparts, char *err, size_t errlen)
{
    char delim[DICOMWEB_BOUNDARY_MAX + 5];
    size_t bl = strlen(boundary);
    *nparts = 0;
    if (bl == 0 || bl > DICOMWEB_BOUNDARY_MAX) {
        util_seterr(err, errlen, "bad multipart boundary");
        return -1;
    }
    /* "\r\n--" boundary: the delimiter inside the body; the first may lack the CRLF. */
    snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    size_t dl = bl + 4;
    size_t pos;
    if (len >= dl - 2 && memcmp(body, delim + 2, dl - 2) == 0) {
        pos = dl - 2;
    } else {
        const uint8_t *d = memmem(body, len, delim, dl);
        if (!d) {
            util_seterr(err, errlen, "multipart body without its boundary");
            return -1;
        }
        pos = (size_t)(d - body) + dl;
    }
    for (;;) {
        /* after a delimiter: "--" closes, else optional blanks then CRLF */
        if (len - pos >= 2 && body[pos] == '-' && body[pos + 1] == '-') {
            if (*nparts == 0) {
                util_seterr(err, errlen, "multipart body with no part");
                return -1;
            }
            return 0;
        }
        while (pos < len && (body[pos] == ' ' || body[pos] == '\t')) pos++;
        if (len - pos < 2 || body[pos] != '\r' || body[pos + 1] != '\n') {
            util_seterr(err, errlen, "multipart body truncated after a boundary");
            return -1;
        }
        pos += 2;
        if (*nparts == max_parts) {
            util_seterr(err, errlen, "more than %zu parts", max_parts);
            return -1;
        }
        dicomweb_part_t *part = &parts[*nparts];
        size_t hl;
        if (len - pos >= 2 && body[pos] == '\r' && body[pos + 1] == '\n') {
            hl = 0; /* no headers */
            pos += 2;
        } else {
            size_t window = len - pos < DICOMWEB_PART_HEADERS_MAX ? len - pos : DICOMWEB_PART_HEADERS_MAX;
            const uint8_t *e = memmem(body + pos, window, "\r\n\r\n", 4);
            if (!e) {
                util_seterr(err, errlen, "part %zu: header block unterminated or over %d bytes",
                            *nparts + 1, DICOMWEB_PART_HEADERS_MAX);
                return -1;
            }
            hl = (size_t)(e - (body + pos));
        }
        long long clen = -1;
        if (hl > 0) {
            if (part_headers(body + pos, hl, part, &clen) < 0) {
                util_seterr(err, errlen, "part %zu: malformed header", *nparts + 1);
                return -1;
            }
            pos += hl + 4;
        } else {
            part->content_type[0] = '\0';
        }
        const uint8_t *d = memmem(body + pos, len - pos, delim, dl);
        if (!d) {
            util_seterr(err, errlen, "part %zu: truncated (no closing boundary)", *nparts + 1);
            return -1;
        }
        size_t plen = (size_t)(d - (body + pos));
        if (plen > max_part_bytes) {
            util_seterr(err, errlen, "part %zu: %zu bytes, over the limit of %zu", *nparts + 1,
                        plen, max_part_bytes);
            return -1;
        }
        if (clen >= 0 && (unsigned long long)clen != plen) {
            util_seterr(err, errlen, "part %zu: Content-Length %lld but %zu bytes", *nparts + 1,
                        clen, plen);
            return -1;
        }
        part->data = body + pos;
        part->len = plen;
        (*nparts)++;
        pos = (size_t)(d - body) + dl;
    }
}

/* ---- pacing ------------------------------------------------------------------------ */

void ratelimit_init(ratelimit_t *r, double per_second)
{
    r->interval = per_second > 0 ? 1.0 / per_second : 0;
    r->next = 0;
}

double ratelimit_reserve(ratelimit_t *r, double now)
{
    double at = r->next > now ? r->next : now;
    r->next = at + r->interval;
    return at - now;
}

double dicomweb_backoff(int attempt, double retry_after, double max_wait)
{
    double w = retry_after >= 0 ? retry_after : 0.5;
    if (retry_after < 0)
        for (int i = 1; i < attempt && w < max_wait; i++) w *= 2;
    return w > max_wait ? max_wait : w;
}

/* ---- transfer syntax of a Part 10 file ---------------------------------------------------- */

int dicomweb_transfer_syntax(const uint8_t *data, size_t len, char uid[DICOMWEB_UID_MAX])
{
    uid[0] = '\0';
    if (len < 132 || memcmp(data + 128, "DICM", 4) != 0) return -1;
    size_t off = 132;
    /* The meta group is explicit VR little endian: tag, VR, then a 2-byte
     * length, or for OB/OW/OF/SQ/UT/UN 2 reserved bytes and a 4-byte one. */
    while (len - off >= 8) {
        const uint8_t *e = data + off;
        const unsigned group = e[0] | e[1] << 8, elem = e[2] | e[3] << 8;
        if (group != 0x0002) return -1;
        size_t hdr = 8, vlen = (size_t)(e[6] | e[7] << 8);
        if ((e[4] == 'O' && (e[5] == 'B' || e[5] == 'W' || e[5] == 'F')) ||
            (e[4] == 'S' && e[5] == 'Q') || (e[4] == 'U' && (e[5] == 'T' || e[5] == 'N'))) {
            if (len - off < 12) return -1;
            hdr = 12;
            vlen = (size_t)e[8] | (size_t)e[9] << 8 | (size_t)e[10] << 16 | (size_t)e[11] << 24;
        }
        if (vlen > len - off - hdr) return -1;
        if (elem == 0x0010) {
            if (vlen == 0 || vlen >= DICOMWEB_UID_MAX) return -1;
            memcpy(uid, e + hdr, vlen);
            while (vlen > 0 && (uid[vlen - 1] == '\0' || uid[vlen - 1] == ' ')) vlen--;
            uid[vlen] = '\0';
            for (size_t i = 0; i < vlen; i++)
                if (!((uid[i] >= '0' && uid[i] <= '9') || uid[i] == '.')) return uid[0] = '\0', -1;
            return vlen ? 0 : -1;
        }
        off += hdr + vlen;
    }
    return -1;
}

const char *dicomweb_transfer_syntax_name(const char *uid)
{
    static const struct {
        const char *uid, *name;
    } names[] = {
        {"1.2.840.10008.1.2", "implicit VR little endian"},
        {"1.2.840.10008.1.2.1", "explicit VR little endian"},
        {"1.2.840.10008.1.2.1.99", "deflated"},
        {"1.2.840.10008.1.2.2", "explicit VR big endian"},
        {"1.2.840.10008.1.2.4.50", "JPEG baseline"},
        {"1.2.840.10008.1.2.4.51", "JPEG extended"},
        {"1.2.840.10008.1.2.4.57", "JPEG lossless"},
        {"1.2.840.10008.1.2.4.70", "JPEG lossless SV1"},
        {"1.2.840.10008.1.2.4.80", "JPEG-LS lossless"},
        {"1.2.840.10008.1.2.4.81", "JPEG-LS near-lossless"},
        {"1.2.840.10008.1.2.4.90", "JPEG 2000 lossless"},
        {"1.2.840.10008.1.2.4.91", "JPEG 2000"},
        {"1.2.840.10008.1.2.5", "RLE lossless"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(uid, names[i].uid) == 0) return names[i].name;
    return "other";
}
