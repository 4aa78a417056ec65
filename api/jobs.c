/* jobs.c — the jobs API: POST /v1/conversions, POST /v1/finetunes, GET /v1/jobs,
 * GET|DELETE /v1/jobs/{id}, POST /v1/jobs/{id}/resume. The work and its records are
 * server/jobs.c; this file turns requests into options and results into replies.
 *
 * Options of a conversion come from a JSON body ({"model": "<repository model>", "ratio": 4,
 * ...}), or, with an upload, from the query string (raw application/octet-stream body:
 * POST /v1/conversions?ratio=4&output=lenet) or from the text fields of a multipart/form-data
 * body (-F file=@model.onnx -F ratio=4, or one field "options" holding a JSON object).
 * A submitted job answers 202 Accepted with Location: /v1/jobs/{id} and the job's record.
 */
#include <string.h>

#include "api/api.h"
#include "server/jobs.h"

static void reply_job_err(srv_req *r, const srv_job_err *e) {
    srv_reply_error(r, e->status, e->code, "%s", e->msg);
}

static srv_jobs *jobs_or_reply(srv_req *r) {
    if (!r->srv->jobs)
        srv_reply_error(r, 503, "jobs_unavailable",
                        "jobs are disabled: state_dir is not usable (see the start-up log)");
    return r->srv->jobs;
}

/* The options of an upload: query string, then multipart fields (an "options" field holding a
 * JSON object is merged in). New reference, or NULL after replying. */
static json_t *upload_options(srv_req *r) {
    char bad[64];
    int why;
    json_t *o = srv_req_query_json(r, bad, sizeof bad, &why);
    if (!o) {
        if (bad[0] && why == SRV_QUERY_REPEATED)
            srv_reply_error(r, 400, "invalid_parameter",
                            "query parameter '%s' is given more than once; give it once", bad);
        else if (bad[0])
            srv_reply_error(r, 400, "invalid_parameter",
                            "query parameter '%s': not valid percent-encoding or UTF-8", bad);
        else srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(r->form, k, v) {
        if (strcmp(k, "options")) {
            json_object_set(o, k, v);
            continue;
        }
        json_error_t je;
        json_t *j = json_loads(json_string_value(v), JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(j)) {
            json_decref(j);
            json_decref(o);
            srv_reply_error(r, 400, "bad_json", "the \"options\" field must hold a JSON object");
            return NULL;
        }
        json_object_update(o, j);
        json_decref(j);
    }
    return o;
}

static void submit(srv_req *r, int kind) {
    srv_jobs *js = jobs_or_reply(r);
    if (!js) return;
    if (atomic_load(&r->srv->draining)) {
        srv_req_header_add(r, "Retry-After", "1");
        srv_reply_error(r, 503, "shutting_down", "the server is shutting down; submit the job elsewhere");
        return;
    }
    const int upload = r->upload_path != NULL;
    json_t *opts = upload ? upload_options(r) : api_body_json(r);
    if (!opts) return;
    srv_job_err e = {0};
    json_t *spec = srv_jobs_spec(js, kind, opts, upload, &e);
    json_decref(opts);
    json_t *rec = spec ? srv_jobs_submit(js, kind, spec, r->upload_path, &e) : NULL;
    json_decref(spec);
    if (!rec) {
        reply_job_err(r, &e);
        return;
    }
    if (upload) { /* the file is the job's now */
        free(r->upload_path);
        r->upload_path = NULL;
    }
    char loc[96];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", json_string_value(json_object_get(rec, "id")));
    srv_req_header_add(r, "Location", loc);
    srv_reply_json(r, 202, rec);
}

void api_jobs_convert(srv_req *r) { submit(r, SRV_JOB_CONVERSION); }
void api_jobs_finetune(srv_req *r) { submit(r, SRV_JOB_FINETUNE); }

void api_jobs_list(srv_req *r) {
    srv_jobs *js = jobs_or_reply(r);
    if (!js) return;
    char buf[33];
    int state = -1, kind = -1, has;
    if ((has = api_query(r, "state", buf, sizeof buf)) < 0) return;
    if (has && (state = srv_job_state_parse(buf)) < 0) {
        srv_reply_error(r, 400, "invalid_parameter",
                        "state must be queued, running, succeeded, failed, cancelled or interrupted");
        return;
    }
    if ((has = api_query(r, "kind", buf, sizeof buf)) < 0) return;
    if (has) {
        for (int k = 0; k < SRV_JOB_KIND_COUNT; k++)
            if (!strcmp(buf, srv_job_kind_name(k))) kind = k;
        if (kind < 0) {
            srv_reply_error(r, 400, "invalid_parameter", "kind must be conversion or finetune");
            return;
        }
    }
    srv_reply_json(r, 200, srv_jobs_list(js, state, kind));
}

void api_job_get(srv_req *r) {
    srv_jobs *js = jobs_or_reply(r);
    if (!js) return;
    srv_job_err e = {0};
    json_t *rec = srv_jobs_get(js, srv_req_param(r, "id"), &e);
    if (rec) srv_reply_json(r, 200, rec);
    else reply_job_err(r, &e);
}

void api_job_cancel(srv_req *r) {
    srv_jobs *js = jobs_or_reply(r);
    if (!js) return;
    srv_job_err e = {0};
    int now = 0;
    json_t *rec = srv_jobs_cancel(js, srv_req_param(r, "id"), &now, &e);
    if (rec) srv_reply_json(r, now ? 200 : 202, rec);
    else reply_job_err(r, &e);
}

void api_job_resume(srv_req *r) {
    srv_jobs *js = jobs_or_reply(r);
    if (!js) return;
    srv_job_err e = {0};
    json_t *rec = srv_jobs_resume(js, srv_req_param(r, "id"), &e);
    if (!rec) {
        reply_job_err(r, &e);
        return;
    }
    char loc[96];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", json_string_value(json_object_get(rec, "id")));
    srv_req_header_add(r, "Location", loc);
    srv_reply_json(r, 202, rec);
}
