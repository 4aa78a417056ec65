/* infer.c — `dynctl classify` (images to /v1/models/{m}/classify, one request each, the file
 * streamed) and `dynctl infer` (an Open Inference Protocol request from a JSON file to
 * /v2/models/{m}/infer, streamed). Without --model both use the server's only ready model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* The model to use: `given`, else the only ready model of GET /v1/models (usage error naming the
 * served models when there are several or none). Writes it into buf. */
static int pick_model(ctl *c, const char *cmd, const char *given, char *buf, size_t n) {
    if (given) {
        snprintf(buf, n, "%s", given);
        return CTL_OK;
    }
    json_t *j = NULL;
    ctl quiet = *c;
    quiet.json = 0;
    int rc = ctl_call(&quiet, cmd, "GET", "/v1/models", NULL, &j);
    if (rc) return rc;
    char names[512] = "";
    int ready = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        if (!json_is_true(json_object_get(m, "ready"))) continue;
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!ready++) snprintf(buf, n, "%s", name);
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", name);
    }
    json_decref(j);
    if (ready == 1) return CTL_OK;
    return ctl_usage(cmd, "give --model (the server serves %s)", ready ? names : "no model");
}

/* "/v1/models/M[/versions/V]<tail>" into buf; -1 when it does not fit. */
static int model_path(char *buf, size_t n, const char *prefix, const char *model,
                      const char *version, const char *tail) {
    char *em = curl_easy_escape(NULL, model, 0), *ev = version ? curl_easy_escape(NULL, version, 0) : NULL;
    int w = em && (!version || ev)
                ? snprintf(buf, n, "%s%s%s%s%s", prefix, em, ev ? "/versions/" : "", ev ? ev : "", tail)
                : -1;
    curl_free(em);
    curl_free(ev);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* The media type of an image file from its first bytes ("" when unreadable). */
static const char *image_type(const char *path) {
    unsigned char m[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return "";
    size_t got = fread(m, 1, sizeof m, f);
    fclose(f);
    if (got >= 4 && m[0] == 0x89 && m[1] == 'P' && m[2] == 'N' && m[3] == 'G') return "image/png";
    if (got >= 3 && m[0] == 0xFF && m[1] == 0xD8 && m[2] == 0xFF) return "image/jpeg";
    return "application/octet-stream"; /* the server names what is wrong with it */
}

int dynctl_classify(ctl *c, int argc, char **argv) {
    const char *names[] = {"--model=", "--version=", "--top=", NULL};
    const char *vals[3] = {NULL, NULL, NULL};
    if ((argc = ctl_take_flags(argv[0], argc, argv, names, vals)) < 0) return CTL_USAGE;
    int first = 1;
    if (first < argc && !strcmp(argv[first], "--")) first++;
    for (int i = first; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1] && first == 1)
            return ctl_usage(argv[0], "unknown option '%s'", argv[i]);
    if (first >= argc) return ctl_usage(argv[0], "give at least one IMAGE");
    char *end = NULL;
    long top = vals[2] ? strtol(vals[2], &end, 10) : 0;
    if (vals[2] && (*end || top < 1 || top > 1000))
        return ctl_usage(argv[0], "--top must be an integer in 1..1000");
    char model[256], path[700], tail[64] = "/classify";
    int rc = pick_model(c, argv[0], vals[0], model, sizeof model);
    if (rc) return rc;
    if (top) snprintf(tail, sizeof tail, "/classify?top_k=%ld", top);
    if (model_path(path, sizeof path, "/v1/models/", model, vals[1], tail))
        return ctl_usage(argv[0], "model name too long");
    json_t *all = json_pack("{s:s, s:[]}", "model", model, "results");
    ctl quiet = *c; /* errors go to stderr; with --json into the results */
    quiet.json = 0;
    int worst = CTL_OK;
    for (int i = first; i < argc; i++) {
        const char *img = argv[i];
        ctl_body b = {.file = img, .content_type = image_type(img)};
        ctl_resp r = {0};
        int irc = b.content_type[0] ? ctl_http(c, "POST", path, &b, &r) : CTL_LOCAL;
        if (!b.content_type[0]) fprintf(stderr, "dynctl classify: cannot read %s\n", img);
        if (irc == CTL_CONN) { /* no point in trying the others */
            json_decref(all);
            return irc;
        }
        if (!irc) irc = ctl_reply_status(&quiet, argv[0], &r);
        json_t *res;
        if (irc == CTL_LOCAL) {
            res = json_pack("{s:s, s:s}", "error", "cannot read the file", "code", "local");
        } else {
            res = json_is_object(r.json) ? json_deep_copy(r.json) : json_object();
            if (irc) json_object_set_new(res, "status", json_integer(r.status));
        }
        json_object_set_new(res, "image", json_string(img));
        json_array_append_new(json_object_get(all, "results"), res);
        if (!irc && !c->json) {
            printf("%s:", img);
            size_t k;
            json_t *p;
            json_array_foreach(json_object_get(r.json, "predictions"), k, p)
                printf("%s %s (%.2f%%)", k ? "," : "", json_string_value(json_object_get(p, "label")),
                       100 * json_number_value(json_object_get(p, "score")));
            printf("\n");
        }
        ctl_resp_free(&r);
        if (irc && !worst) worst = irc;
    }
    if (c->json) ctl_print_json(all);
    json_decref(all);
    return worst;
}

/* Prints a tensor's values (flattened; at most 64). */
static void print_values(const json_t *v, int *shown, int *more) {
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) print_values(e, shown, more);
        return;
    }
    if (*shown >= 64) {
        (*more)++;
        return;
    }
    if (json_is_string(v)) printf(" %s", json_string_value(v));
    else if (json_is_integer(v)) printf(" %lld", (long long)json_integer_value(v));
    else printf(" %.6g", json_number_value(v));
    (*shown)++;
}

