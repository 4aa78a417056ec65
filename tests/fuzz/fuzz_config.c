/* fuzz_config.c — server/config.c: the config file (INI: keys, values with their bounds,
 * comments, [model.<name>] sections) as `dynd --config FILE` and SIGHUP read it.
 * Input: the file's bytes. */
#include <stdlib.h>

#include "fuzz.h"
#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int init;
    if (!init) { /* only the file: no DYND_* variable of the fuzzing shell takes part */
        fuzz_verbose();
        clearenv();
        init = 1;
    }
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    char *argv[] = {"dynd", "--config", path, NULL};
    static srv_config cfg; /* large (paths, sections): not on the stack */
    srv_cmd cmd;
    dyn_err err = {0};
    if (srv_config_load(3, argv, &cfg, &cmd, &err) == 0) {
        DYN_ASSERT(cmd == SRV_CMD_RUN && cfg.nsections >= 0 && cfg.nsections <= SRV_MAX_MODEL_SECTIONS);
        DYN_ASSERT(cfg.ntokens >= 0 && cfg.ntokens <= SRV_MAX_TOKENS);
        srv_batch_cfg b = srv_config_batch(&cfg, "mnist");
        DYN_ASSERT(b.max_batch >= 1);
        fuzz_note("config: ok, %d sections, %d tokens", cfg.nsections, cfg.ntokens);
    } else {
        DYN_ASSERT(err.msg[0]);
        fuzz_note("config: %s", err.msg);
    }
    close(fd);
    return 0;
}
