/* test_image.c — engine/io/image: PNG and JPEG decoding (round trips through images written here
 * with libpng / libjpeg directly, every colour type the decoder converts), truncated and damaged
 * streams, decompression-bomb headers refused before allocation, bilinear resizing against an
 * independent reference, preprocessing, and image-folder data sets. */
#include <ftw.h>
#include <stdio.h>
#include <jpeglib.h>
#include <math.h>
#include <png.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/image.h"
#include "testutil.h"

/* ---- writers (libpng / libjpeg directly, independent of the code under test) ---- */

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void mb_write(png_structp png, png_bytep d, size_t n) {
    membuf *b = png_get_io_ptr(png);
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void mb_flush(png_structp png) { (void)png; }

/* PNG of w x h with libpng colour type `ct` and bit depth `depth`; rows given as raw bytes in
 * that format (rowbytes each). For palettes, a 256-entry grey ramp palette is written. */
static membuf write_png(int w, int h, int ct, int depth, const uint8_t *raw, size_t rowbytes,
                        int interlace) {
    membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    ck_assert(png && info);
    if (setjmp(png_jmpbuf(png))) ck_abort_msg("libpng write failed");
    png_set_write_fn(png, &b, mb_write, mb_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ct,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (ct == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[256];
        for (int i = 0; i < 256; i++) pal[i].red = pal[i].green = pal[i].blue = (png_byte)(255 - i);
        png_set_PLTE(png, info, pal, 1 << depth);
    }
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) png_write_row(png, raw + (size_t)y * rowbytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return b;
}

static membuf write_jpeg(int w, int h, int c, const uint8_t *px, int quality) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long outsize = 0;
    jpeg_mem_dest(&ci, &out, &outsize);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * (size_t)w * (size_t)c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    membuf b = {out, outsize, outsize};
    return b;
}

static uint8_t *pattern(int w, int h, int c, unsigned seed) {
    uint8_t *p = malloc((size_t)w * (size_t)h * (size_t)c);
    ck_assert_ptr_nonnull(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    (uint8_t)((x * 7 + y * 13 + k * 60 + seed) & 0xff);
    return p;
}

/* A smooth pattern (JPEG keeps it within a few levels). */
static uint8_t *smooth(int w, int h, int c) {
    uint8_t *p = malloc((size_t)w * (size_t)h * (size_t)c);
    ck_assert_ptr_nonnull(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    (uint8_t)(40 + (x * 150) / w + (y * 50) / h + k * 10);
    return p;
}

/* Decodes b, asserting success and (when w > 0) the size and channels. */
static dyn_image decode_ok(const membuf *b, int w, int h, int c) {
    dyn_image im;
    dyn_err err = {0};
    ck_assert_msg(dyn_image_decode(b->p, b->n, NULL, &im, &err) == 0, "%s", err.msg);
    if (w > 0) {
        ck_assert_int_eq(im.w, w);
        ck_assert_int_eq(im.h, h);
    }
    ck_assert_int_eq(im.c, c);
    return im;
}

/* ---- PNG ---- */

START_TEST(png_roundtrip_gray_rgb) {
    for (int c = 1; c <= 3; c += 2) {
        for (int interlace = 0; interlace <= 1; interlace++) {
            int w = 37, h = 23;
            uint8_t *px = pattern(w, h, c, 3);
            membuf b = write_png(w, h, c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, 8, px,
                                 (size_t)w * (size_t)c, interlace);
            ck_assert_int_eq(dyn_image_detect(b.p, b.n), DYN_IMAGE_PNG);
            dyn_image im = decode_ok(&b, w, h, c);
            ck_assert_mem_eq(im.data, px, (size_t)w * (size_t)h * (size_t)c);
            dyn_image_free(&im);
            free(b.p);
            free(px);
        }
    }
}
END_TEST

START_TEST(png_color_types_converted) {
    int w = 9, h = 5;
    dyn_image im;
    /* gray + alpha: alpha dropped */
    uint8_t ga[9 * 5 * 2], g[9 * 5];
    for (int i = 0; i < w * h; i++) ga[2 * i] = g[i] = (uint8_t)(i * 5), ga[2 * i + 1] = (uint8_t)i;
    membuf b = write_png(w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, ga, (size_t)w * 2, 0);
    im = decode_ok(&b, 0, 0, 1);
    ck_assert_mem_eq(im.data, g, sizeof g);
    dyn_image_free(&im);
    free(b.p);
    /* RGBA: alpha dropped */
    uint8_t rgba[9 * 5 * 4], rgb[9 * 5 * 3];
    for (int i = 0; i < w * h; i++)
        for (int k = 0; k < 4; k++) {
            rgba[4 * i + k] = (uint8_t)(i * 3 + k * 50);
            if (k < 3) rgb[3 * i + k] = rgba[4 * i + k];
        }
    b = write_png(w, h, PNG_COLOR_TYPE_RGB_ALPHA, 8, rgba, (size_t)w * 4, 0);
    im = decode_ok(&b, 0, 0, 3);
    ck_assert_mem_eq(im.data, rgb, sizeof rgb);
    dyn_image_free(&im);
    free(b.p);
    /* 16-bit grey: high byte kept (libpng rounds: v16 = v8 * 257 maps back exactly) */
    uint8_t g16[9 * 5 * 2];
    for (int i = 0; i < w * h; i++) g16[2 * i] = g16[2 * i + 1] = g[i];
    b = write_png(w, h, PNG_COLOR_TYPE_GRAY, 16, g16, (size_t)w * 2, 0);
    im = decode_ok(&b, 0, 0, 1);
    ck_assert_mem_eq(im.data, g, sizeof g);
    dyn_image_free(&im);
    free(b.p);
    /* palette (8-bit indices into a 255-i grey ramp) → RGB */
    b = write_png(w, h, PNG_COLOR_TYPE_PALETTE, 8, g, (size_t)w, 0);
    im = decode_ok(&b, 0, 0, 3);
    for (int i = 0; i < w * h; i++) ck_assert_uint_eq(im.data[3 * i + 1], 255u - g[i]);
    dyn_image_free(&im);
    free(b.p);
    /* 1-bit grey expanded to 0 / 255 */
    uint8_t bits[5 * 2] = {0};
    for (int y = 0; y < h; y++) bits[y * 2] = 0xAA; /* 1,0,1,0,... */
    b = write_png(w, h, PNG_COLOR_TYPE_GRAY, 1, bits, 2, 0);
    im = decode_ok(&b, 0, 0, 1);
    ck_assert_uint_eq(im.data[0], 255);
    ck_assert_uint_eq(im.data[1], 0);
    dyn_image_free(&im);
    free(b.p);
}
END_TEST

START_TEST(png_truncated_every_prefix) {
    int w = 16, h = 16;
    uint8_t *px = pattern(w, h, 1, 9);
    membuf b = write_png(w, h, PNG_COLOR_TYPE_GRAY, 8, px, (size_t)w, 0);
    /* IEND is the last 12 bytes: cutting only those still decodes every pixel, which is fine; any
     * cut into the image data must fail. */
    for (size_t n = 0; n + 12 < b.n; n++) {
        dyn_image im;
        dyn_err err = {0};
        int rc = dyn_image_decode(b.p, n, NULL, &im, &err);
        ck_assert_msg(rc != 0, "prefix of %zu / %zu bytes decoded", n, b.n);
        ck_assert_ptr_null(im.data);
        ck_assert(rc == DYN_EFORMAT || (n < 8 && rc == DYN_EUNSUP));
        ck_assert(strlen(err.msg) > 0);
    }
    free(b.p);
    free(px);
}
END_TEST

START_TEST(png_corrupt_data) {
    int w = 32, h = 32;
    uint8_t *px = pattern(w, h, 3, 1);
    membuf b = write_png(w, h, PNG_COLOR_TYPE_RGB, 8, px, (size_t)w * 3, 0);
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    for (int t = 0; t < 200; t++) { /* random byte flips past the signature: error or image */
        uint8_t *c = malloc(b.n);
        memcpy(c, b.p, b.n);
        for (int k = 0; k < 4; k++) c[8 + dyn_rng_below(&r, (uint32_t)(b.n - 8))] ^= 0x5a;
        dyn_image im;
        dyn_err err = {0};
        int rc = dyn_image_decode(c, b.n, NULL, &im, &err);
        if (rc == 0) {
            ck_assert(im.w > 0 && im.h > 0);
            dyn_image_free(&im);
        } else {
            ck_assert_ptr_null(im.data);
        }
        free(c);
    }
    free(b.p);
    free(px);
}
END_TEST

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A PNG signature + IHDR claiming w x h (valid CRC) + nothing else. */
static size_t bomb_png(uint8_t *out, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out, sig, 8);
    put_be32(out + 8, 13);
    memcpy(out + 12, "IHDR", 4);
    put_be32(out + 16, w);
    put_be32(out + 20, h);
    out[24] = 8;
    out[25] = 0;
    out[26] = out[27] = out[28] = 0;
    put_be32(out + 29, (uint32_t)crc32(0, out + 12, 17));
    return 33;
}

START_TEST(png_bomb_header_refused) {
    uint8_t buf[64];
    size_t n = bomb_png(buf, 100000, 100000);
    dyn_image im;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_image_decode(buf, n, NULL, &im, &err), DYN_ENOMEM);
    ck_assert_ptr_nonnull(strstr(err.msg, "100000x100000"));
    /* within the side limits but over the pixel limit */
    dyn_image_limits lim = {.max_width = 5000, .max_height = 5000, .max_pixels = 1000000};
    n = bomb_png(buf, 4000, 4000);
    ck_assert_int_eq(dyn_image_decode(buf, n, &lim, &im, &err), DYN_ENOMEM);
    ck_assert_ptr_nonnull(strstr(err.msg, "pixels"));
    /* within limits: the header passes, the missing data is a format error */
    n = bomb_png(buf, 100, 100);
    ck_assert_int_eq(dyn_image_decode(buf, n, &lim, &im, &err), DYN_EFORMAT);
    /* byte limit */
    lim.max_bytes = 10;
    ck_assert_int_eq(dyn_image_decode(buf, n, &lim, &im, &err), DYN_ENOMEM);
}
END_TEST

START_TEST(not_an_image) {
    const char *s = "GIF89a........";
    dyn_image im;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_image_decode(s, strlen(s), NULL, &im, &err), DYN_EUNSUP);
    ck_assert_int_eq(dyn_image_decode(s, 0, NULL, &im, &err), DYN_EUNSUP);
}
END_TEST

