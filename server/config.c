/* config.c — the settings table and its readers (file, environment, flags) and writers
 * (--help, --print-config). Adding a setting = one line in SETTINGS plus its field. */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/log.h"

typedef enum { T_INT, T_LLONG, T_BOOL, T_STR, T_ENUM, T_TYPE_COUNT } setting_type;

typedef struct setting {
    const char *name;
    setting_type type;
    size_t off;      /* offset in srv_config */
    size_t size;     /* T_STR: buffer size */
    const char *def; /* default, as text */
    long long min, max;
    const char *const *choices; /* T_ENUM: NULL-terminated */
    int per_model;   /* also valid in [model.<name>] sections (batching) */
    const char *doc;
} setting;

static const char *const DEVICE_CHOICES[] = {"cpu", "cuda", "auto", NULL};
static const char *const LOG_FORMAT_CHOICES[] = {"json", "text", NULL};
static const char *const HTTP_POLLER_CHOICES[] = {"poll", "epoll", NULL};
static const char *const LOG_LEVEL_CHOICES[] = {"debug", "info", "warn", "error", NULL};
static const char *const ROLE_CHOICES[] = {"all", "serve", "jobs", NULL};
static const char *const JOBS_BACKEND_CHOICES[] = {"fs", "postgres", NULL};

#define OFF(f) offsetof(srv_config, f)
#define S_STR(n, f, d, doc) {n, T_STR, OFF(f), sizeof(((srv_config *)0)->f), d, 0, 0, NULL, 0, doc}
#define S_INT(n, f, d, lo, hi, doc) {n, T_INT, OFF(f), 0, d, lo, hi, NULL, 0, doc}
#define S_LL(n, f, d, lo, hi, doc) {n, T_LLONG, OFF(f), 0, d, lo, hi, NULL, 0, doc}
#define S_BOOL(n, f, d, doc) {n, T_BOOL, OFF(f), 0, d, 0, 1, NULL, 0, doc}
#define S_ENUM(n, f, d, ch, doc) {n, T_ENUM, OFF(f), 0, d, 0, 0, ch, 0, doc}
#define S_BATCH(n, t, f, d, lo, hi, doc) {n, t, OFF(batch.f), 0, d, lo, hi, NULL, 1, doc}
#define S_BENUM(n, f, d, ch, doc) {n, T_ENUM, OFF(batch.f), 0, d, 0, 0, ch, 1, doc}

