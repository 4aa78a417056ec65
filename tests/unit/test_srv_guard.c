/* test_srv_guard.c — server/guard: a connection over its header deadline is shut down by the
 * sweeper and logged, and the log line is written without the guard's mutex: with stderr a full
 * pipe (the log write blocks), connections still open and close. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/guard.h"
#include "testutil.h"

/* Reads the pipe's read end only once `opened` is set, or after a bound (the test fails then,
 * instead of hanging: with the log written under the mutex, the open waits for this drain). */
typedef struct drain {
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int opened;                  /* the main thread's srv_guard_open returned */
    int opened_before_drain;     /* ... before this thread began to read */
    char buf[1 << 17];
    size_t len;
} drain;

static void *drain_main(void *arg) {
    drain *d = arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60; /* only ever reached when the open is blocked by the log write */
    pthread_mutex_lock(&d->mu);
    while (!d->opened && pthread_cond_timedwait(&d->cv, &d->mu, &ts) != ETIMEDOUT) {
    }
    d->opened_before_drain = d->opened;
    pthread_mutex_unlock(&d->mu);
    ssize_t r;
    while ((r = read(d->fd, d->buf + d->len, sizeof d->buf - 1 - d->len)) > 0) {
        d->len += (size_t)r;
        if (d->len == sizeof d->buf - 1) d->len = 0; /* keep the tail: the log line is last */
    }
    d->buf[d->len] = 0;
    return NULL;
}

START_TEST(log_outside_the_lock) {
    /* stderr: a pipe filled to the brim, so the sweeper's log line blocks until it is read */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(dup2(p[1], 2), 2);
    close(p[1]);
    ck_assert_int_eq(fcntl(2, F_SETFL, fcntl(2, F_GETFL) | O_NONBLOCK), 0);
    char fill[4096];
    memset(fill, '.', sizeof fill);
    while (write(2, fill, sizeof fill) > 0) {
    }
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(fcntl(2, F_SETFL, fcntl(2, F_GETFL) & ~O_NONBLOCK), 0);

    srv_guard_limits lim = {.header_timeout_s = 1};
    srv_guard *g = srv_guard_new(&lim, NULL);
    ck_assert_ptr_nonnull(g);
    int a[2], b[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    srv_conn *slow = srv_guard_open(g, a[0], NULL, 0);
    ck_assert_ptr_nonnull(slow);
    /* no request in: past header_timeout_s the sweeper shuts the socket down (the peer reads
     * end of file), then logs it (and blocks in that write) */
    char c;
    ck_assert_int_eq(read(a[1], &c, 1), 0);

    drain d = {.fd = p[0]};
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, drain_main, &d), 0);
    srv_conn *other = srv_guard_open(g, b[0], NULL, 0); /* needs the guard's mutex */
    pthread_mutex_lock(&d.mu);
    d.opened = 1;
    pthread_cond_signal(&d.cv);
    pthread_mutex_unlock(&d.mu);
    ck_assert_ptr_nonnull(other);
    srv_guard_close(g, other);
    srv_guard_close(g, slow);
    srv_guard_free(g); /* joins the sweeper: its log write is done */
    close(2);          /* the drain reads to end of file */
    pthread_join(t, NULL);
    ck_assert_msg(d.opened_before_drain,
                  "srv_guard_open waited for the sweeper's log write (logged under the mutex)");
    ck_assert_ptr_nonnull(strstr(d.buf, "connection dropped"));
    ck_assert_ptr_nonnull(strstr(d.buf, "header_timeout"));
    close(a[0]), close(a[1]), close(b[0]), close(b[1]), close(p[0]);
    pthread_cond_destroy(&d.cv);
    pthread_mutex_destroy(&d.mu);
}
END_TEST

Suite *guard_suite(void) {
    Suite *s = suite_create("srv_guard");
    TCase *tc = tcase_create("guard");
    tcase_set_timeout(tc, 300); /* the failing case waits 60 s for its drain; not a measure */
    tcase_add_test(tc, log_outside_the_lock);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(guard_suite)
