/* test_pp.c — the model's input pipeline (engine/io/image.h "preprocess"; issue 9): every
 * geometric step (pad, center crop, shorter-side resize, stretch, letterbox, nearest), colour
 * (gray, rgb, bgr), per-channel normalization, NHWC, the original schema, errors; data sets
 * through the pipeline (dyn_dataset_preprocess, dyn_dataset_load_for_model on an image folder,
 * per-channel views); and the comparison with torchvision on real images.
 *
 * The torchvision comparison reads tests/fixtures/pp/manifest.json (written by
 * tests/fixtures/make_pp_fixtures.py with Debian's python3-torchvision; the outputs are
 * committed). Each case decodes the image with dynd's decoder, runs the case's preprocess
 * object through dyn_image_to_input and compares with torchvision's tensor. Tolerance: the
 * 8-bit resize replicates PIL's (same 22-bit fixed-point weights, same rounding after each
 * pass) and the normalization is the same float32 arithmetic as ToTensor + Normalize, so PNG
 * cases must agree to 1e-6 (float printing of mean/std through JSON); for JPEG cases the
 * manifest allows 1 level (two libjpeg builds may differ by ±1 in IDCT / upsampling), i.e.
 * 1 / 255 / min(std) + 1e-6. The largest difference of each case is printed.
 */
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "io/dataset.h"
#include "io/image.h"
#include "testutil.h"

#define PP_DIR "tests/fixtures/pp/"

static json_t *J(const char *text) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, je.text);
    return j;
}

/* Parses text for input shape {a, b, c}; returns the code, pp filled. */
static int parse3(const char *text, int a, int b, int c, dyn_preprocess *pp, dyn_err *err) {
    json_t *j = text ? J(text) : NULL;
    dyn_shape in = {3, {a, b, c}};
    int rc = dyn_preprocess_parse(j, &in, pp, err);
    json_decref(j);
    return rc;
}

