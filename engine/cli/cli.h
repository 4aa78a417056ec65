/* cli.h — pieces shared by the `dyn` subcommands (the files of engine/cli/): the data root,
 * errors, progress line, argument parsing (data sets themselves: io/dataset.h). Each subcommand
 * lives in its own file and is dispatched from dyn.c.
 *
 * Errors: functions returning int give 0 or a DYN_E* code with err set; cli_die prints
 * "dyn <what>: <message>" and exits 1.
 */
#ifndef DYN_CLI_H
#define DYN_CLI_H

#include "io/dataset.h"
#include "model.h"
#include "train.h"

/* The data root that data set names resolve against (io/dataset.h): $DYN_DATA_DIR, else
 * "data". */
const char *cli_data_root(void);
_Noreturn void cli_die(const char *what, const dyn_err *err);
/* "1m05s" / "2h03m" into buf. */
void cli_fmt_time(double s, char *buf, size_t n);
/* dyn_train progress callback: redrawn line on a TTY, one line per 15 s in a log. */
void cli_progress_line(void *ctx, const dyn_progress *p);
/* "H,q" → *H, *q; 0 or -1 when malformed. */
int cli_parse_hq(const char *s, int *H, int *q);

/* Resolves data set `name` (d) and loads its `split` through model m's input pipeline (ds;
 * dyn_dataset_load_for_model) with m's per-channel normalization (nm; dyn_dataset_model_norm).
 * 0 or a DYN_E* code with err set; on failure ds is zeroed. */
int cli_data_for_model(const char *name, const char *split, const dyn_model *m,
                       dyn_dataset_spec *d, dyn_dataset *ds, dyn_data_norm *nm, dyn_err *err);

/* Subcommands: argc/argv start at the subcommand's name; return the process exit code. */
int cmd_convert(int argc, char **argv);
int cmd_finetune(int argc, char **argv);

#endif
