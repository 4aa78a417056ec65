/* multipart.c — see multipart.h. Parts are delimited by "\r\n--<boundary>"; each part has
 * headers up to "\r\n\r\n". Only the Content-Disposition name / filename are read.
 *
 * One forward scan: every search starts where the previous one ended and stops at its match
 * (a part's header lines are read only up to the end of its headers), so the work is linear in
 * the body whatever the number of parts. g_scanned adds up the spans searched (for the unit
 * tests, api_multipart_scanned). */
#include "api/multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static _Thread_local size_t g_scanned;

size_t api_multipart_scanned(void) { return g_scanned; }

/* First n[0..nn) in h[0..hn), NULL when none; counts the span searched. */
static const char *memfind(const char *h, size_t hn, const char *n, size_t nn) {
    const char *p = nn && hn >= nn ? memmem(h, hn, n, nn) : NULL;
    g_scanned += p ? (size_t)(p - h) + nn : hn;
    return p;
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

/* The Content-Disposition line among the header lines h[0..hn) (each ends with "\r\n" but the
 * last); NULL when there is none. *ln is its length. */
static const char *find_disposition(const char *h, size_t hn, size_t *ln) {
    static const char key[] = "content-disposition:";
    const size_t kl = sizeof key - 1;
    while (hn) {
        const char *eol = memfind(h, hn, "\r\n", 2);
        size_t n = eol ? (size_t)(eol - h) : hn;
        if (n >= kl && !strncasecmp(h, key, kl)) {
            *ln = n;
            return h;
        }
        if (!eol) break;
        hn -= n + 2;
        h = eol + 2;
    }
    return NULL;
}

int api_multipart_file(const char *content_type, const char *body, size_t len,
                       const char **data, size_t *dlen, char *err, size_t errn) {
    g_scanned = 0;
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
    char named_as[8] = "";
    while (p && p + 2 <= end && memcmp(p, "--", 2)) {
        if (memcmp(p, "\r\n", 2)) break;
        p += 2;
        /* From the CRLF that ends the delimiter line: a part without headers (RFC 2046) has
         * its blank line right there. */
        const char *hend = memfind(p - 2, (size_t)(end - p) + 2, "\r\n\r\n", 4);
        if (!hend) break;
        const size_t hn = hend > p ? (size_t)(hend - p) : 0;
        const char *content = hend + 4;
        const char *next = memfind(content, (size_t)(end - content), delim, k);
        if (!next) break;
        size_t cn = (size_t)(next - content);
        char name[64] = "", fname[256] = "";
        size_t dn = 0;
        const char *disp = find_disposition(p, hn, &dn);
        if (disp) {
            disp_param(disp, dn, "name", name, sizeof name);
            disp_param(disp, dn, "filename", fname, sizeof fname);
        }
        if (!first) first = content, first_n = cn;
        if (!best && fname[0]) best = content, best_n = cn;
        if (!strcmp(name, "image") || !strcmp(name, "file")) {
            if (!strcmp(name, named_as))
                return snprintf(err, errn, "the field '%s' is given more than once", name), -2;
            if (!named) named = content, named_n = cn, snprintf(named_as, sizeof named_as, "%s", name);
        }
        p = next + k;
    }
    if (named) *data = named, *dlen = named_n;
    else if (best) *data = best, *dlen = best_n;
    else if (first) *data = first, *dlen = first_n;
    else return snprintf(err, errn, "multipart body holds no complete part"), -1;
    return 0;
}
