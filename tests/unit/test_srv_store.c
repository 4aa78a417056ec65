/* test_srv_store.c — the pure parts of the S3 model store (server/s3.h, server/store.h): URL and
 * key building with percent-encoding, model_store URIs, manifests accepted and refused, XML
 * element text with entities, ListObjectsV2 pages (truncation, token), S3 error replies, and
 * settings resolved from the config and the environment. The network paths run against s3rver
 * in tests/integration/test_store_s3.sh. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/s3.h"
#include "server/store.h"
#include "testutil.h"

static srv_s3 s3_at(const char *endpoint, const char *bucket) {
    srv_s3 s;
    memset(&s, 0, sizeof s);
    snprintf(s.endpoint, sizeof s.endpoint, "%s", endpoint);
    snprintf(s.bucket, sizeof s.bucket, "%s", bucket);
    return s;
}

START_TEST(urls_and_keys) {
    srv_s3 s = s3_at("http://127.0.0.1:9000", "models");
    char u[256];
    ck_assert_int_eq(srv_s3_url(&s, "team/m/1 a+b.dyn", NULL, u, sizeof u), 0);
    ck_assert_str_eq(u, "http://127.0.0.1:9000/models/team/m/1%20a%2Bb.dyn");
    ck_assert_int_eq(srv_s3_url(&s, NULL, "list-type=2&prefix=team%2F", u, sizeof u), 0);
    ck_assert_str_eq(u, "http://127.0.0.1:9000/models?list-type=2&prefix=team%2F");
    ck_assert_int_eq(srv_s3_url(&s, "k", NULL, u, 20), -1); /* does not fit */
    char e[64];
    ck_assert_int_eq(srv_s3_encode("a/b~c_d.e-f é", 0, e, sizeof e), 0);
    ck_assert_str_eq(e, "a%2Fb~c_d.e-f%20%C3%A9");
    ck_assert_int_eq(srv_s3_encode("abc", 0, e, 4), 0);
    ck_assert_int_eq(srv_s3_encode("abcd", 0, e, 4), -1);
    ck_assert_int_eq(srv_s3_encode("a b", 0, e, 5), -1); /* "a%20b" needs 6 */
    char k[64];
    ck_assert_int_eq(srv_store_key("team/models", "lenet", "manifest.json", k, sizeof k), 0);
    ck_assert_str_eq(k, "team/models/lenet/manifest.json");
    ck_assert_int_eq(srv_store_key("", "lenet", "x.dyn", k, sizeof k), 0);
    ck_assert_str_eq(k, "lenet/x.dyn");
    ck_assert_int_eq(srv_store_key("p", "lenet", "manifest.json", k, 10), -1);
}
END_TEST

START_TEST(store_uris) {
    char b[64], p[512];
    dyn_err err = {0};
    ck_assert_int_eq(srv_store_parse_uri("s3://my-bucket/team/models/", b, sizeof b, p, sizeof p, &err), 0);
    ck_assert_str_eq(b, "my-bucket");
    ck_assert_str_eq(p, "team/models");
    ck_assert_int_eq(srv_store_parse_uri("s3://my-bucket", b, sizeof b, p, sizeof p, &err), 0);
    ck_assert_str_eq(p, "");
    const char *bad[] = {"http://b/x", "s3://ab/x", "s3://Upper/x", "s3://b_b_b/x", "s3://bucket/a//b",
                         "s3://bucket/a/../b", "s3://bucket//x", "gs://bucket"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        ck_assert_msg(srv_store_parse_uri(bad[i], b, sizeof b, p, sizeof p, &err) == DYN_EINVAL,
                      "%s accepted", bad[i]);
        ck_assert_msg(strstr(err.msg, "model_store"), "no message for %s: %s", bad[i], err.msg);
    }
}
END_TEST

#define MAN(versions) \
    "{\"format\": \"dynd-model-manifest/1\", \"name\": \"m\", \"versions\": [" versions "]}"

