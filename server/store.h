/* store.h — the model store: where published models live beyond this host.
 *
 * model_store unset (the default): model_dir is the repository, as it always was; nothing here
 * runs. model_store = s3://<bucket>/<prefix>: an S3-compatible bucket (AWS S3, or any server
 * speaking its REST API on store_endpoint) holds the models, and model_dir is this replica's
 * local read-through cache of it, which the repository scans and watches as usual.
 *
 * Layout in the bucket (<p> = prefix, "" allowed):
 *   <p>/<name>/manifest.json   what readers trust: {"format": "dynd-model-manifest/1",
 *                              "name", "versions": [{"version", "key", "size", "etag",
 *                              "published_at", "publisher"}]}, versions ascending
 *   <p>/<name>/<uniq>.dyn      one object per published version (uniq: time, pid, random), never
 *                              overwritten; only a manifest entry makes it a version
 * Versions are listed from the store: ListObjectsV2 under "<p>/" finds every manifest.
 *
 * Publishing (srv_store_publish: a job's model): the file is uploaded under its own new key,
 * then the manifest is rewritten with one more version (max + 1; the oldest are dropped beyond
 * SRV_STORE_MAX_VERSIONS, the repository's limit) and read back. A publish that fails before
 * the manifest write deletes its object again and leaves the manifest as it was: no manifest
 * ever names an object that was not completely uploaded (an object is orphaned, never
 * referenced, only when the store goes away between the upload and that delete).
 *
 * Concurrent publishers of one name: the manifest write is conditional (If-Match with the ETag
 * read, If-None-Match: * for a new model) and retried from a fresh read on 412, so on a server
 * that honors conditional writes (AWS S3 since 2024) both versions land. Servers that ignore the
 * headers (s3rver, older S3-compatible servers) make it last writer wins; the read-back then
 * catches most lost writes (the publisher retries), but two writes within one round trip can
 * still lose one version from the manifest (its object is orphaned; the job still reports it).
 *
 * Reading (the poller): every store_poll_ms, on a worker thread (uv_queue_work), the manifests
 * are listed; a manifest whose ETag changed is read, and each version missing from model_dir
 * (no <name>/<v>.dyn of the manifest's size) is downloaded atomically (temporary, fsync,
 * rename) into model_dir/<name>/<v>.dyn; then the repository scans (load-before-release keeps
 * in-flight requests on the version they started with). Versions or models that disappear from
 * the store (seen by this process) are removed from the cache: dynd has no model-delete API, so
 * a model is removed from the store by deleting <p>/<name>/manifest.json (then its objects). When the store is unreachable
 * nothing is removed: the replica keeps serving what it has, and logs the error. Readiness
 * (/v2/health/ready) waits for the first poll, so a new replica is ready with the store's models.
 *
 * Threads: srv_store_publish and srv_store_sync block on the network and are
 * thread-safe against each other (syncs are serialized); never call them on the loop thread.
 */
#ifndef SRV_STORE_H
#define SRV_STORE_H

#include <jansson.h>
#include <uv.h>

#include "server/config.h"
#include "server/s3.h"

#define SRV_STORE_MAX_VERSIONS 16 /* versions kept per model (repository.h serves 16) */
#define SRV_STORE_MANIFEST_FORMAT "dynd-model-manifest/1"

typedef struct srv_store srv_store;

/* The store of cfg: *out = NULL when model_store is empty (model_dir alone), else a new store
 * (srv_store_free). Settings: model_store, store_endpoint, store_region,
 * store_access_key_id, store_secret_access_key (each also DYND_<SETTING>), falling back to
 * AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
 * Checks the URI and that credentials exist; contacts nothing. 0, or DYN_EINVAL with err. */
int srv_store_open(const srv_config *cfg, srv_store **out, dyn_err *err);
void srv_store_free(srv_store *st);

/* The store the daemon runs with (NULL: none), for code without a context to carry it (job
 * publication). Set once at start before any job runs, cleared before srv_store_free. */
srv_store *srv_store_active(void);
void srv_store_set_active(srv_store *st);

/* "s3://bucket/prefix" → bucket and prefix (no leading / trailing '/'; may be ""). 0, or
 * DYN_EINVAL with err saying what is wrong. */
int srv_store_parse_uri(const char *uri, char *bucket, size_t bn, char *prefix, size_t pn,
                        dyn_err *err);

/* The key "<prefix>/<name>/<leaf>" (no leading '/' when prefix is ""). 0 or -1 (too long). */
int srv_store_key(const char *prefix, const char *name, const char *leaf, char *buf, size_t n);

/* Parses and checks a manifest of model `name` (text from the store): the format, the name,
 * versions ascending and unique, each key under "<prefix>/<name>/", sizes >= 0. New reference,
 * or NULL with err (DYN_EIO: not a manifest dynd can trust). */
json_t *srv_store_manifest_parse(const char *text, const char *prefix, const char *name,
                                 dyn_err *err);

/* Publishes file `path` (a complete .dyn) as the next version of `name`: upload, manifest, then
 * path is renamed into model_dir/<name>/<v>.dyn (*version = v). replace = 0 refuses a name the
 * store already has (DYN_EINVAL). On failure path is left to the caller (unlink it). 0, or
 * DYN_EIO / DYN_EINVAL with err (the S3 status and code when the store refused). */