static const setting SETTINGS[] = {
    S_STR("listen_address", listen_address, "127.0.0.1",
          "Address to listen on (IPv4 or IPv6 literal). 0.0.0.0 serves every interface."),
    S_INT("port", port, "8080", 0, 65535, "TCP port (0 = any free port, logged at start)."),
    S_STR("model_dir", model_dir, "models",
          "Model repository: <name>.dyn files, or <name>/<version>.dyn for versioned models."),
    S_STR("state_dir", state_dir, "state", "Daemon state (job records, uploads, checkpoints)."),
    S_STR("data_dir", data_dir, "data",
          "Data sets jobs may read; PUT /v1/datasets/{name} stores uploaded ones here."),
    S_INT("threads", threads, "1", 0, 1024,
          "Engine threads per batch worker (OpenMP + OpenBLAS); 0 = all cores. Small models "
          "serve best single-threaded: scale with batch_workers instead (threads spin and "
          "fight over shared cores)."),
    S_INT("http_threads", http_threads, "0", 0, 1024,
          "HTTP connection threads (receive, parse, decode, reply; models run on batch "
          "workers). 0 = one per online core."),
    S_ENUM("http_poller", http_poller, "poll", HTTP_POLLER_CHOICES,
           "poll | epoll: how HTTP threads wait for sockets. poll costs no system call when a "
           "connection is suspended for its batch and resumed (epoll pays two per request); "
           "epoll scales better to thousands of mostly idle connections per thread."),
    S_ENUM("role", role, "all", ROLE_CHOICES,
           "all | serve | jobs: what this replica accepts. serve: inference and metadata, job "
           "submissions and resumes answer 503 jobs_unavailable; jobs: conversions and "
           "fine-tunings, inference answers 503 inference_unavailable (replicas behind "
           "separate services: autoscaled serving, long jobs elsewhere)."),
    S_BENUM("device", device, "auto", DEVICE_CHOICES,
            "cpu | cuda | auto: where models run (per model in [model.NAME]). cuda: GPU 0, and "
            "dynd refuses to start without a CUDA build and a GPU; auto: GPU 0 when this build "
            "has CUDA and one answers, else the CPU (logged). Layers without a GPU kernel run "
            "on the CPU; a model that cannot be placed on the GPU is served from the CPU."),
    S_BATCH("batching", T_BOOL, batching, "true", 0, 1,
            "Dynamic batching: concurrent requests to one model share a forward pass."),
    S_BATCH("max_batch", T_INT, max_batch, "64", 1, 4096, "Largest batch (samples) per forward."),
    S_BATCH("gpu_max_batch", T_INT, gpu_max_batch, "256", 1, 4096,
            "Largest batch per forward for a model placed on a GPU (max_batch applies on the "
            "CPU): a GPU needs larger batches to be busy."),
    S_BATCH("max_queue_delay_us", T_INT, max_queue_delay_us, "0", 0, 10000000,
            "How long a batch's first request waits for more (microseconds). 0: a batch is what "
            "queued while the worker was busy (no added latency; measured faster than 500 on the "
            "demo model, whose forward is shorter than an HTTP round trip)."),
    S_BATCH("queue_capacity", T_INT, queue_capacity, "256", 1, 1000000,
            "Requests that may wait per model; a full queue answers 503 + Retry-After."),
    S_BATCH("batch_workers", T_INT, workers, "1", 1, 64,
            "Batch worker threads per model version (each owns its buffers)."),
    S_INT("request_timeout_ms", request_timeout_ms, "10000", 1, 3600000,
          "Per-request deadline: a request still queued after this answers 504."),
    S_INT("connection_timeout_s", connection_timeout_s, "15", 1, 3600,
          "An idle or too slow client connection is closed after this many seconds."),
    S_INT("max_connections", max_connections, "1024", 1, 1000000, "Concurrent connections."),
    S_INT("max_connections_per_ip", max_connections_per_ip, "256", 0, 1000000,
          "Open connections from one client address; more are closed at accept (0 = no cap). "
          "Behind a load balancer every connection comes from its address: raise it or use 0."),
    S_INT("request_header_timeout_s", request_header_timeout_s, "20", 1, 3600,
          "A request's line and headers must arrive within this many seconds of the "
          "connection's start or of the previous reply, or the connection is closed."),
    S_LL("min_body_rate", min_body_rate, "1024", 0, 1LL << 40,
         "Bytes per second a request body must average once it has been arriving for "
         "request_header_timeout_s, or the connection is closed (0 = no check)."),
    S_LL("max_body_bytes", max_body_bytes, "8388608", 1024, 1LL << 40,
         "Largest request body; larger answers 413."),
    S_LL("max_upload_bytes", max_upload_bytes, "1073741824", 1024, 1LL << 40,
         "Largest model upload (POST /v1/conversions with a raw or multipart body). Uploads "
         "are streamed to state_dir/uploads, never held in memory; larger answers 413."),
    S_LL("dataset_max_upload_bytes", dataset_max_upload_bytes, "1073741824", 1024, 1LL << 40,
         "Largest data set archive (PUT /v1/datasets/{name}: zip, tar, tar.gz), streamed to "
         "state_dir/uploads; larger answers 413."),
    S_LL("dataset_max_bytes", dataset_max_bytes, "4294967296", 1024, 1LL << 42,
         "Largest total size of a data set's files once extracted, counted on the bytes "
         "actually decompressed; more answers 413."),
    S_INT("dataset_max_entries", dataset_max_entries, "200000", 1, 100000000,
          "Most entries (files, folders, anything) in a data set archive; more answers 413."),
    S_INT("dataset_max_ratio", dataset_max_ratio, "20", 1, 1000000,
          "Largest expansion of a data set archive: extracted bytes / archive bytes (PNG and "
          "JPEG barely compress; a decompression bomb does). More answers 413."),
    S_LL("dataset_max_entry_bytes", dataset_max_entry_bytes, "33554432", 1024, 1LL << 34,
         "Largest file in a data set archive once extracted; more answers 413."),
    S_INT("dataset_max_path", dataset_max_path, "512", 16, 4000,
          "Longest entry name (bytes) in a data set archive; longer refuses the archive."),
    S_INT("dataset_max_depth", dataset_max_depth, "8", 1, 64,
          "Most folders + file in an entry name of a data set archive; deeper refuses it."),
    S_INT("max_image_width", max_image_width, "4096", 1, 65535, "Largest image width."),
    S_INT("max_image_height", max_image_height, "4096", 1, 65535, "Largest image height."),
    S_LL("max_image_pixels", max_image_pixels, "16777216", 1, 1LL << 32,
         "Largest width x height (decompression bombs are refused from the header)."),
    S_INT("max_json_depth", max_json_depth, "32", 2, 2048, "Deepest JSON nesting accepted."),
    S_STR("auth_tokens", auth_tokens_raw, "",
          "Comma-separated bearer tokens for repository (and job) endpoints. Empty = reads "
          "of those endpoints are open and writes (jobs, data set uploads, model load / "
          "unload / edit) are refused unless allow_unauthenticated_writes = true."),
    S_BOOL("auth_inference", auth_inference, "false",
           "Also require a token for inference and model metadata."),
    S_BOOL("allow_unauthenticated_writes", allow_unauthenticated_writes, "false",
           "With no auth_tokens, let anyone who reaches the port create jobs, upload data sets "
           "and load / unload / edit models (a warning is logged). Only for a private machine."),
    S_INT("max_loaded_models", max_loaded_models, "0", 0, 1000000,
          "Model versions loaded at once (0 = no limit). Beyond it the least recently used idle "
          "version is unloaded (never one serving a request or with queued work); a version not "
          "loaded is loaded again by its next request, which waits for it."),
    S_LL("max_model_memory_bytes", max_model_memory_bytes, "0", 0, 1LL << 50,
         "Memory the loaded model versions may hold together (0 = no limit), as measured at "
         "their load: weights, batch workers' execution buffers, batcher. Evicts as "
         "max_loaded_models does."),
    S_ENUM("log_format", log_format, "json", LOG_FORMAT_CHOICES, "json | text."),
    S_ENUM("log_level", log_level, "info", LOG_LEVEL_CHOICES, "debug | info | warn | error."),
    S_INT("repository_poll_ms", repository_poll_ms, "2000", 0, 3600000,
          "Rescan the model directory this often (0 = only on file events / index requests)."),
    S_INT("shutdown_grace_s", shutdown_grace_s, "30", 0, 3600,
          "SIGTERM: finish in-flight and queued requests, exit after at most this long."),
    S_INT("jobs_max_concurrent", jobs_max_concurrent, "1", 1, 64,
          "Conversion and fine-tuning jobs run at once (each on its own thread, using `threads` "
          "engine threads); more wait queued. Jobs are kept in state_dir/jobs. Read at start."),
    S_INT("jobs_lease_s", jobs_lease_s, "30", 3, 3600,
          "Replicas sharing jobs: a job is claimed with a lease (fs: an O_EXCL lease file; "
          "postgres: the row's leased_until) renewed every jobs_lease_s/3 seconds; a lease older "
          "than this (its holder died) may be taken over."),
    S_INT("jobs_keep", jobs_keep, "1000", 1, 1000000,
          "Finished jobs (succeeded, failed, cancelled) whose records are kept, in memory and in "
          "state_dir/jobs; when a job ends beyond this count the oldest finished records are "
          "deleted (GET /v1/jobs/{id} then answers 404). Interrupted jobs are always kept."),
    S_ENUM("jobs_backend", jobs_backend, "fs", JOBS_BACKEND_CHOICES,
           "fs | postgres: where job records and leases live. fs: state_dir/jobs (replicas share "
           "the directory); postgres: the database jobs_db (replicas share it; records, leases "
           "and cancels go through it, a job queued by one replica may run on another). Read at "
           "start."),
    S_STR("jobs_db", jobs_db, "",
          "jobs_backend = postgres: the database, as a libpq conninfo ('host=db dbname=dynd "
          "user=dynd' or postgresql://...); libpq's environment (PGHOST, PGPASSWORD, PGSSLMODE "
          "...) fills what it leaves out. Prefer PGPASSWORD or a .pgpass file to a password here."),
    S_STR("replica_id", replica_id, "",
          "This process's name among replicas behind a load balancer: sent in every reply as "
          "X-Dynd-Replica and logged at start (1-64 of A-Z a-z 0-9 _ . -; empty = no header)."),
    /* the model store (server/store.h) */
    S_STR("model_store", model_store, "",
          "Where published models live: empty = model_dir alone; s3://<bucket>/<prefix> = an "
          "S3-compatible store, model_dir becoming this replica's local cache of it (polled "
          "every store_poll_ms; jobs publish to the store). Read at start."),
    S_STR("store_endpoint", store_endpoint, "",
          "The store's URL (path-style requests), e.g. http://minio:9000; empty = "
          "$AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else https://s3.<region>.amazonaws.com."),
    S_STR("store_region", store_region, "",
          "The store's region for SigV4 signing; empty = $AWS_REGION, $AWS_DEFAULT_REGION, else "
          "us-east-1."),
    S_STR("store_access_key_id", store_access_key_id, "",
          "The store's access key id; empty = $AWS_ACCESS_KEY_ID."),
    S_STR("store_secret_access_key", store_secret_access_key, "",
          "The store's secret key; empty = $AWS_SECRET_ACCESS_KEY. Prefer the environment (a "
          "Kubernetes Secret) to this file."),
    S_INT("store_poll_ms", store_poll_ms, "5000", 100, 3600000,
          "How often a replica reads the store's manifests for new or removed versions."),
    S_INT("store_timeout_s", store_timeout_s, "600", 1, 86400,
          "Longest store request (a model upload or download) before it fails."),
};

