/* classify.c — POST /v1/models/{name}[/versions/{v}]/classify: an image in, top-k labels out.
 *
 * Body: the raw image (Content-Type image/png or image/jpeg; the format is taken from the
 * magic bytes, the type only gates what is accepted) or multipart/form-data whose first file
 * part (or a part named "image" / "file") holds the image. ?top_k=K (default 5, capped at the
 * number of classes). Reply: {"model", "version", "predictions": [{"label", "index", "score"}]}
 * with softmax scores, best first. ?input_image=true adds "input_image": a data: URL of a PNG
 * of the tensor the model saw (after the whole pipeline), de-normalized for display:
 * p = (x * std + mean) * scale, rounded and clamped to 0..255, grey or RGB (a BGR model's
 * channels put back in RGB order), the model's input width x height. The web console shows it
 * so a wrong preprocessing is seen at a glance.
 *
 * The image is decoded and goes through the model's input pipeline here (engine/io/image.h:
 * colour, geometric steps, per-channel normalization, layout; on the connection thread:
 * bounded by the image limits); the model runs on the batcher. An image the steps do not bring
 * to the model's size is 400 bad_image, the message giving both sizes.
 */
#include <string.h>
#include <strings.h>

#include "api/infer.h"
#include "api/multipart.h"

#define DEFAULT_TOP_K 5

/* Base64 (RFC 4648, padded) of data[0..n) as "data:image/png;base64,..." in a new malloc'd
 * string (the caller frees it); NULL on ENOMEM. */
static char *png_data_url(const unsigned char *data, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char prefix[] = "data:image/png;base64,";
    size_t pl = sizeof prefix - 1, out_n = pl + (n + 2) / 3 * 4;
    char *out = malloc(out_n + 1), *o;
    if (!out) return NULL;
    memcpy(out, prefix, pl);
    o = out + pl;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)data[i] << 16 | (unsigned)data[i + 1] << 8 | data[i + 2];
        *o++ = A[v >> 18 & 63], *o++ = A[v >> 12 & 63], *o++ = A[v >> 6 & 63], *o++ = A[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)data[i] << 16 | (i + 1 < n ? (unsigned)data[i + 1] << 8 : 0);
        *o++ = A[v >> 18 & 63], *o++ = A[v >> 12 & 63];
        *o++ = i + 1 < n ? A[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return out;
}

/* The model input x (one sample, pp's layout) as a PNG data: URL (see the header comment); a
 * new malloc'd string (the caller frees it), NULL with err on failure. */
static char *input_image_url(const dyn_preprocess *pp, const float *x, dyn_err *err) {
    const int c = pp->c, h = pp->h, w = pp->w;
    dyn_image im = {w, h, c, malloc((size_t)w * (size_t)h * (size_t)c)};
    if (!im.data) {
        dyn_err_set(err, DYN_ENOMEM, "out of memory for the input image");
        return NULL;
    }
    for (int k = 0; k < c; k++) {
        /* the model's channel k; BGR: shown as RGB, so channel k goes to slot c - 1 - k */
        const int slot = pp->color == DYN_PP_BGR ? c - 1 - k : k;
        const double sd = pp->std[k], mu = pp->mean[k], sc = pp->scale;
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                size_t at = pp->hwc ? ((size_t)y * (size_t)w + (size_t)xx) * (size_t)c + (size_t)k
                                    : ((size_t)k * (size_t)h + (size_t)y) * (size_t)w + (size_t)xx;
                double p = ((double)x[at] * sd + mu) * sc + 0.5;
                im.data[((size_t)y * (size_t)w + (size_t)xx) * (size_t)c + (size_t)slot] =
                    (uint8_t)(p <= 0 ? 0 : p >= 255 ? 255 : p);
            }
    }
    void *png = NULL;
    size_t png_n = 0;
    int rc = dyn_image_encode_png(&im, &png, &png_n, err);
    dyn_image_free(&im);
    if (rc) return NULL;
    char *url = png_data_url(png, png_n);
    free(png);
    if (!url) dyn_err_set(err, DYN_ENOMEM, "out of memory for the input image");
    return url;
}

static void classify_done(srv_req *r) {
    api_job *j = r->user;
    if (api_job_check(r, j)) return;
    const srv_model *m = j->m;
    int C = (int)m->out_numel, k = j->top_k;
    float *p = api_job_probs(j);
    int *idx = malloc(sizeof(int) * (size_t)k);
    if (!p || !idx) {
        free(p);
        free(idx);
        srv_reply_error(r, 500, "out_of_memory", "out of memory building the reply");
        return;
    }
    api_topk(p, C, k, idx);
    json_t *preds = json_array();
    for (int t = 0; t < k; t++) {
        char fallback[16];
        snprintf(fallback, sizeof fallback, "%d", idx[t]);
        const char *label = m->model->labels && idx[t] < m->model->nlabels ? m->model->labels[idx[t]]
                                                                          : fallback;
        json_array_append_new(preds, json_pack("{s:s, s:i, s:f}", "label", label, "index", idx[t],
                                               "score", (double)p[idx[t]]));
    }
    free(p);
    free(idx);
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    json_t *reply = json_pack("{s:s, s:s, s:o}", "model", m->name, "version", v,
                              "predictions", preds);
    if (reply && json_is_true(json_object_get(j->state, "input_image"))) {
        dyn_err err = {0};
        char *url = input_image_url(&m->pp, j->x, &err);
        if (!url) {
            json_decref(reply);
            srv_reply_error(r, 500, "internal", "could not encode the input image: %s", err.msg);
            return;
        }
        json_object_set_new(reply, "input_image", json_string(url));
        free(url);
    }
    srv_reply_json(r, 200, reply);
}