/* An image whose pixel (x, y, k) is (x + 10 y + 100 k) & 255. */
static dyn_image ramp(int w, int h, int c) {
    dyn_image im = {w, h, c, malloc((size_t)w * (size_t)h * (size_t)c)};
    ck_assert_ptr_nonnull(im.data);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                im.data[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    (uint8_t)((x + 10 * y + 100 * k) & 255);
    return im;
}

static uint8_t px(const dyn_image *im, int x, int y, int k) {
    return im->data[((size_t)y * (size_t)im->w + (size_t)x) * (size_t)im->c + (size_t)k];
}

START_TEST(pp_pad) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* [left, top, right, bottom] with a fill: 4x3 → 8x9 */
    ck_assert_msg(parse3("{\"steps\": [{\"pad\": [1, 2, 3, 4], \"fill\": 9}]}", 1, 9, 8, &pp,
                         &err) == 0, "%s", err.msg);
    ck_assert_int_eq(pp.nsteps, 1);
    dyn_image im = ramp(4, 3, 1), out;
    ck_assert_msg(dyn_preprocess_image(&im, &pp, &out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(out.w, 8);
    ck_assert_int_eq(out.h, 9);
    ck_assert_int_eq(px(&out, 0, 0, 0), 9);
    ck_assert_int_eq(px(&out, 1, 2, 0), px(&im, 0, 0, 0));
    ck_assert_int_eq(px(&out, 4, 4, 0), px(&im, 3, 2, 0));
    ck_assert_int_eq(px(&out, 5, 4, 0), 9);
    ck_assert_int_eq(px(&out, 4, 5, 0), 9);
    dyn_image_free(&out);
    /* P and [lr, tb] forms, default fill 0: MNIST's Pad(2) */
    ck_assert_int_eq(parse3("{\"steps\": [{\"pad\": [1, 2]}]}", 1, 7, 6, &pp, &err), 0);
    ck_assert_int_eq(pp.steps[0].pad[0], 1);
    ck_assert_int_eq(pp.steps[0].pad[3], 2);
    ck_assert_int_eq(parse3("{\"steps\": [{\"pad\": 2}]}", 1, 32, 32, &pp, &err), 0);
    dyn_image d = ramp(28, 28, 1);
    float x[32 * 32];
    ck_assert_int_eq(dyn_image_to_input(&d, &pp, x, &err), 0);
    ck_assert_float_eq(x[0], 0.0f);
    ck_assert_float_eq(x[2 * 32 + 2], (float)px(&d, 0, 0, 0) / 255.0f);
    ck_assert_float_eq(x[29 * 32 + 29], (float)px(&d, 27, 27, 0) / 255.0f);
    /* a 30x30 image padded by 2 is 34x34: refused with both sizes */
    dyn_image big = ramp(30, 30, 1);
    ck_assert_int_eq(dyn_image_to_input(&big, &pp, x, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "34x34"));
    ck_assert_ptr_nonnull(strstr(err.msg, "32x32"));
    dyn_image_free(&big);
    dyn_image_free(&d);
    dyn_image_free(&im);
}
END_TEST

START_TEST(pp_center_crop) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* 7x6 → 4x3: left = round(3 / 2) = 2 (halves to even), top = round(3 / 2) = 2 */
    ck_assert_int_eq(parse3("{\"steps\": [{\"center_crop\": [3, 4]}]}", 1, 3, 4, &pp, &err), 0);
    dyn_image im = ramp(7, 6, 1), out;
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(px(&out, 0, 0, 0), px(&im, 2, 2, 0));
    ck_assert_int_eq(px(&out, 3, 2, 0), px(&im, 5, 4, 0));
    dyn_image_free(&out);
    dyn_image_free(&im);
    /* 9x9 → 4x4: round(5 / 2) = 2 */
    ck_assert_int_eq(parse3("{\"steps\": [{\"center_crop\": 4}]}", 1, 4, 4, &pp, &err), 0);
    im = ramp(9, 9, 1);
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(px(&out, 0, 0, 0), px(&im, 2, 2, 0));
    dyn_image_free(&out);
    dyn_image_free(&im);
    /* a crop larger than the image pads with 0 first: 3x2 → 6x5 (left 1, top 1) */
    ck_assert_int_eq(parse3("{\"steps\": [{\"center_crop\": [5, 6]}]}", 1, 5, 6, &pp, &err), 0);
    im = ramp(3, 2, 1);
    im.data[0] = 200;
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(px(&out, 0, 0, 0), 0);
    ck_assert_int_eq(px(&out, 1, 1, 0), 200);
    ck_assert_int_eq(px(&out, 3, 2, 0), px(&im, 2, 1, 0));
    ck_assert_int_eq(px(&out, 4, 2, 0), 0);
    dyn_image_free(&out);
    dyn_image_free(&im);
    /* the final size is checked at parse time when the steps fix it */
    ck_assert_int_eq(parse3("{\"steps\": [{\"center_crop\": [5, 6]}]}", 1, 5, 5, &pp, &err),
                     DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "5x6"));
    ck_assert_int_eq(parse3("{\"steps\": [{\"center_crop\": 30}, {\"pad\": 1}]}", 1, 32, 32, &pp,
                            &err), 0);
}
END_TEST

