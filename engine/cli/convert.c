/* convert.c — `dyn convert` (issue 3; being written). */
#include <stdio.h>

#include "cli.h"

int cmd_convert(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "dyn convert: not available in this build yet\n");
    return 2;
}
