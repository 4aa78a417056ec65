/* jobs.c — `dynctl convert`, `finetune`, `jobs`, `cancel`, `resume`: submitting jobs, listing
 * and showing them, and watching one to its end.
 *
 * Options of a conversion / fine-tune are parsed with the engine's option table
 * (engine/convert/options.h, kind | DYN_OPT_REQUEST: the job request's options, as dynd checks
 * them) into a JSON object sent as the job's options: the body of POST /v1/finetunes or of a
 * conversion of a repository model, or the "options" field of the multipart upload (whose
 * "file" part libcurl streams from the file: curl_mime_filedata).
 *
 * Watching polls GET /v1/jobs/{id} every --interval seconds until the state is succeeded,
 * failed, cancelled or interrupted. On a terminal (stdout) one line is redrawn in place with
 * '\r': a bar, percent, phase, layer (conversion) or epoch with the last loss / accuracy
 * (fine-tune), ETA. Elsewhere one plain line per change of state, phase, whole percent, layer
 * or epoch. Then a summary line; the exit code says whether the job succeeded.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "convert/options.h"
#include "ctl.h"

static const char *sget(const json_t *j, const char *k) {
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

static int terminal_state(const char *s) {
    return !strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled") ||
           !strcmp(s, "interrupted");
}

/* --interval: seconds in (0, 3600] (default 1). -1 after a usage message. */
static double interval_of(const char *cmd, const char *v) {
    if (!v) return 1;
    char *end;
    double s = strtod(v, &end);
    if (*end || !(s > 0 && s <= 3600)) return ctl_usage(cmd, "--interval must be seconds in (0, 3600]"), -1;
    return s;
}

/* The text of one progress line (no bar): phase, layer or epoch, loss / accuracy, ETA. */
static void progress_text(const json_t *j, char *buf, size_t n, int with_eta) {
    const char *kind = sget(j, "kind"), *state = sget(j, "state");
    int w = snprintf(buf, n, "%5.1f%% %-9s", 100 * json_number_value(json_object_get(j, "progress")),
                     strcmp(state, "running") ? state : sget(j, "phase"));
    const json_t *layer = json_object_get(j, "layer");
    const json_t *hist = json_object_get(j, "history");
    const json_t *last = json_array_get(hist, json_array_size(hist) - 1);
    if (!strcmp(kind, "conversion") && json_integer_value(json_object_get(layer, "count")) > 0)
        w += snprintf(buf + w, n - (size_t)w, " layer %lld/%lld %s",
                      (long long)json_integer_value(json_object_get(layer, "index")),
                      (long long)json_integer_value(json_object_get(layer, "count")),
                      sget(layer, "name"));
    if (!strcmp(kind, "finetune") && (size_t)w < n)
        w += snprintf(buf + w, n - (size_t)w, " epoch %lld/%lld",
                      (long long)json_integer_value(json_object_get(j, "epoch")),
                      (long long)json_integer_value(json_object_get(j, "epochs")));
    if (last && (size_t)w < n)
        w += snprintf(buf + w, n - (size_t)w, " loss %.4f val acc %.2f%%",
                      json_number_value(json_object_get(last, "train_loss")),
                      100 * json_number_value(json_object_get(last, "val_acc")));
    const json_t *eta = json_object_get(j, "eta_s");
    if (with_eta && json_is_number(eta) && (size_t)w < n) {
        char t[32];
        cli_fmt_time(json_number_value(eta), t, sizeof t);
        snprintf(buf + w, n - (size_t)w, " ETA %s", t);
    }
    for (size_t l = strlen(buf); l > 0 && buf[l - 1] == ' '; l--) buf[l - 1] = '\0';
}

typedef struct watcher {
    int tty, drawn;
    char last[256]; /* plain mode: the last line printed, without its ETA */
} watcher;

static void render(watcher *w, const char *id, const json_t *j) {
    char text[256];
    if (w->tty) {
        const double p = json_number_value(json_object_get(j, "progress"));
        char bar[25];
        const int fill = (int)lround(DYN_MIN(DYN_MAX(p, 0.0), 1.0) * 24);
        for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '-';
        bar[24] = '\0';
        progress_text(j, text, sizeof text, 1);
        printf("\r%s [%s] %s\033[K", id, bar, text); /* \033[K: clear the rest of the line */
        w->drawn = 1;
    } else {
        progress_text(j, text, sizeof text, 0);
        if (!strcmp(text, w->last)) return;
        snprintf(w->last, sizeof w->last, "%s", text);
        progress_text(j, text, sizeof text, 1);
        printf("%s %s\n", id, text);
    }
    fflush(stdout);
}

