/* permute.c — data movement: reshape, transpose and slicing of one axis in one op (ONNX
 * Transpose, Reshape, Slice, Gather with a constant index, Split; the importer composes them).
 *
 * Attributes:
 *   "dims"  per-sample input seen as k "atoms" (1..8 sizes, row-major; their product is the
 *           input's per-sample element count, whatever its engine shape)
 *   "perm"  order of the atoms in the output (a permutation of 0..k-1; default identity)
 *   "axis", "start", "len", "step"  optional: atom `axis` keeps only the `len` elements
 *           start, start+step, ... (step >= 1; default: the whole atom)
 *   "shape" the output's per-sample engine shape (1..3 sizes; product = the output's elements)
 * The batch stays dimension 0 and is never moved. No parameters; backward scatters dy back
 * (positions a slice drops get 0). Kernel: an odometer over the output with the innermost run
 * copied with memcpy when it is contiguous in the input.
 */
#include <string.h>

#include "../layer.h"
#include "permute_impl.h"
#include "../cpu/par.h"

static int perm_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    perm_impl p;
    memset(&p, 0, sizeof p);
    int64_t tmp[PERM_MAX_ATOMS];
    int n, rc;
    if ((rc = dyn_attr_ints(l, attrs, "dims", 1, PERM_MAX_ATOMS, 1, DYN_TENSOR_MAX_NUMEL, p.dims, &p.k,
                       err)))
        return rc;
    if (json_object_get(attrs, "perm")) {
        if ((rc = dyn_attr_ints(l, attrs, "perm", p.k, p.k, 0, p.k - 1, tmp, &n, err))) return rc;
    } else {
        for (int i = 0; i < p.k; i++) tmp[i] = i;
    }
    unsigned seen = 0;
    for (int i = 0; i < p.k; i++) {
        if (seen & (1u << tmp[i]))
            return dyn_err_set(err, DYN_EINVAL, "layer '%s': 'perm' repeats atom %lld", l->name,
                               (long long)tmp[i]);
        seen |= 1u << tmp[i];
        p.perm[i] = (int)tmp[i];
    }
    int64_t axis;
    if ((rc = dyn_attr_int(l, attrs, "axis", -1, -1, p.k - 1, &axis, err))) return rc;
    p.axis = (int)axis;
    char what[96];
    snprintf(what, sizeof what, "layer '%s': 'dims'", l->name);
    if ((rc = dyn_numel_checked(p.k, p.dims, DYN_TENSOR_MAX_NUMEL, &p.in_numel, err, what)))
        return rc;
    if (p.axis >= 0) {
        int64_t d = p.dims[p.axis];
        if ((rc = dyn_attr_int(l, attrs, "start", 0, 0, d - 1, &p.start, err)) ||
            (rc = dyn_attr_int(l, attrs, "step", 1, 1, d, &p.step, err)) ||
            (rc = dyn_attr_int(l, attrs, "len", 1, 1, d, &p.len, err)))
            return rc;
        if (p.start + (p.len - 1) * p.step >= d)
            return dyn_err_set(err, DYN_EINVAL,
                               "layer '%s': slice start %lld, len %lld, step %lld leaves atom %d "
                               "of size %lld",
                               l->name, (long long)p.start, (long long)p.len, (long long)p.step,
                               p.axis, (long long)d);
    }
    if ((rc = dyn_attr_ints(l, attrs, "shape", 1, DYN_MAX_DIMS - 1, 1, DYN_TENSOR_MAX_NUMEL, p.shape,
                       &p.nshape, err)))
        return rc;
    /* input strides of the atoms; output atoms in order */
    int64_t st[PERM_MAX_ATOMS], s = 1;
    for (int i = p.k - 1; i >= 0; i--) {
        st[i] = s;
        s *= p.dims[i];
    }
    p.out_numel = 1;
    for (int j = 0; j < p.k; j++) {
        int a = p.perm[j];
        int sliced = a == p.axis;
        p.osz[j] = sliced ? p.len : p.dims[a];
        p.ist[j] = st[a] * (sliced ? p.step : 1);
        p.out_numel *= p.osz[j];
    }
    p.base = p.axis >= 0 ? p.start * st[p.axis] : 0;
    int64_t so; /* out_numel <= in_numel: no overflow above */
    snprintf(what, sizeof what, "layer '%s': 'shape'", l->name);
    if ((rc = dyn_numel_checked(p.nshape, p.shape, DYN_TENSOR_MAX_NUMEL, &so, err, what)))
        return rc;
    if (so != p.out_numel)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': 'shape' holds %lld elements but the permuted atoms hold "
                           "%lld",
                           l->name, (long long)so, (long long)p.out_numel);
    /* merge output atoms that are contiguous in the input */
    int r = 0;
    for (int j = 0; j < p.k; j++) {
        if (p.osz[j] == 1) continue;
        if (r > 0 && p.ist[r - 1] == p.ist[j] * p.osz[j]) {
            p.osz[r - 1] *= p.osz[j];
            p.ist[r - 1] = p.ist[j];
        } else {
            p.osz[r] = p.osz[j];
            p.ist[r] = p.ist[j];
            r++;
        }
    }
    if (r == 0) {
        p.osz[0] = 1;
        p.ist[0] = 1;
        r = 1;
    }
    p.nrun = r;
    perm_impl *im = malloc(sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    *im = p;
    l->impl = im;
    return 0;
}

