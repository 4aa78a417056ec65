/* s3.c — the S3 client of s3.h: one libcurl easy handle per request, SigV4 by libcurl, error
 * bodies parsed with a few lines of tag matching (S3's replies are flat, machine-written XML:
 * no attributes, comments or CDATA in the elements read here). */
#include "server/s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/file.h"

#define ERR_BODY_MAX 16384 /* error replies kept for their <Code> / <Message> */

int srv_s3_global_init(dyn_err *err) {
    CURLcode c = curl_global_init(CURL_GLOBAL_DEFAULT);
    return c == CURLE_OK ? 0 : dyn_err_set(err, DYN_EIO, "curl_global_init: %s", curl_easy_strerror(c));
}

/* ---- pure helpers ---- */

int srv_s3_encode(const char *src, int keep_slash, char *buf, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/');
        if (k + (plain ? 1 : 3) >= n) return -1;
        if (plain) {
            buf[k++] = (char)*p;
        } else {
            buf[k++] = '%';
            buf[k++] = hex[*p >> 4];
            buf[k++] = hex[*p & 15];
        }
    }
    if (k >= n) return -1;
    buf[k] = 0;
    return 0;
}

int srv_s3_url(const srv_s3 *s, const char *key, const char *query, char *buf, size_t n) {
    char ek[3 * 1024 + 1] = "";
    if (key && srv_s3_encode(key, 1, ek, sizeof ek)) return -1;
    int w = snprintf(buf, n, "%s/%s%s%s%s%s", s->endpoint, s->bucket, key ? "/" : "", ek,
                     query ? "?" : "", query ? query : "");
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* Decodes the five predefined XML entities and numeric ASCII ones of src[0..len) into out. */
static int xml_unescape(const char *src, size_t len, char *out, size_t n) {
    static const struct { const char *ent; char c; } ents[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        char c = src[i];
        size_t adv = 1;
        if (c == '&') {
            int found = 0;
            for (size_t e = 0; e < sizeof ents / sizeof ents[0]; e++) {
                size_t el = strlen(ents[e].ent);
                if (i + el <= len && !strncmp(src + i, ents[e].ent, el)) {
                    c = ents[e].c, adv = el, found = 1;
                    break;
                }
            }
            if (!found && i + 3 < len && src[i + 1] == '#') { /* &#NN; / &#xNN; (ASCII only) */
                char *end;
                int hexa = src[i + 2] == 'x';
                long v = strtol(src + i + 2 + hexa, &end, hexa ? 16 : 10);
                if ((size_t)(end - src) < len && *end == ';' && v > 0 && v < 128)
                    c = (char)v, adv = (size_t)(end - (src + i)) + 1;
            }
        }
        if (k + 1 >= n) return -1;
        out[k++] = c;
        i += adv;
    }
    out[k] = 0;
    return 0;
}

const char *srv_s3_xml_text(const char *xml, const char *tag, char *out, size_t n) {
    char open[80], close[80];
    if (n) out[0] = 0;
    if (!xml || snprintf(open, sizeof open, "<%s>", tag) >= (int)sizeof open) return NULL;
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = strstr(xml, open);
    if (!a) return NULL;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b) return NULL;
    if (xml_unescape(a, (size_t)(b - a), out, n)) {
        if (n) out[0] = 0;
        return NULL;
    }
    return b + strlen(close);
}

