/* pg.c — libpq on the libuv loop (srv_pg) and behind a mutex (srv_pgsync). pg.h has the
 * contract. The asynchronous connection is a small state machine:
 *
 *   WAIT (timer: backoff) ──> CONNECTING (PQconnectPoll on the socket) ──> READY
 *     ^                             │ failed: queued queries fail DOWN      │
 *     └─────────────────────────────┴───────── lost: the one in flight LOST ┘
 *
 * READY sends the head of the FIFO when nothing is in flight, and always watches the socket
 * for reading (results and notifications), for writing too while PQflush has output left.
 */
#include "server/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"

enum { ST_WAIT, ST_CONNECTING, ST_READY };
enum { BACKOFF_MIN_MS = 100, BACKOFF_MAX_MS = 5000 };

typedef struct pg_query {
    struct pg_query *next;
    char *sql;
    int n;
    char **params;
    srv_pg_result_cb cb; /* NULL: our own LISTEN */
    void *ud;
} pg_query;

struct srv_pg {
    uv_loop_t *loop;
    char *conninfo;
    srv_pg_notify_cb on_notify;
    srv_pg_connect_cb on_connect;
    void *ud;
    int state;
    PGconn *conn;
    uv_poll_t *poll; /* on PQsocket(conn), or NULL */
    int poll_fd;
    uv_timer_t timer; /* WAIT: the next connection attempt; CONNECTING: its deadline */
    unsigned connect_timeout_ms;
    uv_idle_t kick; /* sends what srv_pg_query queued, outside the caller's call */
    pg_query *head, *tail;
    pg_query *inflight;
    PGresult *last; /* the in-flight query's latest result */
    char **channels;
    int nchannels;
    int connections; /* opened so far */
    unsigned backoff_ms;
    int closing;
    int handles; /* libuv handles not yet closed; pg is freed when it falls to 0 after close */
};

static void on_poll(uv_poll_t *h, int status, int events);
static void pump(srv_pg *pg);

/* libpq's messages end with a newline (sometimes several lines): the first line, trimmed. */
static const char *first_line(const char *msg, char *buf, size_t n) {
    if (!msg || !*msg) return "unknown error";
    size_t len = strcspn(msg, "\n");
    if (len >= n) len = n - 1;
    memcpy(buf, msg, len);
    buf[len] = 0;
    return buf;
}

/* The server's notices and asynchronous errors (e.g. "terminating connection due to
 * administrator command") go to our log instead of libpq's default, stderr. */
static void notice_to_log(void *arg, const PGresult *res) {
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    int loud = sev && (!strcmp(sev, "WARNING") || !strcmp(sev, "ERROR") || !strcmp(sev, "FATAL") ||
                       !strcmp(sev, "PANIC"));
    char buf[512];
    srv_logf(loud ? SRV_LOG_WARN : SRV_LOG_DEBUG, "postgres says: %s",
             first_line(PQresultErrorMessage(res), buf, sizeof buf));
}

static void query_free(pg_query *q) {
    if (!q) return;
    for (int i = 0; i < q->n; i++) free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q);
}

/* Answers q (when it has a callback) and frees it. */
static void finish(pg_query *q, srv_pg_status st, PGresult *res, const char *msg) {
    if (q->cb) q->cb(q->ud, st, res, msg ? msg : "");
    /* our LISTENs: lost or unsent ones are issued again on the next connection */
    else if (st == SRV_PG_SQL) srv_logf(SRV_LOG_WARN, "postgres: %s failed: %s", q->sql, msg);
    query_free(q);
}

static pg_query *pop(srv_pg *pg) {
    pg_query *q = pg->head;
    if (q) {
        pg->head = q->next;
        if (!pg->head) pg->tail = NULL;
        q->next = NULL;
    }
    return q;
}

static void maybe_free(srv_pg *pg) {
    if (pg->closing && pg->handles == 0) {
        for (int i = 0; i < pg->nchannels; i++) free(pg->channels[i]);
        free(pg->channels);
        free(pg->conninfo);
        free(pg);
    }
}

static void handle_closed(uv_handle_t *h) {
    srv_pg *pg = h->data;
    if ((void *)h != (void *)&pg->timer && (void *)h != (void *)&pg->kick) free(h);
    pg->handles--;
    maybe_free(pg);
}

