/* test_srv_encoding.c — server/encoding: Content-Encoding and Accept-Encoding parsing, inflating
 * gzip / zlib / raw deflate bodies (zlib's own compressor makes the inputs), the decoded-size
 * limit stopping a bomb, damaged and trailing data, several gzip members, the reply coding an
 * Accept-Encoding chooses (q values, "*"), and gzip / zlib replies that inflate back to the
 * original. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "server/encoding.h"
#include "testutil.h"

/* Compresses src with zlib: wbits 15 (zlib), -15 (raw deflate) or 31 (gzip). Caller frees. */
static char *compress_with(const char *src, size_t n, int wbits, size_t *out_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    uLong cap = deflateBound(&zs, (uLong)n);
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    zs.next_out = (Bytef *)out;
    zs.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* A text that compresses, but not to nothing. */
static char *sample(size_t n) {
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    for (size_t i = 0; i < n; i++) s[i] = (char)('a' + (i * 7 + i / 13) % 26);
    s[n] = 0;
    return s;
}

START_TEST(parse_content_encoding) {
    ck_assert_int_eq(srv_encoding_parse(NULL), SRV_ENC_IDENTITY);
    ck_assert_int_eq(srv_encoding_parse(""), SRV_ENC_IDENTITY);
    ck_assert_int_eq(srv_encoding_parse("identity"), SRV_ENC_IDENTITY);
    ck_assert_int_eq(srv_encoding_parse("gzip"), SRV_ENC_GZIP);
    ck_assert_int_eq(srv_encoding_parse(" GZip "), SRV_ENC_GZIP);
    ck_assert_int_eq(srv_encoding_parse("x-gzip"), SRV_ENC_GZIP);
    ck_assert_int_eq(srv_encoding_parse("deflate"), SRV_ENC_DEFLATE);
    ck_assert_int_eq(srv_encoding_parse("identity, gzip"), SRV_ENC_GZIP);
    ck_assert_int_eq(srv_encoding_parse("gzip, deflate"), SRV_ENC_UNSUPPORTED);
    ck_assert_int_eq(srv_encoding_parse("gzip,gzip"), SRV_ENC_UNSUPPORTED);
    ck_assert_int_eq(srv_encoding_parse("br"), SRV_ENC_UNSUPPORTED);
    ck_assert_int_eq(srv_encoding_parse("gzipx"), SRV_ENC_UNSUPPORTED);
    ck_assert_int_eq(srv_encoding_parse("gzip;q=1"), SRV_ENC_UNSUPPORTED);
}
END_TEST

START_TEST(parse_accept_encoding) {
    const struct {
        const char *h;
        srv_encoding want;
    } cases[] = {
        {NULL, SRV_ENC_IDENTITY},
        {"", SRV_ENC_IDENTITY},
        {"gzip", SRV_ENC_GZIP},
        {"deflate, gzip", SRV_ENC_GZIP}, /* a tie: gzip */
        {"gzip, deflate, br", SRV_ENC_GZIP},
        {"Gzip;q=0.5", SRV_ENC_GZIP},
        {"x-gzip", SRV_ENC_GZIP},
        {"*", SRV_ENC_GZIP},
        {"br;q=1, *;q=0.2", SRV_ENC_GZIP},
        {"gzip ; q=0.001", SRV_ENC_GZIP},
        {"deflate", SRV_ENC_DEFLATE},
        {"DEFLATE ;Q=0.3", SRV_ENC_DEFLATE},
        {"deflate, br", SRV_ENC_DEFLATE},
        {"gzip;q=0, deflate", SRV_ENC_DEFLATE},
        {"gzip;q=0.5, deflate", SRV_ENC_DEFLATE}, /* the higher q */
        {"deflate;q=0.5, gzip;q=0.6", SRV_ENC_GZIP},
        {"*, gzip;q=0", SRV_ENC_DEFLATE},         /* deflate takes the q of "*" */
        {"*;q=0.5, deflate;q=0.9", SRV_ENC_DEFLATE},
        {"*;q=0.9, deflate;q=0.5", SRV_ENC_GZIP},
        {"*;q=0, deflate", SRV_ENC_DEFLATE},
        {"gzip;q=0", SRV_ENC_IDENTITY},
        {"gzip;q=0.000", SRV_ENC_IDENTITY},
        {"gzip;q=0, deflate;q=0", SRV_ENC_IDENTITY},
        {"*, gzip;q=0, deflate;q=0", SRV_ENC_IDENTITY},
        {"*;q=0", SRV_ENC_IDENTITY},
        {"identity", SRV_ENC_IDENTITY},
        {"br, identity", SRV_ENC_IDENTITY},
        {"gzip;q=abc", SRV_ENC_IDENTITY}, /* malformed q: not accepted */
        {"gzip;q=2", SRV_ENC_IDENTITY},
        {"gzip;q=abc, deflate;q=0.1", SRV_ENC_DEFLATE},
        {"gzipx, deflatex", SRV_ENC_IDENTITY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(srv_encoding_accepted(cases[i].h) == cases[i].want, "'%s': %d, want %d",
                      cases[i].h ? cases[i].h : "(null)", srv_encoding_accepted(cases[i].h),
                      cases[i].want);
}
END_TEST

START_TEST(inflate_each_format) {
    const size_t n = 100000;
    char *src = sample(n);
    const struct {
        int wbits;
        srv_encoding enc;
    } cases[] = {{31, SRV_ENC_GZIP}, {15, SRV_ENC_DEFLATE}, {-15, SRV_ENC_DEFLATE}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t zl;
        char *z = compress_with(src, n, cases[c].wbits, &zl);
        ck_assert_uint_lt(zl, n);
        char *out;
        size_t ol;
        ck_assert_int_eq(srv_inflate(cases[c].enc, z, zl, n, &out, &ol), 0);
        ck_assert_uint_eq(ol, n);
        ck_assert(!memcmp(out, src, n));
        ck_assert_int_eq(out[n], 0); /* NUL-terminated for the parsers */
        free(out);
        /* one byte under the decoded size: over the limit */
        ck_assert_int_eq(srv_inflate(cases[c].enc, z, zl, n - 1, &out, &ol), -2);
        ck_assert_ptr_null(out);
        /* truncated: not a complete stream */
        ck_assert_int_eq(srv_inflate(cases[c].enc, z, zl / 2, n, &out, &ol), -1);
        ck_assert_ptr_null(out);
        free(z);
    }
    free(src);
}
END_TEST

START_TEST(inflate_bomb_stops_at_limit) {
    const size_t big = 64u << 20; /* 64 MiB of zeros: ~64 KiB compressed */
    char *zeros = calloc(1, big);
    ck_assert_ptr_nonnull(zeros);
    size_t zl;
    char *z = compress_with(zeros, big, 31, &zl);
    free(zeros);
    ck_assert_uint_lt(zl, big / 500);
    char *out;
    size_t ol;
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, z, zl, 4096, &out, &ol), -2);
    ck_assert_ptr_null(out);
    ck_assert_uint_eq(ol, 0);
    free(z);
}
END_TEST

START_TEST(inflate_damaged) {
    char *src = sample(5000);
    size_t zl;
    char *z = compress_with(src, 5000, 31, &zl);
    char *out;
    size_t ol;
    /* not gzip at all, empty, a flipped byte in the data (CRC or data error), trailing bytes */
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, "hello world", 11, 1000, &out, &ol), -1);
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, "", 0, 1000, &out, &ol), -1);
    ck_assert_int_eq(srv_inflate(SRV_ENC_DEFLATE, "", 0, 1000, &out, &ol), -1);
    char *bad = malloc(zl + 2);
    memcpy(bad, z, zl);
    bad[zl / 2] ^= 0x55;
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, bad, zl, 10000, &out, &ol), -1);
    memcpy(bad, z, zl);
    bad[zl] = 'x';
    bad[zl + 1] = 'y';
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, bad, zl + 2, 10000, &out, &ol), -1);
    ck_assert_ptr_null(out);
    /* the identity and unknown codings are not inflated */
    ck_assert_int_eq(srv_inflate(SRV_ENC_IDENTITY, z, zl, 10000, &out, &ol), -1);
    free(bad);
    free(z);
    free(src);
}
END_TEST

