/* fuzz_multipart.c — api/multipart.c: finding the file part of a multipart/form-data body.
 * Input: the Content-Type header's value, a newline, then the body. */
#include "api/multipart.h"
#include "base.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ctn = nl ? (size_t)(nl - data) : size;
    char *ct = fuzz_cstr(data, ctn);
    size_t blen = nl ? size - ctn - 1 : 0;
    char *body = fuzz_cstr(nl ? nl + 1 : data, blen); /* NUL-terminated, as request bodies are */
    if (ct && body) {
        const char *part = NULL;
        size_t plen = 0;
        char err[256];
        if (api_multipart_file(ct, body, blen, &part, &plen, err, sizeof err) == 0) {
            /* the part lies inside the body */
            DYN_ASSERT(part >= body && plen <= blen && (size_t)(part - body) <= blen - plen);
            fuzz_note("multipart: file part of %zu bytes", plen);
        } else {
            DYN_ASSERT(memchr(err, 0, sizeof err) != NULL);
            fuzz_note("multipart: %s", err);
        }
    }
    free(ct);
    free(body);
    return 0;
}
