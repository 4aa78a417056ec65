/* dataset.c — data sets by name: resolution, normalization, loading a split. See dataset.h. */
#include "dataset.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"

static const char *const DIGIT_LABELS[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
static const char *const FASHION_LABELS[] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                             "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                                             "Ankle boot"};

static int is_fashion(const char *name) {
    return !strcmp(name, "fashion") || !strcmp(name, "fashion-mnist");
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void dyn_dataset_spec_init(dyn_dataset_spec *d, const char *name) {
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    int f = is_fashion(name);
    d->mean = f ? 0.2860f : 0.1307f;
    d->std = f ? 0.3530f : 0.3081f;
    d->labels = f ? FASHION_LABELS : DIGIT_LABELS;
    d->nlabels = 10;
}

int dyn_dataset_resolve(const char *root, const char *name, unsigned flags, dyn_dataset_spec *d,
                        dyn_err *err) {
    dyn_dataset_spec_init(d, name);
    int n;
    if (flags & DYN_DATASET_IN_ROOT) {
        if (!name[0] || name[0] == '.' || strchr(name, '/'))
            return dyn_err_set(err, DYN_EINVAL,
                               "data set name '%s' must name a directory of %s: no '/', and "
                               "not starting with '.'", d->name, root);
        n = snprintf(d->dir, sizeof d->dir, "%s/%s", root, is_fashion(name) ? "fashion" : name);
    } else if (!strcmp(name, "mnist") || is_fashion(name)) {
        n = snprintf(d->dir, sizeof d->dir, "%s/%s", root, is_fashion(name) ? "fashion" : name);
    } else {
        n = snprintf(d->dir, sizeof d->dir, "%s", name);
    }
    if (n < 0 || (size_t)n >= sizeof d->dir)
        return dyn_err_set(err, DYN_EINVAL, "data set '%s': the path is too long", d->name);
    if (!is_dir(d->dir))
        return dyn_err_set(err, DYN_EIO, "data set directory '%s' not found (run `make data`)",
                           d->dir);
    return 0;
}

/* dir/<stem>, or dir/<stem>.gz when only that one is readable, into p; 1 when readable. */
static int idx_file(const char *dir, const char *stem, char *p, size_t n) {
    snprintf(p, n, "%s/%s", dir, stem);
    if (access(p, R_OK) == 0) return 1;
    size_t l = strlen(p);
    if (l + 4 > n) return 0;
    strcat(p, ".gz");
    if (access(p, R_OK) == 0) return 1;
    p[l] = '\0';
    return 0;
}

static const char *idx_prefix(const char *split) {
    return strcmp(split, "train") ? "t10k" : "train";
}

int dyn_dataset_load_idx(const dyn_dataset_spec *d, const char *split, dyn_dataset *ds,
                         dyn_err *err) {
    char img[1100], lab[1100], stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", idx_prefix(split));
    idx_file(d->dir, stem, img, sizeof img);
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", idx_prefix(split));
    idx_file(d->dir, stem, lab, sizeof lab);
    int rc = dyn_idx_load(img, lab, ds, err);
    return rc ? dyn_err_prefix(err, "data set '%s'", d->name) : 0;
}

/* The image folder of a split into p: DIR/<split>/<class>/ when DIR/train exists, else
 * DIR/<class>/ (the training split alone). 0 or DYN_EIO (no test split). */
static int imgfolder_dir(const dyn_dataset_spec *d, const char *split, char *p, size_t n,
                         dyn_err *err) {
    const int train = !strcmp(split, "train");
    snprintf(p, n, "%s/train", d->dir);
    if (is_dir(p))
        snprintf(p, n, "%s/%s", d->dir, train ? "train" : "test");
    else if (!train)
        return dyn_err_set(err, DYN_EIO,
                           "data set '%s' has no test split (t10k-*-idx?-ubyte IDX files, or "
                           "%s/test/<class>/ images)", d->name, d->dir);
    else
        snprintf(p, n, "%s", d->dir);
    return 0;
}

int dyn_dataset_load(const dyn_dataset_spec *d, const char *split, const dyn_shape *input,
                     dyn_dataset *ds, dyn_err *err) {
    memset(ds, 0, sizeof *ds);
    char p[1100], stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", idx_prefix(split));
    if (idx_file(d->dir, stem, p, sizeof p)) return dyn_dataset_load_idx(d, split, ds, err);
    int rc = imgfolder_dir(d, split, p, sizeof p, err);
    if (rc) return rc;
    if (!input || input->ndim != 3)
        return dyn_err_set(err, DYN_EINVAL,
                           "data set '%s': image folders need a model with a [C, H, W] input",
                           d->name);
    char **names = NULL;
    int ncls = 0;
    rc = dyn_imgfolder_load(p, (int)input->d[0], (int)input->d[1], (int)input->d[2], ds,
                                &names, &ncls, err);
    dyn_imgfolder_names_free(names, ncls);
    return rc ? dyn_err_prefix(err, "data set '%s'", d->name) : 0;
}

void dyn_dataset_norm(const dyn_dataset_spec *d, const dyn_model *m, float *mean, float *std) {
    *mean = d->mean;
    *std = d->std;
    const json_t *pp = m ? m->preprocess : NULL;
    const json_t *mv = pp ? json_object_get(pp, "mean") : NULL;
    const json_t *sv = pp ? json_object_get(pp, "std") : NULL;
    if (json_is_array(mv)) mv = json_array_get(mv, 0);
    if (json_is_array(sv)) sv = json_array_get(sv, 0);
    if (json_is_number(mv) && json_is_number(sv) && json_number_value(sv) > 0) {
        *mean = (float)json_number_value(mv);
        *std = (float)json_number_value(sv);
    }
}

json_t *dyn_dataset_preprocess_json(const dyn_dataset_spec *d, const dyn_shape *input) {
    if (input->ndim != 3) return NULL;
    return json_pack("{s:i, s:i, s:i, s:[f], s:[f], s:f, s:s}", "channels", (int)input->d[0],
                     "height", (int)input->d[1], "width", (int)input->d[2], "mean",
                     (double)d->mean, "std", (double)d->std, "scale", 255.0, "resize",
                     "bilinear");
}

/* 1 when the image folder dir holds exactly one class folder, DYN_DATASET_UNLABELED. */
static int only_unlabeled(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, unl = 0;
    char p[1400];
    for (struct dirent *e; (e = readdir(d)) && n < 2;) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!is_dir(p)) continue;
        n++;
        unl |= !strcmp(e->d_name, DYN_DATASET_UNLABELED);
    }
    closedir(d);
    return n == 1 && unl;
}

