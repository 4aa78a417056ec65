/* encoding.c — HTTP content codings (zlib). See encoding.h. */
#include "server/encoding.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>


/* Trims spaces and tabs around s[0..*n); returns the new start. */
static const char *trim(const char *s, size_t *n) {
    while (*n && (*s == ' ' || *s == '\t')) s++, (*n)--;
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\t')) (*n)--;
    return s;
}

static int token_is(const char *s, size_t n, const char *word) {
    return n == strlen(word) && !strncasecmp(s, word, n);
}

srv_encoding srv_encoding_parse(const char *header) {
    if (!header) return SRV_ENC_IDENTITY;
    srv_encoding found = SRV_ENC_IDENTITY;
    const char *p = header;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *t = trim(p, &n);
        srv_encoding c = SRV_ENC_IDENTITY;
        if (!n || token_is(t, n, "identity")) c = SRV_ENC_IDENTITY;
        else if (token_is(t, n, "gzip") || token_is(t, n, "x-gzip")) c = SRV_ENC_GZIP;
        else if (token_is(t, n, "deflate")) c = SRV_ENC_DEFLATE;
        else return SRV_ENC_UNSUPPORTED;
        if (c != SRV_ENC_IDENTITY) {
            if (found != SRV_ENC_IDENTITY) return SRV_ENC_UNSUPPORTED; /* two codings */
            found = c;
        }
        if (!e) break;
        p = e + 1;
    }
    return found;
}

/* The q value of one Accept-Encoding element's parameters (";q=0.5"): 1 when absent, -1 when
 * malformed. */
static double element_q(const char *params, size_t n) {
    double q = 1;
    while (n) {
        const char *semi = memchr(params, ';', n);
        size_t l = semi ? (size_t)(semi - params) : n;
        size_t tl = l;
        const char *t = trim(params, &tl);
        if (tl >= 2 && (t[0] == 'q' || t[0] == 'Q') && t[1] == '=') {
            char num[16];
            if (tl - 2 == 0 || tl - 2 >= sizeof num) return -1;
            memcpy(num, t + 2, tl - 2);
            num[tl - 2] = 0;
            char *end;
            q = strtod(num, &end);
            if (*end || q < 0 || q > 1) return -1;
        }
        if (!semi) break;
        n -= l + 1;
        params = semi + 1;
    }
    return q;
}

srv_encoding srv_encoding_accepted(const char *header) {
    if (!header) return SRV_ENC_IDENTITY;
    double gzip_q = -1, deflate_q = -1, star_q = -1; /* -1: not named (or a malformed q) */
    const char *p = header;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *semi = memchr(p, ';', n);
        size_t cl = semi ? (size_t)(semi - p) : n;
        const char *c = trim(p, &cl);
        double q = semi ? element_q(semi + 1, n - (size_t)(semi - p) - 1) : 1;
        if (token_is(c, cl, "gzip") || token_is(c, cl, "x-gzip")) gzip_q = q;
        else if (token_is(c, cl, "deflate")) deflate_q = q;
        else if (token_is(c, cl, "*")) star_q = q;
        if (!e) break;
        p = e + 1;
    }
    /* a coding not named takes the q of "*" (RFC 9110 12.5.3) */
    if (gzip_q < 0) gzip_q = star_q;
    if (deflate_q < 0) deflate_q = star_q;
    if (gzip_q <= 0 && deflate_q <= 0) return SRV_ENC_IDENTITY;
    return gzip_q >= deflate_q ? SRV_ENC_GZIP : SRV_ENC_DEFLATE;
}

/* One inflate run with zlib window bits `wbits`; `members`: more gzip members may follow one
 * that ended. Same contract as srv_inflate. */
static int inflate_run(const unsigned char *in, size_t n, int wbits, int members, size_t limit,
                       char **out, size_t *out_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, wbits) != Z_OK) return -3;
    size_t cap = n <= limit / 4 ? n * 4 + 256 : limit + 1;
    if (cap > limit + 1) cap = limit + 1;
    char *buf = malloc(cap + 1);
    size_t len = 0, left = n;
    int rc = buf ? 0 : -3;
    zs.next_in = (Bytef *)in;
    while (!rc) {
        if (len == cap) { /* full: grow up to limit + 1 (one byte past the limit tells) */
            size_t nc = cap > (limit + 1) / 2 ? limit + 1 : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                rc = -3;
                break;
            }
            buf = nb;
            cap = nc;
        }
        uInt in_now = left > UINT_MAX ? UINT_MAX : (uInt)left;
        size_t room = cap - len;
        zs.avail_in = in_now;
        zs.next_out = (Bytef *)buf + len;
        zs.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        int z = inflate(&zs, Z_NO_FLUSH);
        left -= in_now - zs.avail_in;
        len = (size_t)((char *)zs.next_out - buf);
        if (len > limit) {
            rc = -2;
        } else if (z == Z_STREAM_END) {
            if (!left) break;
            if (members && inflateReset(&zs) == Z_OK) continue; /* the next gzip member */
            rc = -1; /* bytes after the stream */
        } else if (z == Z_OK || z == Z_BUF_ERROR) {
            if (!left && zs.avail_out) rc = -1; /* input over, stream not ended: truncated */
        } else {
            rc = z == Z_MEM_ERROR ? -3 : -1;
        }
    }
    inflateEnd(&zs);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return 0;
}