static void perm_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *ilist(const int64_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *perm_attrs(const dyn_layer *l) {
    const perm_impl *p = l->impl;
    int64_t pm[PERM_MAX_ATOMS];
    for (int i = 0; i < p->k; i++) pm[i] = p->perm[i];
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "dims", ilist(p->dims, p->k));
    json_object_set_new(o, "perm", ilist(pm, p->k));
    json_object_set_new(o, "shape", ilist(p->shape, p->nshape));
    if (p->axis >= 0) {
        json_object_set_new(o, "axis", json_integer(p->axis));
        json_object_set_new(o, "start", json_integer(p->start));
        json_object_set_new(o, "len", json_integer(p->len));
        json_object_set_new(o, "step", json_integer(p->step));
    }
    return o;
}

static int perm_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const perm_impl *p = l->impl;
    char b[64];
    if (in[0].ndim < 1 || dyn_shape_numel(&in[0]) != in[0].d[0] * p->in_numel)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': input %s does not hold %lld elements per sample", l->name,
                           dyn_shape_str(&in[0], b, sizeof b), (long long)p->in_numel);
    memset(out, 0, sizeof *out);
    out->ndim = p->nshape + 1;
    out->d[0] = in[0].d[0];
    for (int i = 0; i < p->nshape; i++) out->d[i + 1] = p->shape[i];
    return 0;
}

/* Visits every output element of one sample: dir 0 copies in -> out, 1 copies out -> in. */
static void perm_move(const perm_impl *p, float *in, float *out, int dir) {
    int64_t idx[PERM_MAX_ATOMS] = {0};
    const int last = p->nrun - 1;
    const int64_t run = p->osz[last], rst = p->ist[last];
    int64_t off = p->base, o = 0;
    for (;;) {
        if (rst == 1) {
            if (dir == 0)
                memcpy(out + o, in + off, (size_t)run * sizeof(float));
            else
                memcpy(in + off, out + o, (size_t)run * sizeof(float));
        } else if (dir == 0) {
            for (int64_t i = 0; i < run; i++) out[o + i] = in[off + i * rst];
        } else {
            for (int64_t i = 0; i < run; i++) in[off + i * rst] = out[o + i];
        }
        o += run;
        int d = last - 1;
        for (; d >= 0; d--) {
            off += p->ist[d];
            if (++idx[d] < p->osz[d]) break;
            off -= p->ist[d] * p->osz[d];
            idx[d] = 0;
        }
        if (d < 0) break;
    }
}

static void perm_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                         int training) {
    (void)scratch;
    (void)training;
    const perm_impl *p = l->impl;
    const int64_t batch = x[0].shape[0];
    DYN_ASSERT(dyn_tensor_numel(&x[0]) == batch * p->in_numel &&
               dyn_tensor_numel(y) == batch * p->out_numel);
    DYN_PAR_FOR(batch * p->out_numel > 65536 && batch > 1,
    for (int64_t s = 0; s < batch; s++)
        perm_move(p, x[0].data + s * p->in_numel, y->data + s * p->out_numel, 0););
}

static void perm_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                          const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    const perm_impl *p = l->impl;
    if (!dx[0].data) return;
    const int64_t batch = x[0].shape[0];
    if (p->out_numel != p->in_numel) dyn_tensor_zero(&dx[0]);
    DYN_PAR_FOR(batch * p->out_numel > 65536 && batch > 1,
    for (int64_t s = 0; s < batch; s++)
        perm_move(p, dx[0].data + s * p->in_numel, dy->data + s * p->out_numel, 1););
}

const dyn_layer_ops dyn_op_permute = {
    .op = DYN_OP_PERMUTE,
    .name = "permute",
    .ninputs = 1,
    .create = perm_create,
    .destroy = perm_destroy,
    .attrs = perm_attrs,
    .infer = perm_infer,
    .forward = perm_forward,
    .backward = perm_backward,
};
