/* model_file.c — dyn_model <-> safetensors. See model_file.h for the format.
 *
 * Loading trusts nothing in the file: the safetensors layer has already bounded every tensor;
 * here each metadata value is parsed as JSON and type-checked before use, node inputs must
 * point backwards (so the graph is a DAG in topological order by construction), layers are
 * built by the op's own create() (which validates its attributes), dyn_model_add checks arity
 * and shapes, and tensors are matched one-to-one with parameters (missing, extra, doubly-claimed,
 * wrong shape, non-finite: all rejected). Coded states ("quant", model_file.h): the writer and
 * the reader share grid_value(), and the writer checks every value against it, so what it
 * codes reads back bit for bit.
 */
#include "model_file.h"

#include <math.h>
#include <string.h>

#include "io_impl.h"

/* Longest "<layer>.<param>" name: both fields are fixed-size in dyn_layer / dyn_param. */
#define TENSOR_NAME_MAX (sizeof(((dyn_layer *)0)->name) + sizeof(((dyn_param *)0)->name) + 2)

/* Largest per-sample input dimension and element count accepted from a file: far beyond any
 * real model, small enough that no shape arithmetic downstream can overflow. */
#define INPUT_DIM_MAX ((int64_t)1 << 24)
#define INPUT_NUMEL_MAX ((int64_t)1 << 28)

static void tensor_name(const dyn_layer *l, const dyn_param *p, char *buf, size_t n) {
    snprintf(buf, n, "%s.%s", l->name, p->name);
}

/* Index of the first non-finite element of x[0..n), or -1. */
static int64_t first_nonfinite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* ---- state codes ---- */

/* The float code k stands for on grid delta: what the reader computes, and what the writer
 * checks each value against before coding a tensor. */
static float grid_value(double k, double delta) { return (float)(k * delta); }

static int delta_ok(double d) {
    return d >= DYN_MODEL_QUANT_DELTA_MIN && d <= DYN_MODEL_QUANT_DELTA_MAX; /* NaN fails */
}

/* Whether p is a DyN state of l (the only parameters the writer codes). */
static int is_state(const dyn_layer *l, const dyn_param *p) {
    if (strcmp(l->ops->name, "dyn_linear") == 0)
        return strcmp(p->name, "u") == 0 || strcmp(p->name, "v") == 0;
    if (strcmp(l->ops->name, "dyn_conv2d") == 0)
        return strcmp(p->name, "a") == 0 || strcmp(p->name, "b") == 0;
    return 0;
}

/* The grid the conversion rounded m's states to (info.convert.quant), or 0. */
static double model_grid(const dyn_model *m) {
    const json_t *q = json_object_get(json_object_get(m->info, "convert"), "quant");
    const double d = json_is_number(q) ? json_number_value(q) : 0;
    return delta_ok(d) ? d : 0;
}

/* DYN_ST_I8 / DYN_ST_I16 when every x[i] equals grid_value(k_i, delta) bit for bit with integer
 * |k_i| <= 127 / 32767 (codes, when not NULL, receives the k_i), else DYN_ST_F32. */
static dyn_st_dtype grid_codes(const float *x, int64_t n, double delta, int16_t *codes) {
    if (n <= 0 || !delta_ok(delta)) return DYN_ST_F32;
    double maxk = 0;
    for (int64_t i = 0; i < n; i++) {
        const double k0 = nearbyint((double)x[i] / delta);
        int hit = 0;
        for (int t = 0; t < 3 && !hit; t++) { /* k0, then its neighbours */
            const double kd = k0 + (t == 0 ? 0 : t == 1 ? -1 : 1);
            if (!(fabs(kd) <= INT16_MAX)) continue;
            const int16_t k = (int16_t)kd; /* an integer: -0.0 becomes 0, so -0.0f stays F32 */
            const float v = grid_value(k, delta);
            if (memcmp(&v, &x[i], sizeof v) == 0) {
                hit = 1;
                maxk = DYN_MAX(maxk, fabs(kd));
                if (codes) codes[i] = k;
            }
        }
        if (!hit) return DYN_ST_F32;
    }
    return maxk <= INT8_MAX ? DYN_ST_I8 : DYN_ST_I16;
}