/* ---- JPEG ---- */

static double mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] - b[i]);
    return s / (double)n;
}

START_TEST(jpeg_roundtrip) {
    for (int c = 1; c <= 3; c += 2) {
        int w = 40, h = 24;
        uint8_t *px = smooth(w, h, c);
        membuf b = write_jpeg(w, h, c, px, 95);
        ck_assert_int_eq(dyn_image_detect(b.p, b.n), DYN_IMAGE_JPEG);
        dyn_image im = decode_ok(&b, w, h, c);
        double d = mean_abs_diff(im.data, px, (size_t)w * (size_t)h * (size_t)c);
        ck_assert_msg(d < 2.0, "JPEG round trip differs by %.2f levels on average", d);
        dyn_image_free(&im);
        free(b.p);
        free(px);
    }
}
END_TEST

START_TEST(jpeg_truncated) {
    int w = 64, h = 64;
    uint8_t *px = pattern(w, h, 3, 5);
    membuf b = write_jpeg(w, h, 3, px, 90);
    /* every prefix that cuts into the scan data (the last 2 bytes are the EOI marker) */
    for (size_t n = 0; n + 2 < b.n; n += (n < 700 ? 1 : 17)) {
        dyn_image im;
        dyn_err err = {0};
        int rc = dyn_image_decode(b.p, n, NULL, &im, &err);
        ck_assert_msg(rc != 0, "JPEG prefix of %zu / %zu bytes decoded", n, b.n);
        ck_assert_ptr_null(im.data);
    }
    free(b.p);
    free(px);
}
END_TEST

