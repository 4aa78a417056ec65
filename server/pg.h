/* pg.h — PostgreSQL connections for the daemon (libpq): an asynchronous one driven by the
 * daemon's libuv loop, and a small synchronous one for threads that are not the loop.
 *
 * srv_pg (asynchronous, loop thread only). One connection, started with PQconnectStart and
 * driven by PQconnectPoll from a uv_poll_t on its socket; a FIFO of queries sent one at a time
 * with PQsendQueryParams (text parameters, text results), each answered by a callback on the
 * loop thread; PQflush is retried on UV_WRITABLE while the output does not fit the socket.
 * Notifications (LISTEN) are read after every PQconsumeInput and handed to the notify callback.
 *
 * When the server goes away (restart, network), the query in flight fails with
 * SRV_PG_LOST — it may or may not have been committed: callers make their statements safe to
 * repeat or check — and the connection is opened again after a backoff (100 ms, doubling, at
 * most 5 s; reset by a successful connection). Queries queued meanwhile wait for the next
 * attempt: it runs them, or fails them all with SRV_PG_DOWN (never sent) when it fails, so no
 * query waits longer than one backoff plus connect_timeout (from conninfo, at least 2 s;
 * unset or 0: 10 s; enforced here, as PQconnectPoll leaves it to the application). A server
 * that vanishes without closing the connection (a partition) is noticed by TCP: set
 * keepalives_idle / tcp_user_timeout in conninfo to bound that. Channels given to
 * srv_pg_listen are LISTENed again on every new connection, before any queued query;
 * notifications sent while no connection was open are lost (PostgreSQL does not keep them),
 * so the connect callback tells the owner to look again at what it would have been notified of.
 *
 * Callbacks never run inside the srv_pg_* call that queued them (srv_pg_close excepted, see
 * there); a callback may queue more queries and may call srv_pg_close.
 *
 * srv_pgsync (any thread). A PGconn behind a mutex for short statements from worker or HTTP
 * threads, connected on first use. A statement that finds the connection broken fails (DYN_EIO;
 * whether it was committed is unknown, as with SRV_PG_LOST); the next srv_pgsync_lock connects
 * again.
 */
#ifndef SRV_PG_H
#define SRV_PG_H

#include <libpq-fe.h>
#include <pthread.h>
#include <uv.h>

#include "base.h"

typedef struct srv_pg srv_pg;

/* How a query ended (the status argument of srv_pg_result_cb). */
typedef enum srv_pg_status {
    SRV_PG_OK,     /* PGRES_COMMAND_OK or PGRES_TUPLES_OK: res holds the result */
    SRV_PG_SQL,    /* the server refused the statement: res holds the error (PQresultErrorField
                      for the SQLSTATE); nothing was committed */
    SRV_PG_LOST,   /* the connection broke while the query was in flight: it may have been
                      committed or not; res is NULL */
    SRV_PG_DOWN,   /* not sent: the server could not be reached; res is NULL */
    SRV_PG_CLOSED, /* not sent: srv_pg_close was called; res is NULL */
} srv_pg_status;

/* A query's answer, on the loop thread. res is owned by srv_pg and cleared when the callback
 * returns (copy what you keep); msg is a human-readable reason when status != SRV_PG_OK (valid
 * during the call), else "". */
typedef void (*srv_pg_result_cb)(void *ud, srv_pg_status status, PGresult *res, const char *msg);
/* A notification (channel and payload valid during the call). */
typedef void (*srv_pg_notify_cb)(void *ud, const char *channel, const char *payload);
/* A connection was opened (first or again: reconnected = 1) and its LISTENs issued, or an
 * attempt failed (connected = 0, msg says why; the next attempt follows the backoff). */
typedef void (*srv_pg_connect_cb)(void *ud, int connected, int reconnected, const char *msg);

