#include "zoo.h"

#include <string.h>

dyn_zoo_opts dyn_zoo_opts_default(void) {
    dyn_zoo_opts o = {.arch = "lenet5", .fc_H = 4, .fc_q = 4, .conv_H = 4, .conv_q = 4,
                      .kernel = "l1", .exec = "auto", .hidden = 1024, .classes = 10,
                      .channels = 1, .height = 28, .width = 28};
    return o;
}

static int add(dyn_model *m, const char *op, const char *name, json_t *attrs, dyn_err *err) {
    dyn_layer *l = dyn_layer_create(op, name, attrs, err);
    json_decref(attrs);
    if (!l) return err ? err->code : DYN_EINVAL;
    int rc = dyn_model_add_seq(m, l, err);
    return rc < 0 ? rc : 0;
}

static int add_fc(dyn_model *m, const dyn_zoo_opts *o, const char *name, int in, int out,
                  int last, dyn_err *err) {
    if (o->dyn && o->fc_H > 0 && !(last && o->dense_last))
        return add(m, "dyn_linear", name,
                   json_pack("{s:i, s:i, s:i, s:i, s:s, s:s}", "in", in, "out", out, "H", o->fc_H,
                             "q", o->fc_q, "kernel", o->kernel, "exec", o->exec),
                   err);
    return add(m, "linear", name, json_pack("{s:i, s:i}", "in", in, "out", out), err);
}

static int add_conv(dyn_model *m, const dyn_zoo_opts *o, const char *name, int cin, int cout,
                    int k, int pad, dyn_err *err) {
    if (o->dyn && o->conv_H > 0)
        return add(m, "dyn_conv2d", name,
                   json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s}", "in_channels", cin,
                             "out_channels", cout, "kernel", k, "padding", pad, "H", o->conv_H,
                             "q", o->conv_q, "kernel_fn", o->kernel, "exec", o->exec),
                   err);
    return add(m, "conv2d", name,
               json_pack("{s:i, s:i, s:i, s:i}", "in_channels", cin, "out_channels", cout,
                         "kernel", k, "padding", pad),
               err);
}

/* One row per layer: kind, name, in, out, kernel, padding. */
typedef struct zoo_row {
    const char *kind, *name;
    int in, out, k, pad;
} zoo_row;

static int add_bn(dyn_model *m, const dyn_zoo_opts *o, const zoo_row *r, int rc, dyn_err *err) {
    if (rc || !o->bn) return rc;
    char name[64];
    snprintf(name, sizeof name, "%s_bn", r->name);
    return add(m, "batchnorm", name, json_pack("{s:i}", "channels", r->out), err);
}

static int add_row(dyn_model *m, const dyn_zoo_opts *o, const zoo_row *r, int last, dyn_err *err) {
    if (strcmp(r->kind, "fc") == 0) {
        int rc = add_fc(m, o, r->name, r->in, r->out, last, err);
        return last ? rc : add_bn(m, o, r, rc, err);
    }
    if (strcmp(r->kind, "conv") == 0)
        return add_bn(m, o, r, add_conv(m, o, r->name, r->in, r->out, r->k, r->pad, err), err);
    if (strcmp(r->kind, "maxpool") == 0)
        return add(m, "maxpool2d", r->name, json_pack("{s:i}", "kernel", r->k), err);
    return add(m, r->kind, r->name, json_object(), err); /* relu, flatten */
}

dyn_model *dyn_zoo_build(const dyn_zoo_opts *o, dyn_err *err) {
    dyn_shape in = {.ndim = 3, .d = {o->channels, o->height, o->width}};
    int f = o->channels * o->height * o->width, hid = o->hidden, cls = o->classes;
    int lf = 16 * (((o->height) / 2 - 4) / 2) * (((o->width) / 2 - 4) / 2);
    const zoo_row mlp[] = {{"flatten", "flatten", 0, 0, 0, 0}, {"fc", "fc1", f, hid, 0, 0},
                           {"relu", "relu1", 0, 0, 0, 0},      {"fc", "fc2", hid, hid, 0, 0},
                           {"relu", "relu2", 0, 0, 0, 0},      {"fc", "fc3", hid, cls, 0, 0}};
    const zoo_row lenet[] = {
        {"conv", "conv1", o->channels, 6, 5, 2}, {"relu", "relu1", 0, 0, 0, 0},
        {"maxpool", "pool1", 0, 0, 2, 0},        {"conv", "conv2", 6, 16, 5, 0},
        {"relu", "relu2", 0, 0, 0, 0},           {"maxpool", "pool2", 0, 0, 2, 0},
        {"flatten", "flatten", 0, 0, 0, 0},      {"fc", "fc1", lf, 120, 0, 0},
        {"relu", "relu3", 0, 0, 0, 0},           {"fc", "fc2", 120, 84, 0, 0},
        {"relu", "relu4", 0, 0, 0, 0},           {"fc", "fc3", 84, cls, 0, 0}};
    const zoo_row *rows;
    int nrows;
    if (strcmp(o->arch, "mlp") == 0) {
        rows = mlp;
        nrows = (int)DYN_ARRAY_LEN(mlp);
    } else if (strcmp(o->arch, "lenet5") == 0) {
        rows = lenet;
        nrows = (int)DYN_ARRAY_LEN(lenet);
    } else {
        dyn_err_set(err, DYN_EINVAL, "unknown architecture '%s' (known: mlp, lenet5)", o->arch);
        return NULL;
    }
    dyn_model *m = dyn_model_new(&in);
    if (!m) {
        dyn_err_set(err, DYN_ENOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < nrows; i++) {
        if (add_row(m, o, &rows[i], i == nrows - 1, err)) {
            dyn_model_free(m);
            return NULL;
        }
    }
    return m;
}