static void unwatch(srv_pg *pg) {
    if (!pg->poll) return;
    uv_poll_stop(pg->poll);
    uv_close((uv_handle_t *)pg->poll, handle_closed);
    pg->poll = NULL;
}

/* Watches the connection's current socket for `events` (libpq may change sockets while
 * connecting: a new handle then). The watcher is stopped and started again, so a socket number
 * reused by libpq is registered afresh. Returns 0, or a libuv error. */
static int watch(srv_pg *pg, int events) {
    int fd = PQsocket(pg->conn);
    if (fd < 0) return UV_EBADF;
    if (pg->poll && pg->poll_fd != fd) unwatch(pg);
    if (!pg->poll) {
        uv_poll_t *p = malloc(sizeof *p);
        if (!p) return UV_ENOMEM;
        int rc = uv_poll_init_socket(pg->loop, p, fd);
        if (rc) {
            free(p);
            return rc;
        }
        p->data = pg;
        pg->handles++;
        pg->poll = p;
        pg->poll_fd = fd;
    } else {
        uv_poll_stop(pg->poll);
    }
    return uv_poll_start(pg->poll, events, on_poll);
}

static void drop_connection(srv_pg *pg) {
    unwatch(pg);
    if (pg->last) PQclear(pg->last);
    pg->last = NULL;
    if (pg->conn) PQfinish(pg->conn);
    pg->conn = NULL;
    /* Our own LISTENs are issued again on the next connection. */
    pg_query **pp = &pg->head;
    pg->tail = NULL;
    while (*pp) {
        if (!(*pp)->cb) {
            pg_query *q = *pp;
            *pp = q->next;
            query_free(q);
        } else {
            pg->tail = *pp;
            pp = &(*pp)->next;
        }
    }
}

static void start_timer(srv_pg *pg, unsigned ms);

/* The connection broke (or a connection attempt failed, queries never sent: `attempt`). */
static void connection_failed(srv_pg *pg, const char *why, int attempt) {
    char buf[512];
    why = first_line(why, buf, sizeof buf);
    int was_ready = pg->state == ST_READY;
    drop_connection(pg);
    pg->state = ST_WAIT;
    pg_query *q = pg->inflight;
    pg->inflight = NULL;
    char msg[640];
    if (q) {
        snprintf(msg, sizeof msg, "the connection to PostgreSQL was lost while the statement ran "
                 "(it may or may not have been committed): %s", why);
        finish(q, SRV_PG_LOST, NULL, msg);
        if (pg->closing) return;
    }
    if (attempt) {
        snprintf(msg, sizeof msg, "PostgreSQL is unreachable (the statement was not sent; dynd "
                 "retries the connection): %s", why);
        while ((q = pop(pg))) {
            finish(q, SRV_PG_DOWN, NULL, msg);
            if (pg->closing) return;
        }
    }
    srv_logf(was_ready ? SRV_LOG_WARN : SRV_LOG_DEBUG, "postgres: %s; next attempt in %u ms",
             why, pg->backoff_ms);
    if (pg->on_connect) {
        pg->on_connect(pg->ud, 0, pg->connections > 0, why);
        if (pg->closing) return;
    }
    start_timer(pg, pg->backoff_ms);
    pg->backoff_ms = pg->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pg->backoff_ms * 2;
}

static int enqueue(srv_pg *pg, const char *sql, int n, const char *const *params,
                   srv_pg_result_cb cb, void *ud, int front) {
    pg_query *q = calloc(1, sizeof *q);
    if (!q) return DYN_ENOMEM;
    q->sql = strdup(sql);
    q->params = n > 0 ? calloc((size_t)n, sizeof *q->params) : NULL;
    q->n = n;
    q->cb = cb;
    q->ud = ud;
    int bad = !q->sql || (n > 0 && !q->params);
    for (int i = 0; !bad && i < n; i++)
        if (params[i] && !(q->params[i] = strdup(params[i]))) bad = 1;
    if (bad) {
        if (!q->params) q->n = 0;
        query_free(q);
        return DYN_ENOMEM;
    }
    if (front) {
        q->next = pg->head;
        pg->head = q;
        if (!pg->tail) pg->tail = q;
    } else {
        if (pg->tail) pg->tail->next = q;
        else pg->head = q;
        pg->tail = q;
    }
    return 0;
}

