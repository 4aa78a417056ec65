/* engine/ops/norm.c — placeholder: being written. */
#include "../layer.h"
static int todo_create(dyn_layer *l, const json_t *a, dyn_err *err) { (void)a; return dyn_err_set(err, DYN_EUNSUP, "layer %s: op not implemented yet", l->name); }
const dyn_layer_ops dyn_op_batchnorm = { .op = DYN_OP_BATCHNORM, .name = "batchnorm", .ninputs = 1, .create = todo_create };
