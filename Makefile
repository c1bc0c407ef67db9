# medfed - federated learning for public hospitals.
#
#   make deps        install the Debian packages the project needs (apt-get, idempotent)
#   make test-deps   also those of the tests and benchmarks (test, bench and fuzz use it)
#   make             build everything into bin/
#   make test        unit tests (cmocka) + integration tests (real processes), the short
#                    crash drills, then the same suite under AddressSanitizer +
#                    UndefinedBehaviorSanitizer, then each libFuzzer harness for
#                    TEST_FUZZ_SECONDS (10)
#   make sim         the main job: 10 simulated hospitals on PneumoniaMNIST
#   make bench       benchmarks, JSON into bench-results/ (bench-width: only the upload
#                    width table; bench-scale: round cost vs model size and sites, scale.json)
#   make test-malicious  secure aggregation against a malicious coordinator (tests/malicious/)
#   make test-wan    the federation over emulated WAN links (tests/wan/: network namespaces,
#                    htb, a delaying relay; as root, ~11 min): hospital VPN, slow site,
#                    flapping link, partition, thin uplink, thin downlink; round times
#                    into bench-results/wan.json
#   make asan-test   only the sanitizer run
#   make chaos       crash drills: 50 + 50 trials that SIGKILL the coordinator or a site at a
#                    drawn moment and check state, metrics and resume (chaos-short: 5 + 5,
#                    part of make test); TRIAL=coord:SEED replays one
#   make fuzz-long   each libFuzzer harness to FUZZ_RUNS (10M) executions on its corpus
#   make mutants     each critical check broken on purpose must fail its test (tests/mutants/);
#                    MUTANTS="NAME..." picks some, MUTANT_JOBS=2 runs two at once
#   make test-bin    the test build: the programs with their test hooks, in build/hooks/bin
#   make install     programs into $(PREFIX)/bin (/usr/local), configs into share/medfed
#   make deb         Debian packages (debhelper, debian/): medfed-client, medfed-coordinator,
#                    medfed-admin, medfed-tools into $(BUILD)/deb/, checked by lintian; reuses
#                    the objects of $(BUILD) (only the packaged programs are linked again)
#   make test-deb    make deb, then install the packages on this machine (root), run the
#                    installed programs, and purge them (tests/deb/run.sh)
#   make man         the manual pages (docs/man/*.scd, scdoc) into $(BUILD)/man
#   make clean
#
# V=1 shows the full commands. BUILD=dir picks the object directory.
#
# Test hooks (the client's --die-at fault injection, the MEDFED_TEST_DUMP_DIR and
# MEDFED_TEST_SEND_DUMP dumps) are compiled in only with TEST_HOOKS=1
# (-DMEDFED_TEST_HOOKS), never into bin/: `make test-bin` builds them into
# $(BUILD)/hooks, reusing the C++ objects (they do not change with the flag).

V ?= 0
ifeq ($(V),0)
Q := @
say = @printf '  %-6s %s\n' $(1) $(2);
else
Q :=
say =
endif

BUILD   ?= build
TEST_FUZZ_SECONDS ?= 10
TEST_MUTANTS ?= 4
BIN     ?= bin
SANITIZE ?=

CC      ?= cc
CXX     ?= g++
PKGS    := libzmq libsodium libssl libcrypto msgpack inih zlib libcurl libsystemd jansson
# Recursive (=) so pkg-config only runs once `make deps` has installed the .pc files.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)
TORCH_INC  := -I/usr/include/torch/csrc/api/include
TORCH_LIBS := -ltorch_cpu -lc10