START_TEST(pp_resize_shorter_side) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* torchvision Resize(10) on 40x20 (WxH): 20x10; on 20x41: 10x20 (int(10 * 41 / 20)) */
    ck_assert_int_eq(parse3("{\"steps\": [{\"resize\": 10}]}", 3, 10, 20, &pp, &err), 0);
    ck_assert_int_eq(pp.steps[0].op, DYN_PP_RESIZE_SHORT);
    dyn_image im = ramp(40, 20, 3), out;
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(out.w, 20);
    ck_assert_int_eq(out.h, 10);
    /* a 2x reduction with the tent of PIL: output x averages source 2x-1..2x+2 with weights
     * 1/8, 3/8, 3/8, 1/8 — interior pixel (5, 5) of channel 0, source rows 9..12, cols 9..12 */
    double acc = 0, wt[4] = {0.125, 0.375, 0.375, 0.125};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) acc += wt[a] * wt[b] * px(&im, 9 + b, 9 + a, 0);
    ck_assert_int_eq(px(&out, 5, 5, 0), (int)floor(acc + 0.5));
    dyn_image_free(&out);
    dyn_image_free(&im);
    ck_assert_int_eq(parse3("{\"steps\": [{\"resize\": 10}]}", 1, 20, 10, &pp, &err), 0);
    im = ramp(20, 41, 1);
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(out.w, 10);
    ck_assert_int_eq(out.h, 20);
    dyn_image_free(&out);
    dyn_image_free(&im);
    /* stretch [H, W] and nearest: 4x4 → 2x2 takes source (1, 1), (3, 1), ... */
    ck_assert_int_eq(parse3("{\"steps\": [{\"resize\": [2, 2], \"interpolation\": \"nearest\"}]}",
                            1, 2, 2, &pp, &err), 0);
    im = ramp(4, 4, 1);
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(px(&out, 0, 0, 0), px(&im, 1, 1, 0));
    ck_assert_int_eq(px(&out, 1, 1, 0), px(&im, 3, 3, 0));
    dyn_image_free(&out);
    dyn_image_free(&im);
    /* the 8-bit resize of a constant image stays constant (weights sum to one) */
    dyn_image flat = ramp(37, 23, 3);
    memset(flat.data, 77, 37 * 23 * 3);
    ck_assert_int_eq(dyn_image_resize_u8(&flat, 11, 50, DYN_PP_BILINEAR, &out, &err), 0);
    for (int i = 0; i < 11 * 50 * 3; i++) ck_assert_int_eq(out.data[i], 77);
    dyn_image_free(&out);
    dyn_image_free(&flat);
}
END_TEST

START_TEST(pp_letterbox) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* 40x20 into 16x16: scale 0.4 → 16x8, placed at top (16 - 8) / 2 = 4, fill 114 */
    ck_assert_int_eq(parse3("{\"steps\": [{\"letterbox\": [16, 16], \"fill\": 114}]}", 3, 16, 16,
                            &pp, &err), 0);
    dyn_image im = ramp(40, 20, 3), out, r;
    memset(im.data, 50, 40 * 20 * 3);
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(out.w, 16);
    ck_assert_int_eq(out.h, 16);
    ck_assert_int_eq(px(&out, 0, 3, 0), 114);
    ck_assert_int_eq(px(&out, 0, 4, 0), 50);
    ck_assert_int_eq(px(&out, 15, 11, 2), 50);
    ck_assert_int_eq(px(&out, 15, 12, 2), 114);
    dyn_image_free(&out);
    /* the inner part is the plain resize */
    dyn_image_free(&im);
    im = ramp(40, 20, 3);
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &out, &err), 0);
    ck_assert_int_eq(dyn_image_resize_u8(&im, 16, 8, DYN_PP_BILINEAR, &r, &err), 0);
    for (int y = 0; y < 8; y++) ck_assert_mem_eq(out.data + (size_t)(y + 4) * 48, r.data + y * 48, 48);
    dyn_image_free(&r);
    dyn_image_free(&out);
    dyn_image_free(&im);
}
END_TEST

