/* test_io.c — engine/io: safetensors reader/writer (round trip, alignment, I8 / I16, and
 * rejection of every kind of damaged file), model files (bit-exact round trip, damaged metadata
 * and tensors, DyN states stored as I8 / I16 codes, hostile "quant" metadata), IDX data sets
 * (valid, gzip, damaged, helpers, and the real MNIST when present), data sets by name
 * (io/dataset.h) and atomic file writes (io/file.h). */
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "convert/convert.h"
#include "cpu/dnnl_conv.h"
#include "io/dataset.h"
#include "io/file.h"
#include "io/idx.h"
#include "io/image.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "model.h"
#include "testutil.h"

/* ---- helpers ---- */

/* Each test works in its own directory under g_root; g_root is created once per test case in
 * the parent process (an unchecked fixture) and removed there even when tests fail. */
static char g_root[64], g_dir[128];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void root_setup(void) {
    snprintf(g_root, sizeof g_root, "/tmp/dynd_test_io_XXXXXX");
    if (!mkdtemp(g_root)) abort();
}

static void root_teardown(void) { nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void tmp_setup(void) {
    snprintf(g_dir, sizeof g_dir, "%s/t_XXXXXX", g_root);
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static void tmp_teardown(void) { nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static const char *tmp_path(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static int count_dir_entries(void) {
    DIR *d = opendir(g_dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (n) ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/* A safetensors file from a header string and data, with header length `hlen` written as is
 * (UINT64_MAX = the real length). */
static void write_st_raw(const char *path, const char *hdr, uint64_t hlen, const void *data,
                         size_t dlen) {
    size_t hl = strlen(hdr);
    if (hlen == UINT64_MAX) hlen = hl;
    uint8_t *b = malloc(8 + hl + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    write_bytes(path, b, 8 + hl + dlen);
    free(b);
}

/* dyn_st_read must fail; its message must mention every string of `want` (NULL-terminated). */
static void st_fails(const char *path, int code, const char *const *want) {
    dyn_st_file *f = (dyn_st_file *)1;
    dyn_err err = {0};
    int rc = dyn_st_read(path, &f, &err);
    ck_assert_msg(rc < 0, "%s was accepted", path);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(err.code, rc);
    if (code) ck_assert_int_eq(rc, code);
    ck_assert_msg(err.msg[0] != '\0', "empty message");
    ck_assert_msg(strstr(err.msg, path) != NULL, "message '%s' does not name the file", err.msg);
    for (int i = 0; want && want[i]; i++)
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "message '%s' lacks '%s'", err.msg,
                      want[i]);
}

#define WANT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- safetensors ---- */

START_TEST(st_roundtrip) {
    tmp_setup();
    char path[256];
    tmp_path("a.safetensors", path, sizeof path);
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    float a[2 * 3 * 4 * 5], b[7], c[1];
    tu_fill_uniform(a, 120, &r, -3, 3);
    tu_fill_uniform(b, 7, &r, -1e30f, 1e30f);
    c[0] = -0.0f;
    a[5] = 1e-40f; /* a subnormal survives */
    int64_t sa[4] = {2, 3, 4, 5}, sb[1] = {7}, sz[2] = {3, 0};
    dyn_st_entry e[4] = {
        {"layer.weight", 4, sa, a, DYN_ST_F32, NULL},
        {"b", 1, sb, b, DYN_ST_F32, NULL},
        {"scalar", 0, NULL, c, DYN_ST_F32, NULL},
        {"empty", 2, sz, NULL, DYN_ST_F32, NULL},
    };
    json_t *meta = json_pack("{s:s, s:s}", "format", "test", "note", "x\"y\n\xc3\xa9");
    dyn_err err = {0};
    ck_assert_msg(dyn_st_write(path, e, 4, meta, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(count_dir_entries(), 1); /* no temporary left behind */

    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    ck_assert_uint_eq((8 + hl) % 8, 0);       /* data buffer 8-byte aligned */
    ck_assert_uint_eq(n, 8 + hl + (120 + 7 + 1) * 4);
    ck_assert_int_eq(raw[8], '{');
    free(raw);

    dyn_st_file *f;
    ck_assert_msg(dyn_st_read(path, &f, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f->ntensors, 4);
    ck_assert_str_eq(dyn_st_meta(f, "format"), "test");
    ck_assert_str_eq(dyn_st_meta(f, "note"), "x\"y\n\xc3\xa9");
    ck_assert_ptr_null(dyn_st_meta(f, "nope"));
    ck_assert_ptr_null(dyn_st_find(f, "nope"));
    const dyn_st_tensor *t = dyn_st_find(f, "layer.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 4);
    ck_assert_int_eq(t->dtype, DYN_ST_F32);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(t->shape[i], sa[i]);
    float back[120];
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, back, 120, &err), 0);
    ck_assert_int_eq(memcmp(back, a, sizeof a), 0);
    ck_assert_int_lt(dyn_st_tensor_read_f32(f, t, back, 119, &err), 0); /* wrong count */
    t = dyn_st_find(f, "b");
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, back, 7, &err), 0);
    ck_assert_int_eq(memcmp(back, b, sizeof b), 0);
    t = dyn_st_find(f, "scalar");
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_int_eq(t->numel, 1);
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, back, 1, &err), 0);
    ck_assert_int_eq(memcmp(back, c, 4), 0);
    t = dyn_st_find(f, "empty");
    ck_assert_int_eq(t->numel, 0);
    ck_assert_int_eq(t->ndim, 2);
    /* data-offset order = write order, each F32 tensor 4-byte aligned in the file */
    ck_assert_str_eq(f->tensors[0].name, "layer.weight");
    for (int i = 0; i < f->ntensors; i++) ck_assert_uint_eq(f->tensors[i].begin % 4, 0);
    dyn_st_free(f);

    /* The same bytes parse from memory too. */
    raw = read_bytes(path, &n);
    ck_assert_msg(dyn_st_parse(raw, n, "mem", &f, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f->ntensors, 4);
    dyn_st_free(f);
    free(raw);

    /* Rewriting over the file keeps one file and no temporaries. */
    ck_assert_msg(dyn_st_write(path, e, 2, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(count_dir_entries(), 1);
    ck_assert_int_eq(dyn_st_read(path, &f, &err), 0);
    ck_assert_int_eq(f->ntensors, 2);
    ck_assert_int_eq(json_object_size(f->metadata), 0);
    dyn_st_free(f);
    json_decref(meta);
    tmp_teardown();
}
END_TEST

START_TEST(st_write_rejects_bad_input) {
    tmp_setup();
    char path[256];
    tmp_path("w.safetensors", path, sizeof path);
    float x[2] = {1, 2};
    int64_t s2[1] = {2}, neg[1] = {-1};
    dyn_err err = {0};
    dyn_st_entry dup[2] = {{"a", 1, s2, x, DYN_ST_F32, NULL}, {"a", 1, s2, x, DYN_ST_F32, NULL}};
    ck_assert_int_lt(dyn_st_write(path, dup, 2, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "'a'"));
    dyn_st_entry reserved[1] = {{"__metadata__", 1, s2, x, DYN_ST_F32, NULL}};
    ck_assert_int_lt(dyn_st_write(path, reserved, 1, NULL, &err), 0);
    dyn_st_entry bad[1] = {{"n", 1, neg, x, DYN_ST_F32, NULL}};
    ck_assert_int_lt(dyn_st_write(path, bad, 1, NULL, &err), 0);
    json_t *meta = json_pack("{s:i}", "k", 1);
    ck_assert_int_lt(dyn_st_write(path, dup, 1, meta, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a string"));
    json_decref(meta);
    ck_assert_int_eq(count_dir_entries(), 0); /* nothing written, no temporary left */
    /* A directory that does not exist: an I/O error, not a crash. */
    ck_assert_int_eq(dyn_st_write("/nonexistent-dir/x.safetensors", dup, 1, NULL, &err), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent-dir/x.safetensors"));
    tmp_teardown();
}
END_TEST

typedef struct writer_arg {
    const char *path;
    int id, failures;
} writer_arg;

static void *writer_main(void *p) {
    writer_arg *a = p;
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = (float)a->id;
    int64_t s[1] = {256};
    dyn_st_entry e = {"x", 1, s, x, DYN_ST_F32, NULL};
    for (int r = 0; r < 20; r++) {
        dyn_err err = {0};
        if (dyn_st_write(a->path, &e, 1, NULL, &err)) a->failures++;
    }
    return NULL;
}

/* Threads writing one path at once: every write succeeds, the result is one writer's complete
 * file, and no temporary is left. */
START_TEST(st_concurrent_writers) {
    tmp_setup();
    char path[256];
    tmp_path("c.safetensors", path, sizeof path);
    pthread_t th[4];
    writer_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (writer_arg){path, i + 1, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, writer_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    ck_assert_int_eq(count_dir_entries(), 1);
    dyn_st_file *f;
    dyn_err err = {0};
    ck_assert_msg(dyn_st_read(path, &f, &err) == 0, "%s", err.msg);
    float x[256];
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, dyn_st_find(f, "x"), x, 256, &err), 0);
    ck_assert(x[0] >= 1 && x[0] <= 4);
    for (int i = 1; i < 256; i++) ck_assert(x[i] == x[0]);
    dyn_st_free(f);
    tmp_teardown();
}
END_TEST

/* A small valid file with two tensors and metadata. */
static void small_valid_st(const char *path) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, 0.5f, 7};
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    dyn_st_entry e[2] = {{"w", 2, sa, a, DYN_ST_F32, NULL}, {"bias", 1, sb, b, DYN_ST_F32, NULL}};
    json_t *meta = json_pack("{s:s}", "k", "v");
    dyn_err err = {0};
    ck_assert_msg(dyn_st_write(path, e, 2, meta, &err) == 0, "%s", err.msg);
    json_decref(meta);
}

START_TEST(st_truncated_every_prefix) {
    tmp_setup();
    char path[256], cut[256];
    tmp_path("full.safetensors", path, sizeof path);
    tmp_path("cut.safetensors", cut, sizeof cut);
    small_valid_st(path);
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    for (size_t k = 0; k < n; k++) {
        write_bytes(cut, raw, k);
        st_fails(cut, 0, NULL);
        dyn_st_file *f;
        dyn_err err = {0};
        ck_assert_int_lt(dyn_st_parse(raw, k, "mem", &f, &err), 0);
        ck_assert_ptr_null(f);
    }
    /* One byte more than the tensors cover is rejected too. */
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, raw, n);
    longer[n] = 0;
    write_bytes(cut, longer, n + 1);
    st_fails(cut, DYN_EFORMAT, WANT("trailing"));
    free(longer);
    free(raw);
    tmp_teardown();
}
END_TEST

START_TEST(st_header_length_lies) {
    tmp_setup();
    char path[256];
    tmp_path("h.safetensors", path, sizeof path);
    write_st_raw(path, "{}", 1000, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("header length 1000"));
    write_st_raw(path, "{}", UINT64_MAX - 3, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("header length"));
    write_st_raw(path, "{}", 0, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("'{'"));
    /* Valid length, too short for the JSON inside it. */
    write_st_raw(path, "{\"a\":1}", 3, NULL, 0);
    st_fails(path, DYN_EFORMAT, NULL);
    /* Header over the size cap (a sparse file: cheap). */
    FILE *f = fopen(path, "wb");
    uint64_t big = DYN_ST_MAX_HEADER + 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(big >> (8 * i));
    fwrite(len8, 1, 8, f);
    fputc('{', f);
    fseek(f, (long)big + 7, SEEK_SET);
    fputc('}', f);
    fclose(f);
    st_fails(path, DYN_EFORMAT, WANT("limit"));
    write_bytes(path, "", 0);
    st_fails(path, DYN_EFORMAT, WANT("too short"));
    st_fails("/nonexistent-dir/x.safetensors", DYN_EIO, WANT("cannot open"));
    st_fails(g_dir, DYN_EIO, WANT("not a regular file"));
    tmp_teardown();
}
END_TEST

START_TEST(st_garbage) {
    tmp_setup();
    char path[256];
    tmp_path("g.safetensors", path, sizeof path);
    dyn_rng r;
    dyn_rng_seed(&r, 99);
    uint8_t b[4096];
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + dyn_rng_below(&r, sizeof b);
        for (size_t i = 0; i < n; i++) b[i] = (uint8_t)dyn_rng_below(&r, 256);
        if (trial % 2) { /* plausible length, garbage header */
            uint64_t hl = n > 8 ? dyn_rng_below(&r, (uint32_t)(n - 8 + 1)) : 0;
            for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hl >> (8 * i));
            if (n > 8 && trial % 4 == 1) b[8] = '{';
        }
        write_bytes(path, b, n);
        st_fails(path, 0, NULL);
    }
    /* Random byte flips in a valid file never crash (they may or may not be detected: a flip
     * in the data is legal). */
    small_valid_st(path);
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    for (int trial = 0; trial < 500; trial++) {
        uint8_t *m = malloc(n);
        memcpy(m, raw, n);
        for (int k = 0; k < 3; k++) m[dyn_rng_below(&r, (uint32_t)n)] = (uint8_t)dyn_rng_u64(&r);
        dyn_st_file *f;
        dyn_err err = {0};
        if (dyn_st_parse(m, n, "flip", &f, &err) == 0) {
            for (int i = 0; i < f->ntensors; i++) {
                float *tmp = malloc((size_t)f->tensors[i].numel * 4 + 4);
                ck_assert_int_eq(dyn_st_tensor_read_f32(f, &f->tensors[i], tmp,
                                                        f->tensors[i].numel, &err), 0);
                free(tmp);
            }
            dyn_st_free(f);
        } else {
            ck_assert(err.msg[0] != '\0');
        }
        free(m);
    }
    free(raw);
    tmp_teardown();
}
END_TEST

START_TEST(st_bad_headers) {
    tmp_setup();
    char path[256];
    tmp_path("b.safetensors", path, sizeof path);
    float d[4] = {1, 2, 3, 4};

    write_st_raw(path, "{not json}", UINT64_MAX, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("not valid JSON"));
    write_st_raw(path, "{\"a\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
                 UINT64_MAX,
                 d, 4);
    st_fails(path, DYN_EFORMAT, WANT("not valid JSON"));
    write_st_raw(path, "[1, 2]", UINT64_MAX, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("'{'"));
    write_st_raw(path, "{\"w\": 5}", UINT64_MAX, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "not a JSON object"));
    /* wrong dtype */
    write_st_raw(path, "{\"fc1.u\": {\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
                 UINT64_MAX, d, 16);
    st_fails(path, DYN_EUNSUP, WANT("'fc1.u'", "F64"));
    write_st_raw(path, "{\"t\": {\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EUNSUP, WANT("'t'", "I32"));
    write_st_raw(path, "{\"t\": {\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", UINT64_MAX,
                 d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'t'", "dtype"));
    write_st_raw(path, "{\"t\": {\"shape\":[1],\"data_offsets\":[0,4]}}", UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'t'", "dtype"));
    /* shape / offsets mismatch */
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}",
                 UINT64_MAX, d, 12);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "[2, 2]", "16 bytes"));
    /* shape problems */
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "shape"));
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "shape"));
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,4]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "shape"));
    write_st_raw(path,
                 "{\"w\": {\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                 "\"data_offsets\":[0,4]}}", UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "overflows"));
    write_st_raw(path,
                 "{\"w\": {\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                 "\"data_offsets\":[0,4]}}", UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "too large"));
    write_st_raw(path,
                 "{\"w\": {\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,4]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "dimensions"));
    /* offsets */
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "past the end"));
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "before"));
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "data_offsets"));
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "data_offsets"));
    write_st_raw(path, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1]}}", UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("'w'", "data_offsets"));
    write_st_raw(path,
                 "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],"
                 "\"data_offsets\":[0,18446744073709551615]}}",
                 UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("not valid JSON"));
    /* overlapping tensors */
    write_st_raw(path,
                 "{\"a\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 " \"b\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 UINT64_MAX, d, 12);
    st_fails(path, DYN_EFORMAT, WANT("'a'", "'b'", "overlap"));
    write_st_raw(path,
                 "{\"a\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 " \"b\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EFORMAT, WANT("overlap"));
    /* a gap, trailing data */
    write_st_raw(path,
                 "{\"a\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 " \"b\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                 UINT64_MAX, d, 12);
    st_fails(path, DYN_EFORMAT, WANT("'b'", "gap"));
    write_st_raw(path, "{\"a\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EFORMAT, WANT("trailing"));
    write_st_raw(path, "{}", UINT64_MAX, d, 4);
    st_fails(path, DYN_EFORMAT, WANT("trailing"));
    /* duplicate names, metadata */
    write_st_raw(path,
                 "{\"a\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 " \"a\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EFORMAT, WANT("duplicate"));
    write_st_raw(path, "{\"__metadata__\": {\"k\": 1}}", UINT64_MAX, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("'k'", "not a string"));
    write_st_raw(path, "{\"__metadata__\": [\"k\"]}", UINT64_MAX, NULL, 0);
    st_fails(path, DYN_EFORMAT, WANT("__metadata__"));
    /* control characters in names are not copied into messages */
    write_st_raw(path,
                 "{\"a\\nb\\u001b[31m\": {\"dtype\":\"F64\",\"shape\":[1],"
                 "\"data_offsets\":[0,8]}}",
                 UINT64_MAX, d, 8);
    st_fails(path, DYN_EUNSUP, WANT("'a?b?[31m'"));

    /* Valid edge cases: empty header, padding spaces, an empty tensor anywhere. */
    write_st_raw(path, "{}      ", UINT64_MAX, NULL, 0);
    dyn_st_file *f;
    dyn_err err = {0};
    ck_assert_msg(dyn_st_read(path, &f, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f->ntensors, 0);
    dyn_st_free(f);
    write_st_raw(path,
                 "{\"e\": {\"dtype\":\"F32\",\"shape\":[0, 5],\"data_offsets\":[4,4]},"
                 " \"a\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 " \"__metadata__\": null}",
                 UINT64_MAX, d, 4);
    ck_assert_msg(dyn_st_read(path, &f, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f->ntensors, 2);
    ck_assert_ptr_nonnull(dyn_st_find(f, "e"));
    dyn_st_free(f);
    tmp_teardown();
}
END_TEST

START_TEST(st_half_precision) {
    tmp_setup();
    char path[256];
    tmp_path("h.safetensors", path, sizeof path);
    /* F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), +inf, -0 */
    uint16_t h[7] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x8000};
    /* BF16: 1, -3.5 */
    uint16_t bf[2] = {0x3F80, 0xC060};
    uint8_t d[18];
    for (int i = 0; i < 7; i++) {
        d[2 * i] = (uint8_t)h[i];
        d[2 * i + 1] = (uint8_t)(h[i] >> 8);
    }
    for (int i = 0; i < 2; i++) {
        d[14 + 2 * i] = (uint8_t)bf[i];
        d[14 + 2 * i + 1] = (uint8_t)(bf[i] >> 8);
    }
    write_st_raw(path,
                 "{\"h\": {\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[0,14]},"
                 " \"b\": {\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[14,18]}}",
                 UINT64_MAX, d, 18);
    dyn_st_file *f;
    dyn_err err = {0};
    ck_assert_msg(dyn_st_read(path, &f, &err) == 0, "%s", err.msg);
    float x[7];
    const dyn_st_tensor *t = dyn_st_find(f, "h");
    ck_assert_int_eq(t->dtype, DYN_ST_F16);
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, x, 7, &err), 0);
    ck_assert(x[0] == 1.0f && x[1] == -2.0f && x[2] == 65504.0f);
    ck_assert(x[3] == ldexpf(1.0f, -24) && x[4] == ldexpf(1.0f, -14));
    ck_assert(isinf(x[5]) && x[5] > 0);
    ck_assert(x[6] == 0.0f && signbit(x[6]));
    t = dyn_st_find(f, "b");
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, x, 2, &err), 0);
    ck_assert(x[0] == 1.0f && x[1] == -3.5f);
    ck_assert_str_eq(dyn_st_dtype_name(t->dtype), "BF16");
    dyn_st_free(f);
    tmp_teardown();
}
END_TEST

/* I8 / I16 tensors (integer codes): written after the F32 ones, each aligned to its element
 * size, read back as their integer values; F16 / BF16 are read but not written. */
START_TEST(st_int_codes) {
    tmp_setup();
    char path[256];
    tmp_path("i.safetensors", path, sizeof path);
    const int8_t k8[5] = {-128, -1, 0, 1, 127};
    const int16_t k16[3] = {-32768, 300, 32767};
    const float x[3] = {1.5f, -2, 3};
    int64_t s5 = 5, s3 = 3;
    dyn_st_entry e[3] = {{"k8", 1, &s5, NULL, DYN_ST_I8, k8},
                         {"k16", 1, &s3, NULL, DYN_ST_I16, k16},
                         {"x", 1, &s3, x, DYN_ST_F32, NULL}};
    dyn_err err = {0};
    ck_assert_msg(dyn_st_write(path, e, 3, NULL, &err) == 0, "%s", err.msg);
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    ck_assert_uint_eq(n, 8 + hl + 3 * 4 + 3 * 2 + 5);
    const uint8_t *d = raw + 8 + hl; /* F32 first, then I16 (little-endian), then I8 */
    ck_assert_int_eq(d[12], 0x00);
    ck_assert_int_eq(d[13], 0x80);
    ck_assert_int_eq(d[18], 0x80);
    ck_assert_int_eq(d[22], 0x7f);
    free(raw);
    dyn_st_file *f;
    ck_assert_msg(dyn_st_read(path, &f, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(f->tensors[0].name, "x");
    ck_assert_str_eq(f->tensors[1].name, "k16");
    ck_assert_str_eq(f->tensors[2].name, "k8");
    ck_assert_uint_eq(f->tensors[1].begin, 12);
    ck_assert_uint_eq(f->tensors[2].begin, 18);
    const dyn_st_tensor *t = dyn_st_find(f, "k16");
    ck_assert_int_eq(t->dtype, DYN_ST_I16);
    ck_assert_str_eq(dyn_st_dtype_name(t->dtype), "I16");
    float v[5];
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, v, 3, &err), 0);
    ck_assert(v[0] == -32768.0f && v[1] == 300.0f && v[2] == 32767.0f);
    t = dyn_st_find(f, "k8");
    ck_assert_str_eq(dyn_st_dtype_name(t->dtype), "I8");
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, v, 5, &err), 0);
    for (int i = 0; i < 5; i++) ck_assert(v[i] == (float)k8[i]);
    t = dyn_st_find(f, "x");
    ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, v, 3, &err), 0);
    ck_assert_int_eq(memcmp(v, x, sizeof x), 0);
    dyn_st_free(f);

    /* F16 / BF16 entries and codes without their buffer are refused; the old file stays */
    dyn_st_entry h = {"h", 1, &s3, x, DYN_ST_F16, NULL};
    ck_assert_int_eq(dyn_st_write(path, &h, 1, NULL, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "F16"));
    dyn_st_entry nob = {"k", 1, &s3, x, DYN_ST_I16, NULL};
    ck_assert_int_eq(dyn_st_write(path, &nob, 1, NULL, &err), DYN_EINVAL);
    ck_assert_int_eq(count_dir_entries(), 1);
    ck_assert_int_eq(dyn_st_read(path, &f, &err), 0);
    ck_assert_int_eq(f->ntensors, 3);
    dyn_st_free(f);

    /* an I8 entry whose offsets do not hold its shape */
    uint8_t b8[8] = {0};
    write_st_raw(path, "{\"k\": {\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,8]}}",
                 UINT64_MAX, b8, 8);
    st_fails(path, DYN_EFORMAT, WANT("'k'", "I8", "needs 4 bytes"));
    write_st_raw(path, "{\"k\": {\"dtype\":\"I16\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                 UINT64_MAX, b8, 4);
    st_fails(path, DYN_EFORMAT, WANT("'k'", "I16", "needs 8 bytes"));
    tmp_teardown();
}
END_TEST

