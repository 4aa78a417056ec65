/* fuzz_pp.c — engine/io/image.c: a model's "preprocess" metadata (the JSON object a .dyn file,
 * an ONNX import, a conversion's options or PATCH /v1/models/{name} carry), parsed against one of
 * a few model input shapes by dyn_preprocess_parse and checked alone by dyn_preprocess_check.
 * A pipeline that parses is then run on a tiny image when its steps are small, so the parsed
 * values are used as the daemon uses them.
 * Input: one byte choosing the input shape (SHAPES below, modulo; bit 7: a 3-channel image in
 * place of a gray one), then the JSON text (read as model files read it: any JSON value,
 * duplicate keys refused). */
#include <jansson.h>
#include <math.h>

#include "fuzz.h"
#include "io/image.h"

static const struct {
    int ndim;
    int64_t d[3];
} SHAPES[] = {
    {3, {1, 28, 28}}, {3, {1, 32, 32}}, {3, {3, 224, 224}}, {3, {3, 32, 32}},
    {3, {24, 24, 3}}, /* NHWC */
    {3, {1, 33, 33}}, {3, {3, 20, 30}}, {3, {1, 1, 1}},
    {3, {2, 28, 28}}, /* not an image */
    {2, {28, 28}},    /* not an image */
    {3, {1, 64, 48}}, {3, {3, 60, 90}}, {3, {1, 64, 64}},
};
#define NSHAPES ((int)DYN_ARRAY_LEN(SHAPES))

/* The largest side a step may have for the pipeline to be run on the tiny image (a parsed step
 * may reach 16384 pixels a side: slow, and the image harness runs real pipelines). */
#define RUN_MAX_SIDE 64

static int small_steps(const dyn_preprocess *pp) {
    if (pp->h > RUN_MAX_SIDE || pp->w > RUN_MAX_SIDE) return 0;
    for (int i = 0; i < pp->nsteps; i++) {
        const dyn_pp_step *s = &pp->steps[i];
        if (s->size > RUN_MAX_SIDE || s->h > RUN_MAX_SIDE || s->w > RUN_MAX_SIDE) return 0;
        for (int k = 0; k < 4; k++)
            if (s->pad[k] > RUN_MAX_SIDE) return 0;
    }
    return 1;
}

/* What dyn_preprocess_parse promises of a pipeline it accepted for `in`. */
static void check_parsed(const dyn_preprocess *pp, const dyn_shape *in) {
    const int ci = pp->hwc ? 2 : 0, hi = pp->hwc ? 0 : 1, wi = pp->hwc ? 1 : 2;
    DYN_ASSERT(in->ndim == 3 && pp->c == in->d[ci] && pp->h == in->d[hi] && pp->w == in->d[wi]);
    DYN_ASSERT(pp->c == 1 || pp->c == 3);
    DYN_ASSERT((pp->color == DYN_PP_GRAY) == (pp->c == 1));
    DYN_ASSERT(isfinite(pp->scale) && pp->scale > 0);
    for (int k = 0; k < pp->c; k++)
        DYN_ASSERT(isfinite(pp->mean[k]) && isfinite(pp->std[k]) && pp->std[k] > 0);
    DYN_ASSERT(pp->nsteps >= 0 && pp->nsteps <= DYN_PP_MAX_STEPS);
    for (int i = 0; i < pp->nsteps; i++) {
        const dyn_pp_step *s = &pp->steps[i];
        DYN_ASSERT(s->fill >= 0 && s->fill <= 255);
        switch (s->op) {
        case DYN_PP_RESIZE_SHORT: DYN_ASSERT(s->size >= 1); break;
        case DYN_PP_RESIZE:
        case DYN_PP_LETTERBOX:
        case DYN_PP_CENTER_CROP: DYN_ASSERT(s->h >= 1 && s->w >= 1); break;
        case DYN_PP_PAD:
            for (int k = 0; k < 4; k++) DYN_ASSERT(s->pad[k] >= 0);
            break;
        default: DYN_ASSERT(!"unknown step op");
        }
    }
}

/* Runs the pipeline on a 7x5 image of `c` channels: an error names the sizes; a model input
 * holds no NaN. */
static void run_pipeline(const dyn_preprocess *pp, int c) {
    uint8_t px[7 * 5 * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 37);
    dyn_image im = {.w = 7, .h = 5, .c = c, .data = px};
    size_t n = (size_t)pp->c * (size_t)pp->h * (size_t)pp->w;
    float *x = malloc(n * sizeof *x);
    if (!x) return;
    dyn_err err = {0};
    int rc = dyn_image_to_input(&im, pp, x, &err);
    if (rc) DYN_ASSERT((rc == DYN_EINVAL || rc == DYN_ENOMEM) && err.msg[0]);
    else
        for (size_t i = 0; i < n; i++) DYN_ASSERT(x[i] == x[i]); /* no NaN */
    fuzz_note("pp: run: %s", rc ? err.msg : "ok");
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    dyn_shape in = {.ndim = SHAPES[(data[0] & 0x7f) % NSHAPES].ndim};
    memcpy(in.d, SHAPES[(data[0] & 0x7f) % NSHAPES].d, sizeof SHAPES[0].d);
    json_error_t je;
    json_t *j = json_loadb((const char *)data + 1, size - 1,
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        fuzz_note("pp: not JSON: %s", je.text);
        return 0;
    }
    dyn_preprocess pp;
    dyn_err err = {0};
    int rc = dyn_preprocess_parse(j, &in, &pp, &err);
    if (rc) {
        DYN_ASSERT((rc == DYN_EINVAL || rc == DYN_EUNSUP) && err.msg[0]);
        fuzz_note("pp: parse: %s", err.msg);
    } else {
        check_parsed(&pp, &in);
        fuzz_note("pp: parse: ok, %d steps", pp.nsteps);
        if (small_steps(&pp)) run_pipeline(&pp, data[0] & 0x80 ? 3 : 1);
    }
    dyn_err cerr = {0};
    int crc = dyn_preprocess_check(j, &cerr);
    DYN_ASSERT(crc == 0 || ((crc == DYN_EINVAL || crc == DYN_EUNSUP) && cerr.msg[0]));
    DYN_ASSERT(crc != 0 || json_is_object(j));
    fuzz_note("pp: check: %s", crc ? cerr.msg : "ok");
    json_decref(j);
    return 0;
}
