/* dynctl.c — the command-line client of dynd: main, the global flags, per-subcommand help, and
 * the small subcommands (health, models, load, unload, datasets). Classification and v2
 * inference: infer.c; conversions, fine-tunes and jobs: jobs.c; HTTP: http.c.
 *
 *   dynctl [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]      (dynctl COMMAND --help)
 *
 * The server is --url, else $DYND_URL, else http://127.0.0.1:8080; the bearer token --token,
 * else $DYND_TOKEN. Global flags may come anywhere before a "--". Exit codes: ctl.h (CTL_*),
 * listed by `dynctl --help`; human output on stdout, messages on stderr, --json the server's
 * JSON (or dynctl's own object where it combines replies) on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/options.h"
#include "ctl.h"

static const char EXIT_CODES[] =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  local failure (a file cannot be read, out of memory)\n"
    "  2  usage error (nothing was sent)\n"
    "  3  the server cannot be reached (connection refused, unknown host, timeout)\n"
    "  4  not found (HTTP 404: model, job, data set)\n"
    "  5  the server answered another error (4xx / 5xx; its message and code on stderr)\n"
    "  6  a waited-for job ended failed, cancelled or interrupted\n"
    "  7  unauthorized (HTTP 401 / 403: missing or wrong token)\n";

static int dynctl_health(ctl *c, int argc, char **argv);
static int dynctl_models(ctl *c, int argc, char **argv);
static int dynctl_load(ctl *c, int argc, char **argv);
static int dynctl_datasets(ctl *c, int argc, char **argv);

typedef struct sub {
    const char *name;
    int (*run)(ctl *c, int argc, char **argv);
    int opts_kind; /* options from the engine's table (DYN_OPT_CONVERT / _FINETUNE), or 0 */
    const char *help;
} sub;

static const sub SUBS[] = {
    {"health", dynctl_health, 0,
     "usage: dynctl health\n"
     "Is the server live and ready (GET /v2/health/live, /v2/health/ready, /v2)? Exit 0 when\n"
     "ready, 5 when live but not ready, 3 when it cannot be reached.\n"},
    {"models", dynctl_models, 0,
     "usage: dynctl models [--json]\n"
     "The models the server has (GET /v1/models): name, ready, versions, input shape, classes;\n"
     "a model that is not served shows why.\n"},
    {"load", dynctl_load, 0,
     "usage: dynctl load NAME\n"
     "(Re)loads model NAME from the model directory (POST /v2/repository/models/NAME/load).\n"},
    {"unload", dynctl_load, 0,
     "usage: dynctl unload NAME\n"
     "Stops serving model NAME (POST /v2/repository/models/NAME/unload); its file stays.\n"},
    {"classify", dynctl_classify, 0,
     "usage: dynctl classify IMAGE... [--model M] [--version V] [--top K]\n"
     "Classifies PNG / JPEG files (POST /v1/models/M/classify, one request per image) and prints\n"
     "the top K labels and scores of each. Without --model: the server's only ready model.\n"
     "Every image is tried; the exit code is the first failure's.\n"},
    {"infer", dynctl_infer, 0,
     "usage: dynctl infer FILE.json [--model M] [--version V]\n"
     "Sends an Open Inference Protocol request (a JSON file: {\"inputs\": [{\"name\": \"input\",\n"
     "\"shape\": [...], \"datatype\": \"FP32\"|\"UINT8\", \"data\": [...]}], \"outputs\": [...]}) to\n"
     "POST /v2/models/M/infer (the file is streamed) and prints each output tensor.\n"
     "Without --model: the server's only ready model.\n"},
    {"convert", dynctl_convert, DYN_OPT_CONVERT,
     "usage: dynctl convert MODEL.onnx|MODEL.dyn [--output NAME] [options] [--wait]\n"
     "       dynctl convert --model NAME [options] [--wait]\n"
     "Submits a conversion job (POST /v1/conversions): the file is streamed as a multipart upload\n"
     "with the options as its \"options\" JSON field, or a repository model is named by --model.\n"
     "Prints the job id; --wait watches it (as `dynctl jobs ID --watch`, --interval S) and exits\n"
     "6 unless it succeeds. Options (checked here against the engine's table, as dynd does; a\n"
     "JSON option may be given as @FILE):\n"},
    {"finetune", dynctl_finetune, DYN_OPT_FINETUNE,
     "usage: dynctl finetune MODEL --data SET [options] [--wait]\n"
     "Submits a fine-tuning job of repository model MODEL (POST /v1/finetunes; --model MODEL\n"
     "works too). Prints the job id; --wait watches it (--interval S) and exits 6 unless it\n"
     "succeeds. Options (the engine's table):\n"},
    {"jobs", dynctl_jobs, 0,
     "usage: dynctl jobs [--state S] [--kind conversion|finetune]\n"
     "       dynctl jobs ID [--watch [--interval S]]\n"
     "Lists jobs (GET /v1/jobs), or shows one. --watch polls it until it ends: on a terminal a\n"
     "progress bar redrawn in place (phase, percent, ETA, layer or epoch, loss / accuracy), else\n"
     "one line per change; exit 0 when it succeeded, 6 when it failed, was cancelled or\n"
     "interrupted. With --json: the job's final record.\n"},
    {"cancel", dynctl_cancel, 0,
     "usage: dynctl cancel ID [--wait]\n"
     "Cancels a job (DELETE /v1/jobs/ID): a queued one at once, a running one at its next\n"
     "check (--wait waits for that).\n"},
    {"resume", dynctl_resume, 0,
     "usage: dynctl resume ID [--wait]\n"
     "Resumes an interrupted job (POST /v1/jobs/ID/resume) from its last checkpoint.\n"},
    {"datasets", dynctl_datasets, 0,
     "usage: dynctl datasets [list]\n"
     "       dynctl datasets show NAME\n"
     "       dynctl datasets put NAME ARCHIVE [--overwrite]\n"
     "       dynctl datasets delete NAME\n"
     "The data sets of the server's data_dir (/v1/datasets). put streams a zip / tar(.gz) of\n"
     "PNG / JPEG images (<class>/<img>, train|test/<class>/<img>, or images alone).\n"},
};
#define NSUBS (sizeof SUBS / sizeof SUBS[0])

