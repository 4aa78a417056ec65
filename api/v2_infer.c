/* v2_infer.c — POST /v2/models/{name}[/versions/{v}]/infer (Open Inference Protocol, JSON).
 *
 * Input: one tensor named "input", datatype FP32 (model inputs as they are) or UINT8 (raw 8-bit
 * pixels, normalized with the model's preprocess metadata exactly as /v1 classify does, so the
 * same pixels give the same scores), shape [N, ...input] (or the input shape alone for N = 1),
 * data flat or nested row-major. Outputs: "logits" and "probabilities" (softmax), FP32 [N, C];
 * an output requested with "parameters": {"classification": k} comes back as BYTES
 * "score:index:label" strings, shape [N, k] (Triton's classification extension).
 *
 * Binary tensor data extension (what Triton's own HTTP client sends by default): the header
 * Inference-Header-Content-Length: H (or Content-Type
 * application/vnd.sagemaker-triton.binary+json;json-header-size=H) says the body is H bytes of
 * JSON followed by the input's raw little-endian bytes, declared by the input's
 * "parameters": {"binary_data_size": B} in place of "data" (only that header or media type marks
 * a binary body: a JSON body labelled application/octet-stream without it, as aiohttp-based
 * clients send, is JSON). An output asked for with
 * "parameters": {"binary_data": true} (or every output, with the request's
 * "parameters": {"binary_data_output": true}) comes back the same way: the reply is
 * application/octet-stream, its JSON part as long as its Inference-Header-Content-Length, then
 * each binary output's bytes in order (FP32 raw; BYTES as a 4-byte little-endian length and the
 * string, per element).
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/infer.h"

#define MAX_SAMPLES 4096

typedef struct out_req {
    int which; /* 0 logits, 1 probabilities */
    int classification; /* 0 = plain tensor, else k */
} out_req;

static const char *const OUT_NAMES[2] = {"logits", "probabilities"};

/* Copies numbers of v (nested arrays) in row-major order. Returns 0, or -1 on a non-number /
 * out-of-range value (*bad set), -2 when there are more than cap. */
static int flatten(const json_t *v, int u8, float *f, uint8_t *b, int64_t cap, int64_t *k,
                   const char **bad) {
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            int rc = flatten(e, u8, f, b, cap, k, bad);
            if (rc) return rc;
        }
        return 0;
    }
    if (*k >= cap) return -2;
    if (u8) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 255) {
            *bad = "UINT8 data must be integers 0..255";
            return -1;
        }
        b[(*k)++] = (uint8_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_number(v)) {
        *bad = "FP32 data must be numbers";
        return -1;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || fabs(d) > 3.4e38) {
        *bad = "FP32 data out of range";
        return -1;
    }
    f[(*k)++] = (float)d;
    return 0;
}

static json_t *model_version_str(const srv_model *m) {
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    return json_string(v);
}

/* Appends n bytes to a growing buffer. 0, or -1 on ENOMEM (the buffer stays valid). */
static int bin_put(char **b, size_t *len, size_t *cap, const void *src, size_t n) {
    if (*len + n > *cap) {
        size_t c = DYN_MAX(*cap * 2, *len + n + 256);
        char *nb = realloc(*b, c);
        if (!nb) return -1;
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *len, src, n);
    *len += n;
    return 0;
}

