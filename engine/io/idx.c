/* idx.c — IDX loader and data-set helpers. See idx.h. */
#include "idx.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
/* How many trailing bytes are counted before giving up (a gzip bomb must not keep us busy). */
#define IDX_TRAILING_COUNT_MAX ((uint64_t)64 << 20)

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *kind_of(uint32_t magic) {
    switch (magic) {
    case IDX_MAGIC_IMAGES: return "an IDX image file";
    case IDX_MAGIC_LABELS: return "an IDX label file";
    default: return (magic >> 8) == 0x08 ? "an IDX byte file of another rank" : "not an IDX file";
    }
}

/* Reads up to n bytes; returns the count (< n only at end of file) or -1 on a zlib error.
 * A damaged or cut gzip stream may hand out the bytes it could decode and flag the error
 * ("unexpected end of file") beside them, so the error state is checked after every read. */
static int64_t gz_read_full(gzFile g, uint8_t *p, uint64_t n) {
    uint64_t got = 0;
    while (got < n) {
        uint64_t want = n - got;
        if (want > ((uint64_t)1 << 30)) want = (uint64_t)1 << 30;
        int r = gzread(g, p + got, (unsigned)want), zerr = Z_OK;
        gzerror(g, &zerr);
        if (r < 0 || zerr != Z_OK) return -1;
        if (r == 0) break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

static int gz_fail(gzFile g, const char *path, dyn_err *err) {
    int zerr = 0;
    const char *m = gzerror(g, &zerr);
    if (zerr == Z_ERRNO)
        return dyn_err_set(err, DYN_EIO, "%s: read failed: %s", path, strerror(errno));
    if (zerr == Z_MEM_ERROR) return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", path);
    /* zlib's message repeats the path: "<path>: unexpected end of file". */
    size_t pl = strlen(path);
    if (strncmp(m, path, pl) == 0 && strncmp(m + pl, ": ", 2) == 0) m += pl + 2;
    return dyn_err_set(err, DYN_EFORMAT, "%s: damaged or truncated gzip data (%s)", path, m);
}

/* Reads an IDX file whose magic must be `magic` (rank ndim <= 3) into dims and *data (malloc'ed,
 * prod(dims) bytes). */
static int idx_read(const char *path, uint32_t magic, int ndim, uint32_t *dims, uint8_t **data,
                    dyn_err *err) {
    *data = NULL;
    errno = 0;
    gzFile g = gzopen(path, "rb");
    if (!g)
        return dyn_err_set(err, errno ? DYN_EIO : DYN_ENOMEM, "%s: cannot open: %s", path,
                           errno ? strerror(errno) : "out of memory");
    uint8_t hdr[16];
    uint64_t hlen = 4 + 4 * (uint64_t)ndim;
    int64_t r = gz_read_full(g, hdr, 4);
    int rc = 0;
    uint8_t *buf = NULL;
    if (r < 0) {
        rc = gz_fail(g, path, err);
        goto done;
    }
    if (r < 4) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: file is %lld bytes, too short for an IDX header",
                         path, (long long)r);
        goto done;
    }
    uint32_t got_magic = be32(hdr);
    if (got_magic != magic) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: magic number 0x%08x (%s) where 0x%08x (%s) was expected", path,
                         got_magic, kind_of(got_magic), magic, kind_of(magic));
        goto done;
    }
    r = gz_read_full(g, hdr + 4, hlen - 4);
    if (r < 0) {
        rc = gz_fail(g, path, err);
        goto done;
    }
    if ((uint64_t)r < hlen - 4) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: truncated header: %llu bytes where the header takes %llu", path,
                         (unsigned long long)(4 + (uint64_t)r), (unsigned long long)hlen);
        goto done;
    }
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        uint32_t hi = i == 0 ? (uint32_t)INT32_MAX : DYN_IDX_MAX_DIM;
        if (dims[i] < 1 || dims[i] > hi) {
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: dimension %d is %u, outside 1..%u", path, i,
                             dims[i], hi);
            goto done;
        }
        int64_t t; /* 2^31 * 2^16 * 2^16 at most for 3 dims, but checked whatever the rank */
        if (!dyn_mul_ok((int64_t)total, dims[i], &t)) {
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: header describes more than 2^63 bytes", path);
            goto done;
        }
        total = (uint64_t)t;
    }
    if (total > DYN_IDX_MAX_BYTES) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: header describes %llu bytes of data (limit %llu)",
                         path, (unsigned long long)total, (unsigned long long)DYN_IDX_MAX_BYTES);
        goto done;
    }

    /* Grow with the data actually present, so a lying header costs nothing. */
    uint64_t cap = total < ((uint64_t)1 << 20) ? total : ((uint64_t)1 << 20), got = 0;
    buf = malloc((size_t)cap);
    if (!buf) {
        rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    while (got < total) {
        if (got == cap) {
            uint64_t ncap = cap * 2 < total ? cap * 2 : total;
            uint8_t *nb = realloc(buf, (size_t)ncap);
            if (!nb) {
                rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory for %llu bytes", path,
                                 (unsigned long long)ncap);
                goto done;
            }
            buf = nb;
            cap = ncap;
        }
        r = gz_read_full(g, buf + got, cap - got);
        if (r < 0) {
            rc = gz_fail(g, path, err);
            goto done;
        }
        got += (uint64_t)r;
        if (got < cap) break; /* end of file */
    }
    if (got < total) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: truncated: the header describes %llu data bytes but only %llu are "
                         "present (the %s should be %llu bytes, it is %llu)",
                         path, (unsigned long long)total, (unsigned long long)got,
                         gzdirect(g) ? "file" : "decompressed file",
                         (unsigned long long)(hlen + total), (unsigned long long)(hlen + got));
        goto done;
    }
    uint8_t tail[4096];
    uint64_t extra = 0;
    while (extra < IDX_TRAILING_COUNT_MAX) {
        r = gz_read_full(g, tail, sizeof tail);
        if (r < 0) {
            rc = gz_fail(g, path, err);
            goto done;
        }
        if (r == 0) break;
        extra += (uint64_t)r;
    }
    if (extra) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: %s%llu trailing bytes after the %llu data bytes the header "
                         "describes (the %s should be %llu bytes)",
                         path, extra >= IDX_TRAILING_COUNT_MAX ? "at least " : "",
                         (unsigned long long)extra, (unsigned long long)total,
                         gzdirect(g) ? "file" : "decompressed file",
                         (unsigned long long)(hlen + total));
        goto done;
    }
    *data = buf;
    buf = NULL;