static int listen_now(srv_pg *pg, const char *channel, int front) {
    char sql[96];
    snprintf(sql, sizeof sql, "LISTEN \"%s\"", channel);
    return enqueue(pg, sql, 0, NULL, NULL, NULL, front);
}

static void connected(srv_pg *pg) {
    uv_timer_stop(&pg->timer);
    pg->state = ST_READY;
    pg->backoff_ms = BACKOFF_MIN_MS;
    int reconnected = pg->connections++ > 0;
    PQsetnonblocking(pg->conn, 1);
    for (int i = pg->nchannels - 1; i >= 0; i--)
        if (listen_now(pg, pg->channels[i], 1)) {
            connection_failed(pg, "out of memory queueing LISTEN", 0);
            return;
        }
    if (reconnected) srv_logf(SRV_LOG_INFO, "postgres: connected again");
    if (watch(pg, UV_READABLE)) {
        connection_failed(pg, "cannot watch the connection's socket", 0);
        return;
    }
    if (pg->on_connect) {
        pg->on_connect(pg->ud, 1, reconnected, "");
        if (pg->closing) return;
    }
    pump(pg);
}

static void connect_step(srv_pg *pg) {
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        if (watch(pg, UV_READABLE)) connection_failed(pg, "cannot watch the socket", 1);
        break;
    case PGRES_POLLING_WRITING:
        if (watch(pg, UV_WRITABLE)) connection_failed(pg, "cannot watch the socket", 1);
        break;
    case PGRES_POLLING_OK:
        connected(pg);
        break;
    default:
        connection_failed(pg, PQerrorMessage(pg->conn), 1);
        break;
    }
}

static void on_timer(uv_timer_t *t) {
    srv_pg *pg = t->data;
    if (pg->state == ST_CONNECTING) { /* PQconnectPoll leaves connect_timeout to us */
        char msg[96];
        snprintf(msg, sizeof msg, "no connection within %u s (connect_timeout)",
                 pg->connect_timeout_ms / 1000);
        connection_failed(pg, msg, 1);
        return;
    }
    pg->conn = PQconnectStart(pg->conninfo);
    if (!pg->conn) {
        connection_failed(pg, "out of memory starting a connection", 1);
        return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        connection_failed(pg, PQerrorMessage(pg->conn), 1);
        return;
    }
    PQsetNoticeReceiver(pg->conn, notice_to_log, NULL);
    pg->state = ST_CONNECTING;
    /* libpq's protocol: start by waiting for the socket to be writable. */
    if (watch(pg, UV_WRITABLE)) connection_failed(pg, "cannot watch the socket", 1);
    else start_timer(pg, pg->connect_timeout_ms);
}

static void start_timer(srv_pg *pg, unsigned ms) {
    uv_timer_start(&pg->timer, on_timer, ms, 0);
}

/* Sends the head of the queue when nothing is in flight. */
static void pump(srv_pg *pg) {
    while (pg->state == ST_READY && !pg->inflight && pg->head) {
        pg_query *q = pop(pg);
        if (!PQsendQueryParams(pg->conn, q->sql, q->n, NULL, (const char *const *)q->params,
                               NULL, NULL, 0)) {
            char buf[512];
            const char *why = first_line(PQerrorMessage(pg->conn), buf, sizeof buf);
            if (PQstatus(pg->conn) == CONNECTION_BAD) {
                pg->inflight = q; /* reported LOST: libpq may have written part of it */
                connection_failed(pg, why, 0);
                return;
            }
            finish(q, SRV_PG_SQL, NULL, why);
            if (pg->closing) return;
            continue;
        }
        pg->inflight = q;
        int f = PQflush(pg->conn);
        if (f < 0) connection_failed(pg, PQerrorMessage(pg->conn), 0);
        else if (watch(pg, f ? UV_READABLE | UV_WRITABLE : UV_READABLE))
            connection_failed(pg, "cannot watch the socket", 0);
    }
}