static int bin_put_u32(char **b, size_t *len, size_t *cap, uint32_t v) {
    const unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                                 (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    return bin_put(b, len, cap, le, 4);
}

static void infer_done(srv_req *r) {
    api_job *j = r->user;
    if (api_job_check(r, j)) return;
    const srv_model *m = j->m;
    int C = (int)m->out_numel;
    float *probs = api_job_probs(j);
    if (!probs) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory building the reply");
        return;
    }
    json_t *outs = json_array();
    const json_t *reqs = json_object_get(j->state, "outputs");
    char *bb = NULL; /* binary outputs, in order */
    size_t blen = 0, bcap = 0;
    int oom = 0;
    size_t i;
    const json_t *o;
    json_array_foreach(reqs, i, o) {
        int which = (int)json_integer_value(json_array_get(o, 0));
        int k = (int)json_integer_value(json_array_get(o, 1));
        int bin = json_is_true(json_array_get(o, 2));
        const float *src = which ? probs : j->y;
        json_t *data = bin ? NULL : json_array();
        size_t bin0 = blen;
        if (k > 0) {
            int idx[4096];
            char s[256];
            for (int n = 0; n < j->n; n++) {
                api_topk(src + (int64_t)n * C, C, k, idx);
                for (int t = 0; t < k; t++) {
                    const char *label = m->model->labels && idx[t] < m->model->nlabels
                                            ? m->model->labels[idx[t]] : "";
                    int len = snprintf(s, sizeof s, "%f:%d:%s",
                                       (double)src[(int64_t)n * C + idx[t]], idx[t], label);
                    len = DYN_MIN(len, (int)sizeof s - 1);
                    if (!bin) {
                        json_array_append_new(data, json_string(s));
                    } else if (bin_put_u32(&bb, &blen, &bcap, (uint32_t)len) ||
                               bin_put(&bb, &blen, &bcap, s, (size_t)len)) {
                        oom = 1;
                    }
                }
            }
        } else {
            const int64_t cnt = (int64_t)j->n * C;
            if (!bin) {
                for (int64_t t = 0; t < cnt; t++) json_array_append_new(data, json_real((double)src[t]));
            } else {
                for (int64_t t = 0; t < cnt && !oom; t++) {
                    uint32_t u;
                    memcpy(&u, &src[t], 4);
                    oom = bin_put_u32(&bb, &blen, &bcap, u);
                }
            }
        }
        json_t *entry = json_pack("{s:s, s:s, s:[i,i]}", "name", OUT_NAMES[which], "datatype",
                                  k > 0 ? "BYTES" : "FP32", "shape", j->n, k > 0 ? k : C);
        if (bin)
            json_object_set_new(entry, "parameters",
                                json_pack("{s:I}", "binary_data_size", (json_int_t)(blen - bin0)));
        else
            json_object_set_new(entry, "data", data);
        json_array_append_new(outs, entry);
    }
    free(probs);
    json_t *body = json_pack("{s:s, s:o, s:o}", "model_name", m->name, "model_version",
                             model_version_str(m), "outputs", outs);
    json_t *id = json_object_get(j->state, "id");
    if (body && json_is_string(id)) json_object_set(body, "id", id); /* omitted when absent */
    if (oom) {
        free(bb);
        json_decref(body);
        srv_reply_error(r, 500, "out_of_memory", "out of memory building the reply");
        return;
    }
    if (!bb) {
        srv_reply_json(r, 200, body);
        return;
    }
    /* binary reply: the JSON header, then the outputs' bytes */
    char *js = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    size_t jl = js ? strlen(js) : 0;
    char *all = js ? malloc(jl + blen) : NULL;
    if (!all) {
        free(js);
        free(bb);
        srv_reply_error(r, 500, "out_of_memory", "out of memory building the reply");
        return;
    }
    memcpy(all, js, jl);
    memcpy(all + jl, bb, blen);
    free(js);
    free(bb);
    char hl[24];
    snprintf(hl, sizeof hl, "%zu", jl);
    srv_req_header_add(r, "Inference-Header-Content-Length", hl);
    srv_req_reply(r, 200, "application/octet-stream", all, jl + blen);
}

