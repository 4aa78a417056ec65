/* daemon.c — dynd's process: flags and config, then the start / stop order (srv_daemon_main,
 * called by the entry point, api/main.c, once it has handed over the route table).
 *
 * Start: settings (exit 2 on a bad one) → logs → metrics → repository → HTTP (live, not
 * ready) → the libuv loop, which runs the repository's first scan (ready once it ends: a
 * request for a model meanwhile waits for its load, within its deadline) and owns signals,
 * repository watching (uv_fs_event on model_dir plus a poll timer; scans run on the libuv
 * thread pool, never on the loop) and the drain. Jobs (server/jobs.h) are scheduled on the loop
 * too (submissions and finished runs wake it, a timer renews their leases) and run on their own
 * bounded worker threads, not on libuv's pool: a job runs for minutes.
 *
 * SIGTERM / SIGINT: readiness turns false at once (liveness stays true), the listening socket
 * stops accepting (server/http.h srv_http_quiesce), requests in flight, queued and on open
 * connections finish; once none is left — or after
 * shutdown_grace_s, when queued requests are cancelled with 503 — HTTP stops and the process
 * exits 0. Running jobs are asked to stop at SIGTERM and are recorded as interrupted
 * (resumable); the drain waits for them within the same grace period. SIGHUP: settings re-read
 * (log level/format, limits, tokens, batching) and every model
 * reloaded with them (load-before-release); listen settings need a restart and say so.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "cpu/isa.h"
#include "backend.h"
#include "cuda/dyn_cuda.h"
#include "dyn/dyn.h"
#include "server/http.h"
#include "server/jobs.h"
#include "server/jobs_backend.h"
#include "server/jobs_pg.h"
#include "server/log.h"
#include "server/server.h"
#include "server/store.h"

typedef struct daemon_state {
    int argc;
    char **argv;
    srv_ctx ctx;
    srv_http *http;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t poll, debounce, drain;
    uv_fs_event_t watch;
    int watching;
    uv_work_t scan_work;
    int scan_running, scan_again, scan_force, scan_force_next;
    int scan_rc; /* the last scan's result (< 0: failed) */
    double drain_started, grace_s;
    int cancelled;
} daemon_state;

static _Atomic(daemon_state *) g_daemon; /* for srv_ctx.rescan only (HTTP threads read it) */

/* ---- repository scans on the thread pool ---- */

static void scan_work(uv_work_t *w) {
    daemon_state *d = w->data;
    dyn_err err = {0};
    int rc = d->scan_rc = srv_repo_scan(d->ctx.repo, d->scan_force, &err);
    if (rc < 0) srv_log(SRV_LOG_ERROR, "repository scan failed", json_pack("{s:s}", "error", err.msg));
}

static void scan_start(daemon_state *d, int force);
/* The model store (server/store.h); whether its first poll ended, and whether the scan running
 * started after that (readiness waits for such a scan, which sees what the poll downloaded). */
static srv_store *g_store;
static int g_store_polled, g_scan_after_poll;

static void scan_after(uv_work_t *w, int status) {
    daemon_state *d = w->data;
    (void)status;
    d->scan_running = 0;
    if (!atomic_load(&d->ctx.ready) && status == 0 && d->scan_rc >= 0 &&
        (!g_store || g_scan_after_poll)) { /* the first scan (after the store's first poll) */
        atomic_store(&d->ctx.ready, 1);
        srv_repo_usage u = srv_repo_usage_get(d->ctx.repo);
        srv_log(SRV_LOG_INFO, "repository loaded: ready",
                json_pack("{s:i, s:i, s:I}", "models_loaded", u.loaded, "models_not_loaded",
                          u.lazy, "model_memory_bytes", (json_int_t)u.mem_bytes));
    }
    if (d->scan_again && !atomic_load(&d->ctx.draining)) {
        int force = d->scan_force_next;
        d->scan_again = d->scan_force_next = 0;
        scan_start(d, force);
    }
}

static void scan_start(daemon_state *d, int force) {
    if (d->scan_running) { /* coalesce: one more scan after this one */
        d->scan_again = 1;
        d->scan_force_next |= force;
        return;
    }
    d->scan_running = 1;
    g_scan_after_poll = g_store_polled;
    d->scan_force = force;
    d->scan_work.data = d;
    if (uv_queue_work(&d->loop, &d->scan_work, scan_work, scan_after) != 0) d->scan_running = 0;
}