static void usage(FILE *f) {
    fprintf(f, "usage: dynctl [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]\n\n"
               "Commands (dynctl COMMAND --help):\n");
    for (size_t i = 0; i < NSUBS; i++) {
        const char *h = SUBS[i].help + strlen("usage: ");
        fprintf(f, "  %.*s\n", (int)strcspn(h, "\n"), h);
    }
    fprintf(f, "\nServer: --url, else $DYND_URL, else http://127.0.0.1:8080. Token: --token, else\n"
               "$DYND_TOKEN (sent as Authorization: Bearer). --json: machine output on stdout (on\n"
               "an error reply, the server's {\"error\", \"code\"} object).\n\n%s",
            EXIT_CODES);
}

static void sub_help(const sub *s) {
    printf("%s", s->help);
    if (s->opts_kind) {
        char *h = dyn_opts_help(s->opts_kind | DYN_OPT_REQUEST, 1);
        printf("%s  %-28s %s\n  %-28s %s\n", h ? h : "", "--wait", "watch the job until it ends",
               "--interval S", "seconds between polls (default 1)");
        free(h);
    }
    printf("\nGlobal flags: --url URL, --token TOKEN, --json. Exit codes: dynctl --help.\n");
}

/* ---- health ---- */

static int dynctl_health(ctl *c, int argc, char **argv) {
    if (argc > 1) return ctl_usage(argv[0], "unexpected argument '%s'", argv[1]);
    ctl_resp live, ready;
    int rc = ctl_http(c, "GET", "/v2/health/live", NULL, &live);
    if (rc) return rc;
    rc = ctl_http(c, "GET", "/v2/health/ready", NULL, &ready);
    if (rc) {
        ctl_resp_free(&live);
        return rc;
    }
    json_t *meta = NULL;
    ctl_resp m;
    if (!ctl_http(c, "GET", "/v2", NULL, &m) && m.status == 200) meta = json_incref(m.json);
    ctl_resp_free(&m);
    const int is_live = live.status == 200, is_ready = ready.status == 200;
    if (c->json) {
        json_t *o = json_pack("{s:s, s:b, s:b, s:O?}", "url", c->url, "live", is_live, "ready",
                              is_ready, "server", meta);
        ctl_print_json(o);
        json_decref(o);
    } else {
        const char *ver = json_string_value(json_object_get(meta, "version"));
        printf("%s: %s, %s%s%s%s\n", c->url, is_live ? "live" : "not live",
               is_ready ? "ready" : "not ready", ver ? " (dynd " : "", ver ? ver : "",
               ver ? ")" : "");
    }
    if (!is_ready) {
        const char *why = json_string_value(json_object_get(ready.json, "error"));
        fprintf(stderr, "dynctl health: not ready%s%s (HTTP %ld)\n", why ? ": " : "",
                why ? why : "", ready.status);
    }
    json_decref(meta);
    ctl_resp_free(&live);
    ctl_resp_free(&ready);
    return is_live && is_ready ? CTL_OK : CTL_SERVER;
}

