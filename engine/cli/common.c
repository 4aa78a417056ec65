/* common.c — helpers shared by the dyn subcommands (see cli.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

const char *cli_data_root(void) {
    const char *root = getenv("DYN_DATA_DIR");
    return root ? root : "data";
}

_Noreturn void cli_die(const char *what, const dyn_err *err) {
    fprintf(stderr, "dyn %s: %s\n", what, err->msg[0] ? err->msg : "failed");
    exit(1);
}

void cli_fmt_time(double s, char *buf, size_t n) {
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

/* On a terminal the line is redrawn in place every second; in a log (not a TTY) one line is
 * written every 15 s and at each epoch's end. */
void cli_progress_line(void *ctx, const dyn_progress *p) {
    (void)ctx;
    static int tty = -1;
    static double last_log = -1e9;
    if (tty < 0) tty = isatty(2);
    if (!tty && !p->epoch_end && p->elapsed_s - last_log < 15.0) return;
    last_log = p->elapsed_s;
    char eta[32], el[32];
    cli_fmt_time(p->eta_s, eta, sizeof eta);
    cli_fmt_time(p->elapsed_s, el, sizeof el);
    fprintf(stderr, "%sepoch %d/%d  step %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s  elapsed %s  ETA %s",
            tty ? "\r" : "", p->epoch, p->epochs, (long long)p->step, (long long)p->steps, (double)p->loss,
            100.0 * p->acc, p->images_per_s, el, eta);
    if (p->epoch_end) {
        if (p->val_acc >= 0) fprintf(stderr, "  val %.2f%%", 100.0 * p->val_acc);
    }
    if (p->epoch_end || !tty) fprintf(stderr, "\n");
    fflush(stderr);
}

int cli_parse_hq(const char *s, int *H, int *q) {
    return sscanf(s, "%d,%d", H, q) == 2 && *H >= 0 && *q >= 0 ? 0 : -1; /* 0,0 = dense */
}

int cli_data_for_model(const char *name, const char *split, const dyn_model *m,
                       dyn_dataset_spec *d, dyn_dataset *ds, dyn_data_norm *nm, dyn_err *err) {
    memset(ds, 0, sizeof *ds);
    int rc = dyn_dataset_resolve(cli_data_root(), name, 0, d, err);
    if (!rc) rc = dyn_dataset_model_norm(d, m, nm, err);
    if (!rc) rc = dyn_dataset_load_for_model(d, split, m, ds, err);
    return rc;
}
