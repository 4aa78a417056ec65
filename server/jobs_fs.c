/* jobs_fs.c — the jobs' records and leases in a shared directory (jobs_backend = fs, the
 * default; server/jobs_backend.h). Everything lives in jobs_dir/<id>/:
 *
 *   job.json   the record, written atomically (temp file, fsync, rename, directory fsync);
 *   lease.<g>  the lease of generation g: created with O_CREAT|O_EXCL, holding {"host", "pid",
 *              "start"}; the holder is the highest generation. A lease is alive while its
 *              holder is: on this host, the process (pid + its start time) exists; on another
 *              host, the file's mtime was renewed within lease_s (renew touches it). Taking a
 *              job over creates lease.<g+1> (O_EXCL again: of two replicas racing for a dead
 *              holder's job exactly one wins) and removes the older ones;
 *   cancel     a cancel requested by a replica that does not hold the job; the holder's renew
 *              consumes it (cancel_requested event). Removed when the record turns terminal.
 *
 * The directory is also the job's working directory (server/jobs.c: upload, checkpoints), so
 * remove takes all of it. Nothing here needs the loop: start, poll and stop only keep the events.
 * Record writes are not fenced: a holder that lost its lease learns it at its next renew.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/file.h"
#include "server/jobs_impl.h"

typedef struct fs_state {
    char jobs_dir[1100];
    int lease_s;
    char host[256];
    long long start_ticks; /* this process's start time (/proc/self/stat), for lease liveness */
    srv_jobs_backend_events ev;
    int started;
} fs_state;

void srv__remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1500];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) srv__remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* jobs_dir/<id>[/name] into buf. */
static void path_of(const fs_state *s, const char *id, const char *name, char *buf, size_t n) {
    if (name) snprintf(buf, n, "%s/%s/%s", s->jobs_dir, id, name);
    else snprintf(buf, n, "%s/%s", s->jobs_dir, id);
}

static void lease_path(const fs_state *s, const char *id, long long gen, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s/lease.%lld", s->jobs_dir, id, gen);
}

/* Start time (clock ticks since boot) of process pid, or -1 when it does not exist or is a
 * zombie (killed, not yet reaped: as dead as it gets). */
static long long proc_start_ticks(long pid) {
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%ld/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    if (!s || s[1] != ' ' || s[2] == 'Z' || s[2] == 'X' || s[2] == 'x') return -1;
    long long v = -1;
    int field = 2;
    char *save = NULL;
    for (char *t = strtok_r(s + 1, " ", &save); t; t = strtok_r(NULL, " ", &save))
        if (++field == 22) {
            v = atoll(t);
            break;
        }
    return v;
}

/* The highest lease generation of job id, 0 when none. */
static long long lease_max_gen(const fs_state *s, const char *id) {
    char dir[1300];
    path_of(s, id, NULL, dir, sizeof dir);
    DIR *d = opendir(dir);
    if (!d) return 0;
    long long g = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "lease.", 6)) continue;
        long v = strtol(e->d_name + 6, &end, 10);
        if (*end == 0 && v > g && v < 1000000000) g = v;
    }
    closedir(d);
    return g;
}

typedef enum { LEASE_NONE, LEASE_OURS, LEASE_ALIVE, LEASE_DEAD } lease_state;

static lease_state lease_check(const fs_state *s, const char *id, long long gen) {
    if (gen <= 0) return LEASE_NONE;
    char p[1300];
    lease_path(s, id, gen, p, sizeof p);
    struct stat st;
    json_t *o = json_load_file(p, 0, NULL);
    if (stat(p, &st) != 0) {
        json_decref(o);
        return LEASE_NONE;
    }
    const char *host = json_string_value(json_object_get(o, "host"));
    long pid = (long)json_integer_value(json_object_get(o, "pid"));
    long long start = json_integer_value(json_object_get(o, "start"));
    lease_state r;
    if (host && !strcmp(host, s->host)) {
        if (pid == (long)getpid() && start == s->start_ticks) r = LEASE_OURS;
        else r = pid > 0 && proc_start_ticks(pid) == start ? LEASE_ALIVE : LEASE_DEAD;
    } else {
        /* another host (or a lease being written): alive while renewed */
        r = difftime(time(NULL), st.st_mtime) <= s->lease_s ? LEASE_ALIVE : LEASE_DEAD;
    }
    json_decref(o);
    return r;
}