/* ---- model files ---- */

static dyn_layer *mk_layer(const char *op, const char *name, const char *attrs_json) {
    json_t *a = json_loads(attrs_json, 0, NULL);
    ck_assert_ptr_nonnull(a);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, name, a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "%s '%s': %s", op, name, err.msg);
    return l;
}

static void add_seq(dyn_model *m, const char *op, const char *name, const char *attrs) {
    dyn_err err = {0};
    ck_assert_msg(dyn_model_add_seq(m, mk_layer(op, name, attrs), &err) >= 0, "%s", err.msg);
}

/* Random values in every parameter (buffers included; variances positive). */
static void randomize(dyn_model *m, uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int j = 0; j < l->nparams; j++) {
            dyn_param *p = &l->params[j];
            int pos = strstr(p->name, "var") != NULL;
            tu_fill_uniform(p->value.data, dyn_tensor_numel(&p->value), &r, pos ? 0.5f : -1.0f,
                            pos ? 2.0f : 1.0f);
        }
    }
    dyn_err err = {0};
    ck_assert_msg(dyn_model_prepare(m, &err) == 0, "%s", err.msg);
}

static void set_meta(dyn_model *m, int nlabels) {
    const char *labels[] = {"zero", "one", "two", "three", "four", "five", "six"};
    ck_assert_int_le(nlabels, 7);
    ck_assert_int_eq(dyn_model_labels_set(m, labels, nlabels), 0);
    m->preprocess = json_pack("{s:[f], s:[f], s:i, s:s}", "mean", 0.1307, "std", 0.3081,
                              "size", 28, "channels", "gray");
    m->info = json_pack("{s:s, s:f, s:{s:i}}", "command", "dyn train --arch lenet5", "lr",
                        1e-3 / 3, "nested", "epochs", 3);
}

