/* test_srv_multipart.c — api/multipart: finding the file part of a multipart/form-data body.
 * Well-formed bodies (one part, several parts, the part preference order, quoted boundaries,
 * preambles and trailing CRLF, binary content holding boundary prefixes) and malformed ones
 * (no boundary, no closing delimiter, truncated headers, huge header lines, empty body, LF-only
 * line ends, every truncation of a valid body) — rejected with a message, never read out of
 * bounds. Every body is copied into a heap buffer of exactly len + 1 bytes (the NUL the
 * contract promises) so that the sanitizer build catches a read past it. */
#include <stdlib.h>
#include <string.h>

#include "api/multipart.h"
#include "testutil.h"

#define CT "multipart/form-data; boundary=XyZ"

typedef struct mp_result {
    int rc;
    size_t off, n; /* where the part lies in the body, when rc == 0 */
    char err[128];
} mp_result;

/* Runs api_multipart_file on a private heap copy of body[0..len) and checks that a found part
 * lies inside the body. */
static mp_result mp_run(const char *ct, const char *body, size_t len) {
    char *b = malloc(len + 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, body, len);
    b[len] = 0;
    mp_result r = {0};
    const char *data = NULL;
    size_t dlen = 0;
    r.rc = api_multipart_file(ct, b, len, &data, &dlen, r.err, sizeof r.err);
    if (r.rc == 0) {
        ck_assert_ptr_nonnull(data);
        ck_assert(data >= b && data <= b + len);
        ck_assert_uint_le(dlen, (size_t)(b + len - data));
        r.off = (size_t)(data - b);
        r.n = dlen;
    } else {
        ck_assert(r.rc == -1 || r.rc == -2);
        ck_assert_uint_gt(strlen(r.err), 0);
    }
    free(b);
    return r;
}

/* Asserts that body (a C string) yields exactly the part `want` (len wn). */
static void expect_part(const char *ct, const char *body, const char *want, size_t wn) {
    size_t len = strlen(body);
    mp_result r = mp_run(ct, body, len);
    ck_assert_msg(r.rc == 0, "rejected: %s", r.err);
    ck_assert_uint_eq(r.n, wn);
    ck_assert(!memcmp(body + r.off, want, wn));
}

static void expect_reject(const char *ct, const char *body, size_t len) {
    mp_result r = mp_run(ct, body, len);
    ck_assert_msg(r.rc == -1, "accepted a bad body (part at %zu, %zu bytes)", r.off, r.n);
}

/* n parts of `part` (which starts with "--XyZ\r\n") then the closing delimiter; heap, the
 * caller frees it; *len is its length. */
static char *mp_repeat(const char *part, size_t n, size_t *len) {
    size_t pl = strlen(part), cap = n * pl + 16;
    char *b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++) memcpy(b + i * pl, part, pl);
    memcpy(b + n * pl, "--XyZ--\r\n", 10);
    *len = n * pl + 10;
    b[*len] = 0;
    return b;
}

/* ---- well-formed ---- */

START_TEST(one_part) {
    expect_part(CT,
                "--XyZ\r\n"
                "content-disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n"
                "\r\n"
                "PNGDATA\r\n"
                "--XyZ--\r\n",
                "PNGDATA", 7);
}
END_TEST

START_TEST(empty_part_content) {
    expect_part(CT,
                "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\r\n--XyZ--\r\n",
                "", 0);
}
END_TEST

/* Builds "--XyZ\r\nContent-Disposition: form-data; <disp>\r\n\r\n<content>\r\n" for each
 * part, then the closing "--XyZ--\r\n" (the caller frees it). */
typedef struct mp_part {
    const char *disp, *content;
} mp_part;

static char *mp_build(const mp_part *parts, int n) {
    size_t cap = 16;
    for (int i = 0; i < n; i++) cap += strlen(parts[i].disp) + strlen(parts[i].content) + 64;
    char *b = malloc(cap), *p = b;
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < n; i++)
        p += sprintf(p, "--XyZ\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n",
                     parts[i].disp, parts[i].content);
    strcpy(p, "--XyZ--\r\n");
    return b;
}

/* Preference: the part named image or file, else the first with a filename, else the first;
 * "filename" is never read as "name". */
