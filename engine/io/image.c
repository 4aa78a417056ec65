/* image.c — PNG (libpng) and JPEG (libjpeg-turbo) decoding from memory, conversion, resizing,
 * preprocessing, image-folder data sets. See image.h for the contract.
 *
 * Both libraries report fatal errors through longjmp. Every object that must be freed after a
 * longjmp lives in a struct reached through a pointer that does not change after setjmp, so no
 * local variable is read after the jump without being volatile-safe.
 */
#include "image.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <jpeglib.h>
#include <jerror.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "io_impl.h"

static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

dyn_image_format dyn_image_detect(const void *data, size_t size) {
    const uint8_t *p = data;
    if (size >= 8 && memcmp(p, PNG_MAGIC, 8) == 0) return DYN_IMAGE_PNG;
    if (size >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return DYN_IMAGE_JPEG;
    return DYN_IMAGE_UNKNOWN;
}

void dyn_image_free(dyn_image *im) {
    if (!im) return;
    free(im->data);
    memset(im, 0, sizeof *im);
}

static dyn_image_limits limits_or_default(const dyn_image_limits *lim) {
    dyn_image_limits l = lim ? *lim : (dyn_image_limits){0};
    if (l.max_width <= 0) l.max_width = DYN_IMAGE_DEFAULT_MAX_SIDE;
    if (l.max_height <= 0) l.max_height = DYN_IMAGE_DEFAULT_MAX_SIDE;
    if (l.max_pixels <= 0) l.max_pixels = DYN_IMAGE_DEFAULT_MAX_PIXELS;
    if (l.max_bytes == 0) l.max_bytes = DYN_IMAGE_DEFAULT_MAX_BYTES;
    return l;
}

/* The one place dimensions from a header are judged, before anything is allocated. */
static int check_dims(const char *fmt, uint64_t w, uint64_t h, const dyn_image_limits *l,
                      dyn_err *err) {
    if (w == 0 || h == 0)
        return dyn_err_set(err, DYN_EFORMAT, "%s header claims an empty image (%llux%llu)", fmt,
                           (unsigned long long)w, (unsigned long long)h);
    if (w > (uint64_t)l->max_width || h > (uint64_t)l->max_height)
        return dyn_err_set(err, DYN_ENOMEM,
                           "%s is %llux%llu pixels; the limit is %dx%d (width x height)", fmt,
                           (unsigned long long)w, (unsigned long long)h, l->max_width,
                           l->max_height);
    if (w * h > (uint64_t)l->max_pixels)
        return dyn_err_set(err, DYN_ENOMEM, "%s has %llu pixels; the limit is %lld", fmt,
                           (unsigned long long)(w * h), (long long)l->max_pixels);
    return 0;
}

/* ---------------------------------------------------------------- PNG */

typedef struct png_src {
    const uint8_t *data;
    size_t size, pos;
} png_src;

typedef struct png_ctx {
    png_structp png;
    png_infop info;
    dyn_err *err;
    int err_set;
    uint8_t *pixels;
    png_bytep *rows;
} png_ctx;

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "truncated PNG (the stream ends early)");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    if (!c->err_set) {
        dyn_err_set(c->err, DYN_EFORMAT, "damaged PNG: %s", msg);
        c->err_set = 1;
    }
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* benign (unknown chunks, gamma): ignored */
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int decode_png(const uint8_t *data, size_t size, const dyn_image_limits *l, dyn_image *out,
                      dyn_err *err) {
    /* The first chunk must be IHDR: judge its dimensions from the raw bytes, before libpng reads
     * further (png_read_info reads past IHDR, so a bare bomb header would otherwise be reported
     * as merely truncated). libpng re-validates IHDR (CRC, fields) below. */
    if (size < 24 || memcmp(data + 12, "IHDR", 4) != 0)
        return dyn_err_set(err, DYN_EFORMAT, "damaged PNG: %s",
                           size < 24 ? "truncated PNG (the stream ends early)"
                                     : "the first chunk is not IHDR");
    int rc = check_dims("PNG", be32(data + 16), be32(data + 20), l, err);
    if (rc) return rc;
    png_ctx ctx = {.err = err};
    png_ctx *c = &ctx;
    png_src src = {data, size, 0};
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_on_error, png_on_warning);
    if (!c->png) return dyn_err_set(err, DYN_ENOMEM, "PNG: cannot create a decoder");
    c->info = png_create_info_struct(c->png);
    if (!c->info) {
        png_destroy_read_struct(&c->png, NULL, NULL);
        return dyn_err_set(err, DYN_ENOMEM, "PNG: cannot create a decoder");
    }
    if (setjmp(png_jmpbuf(c->png))) {
        int code = c->err_set ? (err ? err->code : DYN_EFORMAT) : DYN_EFORMAT;
        png_destroy_read_struct(&c->png, &c->info, NULL);
        free(c->rows);
        free(c->pixels);
        return code;
    }
    png_set_read_fn(c->png, &src, png_read_mem);
    /* Dimensions are judged by check_dims below (libpng's own default limit of 1e6 per side
     * stays as an outer fence); ancillary chunks (zTXt / iCCP bombs) are capped here. */
    png_set_chunk_malloc_max(c->png, 8u << 20);
    png_read_info(c->png, c->info);
    png_uint_32 w = png_get_image_width(c->png, c->info);
    png_uint_32 h = png_get_image_height(c->png, c->info);
    if (check_dims("PNG", w, h, l, err)) { /* same IHDR as judged above; kept as a fence */
        c->err_set = 1;
        png_error(c->png, "dimensions over the limits");
    }
    int color = png_get_color_type(c->png, c->info);
    int depth = png_get_bit_depth(c->png, c->info);
    if (depth == 16) png_set_strip_16(c->png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(c->png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(c->png);
    png_set_strip_alpha(c->png);
    png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    int ch = png_get_channels(c->png, c->info);
    if (ch != 1 && ch != 3) png_error(c->png, "unexpected channel count after conversion");
    size_t stride = (size_t)w * (size_t)ch;
    c->pixels = malloc(stride * h);
    c->rows = malloc(sizeof(png_bytep) * h);
    if (!c->pixels || !c->rows) {
        dyn_err_set(err, DYN_ENOMEM, "PNG: out of memory for %ux%u pixels", w, h);
        c->err_set = 1;
        png_error(c->png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pixels + (size_t)y * stride;
    png_read_image(c->png, c->rows);
    png_read_end(c->png, NULL);
    png_destroy_read_struct(&c->png, &c->info, NULL);
    free(c->rows);
    *out = (dyn_image){(int)w, (int)h, ch, c->pixels};
    return 0;
}

typedef struct png_sink {
    uint8_t *buf;
    size_t size, cap;
    int oom;
} png_sink;

static void png_write_mem(png_structp png, png_bytep in, size_t n) {
    png_sink *s = png_get_io_ptr(png);
    if (s->oom) return;
    if (s->size + n > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        while (cap < s->size + n) cap *= 2;
        uint8_t *b = realloc(s->buf, cap);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->size, in, n);
    s->size += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

int dyn_image_encode_png(const dyn_image *im, void **buf, size_t *size, dyn_err *err) {
    *buf = NULL;
    *size = 0;
    if (!im || !im->data || im->w <= 0 || im->h <= 0 || (im->c != 1 && im->c != 3))
        return dyn_err_set(err, DYN_EINVAL, "PNG encode: need an 8-bit grey or RGB image");
    png_ctx ctx = {.err = err};
    png_ctx *c = &ctx;
    png_sink sink = {0};
    png_sink *s = &sink;
    c->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, png_on_error, png_on_warning);
    if (!c->png) return dyn_err_set(err, DYN_ENOMEM, "PNG: cannot create an encoder");
    c->info = png_create_info_struct(c->png);
    if (!c->info || setjmp(png_jmpbuf(c->png))) {
        png_destroy_write_struct(&c->png, &c->info);
        free(s->buf);
        return c->err_set ? DYN_EFORMAT : dyn_err_set(err, DYN_ENOMEM, "PNG encode failed");
    }
    png_set_write_fn(c->png, s, png_write_mem, png_flush_mem);
    png_set_IHDR(c->png, c->info, (png_uint_32)im->w, (png_uint_32)im->h, 8,
                 im->c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(c->png, c->info);
    for (int y = 0; y < im->h; y++)
        png_write_row(c->png, im->data + (size_t)y * (size_t)im->w * (size_t)im->c);
    png_write_end(c->png, NULL);
    png_destroy_write_struct(&c->png, &c->info);
    if (s->oom) {
        free(s->buf);
        return dyn_err_set(err, DYN_ENOMEM, "PNG encode: out of memory");
    }
    *buf = s->buf;
    *size = s->size;
    return 0;
}

/* ---------------------------------------------------------------- JPEG */

typedef struct jpeg_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    dyn_err *err;
    int code;
    uint8_t *pixels;
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, msg);
    c->code = dyn_err_set(c->err, DYN_EFORMAT, "damaged JPEG: %s", msg);
    longjmp(c->jmp, 1);
}

/* libjpeg treats corrupt data as a warning (level -1) and goes on: a stream that ends early,
 * or a scan cut short by a marker (a truncated file with an end marker appended), is padded
 * with grey. Here every warning is an error, so a damaged upload is refused instead of
 * classified; trace messages (level >= 0) are ignored. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        c->code = dyn_err_set(c->err, DYN_EFORMAT, "truncated JPEG (the stream ends early)");
    } else {
        char msg[JMSG_LENGTH_MAX];
        cinfo->err->format_message(cinfo, msg);
        c->code = dyn_err_set(c->err, DYN_EFORMAT, "damaged JPEG: %s", msg);
    }
    longjmp(c->jmp, 1);
}

static int decode_jpeg(const uint8_t *data, size_t size, const dyn_image_limits *l,
                       dyn_image *out, dyn_err *err) {
    struct jpeg_decompress_struct cinfo;
    jpeg_ctx ctx = {.err = err, .code = DYN_EFORMAT};
    jpeg_ctx *c = &ctx;
    cinfo.err = jpeg_std_error(&c->pub);
    c->pub.error_exit = jpeg_on_error;
    c->pub.emit_message = jpeg_on_message;
    if (setjmp(c->jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(c->pixels);
        c->pixels = NULL;
        return c->code;
    }
    jpeg_create_decompress(&cinfo);
    /* Progressive JPEGs buffer whole coefficient images: cap the decoder's memory. */
    cinfo.mem->max_memory_to_use = 256L << 20;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int rc = check_dims("JPEG", cinfo.image_width, cinfo.image_height, l, err);
    if (rc) {
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return dyn_err_set(err, DYN_EUNSUP, "CMYK JPEG is not supported; convert it to RGB");
    }
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, ch = cinfo.output_components;
    size_t stride = (size_t)w * (size_t)ch;
    c->pixels = malloc(stride * (size_t)h);
    if (!c->pixels) {
        c->code = dyn_err_set(err, DYN_ENOMEM, "JPEG: out of memory for %dx%d pixels", w, h);
        longjmp(c->jmp, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = c->pixels + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *out = (dyn_image){w, h, ch, c->pixels};
    return 0;
}

int dyn_image_decode(const void *data, size_t size, const dyn_image_limits *lim, dyn_image *out,
                     dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (!data && size) return dyn_err_set(err, DYN_EINVAL, "image: no data");
    dyn_image_limits l = limits_or_default(lim);
    if (size > l.max_bytes)
        return dyn_err_set(err, DYN_ENOMEM, "image is %zu bytes; the limit is %zu", size,
                           l.max_bytes);
    switch (dyn_image_detect(data, size)) {
    case DYN_IMAGE_PNG: return decode_png(data, size, &l, out, err);
    case DYN_IMAGE_JPEG: return decode_jpeg(data, size, &l, out, err);
    default:
        return dyn_err_set(err, DYN_EUNSUP,
                           "not a PNG or JPEG image (%zu bytes; the first bytes match neither)",
                           size);
    }
}

/* ---------------------------------------------------------------- conversion, resize */

int dyn_image_convert(const dyn_image *src, int c, dyn_image *out, dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (!src || !src->data || (src->c != 1 && src->c != 3) || (c != 1 && c != 3))
        return dyn_err_set(err, DYN_EINVAL, "image convert: channels must be 1 or 3");
    size_t n = (size_t)src->w * (size_t)src->h;
    uint8_t *d = malloc(n * (size_t)c);
    if (!d) return dyn_err_set(err, DYN_ENOMEM, "image convert: out of memory");
    const uint8_t *s = src->data;
    if (src->c == c) {
        memcpy(d, s, n * (size_t)c);
    } else if (c == 1) {
        for (size_t i = 0; i < n; i++) {
            unsigned r = s[3 * i], g = s[3 * i + 1], b = s[3 * i + 2];
            d[i] = (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16); /* PIL's */
        }
    } else {
        for (size_t i = 0; i < n; i++) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
    }
    *out = (dyn_image){src->w, src->h, c, d};
    return 0;
}

/* Tent-filter weights for one axis: for each output index i, the source range [lo[i], lo[i] +
 * cnt[i]) and its normalized weights at wt[i * span ...]. */
typedef struct axis_weights {
    int span;
    int *lo, *cnt;
    float *wt;
} axis_weights;

static void axis_free(axis_weights *a) {
    free(a->lo);
    free(a->cnt);
    free(a->wt);
}

static int axis_build(int in, int out, axis_weights *a) {
    double scale = (double)in / out;
    double support = scale > 1.0 ? scale : 1.0; /* tent half-width in source pixels */
    a->span = (int)ceil(support) * 2 + 1;
    a->lo = malloc(sizeof(int) * (size_t)out);
    a->cnt = malloc(sizeof(int) * (size_t)out);
    a->wt = malloc(sizeof(float) * (size_t)out * (size_t)a->span);
    if (!a->lo || !a->cnt || !a->wt) return -1;
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale; /* in continuous source coordinates */
        int lo = (int)floor(center - support + 0.5), hi = (int)floor(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        double sum = 0;
        float *w = a->wt + (size_t)i * (size_t)a->span;
        int n = 0;
        for (int j = lo; j < hi && n < a->span; j++, n++) {
            double t = 1.0 - fabs((j + 0.5 - center) / support);
            w[n] = (float)(t > 0 ? t : 0);
            sum += w[n];
        }
        if (sum <= 0) { /* cannot happen for in >= 1, kept as a guard */
            lo = (int)DYN_MIN(DYN_MAX(floor(center), 0), in - 1);
            n = 1;
            w[0] = 1;
            sum = 1;
        }
        for (int k = 0; k < n; k++) w[k] = (float)(w[k] / sum);
        a->lo[i] = lo;
        a->cnt[i] = n;
    }
    return 0;
}

int dyn_image_resize_chw(const dyn_image *src, int w, int h, float *out, dyn_err *err) {
    if (!src || !src->data || src->w <= 0 || src->h <= 0 || w <= 0 || h <= 0 || src->c <= 0)
        return dyn_err_set(err, DYN_EINVAL, "image resize: sizes must be positive");
    int c = src->c, sw = src->w, sh = src->h;
    axis_weights ax = {0}, ay = {0};
    float *tmp = malloc(sizeof(float) * (size_t)sh * (size_t)w); /* one channel, rows resized */
    if (!tmp || axis_build(sw, w, &ax) || axis_build(sh, h, &ay)) {
        free(tmp);
        axis_free(&ax);
        axis_free(&ay);
        return dyn_err_set(err, DYN_ENOMEM, "image resize: out of memory");
    }
    for (int k = 0; k < c; k++) {
        for (int y = 0; y < sh; y++) {
            const uint8_t *row = src->data + (size_t)y * (size_t)sw * (size_t)c + k;
            for (int x = 0; x < w; x++) {
                const float *wt = ax.wt + (size_t)x * (size_t)ax.span;
                float acc = 0;
                for (int j = 0; j < ax.cnt[x]; j++)
                    acc += wt[j] * (float)row[(size_t)(ax.lo[x] + j) * (size_t)c];
                tmp[(size_t)y * (size_t)w + (size_t)x] = acc;
            }
        }
        float *plane = out + (size_t)k * (size_t)h * (size_t)w;
        for (int y = 0; y < h; y++) {
            const float *wt = ay.wt + (size_t)y * (size_t)ay.span;
            for (int x = 0; x < w; x++) {
                float acc = 0;
                for (int j = 0; j < ay.cnt[y]; j++)
                    acc += wt[j] * tmp[(size_t)(ay.lo[y] + j) * (size_t)w + (size_t)x];
                plane[(size_t)y * (size_t)w + (size_t)x] = acc;
            }
        }
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return 0;
}

/* ---------------------------------------------------------------- PIL-exact 8-bit resize */

/* Pillow's Resample.c for 8-bit images: weights in double, then 22-bit fixed point; each pass
 * rounds (+ half) and clips to 8 bits. */
#define PIL_PRECISION_BITS (32 - 8 - 2)

typedef struct pil_axis {
    int ksize;
    int *bounds; /* [out][2]: first source index, count */
    int32_t *kk; /* [out][ksize] */
} pil_axis;

static void pil_axis_free(pil_axis *a) {
    free(a->bounds);
    free(a->kk);
}

static int pil_axis_build(int in, int out, pil_axis *a) {
    double scale = (double)in / out, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale; /* the bilinear (triangle) filter's support is 1 */
    a->ksize = (int)ceil(support) * 2 + 1;
    a->bounds = malloc(sizeof(int) * 2 * (size_t)out);
    a->kk = malloc(sizeof(int32_t) * (size_t)out * (size_t)a->ksize);
    double *k = malloc(sizeof(double) * (size_t)a->ksize);
    if (!a->bounds || !a->kk || !k) {
        free(k);
        return -1;
    }
    for (int xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        int x = 0;
        for (; x < xmax && x < a->ksize; x++) {
            double t = fabs((x + xmin - center + 0.5) * ss);
            k[x] = t < 1.0 ? 1.0 - t : 0.0;
            ww += k[x];
        }
        xmax = x;
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        int32_t *kk = a->kk + (size_t)xx * (size_t)a->ksize;
        for (x = 0; x < a->ksize; x++) {
            double v = x < xmax ? k[x] * (1 << PIL_PRECISION_BITS) : 0.0;
            kk[x] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
        a->bounds[2 * xx] = xmin;
        a->bounds[2 * xx + 1] = xmax;
    }
    free(k);
    return 0;
}

static inline uint8_t pil_clip8(int64_t v) {
    if (v >= ((int64_t)1 << PIL_PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PIL_PRECISION_BITS);
}

/* Horizontal (along = 0: x) or vertical pass of src into dst (dst allocated by the caller). */
static void pil_pass(const dyn_image *src, dyn_image *dst, const pil_axis *a, int vertical) {
    const int c = src->c;
    for (int y = 0; y < dst->h; y++)
        for (int x = 0; x < dst->w; x++) {
            int o = vertical ? y : x, lo = a->bounds[2 * o], n = a->bounds[2 * o + 1];
            const int32_t *kk = a->kk + (size_t)o * (size_t)a->ksize;
            for (int k = 0; k < c; k++) {
                int64_t ss = (int64_t)1 << (PIL_PRECISION_BITS - 1);
                for (int j = 0; j < n; j++) {
                    size_t si = vertical ? ((size_t)(lo + j) * (size_t)src->w + (size_t)x)
                                         : ((size_t)y * (size_t)src->w + (size_t)(lo + j));
                    ss += (int64_t)src->data[si * (size_t)c + (size_t)k] * kk[j];
                }
                dst->data[((size_t)y * (size_t)dst->w + (size_t)x) * (size_t)c + (size_t)k] =
                    pil_clip8(ss);
            }
        }
}

static int image_alloc(int w, int h, int c, dyn_image *out) {
    *out = (dyn_image){w, h, c, malloc((size_t)w * (size_t)h * (size_t)c)};
    return out->data ? 0 : -1;
}

int dyn_image_resize_u8(const dyn_image *src, int w, int h, dyn_pp_interp interp,
                        dyn_image *out, dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (!src || !src->data || src->w <= 0 || src->h <= 0 || src->c <= 0 || w <= 0 || h <= 0 ||
        w > DYN_IMAGE_DEFAULT_MAX_SIDE * 2 || h > DYN_IMAGE_DEFAULT_MAX_SIDE * 2 ||
        (int64_t)w * h > DYN_PP_MAX_PIXELS)
        return dyn_err_set(err, DYN_EINVAL, "image resize to %dx%d: sizes must be positive, at "
                           "most %d per side and %lld pixels", w, h,
                           DYN_IMAGE_DEFAULT_MAX_SIDE * 2, (long long)DYN_PP_MAX_PIXELS);
    const int c = src->c;
    if (src->w == w && src->h == h) { /* PIL copies */
        if (image_alloc(w, h, c, out)) return dyn_err_set(err, DYN_ENOMEM, "image resize: out of memory");
        memcpy(out->data, src->data, (size_t)w * (size_t)h * (size_t)c);
        return 0;
    }
    if (interp == DYN_PP_NEAREST) { /* Pillow's ImagingScaleAffine: accumulated coordinates */
        int *xin = malloc(sizeof(int) * (size_t)w);
        if (!xin || image_alloc(w, h, c, out)) {
            free(xin);
            dyn_image_free(out);
            return dyn_err_set(err, DYN_ENOMEM, "image resize: out of memory");
        }
        double ax = (double)src->w / w, ay = (double)src->h / h, xo = ax * 0.5, yo = ay * 0.5;
        for (int x = 0; x < w; x++, xo += ax) xin[x] = DYN_MIN((int)xo, src->w - 1);
        for (int y = 0; y < h; y++, yo += ay) {
            int yi = DYN_MIN((int)yo, src->h - 1);
            for (int x = 0; x < w; x++)
                memcpy(out->data + ((size_t)y * (size_t)w + (size_t)x) * (size_t)c,
                       src->data + ((size_t)yi * (size_t)src->w + (size_t)xin[x]) * (size_t)c,
                       (size_t)c);
        }
        free(xin);
        return 0;
    }
    pil_axis ax = {0}, ay = {0};
    dyn_image tmp = {0};
    const int need_h = src->w != w, need_v = src->h != h;
    int bad = (need_h && pil_axis_build(src->w, w, &ax)) || (need_v && pil_axis_build(src->h, h, &ay));
    if (!bad && need_h) {
        if (!need_v) bad = image_alloc(w, h, c, out);
        else bad = image_alloc(w, src->h, c, &tmp);
        if (!bad) pil_pass(src, need_v ? &tmp : out, &ax, 0);
    }
    if (!bad && need_v) {
        bad = image_alloc(w, h, c, out);
        if (!bad) pil_pass(need_h ? &tmp : src, out, &ay, 1);
    }
    pil_axis_free(&ax);
    pil_axis_free(&ay);
    dyn_image_free(&tmp);
    if (bad) {
        dyn_image_free(out);
        return dyn_err_set(err, DYN_ENOMEM, "image resize: out of memory");
    }
    return 0;
}

/* ---------------------------------------------------------------- preprocessing */

static int read_per_channel(const json_t *v, const char *key, int c, float def, float *out,
                            dyn_err *err) {
    for (int k = 0; k < 4; k++) out[k] = def;
    if (!v) return 0;
    if (json_is_number(v)) {
        if (!(fabs(json_number_value(v)) <= FLT_MAX))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.%s is out of the float range", key);
        for (int k = 0; k < 4; k++) out[k] = (float)json_number_value(v);
        return 0;
    }
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (c <= 0) c = (n == 3) ? 3 : 1; /* no model: an array of 1 or 3 */
    if (n != 1 && n != (size_t)c)
        return dyn_err_set(err, DYN_EINVAL,
                           "preprocess.%s must be a number or an array of 1 or %d numbers", key, c);
    for (int k = 0; k < c; k++) {
        const json_t *e = json_array_get(v, n == 1 ? 0 : (size_t)k);
        if (!json_is_number(e))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.%s holds a non-number", key);
        if (!(fabs(json_number_value(e)) <= FLT_MAX))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.%s holds a number out of the float "
                               "range", key);
        out[k] = (float)json_number_value(e);
    }
    if (n == 1)
        for (int k = 0; k < 4; k++) out[k] = out[0];
    return 0;
}

#define PP_MAX_SIDE (DYN_IMAGE_DEFAULT_MAX_SIDE * 2)

/* An integer 0..hi (lo = 0) or 1..hi (lo = 1) into *v; -1 otherwise. */
static int int_in(const json_t *j, int lo, int hi, int *v) {
    if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi) return -1;
    *v = (int)json_integer_value(j);
    return 0;
}

/* A size: S (both sides) or [H, W]. */
static int read_hw(const json_t *j, int *h, int *w) {
    if (json_is_integer(j)) return int_in(j, 1, PP_MAX_SIDE, h) || int_in(j, 1, PP_MAX_SIDE, w);
    if (!json_is_array(j) || json_array_size(j) != 2) return -1;
    return int_in(json_array_get(j, 0), 1, PP_MAX_SIDE, h) ||
           int_in(json_array_get(j, 1), 1, PP_MAX_SIDE, w);
}

static const char *const STEP_OPS[] = {"resize", "letterbox", "center_crop", "pad"};

static int parse_step(const json_t *o, int i, int strict, dyn_pp_step *st, dyn_err *err) {
    memset(st, 0, sizeof *st);
    if (!json_is_object(o))
        return dyn_err_set(err, DYN_EINVAL,
                           "preprocess.steps[%d] must be an object such as {\"resize\": 256}, "
                           "{\"center_crop\": [224, 224]}, {\"pad\": 2} or {\"letterbox\": [H, W]}",
                           i);
    const char *op = NULL;
    const json_t *v = NULL;
    for (size_t k = 0; k < DYN_ARRAY_LEN(STEP_OPS); k++) {
        const json_t *x = json_object_get(o, STEP_OPS[k]);
        if (!x) continue;
        if (op)
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps[%d] names two steps (%s and %s); "
                               "give one per object", i, op, STEP_OPS[k]);
        op = STEP_OPS[k];
        v = x;
    }
    if (!op)
        return dyn_err_set(err, DYN_EINVAL,
                           "preprocess.steps[%d] has none of resize, letterbox, center_crop, pad", i);
    const int has_fill = !strcmp(op, "pad") || !strcmp(op, "letterbox");
    const int has_interp = !strcmp(op, "resize") || !strcmp(op, "letterbox");
    const char *k;
    const json_t *x;
    json_object_foreach((json_t *)o, k, x) {
        if (!strcmp(k, op)) continue;
        if (has_fill && !strcmp(k, "fill")) {
            if (int_in(x, 0, 255, &st->fill))
                return dyn_err_set(err, DYN_EINVAL, "preprocess.steps[%d].fill must be an integer "
                                   "0..255", i);
        } else if (has_interp && !strcmp(k, "interpolation")) {
            const char *s = json_string_value(x);
            if (s && !strcmp(s, "bilinear")) st->interp = DYN_PP_BILINEAR;
            else if (s && !strcmp(s, "nearest")) st->interp = DYN_PP_NEAREST;
            else
                return dyn_err_set(err, DYN_EUNSUP, "preprocess.steps[%d].interpolation: "
                                   "\"bilinear\" or \"nearest\"", i);
        } else if (strict) {
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps[%d]: unknown key '%.64s' for "
                               "a %s step", i, k, op);
        }
    }
    if (!strcmp(op, "resize")) {
        if (json_is_integer(v)) {
            st->op = DYN_PP_RESIZE_SHORT;
            if (int_in(v, 1, PP_MAX_SIDE, &st->size)) v = NULL;
        } else {
            st->op = DYN_PP_RESIZE;
            if (read_hw(v, &st->h, &st->w) || !json_is_array(v)) v = NULL;
        }
        if (!v)
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps[%d].resize must be a size S (the "
                               "shorter side) or [H, W], positive integers up to %d", i, PP_MAX_SIDE);
    } else if (!strcmp(op, "letterbox") || !strcmp(op, "center_crop")) {
        st->op = !strcmp(op, "letterbox") ? DYN_PP_LETTERBOX : DYN_PP_CENTER_CROP;
        if (read_hw(v, &st->h, &st->w))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps[%d].%s must be [H, W] (or S), "
                               "positive integers up to %d", i, op, PP_MAX_SIDE);
    } else {
        st->op = DYN_PP_PAD;
        size_t n = json_is_array(v) ? json_array_size(v) : 0;
        int bad = 0, p[4] = {0};
        if (json_is_integer(v)) {
            bad = int_in(v, 0, PP_MAX_SIDE, &p[0]);
            p[1] = p[2] = p[3] = p[0];
        } else if (n == 2) { /* torchvision: [left/right, top/bottom] */
            bad = int_in(json_array_get(v, 0), 0, PP_MAX_SIDE, &p[0]) ||
                  int_in(json_array_get(v, 1), 0, PP_MAX_SIDE, &p[1]);
            p[2] = p[0];
            p[3] = p[1];
        } else if (n == 4) {
            for (int q = 0; q < 4; q++) bad |= int_in(json_array_get(v, (size_t)q), 0, PP_MAX_SIDE, &p[q]);
        } else {
            bad = 1;
        }
        if (bad)
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps[%d].pad must be P, [left/right, "
                               "top/bottom] or [left, top, right, bottom], integers 0..%d", i,
                               PP_MAX_SIDE);
        memcpy(st->pad, p, sizeof p);
    }
    return 0;
}

static const char *const PP_KEYS[] = {"channels", "height", "width", "mean", "std", "scale",
                                      "resize", "color", "steps", "layout"};

/* The parser behind dyn_preprocess_parse (input given, lenient) and dyn_preprocess_check
 * (input NULL, strict). */
static int pp_parse(const json_t *pp, const dyn_shape *input, int strict, dyn_preprocess *out,
                    dyn_err *err) {
    memset(out, 0, sizeof *out);
    out->scale = 255.0f;
    for (int k = 0; k < 4; k++) out->std[k] = 1.0f;
    if (pp && !json_is_object(pp)) return dyn_err_set(err, DYN_EINVAL, "preprocess is not an object");
    if (strict && pp) {
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)pp, k, x) {
            size_t i = 0;
            while (i < DYN_ARRAY_LEN(PP_KEYS) && strcmp(PP_KEYS[i], k)) i++;
            if (i == DYN_ARRAY_LEN(PP_KEYS))
                return dyn_err_set(err, DYN_EINVAL, "preprocess: unknown key '%.64s' (keys: color, "
                                   "steps, scale, mean, std, layout, channels, height, width, "
                                   "resize)", k);
        }
    }
    const json_t *lay = pp ? json_object_get(pp, "layout") : NULL;
    if (lay) {
        const char *s = json_string_value(lay);
        if (s && !strcmp(s, "NHWC")) out->hwc = 1;
        else if (!s || strcmp(s, "NCHW"))
            return dyn_err_set(err, DYN_EUNSUP, "preprocess.layout must be \"NCHW\" or \"NHWC\"");
    }
    const int ci = out->hwc ? 2 : 0, hi = out->hwc ? 0 : 1, wi = out->hwc ? 1 : 2;
    if (input) {
        if (input->ndim != 3 || (input->d[ci] != 1 && input->d[ci] != 3))
            return dyn_err_set(err, DYN_EINVAL, "the model's input is not an image (%s expected)",
                               out->hwc ? "[H, W, 1|3] for layout NHWC" : "[1|3, H, W]");
        out->c = (int)input->d[ci];
        out->h = (int)input->d[hi];
        out->w = (int)input->d[wi];
    }
    out->color = out->c == 3 ? DYN_PP_RGB : DYN_PP_GRAY;
    if (!pp) return 0;
    static const char *const dims[3] = {"channels", "height", "width"};
    const int didx[3] = {ci, hi, wi};
    for (int i = 0; i < 3; i++) {
        const json_t *v = json_object_get(pp, dims[i]);
        if (!v) continue;
        if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
            (input && json_integer_value(v) != input->d[didx[i]]))
            return input ? dyn_err_set(err, DYN_EINVAL,
                                       "preprocess.%s does not match the model input %lld",
                                       dims[i], (long long)input->d[didx[i]])
                         : dyn_err_set(err, DYN_EINVAL, "preprocess.%s must be a positive integer",
                                       dims[i]);
        if (!input && i == 0) out->c = (int)json_integer_value(v);
    }
    const json_t *col = json_object_get(pp, "color");
    if (col) {
        const char *s = json_string_value(col);
        int want;
        if (s && !strcmp(s, "gray")) out->color = DYN_PP_GRAY, want = 1;
        else if (s && !strcmp(s, "rgb")) out->color = DYN_PP_RGB, want = 3;
        else if (s && !strcmp(s, "bgr")) out->color = DYN_PP_BGR, want = 3;
        else return dyn_err_set(err, DYN_EINVAL, "preprocess.color must be \"gray\", \"rgb\" or \"bgr\"");
        if (out->c && out->c != want)
            return dyn_err_set(err, DYN_EINVAL, "preprocess.color \"%s\" gives %d channel%s; the "
                               "model's input has %d", s, want, want == 1 ? "" : "s", out->c);
        if (!input) out->c = want;
    }
    if (!input && out->c != 0 && out->c != 1 && out->c != 3)
        return dyn_err_set(err, DYN_EINVAL, "preprocess.channels must be 1 or 3");
    const json_t *sc = json_object_get(pp, "scale");
    if (sc) { /* checked as the float it becomes: 1e300 would be inf, 1e-300 zero */
        const double d = json_is_number(sc) ? json_number_value(sc) : 0;
        if (!(d >= FLT_MIN && d <= FLT_MAX))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.scale must be a positive number "
                               "(%g to %g)", (double)FLT_MIN, (double)FLT_MAX);
        out->scale = (float)d;
    }
    const json_t *rs = json_object_get(pp, "resize");
    if (rs && (!json_is_string(rs) || strcmp(json_string_value(rs), "bilinear") != 0))
        return dyn_err_set(err, DYN_EUNSUP, "preprocess.resize: only \"bilinear\" is supported "
                           "(other resizing: \"steps\")");
    int rc = read_per_channel(json_object_get(pp, "mean"), "mean", out->c, 0.0f, out->mean, err);
    if (!rc) rc = read_per_channel(json_object_get(pp, "std"), "std", out->c, 1.0f, out->std, err);
    if (rc) return rc;
    for (int k = 0; k < (out->c ? out->c : 3); k++)
        if (!(out->std[k] > 0) || !isfinite(out->mean[k]) || !isfinite(out->std[k]))
            return dyn_err_set(err, DYN_EINVAL, "preprocess: std must be > 0 and values finite");
    const json_t *steps = json_object_get(pp, "steps");
    if (steps) {
        if (!json_is_array(steps) || json_array_size(steps) > DYN_PP_MAX_STEPS)
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps must be an array of at most %d "
                               "steps", DYN_PP_MAX_STEPS);
        out->nsteps = (int)json_array_size(steps);
        for (int i = 0; i < out->nsteps; i++)
            if ((rc = parse_step(json_array_get(steps, (size_t)i), i, strict, &out->steps[i], err)))
                return rc;
    }
    if (input) { /* a final size the steps fix must be the model's */
        int kh = 0, kw = 0, last = -1;
        for (int i = 0; i < out->nsteps; i++) {
            const dyn_pp_step *st = &out->steps[i];
            if (st->op == DYN_PP_RESIZE_SHORT) kh = kw = 0;
            else if (st->op == DYN_PP_PAD && kh) kh += st->pad[1] + st->pad[3], kw += st->pad[0] + st->pad[2];
            else if (st->op != DYN_PP_PAD) kh = st->h, kw = st->w, last = i;
        }
        if (kh && (kh != out->h || kw != out->w))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.steps end at %dx%d (HxW, from step %d "
                               "on), but the model's input is %dx%d", kh, kw, last, out->h, out->w);
    }
    return 0;
}