done:
    free(buf);
    gzclose_r(g);
    return rc;
}

int dyn_idx_load(const char *images_path, const char *labels_path, dyn_dataset *out,
                 dyn_err *err) {
    memset(out, 0, sizeof *out);
    uint32_t idims[3], ldims[1];
    uint8_t *px = NULL, *lb = NULL;
    int rc = idx_read(images_path, IDX_MAGIC_IMAGES, 3, idims, &px, err);
    if (rc) return rc;
    rc = idx_read(labels_path, IDX_MAGIC_LABELS, 1, ldims, &lb, err);
    if (rc) {
        free(px);
        return rc;
    }
    if (idims[0] != ldims[0]) {
        free(px);
        free(lb);
        return dyn_err_set(err, DYN_EFORMAT, "%s has %u images but %s has %u labels",
                           images_path, idims[0], labels_path, ldims[0]);
    }
    int maxl = 0;
    for (uint32_t i = 0; i < ldims[0]; i++) maxl = DYN_MAX(maxl, lb[i]);
    out->n = (int)idims[0];
    out->c = 1;
    out->h = (int)idims[1];
    out->w = (int)idims[2];
    out->pixels = px;
    out->labels = lb;
    out->nclasses = maxl + 1;
    return 0;
}

void dyn_dataset_free(dyn_dataset *d) {
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

static size_t sample_bytes(const dyn_dataset *d) {
    return (size_t)d->c * (size_t)d->h * (size_t)d->w;
}

/* Allocates *out with src's geometry for k samples. */
static int alloc_like(const dyn_dataset *src, int k, dyn_dataset *out, dyn_err *err) {
    memset(out, 0, sizeof *out);
    size_t per = sample_bytes(src);
    out->pixels = malloc(k ? (size_t)k * per : 1);
    out->labels = malloc(k ? (size_t)k : 1);
    if (!out->pixels || !out->labels) {
        dyn_dataset_free(out);
        return dyn_err_set(err, DYN_ENOMEM, "out of memory for a data set of %d samples", k);
    }
    out->n = k;
    out->c = src->c;
    out->h = src->h;
    out->w = src->w;
    out->nclasses = src->nclasses;
    return 0;
}

int dyn_dataset_subset(const dyn_dataset *src, const int *idx, int k, dyn_dataset *out,
                       dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (k < 0 || (!idx && k > src->n))
        return dyn_err_set(err, DYN_EINVAL, "subset of %d samples from a data set of %d", k,
                           src->n);
    for (int i = 0; idx && i < k; i++)
        if (idx[i] < 0 || idx[i] >= src->n)
            return dyn_err_set(err, DYN_EINVAL, "subset index %d is %d, outside 0..%d", i, idx[i],
                               src->n - 1);
    int rc = alloc_like(src, k, out, err);
    if (rc) return rc;
    size_t per = sample_bytes(src);
    for (int i = 0; i < k; i++) {
        int s = idx ? idx[i] : i;
        memcpy(out->pixels + (size_t)i * per, src->pixels + (size_t)s * per, per);
        out->labels[i] = src->labels[s];
    }
    return 0;
}

int dyn_dataset_batch(const dyn_dataset *d, const int *idx, int b, float mean, float std,
                      float *x, int *y, dyn_err *err) {
    if (!(std > 0) || !isfinite(std) || !isfinite(mean))
        return dyn_err_set(err, DYN_EINVAL, "normalization needs a finite mean and std > 0 "
                           "(got mean %g, std %g)", (double)mean, (double)std);
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean) / std;
    size_t per = sample_bytes(d);
    for (int i = 0; i < b; i++) {
        int s = idx[i];
        if (s < 0 || s >= d->n)
            return dyn_err_set(err, DYN_EINVAL, "batch index %d is %d, outside 0..%d", i, s,
                               d->n - 1);
        const uint8_t *p = d->pixels + (size_t)s * per;
        float *o = x + (size_t)i * per;
        for (size_t j = 0; j < per; j++) o[j] = lut[p[j]];
        if (y) y[i] = d->labels[s];
    }
    return 0;
}

