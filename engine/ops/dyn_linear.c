/* engine/ops/dyn_linear.c — placeholder: being written. */
#include "../layer.h"
static int todo_create(dyn_layer *l, const json_t *a, dyn_err *err) { (void)a; return dyn_err_set(err, DYN_EUNSUP, "layer %s: op not implemented yet", l->name); }
const dyn_layer_ops dyn_op_dyn_linear = { .op = DYN_OP_DYN_LINEAR, .name = "dyn_linear", .ninputs = 1, .create = todo_create };