int dyn_preprocess_parse(const json_t *pp, const dyn_shape *input, dyn_preprocess *out,
                         dyn_err *err) {
    if (!input) {
        memset(out, 0, sizeof *out);
        return dyn_err_set(err, DYN_EINVAL, "the model's input is not an image (no input shape)");
    }
    return pp_parse(pp, input, 0, out, err);
}

int dyn_preprocess_check(const json_t *pp, dyn_err *err) {
    dyn_preprocess tmp;
    if (!json_is_object(pp)) return dyn_err_set(err, DYN_EINVAL, "preprocess must be a JSON object");
    return pp_parse(pp, NULL, 1, &tmp, err);
}

/* The normalization both paths share: value v in 0..255 (float) → model input. */
static inline float norm_px(const dyn_preprocess *pp, int k, float v) {
    return (v / pp->scale - pp->mean[k]) / pp->std[k];
}

void dyn_preprocess_u8(const dyn_preprocess *pp, const uint8_t *px, int64_t n, float *out) {
    int64_t plane = (int64_t)pp->h * pp->w, sample = plane * pp->c;
    if (pp->hwc)
        for (int64_t i = 0; i < n; i++) out[i] = norm_px(pp, (int)(i % pp->c), px[i]);
    else
        for (int64_t i = 0; i < n; i++) out[i] = norm_px(pp, (int)((i % sample) / plane), px[i]);
}

