/* server.c — the shared context's settings snapshots. See server.h. */
#include "server/server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_err_set(srv_err *e, int status, const char *code, const char *fmt, ...) {
    e->status = status;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

typedef struct srv_config_ref {
    srv_config cfg; /* first member: a const srv_config * is also the ref */
    atomic_int refs;
} srv_config_ref;

static srv_config_ref *ref_new(const srv_config *cfg) {
    srv_config_ref *r = malloc(sizeof *r);
    if (!r) return NULL;
    r->cfg = *cfg;
    atomic_store(&r->refs, 1);
    return r;
}

int srv_ctx_init(srv_ctx *ctx, const srv_config *cfg, dyn_err *err) {
    memset(ctx, 0, sizeof *ctx);
    pthread_mutex_init(&ctx->cfg_mu, NULL);
    ctx->cfg = ref_new(cfg);
    if (!ctx->cfg) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    return 0;
}

void srv_ctx_config_release(const srv_config *cfg) {
    srv_config_ref *r = (srv_config_ref *)cfg;
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) free(r);
}

void srv_ctx_destroy(srv_ctx *ctx) {
    srv_ctx_config_release(&ctx->cfg->cfg);
    pthread_mutex_destroy(&ctx->cfg_mu);
}

int srv_ctx_config_set(srv_ctx *ctx, const srv_config *cfg) {
    srv_config_ref *r = ref_new(cfg);
    if (!r) return DYN_ENOMEM;
    pthread_mutex_lock(&ctx->cfg_mu);
    srv_config_ref *old = ctx->cfg;
    ctx->cfg = r;
    pthread_mutex_unlock(&ctx->cfg_mu);
    srv_ctx_config_release(&old->cfg);
    return 0;
}

const srv_config *srv_ctx_config_acquire(srv_ctx *ctx) {
    pthread_mutex_lock(&ctx->cfg_mu);
    srv_config_ref *r = ctx->cfg;
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&ctx->cfg_mu);
    return &r->cfg;
}
