/* file.c — atomic, durable file writes. See file.h. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dyn_file_write_all(int fd, const void *data, size_t n) {
    const uint8_t *c = data;
    while (n) {
        ssize_t w = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) { /* no progress on a regular file: treat as an I/O error, never spin */
            errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int dyn_file_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd) != 0 && errno != EINVAL ? -1 : 0;
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int dyn_file_fsync_dir_of(const char *path) {
    char *dir = strdup(path);
    if (!dir) return -1;
    char *slash = strrchr(dir, '/');
    const char *d = dir;
    if (!slash)
        d = ".";
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int rc = dyn_file_fsync_dir(d);
    int e = errno;
    free(dir);
    errno = e;
    return rc;
}

static void atomic_free(dyn_file_atomic *f) {
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fd = -1;
}

int dyn_file_atomic_begin(dyn_file_atomic *f, const char *path, unsigned mode, dyn_err *err) {
    /* pid + a process-wide sequence number: concurrent writers (other threads of this process,
     * or other processes) never share a temporary; O_EXCL makes a clash an error, not a mix. A
     * stray temporary of an earlier process with the same pid (a restarted container's pid 1)
     * is stepped over with the next number. */
    static _Atomic unsigned g_seq;
    f->fd = -1;
    f->path = strdup(path);
    size_t tl = strlen(path) + 32;
    f->tmp = malloc(tl);
    if (!f->path || !f->tmp) {
        atomic_free(f);
        return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", path);
    }
    for (int tries = 0; tries < 64; tries++) {
        snprintf(f->tmp, tl, "%s.tmp.%ld.%u", path, (long)getpid(), g_seq++);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
        if (f->fd >= 0 || errno != EEXIST) break;
    }
    if (f->fd < 0) {
        int rc = dyn_err_set(err, DYN_EIO, "%s: cannot create %s: %s", path, f->tmp,
                             strerror(errno));
        atomic_free(f);
        return rc;
    }
    return 0;
}

void dyn_file_atomic_abort(dyn_file_atomic *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    atomic_free(f);
}

int dyn_file_atomic_commit(dyn_file_atomic *f, dyn_err *err) {
    int rc = 0;
    if (fsync(f->fd) != 0) {
        rc = dyn_err_set(err, DYN_EIO, "%s: writing %s failed: %s", f->path, f->tmp,
                         strerror(errno));
    } else {
        int fd = f->fd;
        f->fd = -1;
        if (close(fd) != 0)
            rc = dyn_err_set(err, DYN_EIO, "%s: closing %s failed: %s", f->path, f->tmp,
                             strerror(errno));
        else if (rename(f->tmp, f->path) != 0)
            rc = dyn_err_set(err, DYN_EIO, "%s: renaming %s into place failed: %s", f->path,
                             f->tmp, strerror(errno));
    }
    if (rc) {
        dyn_file_atomic_abort(f);
        return rc;
    }
    if (dyn_file_fsync_dir_of(f->path) != 0)
        rc = dyn_err_set(err, DYN_EIO, "%s: written, but syncing its directory failed: %s",
                         f->path, strerror(errno));
    atomic_free(f);
    return rc;
}

int dyn_file_write_atomic(const char *path, const void *data, size_t size, unsigned mode,
                          dyn_err *err) {
    dyn_file_atomic f;
    int rc = dyn_file_atomic_begin(&f, path, mode, err);
    if (rc) return rc;
    if (size && dyn_file_write_all(f.fd, data, size) != 0) {
        rc = dyn_err_set(err, DYN_EIO, "%s: writing %s failed: %s", path, f.tmp, strerror(errno));
        dyn_file_atomic_abort(&f);
        return rc;
    }
    return dyn_file_atomic_commit(&f, err);
}
