/* reply.c — JSON replies and the one error reply shape, {"error": message, "code": code}
 * (counted in dynd_errors_total), and the request's media type: the HTTP layer's helpers, used
 * by the front itself (early 4xx / 503) and by every handler in api/. See http.h. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/http.h"
#include "server/log.h"

void srv_reply_json(srv_req *r, int status, json_t *body) {
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    if (!s) {
        const char *oom = "{\"error\":\"out of memory building the reply\",\"code\":\"internal\"}";
        s = strdup(oom);
        status = 500;
        if (!s) return;
    }
    srv_req_reply(r, status, "application/json", s, strlen(s));
}

static void reply_error_v(srv_req *r, int status, const char *code, json_t *extra,
                          const char *fmt, va_list ap) {
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *o = json_pack("{s:s, s:s}", "error", msg, "code", code);
    if (!o) { /* not UTF-8 (a name from the request, or cut mid-character): ASCII only */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80) *p = '?';
        o = json_pack("{s:s, s:s}", "error", msg, "code", code);
    }
    if (o && json_is_object(extra)) json_object_update_missing(o, extra);
    json_decref(extra);
    r->error_code = code;
    srv_metrics_error(r->srv->metrics, code);
    srv_reply_json(r, status, o);
}

void srv_reply_error(srv_req *r, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, status, code, NULL, fmt, ap);
    va_end(ap);
}

void srv_reply_error_with(srv_req *r, int status, const char *code, json_t *extra,
                          const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, status, code, extra, fmt, ap);
    va_end(ap);
}

const char *srv_media_type(const srv_req *r, char *buf, size_t n) {
    const char *ct = srv_req_header(r, "Content-Type");
    size_t k = 0;
    if (ct) {
        while (*ct == ' ') ct++;
        for (; ct[k] && ct[k] != ';' && ct[k] != ' ' && k + 1 < n; k++)
            buf[k] = (char)tolower((unsigned char)ct[k]);
    }
    buf[k] = 0;
    return buf;
}