int dyn_dataset_labeled(const dyn_dataset_spec *d) {
    char p[1100];
    snprintf(p, sizeof p, "%s/.dataset.json", d->dir);
    json_t *j = json_load_file(p, 0, NULL);
    const json_t *l = json_object_get(j, "labeled");
    const int known = json_is_boolean(l), labeled = json_is_true(l);
    json_decref(j);
    if (known) return labeled;
    if (idx_file(d->dir, "train-images-idx3-ubyte", p, sizeof p) ||
        idx_file(d->dir, "t10k-images-idx3-ubyte", p, sizeof p))
        return 1;
    snprintf(p, sizeof p, "%s/train", d->dir);
    return !only_unlabeled(is_dir(p) ? p : d->dir);
}

int dyn_dataset_model_pp(const dyn_dataset_spec *d, const dyn_model *m, dyn_preprocess *pp,
                         dyn_err *err) {
    dyn_err perr = {0};
    int rc = dyn_preprocess_parse(m->preprocess, &m->input, pp, &perr);
    if (rc && !m->preprocess) { /* no metadata: only the shape can fail */
        char shape[64];
        dyn_shape_str(&m->input, shape, sizeof shape);
        return dyn_err_set(err, DYN_EUNSUP, "the model's input %s is not an image", shape);
    }
    if (rc) {
        if (!err) return rc;
        *err = perr;
        return dyn_err_prefix(err, "the model's preprocess metadata");
    }
    if (!m->preprocess)
        for (int k = 0; k < 4; k++) {
            pp->mean[k] = d->mean;
            pp->std[k] = d->std;
        }
    return 0;
}

int dyn_dataset_load_for_model(const dyn_dataset_spec *d, const char *split, const dyn_model *m,
                               dyn_dataset *ds, dyn_err *err) {
    memset(ds, 0, sizeof *ds);
    dyn_preprocess pp;
    int rc = dyn_dataset_model_pp(d, m, &pp, err);
    if (rc == DYN_EUNSUP) return dyn_dataset_load(d, split, &m->input, ds, err);
    if (rc) return rc;
    char p[1100], stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", idx_prefix(split));
    if (idx_file(d->dir, stem, p, sizeof p)) {
        dyn_dataset raw;
        if ((rc = dyn_dataset_load_idx(d, split, &raw, err))) return rc;
        if (pp.nsteps == 0 && pp.c == raw.c && pp.h == raw.h && pp.w == raw.w &&
            pp.color != DYN_PP_BGR) {
            *ds = raw; /* nothing to do */
            return 0;
        }
        rc = dyn_dataset_preprocess(&raw, &pp, ds, err);
        dyn_dataset_free(&raw);
        return rc ? dyn_err_prefix(err, "data set '%s'", d->name) : 0;
    }
    if ((rc = imgfolder_dir(d, split, p, sizeof p, err))) return rc;
    char **names = NULL;
    int ncls = 0;
    rc = dyn_imgfolder_load_pp(p, &pp, ds, &names, &ncls, err);
    dyn_imgfolder_names_free(names, ncls);
    return rc ? dyn_err_prefix(err, "data set '%s'", d->name) : 0;
}

int dyn_dataset_model_norm(const dyn_dataset_spec *d, const dyn_model *m, dyn_data_norm *n,
                           dyn_err *err) {
    memset(n, 0, sizeof *n);
    dyn_preprocess pp;
    int rc = dyn_dataset_model_pp(d, m, &pp, err);
    if (rc == DYN_EUNSUP) {
        n->c = 1;
        n->scale = 255.0f;
        dyn_dataset_norm(d, m, &n->mean[0], &n->std[0]);
        return 0;
    }
    if (rc) return rc;
    n->c = pp.c;
    n->scale = pp.scale;
    memcpy(n->mean, pp.mean, sizeof n->mean);
    memcpy(n->std, pp.std, sizeof n->std);
    n->hwc = pp.hwc;
    return 0;
}