/* Polls job `id` until it ends; prints the summary (or with --json the final record). 0 when it
 * succeeded, CTL_JOB when it ended otherwise, or the failure of a poll. *state (when not NULL)
 * gets the final state. */
static int watch(ctl *c, const char *id, double interval, char *state, size_t state_n) {
    char path[256];
    if (ctl_path(path, sizeof path, "/v1/jobs/", id, NULL)) return ctl_usage("jobs", "job id too long");
    watcher w = {.tty = !c->json && isatty(STDOUT_FILENO)};
    json_t *j = NULL;
    for (;;) {
        int rc = ctl_call(c, "jobs", "GET", path, NULL, &j);
        if (rc) {
            if (w.drawn) printf("\n");
            return rc;
        }
        if (!c->json) render(&w, id, j);
        if (terminal_state(sget(j, "state"))) break;
        json_decref(j);
        j = NULL;
        struct timespec ts = {(time_t)interval, (long)((interval - floor(interval)) * 1e9)};
        nanosleep(&ts, NULL);
    }
    const char *st = sget(j, "state");
    if (state) snprintf(state, state_n, "%s", st);
    if (w.drawn) printf("\n");
    if (c->json) {
        ctl_print_json(j);
    } else if (!strcmp(st, "succeeded")) {
        printf("%s succeeded: model %s\n", id, sget(j, "model"));
    } else {
        printf("%s %s%s%s%s\n", id, st, json_is_string(json_object_get(j, "error")) ? ": " : "",
               sget(j, "error"), !strcmp(st, "interrupted") ? " (dynctl resume continues it)" : "");
    }
    const int ok = !strcmp(st, "succeeded");
    json_decref(j);
    return ok ? CTL_OK : CTL_JOB;
}

/* ---- submitting ---- */

/* A job request from the command line: options (the engine's table), at most one positional
 * argument (NULL when none), --wait and --interval. */
typedef struct job_req {
    json_t *spec;
    const char *pos;
    int wait;
    double interval;
} job_req;

/* Parses a job command line of `kind` into q (q->spec: a new reference) after taking out
 * --wait and --interval. CTL_OK or CTL_USAGE (message printed). */
static int job_args(const char *cmd, int kind, int argc, char **argv, job_req *q) {
    const char *names[] = {"--wait", "--interval=", NULL};
    const char *vals[2] = {NULL, NULL};
    *q = (job_req){0};
    if ((argc = ctl_take_flags(cmd, argc, argv, names, vals)) < 0) return CTL_USAGE;
    q->wait = vals[0] != NULL;
    if ((q->interval = interval_of(cmd, vals[1])) < 0) return CTL_USAGE;
    int npos = 0, help = 0;
    dyn_err err = {0};
    if (dyn_opts_parse_argv(kind | DYN_OPT_REQUEST, argc, argv, &q->spec, &q->pos, 1, &npos,
                            &help, &err))
        return ctl_usage(cmd, "%s", err.msg);
    if (!npos) q->pos = NULL;
    return CTL_OK;
}

/* Posts the job, prints its id (or with --json its record), and with --wait watches it. */
static int submit(ctl *c, const char *cmd, const char *path, const ctl_body *b,
                  const job_req *q) {
    json_t *rec = NULL;
    int rc = ctl_call(c, cmd, "POST", path, b, &rec);
    if (rc) return rc;
    char id[64];
    snprintf(id, sizeof id, "%s", sget(rec, "id"));
    if (!q->wait) {
        if (c->json) ctl_print_json(rec);
        else printf("%s %s (output %s); dynctl jobs %s --watch\n", id, sget(rec, "state"),
                    sget(rec, "output"), id);
    } else if (!c->json) {
        printf("%s submitted (output %s)\n", id, sget(rec, "output"));
    }
    json_decref(rec);
    return q->wait ? watch(c, id, q->interval, NULL, 0) : CTL_OK;
}