const char *srv_device_name(int device) {
    return device >= 0 && device < SRV_DEVICE_COUNT ? DEVICE_CHOICES[device] : "?";
}

int srv_config_http_threads(const srv_config *cfg) {
    if (cfg->http_threads > 0) return cfg->http_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 && n <= 1024 ? (int)n : 1;
}

static const setting *find_setting(const char *name) {
    for (size_t i = 0; i < DYN_ARRAY_LEN(SETTINGS); i++)
        if (!strcmp(SETTINGS[i].name, name)) return &SETTINGS[i];
    return NULL;
}

static int parse_bool(const char *v, int *out) {
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcmp(v, "1"))
        return *out = 1, 0;
    if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcmp(v, "0"))
        return *out = 0, 0;
    return -1;
}

/* Stores value v of setting s into the struct at base (a srv_config, or a srv_batch_cfg shifted
 * so that OFF(batch.x) lands on it). */
static int setting_set(const setting *s, void *base, const char *v, dyn_err *err) {
    char *p = (char *)base + s->off;
    switch (s->type) {
    case T_INT:
    case T_LLONG: {
        errno = 0;
        char *end;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return dyn_err_set(err, DYN_EINVAL, "%s: '%s' is not an integer", s->name, v);
        if (x < s->min || x > s->max)
            return dyn_err_set(err, DYN_EINVAL, "%s: %lld is outside %lld..%lld", s->name, x,
                               s->min, s->max);
        if (s->type == T_INT) *(int *)p = (int)x;
        else *(long long *)p = x;
        return 0;
    }
    case T_BOOL:
        if (parse_bool(v, (int *)p))
            return dyn_err_set(err, DYN_EINVAL, "%s: '%s' is not true/false", s->name, v);
        return 0;
    case T_STR:
        if (strlen(v) >= s->size)
            return dyn_err_set(err, DYN_EINVAL, "%s: longer than %zu characters", s->name,
                               s->size - 1);
        memcpy(p, v, strlen(v) + 1);
        return 0;
    case T_ENUM:
        for (int i = 0; s->choices[i]; i++)
            if (!strcasecmp(s->choices[i], v)) return *(int *)p = i, 0;
        return dyn_err_set(err, DYN_EINVAL, "%s: '%s' is not one of the choices (see --help)",
                           s->name, v);
    default: DYN_ASSERT(0);
    }
    return 0;
}