int srv_s3_parse_list(const char *xml, srv_s3_page *page, dyn_err *err) {
    memset(page, 0, sizeof *page);
    if (!xml || !strstr(xml, "<ListBucketResult"))
        return dyn_err_set(err, DYN_EIO, "S3 list: the reply is not a ListBucketResult");
    char v[64];
    /* IsTruncated and the token come before or after the Contents: look outside them */
    const char *tail = xml;
    for (const char *c; (c = strstr(tail, "</Contents>"));) tail = c + 11;
    if (!srv_s3_xml_text(xml, "IsTruncated", v, sizeof v) &&
        !srv_s3_xml_text(tail, "IsTruncated", v, sizeof v))
        v[0] = 0;
    page->truncated = !strcmp(v, "true");
    if (page->truncated &&
        !srv_s3_xml_text(xml, "NextContinuationToken", page->next_token, sizeof page->next_token))
        return dyn_err_set(err, DYN_EIO, "S3 list: truncated without a NextContinuationToken");
    int cap = 0;
    for (const char *p = xml; (p = strstr(p, "<Contents>"));) {
        const char *end = strstr(p, "</Contents>");
        if (!end) break;
        size_t len = (size_t)(end - p);
        char *one = strndup(p, len);
        if (!one) goto nomem;
        srv_s3_obj o = {.size = -1};
        char sz[32];
        int ok = srv_s3_xml_text(one, "Key", o.key, sizeof o.key) != NULL;
        srv_s3_xml_text(one, "ETag", o.etag, sizeof o.etag);
        if (srv_s3_xml_text(one, "Size", sz, sizeof sz)) o.size = strtoll(sz, NULL, 10);
        free(one);
        if (!ok) {
            free(page->objs), page->objs = NULL, page->n = 0;
            return dyn_err_set(err, DYN_EIO, "S3 list: an entry without a usable <Key>");
        }
        if (page->n == cap) {
            cap = cap ? 2 * cap : 64;
            srv_s3_obj *g = realloc(page->objs, (size_t)cap * sizeof *g);
            if (!g) goto nomem;
            page->objs = g;
        }
        page->objs[page->n++] = o;
        p = end + 11;
    }
    return 0;
nomem:
    free(page->objs), page->objs = NULL, page->n = 0;
    return dyn_err_set(err, DYN_ENOMEM, "S3 list: out of memory");
}

void srv_s3_error_text(long status, const char *body, srv_s3_res *res, char *buf, size_t n) {
    char code[64] = "", msg[256] = "";
    if (body && strstr(body, "<Error>")) {
        srv_s3_xml_text(body, "Code", code, sizeof code);
        srv_s3_xml_text(body, "Message", msg, sizeof msg);
    }
    if (res) snprintf(res->code, sizeof res->code, "%s", code);
    if (code[0]) snprintf(buf, n, "HTTP %ld %s: %s", status, code, msg[0] ? msg : "(no message)");
    else snprintf(buf, n, "HTTP %ld", status);
}

/* ---- requests ---- */

typedef struct membuf {
    char *p;
    size_t n, max;
    int over;
} membuf;

static size_t mem_write(char *d, size_t sz, size_t nm, void *arg) {
    membuf *m = arg;
    size_t len = sz * nm;
    if (m->n + len > m->max) {
        m->over = 1;
        return 0; /* aborts the transfer */
    }
    char *g = realloc(m->p, m->n + len + 1);
    if (!g) return 0;
    memcpy(g + m->n, d, len);
    m->p = g;
    m->n += len;
    m->p[m->n] = 0;
    return len;
}

typedef struct sink {
    int fd;       /* the download's temporary file (2xx replies) */
    long status;  /* learned at the first body byte */
    CURL *h;
    membuf err;   /* the body of an error reply */
    int werr;     /* errno of a failed write */
} sink;

static size_t file_write(char *d, size_t sz, size_t nm, void *arg) {
    sink *s = arg;
    if (!s->status) curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
    size_t len = sz * nm;
    if (s->status < 200 || s->status >= 300) return mem_write(d, sz, nm, &s->err);
    if (dyn_file_write_all(s->fd, d, len)) {
        s->werr = errno ? errno : EIO;
        return 0;
    }
    return len;
}

static size_t header_cb(char *d, size_t sz, size_t nm, void *arg) {
    srv_s3_res *r = arg;
    size_t len = sz * nm;
    if (len > 5 && !strncasecmp(d, "ETag:", 5)) {
        const char *v = d + 5;
        while (*v == ' ') v++;
        size_t l = (size_t)(d + len - v);
        while (l && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' ')) l--;
        if (l < sizeof r->etag) memcpy(r->etag, v, l), r->etag[l] = 0;
    }
    return len;
}

/* CURLOPT_XFERINFOFUNCTION: a non-zero return aborts the transfer (srv_s3.cancel). */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    return atomic_load((const atomic_int *)arg) != 0;
}

/* Prepares handle h for method on key: URL, SigV4, timeouts, the payload header and the
 * caller's headers (hdrs, may be NULL: the list is appended to and returned in *out). */
static int setup(const srv_s3 *s, CURL *h, const char *method, const char *key, const char *query,
                 struct curl_slist **hdrs, srv_s3_res *res, char *errbuf, dyn_err *err) {
    char url[4096], sig[128], up[400];
    if (srv_s3_url(s, key, query, url, sizeof url))
        return dyn_err_set(err, DYN_EINVAL, "S3 %s %s: the URL is too long", method, key ? key : "");
    snprintf(sig, sizeof sig, "aws:amz:%s:s3", s->region[0] ? s->region : "us-east-1");
    snprintf(up, sizeof up, "%s:%s", s->access_key, s->secret_key);
    *hdrs = curl_slist_append(*hdrs, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    *hdrs = curl_slist_append(*hdrs, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sig);
    curl_easy_setopt(h, CURLOPT_USERPWD, up);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s->connect_timeout_s > 0 ? s->connect_timeout_s : 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, s->timeout_s > 0 ? s->timeout_s : 600L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, res);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (s->cancel) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)s->cancel);
    }
    if (strcmp(method, "GET") && strcmp(method, "PUT")) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    return 0;
}