int dynctl_convert(ctl *c, int argc, char **argv) {
    job_req q;
    int rc = job_args(argv[0], DYN_OPT_CONVERT, argc, argv, &q);
    const char *file = q.pos;
    if (!rc && !file == !json_object_get(q.spec, "model"))
        rc = ctl_usage(argv[0], file ? "give a MODEL file or --model NAME, not both"
                                     : "give a MODEL.onnx file (or --model NAME)");
    char *opts = rc ? NULL : json_dumps(q.spec, JSON_COMPACT);
    json_decref(q.spec);
    if (rc || !opts) return rc ? rc : CTL_LOCAL;
    curl_mime *mime = NULL;
    ctl_body b = {.data = opts, .len = strlen(opts), .content_type = "application/json"};
    FILE *f = file ? fopen(file, "rb") : NULL; /* say so now rather than from the upload */
    if (file && !f) {
        fprintf(stderr, "dynctl convert: cannot read %s\n", file);
        free(opts);
        return CTL_LOCAL;
    }
    if (f) {
        fclose(f);
        mime = curl_mime_init(c->curl);
        curl_mimepart *part = curl_mime_addpart(mime);
        curl_mime_name(part, "options");
        curl_mime_data(part, opts, CURL_ZERO_TERMINATED);
        curl_mime_type(part, "application/json");
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "file");
        curl_mime_type(part, "application/octet-stream");
        curl_mime_filedata(part, file); /* streamed by libcurl as it sends, never read whole */
        b = (ctl_body){.mime = mime};
    }
    rc = submit(c, argv[0], "/v1/conversions", &b, &q);
    curl_mime_free(mime);
    free(opts);
    return rc;
}

int dynctl_finetune(ctl *c, int argc, char **argv) {
    job_req q;
    int rc = job_args(argv[0], DYN_OPT_FINETUNE, argc, argv, &q);
    const char *model = q.pos;
    if (rc) { /* usage message printed */
    } else if (model && json_object_get(q.spec, "model")) {
        rc = ctl_usage(argv[0], "give MODEL or --model, not both");
    } else if (!model && !json_object_get(q.spec, "model")) {
        rc = ctl_usage(argv[0], "give a MODEL to fine-tune");
    } else if (!json_object_get(q.spec, "data")) {
        rc = ctl_usage(argv[0], "give --data SET");
    } else if (model) {
        json_object_set_new(q.spec, "model", json_string(model));
    }
    char *body = rc ? NULL : json_dumps(q.spec, JSON_COMPACT);
    json_decref(q.spec);
    if (rc || !body) return rc ? rc : CTL_LOCAL;
    ctl_body b = {.data = body, .len = strlen(body), .content_type = "application/json"};
    rc = submit(c, argv[0], "/v1/finetunes", &b, &q);
    free(body);
    return rc;
}

/* ---- jobs, cancel, resume ---- */

static void show_job(const json_t *j) {
    static const char *const keys[] = {"id", "kind", "state", "phase", "output", "model",
                                       "error", "error_code", "created_at", "started_at",
                                       "finished_at"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const json_t *v = json_object_get(j, keys[i]);
        if (json_is_string(v)) printf("%-12s %s\n", keys[i], json_string_value(v));
    }
    char text[256];
    progress_text(j, text, sizeof text, 1);
    printf("%-12s %s\n", "progress", text);
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(j, "history"), i, h)
        printf("%-12s epoch %lld: train loss %.4f, train acc %.2f%%, val acc %.2f%%\n",
               i ? "" : "history", (long long)json_integer_value(json_object_get(h, "epoch")),
               json_number_value(json_object_get(h, "train_loss")),
               100 * json_number_value(json_object_get(h, "train_acc")),
               100 * json_number_value(json_object_get(h, "val_acc")));
    const json_t *res = json_object_get(j, "result");
    if (json_is_object(res)) {
        char *s = json_dumps(res, JSON_COMPACT | JSON_REAL_PRECISION(6));
        printf("%-12s %s\n", "result", s ? s : "");
        free(s);
    }
}