/* Issue 11, defect 5: a stream cut inside the scan data with an end-of-image marker appended
 * (what a truncated upload repaired by a careless tool looks like). libjpeg warns (corrupt data,
 * premature end of a data segment) and pads with grey; every such prefix must be refused, not
 * decoded. */
START_TEST(jpeg_truncated_with_eoi) {
    int w = 64, h = 64;
    uint8_t *px = pattern(w, h, 3, 5);
    membuf b = write_jpeg(w, h, 3, px, 90);
    size_t sos = 2; /* find SOS (FF DA); its segment length follows */
    for (; sos + 4 < b.n; sos++)
        if (b.p[sos] == 0xFF && b.p[sos + 1] == 0xDA) break;
    ck_assert(sos + 4 < b.n);
    size_t scan = sos + 2 + ((size_t)b.p[sos + 2] << 8 | b.p[sos + 3]);
    ck_assert_uint_lt(scan + 64, b.n - 2);
    uint8_t *t = malloc(b.n + 2);
    ck_assert_ptr_nonnull(t);
    int tried = 0;
    for (size_t n = scan; n + 8 < b.n - 2; n += (n < scan + 300 ? 1 : 13)) {
        memcpy(t, b.p, n);
        if (t[n - 1] == 0xFF) continue; /* FF FF D9 is still a valid end; not a cut */
        t[n] = 0xFF, t[n + 1] = 0xD9;
        dyn_image im;
        dyn_err err = {0};
        int rc = dyn_image_decode(t, n + 2, NULL, &im, &err);
        ck_assert_msg(rc == DYN_EFORMAT, "%zu of %zu bytes + EOI: rc %d (%s)", n, b.n, rc,
                      err.msg);
        ck_assert_ptr_null(im.data);
        tried++;
    }
    ck_assert_int_gt(tried, 300);
    free(t);
    free(b.p);
    free(px);
}
END_TEST

