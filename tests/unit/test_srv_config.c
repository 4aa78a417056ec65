/* test_srv_config.c — server/config: the settings table read from defaults, the config file,
 * the environment (DYND_*) and flags. Defaults; file syntax (comments, whitespace, quotes,
 * errors naming file and line: unknown keys, out-of-range values, bad types, long lines);
 * duplicate keys (the last wins) and sections; [model.<name>] batching sections; precedence
 * file < environment < flag; commands; tokens; reload; --help and --print-config (whose output
 * must read back to the same settings). Each test runs in its own process (Check's fork mode)
 * with every DYND_* variable removed first, so the environment of the shell cannot leak in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/config.h"
#include "testutil.h"

extern char **environ;

static char g_path[64]; /* this test's config file */

static void env_clear(void) {
    for (;;) {
        char **e = environ;
        while (*e && strncmp(*e, "DYND_", 5)) e++;
        if (!*e) return;
        char name[256];
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof name, "%.*s", (int)n, *e);
        ck_assert_int_eq(unsetenv(name), 0);
    }
}

static void setup(void) {
    env_clear();
    snprintf(g_path, sizeof g_path, "/tmp/dynd_test_cfg_XXXXXX");
    int fd = mkstemp(g_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

static void teardown(void) { unlink(g_path); }

static void write_conf(const char *text) {
    FILE *f = fopen(g_path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Loads with argv {"dynd", args...} (NULL-terminated). Returns srv_config_load's status. */
static int load_argv(srv_config *cfg, srv_cmd *cmd, dyn_err *err, const char *const *args) {
    char *argv[32] = {"dynd"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++) {
        ck_assert_int_lt(argc, 31);
        argv[argc] = (char *)args[argc - 1];
    }
    argv[argc] = NULL;
    memset(err, 0, sizeof *err);
    return srv_config_load(argc, argv, cfg, cmd, err);
}

/* Loads with `--config <g_path>` after writing text into it. */
static int load_text(srv_config *cfg, dyn_err *err, const char *text) {
    write_conf(text);
    const char *args[] = {"--config", g_path, NULL};
    return load_argv(cfg, NULL, err, args);
}

/* Asserts that text is refused with DYN_EINVAL and a message naming g_path:line and holding
 * `what`. */
static void expect_file_error(const char *text, int line, const char *what) {
    srv_config cfg;
    dyn_err err;
    ck_assert_int_eq(load_text(&cfg, &err, text), DYN_EINVAL);
    char where[96];
    snprintf(where, sizeof where, "%s:%d:", g_path, line);
    ck_assert_msg(strstr(err.msg, where), "'%s' does not name %s", err.msg, where);
    ck_assert_msg(strstr(err.msg, what), "'%s' does not mention '%s'", err.msg, what);
}

typedef struct file_error {
    const char *text;
    int line;
    const char *what;
} file_error;

static void expect_file_errors(const file_error *c, size_t n) {
    for (size_t i = 0; i < n; i++) expect_file_error(c[i].text, c[i].line, c[i].what);
}

static srv_config load_ok(const char *text) {
    srv_config cfg;
    dyn_err err;
    int rc = load_text(&cfg, &err, text);
    ck_assert_msg(rc == 0, "refused: %s", err.msg);
    return cfg;
}

/* ---- defaults ---- */

START_TEST(defaults) {
    srv_config cfg;
    srv_cmd cmd = SRV_CMD_COUNT;
    dyn_err err;
    ck_assert_int_eq(load_argv(&cfg, &cmd, &err, NULL), 0);
    ck_assert_int_eq(cmd, SRV_CMD_RUN);
    ck_assert_str_eq(cfg.listen_address, "127.0.0.1");
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_str_eq(cfg.model_dir, "models");
    ck_assert_str_eq(cfg.state_dir, "state");
    ck_assert_str_eq(cfg.data_dir, "data");
    ck_assert_int_eq(cfg.threads, 1);
    ck_assert_int_eq(cfg.http_threads, 0);
    ck_assert_int_eq(cfg.http_poller, SRV_HTTP_POLL);
    ck_assert_int_ge(srv_config_http_threads(&cfg), 1);
    ck_assert_int_eq(cfg.batch.device, SRV_DEVICE_AUTO);
    ck_assert_int_eq(cfg.batch.batching, 1);
    ck_assert_int_eq(cfg.batch.max_batch, 64);
    ck_assert_int_eq(cfg.batch.max_queue_delay_us, 0);
    ck_assert_int_eq(cfg.batch.queue_capacity, 256);
    ck_assert_int_eq(cfg.batch.workers, 1);
    ck_assert_int_eq(cfg.request_timeout_ms, 10000);
    ck_assert_int_eq(cfg.connection_timeout_s, 15);
    ck_assert_int_eq(cfg.max_connections, 1024);
    ck_assert_int_eq(cfg.max_body_bytes, 8388608);
    ck_assert_int_eq(cfg.max_upload_bytes, 1073741824);
    ck_assert_int_eq(cfg.max_image_width, 4096);
    ck_assert_int_eq(cfg.max_image_height, 4096);
    ck_assert_int_eq(cfg.max_image_pixels, 16777216);
    ck_assert_int_eq(cfg.max_json_depth, 32);
    ck_assert_str_eq(cfg.auth_tokens_raw, "");
    ck_assert_int_eq(cfg.ntokens, 0);
    ck_assert_int_eq(cfg.auth_inference, 0);
    ck_assert_int_eq(cfg.repository_poll_ms, 2000);
    ck_assert_int_eq(cfg.shutdown_grace_s, 30);
    ck_assert_int_eq(cfg.jobs_max_concurrent, 1);
    ck_assert_int_eq(cfg.jobs_lease_s, 30);
    ck_assert_str_eq(cfg.config_path, "");
    ck_assert_int_eq(cfg.nsections, 0);
    ck_assert_str_eq(srv_device_name(cfg.batch.device), "auto");
    ck_assert_str_eq(srv_device_name(SRV_DEVICE_CPU), "cpu");
    ck_assert_str_eq(srv_device_name(-1), "?");
    ck_assert_str_eq(srv_device_name(SRV_DEVICE_COUNT), "?");
    /* No file and no section: every model gets the default batching. */
    srv_batch_cfg b = srv_config_batch(&cfg, "mnist");
    ck_assert(!memcmp(&b, &cfg.batch, sizeof b));
}
END_TEST

/* ---- file syntax ---- */

START_TEST(file_syntax) {
    srv_config cfg = load_ok("# a comment\n"
                             "; another comment\n"
                             "\n"
                             "   \t\n"
                             "   # indented comment\n"
                             "port=9001\n"
                             "  listen_address   =   0.0.0.0  \t\n"
                             "model_dir = \"/srv/my models\"\n"
                             "state_dir = 'st'\n"
                             "device = CPU\n"
                             "log_format = Text\n"
                             "auth_inference = yes\n"
                             "batching = off\n"
                             "max_body_bytes = 1099511627776\n"
                             "auth_tokens =\n"
                             "threads = 0"); /* no final newline */
    ck_assert_int_eq(cfg.port, 9001);
    ck_assert_str_eq(cfg.listen_address, "0.0.0.0");
    ck_assert_str_eq(cfg.model_dir, "/srv/my models");
    ck_assert_str_eq(cfg.state_dir, "st");
    ck_assert_int_eq(cfg.batch.device, SRV_DEVICE_CPU);
    ck_assert_int_eq(cfg.log_format, 1);
    ck_assert_int_eq(cfg.auth_inference, 1);
    ck_assert_int_eq(cfg.batch.batching, 0);
    ck_assert_int_eq(cfg.max_body_bytes, 1LL << 40);
    ck_assert_str_eq(cfg.auth_tokens_raw, "");
    ck_assert_int_eq(cfg.threads, 0);
    ck_assert_str_eq(cfg.config_path, g_path);
    /* Windows line ends are whitespace too. */
    cfg = load_ok("port = 81\r\n[model.m]\r\nmax_batch = 3\r\n");
    ck_assert_int_eq(cfg.port, 81);
    ck_assert_int_eq(srv_config_batch(&cfg, "m").max_batch, 3);
}
END_TEST

START_TEST(bool_spellings) {
    const char *t[] = {"true", "TRUE", "yes", "on", "1"}, *f[] = {"false", "No", "OFF", "0"};
    char text[64];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        snprintf(text, sizeof text, "auth_inference = %s\n", t[i]);
        ck_assert_int_eq(load_ok(text).auth_inference, 1);
    }
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        snprintf(text, sizeof text, "batching = %s\n", f[i]);
        ck_assert_int_eq(load_ok(text).batch.batching, 0);
    }
}
END_TEST

START_TEST(unknown_key) {
    static const file_error bad[] = {
        {"port = 1\n# fine\nno_such_key = 3\n", 3, "no_such_key"},
        {"\n\n\n\nPort = 1\n", 5, "Port"}, /* keys are case-sensitive */
        {"max-batch = 1\n", 1, "max-batch"}, /* dashes are for flags only */
    };
    expect_file_errors(bad, DYN_ARRAY_LEN(bad));
}
END_TEST

START_TEST(out_of_range) {
    static const file_error bad[] = {
        {"port = 65536\n", 1, "port"},
        {"port = -1\n", 1, "65535"},
        {"\nmax_batch = 0\n", 2, "max_batch"},
        {"max_batch = 4097\n", 1, "4097"},
        {"jobs_lease_s = 2\n", 1, "jobs_lease_s"},
        {"max_body_bytes = 1023\n", 1, "max_body_bytes"},
        {"max_body_bytes = 1099511627777\n", 1, "1099511627777"},
        {"max_image_pixels = 4294967297\n", 1, "max_image_pixels"},
    };
    expect_file_errors(bad, DYN_ARRAY_LEN(bad));
    /* Bounds themselves are accepted. */
    srv_config cfg = load_ok("port = 0\nmax_batch = 4096\nmax_json_depth = 2\n"
                             "max_image_pixels = 4294967296\n");
    ck_assert_int_eq(cfg.port, 0);
    ck_assert_int_eq(cfg.batch.max_batch, 4096);
    ck_assert_int_eq(cfg.max_json_depth, 2);
    ck_assert_int_eq(cfg.max_image_pixels, 4294967296LL);
}
END_TEST

START_TEST(bad_types) {
    static const file_error bad[] = {
        {"port = abc\n", 1, "port"},
        {"port = 80x\n", 1, "80x"},
        {"port = 8.5\n", 1, "port"},
        {"port = 0x50\n", 1, "port"},
        {"port =\n", 1, "port"},
        {"port = 99999999999999999999999\n", 1, "port"}, /* overflows long long */
        {"port = 80 # inline comments are not comments\n", 1, "port"},
        {"batching = maybe\n", 1, "batching"},
        {"batching =\n", 1, "batching"},
        {"device = gpu\n", 1, "device"},
        {"log_level = verbose\n", 1, "log_level"},
    };
    expect_file_errors(bad, DYN_ARRAY_LEN(bad));
    char text[256];
    snprintf(text, sizeof text, "listen_address = %064d\n", 0); /* 64 characters: one too many */
    expect_file_error(text, 1, "listen_address");
    snprintf(text, sizeof text, "listen_address = %063d\n", 0);
    ck_assert_uint_eq(strlen(load_ok(text).listen_address), 63);
}
END_TEST

START_TEST(bad_lines) {
    static const file_error bad[] = {
        {"port = 1\njust words\n", 2, "key = value"},
        {"[model.a\n", 1, "unterminated"},
        {"[server]\nport = 1\n", 1, "server"},
        {"[model.]\n", 1, "model."},
        {"[model..hidden]\n", 1, "model..hidden"},
        {"[model.a/b]\n", 1, "a/b"},
        {"[model.a b]\n", 1, "a b"},
    };
    expect_file_errors(bad, DYN_ARRAY_LEN(bad));
}
END_TEST

/* Lines of any length are read whole: the tail of a long comment is not read as a setting (it
 * was, past 4095 bytes, before read_file used getline), and a long value is refused by its own
 * bound, naming its line. */
START_TEST(long_lines) {
    char *text = malloc(20000);
    ck_assert_ptr_nonnull(text);
    char *p = stpcpy(text, "port = 1\n#");
    memset(p, 'c', 4094), p += 4094; /* the first 4095 bytes: "#" and 4094 'c' */
    p = stpcpy(p, "port = 1234\n"); /* the bytes past the buffer */
    p = stpcpy(p, "threads = 3\n");
    srv_config cfg = load_ok(text);
    ck_assert_int_eq(cfg.port, 1);
    ck_assert_int_eq(cfg.threads, 3);

    p = stpcpy(text, "\nmodel_dir = ");
    memset(p, 'm', 8000), p += 8000;
    stpcpy(p, "\nport = 2\n");
    expect_file_error(text, 2, "model_dir");
    free(text);
}
END_TEST

START_TEST(missing_file) {
    srv_config cfg;
    dyn_err err;
    const char *args[] = {"--config", "/nonexistent/dynd.conf", NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, args), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/dynd.conf"));
    /* An empty --config= means no file. */
    const char *none[] = {"--config=", NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, none), 0);
    ck_assert_str_eq(cfg.config_path, "");
}
END_TEST

/* The module's rule for a key given twice: the last value wins (as in the environment). */
START_TEST(duplicate_keys) {
    srv_config cfg = load_ok("port = 1\nport = 2\nmax_batch = 5\nmax_batch = 6\n");
    ck_assert_int_eq(cfg.port, 2);
    ck_assert_int_eq(cfg.batch.max_batch, 6);
    /* A bad later value is still an error, even though an earlier one was fine. */
    expect_file_error("port = 1\nport = x\n", 2, "port");
}
END_TEST

/* ---- per-model sections ---- */

START_TEST(model_sections) {
    srv_config cfg = load_ok("max_batch = 32\n"
                             "[model.mnist]\n"
                             "max_batch = 8\n"
                             "batch_workers = 2\n"
                             "[ model.fashion-v1.2 ]\n"
                             "batching = false\n"
                             "max_queue_delay_us = 500\n"
                             "queue_capacity = 7\n");
    ck_assert_int_eq(cfg.nsections, 2);
    ck_assert_int_eq(cfg.batch.max_batch, 32);
    srv_batch_cfg m = srv_config_batch(&cfg, "mnist");
    ck_assert_int_eq(m.max_batch, 8);
    ck_assert_int_eq(m.workers, 2);
    ck_assert_int_eq(m.batching, 1);
    ck_assert_int_eq(m.queue_capacity, 256);
    srv_batch_cfg f = srv_config_batch(&cfg, "fashion-v1.2");
    ck_assert_int_eq(f.batching, 0);
    ck_assert_int_eq(f.max_batch, 32); /* inherits what the file set above it */
    ck_assert_int_eq(f.max_queue_delay_us, 500);
    ck_assert_int_eq(f.queue_capacity, 7);
    ck_assert_int_eq(f.workers, 1);
    srv_batch_cfg o = srv_config_batch(&cfg, "other");
    ck_assert(!memcmp(&o, &cfg.batch, sizeof o));
    ck_assert_int_eq(srv_config_batch(&cfg, "MNIST").max_batch, 32); /* names are exact */
    /* Global settings are refused inside a section; batching bounds still apply. */
    expect_file_error("[model.a]\nmax_batch = 2\nport = 1\n", 3, "per model");
    expect_file_error("[model.a]\nmax_batch = 0\n", 2, "max_batch");
    expect_file_error("[model.a]\nbogus = 1\n", 2, "bogus");
}
END_TEST

/* A section given twice is one section: the later keys override, the earlier ones stay. */
START_TEST(duplicate_sections) {
    srv_config cfg = load_ok("[model.a]\nmax_batch = 8\nbatch_workers = 3\n"
                             "[model.b]\nmax_batch = 2\n"
                             "[model.a]\nmax_batch = 16\n");
    ck_assert_int_eq(cfg.nsections, 2);
    srv_batch_cfg a = srv_config_batch(&cfg, "a");
    ck_assert_int_eq(a.max_batch, 16);
    ck_assert_int_eq(a.workers, 3);
    ck_assert_int_eq(srv_config_batch(&cfg, "b").max_batch, 2);
}
END_TEST

START_TEST(too_many_sections) {
    char *text = malloc(8192), *p = text;
    ck_assert_ptr_nonnull(text);
    for (int i = 0; i < SRV_MAX_MODEL_SECTIONS; i++) p += sprintf(p, "[model.m%d]\n", i);
    *p = 0;
    srv_config cfg = load_ok(text);
    ck_assert_int_eq(cfg.nsections, SRV_MAX_MODEL_SECTIONS);
    sprintf(p, "[model.m0]\nmax_batch = 9\n"); /* reopening one is not a new section */
    ck_assert_int_eq(load_ok(text).nsections, SRV_MAX_MODEL_SECTIONS);
    sprintf(p, "[model.one_more]\n");
    expect_file_error(text, SRV_MAX_MODEL_SECTIONS + 1, "sections");
    free(text);
}
END_TEST

/* ---- environment and flags ---- */

START_TEST(precedence) {
    write_conf("port = 1000\nmax_batch = 5\nlog_level = debug\n");
    srv_config cfg;
    dyn_err err;
    const char *file[] = {"--config", g_path, NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, file), 0);
    ck_assert_int_eq(cfg.port, 1000);
    ck_assert_int_eq(cfg.batch.max_batch, 5);

    setenv("DYND_PORT", "2000", 1);
    setenv("DYND_MAX_BATCH", "7", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, file), 0);
    ck_assert_int_eq(cfg.port, 2000);
    ck_assert_int_eq(cfg.batch.max_batch, 7);
    ck_assert_int_eq(cfg.log_level, 0); /* from the file, untouched by the environment */

    const char *flags[] = {"--port=3000", "--config", g_path, "--max-batch", "9", NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, flags), 0);
    ck_assert_int_eq(cfg.port, 3000);
    ck_assert_int_eq(cfg.batch.max_batch, 9);

    /* Without a file the environment still beats the defaults. */
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), 0);
    ck_assert_int_eq(cfg.port, 2000);
    ck_assert_int_eq(cfg.log_level, 1);
}
END_TEST

