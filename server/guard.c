/* guard.c — the connection guard. See guard.h. */
#include "server/guard.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base.h"
#include "server/log.h"

enum { PH_HEADERS, PH_BODY, PH_HANDLING };

struct srv_conn {
    srv_guard *g;
    srv_conn *prev, *next; /* the guard's list */
    int fd;
    unsigned char ip[16]; /* IPv4 as ::ffff:a.b.c.d */
    atomic_int phase;  /* PH_*; written by the connection's thread, read by the sweeper */
    _Atomic double t0; /* start of the phase */
    atomic_llong body; /* body bytes of the current request */
    int fresh;       /* no request begun yet */
    int dropped;     /* the sweeper shut it down */
};

typedef struct ip_count {
    struct ip_count *next;
    unsigned char ip[16];
    int n;
} ip_count;

#define IP_BUCKETS 1024

struct srv_guard {
    srv_guard_limits lim;
    srv_metrics *metrics;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_conn *head;
    ip_count *ips[IP_BUCKETS];
    int stopping;
    pthread_t sweeper;
    atomic_int unserved; /* connections still fresh (srv_guard_unserved) */
};

static void ip_of(const struct sockaddr *a, socklen_t len, unsigned char out[16]) {
    memset(out, 0, 16);
    if (a && a->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)a)->sin_addr, 4);
    } else if (a && a->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(out, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    }
}

static unsigned ip_hash(const unsigned char ip[16]) {
    unsigned h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++) h = (h ^ ip[i]) * 16777619u;
    return h % IP_BUCKETS;
}

/* The count for ip (created at 0 when `make`); NULL if absent (or out of memory). Under g->mu. */
static ip_count *ip_find(srv_guard *g, const unsigned char ip[16], int make) {
    ip_count **b = &g->ips[ip_hash(ip)];
    for (ip_count *e = *b; e; e = e->next)
        if (!memcmp(e->ip, ip, 16)) return e;
    if (!make) return NULL;
    ip_count *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    memcpy(e->ip, ip, 16);
    e->next = *b;
    *b = e;
    return e;
}

static void ip_release(srv_guard *g, const unsigned char ip[16]) {
    ip_count **b = &g->ips[ip_hash(ip)];
    for (ip_count **pp = b; *pp; pp = &(*pp)->next) {
        ip_count *e = *pp;
        if (memcmp(e->ip, ip, 16)) continue;
        if (--e->n <= 0) {
            *pp = e->next;
            free(e);
        }
        return;
    }
}

static void ip_text(const unsigned char ip[16], char *buf, size_t n) {
    static const unsigned char v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(ip, v4, 12)) {
        snprintf(buf, n, "%u.%u.%u.%u", ip[12], ip[13], ip[14], ip[15]);
        return;
    }
    size_t k = 0;
    for (int i = 0; i < 16 && k + 5 < n; i += 2)
        k += (size_t)snprintf(buf + k, n - k, "%s%x", i ? ":" : "", (unsigned)(ip[i] << 8 | ip[i + 1]));
}

static void dropped(srv_guard *g, const char *reason, const unsigned char ip[16], json_t *extra) {
    char addr[48];
    ip_text(ip, addr, sizeof addr);
    json_t *f = extra ? extra : json_object();
    if (f) {
        json_object_set_new(f, "reason", json_string(reason));
        json_object_set_new(f, "client", json_string(addr));
    }
    srv_log(SRV_LOG_WARN, "connection dropped", f);
    if (g->metrics) srv_metrics_conn_dropped(g->metrics, reason);
}

/* What one sweep dropped, logged after g->mu is released. */
typedef struct drop_note {
    const char *why;
    unsigned char ip[16];
    double t;      /* seconds in the phase */
    long long got; /* slow_body: body bytes so far */
} drop_note;

/* At most this many drops are noted per pass; a full batch is logged and the scan resumes at
 * once (the connections already shut down are marked and skipped). */
#define SWEEP_BATCH 64

