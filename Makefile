# mc - plain GNU make. `make` builds the libraries and mc_bench; `make test`, `make demo`,
# `make bench`, `make install PREFIX=DIR`, `make clean`. See README.md.

PREFIX      ?= /usr/local
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
BINDIR      ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR     ?=

# Builds use every core unless -j was given (CI runs a plain `make test` on 2 cores, and the
# sanitizer, fuzz and binding builds compile the library again). Tests still run one at a time.
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc)
endif

# The version lives once, in the header.
VERSION_MAJOR := $(shell sed -n 's/^\#define MC_VERSION_MAJOR \([0-9]*\)/\1/p' include/mc.h)
VERSION_MINOR := $(shell sed -n 's/^\#define MC_VERSION_MINOR \([0-9]*\)/\1/p' include/mc.h)
VERSION_PATCH := $(shell sed -n 's/^\#define MC_VERSION_PATCH \([0-9]*\)/\1/p' include/mc.h)
VERSION     := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

BUILD       ?= build
CXX         ?= g++
CC          ?= gcc
OPT         ?= -O2
SAN         ?=
CXXFLAGS    ?=
CFLAGS      ?=
LDFLAGS     ?=
# -Werror is for developers (DEVELOPER=1, which `make test` and the sanitizer runs set): a newer
# compiler's new warning must not stop someone building a release.
ifneq ($(filter test test-c test-long test-hardening test-asan test-tsan test-valgrind,$(MAKECMDGOALS)),)
DEVELOPER ?= 1
endif
export DEVELOPER
WERROR      := $(if $(filter 1,$(DEVELOPER)),-Werror)
override CXXFLAGS += -std=c++20 $(OPT) -g -Wall -Wextra $(WERROR) -fPIC -pthread \
  -fvisibility=hidden -fvisibility-inlines-hidden -Iinclude -Isrc -MMD -MP $(SAN)
override CFLAGS += -std=c11 $(OPT) -g -Wall -Wextra $(WERROR) -pthread -Iinclude -MMD -MP $(SAN)
# Libraries libmc itself needs (also Libs.private in mc.pc for static linking).
# libmicrohttpd serves metrics_listen; a machine without it (`make deps` installs it) builds a
# library whose metrics_listen fails MC_ERR_UNSUPPORTED (src/metrics/http_server.cpp). Linked
# when the compiler finds its header, the test the source makes (__has_include), so compile and
# link agree whatever pkg-config's environment (the vendored Rust build empties it).
MHD_LIBS := $(shell echo '\#include <microhttpd.h>' | $(CXX) -E -x c++ - >/dev/null 2>&1 && echo -lmicrohttpd)
LIBS_PRIVATE := -lpthread -ldl -lstdc++ -lm -lcurl -lhiredis -lcrypto -luring $(MHD_LIBS)
LIB_LDFLAGS := -shared -Wl,-soname,libmc.so.$(VERSION_MAJOR) -Wl,--version-script=src/libmc.map \
  -Wl,-z,defs $(SAN)

SRCS   := $(sort $(shell find src -name '*.cpp'))
OBJS   := $(SRCS:%.cpp=$(BUILD)/obj/%.o)
SOLIB  := $(BUILD)/lib/libmc.so.$(VERSION)
SONAME := $(BUILD)/lib/libmc.so.$(VERSION_MAJOR)
SOLINK := $(BUILD)/lib/libmc.so
ALIB   := $(BUILD)/lib/libmc.a
BENCH  := $(BUILD)/bin/mc_bench
# One engine of the cluster demo (examples/cluster): public API only, like any consumer.
CLUSTER_NODE := $(BUILD)/bin/mc_cluster_node
# The transport conformance suite for any transport by name (a plugin's too): built by `install`
# (and `make conformance`), not by `all`, so the sanitizer builds do not compile it again.
CONFORMANCE := $(BUILD)/bin/mc_conformance

# Tests: tests/test_*.c use the public API and link the shared library; tests/wb_*.cpp are
# white-box tests of internals and link the static one.
API_TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(sort $(wildcard tests/test_*.c)))
WB_TESTS  := $(patsubst tests/%.cpp,$(BUILD)/tests/%,$(sort $(wildcard tests/wb_*.cpp)))
TEST_BINS := $(API_TESTS) $(WB_TESTS)
TEST_HELPERS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(sort $(wildcard tests/helper_*.c)))

