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
 * luma (0.299 R + 0.587 G + 0.114 B, rounded) in PIL's 16-bit fixed point ((19595 R + 38470 G
 * + 7471 B + 32768) >> 16, what Image.convert("L") and so torchvision's Grayscale compute),
 * grey → RGB repeats the value. */
int dyn_image_convert(const dyn_image *src, int c, dyn_image *out, dyn_err *err);

/* Bilinear resampling of src into a float image [c][h][w] (planar, values 0..255, not rounded).
 * The filter is the triangle (tent) with pixel centres at (i + 0.5): for upscaling it is plain
 * bilinear interpolation with edges clamped (align_corners = false); for downscaling the tent is
 * widened by the scale factor so every source pixel contributes (antialiased, as PIL's BILINEAR
 * resize). out must hold c * h * w floats. DYN_EINVAL for non-positive sizes, DYN_ENOMEM. */
int dyn_image_resize_chw(const dyn_image *src, int w, int h, float *out, dyn_err *err);

/* ---------------------------------------------------------------- the model's input pipeline
 *
 * A model's "preprocess" metadata (a JSON object; api/openapi.yaml schema "Preprocess") says
 * how an image becomes its input, in this order:
 *
 *   1. decode (PNG / JPEG, above), then convert to the model's colour: "color": "gray" (1
 *      channel, ITU-R 601 luma), "rgb" or "bgr" (3 channels; bgr = RGB with the channel order
 *      reversed). Default: "gray" for a 1-channel input, "rgb" for a 3-channel one.
 *   2. "steps": an ordered list of geometric steps on the 8-bit image, mirroring torchvision's
 *      transforms on PIL images (each step yields an 8-bit image, as PIL does). Each step is an
 *      object with one of these keys:
 *        {"resize": S}            the shorter side becomes S, the longer one int(S * long /
 *                                 short) (torchvision Resize(S))
 *        {"resize": [H, W]}       stretch to H x W (torchvision Resize((H, W)))
 *        {"letterbox": [H, W], "fill": F}
 *                                 scale by min(H / h, W / w) keeping the aspect ratio (sides
 *                                 rounded, at least 1), then pad to H x W, centred (the extra
 *                                 odd pixel right / bottom) with value F (default 0)
 *        {"center_crop": [H, W]} or {"center_crop": S}
 *                                 torchvision CenterCrop: a side smaller than the crop is first
 *                                 padded with 0 ((d // 2) before, (d + 1) // 2 after), then the
 *                                 window at top = round((h - H) / 2), left = round((w - W) / 2)
 *                                 (Python's round: halves to even) is kept
 *        {"pad": P, "fill": F}    torchvision Pad: P = n (every side), [lr, tb] or [left, top,
 *                                 right, bottom], pixels of value F (default 0, 0..255)
 *      resize and letterbox take "interpolation": "bilinear" (default; PIL's antialiased
 *      bilinear with its 22-bit fixed-point weights and an 8-bit result after each axis, so it
 *      equals torchvision's PIL path) or "nearest" (PIL's nearest: source = floor((i + 0.5) *
 *      in / out)).
 *      A step producing more than DYN_PP_MAX_PIXELS pixels is an error (DYN_EINVAL).
 *      The image the steps end with must be the model's H x W; when it is not, that image is
 *      refused (DYN_EINVAL, the message giving both sizes). Where the steps fix the final size
 *      (a resize [H, W], a letterbox or a center_crop, then only pads), dyn_preprocess_parse
 *      checks it against the model already.
 *      Without "steps" (the original form), an image of another size is stretched to the
 *      model's size by dyn_image_resize_chw (the float tent filter, not rounded to 8 bits);
 *      "resize": "bilinear" (the only value) may name that.
 *   3. normalization, per channel k in the model's channel order (for bgr: B, G, R):
 *        x = (p / scale - mean[k]) / std[k]      scale default 255, mean 0, std 1;
 *      mean and std are a number or an array of 1 or C numbers.
 *   4. "layout": "NCHW" (default; the model's input shape is [C, H, W]) or "NHWC" (the input
 *      shape is [H, W, C]; values are written interleaved).
 *
 * "channels", "height", "width" may repeat the model's input size (they must then match it).
 * dyn_preprocess_check refuses unknown keys (a typo must not silently change a model's input:
 * callers taking the metadata from a person call it); dyn_preprocess_parse ignores them, as it
 * always did, so model files written with other keys keep loading.
 *
 * Examples. MNIST digits for a LeNet trained with transforms.Pad(2) + ToTensor() (input
 * [1, 32, 32]):
 *   {"color": "gray", "steps": [{"pad": 2}], "scale": 255, "mean": [0], "std": [1]}
 * ImageNet (Resize(256), CenterCrop(224), ToTensor(), Normalize(...); input [3, 224, 224]):
 *   {"color": "rgb", "steps": [{"resize": 256}, {"center_crop": [224, 224]}], "scale": 255,
 *    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
 * The original form, still read as before:
 *   {"channels": 1, "height": 28, "width": 28, "mean": [0.1307], "std": [0.3081],
 *    "scale": 255, "resize": "bilinear"}
 */

#define DYN_PP_MAX_STEPS 16
/* The largest image a step may produce (sides: at most 2 * DYN_IMAGE_DEFAULT_MAX_SIDE). */
#define DYN_PP_MAX_PIXELS (4 * DYN_IMAGE_DEFAULT_MAX_PIXELS)

