/* options.c — the conversion / fine-tuning option table and its readers (options.h). */
#include "options.h"
#include "../backend.h"

#include "../io/image.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define C DYN_OPT_CONVERT
#define F DYN_OPT_FINETUNE
#define CF (DYN_OPT_CONVERT | DYN_OPT_FINETUNE)
#define JOB DYN_OPT_JOB_ONLY
#define CLI DYN_OPT_CLI_ONLY

/* Order: common, conversion, fine-tuning; help lines fit one terminal line after the name. */
static const dyn_opt OPTS[] = {
    {"model", CF | JOB, DYN_OPT_MODEL, 0, 0, 0, NULL, NULL,
     "repository model to convert / fine-tune (instead of an upload)"},
    {"output", CF | JOB, DYN_OPT_OUTPUT, 0, 0, 0, NULL, NULL, "name of the produced model"},
    {"overwrite", CF | JOB, DYN_OPT_BOOL, 0, 0, 0, "false", NULL, "replace an existing model"},
    {"seed", CF, DYN_OPT_INT, 0, 2147483647, 0, "1", NULL, "random seed (splits, fits)"},
    {"quant", CF, DYN_OPT_NUM, 0, 1, 0, "0.001", NULL, "round states down to this grid (0 = off)"},
    {"threads", CF | CLI, DYN_OPT_INT, 0, 1024, 0, NULL, NULL, "engine threads (0 = all cores)"},
    {"json", CF | CLI, DYN_OPT_BOOL, 0, 0, 0, "false", NULL, "print the report as JSON too"},
    /* conversion: budget */
    {"ratio", C, DYN_OPT_NUM, 1, 1000, 0, "4", NULL,
     "per-layer compression of the weight floats"},
    {"rel_err", C, DYN_OPT_NUM, 0, 1, 1, NULL, NULL,
     "instead of ratio: smallest H whose fit reaches this relative error"},
    {"copies", C, DYN_OPT_LIST, 0, 2, 0, NULL, NULL,
     "instead of ratio: copies H of every linear and every conv, \"FC,CONV\" (the paper's)"},
    {"target_agreement", C, DYN_OPT_NUM, 0, 1, 1, NULL, NULL,
     "instead of ratio: smallest model whose top-1 agreement with the original reaches this"},
    {"min_agreement", C, DYN_OPT_NUM, 0, 1, 0, "0.95", NULL,
     "floor: fail when top-1 agreement on held-out images is below it"},
    {"force_publish", C, DYN_OPT_BOOL, 0, 0, 0, "false", NULL,
     "publish below the floor or without data to verify (marked in the metadata)"},
    /* conversion: fit */
    {"fit", C, DYN_OPT_CHOICE, 0, 0, 0, "\"auto\"", "auto|fixed|activation",
     "auto: activation-aware with calibration images, else data-free (fixed)"},
    {"steps", C, DYN_OPT_INT, 1, 100000, 0, "2000", NULL, "Adam steps per layer"},
    {"lr", C, DYN_OPT_NUM, 0, 10, 1, "0.1", NULL, "fitting learning rate (relative to the state range)"},
    {"init", C, DYN_OPT_CHOICE, 0, 0, 0, "\"svd\"", "svd|lsq|random", "state initialization"},
    {"restarts", C, DYN_OPT_INT, 1, 64, 0, "1", NULL, "initial candidates"},
    {"fit_algo", C, DYN_OPT_CHOICE, 0, 0, 0, "\"fast\"", "fast|reference",
     "data-free l1 fit: fused pass, closed-form lambda and c; or the path before issue 9"},
    {"sample", C, DYN_OPT_NUM, 0, 1, 1, "0.5", NULL,
     "fraction of the rows each fitting step sees (layers of >= 256 rows)"},
    {"plateau", C, DYN_OPT_NUM, 0, 0.5, 0, "0", NULL, "stop a fit early on a plateau (0 = off)"},
    {"fit_device", C, DYN_OPT_CHOICE, 0, 0, 0, "\"cpu\"", "cpu|cuda",
     "where the fitting steps run: cuda for the data-free l1 fit (else, or without GPU: cpu)"},
    {"form", C, DYN_OPT_CHOICE, 0, 0, 0, "\"l1\"", "l1|riem",
     "riem: each planned layer becomes a RieM-style form at no more floats (data-free, slow)"},
    {"riem_steps", C, DYN_OPT_INT, 1, 100000, 0, "3000", NULL, "Adam steps of each RieM fit"},
    {"kernel", C, DYN_OPT_CHOICE, 0, 0, 0, "\"l1\"", "l1|l2|inv", "DyN interaction kernel"},
    {"q", C, DYN_OPT_INT, 1, 64, 0, "1", NULL, "state dimensions"},
    {"exec", C, DYN_OPT_CHOICE, 0, 0, 0, "\"auto\"", "auto|native|materialized",
     "execution of the DyN layers"},
    {"keep_dense", C, DYN_OPT_LIST, 0, 64, 0, NULL, NULL, "layer names kept dense"},
    {"keep_first_conv", C, DYN_OPT_BOOL, 0, 0, 0, "false", NULL, "keep the first conv dense"},
    {"keep_last", C, DYN_OPT_BOOL, 0, 0, 0, "true", NULL,
     "keep the last linear / conv (the classifier) dense"},
    {"min_saving", C, DYN_OPT_NUM, 0, 1, 0, "0.25", NULL, "convert a layer only if DyN saves this much"},
    {"distill_epochs", C, DYN_OPT_INT, 0, 1000, 0, "0", NULL,
     "then fine-tune on the calibration images towards the original model's outputs"},
    {"distill_lr", C, DYN_OPT_NUM, 0, 1, 1, "0.002", NULL, "learning rate of that fine-tuning"},
    {"distill_temp", C, DYN_OPT_NUM, 0, 100, 1, "4", NULL,
     "softmax temperature of the original's outputs it learns"},
    {"distill_n", C, DYN_OPT_INT, 0, 10000000, 0, "0", NULL,
     "calibration images it trains on (0 = every one not held out)"},
    {"distill_augment", C, DYN_OPT_BOOL, 0, 0, 0, "false", NULL,
     "random shifts of up to 2 pixels of those images"},
    {"finetune_epochs", C, DYN_OPT_INT, 0, 1000, 0, "0", NULL,
     "last, train the chosen model on the labelled calibration images not held out"},
    {"finetune_lr", C, DYN_OPT_NUM, 0, 1, 1, "0.0005", NULL, "Adam learning rate of that training"},
    {"finetune_augment", C, DYN_OPT_BOOL, 0, 0, 0, "false", NULL,
     "random shifts of up to 2 pixels in that training"},
    {"finetune_n", C, DYN_OPT_INT, 0, 10000000, 0, "0", NULL,
     "images it trains and validates on (0 = every calibration image not held out)"},
    /* conversion: data */
    {"preprocess", C, DYN_OPT_OBJECT, 0, 0, 0, NULL, NULL,
     "the model's input pipeline (preprocess metadata, engine/io/image.h); replaces its own"},
    {"preprocess_from", C, DYN_OPT_DATASET, 0, 0, 0, NULL, NULL,
     "copy a built-in data set's normalization and labels (mnist, fashion)"},
    {"calib", C, DYN_OPT_DATASET, 0, 0, 0, NULL, NULL,
     "calibration images (training split; labels optional)"},
    {"calib_n", C, DYN_OPT_INT, 1, 100000, 0, "512", NULL, "calibration images used for fitting"},
    {"holdout_n", C, DYN_OPT_INT, 0, 100000, 0, "256", NULL,
     "more calibration images held out of fitting to measure agreement"},
    {"eval", C, DYN_OPT_DATASET, 0, 0, 0, NULL, NULL,
     "labelled data: accuracy before / after on its test split"},
    {"eval_n", C, DYN_OPT_INT, 1, 10000000, 0, NULL, NULL, "evaluation images (default all)"},
    {"eval_split", C, DYN_OPT_CHOICE, 0, 0, 0, "\"test\"", "test|val",
     "evaluate on the test split, or on `val` images held out of train"},
    {"report", C | CLI, DYN_OPT_OUTPUT, 0, 0, 0, NULL, NULL, "write the report as JSON to this file"},
    /* fine-tuning */
    {"data", F, DYN_OPT_DATASET, 0, 0, 0, NULL, NULL, "training data set"},
    {"out", F | CLI, DYN_OPT_OUTPUT, 0, 0, 0, NULL, NULL, "output model file"},
    {"mode", F, DYN_OPT_CHOICE, 0, 0, 0, "\"native\"", "native|unfixed",
     "train the states, or Algorithm 1 (dense epoch, refit)"},
    {"epochs", F, DYN_OPT_INT, 1, 1000, 0, "5", NULL, "epochs / rounds"},
    {"lr", F, DYN_OPT_NUM, 0, 1, 1, "0.001", NULL, "Adam learning rate (cosine over the epochs)"},
    {"lr_final", F, DYN_OPT_NUM, 0, 1, 0, "0.05", NULL, "final learning rate fraction"},
    {"val", CF, DYN_OPT_INT, 1, 10000000, 0, "5000", NULL,
     "validation images held out of the training split"},
    {"limit", F, DYN_OPT_INT, 0, 100000000, 0, "0", NULL, "training images used (0 = all)"},
    {"batch", F, DYN_OPT_INT, 1, 4096, 0, "64", NULL, "batch size"},
    {"augment", F, DYN_OPT_BOOL, 0, 0, 0, "true", NULL, "random shifts of up to 2 pixels"},
    {"fit_steps", F, DYN_OPT_INT, 1, 100000, 0, "300", NULL, "unfixed: refit steps per round"},
    {"device", F, DYN_OPT_CHOICE, 0, 0, 0, "\"cpu\"", "cpu|cuda",
     "where the epochs train: cuda places the model on GPU 0 for each epoch (layers without "
     "a GPU kernel train on the CPU); no GPU: the job fails saying why"},
    {"ckpt", F | CLI, DYN_OPT_OUTPUT, 0, 0, 0, NULL, NULL, "checkpoint directory"},
    {"resume", F | CLI, DYN_OPT_BOOL, 0, 0, 0, "false", NULL, "continue from --ckpt"},
};

