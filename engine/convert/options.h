/* options.h — the one table of conversion and fine-tuning options (issue 9 item 7).
 *
 * Every option a user can give a conversion or a fine-tune lives in one table (options.c): its
 * name (underscores; the CLI spells it with dashes), the kinds of job it applies to, its type,
 * bounds, default (as JSON text) and a help line. Three readers use it and nothing else:
 *   - `dyn convert` / `dyn finetune` parse their command lines through dyn_opts_parse_argv and
 *     print --help from dyn_opts_help;
 *   - dynd validates job requests with dyn_opt_check (plus its own checks that a named model or
 *     data set exists) and fills defaults with dyn_opts_defaults;
 *   - api/openapi.yaml's ConversionOptions / FinetuneOptions schemas are the text
 *     dyn_opts_openapi prints (`dyn options --openapi`); a unit test checks they are equal.
 * A validated spec (a JSON object: option name -> value) becomes the engine's option structs
 * through dyn_convert_opts_from_spec / dyn_ft_opts_from_spec, so defaults are written once.
 *
 * Errors: 0 or a DYN_E* code with err set (DYN_EINVAL: a value out of its bounds or of the
 * wrong type, an unknown option; the message names the option and what it accepts).
 */
#ifndef DYN_CONVERT_OPTIONS_H
#define DYN_CONVERT_OPTIONS_H

#include <jansson.h>

#include "convert.h"
#include "finetune.h"

/* Kinds of job (bit flags). */
#define DYN_OPT_CONVERT 1
#define DYN_OPT_FINETUNE 2
/* Where an option exists (bit flags): job API only (model, output, ...) or CLI only. */
#define DYN_OPT_JOB_ONLY 4
#define DYN_OPT_CLI_ONLY 8
/* A modifier of `kind` for dyn_opts_parse_argv and dyn_opts_help: the options of a job
 * *request* on a command line (a client of dynd: clients/dynctl). Job-only options (model,
 * output, overwrite) are accepted and listed, CLI-only ones (threads, json, report, ...) refused
 * and left out, and no defaults are filled (the server fills them). */
#define DYN_OPT_REQUEST 16

typedef enum dyn_opt_type {
    DYN_OPT_NUM,     /* a number in [lo, hi] ((lo, hi] with lo_open) */
    DYN_OPT_INT,     /* an integer in [lo, hi] */
    DYN_OPT_BOOL,    /* true / false (text: true|false|1|0|yes|no) */
    DYN_OPT_CHOICE,  /* one of choices "a|b|c" */
    DYN_OPT_MODEL,   /* a repository model name (the job API checks it exists) */
    DYN_OPT_DATASET, /* a data set name */
    DYN_OPT_OUTPUT,  /* the produced model's name */
    DYN_OPT_LIST,    /* a list of at most hi names (text: "a,b") */
    DYN_OPT_OBJECT,  /* a JSON object (text: JSON) */
    DYN_OPT_TYPE_COUNT
} dyn_opt_type;

typedef struct dyn_opt {
    const char *name;    /* underscores */
    int flags;           /* DYN_OPT_CONVERT | DYN_OPT_FINETUNE | DYN_OPT_JOB_ONLY | ... */
    dyn_opt_type type;
    double lo, hi;
    int lo_open;
    const char *def;     /* default as JSON text; NULL: absent unless given */
    const char *choices; /* DYN_OPT_CHOICE */
    const char *help;
} dyn_opt;

/* The table (static; n entries through *n). */
const dyn_opt *dyn_opts_table(int *n);

/* The option `name` for a job of `kind` (DYN_OPT_CONVERT or DYN_OPT_FINETUNE), or NULL. */
const dyn_opt *dyn_opt_find(int kind, const char *name);

/* Checks one value against its option's type and bounds and stores the normalized value
 * (numbers from text, lists from "a,b", objects from JSON text) into out[name]. Does not check
 * that models or data sets exist (the caller knows where they live). 0 or DYN_EINVAL. */
int dyn_opt_check(const dyn_opt *o, const json_t *v, json_t *out, dyn_err *err);

/* Adds the default of every option of `kind` that out lacks (CLI-only options included only
 * with cli = 1). Returns 0 or DYN_ENOMEM. */
int dyn_opts_defaults(int kind, int cli, json_t *out, dyn_err *err);

/* Parses a command line of `kind` (argv[0] is the command; options as --name-with-dashes VALUE,
 * booleans as --name / --no-name, "--name=value" too) into a new JSON spec *spec (defaults
 * filled; the caller decrefs) and the positional arguments (pointers into argv, at most
 * max_pos, count in *npos). A JSON-object option given as @FILE is read from FILE (here only:
 * the job API never reads files). `--help` sets *help = 1. DYN_EINVAL with a message for an unknown
 * option, a missing value, a bad value or too many positional arguments. With
 * kind | DYN_OPT_REQUEST: the options of a job request (see DYN_OPT_REQUEST), defaults not
 * filled. */
int dyn_opts_parse_argv(int kind, int argc, char **argv, json_t **spec, const char **pos,
                        int max_pos, int *npos, int *help, dyn_err *err);

/* The options of `kind` as help text, one per line (malloc'd; caller frees; NULL on ENOMEM):
 * cli = 1 as --flags, cli = 0 as the job API's names; kind | DYN_OPT_REQUEST (with cli = 1): the
 * --flags of a job request. */
char *dyn_opts_help(int kind, int cli);

/* The properties of the OpenAPI schema of `kind`'s job options, as the YAML lines of
 * api/openapi.yaml (8 spaces of indent; malloc'd; caller frees; NULL on ENOMEM). */
char *dyn_opts_openapi(int kind);

/* Fills the engine's conversion options from a validated spec (defaults for what it lacks).
 * Data sources, callbacks and keep_dense (pointers into spec: spec must outlive o) are set;
 * calib / eval sources are left to the caller. 0 or DYN_EINVAL. */
int dyn_convert_opts_from_spec(const json_t *spec, dyn_convert_opts *o, const char **keep,
                               int keep_cap, dyn_err *err);

/* The same for fine-tuning. 0 or DYN_EINVAL. */
int dyn_ft_opts_from_spec(const json_t *spec, dyn_ft_opts *o, dyn_err *err);

#endif
