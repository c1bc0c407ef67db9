/*
 * medfed-init - writes a freshly initialised model as safetensors, the
 * starting point the coordinator loads (the coordinator itself never links
 * LibTorch).
 *
 *   medfed-init --arch cnn|resnet18 --in-channels C --size HxW --classes K --seed S --out FILE
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/util.h"
#include "common/version.h"
#include "model/checkpoint.h"

int main(int argc, char **argv)
{
    if (medfed_version_flag(argc, argv, "medfed-init")) return 0;
    static const struct option longopts[] = {
        {"arch", 1, 0, 'a'}, {"in-channels", 1, 0, 'c'}, {"size", 1, 0, 's'},
        {"classes", 1, 0, 'k'}, {"seed", 1, 0, 'r'}, {"out", 1, 0, 'o'}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    model_spec_t spec = {.arch = "cnn", .in_channels = 1, .height = 28, .width = 28, .classes = 2};
    long long seed = 1, v;
    const char *out = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            if (util_strlcpy(spec.arch, optarg, sizeof spec.arch) < 0) goto bad;
            break;
        case 'c':
            if (util_parse_int(optarg, 1, 16, &v) < 0) goto bad;
            spec.in_channels = (int)v;
            break;
        case 's':
            if (sscanf(optarg, "%dx%d", &spec.height, &spec.width) != 2) goto bad;
            break;
        case 'k':
            if (util_parse_int(optarg, 2, 100000, &v) < 0) goto bad;
            spec.classes = (int)v;
            break;
        case 'r':
            if (util_parse_int(optarg, 0, (1LL << 53), &seed) < 0) goto bad;
            break;
        case 'o': out = optarg; break;
        case 'h':
            printf("usage: medfed-init --arch cnn|resnet18 --in-channels C --size HxW "
                   "--classes K --seed S --out FILE\n");
            return 0;
        default: goto bad;
        }
    }
    if (!out || optind != argc) goto bad;
    char err[512];
    size_t numel;
    if (checkpoint_init(&spec, (uint64_t)seed, out, &numel, err, sizeof err) < 0) {
        fprintf(stderr, "medfed-init: %s\n", err);
        return 1;
    }
    json_t *r = json_pack("{s:s,s:s,s:I}", "out", out, "arch", spec.arch, "params", (json_int_t)numel);
    jx_write_line(stdout, r);
    json_decref(r);
    return 0;
bad:
    fprintf(stderr, "medfed-init: bad arguments (try --help)\n");
    return 2;
}