START_TEST(config_from_env) {
    write_conf("port = 1111\n");
    setenv("DYND_CONFIG", g_path, 1);
    srv_config cfg;
    dyn_err err;
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), 0);
    ck_assert_int_eq(cfg.port, 1111);
    ck_assert_str_eq(cfg.config_path, g_path);
    const char *other[] = {"--config=/nonexistent.conf", NULL}; /* the flag wins */
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, other), DYN_EIO);
}
END_TEST

START_TEST(jobs_backend_settings) {
    srv_config cfg;
    dyn_err err;
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), 0);
    ck_assert_int_eq(cfg.jobs_backend, SRV_JOBS_BACKEND_FS); /* the default */
    ck_assert_str_eq(cfg.jobs_db, "");
    /* postgres needs a database */
    setenv("DYND_JOBS_BACKEND", "postgres", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), DYN_EINVAL);
    ck_assert_msg(strstr(err.msg, "jobs_db") && strstr(err.msg, "DYND_JOBS_DB"), "%s", err.msg);
    setenv("DYND_JOBS_DB", "host=db dbname=dynd", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), 0);
    ck_assert_int_eq(cfg.jobs_backend, SRV_JOBS_BACKEND_POSTGRES);
    ck_assert_str_eq(cfg.jobs_db, "host=db dbname=dynd");
    const char *flag[] = {"--jobs-backend=mysql", NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, flag), DYN_EINVAL);
    const char *fs[] = {"--jobs-backend", "fs", NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, fs), 0);
    ck_assert_int_eq(cfg.jobs_backend, SRV_JOBS_BACKEND_FS);
}
END_TEST