START_TEST(jpeg_bomb_header_refused) {
    int w = 16, h = 16;
    uint8_t *px = pattern(w, h, 1, 5);
    membuf b = write_jpeg(w, h, 1, px, 90);
    /* find SOF0 (FF C0): length(2) precision(1) height(2) width(2) */
    size_t i = 2;
    for (; i + 9 < b.n; i++)
        if (b.p[i] == 0xFF && b.p[i + 1] == 0xC0) break;
    ck_assert(i + 9 < b.n);
    b.p[i + 5] = 0xEA, b.p[i + 6] = 0x60; /* 60000 */
    b.p[i + 7] = 0xEA, b.p[i + 8] = 0x60;
    dyn_image im;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_image_decode(b.p, b.n, NULL, &im, &err), DYN_ENOMEM);
    ck_assert_ptr_nonnull(strstr(err.msg, "60000x60000"));
    free(b.p);
    free(px);
}
END_TEST

/* ---- resize ---- */

/* Independent 2-D reference: out(y, x) = sum_ij t(i; y) t(j; x) src(i, j) / sums, with the tent
 * t(j; x) = max(0, 1 - |j + 0.5 - (x + 0.5) s| / max(s, 1)) over in-range j, in double. */
static double ref_weight(int j, int o, double s) {
    double sup = s > 1 ? s : 1;
    double t = 1 - fabs((j + 0.5 - (o + 0.5) * s) / sup);
    return t > 0 ? t : 0;
}

static void ref_resize(const dyn_image *im, int w, int h, double *out) {
    double sx = (double)im->w / w, sy = (double)im->h / h;
    for (int k = 0; k < im->c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0, ws = 0;
                for (int i = 0; i < im->h; i++) {
                    double wy = ref_weight(i, y, sy);
                    if (wy == 0) continue;
                    for (int j = 0; j < im->w; j++) {
                        double wx = ref_weight(j, x, sx);
                        acc += wy * wx * im->data[((size_t)i * (size_t)im->w + (size_t)j) * (size_t)im->c + (size_t)k];
                        ws += wy * wx;
                    }
                }
                out[((size_t)k * (size_t)h + (size_t)y) * (size_t)w + (size_t)x] = acc / ws;
            }
}

