/* guard.h — the connection guard: limits on what one client can hold.
 *
 * libmicrohttpd closes a connection only when it is idle (connection_timeout_s): a client that
 * trickles a byte a second keeps its slot for ever, and enough of them take every slot. The
 * guard adds, per connection:
 *   - a header deadline: a request's line and headers must be in within header_timeout_s of the
 *     connection's start, or of the reply to its previous request (a keep-alive connection idle
 *     in between is closed earlier by libmicrohttpd's idle timeout);
 *   - a minimum body rate: once a body has been arriving for header_timeout_s, the bytes so far
 *     must average min_body_rate bytes/s (0 = no check); with max_body_bytes and
 *     max_upload_bytes this bounds a whole request's time;
 *   - a per-client-IP cap: at most max_per_ip open connections from one address (0 = no cap);
 *     more are closed as they are accepted (behind a balancer every connection comes from its
 *     address: raise the cap or turn it off there).
 * A connection over its deadline is shut down (its socket, by a sweeper thread that looks every
 * 250 ms); every connection dropped is logged (warn) and counted in
 * dynd_connections_dropped_total{reason}.
 *
 * Threads: srv_guard_admit/open/close and the phase calls come from libmicrohttpd's threads
 * (each connection's calls from its own thread); one mutex guards the connection list and the
 * per-IP table. Nothing is logged while it is held (the sweeper notes its drops, then logs).
 */
#ifndef SRV_GUARD_H
#define SRV_GUARD_H

#include <stddef.h>
#include <sys/socket.h>

#include "server/metrics.h"

typedef struct {
    int header_timeout_s; /* > 0 */
    long long min_body_rate; /* bytes per second; 0 = no check */
    int max_per_ip;       /* 0 = no cap */
} srv_guard_limits;

typedef struct srv_guard srv_guard;
typedef struct srv_conn srv_conn;

/* Starts the sweeper. NULL when out of memory or no thread can start. metrics is borrowed (may
 * be NULL) and must outlive the guard. Free with srv_guard_free. */
srv_guard *srv_guard_new(const srv_guard_limits *lim, srv_metrics *metrics);
/* Stops the sweeper; the connections must all be closed (srv_guard_close) first. */
void srv_guard_free(srv_guard *g);

/* At accept, before the connection exists: 1 to take it, 0 to refuse it (the IP is at its cap;
 * counted and logged as per_ip_limit). */
int srv_guard_admit(srv_guard *g, const struct sockaddr *addr, socklen_t len);
/* A connection began (fd is its socket, addr its peer). NULL when out of memory: the connection
 * then goes unguarded. Owned by the guard until srv_guard_close. */
srv_conn *srv_guard_open(srv_guard *g, int fd, const struct sockaddr *addr, socklen_t len);
/* The connection ended (before its socket is closed). c may be NULL. Frees c. */
void srv_guard_close(srv_guard *g, srv_conn *c);

/* Phases of a connection's current request; c may be NULL (unguarded). */
void srv_guard_headers_done(srv_conn *c); /* headers in: the body phase begins */
void srv_guard_body_bytes(srv_conn *c, size_t n); /* n more body bytes arrived */
void srv_guard_handling(srv_conn *c);     /* body complete: the handler has it, no deadline */
void srv_guard_reply_done(srv_conn *c);   /* replied: waiting for the next request's headers */
/* Open connections whose first request has not begun yet (the drain waits for them). */
int srv_guard_unserved(srv_guard *g);

#endif