START_TEST(env_errors) {
    srv_config cfg;
    dyn_err err;
    setenv("DYND_MAX_BATCH", "0", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), DYN_EINVAL);
    ck_assert_msg(strstr(err.msg, "DYND_MAX_BATCH"), "%s", err.msg);
    setenv("DYND_MAX_BATCH", "", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), DYN_EINVAL);
    unsetenv("DYND_MAX_BATCH");
    setenv("DYND_DEVICE", "tpu", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), DYN_EINVAL);
    ck_assert_msg(strstr(err.msg, "DYND_DEVICE"), "%s", err.msg);
    setenv("DYND_DEVICE", "cuda", 1);
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, NULL), 0);
    ck_assert_int_eq(cfg.batch.device, SRV_DEVICE_CUDA);
    /* An env error is reported even when a flag would override the same setting: the
     * environment is read in full first. */
    setenv("DYND_PORT", "x", 1);
    const char *flag[] = {"--port=1", NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, flag), DYN_EINVAL);
}
END_TEST

START_TEST(flags) {
    srv_config cfg;
    srv_cmd cmd;
    dyn_err err;
    const char *a[] = {"--auth-inference", "--batching", "false", "--listen_address",
                       "::1", "--max-queue-delay-us=250", "--log-level=WARN", NULL};
    ck_assert_int_eq(load_argv(&cfg, &cmd, &err, a), 0);
    ck_assert_int_eq(cmd, SRV_CMD_RUN);
    ck_assert_int_eq(cfg.auth_inference, 1);
    ck_assert_int_eq(cfg.batch.batching, 0);
    ck_assert_str_eq(cfg.listen_address, "::1");
    ck_assert_int_eq(cfg.batch.max_queue_delay_us, 250);
    ck_assert_int_eq(cfg.log_level, 2);
    const char *b[] = {"--batching=no", "--auth-inference", NULL}; /* a bool flag last */
    ck_assert_int_eq(load_argv(&cfg, &cmd, &err, b), 0);
    ck_assert_int_eq(cfg.auth_inference, 1);
    ck_assert_int_eq(cfg.batch.batching, 0);

    const struct {
        const char *args[4], *what;
    } bad[] = {
        {{"--no-such", NULL}, "no_such"},
        {{"--port", NULL}, "port"},
        {{"--port=", NULL}, "port"},
        {{"--port", "http", NULL}, "port"},
        {{"--max-batch=0", NULL}, "max_batch"},
        {{"serve", NULL}, "serve"},
        {{"-p", "80", NULL}, "-p"},
        {{"--", NULL}, "--"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(load_argv(&cfg, &cmd, &err, bad[i].args), DYN_EINVAL);
        ck_assert_msg(strstr(err.msg, bad[i].what), "case %zu: '%s'", i, err.msg);
    }
    char longflag[300] = "--";
    memset(longflag + 2, 'x', 200);
    const char *lf[] = {longflag, NULL};
    ck_assert_int_eq(load_argv(&cfg, &cmd, &err, lf), DYN_EINVAL);
}
END_TEST

START_TEST(commands) {
    const struct {
        const char *flag;
        srv_cmd cmd;
    } c[] = {{"--help", SRV_CMD_HELP},
             {"-h", SRV_CMD_HELP},
             {"--version", SRV_CMD_VERSION},
             {"--check-config", SRV_CMD_CHECK},
             {"--print-config", SRV_CMD_PRINT_CONFIG}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        srv_config cfg;
        srv_cmd cmd = SRV_CMD_RUN;
        dyn_err err;
        const char *args[] = {"--port=5", c[i].flag, NULL};
        ck_assert_int_eq(load_argv(&cfg, &cmd, &err, args), 0);
        ck_assert_int_eq(cmd, c[i].cmd);
        ck_assert_int_eq(cfg.port, 5);
    }
}
END_TEST

/* replica_id goes into a reply header: empty (no header) or a safe token, whatever the source */
START_TEST(replica_id) {
    srv_config cfg = load_ok("# nothing\n");
    ck_assert_str_eq(cfg.replica_id, "");
    cfg = load_ok("replica_id = dynd-2.a_b\n");
    ck_assert_str_eq(cfg.replica_id, "dynd-2.a_b");
    const char *bad[] = {"a b", "a\\r", ".hidden", "x;y", "\"quoted\"x", "r\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "replica_id = %s\n", bad[i]);
        dyn_err err;
        ck_assert_msg(load_text(&cfg, &err, text) == DYN_EINVAL, "'%s' accepted", bad[i]);
        ck_assert_msg(strstr(err.msg, "replica_id"), "'%s' does not name the setting", err.msg);
    }
    const char *args[] = {"--replica-id", "a\r\nX-Evil: 1", NULL};
    dyn_err err;
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, args), DYN_EINVAL);
    char longest[66];
    memset(longest, 'r', 65);
    longest[65] = 0;
    const char *args2[] = {"--replica-id", longest, NULL};
    ck_assert_int_eq(load_argv(&cfg, NULL, &err, args2), DYN_EINVAL);
}
END_TEST