START_TEST(manifests) {
    dyn_err err = {0};
    json_t *m = srv_store_manifest_parse(
        MAN("{\"version\": 1, \"key\": \"p/m/a.dyn\", \"size\": 10},"
            "{\"version\": 3, \"key\": \"p/m/b.dyn\", \"size\": 0, \"etag\": \"x\"}"), "p", "m", &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    ck_assert_int_eq(json_array_size(json_object_get(m, "versions")), 2);
    json_decref(m);
    struct { const char *text, *why; } bad[] = {
        {"not json", "not JSON"},
        {"{\"format\": \"other/1\", \"name\": \"m\", \"versions\": []}", "format"},
        {"{\"format\": \"dynd-model-manifest/1\", \"name\": \"n\", \"versions\": []}", "name"},
        {MAN("{\"version\": 2, \"key\": \"p/m/a.dyn\", \"size\": 1}, {\"version\": 2, \"key\": \"p/m/b.dyn\", \"size\": 1}"), "ascending"},
        {MAN("{\"version\": 0, \"key\": \"p/m/a.dyn\", \"size\": 1}"), "ascending"},
        {MAN("{\"version\": 1, \"key\": \"p/other/a.dyn\", \"size\": 1}"), "directly under p/m/"},
        {MAN("{\"version\": 1, \"key\": \"p/m/sub/a.dyn\", \"size\": 1}"), "directly under"},
        {MAN("{\"version\": 1, \"key\": \"p/m/a.txt\", \"size\": 1}"), ".dyn"},
        {MAN("{\"version\": 1, \"key\": \"p/m/a.dyn\", \"size\": -1}"), "size"},
        {MAN("{\"version\": 1, \"key\": \"p/m/a.dyn\"}"), "size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        ck_assert_msg(srv_store_manifest_parse(bad[i].text, "p", "m", &err) == NULL, "accepted: %s",
                      bad[i].text);
        ck_assert_msg(strstr(err.msg, bad[i].why), "%s: message '%s' lacks '%s'", bad[i].text,
                      err.msg, bad[i].why);
    }
    /* more versions than the repository serves */
    json_t *vs = json_array();
    for (int v = 1; v <= SRV_STORE_MAX_VERSIONS + 1; v++)
        json_array_append_new(vs, json_pack("{s:i, s:s, s:i}", "version", v, "key", "p/m/a.dyn", "size", 1));
    json_t *big = json_pack("{s:s, s:s, s:o}", "format", SRV_STORE_MANIFEST_FORMAT, "name", "m", "versions", vs);
    char *text = json_dumps(big, 0);
    ck_assert_ptr_null(srv_store_manifest_parse(text, "p", "m", &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "at most 16"));
    free(text);
    json_decref(big);
}
END_TEST

START_TEST(xml_text) {
    char out[64];
    const char *x = "<A><Code>NoSuchKey</Code><Message>a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; &#65;&#x42;</Message></A>";
    const char *after = srv_s3_xml_text(x, "Code", out, sizeof out);
    ck_assert_str_eq(out, "NoSuchKey");
    ck_assert_ptr_nonnull(after);
    ck_assert_ptr_nonnull(srv_s3_xml_text(after, "Message", out, sizeof out));
    ck_assert_str_eq(out, "a <b> & \"c\" 'd' AB");
    ck_assert_ptr_null(srv_s3_xml_text(after, "Code", out, sizeof out)); /* only after */
    ck_assert_str_eq(out, "");
    ck_assert_ptr_null(srv_s3_xml_text("<Code>unclosed", "Code", out, sizeof out));
    ck_assert_ptr_null(srv_s3_xml_text("<Code>too long for it</Code>", "Code", out, 5));
    ck_assert_str_eq(out, "");
    ck_assert_ptr_null(srv_s3_xml_text(NULL, "Code", out, sizeof out));
    /* an unknown entity is kept as text */
    ck_assert_ptr_nonnull(srv_s3_xml_text("<K>a&b;</K>", "K", out, sizeof out));
    ck_assert_str_eq(out, "a&b;");
}
END_TEST

START_TEST(list_pages) {
    dyn_err err = {0};
    srv_s3_page pg;
    const char *x =
        "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name><KeyCount>2</KeyCount>"
        "<IsTruncated>true</IsTruncated><NextContinuationToken>tok/=+</NextContinuationToken>"
        "<Contents><Key>p/m/manifest.json</Key><ETag>&quot;abc&quot;</ETag><Size>120</Size></Contents>"
        "<Contents><Key>p/m/a &amp; b.dyn</Key><ETag>&quot;d&quot;</ETag><Size>39104</Size></Contents>"
        "</ListBucketResult>";
    ck_assert_int_eq(srv_s3_parse_list(x, &pg, &err), 0);
    ck_assert_int_eq(pg.n, 2);
    ck_assert_int_eq(pg.truncated, 1);
    ck_assert_str_eq(pg.next_token, "tok/=+");
    ck_assert_str_eq(pg.objs[0].key, "p/m/manifest.json");
    ck_assert_str_eq(pg.objs[0].etag, "\"abc\"");
    ck_assert_int_eq(pg.objs[0].size, 120);
    ck_assert_str_eq(pg.objs[1].key, "p/m/a & b.dyn");
    ck_assert_int_eq(pg.objs[1].size, 39104);
    free(pg.objs);
    /* IsTruncated after the contents, and false */
    ck_assert_int_eq(srv_s3_parse_list("<ListBucketResult><Contents><Key>k</Key></Contents>"
                                       "<IsTruncated>false</IsTruncated></ListBucketResult>", &pg, &err), 0);
    ck_assert_int_eq(pg.n, 1);
    ck_assert_int_eq(pg.truncated, 0);
    ck_assert_int_eq(pg.objs[0].size, -1);
    free(pg.objs);
    ck_assert_int_eq(srv_s3_parse_list("<ListBucketResult></ListBucketResult>", &pg, &err), 0);
    ck_assert_int_eq(pg.n, 0);
    ck_assert_int_eq(srv_s3_parse_list("<Error><Code>x</Code></Error>", &pg, &err), DYN_EIO);
    ck_assert_int_eq(srv_s3_parse_list("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", &pg, &err), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "NextContinuationToken"));
    ck_assert_int_eq(srv_s3_parse_list("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>", &pg, &err), DYN_EIO);
    ck_assert_ptr_null(pg.objs);
}
END_TEST