START_TEST(pp_color_and_norm) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* bgr: channels reversed; mean / std in the model's order (B, G, R) */
    ck_assert_int_eq(parse3("{\"color\": \"bgr\", \"mean\": [0.1, 0.2, 0.3], \"std\": [0.5, 0.25, "
                            "2], \"scale\": 255}", 3, 2, 2, &pp, &err), 0);
    ck_assert_int_eq(pp.color, DYN_PP_BGR);
    dyn_image im = ramp(2, 2, 3);
    float x[12];
    ck_assert_int_eq(dyn_image_to_input(&im, &pp, x, &err), 0);
    for (int i = 0; i < 4; i++) {
        const int xx = i % 2, yy = i / 2;
        ck_assert_float_eq(x[0 * 4 + i], (px(&im, xx, yy, 2) / 255.0f - 0.1f) / 0.5f);
        ck_assert_float_eq(x[1 * 4 + i], (px(&im, xx, yy, 1) / 255.0f - 0.2f) / 0.25f);
        ck_assert_float_eq(x[2 * 4 + i], (px(&im, xx, yy, 0) / 255.0f - 0.3f) / 2.0f);
    }
    /* rgb with scale 1 (a model taking 0..255) */
    ck_assert_int_eq(parse3("{\"color\": \"rgb\", \"scale\": 1}", 3, 2, 2, &pp, &err), 0);
    ck_assert_int_eq(dyn_image_to_input(&im, &pp, x, &err), 0);
    ck_assert_float_eq(x[4 + 3], (float)px(&im, 1, 1, 1));
    /* gray: an RGB image becomes luma */
    ck_assert_int_eq(parse3("{\"color\": \"gray\"}", 1, 2, 2, &pp, &err), 0);
    ck_assert_int_eq(dyn_image_to_input(&im, &pp, x, &err), 0);
    dyn_image g;
    ck_assert_int_eq(dyn_image_convert(&im, 1, &g, &err), 0);
    ck_assert_float_eq(x[3], g.data[3] / 255.0f);
    dyn_image_free(&g);
    /* NHWC: input [H, W, C], values interleaved; the u8 path agrees bit for bit */
    ck_assert_int_eq(parse3("{\"layout\": \"NHWC\", \"mean\": [0.5, 0.4, 0.3]}", 2, 2, 3, &pp,
                            &err), 0);
    ck_assert_int_eq(pp.c, 3);
    ck_assert(pp.hwc);
    float y[12];
    ck_assert_int_eq(dyn_image_to_input(&im, &pp, x, &err), 0);
    dyn_preprocess_u8(&pp, im.data, 12, y);
    ck_assert_mem_eq(x, y, sizeof x);
    ck_assert_float_eq(x[3 * 3 + 2], px(&im, 1, 1, 2) / 255.0f - 0.3f);
    /* the colour must fit the model */
    ck_assert_int_eq(parse3("{\"color\": \"gray\"}", 3, 2, 2, &pp, &err), DYN_EINVAL);
    ck_assert_int_eq(parse3("{\"color\": \"rgb\"}", 1, 2, 2, &pp, &err), DYN_EINVAL);
    ck_assert_int_eq(parse3("{\"color\": \"cmyk\"}", 3, 2, 2, &pp, &err), DYN_EINVAL);
    ck_assert_int_eq(parse3("{\"layout\": \"NHWC\"}", 3, 2, 2, &pp, &err), DYN_EINVAL);
    ck_assert_int_eq(parse3("{\"layout\": \"CHWN\"}", 3, 2, 2, &pp, &err), DYN_EUNSUP);
    ck_assert_int_eq(parse3("{\"mean\": [0.1, 0.2]}", 3, 2, 2, &pp, &err), DYN_EINVAL);
    dyn_image_free(&im);
}
END_TEST

