/* The site's own secure-aggregation policy (client/policy.c): the peers pin,
 * the cohort and threshold rule, and the released-shares record that must
 * survive a restart and a torn write. Real files in a temp directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregation/secagg.h"
#include "client/policy.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/medfed-policy.XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(crypto_init(), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void conf_in(client_conf_t *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->state_dir, sizeof c->state_dir, "%s", dir);
    snprintf(c->data.file, sizeof c->data.file, "%s/client.ini", dir);
    snprintf(c->site, sizeof c->site, "st-marys");
    c->min_cohort = 3;
    c->max_collusion = 0.33;
}

static void test_cohort_rule(void **state)
{
    (void)state;
    client_conf_t conf;
    char why[300];
    conf_in(&conf);
    policy_t *p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_int_equal(policy_cohort_ok(p, 10, 7, why, sizeof why), 0);
    assert_int_equal(policy_cohort_ok(p, 10, 6, why, sizeof why), -1); /* 2t <= n + c */
    assert_non_null(strstr(why, "threshold 6 for 10 sites"));
    assert_int_equal(policy_cohort_ok(p, 10, 1, why, sizeof why), -1); /* the t = 1 attack */
    assert_int_equal(policy_cohort_ok(p, 2, 2, why, sizeof why), -1);  /* below min_cohort */
    assert_non_null(strstr(why, "min_cohort is 3"));
    assert_int_equal(policy_cohort_ok(p, 3, 2, why, sizeof why), 0);
    assert_int_equal(policy_cohort_ok(p, 3, 4, why, sizeof why), -1);  /* t above n */
    policy_destroy(&p);
    conf.max_collusion = 0.5;
    conf.min_cohort = 5;
    p = policy_new(&conf, why, sizeof why);
    assert_int_equal(policy_cohort_ok(p, 10, 7, why, sizeof why), -1); /* (10 + 5) / 2 */
    assert_int_equal(policy_cohort_ok(p, 10, 8, why, sizeof why), 0);
    assert_int_equal(policy_cohort_ok(p, 4, 4, why, sizeof why), -1);
    policy_destroy(&p);
    /* SecAgg+: a neighbourhood smaller than min_cohort is refused even where
     * no site colludes (the bound alone would allow it) */
    conf.max_collusion = 0;
    p = policy_new(&conf, why, sizeof why);
    assert_int_equal(policy_graph_ok(p, 40, 2, 3, why, sizeof why), -1);
    assert_non_null(strstr(why, "3 sites to share with (our neighbourhood), min_cohort is 5"));
    policy_destroy(&p);
    /* Colluders are a share of the federation, not of the cohort the
     * coordinator announces: in a federation of 95, a cohort of the victim
     * and two colluders (floor(0.33 * 3) = 0 "colluders") is refused. */
    conf.max_collusion = 0.33;
    conf.min_cohort = 3;
    p = policy_new(&conf, why, sizeof why);
    assert_int_equal(policy_cohort_ok(p, 3, 2, why, sizeof why), 0); /* federation unknown */
    policy_set_federation(p, 95);
    assert_int_equal(policy_cohort_ok(p, 3, 2, why, sizeof why), -1);
    assert_non_null(strstr(why, "of which 31 may collude"));
    assert_int_equal(policy_cohort_ok(p, 40, 36, why, sizeof why), 0);  /* (40 + 31) / 2 < 36 */
    assert_int_equal(policy_cohort_ok(p, 40, 35, why, sizeof why), -1);
    assert_int_equal(policy_cohort_ok(p, 32, 32, why, sizeof why), -1); /* one honest site */
    /* a sparse neighbourhood is held to the same count: all 31 may be in it */
    assert_int_equal(policy_graph_ok(p, 95, 20, 21, why, sizeof why), -1);
    assert_non_null(strstr(why, "(our neighbourhood)"));
    policy_destroy(&p);
    /* Where few may collude the SecAgg+ bound is stricter than the split-view
     * rule: 5 of 100 colluders, a neighbourhood of 21: t = 14 passes the
     * split-view rule ((21 + 5) / 2 + 1) but not the bound (2^-40). */
    conf.max_collusion = 0.05;
    p = policy_new(&conf, why, sizeof why);
    policy_set_federation(p, 100);
    assert_int_equal(policy_graph_ok(p, 100, 20, 14, why, sizeof why), -1);
    assert_non_null(strstr(why, "SecAgg+ bound"));
    unsigned need = secagg_plus_threshold(100, 20, 0.05);
    assert_true(need > 14 && need <= 21);
    assert_int_equal(policy_graph_ok(p, 100, 20, need, why, sizeof why), 0);
    policy_destroy(&p);
    assert_null(p);
}

