/* http.c — dynctl's HTTP calls through libcurl (ctl.h), and the small helpers every subcommand
 * uses. One easy handle serves the whole run (reset between requests, so the connection is
 * reused). A file body is streamed: libcurl pulls it through read_file in chunks, so an upload
 * of any size costs a buffer, not its size, in memory.
 */
#include "ctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct sink {
    char *s;
    size_t n, cap;
    int oom;
} sink;

static size_t write_body(char *p, size_t size, size_t nmemb, void *ud) {
    sink *k = ud;
    const size_t len = size * nmemb;
    if (k->n + len + 1 > k->cap) {
        size_t cap = (k->cap + len + 1) * 2;
        char *s = realloc(k->s, cap);
        if (!s) {
            k->oom = 1;
            return 0; /* libcurl stops with CURLE_WRITE_ERROR */
        }
        k->s = s;
        k->cap = cap;
    }
    memcpy(k->s + k->n, p, len);
    k->n += len;
    k->s[k->n] = '\0';
    return len;
}

static size_t read_file(char *p, size_t size, size_t nmemb, void *ud) {
    FILE *f = ud;
    const size_t got = fread(p, 1, size * nmemb, f);
    return got == 0 && ferror(f) ? CURL_READFUNC_ABORT : got;
}

void ctl_resp_free(ctl_resp *r) {
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

int ctl_http(ctl *c, const char *method, const char *path, const ctl_body *b, ctl_resp *r) {
    memset(r, 0, sizeof *r);
    char url[2048];
    if (snprintf(url, sizeof url, "%s%s", c->url, path) >= (int)sizeof url) {
        fprintf(stderr, "dynctl: URL too long\n");
        return CTL_LOCAL;
    }
    FILE *f = NULL;
    struct stat st;
    if (b && b->file) {
        f = fopen(b->file, "rb");
        if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
            fprintf(stderr, "dynctl: cannot read %s: %s\n", b->file,
                    f ? "not a regular file" : strerror(errno));
            if (f) fclose(f);
            return CTL_LOCAL;
        }
    }
    CURL *h = c->curl;
    curl_easy_reset(h);
    char errbuf[CURL_ERROR_SIZE] = "";
    sink k = {0};
    struct curl_slist *hdr = NULL;
    char line[600];
    if (c->token) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", c->token);
        hdr = curl_slist_append(hdr, line);
    }
    if (b && b->content_type) {
        snprintf(line, sizeof line, "Content-Type: %s", b->content_type);
        hdr = curl_slist_append(hdr, line);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "dynctl");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (f) { /* streamed: UPLOAD sends the body from the read callback with the given size */
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_file);
        curl_easy_setopt(h, CURLOPT_READDATA, f);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    } else if (b && b->mime) {
        curl_easy_setopt(h, CURLOPT_MIMEPOST, b->mime);
    } else if (b && b->data) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b->data);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
    }
    if (strcmp(method, "GET")) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "POST") && !(b && (f || b->mime || b->data))) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, ""); /* a POST with an empty body */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    if (f) fclose(f);
    if (rc != CURLE_OK) {
        free(k.s);
        if (k.oom) {
            fprintf(stderr, "dynctl: out of memory reading the reply\n");
            return CTL_LOCAL;
        }
        if (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR) {
            fprintf(stderr, "dynctl: reading %s failed\n", b && b->file ? b->file : "the body");
            return CTL_LOCAL;
        }
        fprintf(stderr, "dynctl: cannot reach %s: %s\n", c->url,
                errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return CTL_CONN;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    r->body = k.s ? k.s : strdup("");
    r->len = k.n;
    if (!r->body) return CTL_LOCAL;
    r->json = json_loadb(r->body, r->len, 0, NULL);
    return CTL_OK;
}

int ctl_reply_status(ctl *c, const char *cmd, const ctl_resp *r) {
    if (r->status >= 200 && r->status < 300) return CTL_OK;
    const char *msg = json_string_value(json_object_get(r->json, "error"));
    const char *code = json_string_value(json_object_get(r->json, "code"));
    fprintf(stderr, "dynctl %s: %s (%s, HTTP %ld)\n", cmd, msg ? msg : "error reply",
            code ? code : "no code", r->status);
    if (c->json && json_is_object(r->json)) ctl_print_json(r->json);
    return r->status == 404 ? CTL_NOTFOUND
           : r->status == 401 || r->status == 403 ? CTL_AUTH
                                                  : CTL_SERVER;
}

int ctl_call(ctl *c, const char *cmd, const char *method, const char *path, const ctl_body *b,
             json_t **out) {
    ctl_resp r;
    int rc = ctl_http(c, method, path, b, &r);
    if (!rc) rc = ctl_reply_status(c, cmd, &r);
    if (!rc && out) {
        if (!r.json) {
            fprintf(stderr, "dynctl %s: the reply is not JSON (HTTP %ld)\n", cmd, r.status);
            rc = CTL_SERVER;
        } else {
            *out = json_incref(r.json);
        }
    }
    ctl_resp_free(&r);
    return rc;
}

int ctl_path(char *buf, size_t n, const char *prefix, const char *name, const char *suffix) {
    char *e = curl_easy_escape(NULL, name, 0);
    if (!e) return -1;
    int w = snprintf(buf, n, "%s%s%s", prefix, e, suffix ? suffix : "");
    curl_free(e);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

void ctl_print_json(const json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (s) printf("%s\n", s);
    free(s);
}

int ctl_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dynctl %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (dynctl %s --help)\n", cmd);
    va_end(ap);
    return CTL_USAGE;
}

int ctl_take_flags(const char *cmd, int argc, char **argv, const char *const *names,
                   const char **vals) {
    int out = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int taken = 0;
        if (!strcmp(a, "--")) { /* the rest is positional, "--" kept for the next parser */
            while (i < argc) argv[out++] = argv[i++];
            break;
        }
        for (int k = 0; names[k] && !taken; k++) {
            const size_t l = strcspn(names[k], "=");
            const int wants = names[k][l] == '=';
            if (strncmp(a, names[k], l) || (a[l] && a[l] != '=') || (a[l] == '=' && !wants))
                continue;
            if (!wants) vals[k] = "1";
            else if (a[l] == '=') vals[k] = a + l + 1;
            else if (i + 1 < argc) vals[k] = argv[++i];
            else return ctl_usage(cmd, "%.*s needs a value", (int)l, names[k]), -1;
            taken = 1;
        }
        if (!taken) argv[out++] = argv[i];
    }
    argv[out] = NULL;
    return out;
}
