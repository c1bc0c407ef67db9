/* common/options.c: one settings table for INI files and flags. */
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
#include "common/log.h"
#include "common/options.h"

typedef struct {
    char name[16];
    int count;
    double rate;
    uint64_t seed;
    log_level_t level;
    int flag;
} settings_t;

static int parse_even(const char *v, void *field, char *err, size_t errlen)
{
    int x = atoi(v);
    if (x % 2) {
        snprintf(err, errlen, "'even' must be even, got '%s'", v);
        return -1;
    }
    *(int *)field = x;
    return 0;
}

#define S(f) offsetof(settings_t, f)
static const conf_opt_t table[] = {
    {"name", CONF_STR, S(name), 16, 0, 0, NULL},
    {"count_max", CONF_INT, S(count), 0, 1, 10, NULL},
    {"rate", CONF_DOUBLE, S(rate), 0, 0, 1, NULL},
    {"seed", CONF_U64, S(seed), 0, 0, 1e15, NULL},
    {"log_level", CONF_LEVEL, S(level), 0, 0, 0, NULL},
    {"flag", CONF_ONOFF, S(flag), 0, 0, 1, NULL},
    {"even", CONF_CUSTOM, S(count), 0, 0, 0, parse_even},
};
#define N (sizeof table / sizeof table[0])

static char path[64];

static void write_ini(const char *text)
{
    snprintf(path, sizeof path, "/tmp/medfed-opt-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int load(const char *text, settings_t *s, char *err, size_t errlen)
{
    write_ini(text);
    memset(s, 0, sizeof *s);
    int rc = conf_load_ini(path, "main", table, N, s, NULL, NULL, err, errlen);
    unlink(path);
    return rc;
}

static void test_good_file(void **state)
{
    (void)state;
    settings_t s;
    char err[512];
    assert_int_equal(load("; comment\n[main]\nname = north\ncount_max = 7\nrate = 0.25\n"
                          "seed = 123456789\nlog_level = debug\nflag = yes\n",
                          &s, err, sizeof err), 0);
    assert_string_equal(s.name, "north");
    assert_int_equal(s.count, 7);
    assert_true(s.rate == 0.25);
    assert_true(s.seed == 123456789u);
    assert_int_equal(s.level, LOG_DEBUG);
    assert_int_equal(s.flag, 1);
}

/* Every mistake names the file, the line and the key. */
static void test_errors_name_file_and_line(void **state)
{
    (void)state;
    settings_t s;
    char err[512], want[128];
    static const struct { const char *text; int line; const char *why; } bad[] = {
        {"[main]\nname = a\ncount = 3\n", 3, "unknown key 'count' in [main]"},
        {"[main]\ncount-max = 3\n", 2, "unknown key 'count-max'"},
        {"[main]\nrate = 0.5\nrate = 0.6\n", 3, "'rate' given twice"},
        {"[main]\n\ncount_max = 11\n", 3, "'count_max' must be an integer in [1, 10], got '11'"},
        {"[main]\nrate = fast\n", 2, "'rate' must be a number"},
        {"[main]\nseed = 1.5\n", 2, "'seed' must be a whole number"},
        {"[main]\nlog_level = loud\n", 2, "'log_level' must be error, warn, info or debug"},
        {"[main]\nflag = maybe\n", 2, "'flag' must be on or off, got 'maybe'"},
        {"[main]\neven = 3\n", 2, "'even' must be even, got '3'"},
        {"[main]\nname = much-too-long-a-name\n", 2, "'name' is longer than 15 characters"},
        {"[other]\nname = x\n", 2, "unknown section [other]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(load(bad[i].text, &s, err, sizeof err), -1);
        snprintf(want, sizeof want, "%s:%d: ", path, bad[i].line);
        if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, bad[i].why)) {
            print_error("case %zu: got \"%s\", want \"%s%s\"\n", i, err, want, bad[i].why);
            fail();
        }
    }
    assert_int_equal(conf_load_ini("/nonexistent/x.ini", "main", table, N, &s, NULL, NULL, err,
                                   sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.ini: cannot open config"));
}

/* Flags are the keys with '-' for '_'. */
static void test_flags_share_the_table(void **state)
{
    (void)state;
    settings_t s = {0};
    char err[256];
    int i = conf_find(table, N, "count-max");
    assert_int_equal(i, 1);
    assert_int_equal(conf_find(table, N, "count_max"), 1);
    assert_int_equal(conf_find(table, N, "count"), -1);
    assert_int_equal(conf_set(&table[i], &s, "4", err, sizeof err), 0);
    assert_int_equal(s.count, 4);
    assert_int_equal(conf_set(&table[i], &s, "0", err, sizeof err), -1);
    assert_non_null(strstr(err, "'count_max' must be an integer in [1, 10], got '0'"));
    assert_int_equal(s.count, 4); /* unchanged on error */
}

static struct json_t *even_json(const conf_opt_t *o, const void *field)
{
    assert_string_equal(o->name, "even");
    return json_sprintf("even:%d", *(const int *)field);
}

/* run.json's "config": every setting by name, in table order, an alias once. */
static void test_every_setting_as_json(void **state)
{
    (void)state;
    settings_t s = {.count = 4, .rate = 0.25, .seed = 9007199254740992ull, .level = LOG_WARN, .flag = 1};
    strcpy(s.name, "north \"x\"");
    const conf_opt_t with_alias[] = {table[0], table[1], {"name_alias", CONF_STR, S(name), 16, 0, 0, NULL},
                                     table[2], table[3], table[4], table[5], table[6]};
    json_t *j = conf_to_json(with_alias, sizeof with_alias / sizeof with_alias[0], &s, even_json);
    char *text = json_dumps(j, JX_COMPACT);
    assert_string_equal(text, "{\"name\":\"north \\\"x\\\"\",\"count_max\":4,\"rate\":0.25,"
                              "\"seed\":9007199254740992,\"log_level\":\"warn\",\"flag\":true,"
                              "\"even\":\"even:4\"}");
    free(text);
    json_decref(j);
    j = conf_to_json(table, N, &s, NULL); /* no formatter: null */
    assert_true(json_is_null(json_object_get(j, "even")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_flags_share_the_table),
        cmocka_unit_test(test_every_setting_as_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
