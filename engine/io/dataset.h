/* dataset.h — data sets by name: where a named set lives, its normalization and class labels,
 * and loading its training or test split from IDX files or from a folder of images.
 *
 * Names, resolved against a data root the caller chooses (the CLI: $DYN_DATA_DIR or "data";
 * dynd: its data_dir):
 *   "mnist"                    root/mnist
 *   "fashion", "fashion-mnist" root/fashion, with Fashion-MNIST's normalization and labels
 *   anything else              a directory holding a data set: the name taken as a path, or,
 *                              with DYN_DATASET_IN_ROOT, root/<name> (the name must then be a
 *                              plain file name: no '/', not starting with '.')
 * Sets other than Fashion-MNIST get MNIST's normalization, (x/255 − 0.1307) / 0.3081, and the
 * digit labels "0".."9".
 *
 * A data set directory holds either the four IDX files (train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each possibly .gz),
 * or PNG / JPEG images in one sub-folder per class: DIR/train/<class>/ and DIR/test/<class>/,
 * or DIR/<class>/ alone as the training split (io/image.h, dyn_imgfolder_load).
 *
 * Errors: 0 or a DYN_E* code with err set to a message that names the data set and, where it
 * can, says what to do about it.
 */
#ifndef DYN_IO_DATASET_H
#define DYN_IO_DATASET_H

#include "../data.h"
#include "../model.h"
#include "idx.h"
#include "image.h"

/* Resolve every name to a directory of the root, refusing names that could leave it. For
 * names that come from someone other than the operator (an HTTP request). */
#define DYN_DATASET_IN_ROOT 1u

/* A resolved data set name. Holds no resources (nothing to free). */
typedef struct dyn_dataset_spec {
    char name[256];            /* as given (cut to fit), for messages */
    char dir[1024];            /* the data set's directory */
    float mean, std;           /* normalization (x/255 − mean) / std */
    const char *const *labels; /* class names, static strings */
    int nlabels;               /* 10 */
} dyn_dataset_spec;

/* Fills d with the normalization and labels of data set `name`, without touching the file
 * system (d->dir is left empty): for a model that only takes the normalization of a set. */
void dyn_dataset_spec_init(dyn_dataset_spec *d, const char *name);

/* Resolves `name` against the data root `root` (see above; flags: 0 or DYN_DATASET_IN_ROOT)
 * and checks that its directory exists. Returns 0, DYN_EINVAL (a name that DYN_DATASET_IN_ROOT
 * refuses, a path too long) or DYN_EIO (no such directory). */
int dyn_dataset_resolve(const char *root, const char *name, unsigned flags, dyn_dataset_spec *d,
                        dyn_err *err);

/* Loads split "train" (any other value: the test split) of a resolved data set for a model
 * whose per-sample input is `input` ([C, H, W]; used to decode and resize images, and may be
 * NULL for IDX sets). IDX files when the split's image file is there, else an image folder.
 * On success ds is filled (the caller frees it with dyn_dataset_free); on failure ds is zeroed.
 * Errors: DYN_EIO (no such split, unreadable files), DYN_EFORMAT / DYN_EUNSUP (damaged files),
 * DYN_EINVAL (an image folder for a model without a [C, H, W] input, no classes), DYN_ENOMEM. */
int dyn_dataset_load(const dyn_dataset_spec *d, const char *split, const dyn_shape *input,
                     dyn_dataset *ds, dyn_err *err);

/* dyn_dataset_load for IDX sets alone (no model yet to size images by). */
int dyn_dataset_load_idx(const dyn_dataset_spec *d, const char *split, dyn_dataset *ds,
                         dyn_err *err);

/* The class folder an unlabelled image set keeps its images in (its only class). */
#define DYN_DATASET_UNLABELED "_unlabeled"

/* 1 when the images of a resolved data set carry class labels, else 0: what the manifest
 * DIR/.dataset.json (written by dynd for an uploaded set) says in "labeled"; without one, IDX
 * sets are labelled and an image folder is not when its only class folder (under DIR/train/
 * when there is one) is DYN_DATASET_UNLABELED. An unlabelled set loads as one class: good for
 * calibration, not for accuracy. */
