/* image.h — PNG / JPEG decoding from memory, channel conversion, resizing and the model's input
 * preprocessing (image → float CHW tensor), plus image-folder data sets.
 *
 * Decoding is defensive: the format is detected by its magic bytes (never by a file name or a
 * media type), the compressed size and the dimensions the header claims are checked against
 * dyn_image_limits *before* any pixel memory is allocated (a PNG header claiming 100000×100000
 * is refused after reading 33 bytes), and a truncated or damaged stream is an error, never a
 * half-grey picture. Alpha is ignored (dropped, not composited); 16-bit PNGs are reduced to 8
 * bits; palettes and low-bit grey are expanded.
 *
 * Pixels are 8-bit, interleaved HWC, c = 1 (grey) or 3 (RGB) after decoding.
 *
 * Error convention (base.h): 0 or a negative DYN_E* code with err set:
 *   DYN_EUNSUP  not a PNG or JPEG (magic bytes), or a JPEG colour space we cannot convert (CMYK)
 *   DYN_EFORMAT damaged or truncated stream
 *   DYN_ENOMEM  over a limit (bytes, width, height, pixels) or allocation failed — the message
 *               names the limit and the value so a person can act on it
 *   DYN_EINVAL  bad arguments or preprocess metadata that does not fit the model
 */
#ifndef DYN_IO_IMAGE_H
#define DYN_IO_IMAGE_H

#include <jansson.h>

#include "../base.h"
#include "../tensor.h"
#include "idx.h"

typedef enum { DYN_IMAGE_UNKNOWN = 0, DYN_IMAGE_PNG, DYN_IMAGE_JPEG, DYN_IMAGE_FORMAT_COUNT } dyn_image_format;

/* An 8-bit interleaved image: data[(y * w + x) * c + k]. data is owned (dyn_image_free). */
typedef struct dyn_image {
    int w, h, c;
    uint8_t *data;
} dyn_image;

/* Limits checked before allocating. A zero field means "the default" below. */
typedef struct dyn_image_limits {
    int max_width, max_height;
    int64_t max_pixels;
    size_t max_bytes; /* compressed size */
} dyn_image_limits;

#define DYN_IMAGE_DEFAULT_MAX_SIDE 8192
#define DYN_IMAGE_DEFAULT_MAX_PIXELS ((int64_t)16 * 1024 * 1024)
#define DYN_IMAGE_DEFAULT_MAX_BYTES ((size_t)32 * 1024 * 1024)

/* The format named by the first bytes of data (8 are enough), or DYN_IMAGE_UNKNOWN. */
dyn_image_format dyn_image_detect(const void *data, size_t size);

/* Decodes a PNG or JPEG held in memory (`size` bytes at `data`, borrowed) into *out (c = 1 or
 * 3; the caller frees it with dyn_image_free). lim may be NULL (defaults). On failure *out is
 * zeroed. Errors as in the header comment. Thread-safe (no shared state). */
int dyn_image_decode(const void *data, size_t size, const dyn_image_limits *lim, dyn_image *out,
                     dyn_err *err);

/* Frees im->data and zeroes *im. Safe on a zeroed image. */
void dyn_image_free(dyn_image *im);

/* Encodes an 8-bit image (c = 1 or 3) as PNG into a new malloc'd buffer (*buf, *size; the caller
 * frees *buf with free()). Used by tests and tools. DYN_EINVAL / DYN_ENOMEM / DYN_EFORMAT. */
int dyn_image_encode_png(const dyn_image *im, void **buf, size_t *size, dyn_err *err);

/* Converts src to c channels (1 or 3) into *out (new; dyn_image_free). RGB → grey is ITU-R 601
 * luma (0.299 R + 0.587 G + 0.114 B, rounded), grey → RGB repeats the value. */
int dyn_image_convert(const dyn_image *src, int c, dyn_image *out, dyn_err *err);

/* Bilinear resampling of src into a float image [c][h][w] (planar, values 0..255, not rounded).
 * The filter is the triangle (tent) with pixel centres at (i + 0.5): for upscaling it is plain
 * bilinear interpolation with edges clamped (align_corners = false); for downscaling the tent is
 * widened by the scale factor so every source pixel contributes (antialiased, as PIL's BILINEAR
 * resize). out must hold c * h * w floats. DYN_EINVAL for non-positive sizes, DYN_ENOMEM. */
int dyn_image_resize_chw(const dyn_image *src, int w, int h, float *out, dyn_err *err);

/* Input preprocessing of a model, parsed from its "preprocess" metadata:
 *   {"channels": C, "height": H, "width": W, "mean": [..C or 1..], "std": [..C or 1..],
 *    "scale": 255, "resize": "bilinear"}
 * A pixel value p becomes (p / scale - mean[k]) / std[k]. */
typedef struct dyn_preprocess {
    int c, h, w;
    float scale;
    float mean[4], std[4];
} dyn_preprocess;

/* Parses pp (may be NULL: then 0..1 scaling of the model's input shape, mean 0, std 1) for a
 * model whose per-sample input shape is `input` (must be [C, H, W] with C 1 or 3 for images).
 * DYN_EINVAL with a message when the metadata does not fit the model, DYN_EUNSUP for a resize
 * mode other than "bilinear". */
int dyn_preprocess_parse(const json_t *pp, const dyn_shape *input, dyn_preprocess *out,
                         dyn_err *err);

/* Decoded image → model input: channel conversion, resize to (pp->h, pp->w) when the size
 * differs, normalization. out must hold pp->c * pp->h * pp->w floats (CHW). */
int dyn_image_to_input(const dyn_image *im, const dyn_preprocess *pp, float *out, dyn_err *err);

/* Raw 8-bit CHW pixels (n values, n a multiple of pp->c * pp->h * pp->w) → normalized floats.
 * Same arithmetic as dyn_image_to_input, so a UINT8 tensor and the equivalent image give
 * bit-identical model inputs. */
void dyn_preprocess_u8(const dyn_preprocess *pp, const uint8_t *chw, int64_t n, float *out);

/* Loads an image-folder data set: `dir` holds one sub-folder per class (class k = the k-th name
 * in byte order; names starting with '.' are skipped), each holding PNG / JPEG files (other
 * files are skipped; an undecodable PNG/JPEG is an error naming the file). Every image is
 * converted to c channels (1 or 3) and resized to h × w (bilinear, rounded to 8 bits).
 * On success: *out is a new data set (dyn_dataset_free), *class_names a new malloc'd array of
 * *nclasses malloc'd strings (free each and the array with free(), or dyn_imgfolder_names_free).
 * On failure everything is zeroed/NULL and err names the folder or file: DYN_EIO (cannot read),
 * DYN_EFORMAT / DYN_EUNSUP (a bad image), DYN_EINVAL (bad c/h/w, no classes, no images, more
 * than 256 classes), DYN_ENOMEM. */
int dyn_imgfolder_load(const char *dir, int c, int h, int w, dyn_dataset *out,
                       char ***class_names, int *nclasses, dyn_err *err);

/* Frees n names and the array (as returned by dyn_imgfolder_load). Safe on NULL. */
void dyn_imgfolder_names_free(char **names, int n);

#endif