/* conv2d -> batchnorm -> relu -> maxpool -> flatten -> linear -> relu -> linear */
static dyn_model *dense_model(void) {
    dyn_shape in = {.ndim = 3, .d = {1, 6, 6}};
    dyn_model *m = dyn_model_new(&in);
    ck_assert_ptr_nonnull(m);
    add_seq(m, "conv2d", "conv1",
            "{\"in_channels\":1,\"out_channels\":3,\"kernel\":3,\"padding\":1}");
    add_seq(m, "batchnorm", "bn1", "{\"channels\":3}");
    add_seq(m, "relu", "relu1", "{}");
    add_seq(m, "maxpool2d", "pool1", "{\"kernel\":2}");
    add_seq(m, "flatten", "flat", "{}");
    add_seq(m, "linear", "fc1", "{\"in\":27,\"out\":8}");
    add_seq(m, "relu", "relu2", "{}");
    add_seq(m, "linear", "fc2", "{\"in\":8,\"out\":5,\"bias\":0}");
    dyn_model_init(m, 3);
    randomize(m, 11);
    set_meta(m, 5);
    return m;
}

/* flatten -> dyn_linear -> relu -> dyn_linear (l2) -> linear */
static dyn_model *dyn_model_small(void) {
    dyn_shape in = {.ndim = 2, .d = {3, 4}};
    dyn_model *m = dyn_model_new(&in);
    ck_assert_ptr_nonnull(m);
    add_seq(m, "flatten", "flat", "{}");
    add_seq(m, "dyn_linear", "dfc1",
            "{\"in\":12,\"out\":6,\"H\":2,\"q\":3,\"kernel\":\"l1\",\"exec\":\"auto\"}");
    add_seq(m, "relu", "relu", "{}");
    add_seq(m, "dyn_linear", "dfc2",
            "{\"in\":6,\"out\":4,\"H\":3,\"q\":2,\"kernel\":\"l2\",\"exec\":\"materialized\"}");
    add_seq(m, "linear", "fc", "{\"in\":4,\"out\":3}");
    dyn_model_init(m, 5);
    randomize(m, 13);
    set_meta(m, 3);
    return m;
}

/* A minimal model for damage tests: linear(4 -> 3) -> relu. */
static dyn_model *tiny_model(void) {
    dyn_shape in = {.ndim = 1, .d = {4}};
    dyn_model *m = dyn_model_new(&in);
    ck_assert_ptr_nonnull(m);
    add_seq(m, "linear", "fc1", "{\"in\":4,\"out\":3}");
    add_seq(m, "relu", "act", "{}");
    dyn_model_init(m, 1);
    randomize(m, 2);
    const char *labels[] = {"a", "b", "c"};
    ck_assert_int_eq(dyn_model_labels_set(m, labels, 3), 0);
    return m;
}

/* Asserts a and b are the same model, bit for bit, and compute the same outputs. */
static void assert_same_model(dyn_model *a, dyn_model *b) {
    ck_assert_int_eq(a->nnodes, b->nnodes);
    ck_assert(dyn_shape_eq(&a->input, &b->input));
    for (int k = 0; k < a->nnodes; k++) {
        const dyn_node *na = &a->nodes[k], *nb = &b->nodes[k];
        ck_assert_str_eq(na->layer->name, nb->layer->name);
        ck_assert_ptr_eq(na->layer->ops, nb->layer->ops);
        ck_assert_int_eq(na->ninputs, nb->ninputs);
        for (int i = 0; i < na->ninputs; i++) ck_assert_int_eq(na->inputs[i], nb->inputs[i]);
        json_t *ja = na->layer->ops->attrs(na->layer), *jb = nb->layer->ops->attrs(nb->layer);
        ck_assert_msg(json_equal(ja, jb), "layer %s: attributes differ", na->layer->name);
        json_decref(ja);
        json_decref(jb);
        ck_assert_int_eq(na->layer->nparams, nb->layer->nparams);
        for (int j = 0; j < na->layer->nparams; j++) {
            const dyn_param *pa = &na->layer->params[j], *pb = &nb->layer->params[j];
            ck_assert_str_eq(pa->name, pb->name);
            ck_assert_int_eq(pa->trainable, pb->trainable);
            dyn_shape sa = dyn_tensor_shape(&pa->value), sb = dyn_tensor_shape(&pb->value);
            ck_assert(dyn_shape_eq(&sa, &sb));
            ck_assert_msg(memcmp(pa->value.data, pb->value.data,
                                 (size_t)dyn_tensor_numel(&pa->value) * 4) == 0,
                          "%s.%s differs", na->layer->name, pa->name);
        }
    }
    ck_assert_int_eq(a->nlabels, b->nlabels);
    for (int i = 0; i < a->nlabels; i++) ck_assert_str_eq(a->labels[i], b->labels[i]);
    ck_assert(json_equal(a->preprocess, b->preprocess) || (!a->preprocess && !b->preprocess));
    ck_assert(json_equal(a->info, b->info) || (!a->info && !b->info));

    /* Same outputs, bit for bit. */
    dyn_err err = {0};
    dyn_exec *ea = dyn_exec_new(a, 3, 0, &err);
    ck_assert_msg(ea != NULL, "%s", err.msg);
    dyn_exec *eb = dyn_exec_new(b, 3, 0, &err);
    ck_assert_msg(eb != NULL, "%s", err.msg);
    int64_t per = dyn_shape_numel(&a->input);
    float *x = malloc((size_t)(3 * per) * sizeof *x);
    dyn_rng r;
    dyn_rng_seed(&r, 17);
    tu_fill_uniform(x, 3 * per, &r, -1, 1);
    /* With one implementation forced: auto (the default) times each layer's implementations
     * on its first forward, and two models may pick differently (results a rounding apart). */
    const dyn_conv_impl impls[] = {DYN_CONV_IM2COL, DYN_CONV_DNNL};
    for (size_t k = 0; k < DYN_ARRAY_LEN(impls); k++) {
        dyn_conv_impl_set(impls[k]);
        const dyn_tensor *ya = dyn_exec_forward(ea, x, 3), *yb = dyn_exec_forward(eb, x, 3);
        ck_assert_int_eq(dyn_tensor_numel(ya), dyn_tensor_numel(yb));
        ck_assert_msg(memcmp(ya->data, yb->data, (size_t)dyn_tensor_numel(ya) * 4) == 0,
                      "outputs differ with %s", dyn_conv_impl_name(impls[k]));
    }
    dyn_conv_impl_set(DYN_CONV_AUTO);
    free(x);
    dyn_exec_free(ea);
    dyn_exec_free(eb);
}

static void roundtrip(dyn_model *m) {
    char p1[256], p2[256];
    tmp_path("m.safetensors", p1, sizeof p1);
    tmp_path("m2.safetensors", p2, sizeof p2);
    dyn_err err = {0};
    ck_assert_msg(dyn_model_save(m, p1, &err) == 0, "%s", err.msg);
    dyn_model *back = dyn_model_load(p1, &err);
    ck_assert_msg(back != NULL, "%s", err.msg);
    assert_same_model(m, back);
    /* Saving the loaded model gives the same bytes. */
    ck_assert_msg(dyn_model_save(back, p2, &err) == 0, "%s", err.msg);
    size_t n1, n2;
    uint8_t *b1 = read_bytes(p1, &n1), *b2 = read_bytes(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(b1, b2, n1) == 0);
    /* ... and the bytes load from memory as well. */
    dyn_model *mem = dyn_model_load_bytes(b1, n1, "upload", &err);
    ck_assert_msg(mem != NULL, "%s", err.msg);
    assert_same_model(m, mem);
    free(b1);
    free(b2);
    dyn_model_free(mem);
    dyn_model_free(back);
    ck_assert_int_eq(count_dir_entries(), 2);
}

START_TEST(model_roundtrip_dense) {
    tmp_setup();
    dyn_model *m = dense_model();
    roundtrip(m);
    /* The file holds every parameter, buffers included, under "<layer>.<param>". */
    char p[256];
    dyn_st_file *f;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_st_read(tmp_path("m.safetensors", p, sizeof p), &f, &err), 0);
    ck_assert_ptr_nonnull(dyn_st_find(f, "bn1.running_mean"));
    ck_assert_ptr_nonnull(dyn_st_find(f, "bn1.running_var"));
    ck_assert_ptr_nonnull(dyn_st_find(f, "conv1.weight"));
    ck_assert_ptr_null(dyn_st_find(f, "fc2.bias"));
    ck_assert_str_eq(dyn_st_meta(f, "format"), "dynd-model");
    ck_assert_str_eq(dyn_st_meta(f, "format_version"), "1");
    ck_assert_str_eq(dyn_st_meta(f, "input"), "[1,6,6]");
    dyn_st_free(f);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

