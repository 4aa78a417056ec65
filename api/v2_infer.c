/* v2_infer.c — POST /v2/models/{name}[/versions/{v}]/infer (Open Inference Protocol, JSON).
 *
 * Input: one tensor named "input", datatype FP32 (model inputs as they are) or UINT8 (raw 8-bit
 * pixels, normalized with the model's preprocess metadata exactly as /v1 classify does, so the
 * same pixels give the same scores), shape [N, ...input] (or the input shape alone for N = 1),
 * data flat or nested row-major. Outputs: "logits" and "probabilities" (softmax), FP32 [N, C];
 * an output requested with "parameters": {"classification": k} comes back as BYTES
 * "score:index:label" strings, shape [N, k] (Triton's classification extension).
 */
#include <math.h>
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

static void infer_done(srv_req *r) {
    api_job *j = r->user;
    if (api_job_check(r, j)) return;
    const srv_model *m = j->m;
    int C = (int)m->out_numel;
    float *probs = api_job_probs(j);
    if (!probs) {
        api_reply_error(r, 500, "out_of_memory", "out of memory building the reply");
        return;
    }
    json_t *outs = json_array();
    const json_t *reqs = json_object_get(j->state, "outputs");
    size_t i;
    const json_t *o;
    json_array_foreach(reqs, i, o) {
        int which = (int)json_integer_value(json_array_get(o, 0));
        int k = (int)json_integer_value(json_array_get(o, 1));
        const float *src = which ? probs : j->y;
        json_t *data = json_array();
        if (k > 0) {
            int idx[4096];
            char s[256];
            for (int n = 0; n < j->n; n++) {
                api_topk(src + (int64_t)n * C, C, k, idx);
                for (int t = 0; t < k; t++) {
                    const char *label = m->model->labels && idx[t] < m->model->nlabels
                                            ? m->model->labels[idx[t]] : "";
                    snprintf(s, sizeof s, "%f:%d:%s", (double)src[(int64_t)n * C + idx[t]],
                             idx[t], label);
                    json_array_append_new(data, json_string(s));
                }
            }
            json_array_append_new(outs, json_pack("{s:s, s:s, s:[i,i], s:o}", "name",
                                                  OUT_NAMES[which], "datatype", "BYTES", "shape",
                                                  j->n, k, "data", data));
        } else {
            for (int64_t t = 0; t < (int64_t)j->n * C; t++)
                json_array_append_new(data, json_real((double)src[t]));
            json_array_append_new(outs, json_pack("{s:s, s:s, s:[i,i], s:o}", "name",
                                                  OUT_NAMES[which], "datatype", "FP32", "shape",
                                                  j->n, C, "data", data));
        }
    }
    free(probs);
    json_t *body = json_pack("{s:s, s:o, s:o}", "model_name", m->name, "model_version",
                             model_version_str(m), "outputs", outs);
    json_t *id = json_object_get(j->state, "id");
    if (body && id) json_object_set(body, "id", id);
    api_reply_json(r, 200, body);
}

/* Parses "outputs" into [[which, k], ...] (all outputs when absent). NULL after replying. */
static json_t *parse_outputs(srv_req *r, const json_t *req, int nclasses) {
    json_t *list = json_array();
    const json_t *outs = json_object_get(req, "outputs");
    if (!outs) {
        json_array_append_new(list, json_pack("[i,i]", 0, 0));
        json_array_append_new(list, json_pack("[i,i]", 1, 0));
        return list;
    }
    if (!json_is_array(outs) || json_array_size(outs) == 0 || json_array_size(outs) > 2) {
        json_decref(list);
        api_reply_error(r, 400, "invalid_request", "\"outputs\" must be an array of 1 or 2 objects");
        return NULL;
    }
    size_t i;
    const json_t *o;
    json_array_foreach(outs, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        int which = name && !strcmp(name, "logits") ? 0 : name && !strcmp(name, "probabilities") ? 1 : -1;
        if (which < 0) {
            json_decref(list);
            api_reply_error(r, 400, "unknown_output",
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
                api_reply_error(r, 400, "invalid_request",
                                "parameters.classification must be an integer 1..%d", nclasses);
                return NULL;
            }
            k = (int)json_integer_value(cls);
        }
        json_array_append_new(list, json_pack("[i,i]", which, k));
    }
    return list;
}