static void setting_format(const setting *s, const void *base, char *buf, size_t n) {
    const char *p = (const char *)base + s->off;
    switch (s->type) {
    case T_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case T_LLONG: snprintf(buf, n, "%lld", *(const long long *)p); break;
    case T_BOOL: snprintf(buf, n, "%s", *(const int *)p ? "true" : "false"); break;
    case T_STR: snprintf(buf, n, "%s", p); break;
    case T_ENUM: snprintf(buf, n, "%s", s->choices[*(const int *)p]); break;
    default: DYN_ASSERT(0);
    }
}

static void set_defaults(srv_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < DYN_ARRAY_LEN(SETTINGS); i++)
        DYN_ASSERT(setting_set(&SETTINGS[i], cfg, SETTINGS[i].def, NULL) == 0);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    if (e - s >= 2 && (*s == '"' || *s == '\'') && e[-1] == *s) {
        e[-1] = 0;
        s++;
    }
    return s;
}

static int model_name_ok(const char *n) {
    size_t len = strlen(n);
    if (len == 0 || len > 64 || n[0] == '.') return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)n[i]) && n[i] != '_' && n[i] != '-' && n[i] != '.') return 0;
    return 1;
}

static int read_file(srv_config *cfg, const char *path, dyn_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return dyn_err_set(err, DYN_EIO, "config %s: %s", path, strerror(errno));
    /* Whole lines of any length (a fixed buffer would read a long line's tail as a line of
     * its own: the tail of a comment could set a setting). */
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    srv_model_section *sec = NULL;
    while (!rc && getline(&line, &cap, f) != -1) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end) {
                rc = dyn_err_set(err, DYN_EINVAL, "%s:%d: unterminated section", path, lineno);
                break;
            }
            *end = 0;
            char *name = trim(s + 1);
            if (strncmp(name, "model.", 6) || !model_name_ok(name + 6)) {
                rc = dyn_err_set(err, DYN_EINVAL,
                                 "%s:%d: unknown section [%s] (only [model.<name>] exists)", path,
                                 lineno, name);
                break;
            }
            sec = NULL; /* a section given again is the same section */
            for (int i = 0; i < cfg->nsections && !sec; i++)
                if (!strcmp(cfg->sections[i].name, name + 6)) sec = &cfg->sections[i];
            if (sec) continue;
            if (cfg->nsections == SRV_MAX_MODEL_SECTIONS) {
                rc = dyn_err_set(err, DYN_EINVAL, "%s:%d: more than %d model sections", path,
                                 lineno, SRV_MAX_MODEL_SECTIONS);
                break;
            }
            sec = &cfg->sections[cfg->nsections++];
            snprintf(sec->name, sizeof sec->name, "%s", name + 6);
            sec->batch = cfg->batch; /* inherits what the file set above it */
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s:%d: expected key = value", path, lineno);
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        const setting *st = find_setting(key);
        if (!st) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s:%d: unknown setting '%s' (see dynd --help)",
                             path, lineno, key);
        } else if (sec && !st->per_model) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s:%d: '%s' cannot be set per model", path,
                             lineno, key);
        } else {
            /* per-model: shift the base so OFF(batch.x) lands in the section's batch */
            void *base = sec ? (char *)&sec->batch - OFF(batch) : (void *)cfg;
            if ((rc = setting_set(st, base, val, err))) dyn_err_prefix(err, "%s:%d", path, lineno);
        }
    }
    free(line);
    fclose(f);
    return rc;
}