START_TEST(model_roundtrip_dyn) {
    tmp_setup();
    dyn_model *m = dyn_model_small();
    roundtrip(m);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

START_TEST(model_roundtrip_minimal_meta) {
    tmp_setup();
    /* No labels, no preprocess, no info; a DAG whose node reads the model input directly. */
    dyn_shape in = {.ndim = 1, .d = {5}};
    dyn_model *m = dyn_model_new(&in);
    add_seq(m, "relu", "r", "{}");
    dyn_err err = {0};
    int inp = -1;
    ck_assert_int_ge(dyn_model_add(m, mk_layer("linear", "fc", "{\"in\":5,\"out\":2}"), &inp, 1,
                                   &err), 0);
    dyn_model_init(m, 4);
    roundtrip(m);
    char p[256];
    dyn_model *back = dyn_model_load(tmp_path("m.safetensors", p, sizeof p), &err);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(back->nlabels, 0);
    ck_assert_ptr_null(back->preprocess);
    ck_assert_ptr_null(back->info);
    ck_assert_int_eq(back->nodes[1].inputs[0], -1);
    dyn_model_free(back);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

/* dyn_model_load must fail with a message naming the file and containing every `want`. */
static void model_fails(const char *path, const char *const *want) {
    dyn_err err = {0};
    dyn_model *m = dyn_model_load(path, &err);
    ck_assert_msg(m == NULL, "%s was accepted", path);
    ck_assert_int_lt(err.code, 0);
    ck_assert_msg(err.msg[0] != '\0', "empty message");
    ck_assert_msg(strstr(err.msg, path) != NULL, "message '%s' does not name the file", err.msg);
    for (int i = 0; want && want[i]; i++)
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "message '%s' lacks '%s'", err.msg,
                      want[i]);
}

/* Copies the safetensors file src to dst, changing it on the way: metadata key `key` set to
 * `value` (NULL: removed; key NULL: untouched), tensor `drop` left out, tensor `add` (shape
 * {n}) added, tensor `reshape` given shape {numel}. */
typedef struct edit {
    const char *key, *value, *drop, *add, *reshape;
    int add_n;
} edit;

static void rewrite(const char *src, const char *dst, const edit *ed) {
    dyn_st_file *f;
    dyn_err err = {0};
    ck_assert_msg(dyn_st_read(src, &f, &err) == 0, "%s", err.msg);
    dyn_st_entry *e = calloc((size_t)f->ntensors + 1, sizeof *e);
    float **bufs = calloc((size_t)f->ntensors + 1, sizeof *bufs);
    int64_t *shapes = calloc((size_t)f->ntensors + 1, sizeof *shapes);
    int n = 0;
    for (int i = 0; i < f->ntensors; i++) {
        const dyn_st_tensor *t = &f->tensors[i];
        if (ed->drop && strcmp(t->name, ed->drop) == 0) continue;
        bufs[n] = malloc((size_t)t->numel * 4 + 4);
        ck_assert_int_eq(dyn_st_tensor_read_f32(f, t, bufs[n], t->numel, &err), 0);
        e[n] = (dyn_st_entry){t->name, t->ndim, t->shape, bufs[n], DYN_ST_F32, NULL};
        if (t->dtype == DYN_ST_I8 || t->dtype == DYN_ST_I16) { /* codes stay codes */
            int16_t *k16 = malloc((size_t)t->numel * 2 + 2);
            int8_t *k8 = (int8_t *)k16;
            for (int64_t j = 0; j < t->numel; j++) {
                if (t->dtype == DYN_ST_I16)
                    k16[j] = (int16_t)bufs[n][j];
                else
                    k8[j] = (int8_t)bufs[n][j];
            }
            free(bufs[n]);
            bufs[n] = (float *)k16; /* freed below */
            e[n].dtype = t->dtype;
            e[n].ints = k16;
        }
        if (ed->reshape && strcmp(t->name, ed->reshape) == 0) {
            shapes[n] = t->numel;
            e[n].ndim = 1;
            e[n].shape = &shapes[n];
        }
        n++;
    }
    if (ed->add) {
        shapes[n] = ed->add_n;
        bufs[n] = calloc((size_t)ed->add_n + 1, 4);
        e[n] = (dyn_st_entry){ed->add, 1, &shapes[n], bufs[n], DYN_ST_F32, NULL};
        n++;
    }
    json_t *meta = json_deep_copy(f->metadata);
    if (ed->key) {
        if (ed->value)
            json_object_set_new(meta, ed->key, json_string(ed->value));
        else
            json_object_del(meta, ed->key);
    }
    ck_assert_msg(dyn_st_write(dst, e, n, meta, &err) == 0, "%s", err.msg);
    json_decref(meta);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(shapes);
    free(e);
    dyn_st_free(f);
}

/* An edit of a valid model file and what the refusal of the result must say. */
typedef struct edit_case {
    edit e;
    const char *want[4];
} edit_case;

/* Each case: `path` rewritten into `bad` with its edit must fail to load, saying its wants. */
static void edits_fail(const char *path, const char *bad, const edit_case *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        rewrite(path, bad, &cases[i].e);
        const char *want[5] = {0};
        memcpy(want, cases[i].want, sizeof cases[i].want);
        model_fails(bad, want);
    }
}

/* A test directory (tmp_setup) with m saved in `path` ("m.safetensors"); `bad` names
 * "bad.safetensors" there. Both hold 256 bytes. Returns m. */
static dyn_model *saved_in_tmp(dyn_model *m, char *path, char *bad) {
    tmp_setup();
    tmp_path("m.safetensors", path, 256);
    tmp_path("bad.safetensors", bad, 256);
    dyn_err err = {0};
    ck_assert_msg(dyn_model_save(m, path, &err) == 0, "%s", err.msg);
    return m;
}

START_TEST(model_truncated_every_prefix) {
    tmp_setup();
    char path[256], cut[256];
    tmp_path("m.safetensors", path, sizeof path);
    tmp_path("cut.safetensors", cut, sizeof cut);
    dyn_model *m = tiny_model();
    dyn_err err = {0};
    ck_assert_msg(dyn_model_save(m, path, &err) == 0, "%s", err.msg);
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    for (size_t k = 0; k < n; k++) {
        write_bytes(cut, raw, k);
        model_fails(cut, NULL);
        ck_assert_ptr_null(dyn_model_load_bytes(raw, k, "mem", &err));
        ck_assert_ptr_nonnull(strstr(err.msg, "mem"));
    }
    free(raw);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

START_TEST(model_nan) {
    char path[256], bad[256];
    dyn_model *m = saved_in_tmp(tiny_model(), path, bad);
    dyn_err err = {0};

    /* Saving a model holding NaN / Inf is refused and leaves the old file alone. */
    dyn_param *w = dyn_layer_param(m->nodes[0].layer, "weight");
    float keep = w->value.data[5];
    w->value.data[5] = NAN;
    ck_assert_int_eq(dyn_model_save(m, path, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "NaN"));
    ck_assert_ptr_nonnull(strstr(err.msg, "fc1"));
    w->value.data[5] = -INFINITY;
    ck_assert_int_eq(dyn_model_save(m, path, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "Inf"));
    w->value.data[5] = keep;
    ck_assert_int_eq(count_dir_entries(), 1);

    /* A file with a NaN patched into a parameter is rejected on load. */
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    dyn_st_file *f;
    ck_assert_int_eq(dyn_st_parse(raw, n, "x", &f, &err), 0);
    const dyn_st_tensor *t = dyn_st_find(f, "fc1.bias");
    ck_assert_ptr_nonnull(t);
    size_t at = (size_t)(t->bytes - f->buf) + 4;
    dyn_st_free(f);
    const uint8_t qnan[4] = {0x00, 0x00, 0xc0, 0x7f};
    memcpy(raw + at, qnan, 4);
    write_bytes(bad, raw, n);
    model_fails(bad, WANT("fc1.bias", "NaN", "element 1"));
    const uint8_t inf[4] = {0x00, 0x00, 0x80, 0x7f};
    memcpy(raw + at, inf, 4);
    write_bytes(bad, raw, n);
    model_fails(bad, WANT("fc1.bias", "Inf"));
    free(raw);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

START_TEST(model_bad_metadata) {
    char path[256], bad[256];
    dyn_model *m = saved_in_tmp(tiny_model(), path, bad);
    dyn_err err = {0};
    dyn_model *ok = dyn_model_load(path, &err);
    ck_assert_msg(ok != NULL, "%s", err.msg);
    dyn_model_free(ok);

    edit_case cases[] = {
        /* format and version */
        {{.key = "format", .value = NULL}, {"format"}},
        {{.key = "format", .value = "pytorch"}, {"pytorch", "dynd-model"}},
        {{.key = "format_version", .value = "2"}, {"format_version 2", "newer"}},
        {{.key = "format_version", .value = "one"}, {"format_version"}},
        {{.key = "format_version", .value = NULL}, {"format_version"}},
        /* graph */
        {{.key = "graph", .value = NULL}, {"graph"}},
        {{.key = "graph", .value = "{\"name\":\"fc1\"}"}, {"graph", "array"}},
        {{.key = "graph", .value = "[]"}, {"graph"}},
        {{.key = "graph", .value = "[{\"name\":\"fc1\""}, {"graph", "not valid JSON"}},
        {{.key = "graph", .value = "[5]"}, {"node 0", "object"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"frobnicate\",\"inputs\":[-1],\"attrs\":{}}]"},
         {"unknown op", "frobnicate"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-1],"
                   "\"attrs\":{\"in\":4,\"out\":3}},"
                   "{\"name\":\"act\",\"op\":\"relu\",\"inputs\":[1],\"attrs\":{}}]"},
         {"node 1", "'act'", "earlier node"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[1],"
                   "\"attrs\":{\"in\":4,\"out\":3}},"
                   "{\"name\":\"act\",\"op\":\"relu\",\"inputs\":[0],\"attrs\":{}}]"},
         {"node 0", "'fc1'", "cycles"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-2],"
                   "\"attrs\":{\"in\":4,\"out\":3}}]"},
         {"node 0", "-2"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":\"x\","
                   "\"attrs\":{\"in\":4,\"out\":3}}]"},
         {"node 0", "inputs"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-1],"
                   "\"attrs\":{\"in\":5,\"out\":3}}]"},
         {"node 0", "fc1"}}, /* input 4 does not fit in 5 */
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-1],"
                   "\"attrs\":{\"in\":4,\"out\":3}},"
                   "{\"name\":\"fc1\",\"op\":\"relu\",\"inputs\":[0],\"attrs\":{}}]"},
         {"node 1", "fc1"}}, /* duplicate name */
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-1],"
                   "\"attrs\":{\"in\":4,\"out\":3,\"bias\":\"yes\"}}]"},
         {"node 0", "bias"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-1],\"attrs\":[4,3]}]"},
         {"node 0", "attrs"}},
        {{.key = "graph", .value = "[{\"op\":\"relu\",\"inputs\":[-1]}]"}, {"node 0", "name"}},
        {{.key = "graph", .value = "[{\"name\":\"r\",\"inputs\":[-1]}]"}, {"node 0", "op"}},
        {{.key = "graph", .value = "[{\"name\":\"r\\n\",\"op\":\"relu\",\"inputs\":[-1]}]"},
         {"node 0", "control"}},
        {{.key = "graph", .value = "[{\"name\":\"r\",\"op\":\"x\\u001b\",\"inputs\":[-1]}]"},
         {"node 0", "unknown op 'x?'"}},
        {{.key = "graph",
          .value = "[{\"name\":\"fc1\",\"op\":\"linear\",\"inputs\":[-1,-1],"
                   "\"attrs\":{\"in\":4,\"out\":3}}]"},
         {"node 0", "input"}}, /* arity */
        /* input shape */
        {{.key = "input", .value = NULL}, {"input"}},
        {{.key = "input", .value = "4"}, {"input"}},
        {{.key = "input", .value = "[0]"}, {"input"}},
        {{.key = "input", .value = "[1,1,1,4]"}, {"input"}},
        {{.key = "input", .value = "[5]"}, {"node 0"}},
        {{.key = "input", .value = "[16777216,16777216,16777216]"}, {"input", "elements"}},
        /* labels, preprocess, info */
        {{.key = "labels", .value = "[\"a\",\"b\"]"}, {"2 labels", "3 outputs"}},
        {{.key = "labels", .value = "[\"a\",\"b\",7]"}, {"label 2"}},
        {{.key = "labels", .value = "{}"}, {"labels"}},
        {{.key = "preprocess", .value = "[1]"}, {"preprocess"}},
        {{.key = "preprocess", .value = "{\"a\":"}, {"preprocess", "JSON"}},
        {{.key = "info", .value = "\"text\""}, {"info"}},
        /* tensors */
        {{.drop = "fc1.bias"}, {"missing tensor", "'fc1.bias'", "[3]"}},
        {{.add = "fc1.extra", .add_n = 2}, {"extra tensor", "'fc1.extra'"}},
        {{.add = "zzz", .add_n = 0}, {"extra tensor", "'zzz'"}},
        {{.reshape = "fc1.weight"}, {"'fc1.weight'", "[12]", "[3, 4]"}},
    };
    edits_fail(path, bad, cases, DYN_ARRAY_LEN(cases));
    /* Unknown metadata keys are ignored; an absent labels key means no labels. */
    edit extra = {.key = "created_by", .value = "someone"};
    rewrite(path, bad, &extra);
    ok = dyn_model_load(bad, &err);
    ck_assert_msg(ok != NULL, "%s", err.msg);
    dyn_model_free(ok);
    edit nolabels = {.key = "labels", .value = NULL};
    rewrite(path, bad, &nolabels);
    ok = dyn_model_load(bad, &err);
    ck_assert_msg(ok != NULL, "%s", err.msg);
    ck_assert_int_eq(ok->nlabels, 0);
    dyn_model_free(ok);

    /* A plain safetensors file is not a model. */
    float x = 1;
    int64_t one = 1;
    dyn_st_entry e = {"w", 1, &one, &x, DYN_ST_F32, NULL};
    ck_assert_int_eq(dyn_st_write(bad, &e, 1, NULL, &err), 0);
    model_fails(bad, WANT("not a dynd model"));
    model_fails("/nonexistent-dir/m.safetensors", WANT("cannot open"));

    /* An empty model is not saved. */
    dyn_shape in = {.ndim = 1, .d = {2}};
    dyn_model *empty = dyn_model_new(&in);
    ck_assert_int_eq(dyn_model_save(empty, bad, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "no layers"));
    dyn_model_free(empty);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

