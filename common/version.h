/*
 * version.h - what build this is: the project's version (the VERSION file at the
 * top of the tree, also the Debian packages' version) and the git commit it was
 * built from ("unknown" outside a git checkout, "-dirty" when the tree had
 * uncommitted changes). Every program answers --version with these.
 */
#ifndef MEDFED_VERSION_H
#define MEDFED_VERSION_H

const char *medfed_version(void);     /* "0.6.0" */
const char *medfed_git_commit(void);  /* "8614e4c0a1b2", "8614e4c0a1b2-dirty" or "unknown" */

/* When argv holds "--version", prints "PROG medfed VERSION (commit C, protocol P)"
 * to stdout and returns 1 (the caller exits 0); otherwise returns 0. */
int medfed_version_flag(int argc, char **argv, const char *prog);

#endif