START_TEST(tokens) {
    srv_config cfg = load_ok("auth_tokens = \" alpha , beta,,gamma ,\"\n");
    ck_assert_int_eq(cfg.ntokens, 3);
    ck_assert_str_eq(cfg.tokens[0], "alpha");
    ck_assert_str_eq(cfg.tokens[1], "beta");
    ck_assert_str_eq(cfg.tokens[2], "gamma");
    ck_assert_int_eq(srv_config_token_ok(&cfg, "alpha"), 1);
    ck_assert_int_eq(srv_config_token_ok(&cfg, "gamma"), 1);
    ck_assert_int_eq(srv_config_token_ok(&cfg, "alph"), 0);
    ck_assert_int_eq(srv_config_token_ok(&cfg, "alphaa"), 0);
    ck_assert_int_eq(srv_config_token_ok(&cfg, "Alpha"), 0);
    ck_assert_int_eq(srv_config_token_ok(&cfg, ""), 0);
    srv_config none = load_ok("");
    ck_assert_int_eq(none.ntokens, 0);
    ck_assert_int_eq(srv_config_token_ok(&none, ""), 0);
    /* At most SRV_MAX_TOKENS are kept. */
    char text[1024], *p = stpcpy(text, "auth_tokens = ");
    for (int i = 0; i < SRV_MAX_TOKENS + 4; i++) p += sprintf(p, "t%d,", i);
    strcpy(p, "\n");
    cfg = load_ok(text);
    ck_assert_int_eq(cfg.ntokens, SRV_MAX_TOKENS);
    ck_assert_int_eq(srv_config_token_ok(&cfg, "t0"), 1);
    ck_assert_int_eq(srv_config_token_ok(&cfg, "t19"), 0);
}
END_TEST

