/* test_options.c — the one option table (engine/convert/options.h): the CLI parses through it,
 * api/openapi.yaml holds exactly what it generates, and a spec's defaults reach the engine's
 * option structs unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/options.h"
#include "testutil.h"

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f, "cannot open %s (run from the repository root)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    ck_assert(fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* api/openapi.yaml's ConversionOptions / FinetuneOptions properties are the generated text. */
START_TEST(openapi_matches_table) {
    char *yaml = read_file("api/openapi.yaml");
    const int kinds[] = {DYN_OPT_CONVERT, DYN_OPT_FINETUNE};
    const char *heads[] = {"    ConversionOptions:\n", "    FinetuneOptions:\n"};
    for (int i = 0; i < 2; i++) {
        char *gen = dyn_opts_openapi(kinds[i]);
        ck_assert_ptr_nonnull(gen);
        const char *at = strstr(yaml, heads[i]);
        ck_assert_msg(at, "no %s in api/openapi.yaml", heads[i]);
        const char *props = strstr(at, "      properties:\n");
        ck_assert_ptr_nonnull(props);
        props += strlen("      properties:\n");
        ck_assert_msg(strncmp(props, gen, strlen(gen)) == 0,
                      "api/openapi.yaml's %.20s differ from the option table: run "
                      "tests/update_openapi.sh", heads[i] + 4);
        /* and nothing more: the next line leaves the properties block */
        const char *after = props + strlen(gen);
        ck_assert_msg(strncmp(after, "        ", 8) != 0, "extra property after the table's");
        free(gen);
    }
    free(yaml);
}
END_TEST

/* Defaults written once: an empty spec gives the table's defaults in the engine structs. */
START_TEST(spec_defaults_reach_engine) {
    dyn_err err = {0};
    json_t *spec = json_object();
    ck_assert_int_eq(dyn_opts_defaults(DYN_OPT_CONVERT, 0, spec, &err), 0);
    dyn_convert_opts o;
    const char *keep[4];
    ck_assert_int_eq(dyn_convert_opts_from_spec(spec, &o, keep, 4, &err), 0);
    const dyn_convert_opts d = dyn_convert_opts_default();
    ck_assert_double_eq(o.ratio, 4);
    ck_assert_int_eq(o.fitopt.steps, d.fitopt.steps);
    ck_assert_float_eq(o.fitopt.lr, d.fitopt.lr);
    ck_assert_double_eq(o.fitopt.quant, d.fitopt.quant);
    ck_assert_int_eq(o.fitopt.init, d.fitopt.init);
    ck_assert_int_eq(o.q, d.q);
    ck_assert_double_eq(o.min_saving, d.min_saving);
    ck_assert_int_eq(o.fit_auto, 1);
    ck_assert_int_eq(o.keep_last, 1);
    ck_assert_double_eq(o.min_agreement, 0.95);
    ck_assert_int_eq(o.force, 0);
    json_decref(spec);
    spec = json_object();
    ck_assert_int_eq(dyn_opts_defaults(DYN_OPT_FINETUNE, 0, spec, &err), 0);
    dyn_ft_opts f;
    ck_assert_int_eq(dyn_ft_opts_from_spec(spec, &f, &err), 0);
    const dyn_ft_opts fd = dyn_ft_opts_default();
    ck_assert_int_eq(f.epochs, fd.epochs);
    ck_assert_int_eq(f.batch, fd.batch);
    ck_assert_float_eq(f.lr, fd.lr);
    ck_assert_float_eq(f.lr_final_frac, fd.lr_final_frac);
    ck_assert_int_eq(f.augment, fd.augment);
    ck_assert_int_eq(f.fit.steps, fd.fit.steps);
    json_decref(spec);
}
END_TEST