const dyn_opt *dyn_opts_table(int *n) {
    *n = (int)DYN_ARRAY_LEN(OPTS);
    return OPTS;
}

const dyn_opt *dyn_opt_find(int kind, const char *name) {
    for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++)
        if ((OPTS[i].flags & kind) && !strcmp(OPTS[i].name, name)) return &OPTS[i];
    return NULL;
}

static int choice_ok(const char *choices, const char *v) {
    const size_t n = strlen(v);
    for (const char *p = choices; p;) {
        const char *bar = strchr(p, '|');
        const size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == n && !strncmp(p, v, n)) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

/* A number given as JSON or as text (CLI, form field, query string). 0 or -1. */
static int as_number(const json_t *v, double *x) {
    if (json_is_number(v)) return *x = json_number_value(v), 0;
    const char *s = json_string_value(v);
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    *x = strtod(s, &end);
    return errno || *end || !isfinite(*x) ? -1 : 0;
}

static int as_bool(const json_t *v, int *b) {
    if (json_is_boolean(v)) return *b = json_is_true(v), 0;
    const char *s = json_string_value(v);
    if (!s) return -1;
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")) return *b = 1, 0;
    if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no")) return *b = 0, 0;
    return -1;
}

int dyn_opt_check(const dyn_opt *o, const json_t *v, json_t *out, dyn_err *err) {
    double x;
    int b;
    switch (o->type) {
    case DYN_OPT_NUM:
    case DYN_OPT_INT:
        if (as_number(v, &x) || x < o->lo || x > o->hi || (o->lo_open && x <= o->lo) ||
            (o->type == DYN_OPT_INT && x != floor(x)))
            return dyn_err_set(err, DYN_EINVAL, "%s must be %s in %s%g..%g]", o->name,
                               o->type == DYN_OPT_INT ? "an integer" : "a number",
                               o->lo_open ? "(" : "[", o->lo, o->hi);
        json_object_set_new(out, o->name,
                            o->type == DYN_OPT_INT ? json_integer((json_int_t)x) : json_real(x));
        return 0;
    case DYN_OPT_BOOL:
        if (as_bool(v, &b)) return dyn_err_set(err, DYN_EINVAL, "%s must be true or false", o->name);
        json_object_set_new(out, o->name, json_boolean(b));
        return 0;
    case DYN_OPT_CHOICE:
        if (!json_is_string(v) || !choice_ok(o->choices, json_string_value(v)))
            return dyn_err_set(err, DYN_EINVAL, "%s must be one of %s", o->name, o->choices);
        json_object_set(out, o->name, (json_t *)v);
        return 0;
    case DYN_OPT_LIST: {
        json_t *list = json_array();
        if (!list) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
        if (json_is_string(v)) { /* "a,b" from a flag or a form field */
            const char *s = json_string_value(v);
            while (*s) {
                const char *comma = strchr(s, ',');
                const size_t l = comma ? (size_t)(comma - s) : strlen(s);
                if (l) json_array_append_new(list, json_stringn(s, l));
                s += l + (comma != NULL);
            }
        } else if (json_is_array(v)) {
            json_array_extend(list, (json_t *)v);
        }
        size_t i;
        json_t *s;
        int bad = !json_is_array(v) && !json_is_string(v);
        json_array_foreach(list, i, s) bad |= !json_is_string(s) || json_string_length(s) == 0 ||
                                             json_string_length(s) > 63;
        if (bad || json_array_size(list) > (size_t)o->hi) {
            json_decref(list);
            return dyn_err_set(err, DYN_EINVAL, "%s must be a list of at most %g layer names",
                               o->name, o->hi);
        }
        json_object_set_new(out, o->name, list);
        return 0;
    }
    case DYN_OPT_OBJECT: {
        json_t *obj = NULL;
        if (json_is_object(v)) obj = json_incref((json_t *)v);
        else if (json_is_string(v)) obj = json_loads(json_string_value(v), 0, NULL);
        if (!json_is_object(obj)) {
            json_decref(obj);
            return dyn_err_set(err, DYN_EINVAL, "%s must be a JSON object", o->name);
        }
        if (!strcmp(o->name, "preprocess") && dyn_preprocess_check(obj, err)) {
            json_decref(obj); /* its form here; against a model's input where one is known */
            return err ? err->code : DYN_EINVAL; /* the message names preprocess.<key> */
        }
        json_object_set_new(out, o->name, obj);
        return 0;
    }
    case DYN_OPT_MODEL:
    case DYN_OPT_DATASET:
    case DYN_OPT_OUTPUT:
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 1000)
            return dyn_err_set(err, DYN_EINVAL, "%s must be a name", o->name);
        json_object_set(out, o->name, (json_t *)v);
        return 0;
    case DYN_OPT_TYPE_COUNT:
        break;
    }
    return dyn_err_set(err, DYN_EINVAL, "%s: bad option type", o->name);
}

