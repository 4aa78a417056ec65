/* s3.h — a small S3 client on libcurl: PUT / GET / HEAD / DELETE of one object and
 * ListObjectsV2, path-style URLs (<endpoint>/<bucket>/<key>), signed with libcurl's built-in
 * AWS SigV4 (CURLOPT_AWS_SIGV4 "aws:amz:<region>:s3"). Bodies are never signed: every request
 * sends x-amz-content-sha256: UNSIGNED-PAYLOAD (S3 accepts it; uploads stream from the file
 * with a Content-Length instead of being read twice to hash them).
 *
 * Errors: every call returns 0 on a 2xx reply, else DYN_EIO with err naming the operation, the
 * key, the HTTP status and the S3 error code and message parsed from the XML body
 * ("S3 GET models/a/manifest.json: HTTP 404 NoSuchKey: The specified key does not exist.")
 * or the transport error (connection refused, timeout). `res` (may be NULL) gets the status
 * (0: no reply), the S3 code and the ETag / size of the reply, so callers can tell a 404 or a
 * 412 (a failed If-Match) from a failure.
 *
 * Threads: functions are reentrant (one curl easy handle per call); call curl_global_init
 * once before any thread uses them (srv_s3_global_init). Blocking: never call them on an event
 * loop thread.
 */
#ifndef SRV_S3_H
#define SRV_S3_H

#include <stdatomic.h>
#include <stddef.h>

#include "base.h"

/* Where and as whom (all strings NUL-terminated; endpoint like http://127.0.0.1:9000, no
 * trailing slash). */
typedef struct srv_s3 {
    char endpoint[512];
    char region[64];
    char bucket[64];
    char access_key[128];
    char secret_key[256];
    long connect_timeout_s; /* 0 = 10 */
    long timeout_s;         /* whole request, 0 = 600 (large models) */
    const atomic_int *cancel; /* NULL, or a flag: once non-zero, requests in progress stop
                               * within a second with an error ("cancelled") */
} srv_s3;

/* What a reply said. */
typedef struct srv_s3_res {
    long status;       /* HTTP status, 0 when no reply came */
    char code[64];     /* S3 error code (<Code>), "" when none */
    char etag[128];    /* ETag of the object (PUT, GET, HEAD), quotes included */
    long long size;    /* Content-Length of HEAD / GET, -1 unknown */
} srv_s3_res;

/* One object of a listing. */
typedef struct srv_s3_obj {
    char key[1024];
    char etag[128];
    long long size;
} srv_s3_obj;

/* One page of ListObjectsV2 (caller frees objs with free()). */
typedef struct srv_s3_page {
    srv_s3_obj *objs;
    int n;
    int truncated;
    char next_token[1024]; /* NextContinuationToken when truncated */
} srv_s3_page;

/* curl_global_init (once per process, before threads). 0 or DYN_EIO. */
int srv_s3_global_init(dyn_err *err);

/* Uploads file `path` as `key`, streamed with its Content-Length. 0 or DYN_EIO. */
int srv_s3_put_file(const srv_s3 *s, const char *key, const char *path, srv_s3_res *res,
                    dyn_err *err);

/* Uploads n bytes of data as `key` (content_type may be NULL). if_match: send If-Match with
 * that ETag (a conditional replace), or "*" → If-None-Match: * (create only); NULL: neither.
 * A server that does not support conditional writes ignores them. 0 or DYN_EIO (412 when the
 * condition failed: res->status). */
int srv_s3_put_mem(const srv_s3 *s, const char *key, const void *data, size_t n,
                   const char *content_type, const char *if_match, srv_s3_res *res, dyn_err *err);

/* Downloads `key` into `path` atomically: a temporary file next to it, fsync, rename, fsync of
 * the directory; on any failure path is untouched and no temporary file is left. 0 or DYN_EIO. */
int srv_s3_get_file(const srv_s3 *s, const char *key, const char *path, srv_s3_res *res,
                    dyn_err *err);

/* Downloads `key` into memory (at most max bytes; more is an error). On 0, *out (NUL-terminated,
 * caller frees) and *n; else DYN_EIO and *out NULL. */
int srv_s3_get_mem(const srv_s3 *s, const char *key, size_t max, char **out, size_t *n,
                   srv_s3_res *res, dyn_err *err);

/* HEAD `key` (res gets status, ETag and size). 0 or DYN_EIO (404: no such key). */
int srv_s3_head(const srv_s3 *s, const char *key, srv_s3_res *res, dyn_err *err);

/* DELETE `key` (S3 answers 204 for a missing key too). 0 or DYN_EIO. */
int srv_s3_delete(const srv_s3 *s, const char *key, srv_s3_res *res, dyn_err *err);

/* One page of ListObjectsV2 under `prefix`, from continuation token `token` (NULL or "" for
 * the first page). On 0, page filled (free page->objs); else DYN_EIO. */
int srv_s3_list(const srv_s3 *s, const char *prefix, const char *token, srv_s3_page *page,
                srv_s3_res *res, dyn_err *err);

/* ---- pure helpers (tested in tests/unit/test_srv_s3.c) ---- */

/* The request URL of key (may be NULL: the bucket) with query (may be NULL) into buf: path
 * style, every key byte outside A-Z a-z 0-9 - _ . ~ / percent-encoded. 0, or -1 when it does
 * not fit. */
int srv_s3_url(const srv_s3 *s, const char *key, const char *query, char *buf, size_t n);

/* Percent-encodes src (RFC 3986 unreserved kept; '/' kept when keep_slash) into buf. 0 or -1
 * (does not fit). */
int srv_s3_encode(const char *src, int keep_slash, char *buf, size_t n);

/* The text of the first <tag>...</tag> at or after xml, XML entities decoded, into out. Returns
 * a pointer past the closing tag, or NULL (no such element, or it does not fit: out = ""). */
const char *srv_s3_xml_text(const char *xml, const char *tag, char *out, size_t n);

/* Parses a ListObjectsV2 reply body into page (free page->objs). 0 or DYN_EIO (malformed). */
int srv_s3_parse_list(const char *xml, srv_s3_page *page, dyn_err *err);

/* The error message of a reply: "HTTP <status> <Code>: <Message>" from an S3 XML error body
 * (body may be NULL or not XML: then "HTTP <status>"), into buf; res->code gets the Code. */
void srv_s3_error_text(long status, const char *body, srv_s3_res *res, char *buf, size_t n);

#endif