int dyn_dataset_labeled(const dyn_dataset_spec *d);

/* The normalization (x/255 − mean) / std that model m expects: its preprocess metadata (the
 * first channel's) when it has one, else data set d's. m may be NULL. The scalar form, for
 * callers that predate per-channel views; dyn_dataset_model_norm gives every channel. */
void dyn_dataset_norm(const dyn_dataset_spec *d, const dyn_model *m, float *mean, float *std);

/* ---- data through a model's input pipeline (io/image.h: colour, steps, normalization) ----
 *
 * Calibration, evaluation and fine-tuning data reach a model through ITS pipeline, the one
 * /v1/models/{name}/classify applies: each raw image (an IDX sample, a PNG / JPEG of an image
 * folder) goes through the colour conversion and geometric steps as an 8-bit image (as
 * torchvision's PIL path does), giving 8-bit CHW samples at the model's size in its channel
 * order; a view then normalizes them per channel (dyn_data_norm) and writes the model's layout.
 * E.g. MNIST's 28x28 IDX digits for a model whose pipeline is {"steps": [{"pad": 2}]} become
 * 32x32, zero-padded.
 *
 *   dyn_dataset_spec d;  dyn_dataset ds;  dyn_data_norm nm;  dyn_data_view v;
 *   dyn_dataset_resolve(root, "mnist", 0, &d, &err);
 *   dyn_dataset_load_for_model(&d, "test", m, &ds, &err);
 *   dyn_dataset_model_norm(&d, m, &nm, &err);
 *   dyn_data_all(&ds, nm.mean[0], nm.std[0], &v, &err);
 *   dyn_data_view_set_norm(&v, &nm, &err);        → dyn_data_view_source(&v)
 *
 * A model without preprocess metadata gets the original behaviour: no steps (a stretch to its
 * size when the set's images differ) and the data set's normalization on every channel. A model
 * whose input is not an image ([C, H, W] / NHWC [H, W, C] with C 1 or 3) gets its samples as
 * dyn_dataset_load gives them and the data set's scalar normalization. */

/* The pipeline of model m for data set d into *pp: m's preprocess metadata parsed against its
 * input, or, when m has none, no steps and d's mean / std on every channel. 0; DYN_EUNSUP
 * when m's input is not an image (err says so; the caller may then feed samples as they are);
 * DYN_EINVAL when m's metadata does not fit m (err names the key). */
int dyn_dataset_model_pp(const dyn_dataset_spec *d, const dyn_model *m, dyn_preprocess *pp,
                         dyn_err *err);

/* dyn_dataset_load through model m's pipeline (above): IDX samples are transformed with
 * dyn_dataset_preprocess, image folders decoded with dyn_imgfolder_load_pp. For a model whose
 * input is not an image, exactly dyn_dataset_load(d, split, &m->input, ...). On success ds
 * holds 8-bit CHW samples at the model's size (caller frees with dyn_dataset_free); on failure
 * ds is zeroed. Errors as dyn_dataset_load, and DYN_EINVAL when m's metadata does not fit m or
 * an image does not end at the model's size (err names the data set and sample or file). */
int dyn_dataset_load_for_model(const dyn_dataset_spec *d, const char *split, const dyn_model *m,
                               dyn_dataset *ds, dyn_err *err);

/* The per-channel normalization and layout of model m for data set d, for
 * dyn_data_view_set_norm: from dyn_dataset_model_pp, or for a model whose input is not an
 * image c = 1, scale 255 and dyn_dataset_norm's mean / std. 0 or DYN_EINVAL (m's metadata
 * does not fit m). */
int dyn_dataset_model_norm(const dyn_dataset_spec *d, const dyn_model *m, dyn_data_norm *n,
                           dyn_err *err);

/* Preprocess metadata for a model with per-sample input `input` trained on (or taking the
 * normalization of) data set d: {"channels", "height", "width", "mean": [..], "std": [..],
 * "scale": 255, "resize": "bilinear"}. A new reference (the caller owns it, e.g. by storing it
 * in m->preprocess), or NULL when input is not [C, H, W] or out of memory. */
json_t *dyn_dataset_preprocess_json(const dyn_dataset_spec *d, const dyn_shape *input);

#endif