/* How parameter p of l is stored on grid delta (0: none). */
static dyn_st_dtype param_dtype(const dyn_layer *l, const dyn_param *p, double delta,
                                int16_t *codes) {
    if (!delta || !is_state(l, p)) return DYN_ST_F32;
    return grid_codes(p->value.data, dyn_tensor_numel(&p->value), delta, codes);
}

void dyn_model_storage_get(const dyn_model *m, dyn_model_storage *s) {
    memset(s, 0, sizeof *s);
    const double delta = model_grid(m);
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_layer *l = m->nodes[k].layer;
        for (int j = 0; j < l->nparams; j++) {
            const dyn_param *p = &l->params[j];
            const int64_t n = dyn_tensor_numel(&p->value);
            const dyn_st_dtype dt = param_dtype(l, p, delta, NULL);
            s->floats += n;
            s->data_bytes += n * (dt == DYN_ST_F32 ? 4 : dt == DYN_ST_I16 ? 2 : 1);
            if (dt != DYN_ST_F32) s->coded_floats += n;
        }
    }
}

/* ---- save ---- */

/* Serializes v (borrowed) as compact JSON into meta[key]. */
static int meta_put_json(json_t *meta, const char *key, const json_t *v) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) return -1;
    int rc = json_object_set_new(meta, key, json_string(s));
    free(s);
    return rc;
}

