/* test_srv_datasets.c — server/datasets: archive entry names (normalized, skipped or refused:
 * absolute, "..", backslash, control characters, length and depth limits, hidden files and
 * __MACOSX, "./" prefixes), the layout decision (flat / class folders / train+test, a wrapper
 * folder, mixed depths, train beside other folders, test without train, different classes),
 * where each file goes, built-in names, and srv_dataset_labeled / describe / delete on
 * directories made here (a symbolic link is deleted as a link, its target kept). The archive
 * path itself runs in tests/integration/test_datasets.sh. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/datasets.h"
#include "server/datasets_impl.h"
#include "testutil.h"

static int norm(const char *in, char *out, int *hidden, const char **why) {
    return srv__dataset_path_norm(in, 512, 8, out, 512, hidden, why);
}

START_TEST(path_norm_ok) {
    char out[512];
    int hidden;
    const char *why;
    ck_assert_int_eq(norm("cls/x.png", out, &hidden, &why), 1);
    ck_assert_str_eq(out, "cls/x.png");
    ck_assert_int_eq(norm("./train//3/./a.png", out, &hidden, &why), 1);
    ck_assert_str_eq(out, "train/3/a.png");
    ck_assert_int_eq(norm("x.png", out, &hidden, &why), 1);
    ck_assert_str_eq(out, "x.png");
    ck_assert_int_eq(norm("a..b/c..png", out, &hidden, &why), 1); /* ".." inside a name is fine */
    ck_assert_str_eq(out, "a..b/c..png");
    ck_assert_int_eq(norm("chat/\xc3\xa9t\xc3\xa9.png", out, &hidden, &why), 1); /* UTF-8 */
    /* skipped */
    ck_assert_int_eq(norm("./", out, &hidden, &why), 0);
    ck_assert_int_eq(hidden, 0);
    ck_assert_int_eq(norm("cls/.DS_Store", out, &hidden, &why), 0);
    ck_assert_int_eq(hidden, 1);
    ck_assert_int_eq(norm("__MACOSX/cls/._x.png", out, &hidden, &why), 0);
    ck_assert_int_eq(hidden, 1);
    ck_assert_int_eq(norm(".git/config", out, &hidden, &why), 0);
    ck_assert_int_eq(hidden, 1);
}
END_TEST