START_TEST(inflate_gzip_members) {
    char *src = sample(3000);
    size_t l1, l2;
    char *a = compress_with(src, 1000, 31, &l1);
    char *b = compress_with(src + 1000, 2000, 31, &l2);
    char *both = malloc(l1 + l2);
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    char *out;
    size_t ol;
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, both, l1 + l2, 3000, &out, &ol), 0);
    ck_assert_uint_eq(ol, 3000);
    ck_assert(!memcmp(out, src, 3000));
    free(out);
    ck_assert_int_eq(srv_inflate(SRV_ENC_GZIP, both, l1 + l2, 2999, &out, &ol), -2);
    /* zlib streams do not chain: a second one is trailing data */
    char *c = compress_with(src, 1000, 15, &l1);
    char *d = compress_with(src, 1000, 15, &l2);
    memcpy(both, c, l1);
    memcpy(both + l1, d, l2);
    ck_assert_int_eq(srv_inflate(SRV_ENC_DEFLATE, both, l1 + l2, 3000, &out, &ol), -1);
    free(a), free(b), free(c), free(d), free(both), free(src);
}
END_TEST

START_TEST(compress_round_trip) {
    for (int e = 0; e < 2; e++) {
        const srv_encoding enc = e ? SRV_ENC_DEFLATE : SRV_ENC_GZIP;
        for (size_t n = 0; n <= 300000; n = n ? n * 7 : 1) {
            char *src = sample(n);
            char *z;
            size_t zl;
            ck_assert_int_eq(srv_compress(enc, src, n, &z, &zl), 0);
            if (enc == SRV_ENC_GZIP) {
                ck_assert(zl >= 18); /* gzip header + trailer */
                ck_assert_int_eq((unsigned char)z[0], 0x1f);
                ck_assert_int_eq((unsigned char)z[1], 0x8b);
            } else { /* the zlib format: CM 8, the header a multiple of 31 (RFC 1950) */
                ck_assert(zl >= 6);
                ck_assert_int_eq((unsigned char)z[0] & 0x0f, 8);
                ck_assert_int_eq((((unsigned char)z[0] << 8) | (unsigned char)z[1]) % 31, 0);
            }
            /* zlib's own inflate reads it back (wbits 15: zlib only; 31: gzip only) */
            char *back = malloc(n + 1);
            z_stream zs;
            memset(&zs, 0, sizeof zs);
            ck_assert_int_eq(inflateInit2(&zs, enc == SRV_ENC_GZIP ? 31 : 15), Z_OK);
            zs.next_in = (Bytef *)z;
            zs.avail_in = (uInt)zl;
            zs.next_out = (Bytef *)back;
            zs.avail_out = (uInt)n + 1;
            ck_assert_int_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
            ck_assert_uint_eq(zs.total_out, n);
            inflateEnd(&zs);
            ck_assert(!memcmp(back, src, n));
            char *out;
            size_t ol;
            ck_assert_int_eq(srv_inflate(enc, z, zl, n, &out, &ol), 0);
            ck_assert_uint_eq(ol, n);
            ck_assert(!memcmp(out, src, n));
            if (n > 10000) ck_assert_uint_lt(zl, n / 2);
            free(back);
            free(out);
            free(z);
            free(src);
        }
    }
    char *z;
    size_t zl;
    ck_assert_int_eq(srv_compress(SRV_ENC_IDENTITY, "x", 1, &z, &zl), -1);
    ck_assert_ptr_null(z);
}
END_TEST

Suite *encoding_suite(void) {
    Suite *s = suite_create("srv_encoding");
    TCase *tc = tcase_create("encoding");
    tcase_add_test(tc, parse_content_encoding);
    tcase_add_test(tc, parse_accept_encoding);
    tcase_add_test(tc, inflate_each_format);
    tcase_add_test(tc, inflate_bomb_stops_at_limit);
    tcase_add_test(tc, inflate_damaged);
    tcase_add_test(tc, inflate_gzip_members);
    tcase_add_test(tc, compress_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(encoding_suite)