/* Runs the prepared request; sets res and err from the transport result and the reply. */
static int perform(CURL *h, const char *method, const char *key, const char *errbuf,
                   const membuf *body, srv_s3_res *res, dyn_err *err) {
    CURLcode c = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
    if (c == CURLE_ABORTED_BY_CALLBACK)
        return dyn_err_set(err, DYN_EIO, "S3 %s %s: cancelled (shutting down)", method,
                           key ? key : "(bucket)");
    if (c != CURLE_OK && !(res->status >= 300 && c == CURLE_WRITE_ERROR))
        return dyn_err_set(err, DYN_EIO, "S3 %s %s: %s", method, key ? key : "(bucket)",
                           errbuf[0] ? errbuf : curl_easy_strerror(c));
    if (res->status >= 200 && res->status < 300) return 0;
    char t[400];
    srv_s3_error_text(res->status, body ? body->p : NULL, res, t, sizeof t);
    return dyn_err_set(err, DYN_EIO, "S3 %s %s: %s", method, key ? key : "(bucket)", t);
}

static void res_init(srv_s3_res *r) {
    memset(r, 0, sizeof *r);
    r->size = -1;
}

/* A request whose reply body goes to memory (at most max bytes). */
static int request_mem(const srv_s3 *s, const char *method, const char *key, const char *query,
                       struct curl_slist *hdrs, const void *data, size_t n, size_t max,
                       membuf *out, srv_s3_res *res, dyn_err *err) {
    CURL *h = curl_easy_init();
    if (!h) {
        curl_slist_free_all(hdrs);
        return dyn_err_set(err, DYN_ENOMEM, "S3 %s: curl_easy_init failed", method);
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    int rc = setup(s, h, method, key, query, &hdrs, res, errbuf, err);
    if (!rc) {
        out->max = max;
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, mem_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
        if (!strcmp(method, "PUT")) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, data ? data : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
        } else if (!strcmp(method, "HEAD")) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        }
        rc = perform(h, method, key, errbuf, out, res, err);
        if (out->over && res->status >= 200 && res->status < 300)
            rc = dyn_err_set(err, DYN_EIO, "S3 %s %s: the reply is larger than %zu bytes", method,
                             key ? key : "(bucket)", max);
        curl_off_t cl = -1;
        if (curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0)
            res->size = (long long)cl;
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return rc;
}

/* A request whose reply body matters only as an error (PUT of memory, HEAD, DELETE); res may
 * be NULL. */
static int request_plain(const srv_s3 *s, const char *method, const char *key,
                         struct curl_slist *hdrs, const void *data, size_t n, srv_s3_res *res,
                         dyn_err *err) {
    srv_s3_res r0;
    if (!res) res = &r0;
    res_init(res);
    membuf body = {0};
    int rc = request_mem(s, method, key, NULL, hdrs, data, n, ERR_BODY_MAX, &body, res, err);
    free(body.p);
    return rc;
}

int srv_s3_put_mem(const srv_s3 *s, const char *key, const void *data, size_t n,
                   const char *content_type, const char *if_match, srv_s3_res *res, dyn_err *err) {
    struct curl_slist *hdrs = NULL;
    char hv[200];
    if (content_type) {
        snprintf(hv, sizeof hv, "Content-Type: %s", content_type);
        hdrs = curl_slist_append(hdrs, hv);
    }
    if (if_match) {
        if (!strcmp(if_match, "*")) snprintf(hv, sizeof hv, "If-None-Match: *");
        else snprintf(hv, sizeof hv, "If-Match: %s", if_match);
        hdrs = curl_slist_append(hdrs, hv);
    }
    return request_plain(s, "PUT", key, hdrs, data, n, res, err);
}