/* Parses "outputs" into [[which, k], ...] (all outputs when absent). NULL after replying. */
static json_t *parse_outputs(srv_req *r, const json_t *req, int nclasses) {
    json_t *list = json_array();
    const json_t *outs = json_object_get(req, "outputs");
    const json_t *all_bin = json_object_get(json_object_get(req, "parameters"), "binary_data_output");
    if (all_bin && !json_is_boolean(all_bin)) {
        json_decref(list);
        srv_reply_error(r, 400, "invalid_request", "parameters.binary_data_output must be true or false");
        return NULL;
    }
    if (!outs) {
        json_array_append_new(list, json_pack("[i,i,b]", 0, 0, json_is_true(all_bin)));
        json_array_append_new(list, json_pack("[i,i,b]", 1, 0, json_is_true(all_bin)));
        return list;
    }
    if (!json_is_array(outs) || json_array_size(outs) == 0 || json_array_size(outs) > 2) {
        json_decref(list);
        srv_reply_error(r, 400, "invalid_request", "\"outputs\" must be an array of 1 or 2 objects");
        return NULL;
    }
    size_t i;
    const json_t *o;
    json_array_foreach(outs, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        int which = name && !strcmp(name, "logits") ? 0 : name && !strcmp(name, "probabilities") ? 1 : -1;
        if (which < 0) {
            json_decref(list);
            srv_reply_error(r, 400, "unknown_output",
                            "unknown output '%s' (the model has \"logits\" and \"probabilities\")",
                            name ? name : "(no name)");
            return NULL;
        }
        int k = 0;
        const json_t *cls = json_object_get(json_object_get(o, "parameters"), "classification");
        if (cls) {
            if (!json_is_integer(cls) || json_integer_value(cls) < 1 ||
                json_integer_value(cls) > nclasses) {
                json_decref(list);
                srv_reply_error(r, 400, "invalid_request",
                                "parameters.classification must be an integer 1..%d", nclasses);
                return NULL;
            }
            k = (int)json_integer_value(cls);
        }
        const json_t *bin = json_object_get(json_object_get(o, "parameters"), "binary_data");
        if (bin && !json_is_boolean(bin)) {
            json_decref(list);
            srv_reply_error(r, 400, "invalid_request", "parameters.binary_data must be true or false");
            return NULL;
        }
        json_array_append_new(list, json_pack("[i,i,b]", which, k,
                                              bin ? json_is_true(bin) : json_is_true(all_bin)));
    }
    return list;
}

/* Number of samples from a shape against the model input; -1 after replying. */
static int samples_of(srv_req *r, const json_t *shape, const srv_model *m) {
    const dyn_shape *in = &m->model->input;
    char want[96];
    dyn_shape_str(in, want, sizeof want);
    /* "[N, " + the dimensions of "[1, 28, 28]" without its own brackets */
    const int dims_len = (int)strlen(want) - 2;
    size_t nd = json_array_size(shape);
    if (!json_is_array(shape) || (nd != (size_t)in->ndim + 1 && nd != (size_t)in->ndim)) {
        srv_reply_error(r, 400, "shape_mismatch", "input shape must be [N, %.*s] (model input %s)",
                        dims_len, want + 1, want);
        return -1;
    }
    size_t off = nd == (size_t)in->ndim + 1;
    json_int_t n = off ? json_integer_value(json_array_get(shape, 0)) : 1;
    if (off && (!json_is_integer(json_array_get(shape, 0)) || n < 1 || n > MAX_SAMPLES)) {
        srv_reply_error(r, 400, "shape_mismatch", "batch size must be an integer 1..%d",
                        MAX_SAMPLES);
        return -1;
    }
    for (int d = 0; d < in->ndim; d++) {
        const json_t *v = json_array_get(shape, (size_t)d + off);
        if (!json_is_integer(v) || json_integer_value(v) != in->d[d]) {
            srv_reply_error(r, 400, "shape_mismatch", "input shape must be [N, %.*s] (model input %s)",
                            dims_len, want + 1, want);
            return -1;
        }
    }
    return (int)n;
}

/* The binary extension's JSON header length: from Inference-Header-Content-Length, or the
 * json-header-size parameter of application/vnd.sagemaker-triton.binary+json. Returns 0 for a
 * plain JSON request (*hlen = whole body), 1 for a binary one, -1 after replying. */
