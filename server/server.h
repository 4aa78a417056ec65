/* server.h — the daemon's shared context: settings snapshot, repository, metrics, lifecycle
 * flags. One srv_ctx per process, made in daemon.c and handed to every request.
 *
 * Settings are swapped on SIGHUP: readers take a counted snapshot (srv_ctx_config_acquire /
 * _release), so a request sees one consistent srv_config from start to end.
 */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include <pthread.h>
#include <stdatomic.h>

#include "server/config.h"
#include "server/metrics.h"
#include "server/repository.h"

/* An error for the HTTP layer from the server's rooms (jobs, data sets, model edits): HTTP
 * status, stable machine code (a static string), a message a person can act on. */
typedef struct srv_err {
    int status;
    const char *code;
    char msg[512];
} srv_err;

/* Fills e (status, static code, printf message). */
void srv_err_set(srv_err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct srv_ctx {
    srv_repo *repo;
    srv_metrics *metrics;
    atomic_int draining;  /* SIGTERM received: readiness false, new inference refused */
    atomic_int ready;     /* the first repository scan finished */
    atomic_int inflight;  /* requests between headers-in and completion */
    double started_at;    /* epoch seconds */
    pthread_mutex_t cfg_mu;
    struct srv_config_ref *cfg; /* current settings, guarded by cfg_mu */
    void (*rescan)(struct srv_ctx *ctx); /* asks the loop for a repository scan; may be NULL */
    struct srv_jobs *jobs; /* conversion / fine-tuning jobs; NULL when state_dir is unusable */
} srv_ctx;

/* Initializes ctx with a copy of cfg. 0 or DYN_ENOMEM. */
int srv_ctx_init(srv_ctx *ctx, const srv_config *cfg, dyn_err *err);
/* Frees what srv_ctx_init made (not repo / metrics). */
void srv_ctx_destroy(srv_ctx *ctx);
/* Replaces the settings with a copy of cfg; requests in flight keep their snapshot. */
int srv_ctx_config_set(srv_ctx *ctx, const srv_config *cfg);
/* The current settings; valid until srv_ctx_config_release. */
const srv_config *srv_ctx_config_acquire(srv_ctx *ctx);
void srv_ctx_config_release(const srv_config *cfg);

/* The daemon: settings from argv (and the config file, environment), then serves until SIGTERM.
 * The route table must be set first (srv_router_set). Returns the process exit status: 0
 * after a drain, 2 for bad settings, 1 when it cannot start. */
int srv_daemon_main(int argc, char **argv);

#endif
