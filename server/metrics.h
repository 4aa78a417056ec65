/* metrics.h — Prometheus metrics (text exposition format 0.0.4).
 *
 *   dynd_requests_total{endpoint,model,code}               counter
 *   dynd_request_duration_seconds{endpoint,model,code}     histogram
 *   dynd_batch_size{model}                                  histogram (samples per forward)
 *   dynd_model_load_seconds{model,version}                  gauge (last load)
 *   dynd_queue_depth{model,version}, dynd_model_ready{...}  gauges, sampled at scrape time
 *   dynd_errors_total{code}                                 counter (error replies by code)
 *   dynd_inflight_requests, dynd_up, dynd_draining          gauges
 *   dynd_jobs{state}                                        gauge (jobs known, by state)
 *   dynd_job_duration_seconds{kind,state}                   histogram (one run of a job)
 *   dynd_job_lease_age_seconds{job,holder}                  gauge, sampled at scrape time
 *                                                           (queued / running jobs: jobs.h)
 *   dynd_connections_dropped_total{reason}                  counter (server/guard.h)
 *
 * Label values are bounded: `model` is a served model's name or "" (never a name a client made
 * up), `endpoint` a route's label, `code` an HTTP status. A fixed table of series (guarded by
 * one mutex) keeps memory bounded; series beyond it are counted in dynd_metrics_dropped_total.
 */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <stdio.h>

typedef struct srv_metrics srv_metrics;

/* NULL on ENOMEM. Free with srv_metrics_free. */
srv_metrics *srv_metrics_new(void);
void srv_metrics_free(srv_metrics *m);

void srv_metrics_request(srv_metrics *m, const char *endpoint, const char *model, int code,
                         double seconds);
void srv_metrics_batch(srv_metrics *m, const char *model, int batch_size);
void srv_metrics_model_load(srv_metrics *m, const char *model, int version, double seconds);
void srv_metrics_error(srv_metrics *m, const char *code);
/* A connection dropped by the guard; reason: per_ip_limit, header_timeout or slow_body. */
void srv_metrics_conn_dropped(srv_metrics *m, const char *reason);
/* The jobs gauge: counts[i] jobs in state names[i] (static strings), n <= 8 states. */
void srv_metrics_jobs_set(srv_metrics *m, const char *const *names, const int *counts, int n);
/* One run of a job of `kind` ended in `state` (static strings) after `seconds`. */
void srv_metrics_job_duration(srv_metrics *m, const char *kind, const char *state, double seconds);

/* Appends the exposition text of everything recorded to f. */
void srv_metrics_write(srv_metrics *m, FILE *f);

#endif
