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

/* libjpeg treats a stream that ends early as a warning and pads it with grey: here it is an
 * error, so a truncated upload is refused instead of classified. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
        c->code = dyn_err_set(c->err, DYN_EFORMAT, "truncated JPEG (the stream ends early)");
        longjmp(c->jmp, 1);
    }
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
            d[i] = (uint8_t)((r * 299u + g * 587u + b * 114u + 500u) / 1000u);
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

/* ---------------------------------------------------------------- preprocessing */

static int read_per_channel(const json_t *v, const char *key, int c, float def, float *out,
                            dyn_err *err) {
    for (int k = 0; k < 4; k++) out[k] = def;
    if (!v) return 0;
    if (json_is_number(v)) {
        for (int k = 0; k < 4; k++) out[k] = (float)json_number_value(v);
        return 0;
    }
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (n != 1 && n != (size_t)c)
        return dyn_err_set(err, DYN_EINVAL,
                           "preprocess.%s must be a number or an array of 1 or %d numbers", key, c);
    for (int k = 0; k < c; k++) {
        const json_t *e = json_array_get(v, n == 1 ? 0 : (size_t)k);
        if (!json_is_number(e))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.%s holds a non-number", key);
        out[k] = (float)json_number_value(e);
    }
    return 0;
}

int dyn_preprocess_parse(const json_t *pp, const dyn_shape *input, dyn_preprocess *out,
                         dyn_err *err) {
    memset(out, 0, sizeof *out);
    if (!input || input->ndim != 3 || (input->d[0] != 1 && input->d[0] != 3))
        return dyn_err_set(err, DYN_EINVAL,
                           "the model's input is not an image ([1|3, H, W] expected)");
    out->c = (int)input->d[0];
    out->h = (int)input->d[1];
    out->w = (int)input->d[2];
    out->scale = 255.0f;
    for (int k = 0; k < 4; k++) out->std[k] = 1.0f;
    if (!pp) return 0;
    if (!json_is_object(pp)) return dyn_err_set(err, DYN_EINVAL, "preprocess is not an object");
    static const char *const dims[3] = {"channels", "height", "width"};
    for (int i = 0; i < 3; i++) {
        const json_t *v = json_object_get(pp, dims[i]);
        if (v && (!json_is_integer(v) || json_integer_value(v) != input->d[i]))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.%s does not match the model input %lld",
                               dims[i], (long long)input->d[i]);
    }
    const json_t *sc = json_object_get(pp, "scale");
    if (sc) {
        if (!json_is_number(sc) || !(json_number_value(sc) > 0))
            return dyn_err_set(err, DYN_EINVAL, "preprocess.scale must be a positive number");
        out->scale = (float)json_number_value(sc);
    }
    const json_t *rs = json_object_get(pp, "resize");
    if (rs && (!json_is_string(rs) || strcmp(json_string_value(rs), "bilinear") != 0))
        return dyn_err_set(err, DYN_EUNSUP, "preprocess.resize: only \"bilinear\" is supported");
    int rc = read_per_channel(json_object_get(pp, "mean"), "mean", out->c, 0.0f, out->mean, err);
    if (!rc) rc = read_per_channel(json_object_get(pp, "std"), "std", out->c, 1.0f, out->std, err);
    if (rc) return rc;
    for (int k = 0; k < out->c; k++)
        if (!(out->std[k] > 0) || !isfinite(out->mean[k]) || !isfinite(out->std[k]))
            return dyn_err_set(err, DYN_EINVAL, "preprocess: std must be > 0 and values finite");
    return 0;
}

/* The normalization both paths share: value v in 0..255 (float) → model input. */
static inline float norm_px(const dyn_preprocess *pp, int k, float v) {
    return (v / pp->scale - pp->mean[k]) / pp->std[k];
}

void dyn_preprocess_u8(const dyn_preprocess *pp, const uint8_t *chw, int64_t n, float *out) {
    int64_t plane = (int64_t)pp->h * pp->w, sample = plane * pp->c;
    for (int64_t i = 0; i < n; i++) out[i] = norm_px(pp, (int)((i % sample) / plane), chw[i]);
}

int dyn_image_to_input(const dyn_image *im, const dyn_preprocess *pp, float *out, dyn_err *err) {
    dyn_image conv = {0};
    const dyn_image *src = im;
    int rc;
    if (im->c != pp->c) {
        if ((rc = dyn_image_convert(im, pp->c, &conv, err))) return rc;
        src = &conv;
    }
    size_t plane = (size_t)pp->h * (size_t)pp->w;
    if (src->w == pp->w && src->h == pp->h) {
        for (int k = 0; k < pp->c; k++)
            for (size_t i = 0; i < plane; i++)
                out[(size_t)k * plane + i] = norm_px(pp, k, src->data[i * (size_t)pp->c + (size_t)k]);
    } else {
        if ((rc = dyn_image_resize_chw(src, pp->w, pp->h, out, err))) {
            dyn_image_free(&conv);
            return rc;
        }
        for (int k = 0; k < pp->c; k++)
            for (size_t i = 0; i < plane; i++)
                out[(size_t)k * plane + i] = norm_px(pp, k, out[(size_t)k * plane + i]);
    }
    dyn_image_free(&conv);
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

/* Decodes one image file into sample storage px (c*h*w bytes, CHW), rounding the resize. */
static int load_one(const char *path, int c, int h, int w, float *tmp, uint8_t *px, dyn_err *err) {
    uint8_t *buf = NULL;
    size_t size = 0;
    dyn_image im = {0}, conv = {0};
    int rc = read_file_bytes(path, DYN_IMAGE_DEFAULT_MAX_BYTES, &buf, &size, err);
    if (!rc) rc = dyn_image_decode(buf, size, NULL, &im, err);
    free(buf);
    if (!rc && im.c != c) rc = dyn_image_convert(&im, c, &conv, err);
    if (!rc) rc = dyn_image_resize_chw(conv.data ? &conv : &im, w, h, tmp, err);
    if (!rc) {
        for (size_t i = 0; i < (size_t)c * (size_t)h * (size_t)w; i++) {
            float v = roundf(tmp[i]);
            px[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    dyn_image_free(&im);
    dyn_image_free(&conv);
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
    memset(out, 0, sizeof *out);
    *class_names = NULL;
    *nclasses = 0;
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
    float *tmp = rc ? NULL : malloc(sizeof(float) * sample);
    if (!rc && !tmp) rc = dyn_err_set(err, DYN_ENOMEM, "image folder: out of memory");
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
            rc = load_one(fpath, c, h, w, tmp, out->pixels + (size_t)out->n * sample, err);
            if (!rc) out->labels[out->n++] = (uint8_t)k;
        }
    }
    dyn_imgfolder_names_free(files.v, files.n);
    free(tmp);
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
