/* metrics.c — see metrics.h. Series live in fixed arrays found by linear search: there are a
 * few dozen of them (routes x served models x statuses), and a scrape walks them all anyway. */
#include "server/metrics.h"
#include "cuda/dyn_cuda.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REQ_SERIES 512
#define MAX_MODEL_SERIES 128
#define MAX_ERR_SERIES 64

static const double LAT_BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NLAT (sizeof LAT_BUCKETS / sizeof LAT_BUCKETS[0])
static const double BATCH_BUCKETS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define NBATCH (sizeof BATCH_BUCKETS / sizeof BATCH_BUCKETS[0])

typedef struct req_series {
    char endpoint[32], model[65];
    int code;
    uint64_t count, buckets[NLAT];
    double sum;
} req_series;

typedef struct model_series {
    char model[65];
    int version;
    uint64_t batches, bsum, buckets[NBATCH];
    double load_s;
    int has_load;
} model_series;

static const double JOB_BUCKETS[] = {1, 5, 15, 60, 300, 900, 3600, 10800, 43200, 86400};
#define NJOB (sizeof JOB_BUCKETS / sizeof JOB_BUCKETS[0])
#define MAX_JOB_SERIES 32
#define MAX_JOB_STATES 8

typedef struct job_series {
    const char *kind, *state; /* static */
    uint64_t count, buckets[NJOB];
    double sum;
} job_series;

typedef struct err_series {
    char code[48];
    uint64_t count;
} err_series;

struct srv_metrics {
    pthread_mutex_t mu;
    int nreq, nmodel, nerr;
    uint64_t dropped;
    req_series req[MAX_REQ_SERIES];
    model_series model[MAX_MODEL_SERIES];
    err_series err[MAX_ERR_SERIES];
    int njob, njob_states;
    job_series job[MAX_JOB_SERIES];
    const char *job_state_names[MAX_JOB_STATES];
    int job_state_counts[MAX_JOB_STATES];
    uint64_t conn_dropped[4]; /* by CONN_DROP_REASONS */
};

/* The reasons server/guard.c drops a connection for (dynd_connections_dropped_total). */
static const char *const CONN_DROP_REASONS[4] = {"per_ip_limit", "header_timeout", "slow_body",
                                                 "other"};

