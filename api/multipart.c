/* multipart.c — see multipart.h. Parts are delimited by "\r\n--<boundary>"; each part has
 * headers up to "\r\n\r\n". Only the Content-Disposition name / filename are read. */
#include "api/multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *memfind(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0 || hn < nn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++) {
        const char *p = memchr(h + i, n[0], hn - nn - i + 1);
        if (!p) return NULL;
        if (!memcmp(p, n, nn)) return p;
        i = (size_t)(p - h);
    }
    return NULL;
}

/* Value of parameter `key` ("name", "filename") in a Content-Disposition header line. */
static int disp_param(const char *hdr, size_t hn, const char *key, char *out, size_t on) {
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 2 < hn; i++) {
        if ((i == 0 || hdr[i - 1] == ' ' || hdr[i - 1] == ';') && !strncasecmp(hdr + i, key, kl) &&
            hdr[i + kl] == '=') {
            const char *v = hdr + i + kl + 1;
            size_t rem = hn - (i + kl + 1), k = 0;
            int q = rem && *v == '"';
            if (q) v++, rem--;
            while (k < rem && (q ? v[k] != '"' : v[k] != ';' && v[k] != '\r') && k + 1 < on) {
                out[k] = v[k];
                k++;
            }
            out[k] = 0;
            return 1;
        }
    }
    return 0;
}

int api_multipart_file(const char *content_type, const char *body, size_t len,
                       const char **data, size_t *dlen, char *err, size_t errn) {
    const char *b = content_type ? strcasestr(content_type, "boundary=") : NULL;
    if (!b) return snprintf(err, errn, "multipart body without a boundary parameter"), -1;
    b += 9;
    char delim[80] = "\r\n--";
    size_t k = 4;
    int q = *b == '"';
    if (q) b++;
    while (*b && (q ? *b != '"' : *b != ';' && *b != ' ') && k + 1 < sizeof delim) delim[k++] = *b++;
    delim[k] = 0;
    if (k == 4 || k > 74) return snprintf(err, errn, "bad multipart boundary"), -1;
    /* The first delimiter may start the body without the leading CRLF. */
    const char *p = NULL;
    if (len >= k - 2 && !memcmp(body, delim + 2, k - 2)) p = body + k - 2;
    else if ((p = memfind(body, len, delim, k))) p += k;
    const char *end = body + len;
    const char *best = NULL, *first = NULL, *named = NULL;
    size_t best_n = 0, first_n = 0, named_n = 0;
    while (p && p + 2 <= end && memcmp(p, "--", 2)) {
        if (p + 2 > end || memcmp(p, "\r\n", 2)) break;
        p += 2;
        const char *hend = memfind(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) break;
        const char *content = hend + 4;
        const char *next = memfind(content, (size_t)(end - content), delim, k);
        if (!next) break;
        size_t cn = (size_t)(next - content);
        char name[64] = "", fname[256] = "";
        const char *disp = strcasestr(p, "content-disposition:");
        size_t hn = (size_t)(hend - p);
        if (disp && disp < hend) {
            disp_param(disp, (size_t)(hend - disp), "name", name, sizeof name);
            disp_param(disp, (size_t)(hend - disp), "filename", fname, sizeof fname);
        }
        (void)hn;
        if (!first) first = content, first_n = cn;
        if (!best && fname[0]) best = content, best_n = cn;
        if (!named && (!strcmp(name, "image") || !strcmp(name, "file"))) named = content, named_n = cn;
        p = next + k;
    }
    if (named) *data = named, *dlen = named_n;
    else if (best) *data = best, *dlen = best_n;
    else if (first) *data = first, *dlen = first_n;
    else return snprintf(err, errn, "multipart body holds no complete part"), -1;
    return 0;
}