int srv_inflate(srv_encoding enc, const char *in, size_t n, size_t limit, char **out,
                size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    const unsigned char *u = (const unsigned char *)in;
    if (enc == SRV_ENC_GZIP) return inflate_run(u, n, 16 + MAX_WBITS, 1, limit, out, out_len);
    if (enc != SRV_ENC_DEFLATE) return -1;
    /* zlib format when it starts with a zlib header (CM 8, check bits), else raw deflate */
    int zlib = n >= 2 && (u[0] & 0x0f) == 8 && (u[0] >> 4) <= 7 && ((u[0] << 8) | u[1]) % 31 == 0;
    return inflate_run(u, n, zlib ? MAX_WBITS : -MAX_WBITS, 0, limit, out, out_len);
}

int srv_compress(srv_encoding enc, const char *in, size_t n, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (n > UINT_MAX / 2 || (enc != SRV_ENC_GZIP && enc != SRV_ENC_DEFLATE)) return -1;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* level 1: replies are JSON numbers that compress well at once; the CPU is the cost */
    const int wbits = enc == SRV_ENC_GZIP ? 16 + MAX_WBITS : MAX_WBITS; /* deflate: zlib format */
    if (deflateInit2(&zs, 1, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    uLong cap = deflateBound(&zs, (uLong)n);
    char *buf = malloc(cap);
    int ok = 0;
    if (buf) {
        zs.next_in = (Bytef *)in;
        zs.avail_in = (uInt)n;
        zs.next_out = (Bytef *)buf;
        zs.avail_out = (uInt)cap;
        ok = deflate(&zs, Z_FINISH) == Z_STREAM_END;
    }
    size_t len = (size_t)zs.total_out;
    deflateEnd(&zs);
    if (!ok) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int srv_encoding_check(srv_req *r, int streamed) {
    const char *h = srv_req_header(r, "Content-Encoding");
    srv_encoding e = srv_encoding_parse(h);
    if (e == SRV_ENC_IDENTITY) return 0;
    srv_req_header_add(r, "Accept-Encoding", "gzip, deflate");
    if (e == SRV_ENC_UNSUPPORTED) {
        srv_reply_error(r, 415, "unsupported_encoding",
                        "Content-Encoding '%.64s' is not supported (gzip, deflate or identity, "
                        "one at most)", h);
        return -1;
    }
    if (streamed) {
        srv_reply_error(r, 415, "unsupported_encoding",
                        "uploads are stored as they come: send this body without "
                        "Content-Encoding");
        return -1;
    }
    return 0;
}

int srv_encoding_decode(srv_req *r) {
    srv_encoding e = srv_encoding_parse(srv_req_header(r, "Content-Encoding"));
    if (e != SRV_ENC_GZIP && e != SRV_ENC_DEFLATE) return 0;
    char *out;
    size_t len;
    int rc = srv_inflate(e, r->body ? r->body : "", r->body_len, (size_t)r->cfg->max_body_bytes,
                         &out, &len);
    if (rc == -2) {
        srv_reply_error(r, 413, "body_too_large",
                        "the decompressed body is over the limit of %lld bytes (max_body_bytes)",
                        (long long)r->cfg->max_body_bytes);
        return -1;
    }
    if (rc == -3) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory decompressing the body");
        return -1;
    }
    if (rc) {
        srv_reply_error(r, 400, "bad_encoding", "the body is not valid %s data (Content-Encoding)",
                        e == SRV_ENC_GZIP ? "gzip" : "deflate");
        return -1;
    }
    free(r->body);
    r->body = out;
    r->body_len = len;
    r->body_cap = len + 1;
    return 0;
}

const char *srv_encoding_reply(srv_req *r) {
    if (!r->reply || r->reply_len <= SRV_COMPRESS_MIN_BYTES) return NULL;
    srv_encoding enc = srv_encoding_accepted(srv_req_header(r, "Accept-Encoding"));
    if (enc == SRV_ENC_IDENTITY) return NULL;
    char *z;
    size_t zl;
    if (srv_compress(enc, r->reply, r->reply_len, &z, &zl)) return NULL;
    if (zl >= r->reply_len) {
        free(z);
        return NULL;
    }
    free(r->reply);
    r->reply = z;
    r->reply_len = zl;
    return enc == SRV_ENC_GZIP ? "gzip" : "deflate";
}