static int binary_header(srv_req *r, size_t *hlen) {
    char mt[96];
    srv_media_type(r, mt, sizeof mt);
    const char *v = srv_req_header(r, "Inference-Header-Content-Length");
    const char *ct = srv_req_header(r, "Content-Type");
    if (!v && !strcmp(mt, "application/vnd.sagemaker-triton.binary+json")) {
        const char *p = ct ? strstr(ct, "json-header-size=") : NULL;
        v = p ? p + strlen("json-header-size=") : NULL;
        if (!v) {
            srv_reply_error(r, 400, "bad_binary_header",
                            "Content-Type %s needs a json-header-size=<bytes> parameter", mt);
            return -1;
        }
    }
    if (!v) { /* only the header marks a binary body: aiohttp clients label JSON octet-stream */
        *hlen = r->body_len;
        if (api_json_media_type(mt) || !strcmp(mt, "application/octet-stream")) return 0;
        srv_reply_error(r, 415, "unsupported_media_type",
                        "expected Content-Type: application/json (or binary tensor data with an "
                        "Inference-Header-Content-Length header), got '%s'", mt);
        return -1;
    }
    if (!api_json_media_type(mt) && strcmp(mt, "application/octet-stream") &&
        strcmp(mt, "application/vnd.sagemaker-triton.binary+json")) {
        srv_reply_error(r, 415, "unsupported_media_type",
                        "binary tensor data comes as application/octet-stream, got '%s'", mt);
        return -1;
    }
    while (*v == ' ') v++;
    size_t n = 0, digits = 0;
    for (; isdigit((unsigned char)*v) && digits < 19; v++, digits++) n = n * 10 + (size_t)(*v - '0');
    while (*v == ' ') v++;
    if (!digits || (*v && *v != ';') || n > r->body_len) {
        srv_reply_error(r, 400, "bad_binary_header",
                        "the JSON header length must be an integer 0..%zu (the body's size)",
                        r->body_len);
        return -1;
    }
    *hlen = n;
    return 1;
}

/* Reads the input's values: from its JSON "data", or from the bytes after the JSON header when
 * it declares binary_data_size. 0, or -1 after replying. */
static int read_input(srv_req *r, const json_t *in, int binary, const char *bin, size_t bin_len,
                      int u8, int64_t want, float *x, uint8_t *b) {
    const json_t *bds = json_object_get(json_object_get(in, "parameters"), "binary_data_size");
    const json_t *data = json_object_get(in, "data");
    if (!bds) {
        if (binary && bin_len) {
            srv_reply_error(r, 400, "invalid_request",
                            "%zu bytes follow the JSON header but the input declares no "
                            "parameters.binary_data_size", bin_len);
            return -1;
        }
        if (!json_is_array(data)) {
            srv_reply_error(r, 400, "invalid_request", "\"data\" must be an array");
            return -1;
        }
        int64_t k = 0;
        const char *bad = NULL;
        int rc = flatten(data, u8, x, b, want, &k, &bad);
        if (rc == -1) {
            srv_reply_error(r, 400, "bad_value", "%s", bad);
            return -1;
        }
        if (rc == -2 || k != want) {
            srv_reply_error(r, 400, "data_size_mismatch", "shape needs %lld values, data has %s%lld",
                            (long long)want, rc == -2 ? "more than " : "", (long long)k);
            return -1;
        }
        return 0;
    }
    if (!binary) {
        srv_reply_error(r, 400, "invalid_request",
                        "parameters.binary_data_size needs the Inference-Header-Content-Length "
                        "header (the JSON part's length)");
        return -1;
    }
    if (data) {
        srv_reply_error(r, 400, "invalid_request",
                        "an input has either \"data\" or parameters.binary_data_size, not both");
        return -1;
    }
    const int64_t need = want * (u8 ? 1 : 4);
    if (!json_is_integer(bds) || json_integer_value(bds) != need || bin_len != (size_t)need) {
        srv_reply_error(r, 400, "data_size_mismatch",
                        "shape needs %lld bytes of %s; binary_data_size says %lld and %zu bytes "
                        "follow the JSON header", (long long)need, u8 ? "UINT8" : "FP32",
                        json_is_integer(bds) ? (long long)json_integer_value(bds) : -1LL, bin_len);
        return -1;
    }
    if (u8) {
        memcpy(b, bin, (size_t)want);
        return 0;
    }
    for (int64_t t = 0; t < want; t++) {
        const unsigned char *p = (const unsigned char *)bin + 4 * t;
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f)) {
            srv_reply_error(r, 400, "bad_value", "FP32 data must be finite (value %lld is not)",
                            (long long)t);
            return -1;
        }
        x[t] = f;
    }
    return 0;
}