/* ---- state codes (model_file.h "quant") ---- */

/* dyn_conv2d -> flatten -> dyn_linear -> relu -> linear, the DyN states rounded to grid `delta`
 * by the conversion's quantizer (dyn_quantize_layer: rescaled to spread 1, then
 * floor(x/δ)·δ in double, cast to float), the grid recorded as info.convert.quant. */
static dyn_model *gridded_model(double delta) {
    dyn_shape in = {.ndim = 3, .d = {1, 5, 5}};
    dyn_model *m = dyn_model_new(&in);
    ck_assert_ptr_nonnull(m);
    add_seq(m, "dyn_conv2d", "dconv",
            "{\"in_channels\":1,\"out_channels\":2,\"kernel\":3,\"padding\":1,\"H\":2,\"q\":2,"
            "\"kernel_fn\":\"l1\"}");
    add_seq(m, "flatten", "flat", "{}");
    add_seq(m, "dyn_linear", "dfc", "{\"in\":50,\"out\":6,\"H\":2,\"q\":3,\"kernel\":\"l1\"}");
    add_seq(m, "relu", "relu", "{}");
    add_seq(m, "linear", "fc", "{\"in\":6,\"out\":3}");
    dyn_model_init(m, 5);
    randomize(m, 21);
    set_meta(m, 3);
    dyn_err err = {0};
    ck_assert_msg(dyn_quantize_layer(m->nodes[0].layer, delta, &err) == 0, "%s", err.msg);
    ck_assert_msg(dyn_quantize_layer(m->nodes[2].layer, delta, &err) == 0, "%s", err.msg);
    json_object_set_new(m->info, "convert", json_pack("{s:f, s:s}", "quant", delta, "fit", "fixed"));
    return m;
}

static const char *const g_states[4] = {"dconv.a", "dconv.b", "dfc.u", "dfc.v"};

static int is_state_name(const char *name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, g_states[i]) == 0) return 1;
    return 0;
}

/* Saves m to `path`, loads it back (bit-exact: assert_same_model) and returns the dtype the
 * file gives tensor `name`. */
static dyn_st_dtype saved_dtype(dyn_model *m, const char *path, const char *name) {
    dyn_err err = {0};
    ck_assert_msg(dyn_model_prepare(m, &err) == 0, "%s", err.msg); /* after edits of states */
    ck_assert_msg(dyn_model_save(m, path, &err) == 0, "%s", err.msg);
    dyn_model *back = dyn_model_load(path, &err);
    ck_assert_msg(back != NULL, "%s", err.msg);
    assert_same_model(m, back);
    dyn_model_free(back);
    dyn_st_file *f;
    ck_assert_int_eq(dyn_st_read(path, &f, &err), 0);
    const dyn_st_dtype d = dyn_st_find(f, name)->dtype;
    dyn_st_free(f);
    return d;
}

/* Gridded states are stored as I16 (δ = 1e-3: codes up to ~1700) or I8 (δ = 0.05: up to ~35)
 * and come back bit for bit; everything else stays F32. */
START_TEST(model_codes_roundtrip) {
    const double deltas[2] = {1e-3, 0.05};
    const dyn_st_dtype want[2] = {DYN_ST_I16, DYN_ST_I8};
    for (int c = 0; c < 2; c++) {
        tmp_setup();
        dyn_model *m = gridded_model(deltas[c]);
        roundtrip(m); /* bit-exact, the same bytes when saved again, loads from memory too */
        char p[256], p2[256];
        tmp_path("m.safetensors", p, sizeof p);
        tmp_path("f32.safetensors", p2, sizeof p2);
        dyn_st_file *f;
        dyn_err err = {0};
        ck_assert_int_eq(dyn_st_read(p, &f, &err), 0);
        json_t *q = json_loads(dyn_st_meta(f, "quant"), 0, NULL);
        ck_assert_ptr_nonnull(q);
        ck_assert_int_eq(json_object_size(q), 4);
        int64_t total = 0, coded = 0, data = 0;
        for (int i = 0; i < f->ntensors; i++) {
            const dyn_st_tensor *t = &f->tensors[i];
            total += t->numel;
            data += (int64_t)(t->end - t->begin);
            if (!is_state_name(t->name)) {
                ck_assert_msg(t->dtype == DYN_ST_F32, "%s is %s", t->name,
                              dyn_st_dtype_name(t->dtype));
                ck_assert_uint_eq(t->begin % 4, 0);
                continue;
            }
            ck_assert_msg(t->dtype == want[c], "%s is %s", t->name, dyn_st_dtype_name(t->dtype));
            ck_assert_uint_eq(t->begin % (want[c] == DYN_ST_I16 ? 2 : 1), 0);
            const json_t *dj = json_object_get(json_object_get(q, t->name), "delta");
            ck_assert(json_is_real(dj) && json_real_value(dj) == deltas[c]);
            coded += t->numel;
        }
        json_decref(q);
        dyn_st_free(f);
        ck_assert_int_gt(coded, 0);
        ck_assert_int_eq(data, (total - coded) * 4 + coded * (c == 0 ? 2 : 1));
        dyn_model_storage st;
        dyn_model_storage_get(m, &st);
        ck_assert_int_eq(st.data_bytes, data);
        ck_assert_int_eq(st.coded_floats, coded);
        ck_assert_int_eq(st.floats, total);
        /* the conversion report shows those bytes (convert.h) */
        dyn_convert_report r = {.floats_before = 1000, .quant = deltas[c]};
        dyn_convert_report_set_storage(&r, m);
        ck_assert_int_eq(r.bytes_stored, data);
        json_t *rj = dyn_convert_report_json(&r);
        ck_assert_int_eq(json_integer_value(json_object_get(rj, "bytes_stored")), data);
        ck_assert_int_eq(json_integer_value(json_object_get(rj, "bytes_before")), 4000);
        ck_assert_int_eq(json_integer_value(json_object_get(rj, "coded_floats")), coded);
        json_decref(rj);
        char *table = dyn_convert_report_table(&r), line[160];
        snprintf(line, sizeof line, "stored bytes: 4000 (F32) -> %lld (", (long long)data);
        ck_assert_msg(strstr(table, line) != NULL, "no '%s' in\n%s", line, table);
        snprintf(line, sizeof line, "%lld DyN state floats stored as I16 / I8 codes of the %g grid",
                 (long long)coded, deltas[c]);
        ck_assert_msg(strstr(table, line) != NULL, "no '%s' in\n%s", line, table);
        free(table);

        /* without the grid in info the same model is stored as F32 alone, no "quant" */
        json_object_del(json_object_get(m->info, "convert"), "quant");
        ck_assert_int_eq(saved_dtype(m, p2, "dfc.u"), DYN_ST_F32);
        ck_assert_int_eq(dyn_st_read(p2, &f, &err), 0);
        ck_assert_ptr_null(dyn_st_meta(f, "quant"));
        for (int i = 0; i < f->ntensors; i++) ck_assert_int_eq(f->tensors[i].dtype, DYN_ST_F32);
        dyn_st_free(f);
        dyn_model_storage_get(m, &st);
        ck_assert_int_eq(st.data_bytes, total * 4);
        ck_assert_int_eq(st.coded_floats, 0);
        dyn_model_free(m);
        tmp_teardown();
    }
}
END_TEST

/* The code range decides I8 / I16 / F32; a value off the grid by one ulp, or -0.0, keeps its
 * tensor F32 (the others stay coded); a grid out of range or absent codes nothing. */
START_TEST(model_codes_bounds) {
    tmp_setup();
    char p[256];
    tmp_path("b.safetensors", p, sizeof p);
    const double delta = 0.05;
    dyn_model *m = gridded_model(delta);
    float *u = dyn_layer_param(m->nodes[2].layer, "u")->value.data;
    const float keep = u[0];
    struct {
        double code;
        dyn_st_dtype want;
    } cases[] = {{127, DYN_ST_I8},      {-127, DYN_ST_I8},       {128, DYN_ST_I16},
                 {-128, DYN_ST_I16},    {32767, DYN_ST_I16},     {-32767, DYN_ST_I16},
                 {32768, DYN_ST_F32},   {-32768, DYN_ST_F32}};
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) {
        u[0] = (float)(cases[i].code * delta);
        ck_assert_msg(saved_dtype(m, p, "dfc.u") == cases[i].want, "code %g", cases[i].code);
        ck_assert_int_eq(saved_dtype(m, p, "dfc.v"), DYN_ST_I8); /* untouched */
    }
    u[0] = nextafterf(keep, INFINITY);
    ck_assert_int_eq(saved_dtype(m, p, "dfc.u"), DYN_ST_F32);
    ck_assert_int_eq(saved_dtype(m, p, "dconv.a"), DYN_ST_I8);
    u[0] = -0.0f;
    ck_assert_int_eq(saved_dtype(m, p, "dfc.u"), DYN_ST_F32);
    u[0] = 0.0f;
    ck_assert_int_eq(saved_dtype(m, p, "dfc.u"), DYN_ST_I8);
    u[0] = keep;
    ck_assert_int_eq(saved_dtype(m, p, "dfc.u"), DYN_ST_I8);
    /* info.convert.quant that is no grid: nothing is coded */
    const char *bad[] = {"0", "-0.05", "\"0.05\"", "1e31", "null"};
    for (size_t i = 0; i < DYN_ARRAY_LEN(bad); i++) {
        json_object_set_new(json_object_get(m->info, "convert"), "quant",
                            json_loads(bad[i], JSON_DECODE_ANY, NULL));
        ck_assert_msg(saved_dtype(m, p, "dfc.u") == DYN_ST_F32, "quant %s", bad[i]);
    }
    /* states that were never rounded (a trained DyN model) stay F32 under any grid */
    dyn_model *t = dyn_model_small();
    json_object_set_new(t->info, "convert", json_pack("{s:f}", "quant", 1e-3));
    ck_assert_int_eq(saved_dtype(t, p, "dfc1.u"), DYN_ST_F32);
    dyn_st_file *f;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_st_read(p, &f, &err), 0);
    ck_assert_ptr_null(dyn_st_meta(f, "quant"));
    dyn_st_free(f);
    dyn_model_free(t);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

