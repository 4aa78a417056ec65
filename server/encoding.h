/* encoding.h — HTTP content codings: compressed request bodies (Content-Encoding: gzip or
 * deflate) and compressed replies (Accept-Encoding: gzip or deflate).
 *
 * Requests: a buffered body with Content-Encoding gzip (or x-gzip) or deflate is inflated
 * before the handler runs, so handlers always see the decoded bytes in r->body. The decoded
 * size counts against max_body_bytes: inflating stops at the limit (413 body_too_large), so a
 * small "bomb" never costs more than max_body_bytes of memory. "deflate" is the zlib format
 * (RFC 9110); a raw deflate stream, which some clients send under that name, is accepted too.
 * Concatenated gzip members are decoded in order. Absent or "identity": nothing to do. Any other
 * coding, several codings, or a coded body on a route that streams it to a file: 415
 * unsupported_encoding. A body that does not inflate: 400 bad_encoding.
 *
 * Replies: when the request's Accept-Encoding accepts gzip or deflate (q > 0; a coding not
 * named takes the q of "*") and the reply is larger than SRV_COMPRESS_MIN_BYTES, it is
 * compressed with the accepted coding of the higher q (gzip on a tie; "deflate" is the zlib
 * format, RFC 9110 8.4.1.2) when that makes it smaller, and sent with that Content-Encoding and
 * Vary: Accept-Encoding. "identity" alone, or q=0 for both: sent as it is.
 */
#ifndef SRV_ENCODING_H
#define SRV_ENCODING_H

#include <stddef.h>

#include "server/http.h"

/* Replies smaller than or equal to this are sent as they are. */
#define SRV_COMPRESS_MIN_BYTES 1024

typedef enum {
    SRV_ENC_IDENTITY = 0,
    SRV_ENC_GZIP,
    SRV_ENC_DEFLATE,
    SRV_ENC_UNSUPPORTED = -1,
} srv_encoding;

/* The coding named by a Content-Encoding header value (NULL = absent = identity);
 * case-insensitive, "identity" entries skipped; SRV_ENC_UNSUPPORTED for an unknown coding or
 * more than one non-identity coding. */
srv_encoding srv_encoding_parse(const char *header);

/* The coding to compress a reply with for an Accept-Encoding header value: SRV_ENC_GZIP or
 * SRV_ENC_DEFLATE (the accepted one of the higher q, gzip on a tie), or SRV_ENC_IDENTITY when
 * neither is accepted (also for NULL). A malformed q counts as the coding not named. */
srv_encoding srv_encoding_accepted(const char *header);

/* Inflates in[0..n) (enc: SRV_ENC_GZIP or SRV_ENC_DEFLATE) into a new malloc'd buffer *out
 * (NUL-terminated; *out_len bytes without the NUL; the caller frees it). Stops as soon as more
 * than `limit` bytes would come out. Returns 0; -1 on data that is not a complete stream of
 * that coding (or trailing bytes after it); -2 over the limit; -3 out of memory. *out is NULL
 * on every error. */
int srv_inflate(srv_encoding enc, const char *in, size_t n, size_t limit, char **out,
                size_t *out_len);

/* Compresses in[0..n) with enc (SRV_ENC_GZIP: the gzip format; SRV_ENC_DEFLATE: the zlib
 * format) into a new malloc'd buffer *out (the caller frees it). 0, or -1 (out of memory, or
 * another enc; *out NULL). */
int srv_compress(srv_encoding enc, const char *in, size_t n, char **out, size_t *out_len);

/* At headers-in (before the body): checks the request's Content-Encoding. `streamed`: the route
 * streams this body to a file (no decoding there). 0 when the body can be taken; otherwise
 * replies 415 unsupported_encoding and returns -1. */
int srv_encoding_check(srv_req *r, int streamed);

/* Once a buffered body is complete: replaces r->body by its decoded bytes when it has a
 * Content-Encoding (the coded buffer is freed). 0, or replies (413 body_too_large, 400
 * bad_encoding, 500 out_of_memory) and returns -1. */
int srv_encoding_decode(srv_req *r);

/* Before the reply is queued: compresses r->reply in place when the client accepts gzip or
 * deflate (srv_encoding_accepted) and it is larger than SRV_COMPRESS_MIN_BYTES. Returns the
 * Content-Encoding to send ("gzip" or "deflate", static) or NULL when the reply stays as it is
 * (also when compression would not make it smaller or memory ran out). */
const char *srv_encoding_reply(srv_req *r);

#endif
