/*
 * provision.h - `medfed provision`: the federation CA, the coordinator's and
 * admin's kits, and the sites' certificates.
 *
 *   medfed provision --out DIR --endpoint tcp://HOST:PORT
 *                    [--admin-endpoint tcp://HOST:PORT] [--federation NAME] [--days N]
 *                    [--install-dir /etc/medfed] [--roster SITES.txt]
 *   medfed provision --sign SITE.csr --ca-dir DIR/ca --out KITDIR [--fingerprint HEX]
 *
 * A site enrols itself (medfed-client enrol: its keys never leave it) and
 * sends its certificate request; --sign checks the request's signature and
 * site name, prints its fingerprint (and with --fingerprint refuses another
 * one), refuses a name that is on the roster with other keys (or keys that
 * are on it under another name), issues the certificate, appends the roster
 * line and writes the site's return kit: NAME.crt ca.crt coordinator.pub.
 * Signing the same request again changes nothing.
 *
 * --roster SITES.txt (one site name per line, '#' comments) is the all-in-one
 * mode for simulations and tests: it makes every site's secret keys here and
 * says so. Idempotent: a second run creates only what is missing (a new
 * site's kit, its roster line); existing keys, certificates and config files
 * are never rewritten. Layout of DIR (directories 0700, secret keys 0600):
 *
 *   ca/ca.key ca/ca.crt                       the federation CA (keep ca/ offline)
 *   ca/issued/NAME.crt                        certificates issued by --sign
 *   coordinator/curve.key roster.txt peers.txt ca.crt coordinator.ini
 *   admin/admin.key admin.pub coordinator.pub peers.txt admin.ini
 *   sites/NAME/identity.key identity.crt curve.key ca.crt coordinator.pub client.ini
 *                                             (--roster only)
 *
 * peers.txt follows the roster: "NAME FINGERPRINT" per site (the SHA-256 of
 * its identity key), the format of a site's [policy] peers file; the lead
 * sends it to every site once the members are enrolled.
 */
#ifndef MEDFED_PROVISION_H
#define MEDFED_PROVISION_H

/* argv[0] is "provision". Returns the process exit status (0 ok, 1 error, 2 usage). */
int provision_main(int argc, char **argv);

#endif