/* ---- the backend's functions ---- */

static int fs_start(void *state, uv_loop_t *loop, const srv_jobs_backend_events *ev, dyn_err *err) {
    fs_state *s = state;
    (void)loop, (void)err;
    s->ev = *ev;
    s->started = 1;
    return 0;
}

static void fs_poll(void *state) { (void)state; }

static void fs_stop(void *state) { ((fs_state *)state)->started = 0; }

static void fs_free(srv_jobs_backend *b) {
    if (!b) return;
    free(b->state);
    free(b);
}

static int fs_create(void *state, const char *id, dyn_err *err) {
    char dir[1300];
    path_of(state, id, NULL, dir, sizeof dir);
    if (mkdir(dir, 0750) != 0)
        return dyn_err_set(err, DYN_EIO, "cannot create %s: %s", dir, strerror(errno));
    return 0;
}

static int fs_record_write(void *state, const char *id, long long lease, const json_t *rec,
                           dyn_err *err) {
    (void)lease; /* not fenced: see the top */
    char *txt = json_dumps(rec, JSON_INDENT(1) | JSON_REAL_PRECISION(9));
    if (!txt) return dyn_err_set(err, DYN_ENOMEM, "out of memory writing the job record");
    char p[1300];
    path_of(state, id, "job.json", p, sizeof p);
    int rc = dyn_file_write_atomic(p, txt, strlen(txt), 0640, err);
    free(txt);
    int st = srv_job_state_parse(json_string_value(json_object_get(rec, "state")));
    if (!rc && (st == SRV_JOB_SUCCEEDED || st == SRV_JOB_FAILED || st == SRV_JOB_CANCELLED)) {
        path_of(state, id, "cancel", p, sizeof p); /* a request that came too late */
        unlink(p);
    }
    return rc;
}

static json_t *fs_record_read(void *state, const char *id) {
    char p[1300];
    path_of(state, id, "job.json", p, sizeof p);
    json_t *rec = json_load_file(p, JSON_REJECT_DUPLICATES, NULL);
    const char *rid = json_string_value(json_object_get(rec, "id"));
    if (rec && (!rid || strcmp(rid, id))) { /* a record copied under another name */
        json_decref(rec);
        rec = NULL;
    }
    return rec;
}

static int fs_list(void *state, srv_jobs_backend_id_fn fn, void *arg, dyn_err *err) {
    fs_state *s = state;
    DIR *d = opendir(s->jobs_dir);
    if (!d) return dyn_err_set(err, DYN_EIO, "cannot read %s: %s", s->jobs_dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && fn(arg, e->d_name)) break;
    closedir(d);
    return 0;
}

static void fs_remove(void *state, const char *id) {
    char dir[1300];
    path_of(state, id, NULL, dir, sizeof dir);
    srv__remove_tree(dir);
}

static long long fs_claim(void *state, const char *id, dyn_err *err) {
    fs_state *s = state;
    long long g = lease_max_gen(s, id);
    lease_state ls = lease_check(s, id, g);
    if (ls == LEASE_ALIVE) return 0;
    if (ls == LEASE_OURS) return g;
    char p[1300];
    lease_path(s, id, g + 1, p, sizeof p);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        if (errno == EEXIST) return 0;
        dyn_err_set(err, DYN_EIO, "cannot create %s: %s", p, strerror(errno));
        return -1;
    }
    char buf[512];
    int n = snprintf(buf, sizeof buf, "{\"host\": \"%s\", \"pid\": %ld, \"start\": %lld}\n",
                     s->host, (long)getpid(), s->start_ticks);
    int bad = write(fd, buf, (size_t)n) != n || fsync(fd) != 0;
    int e = errno;
    close(fd);
    if (bad) {
        unlink(p);
        dyn_err_set(err, DYN_EIO, "cannot write %s: %s", p, strerror(e));
        return -1;
    }
    for (long long k = 1; k <= g; k++) { /* the dead holders' leases */
        lease_path(s, id, k, p, sizeof p);
        unlink(p);
    }
    path_of(s, id, NULL, p, sizeof p);
    dyn_file_fsync_dir(p);
    return g + 1;
}