WARN     := -Wall -Wextra -Werror
OPT      ?= -O2 -g
ASAN_FLAGS := -fsanitize=address -fsanitize=undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SANFLAGS := $(if $(SANITIZE),$(ASAN_FLAGS))
INC      := -I. 
TEST_HOOKS ?=
HOOKFLAGS := $(if $(TEST_HOOKS),-DMEDFED_TEST_HOOKS)
CFLAGS   += -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) $(SANFLAGS) $(HOOKFLAGS) $(INC) $(PKG_CFLAGS) -MMD -MP
CXXFLAGS += -std=c++17 $(WARN) -Wno-unused-parameter $(OPT) $(SANFLAGS) $(INC) $(TORCH_INC) -MMD -MP
LDFLAGS  += $(SANFLAGS)
LIBS      = $(PKG_LIBS) -lm -lpthread

# ---- sources ---------------------------------------------------------------
# The core library: plain C, no LibTorch. Everything but the daemons' mains.
# imaging/ (the data path: data sources, DICOM, DICOMweb, cache, preprocessing) is
# all in the core but the DICOM worker's own files; client/ holds the daemon.
# The daemon's policy.c is in the core too (tools/ checks a site's policy).
WORKER_SRC := imaging/dicom_worker_main.c imaging/dicom_png.c imaging/dicom_gdcm.cpp
IMAGING_SRC := $(filter-out $(WORKER_SRC),$(wildcard imaging/*.c))
CORE_SRC := $(wildcard common/*.c proto/*.c aggregation/*.c crypto/*.c) \
            model/safetensors.c $(IMAGING_SRC) client/policy.c sim/partition.c
MODEL_SRC := model/model.cpp model/checkpoint.c

COORD_SRC  := $(wildcard coordinator/*.c)
# The DICOM worker (WORKER_SRC): the only program that links GDCM (and libpng); never
# the daemon.
GDCM_INC   := -I/usr/include/gdcm-3.0
GDCM_LIBS  := -lgdcmMSFF -lgdcmDSED -lgdcmIOD -lgdcmDICT -lgdcmCommon
PNG_LIBS    = $(shell pkg-config --libs libpng 2>/dev/null)
CLIENT_SRC := $(filter-out client/policy.c,$(wildcard client/*.c))
SIM_SRC    := $(filter-out sim/partition.c sim/swarm_main.c,$(wildcard sim/*.c)) coordinator/config.c
# medfed-swarm: many protocol-only sites in one process (medfed-sim --swarm). The
# daemon's own client code over model_synthetic.c, the plain-C backend of model.h,
# instead of the LibTorch shim: linked with the C driver, no LibTorch.
SWARM_SRC  := sim/swarm_main.c client/client.c client/config.c client/secagg_client.c \
              model/model_synthetic.c model/checkpoint.c

# The version (VERSION file) and the git commit reach common/version.o alone; a
# stamp that changes only when either does rebuilds it (and relinks), nothing else.
VERSION    := $(shell cat VERSION 2>/dev/null || echo unknown)
GIT_COMMIT ?= $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { printf %s "$$c"; \
                git diff --quiet HEAD -- 2>/dev/null || printf -- -dirty; })
GIT_COMMIT := $(or $(GIT_COMMIT),unknown)
VERSION_STAMP := $(BUILD)/version.stamp
$(shell mkdir -p $(BUILD) && echo '$(VERSION) $(GIT_COMMIT)' | cmp -s - $(VERSION_STAMP) || \
        echo '$(VERSION) $(GIT_COMMIT)' > $(VERSION_STAMP))

obj = $(patsubst %.c,$(BUILD)/%.o,$(patsubst %.cpp,$(BUILD)/%.o,$(1)))

CORE_LIB  := $(BUILD)/libmedfed.a
MODEL_OBJ := $(call obj,$(MODEL_SRC))

PROGS := $(BIN)/medfed-coordinator $(BIN)/medfed-client $(BIN)/medfed-sim \
         $(BIN)/medfed-eval $(BIN)/medfed-init $(BIN)/medfed-dicom-worker \
         $(BIN)/medfed-dicom-fixture $(BIN)/medfed-swarm
# The operator's CLI: tools/medfed.c dispatches to one file per subcommand.
PROGS += $(BIN)/medfed
MEDFED_SRC := $(filter-out tools/init.c tools/eval.c,$(wildcard tools/*.c))

# The test build: the programs the integration tests run with hooks. With TEST_HOOKS
# set, this build is the test build itself (the sanitizer run); otherwise it goes to
# $(HOOKS_BUILD), never to bin/ or build/ (objects do not record the flag).
ifneq ($(TEST_HOOKS),)
ifneq ($(filter build bin,$(BUILD) $(BIN)),)
$(error TEST_HOOKS=1 builds test programs: give it its own BUILD and BIN (make test-bin does))
endif
HOOKS_BIN  := $(BIN)
else
HOOKS_BUILD ?= $(BUILD)/hooks
HOOKS_BIN  := $(HOOKS_BUILD)/bin
endif
HOOK_PROGS := $(patsubst %,$(HOOKS_BIN)/%,medfed-coordinator medfed-client medfed-sim \
                medfed-init medfed-dicom-worker medfed-swarm)
CXX_OBJ    := $(call obj,$(filter %.cpp,$(MODEL_SRC) $(WORKER_SRC)))

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TEST_TOOLS := $(BUILD)/tests/evil_client $(BUILD)/tests/data_dump

.PHONY: install all deps test-deps test unit-test deb test-deb deb-progs man integration-test asan-test sim bench fuzz clean data \
        test-bin test-malicious test-wan
all: $(PROGS)

deps:
	$(Q)sh tools/deps.sh

# What the tests, fuzzers and benchmarks add (cmocka, clang, pydicom, Orthanc, ...).
test-deps:
	$(Q)sh tools/deps.sh test

$(CORE_LIB): $(call obj,$(CORE_SRC))
	$(call say,AR,$@)$(AR) rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(call say,CXX,$<)$(CXX) $(CXXFLAGS) -c $< -o $@

# The test build links the C++ objects (LibTorch shim, GDCM decoder) of CXX_OBJ_FROM.
ifneq ($(CXX_OBJ_FROM),)
$(CXX_OBJ): $(BUILD)/%.o: $(CXX_OBJ_FROM)/%.o
	@mkdir -p $(dir $@)
	$(call say,LN,$@)ln -f $< $@ 2>/dev/null || cp $< $@
endif

ifneq ($(TEST_HOOKS),)
test-bin: $(HOOK_PROGS)
else
test-bin: $(CXX_OBJ)
	$(Q)$(MAKE) --no-print-directory BUILD=$(HOOKS_BUILD) BIN=$(HOOKS_BIN) TEST_HOOKS=1 \
		CXX_OBJ_FROM=$(BUILD) test-bin
endif

# Programs that train link LibTorch (and so link with the C++ driver).
$(BIN)/medfed-coordinator: $(call obj,$(COORD_SRC)) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BIN)/medfed-sim: $(call obj,$(SIM_SRC)) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BIN)/medfed-swarm: $(call obj,$(SWARM_SRC)) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BIN)/medfed-client: $(call obj,$(CLIENT_SRC)) $(MODEL_OBJ) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CXX) $(LDFLAGS) -o $@ $^ $(TORCH_LIBS) $(LIBS)

$(BIN)/medfed-eval: $(BUILD)/tools/eval.o $(MODEL_OBJ) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CXX) $(LDFLAGS) -o $@ $^ $(TORCH_LIBS) $(LIBS)

$(BIN)/medfed-init: $(BUILD)/tools/init.o $(MODEL_OBJ) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CXX) $(LDFLAGS) -o $@ $^ $(TORCH_LIBS) $(LIBS)

$(BIN)/medfed: $(call obj,$(MEDFED_SRC)) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/imaging/dicom_gdcm.o: CXXFLAGS += $(GDCM_INC)

$(BIN)/medfed-dicom-worker: $(call obj,$(WORKER_SRC)) $(CORE_LIB)
	@mkdir -p $(BIN)
	$(call say,LD,$@)$(CXX) $(LDFLAGS) -o $@ $^ $(GDCM_LIBS) $(PNG_LIBS) $(LIBS)

# IDX -> DICOM test fixtures (pydicom; gdcmconv for JPEG 2000).
$(BIN)/medfed-dicom-fixture: tests/fixtures/dicom_fixture.py $(VERSION_STAMP)
	@mkdir -p $(BIN)
	$(call say,CP,$@)sed 's/@VERSION@/$(VERSION) (commit $(GIT_COMMIT))/' $< > $@ && chmod +x $@

# ---- tests -----------------------------------------------------------------
# test_dicom runs the worker: it is told where by MEDFED_DICOM_WORKER.
$(BUILD)/tests/test_dicom: | $(BIN)/medfed-dicom-worker
$(BUILD)/tests/test_model: $(BUILD)/tests/unit/test_model.o $(MODEL_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CXX) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(TORCH_LIBS) $(LIBS)

# The synthetic backend of model.h (medfed-swarm's) instead of LibTorch.
$(BUILD)/tests/test_model_synthetic: $(BUILD)/tests/unit/test_model_synthetic.o \
		$(call obj,model/model_synthetic.c model/checkpoint.c) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LIBS)

$(BUILD)/tests/data_dump: $(BUILD)/tests/integration/data_dump.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/evil_client: $(BUILD)/tests/integration/evil_client.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/evil_coordinator: $(BUILD)/tests/malicious/evil_coordinator.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

test: test-deps
	$(Q)$(MAKE) --no-print-directory unit-test integration-test test-malicious
	$(Q)$(MAKE) --no-print-directory chaos-short
	$(Q)$(MAKE) --no-print-directory asan-test
	$(Q)$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)
	$(Q)$(MAKE) --no-print-directory mutants MUTANT_SAMPLE=$(TEST_MUTANTS)

unit-test: $(UNIT_TESTS)
	$(Q)MEDFED_DICOM_WORKER=$(abspath $(BIN))/medfed-dicom-worker \
		sh tests/run_unit.sh $(BUILD)/tests $(UNIT_TESTS)

# Tests that kill a client on cue or read a dump run the test build in $(HOOKS_BIN).
integration-test: $(PROGS) $(TEST_TOOLS) $(BUILD)/tests/wan_relay test-bin
	$(Q)sh tests/integration/run.sh $(BIN) $(BUILD) $(HOOKS_BIN)

# Secure aggregation against a malicious coordinator (tests/malicious/): evil_coordinator
# tries each attack on real client daemons, evil_client inflates its weight against the
# real coordinator. MALICIOUS_ONLY="NAME ..." runs only those tests.
MALICIOUS_ONLY ?=
test-malicious: $(PROGS) $(TEST_TOOLS) $(BUILD)/tests/evil_coordinator test-bin
	$(Q)MEDFED_MAL_ONLY="$(MALICIOUS_ONLY)" sh tests/malicious/run.sh $(BIN) $(BUILD) $(HOOKS_BIN)

# WAN conditions (tests/wan/run.py): the coordinator and six sites in their own network
# namespaces over veth pairs, bandwidth and loss in the kernel (htb, a cBPF drop filter),
# delay, jitter, stalls and resets in tests/wan/relay.c. Needs root; not part of `make
# test`. WAN_ONLY="hospital-vpn slow-site ..." runs some profiles.
WAN_OUT ?= bench-results/wan.json
test-wan: test-deps
	$(Q)$(MAKE) --no-print-directory all test-bin $(BUILD)/tests/wan_relay
	$(Q)/usr/bin/python3 tests/wan/run.py --bin $(BIN) --hooks-bin $(HOOKS_BIN) \
		--relay $(BUILD)/tests/wan_relay --out $(WAN_OUT)

$(BUILD)/tests/wan_relay: tests/wan/relay.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) $(SANFLAGS) -o $@ $< -lm

# The same suite, built with ASan + UBSan into its own directories, as a test build.
asan-test: test-deps
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/bin SANITIZE=1 OPT='-O1 -g' \
		TEST_HOOKS=1 unit-test integration-test

# Mutation tests: each tests/mutants/*.mut is applied to a scratch copy of the tree
# (with this build's objects, so only what it touches is rebuilt) and the test it
# names must fail. MUTANT_SAMPLE=K runs K unit-test mutants, a different K each day.
MUTANTS ?=
MUTANT_JOBS ?= 1
MUTANT_SAMPLE ?= 0
.PHONY: mutants
mutants: all $(UNIT_TESTS) $(TEST_TOOLS)
	$(Q)sh tests/mutants/run.sh $(BUILD) $(BIN) --jobs $(MUTANT_JOBS) --sample $(MUTANT_SAMPLE) $(MUTANTS)

# Crash drills (tests/chaos/run.sh): a four-site secure federation runs three rounds
# while the coordinator (CHAOS_COORD trials) or a site (CHAOS_SITE trials) is
# killed with SIGKILL at a drawn moment, checkpoint writes included, and started
# again; then the state directory, the metrics and the resume are checked.
# Each trial prints its seed: `make chaos TRIAL=coord:SEED` replays one,
# `make chaos SEED=S` draws the same trials again, CHAOS_ANCHORS=checkpoint,...
# keeps only those moments. chaos-short (5 + 5, and each check made to fail once
# on a broken state directory) is part of `make test`.
CHAOS_COORD  ?= 50
CHAOS_SITE   ?= 50
CHAOS_ANCHORS ?=
SEED  ?=
TRIAL ?=
CHAOS_FLAGS = $(if $(SEED),--seed $(SEED)) $(if $(TRIAL),--trial $(TRIAL)) \
              $(if $(CHAOS_ANCHORS),--anchors $(CHAOS_ANCHORS))
CHAOS_PROGS := $(addprefix $(BIN)/,medfed-coordinator medfed-client medfed-sim medfed-init)
.PHONY: chaos chaos-short
chaos: $(CHAOS_PROGS) $(BUILD)/tests/chaos_kill
	$(Q)sh tests/chaos/run.sh $(BIN) $(BUILD) --coord $(CHAOS_COORD) --site $(CHAOS_SITE) \
		--selftest $(CHAOS_FLAGS)

chaos-short: $(CHAOS_PROGS) $(BUILD)/tests/chaos_kill
	$(Q)sh tests/chaos/run.sh $(BIN) $(BUILD) --coord 5 --site 5 --selftest $(CHAOS_FLAGS)

$(BUILD)/tests/chaos_kill: $(BUILD)/tests/chaos/chaos_kill.o
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^

# ---- the main job and benchmarks --------------------------------------------
SIM_ARGS ?= --clients 10 --rounds 20 --dataset pneumoniamnist --partition dirichlet:0.5 --seed 1 --out runs/sim
sim: deps
	$(Q)$(MAKE) --no-print-directory all
	$(BIN)/medfed-sim $(SIM_ARGS)

bench: test-deps
	$(Q)$(MAKE) --no-print-directory all test-bin $(BUILD)/tests/bench_fedavg $(BUILD)/tests/bench_encoding
	$(Q)sh tests/bench/run.sh $(BIN) $(BUILD) bench-results $(HOOKS_BIN)

# The width table alone (issue 15; into bench-results/bench.json beside the rest).
.PHONY: bench-width bench-scale
bench-width: test-deps
	$(Q)$(MAKE) --no-print-directory all $(BUILD)/tests/bench_encoding
	$(Q)BENCH_PARTS=width sh tests/bench/run.sh $(BIN) $(BUILD) bench-results $(HOOKS_BIN)

# The accuracy table alone (issue 12: FedAvg, FedProx, FedAdam, FedYogi and the
# centralised reference on the default simulation; into bench-results/bench.json).
.PHONY: bench-accuracy
bench-accuracy: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BENCH_PARTS=accuracy sh tests/bench/run.sh $(BIN) $(BUILD) bench-results $(HOOKS_BIN)

# Round cost as the model and the federation grow: 10 real clients at two model
# sizes (plaintext / secure, CURVE on / off) and the swarm at 100-1,000 sites
# (issue 11), into bench-results/scale.json.
bench-scale: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh tests/bench/scale.sh $(BIN) bench-results

$(BUILD)/tests/bench_fedavg: $(BUILD)/tests/bench/bench_fedavg.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/bench_encoding: $(BUILD)/tests/bench/bench_encoding.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# ---- fuzzing -------------------------------------------------------------------
# libFuzzer harnesses (tests/fuzz/) over the wire decoder, the phase handlers of
# both daemons, the DICOMweb parsers and the DICOM worker's pipe, built with
# clang (libFuzzer comes with libclang-rt) into fuzz-build/.
# Each runs FUZZ_SECONDS on a temp copy of its corpus: tests/fuzz/corpus/NAME plus the
# seeds the harness writes itself. A crash, leak, sanitizer report or hang fails the
# target; the input that did it is kept in fuzz-build/artifacts/ (reproduce with
# fuzz-build/fuzz_NAME fuzz-build/artifacts/NAME-crash-...).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 20
FUZZ_BUILD   := fuzz-build
FUZZ_NAMES   := wire coordinator client dicomweb dicom_proto
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g $(FUZZ_SAN) $(INC) $(PKG_CFLAGS) -MMD -MP
# What the harnesses link: the core minus the files they #include themselves
# (coordinator/*.c, client/secagg_client.c) and minus common/log.c (they log to
# nowhere, see tests/fuzz/fuzz_common.h). No LibTorch.
FUZZ_LIB_SRC := $(filter-out common/log.c,$(wildcard common/*.c proto/*.c aggregation/*.c crypto/*.c)) \
                model/safetensors.c coordinator/zap.c coordinator/state.c coordinator/admin.c \
                coordinator/config.c coordinator/record.c
FUZZ_LIB     := $(FUZZ_BUILD)/libmedfed-fuzz.a
# Signatures memoised and secret memory from malloc in the harnesses (same
# results, a fraction of the time: see "crypto at fuzzing speed" in
# tests/fuzz/fuzz_common.h).
comma        := ,
FUZZ_WRAP    := $(addprefix -Wl$(comma)--wrap=,identity_verify identity_sign crypto_scalarmult \
                crypto_scalarmult_base crypto_secure_alloc crypto_secure_free)
FUZZ_BINS    := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_NAMES))

fuzz: test-deps
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BINS)
	$(Q)sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

# At depth: each harness to FUZZ_RUNS executions (libFuzzer -runs, one job: two
# shared cores), on its corpus in tests/fuzz/corpus/NAME, into which what adds
# coverage is merged at the end (-merge=1). Prints executions, exec/s and the
# wall time per harness; fails on a crash. FUZZ_NAMES="wire ..." picks harnesses,
# FUZZ_LONG_MAX_SECONDS caps each one's time, FUZZ_JOBS=J runs J jobs at once.
FUZZ_RUNS ?= 10000000
FUZZ_LONG_MAX_SECONDS ?=
FUZZ_JOBS ?= 1
.PHONY: fuzz-long
fuzz-long: test-deps
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BINS)
	$(Q)MEDFED_FUZZ_MAX_SECONDS=$(FUZZ_LONG_MAX_SECONDS) MEDFED_FUZZ_JOBS=$(FUZZ_JOBS) \
		sh tests/fuzz/run.sh $(FUZZ_BUILD) runs:$(FUZZ_RUNS) $(FUZZ_NAMES)

$(FUZZ_LIB): $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_LIB_SRC))
	$(call say,AR,$@)$(AR) rcs $@ $^

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_WRAP) -o $@ $< $(FUZZ_LIB) $(PKG_LIBS) -lm -lpthread

-include $(wildcard $(FUZZ_BUILD)/*.d $(FUZZ_BUILD)/obj/*/*.d)

# Keep objects between runs (without .SECONDARY, whose missing-file rule can
# leave an archive stale when a source file is added).
.PRECIOUS: $(BUILD)/%.o $(FUZZ_BUILD)/obj/%.o

# Installs the programs (the daemon finds medfed-dicom-worker beside itself)
# and the example configs and systemd units.
PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/medfed/configs
	install -m 0755 $(BIN)/medfed $(BIN)/medfed-coordinator $(BIN)/medfed-client \
		$(BIN)/medfed-dicom-worker $(BIN)/medfed-init $(BIN)/medfed-eval $(DESTDIR)$(PREFIX)/bin
	install -m 0644 configs/* $(DESTDIR)$(PREFIX)/share/medfed/configs

# ---- Debian packages ---------------------------------------------------------
# debian/rules (debhelper, compat 13) calls `make deb-progs man` with
# BIN=$(BUILD)/deb/bin and Debian's hardening flags: the objects are this
# build's, the programs are linked again. The version is the VERSION file's:
# debian/changelog is written from it (and the commit) each time.
DEB_OUT  ?= $(BUILD)/deb
MAN_DIR  ?= $(BUILD)/man
MAN_PAGES := $(patsubst docs/man/%.scd,$(MAN_DIR)/%,$(wildcard docs/man/*.scd))
deb-progs: $(addprefix $(BIN)/,medfed-client medfed-dicom-worker medfed-coordinator medfed \
                                medfed-init medfed-eval)

man: $(MAN_PAGES)

$(MAN_DIR)/%: docs/man/%.scd
	@mkdir -p $(dir $@)
	$(call say,SCDOC,$@)scdoc < $< > $@

debian/changelog: VERSION $(VERSION_STAMP) debian/control
	$(call say,GEN,$@)printf 'medfed (%s) unstable; urgency=medium\n\n  * medfed %s, commit %s.\n\n -- %s  %s\n' \
		'$(VERSION)' '$(VERSION)' '$(GIT_COMMIT)' \
		"$$(sed -n 's/^Maintainer: //p' debian/control)" \
		"$$(git log -1 --format=%cD 2>/dev/null || date -R)" > $@

deb: deps
	$(Q)$(MAKE) --no-print-directory debian/changelog
	$(Q)dpkg-checkbuilddeps
	$(Q)mkdir -p $(DEB_OUT) && rm -f $(DEB_OUT)/*.deb
	$(Q)debian/rules MEDFED_BUILD=$(BUILD) clean
	$(Q)debian/rules MEDFED_BUILD=$(BUILD) build
	$(Q)debian/rules MEDFED_BUILD=$(BUILD) MEDFED_DEB_OUT=$(DEB_OUT) binary
	$(Q)lintian --fail-on error --tag-display-limit 0 $(DEB_OUT)/*.deb > $(DEB_OUT)/lintian.txt 2>&1; \
		rc=$$?; sed 's/^/  lintian: /' $(DEB_OUT)/lintian.txt; exit $$rc
	$(Q)ls -l $(DEB_OUT)/*.deb | awk '{print "  deb:", $$5, $$NF}'

test-deb: test-deps
	$(Q)$(MAKE) --no-print-directory deb
	$(Q)sh tests/deb/run.sh $(DEB_OUT) $(BUILD)

clean:
	rm -rf build build-asan bin fuzz-build
	rm -rf debian/medfed-*/ debian/.debhelper debian/files debian/*.substvars \
		debian/debhelper-build-stamp debian/changelog debian/medfed-client.service \
		debian/medfed-coordinator.service

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

$(BUILD)/common/version.o: $(VERSION_STAMP)
$(BUILD)/common/version.o: CFLAGS += -DMEDFED_VERSION='"$(VERSION)"' -DMEDFED_GIT_COMMIT='"$(GIT_COMMIT)"'