static void *sweeper_main(void *arg) {
    srv_guard *g = arg;
    drop_note note[SWEEP_BATCH];
    int more = 0; /* the last pass filled its batch: scan again without waiting */
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        if (!more) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 250000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
            if (g->stopping) break;
        }
        more = 0;
        int n = 0;
        const double now = dyn_now(), limit = g->lim.header_timeout_s;
        for (srv_conn *c = g->head; c; c = c->next) {
            if (c->dropped) continue;
            const int phase = atomic_load(&c->phase);
            const double t = now - atomic_load(&c->t0);
            const long long got = atomic_load(&c->body);
            const char *why = NULL;
            if (phase == PH_HEADERS && t > limit) why = "header_timeout";
            else if (phase == PH_BODY && g->lim.min_body_rate > 0 && t > limit &&
                     (double)got < (double)g->lim.min_body_rate * t)
                why = "slow_body";
            if (!why) continue;
            /* The socket is still open: libmicrohttpd calls srv_guard_close (which needs g->mu)
             * before it closes it. It sees the shut-down socket fail and ends the connection. */
            shutdown(c->fd, SHUT_RDWR);
            c->dropped = 1;
            note[n] = (drop_note){.why = why, .t = t, .got = got};
            memcpy(note[n].ip, c->ip, 16);
            if (++n == SWEEP_BATCH) {
                more = 1;
                break;
            }
        }
        /* Logged without g->mu: a log line is a write to stderr, which may block (a full pipe);
         * the connection threads opening and closing connections must not wait for it. */
        pthread_mutex_unlock(&g->mu);
        for (int i = 0; i < n; i++) {
            json_t *extra =
                !strcmp(note[i].why, "header_timeout")
                    ? json_pack("{s:f, s:i}", "waited_s", note[i].t, "header_timeout_s",
                                g->lim.header_timeout_s)
                    : json_pack("{s:I, s:f, s:I}", "body_bytes", (json_int_t)note[i].got,
                                "seconds", note[i].t, "min_body_rate",
                                (json_int_t)g->lim.min_body_rate);
            dropped(g, note[i].why, note[i].ip, extra);
        }
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

srv_guard *srv_guard_new(const srv_guard_limits *lim, srv_metrics *metrics) {
    srv_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->lim = *lim;
    if (g->lim.header_timeout_s < 1) g->lim.header_timeout_s = 1;
    g->metrics = metrics;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->sweeper, NULL, sweeper_main, g) != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void srv_guard_free(srv_guard *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stopping = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->sweeper, NULL);
    for (int i = 0; i < IP_BUCKETS; i++)
        for (ip_count *e = g->ips[i], *n; e; e = n) n = e->next, free(e);
    while (g->head) { /* none should be left; free them anyway */
        srv_conn *c = g->head;
        g->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

int srv_guard_admit(srv_guard *g, const struct sockaddr *addr, socklen_t len) {
    if (!g || g->lim.max_per_ip <= 0) return 1;
    unsigned char ip[16];
    ip_of(addr, len, ip);
    pthread_mutex_lock(&g->mu);
    ip_count *e = ip_find(g, ip, 0);
    const int n = e ? e->n : 0;
    pthread_mutex_unlock(&g->mu);
    if (n < g->lim.max_per_ip) return 1;
    dropped(g, "per_ip_limit", ip, json_pack("{s:i, s:i}", "open", n, "max_connections_per_ip",
                                             g->lim.max_per_ip));
    return 0;
}

srv_conn *srv_guard_open(srv_guard *g, int fd, const struct sockaddr *addr, socklen_t len) {
    if (!g) return NULL;
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->g = g;
    c->fd = fd;
    ip_of(addr, len, c->ip);
    c->phase = PH_HEADERS;
    c->t0 = dyn_now();
    c->fresh = 1;
    atomic_fetch_add(&g->unserved, 1);
    pthread_mutex_lock(&g->mu);
    ip_count *e = ip_find(g, c->ip, 1);
    if (e) e->n++; /* else out of memory: the cap does not see this one */
    c->next = g->head;
    if (g->head) g->head->prev = c;
    g->head = c;
    pthread_mutex_unlock(&g->mu);
    return c;
}

void srv_guard_close(srv_guard *g, srv_conn *c) {
    if (!g || !c) return;
    if (c->fresh) atomic_fetch_sub(&g->unserved, 1);
    pthread_mutex_lock(&g->mu);
    if (c->prev) c->prev->next = c->next;
    else g->head = c->next;
    if (c->next) c->next->prev = c->prev;
    ip_release(g, c->ip);
    pthread_mutex_unlock(&g->mu);
    free(c);
}

static void set_phase(srv_conn *c, int phase) {
    atomic_store(&c->t0, dyn_now());
    atomic_store(&c->phase, phase);
}

void srv_guard_headers_done(srv_conn *c) {
    if (!c) return;
    atomic_store(&c->body, 0);
    set_phase(c, PH_BODY);
    if (c->fresh) {
        c->fresh = 0;
        atomic_fetch_sub(&c->g->unserved, 1);
    }
}

void srv_guard_body_bytes(srv_conn *c, size_t n) {
    if (c) atomic_fetch_add(&c->body, (long long)n);
}

void srv_guard_handling(srv_conn *c) {
    if (c) set_phase(c, PH_HANDLING);
}

void srv_guard_reply_done(srv_conn *c) {
    if (c) set_phase(c, PH_HEADERS);
}

int srv_guard_unserved(srv_guard *g) { return g ? atomic_load(&g->unserved) : 0; }
