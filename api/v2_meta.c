/* v2_meta.c — Open Inference Protocol health, server and model metadata, model readiness and
 * the statistics extension. */
#include <string.h>

#include "api/api.h"

void api_v2_live(srv_req *r) { api_reply_json(r, 200, json_pack("{s:b}", "live", 1)); }

void api_v2_ready(srv_req *r) {
    if (atomic_load(&r->srv->draining))
        api_reply_error_with(r, 503, "not_ready", json_pack("{s:b}", "ready", 0),
                             "the server is shutting down");
    else if (!atomic_load(&r->srv->ready))
        api_reply_error_with(r, 503, "not_ready", json_pack("{s:b}", "ready", 0),
                             "the model repository is still loading");
    else
        api_reply_json(r, 200, json_pack("{s:b}", "ready", 1));
}

void api_v2_server_meta(srv_req *r) {
    api_reply_json(r, 200, json_pack("{s:s, s:s, s:[s,s,s,s]}", "name", "dynd", "version",
                                     DYN_VERSION, "extensions", "classification", "statistics",
                                     "binary_tensor_data", "model_repository"));
}

typedef struct versions_ctx {
    const char *name;
    json_t *list;
} versions_ctx;

static void collect_version(srv_model *m, void *arg) {
    versions_ctx *c = arg;
    if (strcmp(m->name, c->name)) return;
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    json_array_append_new(c->list, json_string(v));
}

static json_t *shape_json(const dyn_shape *s, int batch_dim) {
    json_t *a = json_array();
    if (batch_dim) json_array_append_new(a, json_integer(-1));
    for (int d = 0; d < s->ndim; d++) json_array_append_new(a, json_integer(s->d[d]));
    return a;
}

json_t *api_model_meta_json(srv_repo *repo, const srv_model *m, int this_version_only) {
    versions_ctx vc = {m->name, json_array()};
    if (this_version_only) {
        collect_version((srv_model *)m, &vc);
    } else {
        srv_repo_foreach(repo, collect_version, &vc);
    }
    dyn_shape out = {1, {m->out_numel}};
    json_t *labels = json_array();
    for (int i = 0; i < m->model->nlabels; i++)
        json_array_append_new(labels, json_string(m->model->labels[i]));
    json_t *body = json_pack(
        "{s:s, s:o, s:s, s:[{s:s, s:s, s:o}], s:[{s:s, s:s, s:o}, {s:s, s:s, s:o}], s:{s:o}}",
        "name", m->name, "versions", vc.list, "platform", "dynd", "inputs", "name", "input",
        "datatype", "FP32", "shape", shape_json(&m->model->input, 1), "outputs", "name", "logits",
        "datatype", "FP32", "shape", shape_json(&out, 1), "name", "probabilities", "datatype",
        "FP32", "shape", shape_json(&out, 1), "parameters", "labels", labels);
    if (body && m->model->preprocess)
        json_object_set(json_object_get(body, "parameters"), "preprocess", m->model->preprocess);
    if (body && m->model->info)
        json_object_set(json_object_get(body, "parameters"), "info", m->model->info);
    return body;
}

void api_v2_model_meta(srv_req *r) {
    srv_model *m = api_model_acquire(r);
    if (!m) return;
    json_t *body = api_model_meta_json(r->srv->repo, m, srv_req_param(r, "version") != NULL);
    srv_model_release(m);
    api_reply_json(r, 200, body);
}

void api_v2_model_ready(srv_req *r) {
    srv_model *m = api_model_acquire(r);
    if (!m) return;
    srv_model_release(m);
    api_reply_json(r, 200, json_pack("{s:s, s:b}", "name", srv_req_param(r, "name"), "ready", 1));
}

typedef struct stats_ctx {
    const char *name;
    int version;
    json_t *list;
} stats_ctx;

static json_t *count_ns(uint64_t count, uint64_t ns) {
    return json_pack("{s:I, s:I}", "count", (json_int_t)count, "ns", (json_int_t)ns);
}

static void collect_stats(srv_model *m, void *arg) {
    stats_ctx *c = arg;
    if (c->name && strcmp(m->name, c->name)) return;
    if (c->version > 0 && m->version != c->version) return;
    srv_batch_stats s;
    srv_batcher_stats_get(m->batcher, &s);
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    json_array_append_new(
        c->list,
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:{s:o, s:o, s:o, s:o}, s:i}", "name", m->name,
                  "version", v, "last_inference", (json_int_t)(s.last_inference * 1e3),
                  "inference_count", (json_int_t)s.inferences, "execution_count",
                  (json_int_t)s.executions, "inference_stats", "success",
                  count_ns(s.success, s.success_ns), "fail", count_ns(s.fail, 0), "queue",
                  count_ns(s.success, s.queue_ns), "compute_infer",
                  count_ns(s.executions, s.compute_ns), "queue_depth",
                  srv_batcher_depth(m->batcher)));
}

void api_v2_stats(srv_req *r) {
    stats_ctx c = {NULL, 0, NULL};
    if (srv_req_param(r, "name")) { /* validates the name and version, 404 when unknown */
        srv_model *m = api_model_acquire(r);
        if (!m) return;
        c.name = srv_req_param(r, "name");
        c.version = srv_req_param(r, "version") ? m->version : 0;
        srv_model_release(m);
    }
    c.list = json_array();
    srv_repo_foreach(r->srv->repo, collect_stats, &c);
    api_reply_json(r, 200, json_pack("{s:o}", "model_stats", c.list));
}