int srv_s3_get_mem(const srv_s3 *s, const char *key, size_t max, char **out, size_t *n,
                   srv_s3_res *res, dyn_err *err) {
    srv_s3_res r0;
    if (!res) res = &r0;
    res_init(res);
    membuf body = {0};
    int rc = request_mem(s, "GET", key, NULL, NULL, NULL, 0, max, &body, res, err);
    if (!rc && !body.p) rc = (body.p = strdup("")) ? 0 : dyn_err_set(err, DYN_ENOMEM, "out of memory");
    if (rc) {
        free(body.p);
        *out = NULL;
        return rc;
    }
    *out = body.p;
    if (n) *n = body.n;
    return 0;
}

int srv_s3_head(const srv_s3 *s, const char *key, srv_s3_res *res, dyn_err *err) {
    return request_plain(s, "HEAD", key, NULL, NULL, 0, res, err);
}

int srv_s3_delete(const srv_s3 *s, const char *key, srv_s3_res *res, dyn_err *err) {
    return request_plain(s, "DELETE", key, NULL, NULL, 0, res, err);
}

int srv_s3_list(const srv_s3 *s, const char *prefix, const char *token, srv_s3_page *page,
                srv_s3_res *res, dyn_err *err) {
    srv_s3_res r0;
    if (!res) res = &r0;
    res_init(res);
    memset(page, 0, sizeof *page);
    char q[6400], ep[3100], et[3100];
    if (srv_s3_encode(prefix ? prefix : "", 0, ep, sizeof ep) ||
        srv_s3_encode(token ? token : "", 0, et, sizeof et))
        return dyn_err_set(err, DYN_EINVAL, "S3 list: prefix or token too long");
    /* parameters in sorted order (SigV4's canonical query string sorts them anyway) */
    if (token && token[0]) snprintf(q, sizeof q, "continuation-token=%s&list-type=2&prefix=%s", et, ep);
    else snprintf(q, sizeof q, "list-type=2&prefix=%s", ep);
    membuf body = {0};
    int rc = request_mem(s, "GET", NULL, q, NULL, NULL, 0, 64u << 20, &body, res, err);
    if (!rc) rc = srv_s3_parse_list(body.p, page, err);
    free(body.p);
    return rc;
}

int srv_s3_put_file(const srv_s3 *s, const char *key, const char *path, srv_s3_res *res,
                    dyn_err *err) {
    srv_s3_res r0;
    if (!res) res = &r0;
    res_init(res);
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        int e = errno;
        if (f) fclose(f);
        return dyn_err_set(err, DYN_EIO, "S3 PUT %s: cannot read %s: %s", key, path, strerror(e));
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fclose(f);
        return dyn_err_set(err, DYN_ENOMEM, "S3 PUT: curl_easy_init failed");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    membuf body = {.max = ERR_BODY_MAX};
    int rc = setup(s, h, "PUT", key, NULL, &hdrs, res, errbuf, err);
    if (!rc) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L); /* PUT, body read from f (fread by default) */
        curl_easy_setopt(h, CURLOPT_READDATA, f);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, mem_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
        rc = perform(h, "PUT", key, errbuf, &body, res, err);
        if (!rc) res->size = (long long)st.st_size;
    }
    free(body.p);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    fclose(f);
    return rc;
}

int srv_s3_get_file(const srv_s3 *s, const char *key, const char *path, srv_s3_res *res,
                    dyn_err *err) {
    srv_s3_res r0;
    if (!res) res = &r0;
    res_init(res);
    dyn_file_atomic fa;
    int rc = dyn_file_atomic_begin(&fa, path, 0644, err);
    if (rc) return dyn_err_prefix(err, "S3 GET %s", key);
    CURL *h = curl_easy_init();
    if (!h) {
        dyn_file_atomic_abort(&fa);
        return dyn_err_set(err, DYN_ENOMEM, "S3 GET: curl_easy_init failed");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    sink sk = {.fd = fa.fd, .h = h, .err = {.max = ERR_BODY_MAX}};
    rc = setup(s, h, "GET", key, NULL, &hdrs, res, errbuf, err);
    if (!rc) {
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, file_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &sk);
        rc = perform(h, "GET", key, errbuf, &sk.err, res, err);
        if (rc && sk.werr)
            rc = dyn_err_set(err, DYN_EIO, "S3 GET %s: writing %s: %s", key, path, strerror(sk.werr));
        curl_off_t cl = -1;
        if (curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0)
            res->size = (long long)cl;
    }
    free(sk.err.p);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (rc) {
        dyn_file_atomic_abort(&fa);
        return rc;
    }
    return dyn_file_atomic_commit(&fa, err) ? dyn_err_prefix(err, "S3 GET %s", key) : 0;
}