srv_metrics *srv_metrics_new(void) {
    srv_metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void srv_metrics_free(srv_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void copy_label(char *dst, size_t n, const char *s) { snprintf(dst, n, "%s", s ? s : ""); }

void srv_metrics_request(srv_metrics *m, const char *endpoint, const char *model, int code,
                         double seconds) {
    pthread_mutex_lock(&m->mu);
    req_series *s = NULL;
    for (int i = 0; i < m->nreq && !s; i++)
        if (m->req[i].code == code && !strcmp(m->req[i].endpoint, endpoint ? endpoint : "") &&
            !strcmp(m->req[i].model, model ? model : ""))
            s = &m->req[i];
    if (!s && m->nreq < MAX_REQ_SERIES) {
        s = &m->req[m->nreq++];
        copy_label(s->endpoint, sizeof s->endpoint, endpoint);
        copy_label(s->model, sizeof s->model, model);
        s->code = code;
    }
    if (s) {
        s->count++;
        s->sum += seconds;
        for (size_t b = 0; b < NLAT; b++)
            if (seconds <= LAT_BUCKETS[b]) s->buckets[b]++;
    } else {
        m->dropped++;
    }
    pthread_mutex_unlock(&m->mu);
}

/* mu held. */
static model_series *model_get(srv_metrics *m, const char *model, int version) {
    for (int i = 0; i < m->nmodel; i++)
        if (m->model[i].version == version && !strcmp(m->model[i].model, model)) return &m->model[i];
    if (m->nmodel == MAX_MODEL_SERIES) return NULL;
    model_series *s = &m->model[m->nmodel++];
    copy_label(s->model, sizeof s->model, model);
    s->version = version;
    return s;
}

void srv_metrics_batch(srv_metrics *m, const char *model, int batch_size) {
    pthread_mutex_lock(&m->mu);
    model_series *s = model_get(m, model, 0);
    if (s) {
        s->batches++;
        s->bsum += (uint64_t)batch_size;
        for (size_t b = 0; b < NBATCH; b++)
            if (batch_size <= BATCH_BUCKETS[b]) s->buckets[b]++;
    } else {
        m->dropped++;
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_model_load(srv_metrics *m, const char *model, int version, double seconds) {
    pthread_mutex_lock(&m->mu);
    model_series *s = model_get(m, model, version);
    if (s) {
        s->load_s = seconds;
        s->has_load = 1;
    } else {
        m->dropped++;
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_conn_dropped(srv_metrics *m, const char *reason) {
    int k = 3;
    for (int i = 0; i < 3; i++)
        if (!strcmp(reason, CONN_DROP_REASONS[i])) k = i;
    pthread_mutex_lock(&m->mu);
    m->conn_dropped[k]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_error(srv_metrics *m, const char *code) {
    pthread_mutex_lock(&m->mu);
    err_series *s = NULL;
    for (int i = 0; i < m->nerr && !s; i++)
        if (!strcmp(m->err[i].code, code)) s = &m->err[i];
    if (!s && m->nerr < MAX_ERR_SERIES) {
        s = &m->err[m->nerr++];
        copy_label(s->code, sizeof s->code, code);
    }
    if (s) s->count++;
    else m->dropped++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_jobs_set(srv_metrics *m, const char *const *names, const int *counts, int n) {
    pthread_mutex_lock(&m->mu);
    m->njob_states = n < MAX_JOB_STATES ? n : MAX_JOB_STATES;
    for (int i = 0; i < m->njob_states; i++) {
        m->job_state_names[i] = names[i];
        m->job_state_counts[i] = counts[i];
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_job_duration(srv_metrics *m, const char *kind, const char *state, double seconds) {
    pthread_mutex_lock(&m->mu);
    job_series *s = NULL;
    for (int i = 0; i < m->njob && !s; i++)
        if (!strcmp(m->job[i].kind, kind) && !strcmp(m->job[i].state, state)) s = &m->job[i];
    if (!s && m->njob < MAX_JOB_SERIES) {
        s = &m->job[m->njob++];
        s->kind = kind;
        s->state = state;
    }
    if (s) {
        s->count++;
        s->sum += seconds;
        for (size_t b = 0; b < NJOB; b++)
            if (seconds <= JOB_BUCKETS[b]) s->buckets[b]++;
    } else {
        m->dropped++;
    }
    pthread_mutex_unlock(&m->mu);
}

/* mu held. */
static void write_jobs(srv_metrics *m, FILE *f) {
    fprintf(f, "# HELP dynd_jobs Conversion and fine-tuning jobs by state.\n"
               "# TYPE dynd_jobs gauge\n");
    for (int i = 0; i < m->njob_states; i++)
        fprintf(f, "dynd_jobs{state=\"%s\"} %d\n", m->job_state_names[i], m->job_state_counts[i]);
    fprintf(f, "# HELP dynd_job_duration_seconds Duration of a job's run, by kind and final state.\n"
               "# TYPE dynd_job_duration_seconds histogram\n");
    for (int i = 0; i < m->njob; i++) {
        const job_series *s = &m->job[i];
        char lbl[96];
        snprintf(lbl, sizeof lbl, "kind=\"%s\",state=\"%s\"", s->kind, s->state);
        for (size_t b = 0; b < NJOB; b++)
            fprintf(f, "dynd_job_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", lbl, JOB_BUCKETS[b],
                    (unsigned long long)s->buckets[b]);
        fprintf(f, "dynd_job_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", lbl,
                (unsigned long long)s->count);
        fprintf(f, "dynd_job_duration_seconds_sum{%s} %.3f\n", lbl, s->sum);
        fprintf(f, "dynd_job_duration_seconds_count{%s} %llu\n", lbl, (unsigned long long)s->count);
    }
}

void srv_metrics_write(srv_metrics *m, FILE *f) {
    pthread_mutex_lock(&m->mu);
    fprintf(f, "# HELP dynd_requests_total HTTP requests by endpoint, model and status.\n"
               "# TYPE dynd_requests_total counter\n");
    for (int i = 0; i < m->nreq; i++) {
        const req_series *s = &m->req[i];
        fprintf(f, "dynd_requests_total{endpoint=\"%s\",model=\"%s\",code=\"%d\"} %llu\n",
                s->endpoint, s->model, s->code, (unsigned long long)s->count);
    }
    fprintf(f, "# HELP dynd_request_duration_seconds Request latency, first byte in to reply.\n"
               "# TYPE dynd_request_duration_seconds histogram\n");
    for (int i = 0; i < m->nreq; i++) {
        const req_series *s = &m->req[i];
        char lbl[160];
        snprintf(lbl, sizeof lbl, "endpoint=\"%s\",model=\"%s\",code=\"%d\"", s->endpoint,
                 s->model, s->code);
        for (size_t b = 0; b < NLAT; b++)
            fprintf(f, "dynd_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", lbl,
                    LAT_BUCKETS[b], (unsigned long long)s->buckets[b]);
        fprintf(f, "dynd_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", lbl,
                (unsigned long long)s->count);
        fprintf(f, "dynd_request_duration_seconds_sum{%s} %.6f\n", lbl, s->sum);
        fprintf(f, "dynd_request_duration_seconds_count{%s} %llu\n", lbl,
                (unsigned long long)s->count);
    }
    fprintf(f, "# HELP dynd_batch_size Samples per forward pass.\n"
               "# TYPE dynd_batch_size histogram\n");
    for (int i = 0; i < m->nmodel; i++) {
        const model_series *s = &m->model[i];
        if (s->version != 0) continue;
        for (size_t b = 0; b < NBATCH; b++)
            fprintf(f, "dynd_batch_size_bucket{model=\"%s\",le=\"%g\"} %llu\n", s->model,
                    BATCH_BUCKETS[b], (unsigned long long)s->buckets[b]);
        fprintf(f, "dynd_batch_size_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", s->model,
                (unsigned long long)s->batches);
        fprintf(f, "dynd_batch_size_sum{model=\"%s\"} %llu\n", s->model,
                (unsigned long long)s->bsum);
        fprintf(f, "dynd_batch_size_count{model=\"%s\"} %llu\n", s->model,
                (unsigned long long)s->batches);
    }
    fprintf(f, "# HELP dynd_model_load_seconds Time the last load of a model version took.\n"
               "# TYPE dynd_model_load_seconds gauge\n");
    for (int i = 0; i < m->nmodel; i++)
        if (m->model[i].has_load)
            fprintf(f, "dynd_model_load_seconds{model=\"%s\",version=\"%d\"} %.6f\n",
                    m->model[i].model, m->model[i].version, m->model[i].load_s);
    fprintf(f, "# HELP dynd_errors_total Error replies by machine code.\n"
               "# TYPE dynd_errors_total counter\n");
    for (int i = 0; i < m->nerr; i++)
        fprintf(f, "dynd_errors_total{code=\"%s\"} %llu\n", m->err[i].code,
                (unsigned long long)m->err[i].count);
    write_jobs(m, f);
    fprintf(f, "# HELP dynd_connections_dropped_total Connections closed by the connection guard "
               "(server/guard.h).\n# TYPE dynd_connections_dropped_total counter\n");
    for (int i = 0; i < 4; i++)
        fprintf(f, "dynd_connections_dropped_total{reason=\"%s\"} %llu\n", CONN_DROP_REASONS[i],
                (unsigned long long)m->conn_dropped[i]);
    /* Device memory (engine/cuda/dyn_cuda.h): what the process's CUDA pools hold and hand
     * out, over every model and worker; 0 on the CPU. */
    size_t reserved = 0, in_use = 0;
    dyn_cuda_mem_process(&reserved, &in_use);
    fprintf(f, "# HELP dynd_device_memory_bytes Device (GPU) memory held by the CUDA pools: "
               "reserved (allocated from the driver) and in_use (handed out).\n"
               "# TYPE dynd_device_memory_bytes gauge\n"
               "dynd_device_memory_bytes{kind=\"reserved\"} %zu\n"
               "dynd_device_memory_bytes{kind=\"in_use\"} %zu\n",
            reserved, in_use);
    fprintf(f, "# HELP dynd_metrics_dropped_total Observations beyond the series table.\n"
               "# TYPE dynd_metrics_dropped_total counter\ndynd_metrics_dropped_total %llu\n",
            (unsigned long long)m->dropped);
    pthread_mutex_unlock(&m->mu);
}