START_TEST(resize_known_values) {
    /* 2 pixels [0, 255] upscaled to 4: plain bilinear, align_corners = false */
    uint8_t d[2] = {0, 255};
    dyn_image im = {2, 1, 1, d};
    float out[4];
    dyn_err err = {0};
    ck_assert_int_eq(dyn_image_resize_chw(&im, 4, 1, out, &err), 0);
    ck_assert_float_eq_tol(out[0], 0.0f, 1e-4f);
    ck_assert_float_eq_tol(out[1], 63.75f, 1e-4f);
    ck_assert_float_eq_tol(out[2], 191.25f, 1e-4f);
    ck_assert_float_eq_tol(out[3], 255.0f, 1e-4f);
    /* identity size keeps values */
    uint8_t e[6] = {1, 2, 3, 4, 5, 6};
    dyn_image im2 = {3, 2, 1, e};
    float o2[6];
    ck_assert_int_eq(dyn_image_resize_chw(&im2, 3, 2, o2, &err), 0);
    for (int i = 0; i < 6; i++) ck_assert_float_eq_tol(o2[i], (float)e[i], 1e-5f);
    /* constant image stays constant at any scale */
    uint8_t *cst = malloc(50 * 30);
    memset(cst, 77, 50 * 30);
    dyn_image im3 = {50, 30, 1, cst};
    float o3[7 * 11];
    ck_assert_int_eq(dyn_image_resize_chw(&im3, 7, 11, o3, &err), 0);
    for (int i = 0; i < 77; i++) ck_assert_float_eq_tol(o3[i], 77.0f, 1e-3f);
    free(cst);
    ck_assert_int_eq(dyn_image_resize_chw(&im3, 0, 11, o3, &err), DYN_EINVAL);
}
END_TEST

START_TEST(resize_matches_reference) {
    static const int sizes[][4] = {{28, 28, 56, 56}, {280, 200, 28, 28}, {13, 17, 28, 28},
                                   {100, 30, 28, 28}, {5, 5, 3, 9}};
    for (size_t t = 0; t < DYN_ARRAY_LEN(sizes); t++) {
        for (int c = 1; c <= 3; c += 2) {
            int sw = sizes[t][0], sh = sizes[t][1], w = sizes[t][2], h = sizes[t][3];
            uint8_t *px = pattern(sw, sh, c, (unsigned)t);
            dyn_image im = {sw, sh, c, px};
            float *out = malloc(sizeof(float) * (size_t)(c * w * h));
            double *ref = malloc(sizeof(double) * (size_t)(c * w * h));
            dyn_err err = {0};
            ck_assert_int_eq(dyn_image_resize_chw(&im, w, h, out, &err), 0);
            ref_resize(&im, w, h, ref);
            for (int i = 0; i < c * w * h; i++)
                ck_assert_msg(fabs(out[i] - ref[i]) < 1e-2, "%dx%d->%dx%d c%d [%d]: %f vs %f", sw,
                              sh, w, h, c, i, (double)out[i], ref[i]);
            free(out);
            free(ref);
            free(px);
        }
    }
}
END_TEST

/* ---- preprocessing ---- */

START_TEST(preprocess_image_equals_u8) {
    json_t *pp = json_pack("{s:i,s:i,s:i,s:[f],s:[f],s:f,s:s}", "channels", 1, "height", 28,
                           "width", 28, "mean", 0.1307, "std", 0.3081, "scale", 255.0, "resize",
                           "bilinear");
    dyn_shape in = {3, {1, 28, 28}};
    dyn_preprocess p;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_preprocess_parse(pp, &in, &p, &err), 0);
    uint8_t *px = pattern(28, 28, 1, 4);
    dyn_image im = {28, 28, 1, px};
    float a[784], b[784];
    ck_assert_int_eq(dyn_image_to_input(&im, &p, a, &err), 0);
    dyn_preprocess_u8(&p, px, 784, b);
    ck_assert_mem_eq(a, b, sizeof a); /* bit-identical */
    ck_assert_float_eq_tol(b[0], (px[0] / 255.0f - 0.1307f) / 0.3081f, 1e-5f);
    /* an RGB image is converted to grey, a larger one resized */
    uint8_t *rgb = pattern(56, 56, 3, 1);
    dyn_image im2 = {56, 56, 3, rgb};
    ck_assert_int_eq(dyn_image_to_input(&im2, &p, a, &err), 0);
    for (int i = 0; i < 784; i++) ck_assert(isfinite(a[i]));
    free(rgb);
    free(px);
    /* metadata that does not fit the model */
    dyn_shape in3 = {3, {3, 28, 28}};
    ck_assert_int_eq(dyn_preprocess_parse(pp, &in3, &p, &err), DYN_EINVAL);
    json_object_set_new(pp, "resize", json_string("lanczos"));
    ck_assert_int_eq(dyn_preprocess_parse(pp, &in, &p, &err), DYN_EUNSUP);
    json_object_set_new(pp, "resize", json_string("bilinear"));
    json_object_set_new(pp, "std", json_pack("[f]", 0.0));
    ck_assert_int_eq(dyn_preprocess_parse(pp, &in, &p, &err), DYN_EINVAL);
    json_decref(pp);
    ck_assert_int_eq(dyn_preprocess_parse(NULL, &in, &p, &err), 0);
    ck_assert_float_eq(p.scale, 255.0f);
}
END_TEST