int dyn_opts_defaults(int kind, int cli, json_t *out, dyn_err *err) {
    for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++) {
        const dyn_opt *o = &OPTS[i];
        if (!(o->flags & kind) || !o->def || json_object_get(out, o->name)) continue;
        if (!cli && (o->flags & DYN_OPT_CLI_ONLY)) continue;
        if (cli && (o->flags & DYN_OPT_JOB_ONLY)) continue;
        if (json_object_set_new(out, o->name, json_loads(o->def, JSON_DECODE_ANY, NULL)))
            return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    }
    return 0;
}

int dyn_opts_parse_argv(int kind, int argc, char **argv, json_t **spec, const char **pos,
                        int max_pos, int *npos, int *help, dyn_err *err) {
    const int request = kind & DYN_OPT_REQUEST;
    kind &= CF;
    *spec = json_object();
    *npos = 0;
    *help = 0;
    if (!*spec) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    int rc = 0, only_pos = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] != '-' || !a[2]) {
            if (!only_pos && !strcmp(a, "--")) {
                only_pos = 1;
                continue;
            }
            if (*npos >= max_pos) {
                rc = dyn_err_set(err, DYN_EINVAL, "unexpected argument '%.200s'", a);
                break;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (!strcmp(a, "--help")) {
            *help = 1;
            continue;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        size_t l = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (l >= sizeof name) l = sizeof name - 1;
        memcpy(name, a + 2, l);
        name[l] = '\0';
        for (char *p = name; *p; p++)
            if (*p == '-') *p = '_';
        int negate = 0;
        const dyn_opt *o = dyn_opt_find(kind, name);
        if (!o && !strncmp(name, "no_", 3) && (o = dyn_opt_find(kind, name + 3)) &&
            o->type == DYN_OPT_BOOL)
            negate = 1;
        if (!o || (o->flags & (request ? CLI : JOB)) || (negate && eq)) {
            rc = dyn_err_set(err, DYN_EINVAL, "unknown option '%.100s' (--help lists them)", a);
            break;
        }
        json_t *v;
        if (o->type == DYN_OPT_BOOL && !eq) {
            v = json_boolean(!negate);
        } else if (eq) {
            v = json_string(eq + 1);
        } else if (i + 1 < argc) {
            v = json_string(argv[++i]);
        } else {
            rc = dyn_err_set(err, DYN_EINVAL, "option '%.100s' needs a value", a);
            break;
        }
        if (v && o->type == DYN_OPT_OBJECT && json_string_value(v) &&
            json_string_value(v)[0] == '@') { /* the command line only: @FILE holds the JSON */
            json_error_t je;
            json_t *f = json_load_file(json_string_value(v) + 1, JSON_REJECT_DUPLICATES, &je);
            if (!f)
                rc = dyn_err_set(err, DYN_EINVAL, "--%s %.200s: %s (line %d)", name,
                                 json_string_value(v), je.text, je.line);
            json_decref(v);
            v = f;
            if (rc) break;
        }
        rc = v ? dyn_opt_check(o, v, *spec, err) : dyn_err_set(err, DYN_ENOMEM, "out of memory");
        json_decref(v);
    }
    if (!rc && !request) rc = dyn_opts_defaults(kind, 1, *spec, err);
    if (rc) {
        json_decref(*spec);
        *spec = NULL;
    }
    return rc;
}

/* A growing string buffer for the text writers below. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int w = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)w < b->cap) {
            b->n += (size_t)w;
            return;
        }
        const size_t cap = (b->cap + (size_t)w + 256) * 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static char *sb_done(sbuf *b) {
    if (b->oom) {
        free(b->s);
        return NULL;
    }
    return b->s ? b->s : strdup("");
}

static const char *type_word(const dyn_opt *o) {
    switch (o->type) {
    case DYN_OPT_NUM: return "X";
    case DYN_OPT_INT: return "N";
    case DYN_OPT_BOOL: return "";
    case DYN_OPT_CHOICE: return o->choices;
    case DYN_OPT_MODEL: return "MODEL";
    case DYN_OPT_DATASET: return "DATA";
    case DYN_OPT_OUTPUT: return "PATH";
    case DYN_OPT_LIST: return "A,B";
    case DYN_OPT_OBJECT: return "JSON";
    case DYN_OPT_TYPE_COUNT: break;
    }
    return "";
}

char *dyn_opts_help(int kind, int cli) {
    sbuf b = {0};
    const int left_out = cli && !(kind & DYN_OPT_REQUEST) ? JOB : CLI;
    kind &= CF;
    for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++) {
        const dyn_opt *o = &OPTS[i];
        if (!(o->flags & kind) || (o->flags & left_out)) continue;
        char flag[96], name[64];
        snprintf(name, sizeof name, "%s", o->name);
        for (char *p = name; cli && *p; p++)
            if (*p == '_') *p = '-';
        snprintf(flag, sizeof flag, "%s%s %s", cli ? "--" : "", name, type_word(o));
        sb_printf(&b, "  %-28s %s", flag, o->help);
        if (o->def && strcmp(o->def, "false")) sb_printf(&b, " (default %s)", o->def);
        sb_printf(&b, "\n");
    }
    return sb_done(&b);
}

char *dyn_opts_openapi(int kind) {
    sbuf b = {0};
    for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++) {
        const dyn_opt *o = &OPTS[i];
        if (!(o->flags & kind) || (o->flags & DYN_OPT_CLI_ONLY)) continue;
        sb_printf(&b, "        %s: {", o->name);
        switch (o->type) {
        case DYN_OPT_NUM:
        case DYN_OPT_INT:
            sb_printf(&b, "type: %s, minimum: %.15g%s, maximum: %.15g",
                      o->type == DYN_OPT_NUM ? "number" : "integer", o->lo,
                      o->lo_open ? ", exclusiveMinimum: true" : "", o->hi);
            break;
        case DYN_OPT_BOOL: sb_printf(&b, "type: boolean"); break;
        case DYN_OPT_CHOICE: {
            sb_printf(&b, "type: string, enum: [");
            for (const char *p = o->choices; *p; p++) sb_printf(&b, "%s", *p == '|' ? ", " : (char[2]){*p, 0});
            sb_printf(&b, "]");
            break;
        }
        case DYN_OPT_LIST: sb_printf(&b, "type: array, items: {type: string}, maxItems: %g", o->hi); break;
        case DYN_OPT_OBJECT: sb_printf(&b, "$ref: '#/components/schemas/Preprocess'"); break;
        default: sb_printf(&b, "type: string"); break;
        }
        if (o->def) sb_printf(&b, ", default: %s", o->def);
        sb_printf(&b, ", description: \""); /* a YAML double-quoted scalar: \\ and \" escaped */
        for (const char *p = o->help; *p; p++)
            sb_printf(&b, "%s%c", *p == '"' || *p == '\\' ? "\\" : "", *p);
        sb_printf(&b, "\"}\n");
    }
    return sb_done(&b);
}