START_TEST(reload) {
    write_conf("port = 1\n[model.a]\nmax_batch = 2\n");
    char *argv[] = {"dynd", "--config", g_path, "--threads=4", NULL};
    srv_config cfg;
    dyn_err err = {0};
    ck_assert_int_eq(srv_config_load(4, argv, &cfg, NULL, &err), 0);
    ck_assert_int_eq(srv_config_batch(&cfg, "a").max_batch, 2);
    write_conf("port = 2\nthreads = 8\n[model.a]\nmax_batch = 3\n");
    ck_assert_int_eq(srv_config_reload(4, argv, &cfg, &err), 0);
    ck_assert_int_eq(cfg.port, 2);
    ck_assert_int_eq(cfg.threads, 4); /* the flag still wins */
    ck_assert_int_eq(srv_config_batch(&cfg, "a").max_batch, 3);
    write_conf("port = nope\n");
    ck_assert_int_eq(srv_config_reload(4, argv, &cfg, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, ":1:"));
}
END_TEST

/* ---- writers ---- */

START_TEST(help_lists_every_setting) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    ck_assert_ptr_nonnull(f);
    srv_config_help(f, "dynd");
    fclose(f);
    const char *want[] = {"usage: dynd", "--port", "DYND_PORT", "--max_batch", "DYND_MAX_BATCH",
                          "[per model]", "--jobs_lease_s", "DYND_AUTH_TOKENS", "default \"8080\""};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(buf, want[i]), "--help lacks '%s'", want[i]);
    free(buf);
}
END_TEST

