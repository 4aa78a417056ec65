#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tu_isa_cap(dyn_isa_level lv) {
    if (lv > dyn_isa_detected()) {
        dyn_isa_set_cap(DYN_ISA_COUNT);
        return 0;
    }
    dyn_isa_set_cap(lv);
    ck_assert_int_eq(dyn_isa(), lv);
    return 1;
}

int tu_run(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf == 0 ? 0 : 1;
}

void tu_fill_uniform(float *p, int64_t n, dyn_rng *r, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * dyn_rng_uniform(r);
}

double tu_rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

double tu_max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

typedef struct {
    dyn_layer *l;
    dyn_tensor x, y;
    const float *R;
    float *scratch;
    int training;
} gc_ctx;

static double gc_loss(gc_ctx *c) {
    if (c->l->ops->prepare) DYN_ASSERT(c->l->ops->prepare(c->l, NULL) == 0);
    c->l->ops->forward(c->l, &c->x, &c->y, c->scratch, c->training);
    double s = 0;
    int64_t n = dyn_tensor_numel(&c->y);
    for (int64_t i = 0; i < n; i++) s += (double)c->y.data[i] * (double)c->R[i];
    return s;
}

static int gc_check_tensor(gc_ctx *c, const char *what, float *vals, const float *an, int64_t n,
                           int max_coords, dyn_rng *r, float h, double atol, double rtol) {
    int fails = 0;
    int64_t count = n < max_coords ? n : max_coords;
    for (int64_t t = 0; t < count; t++) {
        int64_t i = n <= max_coords ? t : (int64_t)dyn_rng_below(r, (uint32_t)n);
        float keep = vals[i];
        vals[i] = keep + h;
        double lp = gc_loss(c);
        vals[i] = keep - h;
        double lm = gc_loss(c);
        vals[i] = keep;
        double fd = (lp - lm) / (2.0 * (double)h);
        double a = an[i];
        if (fabs(fd - a) > atol + rtol * fmax(fabs(fd), fabs(a))) {
            if (fails < 8)
                fprintf(stderr, "gradcheck %s %s[%lld]: analytic %.6g numeric %.6g\n", c->l->name,
                        what, (long long)i, a, fd);
            fails++;
        }
    }
    gc_loss(c);
    return fails;
}

int tu_gradcheck(dyn_layer *l, const dyn_shape *in, int training, uint64_t seed, int max_coords,
                 float h, double atol, double rtol) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    gc_ctx c = {.l = l, .training = training};
    dyn_shape out;
    dyn_err err = {0};
    if (l->ops->infer(l, in, &out, &err)) {
        fprintf(stderr, "gradcheck: infer failed: %s\n", err.msg);
        return 1;
    }
    DYN_ASSERT(dyn_tensor_init_shape(&c.x, in, NULL) == 0);
    DYN_ASSERT(dyn_tensor_init_shape(&c.y, &out, NULL) == 0);
    dyn_tensor dy, dx;
    DYN_ASSERT(dyn_tensor_init_shape(&dy, &out, NULL) == 0);
    DYN_ASSERT(dyn_tensor_init_shape(&dx, in, NULL) == 0);
    size_t ns = l->ops->scratch ? l->ops->scratch(l, in, training) : 0;
    c.scratch = dyn_alloc_zero((ns + 1) * sizeof(float));
    tu_fill_uniform(c.x.data, dyn_tensor_numel(&c.x), &r, -1.0f, 1.0f);
    tu_fill_uniform(dy.data, dyn_tensor_numel(&dy), &r, -1.0f, 1.0f);
    c.R = dy.data;

    dyn_layer_zero_grad(l);
    gc_loss(&c);
    l->ops->backward(l, &c.x, &c.y, &dy, &dx, c.scratch);

    /* Keep analytic grads: later forwards must not disturb them, but copy to be safe. */
    int fails = gc_check_tensor(&c, "input", c.x.data, dx.data, dyn_tensor_numel(&c.x),
                                max_coords, &r, h, atol, rtol);
    for (int p = 0; p < l->nparams; p++) {
        dyn_param *pp = &l->params[p];
        if (!pp->trainable) continue;
        int64_t n = dyn_tensor_numel(&pp->value);
        float *an = malloc((size_t)n * sizeof(float));
        memcpy(an, pp->grad.data, (size_t)n * sizeof(float));
        fails += gc_check_tensor(&c, pp->name, pp->value.data, an, n, max_coords, &r, h, atol,
                                 rtol);
        free(an);
    }
    dyn_free(c.scratch);
    dyn_tensor_release(&c.x);
    dyn_tensor_release(&c.y);
    dyn_tensor_release(&dy);
    dyn_tensor_release(&dx);
    return fails;
}