/* Reads what arrived: notifications, then the in-flight query's results. */
static void on_readable(srv_pg *pg) {
    if (!PQconsumeInput(pg->conn)) {
        connection_failed(pg, PQerrorMessage(pg->conn), 0);
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(pg->conn))) {
        if (pg->on_notify) pg->on_notify(pg->ud, n->relname, n->extra);
        PQfreemem(n);
        if (pg->closing) return;
    }
    while (pg->inflight && !PQisBusy(pg->conn)) {
        PGresult *r = PQgetResult(pg->conn);
        if (r) {
            if (pg->last) PQclear(pg->last);
            pg->last = r;
            continue;
        }
        pg_query *q = pg->inflight;
        PGresult *res = pg->last;
        pg->inflight = NULL;
        pg->last = NULL;
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            finish(q, SRV_PG_OK, res, NULL);
        } else {
            char buf[512];
            finish(q, SRV_PG_SQL, res,
                   first_line(res ? PQresultErrorMessage(res) : "no result", buf, sizeof buf));
        }
        PQclear(res);
        if (pg->closing) return;
        pump(pg);
        if (pg->state != ST_READY) return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) connection_failed(pg, PQerrorMessage(pg->conn), 0);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    srv_pg *pg = h->data;
    if (pg->closing || h != pg->poll) return;
    if (pg->state == ST_CONNECTING) {
        connect_step(pg);
        return;
    }
    if (pg->state != ST_READY) return;
    if (status < 0) {
        /* libuv reports POLLERR (e.g. a reset connection) as UV_EBADF: libpq's read says why */
        PQconsumeInput(pg->conn);
        const char *why = PQerrorMessage(pg->conn);
        if (!*why) why = "the connection's socket reported an error (closed or reset)";
        connection_failed(pg, why, 0);
        return;
    }
    if (events & UV_READABLE) {
        on_readable(pg);
        if (pg->closing || pg->state != ST_READY) return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(pg->conn);
        if (f < 0) connection_failed(pg, PQerrorMessage(pg->conn), 0);
        else if (f == 0 && watch(pg, UV_READABLE))
            connection_failed(pg, "cannot watch the socket", 0);
    }
}

static void on_kick(uv_idle_t *h) {
    uv_idle_stop(h);
    pump(h->data);
}

/* pump() on the loop's next turn, so that no callback runs inside srv_pg_query. */
static void kick(srv_pg *pg) {
    if (pg->state == ST_READY && !pg->inflight) uv_idle_start(&pg->kick, on_kick);
}