void api_v2_infer(srv_req *r) {
    size_t hlen;
    int binary = binary_header(r, &hlen);
    if (binary < 0) return;
    json_t *req = api_json_parse(r, r->body, hlen);
    if (!req) return;
    srv_model *m = api_model_acquire(r);
    if (!m) {
        json_decref(req);
        return;
    }
    const json_t *inputs = json_object_get(req, "inputs"), *in = json_array_get(inputs, 0);
    const json_t *id = json_object_get(req, "id");
    const char *dt = json_string_value(json_object_get(in, "datatype"));
    const char *iname = json_string_value(json_object_get(in, "name"));
    json_t *outs = NULL;
    api_job *j = NULL;
    srv_batcher *stats = m->batcher; /* failures before the queue are counted here */
    int n, queued = 0;
    if (id && !json_is_string(id)) {
        srv_reply_error(r, 400, "invalid_request", "\"id\" must be a string");
    } else if (!json_is_array(inputs) || json_array_size(inputs) != 1 || !json_is_object(in)) {
        srv_reply_error(r, 400, "invalid_request", "\"inputs\" must be an array of one tensor");
    } else if (!iname || strcmp(iname, "input")) {
        srv_reply_error(r, 400, "unknown_input", "the model's input is named \"input\", not '%s'",
                        iname ? iname : "(none)");
    } else if (!dt || (strcmp(dt, "FP32") && strcmp(dt, "UINT8"))) {
        srv_reply_error(r, 400, "unsupported_datatype",
                        "datatype '%s' is not supported (FP32 or UINT8)", dt ? dt : "(none)");
    } else if ((n = samples_of(r, json_object_get(in, "shape"), m)) < 0) {
        /* replied */
    } else if ((outs = parse_outputs(r, req, (int)DYN_MIN(m->out_numel, 4096))) == NULL) {
        /* replied */
    } else if ((j = api_job_new(r, m, n)) == NULL) {
        m = NULL; /* released by api_job_new (after replying 500) */
        stats = NULL;
    } else {
        m = NULL; /* owned by the job */
        int u8 = !strcmp(dt, "UINT8");
        int64_t want = (int64_t)n * j->m->in_numel;
        uint8_t *b = u8 ? malloc((size_t)want) : NULL;
        if (u8 && !b) {
            srv_reply_error(r, 500, "out_of_memory", "out of memory");
        } else if (!read_input(r, in, binary, r->body + hlen, r->body_len - hlen, u8, want, j->x,
                               b)) {
            if (u8 && j->m->is_image) dyn_preprocess_u8(&j->m->pp, b, want, j->x);
            else if (u8)
                for (int64_t t = 0; t < want; t++) j->x[t] = b[t];
            j->state = json_pack("{s:O, s:O*}", "outputs", outs, "id", id); /* no id: none */
            api_job_submit(r, j, infer_done); /* the batcher counts its own refusals */
            queued = 1;
        }
        free(b);
    }
    if (stats && !queued && r->status >= 400)
        srv_batcher_count_fail(stats, (uint64_t)((dyn_now() - r->t_start) * 1e9));
    json_decref(outs);
    json_decref(req);
    srv_model_release(m);
}
