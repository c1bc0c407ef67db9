/*
 * admin.h - the research lead's commands, over the coordinator's admin socket:
 *
 *   medfed status [--json]            where the run stands
 *   medfed clients [--json]           every registered site
 *   medfed start [--rounds N]         run N more rounds (also ends a pause)
 *   medfed pause                      finish the round in flight, then wait
 *   medfed stop                       abandon the round in flight now
 *   medfed export [--round R] --out FILE   the model after round R (safetensors)
 *   medfed watch [--until-idle]       one line per phase, live
 *
 * Each takes --config FILE (default $MEDFED_ADMIN_CONFIG, else
 * /etc/medfed/admin.ini): the [admin] section written by `medfed provision`,
 * keys coordinator (endpoint), admin_key (this admin's CURVE secret key file,
 * 0600) and coordinator_key (the coordinator's CURVE public key, hex).
 */
#ifndef MEDFED_ADMIN_H
#define MEDFED_ADMIN_H

/* argv[0] is the command name. Returns the process exit status. */
int admin_main(int argc, char **argv);

#endif