/* ---- models, load, unload ---- */

static int dynctl_models(ctl *c, int argc, char **argv) {
    if (argc > 1) return ctl_usage(argv[0], "unexpected argument '%s'", argv[1]);
    json_t *j = NULL;
    int rc = ctl_call(c, argv[0], "GET", "/v1/models", NULL, &j);
    if (rc) return rc;
    if (c->json) {
        ctl_print_json(j);
        json_decref(j);
        return CTL_OK;
    }
    printf("%-24s %-5s %-10s %-14s %s\n", "NAME", "READY", "VERSIONS", "INPUT", "CLASSES");
    size_t i, k;
    json_t *m, *v;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!json_is_true(json_object_get(m, "ready"))) {
            const char *why = json_string_value(json_object_get(m, "reason"));
            printf("%-24s %-5s %s\n", name ? name : "?", "no", why ? why : "");
            continue;
        }
        char vers[64] = "";
        json_array_foreach(json_object_get(m, "versions"), k, v) {
            size_t l = strlen(vers);
            snprintf(vers + l, sizeof vers - l, "%s%s", l ? "," : "", json_string_value(v));
        }
        printf("%-24s %-5s %-10s %-14s %lld\n", name ? name : "?", "yes", vers,
               json_string_value(json_object_get(m, "input_shape")),
               (long long)json_integer_value(json_object_get(m, "classes")));
    }
    json_decref(j);
    return CTL_OK;
}

static int dynctl_load(ctl *c, int argc, char **argv) {
    if (argc != 2) return ctl_usage(argv[0], "give one model NAME");
    char path[512];
    if (ctl_path(path, sizeof path, "/v2/repository/models/", argv[1],
                 !strcmp(argv[0], "load") ? "/load" : "/unload"))
        return ctl_usage(argv[0], "model name too long");
    json_t *j = NULL;
    int rc = ctl_call(c, argv[0], "POST", path, NULL, &j);
    if (rc) return rc;
    if (c->json) ctl_print_json(j);
    else printf("%s: %s\n", json_string_value(json_object_get(j, "name")),
                json_string_value(json_object_get(j, "state")));
    json_decref(j);
    return CTL_OK;
}

/* ---- data sets ---- */

/* One line of a data set: name, images, classes, labelled, splits (a manifest's object or a
 * folder's list). */
static void dataset_line(const json_t *d) {
    const json_t *sp = json_object_get(d, "splits");
    char splits[128] = "";
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_object(sp)) {
        json_object_foreach((json_t *)sp, k, v) {
            size_t l = strlen(splits);
            snprintf(splits + l, sizeof splits - l, "%s%s", l ? "," : "", k);
        }
    } else {
        json_array_foreach(sp, i, v) {
            size_t l = strlen(splits);
            snprintf(splits + l, sizeof splits - l, "%s%s", l ? "," : "", json_string_value(v));
        }
    }
    const json_t *n = json_object_get(d, "images");
    char images[32] = "-";
    if (json_is_integer(n)) snprintf(images, sizeof images, "%lld", (long long)json_integer_value(n));
    printf("%-24s %-8s %-8zu %-8s %s\n", json_string_value(json_object_get(d, "name")), images,
           json_array_size(json_object_get(d, "classes")),
           json_is_true(json_object_get(d, "labeled")) ? "yes" : "no", splits);
}