static void on_poll(uv_timer_t *t) { scan_start(t->data, 0); }
static void on_debounce(uv_timer_t *t) { scan_start(t->data, 0); }

static void on_fs_event(uv_fs_event_t *h, const char *file, int events, int status) {
    (void)file, (void)events, (void)status;
    daemon_state *d = h->data;
    uv_timer_start(&d->debounce, on_debounce, 100, 0); /* a burst of events → one scan */
}

/* srv_ctx.rescan: asked from another thread (an HTTP request). */
static uv_async_t g_rescan_async;
static void on_rescan_async(uv_async_t *a) { scan_start(a->data, 0); }
static void ctx_rescan(srv_ctx *ctx) {
    (void)ctx;
    if (atomic_load(&g_daemon)) uv_async_send(&g_rescan_async);
}

/* ---- the model store (server/store.h): its poller fills model_dir, then a scan loads ---- */

static void on_store_change(void *arg) {
    g_store_polled = 1;
    scan_start(arg, 0);
}

/* ---- shutdown ---- */

static void close_cb(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_drain_tick(uv_timer_t *t) {
    daemon_state *d = t->data;
    /* a request begun, or a connection taken in that has not sent its request yet */
    int inflight = atomic_load(&d->ctx.inflight) + srv_http_unserved(d->http);
    int jobs = d->ctx.jobs ? srv_jobs_running(d->ctx.jobs) : 0;
    double waited = dyn_now() - d->drain_started;
    if ((inflight > 0 || jobs > 0) && waited < d->grace_s) return;
    if (inflight > 0 && !d->cancelled) {
        srv_log(SRV_LOG_WARN, "grace period over: cancelling queued requests",
                json_pack("{s:i, s:f}", "inflight", inflight, "waited_s", waited));
        srv_repo_stop(d->ctx.repo, 1);
        d->cancelled = 1;
        d->grace_s = waited + 2.0; /* a running batch finishes; its replies go out */
        return;
    }
    if (d->scan_running) return; /* let the scan finish before tearing down */
    srv_log(SRV_LOG_INFO, "drained", json_pack("{s:i, s:f}", "inflight", inflight, "waited_s", waited));
    atomic_store(&g_daemon, NULL); /* the async handle closes now: HTTP threads stop using it */
    srv_jobs_detach(d->ctx.jobs); /* before the walk: its workers stop waking the loop first */
    uv_walk(&d->loop, close_cb, NULL);
    /* Closing the signal watchers gave SIGTERM / SIGINT back their default action: a second
     * one during the teardown would kill the process mid-way (exit 143). It is shutting down
     * already: ignore them. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
}

static void on_term(uv_signal_t *s, int signum) {
    daemon_state *d = s->data;
    if (atomic_exchange(&d->ctx.draining, 1)) return;
    const srv_config *cfg = srv_ctx_config_acquire(&d->ctx);
    d->grace_s = cfg->shutdown_grace_s;
    srv_ctx_config_release(cfg);
    d->drain_started = dyn_now();
    srv_log(SRV_LOG_INFO, "draining", json_pack("{s:i, s:i, s:f}", "signal", signum, "inflight",
                                                atomic_load(&d->ctx.inflight), "grace_s", d->grace_s));
    uv_timer_stop(&d->poll);
    if (g_store) srv_store_poller_stop(g_store);
    srv_http_quiesce(d->http);
    if (d->ctx.jobs) srv_jobs_shutdown(d->ctx.jobs);
    uv_timer_start(&d->drain, on_drain_tick, 0, 20);
}

static void on_hup(uv_signal_t *s, int signum) {
    (void)signum;
    daemon_state *d = s->data;
    srv_config *cfg = malloc(sizeof *cfg);
    dyn_err err = {0};
    if (!cfg || srv_config_reload(d->argc, d->argv, cfg, &err)) {
        srv_log(SRV_LOG_ERROR, "SIGHUP: settings not reloaded (the old ones stay)",
                json_pack("{s:s}", "error", cfg ? err.msg : "out of memory"));
        free(cfg);
        return;
    }
    const srv_config *old = srv_ctx_config_acquire(&d->ctx);
    if (strcmp(old->listen_address, cfg->listen_address) || old->port != cfg->port ||
        old->http_threads != cfg->http_threads || old->http_poller != cfg->http_poller ||
        old->max_connections != cfg->max_connections ||
        old->connection_timeout_s != cfg->connection_timeout_s ||
        old->max_connections_per_ip != cfg->max_connections_per_ip ||
        old->request_header_timeout_s != cfg->request_header_timeout_s ||
        old->min_body_rate != cfg->min_body_rate || strcmp(old->model_dir, cfg->model_dir))
        srv_log(SRV_LOG_WARN, "SIGHUP: listen, connection and model_dir settings apply after a restart", NULL);
    /* keep what needs a restart as it is */
    snprintf(cfg->model_dir, sizeof cfg->model_dir, "%s", old->model_dir);
    srv_ctx_config_release(old);
    srv_log_setup((srv_log_level)cfg->log_level, (srv_log_format)cfg->log_format);
    srv_ctx_config_set(&d->ctx, cfg);
    srv_repo_config_set(d->ctx.repo, cfg);
    uv_timer_set_repeat(&d->poll, (uint64_t)cfg->repository_poll_ms);
    srv_log(SRV_LOG_INFO, "SIGHUP: settings reloaded; reloading models",
            json_pack("{s:s}", "config", cfg->config_path));
    free(cfg);
    scan_start(d, 1);
}

/* ---- start ---- */

/* device = cuda (the default or a model's) needs a CUDA build and a GPU that answers. */
static int check_device(int device, const char *where, char *why, size_t n, dyn_err *err) {
    const dyn_backend *be;
    int dev;
    if (dyn_backend_select(srv_device_name(device), &be, &dev, why, n, err) == 0) return 0;
    if (!dyn_cuda_built())
        return dyn_err_set(err, DYN_EUNSUP,
                           "%sdevice = cuda: this dynd was not built with CUDA (make CUDA=1); use "
                           "device = cpu (or auto)", where);
    return dyn_err_prefix(err, "%sdevice = cuda (use device = cpu or auto)", where);
}

static int check_settings(const srv_config *cfg, char *why, size_t n, dyn_err *err) {
    if (check_device(cfg->batch.device, "", why, n, err)) return err->code;
    for (int i = 0; i < cfg->nsections; i++) {
        char where[96], w2[160];
        snprintf(where, sizeof where, "[model.%s] ", cfg->sections[i].name);
        if (check_device(cfg->sections[i].batch.device, where, w2, sizeof w2, err))
            return err->code;
    }
    struct stat st;
    if (stat(cfg->model_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return dyn_err_set(err, DYN_EIO, "model_dir '%s' is not a directory (%s)", cfg->model_dir,
                           errno ? strerror(errno) : "not a directory");
    if (cfg->ntokens == 0 && cfg->auth_inference)
        return dyn_err_set(err, DYN_EINVAL, "auth_inference = true needs auth_tokens");
    srv_store *store; /* model_store: the URI and credentials (nothing contacted) */
    if (srv_store_open(cfg, &store, err)) return err->code;
    srv_store_free(store);
    return 0;
}

/* --check-config with jobs_backend = postgres: connects to jobs_db and reads the jobs schema's
 * version (changes nothing: the daemon creates or upgrades the schema at start). Prints what
 * it found; 0, or DYN_EIO with err naming the database (never its password). */
static int check_jobs_db(const srv_config *cfg, dyn_err *err) {
    char where[400];
    srv_jobs_pg_conninfo_describe(cfg->jobs_db, where, sizeof where);
    PGconn *c = srv_pg_connectdb(cfg->jobs_db);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
        msg[strcspn(msg, "\n")] = 0;
        PQfinish(c);
        return dyn_err_set(err, DYN_EIO, "jobs_db: cannot connect to the jobs database (%s): %s",
                           where, msg);
    }
    PGresult *r = PQexec(c, "SELECT version FROM dynd_schema_version");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        printf("dynd: jobs database reachable (%s), jobs schema version %s (this dynd: %d)\n",
               where, PQgetvalue(r, 0, 0), SRV_JOBS_PG_SCHEMA_VERSION);
    else
        printf("dynd: jobs database reachable (%s), no jobs schema yet (dynd creates it at "
               "start)\n", where);
    PQclear(r);
    PQfinish(c);
    return 0;
}

static void ensure_dir(const char *path, const char *what) {
    if (mkdir(path, 0750) != 0 && errno != EEXIST)
        srv_log(SRV_LOG_WARN, "cannot create directory",
                json_pack("{s:s, s:s, s:s}", "setting", what, "path", path, "error", strerror(errno)));
}

static int serve(daemon_state *d, const srv_config *cfg) {
    dyn_err err = {0};
    srv_ctx *ctx = &d->ctx;
    if (srv_ctx_init(ctx, cfg, &err)) return fprintf(stderr, "dynd: %s\n", err.msg), 1;
    if (srv_store_open(cfg, &g_store, &err) || (g_store && srv_s3_global_init(&err)))
        return fprintf(stderr, "dynd: %s\n", err.msg), 2;
    srv_store_set_active(g_store); /* before any job can publish */
    ctx->metrics = srv_metrics_new();
    ctx->repo = ctx->metrics ? srv_repo_new(cfg, ctx->metrics) : NULL;
    if (!ctx->repo) return fprintf(stderr, "dynd: out of memory\n"), 1;
    ctx->rescan = ctx_rescan;
    ensure_dir(cfg->state_dir, "state_dir");
    uv_loop_init(&d->loop); /* the jobs attach to it; it runs once HTTP is up */
    ctx->jobs = srv_jobs_new(cfg, ctx->repo, ctx->metrics, &d->loop, &err);
    if (!ctx->jobs && cfg->jobs_backend == SRV_JOBS_BACKEND_POSTGRES && cfg->role != SRV_ROLE_SERVE) {
        /* asked for shared jobs: better restarted (by systemd, Kubernetes) than running none */
        fprintf(stderr, "dynd: %s\n", err.msg);
        srv_store_set_active(NULL);
        srv_store_free(g_store);
        g_store = NULL;
        srv_repo_free(ctx->repo);
        uv_loop_close(&d->loop);
        return 2;
    }
    if (!ctx->jobs)
        srv_log(SRV_LOG_ERROR, "jobs disabled", json_pack("{s:s}", "error", err.msg));
    if (cfg->ntokens == 0 && cfg->allow_unauthenticated_writes)
        srv_log(SRV_LOG_WARN, "auth_tokens is empty and allow_unauthenticated_writes = true: jobs "
                              "and repository changes are open to anyone who can reach the port",
                NULL);
    else if (cfg->ntokens == 0)
        srv_log(SRV_LOG_WARN, "auth_tokens is empty: jobs, data set uploads and model load / "
                              "unload / edit are refused (set auth_tokens)", NULL);
    d->http = srv_http_start(ctx, cfg, &err);
    if (!d->http) {
        srv_log(SRV_LOG_ERROR, "cannot start HTTP", json_pack("{s:s}", "error", err.msg));
        srv_repo_free(ctx->repo);
        return 1;
    }
    srv_log(SRV_LOG_INFO, "listening",
            json_pack("{s:s, s:i, s:s, s:s, s:i, s:s, s:s}", "address", cfg->listen_address,
                      "port", srv_http_port(d->http), "model_dir", cfg->model_dir,
                      "version", DYN_VERSION, "http_threads",
                      srv_config_http_threads(cfg), "replica", cfg->replica_id, "isa",
                      dyn_isa_name(dyn_isa())));
    /* Also on stdout, one line, for scripts that start dynd on port 0. */
    printf("dynd listening on %s:%d\n", cfg->listen_address, srv_http_port(d->http));
    fflush(stdout);

    uv_signal_init(&d->loop, &d->sigterm);
    uv_signal_init(&d->loop, &d->sigint);
    uv_signal_init(&d->loop, &d->sighup);
    d->sigterm.data = d->sigint.data = d->sighup.data = d;
    uv_signal_start(&d->sigterm, on_term, SIGTERM);
    uv_signal_start(&d->sigint, on_term, SIGINT);
    uv_signal_start(&d->sighup, on_hup, SIGHUP);
    uv_timer_init(&d->loop, &d->poll);
    uv_timer_init(&d->loop, &d->debounce);
    uv_timer_init(&d->loop, &d->drain);
    d->poll.data = d->debounce.data = d->drain.data = d;
    if (cfg->repository_poll_ms > 0)
        uv_timer_start(&d->poll, on_poll, (uint64_t)cfg->repository_poll_ms,
                       (uint64_t)cfg->repository_poll_ms);
    uv_fs_event_init(&d->loop, &d->watch);
    d->watch.data = d;
    if (uv_fs_event_start(&d->watch, on_fs_event, cfg->model_dir, 0) != 0)
        srv_log(SRV_LOG_WARN, "cannot watch model_dir; relying on repository_poll_ms", NULL);
    uv_async_init(&d->loop, &g_rescan_async, on_rescan_async);
    g_rescan_async.data = d;
    atomic_store(&g_daemon, d);
    scan_start(d, 0); /* the first scan: ready when it ends (with a store: the first after its
                       * first poll) */
    if (g_store) {
        srv_store_poller_start(g_store, &d->loop, cfg->model_dir, cfg->store_poll_ms,
                               on_store_change, d);
        srv_log(SRV_LOG_INFO, "model store", json_pack("{s:s, s:s, s:i}", "store", cfg->model_store,
                                                       "cache", cfg->model_dir, "poll_ms",
                                                       cfg->store_poll_ms));
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    atomic_store(&g_daemon, NULL);

    srv_http_stop(d->http);
    /* jobs publish into the repository: stop them first, and keep it if one is still busy */
    int busy = srv_jobs_free(ctx->jobs, 2.0);
    if (busy) {
        /* A job thread still uses the jobs, the repository, the metrics and the libraries'
         * globals (OpenBLAS frees its buffers in a destructor at exit()): free nothing, run no
         * exit handler. Its record reads as interrupted once its lease runs out. */
        srv_log(SRV_LOG_WARN, "stopped with jobs still running; they read as interrupted",
                json_pack("{s:i}", "running", busy));
        fflush(NULL);
        _exit(0);
    }
    srv_store_set_active(NULL);
    srv_store_free(g_store);
    g_store = NULL;
    srv_repo_stop(ctx->repo, 1);
    srv_repo_free(ctx->repo);
    srv_metrics_free(ctx->metrics);
    srv_ctx_destroy(ctx);
    uv_loop_close(&d->loop);
    srv_log(SRV_LOG_INFO, "stopped", NULL);
    return 0;
}

int srv_daemon_main(int argc, char **argv) {
    static srv_config cfg; /* large: not on the stack */
    srv_cmd cmd;
    dyn_err err = {0};
    if (srv_config_load(argc, argv, &cfg, &cmd, &err)) {
        fprintf(stderr, "dynd: %s\n", err.msg);
        return 2;
    }
    switch (cmd) {
    case SRV_CMD_HELP: srv_config_help(stdout, argv[0]); return 0;
    case SRV_CMD_VERSION: printf("dynd %s\n", DYN_VERSION); return 0;
    case SRV_CMD_PRINT_CONFIG: srv_config_print(stdout, &cfg); return 0;
    default: break;
    }
    char device_why[320];
    if (check_settings(&cfg, device_why, sizeof device_why, &err)) {
        fprintf(stderr, "dynd: %s\n", err.msg);
        return 2;
    }
    if (cmd == SRV_CMD_CHECK && cfg.jobs_backend == SRV_JOBS_BACKEND_POSTGRES &&
        check_jobs_db(&cfg, &err)) {
        fprintf(stderr, "dynd: %s\n", err.msg);
        return 2;
    }
    if (cmd == SRV_CMD_CHECK) {
        printf("dynd: settings OK (config %s, model_dir %s, device %s -> %s, listen %s:%d)\n",
               cfg.config_path[0] ? cfg.config_path : "(none)", cfg.model_dir,
               srv_device_name(cfg.batch.device), device_why, cfg.listen_address, cfg.port);
        return 0;
    }
    srv_log_setup((srv_log_level)cfg.log_level, (srv_log_format)cfg.log_format);
    srv_log(SRV_LOG_INFO, "device",
            json_pack("{s:s, s:s}", "device", srv_device_name(cfg.batch.device), "chosen",
                      device_why));
    dyn_threads_set(cfg.threads);
    /* DyN layers decide when loaded whether to hold W, by a cost model: DYN_COST=calibrate
     * measures its constants on this machine first (engine/dyn/README.md: on convolutions the
     * built-in ones decide better; layers holding both paths measure themselves anyway). */
    const char *cm = getenv("DYN_COST");
    dyn_cost_consts cc;
    if (cm && !strcmp(cm, "calibrate") && dyn_cost_calibrate(&cc, &err) == 0)
        srv_log(SRV_LOG_INFO, "cost model calibrated",
                json_pack("{s:f, s:f, s:f, s:f}", "native_ns_per_elem_col",
                          cc.native_ns_per_elem_col, "native_ns_per_elem", cc.native_ns_per_elem,
                          "dense_ns_per_mac", cc.dense_ns_per_mac, "dense_ns_per_wfloat",
                          cc.dense_ns_per_wfloat));
    static daemon_state d;
    d.argc = argc;
    d.argv = argv;
    return serve(&d, &cfg);
}
