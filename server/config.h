/* config.h — dynd settings: one table (name, type, default, bounds, environment variable, doc)
 * that parses the config file, the environment and the flags, and generates `--help` and the
 * documented config/dynd.conf (`dynd --print-config`).
 *
 * Precedence: built-in default < config file < environment (DYND_<NAME>) < command-line flag.
 * File format: INI as people know it — `key = value`, `#` or `;` comments, and per-model
 * sections `[model.<name>]` that override the batching settings for one model. A key given
 * twice takes its last value; a section given twice is one section.
 *
 * A srv_config is immutable once built: SIGHUP builds a new one and swaps it in (see
 * server.h), so a request keeps a consistent view of the settings it started with.
 */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <stddef.h>

#include "base.h"

#define SRV_MAX_TOKENS 16
#define SRV_MAX_MODEL_SECTIONS 64

/* Batching of one model. */
typedef struct srv_batch_cfg {
    int batching;           /* 0 = every request runs alone */
    int max_batch;          /* samples per forward */
    int max_queue_delay_us; /* how long the first request of a batch waits for company */
    int queue_capacity;     /* requests waiting; beyond it: 503 + Retry-After */
    int workers;            /* batch worker threads (each owns one dyn_exec) */
    int device;             /* srv_device: where the model runs (engine/backend.h) */
    int gpu_max_batch;      /* max_batch of a model placed on a GPU */
} srv_batch_cfg;

typedef struct srv_model_section {
    char name[65];
    srv_batch_cfg batch;
} srv_model_section;

typedef enum { SRV_DEVICE_CPU, SRV_DEVICE_CUDA, SRV_DEVICE_AUTO, SRV_DEVICE_COUNT } srv_device;
typedef enum { SRV_HTTP_POLL, SRV_HTTP_EPOLL } srv_http_poller;
typedef enum { SRV_ROLE_ALL, SRV_ROLE_SERVE, SRV_ROLE_JOBS } srv_role;
typedef enum { SRV_JOBS_BACKEND_FS, SRV_JOBS_BACKEND_POSTGRES } srv_jobs_backend_kind;

typedef struct srv_config {
    char listen_address[64];
    int port;
    char model_dir[1024], state_dir[1024], data_dir[1024];
    int threads;      /* engine threads per batch worker (0 = all cores) */
    int http_threads; /* libmicrohttpd thread pool; 0 = auto (srv_config_http_threads) */
    int http_poller;  /* srv_http_poller */
    int role;         /* srv_role: what this replica accepts (inference, jobs, both) */
    srv_batch_cfg batch; /* defaults for every model */
    int request_timeout_ms;
    int connection_timeout_s;
    int max_connections;
    int max_connections_per_ip;   /* server/guard.h */
    int request_header_timeout_s;
    long long min_body_rate;
    long long max_body_bytes;
    long long max_upload_bytes; /* streamed uploads (POST /v1/conversions) */
    /* data sets uploaded as archives (PUT /v1/datasets/{name}, server/datasets.h) */
    long long dataset_max_upload_bytes, dataset_max_bytes, dataset_max_entry_bytes;
    int dataset_max_entries, dataset_max_ratio, dataset_max_path, dataset_max_depth;
    int max_image_width, max_image_height;
    long long max_image_pixels;
    int max_json_depth;
    char auth_tokens_raw[2048];
    int ntokens;
    char tokens[SRV_MAX_TOKENS][128];
    int auth_inference;
    int allow_unauthenticated_writes; /* no auth_tokens: jobs and repository writes still open */
    int max_loaded_models;          /* model versions loaded at once (0 = no limit) */
    long long max_model_memory_bytes; /* their measured memory (0 = no limit) */
    int log_format, log_level; /* srv_log_format, srv_log_level */
    int repository_poll_ms;
    int shutdown_grace_s;
    int jobs_max_concurrent; /* conversion / fine-tuning jobs running at once */
    int jobs_lease_s;        /* a job's lease is stale after this long without a heartbeat */
    int jobs_keep;           /* finished job records kept (memory and state_dir); older ones go */
    int jobs_backend;        /* srv_jobs_backend_kind: where job records and leases live */
    char jobs_db[1024];      /* jobs_backend = postgres: libpq conninfo (key=value or URI) */
    char replica_id[65];     /* X-Dynd-Replica on every reply ("" = none) */
    /* the model store (server/store.h): model_store "" = model_dir alone */
    char model_store[512], store_endpoint[512], store_region[64];
    char store_access_key_id[128], store_secret_access_key[256];
    int store_poll_ms, store_timeout_s;
    char config_path[1024]; /* the file read ("" = none) */
    int nsections;
    srv_model_section sections[SRV_MAX_MODEL_SECTIONS];
} srv_config;

/* What the command line asked for besides settings. */
typedef enum {
    SRV_CMD_RUN, SRV_CMD_HELP, SRV_CMD_VERSION, SRV_CMD_CHECK, SRV_CMD_PRINT_CONFIG, SRV_CMD_COUNT
} srv_cmd;

/* Builds a config from defaults, the file (`--config FILE`, else $DYND_CONFIG, else none),
 * the environment and argv. On success fills *cfg and *cmd and returns 0; on a bad value,
 * unknown key or flag, or an unreadable file returns DYN_EINVAL / DYN_EIO with err naming the
 * source ("config/dynd.conf:12: max_batch: 0 is below the minimum 1"). */
int srv_config_load(int argc, char **argv, srv_config *cfg, srv_cmd *cmd, dyn_err *err);

/* Re-reads the same file and environment (flags from argv kept) into *cfg. Same errors. */
int srv_config_reload(int argc, char **argv, srv_config *cfg, dyn_err *err);

/* The batching settings of model `name`: its [model.<name>] section, else the defaults. */
srv_batch_cfg srv_config_batch(const srv_config *cfg, const char *name);

/* 1 when `token` is one of the configured tokens (constant-time per token). */
int srv_config_token_ok(const srv_config *cfg, const char *token);

/* Writes the usage text (every setting, its flag, environment variable and default). */
void srv_config_help(FILE *f, const char *argv0);

/* Writes a documented config file: every setting with its doc string, at its current value in
 * cfg (or the defaults when cfg is NULL). */
void srv_config_print(FILE *f, const srv_config *cfg);

const char *srv_device_name(int device);

/* The HTTP thread count to run: cfg->http_threads, or for 0 the online cores (at least 1). */
int srv_config_http_threads(const srv_config *cfg);

#endif
