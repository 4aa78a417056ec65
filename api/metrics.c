/* metrics.c — GET /metrics: the recorded series plus gauges sampled now (queue depth and
 * readiness per served version, requests in flight, draining). */
#include <stdio.h>

#include "api/api.h"
#include "server/jobs.h"

static void model_gauges(srv_model *m, void *arg) {
    FILE *f = arg;
    fprintf(f, "dynd_queue_depth{model=\"%s\",version=\"%d\"} %d\n", m->name, m->version,
            srv_batcher_depth(m->batcher));
}

void api_metrics(srv_req *r) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return;
    }
    srv_metrics_write(r->srv->metrics, f);
    srv_jobs_metrics_write(r->srv->jobs, f);
    fprintf(f, "# HELP dynd_queue_depth Requests waiting for a batch worker.\n"
               "# TYPE dynd_queue_depth gauge\n");
    srv_repo_foreach(r->srv->repo, model_gauges, f);
    fprintf(f, "# HELP dynd_models_ready Model versions served.\n# TYPE dynd_models_ready gauge\n"
               "dynd_models_ready %d\n", srv_repo_count(r->srv->repo));
    srv_repo_usage u = srv_repo_usage_get(r->srv->repo);
    fprintf(f, "# HELP dynd_models_loaded Model versions loaded (memory budget: max_loaded_models)."
               "\n# TYPE dynd_models_loaded gauge\ndynd_models_loaded %d\n"
               "# HELP dynd_models_not_loaded Model versions with a file, not loaded now (memory "
               "budget); a request loads them.\n# TYPE dynd_models_not_loaded gauge\n"
               "dynd_models_not_loaded %d\n"
               "# HELP dynd_model_memory_bytes Memory the loaded model versions hold, as measured "
               "at their load.\n# TYPE dynd_model_memory_bytes gauge\ndynd_model_memory_bytes %lld\n"
               "# HELP dynd_model_evictions_total Model versions unloaded to make room in the "
               "memory budget.\n# TYPE dynd_model_evictions_total counter\n"
               "dynd_model_evictions_total %llu\n",
            u.loaded, u.lazy, u.mem_bytes, u.evictions);
    fprintf(f, "# HELP dynd_inflight_requests Requests being handled.\n"
               "# TYPE dynd_inflight_requests gauge\ndynd_inflight_requests %d\n",
            atomic_load(&r->srv->inflight));
    fprintf(f, "# HELP dynd_draining 1 after SIGTERM.\n# TYPE dynd_draining gauge\n"
               "dynd_draining %d\n", atomic_load(&r->srv->draining));
    fclose(f);
    srv_req_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, n);
}