static void fs_claim_next(void *state, srv_jobs_backend_claimed_fn done, void *arg) {
    (void)state;
    done(arg, NULL, 0); /* see srv_jobs_backend.claim_next: a submitter runs its own jobs */
}

static void fs_release(void *state, const char *id, long long lease) {
    if (lease <= 0) return;
    char p[1300];
    lease_path(state, id, lease, p, sizeof p);
    unlink(p);
}

static int fs_renew(void *state, int n, const char *const *ids, const long long *leases,
                    dyn_err *err) {
    fs_state *s = state;
    (void)err;
    for (int i = 0; i < n; i++) {
        char p[1300];
        lease_path(s, ids[i], leases[i], p, sizeof p);
        if (utimensat(AT_FDCWD, p, NULL, 0) != 0 || lease_max_gen(s, ids[i]) != leases[i]) {
            if (s->started && s->ev.lease_lost) s->ev.lease_lost(s->ev.arg, ids[i]);
            continue;
        }
        path_of(s, ids[i], "cancel", p, sizeof p);
        if (access(p, F_OK) == 0) { /* DELETE sent to another replica */
            unlink(p);
            if (s->started && s->ev.cancel_requested) s->ev.cancel_requested(s->ev.arg, ids[i]);
        }
    }
    return 0;
}

static int fs_cancel_request(void *state, const char *id, dyn_err *err) {
    char p[1300];
    path_of(state, id, "cancel", p, sizeof p);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return dyn_err_set(err, DYN_EIO, "cannot create %s: %s", p, strerror(errno));
    close(fd);
    return 0;
}

/* The highest lease file's holder ("host:pid") and the seconds since its mtime (its creation
 * or last renewal), whether or not the holder still lives. */
static json_t *fs_lease_info(void *state, const char *id) {
    fs_state *s = state;
    long long g = lease_max_gen(s, id);
    if (g <= 0) return NULL;
    char p[1300];
    lease_path(s, id, g, p, sizeof p);
    struct stat st;
    json_t *o = json_load_file(p, 0, NULL);
    if (stat(p, &st) != 0) { /* released meanwhile */
        json_decref(o);
        return NULL;
    }
    const char *host = json_string_value(json_object_get(o, "host"));
    char holder[320];
    snprintf(holder, sizeof holder, "%s:%lld", host ? host : "?",
             (long long)json_integer_value(json_object_get(o, "pid")));
    json_decref(o);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double age = (double)(now.tv_sec - st.st_mtim.tv_sec) +
                 (double)(now.tv_nsec - st.st_mtim.tv_nsec) * 1e-9;
    return json_pack("{s:s, s:f}", "holder", holder, "lease_age_s", age > 0 ? age : 0.0);
}

srv_jobs_backend *srv_jobs_backend_fs(const char *jobs_dir, int lease_s, dyn_err *err) {
    srv_jobs_backend *b = calloc(1, sizeof *b);
    fs_state *s = calloc(1, sizeof *s);
    if (!b || !s) {
        free(b);
        free(s);
        return dyn_err_set(err, DYN_ENOMEM, "jobs: out of memory"), NULL;
    }
    snprintf(s->jobs_dir, sizeof s->jobs_dir, "%s", jobs_dir);
    s->lease_s = lease_s;
    if (gethostname(s->host, sizeof s->host) != 0) snprintf(s->host, sizeof s->host, "localhost");
    s->host[sizeof s->host - 1] = 0;
    for (char *c = s->host; *c; c++) /* it goes into JSON as is */
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 32) *c = '_';
    s->start_ticks = proc_start_ticks((long)getpid());
    *b = (srv_jobs_backend){
        .name = "fs",
        .state = s,
        .start = fs_start,
        .poll = fs_poll,
        .stop = fs_stop,
        .free = fs_free,
        .create = fs_create,
        .record_write = fs_record_write,
        .record_read = fs_record_read,
        .list = fs_list,
        .remove = fs_remove,
        .claim = fs_claim,
        .claim_next = fs_claim_next,
        .release = fs_release,
        .renew = fs_renew,
        .cancel_request = fs_cancel_request,
        .lease_info = fs_lease_info,
    };
    return b;
}