static void env_name(const char *name, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "DYND_");
    for (size_t i = 0; name[i] && k + 1 < n; i++) buf[k++] = (char)toupper((unsigned char)name[i]);
    buf[k] = 0;
}

static int read_env(srv_config *cfg, dyn_err *err) {
    char nm[96];
    for (size_t i = 0; i < DYN_ARRAY_LEN(SETTINGS); i++) {
        env_name(SETTINGS[i].name, nm, sizeof nm);
        const char *v = getenv(nm);
        if (v && setting_set(&SETTINGS[i], cfg, v, err)) return dyn_err_prefix(err, "$%s", nm);
    }
    return 0;
}

/* Flags: --name=value, --name value, --name (booleans), --flag-with-dashes accepted. */
static int read_flags(int argc, char **argv, srv_config *cfg, srv_cmd *cmd, dyn_err *err) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { *cmd = SRV_CMD_HELP; continue; }
        if (!strcmp(a, "--version")) { *cmd = SRV_CMD_VERSION; continue; }
        if (!strcmp(a, "--check-config")) { *cmd = SRV_CMD_CHECK; continue; }
        if (!strcmp(a, "--print-config")) { *cmd = SRV_CMD_PRINT_CONFIG; continue; }
        if (strncmp(a, "--", 2))
            return dyn_err_set(err, DYN_EINVAL, "unexpected argument '%s' (see --help)", a);
        char key[128];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t kl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (kl >= sizeof key) return dyn_err_set(err, DYN_EINVAL, "flag too long: %s", a);
        memcpy(key, a + 2, kl);
        key[kl] = 0;
        for (char *p = key; *p; p++)
            if (*p == '-') *p = '_';
        if (eq) val = eq + 1;
        if (!strcmp(key, "config")) { /* read in srv_config_load's first pass */
            if (!eq) i++;
            continue;
        }
        const setting *s = find_setting(key);
        if (!s) return dyn_err_set(err, DYN_EINVAL, "unknown flag --%s (see --help)", key);
        if (!val) {
            if (s->type == T_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))) val = "true";
            else if (i + 1 < argc) val = argv[++i];
            else return dyn_err_set(err, DYN_EINVAL, "--%s needs a value", key);
        }
        if (setting_set(s, cfg, val, err)) return dyn_err_prefix(err, "--%s", key);
    }
    return 0;
}