START_TEST(argv_parsing) {
    char *argv[] = {"convert", "in.onnx", "--ratio", "8", "--keep-dense=a,b", "--no-keep-last",
                    "--fit", "activation", "--preprocess", "{\"mean\": [0.5]}", "out.dyn"};
    json_t *spec = NULL;
    const char *pos[2];
    int npos = 0, help = 0;
    dyn_err err = {0};
    ck_assert_msg(dyn_opts_parse_argv(DYN_OPT_CONVERT, 11, argv, &spec, pos, 2, &npos, &help,
                                      &err) == 0, "%s", err.msg);
    ck_assert_int_eq(npos, 2);
    ck_assert_str_eq(pos[0], "in.onnx");
    ck_assert_str_eq(pos[1], "out.dyn");
    ck_assert_double_eq(json_number_value(json_object_get(spec, "ratio")), 8);
    ck_assert(json_is_false(json_object_get(spec, "keep_last")));
    ck_assert_int_eq(json_array_size(json_object_get(spec, "keep_dense")), 2);
    ck_assert(json_is_object(json_object_get(spec, "preprocess")));
    ck_assert_int_eq(json_integer_value(json_object_get(spec, "steps")), 2000); /* default */
    dyn_convert_opts o;
    const char *keep[4];
    ck_assert_int_eq(dyn_convert_opts_from_spec(spec, &o, keep, 4, &err), 0);
    ck_assert_int_eq(o.fit, DYN_FIT_ACTIVATION);
    ck_assert_int_eq(o.fit_auto, 0);
    ck_assert_str_eq(o.keep_dense[1], "b");
    json_decref(spec);
    /* errors name the option */
    char *bad1[] = {"convert", "--ratio", "0.5"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 3, bad1, &spec, pos, 2, &npos, &help, &err),
                     DYN_EINVAL);
    ck_assert_msg(strstr(err.msg, "ratio"), "%s", err.msg);
    ck_assert_ptr_null(spec);
    char *bad2[] = {"convert", "--ratios", "4"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 3, bad2, &spec, pos, 2, &npos, &help, &err),
                     DYN_EINVAL);
    char *bad3[] = {"convert", "--model", "x"}; /* job-only */
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 3, bad3, &spec, pos, 2, &npos, &help, &err),
                     DYN_EINVAL);
    char *bad4[] = {"convert", "--steps"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 2, bad4, &spec, pos, 2, &npos, &help, &err),
                     DYN_EINVAL);
    char *bad5[] = {"finetune", "--epochs", "2.5"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_FINETUNE, 3, bad5, &spec, pos, 1, &npos, &help, &err),
                     DYN_EINVAL);
    char *cp[] = {"convert", "--copies", "2,3"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 3, cp, &spec, pos, 2, &npos, &help, &err), 0);
    ck_assert_int_eq(dyn_convert_opts_from_spec(spec, &o, keep, 4, &err), 0);
    ck_assert_int_eq(o.H_linear, 2);
    ck_assert_int_eq(o.H_conv, 3);
    json_decref(spec);
    char *cp1[] = {"convert", "--copies", "2,x"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 3, cp1, &spec, pos, 2, &npos, &help, &err), 0);
    ck_assert_int_eq(dyn_convert_opts_from_spec(spec, &o, keep, 4, &err), DYN_EINVAL);
    json_decref(spec);
    char *bad6[] = {"convert", "--fit", "best"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 3, bad6, &spec, pos, 2, &npos, &help, &err),
                     DYN_EINVAL);
    ck_assert_msg(strstr(err.msg, "auto|fixed|activation"), "%s", err.msg);
    /* --preprocess @FILE reads the pipeline from FILE; its form is checked */
    char path[] = "/tmp/dyn_opt_pp_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *pj = "{\"color\": \"gray\", \"steps\": [{\"pad\": 2}], \"std\": [0.5]}";
    ck_assert_int_eq(write(fd, pj, strlen(pj)), (ssize_t)strlen(pj));
    close(fd);
    char at[64];
    snprintf(at, sizeof at, "@%s", path);
    char *ppf[] = {"convert", "--preprocess", at, "a.onnx", "b.dyn"};
    ck_assert_msg(dyn_opts_parse_argv(DYN_OPT_CONVERT, 5, ppf, &spec, pos, 2, &npos, &help,
                                      &err) == 0, "%s", err.msg);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(json_object_get(
                         json_object_get(spec, "preprocess"), "steps"), 0), "pad")), 2);
    json_decref(spec);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"stpes\": []}", f);
    fclose(f);
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 5, ppf, &spec, pos, 2, &npos, &help,
                                         &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "stpes"));
    unlink(path);
    char *ppn[] = {"convert", "--preprocess", "@/nonexistent/pp.json", "a.onnx", "b.dyn"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_CONVERT, 5, ppn, &spec, pos, 2, &npos, &help,
                                         &err), DYN_EINVAL);
}
END_TEST

