/* version.c - see version.h. The Makefile defines both strings for this file only. */
#include "common/version.h"

#include <stdio.h>
#include <string.h>

#include "proto/wire.h"

#ifndef MEDFED_VERSION
#define MEDFED_VERSION "unknown"
#endif
#ifndef MEDFED_GIT_COMMIT
#define MEDFED_GIT_COMMIT "unknown"
#endif

const char *medfed_version(void) { return MEDFED_VERSION; }
const char *medfed_git_commit(void) { return MEDFED_GIT_COMMIT; }

int medfed_version_flag(int argc, char **argv, const char *prog)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s medfed %s (commit %s, protocol %d)\n", prog, MEDFED_VERSION,
                   MEDFED_GIT_COMMIT, WIRE_VERSION);
            return 1;
        }
    }
    return 0;
}
