/* safetensors.c — safetensors reader (validating) and atomic writer. See safetensors.h.
 *
 * Reading order matters for safety: the 8-byte length is checked against the file size before
 * the header is touched; the header is parsed by jansson from a bounded buffer (duplicate keys
 * rejected, depth-limited); every tensor entry is validated on its own (dtype, shape, product
 * without overflow, offsets inside the buffer, byte count = numel * element size); then the
 * entries are sorted by offset and must tile the data buffer exactly. Only after all of that is
 * a `bytes` pointer computed, so every later read is in bounds by construction.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"
#include "io_impl.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_BIG_ENDIAN 1
#else
#define ST_BIG_ENDIAN 0
#endif

static const char *const g_dtype_names[DYN_ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "I8",
                                                                "I16"};
static const uint64_t g_dtype_size[DYN_ST_DTYPE_COUNT] = {4, 2, 2, 1, 2};

const char *dyn_st_dtype_name(dyn_st_dtype d) {
    return (unsigned)d < DYN_ST_DTYPE_COUNT ? g_dtype_names[d] : "?";
}

const char *dyn__printable(const char *s, char *buf, size_t n) {
    DYN_ASSERT(n >= 8);
    size_t i = 0, len = strlen(s);
    size_t keep = len < n ? len : n - 4;
    for (; i < keep; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (keep < len) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

/* ---- reading ---- */

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void shape_text(const dyn_st_tensor *t, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

void dyn_st_free(dyn_st_file *f) {
    if (!f) return;
    if (f->tensors)
        for (int i = 0; i < f->ntensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    json_decref(f->metadata);
    dyn_free(f->buf);
    free(f->name);
    free(f);
}

static int cmp_offset(const void *a, const void *b) {
    const dyn_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx) {
    const dyn_st_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Validates one header entry `key` -> `v` into *t (name not yet set). `what` is the file name. */
static int parse_entry(const char *what, const char *key, json_t *v, uint64_t bufsize,
                       dyn_st_tensor *t, dyn_err *err) {
    char qn[80], tmp[80];
    dyn__printable(key, qn, sizeof qn);
    if (!json_is_object(v))
        return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': header entry is not a JSON object",
                           what, qn);

    json_t *dt = json_object_get(v, "dtype");
    if (!dt) return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': no \"dtype\"", what, qn);
    if (!json_is_string(dt))
        return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': \"dtype\" is not a string", what,
                           qn);
    const char *ds = json_string_value(dt);
    int found = 0;
    for (int d = 0; d < DYN_ST_DTYPE_COUNT; d++)
        if (strcmp(ds, g_dtype_names[d]) == 0) {
            t->dtype = (dyn_st_dtype)d;
            found = 1;
        }
    if (!found)
        return dyn_err_set(err, DYN_EUNSUP,
                           "%s: tensor '%s' has dtype %s; only F32, F16, BF16, I8 and I16 are "
                           "supported",
                           what, qn, dyn__printable(ds, tmp, 24));

    json_t *sh = json_object_get(v, "shape");
    if (!sh) return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': no \"shape\"", what, qn);
    if (!json_is_array(sh))
        return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': \"shape\" is not an array", what,
                           qn);
    size_t nd = json_array_size(sh);
    if (nd > DYN_ST_MAX_DIMS)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: tensor '%s': shape has %zu dimensions (at most %d supported)",
                           what, qn, nd, DYN_ST_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: tensor '%s': shape entry %zu is not a non-negative integer",
                               what, qn, i);
        int64_t di = (int64_t)json_integer_value(d);
        t->shape[i] = di;
        if (!dyn_mul_ok(numel, di, &numel))
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: tensor '%s': the shape's element count overflows", what, qn);
    }
    t->numel = numel;

    json_t *off = json_object_get(v, "data_offsets");
    if (!off)
        return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': no \"data_offsets\"", what, qn);
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)) ||
        json_integer_value(json_array_get(off, 0)) < 0 ||
        json_integer_value(json_array_get(off, 1)) < 0)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: tensor '%s': \"data_offsets\" is not [begin, end] with "
                           "non-negative integers", what, qn);
    t->begin = (uint64_t)json_integer_value(json_array_get(off, 0));
    t->end = (uint64_t)json_integer_value(json_array_get(off, 1));
    if (t->begin > t->end)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                           what, qn, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > bufsize)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] go past the end of the "
                           "data buffer (%llu bytes; the file is truncated or damaged)",
                           what, qn, (unsigned long long)t->begin, (unsigned long long)t->end,
                           (unsigned long long)bufsize);
    uint64_t want;
    shape_text(t, tmp, sizeof tmp);
    if (__builtin_mul_overflow((uint64_t)numel, g_dtype_size[t->dtype], &want))
        return dyn_err_set(err, DYN_EFORMAT, "%s: tensor '%s': shape %s of %s is too large",
                           what, qn, tmp, g_dtype_names[t->dtype]);
    if (want != t->end - t->begin)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: tensor '%s': shape %s of %s needs %llu bytes but data_offsets "
                           "[%llu, %llu] hold %llu",
                           what, qn, tmp, g_dtype_names[t->dtype], (unsigned long long)want,
                           (unsigned long long)t->begin, (unsigned long long)t->end,
                           (unsigned long long)(t->end - t->begin));
    return 0;
}