int dynctl_jobs(ctl *c, int argc, char **argv) {
    const char *names[] = {"--watch", "--interval=", "--state=", "--kind=", NULL};
    const char *vals[4] = {NULL, NULL, NULL, NULL};
    if ((argc = ctl_take_flags(argv[0], argc, argv, names, vals)) < 0) return CTL_USAGE;
    double interval = interval_of(argv[0], vals[1]);
    if (interval < 0) return CTL_USAGE;
    if (argc > 2) return ctl_usage(argv[0], "unexpected argument '%s'", argv[2]);
    if (argc == 2 && argv[1][0] == '-') return ctl_usage(argv[0], "unknown option '%s'", argv[1]);
    if (argc == 2 && (vals[2] || vals[3])) return ctl_usage(argv[0], "--state / --kind filter the list");
    if (argc == 1 && vals[0]) return ctl_usage(argv[0], "--watch needs a job ID");
    json_t *j = NULL;
    char path[256];
    int rc;
    if (argc == 2) {
        if (vals[0]) return watch(c, argv[1], interval, NULL, 0);
        if (ctl_path(path, sizeof path, "/v1/jobs/", argv[1], NULL)) return ctl_usage(argv[0], "job id too long");
        if ((rc = ctl_call(c, argv[0], "GET", path, NULL, &j))) return rc;
        if (c->json) ctl_print_json(j);
        else show_job(j);
        json_decref(j);
        return CTL_OK;
    }
    char *st = vals[2] ? curl_easy_escape(NULL, vals[2], 0) : NULL;
    char *kd = vals[3] ? curl_easy_escape(NULL, vals[3], 0) : NULL;
    snprintf(path, sizeof path, "/v1/jobs%s%s%s%s%s", st || kd ? "?" : "", st ? "state=" : "",
             st ? st : "", st && kd ? "&kind=" : kd ? "kind=" : "", kd ? kd : "");
    curl_free(st);
    curl_free(kd);
    if ((rc = ctl_call(c, argv[0], "GET", path, NULL, &j))) return rc;
    if (c->json) {
        ctl_print_json(j);
    } else {
        printf("%-20s %-10s %-11s %6s  %-9s %s\n", "ID", "KIND", "STATE", "PROG", "PHASE", "OUTPUT");
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(j, "jobs"), i, x)
            printf("%-20s %-10s %-11s %5.1f%%  %-9s %s\n", sget(x, "id"), sget(x, "kind"),
                   sget(x, "state"), 100 * json_number_value(json_object_get(x, "progress")),
                   sget(x, "phase"), sget(x, "output"));
    }
    json_decref(j);
    return CTL_OK;
}

/* cancel / resume ID [--wait] */
static int act(ctl *c, int argc, char **argv, const char *method, const char *suffix) {
    const char *names[] = {"--wait", "--interval=", NULL};
    const char *vals[2] = {NULL, NULL};
    if ((argc = ctl_take_flags(argv[0], argc, argv, names, vals)) < 0) return CTL_USAGE;
    double interval = interval_of(argv[0], vals[1]);
    if (interval < 0) return CTL_USAGE;
    if (argc != 2 || argv[1][0] == '-') return ctl_usage(argv[0], "give one job ID");
    char path[256];
    if (ctl_path(path, sizeof path, "/v1/jobs/", argv[1], suffix)) return ctl_usage(argv[0], "job id too long");
    json_t *j = NULL;
    ctl_resp r;
    int rc = ctl_http(c, method, path, NULL, &r);
    if (rc) return rc;
    if (!(rc = ctl_reply_status(c, argv[0], &r)) && !json_is_object(r.json)) rc = CTL_SERVER;
    j = rc ? NULL : json_incref(r.json);
    const long status = r.status;
    ctl_resp_free(&r);
    if (rc) return rc;
    if (!vals[0]) {
        if (c->json) ctl_print_json(j);
        else if (suffix) printf("%s: resumed, %s\n", argv[1], sget(j, "state"));
        else printf("%s: %s\n", argv[1], status == 200 ? "cancelled" : "cancel requested");
        json_decref(j);
        return CTL_OK;
    }
    json_decref(j);
    char state[32] = "";
    rc = watch(c, argv[1], interval, state, sizeof state);
    if (!suffix && !strcmp(state, "cancelled")) return CTL_OK; /* what cancel --wait waits for */
    return rc;
}

int dynctl_cancel(ctl *c, int argc, char **argv) { return act(c, argc, argv, "DELETE", NULL); }
int dynctl_resume(ctl *c, int argc, char **argv) { return act(c, argc, argv, "POST", "/resume"); }