START_TEST(path_norm_refused) {
    char out[512];
    int hidden;
    const char *why;
    const char *bad[] = {"/abs.png", "../x.png", "cls/../../x.png", "cls/..", "a\\..\\x.png",
                         "cls/x\n.png", "cls/\x7f.png", "a/b/c/d/e/f/g/h/i.png",
                         "cls/\xff.png", "cls/\xc0\xaf.png" /* overlong '/' */,
                         "cls/\xed\xa0\x80.png" /* surrogate */};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_msg(norm(bad[i], out, &hidden, &why) == -1, "'%s' accepted", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
    char longname[600];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ck_assert_int_eq(norm(longname, out, &hidden, &why), -1);
    char comp[300];
    memset(comp, 'b', 299);
    comp[299] = 0;
    ck_assert_int_eq(norm(comp, out, &hidden, &why), -1); /* component over 255 bytes */
    /* the depth limit counts components: 8 pass, 9 do not */
    ck_assert_int_eq(norm("a/b/c/d/e/f/g/h.png", out, &hidden, &why), 1);
}
END_TEST

static int layout(const char **paths, int n, srv__ds_layout *lay, char *why) {
    return srv__dataset_layout((char *const *)paths, n, lay, why, 480);
}

START_TEST(layouts) {
    srv__ds_layout lay;
    char why[480], sp[64], cls[64], base[64];
    const char *classes[] = {"0/a.png", "1/b.png", "1/c.png"};
    ck_assert_int_eq(layout(classes, 3, &lay, why), 0);
    ck_assert(lay.labeled && !lay.splits && !lay.strip);
    ck_assert_int_eq(srv__dataset_place(&lay, "1/b.png", sp, 64, cls, 64, base, 64), 0);
    ck_assert_str_eq(sp, "");
    ck_assert_str_eq(cls, "1");
    ck_assert_str_eq(base, "b.png");

    const char *wrapped[] = {"set/0/a.png", "set/1/b.png"};
    ck_assert_int_eq(layout(wrapped, 2, &lay, why), 0);
    ck_assert(lay.labeled && lay.strip && !lay.splits);
    ck_assert_int_eq(srv__dataset_place(&lay, "set/0/a.png", sp, 64, cls, 64, base, 64), 0);
    ck_assert_str_eq(cls, "0");

    const char *flat[] = {"a.png", "b.jpg"};
    ck_assert_int_eq(layout(flat, 2, &lay, why), 0);
    ck_assert(!lay.labeled && !lay.splits && !lay.strip);
    ck_assert_int_eq(srv__dataset_place(&lay, "b.jpg", sp, 64, cls, 64, base, 64), 0);
    ck_assert_str_eq(cls, "_unlabeled");
    ck_assert_str_eq(base, "b.jpg");

    const char *flat_wrapped[] = {"imgs/a.png", "imgs/b.png"}; /* one folder = a wrapper */
    ck_assert_int_eq(layout(flat_wrapped, 2, &lay, why), 0);
    ck_assert(!lay.labeled && lay.strip);

    const char *splits[] = {"train/0/a.png", "train/1/b.png", "test/0/c.png", "test/1/d.png"};
    ck_assert_int_eq(layout(splits, 4, &lay, why), 0);
    ck_assert(lay.labeled && lay.splits && lay.has_test && !lay.strip);
    ck_assert_int_eq(srv__dataset_place(&lay, "test/1/d.png", sp, 64, cls, 64, base, 64), 0);
    ck_assert_str_eq(sp, "test");
    ck_assert_str_eq(cls, "1");
    ck_assert_str_eq(base, "d.png");

    const char *splits_wrapped[] = {"ds/train/0/a.png", "ds/train/1/b.png"};
    ck_assert_int_eq(layout(splits_wrapped, 2, &lay, why), 0);
    ck_assert(lay.labeled && lay.splits && !lay.has_test && lay.strip);

    const char *splits_flat[] = {"train/a.png", "test/b.png"};
    ck_assert_int_eq(layout(splits_flat, 2, &lay, why), 0);
    ck_assert(!lay.labeled && lay.splits && lay.has_test);
    ck_assert_int_eq(srv__dataset_place(&lay, "test/b.png", sp, 64, cls, 64, base, 64), 0);
    ck_assert_str_eq(sp, "test");
    ck_assert_str_eq(cls, "_unlabeled");
}
END_TEST

START_TEST(layouts_refused) {
    srv__ds_layout lay;
    char why[480];
    const char *mixed[] = {"0/a.png", "b.png"};
    ck_assert_int_eq(layout(mixed, 2, &lay, why), -1);
    ck_assert_ptr_nonnull(strstr(why, "depths"));
    const char *deep[] = {"a/b/c/d.png", "x/b/c/d.png"};
    ck_assert_int_eq(layout(deep, 2, &lay, why), -1);
    const char *beside[] = {"train/0/a.png", "other/0/b.png"};
    ck_assert_int_eq(layout(beside, 2, &lay, why), -1);
    const char *beside2[] = {"train/a.png", "cls/b.png"};
    ck_assert_int_eq(layout(beside2, 2, &lay, why), -1);
    const char *test_only[] = {"test/0/a.png", "test/1/b.png"};
    ck_assert_int_eq(layout(test_only, 2, &lay, why), -1);
    const char *diff[] = {"train/0/a.png", "train/1/b.png", "test/0/c.png", "test/2/d.png"};
    ck_assert_int_eq(layout(diff, 4, &lay, why), -1);
    ck_assert_ptr_nonnull(strstr(why, "classes"));
    ck_assert_int_eq(layout(NULL, 0, &lay, why), -1);
}
END_TEST

START_TEST(names) {
    srv_dataset_err e = {0};
    ck_assert(srv_dataset_builtin("mnist") && srv_dataset_builtin("fashion") &&
              srv_dataset_builtin("fashion-mnist") && !srv_dataset_builtin("digits"));
    ck_assert_int_eq(srv_dataset_name_check("digits", &e), 0);
    ck_assert_int_eq(srv_dataset_name_check("mnist", &e), -1);
    ck_assert_int_eq(e.status, 403);
    ck_assert_str_eq(e.code, "builtin_dataset");
    ck_assert_int_eq(srv_dataset_name_check("../x", &e), -1);
    ck_assert_int_eq(e.status, 400);
    ck_assert_int_eq(srv_dataset_name_check(".hidden", &e), -1);
}
END_TEST

static void touch(const char *p) {
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs("x", f);
    fclose(f);
}

START_TEST(labeled_describe_delete) {
    char root[] = "/tmp/dynd_ds_XXXXXX", p[512];
    ck_assert_ptr_nonnull(mkdtemp(root));
    /* an operator's image folder with classes, one with only _unlabeled, an IDX set, a set
     * with a manifest saying unlabeled */
    snprintf(p, sizeof p, "%s/cls", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cls/a", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cls/b", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/unl", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/unl/_unlabeled", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/idx", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/idx/train-images-idx3-ubyte.gz", root), touch(p);
    snprintf(p, sizeof p, "%s/man", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/man/a", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/man/.dataset.json", root);
    FILE *f = fopen(p, "w");
    fputs("{\"name\": \"man\", \"labeled\": false, \"images\": 3}", f);
    fclose(f);
    ck_assert_int_eq(srv_dataset_labeled(root, "cls"), 1);
    ck_assert_int_eq(srv_dataset_labeled(root, "unl"), 0);
    ck_assert_int_eq(srv_dataset_labeled(root, "idx"), 1);
    ck_assert_int_eq(srv_dataset_labeled(root, "man"), 0);
    ck_assert_int_eq(srv_dataset_labeled(root, "none"), DYN_EIO);
    ck_assert_int_eq(srv_dataset_labeled(root, "../x"), DYN_EINVAL);

    srv_dataset_err e = {0};
    json_t *d = srv_dataset_describe(root, "cls", &e);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(json_array_size(json_object_get(d, "classes")), 2);
    ck_assert(json_is_false(json_object_get(d, "managed")));
    json_decref(d);
    d = srv_dataset_describe(root, "man", &e);
    ck_assert(json_is_true(json_object_get(d, "managed")));
    ck_assert_int_eq(json_integer_value(json_object_get(d, "images")), 3);
    json_decref(d);
    ck_assert_ptr_null(srv_dataset_describe(root, "none", &e));
    ck_assert_int_eq(e.status, 404);
    json_t *l = srv_dataset_list(root);
    json_t *ds = json_object_get(l, "datasets");
    ck_assert_int_eq(json_array_size(ds), 4);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ds, 0), "name")), "cls");
    json_decref(l);

    /* a data set that is a symbolic link: the link goes, the target stays */
    char target[600];
    snprintf(target, sizeof target, "%s/cls", root);
    snprintf(p, sizeof p, "%s/link", root);
    ck_assert_int_eq(symlink(target, p), 0);
    ck_assert_int_eq(srv_dataset_labeled(root, "link"), 1);
    ck_assert_int_eq(srv_dataset_delete(root, "link", &e), 0);
    struct stat st;
    ck_assert_int_ne(lstat(p, &st), 0);
    snprintf(p, sizeof p, "%s/cls/a", root);
    ck_assert_int_eq(stat(p, &st), 0);
    /* a real one */
    ck_assert_int_eq(srv_dataset_delete(root, "cls", &e), 0);
    snprintf(p, sizeof p, "%s/cls", root);
    ck_assert_int_ne(lstat(p, &st), 0);
    ck_assert_int_eq(srv_dataset_delete(root, "cls", &e), -1);
    ck_assert_int_eq(e.status, 404);
    ck_assert_int_eq(srv_dataset_delete(root, "mnist", &e), -1);
    ck_assert_int_eq(e.status, 403);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

Suite *datasets_suite(void) {
    Suite *s = suite_create("srv_datasets");
    TCase *tc = tcase_create("datasets");
    tcase_add_test(tc, path_norm_ok);
    tcase_add_test(tc, path_norm_refused);
    tcase_add_test(tc, layouts);
    tcase_add_test(tc, layouts_refused);
    tcase_add_test(tc, names);
    tcase_add_test(tc, labeled_describe_delete);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(datasets_suite)
