/* v2_meta.c — Open Inference Protocol health, server and model metadata, model readiness, the
 * statistics extension and Triton's model configuration. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

void api_v2_live(srv_req *r) { srv_reply_json(r, 200, json_pack("{s:b}", "live", 1)); }

void api_v2_ready(srv_req *r) {
    if (atomic_load(&r->srv->draining))
        srv_reply_error_with(r, 503, "not_ready", json_pack("{s:b}", "ready", 0),
                             "the server is shutting down");
    else if (!atomic_load(&r->srv->ready))
        srv_reply_error_with(r, 503, "not_ready", json_pack("{s:b}", "ready", 0),
                             "the model repository is still loading");
    else
        srv_reply_json(r, 200, json_pack("{s:b}", "ready", 1));
}

/* Besides the protocol's name, version and extensions: "auth", what this dynd asks of a client
 * (no secret in it; a 401 tells as much) so a client such as the web console can ask for the
 * token before its first call instead of after a refusal: "admin" (repository, jobs, data
 * sets need a bearer token), "inference" (inference and metadata need one too), "writes"
 * (jobs, uploads and model changes are accepted at all: false with no auth_tokens unless
 * allow_unauthenticated_writes). */
void api_v2_server_meta(srv_req *r) {
    const srv_config *c = r->cfg;
    srv_reply_json(r, 200, json_pack("{s:s, s:s, s:[s,s,s,s,s], s:{s:b, s:b, s:b}}", "name",
                                     "dynd", "version", DYN_VERSION, "extensions",
                                     "classification", "statistics", "binary_tensor_data",
                                     "model_repository", "model_configuration", "auth", "admin",
                                     c->ntokens > 0, "inference",
                                     c->ntokens > 0 && c->auth_inference, "writes",
                                     c->ntokens > 0 || c->allow_unauthenticated_writes));
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
    srv_reply_json(r, 200, body);
}

/* Ready = loaded and servable. Never loads: a version not loaded now because of the memory
 * budget answers 503 model_not_loaded (its next inference or metadata request loads it). */
void api_v2_model_ready(srv_req *r) {
    const char *name = srv_req_param(r, "name");
    if (api_name_check(r, name)) return;
    int version = api_version_param(r);
    if (version < 0) return;
    char reason[300];
    srv_model_state st = srv_repo_state(r->srv->repo, name, version, reason, sizeof reason);
    if (st == SRV_STATE_UNKNOWN) { /* published by another replica since our last scan? */
        dyn_err err = {0};
        srv_repo_refresh(r->srv->repo, name, &err);
        st = srv_repo_state(r->srv->repo, name, version, reason, sizeof reason);
    }
    if (st != SRV_STATE_UNKNOWN) snprintf(r->model_label, sizeof r->model_label, "%s", name);
    if (st == SRV_STATE_READY) {
        srv_reply_json(r, 200, json_pack("{s:s, s:b}", "name", name, "ready", 1));
    } else if (st == SRV_STATE_UNKNOWN) {
        if (version > 0 && srv_repo_state(r->srv->repo, name, 0, NULL, 0) != SRV_STATE_UNKNOWN)
            srv_reply_error(r, 404, "version_not_found", "model '%s' has no version %d", name,
                            version);
        else
            srv_reply_error(r, 404, "model_not_found",
                            "unknown model '%s' (GET /v1/models lists them)", name);
    } else {
        srv_reply_error_with(r, 503, st == SRV_STATE_LAZY ? "model_not_loaded" : "model_unavailable",
                             json_pack("{s:s, s:b, s:s, s:s}", "name", name, "ready", 0, "state",
                                       "UNAVAILABLE", "reason", reason),
                             "model '%s' is not ready: %s", name, reason);
    }
}

/* Triton's model configuration (GET /v2/models/{name}/config): dims without the batch
 * dimension, max_batch_size and the dynamic batching settings of the version's batcher. */
static json_t *model_config_json(const srv_model *m) {
    const srv_batch_cfg *bc = srv_batcher_cfg(m->batcher);
    dyn_shape out = {1, {m->out_numel}};
    json_t *body = json_pack(
        "{s:s, s:s, s:s, s:i, s:[{s:s, s:s, s:s, s:o}], s:[{s:s, s:s, s:o}, {s:s, s:s, s:o}], "
        "s:[{s:s, s:s, s:i}]}",
        "name", m->name, "platform", "dynd", "backend", "dynd", "max_batch_size", bc->max_batch,
        "input", "name", "input", "data_type", "TYPE_FP32", "format", "FORMAT_NONE", "dims",
        shape_json(&m->model->input, 0), "output", "name", "logits", "data_type", "TYPE_FP32",
        "dims", shape_json(&out, 0), "name", "probabilities", "data_type", "TYPE_FP32", "dims",
        shape_json(&out, 0), "instance_group", "name", m->name, "kind",
        strncmp(m->device, "cuda", 4) ? "KIND_CPU" : "KIND_GPU", "count",
        bc->workers);
    if (body && bc->batching)
        json_object_set_new(body, "dynamic_batching",
                            json_pack("{s:[], s:I, s:b, s:{s:I}}", "preferred_batch_size",
                                      "max_queue_delay_microseconds",
                                      (json_int_t)bc->max_queue_delay_us, "preserve_ordering", 0,
                                      "default_queue_policy", "max_queue_size",
                                      (json_int_t)bc->queue_capacity));
    return body;
}

void api_v2_model_config(srv_req *r) {
    srv_model *m = api_model_acquire(r);
    if (!m) return;
    json_t *body = model_config_json(m);
    srv_model_release(m);
    srv_reply_json(r, 200, body);
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
    int nsizes;
    srv_batch_size_stats *sizes = srv_batcher_batch_stats(m->batcher, &nsizes);
    json_t *batches = json_array();
    for (int i = 0; i < nsizes; i++)
        json_array_append_new(
            batches, json_pack("{s:i, s:o, s:o, s:o}", "batch_size", sizes[i].batch_size,
                               "compute_input", count_ns(sizes[i].count, sizes[i].input_ns),
                               "compute_infer", count_ns(sizes[i].count, sizes[i].infer_ns),
                               "compute_output", count_ns(sizes[i].count, sizes[i].output_ns)));
    free(sizes);
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    /* dynd has no response cache: cache_hit and cache_miss stay 0 (Triton reports them so) */
    json_array_append_new(
        c->list,
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}, s:o, "
                  "s:i}",
                  "name", m->name, "version", v, "last_inference",
                  (json_int_t)(s.last_inference * 1e3), "inference_count",
                  (json_int_t)s.inferences, "execution_count", (json_int_t)s.executions,
                  "inference_stats", "success", count_ns(s.success, s.success_ns), "fail",
                  count_ns(s.fail, s.fail_ns), "queue", count_ns(s.success, s.queue_ns),
                  "compute_input", count_ns(s.success, s.input_ns), "compute_infer",
                  count_ns(s.success, s.infer_ns), "compute_output",
                  count_ns(s.success, s.output_ns), "cache_hit", count_ns(0, 0), "cache_miss",
                  count_ns(0, 0), "batch_stats", batches, "queue_depth",
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
    srv_reply_json(r, 200, json_pack("{s:o}", "model_stats", c.list));
}
