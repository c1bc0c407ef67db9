/* common/json.c and common/runrec.c: JSON through jansson, the experiment record. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/json.h"
#include "common/runrec.h"
#include "common/util.h"
#include "common/version.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/medfed-json-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JX_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(s);
    return s;
}

static void test_reals_print_as_the_old_writers(void **state)
{
    (void)state;
    json_t *o = json_object();
    jx_set(o, "acc", jx_real(0.95419847328, 6));
    jx_set(o, "secs", jx_real(12.34567, 3));
    jx_set(o, "clip", json_real(2.0));
    jx_set(o, "auc", jx_real(NAN, 6));
    jx_set(o, "inf", jx_real(INFINITY, 6));
    jx_set(o, "s", jx_str(NULL));
    jx_set(o, "skipped", NULL); /* not set */
    char *s = dump(o);
    assert_string_equal(s, "{\"acc\":0.954198,\"secs\":12.346,\"clip\":2.0,\"auc\":null,"
                           "\"inf\":null,\"s\":null}");
    free(s);
    json_decref(o);
}

static void test_row_is_one_line(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    json_t *row = json_pack("{s:i,s:s,s:[i,i]}", "round", 3, "note", "a \"quoted\"\nline", "x", 1, 2);
    assert_int_equal(jx_write_line(f, row), 0);
    fclose(f);
    assert_string_equal(buf, "{\"round\":3,\"note\":\"a \\\"quoted\\\"\\nline\",\"x\":[1,2]}\n");
    json_decref(row);
    free(buf);
}

static void test_parse_objects_only(void **state)
{
    (void)state;
    const char *good = "{\"round\":4,\"aborted\":true}\n";
    json_t *o = jx_loads_object(good, strlen(good));
    assert_non_null(o);
    json_decref(o);
    assert_null(jx_loads_object("{\"round\":4,\"abo", 15)); /* torn */
    assert_null(jx_loads_object("{\"round\":2,", 11));      /* garbled */
    assert_null(jx_loads_object("[1,2]", 5));
    assert_null(jx_loads_object("", 0));
}

static void test_typed_getters(void **state)
{
    (void)state;
    const char *t = "{\"u\":7,\"neg\":-1,\"big\":4294967296,\"real\":2.5,\"null\":null,\"s\":\"x\","
                    "\"yes\":true,\"no\":false,\"str7\":\"7\"}";
    json_t *o = jx_loads_object(t, strlen(t));
    double d;
    uint32_t u;
    assert_int_equal(jx_number(o, "u", &d), 0);
    assert_true(d == 7);
    assert_int_equal(jx_number(o, "real", &d), 0);
    assert_true(d == 2.5);
    assert_int_equal(jx_number(o, "null", &d), -1);
    assert_int_equal(jx_number(o, "absent", &d), -1);
    assert_int_equal(jx_number(o, "str7", &d), -1);
    assert_int_equal(jx_u32(o, "u", &u), 0);
    assert_int_equal(u, 7);
    assert_int_equal(jx_u32(o, "neg", &u), -1);
    assert_int_equal(jx_u32(o, "big", &u), -1);
    assert_int_equal(jx_u32(o, "real", &u), -1);
    assert_string_equal(jx_string(o, "s"), "x");
    assert_null(jx_string(o, "u"));
    assert_int_equal(jx_true(o, "yes"), 1);
    assert_int_equal(jx_true(o, "no"), 0);
    assert_int_equal(jx_true(o, "absent"), 0);
    assert_int_equal(jx_true(NULL, "yes"), 0); /* a reply that did not parse */
    json_decref(o);
}

static void test_file_round_trip_and_errors(void **state)
{
    (void)state;
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/x.json", dir);
    json_t *v = json_pack("{s:i,s:{s:s}}", "format", 1, "software", "version", "0.6.0");
    assert_int_equal(jx_write_atomic(path, v, JX_PRETTY, err, sizeof err), 0);
    json_t *back = jx_load_file(path, 4096, err, sizeof err);
    assert_non_null(back);
    assert_true(json_equal(v, back));
    json_decref(back);
    json_decref(v);
    FILE *f = fopen(path, "w");
    fputs("{\"a\":1,\n\"b\":", f);
    fclose(f);
    assert_null(jx_load_file(path, 4096, err, sizeof err));
    assert_non_null(strstr(err, "x.json:2:"));
    snprintf(path, sizeof path, "%s/absent.json", dir);
    assert_null(jx_load_file(path, 4096, err, sizeof err));
    assert_non_null(strstr(err, "absent.json"));
}