/* A new w x h image of c channels filled with `fill`, src copied at (left, top) (clipped). */
static int pad_copy(const dyn_image *src, int w, int h, int left, int top, int fill,
                    dyn_image *out) {
    if (image_alloc(w, h, src->c, out)) return -1;
    const size_t c = (size_t)src->c;
    memset(out->data, fill, (size_t)w * (size_t)h * c);
    for (int y = 0; y < src->h; y++) {
        int oy = y + top;
        if (oy < 0 || oy >= h) continue;
        int x0 = DYN_MAX(0, -left), x1 = DYN_MIN(src->w, w - left);
        if (x1 <= x0) continue;
        memcpy(out->data + ((size_t)oy * (size_t)w + (size_t)(x0 + left)) * c,
               src->data + ((size_t)y * (size_t)src->w + (size_t)x0) * c, (size_t)(x1 - x0) * c);
    }
    return 0;
}

/* Python's round() of d / 2 (halves to even), for d >= 0. */
static int half_round_even(int d) {
    int q = d / 2;
    return (d % 2 && q % 2) ? q + 1 : q;
}

/* One geometric step of cur into *out (new). */
static int apply_step(const dyn_image *cur, const dyn_pp_step *st, dyn_image *out, dyn_err *err) {
    int rc = 0;
    switch (st->op) {
    case DYN_PP_RESIZE_SHORT: {
        int shortside = DYN_MIN(cur->w, cur->h), longside = DYN_MAX(cur->w, cur->h);
        int64_t nl = (int64_t)((double)st->size * (double)longside / (double)shortside);
        if (nl > PP_MAX_SIDE || nl < 1)
            return dyn_err_set(err, DYN_EINVAL, "preprocess: resizing %dx%d to a shorter side of "
                               "%d gives a side of %lld pixels", cur->w, cur->h, st->size,
                               (long long)nl);
        int nw = cur->w <= cur->h ? st->size : (int)nl, nh = cur->w <= cur->h ? (int)nl : st->size;
        return dyn_image_resize_u8(cur, nw, nh, st->interp, out, err);
    }
    case DYN_PP_RESIZE: return dyn_image_resize_u8(cur, st->w, st->h, st->interp, out, err);
    case DYN_PP_LETTERBOX: {
        double s = DYN_MIN((double)st->h / cur->h, (double)st->w / cur->w);
        int nw = (int)DYN_MAX(1, DYN_MIN(st->w, lround(cur->w * s)));
        int nh = (int)DYN_MAX(1, DYN_MIN(st->h, lround(cur->h * s)));
        dyn_image r = {0};
        if ((int64_t)st->w * st->h > DYN_PP_MAX_PIXELS)
            return dyn_err_set(err, DYN_EINVAL, "preprocess: a %dx%d letterbox is over %lld "
                               "pixels", st->w, st->h, (long long)DYN_PP_MAX_PIXELS);
        if ((rc = dyn_image_resize_u8(cur, nw, nh, st->interp, &r, err))) return rc;
        rc = pad_copy(&r, st->w, st->h, (st->w - nw) / 2, (st->h - nh) / 2, st->fill, out);
        dyn_image_free(&r);
        break;
    }
    case DYN_PP_CENTER_CROP: { /* torchvision: pad a too small side with 0 first */
        if ((int64_t)st->w * st->h > DYN_PP_MAX_PIXELS)
            return dyn_err_set(err, DYN_EINVAL, "preprocess: a %dx%d crop is over %lld pixels",
                               st->w, st->h, (long long)DYN_PP_MAX_PIXELS);
        int pl = cur->w < st->w ? (st->w - cur->w) / 2 : 0, pt = cur->h < st->h ? (st->h - cur->h) / 2 : 0;
        int iw = DYN_MAX(cur->w, st->w), ih = DYN_MAX(cur->h, st->h);
        int top = half_round_even(ih - st->h), left = half_round_even(iw - st->w);
        rc = pad_copy(cur, st->w, st->h, pl - left, pt - top, 0, out);
        break;
    }
    case DYN_PP_PAD: {
        int64_t nw = (int64_t)cur->w + st->pad[0] + st->pad[2], nh = (int64_t)cur->h + st->pad[1] + st->pad[3];
        if (nw > PP_MAX_SIDE || nh > PP_MAX_SIDE || nw * nh > DYN_PP_MAX_PIXELS)
            return dyn_err_set(err, DYN_EINVAL, "preprocess: padding gives a %lldx%lld image "
                               "(limits: %d per side, %lld pixels)", (long long)nw, (long long)nh,
                               PP_MAX_SIDE, (long long)DYN_PP_MAX_PIXELS);
        rc = pad_copy(cur, (int)nw, (int)nh, st->pad[0], st->pad[1], st->fill, out);
        break;
    }
    }
    return rc ? dyn_err_set(err, DYN_ENOMEM, "preprocess: out of memory") : 0;
}

