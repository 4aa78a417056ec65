/* testutil.h — shared helpers for the Check unit tests: a main() per test file, random fills,
 * error measures and a finite-difference gradient check for any layer. */
#ifndef DYN_TESTUTIL_H
#define DYN_TESTUTIL_H

#include <check.h>

#include "cpu/isa.h"
#include "layer.h"

/* TU_FOR_EACH_ISA(lv) statement: runs the statement once per instruction-set level this CPU
 * runs (cpu/isa.h: base, then avx2, avx512 where present) with the kernels capped at level lv,
 * so the baseline code and each vector version see the same inputs. tu_isa_cap sets the cap
 * and returns 1, or lifts it and returns 0 past the CPU's level. */
int tu_isa_cap(dyn_isa_level lv);
#define TU_FOR_EACH_ISA(lv) \
    for (dyn_isa_level lv = DYN_ISA_BASE; tu_isa_cap(lv); lv = (dyn_isa_level)(lv + 1))

/* Runs suite s in Check's fork mode; returns 0 when every test passed. */
int tu_run(Suite *s);
#define TU_MAIN(suite_fn) \
    int main(void) { return tu_run(suite_fn()); }

/* A throwaway PostgreSQL for a test program (tests/pg_harness.sh, run from the repository root, or
 * $DYND_PG_HARNESS): its directory and libpq conninfo, set by tu_pg_main before the suite runs. */
extern char tu_pg_dir[1024], tu_pg_conninfo[1024];
extern const char *tu_pg_harness;
/* main() of a test program that needs PostgreSQL: starts the harness (its watchdog stops the
 * server if this process dies midway), runs suite_fn()'s suite, stops the server. Without
 * PostgreSQL's server binaries it prints "SKIP <name>: ..." and returns 0. Returns 0 when every
 * test passed. */
int tu_pg_main(const char *name, Suite *(*suite_fn)(void));

void tu_fill_uniform(float *p, int64_t n, dyn_rng *r, float lo, float hi);
/* ||a - b||_2 / max(||b||_2, 1e-30), accumulated in double. */
double tu_rel_err(const float *a, const float *b, int64_t n);
double tu_max_abs_diff(const float *a, const float *b, int64_t n);

/* Finite-difference gradient check of layer l (prepared, params initialized) for input
 * shape `in` (batch included; one input). Loss = sum(y * R) with random R. Checks up to
 * `max_coords` coordinates of the input and of every trainable parameter with central
 * differences (step h, in float32), calling l->ops->prepare after each perturbation.
 * A coordinate passes when |fd - an| <= atol + rtol * max(|fd|, |an|). Returns the number of
 * failing coordinates and prints each failure (tensor, index, analytic, numeric). */
int tu_gradcheck(dyn_layer *l, const dyn_shape *in, int training, uint64_t seed, int max_coords,
                 float h, double atol, double rtol);

/* The plain convolution every conv kernel is tested against, in double: x [n][cin][h][w],
 * w [cout][cin/groups][kh][kw], b [cout] or NULL, y [n][cout][oh][ow] (caller's buffers). */
typedef struct tu_conv {
    int n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups;
} tu_conv;
void tu_conv2d_ref(const tu_conv *c, const float *x, const float *w, const float *b, double *y,
                   int oh, int ow);
/* The conv2d layer attributes (JSON) of c with a bias when `bias`, written into buf; returns
 * buf. */
const char *tu_conv_attrs(const tu_conv *c, int bias, char *buf, size_t n);

/* A layer of op `op` named "t" from the JSON attributes attrs_json; fails the test (with the
 * message) when the JSON or the attributes are bad. Free with dyn_layer_free. */
dyn_layer *tu_layer(const char *op, const char *attrs_json);

#endif
