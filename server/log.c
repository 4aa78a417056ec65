/* log.c — see log.h. */
#include "server/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = SRV_LOG_INFO;
static atomic_int g_format = SRV_LOG_JSON;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *const LEVEL_NAMES[SRV_LOG_LEVEL_COUNT] = {"debug", "info", "warn", "error"};

void srv_log_setup(srv_log_level level, srv_log_format format) {
    atomic_store(&g_level, (int)level);
    atomic_store(&g_format, (int)format);
}

int srv_log_enabled(srv_log_level level) { return (int)level >= atomic_load(&g_level); }

static void timestamp(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void write_line(const char *s, size_t n) {
    pthread_mutex_lock(&g_mu);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) break;
        s += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&g_mu);
}

void srv_log(srv_log_level level, const char *msg, json_t *fields) {
    if (!srv_log_enabled(level)) {
        json_decref(fields);
        return;
    }
    char ts[40];
    timestamp(ts, sizeof ts);
    char *line = NULL;
    if (atomic_load(&g_format) == SRV_LOG_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", LEVEL_NAMES[level], "msg", msg);
        if (o && json_is_object(fields)) json_object_update(o, fields);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (s && asprintf(&line, "%s\n", s) < 0) line = NULL;
        free(s);
    } else {
        char *kv = NULL;
        size_t kvn = 0;
        FILE *f = open_memstream(&kv, &kvn);
        if (f && json_is_object(fields)) {
            const char *k;
            json_t *v;
            json_object_foreach(fields, k, v) {
                char *vs = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                fprintf(f, " %s=%s", k, vs ? vs : json_string_value(v));
                free(vs);
            }
        }
        if (f) fclose(f);
        if (asprintf(&line, "%s %-5s %s%s\n", ts, LEVEL_NAMES[level], msg, kv ? kv : "") < 0)
            line = NULL;
        free(kv);
    }
    json_decref(fields);
    if (line) write_line(line, strlen(line));
    free(line);
}

void srv_logf(srv_log_level level, const char *fmt, ...) {
    if (!srv_log_enabled(level)) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_log(level, msg, NULL);
}