static json_t *shape_json(const dyn_shape *s) {
    json_t *a = json_array();
    for (int i = 0; a && i < s->ndim; i++)
        if (json_array_append_new(a, json_integer((json_int_t)s->d[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Builds the graph JSON into *out (new reference). */
static int graph_json(const dyn_model *m, const char *path, json_t **out, dyn_err *err) {
    *out = NULL;
    json_t *g = json_array();
    if (!g) goto nomem;
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_node *nd = &m->nodes[k];
        const dyn_layer *l = nd->layer;
        json_t *attrs = l->ops->attrs ? l->ops->attrs(l) : json_object();
        if (!json_is_object(attrs)) {
            json_decref(attrs);
            json_decref(g);
            return dyn_err_set(err, DYN_EINVAL,
                               "%s: layer '%s' (%s) did not report its attributes", path,
                               l->name, l->ops->name);
        }
        json_t *name = json_string(l->name);
        if (!name) {
            json_decref(attrs);
            json_decref(g);
            return dyn_err_set(err, DYN_EINVAL, "%s: layer name '%s' is not valid UTF-8", path,
                               l->name);
        }
        json_t *ins = json_array(), *o = json_object();
        int bad = !ins || !o;
        for (int i = 0; !bad && i < nd->ninputs; i++)
            bad |= json_array_append_new(ins, json_integer(nd->inputs[i]));
        /* The *_new calls take their value's reference even when they fail. */
        bad |= json_object_set_new(o, "name", name);
        bad |= json_object_set_new(o, "op", json_string(l->ops->name));
        bad |= json_object_set_new(o, "inputs", ins);
        bad |= json_object_set_new(o, "attrs", attrs);
        bad |= json_array_append_new(g, o);
        if (bad) {
            json_decref(g);
            goto nomem;
        }
    }
    *out = g;
    return 0;
nomem:
    return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory building the graph", path);
}

/* Builds the __metadata__ object into *out (new reference). */
static int save_metadata(const dyn_model *m, const char *path, json_t **out, dyn_err *err) {
    *out = NULL;
    json_t *meta = NULL, *g = NULL, *in = NULL, *labels = NULL;
    int rc = graph_json(m, path, &g, err);
    if (rc) return rc;
    if (!(meta = json_object()) || !(in = shape_json(&m->input)) || !(labels = json_array()))
        goto nomem;
    for (int i = 0; i < m->nlabels; i++) {
        json_t *s = json_string(m->labels[i]);
        if (!s) {
            char q[80];
            rc = dyn_err_set(err, DYN_EINVAL, "%s: label %d ('%s') is not valid UTF-8", path, i,
                             dyn__printable(m->labels[i], q, sizeof q));
            goto done;
        }
        if (json_array_append_new(labels, s)) goto nomem;
    }
    if (json_object_set_new(meta, "format", json_string(DYN_MODEL_FORMAT)) ||
        json_object_set_new(meta, "format_version", json_sprintf("%d", DYN_MODEL_FORMAT_VERSION)) ||
        json_object_set_new(meta, "dynd_version", json_string(DYN_VERSION)) ||
        meta_put_json(meta, "graph", g) || meta_put_json(meta, "input", in) ||
        meta_put_json(meta, "labels", labels) ||
        (m->preprocess && meta_put_json(meta, "preprocess", m->preprocess)) ||
        (m->info && meta_put_json(meta, "info", m->info)))
        goto nomem;
    *out = meta;
    meta = NULL;
    goto done;
nomem:
    rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory building the metadata", path);
done:
    json_decref(g);
    json_decref(in);
    json_decref(labels);
    json_decref(meta);
    return rc;
}

int dyn_model_save(const dyn_model *m, const char *path, dyn_err *err) {
    if (m->nnodes < 1) return dyn_err_set(err, DYN_EINVAL, "%s: the model has no layers", path);
    int n = 0;
    for (int k = 0; k < m->nnodes; k++) n += m->nodes[k].layer->nparams;
    dyn_st_entry *e = calloc((size_t)(n ? n : 1), sizeof *e);
    char(*names)[TENSOR_NAME_MAX] = calloc((size_t)(n ? n : 1), sizeof *names);
    void **codes = calloc((size_t)(n ? n : 1), sizeof *codes); /* coded tensors' buffers */
    json_t *meta = NULL, *quant = json_object();
    const double delta = model_grid(m);
    int rc = 0;
    if (!e || !names || !codes || !quant) goto nomem;
    int i = 0;
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_layer *l = m->nodes[k].layer;
        for (int j = 0; j < l->nparams; j++, i++) {
            const dyn_param *p = &l->params[j];
            DYN_ASSERT(dyn_tensor_is_contiguous(&p->value));
            int64_t numel = dyn_tensor_numel(&p->value);
            int64_t bad = first_nonfinite(p->value.data, numel);
            if (bad >= 0) {
                rc = dyn_err_set(err, DYN_EINVAL,
                                 "%s: layer '%s' param '%s' holds %s at element %lld; a model "
                                 "with non-finite values is not saved (training diverged?)",
                                 path, l->name, p->name,
                                 isnan(p->value.data[bad]) ? "NaN" : "Inf", (long long)bad);
                goto done;
            }
            tensor_name(l, p, names[i], sizeof names[i]);
            e[i].name = names[i];
            e[i].ndim = p->value.ndim;
            e[i].shape = p->value.shape;
            e[i].data = p->value.data;
            if (!delta || !is_state(l, p)) continue;
            int16_t *k16 = malloc((size_t)DYN_MAX(numel, 1) * sizeof *k16);
            if (!k16) goto nomem;
            codes[i] = k16;
            e[i].dtype = param_dtype(l, p, delta, k16);
            if (e[i].dtype == DYN_ST_F32) continue;
            e[i].ints = k16;
            if (e[i].dtype == DYN_ST_I8) {
                int8_t *k8 = malloc((size_t)numel);
                if (!k8) goto nomem;
                for (int64_t t = 0; t < numel; t++) k8[t] = (int8_t)k16[t];
                free(k16);
                codes[i] = k8;
                e[i].ints = k8;
            }
            if (json_object_set_new(quant, names[i], json_pack("{s:f}", "delta", delta))) {
                char q[100];
                rc = dyn_err_set(err, DYN_EINVAL, "%s: cannot record the grid of tensor '%s' "
                                 "(name not valid UTF-8, or out of memory)", path,
                                 dyn__printable(names[i], q, sizeof q));
                goto done;
            }
        }
    }
    if ((rc = save_metadata(m, path, &meta, err))) goto done;
    if (json_object_size(quant) && meta_put_json(meta, "quant", quant)) goto nomem;
    rc = dyn_st_write(path, e, n, meta, err);
    goto done;
nomem:
    rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", path);
done:
    for (int t = 0; codes && t < n; t++) free(codes[t]);
    free(codes);
    json_decref(quant);
    json_decref(meta);
    free(e);
    free(names);
    return rc;
}

/* ---- load ---- */

/* Parses metadata value `key` as JSON into *out (new reference). Absent: *out = NULL and
 * 0 when !required, an error otherwise. */
static int meta_json(const dyn_st_file *f, const char *key, int required, json_t **out,
                     dyn_err *err) {
    *out = NULL;
    const char *s = dyn_st_meta(f, key);
    if (!s) {
        if (!required) return 0;
        return dyn_err_set(err, DYN_EFORMAT, "%s: metadata has no \"%s\"", f->name, key);
    }
    json_error_t je;
    *out = json_loads(s, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!*out)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: metadata \"%s\" is not valid JSON: %s (line %d, column %d)",
                           f->name, key, je.text, je.line, je.column);
    return 0;
}

static int check_format(const dyn_st_file *f, dyn_err *err) {
    const char *fmt = dyn_st_meta(f, "format"), *ver = dyn_st_meta(f, "format_version");
    char q[80];
    if (!fmt)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: not a dynd model file (no \"format\" in the metadata)", f->name);
    if (strcmp(fmt, DYN_MODEL_FORMAT) != 0)
        return dyn_err_set(err, DYN_EFORMAT, "%s: format is '%s', expected '%s'", f->name,
                           dyn__printable(fmt, q, sizeof q), DYN_MODEL_FORMAT);
    if (!ver)
        return dyn_err_set(err, DYN_EFORMAT, "%s: metadata has no \"format_version\"", f->name);
    long v = 0;
    size_t len = strlen(ver);
    int digits = len > 0 && len < 9 && strspn(ver, "0123456789") == len;
    if (digits) v = strtol(ver, NULL, 10);
    if (!digits || v < 1)
        return dyn_err_set(err, DYN_EFORMAT, "%s: format_version '%s' is not a positive integer",
                           f->name, dyn__printable(ver, q, sizeof q));
    if (v != DYN_MODEL_FORMAT_VERSION)
        return dyn_err_set(err, DYN_EUNSUP,
                           "%s: format_version %ld is newer than this build reads (%d)", f->name,
                           v, DYN_MODEL_FORMAT_VERSION);
    return 0;
}

static int parse_input(const dyn_st_file *f, dyn_shape *in, dyn_err *err) {
    json_t *a;
    int rc = meta_json(f, "input", 1, &a, err);
    if (rc) return rc;
    memset(in, 0, sizeof *in);
    size_t n = json_array_size(a);
    if (!json_is_array(a) || n < 1 || n > DYN_MAX_DIMS - 1) {
        json_decref(a);
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: \"input\" must be an array of 1 to %d dimensions", f->name,
                           DYN_MAX_DIMS - 1);
    }
    in->ndim = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(a, i);
        if (!json_is_integer(d) || json_integer_value(d) < 1 ||
            json_integer_value(d) > INPUT_DIM_MAX) {
            json_decref(a);
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: \"input\" dimension %zu is not an integer in 1..%lld",
                               f->name, i, (long long)INPUT_DIM_MAX);
        }
        in->d[i] = (int64_t)json_integer_value(d);
    }
    json_decref(a);
    int64_t numel = 1;
    for (int i = 0; i < in->ndim; i++) {
        if (!dyn_mul_ok(numel, in->d[i], &numel) || numel > INPUT_NUMEL_MAX)
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: \"input\" has more than %lld elements per sample", f->name,
                               (long long)INPUT_NUMEL_MAX);
    }
    return 0;
}

