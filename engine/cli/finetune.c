/* finetune.c — `dyn finetune` (issue 3; being written). */
#include <stdio.h>

#include "cli.h"

int cmd_finetune(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "dyn finetune: not available in this build yet\n");
    return 2;
}