int dyn_preprocess_image(const dyn_image *im, const dyn_preprocess *pp, dyn_image *out,
                         dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (!im || !im->data || im->w <= 0 || im->h <= 0 || !pp || pp->c <= 0)
        return dyn_err_set(err, DYN_EINVAL, "preprocess: no image or no pipeline");
    dyn_image cur = {0}, next = {0};
    int rc = dyn_image_convert(im, pp->c, &cur, err); /* a copy when the channels match */
    for (int i = 0; !rc && i < pp->nsteps; i++) {
        rc = apply_step(&cur, &pp->steps[i], &next, err);
        dyn_image_free(&cur);
        cur = next;
        next = (dyn_image){0};
    }
    if (!rc && pp->nsteps == 0 && (cur.w != pp->w || cur.h != pp->h)) {
        /* the original stretch (float tent), rounded to 8 bits */
        size_t plane = (size_t)pp->h * (size_t)pp->w;
        float *tmp = malloc(sizeof(float) * plane * (size_t)pp->c);
        if (!tmp || image_alloc(pp->w, pp->h, pp->c, &next))
            rc = dyn_err_set(err, DYN_ENOMEM, "preprocess: out of memory");
        if (!rc) rc = dyn_image_resize_chw(&cur, pp->w, pp->h, tmp, err);
        if (!rc)
            for (int k = 0; k < pp->c; k++)
                for (size_t i = 0; i < plane; i++) {
                    float v = roundf(tmp[(size_t)k * plane + i]);
                    next.data[i * (size_t)pp->c + (size_t)k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        free(tmp);
        dyn_image_free(&cur);
        cur = next;
    }
    if (!rc && (cur.w != pp->w || cur.h != pp->h))
        rc = dyn_err_set(err, DYN_EINVAL, "preprocess: a %dx%d image (WxH) becomes %dx%d through "
                         "the model's steps, but the model's input is %dx%d", im->w, im->h, cur.w,
                         cur.h, pp->w, pp->h);
    if (rc) {
        dyn_image_free(&cur);
        return rc;
    }
    if (pp->color == DYN_PP_BGR)
        for (size_t i = 0; i < (size_t)cur.w * (size_t)cur.h; i++) {
            uint8_t t = cur.data[3 * i];
            cur.data[3 * i] = cur.data[3 * i + 2];
            cur.data[3 * i + 2] = t;
        }
    *out = cur;
    return 0;
}

int dyn_image_to_input(const dyn_image *im, const dyn_preprocess *pp, float *out, dyn_err *err) {
    const size_t plane = (size_t)pp->h * (size_t)pp->w, c = (size_t)pp->c;
    if (pp->nsteps == 0 && (im->w != pp->w || im->h != pp->h)) {
        /* the original path: float stretch, not rounded */
        dyn_image conv = {0};
        float *tmp = malloc(sizeof(float) * plane * c);
        int rc = tmp ? dyn_image_convert(im, pp->c, &conv, err)
                     : dyn_err_set(err, DYN_ENOMEM, "preprocess: out of memory");
        if (!rc) rc = dyn_image_resize_chw(&conv, pp->w, pp->h, tmp, err);
        dyn_image_free(&conv);
        if (!rc)
            for (size_t k = 0; k < c; k++) {
                size_t sk = pp->color == DYN_PP_BGR ? c - 1 - k : k;
                for (size_t i = 0; i < plane; i++)
                    out[pp->hwc ? i * c + k : k * plane + i] = norm_px(pp, (int)k, tmp[sk * plane + i]);
            }
        free(tmp);
        return rc;
    }
    if (pp->nsteps == 0 && im->c == pp->c && pp->color != DYN_PP_BGR && im->data) {
        /* the common case (an image at the model's size): no copy */
        for (size_t k = 0; k < c; k++)
            for (size_t i = 0; i < plane; i++)
                out[pp->hwc ? i * c + k : k * plane + i] = norm_px(pp, (int)k, im->data[i * c + k]);
        return 0;
    }
    dyn_image px = {0};
    int rc = dyn_preprocess_image(im, pp, &px, err);
    if (rc) return rc;
    for (size_t k = 0; k < c; k++)
        for (size_t i = 0; i < plane; i++)
            out[pp->hwc ? i * c + k : k * plane + i] = norm_px(pp, (int)k, px.data[i * c + k]);
    dyn_image_free(&px);
    return 0;
}

/* ---------------------------------------------------------------- image folders */

typedef struct strv {
    char **v;
    int n, cap;
} strv;

static int strv_push(strv *s, const char *x) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, sizeof(char *) * (size_t)cap);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in dir (skipping dot files); want_dirs selects sub-folders or regular files. */
static int list_dir(const char *dir, int want_dirs, strv *out, dyn_err *err) {
    DIR *d = opendir(dir);
    if (!d) return dyn_err_set(err, DYN_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (want_dirs ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) continue;
        if (strv_push(out, e->d_name)) {
            closedir(d);
            return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory listing", dir);
        }
    }
    closedir(d);
    if (out->n) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    return 0;
}

void dyn_imgfolder_names_free(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int read_file_bytes(const char *path, size_t max, uint8_t **buf, size_t *size,
                           dyn_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return dyn_err_set(err, DYN_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || (size_t)st.st_size > max) {
        fclose(f);
        return dyn_err_set(err, DYN_ENOMEM, "%s: larger than %zu bytes", path, max);
    }
    *size = (size_t)st.st_size;
    *buf = malloc(*size ? *size : 1);
    if (!*buf || fread(*buf, 1, *size, f) != *size) {
        fclose(f);
        free(*buf);
        *buf = NULL;
        return dyn_err_set(err, DYN_EIO, "%s: cannot read", path);
    }
    fclose(f);
    return 0;
}

/* Decodes one image file through the pipeline into sample storage px (c*h*w bytes, CHW). */
static int load_one(const char *path, const dyn_preprocess *pp, uint8_t *px, dyn_err *err) {
    uint8_t *buf = NULL;
    size_t size = 0;
    dyn_image im = {0}, out = {0};
    int rc = read_file_bytes(path, DYN_IMAGE_DEFAULT_MAX_BYTES, &buf, &size, err);
    if (!rc) rc = dyn_image_decode(buf, size, NULL, &im, err);
    free(buf);
    if (!rc) rc = dyn_preprocess_image(&im, pp, &out, err);
    if (!rc) {
        const size_t plane = (size_t)pp->h * (size_t)pp->w, c = (size_t)pp->c;
        for (size_t k = 0; k < c; k++)
            for (size_t i = 0; i < plane; i++) px[k * plane + i] = out.data[i * c + k];
    }
    dyn_image_free(&im);
    dyn_image_free(&out);
    if (rc) dyn_err_prefix(err, "%s", path);
    return rc;
}

static int is_image_name(const char *n) {
    const char *dot = strrchr(n, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") ||
                   !strcasecmp(dot, ".jpeg"));
}

int dyn_imgfolder_load(const char *dir, int c, int h, int w, dyn_dataset *out,
                       char ***class_names, int *nclasses, dyn_err *err) {
    dyn_preprocess pp;
    memset(&pp, 0, sizeof pp);
    pp.c = c;
    pp.h = h;
    pp.w = w;
    pp.color = c == 3 ? DYN_PP_RGB : DYN_PP_GRAY;
    return dyn_imgfolder_load_pp(dir, &pp, out, class_names, nclasses, err);
}

int dyn_imgfolder_load_pp(const char *dir, const dyn_preprocess *pp, dyn_dataset *out,
                          char ***class_names, int *nclasses, dyn_err *err) {
    memset(out, 0, sizeof *out);
    *class_names = NULL;
    *nclasses = 0;
    const int c = pp->c, h = pp->h, w = pp->w;
    if ((c != 1 && c != 3) || h <= 0 || w <= 0 || h > DYN_IDX_MAX_DIM || w > DYN_IDX_MAX_DIM)
        return dyn_err_set(err, DYN_EINVAL, "image folder: channels must be 1 or 3, sizes > 0");
    strv classes = {0}, files = {0};
    int rc = list_dir(dir, 1, &classes, err);
    if (!rc && classes.n == 0)
        rc = dyn_err_set(err, DYN_EINVAL, "%s: no class sub-folders", dir);
    if (!rc && classes.n > 256)
        rc = dyn_err_set(err, DYN_EINVAL, "%s: %d classes; at most 256", dir, classes.n);
    size_t sample = (size_t)c * (size_t)h * (size_t)w;
    size_t cap = 0;
    char path[4096];
    for (int k = 0; !rc && k < classes.n; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, classes.v[k]);
        dyn_imgfolder_names_free(files.v, files.n);
        files = (strv){0};
        if ((rc = list_dir(path, 0, &files, err))) break;
        for (int i = 0; !rc && i < files.n; i++) {
            if (!is_image_name(files.v[i])) continue;
            if ((size_t)out->n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                if (ncap * sample > DYN_IDX_MAX_BYTES) {
                    rc = dyn_err_set(err, DYN_ENOMEM, "%s: more than %llu bytes of pixels", dir,
                                     (unsigned long long)DYN_IDX_MAX_BYTES);
                    break;
                }
                uint8_t *p = realloc(out->pixels, ncap * sample);
                uint8_t *l = p ? realloc(out->labels, ncap) : NULL;
                if (p) out->pixels = p;
                if (l) out->labels = l;
                if (!p || !l) {
                    rc = dyn_err_set(err, DYN_ENOMEM, "image folder: out of memory");
                    break;
                }
                cap = ncap;
            }
            char fpath[8192];
            snprintf(fpath, sizeof fpath, "%s/%s", path, files.v[i]);
            rc = load_one(fpath, pp, out->pixels + (size_t)out->n * sample, err);
            if (!rc) out->labels[out->n++] = (uint8_t)k;
        }
    }
    dyn_imgfolder_names_free(files.v, files.n);
    if (!rc && out->n == 0) rc = dyn_err_set(err, DYN_EINVAL, "%s: no PNG/JPEG images", dir);
    if (rc) {
        dyn_dataset_free(out);
        dyn_imgfolder_names_free(classes.v, classes.n);
        return rc;
    }
    out->c = c;
    out->h = h;
    out->w = w;
    out->nclasses = classes.n;
    *class_names = classes.v;
    *nclasses = classes.n;
    return 0;
}

int dyn_dataset_preprocess(const dyn_dataset *in, const dyn_preprocess *pp, dyn_dataset *out,
                           dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (!in || (in->c != 1 && in->c != 3) || in->h <= 0 || in->w <= 0 || in->n < 0 ||
        (in->n > 0 && !in->pixels))
        return dyn_err_set(err, DYN_EINVAL, "preprocess: the data set's samples are not images "
                           "of 1 or 3 channels");
    if (pp->c <= 0 || pp->h <= 0 || pp->w <= 0 || pp->h > DYN_IDX_MAX_DIM || pp->w > DYN_IDX_MAX_DIM)
        return dyn_err_set(err, DYN_EINVAL, "preprocess: bad model input size");
    const size_t isz = (size_t)in->c * (size_t)in->h * (size_t)in->w;
    const size_t osz = (size_t)pp->c * (size_t)pp->h * (size_t)pp->w;
    const size_t n = (size_t)in->n;
    if ((double)osz * (double)n > (double)DYN_IDX_MAX_BYTES)
        return dyn_err_set(err, DYN_ENOMEM, "preprocess: %zu samples of %zu bytes are more than "
                           "%llu bytes", n, osz, (unsigned long long)DYN_IDX_MAX_BYTES);
    out->pixels = malloc(n * osz + 1);
    out->labels = malloc(n + 1);
    if (!out->pixels || !out->labels) {
        dyn_dataset_free(out);
        return dyn_err_set(err, DYN_ENOMEM, "preprocess: out of memory for %zu samples", n);
    }
    if (n) memcpy(out->labels, in->labels, n);
    const int same = pp->nsteps == 0 && pp->c == in->c && pp->h == in->h && pp->w == in->w &&
                     pp->color != DYN_PP_BGR;
    int rc = 0;
    dyn_image im = {in->w, in->h, in->c, malloc(isz)}, o = {0};
    if (!same && !im.data) rc = dyn_err_set(err, DYN_ENOMEM, "preprocess: out of memory");
    const size_t iplane = (size_t)in->h * (size_t)in->w, oplane = (size_t)pp->h * (size_t)pp->w;
    for (size_t s = 0; !rc && s < n; s++) {
        const uint8_t *src = in->pixels + s * isz;
        uint8_t *dst = out->pixels + s * osz;
        if (same) {
            memcpy(dst, src, isz);
            continue;
        }
        for (size_t k = 0; k < (size_t)in->c; k++) /* CHW → HWC */
            for (size_t i = 0; i < iplane; i++) im.data[i * (size_t)in->c + k] = src[k * iplane + i];
        if ((rc = dyn_preprocess_image(&im, pp, &o, err))) {
            dyn_err_prefix(err, "sample %zu", s);
            break;
        }
        for (size_t k = 0; k < (size_t)pp->c; k++) /* HWC → CHW */
            for (size_t i = 0; i < oplane; i++) dst[k * oplane + i] = o.data[i * (size_t)pp->c + k];
        dyn_image_free(&o);
    }
    dyn_image_free(&im);
    if (rc) {
        dyn_dataset_free(out);
        return rc;
    }
    out->n = in->n;
    out->c = pp->c;
    out->h = pp->h;
    out->w = pp->w;
    out->nclasses = in->nclasses;
    return 0;
}
