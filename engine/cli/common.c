/* common.c — helpers shared by the dyn subcommands (see cli.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *FASHION_LABELS[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
static const char *DIGIT_LABELS[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

int cli_data_resolve(const char *name, data_spec *d, dyn_err *err) {
    memset(d, 0, sizeof *d);
    const char *root = getenv("DYN_DATA_DIR");
    if (!root) root = "data";
    d->labels = DIGIT_LABELS;
    d->mean = 0.1307f;
    d->std = 0.3081f;
    if (strcmp(name, "mnist") == 0) {
        snprintf(d->dir, sizeof d->dir, "%s/mnist", root);
    } else if (strcmp(name, "fashion") == 0 || strcmp(name, "fashion-mnist") == 0) {
        snprintf(d->dir, sizeof d->dir, "%s/fashion", root);
        d->mean = 0.2860f;
        d->std = 0.3530f;
        d->labels = FASHION_LABELS;
        d->is_fashion = 1;
    } else {
        snprintf(d->dir, sizeof d->dir, "%s", name);
    }
    struct stat st;
    if (stat(d->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return dyn_err_set(err, DYN_EIO, "data set directory '%s' not found (run `make data`)",
                           d->dir);
    return 0;
}

int cli_data_load(const data_spec *d, const char *split, dyn_dataset *ds, dyn_err *err) {
    char img[1200], lab[1200];
    const char *pre = strcmp(split, "train") == 0 ? "train" : "t10k";
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte", d->dir, pre);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte", d->dir, pre);
    if (access(img, R_OK) != 0) strcat(img, ".gz");
    if (access(lab, R_OK) != 0) strcat(lab, ".gz");
    return dyn_idx_load(img, lab, ds, err);
}

_Noreturn void cli_die(const char *what, const dyn_err *err) {
    fprintf(stderr, "dyn %s: %s\n", what, err->msg[0] ? err->msg : "failed");
    exit(1);
}

void cli_fmt_time(double s, char *buf, size_t n) {
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

/* On a terminal the line is redrawn in place every second; in a log (not a TTY) one line is
 * written every 15 s and at each epoch's end. */
void cli_progress_line(void *ctx, const dyn_progress *p) {
    (void)ctx;
    static int tty = -1;
    static double last_log = -1e9;
    if (tty < 0) tty = isatty(2);
    if (!tty && !p->epoch_end && p->elapsed_s - last_log < 15.0) return;
    last_log = p->elapsed_s;
    char eta[32], el[32];
    cli_fmt_time(p->eta_s, eta, sizeof eta);
    cli_fmt_time(p->elapsed_s, el, sizeof el);
    fprintf(stderr, "%sepoch %d/%d  step %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s  elapsed %s  ETA %s",
            tty ? "\r" : "", p->epoch, p->epochs, (long long)p->step, (long long)p->steps, (double)p->loss,
            100.0 * p->acc, p->images_per_s, el, eta);
    if (p->epoch_end) {
        if (p->val_acc >= 0) fprintf(stderr, "  val %.2f%%", 100.0 * p->val_acc);
    }
    if (p->epoch_end || !tty) fprintf(stderr, "\n");
    fflush(stderr);
}

int cli_parse_hq(const char *s, int *H, int *q) {
    return sscanf(s, "%d,%d", H, q) == 2 && *H >= 0 && *q >= 0 ? 0 : -1; /* 0,0 = dense */
}

json_t *cli_preprocess_json(const dyn_model *m, const data_spec *d) {
    return json_pack("{s:i, s:i, s:i, s:[f], s:[f], s:f, s:s}", "channels", (int)m->input.d[0],
                     "height", (int)m->input.d[1], "width", (int)m->input.d[2], "mean",
                     (double)d->mean, "std", (double)d->std, "scale", 255.0, "resize",
                     "bilinear");
}


/* ---- shared by convert and finetune (issue 3) ---------------------------------------------- */

static int has_idx(const char *dir) {
    char p[1200];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    if (access(p, R_OK) == 0) return 1;
    strcat(p, ".gz");
    return access(p, R_OK) == 0;
}

int cli_data_load_for(const char *name, const char *split, const dyn_shape *input, data_spec *d,
                      dyn_dataset *ds, dyn_err *err) {
    memset(ds, 0, sizeof *ds);
    int rc = cli_data_resolve(name, d, err);
    if (rc) return rc;
    if (has_idx(d->dir)) return cli_data_load(d, split, ds, err);
    /* an image folder: DIR/<split>/<class>/ when DIR/train exists, else DIR/<class>/ (train) */
    char sub[1200];
    struct stat st;
    snprintf(sub, sizeof sub, "%s/train", d->dir);
    const char *dir = d->dir;
    if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(sub, sizeof sub, "%s/%s", d->dir, strcmp(split, "train") == 0 ? "train" : "test");
        dir = sub;
    } else if (strcmp(split, "train") != 0) {
        return dyn_err_set(err, DYN_EIO,
                           "'%s' has no test split (IDX files, or %s/test/<class>/ images)",
                           d->dir, d->dir);
    }
    if (input->ndim != 3)
        return dyn_err_set(err, DYN_EINVAL, "image folders need a model with a [C, H, W] input");
    char **names = NULL;
    int ncls = 0;
    rc = dyn_imgfolder_load(dir, (int)input->d[0], (int)input->d[1], (int)input->d[2], ds, &names,
                            &ncls, err);
    dyn_imgfolder_names_free(names, ncls);
    return rc;
}

void cli_model_norm(const dyn_model *m, const data_spec *d, float *mean, float *std) {
    *mean = d->mean;
    *std = d->std;
    const json_t *pp = m->preprocess;
    const json_t *mv = pp ? json_object_get(pp, "mean") : NULL, *sv = pp ? json_object_get(pp, "std") : NULL;
    if (json_is_array(mv)) mv = json_array_get(mv, 0);
    if (json_is_array(sv)) sv = json_array_get(sv, 0);
    if (json_is_number(mv) && json_is_number(sv) && json_number_value(sv) > 0) {
        *mean = (float)json_number_value(mv);
        *std = (float)json_number_value(sv);
    }
}