/* Hostile files: codes without a grid, grids that are not one, entries naming the wrong
 * tensors — each refused with a message naming the tensor. */
START_TEST(model_codes_hostile) {
    char path[256], bad[256];
    dyn_model *m = saved_in_tmp(gridded_model(1e-3), path, bad);
    dyn_err err = {0};
    /* the valid file's "quant" with dconv.a's entry replaced */
#define QUANT(A) "{\"dconv.a\":" A ",\"dconv.b\":{\"delta\":0.001},\"dfc.u\":{\"delta\":0.001}," \
                 "\"dfc.v\":{\"delta\":0.001}}"
    edit same = {.key = "quant", .value = QUANT("{\"delta\":0.001}")};
    rewrite(path, bad, &same);
    dyn_model *ok = dyn_model_load(bad, &err);
    ck_assert_msg(ok != NULL, "%s", err.msg);
    assert_same_model(m, ok);
    dyn_model_free(ok);
    edit_case cases[] = {
        {{.key = "quant", .value = NULL}, {"'dconv.a'", "I16", "quant"}},
        {{.key = "quant", .value = "{}"}, {"'dconv.a'", "I16", "quant"}},
        {{.key = "quant", .value = "{\"dconv.a\":{\"delta\":0.001}}"}, {"'dconv.b'", "quant"}},
        {{.key = "quant", .value = QUANT("{\"delta\":0}")}, {"'dconv.a'", "delta 0 "}},
        {{.key = "quant", .value = QUANT("{\"delta\":-0.001}")}, {"'dconv.a'", "delta -0.001"}},
        {{.key = "quant", .value = QUANT("{\"delta\":NaN}")}, {"quant", "not valid JSON"}},
        {{.key = "quant", .value = QUANT("{\"delta\":1e300}")}, {"'dconv.a'", "delta 1"}},
        {{.key = "quant", .value = QUANT("{\"delta\":1e-300}")}, {"'dconv.a'", "delta 1"}},
        {{.key = "quant", .value = QUANT("{\"delta\":1e999}")}, {"quant", "not valid JSON"}},
        {{.key = "quant", .value = QUANT("{\"delta\":\"0.001\"}")}, {"'dconv.a'", "delta"}},
        {{.key = "quant", .value = QUANT("{\"delta\":null}")}, {"'dconv.a'", "delta"}},
        {{.key = "quant", .value = QUANT("{\"delta\":0.001,\"zero\":3}")}, {"'dconv.a'", "alone"}},
        {{.key = "quant", .value = QUANT("{}")}, {"'dconv.a'", "delta"}},
        {{.key = "quant", .value = QUANT("0.001")}, {"'dconv.a'", "delta"}},
        {{.key = "quant", .value = "[1]"}, {"quant", "not a JSON object"}},
        {{.key = "quant", .value = "{\"dconv.a\":"}, {"quant", "not valid JSON"}},
        {{.key = "quant",
          .value = "{\"dconv.a\":{\"delta\":0.001},\"dconv.b\":{\"delta\":0.001},"
                   "\"dfc.u\":{\"delta\":0.001},\"dfc.v\":{\"delta\":0.001},"
                   "\"fc.weight\":{\"delta\":0.001}}"},
         {"'fc.weight'", "F32"}},
        {{.key = "quant",
          .value = "{\"dconv.a\":{\"delta\":0.001},\"dconv.b\":{\"delta\":0.001},"
                   "\"dfc.u\":{\"delta\":0.001},\"dfc.v\":{\"delta\":0.001},"
                   "\"nope\":{\"delta\":0.001}}"},
         {"'nope'", "does not hold"}},
    };
#undef QUANT
    edits_fail(path, bad, cases, DYN_ARRAY_LEN(cases));
    /* the same bytes from memory: refused too */
    edit none = {.key = "quant", .value = NULL};
    rewrite(path, bad, &none);
    size_t n;
    uint8_t *raw = read_bytes(bad, &n);
    ck_assert_ptr_null(dyn_model_load_bytes(raw, n, "upload", &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "upload"));
    ck_assert_ptr_nonnull(strstr(err.msg, "I16"));
    free(raw);
    dyn_model_free(m);
    tmp_teardown();
}
END_TEST

/* ---- IDX ---- */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Image file bytes for n images h x w with pixel (i, j) = (7 i + j) % 256. *len set. */
static uint8_t *idx_images(uint32_t magic, uint32_t n, uint32_t h, uint32_t w, size_t *len) {
    size_t total = (size_t)n * h * w;
    uint8_t *b = malloc(16 + total);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (size_t i = 0; i < total; i++) b[16 + i] = (uint8_t)((7 * (i / (h * w)) + i) % 256);
    *len = 16 + total;
    return b;
}

static uint8_t *idx_labels(uint32_t magic, uint32_t n, const uint8_t *values, size_t *len) {
    uint8_t *b = malloc(8 + n);
    put_be32(b, magic);
    put_be32(b + 4, n);
    memcpy(b + 8, values, n);
    *len = 8 + n;
    return b;
}

static void write_gz(const char *path, const void *p, size_t n) {
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, p, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static const uint8_t g_lab[5] = {3, 0, 6, 1, 3};

/* Writes a valid 5 x 3 x 4 set to img / lab (gzip-compressed when gz). */
static void write_valid_idx(const char *img, const char *lab, int gz) {
    size_t li, ll;
    uint8_t *bi = idx_images(0x803, 5, 3, 4, &li), *bl = idx_labels(0x801, 5, g_lab, &ll);
    if (gz) {
        write_gz(img, bi, li);
        write_gz(lab, bl, ll);
    } else {
        write_bytes(img, bi, li);
        write_bytes(lab, bl, ll);
    }
    free(bi);
    free(bl);
}

static void check_valid_set(const dyn_dataset *d) {
    ck_assert_int_eq(d->n, 5);
    ck_assert_int_eq(d->c, 1);
    ck_assert_int_eq(d->h, 3);
    ck_assert_int_eq(d->w, 4);
    ck_assert_int_eq(d->nclasses, 7);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(d->labels[i], g_lab[i]);
    for (int i = 0; i < 60; i++) ck_assert_int_eq(d->pixels[i], (7 * (i / 12) + i) % 256);
}

static void idx_fails(const char *img, const char *lab, int code, const char *const *want) {
    dyn_dataset d;
    dyn_err err = {0};
    int rc = dyn_idx_load(img, lab, &d, &err);
    ck_assert_msg(rc < 0, "%s / %s accepted", img, lab);
    if (code) ck_assert_int_eq(rc, code);
    ck_assert_ptr_null(d.pixels);
    ck_assert_ptr_null(d.labels);
    ck_assert_msg(err.msg[0] != '\0', "empty message");
    for (int i = 0; want && want[i]; i++)
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "message '%s' lacks '%s'", err.msg,
                      want[i]);
}

START_TEST(idx_valid_and_gz) {
    tmp_setup();
    char img[256], lab[256], gimg[256], glab[256];
    tmp_path("img", img, sizeof img);
    tmp_path("lab", lab, sizeof lab);
    tmp_path("img.gz", gimg, sizeof gimg);
    tmp_path("lab.gz", glab, sizeof glab);
    write_valid_idx(img, lab, 0);
    write_valid_idx(gimg, glab, 1);
    dyn_dataset d;
    dyn_err err = {0};
    ck_assert_msg(dyn_idx_load(img, lab, &d, &err) == 0, "%s", err.msg);
    check_valid_set(&d);
    dyn_dataset_free(&d);
    ck_assert_ptr_null(d.pixels);
    dyn_dataset_free(&d); /* twice is fine */
    ck_assert_msg(dyn_idx_load(gimg, glab, &d, &err) == 0, "%s", err.msg);
    check_valid_set(&d);
    dyn_dataset_free(&d);
    ck_assert_msg(dyn_idx_load(gimg, lab, &d, &err) == 0, "%s", err.msg); /* mixed */
    dyn_dataset_free(&d);
    tmp_teardown();
}
END_TEST

START_TEST(idx_truncated_every_prefix) {
    tmp_setup();
    char img[256], lab[256], cut[256];
    tmp_path("img", img, sizeof img);
    tmp_path("lab", lab, sizeof lab);
    tmp_path("cut", cut, sizeof cut);
    write_valid_idx(img, lab, 0);
    size_t ni, nl;
    uint8_t *bi = read_bytes(img, &ni), *bl = read_bytes(lab, &nl);
    for (size_t k = 0; k < ni; k++) {
        write_bytes(cut, bi, k);
        idx_fails(cut, lab, DYN_EFORMAT, WANT(cut));
        if (k >= 16) {
            char want[128];
            snprintf(want, sizeof want, "should be %zu bytes, it is %zu", ni, k);
            idx_fails(cut, lab, DYN_EFORMAT, WANT("truncated", want));
        }
        write_gz(cut, bi, k);
        idx_fails(cut, lab, DYN_EFORMAT, WANT(cut));
    }
    for (size_t k = 0; k < nl; k++) {
        write_bytes(cut, bl, k);
        idx_fails(img, cut, DYN_EFORMAT, WANT(cut));
    }
    /* A damaged gzip stream (cut compressed bytes) is an error too. */
    char gz[256];
    tmp_path("img.gz", gz, sizeof gz);
    write_gz(gz, bi, ni);
    size_t ng;
    uint8_t *bg = read_bytes(gz, &ng);
    for (size_t k = 10; k < ng; k++) {
        write_bytes(cut, bg, k);
        idx_fails(cut, lab, DYN_EFORMAT, WANT(cut, "gzip"));
    }
    free(bg);
    free(bi);
    free(bl);
    tmp_teardown();
}
END_TEST

