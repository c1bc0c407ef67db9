/*
 * enrol.h - `medfed-client enrol`: a hospital site makes its own keys.
 *
 *   medfed-client enrol --site NAME --out DIR [--coordinator tcp://HOST:PORT]
 *
 * Runs on the site's machine. Writes into DIR (created 0700 if missing):
 *   identity.key   the site's Ed25519 identity key (0600; never leaves DIR)
 *   curve.key      its CURVE transport key (0600; never leaves DIR)
 *   NAME.csr       the certificate request for the research lead (PEM PKCS#10:
 *                  CN = NAME, the identity public key, the CURVE public key)
 *   client.ini     a [client] template naming those files and the ones the
 *                  lead sends back: NAME.crt, ca.crt (and coordinator.pub)
 * and prints the identity key's fingerprint, in full and in 16 groups of 4,
 * to read out to the lead over the phone. It never overwrites: if any of
 * these files exists it refuses and changes nothing.
 */
#ifndef MEDFED_ENROL_H
#define MEDFED_ENROL_H

/* argv[0] is "enrol". Returns the exit status (0 ok, 1 error, 2 usage). */
int enrol_main(int argc, char **argv);

#endif
