/*
 * provision.h - `medfed provision`: the federation CA and every party's kit.
 *
 *   medfed provision --roster SITES.txt --out DIR --endpoint tcp://HOST:PORT
 *                    [--admin-endpoint tcp://HOST:PORT] [--federation NAME] [--days N]
 *
 * SITES.txt: one site name per line ('#' comments). Idempotent: a second run
 * creates only what is missing (a new site's kit, its roster line); existing
 * keys, certificates and config files are never rewritten. Layout of DIR
 * (directories 0700, secret keys 0600):
 *
 *   ca/ca.key ca/ca.crt                       the federation CA (keep ca/ offline)
 *   coordinator/curve.key roster.txt ca.crt coordinator.ini
 *   admin/admin.key admin.pub coordinator.pub admin.ini
 *   sites/NAME/identity.key identity.crt curve.key ca.crt coordinator.pub client.ini
 */
#ifndef MEDFED_PROVISION_H
#define MEDFED_PROVISION_H

/* argv[0] is "provision". Returns the process exit status (0 ok, 1 error, 2 usage). */
int provision_main(int argc, char **argv);

#endif