const char *tu_conv_attrs(const tu_conv *c, int bias, char *buf, size_t n) {
    snprintf(buf, n,
             "{\"in_channels\": %d, \"out_channels\": %d, \"kernel_h\": %d, \"kernel_w\": %d, "
             "\"stride_h\": %d, \"stride_w\": %d, \"padding_h\": %d, \"padding_w\": %d, "
             "\"dilation_h\": %d, \"dilation_w\": %d, \"groups\": %d, \"bias\": %d}",
             c->cin, c->cout, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->groups,
             bias);
    return buf;
}

void tu_conv2d_ref(const tu_conv *c, const float *x, const float *w, const float *b, double *y,
                   int oh, int ow) {
    int cig = c->cin / c->groups, cog = c->cout / c->groups;
    for (int n = 0; n < c->n; n++)
        for (int co = 0; co < c->cout; co++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double s = b ? b[co] : 0.0;
                    int g = co / cog;
                    for (int ci = 0; ci < cig; ci++)
                        for (int r = 0; r < c->kh; r++)
                            for (int t = 0; t < c->kw; t++) {
                                int iy = oy * c->sh - c->ph + r * c->dh;
                                int ix = ox * c->sw - c->pw + t * c->dw;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w) continue;
                                s += (double)w[((co * cig + ci) * c->kh + r) * c->kw + t] *
                                     x[((n * c->cin + g * cig + ci) * c->h + iy) * c->w + ix];
                            }
                    y[((n * c->cout + co) * oh + oy) * ow + ox] = s;
                }
}

dyn_layer *tu_layer(const char *op, const char *attrs_json) {
    json_error_t jerr;
    json_t *a = json_loads(attrs_json, 0, &jerr);
    ck_assert_msg(a != NULL, "bad test JSON %s: %s", attrs_json, jerr.text);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, "t", a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "%s %s: %s", op, attrs_json, err.msg);
    return l;
}

char tu_pg_dir[1024], tu_pg_conninfo[1024];
const char *tu_pg_harness = "tests/pg_harness.sh";

int tu_pg_main(const char *name, Suite *(*suite_fn)(void)) {
    if (getenv("DYND_PG_HARNESS")) tu_pg_harness = getenv("DYND_PG_HARNESS");
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "%s start %d", tu_pg_harness, (int)getpid());
    FILE *f = popen(cmd, "r");
    if (!f) {
        perror("popen");
        return 1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) { /* KEY=value lines */
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "PGH_DIR=", 8)) snprintf(tu_pg_dir, sizeof tu_pg_dir, "%s", line + 8);
        if (!strncmp(line, "PGH_CONNINFO=", 13))
            snprintf(tu_pg_conninfo, sizeof tu_pg_conninfo, "%s", line + 13);
    }
    int st = pclose(f);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        printf("SKIP %s: no PostgreSQL server binaries (Debian package postgresql; make deps)\n",
               name);
        return 0;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !tu_pg_dir[0] || !tu_pg_conninfo[0]) {
        fprintf(stderr, "%s: %s failed (status %d)\n", name, cmd, st);
        return 1;
    }
    int rc = tu_run(suite_fn());
    snprintf(cmd, sizeof cmd, "%s stop %s", tu_pg_harness, tu_pg_dir);
    if (system(cmd) != 0) fprintf(stderr, "%s: %s failed\n", name, cmd);
    return rc;
}