int dynctl_infer(ctl *c, int argc, char **argv) {
    const char *names[] = {"--model=", "--version=", NULL};
    const char *vals[2] = {NULL, NULL};
    if ((argc = ctl_take_flags(argv[0], argc, argv, names, vals)) < 0) return CTL_USAGE;
    if (argc != 2) return ctl_usage(argv[0], "give one request FILE.json");
    if (argv[1][0] == '-' && argv[1][1]) return ctl_usage(argv[0], "unknown option '%s'", argv[1]);
    char model[256], path[700];
    int rc = pick_model(c, argv[0], vals[0], model, sizeof model);
    if (rc) return rc;
    if (model_path(path, sizeof path, "/v2/models/", model, vals[1], "/infer"))
        return ctl_usage(argv[0], "model name too long");
    ctl_body b = {.file = argv[1], .content_type = "application/json"};
    json_t *j = NULL;
    if ((rc = ctl_call(c, argv[0], "POST", path, &b, &j))) return rc;
    if (c->json) {
        ctl_print_json(j);
    } else {
        printf("model %s version %s%s%s\n", json_string_value(json_object_get(j, "model_name")),
               json_string_value(json_object_get(j, "model_version")),
               json_object_get(j, "id") ? " id " : "",
               json_object_get(j, "id") ? json_string_value(json_object_get(j, "id")) : "");
        size_t i, k;
        json_t *o, *d;
        json_array_foreach(json_object_get(j, "outputs"), i, o) {
            printf("%s %s [", json_string_value(json_object_get(o, "name")),
                   json_string_value(json_object_get(o, "datatype")));
            json_array_foreach(json_object_get(o, "shape"), k, d)
                printf("%s%lld", k ? "," : "", (long long)json_integer_value(d));
            printf("]:");
            int shown = 0, more = 0;
            print_values(json_object_get(o, "data"), &shown, &more);
            if (more) printf(" ... (%d more)", more);
            printf("\n");
        }
    }
    json_decref(j);
    return CTL_OK;
}