START_TEST(part_preference) {
    static const struct {
        mp_part parts[3];
        const char *want;
    } c[] = {
        {{{"name=\"meta\"", "{\"k\":1}"},
          {"name=\"other\"; filename=\"x.bin\"", "OTHER"},
          {"name=\"file\"", "THEFILE"}},
         "THEFILE"},
        {{{"name=\"a\"", "A"}, {"name=image", "IMG"}, {"name=\"file\"", "F"}}, "IMG"},
        {{{"name=\"meta\"", "META"},
          {"name=\"upload\"; filename=\"x.bin\"", "UPLOAD"},
          {"name=\"b\"; filename=\"y.bin\"", "Y"}},
         "UPLOAD"},
        {{{"name=\"a\"", "AAA"}, {"name=\"b\"", "BBB"}, {"name=\"c\"", "CCC"}}, "AAA"},
        {{{"filename=\"image\"; name=\"x\"", "FIRST"},
          {"name=image", "SECOND"},
          {"name=\"z\"", "Z"}},
         "SECOND"},
        {{{"name=\"imagex\"", "X"}, {"name=\"myfile\"", "M"}, {"name=\"a\"; x=\"file\"", "Q"}},
         "X"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *body = mp_build(c[i].parts, 3);
        expect_part(CT, body, c[i].want, strlen(c[i].want));
        free(body);
    }
}
END_TEST

START_TEST(quoted_boundary) {
    const char *body = "--a b;c\r\n"
                       "Content-Disposition: form-data; name=\"file\"\r\n\r\n"
                       "Q\r\n"
                       "--a b;c--\r\n";
    expect_part("multipart/form-data; boundary=\"a b;c\"", body, "Q", 1);
    expect_part("multipart/form-data; charset=utf-8; BOUNDARY=\"a b;c\"; x=y", body, "Q", 1);
}
END_TEST

START_TEST(boundary_then_other_params) {
    expect_part("multipart/form-data; boundary=XyZ; charset=utf-8",
                "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nD\r\n--XyZ--",
                "D", 1);
}
END_TEST

/* Line-end variants: a preamble (with or without text) before the first delimiter, no CRLF
 * after the closing delimiter, an epilogue after it, CRLF inside the content. */
START_TEST(crlf_variants) {
    const char *part = "Content-Disposition: form-data; name=\"file\"\r\n\r\n";
    char body[512];
    snprintf(body, sizeof body, "\r\n--XyZ\r\n%sA\r\nB\r\n--XyZ--\r\n", part);
    expect_part(CT, body, "A\r\nB", 4);
    snprintf(body, sizeof body, "preamble text\r\n--XyZ\r\n%s\r\nAB\r\n\r\n--XyZ--", part);
    expect_part(CT, body, "\r\nAB\r\n", 6);
    snprintf(body, sizeof body, "--XyZ\r\n%sAB\r\n--XyZ--\r\nepilogue\r\n--XyZ\r\n", part);
    expect_part(CT, body, "AB", 2);
}
END_TEST

/* RFC 7578 requires CRLF: a body with bare LF line ends holds no part. */
START_TEST(lf_only_rejected) {
    const char *body = "--XyZ\nContent-Disposition: form-data; name=\"file\"\n\nD\n--XyZ--\n";
    expect_reject(CT, body, strlen(body));
}
END_TEST

/* Binary content with NULs, CR/LFs and every prefix of the delimiter: only the full
 * "\r\n--XyZ" ends the part. */
START_TEST(binary_content_with_boundary_prefixes) {
    static const char head[] = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                               "filename=\"w.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    static const char content[] = "\0\r\n\0\r\n-\r\n--\r\n--X\r\n--Xy\r\n--xyz\x00\xff"
                                  "--XyZ\r\n\r\n\r\n--XY\r\n-XyZ\r\n";
    static const char tail[] = "\r\n--XyZ--\r\n";
    size_t hn = sizeof head - 1, cn = sizeof content - 1, tn = sizeof tail - 1;
    char body[512];
    memcpy(body, head, hn);
    memcpy(body + hn, content, cn);
    memcpy(body + hn + cn, tail, tn);
    mp_result r = mp_run(CT, body, hn + cn + tn);
    ck_assert_msg(r.rc == 0, "rejected: %s", r.err);
    ck_assert_uint_eq(r.off, hn);
    ck_assert_uint_eq(r.n, cn);
    ck_assert(!memcmp(body + r.off, content, cn));
}
END_TEST

START_TEST(longest_boundary) {
    /* RFC 2046: at most 70 characters. */
    char bnd[71], ct[128], body[512];
    memset(bnd, 'b', 70);
    bnd[70] = 0;
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", bnd);
    snprintf(body, sizeof body, "--%s\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"
             "LONG\r\n--%s--\r\n", bnd, bnd);
    expect_part(ct, body, "LONG", 4);
}
END_TEST

/* ---- malformed ---- */

START_TEST(no_boundary) {
    const char *body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nD\r\n--XyZ--";
    size_t n = strlen(body);
    expect_reject(NULL, body, n);
    expect_reject("multipart/form-data", body, n);
    expect_reject("multipart/form-data; boundary=", body, n);
    expect_reject("multipart/form-data; boundary=\"\"", body, n);
    expect_reject("multipart/form-data; boundary=;x=y", body, n);
}
END_TEST

START_TEST(boundary_too_long) {
    char ct[256], body[512];
    char bnd[200];
    memset(bnd, 'b', sizeof bnd - 1);
    bnd[sizeof bnd - 1] = 0;
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", bnd);
    snprintf(body, sizeof body, "--%s\r\n\r\nD\r\n--%s--", bnd, bnd);
    expect_reject(ct, body, strlen(body));
}
END_TEST

START_TEST(empty_body) {
    expect_reject(CT, "", 0);
    expect_reject(CT, "--", 2);
    expect_reject(CT, "--XyZ--", 7);
    expect_reject(CT, "--XyZ--\r\n", 9);
    expect_reject(CT, "\r\n--XyZ--\r\n", 11);
}
END_TEST

START_TEST(wrong_boundary) {
    const char *body = "--Other\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nD\r\n"
                       "--Other--\r\n";
    expect_reject(CT, body, strlen(body));
}
END_TEST

START_TEST(missing_closing_delimiter) {
    const char *body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nDATA\r\n";
    expect_reject(CT, body, strlen(body));
    const char *body2 = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nDATA\r\n--Xy";
    expect_reject(CT, body2, strlen(body2));
}
END_TEST

START_TEST(truncated_headers) {
    const char *bodies[] = {
        "--XyZ\r\n",
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"",
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n",
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r",
        "--XyZ\r\nContent-Disposition: form-data; name=\"fi",
        "--XyZ\r\nContent-Disposition: form-data; name=",
        "--XyZ\r\nContent-Disposition:",
        "--XyZ junk\r\n\r\nD\r\n--XyZ--",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        expect_reject(CT, bodies[i], strlen(bodies[i]));
}
END_TEST

/* A 1 MiB header line (a huge file name, then a huge unknown header) neither crashes nor
 * overflows the parser's name buffers; the part is still found. */
START_TEST(huge_header_lines) {
    size_t big = 1 << 20;
    const char *pre = "--XyZ\r\nContent-Disposition: form-data; name=\"";
    const char *mid = "\"; filename=\"";
    const char *post = "\"\r\nX-Pad: ";
    const char *end = "\r\n\r\nBIG\r\n--XyZ--\r\n";
    size_t cap = strlen(pre) + 3 * big + strlen(mid) + strlen(post) + strlen(end) + 1;
    char *body = malloc(cap), *p = body;
    ck_assert_ptr_nonnull(body);
    p = stpcpy(p, pre);
    memset(p, 'n', big), p += big;
    p = stpcpy(p, mid);
    memset(p, 'f', big), p += big;
    p = stpcpy(p, post);
    memset(p, 'x', big), p += big;
    p = stpcpy(p, end);
    expect_part(CT, body, "BIG", 3);
    /* Same with the blank line missing: rejected. */
    char *blank = strstr(body, "\r\n\r\nBIG");
    memmove(blank + 2, blank + 4, strlen(blank + 4) + 1);
    expect_reject(CT, body, strlen(body));
    free(body);
}
END_TEST

/* Every prefix of a valid body either is rejected or yields exactly the part of the whole body
 * (a truncated part is never returned), and never reads past the prefix. */
START_TEST(every_truncation) {
    static const char body[] = "preamble\r\n--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"meta\"\r\n\r\n"
                               "M\r\n"
                               "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"image\"; filename=\"i.png\"\r\n"
                               "Content-Type: image/png\r\n\r\n"
                               "\x89PNG\r\n\x1a\n\0\r\n--X\r\n"
                               "\r\n--XyZ--\r\n";
    size_t len = sizeof body - 1;
    mp_result full = mp_run(CT, body, len);
    ck_assert_int_eq(full.rc, 0);
    ck_assert_uint_eq(full.n, 16);
    int accepted = 0;
    for (size_t n = 0; n < len; n++) {
        mp_result r = mp_run(CT, body, n);
        if (r.rc) continue;
        accepted++;
        /* Before the image part is complete, the first complete part ("M") may be returned. */
        ck_assert_msg((r.off == full.off && r.n == full.n) || (r.n == 1 && body[r.off] == 'M'),
                      "prefix %zu: part at %zu, %zu bytes", n, r.off, r.n);
        if (n >= full.off + full.n + 7) ck_assert_uint_eq(r.off, full.off); /* "\r\n--XyZ" */
    }
    ck_assert_int_gt(accepted, 0);
}
END_TEST

/* ---- work done (issue 11, defect 1) ---- */

/* Many parts (with and without a Content-Disposition header, the case that was quadratic: the
 * header was searched for up to the end of the body, once per part): the spans searched add up
 * to a small multiple of the body, whatever the number of parts. */
START_TEST(linear_in_parts) {
    static const char *const parts[] = {
        "--XyZ\r\nContent-Type: text/plain\r\n\r\nabcdefgh\r\n",
        "--XyZ\r\n\r\nx\r\n",
        "--XyZ\r\nContent-Disposition: form-data; name=\"m\"\r\n\r\n0123456789\r\n",
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t prev = 0;
        for (size_t n = 1000; n <= 64000; n *= 4) {
            size_t len;
            char *body = mp_repeat(parts[i], n, &len);
            const char *data = NULL;
            size_t dlen = 0;
            char err[128];
            ck_assert_int_eq(api_multipart_file(CT, body, len, &data, &dlen, err, sizeof err), 0);
            ck_assert_ptr_eq(data, strstr(body, "\r\n\r\n") + 4); /* the first part */
            size_t scanned = api_multipart_scanned();
            ck_assert_msg(scanned >= len / 2 && scanned <= 2 * len,
                          "part kind %zu, %zu parts: %zu bytes searched in a %zu-byte body", i,
                          n, scanned, len);
            if (prev) ck_assert_uint_le(scanned, 5 * prev); /* 4x the parts: ~4x the work */
            prev = scanned;
            free(body);
        }
    }
}
END_TEST

/* The file field given twice is refused (-2) with a message naming it; other repeated fields
 * are not the file and stay allowed. */
START_TEST(repeated_file_field) {
    static const mp_part twice_image[] = {{"name=\"image\"; filename=\"a.png\"", "A"},
                                          {"name=\"image\"; filename=\"b.png\"", "B"}};
    static const mp_part twice_file[] = {{"name=\"file\"", "A"}, {"name=\"x\"", "X"},
                                         {"name=\"file\"", "B"}};
    static const mp_part twice_other[] = {{"name=\"meta\"", "1"}, {"name=\"meta\"", "2"},
                                          {"name=\"image\"", "IMG"}};
    const struct {
        const mp_part *p;
        int n;
        const char *field;
    } c[] = {{twice_image, 2, "'image'"}, {twice_file, 3, "'file'"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *body = mp_build(c[i].p, c[i].n);
        mp_result r = mp_run(CT, body, strlen(body));
        ck_assert_int_eq(r.rc, -2);
        ck_assert_msg(strstr(r.err, c[i].field), "message '%s' does not name %s", r.err,
                      c[i].field);
        free(body);
    }
    char *body = mp_build(twice_other, 3);
    expect_part(CT, body, "IMG", 3);
    free(body);
}
END_TEST

Suite *multipart_suite(void) {
    Suite *s = suite_create("srv_multipart");
    TCase *ok = tcase_create("well_formed");
    tcase_add_test(ok, one_part);
    tcase_add_test(ok, empty_part_content);
    tcase_add_test(ok, part_preference);
    tcase_add_test(ok, quoted_boundary);
    tcase_add_test(ok, boundary_then_other_params);
    tcase_add_test(ok, crlf_variants);
    tcase_add_test(ok, binary_content_with_boundary_prefixes);
    tcase_add_test(ok, longest_boundary);
    suite_add_tcase(s, ok);
    TCase *bad = tcase_create("malformed");
    tcase_add_test(bad, lf_only_rejected);
    tcase_add_test(bad, no_boundary);
    tcase_add_test(bad, boundary_too_long);
    tcase_add_test(bad, empty_body);
    tcase_add_test(bad, wrong_boundary);
    tcase_add_test(bad, missing_closing_delimiter);
    tcase_add_test(bad, truncated_headers);
    tcase_add_test(bad, huge_header_lines);
    tcase_add_test(bad, every_truncation);
    suite_add_tcase(s, bad);
    TCase *work = tcase_create("work");
    tcase_add_test(work, linear_in_parts);
    tcase_add_test(work, repeated_file_field);
    suite_add_tcase(s, work);
    return s;
}

TU_MAIN(multipart_suite)