START_TEST(idx_damaged) {
    tmp_setup();
    char img[256], lab[256], bad[256];
    tmp_path("img", img, sizeof img);
    tmp_path("lab", lab, sizeof lab);
    tmp_path("bad", bad, sizeof bad);
    write_valid_idx(img, lab, 0);
    size_t n;
    uint8_t *b;

    /* swapped files: the magic says what each one is */
    idx_fails(lab, img, DYN_EFORMAT, WANT("0x00000801", "label file"));
    b = idx_images(0x12345678, 5, 3, 4, &n);
    write_bytes(bad, b, n);
    free(b);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("0x12345678", "not an IDX file"));
    b = idx_images(0x0d03, 5, 3, 4, &n); /* float IDX */
    write_bytes(bad, b, n);
    free(b);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("magic"));
    /* count mismatch */
    b = idx_images(0x803, 4, 3, 4, &n);
    write_bytes(bad, b, n);
    free(b);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("4 images", "5 labels"));
    /* absurd dimensions: rejected from the header alone */
    uint8_t h[16];
    put_be32(h, 0x803);
    put_be32(h + 4, 5);
    put_be32(h + 8, 70000);
    put_be32(h + 12, 4);
    write_bytes(bad, h, 16);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("70000"));
    put_be32(h + 8, 0);
    write_bytes(bad, h, 16);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("dimension 1"));
    put_be32(h + 4, 0);
    put_be32(h + 8, 3);
    write_bytes(bad, h, 16);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("dimension 0"));
    put_be32(h + 4, 65536);
    put_be32(h + 8, 65536);
    put_be32(h + 12, 65536);
    write_bytes(bad, h, 16);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("limit"));
    put_be32(h + 4, 0xffffffffu);
    put_be32(h + 8, 1);
    put_be32(h + 12, 1);
    write_bytes(bad, h, 16);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("dimension 0"));
    /* a header that promises 2^31 bytes over a tiny file: a quick "truncated", no 2 GB alloc */
    put_be32(h + 4, 32768);
    put_be32(h + 8, 256);
    put_be32(h + 12, 256);
    write_bytes(bad, h, 16);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("truncated", "2147483648"));
    /* trailing bytes, raw and compressed */
    b = idx_images(0x803, 5, 3, 4, &n);
    uint8_t *longer = malloc(n + 3);
    memcpy(longer, b, n);
    memset(longer + n, 0, 3);
    write_bytes(bad, longer, n + 3);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("3 trailing bytes", "76 bytes"));
    write_gz(bad, longer, n + 3);
    idx_fails(bad, lab, DYN_EFORMAT, WANT("3 trailing bytes"));
    free(longer);
    free(b);
    /* missing file */
    idx_fails("/nonexistent-dir/img", lab, DYN_EIO, WANT("/nonexistent-dir/img"));
    idx_fails(img, "/nonexistent-dir/lab", DYN_EIO, WANT("/nonexistent-dir/lab"));
    /* labels up to 255 are fine: nclasses = max + 1 */
    uint8_t big[5] = {0, 255, 3, 3, 200};
    b = idx_labels(0x801, 5, big, &n);
    write_bytes(bad, b, n);
    free(b);
    dyn_dataset d;
    dyn_err err = {0};
    ck_assert_msg(dyn_idx_load(img, bad, &d, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(d.nclasses, 256);
    dyn_dataset_free(&d);
    tmp_teardown();
}
END_TEST

START_TEST(idx_helpers) {
    tmp_setup();
    char img[256], lab[256];
    tmp_path("img", img, sizeof img);
    tmp_path("lab", lab, sizeof lab);
    write_valid_idx(img, lab, 0);
    dyn_dataset d, s;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_idx_load(img, lab, &d, &err), 0);

    /* subsets */
    ck_assert_int_eq(dyn_dataset_subset(&d, NULL, 2, &s, &err), 0);
    ck_assert_int_eq(s.n, 2);
    ck_assert_int_eq(s.nclasses, 7);
    ck_assert(memcmp(s.pixels, d.pixels, 24) == 0);
    ck_assert(memcmp(s.labels, d.labels, 2) == 0);
    dyn_dataset_free(&s);
    int pick[3] = {4, 1, 4};
    ck_assert_int_eq(dyn_dataset_subset(&d, pick, 3, &s, &err), 0);
    ck_assert(memcmp(s.pixels, d.pixels + 48, 12) == 0);
    ck_assert(memcmp(s.pixels + 12, d.pixels + 12, 12) == 0);
    ck_assert_int_eq(s.labels[0], 3);
    ck_assert_int_eq(s.labels[1], 0);
    dyn_dataset_free(&s);
    ck_assert_int_eq(dyn_dataset_subset(&d, NULL, 0, &s, &err), 0);
    ck_assert_int_eq(s.n, 0);
    dyn_dataset_free(&s);
    ck_assert_int_eq(dyn_dataset_subset(&d, NULL, 6, &s, &err), DYN_EINVAL);
    int badpick[2] = {0, 5};
    ck_assert_int_eq(dyn_dataset_subset(&d, badpick, 2, &s, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "5"));
    ck_assert_ptr_null(s.pixels);

    /* batches: (x / 255 - mean) / std, [B][1][H][W] */
    float x[2 * 12];
    int y[2];
    int bi[2] = {2, 0};
    ck_assert_int_eq(dyn_dataset_batch(&d, bi, 2, 0.5f, 0.25f, x, y, &err), 0);
    for (int i = 0; i < 12; i++) {
        ck_assert_float_eq_tol(x[i], ((float)d.pixels[24 + i] / 255.0f - 0.5f) / 0.25f, 1e-6);
        ck_assert_float_eq_tol(x[12 + i], ((float)d.pixels[i] / 255.0f - 0.5f) / 0.25f, 1e-6);
    }
    ck_assert_int_eq(y[0], 6);
    ck_assert_int_eq(y[1], 3);
    ck_assert_int_eq(dyn_dataset_batch(&d, bi, 2, 0.0f, 1.0f, x, NULL, &err), 0);
    ck_assert_float_eq(x[12], 0.0f); /* pixel 0 */
    ck_assert_float_eq_tol(x[12 + 11], 11.0f / 255.0f, 1e-7);
    ck_assert_int_eq(dyn_dataset_batch(&d, bi, 2, 0.0f, 0.0f, x, y, &err), DYN_EINVAL);
    int oob[1] = {5};
    ck_assert_int_eq(dyn_dataset_batch(&d, oob, 1, 0.0f, 1.0f, x, y, &err), DYN_EINVAL);

    /* split: sizes, disjoint, covers everything, order kept, deterministic per seed */
    dyn_dataset tr, va, tr2, va2;
    ck_assert_int_eq(dyn_dataset_split(&d, 2, 42, &tr, &va, &err), 0);
    ck_assert_int_eq(tr.n, 3);
    ck_assert_int_eq(va.n, 2);
    ck_assert_int_eq(tr.nclasses, 7);
    ck_assert_int_eq(va.nclasses, 7);
    int seen[5] = {0}, last = -1;
    for (int s2 = 0; s2 < 2; s2++) {
        const dyn_dataset *part = s2 ? &va : &tr;
        last = -1;
        for (int i = 0; i < part->n; i++) {
            int src = part->pixels[i * 12 + 1] - 1; /* pixel 1 of sample k is 19k + 1 */
            ck_assert_int_eq(src % 19, 0);
            src /= 19;
            ck_assert_int_gt(src, last);
            last = src;
            seen[src]++;
            ck_assert_int_eq(part->labels[i], d.labels[src]);
        }
    }
    for (int i = 0; i < 5; i++) ck_assert_int_eq(seen[i], 1);
    ck_assert_int_eq(dyn_dataset_split(&d, 2, 42, &tr2, &va2, &err), 0);
    ck_assert(memcmp(va.pixels, va2.pixels, 24) == 0);
    dyn_dataset_free(&tr2);
    dyn_dataset_free(&va2);
    dyn_dataset_free(&tr);
    dyn_dataset_free(&va);
    ck_assert_int_eq(dyn_dataset_split(&d, 6, 1, &tr, &va, &err), DYN_EINVAL);
    ck_assert_int_eq(dyn_dataset_split(&d, 0, 1, &tr, &va, &err), 0);
    ck_assert_int_eq(tr.n, 5);
    ck_assert_int_eq(va.n, 0);
    dyn_dataset_free(&tr);
    dyn_dataset_free(&va);
    ck_assert_int_eq(dyn_dataset_split(&d, 5, 1, &tr, &va, &err), 0);
    ck_assert_int_eq(tr.n, 0);
    ck_assert(memcmp(va.pixels, d.pixels, 60) == 0);
    dyn_dataset_free(&tr);
    dyn_dataset_free(&va);
    /* Different seeds pick different validation sets (over a larger set). */
    dyn_dataset big;
    int *all = malloc(1000 * sizeof *all);
    for (int i = 0; i < 1000; i++) all[i] = i % 5;
    ck_assert_int_eq(dyn_dataset_subset(&d, all, 1000, &big, &err), 0);
    for (int i = 0; i < 1000; i++) big.labels[i] = (uint8_t)(i % 256);
    ck_assert_int_eq(dyn_dataset_split(&big, 100, 1, &tr, &va, &err), 0);
    ck_assert_int_eq(dyn_dataset_split(&big, 100, 2, &tr2, &va2, &err), 0);
    ck_assert(memcmp(va.labels, va2.labels, 100) != 0);
    dyn_dataset_free(&tr);
    dyn_dataset_free(&va);
    dyn_dataset_free(&tr2);
    dyn_dataset_free(&va2);
    dyn_dataset_free(&big);
    free(all);
    dyn_dataset_free(&d);
    tmp_teardown();
}
END_TEST