START_TEST(pp_old_schema_and_errors) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* the original form: no steps, a stretch (float, not rounded) when sizes differ */
    const char *old = "{\"channels\": 1, \"height\": 28, \"width\": 28, \"mean\": [0.1307], "
                      "\"std\": [0.3081], \"scale\": 255, \"resize\": \"bilinear\", \"x\": 1}";
    ck_assert_msg(parse3(old, 1, 28, 28, &pp, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(pp.nsteps, 0);
    ck_assert_float_eq(pp.mean[0], 0.1307f);
    dyn_image im = ramp(56, 40, 1);
    float x[784], ref[784];
    ck_assert_int_eq(dyn_image_to_input(&im, &pp, x, &err), 0);
    ck_assert_int_eq(dyn_image_resize_chw(&im, 28, 28, ref, &err), 0);
    for (int i = 0; i < 784; i++) ck_assert_float_eq(x[i], (ref[i] / 255.0f - 0.1307f) / 0.3081f);
    dyn_image_free(&im);
    /* check: unknown keys refused (parse ignores them, as before) */
    json_t *j = J(old);
    ck_assert_int_eq(dyn_preprocess_check(j, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "'x'"));
    json_object_del(j, "x");
    ck_assert_msg(dyn_preprocess_check(j, &err) == 0, "%s", err.msg);
    json_decref(j);
    static const char *const bad[] = {
        "{\"steps\": {\"pad\": 2}}",                       /* not an array */
        "{\"steps\": [{\"pad\": 2, \"resize\": 3}]}",      /* two ops */
        "{\"steps\": [{\"crop\": 2}]}",                    /* no known op */
        "{\"steps\": [{\"pad\": -1}]}",                    /* negative */
        "{\"steps\": [{\"pad\": [1, 2, 3]}]}",             /* 3 numbers */
        "{\"steps\": [{\"pad\": 1, \"fill\": 256}]}",      /* fill out of range */
        "{\"steps\": [{\"resize\": [0, 3]}]}",             /* zero */
        "{\"steps\": [{\"resize\": 2.5}]}",                /* not an integer */
        "{\"steps\": [{\"center_crop\": [1, 2, 3]}]}",     /* 3 numbers */
        "{\"steps\": [{\"pad\": 1, \"interpolation\": \"nearest\"}]}", /* not for pad */
        "{\"scale\": 0}",
        "{\"std\": [0]}",
        "{\"channels\": 2}",
        "{\"color\": \"rgb\", \"channels\": 1}",
    };
    for (size_t i = 0; i < DYN_ARRAY_LEN(bad); i++) {
        j = J(bad[i]);
        ck_assert_msg(dyn_preprocess_check(j, &err) != 0, "check accepted %s", bad[i]);
        json_decref(j);
    }
    ck_assert_int_eq(parse3("{\"steps\": [{\"resize\": 8, \"interpolation\": \"bicubic\"}]}", 1, 8,
                            8, &pp, &err), DYN_EUNSUP);
    ck_assert_int_eq(parse3("{\"resize\": \"lanczos\"}", 1, 8, 8, &pp, &err), DYN_EUNSUP);
    ck_assert_int_eq(parse3("{\"steps\": [{\"resize\": [8, 9]}]}", 1, 8, 8, &pp, &err), DYN_EINVAL);
    /* a step may not make a huge image (the final size is the model's, not its steps') */
    ck_assert_int_eq(parse3("{\"steps\": [{\"pad\": 8000}, {\"center_crop\": 4}]}", 1, 4, 4, &pp,
                            &err), 0);
    dyn_image small = ramp(4, 4, 1);
    float x4[16];
    ck_assert_int_eq(dyn_image_to_input(&small, &pp, x4, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "pixels"));
    dyn_image_free(&small);
    ck_assert_int_eq(parse3(NULL, 2, 8, 8, &pp, &err), DYN_EINVAL); /* not an image input */
    ck_assert_int_eq(parse3(NULL, 3, 8, 9, &pp, &err), 0);
    ck_assert_int_eq(pp.color, DYN_PP_RGB);
    ck_assert_int_eq(pp.w, 9);
}
END_TEST

/* ---- data sets through the pipeline ---- */

static dyn_dataset tiny_set(int n, int c, int h, int w) {
    dyn_dataset ds = {n, c, h, w, malloc((size_t)n * c * h * w), malloc((size_t)n), 3};
    ck_assert_ptr_nonnull(ds.pixels);
    for (size_t i = 0; i < (size_t)n * c * h * w; i++) ds.pixels[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < n; i++) ds.labels[i] = (uint8_t)(i % 3);
    return ds;
}

/* scale, mean and std are checked as the floats they become (fuzz_pp found a scale of
 * 1111...1.5, past FLT_MAX, accepted as an infinite scale: every model input 0); a scale under
 * FLT_MIN would be 0 (inputs inf or NaN). */
START_TEST(pp_numbers_in_float_range) {
    dyn_preprocess pp;
    dyn_err err;
    static const char *const bad[] = {
        "{\"scale\": 1e300}", "{\"scale\": 1e39}", "{\"scale\": 1e-300}", "{\"scale\": 1e-39}",
        "{\"scale\": -1}", "{\"mean\": 1e300}", "{\"mean\": [-1e39]}", "{\"std\": [1e39]}",
        "{\"std\": 1e-300}",
    };
    for (size_t i = 0; i < DYN_ARRAY_LEN(bad); i++) {
        ck_assert_msg(parse3(bad[i], 1, 4, 4, &pp, &err) == DYN_EINVAL, "parse accepted %s", bad[i]);
        ck_assert_msg(strstr(err.msg, "preprocess") != NULL, "%s: %s", bad[i], err.msg);
        json_t *j = J(bad[i]);
        ck_assert_msg(dyn_preprocess_check(j, &err) == DYN_EINVAL, "check accepted %s", bad[i]);
        json_decref(j);
    }
    ck_assert_int_eq(parse3("{\"scale\": 1e38, \"mean\": 3e38, \"std\": [1e-3]}", 1, 4, 4, &pp,
                            &err), 0);
    ck_assert_float_eq(pp.scale, 1e38f);
    ck_assert_float_eq(pp.mean[0], 3e38f);
    ck_assert_int_eq(parse3("{\"scale\": 1.5e-38}", 1, 4, 4, &pp, &err), 0);
    ck_assert(pp.scale > 0);
}
END_TEST

START_TEST(pp_dataset_pad_and_views) {
    dyn_preprocess pp;
    dyn_err err = {0};
    /* MNIST-like 28x28 samples for a Pad(2) model: 32x32, zero border, same labels */
    ck_assert_int_eq(parse3("{\"steps\": [{\"pad\": 2}], \"mean\": [0.5], \"std\": [0.25]}", 1,
                            32, 32, &pp, &err), 0);
    dyn_dataset in = tiny_set(3, 1, 28, 28), out;
    ck_assert_msg(dyn_dataset_preprocess(&in, &pp, &out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(out.n, 3);
    ck_assert_int_eq(out.h, 32);
    ck_assert_int_eq(out.w, 32);
    ck_assert_int_eq(out.nclasses, 3);
    for (int s = 0; s < 3; s++) {
        const uint8_t *o = out.pixels + s * 1024, *i0 = in.pixels + s * 784;
        ck_assert_int_eq(o[0], 0);
        ck_assert_int_eq(o[31 * 32 + 31], 0);
        for (int y = 0; y < 28; y++) ck_assert_mem_eq(o + (y + 2) * 32 + 2, i0 + y * 28, 28);
        ck_assert_int_eq(out.labels[s], in.labels[s]);
    }
    /* a view with the model's per-channel normalization gives what classify would */
    dyn_data_view v;
    dyn_data_norm nm = {.c = 1, .scale = pp.scale, .mean = {0.5f}, .std = {0.25f}};
    ck_assert_int_eq(dyn_data_all(&out, 0.1307f, 0.3081f, &v, &err), 0);
    ck_assert_int_eq(dyn_data_view_set_norm(&v, &nm, &err), 0);
    dyn_batch_source src = dyn_data_view_source(&v);
    float x[1024], ref[1024];
    int y = -1, id = 1;
    src.fill(src.ctx, &id, 1, x, &y, NULL);
    ck_assert_int_eq(y, in.labels[1]);
    dyn_image im = {28, 28, 1, in.pixels + 784};
    ck_assert_int_eq(dyn_image_to_input(&im, &pp, ref, &err), 0);
    ck_assert_double_le(tu_max_abs_diff(x, ref, 1024), 1e-6);
    nm.c = 2;
    ck_assert_int_eq(dyn_data_view_set_norm(&v, &nm, &err), DYN_EINVAL);
    dyn_data_view_free(&v);
    dyn_dataset_free(&out);
    dyn_dataset_free(&in);
    /* RGB samples, per-channel mean/std, NHWC model [4, 4, 3] through bgr + a center crop */
    ck_assert_int_eq(parse3("{\"color\": \"bgr\", \"layout\": \"NHWC\", \"steps\": "
                            "[{\"center_crop\": 4}], \"mean\": [0.1, 0.2, 0.3], \"std\": [1, 2, "
                            "4]}", 4, 4, 3, &pp, &err), 0);
    in = tiny_set(2, 3, 6, 6);
    ck_assert_int_eq(dyn_dataset_preprocess(&in, &pp, &out, &err), 0);
    ck_assert_int_eq(out.c, 3);
    ck_assert_int_eq(out.h, 4);
    nm = (dyn_data_norm){.c = 3, .scale = 255, .mean = {0.1f, 0.2f, 0.3f}, .std = {1, 2, 4}, .hwc = 1};
    ck_assert_int_eq(dyn_data_all(&out, 0, 1, &v, &err), 0);
    ck_assert_int_eq(dyn_data_view_set_norm(&v, &nm, &err), 0);
    src = dyn_data_view_source(&v);
    id = 0;
    src.fill(src.ctx, &id, 1, x, &y, NULL);
    /* the same sample as an HWC image through dyn_image_to_input */
    dyn_image hwc = {6, 6, 3, malloc(108)};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 36; i++) hwc.data[i * 3 + k] = in.pixels[k * 36 + i];
    ck_assert_int_eq(dyn_image_to_input(&hwc, &pp, ref, &err), 0);
    ck_assert_double_le(tu_max_abs_diff(x, ref, 48), 1e-6);
    dyn_image_free(&hwc);
    dyn_data_view_free(&v);
    dyn_dataset_free(&out);
    /* samples the steps do not bring to the model's size: an error naming the sample */
    ck_assert_int_eq(parse3("{\"steps\": [{\"pad\": 1}]}", 3, 4, 4, &pp, &err), 0);
    ck_assert_int_eq(dyn_dataset_preprocess(&in, &pp, &out, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "sample 0"));
    ck_assert_ptr_null(out.pixels);
    dyn_dataset_free(&in);
}
END_TEST

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void write_png_file(const char *path, const dyn_image *im) {
    void *buf;
    size_t n;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_image_encode_png(im, &buf, &n, &err), 0);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
    free(buf);
}

START_TEST(pp_load_for_model_imgfolder) {
    char root[] = "/tmp/dyn_pp_XXXXXX", p[256];
    ck_assert_ptr_nonnull(mkdtemp(root));
    const char *cls[2] = {"a", "b"};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", root, cls[k]);
        ck_assert_int_eq(mkdir(p, 0755), 0);
        dyn_image im = ramp(30 + 10 * k, 20, 3);
        snprintf(p, sizeof p, "%s/%s/x.png", root, cls[k]);
        write_png_file(p, &im);
        dyn_image_free(&im);
    }
    /* a model [3, 8, 8] whose pipeline is shorter side 8, center crop 8 */
    dyn_shape in = {3, {3, 8, 8}};
    dyn_model *m = dyn_model_new(&in);
    ck_assert_ptr_nonnull(m);
    m->preprocess = J("{\"steps\": [{\"resize\": 8}, {\"center_crop\": 8}], \"mean\": [0.4, 0.5, "
                      "0.6], \"std\": [0.2, 0.3, 0.4]}");
    dyn_dataset_spec d;
    dyn_dataset ds;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_dataset_resolve("/", root, 0, &d, &err), 0);
    ck_assert_msg(dyn_dataset_load_for_model(&d, "train", m, &ds, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ds.n, 2);
    ck_assert_int_eq(ds.c, 3);
    ck_assert_int_eq(ds.h, 8);
    ck_assert_int_eq(ds.w, 8);
    dyn_data_norm nm;
    ck_assert_int_eq(dyn_dataset_model_norm(&d, m, &nm, &err), 0);
    ck_assert_int_eq(nm.c, 3);
    ck_assert_float_eq(nm.mean[2], 0.6f);
    ck_assert_float_eq(nm.std[1], 0.3f);
    /* sample 1 (class b) equals the image through dyn_preprocess_image */
    dyn_preprocess pp;
    ck_assert_int_eq(dyn_preprocess_parse(m->preprocess, &m->input, &pp, &err), 0);
    dyn_image im = ramp(40, 20, 3), o;
    ck_assert_int_eq(dyn_preprocess_image(&im, &pp, &o, &err), 0);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 64; i++) ck_assert_int_eq(ds.pixels[192 + k * 64 + i], o.data[i * 3 + k]);
    dyn_image_free(&o);
    dyn_image_free(&im);
    dyn_dataset_free(&ds);
    /* without metadata: the data set's normalization on every channel */
    json_decref(m->preprocess);
    m->preprocess = NULL;
    ck_assert_int_eq(dyn_dataset_model_norm(&d, m, &nm, &err), 0);
    ck_assert_float_eq(nm.mean[2], d.mean);
    /* metadata that does not fit the model is an error naming it */
    m->preprocess = J("{\"steps\": [{\"resize\": [8, 9]}]}");
    ck_assert_int_eq(dyn_dataset_load_for_model(&d, "train", m, &ds, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "preprocess"));
    dyn_model_free(m);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
