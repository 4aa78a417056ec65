/* cli.h — pieces shared by the `dyn` subcommands (the files of engine/cli/): data set names, progress
 * line, argument parsing. Each subcommand lives in its own file and is dispatched from dyn.c.
 *
 * Errors: functions returning int give 0 or a DYN_E* code with err set; cli_die prints
 * "dyn <what>: <message>" and exits 1.
 */
#ifndef DYN_CLI_H
#define DYN_CLI_H

#include "io/idx.h"
#include "io/image.h"
#include "model.h"
#include "train.h"

/* A named data set: "mnist" and "fashion" are data/<name>/ (DYN_DATA_DIR overrides data/);
 * any other name is a directory holding the four IDX files. labels: static strings. */
typedef struct data_spec {
    char dir[1024];
    float mean, std;
    const char *const *labels;
    int is_fashion;
} data_spec;

int cli_data_resolve(const char *name, data_spec *d, dyn_err *err);
/* Loads split "train" or "test" into ds (caller frees with dyn_dataset_free). */
int cli_data_load(const data_spec *d, const char *split, dyn_dataset *ds, dyn_err *err);
_Noreturn void cli_die(const char *what, const dyn_err *err);
/* "1m05s" / "2h03m" into buf. */
void cli_fmt_time(double s, char *buf, size_t n);
/* dyn_train progress callback: redrawn line on a TTY, one line per 15 s in a log. */
void cli_progress_line(void *ctx, const dyn_progress *p);
/* "H,q" → *H, *q; 0 or -1 when malformed. */
int cli_parse_hq(const char *s, int *H, int *q);
/* The preprocess metadata of a model trained on data set d (new reference). */
json_t *cli_preprocess_json(const dyn_model *m, const data_spec *d);

/* Loads split "train" or "test" of data set `name` for a model whose per-sample input is
 * `input`: "mnist", "fashion" or a directory of IDX files as cli_data_load, or a folder of
 * PNG/JPEG images with one sub-folder per class (DIR/train/<class>/ and DIR/test/<class>/, or
 * DIR/<class>/ alone as the training split), decoded and resized to the input by
 * dyn_imgfolder_load. d gets the resolved spec (normalization of the named sets). ds: caller
 * frees with dyn_dataset_free. */
int cli_data_load_for(const char *name, const char *split, const dyn_shape *input, data_spec *d,
                      dyn_dataset *ds, dyn_err *err);
/* The normalization (x/255 − mean)/std a model expects: its preprocess metadata (first channel)
 * when present, else the data set's. */
void cli_model_norm(const dyn_model *m, const data_spec *d, float *mean, float *std);

/* Subcommands: argc/argv start at the subcommand's name; return the process exit code. */
int cmd_convert(int argc, char **argv);
int cmd_finetune(int argc, char **argv);

#endif
