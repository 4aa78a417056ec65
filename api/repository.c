/* repository.c — GET /v1/models and the model-repository extension (index, load, unload). */
#include <string.h>

#include "api/api.h"

static void add_model(srv_model *m, void *arg) {
    json_t *by_name = arg;
    json_t *e = json_object_get(by_name, m->name);
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    if (!e) {
        char shape[96];
        dyn_shape_str(&m->model->input, shape, sizeof shape);
        e = json_pack("{s:s, s:[], s:s, s:s, s:I, s:b, s:b}", "name", m->name, "versions",
                      "default_version", v, "input_shape", shape, "classes",
                      (json_int_t)m->out_numel, "image_input", m->is_image, "ready", 1);
        json_object_set_new(by_name, m->name, e);
    }
    json_array_append_new(json_object_get(e, "versions"), json_string(v));
    json_object_set_new(e, "default_version", json_string(v)); /* ascending: the last wins */
    /* the default version's form and sizes (what `dyn inspect` totals; the web console's
     * models page): floats in the file and in memory, multiply-accumulates per sample, mean
     * structural entropy of the DyN layers, where it runs and how long its load took */
    dyn_layer_stats st;
    dyn_model_stats(m->model, NULL, &st);
    json_t *extra = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "form",
                                    st.is_dyn ? "dyn" : "dense", "device", m->device,
                                    "stored_floats", (json_int_t)st.stored_floats,
                                    "memory_floats", (json_int_t)st.memory_floats, "macs",
                                    (json_int_t)st.macs, "entropy_bits", st.entropy_bits,
                                    "load_seconds", m->load_seconds, "loaded_at", m->loaded_at);
    json_object_update(e, extra); /* extra NULL (ENOMEM): nothing added */
    json_decref(extra);
}

void api_v1_models(srv_req *r) {
    json_t *by_name = json_object();
    srv_repo_foreach(r->srv->repo, add_model, by_name);
    json_t *list = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(by_name, k, v) json_array_append(list, v);
    /* models with files that are not served (failed, unloaded, or not loaded now: memory
     * budget), once per name */
    json_t *idx = srv_repo_index(r->srv->repo);
    size_t i;
    json_array_foreach(idx, i, v) {
        const char *nm = json_string_value(json_object_get(v, "name"));
        if (!strcmp(json_string_value(json_object_get(v, "state")), "READY") ||
            json_object_get(by_name, nm))
            continue;
        json_t *row = json_pack("{s:s, s:b, s:O}", "name", nm, "ready", 0, "reason",
                                json_object_get(v, "reason"));
        json_array_append(list, row);
        json_object_set_new(by_name, nm, row);
    }
    json_decref(idx);
    json_decref(by_name);
    srv_reply_json(r, 200, json_pack("{s:o}", "models", list));
}

/* The optional JSON body of a repository request: NULL body (none) or an object whose keys are
 * all in `allowed` (NULL-terminated). 0, or -1 after replying 400. *out: new reference or NULL. */
static int repo_body(srv_req *r, const char *const *allowed, json_t **out) {
    *out = NULL;
    size_t i = 0;
    while (i < r->body_len && (r->body[i] == ' ' || r->body[i] == '\n' || r->body[i] == '\r' ||
                               r->body[i] == '\t'))
        i++;
    if (i == r->body_len) return 0; /* no body: the defaults */
    json_t *j = api_body_json(r);
    if (!j) return -1;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        int ok = 0;
        for (int a = 0; allowed[a] && !ok; a++) ok = !strcmp(k, allowed[a]);
        if (!ok) {
            srv_reply_error(r, 400, "unknown_field", "unknown field '%s' in the request body", k);
            json_decref(j);
            return -1;
        }
    }
    *out = j;
    return 0;
}

void api_repo_index(srv_req *r) {
    static const char *const allowed[] = {"ready", NULL};
    json_t *body;
    if (repo_body(r, allowed, &body)) return;
    const json_t *ready = json_object_get(body, "ready");
    if (ready && !json_is_boolean(ready)) {
        json_decref(body);
        srv_reply_error(r, 400, "invalid_request", "\"ready\" must be true or false");
        return;
    }
    const int only_ready = json_is_true(ready);
    json_decref(body);
    dyn_err err = {0};
    if (srv_repo_scan(r->srv->repo, 0, &err) < 0) {
        srv_reply_error(r, 500, "repository_unreadable", "%s", err.msg);
        return;
    }
    json_t *idx = srv_repo_index(r->srv->repo);
    if (idx && only_ready) { /* {"ready": true}: the versions that can be served now */
        json_t *kept = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(idx, i, v) {
            const char *state = json_string_value(json_object_get(v, "state"));
            if (state && !strcmp(state, "READY")) json_array_append(kept, v);
        }
        json_decref(idx);
        idx = kept;
    }
    srv_reply_json(r, 200, idx);
}

void api_repo_load(srv_req *r) {
    const char *name = srv_req_param(r, "name");
    if (api_name_check(r, name)) return;
    static const char *const allowed[] = {"parameters", NULL};
    json_t *body;
    if (repo_body(r, allowed, &body)) return;
    const json_t *params = json_object_get(body, "parameters");
    if (params && !json_is_object(params)) {
        json_decref(body);
        srv_reply_error(r, 400, "invalid_request", "\"parameters\" must be an object");
        return;
    }
    if (json_object_size(params)) { /* Triton's "config" / "file:..." overrides: not supported */
        const char *k = json_object_iter_key(json_object_iter((json_t *)params));
        srv_reply_error(r, 400, "unsupported_parameter",
                        "load parameter '%s' is not supported: a model is loaded from its file in "
                        "model_dir as it is (batching settings come from the daemon's "
                        "configuration)", k);
        json_decref(body);
        return;
    }
    json_decref(body);
    dyn_err err = {0};
    int rc = srv_repo_load(r->srv->repo, name, &err);
    if (rc == DYN_EINVAL) {
        srv_reply_error(r, 404, "model_not_found", "%s", err.msg);
    } else if (rc) {
        srv_reply_error(r, 422, "model_load_failed", "%s", err.msg);
    } else {
        snprintf(r->model_label, sizeof r->model_label, "%s", name);
        srv_reply_json(r, 200, json_pack("{s:s, s:s}", "name", name, "state", "READY"));
    }
}

void api_repo_unload(srv_req *r) {
    const char *name = srv_req_param(r, "name");
    if (api_name_check(r, name)) return;
    dyn_err err = {0};
    if (srv_repo_unload(r->srv->repo, name, &err)) {
        srv_reply_error(r, 404, "model_not_found", "%s", err.msg);
        return;
    }
    srv_reply_json(r, 200, json_pack("{s:s, s:s}", "name", name, "state", "UNAVAILABLE"));
}
