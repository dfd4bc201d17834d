# mk/hardening.mk - sanitizers, valgrind, fuzzers and coverage (included from the Makefile).
#
#   make test-asan       ASan + UBSan (-fno-sanitize-recover=all): library and tests built in
#                        build-asan/ with g++/gcc, then every C/C++ test run
#   make test-tsan       the same with ThreadSanitizer in build-tsan/
#   make test-valgrind   memcheck over VALGRIND_TESTS of the plain build ($(BUILD)/tests/)
#   make fuzz            libFuzzer targets tests/fuzz/fuzz_*.cc, built with clang++ in build-fuzz/
#   make fuzz-smoke      each fuzz target for FUZZ_SECONDS on a temporary copy of its seeds
#   make coverage        gcov build in build-cov/, runs the tests, prints gcovr line coverage of src/
#   make test-hardening  all of the above except coverage, one after the other, fuzz-smoke for
#                        HARDEN_FUZZ_SECONDS (20) per target (`make test` runs it)
#
# Sanitizer and valgrind runs use the small test scale, HARDEN_SCALE; soaks stay in test-long.
# They also multiply every time limit in the tests by MC_TEST_SLACK (tests/testutil.h tu_slack(),
# and the binding tests read it too): HARDEN_SLACK under the sanitizers, VALGRIND_SLACK under
# valgrind, which runs a program 20 to 50 times slower.

HARDEN_SCALE   ?= 1
HARDEN_SLACK   ?= 4
VALGRIND_SLACK ?= 10
FUZZ_SECONDS   ?= 30
HARDEN_FUZZ_SECONDS ?= 5
FUZZ_BUILD     := build-fuzz
FUZZ_CXX       ?= clang++
VALGRIND_TESTS ?= test_api test_tcp test_process

# -fno-sanitize=vptr: UBSan's vptr check, on a cache miss, probes the vtable's memory through
# pipe2(); in a process with no descriptor left the probe fails and UBSan reports a false
# "invalid vptr" (strace shows pipe2 -> EMFILE just before the report). test_fault_api's
# descriptor-exhaustion case runs the library with no descriptor left on purpose, so with the
# check on it fails whenever a polymorphic call is first checked in that window (always when the
# case runs alone, by chance in the full run). The fuzz build (FUZZ_SAN) keeps the vptr check.
ASAN_SAN := -fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=all -fno-omit-frame-pointer
TSAN_SAN := -fsanitize=thread
# detect_leaks: LeakSanitizer runs at exit of every test program.
HARDEN_ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# intercept_send=0: TSan records the read of a send()/sendmsg() buffer *after* its release on
# the fd, and it cannot see the happens-before that a TCP round trip between two engines of one
# process gives (WRITE -> ACK -> completion -> the caller reuses the buffer). With it on, every
# test that reuses a buffer after a completed TCP transfer reports a race on the sender's
# sendmsg. Only send* buffer checks are off; loads, stores, memcpy, recv and locks are checked.
# Suppressions (tests/tsan.supp) are for third-party false positives only; see that file.
HARDEN_TSAN_ENV := TSAN_OPTIONS="intercept_send=0 second_deadlock_stack=1 history_size=4 suppressions=$(CURDIR)/tests/tsan.supp"

.PHONY: test-asan test-tsan test-valgrind fuzz fuzz-smoke coverage test-hardening

test-asan:
	MC_TEST_SLACK=$(HARDEN_SLACK) $(HARDEN_ASAN_ENV) $(MAKE) --no-print-directory BUILD=build-asan \
	  OPT=-O1 SAN="$(ASAN_SAN)" MC_TEST_SCALE=$(HARDEN_SCALE) test-c

# The TSan run leaves out the process-fault and network-namespace programs (they mostly wait on
# other processes and timers, and take minutes under TSan), the 100,000-request batches, the
# hostile-wire program (a codec's bytes, one thread: ASan and the fuzzers are its checks; 35 s
# under TSan) and the metadata-server program (it waits on etcd and redis starting; 26 s), to
# keep `make test` within the CI budget; ASan runs everything.
TSAN_SKIP ?= test_fault_proc test_fault_net test_descriptors test_fault_wire test_metadata
test-tsan:
	MC_TEST_SLACK=$(HARDEN_SLACK) $(HARDEN_TSAN_ENV) $(MAKE) --no-print-directory BUILD=build-tsan \
	  OPT=-O1 SAN="$(TSAN_SAN)" MC_TEST_SCALE=$(HARDEN_SCALE) TEST_SKIP="$(TSAN_SKIP)" test-c

test-valgrind: all $(TEST_HELPERS) $(addprefix $(BUILD)/tests/,$(VALGRIND_TESTS))
	MC_TEST_SCALE=$(HARDEN_SCALE) MC_TEST_SLACK=$(VALGRIND_SLACK) ./scripts/valgrind-tests.sh $(addprefix $(BUILD)/tests/,$(VALGRIND_TESTS))

# ---- fuzzing: the library's sources compiled again with clang++ and coverage instrumentation
# (fuzzer-no-link), archived, and linked into each target with libFuzzer's main. No -Werror:
# g++ keeps the sources warning-free; a clang-only warning must not stop `make test`.
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CXXFLAGS := -std=c++20 -O1 -g -fno-omit-frame-pointer -Wall -Wextra -pthread -Iinclude -Isrc \
  -MMD -MP $(FUZZ_SAN)
FUZZ_OBJS     := $(SRCS:%.cpp=$(FUZZ_BUILD)/obj/%.o)
FUZZ_LIB      := $(FUZZ_BUILD)/lib/libmc_fuzz.a
FUZZ_TARGETS  := $(patsubst tests/fuzz/%.cc,$(FUZZ_BUILD)/%,$(sort $(wildcard tests/fuzz/fuzz_*.cc)))

$(FUZZ_BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.cc
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_LIB): $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $(FUZZ_OBJS)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(FUZZ_CXX) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(LIBS_PRIVATE)

fuzz: $(FUZZ_TARGETS)

fuzz-smoke: fuzz
	./scripts/fuzz-smoke.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)

# ---- coverage: gcov counters from the C/C++ tests at the default scale, lines of src/ only.
coverage:
	find build-cov -name '*.gcda' -delete 2>/dev/null || true
	rm -rf build-cov/cov
	$(MAKE) --no-print-directory BUILD=build-cov OPT=-O0 SAN=--coverage test-c || \
	  echo "coverage: some tests failed; the figures below are still printed"
	@mkdir -p build-cov/cov
	gcovr -r . --filter 'src/' --object-directory build-cov/obj build-cov/obj | tee build-cov/cov/summary.txt
	gcovr -r . --filter 'src/' --object-directory build-cov/obj --html-details build-cov/cov/index.html \
	  --print-summary build-cov/obj

# ---- all of it but coverage, one at a time: two of them at once would time each other out on 2 cores.
test-hardening:
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-tsan
	$(MAKE) --no-print-directory test-valgrind
	$(MAKE) --no-print-directory fuzz-smoke FUZZ_SECONDS=$(HARDEN_FUZZ_SECONDS)

# For scripts/check-abi.sh: prints a make variable (e.g. make -s harden-print-LIB_LDFLAGS).
harden-print-%:
	@echo '$($*)'