srv_pg *srv_pg_new(uv_loop_t *loop, const srv_pg_opts *opts, dyn_err *err) {
    char *perr = NULL;
    PQconninfoOption *o = PQconninfoParse(opts->conninfo, &perr);
    if (!o) {
        char buf[512];
        dyn_err_set(err, perr ? DYN_EINVAL : DYN_ENOMEM, "postgres connection string: %s",
                    perr ? first_line(perr, buf, sizeof buf) : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    srv_pg *pg = calloc(1, sizeof *pg);
    if (!pg || !(pg->conninfo = strdup(opts->conninfo))) {
        PQconninfoFree(o);
        free(pg);
        dyn_err_set(err, DYN_ENOMEM, "out of memory");
        return NULL;
    }
    /* libpq's rule: at least 2 s; unset (or 0, "wait forever"), we take 10 s */
    pg->connect_timeout_ms = 10000;
    for (PQconninfoOption *p = o; p->keyword; p++)
        if (!strcmp(p->keyword, "connect_timeout") && p->val && atoi(p->val) > 0)
            pg->connect_timeout_ms = (unsigned)(atoi(p->val) < 2 ? 2 : atoi(p->val)) * 1000;
    PQconninfoFree(o);
    pg->loop = loop;
    pg->on_notify = opts->on_notify;
    pg->on_connect = opts->on_connect;
    pg->ud = opts->ud;
    pg->backoff_ms = BACKOFF_MIN_MS;
    pg->state = ST_WAIT;
    uv_timer_init(loop, &pg->timer);
    pg->timer.data = pg;
    uv_idle_init(loop, &pg->kick);
    pg->kick.data = pg;
    pg->handles = 2;
    start_timer(pg, 0);
    return pg;
}

int srv_pg_query(srv_pg *pg, const char *sql, int n, const char *const *params,
                 srv_pg_result_cb cb, void *ud, dyn_err *err) {
    if (pg->closing) return dyn_err_set(err, DYN_EINVAL, "postgres: query after close");
    if (!cb) return dyn_err_set(err, DYN_EINVAL, "postgres: a query needs a callback");
    if (enqueue(pg, sql, n, params, cb, ud, 0))
        return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    kick(pg);
    return 0;
}

int srv_pg_listen(srv_pg *pg, const char *channel, dyn_err *err) {
    size_t len = strlen(channel);
    if (pg->closing) return dyn_err_set(err, DYN_EINVAL, "postgres: listen after close");
    if (len == 0 || len > 63 || strspn(channel, "abcdefghijklmnopqrstuvwxyz0123456789_") != len)
        return dyn_err_set(err, DYN_EINVAL, "postgres channel '%s': use 1 to 63 of a-z 0-9 _",
                           channel);
    for (int i = 0; i < pg->nchannels; i++)
        if (!strcmp(pg->channels[i], channel)) return 0;
    char **c = realloc(pg->channels, (size_t)(pg->nchannels + 1) * sizeof *c);
    if (!c) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    pg->channels = c;
    if (!(c[pg->nchannels] = strdup(channel))) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    pg->nchannels++;
    if (pg->state == ST_READY) {
        if (listen_now(pg, channel, 0)) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
        kick(pg);
    }
    return 0;
}

int srv_pg_connected(const srv_pg *pg) {
    return pg->state == ST_READY;
}

void srv_pg_close(srv_pg *pg) {
    if (!pg || pg->closing) return;
    pg->closing = 1;
    const char *msg = "the PostgreSQL connection was closed (dynd is stopping)";
    pg_query *q = pg->inflight;
    pg->inflight = NULL;
    if (q) finish(q, SRV_PG_CLOSED, NULL, msg);
    while ((q = pop(pg))) finish(q, SRV_PG_CLOSED, NULL, msg);
    drop_connection(pg);
    uv_timer_stop(&pg->timer);
    uv_close((uv_handle_t *)&pg->timer, handle_closed);
    uv_close((uv_handle_t *)&pg->kick, handle_closed);
}

/* ---- synchronous ---- */

PGconn *srv_pg_connectdb(const char *conninfo) {
    /* conninfo expanded after the default: its own connect_timeout, if any, wins */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {"10", conninfo, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

int srv_pgsync_init(srv_pgsync *s, const char *conninfo, dyn_err *err) {
    memset(s, 0, sizeof *s);
    if (!(s->conninfo = strdup(conninfo))) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    return 0;
}

void srv_pgsync_free(srv_pgsync *s) {
    if (!s->conninfo) return;
    if (s->conn) PQfinish(s->conn);
    free(s->conninfo);
    pthread_mutex_destroy(&s->mu);
    memset(s, 0, sizeof *s);
}

PGconn *srv_pgsync_lock(srv_pgsync *s, dyn_err *err) {
    pthread_mutex_lock(&s->mu);
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK) return s->conn;
    if (s->conn) PQfinish(s->conn);
    s->conn = srv_pg_connectdb(s->conninfo);
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK) {
        PQsetNoticeReceiver(s->conn, notice_to_log, NULL);
        return s->conn;
    }
    char buf[512];
    dyn_err_set(err, DYN_EIO, "cannot connect to PostgreSQL: %s",
                s->conn ? first_line(PQerrorMessage(s->conn), buf, sizeof buf) : "out of memory");
    if (s->conn) PQfinish(s->conn);
    s->conn = NULL;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void srv_pgsync_unlock(srv_pgsync *s) {
    pthread_mutex_unlock(&s->mu);
}

PGresult *srv_pg_exec(PGconn *conn, const char *what, const char *sql, int n,
                      const char *const *params, dyn_err *err) {
    PGresult *r = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
    srv_pg_seterr(err, what, r ? PQresultErrorMessage(r) : PQerrorMessage(conn), r);
    PQclear(r);
    return NULL;
}

int srv_pg_seterr(dyn_err *err, const char *what, const char *msg, const PGresult *res) {
    char buf[512];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return dyn_err_set(err, DYN_EIO, "%s: %s%s%s%s", what, first_line(msg, buf, sizeof buf),
                       state ? " [SQLSTATE " : "", state ? state : "", state ? "]" : "");
}