/* Fills the parameters of l (node k) from f (coded tensors on their "quant" grid), marking the
 * tensors used. */
static int load_params(const dyn_st_file *f, const json_t *quant, int k, dyn_layer *l,
                       unsigned char *used, dyn_err *err) {
    for (int j = 0; j < l->nparams; j++) {
        dyn_param *p = &l->params[j];
        char tn[TENSOR_NAME_MAX], q[100];
        tensor_name(l, p, tn, sizeof tn);
        dyn__printable(tn, q, sizeof q);
        dyn_shape want = dyn_tensor_shape(&p->value);
        const dyn_st_tensor *t = dyn_st_find(f, tn);
        char ws[96], hs[96];
        dyn_shape_str(&want, ws, sizeof ws);
        if (!t)
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: missing tensor '%s' (node %d, layer '%s' (%s) needs param "
                               "'%s' of shape %s)",
                               f->name, q, k, l->name, l->ops->name, p->name, ws);
        size_t ti = (size_t)(t - f->tensors);
        if (used[ti])
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: tensor '%s' is claimed by two parameters (layer names "
                               "containing '.' collide)", f->name, q);
        int same = t->ndim == want.ndim;
        for (int d = 0; same && d < want.ndim; d++) same = t->shape[d] == want.d[d];
        if (!same) {
            size_t off = (size_t)snprintf(hs, sizeof hs, "[");
            for (int d = 0; d < t->ndim && off < sizeof hs; d++)
                off += (size_t)snprintf(hs + off, sizeof hs - off, d ? ", %lld" : "%lld",
                                        (long long)t->shape[d]);
            if (off < sizeof hs) snprintf(hs + off, sizeof hs - off, "]");
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: tensor '%s' has shape %s but layer '%s' (%s) expects %s",
                               f->name, q, hs, l->name, l->ops->name, ws);
        }
        int64_t numel = dyn_tensor_numel(&p->value);
        int rc = dyn_st_tensor_read_f32(f, t, p->value.data, numel, err);
        if (rc) return rc;
        if (t->dtype == DYN_ST_I8 || t->dtype == DYN_ST_I16) { /* load_quant checked the grid */
            const json_t *qe = json_object_get(quant, tn);
            if (!qe)
                return dyn_err_set(err, DYN_EFORMAT,
                                   "%s: tensor '%s' holds %s codes but \"quant\" gives no grid "
                                   "for it", f->name, q, dyn_st_dtype_name(t->dtype));
            const double delta = json_number_value(json_object_get(qe, "delta"));
            for (int64_t i = 0; i < numel; i++)
                p->value.data[i] = grid_value(p->value.data[i], delta);
        }
        int64_t bad = first_nonfinite(p->value.data, numel);
        if (bad >= 0)
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: tensor '%s' holds %s at element %lld (the model is damaged)",
                               f->name, q, isnan(p->value.data[bad]) ? "NaN" : "Inf",
                               (long long)bad);
        used[ti] = 1;
    }
    return 0;
}