static const char *config_path_arg(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--config=", 9)) return argv[i] + 9;
        if (!strcmp(argv[i], "--config") && i + 1 < argc) return argv[i + 1];
    }
    return getenv("DYND_CONFIG");
}

static void parse_tokens(srv_config *cfg) {
    cfg->ntokens = 0;
    char buf[sizeof cfg->auth_tokens_raw];
    memcpy(buf, cfg->auth_tokens_raw, sizeof buf);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t && cfg->ntokens < SRV_MAX_TOKENS;
         t = strtok_r(NULL, ",", &save)) {
        t = trim(t);
        if (*t && strlen(t) < sizeof cfg->tokens[0])
            snprintf(cfg->tokens[cfg->ntokens++], sizeof cfg->tokens[0], "%s", t);
    }
}

static int build(int argc, char **argv, srv_config *cfg, srv_cmd *cmd, dyn_err *err) {
    set_defaults(cfg);
    srv_cmd c = SRV_CMD_RUN;
    const char *path = config_path_arg(argc, argv);
    int rc = 0;
    if (path && *path) {
        snprintf(cfg->config_path, sizeof cfg->config_path, "%s", path);
        rc = read_file(cfg, path, err);
    }
    if (!rc) rc = read_env(cfg, err);
    if (!rc) rc = read_flags(argc, argv, cfg, &c, err);
    if (rc) return rc;
    parse_tokens(cfg);
    if (cfg->replica_id[0] && !model_name_ok(cfg->replica_id))
        return dyn_err_set(err, DYN_EINVAL, "replica_id: '%s' is not 1-64 of A-Z a-z 0-9 _ . - "
                           "(not starting with '.')", cfg->replica_id);
    if (cfg->jobs_backend == SRV_JOBS_BACKEND_POSTGRES && !cfg->jobs_db[0])
        return dyn_err_set(err, DYN_EINVAL, "jobs_backend = postgres needs jobs_db (a libpq "
                           "conninfo such as 'host=db dbname=dynd user=dynd', or $DYND_JOBS_DB)");
    if (cmd) *cmd = c;
    return 0;
}