typedef enum { DYN_PP_GRAY = 0, DYN_PP_RGB, DYN_PP_BGR } dyn_pp_color;
typedef enum { DYN_PP_BILINEAR = 0, DYN_PP_NEAREST } dyn_pp_interp;
typedef enum {
    DYN_PP_RESIZE_SHORT = 0, /* size: the shorter side */
    DYN_PP_RESIZE,           /* h, w: stretch */
    DYN_PP_LETTERBOX,        /* h, w, fill */
    DYN_PP_CENTER_CROP,      /* h, w */
    DYN_PP_PAD               /* pad[4] = left, top, right, bottom; fill */
} dyn_pp_op;

/* One geometric step (see above). */
typedef struct dyn_pp_step {
    dyn_pp_op op;
    int size, h, w;
    int pad[4];
    int fill;
    dyn_pp_interp interp;
} dyn_pp_step;

/* A parsed pipeline. c, h, w: the model's channels and input size (whatever the layout);
 * mean / std in the model's channel order. The first fields are those of the original
 * struct (c, h, w, scale, mean, std), which keep their meaning. */
typedef struct dyn_preprocess {
    int c, h, w;
    float scale;
    float mean[4], std[4];
    dyn_pp_color color;
    int hwc;    /* layout NHWC: the input shape is [H, W, C] */
    int nsteps; /* 0: the original behaviour (a float stretch when sizes differ) */
    dyn_pp_step steps[DYN_PP_MAX_STEPS];
} dyn_preprocess;

/* Parses pp (may be NULL: then 0..1 scaling of the model's input shape, mean 0, std 1) for a
 * model whose per-sample input shape is `input` ([C, H, W] with C 1 or 3, or [H, W, C] with
 * "layout": "NHWC"). Unknown keys are ignored (see above). DYN_EINVAL with a message naming the key when the metadata is malformed
 * or does not fit the model (channels, colour, a fixed final size other than the model's),
 * DYN_EUNSUP for a resize mode, interpolation or layout we do not implement. */
int dyn_preprocess_parse(const json_t *pp, const dyn_shape *input, dyn_preprocess *out,
                         dyn_err *err);

/* Checks pp's form alone, without a model (for a job whose model is not loaded yet): the
 * checks of dyn_preprocess_parse less those against the input shape, and no unknown keys (at
 * the top or in a step). pp must be an object. 0 or DYN_EINVAL / DYN_EUNSUP with err set. */
int dyn_preprocess_check(const json_t *pp, dyn_err *err);

/* Steps 1 and 2 on a decoded image: colour conversion (and the bgr channel swap) and the
 * geometric steps, into *out (new, 8-bit interleaved, pp->c channels in the model's order, the
 * model's size; dyn_image_free). Without steps, an image of another size is stretched with
 * dyn_image_resize_chw and rounded to 8 bits (what image-folder data sets always did). On
 * failure *out is zeroed: DYN_EINVAL (the steps do not end at the model's size: both sizes in
 * the message), DYN_ENOMEM. */
int dyn_preprocess_image(const dyn_image *im, const dyn_preprocess *pp, dyn_image *out,
                         dyn_err *err);

/* Decoded image → model input: the whole pipeline (colour, steps, normalization, layout).
 * Without steps the stretch is not rounded to 8 bits (the original behaviour). out must hold
 * pp->c * pp->h * pp->w floats. Errors as dyn_preprocess_image. */
int dyn_image_to_input(const dyn_image *im, const dyn_preprocess *pp, float *out, dyn_err *err);

/* Raw 8-bit pixels already at the model's size and in its channel order and layout (CHW, or
 * HWC for NHWC; n values, n a multiple of pp->c * pp->h * pp->w) → normalized floats (step 3
 * only). Same arithmetic as dyn_image_to_input, so a UINT8 tensor and the equivalent image
 * give bit-identical model inputs. */
void dyn_preprocess_u8(const dyn_preprocess *pp, const uint8_t *px, int64_t n, float *out);

/* Resamples src (8-bit, any channels) to w x h into *out (new; dyn_image_free) exactly as
 * PIL's Image.resize does for 8-bit images with BILINEAR (antialiased; horizontal pass first,
 * each pass rounded to 8 bits with 22-bit fixed-point weights) or NEAREST. DYN_EINVAL for
 * non-positive sizes, DYN_ENOMEM. */
int dyn_image_resize_u8(const dyn_image *src, int w, int h, dyn_pp_interp interp,
                        dyn_image *out, dyn_err *err);

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

/* dyn_imgfolder_load through a model's pipeline: every image goes through
 * dyn_preprocess_image (colour, steps; without steps the stretch above), so samples are 8-bit
 * CHW at the model's size in its channel order. An image the steps do not bring to the
 * model's size is an error naming the file (DYN_EINVAL). Otherwise as dyn_imgfolder_load. */
int dyn_imgfolder_load_pp(const char *dir, const dyn_preprocess *pp, dyn_dataset *out,
                          char ***class_names, int *nclasses, dyn_err *err);

/* Every sample of `in` (8-bit CHW, in->c channels of in->h x in->w, e.g. an IDX set) through
 * dyn_preprocess_image into *out (new; dyn_dataset_free): 8-bit CHW samples at the model's size
 * and channel order, the same labels and nclasses. When nothing changes (no steps, same
 * channels and size, colour not bgr) the pixels are copied. On failure *out is zeroed and err
 * names the first sample that failed: DYN_EINVAL, DYN_ENOMEM. */
int dyn_dataset_preprocess(const dyn_dataset *in, const dyn_preprocess *pp, dyn_dataset *out,
                           dyn_err *err);

/* Frees n names and the array (as returned by dyn_imgfolder_load). Safe on NULL. */
void dyn_imgfolder_names_free(char **names, int n);

#endif