.PHONY: all lib deps test test-c test-long demo demo-cluster bench install uninstall clean conformance
all: lib $(BENCH) $(CLUSTER_NODE)
lib: $(SOLINK) $(ALIB)

deps:
	@./scripts/install-deps.sh

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(SOLIB): $(OBJS) src/libmc.map
	@mkdir -p $(dir $@)
	$(CXX) $(LIB_LDFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LIBS_PRIVATE)

$(SONAME): $(SOLIB)
	ln -sf $(notdir $(SOLIB)) $@
$(SOLINK): $(SONAME)
	ln -sf $(notdir $(SONAME)) $@

$(ALIB): $(OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $(OBJS)

$(BUILD)/obj/bench/%.o: bench/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(filter-out -fvisibility=hidden -fvisibility-inlines-hidden,$(CXXFLAGS)) -c $< -o $@

$(BENCH): $(BUILD)/obj/bench/mc_bench.o $(SOLINK)
	@mkdir -p $(dir $@)
	$(CXX) $(SAN) $(LDFLAGS) -o $@ $< -L$(BUILD)/lib -lmc -Wl,-rpath,'$$ORIGIN/../lib' -lpthread

$(BUILD)/obj/examples/cluster/%.o: examples/cluster/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
# Kept (not an intermediate make deletes), so `make all` does not relink it every time.
.SECONDARY: $(BUILD)/obj/examples/cluster/node.o
$(CLUSTER_NODE): $(BUILD)/obj/examples/cluster/node.o $(SOLINK)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $< -L$(BUILD)/lib -lmc -Wl,-rpath,'$$ORIGIN/../lib' -lpthread

$(BUILD)/obj/tools/%.o: tools/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(filter-out -fvisibility=hidden -fvisibility-inlines-hidden,$(CXXFLAGS)) -c $< -o $@
conformance: $(CONFORMANCE)
$(CONFORMANCE): $(BUILD)/obj/tools/mc_conformance.o $(ALIB)
	@mkdir -p $(dir $@)
	$(CXX) $(SAN) $(LDFLAGS) -o $@ $< $(ALIB) -lcmocka $(LIBS_PRIVATE)

$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/obj/tests/%.o: tests/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(filter-out -fvisibility=hidden -fvisibility-inlines-hidden,$(CXXFLAGS)) -c $< -o $@

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/test_%.o $(BUILD)/obj/tests/testutil.o $(SOLINK)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $< $(BUILD)/obj/tests/testutil.o -L$(BUILD)/lib -lmc \
	  -Wl,-rpath,'$$ORIGIN/../lib' -lcmocka -lpthread
$(BUILD)/tests/helper_%: $(BUILD)/obj/tests/helper_%.o $(BUILD)/obj/tests/testutil.o $(SOLINK)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $< $(BUILD)/obj/tests/testutil.o -L$(BUILD)/lib -lmc \
	  -Wl,-rpath,'$$ORIGIN/../lib' -lcmocka -lpthread
# testutil too, for its time-limit slack (tu_slack) and helpers.
$(BUILD)/tests/wb_%: $(BUILD)/obj/tests/wb_%.o $(BUILD)/obj/tests/testutil.o $(ALIB)
	@mkdir -p $(dir $@)
	$(CXX) $(SAN) $(LDFLAGS) -o $@ $< $(BUILD)/obj/tests/testutil.o $(ALIB) -lcmocka $(LIBS_PRIVATE)
# wb_stream_fake runs wb_gpu's stream cases against a fake CUDA driver (tests/fake_cuda), loaded
# by dlopen into wb_gpu: built with the same sanitizers, so that ThreadSanitizer sees the
# ordering its streams give (a wait on the engine's flag, an event the engine polls).
$(BUILD)/tests/wb_stream_fake: $(BUILD)/tests/wb_gpu $(BUILD)/tests/fake_cuda/libcuda.so.1
$(BUILD)/tests/fake_cuda/libcuda.so.1: tests/fake_cuda/fake_cuda.cpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -O1 -g -shared -fPIC -pthread -Wall -Wextra -Wno-unused-parameter $(SAN) -o $@ $<
# wb_cuda_late loads the fake CUDA driver after its engine started (location detection).
$(BUILD)/tests/wb_cuda_late: $(BUILD)/tests/fake_cuda/libcuda.so.1
# wb_file_gds_fake runs wb_gpu's file cases against the fake CUDA driver (device mode) and a
# fake libcufile (tests/fake_cufile), so that the file transport's cuFile path runs without a GPU.
$(BUILD)/tests/wb_file_gds_fake: $(BUILD)/tests/wb_gpu $(BUILD)/tests/fake_cuda/libcuda.so.1 \
  $(BUILD)/tests/fake_cufile/libcufile.so.0
$(BUILD)/tests/fake_cufile/libcufile.so.0: tests/fake_cufile/fake_cufile.cpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -O1 -g -shared -fPIC -pthread -Wall -Wextra -Wno-unused-parameter $(SAN) -o $@ $<

# Scale of soak-size cases: 1 in `make test`, larger in `make test-long`.
MC_TEST_SCALE ?= 1
# TEST_SKIP: test programs (names, % patterns allowed) a run leaves out, e.g. the TSan run.
TEST_SKIP ?=
test-c: all $(TEST_BINS) $(TEST_HELPERS)
	MC_TEST_SCALE=$(MC_TEST_SCALE) ./scripts/run-tests.sh $(BUILD) \
	  $(filter-out $(addprefix $(BUILD)/tests/,$(TEST_SKIP)),$(TEST_BINS))

test: deps
	$(MAKE) test-c
	./scripts/check-abi.sh $(BUILD)
	./scripts/check-layers.sh
	./scripts/check-format.sh
	./scripts/test-bindings.sh $(BUILD)
	./scripts/test-python-wheel.sh
	./scripts/check-bindings-coverage.sh $(BUILD)
	./scripts/test-consumers.sh $(BUILD)
	./examples/kv_handoff/run.sh $(BUILD) --requests 16 --blocks 4
	./examples/cluster/demo.py $(BUILD) --scale small
	./scripts/test-plugin.sh $(BUILD)
	$(MAKE) test-hardening

test-long: deps
	$(MAKE) test-c MC_TEST_SCALE=16

demo: deps
	$(MAKE) all
	./scripts/demo.sh $(BUILD)

# Four engines in network namespaces on etcd, one killed and restarted (examples/cluster; root).
# DEMO_SCALE=small is the quick run `make test` makes.
DEMO_SCALE ?= full
demo-cluster: deps
	$(MAKE) all
	./examples/cluster/demo.py $(BUILD) --scale $(DEMO_SCALE)

bench: deps
	$(MAKE) all
	./bench/tcp.sh $(BUILD)

.PHONY: fuzz-memheap bench-memheap
fuzz-memheap:
	./scripts/fuzz-memheap.sh 60
bench-memheap:
	./bench/memheap.sh

# Remade on every install: PREFIX and LIBDIR may differ from the last one.
$(BUILD)/mc.pc: pkgconfig/mc.pc.in include/mc.h FORCE
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(LIBS_PRIVATE)|' $< > $@

install: all $(CONFORMANCE) $(BUILD)/mc.pc
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/mc.h $(DESTDIR)$(INCLUDEDIR)/mc.h
	install -m 644 include/mc_transport_plugin.h $(DESTDIR)$(INCLUDEDIR)/mc_transport_plugin.h
	install -m 755 $(SOLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libmc.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmc.so.$(VERSION_MAJOR)
	ln -sf libmc.so.$(VERSION_MAJOR) $(DESTDIR)$(LIBDIR)/libmc.so
	install -m 644 $(ALIB) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BENCH) $(DESTDIR)$(BINDIR)/mc_bench
	install -m 755 $(CONFORMANCE) $(DESTDIR)$(BINDIR)/mc_conformance
	install -m 644 $(BUILD)/mc.pc $(DESTDIR)$(PKGCONFIGDIR)/mc.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/mc.h $(DESTDIR)$(INCLUDEDIR)/mc_transport_plugin.h \
	  $(DESTDIR)$(LIBDIR)/libmc.so* $(DESTDIR)$(LIBDIR)/libmc.a $(DESTDIR)$(BINDIR)/mc_bench \
	  $(DESTDIR)$(BINDIR)/mc_conformance $(DESTDIR)$(PKGCONFIGDIR)/mc.pc

clean:
	rm -rf build build-*

include mk/hardening.mk

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
.PHONY: FORCE
FORCE:
