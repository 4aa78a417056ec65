/* errors.c — the request helpers every handler uses (JSON body with a depth limit, query values,
 * the route's model with a reference). The replies themselves (srv_reply_json /
 * srv_reply_error) are the HTTP layer's: server/reply.c. */
#include <ctype.h>
#include <stdarg.h>
#include <string.h>

#include "api/api.h"
#include "server/log.h"

int api_query(srv_req *r, const char *key, char *buf, size_t n) {
    int rc = srv_req_query_arg(r, key, buf, n);
    if (rc == SRV_QUERY_REPEATED) {
        srv_reply_error(r, 400, "invalid_parameter",
                        "query parameter '%s' is given more than once; give it once", key);
        return -1;
    }
    if (rc == SRV_QUERY_INVALID) {
        srv_reply_error(r, 400, "invalid_parameter",
                        "query parameter '%s': the value is not valid percent-encoding (or holds "
                        "%%00) or is longer than %zu characters", key, n - 1);
        return -1;
    }
    return rc == SRV_QUERY_OK;
}

/* Nesting depth of JSON text, strings skipped; stops counting past `limit`. */
static int json_depth(const char *s, size_t n, int limit) {
    int depth = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
            if (max > limit) return max;
        } else if (c == ']' || c == '}') depth--;
    }
    return max;
}

json_t *api_json_parse(srv_req *r, const char *text, size_t len) {
    if (!len) {
        srv_reply_error(r, 400, "bad_json", "the request needs a JSON body");
        return NULL;
    }
    int depth = json_depth(text, len, r->cfg->max_json_depth);
    if (depth > r->cfg->max_json_depth) {
        srv_reply_error(r, 400, "json_too_deep", "JSON nesting deeper than %d levels",
                        r->cfg->max_json_depth);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        srv_reply_error(r, 400, "bad_json", "malformed JSON at line %d column %d: %s", je.line,
                        je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        srv_reply_error(r, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

int api_json_media_type(const char *mt) {
    /* application/x-www-form-urlencoded is what `curl -d @file.json` sends without -H. */
    return !mt[0] || !strcmp(mt, "application/json") ||
           !strcmp(mt, "application/x-www-form-urlencoded") || !strcmp(mt, "text/plain");
}

json_t *api_body_json(srv_req *r) {
    char mt[96];
    srv_media_type(r, mt, sizeof mt);
    if (!api_json_media_type(mt)) {
        srv_reply_error(r, 415, "unsupported_media_type",
                        "expected Content-Type: application/json, got '%s'", mt);
        return NULL;
    }
    return api_json_parse(r, r->body, r->body_len);
}

static int parse_version(const char *s) {
    if (!s || !*s || strlen(s) > 9) return -1;
    int v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return -1;
        v = v * 10 + (*s - '0');
    }
    return v > 0 ? v : -1;
}

int api_name_check(srv_req *r, const char *name) {
    if (srv_repo_name_valid(name)) return 0;
    srv_reply_error(r, 400, "invalid_name",
                    "model names are 1-64 characters of A-Z a-z 0-9 _ . - and do not start "
                    "with '.'");
    return -1;
}

int api_version_param(srv_req *r) {
    const char *vs = srv_req_param(r, "version");
    int version = vs ? parse_version(vs) : 0;
    if (version < 0) srv_reply_error(r, 400, "invalid_version", "a version is a positive integer");
    return version;
}

srv_model *api_model_acquire(srv_req *r) {
    const char *name = srv_req_param(r, "name");
    if (api_name_check(r, name)) return NULL;
    int version = api_version_param(r);
    if (version < 0) return NULL;
    int known = 0;
    srv_repo_why why = SRV_REPO_NOT_SERVED;
    dyn_err err = {0};
    /* also loads a version that is not loaded now (memory budget) or that another replica
     * published since our last scan (server/repository.h), within the request's deadline */
    srv_model *m = srv_repo_acquire_load(r->srv->repo, name, version, r->deadline, &known, &why,
                                         &err);
    if (m) {
        snprintf(r->model_label, sizeof r->model_label, "%s", m->name);
        return m;
    }
    if (known) snprintf(r->model_label, sizeof r->model_label, "%s", name);
    if (why == SRV_REPO_TIMEOUT || why == SRV_REPO_BUDGET_BUSY) {
        srv_req_header_add(r, "Retry-After", "1");
        if (why == SRV_REPO_TIMEOUT)
            srv_reply_error(r, 503, "model_loading", "model '%s' is being loaded (or the "
                            "repository scanned) past this request's deadline; retry", name);
        else
            srv_reply_error(r, 503, "model_budget_busy", "model '%s' is not loaded and the memory "
                            "budget (max_loaded_models / max_model_memory_bytes) is held by "
                            "models serving requests; retry", name);
        return NULL;
    }
    if (why == SRV_REPO_LOAD_FAILED) {
        srv_reply_error(r, 503, "model_unavailable", "model '%s' did not load: %s", name, err.msg);
        return NULL;
    }
    if (!known) {
        srv_reply_error(r, 404, "model_not_found", "unknown model '%s' (GET /v1/models lists them)",
                        name);
    } else if (version > 0) {
        if (srv_repo_state(r->srv->repo, name, 0, NULL, 0) != SRV_STATE_UNAVAILABLE) {
            srv_reply_error(r, 404, "version_not_found", "model '%s' has no version %d", name,
                            version);
        } else {
            srv_reply_error(r, 503, "model_unavailable", "model '%s' is not loaded", name);
        }
    } else {
        srv_reply_error(r, 503, "model_unavailable",
                        "model '%s' is not loaded (see POST /v2/repository/index for the reason)",
                        name);
    }
    return NULL;
}

static void release_held_model(srv_req *r) {
    srv_model_release(r->user);
    r->user = NULL;
}

void api_hold_model(srv_req *r, srv_model *m) {
    r->user = m;
    r->cleanup = release_held_model;
}