int dyn_dataset_split(const dyn_dataset *src, int nval, uint64_t seed, dyn_dataset *train,
                      dyn_dataset *val, dyn_err *err) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (nval < 0 || nval > src->n)
        return dyn_err_set(err, DYN_EINVAL, "validation size %d is outside 0..%d", nval, src->n);
    int n = src->n;
    int *perm = malloc((size_t)(n ? n : 1) * sizeof *perm);
    unsigned char *in_val = calloc((size_t)(n ? n : 1), 1);
    int *ti = malloc((size_t)(n ? n : 1) * sizeof *ti);
    int rc = 0;
    if (!perm || !in_val || !ti) {
        rc = dyn_err_set(err, DYN_ENOMEM, "out of memory splitting %d samples", n);
        goto done;
    }
    /* Partial Fisher-Yates: the first nval entries of perm are a uniform random choice. */
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = 0; i < nval; i++) {
        int j = i + (int)dyn_rng_below(&r, (uint32_t)(n - i));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        in_val[perm[i]] = 1;
    }
    int nt = 0, nv = 0;
    for (int i = 0; i < n; i++) {
        if (in_val[i])
            perm[nv++] = i; /* perm[0..nval) is no longer needed: reuse it, in order */
        else
            ti[nt++] = i;
    }
    if ((rc = dyn_dataset_subset(src, ti, nt, train, err)) ||
        (rc = dyn_dataset_subset(src, perm, nv, val, err)))
        dyn_dataset_free(train);
done:
    free(perm);
    free(in_val);
    free(ti);
    return rc;
}