static int parse_metadata(const char *what, json_t *meta, dyn_err *err) {
    if (!json_is_object(meta))
        return dyn_err_set(err, DYN_EFORMAT, "%s: \"__metadata__\" is not a JSON object", what);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v)) {
            char qk[80];
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: \"__metadata__\" value for key '%s' is not a string", what,
                               dyn__printable(k, qk, sizeof qk));
        }
    }
    return 0;
}

/* Takes ownership of buf (allocated with dyn_alloc) in every case. */
static int parse_owned(uint8_t *buf, size_t size, const char *what, dyn_st_file **out,
                       dyn_err *err) {
    *out = NULL;
    json_t *hdr = NULL;
    int rc = 0;
    dyn_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        dyn_free(buf);
        return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", what);
    }
    f->buf = buf;
    f->size = size;
    f->name = strdup(what);
    if (!f->name) {
        rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", what);
        goto fail;
    }

    if (size < 8) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: file is %zu bytes, too short for a safetensors file (the header "
                         "length alone takes 8)", what, size);
        goto fail;
    }
    uint64_t hlen = le64(buf);
    if (hlen > size - 8) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: header length %llu is larger than the %zu bytes that follow it "
                         "(truncated or not a safetensors file)",
                         what, (unsigned long long)hlen, size - 8);
        goto fail;
    }
    if (hlen > DYN_ST_MAX_HEADER) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit",
                         what, (unsigned long long)hlen, (unsigned long long)DYN_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen < 2 || buf[8] != '{') {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: header does not start with '{' (not a safetensors file?)", what);
        goto fail;
    }
    json_error_t je;
    hdr = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!hdr) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: header is not valid JSON: %s (at header byte %d)",
                         what, je.text, je.position);
        goto fail;
    }
    if (!json_is_object(hdr)) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: header is not a JSON object", what);
        goto fail;
    }
    uint64_t bufsize = size - 8 - hlen;

    json_t *meta = json_object_get(hdr, "__metadata__");
    if (meta && json_is_null(meta)) meta = NULL;
    if (meta && (rc = parse_metadata(what, meta, err))) goto fail;
    f->metadata = meta ? json_incref(meta) : json_object();
    if (!f->metadata) {
        rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", what);
        goto fail;
    }

    size_t n = json_object_size(hdr) - (json_object_get(hdr, "__metadata__") ? 1 : 0);
    if (n > (size_t)INT32_MAX) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: too many tensors (%zu)", what, n);
        goto fail;
    }
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory for %zu tensors", what, n);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(hdr, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        dyn_st_tensor *t = &f->tensors[f->ntensors];
        if ((rc = parse_entry(what, key, val, bufsize, t, err))) goto fail;
        t->name = strdup(key);
        if (!t->name) {
            rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        f->ntensors++;
    }
    json_decref(hdr);
    hdr = NULL;

    /* The tensors must tile [0, bufsize) exactly: no overlap, no gap, nothing after. */
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, cmp_offset);
    uint64_t prev_end = 0;
    for (int i = 0; i < f->ntensors; i++) {
        dyn_st_tensor *t = &f->tensors[i];
        char qa[80], qb[80];
        if (t->begin < prev_end) {
            const dyn_st_tensor *p = &f->tensors[i - 1];
            rc = dyn_err_set(err, DYN_EFORMAT,
                             "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", what,
                             dyn__printable(p->name, qa, sizeof qa), (unsigned long long)p->begin,
                             (unsigned long long)p->end, dyn__printable(t->name, qb, sizeof qb),
                             (unsigned long long)t->begin, (unsigned long long)t->end);
            goto fail;
        }
        if (t->begin > prev_end) {
            rc = dyn_err_set(err, DYN_EFORMAT,
                             "%s: data bytes [%llu, %llu) before tensor '%s' belong to no tensor "
                             "(a gap in the data buffer)",
                             what, (unsigned long long)prev_end, (unsigned long long)t->begin,
                             dyn__printable(t->name, qa, sizeof qa));
            goto fail;
        }
        prev_end = t->end;
        t->bytes = buf + 8 + hlen + t->begin;
    }
    if (prev_end != bufsize) {
        rc = dyn_err_set(err, DYN_EFORMAT,
                         "%s: the data buffer has %llu bytes but the tensors end at byte %llu "
                         "(trailing bytes that belong to no tensor)",
                         what, (unsigned long long)bufsize, (unsigned long long)prev_end);
        goto fail;
    }
    for (int i = 0; i < f->ntensors; i++) f->by_name[i] = i;
    qsort_r(f->by_name, (size_t)f->ntensors, sizeof *f->by_name, cmp_name_idx, f->tensors);
    *out = f;
    return 0;

