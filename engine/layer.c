#include "layer.h"

#include <string.h>

static const dyn_layer_ops *const g_ops[] = {
    &dyn_op_linear,    &dyn_op_conv2d,    &dyn_op_maxpool2d,  &dyn_op_avgpool2d,
    &dyn_op_globalavgpool, &dyn_op_relu,  &dyn_op_batchnorm,  &dyn_op_flatten,
    &dyn_op_dyn_linear, &dyn_op_dyn_conv2d, &dyn_op_add,   &dyn_op_mul,
    &dyn_op_sub,       &dyn_op_div,       &dyn_op_sigmoid,  &dyn_op_clip,
    &dyn_op_concat,    &dyn_op_scale,     &dyn_op_permute,  &dyn_op_matmul,
    &dyn_op_softmax,   &dyn_op_layernorm, &dyn_op_reduce_mean, &dyn_op_affine,
    &dyn_op_cat_param, &dyn_op_erf,       &dyn_op_sqrt,     &dyn_op_pow,
    &dyn_op_riem,
};

const dyn_layer_ops *dyn_layer_ops_find(const char *op_name) {
    for (size_t i = 0; i < DYN_ARRAY_LEN(g_ops); i++)
        if (strcmp(g_ops[i]->name, op_name) == 0) return g_ops[i];
    return NULL;
}

int dyn_layer_ops_count(void) { return (int)DYN_ARRAY_LEN(g_ops); }
const dyn_layer_ops *dyn_layer_ops_at(int i) { return g_ops[i]; }

dyn_layer *dyn_layer_create(const char *op_name, const char *name, const json_t *attrs,
                            dyn_err *err) {
    const dyn_layer_ops *ops = dyn_layer_ops_find(op_name);
    if (!ops) {
        dyn_err_set(err, DYN_EUNSUP, "layer '%s': unknown op '%s'", name, op_name);
        return NULL;
    }
    if (strlen(name) >= sizeof(((dyn_layer *)0)->name)) {
        dyn_err_set(err, DYN_EINVAL, "layer name '%.40s...' is longer than %zu characters", name,
                    sizeof(((dyn_layer *)0)->name) - 1);
        return NULL;
    }
    dyn_layer *l = calloc(1, sizeof *l);
    if (!l) {
        dyn_err_set(err, DYN_ENOMEM, "out of memory creating layer '%s'", name);
        return NULL;
    }
    l->ops = ops;
    l->ninputs = ops->ninputs;
    snprintf(l->name, sizeof l->name, "%s", name);
    json_t *empty = NULL;
    if (!attrs) attrs = empty = json_object();
    if (!json_is_object(attrs)) {
        dyn_err_set(err, DYN_EINVAL, "layer '%s': attributes must be a JSON object", name);
        dyn_layer_free(l);
        return NULL;
    }
    int rc = ops->create(l, attrs, err);
    json_decref(empty);
    if (rc) {
        dyn_layer_free(l);
        return NULL;
    }
    return l;
}

void dyn_layer_free(dyn_layer *l) {
    if (!l) return;
    if (l->ops && l->ops->destroy) l->ops->destroy(l);
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        dyn_tensor_release(&p->value);
        dyn_tensor_release(&p->grad);
        dyn_tensor_release(&p->m);
        dyn_tensor_release(&p->v);
    }
    free(l);
}

dyn_param *dyn_layer_param_add(dyn_layer *l, const char *name, int ndim, const int64_t *shape,
                               int trainable, dyn_err *err) {
    if (l->nparams >= DYN_LAYER_MAX_PARAMS) {
        dyn_err_set(err, DYN_EINVAL, "layer '%s': too many parameters", l->name);
        return NULL;
    }
    dyn_param *p = &l->params[l->nparams];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    if (dyn_tensor_init(&p->value, ndim, shape, err)) {
        dyn_err_prefix(err, "layer '%s' param '%s'", l->name, name);
        return NULL;
    }
    if (trainable && dyn_tensor_init(&p->grad, ndim, shape, err)) {
        dyn_tensor_release(&p->value);
        dyn_err_prefix(err, "layer '%s' param '%s'", l->name, name);
        return NULL;
    }
    p->trainable = trainable;
    l->nparams++;
    return p;
}

dyn_param *dyn_layer_param(dyn_layer *l, const char *name) {
    for (int i = 0; i < l->nparams; i++)
        if (strcmp(l->params[i].name, name) == 0) return &l->params[i];
    return NULL;
}

void dyn_layer_zero_grad(dyn_layer *l) {
    for (int i = 0; i < l->nparams; i++)
        if (l->params[i].trainable) dyn_tensor_zero(&l->params[i].grad);
}