/* Builds node k from its JSON description and appends it to m. */
static int load_node(const dyn_st_file *f, const json_t *quant, dyn_model *m, int k, json_t *nd,
                     unsigned char *used, dyn_err *err) {
    char q[80];
    if (!json_is_object(nd))
        return dyn_err_set(err, DYN_EFORMAT, "%s: graph node %d is not a JSON object", f->name,
                           k);
    json_t *jname = json_object_get(nd, "name"), *jop = json_object_get(nd, "op");
    json_t *jins = json_object_get(nd, "inputs"), *attrs = json_object_get(nd, "attrs");
    if (!json_is_string(jname) || json_string_length(jname) == 0)
        return dyn_err_set(err, DYN_EFORMAT, "%s: graph node %d has no \"name\" string", f->name,
                           k);
    const char *name = json_string_value(jname);
    dyn__printable(name, q, sizeof q);
    if (strlen(name) != json_string_length(jname))
        return dyn_err_set(err, DYN_EFORMAT, "%s: graph node %d: name contains a NUL byte",
                           f->name, k);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: graph node %d: name '%s' contains control characters",
                               f->name, k, q);
    if (!json_is_string(jop))
        return dyn_err_set(err, DYN_EFORMAT, "%s: graph node %d ('%s') has no \"op\" string",
                           f->name, k, q);
    if (!dyn_layer_ops_find(json_string_value(jop))) {
        char qo[80];
        return dyn_err_set(err, DYN_EUNSUP, "%s: graph node %d ('%s'): unknown op '%s'", f->name,
                           k, q, dyn__printable(json_string_value(jop), qo, sizeof qo));
    }
    if (attrs && json_is_null(attrs)) attrs = NULL;
    if (attrs && !json_is_object(attrs))
        return dyn_err_set(err, DYN_EFORMAT, "%s: graph node %d ('%s'): \"attrs\" is not an object",
                           f->name, k, q);
    size_t nin = json_array_size(jins);
    if (!json_is_array(jins) || nin > DYN_LAYER_MAX_INPUTS)
        return dyn_err_set(err, DYN_EFORMAT,
                           "%s: graph node %d ('%s'): \"inputs\" must be an array of at most %d "
                           "node indices", f->name, k, q, DYN_LAYER_MAX_INPUTS);
    int ins[DYN_LAYER_MAX_INPUTS];
    for (size_t i = 0; i < nin; i++) {
        json_t *v = json_array_get(jins, i);
        if (!json_is_integer(v))
            return dyn_err_set(err, DYN_EFORMAT, "%s: graph node %d ('%s'): input %zu is not an "
                               "integer", f->name, k, q, i);
        json_int_t x = json_integer_value(v);
        if (x < -1 || x >= k)
            return dyn_err_set(err, DYN_EFORMAT,
                               "%s: graph node %d ('%s'): input %zu is %lld, but inputs must be -1 "
                               "(the model input) or an earlier node (0..%d); forward references "
                               "and cycles are not allowed",
                               f->name, k, q, i, (long long)x, k - 1);
        ins[i] = (int)x;
    }
    dyn_layer *l = dyn_layer_create(json_string_value(jop), name, attrs, err);
    if (!l) return dyn_err_prefix(err, "%s: graph node %d", f->name, k);
    int idx = dyn_model_add(m, l, ins, (int)nin, err); /* owns l from here on */
    if (idx < 0) return dyn_err_prefix(err, "%s: graph node %d", f->name, k);
    return load_params(f, quant, k, m->nodes[idx].layer, used, err);
}