static int dynctl_datasets(ctl *c, int argc, char **argv) {
    const char *names[] = {"--overwrite", NULL};
    const char *vals[1] = {NULL};
    if ((argc = ctl_take_flags(argv[0], argc, argv, names, vals)) < 0) return CTL_USAGE;
    const char *op = argc > 1 ? argv[1] : "list";
    const int nargs = !strcmp(op, "put") ? 4 : !strcmp(op, "list") ? (argc > 1 ? 2 : 1) : 3;
    if (strcmp(op, "list") && strcmp(op, "show") && strcmp(op, "put") && strcmp(op, "delete"))
        return ctl_usage(argv[0], "unknown action '%s' (list, show, put, delete)", op);
    if (argc != nargs) return ctl_usage(argv[0], "wrong number of arguments for '%s'", op);
    if (vals[0] && strcmp(op, "put")) return ctl_usage(argv[0], "--overwrite goes with put");
    char path[512];
    if (argc > 2 && ctl_path(path, sizeof path, "/v1/datasets/", argv[2],
                             vals[0] ? "?overwrite=true" : NULL))
        return ctl_usage(argv[0], "data set name too long");
    json_t *j = NULL;
    int rc;
    if (!strcmp(op, "list")) {
        rc = ctl_call(c, argv[0], "GET", "/v1/datasets", NULL, &j);
    } else if (!strcmp(op, "put")) {
        ctl_body b = {.file = argv[3], .content_type = "application/octet-stream"};
        rc = ctl_call(c, argv[0], "PUT", path, &b, &j);
    } else {
        rc = ctl_call(c, argv[0], !strcmp(op, "show") ? "GET" : "DELETE", path, NULL, &j);
    }
    if (rc) return rc;
    if (c->json) {
        ctl_print_json(j);
    } else if (!strcmp(op, "delete")) {
        printf("%s: deleted\n", argv[2]);
    } else {
        printf("%-24s %-8s %-8s %-8s %s\n", "NAME", "IMAGES", "CLASSES", "LABELED", "SPLITS");
        size_t i;
        json_t *d;
        if (!strcmp(op, "list")) json_array_foreach(json_object_get(j, "datasets"), i, d) dataset_line(d);
        else dataset_line(j);
    }
    json_decref(j);
    return CTL_OK;
}

/* ---- main ---- */

int main(int argc, char **argv) {
    const char *names[] = {"--url=", "--token=", "--json", NULL};
    const char *vals[3] = {NULL, NULL, NULL};
    if ((argc = ctl_take_flags("", argc, argv, names, vals)) < 0) return CTL_USAGE;
    if (argc < 2) {
        usage(stderr);
        return CTL_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return CTL_OK;
    }
    int help = 0;
    if (!strcmp(cmd, "help")) { /* dynctl help [COMMAND] */
        if (argc < 3) {
            usage(stdout);
            return CTL_OK;
        }
        cmd = argv[2];
        help = 1;
    }
    const sub *s = NULL;
    for (size_t i = 0; i < NSUBS; i++)
        if (!strcmp(SUBS[i].name, cmd)) s = &SUBS[i];
    if (!s) {
        fprintf(stderr, "dynctl: unknown command '%s' (dynctl --help lists them)\n", cmd);
        return CTL_USAGE;
    }
    for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
        help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    if (help) {
        sub_help(s);
        return CTL_OK;
    }
    ctl c = {.token = vals[1] ? vals[1] : getenv("DYND_TOKEN"), .json = vals[2] != NULL};
    if (c.token && !*c.token) c.token = NULL;
    const char *url = vals[0] ? vals[0] : getenv("DYND_URL");
    if (!url || !*url) url = "http://127.0.0.1:8080";
    if (snprintf(c.url, sizeof c.url, "%s", url) >= (int)sizeof c.url) {
        fprintf(stderr, "dynctl: URL too long\n");
        return CTL_USAGE;
    }
    for (size_t l = strlen(c.url); l > 0 && c.url[l - 1] == '/'; l--) c.url[l - 1] = '\0';
    if (curl_global_init(CURL_GLOBAL_DEFAULT) || !(c.curl = curl_easy_init())) {
        fprintf(stderr, "dynctl: cannot initialize libcurl\n");
        return CTL_LOCAL;
    }
    int rc = s->run(&c, argc - 1, argv + 1);
    curl_easy_cleanup(c.curl);
    curl_global_cleanup();
    return rc;
}
