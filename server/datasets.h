/* datasets.h — the user's data sets in data_dir: import from an uploaded archive, list,
 * describe, delete, and whether a set is labeled (for jobs that need labels).
 *
 * Import (srv_dataset_import): a zip, or a tar optionally compressed with gzip, already on disk
 * (the HTTP layer streamed it there), is read with libarchive entry by entry:
 *   - refused (the whole archive, nothing left behind): an absolute path, a ".." component, a
 *     backslash or control character in a name, a name or depth over the limits, symbolic and
 *     hard links, devices, FIFOs; more entries, bytes, bytes per entry or expansion
 *     (extracted bytes / archive bytes) than the limits allow, counted on the bytes actually
 *     decompressed (never trusting the sizes an archive claims); a file with PNG / JPEG magic
 *     bytes that does not decode within the image limits (the message names the entry); the
 *     same path twice; a layout that is none of those below;
 *   - skipped and counted: hidden files and folders (a component starting with '.'),
 *     __MACOSX/, files that are not PNG or JPEG by their magic bytes; directory entries.
 * Layout of the images that remain (after dropping one top-level folder that wraps them all,
 * unless it is train/ or test/):
 *   <class>/<file>                         labeled, training split only
 *   train/<class>/<file>, test/<class>/... labeled, two splits (the same classes in both)
 *   <file>                                 unlabeled
 *   train/<file>, test/<file>              unlabeled, two splits
 * (So a single folder holding images is a wrapper: cls/x.png alone is an unlabeled set. A
 * labeled set has two class folders or more, or train/.)
 * Stored as the engine's loader reads image folders (engine/io/dataset.h): DIR/<class>/ or
 * DIR/train/<class>/ + DIR/test/<class>/; an unlabeled set as the one class folder
 * DIR/_unlabeled/ (or DIR/train/_unlabeled/ + DIR/test/_unlabeled/). A file whose name lacks a
 * .png / .jpg / .jpeg extension gets the one its magic bytes say (the loader goes by
 * extension). DIR/.dataset.json (the manifest, skipped by the loader as a dot file) says:
 *   {"name", "labeled", "classes": [...], "images", "splits": {"train": {"images", "classes":
 *    {"<class>": n}}, "test": {...}}, "bytes", "created" (ISO 8601 UTC), "skipped":
 *    {"hidden", "not_image", "directories"}}
 * Everything is written into a hidden temporary directory of data_dir (".import-*", ignored by
 * listings and by the loader), synced (syncfs) and renamed into place in one step: a reader
 * sees no set or the whole set. An existing name is refused unless `overwrite`; then the old
 * set is swapped out atomically (renameat2 RENAME_EXCHANGE) and removed.
 *
 * Names follow the model-name rules (srv_repo_name_valid); the built-in names "mnist",
 * "fashion" and "fashion-mnist" are refused for import and delete.
 *
 * Errors: functions returning json_t * give NULL and fill srv_dataset_err (HTTP status, stable
 * code, a message a person can act on); others return 0 or a negative DYN_E* code.
 * Threads: every function may run on any thread; concurrent imports of one name resolve at the
 * final rename (one wins, the other gets 409).
 */
#ifndef SRV_DATASETS_H
#define SRV_DATASETS_H

#include <jansson.h>
#include <stdatomic.h>

#include "io/image.h"
#include "server/config.h"
#include "server/server.h"

/* Limits of one import (srv_dataset_limits_get fills them from the settings). */
typedef struct srv_dataset_limits {
    long long max_entries;     /* archive entries of any kind (directories included) */
    long long max_bytes;       /* bytes of every image file once extracted */
    long long max_ratio;       /* extracted bytes per byte of the archive */
    long long max_entry_bytes; /* bytes of one file once extracted */
    int max_path;              /* bytes of an entry's path */
    int max_depth;             /* folders + file of an entry's path */
    dyn_image_limits image;    /* each image is decoded once within these */
} srv_dataset_limits;

/* An error for the HTTP layer (server.h). */
typedef srv_err srv_dataset_err;

/* The import limits of cfg (dataset_* settings and the max_image_* ones). */
void srv_dataset_limits_get(const srv_config *cfg, srv_dataset_limits *lim);

/* 1 when `name` is a built-in data set name ("mnist", "fashion", "fashion-mnist"). */
int srv_dataset_builtin(const char *name);

/* 0 when `name` may be created or deleted through the API; otherwise -1 with e set (400
 * invalid_name, 403 builtin_dataset). */
int srv_dataset_name_check(const char *name, srv_dataset_err *e);

/* Imports the archive at `archive` (borrowed; not removed) as data set `name` of data_dir (see
 * the header comment). `cancel` (may be NULL) is polled between entries: when it becomes
 * non-zero the import stops with 503 shutting_down. Returns the manifest (new reference) or
 * NULL with e: 400 invalid_name / not_an_archive / bad_archive / unsafe_entry / bad_layout /
 * no_images, 403 builtin_dataset, 409 dataset_exists, 413 too_many_entries / entry_too_large /
 * dataset_too_large / expansion_ratio, 422 bad_image, 500 / 507 storage_failed. Nothing is left
 * in data_dir on failure. */
json_t *srv_dataset_import(const char *data_dir, const char *name, const char *archive,
                           int overwrite, const srv_dataset_limits *lim, const atomic_int *cancel,
                           srv_dataset_err *e);

/* One data set of data_dir described (new reference): the manifest plus "builtin" and
 * "managed" (1 when it has a manifest, i.e. came through the API), or for other directories
 * what a look at their top level tells: "format" ("idx" or "images"), "labeled", "classes",
 * "splits". NULL with e: 400 invalid_name, 404 dataset_not_found. */
json_t *srv_dataset_describe(const char *data_dir, const char *name, srv_dataset_err *e);

/* Every data set of data_dir, described (new reference): {"datasets": [...]} sorted by name.
 * Hidden entries and entries that are not directories are left out. A missing data_dir is an
 * empty list. */
json_t *srv_dataset_list(const char *data_dir);

/* Removes data set `name`: renamed away at once, then removed without following symbolic
 * links (a data set that is itself a symbolic link loses the link, never its target). 0, or -1
 * with e: 400 invalid_name, 403 builtin_dataset, 404 dataset_not_found, 500 storage_failed. */
int srv_dataset_delete(const char *data_dir, const char *name, srv_dataset_err *e);

/* Whether data set `name` of data_dir has labels, for jobs that need them (evaluation,
 * fine-tuning) or may do without (calibration):
 *   1  labeled: a manifest saying so, an IDX set (the built-ins), or an image folder with class
 *      folders other than the single "_unlabeled" one;
 *   0  unlabeled: a manifest saying "labeled": false, or only DIR/_unlabeled/ (or
 *      DIR/train/_unlabeled/);
 *   DYN_EINVAL  not a valid data set name (srv_repo_name_valid);
 *   DYN_EIO     no such data set directory.
 * Reads at most the manifest and one directory listing; no image is opened. */
int srv_dataset_labeled(const char *data_dir, const char *name);

#endif