/* --help lists every CLI option of its kind, spelled with dashes. */
START_TEST(help_lists_every_option) {
    int n;
    const dyn_opt *t = dyn_opts_table(&n);
    const int kinds[] = {DYN_OPT_CONVERT, DYN_OPT_FINETUNE};
    for (int k = 0; k < 2; k++) {
        char *h = dyn_opts_help(kinds[k], 1);
        for (int i = 0; i < n; i++) {
            if (!(t[i].flags & kinds[k]) || (t[i].flags & DYN_OPT_JOB_ONLY)) continue;
            char flag[80];
            snprintf(flag, sizeof flag, "--%s ", t[i].name);
            for (char *p = flag + 2; *p; p++)
                if (*p == '_') *p = '-';
            ck_assert_msg(strstr(h, flag), "%s missing from --help", flag);
        }
        free(h);
    }
}
END_TEST

/* A job request on a command line (dynctl): job-only options in, CLI-only ones refused, no
 * defaults (the server fills them); its --help lists the former, not the latter. */
START_TEST(request_argv) {
    char *argv[] = {"convert", "--output", "lenet", "--overwrite", "--ratio=8", "in.onnx"};
    json_t *spec = NULL;
    const char *pos[1];
    int npos = 0, help = 0;
    dyn_err err = {0};
    const int rk = DYN_OPT_CONVERT | DYN_OPT_REQUEST;
    ck_assert_msg(dyn_opts_parse_argv(rk, 6, argv, &spec, pos, 1, &npos, &help, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(npos, 1);
    ck_assert_str_eq(json_string_value(json_object_get(spec, "output")), "lenet");
    ck_assert(json_is_true(json_object_get(spec, "overwrite")));
    ck_assert_double_eq(json_number_value(json_object_get(spec, "ratio")), 8);
    ck_assert_int_eq(json_object_size(spec), 3); /* no defaults */
    json_decref(spec);
    char *cli_only[] = {"convert", "--threads", "2"};
    ck_assert_int_eq(dyn_opts_parse_argv(rk, 3, cli_only, &spec, pos, 1, &npos, &help, &err),
                     DYN_EINVAL);
    char *ft[] = {"finetune", "--model", "m", "--data", "mnist", "--epochs", "2"};
    ck_assert_int_eq(dyn_opts_parse_argv(DYN_OPT_FINETUNE | DYN_OPT_REQUEST, 7, ft, &spec, pos,
                                         1, &npos, &help, &err), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(spec, "epochs")), 2);
    ck_assert_int_eq(json_object_size(spec), 3);
    json_decref(spec);
    char *h = dyn_opts_help(rk, 1);
    ck_assert_ptr_nonnull(strstr(h, "--output "));
    ck_assert_ptr_nonnull(strstr(h, "--keep-dense "));
    ck_assert_ptr_null(strstr(h, "--threads "));
    ck_assert_ptr_null(strstr(h, "--report "));
    free(h);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("options");
    TCase *t = tcase_create("table");
    tcase_add_test(t, openapi_matches_table);
    tcase_add_test(t, spec_defaults_reach_engine);
    tcase_add_test(t, argv_parsing);
    tcase_add_test(t, help_lists_every_option);
    tcase_add_test(t, request_argv);
    suite_add_tcase(s, t);
    return s;
}

TU_MAIN(suite)