/* --print-config writes a file that reads back to the same settings, sections included. */
static void expect_print_roundtrip(const srv_config *cfg) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    ck_assert_ptr_nonnull(f);
    srv_config_print(f, cfg);
    fclose(f);
    srv_config back = load_ok(buf);
    free(buf);
    srv_config want;
    if (cfg) memcpy(&want, cfg, sizeof want);
    else ck_assert_int_eq(load_argv(&want, NULL, &(dyn_err){0}, NULL), 0);
    memcpy(want.config_path, back.config_path, sizeof want.config_path);
    ck_assert(!memcmp(&want, &back, sizeof want));
}

START_TEST(print_roundtrip_defaults) { expect_print_roundtrip(NULL); }
END_TEST

START_TEST(print_roundtrip_settings) {
    srv_config cfg = load_ok("port = 9\nlisten_address = ::\ndevice = cpu\nlog_format = text\n"
                             "auth_tokens = a,b\nmax_upload_bytes = 4096\nbatching = no\n"
                             "[model.x]\nmax_batch = 3\nbatching = yes\n"
                             "[model.y-2]\nqueue_capacity = 11\n");
    expect_print_roundtrip(&cfg);
}
END_TEST

Suite *config_suite(void) {
    Suite *s = suite_create("srv_config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, file_syntax);
    tcase_add_test(tc, bool_spellings);
    tcase_add_test(tc, unknown_key);
    tcase_add_test(tc, out_of_range);
    tcase_add_test(tc, bad_types);
    tcase_add_test(tc, bad_lines);
    tcase_add_test(tc, long_lines);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, duplicate_keys);
    tcase_add_test(tc, model_sections);
    tcase_add_test(tc, duplicate_sections);
    tcase_add_test(tc, too_many_sections);
    tcase_add_test(tc, precedence);
    tcase_add_test(tc, config_from_env);
    tcase_add_test(tc, env_errors);
    tcase_add_test(tc, flags);
    tcase_add_test(tc, commands);
    tcase_add_test(tc, tokens);
    tcase_add_test(tc, replica_id);
    tcase_add_test(tc, reload);
    tcase_add_test(tc, jobs_backend_settings);
    tcase_add_test(tc, help_lists_every_setting);
    tcase_add_test(tc, print_roundtrip_defaults);
    tcase_add_test(tc, print_roundtrip_settings);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(config_suite)
