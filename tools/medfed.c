/*
 * medfed - the operator's command: one subcommand per job.
 *
 *   medfed provision ...     the federation CA, the kits, --sign a site's request
 *   medfed status|clients|start|pause|stop|export|watch   the admin socket (admin.h)
 *   medfed report RUN_DIR    one HTML file of a run's record and charts (report.h)
 *   medfed help
 *
 * Each subcommand is one row of the table below and one function taking
 * (argc, argv) with argv[0] = the subcommand's name.
 */
#include <stdio.h>
#include <string.h>

#include "common/version.h"
#include "tools/admin.h"
#include "tools/provision.h"
#include "tools/report.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command_t;

static const command_t commands[] = {
    {"provision", provision_main, "make the federation CA and the coordinator's and admin's "
                                  "kits; --sign a site's certificate request"},
    {"status", admin_main, "where the run stands (round, clients, last metrics)"},
    {"clients", admin_main, "every registered site: live, last seen, part in the round"},
    {"start", admin_main, "start --rounds N: run N more rounds (also ends a pause)"},
    {"pause", admin_main, "finish the round in flight, then wait"},
    {"stop", admin_main, "abandon the round in flight now"},
    {"export", admin_main, "export [--round R] --out FILE: a round's model (safetensors)"},
    {"watch", admin_main, "one line per phase, live"},
    {"report", report_main, "report RUN_DIR [--out FILE.html]: a run's record and charts, one "
                            "HTML file"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: medfed COMMAND [options]   (medfed COMMAND --help; medfed --version)\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0) return !medfed_version_flag(argc, argv, "medfed");
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "medfed: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