fail:
    json_decref(hdr);
    dyn_st_free(f);
    return rc;
}

int dyn_st_parse(const void *data, size_t size, const char *name, dyn_st_file **out,
                 dyn_err *err) {
    *out = NULL;
    uint8_t *buf = dyn_alloc(size ? size : 1);
    if (!buf) return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory for %zu bytes", name, size);
    if (size) memcpy(buf, data, size);
    return parse_owned(buf, size, name, out, err);
}

int dyn_st_read(const char *path, dyn_st_file **out, dyn_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dyn_err_set(err, DYN_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return dyn_err_set(err, DYN_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return dyn_err_set(err, DYN_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX - DYN_ALIGN) {
        close(fd);
        return dyn_err_set(err, DYN_ENOMEM, "%s: file too large", path);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = dyn_alloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            dyn_free(buf);
            return dyn_err_set(err, DYN_EIO, "%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        dyn_free(buf);
        return dyn_err_set(err, DYN_EIO, "%s: file shrank while being read (%zu of %zu bytes)",
                           path, got, size);
    }
    return parse_owned(buf, size, path, out, err);
}

const dyn_st_tensor *dyn_st_find(const dyn_st_file *f, const char *name) {
    int lo = 0, hi = f->ntensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const dyn_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *dyn_st_meta(const dyn_st_file *f, const char *key) {
    return json_string_value(json_object_get(f->metadata, key)); /* NULL when absent */
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize the mantissa */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int dyn_st_tensor_read_f32(const dyn_st_file *f, const dyn_st_tensor *t, float *dst, int64_t n,
                           dyn_err *err) {
    if (n != t->numel) {
        char qn[80];
        return dyn_err_set(err, DYN_EINVAL, "%s: tensor '%s' has %lld elements, not %lld",
                           f->name, dyn__printable(t->name, qn, sizeof qn),
                           (long long)t->numel, (long long)n);
    }
    const uint8_t *p = t->bytes;
    switch (t->dtype) {
    case DYN_ST_F32:
        if (!ST_BIG_ENDIAN) {
            if (n) memcpy(dst, p, (size_t)n * 4);
        } else {
            for (int64_t i = 0; i < n; i++) {
                uint32_t b = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                             (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
                memcpy(&dst[i], &b, 4);
            }
        }
        break;
    case DYN_ST_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case DYN_ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t b = ((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &b, 4);
        }
        break;
    case DYN_ST_I8:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)(int8_t)p[i];
        break;
    case DYN_ST_I16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = (float)(int16_t)(uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        break;
    default:
        DYN_ASSERT(0);
    }
    return 0;
}

/* ---- writing ---- */

/* The data buffer's layout: tensors by decreasing element size, each group in the caller's
 * order (so each one is aligned to its element size): F32 has rank 0, I16 1, I8 2. */
static int layout_rank(dyn_st_dtype d) { return d == DYN_ST_F32 ? 0 : d == DYN_ST_I16 ? 1 : 2; }

/* Writes n elements of `size` bytes (1, 2 or 4) at x, host order, as little-endian. */
static int write_le(int fd, const void *x, int64_t n, size_t size) {
    const uint8_t *p = x;
    if (!ST_BIG_ENDIAN || size == 1) return n ? dyn_file_write_all(fd, p, (size_t)n * size) : 0;
    uint8_t chunk[4096];
    const int64_t per = (int64_t)(sizeof chunk / size);
    for (int64_t i = 0; i < n; i += per) {
        const int64_t k = DYN_MIN(n - i, per);
        for (int64_t j = 0; j < k; j++)
            for (size_t q = 0; q < size; q++)
                chunk[(size_t)j * size + q] = p[(size_t)(i + j) * size + size - 1 - q];
        if (dyn_file_write_all(fd, chunk, (size_t)k * size)) return -1;
    }
    return 0;
}

/* Builds the header JSON text for the entries; *out is malloc'ed (caller frees). */
static int build_header(const char *path, const dyn_st_entry *e, int n, const json_t *metadata,
                        char **out, dyn_err *err) {
    *out = NULL;
    json_t *h = json_object();
    if (!h) return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", path);
    int rc = 0;
    if (metadata) {
        if (!json_is_object(metadata)) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s: metadata is not a JSON object", path);
            goto done;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)metadata, k, v) {
            if (!json_is_string(v)) {
                rc = dyn_err_set(err, DYN_EINVAL, "%s: metadata value for '%s' is not a string",
                                 path, k);
                goto done;
            }
        }
        if (json_object_size(metadata) &&
            json_object_set_new(h, "__metadata__", json_deep_copy(metadata))) {
            rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++)
        if (e[i].dtype != DYN_ST_F32 && e[i].dtype != DYN_ST_I8 && e[i].dtype != DYN_ST_I16) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s: tensor %d: dtype %s is not written (F32, I8 "
                             "and I16 are)", path, i, dyn_st_dtype_name(e[i].dtype));
            goto done;
        }
    for (int64_t k = 0; k < (int64_t)3 * n; k++) { /* the data layout: F32, then I16, then I8 */
        const int i = (int)(k % n);
        const dyn_st_entry *t = &e[i];
        if (layout_rank(t->dtype) != k / n) continue;
        const int is_f32 = t->dtype == DYN_ST_F32;
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s: tensor %d has an empty or reserved name", path,
                             i);
            goto done;
        }
        if (json_object_get(h, t->name)) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s: two tensors are named '%s'", path, t->name);
            goto done;
        }
        if (t->ndim < 0 || t->ndim > DYN_ST_MAX_DIMS) {
            rc = dyn_err_set(err, DYN_EINVAL, "%s: tensor '%s' has %d dimensions", path, t->name,
                             t->ndim);
            goto done;
        }
        uint64_t numel = 1;
        json_t *shape = json_array();
        json_t *ent = json_object();
        json_t *offs = json_array();
        int bad = !shape || !ent || !offs;
        for (int d = 0; !bad && d < t->ndim; d++) {
            if (t->shape[d] < 0 ||
                __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
                json_decref(shape);
                json_decref(ent);
                json_decref(offs);
                rc = dyn_err_set(err, DYN_EINVAL, "%s: tensor '%s' has a bad shape", path,
                                 t->name);
                goto done;
            }
            bad |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        }
        uint64_t bytes = 0;
        if (!bad && (__builtin_mul_overflow(numel, g_dtype_size[t->dtype], &bytes) ||
                     off + bytes < off || off + bytes > (uint64_t)INT64_MAX ||
                     (bytes && !(is_f32 ? (const void *)t->data : t->ints)))) {
            json_decref(shape);
            json_decref(ent);
            json_decref(offs);
            rc = dyn_err_set(err, DYN_EINVAL, "%s: tensor '%s' is too large or has no data", path,
                             t->name);
            goto done;
        }
        if (!bad) {
            bad |= json_array_append_new(offs, json_integer((json_int_t)off));
            bad |= json_array_append_new(offs, json_integer((json_int_t)(off + bytes)));
            bad |= json_object_set_new(ent, "dtype", json_string(g_dtype_names[t->dtype]));
            bad |= json_object_set_new(ent, "shape", shape);
            shape = NULL;
            bad |= json_object_set_new(ent, "data_offsets", offs);
            offs = NULL;
            bad |= json_object_set_new(h, t->name, ent);
            ent = NULL;
        }
        json_decref(shape);
        json_decref(ent);
        json_decref(offs);
        if (bad) {
            rc = dyn_err_set(err, DYN_EINVAL,
                             "%s: cannot add tensor %d to the header (name not valid UTF-8, or "
                             "out of memory)", path, i);
            goto done;
        }
        off += bytes;
    }
    *out = json_dumps(h, JSON_COMPACT);
    if (!*out) rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory building the header", path);
done:
    json_decref(h);
    return rc;
}

int dyn_st_write(const char *path, const dyn_st_entry *tensors, int n, const json_t *metadata,
                 dyn_err *err) {
    if (n < 0 || (n > 0 && !tensors))
        return dyn_err_set(err, DYN_EINVAL, "%s: bad tensor list", path);
    char *hdr = NULL;
    int rc = build_header(path, tensors, n, metadata, &hdr, err);
    if (rc) return rc;

    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8; /* 8 + padded is a multiple of 8 */
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));

    dyn_file_atomic f;
    rc = dyn_file_atomic_begin(&f, path, 0666, err);
    if (rc) {
        free(hdr);
        return rc;
    }
    static const char spaces[8] = "        ";
    int bad = dyn_file_write_all(f.fd, len8, 8) || dyn_file_write_all(f.fd, hdr, hl) ||
              dyn_file_write_all(f.fd, spaces, padded - hl);
    for (int64_t k = 0; !bad && k < (int64_t)3 * n; k++) { /* build_header's layout */
        const dyn_st_entry *t = &tensors[k % n];
        if (layout_rank(t->dtype) != k / n) continue;
        int64_t numel = 1;
        for (int d = 0; !bad && d < t->ndim; d++)
            bad = !dyn_mul_ok(numel, t->shape[d], &numel); /* checked above */
        if (bad) break;
        bad = write_le(f.fd, t->dtype == DYN_ST_F32 ? (const void *)t->data : t->ints, numel,
                       (size_t)g_dtype_size[t->dtype]);
    }
    int e = errno;
    free(hdr);
    if (bad) {
        rc = dyn_err_set(err, DYN_EIO, "%s: writing %s failed: %s", path, f.tmp, strerror(e));
        dyn_file_atomic_abort(&f);
        return rc;
    }
    return dyn_file_atomic_commit(&f, err);
}