int srv_config_load(int argc, char **argv, srv_config *cfg, srv_cmd *cmd, dyn_err *err) {
    return build(argc, argv, cfg, cmd, err);
}

int srv_config_reload(int argc, char **argv, srv_config *cfg, dyn_err *err) {
    return build(argc, argv, cfg, NULL, err);
}

srv_batch_cfg srv_config_batch(const srv_config *cfg, const char *name) {
    for (int i = 0; i < cfg->nsections; i++)
        if (!strcmp(cfg->sections[i].name, name)) return cfg->sections[i].batch;
    return cfg->batch;
}

int srv_config_token_ok(const srv_config *cfg, const char *token) {
    size_t n = strlen(token);
    int ok = 0;
    for (int i = 0; i < cfg->ntokens; i++) {
        const char *t = cfg->tokens[i];
        size_t tn = strlen(t);
        unsigned diff = (unsigned)(tn != n);
        for (size_t k = 0; k < tn; k++) diff |= (unsigned char)t[k] ^ (unsigned char)(k < n ? token[k] : 0);
        ok |= diff == 0;
    }
    return ok;
}

void srv_config_help(FILE *f, const char *argv0) {
    fprintf(f,
            "usage: %s [--config FILE] [--SETTING=VALUE ...] [--check-config] [--print-config]\n"
            "       %s --help | --version\n\n"
            "dynd serves DyN models over HTTP (KServe v2 / Open Inference Protocol + /v1 classify).\n"
            "Settings come from the defaults, then the config file (--config FILE or $DYND_CONFIG),\n"
            "then environment variables DYND_<SETTING>, then flags. Per-model batching goes in\n"
            "[model.<name>] sections of the file.\n\n"
            "  --check-config   validate the settings (and the device) and exit 0 / 2\n"
            "  --print-config   print a documented config file with the effective settings\n\n"
            "settings:\n",
            argv0, argv0);
    char env[96];
    for (size_t i = 0; i < DYN_ARRAY_LEN(SETTINGS); i++) {
        const setting *s = &SETTINGS[i];
        env_name(s->name, env, sizeof env);
        fprintf(f, "  --%-22s %s (env %s, default \"%s\")%s\n", s->name, s->doc, env, s->def,
                s->per_model ? " [per model]" : "");
    }
}

void srv_config_print(FILE *f, const srv_config *cfg) {
    srv_config def;
    if (!cfg) {
        set_defaults(&def);
        cfg = &def;
    }
    fprintf(f, "# dynd.conf — every setting, documented. Generated by `dynd --print-config`.\n"
               "# Precedence: defaults < this file < environment DYND_<SETTING> < --flags.\n"
               "# Relative paths are relative to the directory dynd is started in.\n\n");
    char v[2048];
    for (size_t i = 0; i < DYN_ARRAY_LEN(SETTINGS); i++) {
        const setting *s = &SETTINGS[i];
        setting_format(s, cfg, v, sizeof v);
        if (s->type == T_ENUM || s->type == T_STR || s->type == T_BOOL)
            fprintf(f, "# %s\n", s->doc);
        else
            fprintf(f, "# %s (%lld..%lld)\n", s->doc, s->min, s->max);
        fprintf(f, "%s = %s\n\n", s->name, v);
    }
    fprintf(f, "# Per-model overrides: a [model.<name>] section may set batching, max_batch,\n"
               "# gpu_max_batch, max_queue_delay_us, queue_capacity, batch_workers and device,\n"
               "# e.g.\n# [model.mnist]\n# max_batch = 128\n# device = cpu\n");
    for (int k = 0; k < cfg->nsections; k++) {
        fprintf(f, "\n[model.%s]\n", cfg->sections[k].name);
        const void *base = (const char *)&cfg->sections[k].batch - OFF(batch);
        for (size_t i = 0; i < DYN_ARRAY_LEN(SETTINGS); i++) {
            if (!SETTINGS[i].per_model) continue;
            setting_format(&SETTINGS[i], base, v, sizeof v);
            fprintf(f, "%s = %s\n", SETTINGS[i].name, v);
        }
    }
}
