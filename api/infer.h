/* infer.h — the inference path shared by v2 infer and classify: a job owns the model input and
 * output buffers and the model reference, is queued on the model's batcher, and wakes its
 * suspended request when a batch worker finished it. The request thread never runs the model.
 */
#ifndef API_INFER_H
#define API_INFER_H

#include "api/api.h"

typedef struct api_job {
    srv_infer inf;      /* first member: a srv_infer * is the job */
    srv_req *req;
    srv_model *m;       /* reference held until the request completes */
    int n;              /* samples */
    float *x, *y;       /* n * in_numel, n * out_numel */
    json_t *state;      /* handler data (request id, requested outputs, ...); may be NULL */
    int top_k;
} api_job;

/* A job of n samples on m for r; ownership of the job and of the reference to m moves to r
 * (freed when the request completes). NULL after replying 500 on ENOMEM (m released). */
api_job *api_job_new(srv_req *r, srv_model *m, int n);

/* Queues the job; on success the request is suspended and on_done runs once the batch
 * finished. On a full queue replies 503 queue_full with Retry-After, when the model is
 * stopping 503 model_unavailable. */
void api_job_submit(srv_req *r, api_job *job, srv_handler on_done);

/* In on_done: 0 when the job ran; otherwise replies (504 deadline_exceeded, 503
 * shutting_down) and returns -1. */
int api_job_check(srv_req *r, const api_job *job);

/* Softmax of the job's outputs into a new buffer (n * out_numel; free()). NULL on ENOMEM. */
float *api_job_probs(const api_job *job);

/* Indices of the k largest of v[0..c) into idx (descending, ties by lower index). */
void api_topk(const float *v, int c, int k, int *idx);

#endif