START_TEST(error_replies) {
    char t[256];
    srv_s3_res r;
    memset(&r, 0, sizeof r);
    srv_s3_error_text(403, "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS "
                      "Access Key Id you provided does not exist in our records.</Message></Error>", &r, t, sizeof t);
    ck_assert_str_eq(t, "HTTP 403 InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.");
    ck_assert_str_eq(r.code, "InvalidAccessKeyId");
    srv_s3_error_text(412, "<Error><Code>PreconditionFailed</Code></Error>", &r, t, sizeof t);
    ck_assert_str_eq(t, "HTTP 412 PreconditionFailed: (no message)");
    srv_s3_error_text(502, "<html>bad gateway</html>", &r, t, sizeof t);
    ck_assert_str_eq(t, "HTTP 502");
    ck_assert_str_eq(r.code, "");
    srv_s3_error_text(404, NULL, NULL, t, sizeof t); /* HEAD: no body */
    ck_assert_str_eq(t, "HTTP 404");
}
END_TEST

START_TEST(settings) {
    srv_config cfg;
    memset(&cfg, 0, sizeof cfg);
    srv_store *st = (srv_store *)1;
    dyn_err err = {0};
    ck_assert_int_eq(srv_store_open(&cfg, &st, &err), 0); /* unset: model_dir alone */
    ck_assert_ptr_null(st);
    snprintf(cfg.model_store, sizeof cfg.model_store, "s3://models-b/p");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    ck_assert_int_eq(srv_store_open(&cfg, &st, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "needs credentials"));
    setenv("AWS_ACCESS_KEY_ID", "K", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
    snprintf(cfg.store_endpoint, sizeof cfg.store_endpoint, "ftp://x");
    ck_assert_int_eq(srv_store_open(&cfg, &st, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "store_endpoint"));
    snprintf(cfg.store_endpoint, sizeof cfg.store_endpoint, "http://127.0.0.1:9/");
    ck_assert_int_eq(srv_store_open(&cfg, &st, &err), 0);
    ck_assert_ptr_nonnull(st);
    srv_store_free(st);
    snprintf(cfg.model_store, sizeof cfg.model_store, "s3://x");
    ck_assert_int_eq(srv_store_open(&cfg, &st, &err), DYN_EINVAL);
    ck_assert_ptr_null(st);
}
END_TEST

/* Job files (store.h "job files"): keys, and a store that does not answer (port 9 on loopback
 * refuses connections) gives errors naming the job and the file, never a crash; an async delete
 * is waited for by srv_store_free. The working paths run against s3rver in
 * tests/integration/test_store_jobs.sh. */
START_TEST(job_files) {
    srv_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_store, sizeof cfg.model_store, "s3://models-b/team/models");
    snprintf(cfg.store_endpoint, sizeof cfg.store_endpoint, "http://127.0.0.1:9");
    setenv("AWS_ACCESS_KEY_ID", "K", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
    srv_store *st = NULL;
    dyn_err err = {0};
    ck_assert_int_eq(srv_store_open(&cfg, &st, &err), 0);
    ck_assert_int_eq(srv_s3_global_init(&err), 0);
    char k[128];
    ck_assert_int_eq(srv_store_job_key(st, "ft-0a1b2c", "ckpt/state.json", k, sizeof k), 0);
    ck_assert_str_eq(k, "team/models/.jobs/ft-0a1b2c/ckpt/state.json");
    ck_assert_int_eq(srv_store_job_key(st, "ft-0a1b2c", "", k, sizeof k), 0);
    ck_assert_str_eq(k, "team/models/.jobs/ft-0a1b2c/");
    ck_assert_int_eq(srv_store_job_key(st, "ft-0a1b2c", "upload.bin", k, 20), -1); /* too long */
    const char *bad_ids[] = {"", "../x", "A-1", "a/b", NULL};
    for (int i = 0; bad_ids[i]; i++)
        ck_assert_msg(srv_store_job_key(st, bad_ids[i], "x", k, sizeof k) == -1, "id %s", bad_ids[i]);
    const char *bad_leaves[] = {"/x", "../x", "ckpt/../../y", "a//b", NULL};
    for (int i = 0; bad_leaves[i]; i++)
        ck_assert_msg(srv_store_job_key(st, "ft-1", bad_leaves[i], k, sizeof k) == -1, "leaf %s",
                      bad_leaves[i]);
    ck_assert_int_eq(srv_store_job_put(st, "ft-1", "../up", "/dev/null", &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "job 'ft-1'"));

    /* nobody listening */
    char dir[] = "/tmp/test_srv_store_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char f[64], sub[64];
    snprintf(f, sizeof f, "%s/upload.bin", dir);
    FILE *fp = fopen(f, "w");
    ck_assert_ptr_nonnull(fp);
    fputs("0123456789abcdef", fp);
    fclose(fp);
    ck_assert_int_eq(srv_store_job_put(st, "conv-1", "upload.bin", f, &err), DYN_EIO);
    ck_assert_msg(strstr(err.msg, "model store: storing upload.bin of job 'conv-1'"), "%s", err.msg);
    int found = 7;
    snprintf(sub, sizeof sub, "%s/got.bin", dir);
    ck_assert_int_eq(srv_store_job_get(st, "conv-1", "upload.bin", sub, &found, &err), DYN_EIO);
    ck_assert_int_eq(found, 0);
    ck_assert_msg(strstr(err.msg, "fetching upload.bin of job 'conv-1'"), "%s", err.msg);
    ck_assert_int_ne(access(sub, F_OK), 0);
    ck_assert_int_eq(srv_store_job_push_dir(st, "ft-1", "ckpt", dir, "upload.bin", 0, NULL, &err),
                     DYN_EIO);
    ck_assert_int_eq(srv_store_job_push_dir(st, "ft-1", "ckpt", dir, "missing.json", 0, NULL, &err),
                     DYN_EIO); /* no `last`: an error, even before the network */
    snprintf(sub, sizeof sub, "%s/ckpt", dir);
    ck_assert_int_eq(srv_store_job_fetch_dir(st, "ft-1", "ckpt", sub, "state.json", NULL, NULL,
                                             &found, &err), DYN_EIO);
    ck_assert_int_eq(found, 0);
    ck_assert_int_ne(access(sub, F_OK), 0); /* nothing made */
    int n = 9;
    ck_assert_int_eq(srv_store_job_delete(st, "ft-1", &n, &err), DYN_EIO);
    ck_assert_int_eq(n, 0);
    ck_assert_msg(strstr(err.msg, "listing the files of job 'ft-1'"), "%s", err.msg);
    srv_store_job_delete_async(st, "ft-1");
    srv_store_free(st); /* waits for the delete */
    unlink(f);
    rmdir(dir);
}
END_TEST

Suite *store_suite(void) {
    Suite *s = suite_create("srv_store");
    TCase *tc = tcase_create("store");
    tcase_add_test(tc, urls_and_keys);
    tcase_add_test(tc, store_uris);
    tcase_add_test(tc, manifests);
    tcase_add_test(tc, xml_text);
    tcase_add_test(tc, list_pages);
    tcase_add_test(tc, error_replies);
    tcase_add_test(tc, settings);
    tcase_add_test(tc, job_files);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(store_suite)