static int load_labels(const dyn_st_file *f, dyn_model *m, dyn_err *err) {
    json_t *a;
    int rc = meta_json(f, "labels", 0, &a, err);
    if (rc || !a) return rc;
    if (!json_is_array(a)) {
        json_decref(a);
        return dyn_err_set(err, DYN_EFORMAT, "%s: \"labels\" is not a JSON array", f->name);
    }
    size_t n = json_array_size(a);
    if (n == 0) {
        json_decref(a);
        return 0;
    }
    int64_t outs = dyn_model_outputs(m);
    if ((int64_t)n != outs) {
        json_decref(a);
        return dyn_err_set(err, DYN_EFORMAT, "%s: %zu labels but the model has %lld outputs",
                           f->name, n, (long long)outs);
    }
    const char **v = calloc(n, sizeof *v);
    if (!v) {
        json_decref(a);
        return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", f->name);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(a, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
            free(v);
            json_decref(a);
            return dyn_err_set(err, DYN_EFORMAT, "%s: label %zu is not a string", f->name, i);
        }
        v[i] = json_string_value(s);
    }
    rc = dyn_model_labels_set(m, v, (int)n);
    free(v);
    json_decref(a);
    if (rc) return dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", f->name);
    return 0;
}

/* Parses optional metadata `key` into *slot (an object, or left NULL when absent). */
static int load_object(const dyn_st_file *f, const char *key, json_t **slot, dyn_err *err) {
    json_t *o;
    int rc = meta_json(f, key, 0, &o, err);
    if (rc || !o) return rc;
    if (json_is_null(o)) {
        json_decref(o);
        return 0;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        return dyn_err_set(err, DYN_EFORMAT, "%s: \"%s\" is not a JSON object", f->name, key);
    }
    *slot = o;
    return 0;
}

/* Parses and checks the optional "quant" metadata into *out (a new reference; NULL when absent
 * or null): every entry names an I8 / I16 tensor of f and holds exactly a "delta" in range. */