/* ---- specs into the engine's option structs ------------------------------------------------- */

static const char *s_get(const json_t *spec, const char *k, const char *def) {
    const char *s = json_string_value(json_object_get(spec, k));
    return s ? s : def;
}
static double n_get(const json_t *spec, int kind, const char *k) {
    const json_t *v = json_object_get(spec, k);
    if (json_is_number(v)) return json_number_value(v);
    const dyn_opt *o = dyn_opt_find(kind, k);
    return o && o->def ? strtod(o->def, NULL) : 0;
}
static int b_get(const json_t *spec, int kind, const char *k) {
    const json_t *v = json_object_get(spec, k);
    if (json_is_boolean(v)) return json_is_true(v);
    const dyn_opt *o = dyn_opt_find(kind, k);
    return o && o->def && !strcmp(o->def, "true");
}

int dyn_convert_opts_from_spec(const json_t *spec, dyn_convert_opts *o, const char **keep,
                               int keep_cap, dyn_err *err) {
    *o = dyn_convert_opts_default();
    o->ratio = n_get(spec, C, "ratio");
    o->rel_err = n_get(spec, C, "rel_err");
    o->target_agreement = n_get(spec, C, "target_agreement");
    if (o->rel_err > 0 || o->target_agreement > 0) o->ratio = 0;
    o->min_agreement = n_get(spec, C, "min_agreement");
    const json_t *cp = json_object_get(spec, "copies");
    if (cp) {
        const char *a = json_string_value(json_array_get(cp, 0));
        const char *b = json_string_value(json_array_get(cp, 1));
        char *e1 = NULL, *e2 = NULL;
        const long hf = a ? strtol(a, &e1, 10) : 0, hc = b ? strtol(b, &e2, 10) : 0;
        if (json_array_size(cp) != 2 || !a || !b || *e1 || *e2 || hf < 1 || hc < 1 || hf > 4096 ||
            hc > 4096)
            return dyn_err_set(err, DYN_EINVAL, "copies must be two integers FC,CONV in 1..4096");
        o->H_linear = (int)hf;
        o->H_conv = (int)hc;
    }
    o->force = b_get(spec, C, "force_publish");
    const char *fit = s_get(spec, "fit", "auto");
    o->fit_auto = !strcmp(fit, "auto");
    if ((!o->fit_auto && dyn_fit_mode_parse(fit, &o->fit)) ||
        dyn_kernel_parse(s_get(spec, "kernel", "l1"), &o->kernel) ||
        dyn_fit_init_parse(s_get(spec, "init", "svd"), &o->fitopt.init))
        return dyn_err_set(err, DYN_EINVAL, "bad fit, kernel or init");
    o->exec = s_get(spec, "exec", "auto");
    o->q = (int)n_get(spec, C, "q");
    o->fitopt.steps = (int)n_get(spec, C, "steps");
    o->fitopt.lr = (float)n_get(spec, C, "lr");
    o->fitopt.restarts = (int)n_get(spec, C, "restarts");
    o->fitopt.algo = !strcmp(s_get(spec, "fit_algo", "fast"), "reference");
    o->form_riem = !strcmp(s_get(spec, "form", "l1"), "riem");
    o->riem_steps = (int)n_get(spec, C, "riem_steps");
    o->fitopt.sample = n_get(spec, C, "sample");
    o->fitopt.plateau = n_get(spec, C, "plateau");
    o->fitopt.device =
        !strcmp(s_get(spec, "fit_device", "cpu"), "cuda") ? DYN_DEV_CUDA : DYN_DEV_CPU;
    o->fitopt.quant = n_get(spec, C, "quant");
    o->fitopt.seed = (uint64_t)n_get(spec, C, "seed");
    o->keep_first_conv = b_get(spec, C, "keep_first_conv");
    o->keep_last = b_get(spec, C, "keep_last");
    o->min_saving = n_get(spec, C, "min_saving");
    o->distill_epochs = (int)n_get(spec, C, "distill_epochs");
    o->distill_lr = (float)n_get(spec, C, "distill_lr");
    o->distill_temp = (float)n_get(spec, C, "distill_temp");
    o->distill_n = (int)n_get(spec, C, "distill_n");
    o->distill_augment = b_get(spec, C, "distill_augment");
    o->finetune_epochs = (int)n_get(spec, C, "finetune_epochs");
    o->finetune_lr = (float)n_get(spec, C, "finetune_lr");
    o->finetune_augment = b_get(spec, C, "finetune_augment");
    o->finetune_n = (int)n_get(spec, C, "finetune_n");
    const json_t *kl = json_object_get(spec, "keep_dense");
    o->nkeep = 0;
    for (size_t i = 0; i < json_array_size(kl) && o->nkeep < keep_cap; i++)
        if (json_is_string(json_array_get(kl, i)))
            keep[o->nkeep++] = json_string_value(json_array_get(kl, i));
    o->keep_dense = keep;
    return 0;
}

int dyn_ft_opts_from_spec(const json_t *spec, dyn_ft_opts *o, dyn_err *err) {
    *o = dyn_ft_opts_default();
    if (dyn_ft_mode_parse(s_get(spec, "mode", "native"), &o->mode))
        return dyn_err_set(err, DYN_EINVAL, "mode must be native or unfixed");
    o->epochs = (int)n_get(spec, F, "epochs");
    o->batch = (int)n_get(spec, F, "batch");
    o->lr = (float)n_get(spec, F, "lr");
    o->lr_final_frac = (float)n_get(spec, F, "lr_final");
    o->augment = b_get(spec, F, "augment");
    o->seed = (uint64_t)n_get(spec, F, "seed");
    o->fit.steps = (int)n_get(spec, F, "fit_steps");
    o->fit.quant = n_get(spec, F, "quant");
    o->fit.seed = o->seed;
    if (!strcmp(s_get(spec, "device", "cpu"), "cuda")) o->backend = &dyn_backend_cuda;
    return 0;
}