/* ---- image folders ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

START_TEST(imgfolder_load) {
    char root[] = "/tmp/dynd_test_image_XXXXXX", path[256];
    ck_assert_ptr_nonnull(mkdtemp(root));
    const char *classes[] = {"zebra", "ant", "moth"};
    int counts[] = {2, 3, 1};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", root, classes[k]);
        ck_assert_int_eq(mkdir(path, 0755), 0);
        for (int i = 0; i < counts[k]; i++) {
            uint8_t *px = pattern(28, 28, 1, (unsigned)(k * 10 + i));
            membuf b = i % 2 ? write_jpeg(28, 28, 1, px, 100)
                             : write_png(28, 28, PNG_COLOR_TYPE_GRAY, 8, px, 28, 0);
            snprintf(path, sizeof path, "%s/%s/img%d.%s", root, classes[k], i, i % 2 ? "jpg" : "png");
            write_file(path, b.p, b.n);
            free(b.p);
            free(px);
        }
    }
    snprintf(path, sizeof path, "%s/ant/README.txt", root);
    write_file(path, "skip me", 7);
    dyn_dataset ds;
    char **names;
    int n;
    dyn_err err = {0};
    ck_assert_msg(dyn_imgfolder_load(root, 1, 28, 28, &ds, &names, &n, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(names[0], "ant");
    ck_assert_str_eq(names[1], "moth");
    ck_assert_str_eq(names[2], "zebra");
    ck_assert_int_eq(ds.n, 6);
    ck_assert_int_eq(ds.nclasses, 3);
    ck_assert_int_eq(ds.labels[0], 0); /* ant: 3 */
    ck_assert_int_eq(ds.labels[3], 1); /* moth: 1 */
    ck_assert_int_eq(ds.labels[5], 2); /* zebra: 2 */
    uint8_t *px0 = pattern(28, 28, 1, 10); /* ant/img0.png is exact */
    ck_assert_mem_eq(ds.pixels, px0, 784);
    free(px0);
    dyn_dataset_free(&ds);
    dyn_imgfolder_names_free(names, n);
    /* resized to 14x14 RGB */
    ck_assert_int_eq(dyn_imgfolder_load(root, 3, 14, 14, &ds, &names, &n, &err), 0);
    ck_assert_int_eq(ds.c, 3);
    ck_assert_int_eq(ds.h, 14);
    dyn_dataset_free(&ds);
    dyn_imgfolder_names_free(names, n);
    /* a damaged image is an error naming the file */
    snprintf(path, sizeof path, "%s/moth/bad.png", root);
    write_file(path, "\x89PNG\r\n\x1a\nxx", 10);
    ck_assert_int_ne(dyn_imgfolder_load(root, 1, 28, 28, &ds, &names, &n, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad.png"));
    ck_assert_ptr_null(names);
    ck_assert_ptr_null(ds.pixels);
    /* missing folder */
    ck_assert_int_eq(dyn_imgfolder_load("/nonexistent/dir", 1, 28, 28, &ds, &names, &n, &err), DYN_EIO);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
END_TEST

static Suite *image_suite(void) {
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("image");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, png_roundtrip_gray_rgb);
    tcase_add_test(tc, png_color_types_converted);
    tcase_add_test(tc, png_truncated_every_prefix);
    tcase_add_test(tc, png_corrupt_data);
    tcase_add_test(tc, png_bomb_header_refused);
    tcase_add_test(tc, not_an_image);
    tcase_add_test(tc, jpeg_roundtrip);
    tcase_add_test(tc, jpeg_truncated);
    tcase_add_test(tc, jpeg_truncated_with_eoi);
    tcase_add_test(tc, jpeg_bomb_header_refused);
    tcase_add_test(tc, resize_known_values);
    tcase_add_test(tc, resize_matches_reference);
    tcase_add_test(tc, preprocess_image_equals_u8);
    tcase_add_test(tc, imgfolder_load);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(image_suite)
