/* test_srv_repository.c — server/repository: the model-name check every request name and
 * every file in model_dir goes through (repository.h: 1..64 of [A-Za-z0-9_.-], not starting
 * with '.'), which is what keeps names from escaping model_dir. */
#include <string.h>

#include "server/repository.h"
#include "testutil.h"

START_TEST(valid_names) {
    const char *ok[] = {"mnist", "a", "Z", "0", "A-b_c.1", "lenet5.v2", "a..b", "a.", "-x", "_"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(srv_repo_name_valid(ok[i]), "'%s' refused", ok[i]);
    char longest[SRV_NAME_MAX + 1];
    memset(longest, 'n', SRV_NAME_MAX);
    longest[SRV_NAME_MAX] = 0;
    ck_assert(srv_repo_name_valid(longest));
}
END_TEST

START_TEST(invalid_names) {
    const char *bad[] = {NULL,    "",     ".",      "..",      ".hidden", "../etc", "a/b",
                         "/abs",  "a\\b", "a b",    " a",      "a\n",     "a%2e",   "a:b",
                         "a*",    "a?",   "\xc3\xa9", "na\xffme", "a;b",    "~x",     "$(x)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!srv_repo_name_valid(bad[i]), "'%s' accepted", bad[i] ? bad[i] : "NULL");
    char toolong[SRV_NAME_MAX + 2];
    memset(toolong, 'n', SRV_NAME_MAX + 1);
    toolong[SRV_NAME_MAX + 1] = 0;
    ck_assert(!srv_repo_name_valid(toolong));
    /* Every byte outside the allowed set is refused, in any position. */
    for (int c = 1; c < 256; c++) {
        int allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
        char mid[4] = {'a', (char)c, 'b', 0};
        ck_assert_msg(srv_repo_name_valid(mid) == allowed, "byte %d", c);
    }
}
END_TEST

Suite *repository_suite(void) {
    Suite *s = suite_create("srv_repository");
    TCase *tc = tcase_create("names");
    tcase_add_test(tc, valid_names);
    tcase_add_test(tc, invalid_names);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(repository_suite)