/* Number of samples from a shape against the model input; -1 after replying. */
static int samples_of(srv_req *r, const json_t *shape, const srv_model *m) {
    const dyn_shape *in = &m->model->input;
    char want[96];
    dyn_shape_str(in, want, sizeof want);
    size_t nd = json_array_size(shape);
    if (!json_is_array(shape) || (nd != (size_t)in->ndim + 1 && nd != (size_t)in->ndim)) {
        api_reply_error(r, 400, "shape_mismatch", "input shape must be [N, %s] (model input %s)",
                        want + 1, want);
        return -1;
    }
    size_t off = nd == (size_t)in->ndim + 1;
    json_int_t n = off ? json_integer_value(json_array_get(shape, 0)) : 1;
    if (off && (!json_is_integer(json_array_get(shape, 0)) || n < 1 || n > MAX_SAMPLES)) {
        api_reply_error(r, 400, "shape_mismatch", "batch size must be an integer 1..%d",
                        MAX_SAMPLES);
        return -1;
    }
    for (int d = 0; d < in->ndim; d++) {
        const json_t *v = json_array_get(shape, (size_t)d + off);
        if (!json_is_integer(v) || json_integer_value(v) != in->d[d]) {
            api_reply_error(r, 400, "shape_mismatch", "input shape must be [N, %s] (model input %s)",
                            want + 1, want);
            return -1;
        }
    }
    return (int)n;
}

void api_v2_infer(srv_req *r) {
    json_t *req = api_body_json(r);
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
    int n;
    if (id && !json_is_string(id)) {
        api_reply_error(r, 400, "invalid_request", "\"id\" must be a string");
    } else if (!json_is_array(inputs) || json_array_size(inputs) != 1 || !json_is_object(in)) {
        api_reply_error(r, 400, "invalid_request", "\"inputs\" must be an array of one tensor");
    } else if (!iname || strcmp(iname, "input")) {
        api_reply_error(r, 400, "unknown_input", "the model's input is named \"input\", not '%s'",
                        iname ? iname : "(none)");
    } else if (!dt || (strcmp(dt, "FP32") && strcmp(dt, "UINT8"))) {
        api_reply_error(r, 400, "unsupported_datatype",
                        "datatype '%s' is not supported (FP32 or UINT8)", dt ? dt : "(none)");
    } else if ((n = samples_of(r, json_object_get(in, "shape"), m)) < 0) {
        /* replied */
    } else if (!json_is_array(json_object_get(in, "data"))) {
        api_reply_error(r, 400, "invalid_request", "\"data\" must be an array");
    } else if ((outs = parse_outputs(r, req, (int)DYN_MIN(m->out_numel, 4096))) != NULL &&
               (j = api_job_new(r, m, n)) != NULL) {
        m = NULL; /* owned by the job */
        int u8 = !strcmp(dt, "UINT8");
        int64_t want = (int64_t)n * j->m->in_numel, k = 0;
        uint8_t *b = u8 ? malloc((size_t)want) : NULL;
        const char *bad = NULL;
        int rc = u8 && !b ? -3 : flatten(json_object_get(in, "data"), u8, j->x, b, want, &k, &bad);
        if (rc == -3) {
            api_reply_error(r, 500, "out_of_memory", "out of memory");
        } else if (rc == -1) {
            api_reply_error(r, 400, "bad_value", "%s", bad);
        } else if (rc == -2 || k != want) {
            api_reply_error(r, 400, "data_size_mismatch",
                            "shape needs %lld values, data has %s%lld", (long long)want,
                            rc == -2 ? "more than " : "", (long long)k);
        } else {
            if (u8 && j->m->is_image) dyn_preprocess_u8(&j->m->pp, b, want, j->x);
            else if (u8)
                for (int64_t t = 0; t < want; t++) j->x[t] = b[t];
            j->state = json_pack("{s:O, s:O?}", "outputs", outs, "id", id);
            api_job_submit(r, j, infer_done);
        }
        free(b);
    }
    json_decref(outs);
    json_decref(req);
    srv_model_release(m);
}
