/* file.h — durable file writes: a file replaced atomically (temporary file in the same
 * directory, write loop, fsync, rename over the target, fsync of the directory), so a reader
 * sees the old content or the new, never a mix, and a crash leaves at most a stray temporary.
 *
 * Two forms: dyn_file_write_atomic for bytes already in memory, and the streaming trio
 * dyn_file_atomic_begin / _commit / _abort for writers that produce the file in pieces
 * (dyn_st_write). Both use the same temporary name, "<path>.tmp.<pid>.<seq>" (seq: a
 * process-wide counter), created with O_EXCL so that two writers never share one.
 *
 * Errors: 0, or DYN_EIO / DYN_ENOMEM with err set to a message that starts with the path and
 * says which step failed and why (strerror). On failure the temporary is removed; the target is
 * untouched unless the rename succeeded (only the directory fsync failed — the message says so).
 */
#ifndef DYN_IO_FILE_H
#define DYN_IO_FILE_H

#include "../base.h"

/* A file being written: fd is open on the temporary; write to it with dyn_file_write_all. */
typedef struct dyn_file_atomic {
    int fd;
    char *path; /* owned copies */
    char *tmp;
} dyn_file_atomic;

/* Creates the temporary for `path` with permission bits `mode` (before the umask). On success
 * f must be finished with exactly one of dyn_file_atomic_commit or dyn_file_atomic_abort. On
 * failure f holds nothing (nothing to abort). */
int dyn_file_atomic_begin(dyn_file_atomic *f, const char *path, unsigned mode, dyn_err *err);

/* fsyncs and closes the temporary, renames it over the path and fsyncs the directory. Frees f
 * whatever the outcome. */
int dyn_file_atomic_commit(dyn_file_atomic *f, dyn_err *err);

/* Closes and removes the temporary and frees f (a writer that failed mid-way). */
void dyn_file_atomic_abort(dyn_file_atomic *f);

/* Writes `size` bytes at data to `path` atomically, the file getting permission bits `mode`
 * (before the umask; 0666 for ordinary files, 0640 for ones only the group may read). data is
 * borrowed. */
int dyn_file_write_atomic(const char *path, const void *data, size_t size, unsigned mode,
                          dyn_err *err);

/* write(2) until all n bytes are written, retrying EINTR and short writes. 0, or -1 with errno
 * set. */
int dyn_file_write_all(int fd, const void *data, size_t n);

/* fsync of the directory `dir` (to make a rename, link, create or unlink in it durable). 0, or
 * -1 with errno set; EINVAL from file systems that cannot sync a directory counts as success. */
int dyn_file_fsync_dir(const char *dir);

/* dyn_file_fsync_dir of the directory holding `path` ("." for a bare name). */
int dyn_file_fsync_dir_of(const char *path);

#endif
