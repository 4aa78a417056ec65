/* multipart.h — the file part of a multipart/form-data body (RFC 7578), found in place. */
#ifndef API_MULTIPART_H
#define API_MULTIPART_H

#include <stddef.h>

/* Finds the uploaded file in body[0..len) given the request's Content-Type (with its boundary
 * parameter): the part named "image" or "file", else the first part with a filename, else the
 * first part. body must be NUL-terminated at body[len] (request bodies are). On success *data
 * points into body (borrowed) and *dlen is its length; returns 0. A part named "image" or
 * "file" given twice: -2 with a message naming the field in err. Otherwise -1 with a message in
 * err. Linear in len: one forward scan, whatever the number of parts. */
int api_multipart_file(const char *content_type, const char *body, size_t len,
                       const char **data, size_t *dlen, char *err, size_t errn);

/* Bytes of the body the calling thread's last api_multipart_file searched (the span of every
 * search, added up): the unit tests assert it stays within a small multiple of the body. */
size_t api_multipart_scanned(void);

#endif