static void test_now_iso(void **state)
{
    (void)state;
    char t[32];
    jx_now_iso(t, sizeof t);
    assert_int_equal(strlen(t), 20);
    assert_true(t[4] == '-' && t[10] == 'T' && t[19] == 'Z');
}

static void write_metrics(const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static double num(const json_t *o, const char *key)
{
    double v = NAN;
    jx_number(o, key, &v);
    return v;
}

static void test_final_figures(void **state)
{
    (void)state;
    assert_null(runrec_final("/nonexistent-medfed-dir"));
    write_metrics("");
    assert_null(runrec_final(dir));
    write_metrics(
        "{\"round\":1,\"aborted\":false,\"val_accuracy\":0.8,\"val_loss\":0.5,\"val_auc\":0.9,"
        "\"train_loss\":0.6,\"seconds\":1.5,\"train_seconds\":1,\"bytes_up\":100,\"bytes_down\":200}\n"
        "{\"round\":2,\"aborted\":false,\"val_accuracy\":0.9,\"val_loss\":0.4,\"val_auc\":0.95,"
        "\"seconds\":2,\"train_seconds\":1.5,\"bytes_up\":100,\"bytes_down\":200}\n"
        "{\"round\":3,\"aborted\":true,\"val_accuracy\":null,\"seconds\":0.5,\"bytes_up\":7}\n"
        "{\"round\":4,\"aborted\":false,\"val_accuracy\":0.85,\"val_loss\":0.45,\"val_auc\":null,"
        "\"seconds\":1,\"bytes_up\":100,\"bytes_down\":200}\n"
        "{\"round\":5,\"abo");
    json_t *fin = runrec_final(dir);
    assert_non_null(fin);
    assert_true(num(fin, "rounds") == 4);
    assert_true(num(fin, "completed_rounds") == 3);
    assert_true(num(fin, "aborted_rounds") == 1);
    assert_true(num(fin, "round") == 4); /* the last evaluated round */
    assert_true(num(fin, "val_accuracy") == 0.85);
    assert_true(num(fin, "val_loss") == 0.45);
    assert_true(json_is_null(json_object_get(fin, "val_auc")));
    assert_true(json_is_null(json_object_get(fin, "train_loss")));
    json_t *best = json_object_get(fin, "best_val_accuracy");
    assert_true(num(best, "round") == 2 && num(best, "value") == 0.9);
    assert_true(num(fin, "seconds") == 5);
    assert_true(num(fin, "train_seconds") == 2.5);
    assert_true(num(fin, "bytes_up") == 307);
    assert_true(num(fin, "bytes_down") == 600);
    json_decref(fin);
}

static void test_record_round_trip(void **state)
{
    (void)state;
    char err[256];
    json_t *rec = json_object();
    runrec_stamp(rec);
    jx_set(rec, "simulation", json_pack("{s:i}", "clients", 3));
    assert_int_equal(runrec_save(dir, rec, err, sizeof err), 0);
    json_t *back = runrec_load(dir);
    assert_non_null(back);
    assert_true(json_equal(rec, back));
    assert_true(num(back, "format") == RUNREC_FORMAT);
    const json_t *sw = json_object_get(back, "software");
    assert_string_equal(jx_string(sw, "version"), medfed_version());
    assert_string_equal(jx_string(sw, "git_commit"), medfed_git_commit());
    json_decref(back);
    json_decref(rec);
    char hex[65], path[128];
    snprintf(path, sizeof path, "%s/abc", dir);
    FILE *f = fopen(path, "w");
    fputs("abc", f);
    fclose(f);
    assert_int_equal(runrec_file_sha256(path, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(runrec_file_sha256("/nonexistent-medfed-file", hex), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reals_print_as_the_old_writers),
        cmocka_unit_test(test_row_is_one_line),
        cmocka_unit_test(test_parse_objects_only),
        cmocka_unit_test(test_typed_getters),
        cmocka_unit_test(test_file_round_trip_and_errors),
        cmocka_unit_test(test_now_iso),
        cmocka_unit_test(test_final_figures),
        cmocka_unit_test(test_record_round_trip),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
