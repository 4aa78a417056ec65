/* engine/ops/pool.c — placeholder: being written. */
#include "../layer.h"
static int todo_create(dyn_layer *l, const json_t *a, dyn_err *err) { (void)a; return dyn_err_set(err, DYN_EUNSUP, "layer %s: op not implemented yet", l->name); }
const dyn_layer_ops dyn_op_maxpool2d = { .op = DYN_OP_MAXPOOL2D, .name = "maxpool2d", .ninputs = 1, .create = todo_create };
const dyn_layer_ops dyn_op_avgpool2d = { .op = DYN_OP_AVGPOOL2D, .name = "avgpool2d", .ninputs = 1, .create = todo_create };
const dyn_layer_ops dyn_op_globalavgpool = { .op = DYN_OP_GLOBALAVGPOOL, .name = "globalavgpool", .ninputs = 1, .create = todo_create };