int srv_store_publish(srv_store *st, const char *model_dir, const char *name, const char *path,
                      int replace, int *version, dyn_err *err);

/* One poll (blocking): brings model_dir up to date with the store. *changed = files added or
 * removed. 0, or DYN_EIO with err (what could be done was done). */
int srv_store_sync(srv_store *st, const char *model_dir, int *changed, dyn_err *err);

/* Starts polling on `loop` every interval_ms (the first poll at once): srv_store_sync on the
 * threadpool, then on_change(arg) on the loop thread when files changed, and after the first
 * poll whatever its outcome (the daemon turns ready only after it: a new replica serves the
 * store's models from its first ready answer, or what it has cached if the store is down).
 * The timer is a handle of loop (closed by whoever closes the loop's handles);
 * srv_store_poller_stop stops it and cancels a poll in progress (its requests end within a
 * second: shutdown never waits on a store that stopped answering). Publishes are not
 * cancelled. */
int srv_store_poller_start(srv_store *st, uv_loop_t *loop, const char *model_dir, int interval_ms,
                           void (*on_change)(void *arg), void *arg);
void srv_store_poller_stop(srv_store *st);

/* ---- job files (issue 14: a job's working files reachable from every replica) ----
 *
 * With a store, a job's working files are also kept in it, so that any replica can run or take
 * over the job (the local job directory is then only a cache):
 *   <p>/.jobs/<id>/upload.bin       a conversion's upload (put before the job is queued)
 *   <p>/.jobs/<id>/input.dyn        a fine-tune's input snapshot (put once written)
 *   <p>/.jobs/<id>/ckpt/<file>      the last complete fine-tuning checkpoint (state.json last)
 * Everything under <p>/.jobs/<id>/ is deleted when the job ends. These keys never look like a
 * model's (<p>/<name>/manifest.json or <p>/<name>/<uniq>.dyn),
 * and model names never start with a dot, so no model can share their folder.
 *
 * All of these block on the network (any thread but an event loop's, except the _async one).
 * Errors: 0, or DYN_EIO (DYN_EINVAL for a bad id or leaf) with err naming the job, the key and
 * the store's answer. Strings are borrowed for the call. */

/* The key "<prefix>/.jobs/<id>/<leaf>" into buf (leaf may hold one '/' level such as
 * "ckpt/state.json"; "" gives the folder, with its trailing '/'). id: [a-z0-9-]; leaf: no
 * "..", no leading '/'. 0, or -1 (invalid or does not fit). */
int srv_store_job_key(const srv_store *st, const char *id, const char *leaf, char *buf, size_t n);

/* Uploads local file `path` as the job's object `leaf`. One S3 PUT: readers see the whole new
 * object or the previous one, never a part. */
int srv_store_job_put(srv_store *st, const char *id, const char *leaf, const char *path,
                      dyn_err *err);

/* Downloads the job's object `leaf` into `path` atomically (temporary, fsync, rename, directory
 * fsync; the directory must exist). *found = 0 (and 0 returned, path untouched) when the store
 * has no such object, 1 when it was downloaded. */
int srv_store_job_get(srv_store *st, const char *id, const char *leaf, const char *path,
                      int *found, dyn_err *err);

/* Mirrors local directory `dir` into the job's folder `sub` (e.g. "ckpt"): uploads each regular
 * file of dir modified at or after `since` (seconds since the epoch; 0: every file; temporaries
 * "*.tmp.*" skipped) except `last`, then `last` (it must exist), then deletes the objects under
 * <sub>/ that dir no longer holds. A reader that reads `last` first (srv_store_job_fetch_dir)
 * thus finds every file that `last` names, as long as the writer names only files of dir; a
 * failure before `last` is uploaded leaves the previous `last` and its files in place. *bytes
 * (may be NULL) gets the bytes uploaded. */
int srv_store_job_push_dir(srv_store *st, const char *id, const char *sub, const char *dir,
                           const char *last, double since, long long *bytes, dyn_err *err);

/* The reverse: reads <sub>/<last> first. The store has none: *found = 0, nothing is written,
 * 0 is returned. Else every other object under <sub>/ for which keep(leaf, last_text, arg)
 * returns 1 (keep NULL: every object) is downloaded into `dir` (created if missing), each
 * atomically, and `last` is written after them (atomically): a local reader that finds `last`
 * finds what it names. *found = 1. On an error `last` is not written (dir may hold some of the
 * others). last_text is the object's bytes, NUL-terminated, borrowed for the call. */
int srv_store_job_fetch_dir(srv_store *st, const char *id, const char *sub, const char *dir,
                            const char *last,
                            int (*keep)(const char *leaf, const char *last_text, void *arg),
                            void *arg, int *found, dyn_err *err);

/* Deletes every object under <p>/.jobs/<id>/ (listing, then one DELETE each). *deleted (may be
 * NULL) gets how many. On an error the remaining objects stay (err says which failed). */
int srv_store_job_delete(srv_store *st, const char *id, int *deleted, dyn_err *err);

/* srv_store_job_delete on a thread of its own, for callers that must not block (an event loop
 * thread): best effort, its outcome logged. srv_store_free waits for such deletes: up to 5 s,
 * then cancels them (each ends within a second). */
void srv_store_job_delete_async(srv_store *st, const char *id);

#endif