START_TEST(idx_real_mnist) {
    const char *img = "data/mnist/train-images-idx3-ubyte",
               *lab = "data/mnist/train-labels-idx1-ubyte",
               *timg = "data/mnist/t10k-images-idx3-ubyte",
               *tlab = "data/mnist/t10k-labels-idx1-ubyte";
    if (access(img, R_OK) != 0 || access(lab, R_OK) != 0) {
        fprintf(stderr, "idx_real_mnist: %s missing (run make data); skipped\n", img);
        return;
    }
    dyn_dataset d;
    dyn_err err = {0};
    ck_assert_msg(dyn_idx_load(img, lab, &d, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(d.n, 60000);
    ck_assert_int_eq(d.h, 28);
    ck_assert_int_eq(d.w, 28);
    ck_assert_int_eq(d.nclasses, 10);
    const uint8_t first[5] = {5, 0, 4, 1, 9};
    ck_assert(memcmp(d.labels, first, 5) == 0);
    int count[10] = {0};
    for (int i = 0; i < d.n; i++) count[d.labels[i]]++;
    const int want[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
    for (int c = 0; c < 10; c++) ck_assert_int_eq(count[c], want[c]);
    /* MNIST digits have an empty border: the corner pixels of every image are 0. */
    for (int i = 0; i < d.n; i += 997) ck_assert_int_eq(d.pixels[(size_t)i * 784], 0);
    dyn_dataset_free(&d);
    if (access(timg, R_OK) == 0 && access(tlab, R_OK) == 0) {
        ck_assert_msg(dyn_idx_load(timg, tlab, &d, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(d.n, 10000);
        ck_assert_int_eq(d.nclasses, 10);
        const uint8_t tfirst[5] = {7, 2, 1, 0, 4};
        ck_assert(memcmp(d.labels, tfirst, 5) == 0);
        dyn_dataset_free(&d);
        /* train images with test labels: the counts differ */
        idx_fails(img, tlab, DYN_EFORMAT, WANT("60000 images", "10000 labels"));
    }
}
END_TEST

/* ---- data sets by name, atomic file writes ---- */

static void mkdirf(const char *fmt, const char *a) {
    char p[512];
    snprintf(p, sizeof p, fmt, g_dir, a);
    ck_assert_int_eq(mkdir(p, 0755), 0);
}

/* A 5x4 gray PNG at path. */
static void write_png(const char *path, uint8_t v) {
    uint8_t px[20];
    memset(px, v, sizeof px);
    dyn_image im = {.w = 5, .h = 4, .c = 1, .data = px};
    void *buf = NULL;
    size_t n = 0;
    dyn_err err = {0};
    ck_assert_msg(dyn_image_encode_png(&im, &buf, &n, &err) == 0, "%s", err.msg);
    write_bytes(path, buf, n);
    free(buf);
}

START_TEST(resolve_names) {
    tmp_setup();
    mkdirf("%s/%s", "mnist");
    mkdirf("%s/%s", "fashion");
    mkdirf("%s/%s", "own");
    dyn_dataset_spec d;
    dyn_err err = {0};
    char want[512];

    ck_assert_msg(dyn_dataset_resolve(g_dir, "mnist", 0, &d, &err) == 0, "%s", err.msg);
    snprintf(want, sizeof want, "%s/mnist", g_dir);
    ck_assert_str_eq(d.dir, want);
    ck_assert_float_eq(d.mean, 0.1307f);
    ck_assert_str_eq(d.labels[3], "3");
    ck_assert_int_eq(d.nlabels, 10);

    ck_assert_msg(dyn_dataset_resolve(g_dir, "fashion-mnist", 0, &d, &err) == 0, "%s", err.msg);
    snprintf(want, sizeof want, "%s/fashion", g_dir);
    ck_assert_str_eq(d.dir, want);
    ck_assert_float_eq(d.std, 0.3530f);
    ck_assert_str_eq(d.labels[9], "Ankle boot");
    ck_assert_str_eq(d.name, "fashion-mnist");

    /* other names: a path as given; in the root only with DYN_DATASET_IN_ROOT */
    snprintf(want, sizeof want, "%s/own", g_dir);
    ck_assert_msg(dyn_dataset_resolve("/nonexistent", want, 0, &d, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(d.dir, want);
    ck_assert_float_eq(d.mean, 0.1307f);
    ck_assert_int_eq(dyn_dataset_resolve(g_dir, "own", 0, &d, &err), DYN_EIO); /* cwd */
    ck_assert_ptr_nonnull(strstr(err.msg, "not found"));
    ck_assert_msg(dyn_dataset_resolve(g_dir, "own", DYN_DATASET_IN_ROOT, &d, &err) == 0, "%s",
                  err.msg);
    ck_assert_str_eq(d.dir, want);
    ck_assert_int_eq(dyn_dataset_resolve(g_dir, "nosuch", DYN_DATASET_IN_ROOT, &d, &err), DYN_EIO);
    const char *bad[] = {"../own", "/etc", ".", "..", ".hidden", "a/b", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(dyn_dataset_resolve(g_dir, bad[i], DYN_DATASET_IN_ROOT, &d, &err) ==
                          DYN_EINVAL, "'%s' accepted", bad[i]);

    dyn_dataset_spec_init(&d, "fashion");
    ck_assert_str_eq(d.dir, "");
    ck_assert_float_eq(d.mean, 0.2860f);
    tmp_teardown();
}
END_TEST

START_TEST(load_idx_and_folders) {
    tmp_setup();
    char p[512], lab[512];
    mkdirf("%s/%s", "idx"); /* train: plain files, test: gzip-compressed */
    snprintf(p, sizeof p, "%s/idx/train-images-idx3-ubyte", g_dir);
    snprintf(lab, sizeof lab, "%s/idx/train-labels-idx1-ubyte", g_dir);
    write_valid_idx(p, lab, 0);
    snprintf(p, sizeof p, "%s/idx/t10k-images-idx3-ubyte.gz", g_dir);
    snprintf(lab, sizeof lab, "%s/idx/t10k-labels-idx1-ubyte.gz", g_dir);
    write_valid_idx(p, lab, 1);
    dyn_dataset_spec d;
    dyn_dataset ds;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_dataset_resolve(g_dir, "idx", DYN_DATASET_IN_ROOT, &d, &err), 0);
    ck_assert_msg(dyn_dataset_load(&d, "train", NULL, &ds, &err) == 0, "%s", err.msg);
    check_valid_set(&ds);
    dyn_dataset_free(&ds);
    ck_assert_msg(dyn_dataset_load_idx(&d, "test", &ds, &err) == 0, "%s", err.msg);
    check_valid_set(&ds);
    dyn_dataset_free(&ds);

    /* an image folder with DIR/train and DIR/test */
    const char *cls[] = {"a", "b"};
    mkdirf("%s/%s", "img");
    mkdirf("%s/%s", "img/train");
    mkdirf("%s/%s", "img/test");
    for (int k = 0; k < 2; k++) {
        char sub[64];
        snprintf(sub, sizeof sub, "img/train/%s", cls[k]);
        mkdirf("%s/%s", sub);
        snprintf(sub, sizeof sub, "img/test/%s", cls[k]);
        mkdirf("%s/%s", sub);
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/img/train/%s/%d.png", g_dir, cls[k], i);
            write_png(p, (uint8_t)(40 * k + i));
        }
        snprintf(p, sizeof p, "%s/img/test/%s/0.png", g_dir, cls[k]);
        write_png(p, (uint8_t)(100 + k));
    }
    dyn_shape in = {3, {1, 8, 8}};
    ck_assert_int_eq(dyn_dataset_resolve(g_dir, "img", DYN_DATASET_IN_ROOT, &d, &err), 0);
    ck_assert_msg(dyn_dataset_load(&d, "train", &in, &ds, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ds.n, 6);
    ck_assert_int_eq(ds.nclasses, 2);
    ck_assert_int_eq(ds.h, 8);
    dyn_dataset_free(&ds);
    ck_assert_msg(dyn_dataset_load(&d, "test", &in, &ds, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ds.n, 2);
    dyn_dataset_free(&ds);
    dyn_shape flat = {1, {64}};
    ck_assert_int_eq(dyn_dataset_load(&d, "train", &flat, &ds, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "[C, H, W]"));
    ck_assert_ptr_null(ds.pixels);

    /* DIR/<class>/ alone: the training split, and no test split */
    snprintf(p, sizeof p, "%s/img/train", g_dir);
    ck_assert_int_eq(dyn_dataset_resolve(g_dir, p, 0, &d, &err), 0);
    ck_assert_msg(dyn_dataset_load(&d, "train", &in, &ds, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ds.n, 6);
    dyn_dataset_free(&ds);
    ck_assert_int_eq(dyn_dataset_load(&d, "test", &in, &ds, &err), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "has no test split"));

    /* an empty directory: errors name the data set */
    mkdirf("%s/%s", "empty");
    ck_assert_int_eq(dyn_dataset_resolve(g_dir, "empty", DYN_DATASET_IN_ROOT, &d, &err), 0);
    ck_assert_int_ne(dyn_dataset_load_idx(&d, "train", &ds, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "data set 'empty'"));
    ck_assert_int_ne(dyn_dataset_load(&d, "train", &in, &ds, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "data set 'empty'"));
    tmp_teardown();
}
END_TEST

START_TEST(norm_and_preprocess) {
    dyn_dataset_spec d;
    dyn_dataset_spec_init(&d, "fashion");
    dyn_shape in = {3, {1, 28, 28}};
    json_t *pp = dyn_dataset_preprocess_json(&d, &in);
    ck_assert_ptr_nonnull(pp);
    ck_assert_int_eq(json_integer_value(json_object_get(pp, "height")), 28);
    ck_assert_float_eq_tol(json_real_value(json_array_get(json_object_get(pp, "mean"), 0)), 0.2860,
                           1e-6);
    float mean, sd;
    dyn_dataset_norm(&d, NULL, &mean, &sd);
    ck_assert_float_eq(mean, 0.2860f);
    dyn_model m = {0};
    m.preprocess = json_pack("{s:[f], s:[f]}", "mean", 0.5, "std", 0.25);
    dyn_dataset_norm(&d, &m, &mean, &sd);
    ck_assert_float_eq(mean, 0.5f);
    ck_assert_float_eq(sd, 0.25f);
    json_decref(m.preprocess);
    json_decref(pp);
    dyn_shape vec = {1, {784}};
    ck_assert_ptr_null(dyn_dataset_preprocess_json(&d, &vec));
}
END_TEST

START_TEST(file_write_atomic) {
    tmp_setup();
    char p[512], buf[64] = {0};
    snprintf(p, sizeof p, "%s/rec.json", g_dir);
    dyn_err err = {0};
    ck_assert_msg(dyn_file_write_atomic(p, "first", 5, 0640, &err) == 0, "%s", err.msg);
    ck_assert_msg(dyn_file_write_atomic(p, "second", 6, 0640, &err) == 0, "%s", err.msg);
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(buf, 1, sizeof buf - 1, f), 6);
    fclose(f);
    ck_assert_str_eq(buf, "second");
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(st.st_mode & 0007, 0); /* 0640: nothing for others, whatever the umask */
    ck_assert_int_eq(count_dir_entries(), 1); /* no temporary left */
    ck_assert_msg(dyn_file_write_atomic(p, "", 0, 0640, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(st.st_size, 0);

    /* failures: the directory is missing; the target is a directory (rename fails) */
    snprintf(p, sizeof p, "%s/nodir/x", g_dir);
    ck_assert_int_eq(dyn_file_write_atomic(p, "x", 1, 0644, &err), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot create"));
    snprintf(p, sizeof p, "%s/sub", g_dir);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    char q[600];
    snprintf(q, sizeof q, "%s/inner", p);
    ck_assert_int_eq(mkdir(q, 0755), 0);
    ck_assert_int_eq(dyn_file_write_atomic(p, "x", 1, 0644, &err), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "renaming"));
    ck_assert_int_eq(count_dir_entries(), 2); /* rec.json, sub: the temporary is gone */

    /* the streaming form, aborted: nothing written */
    snprintf(p, sizeof p, "%s/streamed", g_dir);
    dyn_file_atomic fa;
    ck_assert_int_eq(dyn_file_atomic_begin(&fa, p, 0644, &err), 0);
    ck_assert_int_eq(dyn_file_write_all(fa.fd, "abc", 3), 0);
    dyn_file_atomic_abort(&fa);
    ck_assert_int_eq(access(p, F_OK), -1);
    ck_assert_int_eq(count_dir_entries(), 2);
    ck_assert_int_eq(dyn_file_atomic_begin(&fa, p, 0644, &err), 0);
    ck_assert_int_eq(dyn_file_write_all(fa.fd, "abc", 3), 0);
    ck_assert_msg(dyn_file_atomic_commit(&fa, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(st.st_size, 3);
    ck_assert_int_eq(dyn_file_fsync_dir_of(p), 0);
    ck_assert_int_eq(dyn_file_fsync_dir_of("bare-name"), 0); /* "." */
    tmp_teardown();
}
END_TEST

static Suite *io_suite(void) {
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("safetensors");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, st_roundtrip);
    tcase_add_test(tc, st_write_rejects_bad_input);
    tcase_add_test(tc, st_concurrent_writers);
    tcase_add_test(tc, st_truncated_every_prefix);
    tcase_add_test(tc, st_header_length_lies);
    tcase_add_test(tc, st_garbage);
    tcase_add_test(tc, st_bad_headers);
    tcase_add_test(tc, st_half_precision);
    tcase_add_test(tc, st_int_codes);
    suite_add_tcase(s, tc);

    tc = tcase_create("model_file");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, model_roundtrip_dense);
    tcase_add_test(tc, model_roundtrip_dyn);
    tcase_add_test(tc, model_roundtrip_minimal_meta);
    tcase_add_test(tc, model_truncated_every_prefix);
    tcase_add_test(tc, model_nan);
    tcase_add_test(tc, model_bad_metadata);
    tcase_add_test(tc, model_codes_roundtrip);
    tcase_add_test(tc, model_codes_bounds);
    tcase_add_test(tc, model_codes_hostile);
    suite_add_tcase(s, tc);

    tc = tcase_create("idx");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, idx_valid_and_gz);
    tcase_add_test(tc, idx_truncated_every_prefix);
    tcase_add_test(tc, idx_damaged);
    tcase_add_test(tc, idx_helpers);
    tcase_add_test(tc, idx_real_mnist);
    suite_add_tcase(s, tc);

    tc = tcase_create("dataset");
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_add_test(tc, resolve_names);
    tcase_add_test(tc, load_idx_and_folders);
    tcase_add_test(tc, norm_and_preprocess);
    tcase_add_test(tc, file_write_atomic);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(io_suite)