typedef struct srv_pg_opts {
    const char *conninfo;       /* libpq key=value string or URI (copied) */
    srv_pg_notify_cb on_notify; /* may be NULL */
    srv_pg_connect_cb on_connect; /* may be NULL */
    void *ud;                   /* passed to on_notify and on_connect */
} srv_pg_opts;

/* Creates the connection on `loop` (borrowed; it must outlive the srv_pg) and starts the first
 * connection attempt; the srv_pg is usable at once (queries wait for the connection). Returns
 * NULL with err (DYN_EINVAL: conninfo does not parse, DYN_ENOMEM). Free with srv_pg_close. */
srv_pg *srv_pg_new(uv_loop_t *loop, const srv_pg_opts *opts, dyn_err *err);

/* Queues `sql` (one statement; $1..$n are the n text parameters, NULL meaning SQL NULL; all
 * copied) to run after the queries before it; cb(ud, ...) is called exactly once with the
 * outcome. Returns 0, or DYN_EINVAL (after srv_pg_close) / DYN_ENOMEM with err set, and then cb
 * is never called. */
int srv_pg_query(srv_pg *pg, const char *sql, int n, const char *const *params,
                 srv_pg_result_cb cb, void *ud, dyn_err *err);

/* LISTENs on `channel` now and after every reconnection. Channel names are [a-z0-9_]{1,63}.
 * Returns 0 or DYN_EINVAL / DYN_ENOMEM with err. */
int srv_pg_listen(srv_pg *pg, const char *channel, dyn_err *err);

/* 1 while a connection is open (between on_connect(1) and its loss). */
int srv_pg_connected(const srv_pg *pg);

/* Fails the queued queries with SRV_PG_CLOSED (the one in flight too: its outcome is unknown,
 * reported as SRV_PG_CLOSED), closes the connection and frees pg once its libuv handles are
 * closed (within the loop's next iteration). No callback of pg runs after this returns, except
 * those SRV_PG_CLOSED answers, which run before it returns. pg may be NULL. */
void srv_pg_close(srv_pg *pg);

/* ---- synchronous ---- */

/* PQconnectdb(conninfo) (key=value or URI) with connect_timeout 10 s unless conninfo sets its
 * own: a host that drops packets would otherwise block the caller for the kernel's TCP timeout
 * (minutes). Returns what PQconnectdb returns: the caller checks PQstatus and PQfinish-es it. */
PGconn *srv_pg_connectdb(const char *conninfo);

typedef struct srv_pgsync {
    pthread_mutex_t mu;
    PGconn *conn;
    char *conninfo;
} srv_pgsync;

/* Copies conninfo; connects lazily. Returns 0 or DYN_ENOMEM with err. Free with
 * srv_pgsync_free. */
int srv_pgsync_init(srv_pgsync *s, const char *conninfo, dyn_err *err);
void srv_pgsync_free(srv_pgsync *s);

/* Locks s and returns its connection, (re)connected when it was not open or had broken; the
 * caller runs its statements (a transaction is fine) and calls srv_pgsync_unlock. On a failed
 * connection returns NULL with err (DYN_EIO, libpq's message), s unlocked. */
PGconn *srv_pgsync_lock(srv_pgsync *s, dyn_err *err);
void srv_pgsync_unlock(srv_pgsync *s);

/* PQexecParams on conn, checked: returns the result (free with PQclear) when its status is
 * PGRES_COMMAND_OK or PGRES_TUPLES_OK, else NULL with err (DYN_EIO, prefixed with `what`, the
 * SQLSTATE in brackets when the server gave one). */
PGresult *srv_pg_exec(PGconn *conn, const char *what, const char *sql, int n,
                      const char *const *params, dyn_err *err);

/* Sets err to DYN_EIO with "what: msg [SQLSTATE x]" (the SQLSTATE when res carries one; res may
 * be NULL) and returns DYN_EIO: the one format of every statement's error. */
int srv_pg_seterr(dyn_err *err, const char *what, const char *msg, const PGresult *res);

#endif