static int load_quant(const dyn_st_file *f, json_t **out, dyn_err *err) {
    *out = NULL;
    json_t *q = NULL;
    int rc = load_object(f, "quant", &q, err);
    if (rc || !q) return rc;
    const char *name;
    json_t *v;
    json_object_foreach(q, name, v) {
        char qn[100], vs[48] = "?";
        dyn__printable(name, qn, sizeof qn);
        const dyn_st_tensor *t = dyn_st_find(f, name);
        const json_t *d = json_object_get(v, "delta");
        char *txt = d ? json_dumps(d, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        if (txt) dyn__printable(txt, vs, sizeof vs);
        free(txt);
        if (!t)
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: \"quant\" names tensor '%s', which the file "
                             "does not hold", f->name, qn);
        else if (t->dtype != DYN_ST_I8 && t->dtype != DYN_ST_I16)
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: \"quant\" names tensor '%s', stored as %s; "
                             "only I8 / I16 tensors hold codes", f->name, qn,
                             dyn_st_dtype_name(t->dtype));
        else if (!json_is_object(v) || json_object_size(v) != 1 || !d)
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: \"quant\" entry '%s' must be an object "
                             "holding \"delta\" alone", f->name, qn);
        else if (!json_is_number(d) || !delta_ok(json_number_value(d)))
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: \"quant\" entry '%s': delta %s is not a "
                             "number in [%g, %g]", f->name, qn, vs, DYN_MODEL_QUANT_DELTA_MIN,
                             DYN_MODEL_QUANT_DELTA_MAX);
        if (rc) {
            json_decref(q);
            return rc;
        }
    }
    *out = q;
    return 0;
}

dyn_model *dyn_model_from_st(const dyn_st_file *f, dyn_err *err) {
    dyn_model *m = NULL;
    json_t *g = NULL, *quant = NULL;
    unsigned char *used = NULL;
    dyn_shape in;
    int rc;
    if ((rc = check_format(f, err)) || (rc = parse_input(f, &in, err)) ||
        (rc = load_quant(f, &quant, err)))
        goto fail;
    if ((rc = meta_json(f, "graph", 1, &g, err))) goto fail;
    if (!json_is_array(g) || json_array_size(g) == 0 || json_array_size(g) > INT32_MAX / 2) {
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: \"graph\" is not a non-empty JSON array of nodes",
                         f->name);
        goto fail;
    }
    used = calloc((size_t)(f->ntensors ? f->ntensors : 1), 1);
    m = dyn_model_new(&in);
    if (!used || !m) {
        rc = dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", f->name);
        goto fail;
    }
    size_t k;
    json_t *nd;
    json_array_foreach(g, k, nd) {
        if ((rc = load_node(f, quant, m, (int)k, nd, used, err))) goto fail;
    }
    for (int i = 0; i < f->ntensors; i++) {
        if (!used[i]) {
            char q[100];
            rc = dyn_err_set(err, DYN_EFORMAT,
                             "%s: extra tensor '%s' belongs to no layer parameter", f->name,
                             dyn__printable(f->tensors[i].name, q, sizeof q));
            goto fail;
        }
    }
    if ((rc = load_labels(f, m, err)) || (rc = load_object(f, "preprocess", &m->preprocess, err)) ||
        (rc = load_object(f, "info", &m->info, err)))
        goto fail;
    if ((rc = dyn_model_prepare(m, err))) {
        dyn_err_prefix(err, "%s", f->name);
        goto fail;
    }
    json_decref(g);
    json_decref(quant);
    free(used);
    return m;
fail:
    json_decref(g);
    json_decref(quant);
    free(used);
    dyn_model_free(m);
    return NULL;
}

dyn_model *dyn_model_load(const char *path, dyn_err *err) {
    dyn_st_file *f;
    if (dyn_st_read(path, &f, err)) return NULL;
    dyn_model *m = dyn_model_from_st(f, err);
    dyn_st_free(f);
    return m;
}

dyn_model *dyn_model_load_bytes(const void *data, size_t size, const char *name, dyn_err *err) {
    dyn_st_file *f;
    if (dyn_st_parse(data, size, name, &f, err)) return NULL;
    dyn_model *m = dyn_model_from_st(f, err);
    dyn_st_free(f);
    return m;
}