static void test_peers_pin(void **state)
{
    (void)state;
    uint8_t pk_a[32], sk_a[64], pk_b[32], sk_b[64];
    assert_int_equal(identity_keypair(pk_a, sk_a), 0);
    assert_int_equal(identity_keypair(pk_b, sk_b), 0);
    char fp[IDENTITY_HEXBYTES], path[128], why[300];
    identity_fingerprint(fp, pk_a);
    snprintf(path, sizeof path, "%s/peers.txt", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# agreed with the consortium\nst-marys %s\n", fp);
    fclose(f);
    client_conf_t conf;
    conf_in(&conf);
    snprintf(conf.peers, sizeof conf.peers, "%s", path);
    policy_t *p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_true(policy_has_peers(p));
    assert_int_equal(policy_peer_ok(p, "st-marys", pk_a, why, sizeof why), 0);
    /* the right name with another key (a CA-issued impostor), and a name not agreed */
    assert_int_equal(policy_peer_ok(p, "st-marys", pk_b, why, sizeof why), -1);
    assert_non_null(strstr(why, "not the one on the peers list"));
    assert_int_equal(policy_peer_ok(p, "sybil-1", pk_b, why, sizeof why), -1);
    assert_non_null(strstr(why, "'sybil-1' is not on this site's peers list"));
    policy_destroy(&p);
    /* a peers line without a fingerprint refuses the start, naming the site */
    f = fopen(path, "w");
    fprintf(f, "st-marys\n");
    fclose(f);
    assert_null(policy_new(&conf, why, sizeof why));
    assert_non_null(strstr(why, "'st-marys' has no fingerprint"));
}

static void test_released_survives_restart(void **state)
{
    (void)state;
    client_conf_t conf;
    char why[300], path[128];
    conf_in(&conf);
    uint8_t coord[32] = {7}, h1[32] = {1}, h2[32] = {2}, v1[32], v2[32], v1b[32];
    uint8_t u3a[32] = {0xA}, u3b[32] = {0xB};
    policy_version_id(v1, coord, h1);
    policy_version_id(v2, coord, h2);
    coord[0] = 8; /* another federation, same model bytes */
    policy_version_id(v1b, coord, h1);
    assert_memory_not_equal(v1, v1b, 32);
    policy_t *p = policy_new(&conf, why, sizeof why);
    assert_false(policy_released(p, v1));
    assert_int_equal(policy_release_check(p, v1, u3a), 0);
    assert_int_equal(policy_record_release(p, v1, u3a, why, sizeof why), 0);
    assert_true(policy_released(p, v1));
    assert_int_equal(policy_release_check(p, v1, u3a), 1);  /* the same survivors: allowed */
    assert_int_equal(policy_release_check(p, v1, u3b), -1); /* another cohort: refused */
    assert_int_equal(policy_release_check(p, v2, u3b), 0);
    assert_false(policy_released(p, v2));
    policy_destroy(&p);
    /* a restart: the record is on disk, mode 0600 */
    p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_int_equal(policy_release_check(p, v1, u3b), -1);
    assert_int_equal(policy_release_check(p, v1, u3a), 1);
    assert_false(policy_released(p, v1b));
    snprintf(path, sizeof path, "%s/released-st-marys", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 19 + 129); /* header + one record: the same pair is kept once */
    assert_int_equal(policy_record_release(p, v1, u3a, why, sizeof why), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 19 + 129);
    policy_destroy(&p);
    /* a crash mid-append leaves a torn line: ignored and cut, the rest kept */
    FILE *f = fopen(path, "a");
    fputs("0123abcd", f);
    fclose(f);
    p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_true(policy_released(p, v1));
    assert_int_equal(policy_record_release(p, v2, u3b, why, sizeof why), 0);
    policy_destroy(&p);
    p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_int_equal(policy_release_check(p, v1, u3a), 1);
    assert_int_equal(policy_release_check(p, v2, u3b), 1);
    assert_int_equal(policy_release_check(p, v2, u3a), -1);
    policy_destroy(&p);
    /* a corrupted record refuses the start: the file is the site's memory */
    f = fopen(path, "r+");
    fseek(f, 25, SEEK_SET);
    fputc('z', f);
    fclose(f);
    assert_null(policy_new(&conf, why, sizeof why));
    assert_non_null(strstr(why, ":2: not a 128-hex-digit record"));
    /* a record that does not end its line (two run together) refuses it too */
    FILE *g = fopen(path, "r+");
    fseek(g, 25, SEEK_SET);
    fputc('a', g);
    fseek(g, 19 + 128, SEEK_SET);
    fputc('0', g);
    fclose(g);
    assert_null(policy_new(&conf, why, sizeof why));
    assert_non_null(strstr(why, ":2: not a 128-hex-digit record"));
    /* records under another header are not this site's memory */
    g = fopen(path, "r+");
    fseek(g, 19 + 128, SEEK_SET);
    fputc('\n', g);
    fseek(g, 0, SEEK_SET);
    fputs("medfed-released v1\n", g);
    fclose(g);
    assert_null(policy_new(&conf, why, sizeof why));
    assert_non_null(strstr(why, "not a medfed released-shares file"));
    /* a newer medfed's format: refused, naming both versions (no downgrade
     * forgets what was released) */
    g = fopen(path, "r+");
    fputs("medfed-released v3\n", g);
    fclose(g);
    assert_null(policy_new(&conf, why, sizeof why));
    assert_non_null(strstr(why, "written by a newer medfed (released-shares format v3"));
    assert_non_null(strstr(why, "reads v2"));
    /* a crash while the file was first created (empty, or a torn header):
     * nothing was released; the daemon starts and records as usual */
    f = fopen(path, "w");
    fputs("medfed-rel", f);
    fclose(f);
    p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_false(policy_released(p, v1));
    assert_int_equal(policy_record_release(p, v1, u3a, why, sizeof why), 0);
    policy_destroy(&p);
    p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_int_equal(policy_release_check(p, v1, u3a), 1);
    policy_destroy(&p);
    /* an unwritable state directory: the release cannot be recorded, so the
     * caller reveals nothing */
    unlink(path);
    snprintf(conf.state_dir, sizeof conf.state_dir, "%s/missing/dir", dir);
    p = policy_new(&conf, why, sizeof why);
    assert_non_null(p);
    assert_int_equal(policy_record_release(p, v1, u3a, why, sizeof why), -1);
    assert_non_null(strstr(why, "state_dir"));
    assert_false(policy_released(p, v1));
    policy_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cohort_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peers_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_survives_restart, setup, teardown),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