/* The image bytes of the request; NULL after replying. */
static const char *image_bytes(srv_req *r, size_t *len) {
    char mt[96];
    srv_media_type(r, mt, sizeof mt);
    if (!strcmp(mt, "image/png") || !strcmp(mt, "image/jpeg") || !strcmp(mt, "image/jpg") ||
        !strcmp(mt, "application/octet-stream")) {
        *len = r->body_len;
        return r->body ? r->body : "";
    }
    if (!strcmp(mt, "multipart/form-data")) {
        const char *data = NULL;
        char err[160];
        int rc = api_multipart_file(srv_req_header(r, "Content-Type"), r->body, r->body_len,
                                    &data, len, err, sizeof err);
        if (rc) {
            srv_reply_error(r, 400, rc == -2 ? "duplicate_field" : "bad_multipart", "%s", err);
            return NULL;
        }
        return data;
    }
    srv_reply_error(r, 415, "unsupported_media_type",
                    "send the image as Content-Type image/png or image/jpeg (or a "
                    "multipart/form-data upload), not '%s'", mt[0] ? mt : "(none)");
    return NULL;
}

void api_v1_classify(srv_req *r) {
    size_t len = 0;
    const char *img = image_bytes(r, &len);
    if (!img) return;
    char tk[33];
    int top_k = DEFAULT_TOP_K;
    const int has_tk = api_query(r, "top_k", tk, sizeof tk);
    if (has_tk < 0) return;
    if (has_tk) {
        char *end;
        long v = strtol(tk, &end, 10);
        if (end == tk || *end || v < 1 || v > 100000) {
            srv_reply_error(r, 400, "invalid_parameter", "top_k must be a positive integer");
            return;
        }
        top_k = (int)v;
    }
    char ii[8];
    int want_image = 0;
    const int has_ii = api_query(r, "input_image", ii, sizeof ii);
    if (has_ii < 0) return;
    if (has_ii) {
        if (!strcmp(ii, "true") || !strcmp(ii, "1") || !ii[0]) want_image = 1;
        else if (strcmp(ii, "false") && strcmp(ii, "0")) {
            srv_reply_error(r, 400, "invalid_parameter", "input_image must be true or false");
            return;
        }
    }
    srv_model *m = api_model_acquire(r);
    if (!m) return;
    /* from here a refusal is a failed request of this model (v2 statistics' "fail") */
#define COUNT_FAIL(model) \
    srv_batcher_count_fail((model)->batcher, (uint64_t)((dyn_now() - r->t_start) * 1e9))
    if (!m->is_image) {
        COUNT_FAIL(m);
        srv_reply_error(r, 400, "not_an_image_model",
                        "model '%s' does not take images (its input is not [1|3, H, W], or "
                        "[H, W, 1|3] with layout NHWC, or its preprocess metadata does not "
                        "fit it); use /v2/models/%s/infer", m->name, m->name);
        srv_model_release(m);
        return;
    }
    if (len == 0) {
        COUNT_FAIL(m);
        srv_model_release(m);
        srv_reply_error(r, 400, "bad_image", "the body is empty: send a PNG or JPEG image");
        return;
    }
    dyn_image_limits lim = {r->cfg->max_image_width, r->cfg->max_image_height,
                            r->cfg->max_image_pixels, (size_t)r->cfg->max_body_bytes};
    dyn_image im;
    dyn_err err = {0};
    int rc = dyn_image_decode(img, len, &lim, &im, &err);
    if (rc) {
        COUNT_FAIL(m);
        srv_model_release(m);
        if (rc == DYN_ENOMEM) srv_reply_error(r, 413, "image_too_large", "%s", err.msg);
        else srv_reply_error(r, 400, "bad_image", "%s", err.msg);
        return;
    }
    api_job *j = api_job_new(r, m, 1);
    if (!j) {
        dyn_image_free(&im);
        return;
    }
    rc = dyn_image_to_input(&im, &j->m->pp, j->x, &err);
    dyn_image_free(&im);
    if (rc) {
        COUNT_FAIL(j->m);
        srv_reply_error(r, rc == DYN_ENOMEM ? 413 : 400, "bad_image", "%s", err.msg);
        return;
    }
#undef COUNT_FAIL
    if (want_image) j->state = json_pack("{s:b}", "input_image", 1);
    j->top_k = (int)DYN_MIN(top_k, j->m->out_numel);
    api_job_submit(r, j, classify_done);
}