int64_t dyn_layer_param_floats(const dyn_layer *l) {
    int64_t n = 0;
    for (int i = 0; i < l->nparams; i++) n += dyn_tensor_numel(&l->params[i].value);
    return n;
}

void dyn_layer_stats_get(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    memset(st, 0, sizeof *st);
    st->stored_floats = dyn_layer_param_floats(l);
    st->memory_floats = st->stored_floats;
    if (l->ops->stats) l->ops->stats(l, in, st);
}

int dyn_attr_int(const dyn_layer *l, const json_t *attrs, const char *key, int64_t def,
                 int64_t lo, int64_t hi, int64_t *out, dyn_err *err) {
    json_t *v = json_object_get(attrs, key);
    if (!v) {
        *out = def;
    } else if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_true(v) || json_is_false(v)) {
        *out = json_is_true(v);
    } else {
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': attribute '%s' must be an integer",
                           l->name, key);
    }
    if (*out < lo || *out > hi)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': attribute '%s' = %lld is outside %lld..%lld",
                           l->name, key, (long long)*out, (long long)lo, (long long)hi);
    return 0;
}

int dyn_attr_num(const dyn_layer *l, const json_t *attrs, const char *key, double def,
                 double *out, dyn_err *err) {
    json_t *v = json_object_get(attrs, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': attribute '%s' must be a number", l->name,
                           key);
    *out = json_number_value(v);
    return 0;
}

int dyn_attr_str(const dyn_layer *l, const json_t *attrs, const char *key, const char *def,
                 const char **out, dyn_err *err) {
    json_t *v = json_object_get(attrs, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': attribute '%s' must be a string", l->name,
                           key);
    *out = json_string_value(v);
    return 0;
}

int dyn_attr_ints(const dyn_layer *l, const json_t *attrs, const char *key, int lo_n, int hi_n,
                  int64_t lo, int64_t hi, int64_t *out, int *n, dyn_err *err) {
    json_t *a = json_object_get(attrs, key);
    if (!json_is_array(a) || (int)json_array_size(a) < lo_n || (int)json_array_size(a) > hi_n)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': attribute '%s' must be a list of %d to %d integers",
                           l->name, key, lo_n, hi_n);
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
            return dyn_err_set(err, DYN_EINVAL,
                               "layer '%s': attribute '%s'[%d] must be an integer in %lld..%lld",
                               l->name, key, i, (long long)lo, (long long)hi);
        out[i] = json_integer_value(v);
    }
    return 0;
}

/* Reads `key` or its `key_h` / `key_w` pair into *h, *w. def_h < 0 means the attribute is
 * required: then either `key` or both `key_h` and `key_w` must be present. */
int dyn_attr_int_hw(const dyn_layer *l, const json_t *attrs, const char *key, int64_t def_h,
                    int64_t def_w, int64_t lo, int64_t hi, int *h, int *w, dyn_err *err) {
    char kh[40], kw[40];
    snprintf(kh, sizeof kh, "%s_h", key);
    snprintf(kw, sizeof kw, "%s_w", key);
    int64_t vh, vw, base;
    int rc;
    if (json_object_get(attrs, key)) {
        if ((rc = dyn_attr_int(l, attrs, key, 0, lo, hi, &base, err))) return rc;
        def_h = def_w = base;
    } else if (def_h < 0 && (!json_object_get(attrs, kh) || !json_object_get(attrs, kw))) {
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': attribute '%s' (or both '%s' and '%s') is required",
                           l->name, key, kh, kw);
    }
    if ((rc = dyn_attr_int(l, attrs, kh, def_h, lo, hi, &vh, err))) return rc;
    if ((rc = dyn_attr_int(l, attrs, kw, def_w, lo, hi, &vw, err))) return rc;
    *h = (int)vh;
    *w = (int)vw;
    return 0;
}

/* Writes `key` when h == w, else `key_h` and `key_w`. */
void dyn_attrs_put_hw(json_t *o, const char *key, int h, int w) {
    if (h == w) {
        json_object_set_new(o, key, json_integer(h));
        return;
    }
    char k[40];
    snprintf(k, sizeof k, "%s_h", key);
    json_object_set_new(o, k, json_integer(h));
    snprintf(k, sizeof k, "%s_w", key);
    json_object_set_new(o, k, json_integer(w));
}

int dyn_op_create_no_attrs(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    (void)l;
    (void)attrs;
    (void)err;
    return 0;
}

json_t *dyn_op_attrs_none(const dyn_layer *l) {
    (void)l;
    return json_object();
}

int dyn_op_infer_same(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    (void)l;
    (void)err;
    *out = in[0];
    return 0;
}