END_TEST

/* ---- torchvision on real images ---- */

static void *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}

START_TEST(pp_matches_torchvision) {
    json_error_t je;
    json_t *man = json_load_file(PP_DIR "manifest.json", 0, &je);
    if (!man) {
        fprintf(stderr, "pp fixtures: %s missing (run /usr/bin/python3 "
                        "tests/fixtures/make_pp_fixtures.py); skipped\n", PP_DIR "manifest.json");
        return;
    }
    const json_t *cases = json_object_get(man, "cases");
    ck_assert(json_array_size(cases) >= 8);
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        char path[512];
        const json_t *sh = json_object_get(c, "shape");
        dyn_shape in = {3, {json_integer_value(json_array_get(sh, 0)),
                            json_integer_value(json_array_get(sh, 1)),
                            json_integer_value(json_array_get(sh, 2))}};
        dyn_preprocess pp;
        dyn_err err = {0};
        const json_t *ppj = json_object_get(c, "preprocess");
        ck_assert_msg(dyn_preprocess_check(ppj, &err) == 0, "%s: %s", name, err.msg);
        ck_assert_msg(dyn_preprocess_parse(ppj, &in, &pp, &err) == 0, "%s: %s", name, err.msg);
        snprintf(path, sizeof path, PP_DIR "%s", json_string_value(json_object_get(c, "image")));
        size_t n = 0, ne = 0;
        void *bytes = read_all(path, &n);
        ck_assert_msg(bytes != NULL, "%s missing", path);
        dyn_image im;
        ck_assert_msg(dyn_image_decode(bytes, n, NULL, &im, &err) == 0, "%s: %s", path, err.msg);
        free(bytes);
        const int64_t numel = dyn_shape_numel(&in);
        float *x = malloc(sizeof(float) * (size_t)numel);
        ck_assert_msg(dyn_image_to_input(&im, &pp, x, &err) == 0, "%s: %s", name, err.msg);
        dyn_image_free(&im);
        snprintf(path, sizeof path, PP_DIR "%s", json_string_value(json_object_get(c, "expected")));
        float *want = read_all(path, &ne);
        ck_assert_msg(want && ne == sizeof(float) * (size_t)numel, "%s: expected tensor size", name);
        float min_std = pp.std[0];
        for (int k = 1; k < pp.c; k++) min_std = fminf(min_std, pp.std[k]);
        const double levels = (double)json_integer_value(json_object_get(c, "tol_levels"));
        const double tol = levels / 255.0 / min_std + 1e-6;
        double d = tu_max_abs_diff(x, want, numel);
        int64_t off = 0;
        for (int64_t q = 0; q < numel; q++) off += fabsf(x[q] - want[q]) > 1e-6f;
        fprintf(stderr, "pp fixtures: %-18s max |dynd - torchvision| = %.3g (%.3g levels), %lld "
                        "of %lld values differ (tolerance %.3g)\n",
                name, d, d * 255.0 * min_std, (long long)off, (long long)numel, tol);
        ck_assert_msg(d <= tol, "%s: max abs diff %g > %g", name, d, tol);
        free(want);
        free(x);
    }
    json_decref(man);
}
END_TEST

static Suite *pp_suite(void) {
    Suite *s = suite_create("pp");
    TCase *tc = tcase_create("pp");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pp_pad);
    tcase_add_test(tc, pp_center_crop);
    tcase_add_test(tc, pp_resize_shorter_side);
    tcase_add_test(tc, pp_letterbox);
    tcase_add_test(tc, pp_color_and_norm);
    tcase_add_test(tc, pp_old_schema_and_errors);
    tcase_add_test(tc, pp_numbers_in_float_range);
    tcase_add_test(tc, pp_dataset_pad_and_views);
    tcase_add_test(tc, pp_load_for_model_imgfolder);
    tcase_add_test(tc, pp_matches_torchvision);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(pp_suite)
