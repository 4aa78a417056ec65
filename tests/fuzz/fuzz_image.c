/* fuzz_image.c — engine/io/image.c: PNG / JPEG decoding from memory with the size limits, then
 * the model input pipeline (colour, geometric steps, normalization, layout) of one of a few
 * preprocess settings, as /v1 classify runs them.
 * Input: one byte choosing the pipeline (PIPES below, modulo), then the image file's bytes. */
#include <jansson.h>

#include "fuzz.h"
#include "io/image.h"

static const struct {
    const char *pp;
    int ndim;
    int64_t shape[3];
} PIPES[] = {
    {"{\"color\": \"gray\", \"steps\": [{\"pad\": 2}], \"scale\": 255, \"mean\": [0], \"std\": [1]}",
     3, {1, 32, 32}},
    {"{\"color\": \"gray\", \"mean\": [0.1307], \"std\": [0.3081]}", 3, {1, 28, 28}},
    {"{\"color\": \"gray\", \"steps\": [{\"pad\": [1, 2, 3, 4], \"fill\": 7}, {\"center_crop\": 33}]}",
     3, {1, 33, 33}},
    {"{\"color\": \"gray\", \"steps\": [{\"resize\": [64, 48]}]}", 3, {1, 64, 48}},
    {"{\"color\": \"rgb\", \"steps\": [{\"resize\": 40}, {\"center_crop\": [32, 32]}], \"scale\": 255, "
     "\"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]}",
     3, {3, 32, 32}},
    {"{\"color\": \"rgb\", \"steps\": [{\"resize\": [20, 30], \"interpolation\": \"nearest\"}]}", 3,
     {3, 20, 30}},
    {"{\"color\": \"bgr\", \"layout\": \"NHWC\", \"steps\": [{\"letterbox\": [24, 24], \"fill\": 114}]}",
     3, {24, 24, 3}},
    {NULL, 3, {1, 28, 28}}, /* no metadata: 0..1 scaling, a plain stretch */
};
#define NPIPES ((int)DYN_ARRAY_LEN(PIPES))

static dyn_preprocess g_pp[NPIPES];

static void init_pipes(void) {
    static int done;
    if (done) return;
    for (int i = 0; i < NPIPES; i++) {
        json_error_t je;
        json_t *j = PIPES[i].pp ? json_loads(PIPES[i].pp, 0, &je) : NULL;
        DYN_ASSERT(!PIPES[i].pp || j);
        dyn_shape s = {.ndim = PIPES[i].ndim};
        memcpy(s.d, PIPES[i].shape, sizeof PIPES[i].shape);
        dyn_err err = {0};
        if (dyn_preprocess_parse(j, &s, &g_pp[i], &err)) {
            fprintf(stderr, "fuzz_image: pipeline %d: %s\n", i, err.msg);
            abort();
        }
        json_decref(j);
    }
    done = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init_pipes();
    if (size < 1) return 0;
    const dyn_preprocess *pp = &g_pp[data[0] % NPIPES];
    /* the daemon's limits are settings; small ones here keep every execution fast */
    dyn_image_limits lim = {.max_width = 1024, .max_height = 1024, .max_pixels = 1 << 18,
                            .max_bytes = 1 << 20};
    dyn_image im;
    dyn_err err = {0};
    if (dyn_image_decode(data + 1, size - 1, &lim, &im, &err)) {
        DYN_ASSERT(im.data == NULL && err.msg[0]);
        fuzz_note("image: %s", err.msg);
        return 0;
    }
    DYN_ASSERT(im.w >= 1 && im.h >= 1 && im.w <= 1024 && im.h <= 1024 && (im.c == 1 || im.c == 3));
    size_t n = (size_t)pp->c * (size_t)pp->h * (size_t)pp->w;
    float *x = malloc(n * sizeof *x);
    int rc = x ? dyn_image_to_input(&im, pp, x, &err) : DYN_ENOMEM;
    fuzz_note("image: %dx%dx%d, pipeline %d: %s", im.w, im.h, im.c, data[0] % NPIPES,
              rc ? err.msg : "ok");
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) DYN_ASSERT(x[i] == x[i]); /* no NaN */
    }
    free(x);
    dyn_image_free(&im);
    return 0;
}
